"""The host link of on-device training: the exact bytes per step on the board's UART for
the seed's MNIST network, against the compute per sample.

    python bench/bench_train_link.py [--steps 20] [--lanes 16] [--batch 32] [--seed 0]

The network, its calibration and its batches are those of ``bench/bench_train_rtl.py``
(784-512-10, the 784-512 layer TT [7,4,7,4] -> [4,8,4,4] rank 16, batch 32, L=16). The
driver is the real one (:class:`ttforge.firmware.train_host.TrainDevice`, light steps)
talking to :class:`~ttforge.firmware.train_host.LinkModel`, which answers with the bytes
the protocol's encoders (:mod:`ttforge.firmware.protocol`) give, fed with the golden
step's own MAXACC values and logits (``train_step_traced``, fast path): every request
and every response frame is counted, SLIP escapes included, per category. The model's
counts equal the bytes on the simulated board's wire (tests/firmware/test_train_board.py).
One STATUS poll per step is counted (the one that sees the step done; a host polls while
the engine computes, when the link is idle anyway).

Compute per sample is the engine's exact cycle model (``op_cycles``, the input at one
element per cycle); link time per sample is every byte, both directions, serialised
(10 bits per byte, 8N1), divided by the batch. Writes ``bench/results/train_link.json``
(the git commit; the tree must be clean for a recorded figure).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import cpu_model, git, git_dirty, result_path, utc_now  # noqa: E402
from ttforge.atomic import atomic_write_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "train_link.json"

#: (system clock, baud): the ULX3S's default 50 MHz and its 25 MHz oscillator; 115200 is the
#: inference default; 2,000,000 = 50 MHz / 25 and 1,000,000 = 25 MHz / 25 are exact, and
#: both USB-UART chips (the ULX3S's FT231X, the iCEBreaker's FT2232H) generate them exactly
#: (3 MHz / 1.5 and 3 MHz / 3).
RATES = ((50_000_000, 115_200), (50_000_000, 921_600), (50_000_000, 1_000_000), (50_000_000, 2_000_000),
         (25_000_000, 115_200), (25_000_000, 1_000_000))


class CategorisedLink:
    """:class:`LinkModel` that also adds up each frame's bytes (request and response) by
    what it carries."""

    def __init__(self, model):
        from ttforge.firmware import protocol as P

        self.P = P
        self.m = model
        self.name, self.default_timeout = model.name, model.default_timeout
        rm = model.regmap
        self.win = {w.name: (w.base, w.base + 4 * w.depth) for w in rm.windows}
        self.regs = {r.addr: r.name for r in rm.registers}
        self.by = defaultdict(lambda: [0, 0, 0])      # category -> [frames, tx, rx]
        self._dec = P.SlipDecoder()

    def _what(self, content: bytes) -> str:
        import struct

        P = self.P
        if content[0] not in set(P.Cmd):      # Device.resync's marker (at connect)
            return "resync marker"
        cmd = P.Cmd(content[0])
        if cmd == P.Cmd.STREAM_IN:
            return "batch (STREAM_IN)"
        if cmd == P.Cmd.PING:
            return "ping"
        addr = struct.unpack("<I", content[1:5])[0]
        for name, (lo, hi) in self.win.items():
            if lo <= addr < hi:
                return {"MAXACC": "MAXACC reads", "ACT": "logits reads", "DMEM": "descriptor writes",
                        "CMEM": "CMEM", "BMEM": "BMEM"}.get(name, name)
        reg = self.regs.get(addr, hex(addr))
        return {"STATUS": "STATUS poll", "CMD": "CMD.START"}.get(reg, f"register {reg}")

    def write(self, data: bytes, timeout: float | None = None) -> None:
        for content, _ in self._dec.feed(data):
            before = len(self.m._out)
            self.m.write(self.P.slip_encode(content))
            row = self.by[self._what(content)]
            row[0] += 1
            row[1] += len(self.P.slip_encode(content))
            row[2] += len(self.m._out) - before

    def read(self, timeout: float) -> bytes:
        return self.m.read(timeout)

    def close(self) -> None:
        pass

    def take(self) -> dict:
        out = {k: {"frames": v[0], "tx": v[1], "rx": v[2]} for k, v in sorted(self.by.items())}
        self.by.clear()
        return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--lanes", type=int, default=16)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=result_path, default=str(OUT))
    a = ap.parse_args(argv)

    from _mnist_case import epoch_batches, mnist_start, step_cycles

    from ttforge.firmware.board import uart_divisor
    from ttforge.firmware.train_host import (LinkModel, TrainDevice, logits_from_trace,
                                             maxacc_from_trace)
    from ttforge.hw.trainer.program import compile_training, fit_engine
    from ttforge.ir.train import train_step_traced

    t_start = time.perf_counter()
    state, xq, y, _, _ = mnist_start(a.seed)
    ecfg = fit_engine(state, a.batch, lanes=a.lanes)
    prog = compile_training(state, a.batch, ecfg)
    batches = epoch_batches(xq, y, a.seed, 1, a.batch, a.steps)

    model = LinkModel(ecfg)
    link = CategorisedLink(model)
    dev = TrainDevice(link, ecfg, timeout=5.0)
    dev.connect()
    link.take()
    dev.load(state, a.batch)
    load = link.take()
    steps, cur, gold = [], state, state
    for xb, yb in batches:
        gold, trace = train_step_traced(gold, xb, yb, fast=True)
        model.set_step(dev.program, maxacc_from_trace(dev.program, trace), logits_from_trace(trace))
        r = dev.step(cur, xb, yb, logits=True)
        cur = r.state
        steps.append({"categories": link.take(), "rewritten_descriptor_words": r.rewritten})
    model.set_state(compile_training(gold, a.batch, ecfg), gold.rng)
    dev.read_state(cur)
    checkpoint = link.take()

    def total(cat, k):
        return sum(v[k] for v in cat.values())

    def per_step(pred):
        return [sum(v["tx"] + v["rx"] for c, v in st["categories"].items() if pred(c)) for st in steps]

    tx = [total(st["categories"], "tx") for st in steps]
    rx = [total(st["categories"], "rx") for st in steps]
    light = [t + r_ for t, r_ in zip(tx, rx)]
    no_logits = per_step(lambda c: c != "logits reads")
    mean = float(np.mean(light))
    cats = sorted({c for st in steps for c in st["categories"]})
    breakdown = {c: float(np.mean([st["categories"].get(c, {"tx": 0, "rx": 0})["tx"]
                                   + st["categories"].get(c, {"tx": 0, "rx": 0})["rx"] for st in steps]))
                 for c in cats}
    model_cycles = step_cycles(ecfg, prog, a.batch, xq.shape[1])[1]
    cps = model_cycles / a.batch
    rates = []
    for clk, baud in RATES:
        try:
            div = uart_divisor(clk, baud)
            err = abs(clk / div - baud) / baud
        except Exception as e:   # noqa: BLE001 - recorded, not raised
            rates.append({"clock_hz": clk, "baud": baud, "accepted": False, "why": str(e)})
            continue
        link_s = mean * 10 / baud / a.batch
        link_nl = float(np.mean(no_logits)) * 10 / baud / a.batch
        comp_s = cps / clk
        rates.append({"clock_hz": clk, "baud": baud, "accepted": True, "divisor": div,
                      "rate_error": round(err, 6), "link_ms_per_sample": round(1e3 * link_s, 4),
                      "link_ms_per_sample_without_logits": round(1e3 * link_nl, 4),
                      "compute_ms_per_sample": round(1e3 * comp_s, 4),
                      "link_over_compute": round(link_s / comp_s, 4),
                      "link_at_most_compute": bool(link_s <= comp_s)})
    out = {
        "benchmark": "train_link", "command": "python bench/bench_train_link.py " + " ".join(argv or sys.argv[1:]),
        "network": "mnist 784-512-10, TT [7,4,7,4]->[4,8,4,4] rank 16", "seed": a.seed, "lanes": a.lanes,
        "batch": a.batch, "steps": a.steps,
        "bytes_per_step": {"mean": mean, "min": min(light), "max": max(light), "tx_mean": float(np.mean(tx)),
                           "rx_mean": float(np.mean(rx)), "without_logits_mean": float(np.mean(no_logits)),
                           "by_category_mean": breakdown},
        "bytes_per_sample": mean / a.batch,
        "rewritten_descriptor_words": [st["rewritten_descriptor_words"] for st in steps],
        "load_bytes": {"tx": total(load, "tx"), "rx": total(load, "rx"), "by_category": load},
        "checkpoint_bytes": {"tx": total(checkpoint, "tx"), "rx": total(checkpoint, "rx"),
                             "by_category": checkpoint},
        "full_state_step_bytes_estimate": mean + total(checkpoint, "tx") + total(checkpoint, "rx"),
        "cycles_per_step_model": model_cycles, "cycles_per_sample": cps,
        "rates": rates,
        "seconds": round(time.perf_counter() - t_start, 1),
        "env": {"when": utc_now(), "cpu": cpu_model(), "git": {"commit": git("rev-parse", "HEAD"),
                                                               "dirty": git_dirty("firmware", "hw", "ir", "bench")}},
    }
    atomic_write_text(Path(a.out), json.dumps(out, indent=2) + "\n")
    print(json.dumps({"bytes_per_sample": out["bytes_per_sample"], "cycles_per_sample": cps,
                      "rates": [(r["clock_hz"], r["baud"], r.get("link_over_compute")) for r in rates]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
