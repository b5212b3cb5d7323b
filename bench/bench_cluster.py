"""``ttforge regress`` on Dask against the runners it replaced, on this machine.

    python bench/bench_cluster.py                      # 12 seeds x 16 vectors on Icarus
    python bench/bench_cluster.py --seeds 50 --vectors 16 --sim icarus
    python bench/bench_cluster.py --quick              # 4 seeds, 4 vectors (smoke run)

Measures, each on the same seeds (random networks and configs, ``ttforge.sim.regress.regress``):

* ``cold``: a local Dask cluster of 2 workers on an empty build root: the build-cache hit
  rate (cases that found their simulator model built / cases) and the build seconds;
* then with the cache warm, ``--rounds`` times in a rotated order (the machine is shared;
  each mode's median round is reported): the cases in one process (``--jobs 1``), in the
  process pool ``--jobs 2`` used before Dask (``fork``, reproduced here as it was), and on
  local Dask clusters of 1 and 2 workers (``--jobs 2`` / ``--cluster`` today): cases per
  minute and the ratios; and the hit rate of a 50-seed run from its configs;
* the scheduling overhead of one task: 400 empty tasks (``ttforge.sim.cluster.probe``) on a
  local cluster of 2 workers, wall time per task;
* a projection for 16 and 128 workers from the measured per-case and build times and the
  overhead: where the scheduler, rather than the workers, would set the pace.

Writes ``bench/results/cluster.json`` with the commit and machine it ran on. The machine
is shared (other jobs run on its 2 cores): the load average is recorded before and after.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared bench helpers
from _env import cpu_model, git, git_dirty, package_version, result_path, utc_now  # noqa: E402
from ttforge.atomic import atomic_write_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "results" / "cluster.json"


def _pool_regress(seeds, sim, jobs, vectors, build_root, out_dir):
    """The ``--jobs J`` runner before Dask (a ``fork`` process pool, commit 5b0f182)."""
    from ttforge.sim.regress import _worker

    tasks = [(s, vectors, sim, None, str(build_root), str(out_dir), None) for s in seeds]
    ctx = multiprocessing.get_context("fork")
    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        return [f.result() for f in cf.as_completed([pool.submit(_worker, t) for t in tasks])]


def _run(mode: str, seeds, sim, vectors, build_root: Path, work: Path) -> dict:
    from ttforge.sim.regress import regress

    out = work / mode
    t0 = time.perf_counter()
    if mode == "pool-fork-2":
        results = _pool_regress(seeds, sim, 2, vectors, build_root, out)
    else:
        kw = {"process": {}, "dask-1": {"cluster": "local", "jobs": 1},
              "dask-2": {"cluster": "local", "jobs": 2}, "cold-dask-2": {"cluster": "local", "jobs": 2}}[mode]
        results = regress(seeds, sim, vectors=vectors, out_dir=out, build_root=build_root, **kw).results
    wall = time.perf_counter() - t0
    built = [r for r in results if r.build_seconds > 0]
    return {"mode": mode, "cases": len(results), "passed": sum(r.passed for r in results),
            "wall_seconds": round(wall, 2), "cases_per_minute": round(60 * len(results) / wall, 2),
            "case_seconds_mean": round(sum(r.seconds for r in results) / len(results), 2),
            "builds": len(built), "build_seconds": round(sum(r.build_seconds for r in built), 2),
            "cache_hit_rate": round(1 - len(built) / len(results), 3),
            "distinct_configs": len({json.dumps(r.config, sort_keys=True) for r in results})}


def _overhead(tasks: int) -> dict:
    from ttforge.sim.cluster import ClusterSpec, connect, probe, run_tasks

    with connect(ClusterSpec(None, 2)) as client:
        run_tasks(client, probe, [(i, 0.0, None) for i in range(20)], lambda i, o: None)  # warm
        t0 = time.perf_counter()
        run_tasks(client, probe, [(i, 0.0, None) for i in range(tasks)], lambda i, o: None)
        wall = time.perf_counter() - t0
    return {"tasks": tasks, "workers": 2, "wall_seconds": round(wall, 3),
            "ms_per_task": round(1000 * wall / tasks, 2)}


def _hit_rate(n: int) -> dict:
    """The cache hit rate of an ``n``-seed run, from the configs alone: a model is built once
    per distinct Verilog (config), every other case of that config finds it."""
    from ttforge.sim.cases import make_case

    keys = {make_case(s, 1).config for s in range(n)}
    return {f"hit_rate_{n}_seeds_random_configs": round(1 - len(keys) / n, 3),
            f"distinct_configs_{n}_seeds": len(keys),
            f"hit_rate_{n}_seeds_one_config": round(1 - 1 / n, 3)}


def _projection(case_s: float, build_s: float, builds_per_case: float, sched_ms: float) -> list[dict]:
    rows = []
    for w in (1, 2, 16, 128):
        worker_rate = w / case_s                       # cases/s the workers can run
        sched_rate = 1000.0 / sched_ms                 # cases/s the scheduler hands out (measured)
        rows.append({"workers": w, "cases_per_minute": round(60 * min(worker_rate, sched_rate), 1),
                     "limit": "workers" if worker_rate < sched_rate else "scheduler",
                     "first_build_wait_s": round(build_s, 1),
                     "builds_per_case": round(builds_per_case, 3)})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sim", default="icarus", choices=["icarus", "verilator", "verilator-native"])
    p.add_argument("--seeds", type=int, default=12)
    p.add_argument("--vectors", type=int, default=16)
    p.add_argument("--overhead-tasks", type=int, default=400)
    p.add_argument("--rounds", type=int, default=3, help="rounds of the warm modes (median reported)")
    p.add_argument("--hit-rate-seeds", type=int, default=50,
                   help="seeds whose configs give the cache hit rate of a longer run (default 50)")
    p.add_argument("--quick", action="store_true", help="4 seeds x 4 vectors, 100 overhead tasks")
    p.add_argument("-o", "--out", type=result_path, default=DEFAULT_OUT)
    a = p.parse_args(argv)
    if a.quick:
        a.seeds, a.vectors, a.overhead_tasks, a.rounds = 4, 4, 100, 1
    seeds = list(range(a.seeds))
    load0 = os.getloadavg()
    runs = []
    modes = ["process", "pool-fork-2", "dask-1", "dask-2"]
    with tempfile.TemporaryDirectory(prefix="ttforge-bench-cluster-") as d:
        d = Path(d)
        root = d / "build-root"
        os.environ["TTFORGE_NATIVE_CACHE"] = str(d / "native")   # the native cache, cold too
        runs.append(_run("cold-dask-2", seeds, a.sim, a.vectors, root, d / "runs"))
        print(json.dumps(runs[-1]), flush=True)
        # the machine is shared: the modes take turns, in a rotated order each round, and
        # each mode's median round is reported
        for k in range(a.rounds):
            for mode in modes[k % len(modes):] + modes[:k % len(modes)]:
                r = _run(mode, seeds, a.sim, a.vectors, root, d / f"runs{k}")
                r["round"] = k
                r["load_average_1min"] = round(os.getloadavg()[0], 2)
                runs.append(r)
                print(json.dumps(r), flush=True)
    overhead = _overhead(a.overhead_tasks)
    print(json.dumps(overhead), flush=True)
    by = {"cold-dask-2": runs[0]}
    for mode in modes:
        mine = sorted((r for r in runs if r["mode"] == mode), key=lambda r: r["cases_per_minute"])
        by[mode] = mine[len(mine) // 2]
    cold = by["cold-dask-2"]
    warm_case = by["process"]["case_seconds_mean"]
    result = {
        "what": f"ttforge regress, {a.seeds} seeds x {a.vectors} vectors on {a.sim}, random configs",
        "command": "python bench/bench_cluster.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "commit": git("rev-parse", "HEAD"), "git_dirty": git_dirty("sim", "bench/bench_cluster.py"),
        "date": utc_now(), "cpu": cpu_model(), "cores": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load0],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "versions": {k: package_version(k) for k in ("distributed", "dask", "cocotb")},
        "runs": runs,
        "ratios": {"dask-2 / process": round(by["dask-2"]["cases_per_minute"] / by["process"]["cases_per_minute"], 2),
                   "dask-2 / pool-fork-2": round(by["dask-2"]["cases_per_minute"]
                                                 / by["pool-fork-2"]["cases_per_minute"], 2),
                   "dask-2 / dask-1": round(by["dask-2"]["cases_per_minute"] / by["dask-1"]["cases_per_minute"], 2)},
        "build_cache": {"cold_hit_rate": cold["cache_hit_rate"], "builds": cold["builds"],
                        "distinct_configs": cold["distinct_configs"],
                        "build_seconds_mean": round(cold["build_seconds"] / max(1, cold["builds"]), 2),
                        **_hit_rate(a.hit_rate_seeds)},
        "medians_of_rounds": {m: by[m] for m in modes},
        "scheduling_overhead": overhead,
        "projection": _projection(warm_case, cold["build_seconds"] / max(1, cold["builds"]),
                                  cold["builds"] / max(1, cold["cases"]), overhead["ms_per_task"]),
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out, json.dumps(result, indent=1) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
