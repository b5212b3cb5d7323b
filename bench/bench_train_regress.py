"""The long training regression: ``ttforge regress --train`` over many seeds and steps on
the native Verilator harness, every case's final state compared with the golden trainer.

    python bench/bench_train_regress.py [--seeds 50] [--steps 1000]

Writes ``bench/results/train_regress.json`` (per case: network, family, lanes, batch,
cycles per step, seconds, verdict; the git commit of the tree that ran).
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
OUT = ROOT / "bench" / "results" / "train_regress.json"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--seed-start", type=int, default=0)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--out", type=result_path, default=str(OUT))
    a = ap.parse_args(argv)
    from ttforge.sim.train_regress import EDGE_FAMILIES, FAMILIES, train_regress

    t0 = time.perf_counter()

    def line(r):
        print(f"seed {r.seed}: {'pass' if r.passed else 'FAIL'} {r.describe} {r.seconds:.1f} s", file=sys.stderr,
              flush=True)

    res = train_regress(range(a.seed_start, a.seed_start + a.seeds), a.steps, on_case=line)
    out = {"benchmark": "train_regress", "command": "python bench/bench_train_regress.py " + " ".join(argv or sys.argv[1:]),
           "simulator": "verilator-native", "steps": a.steps, "cases": len(res),
           "passed": sum(r.passed for r in res), "seconds": round(time.perf_counter() - t0, 1),
           # a case's ``family`` indexes this list: the ordinary families, then the edge ones
           "families": [{"lanes": lanes, "widths": w, "edge": i >= len(FAMILIES)}
                        for i, (lanes, w) in enumerate(FAMILIES + EDGE_FAMILIES)],
           "results": [r.to_dict() for r in res],
           "env": {"when": utc_now(), "cpu": cpu_model(),
                   "git": {"commit": git("rev-parse", "HEAD"), "dirty": git_dirty("hw", "sim", "ir")}}}
    atomic_write_text(Path(a.out), json.dumps(out, indent=2) + "\n")
    print(f"{out['passed']} of {out['cases']} passed in {out['seconds']} s")
    return 0 if out["passed"] == out["cases"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
