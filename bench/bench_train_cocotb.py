"""The training top on the cocotb simulators: 10 configurations x 100 steps on Icarus and on
Verilator, every step's state equal to the golden trainer's and the word-level interpreter's.

    python bench/bench_train_cocotb.py [--sims icarus,verilator] [--configs 10] [--steps 100]

Configuration ``i`` takes the engine of family ``i mod 5`` of ``ttforge.sim.train_regress``
(lanes 4, 2, 8, 1, 16 with their widths; one build per family and simulator) and a random
network, batch and learning-rate shift drawn from seed ``i`` (``ttforge.ir.random.train_case``:
1-3 layers, 1-3 cores, ranks 1-4). Each run goes through the AXI4-Lite host driver
(``AsyncTrainHost``) in the testbench ``ttforge.sim.train_tb``, and
:func:`ttforge.sim.train_runner.judge` compares, after every step, the state read back with
``train_step`` and CMEM/BMEM/MAXACC/generator/counters with the interpreter, with
``np.array_equal``. Writes ``bench/results/train_cocotb.json`` (the git commit; the tree
must be clean) as each run finishes, so an interrupted run keeps what finished and
``--resume`` skips it.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import cpu_model, git, git_dirty, result_path, utc_now  # noqa: E402
from ttforge.atomic import atomic_write_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "train_cocotb.json"


def config_case(i: int, steps: int) -> dict:
    """The case dict of configuration ``i`` (see the module docstring); deterministic."""
    from ttforge.sim.train_regress import FAMILIES, family_config

    fam = i % len(FAMILIES)
    lanes, widths = FAMILIES[fam]
    ec = family_config(fam)
    rng = np.random.default_rng(np.random.SeedSequence([i, 1414]))
    net = dict(n_layers=int(rng.integers(1, 4)), d=int(rng.integers(1, 4)), rank=int(rng.integers(1, 5)),
               n_in=int(rng.integers(4, 25)), hidden=int(rng.integers(4, 17)), n_out=int(rng.integers(2, 9)),
               lr_shift=int(rng.integers(2, 7)), **widths)
    engine = {k: getattr(ec, k) for k in ("lanes", "acc_bits", "act_depth", "grad_depth", "core_depth",
                                          "bias_depth", "desc_depth", "max_batch", "max_classes")}
    return {"seed": 1000 + i, "batch": int(rng.integers(1, 2 * lanes + 1)), "steps": int(steps),
            "net": net, "engine": engine, "family": fam}


def _step_ok(rec: dict) -> bool:
    """A step of :func:`judge` is equal: the state against ``train_step``, the memories,
    MAXACC and generator against the interpreter, the counters against the program and the
    cycle model (no pauses in this bench, so CYCLES equals the model exactly)."""
    return (rec["golden"] is None and all(rec[k] for k in ("cmem", "bmem", "maxacc", "rng"))
            and rec.get("mac_cycles", False) and rec.get("changed", False)
            and rec.get("cycles", (0, 1))[0] == rec.get("cycles", (0, 1))[1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sims", default="icarus,verilator")
    ap.add_argument("--configs", type=int, default=10)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--out", type=result_path, default=str(OUT))
    ap.add_argument("--resume", action="store_true", help="keep the finished runs of --out")
    a = ap.parse_args(argv)

    from ttforge.sim.train_runner import build_train, case_config, judge, run_train

    out_path = Path(a.out)
    runs: list[dict] = []
    commit = git("rev-parse", "HEAD")
    if a.resume and out_path.is_file():
        old = json.loads(out_path.read_text())
        if old["env"]["git"]["commit"] == commit and old["steps"] == a.steps:
            runs = [r for r in old["runs"] if r.get("passed") is not None]
    done = {(r["sim"], r["config"]) for r in runs}

    def write():
        passed = [r for r in runs if r["passed"]]
        out = {
            "benchmark": "train_cocotb", "command": "python bench/bench_train_cocotb.py " + " ".join(argv or sys.argv[1:]),
            "steps": a.steps, "configs": a.configs, "runs": runs,
            "summary": {sim: {"runs": sum(r["sim"] == sim for r in runs),
                              "equal": sum(r["sim"] == sim for r in passed),
                              "steps_equal": sum(r["steps_equal"] for r in runs if r["sim"] == sim)}
                        for sim in a.sims.split(",")},
            "env": {"when": utc_now(), "cpu": cpu_model(), "git": {"commit": commit,
                                                                   "dirty": git_dirty("hw", "sim", "ir", "bench")}},
        }
        atomic_write_text(out_path, json.dumps(out, indent=1) + "\n")

    bad = 0
    for sim in a.sims.split(","):
        builds = {}
        for i in range(a.configs):
            if (sim, i) in done:
                continue
            case = config_case(i, a.steps)
            fam = case.pop("family")
            state, cfg, _ = case_config(case)
            t0 = time.perf_counter()
            if fam not in builds:
                builds[fam] = build_train(cfg, sim)
            build_s = time.perf_counter() - t0
            run = run_train(builds[fam], case, seed=i)
            recs = judge(run)
            ok = [_step_ok(r) for r in recs]
            ok_steps = sum(ok)
            first = next((k for k, good in enumerate(ok) if not good), None)
            passed = run.error is None and len(recs) == a.steps and ok_steps == a.steps
            bad += not passed
            layers = "-".join(str(L.in_features) for L in state.layers) + f"-{state.n_classes}"
            runs.append({
                "sim": sim, "config": i, "family": fam, "lanes": cfg.lanes, "batch": case["batch"],
                "network": layers, "cores": [L.d for L in state.layers], "ranks": [[int(c.shape[0]) for c in L.masters[1:]] for L in state.layers],
                "widths": {k: v for k, v in asdict(state.config).items() if k.endswith("_bits") or k == "rounding"},
                "steps_run": len(recs), "steps_equal": ok_steps, "passed": passed,
                "first_divergent_step": first,
                "difference": None if first is None else str(recs[first]["golden"] or recs[first]),
                "error": run.error, "sim_cycles": run.sim_cycles, "sim_seconds": round(run.sim_wall_s, 1),
                "build_seconds": round(build_s, 1)})
            write()
            print(f"{sim} config {i} ({layers}, L={cfg.lanes}, batch {case['batch']}): "
                  f"{ok_steps}/{a.steps} steps equal, {run.sim_wall_s:.0f} s", file=sys.stderr, flush=True)
    write()
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
