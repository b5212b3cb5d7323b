#!/usr/bin/env python
"""The inference board tops over several nextpnr placement seeds: which seeds place (and
route), with the logic, flip-flops, block RAM and Fmax of each (issue 12: the iCEBreaker
top at about 90% of the iCE40UP5K's logic cells placed with some seeds only).

    python bench/bench_board_seeds.py --label after                         # both boards, seeds 1-4
    python bench/bench_board_seeds.py --boards icebreaker --seeds 1,2,3,4 --no-route --label before
    PYTHONPATH=/tmp/before-site python bench/bench_board_seeds.py --label before ...

The design is what ``ttforge build --board B ARTIFACT --seed S`` builds for this project's
test network (``tests.support.nets.small_net``: 30 -> 20 -> 12 -> 5, two TT layers and a
dense one; the smallest config that runs it at the board's default lanes and overrides):
the same ``BoardTop``, the same platform, Yosys script and nextpnr options. Yosys runs
once per board (its output does not depend on the seed); nextpnr then runs once per seed
on that netlist (``--jobs`` at a time). ``--no-route`` stops after placement: whether the
seed places, the utilisation after packing and nextpnr's post-placement Fmax estimate
(minutes instead of the quarter hour a routed iCEBreaker seed takes on a loaded 2-core
machine); Fmax is then the estimate of nextpnr's log. ``--reparse`` runs no tool and
rebuilds the JSON from what an earlier run left in ``--work``. Writes
``bench/results/board_seeds.<label>.json`` (atomically) with Yosys' cell counts, the
commit and whether ``firmware/`` or ``hw/`` had uncommitted changes.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared bench helpers
sys.path.append(str(ROOT))     # tests.support (the test network), after the installed ttforge
from _env import cpu_model, git, git_dirty, result_path, utc_now, write_result  # noqa: E402

BOARDS = ("icebreaker", "ulx3s")
NAME = "ttforge_{board}"


def test_artifact(path: Path) -> Path:
    """The test network's artifact (what docs/boards.md's "Measured" table builds)."""
    from ttforge.ir.artifact import save_artifact
    from ttforge.quant.qat import compile_network

    from tests.support.nets import small_net

    q, _ = small_net()
    save_artifact(compile_network(q), path)
    return path


def synthesize(board_key: str, artifact: Path, work: Path, run: bool = True) -> dict:
    """The board top's build files in ``work`` and Yosys run once (``run``; else the
    netlist already there is used): ``{"config", "device", "nextpnr": argv template,
    "env", "seconds"}``."""
    from ttforge.firmware.board import BoardTop, board
    from ttforge.firmware.build import board_config, toolchain_env
    from ttforge.hw.synth import DEVICES

    b = board(board_key)
    dev = DEVICES[b.device]
    cfg, _ = board_config(b, artifact)
    env = {**os.environ, **toolchain_env(dev.family)}
    name = NAME.format(board=b.key)
    extra = {"synth_opts": "-dsp"} if dev.family == "ice40" else {}   # as ttforge build
    plan = b.platform().build(BoardTop(b.key, cfg), name=name, do_build=False,
                              nextpnr_opts="--seed 1 --report report.json --timing-allow-fail "
                              + " ".join(dev.placer_args),
                              **extra)
    plan.extract(str(work))
    lines = [ln for ln in (work / f"build_{name}.sh").read_text().splitlines() if ln.startswith('"$')]
    yosys = next(shlex.split(ln) for ln in lines if ln.startswith('"$YOSYS"'))
    nextpnr = next(shlex.split(ln) for ln in lines if ln.startswith('"$NEXTPNR'))
    t0 = time.monotonic()
    r = subprocess.run([env[yosys[0][1:]], *yosys[1:]], cwd=work, env=env, capture_output=True,
                       text=True) if run else subprocess.CompletedProcess([], 0)
    if r.returncode:
        raise SystemExit(f"yosys failed for the {b.key}: see {work / (name + '.rpt')}")
    return {"config": cfg.to_dict(), "device": b.device, "device_title": dev.title,
            "yosys_cells": yosys_cells(work / f"{name}.rpt"),
            "nextpnr": [env[nextpnr[0][1:]], *nextpnr[1:]], "env": env,
            "seconds": round(time.monotonic() - t0, 1), "name": name}


def yosys_cells(rpt: Path) -> dict[str, int]:
    """The cell counts of Yosys' last ``stat`` in its log (``SB_LUT4``, the flip-flop
    kinds, ``SB_CARRY``; on the ECP5 ``LUT4``, ``TRELLIS_FF`` ...), and ``FF``: every
    flip-flop."""
    cells = {}
    for n, kind in re.findall(r"^\s+(\d+)\s+((?:SB|TRELLIS|CCU2|LUT|MULT|DP16|PDP)\w*)$",
                              rpt.read_text(errors="replace"), re.M):
        cells[kind] = int(n)        # the last stat (the whole design) wins
    cells["FF"] = sum(v for k, v in cells.items() if k.startswith(("SB_DFF", "TRELLIS_FF")))
    return cells


def _log_fmax(tim: Path) -> float | None:
    """The last Fmax nextpnr's log states (after placement only, the report has none)."""
    found = re.findall(r"Max frequency for clock '[^']*': ([0-9.]+) MHz", tim.read_text(errors="replace"))
    return float(found[-1]) if found else None


def place(syn: dict, work: Path, seed: int, route: bool, run: bool = True) -> dict:
    """nextpnr with ``seed`` on the synthesized netlist (its own report, log and output
    names, so seeds can run side by side): placed?, resources, Fmax, seconds. ``run``
    False: read the report and log an earlier run left in ``work``."""
    from ttforge.hw.synth import log_overflow, parse_report

    name, argv = syn["name"], list(syn["nextpnr"])
    own = {"--seed": str(seed), "--report": f"report-s{seed}.json", "--log": f"{name}-s{seed}.tim"}
    for i, a in enumerate(argv[:-1]):
        if a in own:
            argv[i + 1] = own[a]
        elif a in ("--asc", "--textcfg"):
            argv[i + 1] = f"s{seed}-{argv[i + 1]}"
    if not route:
        argv.append("--no-route")
    t0 = time.monotonic()
    r = (subprocess.run(argv, cwd=work, env=syn["env"], capture_output=True, text=True) if run
         else subprocess.CompletedProcess(argv, 0))
    out = {"seed": seed, "routed": route, "seconds": round(time.monotonic() - t0, 1) if run else None}
    rep, tim = work / own["--report"], work / own["--log"]
    if r.returncode or not rep.is_file():
        errs = [ln.strip() for ln in tim.read_text(errors="replace").splitlines()
                if ln.startswith("ERROR")] if tim.is_file() else []
        if not run and not errs:        # an earlier run stopped before this seed ended
            return {**out, "placed": None, "error": "not finished (the run was stopped)"}
        return {**out, "placed": False, "error": (errs[-1] if errs else f"exit status {r.returncode}"),
                "overflow": log_overflow(tim)}
    rp = parse_report(rep, syn["device"], log=tim)
    return {**out, "placed": True, "resources": rp.resources, "fmax_mhz": rp.fmax_mhz or _log_fmax(tim),
            "critical_path_ns": (rp.critical_path or {}).get("delay_ns")}


def summary(seeds: list[dict]) -> dict:
    ok = [s for s in seeds if s["placed"]]
    unfinished = [s["seed"] for s in seeds if s["placed"] is None]
    fmax = [s["fmax_mhz"] for s in ok if s.get("fmax_mhz")]
    res = ok[0]["resources"] if ok else {}
    return {"placed_seeds": [s["seed"] for s in ok],
            "failed_seeds": [s["seed"] for s in seeds if s["placed"] is False],
            "unfinished_seeds": unfinished,
            "resources": res,
            "fmax_min_mhz": min(fmax) if fmax else None,
            "fmax_median_mhz": statistics.median(fmax) if fmax else None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--boards", nargs="+", choices=BOARDS, default=list(BOARDS))
    p.add_argument("--seeds", default="1,2,3,4", help="comma-separated nextpnr seeds (default 1,2,3,4)")
    p.add_argument("--no-route", action="store_true", help="place only (post-placement Fmax estimate)")
    p.add_argument("--jobs", type=int, default=1, help="seeds placed at a time (default 1)")
    p.add_argument("--label", required=True, help="the result's name: board_seeds.LABEL.json")
    p.add_argument("--work", type=Path, default=None, help="keep the build files here")
    p.add_argument("--out", type=result_path, default=None)
    p.add_argument("--reparse", action="store_true",
                   help="run no tool: rebuild the JSON from the reports and logs an earlier run "
                        "left in --work (same boards, seeds and --no-route)")
    p.add_argument("--ttforge-commit", default=None,
                   help="the commit of the ttforge that Python imports, when it is not this "
                        "checkout's (a PYTHONPATH install of another commit); recorded as given")
    a = p.parse_args(argv)
    try:
        seeds = [int(s) for s in a.seeds.split(",")]
    except ValueError:
        p.error(f"--seeds {a.seeds!r} must be comma-separated integers")
    if a.jobs < 1:
        p.error("--jobs must be >= 1")
    if a.reparse and a.work is None:
        p.error("--reparse needs --work (the directory of the earlier run)")
    out = a.out or ROOT / "bench" / "results" / f"board_seeds.{a.label}.json"
    import ttforge

    env = {"date_utc": utc_now(), "cpu": cpu_model(), "cpus": os.cpu_count(),
           "loadavg_before": [round(v, 2) for v in os.getloadavg()],
           "git_commit": git("rev-parse", "HEAD") or None,
           "git_dirty": git_dirty("firmware", "hw", "bench/bench_board_seeds.py"),
           "ttforge_imported_from": str(Path(ttforge.__file__).resolve().parents[1])}
    env["ttforge_commit"] = a.ttforge_commit or env["git_commit"]
    tmp = tempfile.TemporaryDirectory(prefix="bench_board_seeds_")
    work = a.work or Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    art = test_artifact(work / "small.ttfa")
    t_all = time.monotonic()
    boards = {}
    for bk in a.boards:
        bw = work / bk
        bw.mkdir(exist_ok=True)
        syn = synthesize(bk, art, bw, run=not a.reparse)
        print(f"{bk}: yosys {syn['seconds']} s", flush=True)
        with ThreadPoolExecutor(a.jobs) as ex:
            runs = list(ex.map(lambda s: place(syn, bw, s, not a.no_route, run=not a.reparse), seeds))
        for r in runs:
            print(f"{bk} seed {r['seed']}: " + (f"placed, {r['resources']}, Fmax {r['fmax_mhz']} MHz"
                                                if r["placed"] else f"NOT placed: {r['error']}"
                                                if r["placed"] is False else r["error"])
                  + f" ({r['seconds']} s)", flush=True)
        boards[bk] = {"device": syn["device"], "config": syn["config"], "yosys_seconds": syn["seconds"],
                      "yosys_cells": syn["yosys_cells"],
                      "seeds": runs, **summary(runs)}
    result = {"benchmark": "board_seeds", "format_version": 1, "label": a.label,
              "command": " ".join(["python bench/bench_board_seeds.py", *(sys.argv[1:] if argv is None else argv)]),
              "routed": not a.no_route, "reparsed": a.reparse, "environment": env, "boards": boards,
              "seconds": round(time.monotonic() - t_all, 1)}
    write_result(out, result)
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
