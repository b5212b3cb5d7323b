"""The inference top's VALID/READY/irq outputs are LOW throughout reset, from power-up on.

Finding (probe X): ``m_axis_tvalid``, ``s_axil_bvalid``/``rvalid``/``awready``,
``s_axis_tready`` and ``irq`` were register outputs with a synchronous reset: without
flip-flop initial values (an ASIC, Verilator ``--x-initial unique``, the Verilog with its
initialisers stripped) they held their power-up value until the first rising edge under
reset, and a ``TVALID`` of 1 there was a phantom output beat. AXI4 (A3.1.2) and
AXI4-Stream ask for VALID LOW during reset. The emitted Verilog is run in Icarus without
its power-up values (X, and all ones), reset held from time zero; then one short run
after reset is ``np.array_equal`` to the golden executor.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from ttforge.hw.program import compile_program, load_image
from ttforge.hw.regmap import RegisterMap
from ttforge.hw.top import verilog
from ttforge.ir.executor import execute
from ttforge.sim.cases import make_case
from tests.support.reset_sim import RESET_OK, reset_testbench, strip_power_up, verilog_ports
from tests.support.sims import icarus_lines

SEED = 1
VECTORS = 2


def _beats(vectors, cfg):
    """``[(tdata word, tlast), ...]`` of ``vectors``, ``stream_elems`` lanes to a beat."""
    E, lane = cfg.stream_elems, cfg.tdata_bits // cfg.stream_elems
    out = []
    for vec in vectors:
        nb = -(-len(vec) // E)
        for b in range(nb):
            word = 0
            for j, x in enumerate(vec[b * E:(b + 1) * E]):
                word |= (int(x) & ((1 << lane) - 1)) << (j * lane)
            out.append((word, int(b == nb - 1)))
    return out


def _run_body(cfg, writes, beats, n_out_beats):
    """Testbench statements: the load image over AXI4-Lite, the beats over AXI4-Stream,
    then clock until ``n_out_beats`` output beats were printed (``BEAT data last``)."""
    aw, tw = cfg.axil_addr_bits, cfg.tdata_bits
    s = ["  s_axil_bready = 1; m_axis_tready = 1;"]
    for a, d in writes:
        s.append(f"  @(negedge clk); s_axil_awaddr = {aw}'h{a:x}; s_axil_wdata = 32'h{d & 0xFFFFFFFF:x};"
                 " s_axil_wstrb = 4'hf; s_axil_awvalid = 1; s_axil_wvalid = 1;"
                 " @(posedge clk); while (!(s_axil_awready && s_axil_wready)) @(posedge clk);"
                 " #1 s_axil_awvalid = 0; s_axil_wvalid = 0; while (!s_axil_bvalid) @(posedge clk);")
    for word, last in beats:
        s.append(f"  @(negedge clk); s_axis_tdata = {tw}'h{word:x}; s_axis_tlast = {last}; s_axis_tvalid = 1;"
                 " @(posedge clk); while (!s_axis_tready) @(posedge clk); #1 s_axis_tvalid = 0;")
    s.append(f"  while (got < {n_out_beats} && cyc < 200000) @(posedge clk);")
    s.append("  #1 $display(\"DONE %0d\", got);")
    return "\n".join(s)


def _monitor(reset):
    """An ``always`` block printing each output handshake after reset (``BEAT data last``)."""
    active = "1'b1" if reset == "rst" else "1'b0"
    return ("integer got = 0;\n"
            f"always @(posedge clk) if ({reset} !== {active} && m_axis_tvalid === 1'b1 && m_axis_tready)"
            " begin $display(\"BEAT %h %b\", m_axis_tdata, m_axis_tlast); got = got + 1; end\n")


def _outputs(lines, cfg, n):
    """The vectors of the printed beats (``n`` elements each, two's complement lanes)."""
    E, lane = cfg.stream_elems, cfg.tdata_bits // cfg.stream_elems
    vecs, cur = [], []
    for line in lines:
        if not line.startswith("BEAT "):
            continue
        _, word, last = line.split()
        assert not re.search(r"[xz]", word, re.I), line
        w = int(word, 16)
        for j in range(E):
            x = (w >> (j * lane)) & ((1 << lane) - 1)
            cur.append(x - (1 << lane) if x >> (lane - 1) else x)
        if last == "1":
            vecs.append(cur[:n])
            cur = []
    return np.array(vecs, dtype=np.int64)


def _tb(v, reset, body=""):
    text = reset_testbench("ttforge_accel", verilog_ports(v, "ttforge_accel"), reset, body)
    return text.replace("integer bad = 0;", "integer bad = 0;\n" + _monitor(reset), 1)


@pytest.mark.parametrize("reset", ["rst", "aresetn"])
@pytest.mark.parametrize("fill", ["x", "ones"])
def test_valid_ready_irq_low_throughout_reset_from_power_up(tmp_path, reset, fill):
    case = make_case(SEED, vectors=1)
    v = strip_power_up(verilog(case.config, reset=reset), fill)
    lines = icarus_lines(tmp_path, {"tb.v": _tb(v, reset), "dut.v": v})
    assert RESET_OK in lines, [ln for ln in lines if ln.startswith("RESET_NOT_LOW")][:4]
    assert not [ln for ln in lines if ln.startswith("X_AFTER_RESET")]


@pytest.mark.parametrize("fault", [None, "requant_lsb"])
def test_a_run_after_a_power_up_reset_equals_the_golden(tmp_path, fault):
    """No power-up values (X): reset, the load image, two vectors; every output beat
    equals ``execute`` and none is X; sibling: the same run on an RTL whose requantizer
    flips one bit (``fault``) differs from the golden."""
    case = make_case(SEED, vectors=VECTORS)
    cfg = case.config
    golden = execute(case.net, case.inputs)
    writes = load_image(compile_program(case.net, cfg), RegisterMap(cfg))
    n_out = golden.shape[1]
    n_beats = len(golden) * -(-n_out // cfg.stream_elems)
    body = _run_body(cfg, writes, _beats(case.inputs, cfg), n_beats)
    v = strip_power_up(verilog(cfg, fault=fault))
    lines = icarus_lines(tmp_path, {"tb.v": _tb(v, "rst", body), "dut.v": v})
    assert RESET_OK in lines
    assert not [ln for ln in lines if ln.startswith("X_AFTER_RESET")]
    assert f"DONE {n_beats}" in lines, lines[-3:]
    got = _outputs(lines, cfg, n_out)
    assert np.array_equal(got, golden) == (fault is None)
