#!/usr/bin/env python
"""The accelerator against the CPU it replaces: the seed MNIST network per vector.

    python bench/bench_vs_cpu.py                   # writes bench/results/vs_cpu.json
    python bench/bench_vs_cpu.py --repeats 3 --out /tmp/v.json

One run measures, side by side on one core of this machine, the integer golden executor
(``ttforge.ir.executor.execute``, numpy) and the C executor (``firmware/c/ttforge_infer.c``
at -O2, checked bit-identical first) on one vector at a time (batch 1), interleaved, the
median of ``--repeats`` repeats of ``--inner`` vectors each. Beside them, the engine's
cycles per vector at every lane count, and at 16, 32 and 64 lanes also with shared
requantization units (``AccelConfig.requant_units``) (``ttforge.hw.cycles.estimate`` of the compiled
program: the exact cycle model, equal to the RTL's ``CYCLES`` counter in the tests), so
the latency at a clock is ``cycles / f`` with nothing estimated but the clock itself.

Clocks: the ULX3S board clock (50 MHz) and each PLL clock the ULX3S top can make
(:data:`ttforge.firmware.board.ECP5_PLL`). A clock counts as *reached* at a lane count
only when a routed nextpnr run of that engine (the core in its I/O harness,
``bench/results/synth_seeds.*.json``, the lowest of its seeds) recorded an Fmax at least
as high; the others are predictions and marked so. A board top adds the UART bridge to
the engine (``boards.json`` has those, at the lane counts ``ttforge build`` picks); where
``ttforge build`` of an engine row's config met timing at a PLL clock
(``bench/results/board_build.*.json``, ``bench_board_build.py``), the row's ``at_board``
is the bitstream's speed at the highest such clock.

The network is the seed's (784-512-10, the 784-512 layer TT [7,4,7,4] -> [4,8,4,4] rank
16, 4-bit cores, 8-bit activations), integer from a calibrated random init as the training
benchmarks build it (``bench/_mnist_case.py``): its schedule and shapes are those of the
trained MNIST artifact of ``bench_boards.py`` (the L = 4 cycles are checked equal to
``boards.json`` when that file has them), and the time of either executor does not depend
on the weights' values.
"""

from __future__ import annotations

import os

# one core: no BLAS or OpenMP threads behind numpy (set before numpy is imported)
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared bench helpers
from _env import cpu_model, git, git_dirty, result_path, utc_now  # noqa: E402

from ttforge.atomic import atomic_write_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DEFAULT_JSON = RESULTS / "vs_cpu.json"
LANES = (4, 8, 16, 32, 64)
#: The engines compared, as ``Engine`` rows: one requantization unit per lane at every
#: lane count, and the wide engines with shared units (AccelConfig.requant_units; 16
#: units cost the MNIST network 6 cycles at L = 64, 8 would cost 794). ``copies > 1``:
#: that many independent engines side by side in the synthesis harness only
#: (``bench_synth_seeds.py --copies``); ``engines > 1``: the accelerator with
#: ``AccelConfig.engines`` (``EngineArray``: one top, the vectors in turn). Either way
#: several vectors are in flight and the per-vector figure is a throughput.
#: ``read_registers``: AccelConfig.read_registers (one cycle more a step).
ENGINES = tuple((L, None, 1, 1, 0) for L in LANES) + (
    (16, 4, 1, 1, 0), (32, 8, 1, 1, 0), (64, 16, 1, 1, 0), (16, None, 4, 1, 0), (16, None, 1, 4, 1),
    (16, None, 1, 4, 2))
BOARD_HZ = 50_000_000
GOAL = 3.0            # issue 16: >= 3x faster per vector than the golden executor


def network(seed: int = 0):
    """The seed MNIST network (an ``IntNetwork``) and 40 of its quantized test inputs."""
    from _mnist_case import mnist_start

    from ttforge.ir.train import export_network

    state, _, _, xqt, _ = mnist_start(seed)
    return export_network(state), xqt[:40]


def cpu_latency(net, x: np.ndarray, repeats: int, inner: int) -> dict:
    """Median batch-1 latency (us) of the golden executor and the C executor, interleaved."""
    from ttforge.firmware.infer_c import CNetwork
    from ttforge.ir.executor import execute

    cn = CNetwork(net)
    rows = np.resize(x, (inner, x.shape[1]))
    if not np.array_equal(cn.run(rows), execute(net, rows)):
        raise SystemExit("the C executor disagrees with the golden executor")
    execute(net, rows[:1])
    cn.run(rows[:1])
    gold, c = [], []
    for r in range(repeats):
        for name in (("golden", "c") if r % 2 == 0 else ("c", "golden")):
            run = (lambda v: execute(net, v)) if name == "golden" else cn.run
            t0 = time.perf_counter()
            for i in range(inner):
                run(rows[i:i + 1])
            (gold if name == "golden" else c).append((time.perf_counter() - t0) / inner * 1e6)
    return {"golden_us": statistics.median(gold), "c_us": statistics.median(c),
            "golden_us_all": [round(v, 1) for v in gold], "c_us_all": [round(v, 1) for v in c],
            "repeats": repeats, "inner": inner}


def engine_key(r: dict) -> tuple:
    """The key that pairs an engine row with its synthesis record."""
    return (r["lanes"], r["requant_units"], r["copies"], r["engines"], r["read_registers"])


def engine_rows(net) -> list[dict]:
    """Cycles, MACs and utilization per vector of each engine row (the exact cycle
    model); ``vector_cycles`` is the cycles per vector with every engine busy (a
    throughput: ``cycles / copies``, or ``ProgramCycles.array_vector_cycles``)."""
    from ttforge.hw.config import AccelConfig
    from ttforge.hw.cycles import estimate, program_cycles
    from ttforge.hw.program import compile_program

    import dataclasses

    rows = []
    for L, units, copies, engines, rr in ENGINES:
        cfg = dataclasses.replace(AccelConfig.for_network(net, lanes=L), requant_units=units,
                                  engines=engines, read_registers=rr)
        prog = compile_program(net, cfg)
        est = estimate(prog)
        cycles = sum(layer.cycles for layer in est.layers) + est.input_cycles + est.output_cycles
        macs = sum(layer.macs for layer in est.layers)
        per = program_cycles(prog.descriptors, cfg, prog.globals).array_vector_cycles / copies
        rows.append({"lanes": L, "requant_units": units, "copies": copies, "engines": engines,
                     "read_registers": rr, "cycles": cycles, "vector_cycles": per,
                     "in_flight": copies * engines, "macs": macs,
                     "utilization": macs / (L * cycles)})
    return rows


def routed_fmax() -> dict[tuple, dict]:
    """:func:`engine_key` -> the lowest routed Fmax (MHz) over the seeds of the newest
    engine record, with its label, commit and config (``synth_seeds.*.json``; ``network``
    ``mnist-seed``: the config sized to this network, else AccelConfig's defaults)."""
    best: dict[tuple, dict] = {}
    for path in sorted(RESULTS.glob("synth_seeds.*.json")):
        d = json.loads(path.read_text())
        runs = [r for r in d.get("runs", []) if r.get("routed") and r.get("fmax_mhz")]
        if not runs or d.get("device") != "ecp5-85f":
            continue
        rec = {"fmax_mhz_min": min(r["fmax_mhz"] for r in runs), "seeds": [r["seed"] for r in runs],
               "label": d.get("label"), "commit": d.get("git_commit"), "date_utc": d.get("date_utc", ""),
               "lut": d.get("summary", {}).get("lut", {}).get("median"),
               "network": d.get("network", "default"), "floorplan": bool(d.get("floorplan"))}
        cfg = d.get("config") if isinstance(d.get("config"), dict) else {}
        key = (d.get("lanes"), d.get("requant_units"), d.get("copies", 1), cfg.get("engines", 1),
               cfg.get("read_registers", 0))
        if key not in best or rec["date_utc"] > best[key]["date_utc"]:
            best[key] = rec
    return best


def board_builds() -> dict[tuple, dict]:
    """:func:`engine_key` -> the board top built by ``ttforge build`` at the highest clock
    where a placement seed met timing (``board_build.*.json``, ``bench_board_build.py``):
    its label, commit, clock and the seeds that met it, and every seed's Fmax."""
    best: dict[tuple, dict] = {}
    for path in sorted(RESULTS.glob("board_build.*.json")):
        d = json.loads(path.read_text())
        met = d.get("summary", {}).get("met_seeds") or []
        if not met or d.get("device") != "ecp5-85f":
            continue
        cfg = d.get("config") or {}
        env = d.get("environment", {})
        rec = {"label": d.get("label"), "commit": env.get("git_commit"), "dirty": env.get("git_dirty"),
               "mhz": d["freq_mhz"], "met_seeds": met,
               "fmax_mhz": {str(s["seed"]): s.get("fmax_mhz") for s in d.get("seeds", [])}}
        key = (cfg.get("lanes"), cfg.get("requant_units"), 1, cfg.get("engines", 1),
               cfg.get("read_registers", 0))
        if key not in best or rec["mhz"] > best[key]["mhz"]:
            best[key] = rec
    return best


def row_suffix(r: dict) -> str:
    """`` U=4 x4 engines ...``: what sets a row apart beside its lanes."""
    return ((f" U={r['requant_units']}" if r["requant_units"] else "")
            + (f" x{r['copies']} engines (harness)" if r["copies"] > 1 else "")
            + (f" x{r['engines']} engines" if r.get("engines", 1) > 1 else "")
            + (f" read_registers={r['read_registers']}" if r.get("read_registers") else ""))


def clocks() -> list[int]:
    from ttforge.firmware.board import ECP5_PLL

    return sorted({BOARD_HZ, *ECP5_PLL})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--inner", type=int, default=20)
    p.add_argument("--out", type=result_path, default=DEFAULT_JSON)
    a = p.parse_args(argv)
    if a.repeats < 1 or a.inner < 1:
        p.error("--repeats and --inner must be >= 1")
    t0 = time.perf_counter()
    net, x = network()
    cpu = cpu_latency(net, x, a.repeats, a.inner)
    fmax = routed_fmax()
    built = board_builds()
    rows = engine_rows(net)
    for r in rows:
        f = fmax.get(engine_key(r))
        r["routed"] = f
        r["board"] = built.get(engine_key(r))
        r["at"] = []
        per = r["vector_cycles"]                   # per vector (several in flight: a throughput)
        for hz in clocks():
            us = per / hz * 1e6
            r["at"].append({"mhz": hz / 1e6, "latency_us": us, "vectors_per_s": hz / per,
                            "macs_per_s": r["macs"] * hz / per,
                            "vs_golden": cpu["golden_us"] / us, "vs_c": cpu["c_us"] / us,
                            "reached": bool(f and f["fmax_mhz_min"] >= hz / 1e6)})
        if f:      # at the routed Fmax itself (a board top clocked there, not a PLL step)
            us = per / (f["fmax_mhz_min"] * 1e6) * 1e6
            r["at_fmax"] = {"mhz": f["fmax_mhz_min"], "latency_us": us,
                            "vs_golden": cpu["golden_us"] / us, "vs_c": cpu["c_us"] / us}
        if r["board"]:     # the board top's bitstream, at the clock it met timing at
            us = per / r["board"]["mhz"]
            r["at_board"] = {"mhz": r["board"]["mhz"], "latency_us": us, "vectors_per_s": 1e6 / us,
                             "vs_golden": cpu["golden_us"] / us, "vs_c": cpu["c_us"] / us}
        r["mhz_for_goal"] = per * GOAL / cpu["golden_us"]
    boards = RESULTS / "boards.json"
    check = None
    if boards.exists():
        b = json.loads(boards.read_text())
        l4 = [r["cycles"] for r in b.get("rows", []) if r.get("model") == "mnist" and r.get("board") == "ulx3s"]
        if l4:
            check = {"boards_json_cycles_L4": l4[0], "equal": l4[0] == rows[0]["cycles"]}
    out = {"benchmark": "vs_cpu", "command": "python bench/bench_vs_cpu.py " + " ".join(argv or sys.argv[1:]),
           "environment": {"date_utc": utc_now(), "git_commit": git("rev-parse", "HEAD"),
                           "git_dirty": git_dirty(), "cpu": cpu_model(), "cpus_available": os.cpu_count(),
                           "loadavg": list(os.getloadavg()), "numpy": np.__version__},
           "network": "MNIST 784-512-10, TT [7,4,7,4] -> [4,8,4,4] rank 16, 4-bit cores",
           "goal_x": GOAL, "cpu": cpu, "engine": rows, "boards_check": check,
           "seconds": round(time.perf_counter() - t0, 1)}
    atomic_write_text(a.out, json.dumps(out, indent=2) + "\n")
    print(f"golden {cpu['golden_us']:.0f} us, C {cpu['c_us']:.0f} us per vector (one core)")
    for r in rows:
        best = max((c for c in r["at"] if c["reached"]), key=lambda c: c["mhz"], default=None)
        units = row_suffix(r)
        print(f"L={r['lanes']:>2}{units}: {r['cycles']:>7,} cycles, {r['utilization']:.1%}; "
              f"{GOAL:g}x the golden executor needs {r['mhz_for_goal']:.1f} MHz; "
              + (f"routed {r['routed']['fmax_mhz_min']:.1f} MHz -> {best['vs_golden']:.2f}x golden, "
                 f"{best['vs_c']:.2f}x C at {best['mhz']:g} MHz" if best else "no routed clock")
              + (f"; the board top met {r['board']['mhz']:g} MHz -> {r['at_board']['vs_golden']:.2f}x golden, "
                 f"{r['at_board']['vs_c']:.2f}x C" if r.get("board") else ""))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
