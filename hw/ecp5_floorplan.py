"""Each engine of an ECP5-85F engine array in a region of its own, by its hard blocks.

Placed freely, the four engines of ``AccelConfig(engines=4)`` interleave: nextpnr's
analytic placer spreads each engine over half the die's width and most of its height
(in a free placement of the array with ``read_registers = 2``, the middle 80% of an
engine's cells spanned 47 to 77 of the die's 126 columns), so every engine's nets cross the others', the router meets congestion, and
Fmax falls well below one engine's. A hardware engineer's answer is a floorplan; nextpnr
takes no region constraints without its Python API (not in the pip build), but it takes a
``BEL`` attribute on a cell. :func:`floorplan_engines` sets one on every block RAM
(``DP16KD``) and multiplier (``MULT18X18D``) of each engine, to a site in that engine's
region (quadrants for four engines, vertical strips otherwise), and leaves the rest of the
logic free: the placer pulls it towards its engine's anchored blocks.

Which site a block takes comes from a first, free placement (``placed``, nextpnr's
``--write`` output): the engines go to the regions nearest their blocks' centroids (the
assignment with the least total distance), and each block to the free site of its region
nearest where that placement put it, relative to its engine's centroid moved to the
region's centre (farthest blocks first, so the outliers do not take the middle). The
floorplan is part of the netlist, so every placement seed after it sees the same one.
Only placement changes: the logic and its cycles are the netlist's.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path

from ttforge.hw.config import MAX_ENGINES

__all__ = ["ECP5_85F_SITES", "ECP5_85F_GRID", "engine_of", "engine_regions", "floorplan_engines",
           "floorplan_netlist_file", "FloorplanReport", "main"]

#: the LFE5U-85F's tile grid (columns, rows) in nextpnr's coordinates
ECP5_85F_GRID = (126, 95)

# The 85F's hard-block sites as nextpnr names them (its chip database, read from a placed
# design of 208 DP16KD and 156 MULT18X18D; tests/hw/test_ecp5_floorplan.py checks them
# against the installed nextpnr): thirteen 9-column tiles each side of the centre, four
# block RAMs and four multipliers a tile
_TILE_X = tuple(range(4, 65, 9)) + tuple(range(69, 115, 9))
_EBR_ROWS = (22, 46, 70, 82)
_MULT_ROWS = (10, 34, 58)

#: ``{"DP16KD": [bel, ...], "MULT18X18D": [bel, ...]}``: every site of the LFE5U-85F
ECP5_85F_SITES = {
    "DP16KD": [f"X{x + 2 * i}/Y{y}/EBR{i}" for y in _EBR_ROWS for x in _TILE_X for i in range(4)],
    "MULT18X18D": [f"X{x + dx}/Y{y}/MULT18_{k}" for y in _MULT_ROWS for x in _TILE_X
                   for dx, k in ((0, 0), (1, 1), (4, 4), (5, 5))],
}

_ENGINE = re.compile(r"(?:^|\.)engine(\d+)\.")


class FloorplanReport(dict):
    """``{"engines": n, "cells": n, "regions": {engine: [x0, y0, x1, y1]}}``: the cells
    given a ``BEL`` and each engine's region."""


def engine_of(cell: str) -> int | None:
    """The engine a cell belongs to (``...engine2.cmem...`` -> 2), or None."""
    m = _ENGINE.search(cell)
    return int(m.group(1)) if m else None


def engine_regions(n: int, grid=ECP5_85F_GRID) -> list[tuple[float, float, float, float]]:
    """``n`` regions ``(x0, y0, x1, y1)`` (half-open) tiling the die: quadrants for four,
    else ``n`` vertical strips."""
    w, h = grid
    if n == 4:
        return [(i % 2 * w / 2, i // 2 * h / 2, (i % 2 + 1) * w / 2, (i // 2 + 1) * h / 2) for i in range(4)]
    return [(i * w / n, 0.0, (i + 1) * w / n, float(h)) for i in range(n)]


def _xy(bel: str) -> tuple[int, int]:
    x, y, _ = bel.split("/")
    return int(x[1:]), int(y[1:])


def _top(netlist: dict) -> dict:
    mods = netlist.get("modules", {})
    tops = [m for m in mods.values() if str(m.get("attributes", {}).get("top", "0")).strip("0") != ""]
    if len(tops) != 1:
        tops = list(mods.values()) if len(mods) == 1 else []
    if len(tops) != 1:
        raise ValueError("the netlist has no single top module")
    return tops[0]


def floorplan_engines(netlist: dict, placed: dict, *, sites=None, grid=ECP5_85F_GRID) -> FloorplanReport:
    """Give each engine's block RAMs and multipliers of ``netlist`` (Yosys JSON, changed in
    place) a ``BEL`` in the engine's region, from the free placement ``placed`` (nextpnr
    JSON); see the module's docstring. Raises ``ValueError`` if a region has fewer sites
    of a kind than its engine has blocks of it."""
    sites = ECP5_85F_SITES if sites is None else sites
    cells = _top(netlist)["cells"]
    where = {n: c.get("attributes", {}).get("NEXTPNR_BEL") for n, c in _top(placed)["cells"].items()}
    pos: dict[str, tuple[int, int]] = {}
    blocks: dict[int, list[str]] = {}          # each engine's hard blocks
    for name, cell in cells.items():
        e = engine_of(name) if cell.get("type") in sites else None
        if e is not None:
            if not where.get(name):
                raise ValueError(f"{name} is not placed in the free placement given")
            pos[name] = _xy(where[name])
            blocks.setdefault(e, []).append(name)
    engines = sorted(blocks)
    report = FloorplanReport(engines=len(engines), cells=0, regions={})
    if len(engines) < 2:
        return report
    if len(engines) > MAX_ENGINES:     # (and the region assignment tries n! orders)
        raise ValueError(f"{len(engines)} engines in the netlist; an array has at most {MAX_ENGINES} "
                         "(AccelConfig.engines)")
    regions = engine_regions(len(engines), grid)
    cent = {e: (sum(pos[n][0] for n in blocks[e]) / len(blocks[e]),
                sum(pos[n][1] for n in blocks[e]) / len(blocks[e])) for e in engines}
    mid = [((r[0] + r[2]) / 2, (r[1] + r[3]) / 2) for r in regions]
    # the engines -> regions assignment of least total distance (4! = 24 to try at most)
    best = min(itertools.permutations(range(len(regions)), len(engines)),
               key=lambda perm: sum(math.dist(cent[e], mid[r]) for e, r in zip(engines, perm)))
    taken: set[str] = set()
    for e, r in zip(engines, best):
        x0, y0, x1, y1 = regions[r]
        report["regions"][e] = [x0, y0, x1, y1]
        for kind, bels in sites.items():
            mine = [n for n in blocks[e] if cells[n]["type"] == kind]
            free = [b for b in bels if b not in taken and x0 <= _xy(b)[0] < x1 and y0 <= _xy(b)[1] < y1]
            if len(free) < len(mine):
                raise ValueError(f"engine {e} has {len(mine)} {kind} but its region "
                                 f"({x0:g}, {y0:g})-({x1:g}, {y1:g}) only {len(free)} sites")

            def want(n):    # where the free placement put it, about the region's centre
                return (mid[r][0] + pos[n][0] - cent[e][0], mid[r][1] + pos[n][1] - cent[e][1])

            for n in sorted(mine, key=lambda n: (-math.dist(pos[n], cent[e]), n)):
                bel = min(free, key=lambda b: (math.dist(_xy(b), want(n)), b))
                free.remove(bel)
                taken.add(bel)
                cells[n].setdefault("attributes", {})["BEL"] = bel
                report["cells"] += 1
    return report


def floorplan_netlist_file(netlist: str | Path, placed: str | Path, out: str | Path) -> FloorplanReport:
    """:func:`floorplan_engines` from files: the Yosys JSON ``netlist`` and nextpnr's
    ``placed`` JSON, the floorplanned netlist written (atomically) to ``out``."""
    from ttforge.atomic import atomic_write_text
    from ttforge.limits import MAX_NETLIST_BYTES, read_bounded

    net = json.loads(read_bounded(netlist, "netlist", MAX_NETLIST_BYTES))
    pl = json.loads(read_bounded(placed, "placed netlist", MAX_NETLIST_BYTES))
    report = floorplan_engines(net, pl)
    atomic_write_text(out, json.dumps(net))
    return report


def main(argv=None) -> int:
    """``python -m ttforge.hw.ecp5_floorplan NETLIST PLACED [--report FILE]``: floorplan
    ``NETLIST`` (Yosys JSON) in place from the free placement ``PLACED`` (nextpnr's
    ``--write`` JSON) and write the report as JSON to ``FILE`` (the board flow's step
    before nextpnr for an engine array, ``ttforge.firmware.build``)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m ttforge.hw.ecp5_floorplan",
                                description="Anchor each engine's block RAMs and multipliers of a Yosys "
                                            "ECP5-85F netlist in its own region (in place).")
    p.add_argument("netlist")
    p.add_argument("placed", help="nextpnr's --write JSON of a free placement of NETLIST")
    p.add_argument("--report", default=None, help="write the report here (JSON)")
    a = p.parse_args(argv)
    from ttforge.hw.ecp5_bram import run_netlist_step

    def bad(e):
        why = str(e) if isinstance(e, ValueError) and not isinstance(e, json.JSONDecodeError) \
            else f"not Yosys and nextpnr JSON netlists this can floorplan ({type(e).__name__})"
        return f"{a.netlist}: {why}"

    return run_netlist_step([a.netlist, a.placed], a.report, "floorplan.json",
                            lambda: floorplan_netlist_file(a.netlist, a.placed, a.netlist), bad)


if __name__ == "__main__":
    import sys
    sys.exit(main())
