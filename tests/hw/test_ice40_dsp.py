"""The iCE40 form of the performance counters (``ttforge.hw.ice40_dsp``): an
``SB_MAC16`` as a 32-bit accumulator, selected only when elaborating for the iCE40.

The check: random increments (both 16-bit halves, so the bottom adder's carry into the
top one and the 32-bit wrap both happen), clears and resets through the accumulator's
Verilog with Yosys's ``SB_MAC16`` model in Icarus equal, in every cycle, a counter
computed here. Each deliberately wrong model (the carry between the halves dropped, the
load ignored) must make that check fail. The whole accelerator in its iCE40 form
against the golden executor is tests/sim/test_ice40_engine.py."""

from __future__ import annotations

import random

import pytest
from amaranth.back import verilog as amaranth_verilog

from ttforge.errors import ConfigError
from ttforge.hw.config import AccelConfig
from ttforge.hw.target import ECP5, target_family
from ttforge.hw.ice40_dsp import (ICE40, ICE40UP5K_DSPS, MODEL_FAULTS, Ice40Accumulator,
                                  dsp_counters, sb_mac16_model)
from ttforge.hw.top import verilog

from tests.support.sims import icarus_lines

CYCLES = 400
MASK = (1 << 32) - 1


def _stimulus(seed=3):
    """Per cycle: rst, clear, inc (32 bits: small, 16-bit and full-range values)."""
    rng = random.Random(seed)
    rows = [(1, 0, rng.randrange(1 << 32)), (1, 1, 5)]      # reset (with an increment)
    for _ in range(CYCLES):
        inc = rng.choice([0, 1, rng.randrange(1 << 4), rng.randrange(1 << 16),
                          0xFFFF, rng.randrange(1 << 32), MASK])
        rows.append((int(rng.random() < 0.01), int(rng.random() < 0.03), inc))
    return rows


def _expected(rows):
    q, out = 0, []
    for rst, clear, inc in rows:
        q = 0 if (rst or clear) else (q + inc) & MASK
        out.append(q)
    return out


_TB = """\
`timescale 1ns/1ps
module tb;
  reg clk = 0, rst = 0, clear = 0;
  reg [31:0] inc = 0;
  wire [31:0] q;
  reg [33:0] stim [0:{n1}];
  integer i;
  acc dut(.clk(clk), .rst(rst), .clear(clear), .inc(inc), .q(q));
  always #5 clk = ~clk;
  initial begin
    $readmemh("stim.hex", stim);
    for (i = 0; i < {n}; i = i + 1) begin
      {{rst, clear, inc}} = stim[i];
      @(posedge clk); @(negedge clk);
      $display("%0d", q);
    end
    $finish;
  end
endmodule
"""


def _icarus_trace(rows, tmp_path, model: str):
    text = amaranth_verilog.convert(Ice40Accumulator(32), name="acc", emit_src=False)
    assert text.count("SB_MAC16") == 1
    stim = "".join(f"{(r << 33) | (c << 32) | i:09x}\n" for r, c, i in rows)
    out = icarus_lines(tmp_path, {"acc.v": text + model, "stim.hex": stim,
                                  "tb.v": _TB.format(n=len(rows), n1=len(rows) - 1)})
    return [int(v) if v.isdigit() else None for v in out[:len(rows)]]


def test_accumulator_is_a_counter_every_cycle(tmp_path):
    rows = _stimulus()
    want = _expected(rows)
    assert any(w > 0xFFFF for w in want) and any(r[2] == MASK for r in rows)   # both halves used
    assert _icarus_trace(rows, tmp_path, sb_mac16_model()) == want


@pytest.mark.parametrize("fault", MODEL_FAULTS)
def test_accumulator_with_a_wrong_model_differs(tmp_path, fault):
    rows = _stimulus()
    assert _icarus_trace(rows, tmp_path, sb_mac16_model(fault)) != _expected(rows)


def test_unknown_model_fault_and_widths_are_refused():
    with pytest.raises(ConfigError, match="fault='late'"):
        sb_mac16_model("late")
    for bits in (0, 33):
        with pytest.raises(ConfigError, match="inc_bits"):
            Ice40Accumulator(bits)


def _cfg(**over):
    base = dict(lanes=1, act_bits=8, core_bits=4, inter_bits=16, acc_bits=26, bias_bits=15,
                core_depth=1024, bias_depth=64, buf_depth=512, desc_depth=4, counter_bits=24)
    return AccelConfig(**{**base, **over})


def test_counters_take_the_blocks_the_lanes_leave_on_the_ice40_only():
    six = 6
    assert dsp_counters(_cfg(), ICE40, six) == six                       # 1 lane: 7 of 8 blocks
    assert dsp_counters(_cfg(lanes=4), ICE40, six) == ICE40UP5K_DSPS - 4
    assert dsp_counters(_cfg(lanes=8), ICE40, six) == 0
    assert dsp_counters(_cfg(lanes=2, act_bits=17, inter_bits=24, acc_bits=40), ICE40,
                        six) == ICE40UP5K_DSPS - 4                       # 2 blocks a lane
    assert dsp_counters(_cfg(counter_bits=33), ICE40, six) == 0          # wider than the accumulator
    assert dsp_counters(_cfg(engines=2), ICE40, six) == 0
    for platform in (None, ECP5):
        assert dsp_counters(_cfg(), platform, six) == 0


def test_the_ice40_form_has_the_counters_in_sb_mac16_and_unregistered_reads():
    from amaranth.hdl import Fragment
    from ttforge.hw.top import TTAccel

    cfg = _cfg()
    assert verilog(cfg, platform=ICE40).count("SB_MAC16 #(") == 6
    assert "SB_MAC16" not in verilog(cfg) and "SB_MAC16" not in verilog(cfg, platform=ECP5)
    # AXI4-Lite reads answer from the address cycle on the iCE40 (12 MHz board clock,
    # logic cells the limit), from a registered multiplexer elsewhere
    for platform, latency in ((ICE40, 0), (None, 1), (ECP5, 1)):
        accel = TTAccel(cfg)
        Fragment.get(accel, platform)
        assert accel._elaborated_read_latency == latency


def test_target_family_of_the_icebreaker_platform_is_ice40():
    from ttforge.firmware.board import board

    assert target_family(board("icebreaker").platform()) == "ice40"    # Amaranth says "iCE40"
    assert target_family(board("ulx3s").platform()) == "ecp5"
