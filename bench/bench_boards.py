#!/usr/bin/env python
"""The edge-deployment numbers (issue 6): each model on each board — fits or not (and
why not), on-chip bytes, LUT/FF/DSP/BRAM and Fmax from a real ``ttforge build``,
predicted latency and throughput, the UART transfer time, the same integer model on
this machine's CPU, and the dense INT8 model's memory against the device's.

    python bench/bench_boards.py                          # both models, both boards (ECP5 PnR: 10-45 min each)
    python bench/bench_boards.py --skip-build             # everything that needs no place and route (~2 min)
    python bench/bench_boards.py --models digits --boards icebreaker --out /tmp/b.json
    python bench/bench_boards.py --build-dir /tmp/builds  # keep the builds; reuse those of the same config
    python bench/bench_boards.py --render-only            # rewrite the docs section from the JSON
    python bench/bench_boards.py --models mnist --boards icebreaker --merge   # one row, the others kept

The models (``MODELS``), trained and quantized with the library API (what ``ttforge
train`` and ``ttforge quantize --w-bits 4`` run), seed 0, one thread:

* ``digits``: the embedded default, ``ttforge train --rank-adaptive`` on scikit-learn's
  digits (64 -> 64 -> 10, the TT layer from rank 8, ranks learned), 4-bit cores;
* ``mnist``: the MNIST-shaped TT-MLP 784 -> 512 -> 10, the TT layer in modes
  [7,4,7,4] -> [4,8,4,4] at rank 16 (the benchmark layer of ``bench_hw.py``), 4-bit
  cores, trained on the fixed 8,000-image split of ``../shared/data/mnist-t10k``.

Training is short (``EPOCHS``): the resources, cycles and memory depend on the shapes,
ranks and widths, not on the weight values, so the accuracy printed is not the point.

Per model and board: the accelerator config is the one ``ttforge build`` uses (the
smallest that runs the model, the board's lanes and overrides); the memory pre-check
(``ttforge.firmware.build.memory_misfit``) and the build itself say whether it fits;
cycles per vector are the engine's exact cycle model (``ttforge.hw.estimate``); latency
is cycles / Fmax and cycles / board clock (ULX3S: 50 MHz PLL, iCEBreaker: 12 MHz); the
UART time is the protocol's bytes of one vector (``STREAM_IN`` request, its response
and the output frame, 10 bits a byte) at 115200 baud. The CPU figures run
``ttforge.quant.execute`` (the integer golden executor, numpy) in the same process.

Writes ``bench/results/boards.json`` (atomically) and the generated part of the
"## Boards" section of ``docs/benchmarks.md`` (the text below its marker is kept).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared bench helpers
from _env import cpu_model, git, git_dirty, output_path, result_path, utc_now  # noqa: E402
from _docsection import update_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "mnist-t10k"
DEFAULT_OUT = ROOT / "bench" / "results" / "boards.json"
DEFAULT_DOC = None  # docs/benchmarks.md is rendered from the JSON: python bench/_docgen.py
SECTION = "## Boards"
GENERATED_END = "<!-- end of the generated board tables; the text below is kept by bench_boards.py -->"
BOARDS = ("ulx3s", "icebreaker")
SEED = 0
W_BITS = 4
UART_BITS_PER_BYTE = 10          # 8N1: start + 8 data + stop
CPU_BATCH = 256

# model key -> (title, TrainConfig kwargs); the data path is filled in by train_kwargs()
MODELS = {
    "digits": ("digits TT-MLP 64-64-10 (rank-adaptive)",
               dict(data="digits", epochs=10, finetune_epochs=2, rank_adaptive=True)),
    "mnist": ("MNIST TT-MLP 784-512-10 ([7,4,7,4]->[4,8,4,4], rank 16)",
              dict(data="mnist", epochs=1, lr=3e-3,
                   model=dict(kind="tt", hidden=(512,), ranks=16, in_modes=((7, 4, 7, 4),),
                              out_modes=((4, 8, 4, 4),)))),
}


# ----------------------------------------------------------------- pure arithmetic

def latency(cycles: int, mhz: float | None) -> dict[str, float] | None:
    """Latency of one vector (us) and throughput (vectors/s) of ``cycles`` at ``mhz``
    (None without a clock)."""
    if not mhz or cycles <= 0:
        return None
    return {"mhz": float(mhz), "us": cycles / mhz, "per_s": mhz * 1e6 / cycles}


def uart_bytes(x_row, elem_bytes: int, out_count: int, stream_elems: int) -> dict[str, int]:
    """Bytes on the wire for one vector, as the host driver runs it: the ``STREAM_IN``
    request (host -> board), its response and the output frame (board -> host), SLIP
    escapes of these values included."""
    from ttforge.firmware import protocol as P

    n_out = -(-out_count // stream_elems) * stream_elems
    # a vector longer than a frame goes in several STREAM_IN frames, one response each,
    # and comes back in several output frames
    frames = P.stream_in_frames([int(v) for v in x_row], elem_bytes, stream_elems)
    piece = P.stream_piece_elems(elem_bytes, stream_elems)
    req = sum(len(f) for f in frames)
    resp = sum(len(P.encode_response(P.Response(P.Cmd.STREAM_IN, 0, count=min(piece, len(x_row) - i * piece))))
               for i in range(len(frames)))
    # the outputs' values change the escapes by a few bytes; zeros are the typical case
    out = len(P.output_frames(bytes(n_out * elem_bytes), elem_bytes, stream_elems))
    return {"to_board": req, "from_board": resp + out, "total": req + resp + out}


def uart_seconds(n_bytes: int, baud: int) -> float:
    return n_bytes * UART_BITS_PER_BYTE / baud


def device_memory(device: str) -> dict[str, int]:
    """On-chip RAM of ``device`` in bytes: block RAM (raw bits / 8, parity bits of the
    ECP5's 18-bit words included), SPRAM, and their sum."""
    from ttforge.hw.config import BRAM_BITS, SPRAM_BITS

    bram, spram = BRAM_BITS[device] // 8, SPRAM_BITS[device] // 8
    return {"block_ram": bram, "spram": spram, "total": bram + spram}


def dense_fit(dense_bytes: int, device: str) -> dict:
    """The dense INT8 model's weights against the device's on-chip RAM."""
    mem = device_memory(device)["total"]
    return {"dense_int8_bytes": int(dense_bytes), "device_bytes": mem,
            "fraction": dense_bytes / mem, "fits": dense_bytes <= mem}


def precheck(config, device: str) -> str | None:
    """Why the accelerator's memories cannot fit ``device`` (None: they may fit)."""
    from ttforge.firmware.build import memory_misfit

    return memory_misfit(config, device)


# ----------------------------------------------------------------------- the models

def train_kwargs(key: str) -> dict:
    kw = dict(MODELS[key][1])
    if kw["data"] == "mnist":
        kw["data"] = str(MNIST)
    return kw


def make_model(key: str, workdir: Path) -> dict:
    """Train and quantize model ``key``; its artifact, network and test inputs."""
    from ttforge.model.network import ModelConfig
    from ttforge.model.train import TrainConfig, train
    from ttforge.ir.artifact import save_artifact
    from ttforge.quant.ptq import _linear_layers, make_config, quantize_trained

    kw = train_kwargs(key)
    if "model" in kw:
        kw["model"] = ModelConfig(**kw["model"])
    cfg = TrainConfig(seed=SEED, threads=1, **kw)
    t0 = time.perf_counter()
    res = train(cfg, workdir / f"train-{key}", progress=False, overwrite=True)
    qcfg = make_config(len(_linear_layers(res.model)), w_bits=W_BITS)
    _, inet, rep = quantize_trained(res, cfg.data, qcfg, seed=SEED)
    art = workdir / f"{key}.ttfa"
    save_artifact(inet, art)
    from ttforge.model.data import load_dataset

    ds = load_dataset(cfg.data)
    x = inet.quantize_input(ds.x_test.numpy())
    layers = [{"in": int(layer.in_features), "out": int(layer.out_features),
               "ranks": [int(g.shape[0]) for g in layer.cores][1:] if len(layer.cores) > 1 else []}
              for layer in inet.layers]
    return {"key": key, "title": MODELS[key][0], "artifact": art, "net": inet, "x": x,
            "info": {"train": {k: (v if not isinstance(v, ModelConfig) else v.to_dict())
                               for k, v in kw.items()} | {"seed": SEED},
                     "w_bits": W_BITS, "layers": layers,
                     "float_acc": rep["float_acc"], "int_acc": rep["ptq"]["int_acc"],
                     "on_chip": rep["on_chip"], "seconds": round(time.perf_counter() - t0, 1)}}


def cpu_timing(net, x: np.ndarray, repeats: int = 7, inner: int = 20) -> dict:
    """The integer golden executor on this CPU: median latency of one vector (batch 1)
    and median throughput at batch ``CPU_BATCH``, over ``repeats`` repeats; and the C
    executor's latency (``c_latency_us``, ``firmware/c/ttforge_infer.c`` at -O2, checked
    equal to the golden executor first)."""
    from ttforge.ir.executor import execute

    rows = np.resize(x, (max(CPU_BATCH, inner), x.shape[1]))
    execute(net, rows[:1])                                     # warm up
    lat, thr = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(inner):
            execute(net, rows[i:i + 1])
        lat.append((time.perf_counter() - t0) / inner)
        t0 = time.perf_counter()
        execute(net, rows[:CPU_BATCH])
        thr.append(CPU_BATCH / (time.perf_counter() - t0))
    out = {"latency_us": statistics.median(lat) * 1e6, "per_s_batch": statistics.median(thr),
           "batch": CPU_BATCH, "repeats": repeats, "inner": inner,
           "latency_us_all": [round(v * 1e6, 1) for v in lat],
           "per_s_batch_all": [round(v, 1) for v in thr]}
    try:                          # the C executor (-O2), bit-identical to execute: the other baseline
        from ttforge.firmware.infer_c import CNetwork

        cn = CNetwork(net)
    except Exception as e:        # no C compiler: the numpy figures stand alone
        return out | {"c_error": str(e).splitlines()[0]}
    assert np.array_equal(cn.run(rows[:inner]), execute(net, rows[:inner]))
    clat = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(inner):
            cn.run(rows[i:i + 1])
        clat.append((time.perf_counter() - t0) / inner)
    return out | {"c_latency_us": statistics.median(clat) * 1e6, "c_latency_us_all": [round(v * 1e6, 1) for v in clat]}


# ------------------------------------------------------------------------ builds

def _reusable(out: Path, cfg_dict: dict, b, seed: int) -> dict | None:
    """The manifest of a previous build in ``out`` of the same config, clock, baud and
    seed (the bitstream holds the accelerator config, not the network), else None."""
    from ttforge.firmware.board import DEFAULT_BAUD
    from ttforge.firmware.build import MARKER

    try:
        m = json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        return None
    same = (m.get("config") == cfg_dict and m.get("board") == b.key
            and m.get("clock_hz") == b.default_hz and m.get("baud") == DEFAULT_BAUD
            and m.get("seed") == seed)
    return m if same else None


def run_build(b, artifact: Path, cfg_dict: dict, build_dir: Path, name: str, seed: int = 1) -> dict:
    """``ttforge build`` of ``artifact`` for board ``b``: resources and Fmax, or the
    failure reason (a failed fit is a result). A previous build of the same config in
    ``build_dir / name`` is reused."""
    from ttforge.errors import TTForgeError
    from ttforge.firmware.build import build
    from ttforge.hw.synth import parse_report

    out = build_dir / name
    old = _reusable(out, cfg_dict, b, seed)
    if old is not None:
        m, reused = old, True
    else:
        work = build_dir / f"{name}.work"
        try:
            m, reused = build(b.key, out, artifact=artifact, seed=seed, keep=str(work)), False
        except TTForgeError as e:
            r = {"ok": False, "error": str(e), "reused": False}
            # what nextpnr got to (e.g. Fmax when timing was not met)
            rep = work / "build" / "report.json"
            tim = work / "build" / f"ttforge_{b.key}.tim"
            if rep.is_file():
                r["report"] = parse_report(rep, b.device, log=tim).to_dict()
            elif tim.is_file():       # not placed: what nextpnr packed
                from ttforge.hw.synth import _UTIL_RE
                r["utilisation"] = {name: {"used": int(u), "available": int(a)}
                                    for name, u, a, _ in _UTIL_RE.findall(tim.read_text(errors="replace"))}
            return r
        finally:
            import shutil
            shutil.rmtree(work, ignore_errors=True)
    res = m["resources"]

    def used(k):
        return None if k not in res else res[k]["used"]
    return {"ok": True, "reused": reused, "fmax_mhz": m["fmax_mhz"], "resources": res,
            "lut": used("lut") if "lut" in res else used("lc"), "ff": used("ff"),
            "dsp": used("dsp"), "bram": used("bram"), "lutram": used("lutram"),
            "critical_path_ns": (m.get("critical_path") or {}).get("delay_ns"),
            "bitstream": m["bitstream"], "seconds": m["seconds"], "clock_hz": m["clock_hz"]}


# ------------------------------------------------------------------------ measure

def measure(model: dict, board_key: str, *, skip_build: bool, build_dir: Path) -> dict:
    """Every figure of one model on one board."""
    from ttforge.firmware.board import DEFAULT_BAUD, board
    from ttforge.firmware.build import board_config, memory_bits
    from ttforge.hw import compile_program, estimate
    from ttforge.ir.onchip import on_chip_bytes

    b = board(board_key)
    cfg, net = board_config(b, model["artifact"])
    est = estimate(compile_program(net, cfg))
    mem = on_chip_bytes(net)["total"]
    misfit = precheck(cfg, b.device)
    elem_bytes = -(-cfg.act_bits // 8)
    ub = [uart_bytes(row, elem_bytes, net.layers[-1].out_features, cfg.stream_elems)["total"]
          for row in model["x"][:256]]
    u = uart_bytes(model["x"][0], elem_bytes, net.layers[-1].out_features, cfg.stream_elems)
    u["total_median"] = int(statistics.median(ub))
    row = {
        "model": model["key"], "board": b.key, "board_title": b.title, "device": b.device,
        "config": cfg.to_dict(), "clock_hz": b.default_hz, "baud": DEFAULT_BAUD,
        "network_on_chip_bytes": mem["on_chip_bytes"], "network_bytes": mem,
        "accelerator_memory_bytes": memory_bits(cfg) // 8,
        "device_memory_bytes": device_memory(b.device),
        "precheck": misfit,
        "cycles": est.cycles, "macs": est.macs, "utilization": est.utilization,
        "at_board_clock": latency(est.cycles, b.default_hz / 1e6),
        "uart_bytes": u,
        "uart_ms": 1e3 * uart_seconds(u["total_median"], DEFAULT_BAUD),
        "dense": dense_fit(mem["dense_int8_bytes"], b.device),
    }
    if misfit:
        row["fits"], row["why_not"], row["build"] = False, misfit, {"ok": False, "error": misfit,
                                                                     "stage": "pre-check"}
    elif skip_build:
        row["fits"], row["build"] = None, None
    else:
        r = run_build(b, model["artifact"], cfg.to_dict(), build_dir, f"{b.key}-{model['key']}")
        row["build"] = r
        row["fits"] = r["ok"] or "timing not met" in r["error"]
        if not r["ok"]:
            row["why_not"] = r["error"]
    b = row["build"] or {}
    fmax = b.get("fmax_mhz") or (b.get("report") or {}).get("fmax_mhz")   # (timing not met)
    row["at_fmax"] = latency(est.cycles, fmax) if row["fits"] else None
    if row["at_board_clock"] and row["fits"] is not False:
        row["vectors_per_s_uart"] = 1.0 / (row["uart_ms"] / 1e3 + row["at_board_clock"]["us"] / 1e6)
    return row


# ------------------------------------------------------------------------ rendering

def _n(v) -> str:
    return f"{v:,}" if isinstance(v, int) else str(v)


def _us(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:,.1f}"


def _rate(v: float) -> str:
    return f"{v:,.0f}" if v >= 10 else f"{v:,.1f}"


def _fit_cell(r: dict) -> str:
    if r["fits"] is None:
        return "not built (`--skip-build`)"
    return "**yes**" if r["fits"] else "**no**"


def _resources(r: dict) -> tuple[str, str, str, str, str]:
    b = r.get("build") or {}
    if not b.get("ok"):
        return ("-",) * 5
    res = b["resources"]

    def frac(k):
        x = res.get(k)
        return "-" if not x else f"{_n(x['used'])} / {_n(x['available'])}"
    logic = frac("lut") + " LUT4" if "lut" in res else frac("lc") + " LC"
    ff = frac("ff") if "ff" in res else "(in the LCs)"
    bram = frac("bram") + (" DP16KD" if r["device"] == "ecp5-85f" else " EBR")
    if b.get("lutram"):
        bram += f" + {b['lutram']} LUTRAM"
    if (res.get("spram") or {}).get("used"):
        bram += f" + {frac('spram')} SPRAM"
    return logic, ff, frac("dsp"), bram, f"{b['fmax_mhz']:.1f} MHz"


def markdown(result: dict) -> str:
    env = result["environment"]
    L = [SECTION, "",
         f"Each model on each board, {env['date_utc'][:10]} (commit `{(env['git_commit'] or '?')[:7]}`"
         f"{' with uncommitted changes in the working tree' if env.get('git_dirty') else ''}), "
         f"started {env['date_utc'][11:16]} UTC on a shared 2-core "
         f"machine ({env['cpu']}). Resources and Fmax: a real `ttforge build` (the board top: "
         "accelerator + UART bridge + LEDs; pip open toolchain, nextpnr seed 1) of the config "
         "`ttforge build` picks for the model (the smallest that runs it, at the board's lanes). "
         "Cycles: the engine's exact cycle model (`ttforge.hw.estimate`, equal to the RTL's "
         "`CYCLES` counter, see Accelerator) for one vector, input streaming and output "
         "included. The models are trained briefly (digits 10 + 2 epochs, MNIST 1 epoch, seed 0) "
         "and quantized to 4-bit cores: resources, cycles and memory depend on the shapes, ranks "
         "and widths, not on the weight values. Regenerate (this run took "
         f"{result['seconds'] / 60:.0f} min, most of it place and route):", "",
         "```", "pip install -e '.[dev,fpga]'", result["command"], "```", ""]
    models = {m["key"]: m for m in result["models"]}
    L.append("**Models**")
    L.append("")
    L.append("| model | layers (in -> out, TT ranks) | int accuracy (test) | network on chip | dense INT8 weights |")
    L.append("|---|---|---|---|---|")
    for k, m in models.items():
        lay = "; ".join(f"{x['in']} -> {x['out']}" + (f" (ranks {x['ranks']})" if x["ranks"] else " (dense)")
                        for x in m["layers"])
        oc = m["on_chip"]
        L.append(f"| {m['title']} | {lay} | {100 * m['int_acc']:.1f}% | {_n(oc['on_chip_bytes'])} B "
                 f"(cores {_n(oc['core_bytes'])} + biases {_n(oc['bias_bytes'])} + peak "
                 f"intermediate {_n(oc['peak_intermediate_bytes'])}) | {_n(oc['dense_int8_bytes'])} B |")
    L.append("")
    L.append("**Per board** (latency of one vector = cycles / clock; the engine takes one vector "
             "at a time, so throughput = 1 / latency. UART: the protocol bytes of one vector, "
             f"median over 256 test vectors, at {result['rows'][0]['baud']} baud, and the vectors/s "
             "the link allows with the board-clock latency added)")
    L.append("")
    L.append("| model | board | fits | accelerator memories | logic | FF | DSP | block RAM | Fmax "
             "| cycles / vector | at Fmax | at the board clock | UART per vector |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in result["rows"]:
        logic, ff, dsp, bram, fmax = _resources(r)
        af, ac = r.get("at_fmax"), r.get("at_board_clock")
        clk = f"{r['clock_hz'] / 1e6:g} MHz"
        fits = _fit_cell(r)
        at_clock = f"{_us(ac['us'])} us, {_rate(ac['per_s'])}/s ({clk})" if ac and r["fits"] is not False else f"- ({clk})"
        L.append(f"| {r['model']} | {r['board']} | {fits} | {_n(r['accelerator_memory_bytes'])} B | "
                 f"{logic} | {ff} | {dsp} | {bram} | {fmax} | {_n(r['cycles'])} | "
                 + (f"{_us(af['us'])} us, {_rate(af['per_s'])}/s" if af else "-") + " | "
                 + at_clock + " | "
                 + f"{_n(r['uart_bytes']['total_median'])} B, {r['uart_ms']:.1f} ms"
                 + (f" ({_rate(r['vectors_per_s_uart'])}/s)" if r.get("vectors_per_s_uart") else "")
                 + " |")
    L.append("")
    why = [r for r in result["rows"] if r["fits"] is False or (r.get("build") or {}).get("error")]
    for r in why:
        util = (r.get("build") or {}).get("utilisation") or {}
        packed = ", ".join(f"{k} {v['used']:,} / {v['available']:,}" for k, v in util.items()
                           if v["used"])
        L.append(f"- {r['model']} on the {r['board']}: {r.get('why_not') or r['build']['error']}"
                 + (f" (packed: {packed})" if packed else "") + ".")
    if why:
        L.append("")
    later = [r for r in result["rows"] if r.get("run")]
    for r in later:
        e = r["run"]["environment"]
        L.append(f"- {r['model']} on the {r['board']}: measured in a later run, {e['date_utc'][:10]} "
                 f"(commit `{(e['git_commit'] or '?')[:7]}`, {r['run']['seconds'] / 60:.0f} min), "
                 f"`{r['run']['command']}`; its CPU latency there: "
                 f"{_us(r['run']['model']['cpu']['latency_us'])} us.")
    if later:
        L.append("")
    L.append(f"**The same integer model on this machine's CPU** (`ttforge.quant.execute`, numpy, "
             f"median of {result['cpu_repeats']} repeats, measured in the same run)")
    L.append("")
    L.append("| model | batch 1: latency | batch 1: vectors/s | batch 256: vectors/s |")
    L.append("|---|---|---|---|")
    for k, m in models.items():
        c = m["cpu"]
        L.append(f"| {k} | {_us(c['latency_us'])} us | {_rate(1e6 / c['latency_us'])} | "
                 f"{_rate(c['per_s_batch'])} |")
    L.append("")
    L.append("**What would not fit: the dense INT8 model's weights** (one byte a weight) against "
             "the device's on-chip RAM (ECP5-85F: 208 DP16KD x 18 kbit = 479,232 B with the "
             "parity bits; iCE40UP5K: 30 EBR x 4 kbit + 4 SPRAM x 256 kbit = 146,432 B)")
    L.append("")
    L.append("| model | dense INT8 weights | board | on-chip RAM | weights / RAM | fits |")
    L.append("|---|---|---|---|---|---|")
    for r in result["rows"]:
        d = r["dense"]
        L.append(f"| {r['model']} | {_n(d['dense_int8_bytes'])} B | {r['board']} | "
                 f"{_n(d['device_bytes'])} B | {100 * d['fraction']:.1f}% | "
                 f"{'yes' if d['fits'] else '**no**'} |")
    L.append("")
    return "\n".join(L)


def merge_rows(old: dict, new: dict) -> dict:
    """``old`` with the rows of ``new`` in place of its rows of the same model and board
    (appended if new); each new row carries its run (``run``: command, environment,
    seconds, its model's entry with the CPU timing). ``old``'s models and CPU timings
    stay: its other rows were compared with them in one run."""
    models = {m["key"]: m for m in new["models"]}
    fresh = {(r["model"], r["board"]): {**r, "run": {
        "command": new["command"], "environment": new["environment"],
        "seconds": new["seconds"], "model": models[r["model"]]}} for r in new["rows"]}
    rows = [fresh.pop((r["model"], r["board"]), r) for r in old["rows"]]
    return {**old, "rows": rows + list(fresh.values())}


def update_doc(path: Path, section: str) -> None:
    update_section(path, SECTION, section, GENERATED_END)


# ------------------------------------------------------------------------ main


def environment() -> dict:
    return {"date_utc": utc_now(),
            "python": platform.python_version(), "numpy": np.__version__, "cpu": cpu_model(),
            "cpus": os.cpu_count(),
            "loadavg_before": [round(v, 2) for v in os.getloadavg()],
            "git_commit": git("rev-parse", "HEAD") or None,
            "git_dirty": git_dirty("hw", "firmware", "model",
                                   "quant", "bench/bench_boards.py")}


def summary_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="boards: fit, resources, latency", title_justify="left")
    for col in ("model", "board", "fits", "logic", "DSP", "BRAM", "Fmax", "cycles", "us @ Fmax",
                "us @ clock", "UART ms", "CPU us (b=1)", "dense fits"):
        t.add_column(col, justify="left" if col in ("model", "board", "fits", "logic") else "right")
    cpu = {m["key"]: m["cpu"] for m in result["models"]}
    for r in result["rows"]:
        logic, _, dsp, bram, fmax = _resources(r)
        af, ac = r.get("at_fmax"), r.get("at_board_clock")
        fits = {True: "[green]yes[/]", False: "[red]no[/]", None: "not built"}[r["fits"]]
        t.add_row(r["model"], r["board"], fits, logic, dsp, bram, fmax, _n(r["cycles"]),
                  _us(af["us"]) if af else "-", _us(ac["us"]) if ac and r["fits"] is not False else "-",
                  f"{r['uart_ms']:.1f}", _us(cpu[r["model"]]["latency_us"]),
                  "yes" if r["dense"]["fits"] else "[red]no[/]")
    Console(width=160).print(t)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--boards", nargs="+", choices=BOARDS, default=list(BOARDS))
    p.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    p.add_argument("--skip-build", action="store_true",
                   help="no place and route: fit pre-check, memory, cycles, UART, CPU only")
    p.add_argument("--build-dir", type=Path, default=None,
                   help="keep the builds here (BOARD-MODEL/) and reuse those of the same config")
    p.add_argument("--cpu-repeats", type=int, default=7, help="repeats of the CPU timings (median)")
    p.add_argument("--out", type=result_path, default=DEFAULT_OUT,
                   help=f"JSON results (default {DEFAULT_OUT.relative_to(ROOT)})")
    p.add_argument("--doc", type=output_path("section.md"), default=DEFAULT_DOC, help="also write the long-form Markdown section into this file "
                   "(docs/benchmarks.md itself is rendered from the JSON by bench/_docgen.py)")
    p.add_argument("--no-doc", action="store_true", help="do not touch the Markdown file")
    p.add_argument("--merge", action="store_true",
                   help="replace only the rows measured now in the existing --out JSON, keeping its "
                        "other rows and its models (the CPU timings those rows were compared with); "
                        "the new rows record this run (command, environment, model, CPU timing)")
    p.add_argument("--render-only", action="store_true",
                   help="rewrite the docs section from the JSON of --out (measure nothing)")
    args = p.parse_args(argv)
    if args.cpu_repeats < 1:
        p.error("--cpu-repeats must be >= 1")
    if "mnist" in args.models and not MNIST.is_dir():
        p.error(f"MNIST IDX files not found in {MNIST}; run with --models digits")
    return args


def main(argv=None) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ttforge.atomic import atomic_write_text

    args = parse_args(argv)
    if args.render_only:
        result = json.loads(args.out.read_text())
        summary_table(result)
        update_doc(args.doc, markdown(result))
        args.doc and print(f"updated the '{SECTION}' section of {args.doc}")
        return 0
    argv = sys.argv[1:] if argv is None else list(argv)
    shown, skip = [], False
    for a in argv:                  # the command that regenerates it (where builds are kept is local)
        if skip or a.startswith("--build-dir"):
            skip = a == "--build-dir"
            continue
        shown.append(a)
    command = " ".join(["python bench/bench_boards.py", *shown])
    env = environment()
    t_all = time.perf_counter()
    tmp = tempfile.TemporaryDirectory(prefix="bench_boards_")
    work = Path(tmp.name)
    build_dir = args.build_dir or work / "builds"
    build_dir.mkdir(parents=True, exist_ok=True)
    models, rows = [], []
    todo = len(args.models) * (2 + len(args.boards))
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn()) as prog:
        task = prog.add_task("boards", total=todo)
        for key in args.models:
            prog.update(task, description=f"{key}: train + quantize")
            m = make_model(key, work)
            prog.advance(task)
            prog.console.print(f"{key}: int accuracy {100 * m['info']['int_acc']:.1f}%, on chip "
                               f"{m['info']['on_chip']['on_chip_bytes']:,} B ({m['info']['seconds']} s)",
                               highlight=False)
            prog.update(task, description=f"{key}: CPU timing")
            cpu = cpu_timing(m["net"], m["x"], repeats=args.cpu_repeats)
            models.append({"key": key, "title": m["title"], **m["info"], "cpu": cpu})
            prog.advance(task)
            for bk in args.boards:
                prog.update(task, description=f"{key} on the {bk}"
                            + ("" if args.skip_build else ": ttforge build"))
                t0 = time.perf_counter()
                r = measure(m, bk, skip_build=args.skip_build, build_dir=build_dir)
                r["seconds"] = round(time.perf_counter() - t0, 1)
                rows.append(r)
                prog.advance(task)
                b = r.get("build") or {}
                prog.console.print(
                    f"{key} on the {bk}: " + (
                        f"Fmax {b['fmax_mhz']} MHz, {r['cycles']:,} cycles" if b.get("ok") else
                        f"does not fit ({(r.get('why_not') or '')[:100]}...)" if r["fits"] is False else
                        f"{r['cycles']:,} cycles (not built)") + f" ({r['seconds']} s)", highlight=False)
    tmp.cleanup()
    result = {"benchmark": "boards", "format_version": 1, "command": command, "environment": env,
              "cpu_repeats": args.cpu_repeats, "models": models, "rows": rows,
              "seconds": round(time.perf_counter() - t_all, 1)}
    if args.merge:
        result = merge_rows(json.loads(args.out.read_text()), result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")
    summary_table(result)
    if not args.no_doc:
        update_doc(args.doc, markdown(result))
        args.doc and print(f"updated the '{SECTION}' section of {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
