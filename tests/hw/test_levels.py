"""Logic levels from a netlist (``ttforge.hw.levels``), on hand-made Yosys JSON netlists
whose every level is counted by hand from the documented weights."""

from __future__ import annotations

import json
import os

import pytest

from ttforge.hw.levels import BRAM_START, logic_levels, main
from ttforge.hw.synth import SynthError


def _cell(ctype, **ports):
    """A cell: ``ports`` maps a port to ``(direction, bits)``."""
    return {"type": ctype, "port_directions": {p: d for p, (d, _) in ports.items()},
            "connections": {p: b for p, (_, b) in ports.items()}}


def _ff(name, d, q, ce=None):
    ports = {"CLK": ("input", [1]), "DI": ("input", [d]), "Q": ("output", [q])}
    if ce is not None:
        ports["CE"] = ("input", [ce])
    return name, _cell("TRELLIS_FF", **ports)


def _lut(name, ins, z):
    return name, _cell("LUT4", **{p: ("input", [b]) for p, b in zip("ABCD", ins)},
                       Z=("output", [z]))


def _netlist(*cells, names=None):
    return {"modules": {"ttforge_pnr_harness": {
        "cells": dict(cells),
        "netnames": {n: {"bits": [b], "hide_name": 0} for b, n in (names or {}).items()},
    }}}


def test_levels_of_a_lut_chain_a_carry_and_a_block_ram():
    # a -> LUT -> LUT -> LUT -> b.DI (3 levels); a -> b.CE directly (0); constants
    # into a LUT beside a: only the path from a counts (c.DI, 1 level); a block RAM
    # output through one LUT into d.DI (BRAM_START + 1); a carry chain: a into a CCU2C's
    # A0 -> its COUT (1) -> a second CCU2C's CIN -> its S1 (0.3) -> e.DI (1.3)
    n = _netlist(
        _ff("a", 10, 2),
        _lut("l1", [2, "0", "0", "0"], 3), _lut("l2", [3, 2, "0", "0"], 4),
        _lut("l3", [4, "1", "0", "0"], 5),
        _ff("b", 5, 6, ce=2),
        _lut("l4", ["0", 2, "0", "0"], 7), _ff("c", 7, 8),
        ("ram", _cell("DP16KD", CLKA=("input", [1]), ADA0=("input", [2]), DOA0=("output", [9]))),
        _lut("l5", [9, "0", "0", "0"], 11), _ff("d", 11, 12),
        ("cc1", _cell("CCU2C", A0=("input", [2]), CIN=("input", ["0"]), COUT=("output", [13]),
                      S0=("output", [14]), S1=("output", [15]))),
        ("cc2", _cell("CCU2C", CIN=("input", [13]), S1=("output", [16]), S0=("output", [17]),
                      COUT=("output", [18]))),
        _ff("e", 16, 19),
        names={2: "a_q", 3: "n3", 4: "n4", 5: "n5"},
    )
    rep = logic_levels(n)
    # register inputs: a.DI (from a top-level input, 0), b.DI 3, b.CE 0, c.DI 1,
    # ram.ADA0 0, d.DI BRAM_START + 1, e.DI 1 + 0.3
    assert rep.histogram == {0: 3, 3: 1, 1: 2, int(BRAM_START + 1): 1}
    assert rep.at_least(3) == 1 + (BRAM_START + 1 >= 3)
    top = rep.paths[0]
    assert top.levels == pytest.approx(BRAM_START + 1) and top.start == "ram" and top.end == "d.DI"
    b = next(p for p in rep.paths if p.end == "b.DI")
    assert b.levels == 3 and b.start == "a" and b.nets == ("a_q", "n3", "n4", "n5")
    e = next(p for p in rep.paths if p.end == "e.DI")
    assert e.levels == pytest.approx(1.3) and e.start == "a"


def test_one_more_lut_is_one_more_level():
    """The sibling: the same chain with a fourth LUT counts 4, not 3."""
    base = [_ff("a", 10, 2), _lut("l1", [2], 3), _lut("l2", [3], 4), _lut("l3", [4], 5)]
    three = logic_levels(_netlist(*base, _ff("b", 5, 6)))
    four = logic_levels(_netlist(*base, _lut("l4", [5], 20), _ff("b", 20, 6)))
    assert max(three.histogram) == 3 and max(four.histogram) == 4


def test_a_combinational_loop_ends():
    n = _netlist(_ff("a", 10, 2), _lut("l1", [2, 4], 3), _lut("l2", [3], 4), _ff("b", 4, 5))
    assert logic_levels(n).histogram[2] == 1


def test_unknown_cells_and_modules_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(SynthError, match="SB_LUT4"):
        logic_levels(_netlist(_ff("a", 10, 2), ("x", _cell("SB_LUT4", I0=("input", [2]), O=("output", [3]))),
                              _ff("b", 3, 4)))
    with pytest.raises(SynthError, match="no module"):
        logic_levels(_netlist(), top="other")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert main([str(bad)]) == 2
    assert capsys.readouterr().err.startswith("error:")
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (listed, fifo, tmp_path):   # not a netlist, a FIFO (never opened), a directory
        assert main([str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and len(err.strip().splitlines()) == 1
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_netlist(_ff("a", 10, 2), _lut("l1", [2], 3), _ff("b", 3, 4))))
    assert main([str(good)]) == 0
    assert "a -> b.DI" in capsys.readouterr().out
