#!/usr/bin/env python
"""A real ``ttforge build`` of one board top over several nextpnr placement seeds, at a
chosen system clock: whether each seed meets timing, its Fmax, critical path and
resources (issue 16: the ULX3S board top of the four-engine MNIST array at the clock that
makes it 3x the CPU).

    python bench/bench_board_build.py --board ulx3s \\
        --config bench/results/synth_seeds.mnist-l16-e4-floorplan-dec.json \\
        --freq 106.25 --seeds 1,2,3 --jobs 2 --label mnist-e4-106

Each seed runs the product's own command, ``ttforge build --board B --config C --freq F
--seed S --keep DIR -o DIR/out`` (its synthesis, output-register fold, free placement,
floorplan, place and route), so what is measured is what a user builds. A seed that does
not meet timing is refused by the build (exit 3, nothing in ``-o``); the bench still
reads its report from the kept work directory. ``--config`` is an AccelConfig file or a
results JSON with a ``config`` (a ``bench_synth_seeds.py`` result: the board top of the
array that bench measured). ``--reparse`` runs no tool and rebuilds the JSON from what an
earlier run left in ``--work``. Writes ``bench/results/board_build.<label>.json``
(atomically) with the commit and whether ``firmware/`` or ``hw/`` had uncommitted
changes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared bench helpers
from _env import cpu_model, git, git_dirty, result_path, utc_now, write_result  # noqa: E402


def load_config(path: Path) -> dict:
    """The AccelConfig dict of ``path``: the file itself, or its ``config`` entry (a FIFO,
    a device or a huge file is refused before it is read)."""
    from ttforge.limits import MAX_MANIFEST_BYTES, read_bounded

    d = json.loads(read_bounded(path, "config", MAX_MANIFEST_BYTES))
    if not isinstance(d, dict):
        raise ValueError("holds no JSON object")
    return d["config"] if isinstance(d.get("config"), dict) else d


def build_seed(a, config: Path, work: Path, seed: int, run: bool = True) -> dict:
    """``ttforge build`` with ``seed`` (its work files kept in ``work/s<seed>``): met?,
    Fmax, critical path, resources, seconds. ``run`` False: read what an earlier run left."""
    from ttforge.hw.synth import parse_report

    sdir = work / f"s{seed}"
    argv = [str(Path(sys.executable).with_name("ttforge")), "build", "--board", a.board, "--config", str(config),
            "--freq", f"{a.freq:g}", "--seed", str(seed), "--keep", str(sdir / "keep"),
            "-o", str(sdir / "out")]
    t0 = time.monotonic()
    if run:
        sdir.mkdir(parents=True, exist_ok=True)
        with open(sdir / "build.log", "w") as log:
            rc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT).returncode
        (sdir / "returncode").write_text(f"{rc}\n")
    else:   # (no returncode file: that run was stopped)
        rc = int((sdir / "returncode").read_text()) if (sdir / "returncode").is_file() else None
    out = {"seed": seed, "returncode": rc, "seconds": round(time.monotonic() - t0, 1) if run else None}
    text = (sdir / "build.log").read_text(errors="replace") if (sdir / "build.log").is_file() else ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    out["message"] = lines[-1][:400] if lines and rc else None
    rep = sdir / "keep" / "build" / "report.json"
    manifest = sdir / "out" / "build.json"
    if manifest.is_file():
        man = json.loads(manifest.read_text())
        out.update(timing_met=True, lut_mapper=man["lut_mapper"], fanout_keep=man["fanout_keep"])
    else:
        out["timing_met"] = None if rc is None else False      # None: the run was stopped
    if not rep.is_file():
        return {**out, "routed": False}
    r = parse_report(rep, a.device)
    return {**out, "routed": True, "fmax_mhz": r.fmax_mhz, "resources": r.resources,
            "critical_path": r.critical_path}


def main(argv=None) -> int:
    from ttforge.firmware.board import board

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--board", default="ulx3s")
    p.add_argument("--config", type=Path, required=True,
                   help="an AccelConfig JSON, or a results JSON with a 'config'")
    p.add_argument("--freq", type=float, required=True, help="the system clock (MHz)")
    p.add_argument("--seeds", default="1,2,3", help="comma-separated nextpnr seeds (default 1,2,3)")
    p.add_argument("--jobs", type=int, default=1, help="builds at a time (default 1)")
    p.add_argument("--label", required=True, help="the result's name: board_build.LABEL.json")
    p.add_argument("--work", type=Path, default=None, help="keep the builds here")
    p.add_argument("--out", type=result_path, default=None)
    p.add_argument("--reparse", action="store_true",
                   help="run no tool: rebuild the JSON from an earlier run's --work")
    a = p.parse_args(argv)
    try:
        seeds = [int(s) for s in a.seeds.split(",")]
    except ValueError:
        p.error(f"--seeds {a.seeds!r} must be comma-separated integers")
    if a.jobs < 1:
        p.error("--jobs must be >= 1")
    if a.reparse and a.work is None:
        p.error("--reparse needs --work (the directory of the earlier run)")
    try:
        cfg = load_config(a.config)
    except (OSError, ValueError) as e:
        p.error(f"--config {a.config}: {e}")
    b = board(a.board)
    a.device = b.device
    out = a.out or ROOT / "bench" / "results" / f"board_build.{a.label}.json"
    env = {"date_utc": utc_now(), "cpu": cpu_model(), "cpus": os.cpu_count(),
           "loadavg_before": [round(v, 2) for v in os.getloadavg()],
           "git_commit": git("rev-parse", "HEAD") or None,
           "git_dirty": git_dirty("firmware", "hw", "bench/bench_board_build.py")}
    tmp = tempfile.TemporaryDirectory(prefix="bench_board_build_")
    work = a.work or Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    config = work / "config.json"
    if not a.reparse:
        config.write_text(json.dumps(cfg, indent=1) + "\n")
    t_all = time.monotonic()
    with ThreadPoolExecutor(a.jobs) as ex:
        runs = list(ex.map(lambda s: build_seed(a, config, work, s, run=not a.reparse), seeds))
    for r in runs:
        print(f"seed {r['seed']}: " + (f"Fmax {r['fmax_mhz']} MHz, timing "
                                       f"{'met' if r['timing_met'] else 'NOT met'}"
                                       if r["routed"] else f"not routed: {r['message']}")
              + f" ({r['seconds']} s)", flush=True)
    fmax = [r["fmax_mhz"] for r in runs if r.get("fmax_mhz")]
    result = {"benchmark": "board_build", "format_version": 1, "label": a.label,
              "command": " ".join(["python bench/bench_board_build.py",
                                   *(sys.argv[1:] if argv is None else argv)]),
              "board": b.key, "device": b.device, "freq_mhz": a.freq, "config": cfg,
              "reparsed": a.reparse, "environment": env, "seeds": runs,
              "summary": {"met_seeds": [r["seed"] for r in runs if r["timing_met"]],
                          "fmax_min_mhz": min(fmax) if fmax else None,
                          "fmax_median_mhz": statistics.median(fmax) if fmax else None},
              "seconds": round(time.monotonic() - t_all, 1)}
    write_result(out, result)
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
