"""The ECP5 form of MacLanes (``ttforge.hw.ecp5_dsp``): the operand and product registers
as a MULT18X18D's own registers, selected only when elaborating for the ECP5.

The check: the same random stimulus (stalls, valid gaps, negative operands at full range)
through the behavioural MacLanes in Amaranth's simulator and through its ECP5 Verilog
with ttforge's MULT18X18D model in Icarus gives the same outputs in every cycle. Each
deliberately wrong model (signedness ignored, a register missing, the enable ignored)
must make that check fail. The whole engine in its ECP5 form against the golden
executor is tests/sim/test_ecp5_engine.py."""

from __future__ import annotations

import gc
import random
import warnings

import pytest
from amaranth.back import rtlil
from amaranth.back import verilog as amaranth_verilog
from amaranth.hdl import UnusedElaboratable
from amaranth.sim import Simulator

from ttforge.errors import ConfigError
from ttforge.hw.blocks import MacLanes
from ttforge.hw.config import AccelConfig
from ttforge.hw.ecp5_dsp import (ECP5, MODEL_FAULTS, Ecp5Mult, SynthTarget, mult18x18d_model,
                                 target_family)
from ttforge.hw.top import verilog

from tests.support.sims import icarus_lines

L, XB, CB, AB, TW = 2, 16, 8, 30, 3
CYCLES = 600
OUTS = ("res_valid", "res_tag", "res", "pre_valid", "pre_tag", "mac_valid", "busy")


def _mac(dsp_inputs=True):
    return MacLanes(lanes=L, x_bits=XB, c_bits=CB, acc_bits=AB, tag_width=TW, reset_less_data=True,
                    dsp_inputs=dsp_inputs)


def _stimulus(seed=5):
    """Per cycle: en, in_valid, in_first, in_last, in_tag, x (packed), c (packed). The
    operands include the extremes (-2**(b-1), 2**(b-1) - 1) that a signedness error or a
    missing sign extension gets wrong."""
    rng = random.Random(seed)

    def val(bits):
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        v = rng.choice([lo, hi, -1, rng.randint(lo, hi)])
        return v & ((1 << bits) - 1)

    rows = []
    for _ in range(CYCLES):
        x = sum(val(XB) << (XB * i) for i in range(L))
        c = sum(val(CB) << (CB * i) for i in range(L))
        rows.append((int(rng.random() < 0.8), int(rng.random() < 0.7), int(rng.random() < 0.3),
                     int(rng.random() < 0.3), rng.randrange(1 << TW), x, c))
    return rows


def _amaranth_trace(rows):
    dut = _mac()
    trace = []

    async def tb(ctx):
        for en, v, f, la, tag, x, c in rows:
            ctx.set(dut.en, en)
            ctx.set(dut.in_valid, v)
            ctx.set(dut.in_first, f)
            ctx.set(dut.in_last, la)
            ctx.set(dut.in_tag, tag)
            ctx.set(dut.x.as_value(), x)
            ctx.set(dut.c.as_value(), c)
            await ctx.tick()
            trace.append(tuple(ctx.get(getattr(dut, n).as_value() if n == "res" else getattr(dut, n))
                               for n in OUTS))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return trace


_TB = """\
`timescale 1ns/1ps
module tb;
  reg clk = 0, rst = 0, en = 0, in_valid = 0, in_first = 0, in_last = 0;
  reg [{tw1}:0] in_tag = 0;
  reg [{x1}:0] x = 0;
  reg [{c1}:0] c = 0;
  wire busy, mac_valid, pre_valid, res_valid;
  wire [{tw1}:0] pre_tag, res_tag;
  wire [{r1}:0] res;
  reg [{s1}:0] stim [0:{n1}];
  integer i;
  mac dut(.clk(clk), .rst(rst), .en(en), .in_valid(in_valid), .in_first(in_first),
          .in_last(in_last), .in_tag(in_tag), .x(x), .c(c), .busy(busy), .mac_valid(mac_valid),
          .pre_valid(pre_valid), .pre_tag(pre_tag), .res_valid(res_valid), .res_tag(res_tag),
          .res(res));
  always #5 clk = ~clk;
  initial begin
    $readmemh("stim.hex", stim);
    for (i = 0; i < {n}; i = i + 1) begin
      {{en, in_valid, in_first, in_last, in_tag, x, c}} = stim[i];
      @(negedge clk);
      $display("%0d %0d %0d %0d %0d %0d %0d", res_valid, res_tag, res, pre_valid, pre_tag,
               mac_valid, busy);
    end
    $finish;
  end
endmodule
"""


def _icarus_trace(rows, tmp_path, model: str, dsp_inputs=True):
    text = amaranth_verilog.convert(_mac(dsp_inputs), name="mac", platform=ECP5, emit_src=False)
    assert text.count("MULT18X18D") == L
    # the output-register-only form leaves the A/B registers off
    assert (text.count('.REG_INPUTA_CLK("NONE")') == L) == (not dsp_inputs)
    sw = 4 + TW + L * XB + L * CB
    stim = "".join(
        f"{(((((((en << 1 | v) << 1 | fi) << 1 | la) << TW | tag) << (L * XB)) | x) << (L * CB)) | c:x}\n"
        for en, v, fi, la, tag, x, c in rows)
    tb = _TB.format(tw1=TW - 1, x1=L * XB - 1, c1=L * CB - 1, r1=L * AB - 1, s1=sw - 1,
                    n1=len(rows) - 1, n=len(rows))
    out = icarus_lines(tmp_path, {"mac.v": text, "model.v": model, "tb.v": tb, "stim.hex": stim})
    return [tuple(int(t) for t in ln.split()) for ln in out if ln and ln[0].isdigit()]


@pytest.mark.parametrize("dsp_inputs", [True, False])
def test_ecp5_form_equals_the_behavioural_mac_every_cycle(tmp_path, dsp_inputs):
    rows = _stimulus()
    want = _amaranth_trace(rows)
    got = _icarus_trace(rows, tmp_path, mult18x18d_model(), dsp_inputs)
    assert len(got) == len(want) == CYCLES
    assert sum(t[0] for t in want) > 20 and sum(1 - r[0] for r in rows) > 50  # results, stalls
    assert got == want
    # the sibling: the same comparison fails when one result bit differs
    bad = list(got)
    i = next(k for k, t in enumerate(bad) if t[0])
    bad[i] = (bad[i][0], bad[i][1], bad[i][2] ^ 1, *bad[i][3:])
    assert bad != want


@pytest.mark.parametrize("dsp_inputs,fault", [(True, f) for f in sorted(MODEL_FAULTS)] +
                         [(False, f) for f in sorted(MODEL_FAULTS) if f != "no_input_reg"])
def test_a_wrong_dsp_model_fails_the_check(tmp_path, dsp_inputs, fault):
    """(the output-register-only form has no input register for no_input_reg to drop)"""
    rows = _stimulus()
    assert _icarus_trace(rows, tmp_path, mult18x18d_model(fault), dsp_inputs) != _amaranth_trace(rows)


def test_target_selects_the_dsp_only_for_the_ecp5():
    from amaranth_boards.ulx3s import ULX3S_85F_Platform

    assert target_family(ECP5) == "ecp5"
    assert target_family(ULX3S_85F_Platform()) == "ecp5"
    assert target_family(None) is None and target_family(SynthTarget("ice40")) == "ice40"
    cfg = AccelConfig(lanes=2)
    assert "MULT18X18D" not in verilog(cfg)                       # simulation, generic
    assert "MULT18X18D" not in verilog(cfg, platform=SynthTarget("ice40"))
    assert verilog(cfg, platform=ECP5).count("MULT18X18D #(") == 2


def test_mac_keeps_the_fabric_multiply_where_the_dsp_form_does_not_fit():
    def dsps(mac):
        return rtlil.convert(mac, platform=ECP5, emit_src=False).count("MULT18X18D")

    assert dsps(_mac()) == L
    # reset data registers: the DSP's would not follow a ResetInserter, so the fabric
    # registers stay
    assert dsps(MacLanes(lanes=L, x_bits=XB, c_bits=CB, acc_bits=AB)) == 0
    assert dsps(MacLanes(lanes=L, x_bits=20, c_bits=CB, acc_bits=40, reset_less_data=True)) == 0


def test_bad_settings_are_one_line_errors():
    with pytest.raises(ConfigError, match="family='xc7' is unknown"):
        SynthTarget("xc7")
    with warnings.catch_warnings():      # the refused component is never elaborated
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ConfigError, match="a_bits=19 must be 1..18") as info:
            Ecp5Mult(a_bits=19, b_bits=8)
        del info
        gc.collect()
    with pytest.raises(ConfigError, match="fault='nope' is unknown"):
        mult18x18d_model("nope")


def test_the_model_says_it_is_ours():
    text = mult18x18d_model()
    assert "written by ttforge" in text and "NOT a Lattice model" in text
    assert "DELIBERATELY WRONG" in mult18x18d_model("unsigned")


def test_the_training_engine_takes_the_dsp_form_on_the_ecp5():
    """The training engine's MAC lanes (data registers without reset) are one MULT18X18D
    each when elaborated for the ECP5, and the fabric multiply everywhere else; the
    form itself is checked against the behavioural MAC above."""
    from ttforge.hw.trainer.engine import TrainEngine
    from ttforge.hw.trainer.program import TrainEngineConfig
    from ttforge.ir.train import TrainConfig

    cfg = TrainEngineConfig(lanes=4, train=TrainConfig())

    def dsps(platform):
        return rtlil.convert(TrainEngine(cfg), platform=platform, emit_src=False).count("cell \\MULT18X18D")

    assert dsps(ECP5) == cfg.lanes
    assert dsps(None) == 0 and dsps(SynthTarget("ice40")) == 0
