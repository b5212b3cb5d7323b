"""Logic levels between registers in a Yosys ECP5 netlist, before place and route.

Place and route takes 20-40 minutes a seed on the development machine, and the seed
alone moves Fmax by up to 20%; the depth of the logic between two registers is known
from the synthesized netlist in seconds and does not depend on the seed. On the ECP5
L = 16 engine the routed critical paths are 75-85% routing, about 1.2 ns per net, so a
path's LUT count is what its delay scales with: at 100 MHz about five levels fit.
:func:`logic_levels` counts, for every register input (a flip-flop's data, enable or
reset, a block RAM's or DSP's input), the most LUT levels any path from a register
output crosses to reach it, and keeps the deepest paths with their nets (the way
Vivado's ``report_design_analysis -logic_level_distribution`` does).

Weights (in LUT levels): a ``LUT4`` 1; the LUT5/LUT6 multiplexers (``PFUMX``,
``L6MUX21``) 0.2 from their data inputs (the same slice) and 1 from their select; a
``CCU2C`` 1 from its LUT inputs, 0.3 from the carry into its sums and 0.05 along the
carry chain (dedicated wires); a distributed RAM's read 1 from its address. A path from
a block RAM's output starts at :data:`BRAM_START` levels (its clock-to-output, 5.83 ns
without the output register, is about four levels' worth). Constants start nowhere.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ttforge.hw.synth import SynthError

__all__ = ["LevelPath", "LevelReport", "logic_levels", "BRAM_START"]

#: levels a path from a ``DP16KD`` output starts at (its clock-to-output)
BRAM_START = 3.8

#: cells whose outputs are registers (a path starts at them; their inputs end one)
_SEQUENTIAL = {"TRELLIS_FF", "DP16KD", "MULT18X18D"}
#: cells with inputs that end a path but a combinational output (the distributed RAM's
#: write side is a register, its read is combinational from RAD)
_ENDS = _SEQUENTIAL | {"TRELLIS_DPR16X4"}
#: clock and write-clock inputs end nothing
_CLOCKS = re.compile(r"^(CLK\w*|WCK)$")


def _arcs(ctype: str, out: str) -> dict[str, float]:
    """Input port -> levels to output ``out`` of a combinational cell."""
    if ctype == "LUT4":
        return {"A": 1, "B": 1, "C": 1, "D": 1}
    if ctype == "PFUMX":
        return {"ALUT": 0.2, "BLUT": 0.2, "C0": 1}
    if ctype == "L6MUX21":
        return {"D0": 0.2, "D1": 0.2, "SD": 1}
    if ctype == "CCU2C":
        both = {p + i: 1.0 for p in "ABCD" for i in "01"}
        if out == "COUT":
            return {**both, "CIN": 0.05}
        if out == "S0":
            return {"A0": 1, "B0": 1, "C0": 1, "D0": 1, "CIN": 0.3}
        return {**both, "CIN": 0.3}
    if ctype == "TRELLIS_DPR16X4":
        return {"RAD": 1}
    raise SynthError(f"logic levels: the netlist has a cell of type {ctype}, which this "
                     "count does not know (an ECP5 netlist from synth_ecp5 is expected)")


@dataclass(frozen=True)
class LevelPath:
    """The deepest path into one register input: ``levels``, the register it starts
    at (``None`` for a top-level input), and its nets from start to end."""

    levels: float
    start: str | None
    end: str
    nets: tuple[str, ...]


@dataclass(frozen=True)
class LevelReport:
    """Every register input's logic levels, as a histogram, and the deepest paths."""

    histogram: dict[int, int]      # whole levels -> register inputs
    paths: tuple[LevelPath, ...]   # the deepest, one per (start, end) register pair

    def at_least(self, levels: float) -> int:
        """Register inputs with ``levels`` or more (whole levels)."""
        return sum(n for k, n in self.histogram.items() if k >= levels)

    def to_dict(self, paths: int = 20) -> dict:
        return {"histogram": {str(k): v for k, v in sorted(self.histogram.items())},
                "paths": [{"levels": round(p.levels, 2), "start": p.start, "end": p.end,
                           "nets": list(p.nets)} for p in self.paths[:paths]]}


def _names(module: dict) -> dict[int, str]:
    """A readable name for each net bit: a visible name before a generated one."""
    best: dict[int, tuple] = {}
    for name, v in module["netnames"].items():
        key = (v.get("hide_name", 0), name.count("$"), len(name))
        for b in v["bits"]:
            if isinstance(b, int) and (b not in best or key < best[b][0]):
                best[b] = (key, name)
    return {b: n for b, (_, n) in best.items()}


def _base(cell: str) -> str:
    """A cell name without the bit-blasting suffixes (one entry per register)."""
    return re.sub(r"(_TRELLIS_FF_Q)?(_\d+)?$", "", cell)


def logic_levels(netlist: str | Path | dict, top: str = "ttforge_pnr_harness",
                 keep: int = 50) -> LevelReport:
    """The logic levels of every register input of ``top`` in a Yosys JSON netlist (a
    path, or the parsed JSON) of an ECP5 design, and its ``keep`` deepest paths."""
    if not isinstance(netlist, dict):
        path = Path(netlist)
        if not path.is_file():        # (a FIFO or a device would block the read)
            raise SynthError(f"logic levels: {path} is not a file; give Yosys' JSON netlist")
        try:
            netlist = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise SynthError(f"logic levels: cannot read {path} as JSON ({e})") from None
    try:
        module = netlist["modules"][top]
        cells = module["cells"]
    except (KeyError, TypeError):
        raise SynthError(f"logic levels: no module {top!r} in the netlist") from None
    driver: dict[int, tuple[str, str]] = {}
    for name, c in cells.items():
        for port, direction in c.get("port_directions", {}).items():
            if direction == "output":
                for b in c["connections"][port]:
                    if isinstance(b, int):
                        driver[b] = (name, port)

    none = (float("-inf"), None, None)          # a constant: no path
    memo: dict[int, tuple[float, int | None, str | None]] = {}

    def level(bit) -> tuple[float, int | None, str | None]:
        """(levels, the input bit on the deepest path or None, the start register);
        an explicit depth-first walk (carry chains are long), a combinational loop cut
        where it closes."""
        if not isinstance(bit, int):
            return none
        stack, on_path = [(bit, False)], set()
        while stack:
            b, expanded = stack.pop()
            if b in memo:
                continue
            drv = driver.get(b)
            if drv is None:
                memo[b] = (0.0, None, None)             # a top-level input
                continue
            name, port = drv
            ctype = cells[name]["type"]
            if ctype in _SEQUENTIAL:
                memo[b] = (BRAM_START if ctype == "DP16KD" else 0.0, None, name)
                continue
            ins = [(ib, w) for ip, w in _arcs(ctype, port).items()
                   for ib in cells[name]["connections"].get(ip, [])]
            if not expanded:
                on_path.add(b)
                stack.append((b, True))
                stack.extend((ib, False) for ib, _ in ins
                             if isinstance(ib, int) and ib not in memo and ib not in on_path)
                continue
            on_path.discard(b)
            best = none
            for ib, w in ins:
                lv, _, st = memo.get(ib, none) if isinstance(ib, int) else none
                if lv + w > best[0]:
                    best = (lv + w, ib, st)
            memo[b] = best
        return memo[bit]

    names = _names(module)
    deepest: dict[tuple, tuple[float, str | None, str, int]] = {}  # (levels, start, end, bit)
    hist: Counter = Counter()
    for name, c in cells.items():
        if c["type"] not in _ENDS:
            continue
        for port, direction in c.get("port_directions", {}).items():
            if direction != "input" or _CLOCKS.match(port) or (c["type"] == "TRELLIS_DPR16X4"
                                                               and port == "RAD"):
                continue
            for b in c["connections"][port]:
                lv, _, start = level(b)
                if lv == float("-inf"):
                    continue
                hist[int(lv)] += 1
                key = (_base(start) if start else None, _base(name))
                if key not in deepest or lv > deepest[key][0]:
                    deepest[key] = (lv, start, f"{name}.{port}", b)

    def nets(bit: int) -> tuple[str, ...]:
        out = []
        while bit is not None:
            out.append(names.get(bit, str(bit)))
            bit = memo[bit][1]
        return tuple(reversed(out))

    paths = tuple(LevelPath(lv, start, end, nets(b))
                  for lv, start, end, b in sorted(deepest.values(), key=lambda p: -p[0])[:keep])
    return LevelReport(dict(hist), paths)


def main(argv=None) -> int:
    """``python -m ttforge.hw.levels NETLIST [N]``: the histogram and the N deepest paths."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print("usage: python -m ttforge.hw.levels NETLIST.json [N]", file=sys.stderr)
        return 2
    try:
        rep = logic_levels(args[0])
    except SynthError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("levels: register inputs  " + "  ".join(f"{k}: {v}" for k, v in sorted(rep.histogram.items())))
    for p in rep.paths[:int(args[1]) if len(args) > 1 else 20]:
        print(f"{p.levels:5.1f}  {p.start} -> {p.end}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
