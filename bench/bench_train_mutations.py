"""Mutation testing of the training path: every deliberate fault of
``ttforge.hw.faults.TRAIN_FAULTS`` built into the RTL must be caught by the training
regression (``ttforge regress --train --fault NAME``) on the native Verilator harness.

    python bench/bench_train_mutations.py [--cases 4] [--steps 20]

The cases are the first ``--cases`` seeds of engine family 0 (lanes 4, the default widths)
with at least two layers (so a ReLU mask exists), one build per fault. Writes
``bench/results/train_mutations.json``: per fault, killed or not, the first killing case,
its first differing step and the difference.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import cpu_model, git, git_dirty, result_path, utc_now  # noqa: E402
from ttforge.atomic import atomic_write_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "train_mutations.json"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out", type=result_path, default=str(OUT))
    a = ap.parse_args(argv)
    from ttforge.hw.faults import TRAIN_FAULTS
    from ttforge.sim.train_regress import train_regress, train_regress_case

    seeds = []
    s = 0
    while len(seeds) < a.cases:
        c = train_regress_case(s, 1)
        if c.family == 0 and len(c.state.layers) >= 2:
            seeds.append(s)
        s += 1
    rows = []
    t0 = time.perf_counter()
    for fault in TRAIN_FAULTS:
        t1 = time.perf_counter()
        res = train_regress(seeds, a.steps, fault=fault)
        killers = [r for r in res if not r.passed]
        first = killers[0] if killers else None
        rows.append({"fault": fault, "description": TRAIN_FAULTS[fault], "killed": bool(killers),
                     "cases_failed": len(killers), "cases": len(res),
                     "first": None if first is None else {"seed": first.seed, "step": first.first_step,
                                                          "difference": first.difference, "error": first.error},
                     "seconds": round(time.perf_counter() - t1, 1)})
        print(f"{fault}: {'killed' if killers else 'SURVIVED'} ({len(killers)}/{len(res)} cases)", file=sys.stderr,
              flush=True)
    control = train_regress(seeds, a.steps)
    out = {"benchmark": "train_mutations", "command": "python bench/bench_train_mutations.py " + " ".join(argv or sys.argv[1:]),
           "simulator": "verilator-native", "seeds": seeds, "steps": a.steps,
           "control_passed": all(r.passed for r in control), "faults": rows,
           "killed": sum(r["killed"] for r in rows), "total": len(rows), "seconds": round(time.perf_counter() - t0, 1),
           "env": {"when": utc_now(), "cpu": cpu_model(),
                   "git": {"commit": git("rev-parse", "HEAD"), "dirty": git_dirty("hw", "sim", "ir")}}}
    atomic_write_text(Path(a.out), json.dumps(out, indent=2) + "\n")
    print(f"{out['killed']} of {out['total']} faults killed; control passed: {out['control_passed']}")
    return 0 if out["killed"] == out["total"] and out["control_passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
