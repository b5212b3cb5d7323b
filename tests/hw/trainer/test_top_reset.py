"""The training top's VALID/READY/irq outputs are LOW throughout reset, from power-up on.

Finding (probe X, on the inference top; the training top had the same pattern): the
AXI4-Lite ``*valid``/``*ready``, ``s_axis_tready`` and ``irq`` came from registers with a
synchronous reset, so without flip-flop initial values they held their power-up value
until the first rising edge under reset. The emitted Verilog is run in Icarus without
its power-up values (X, and all ones), reset held from time zero; then, after reset,
``ID`` reads ``TRAIN_MAGIC`` with ``OKAY``.
"""

from __future__ import annotations

import pytest

from ttforge.hw.trainer.program import TrainEngineConfig
from ttforge.hw.trainer.regmap import TRAIN_MAGIC, train_register_map
from ttforge.hw.trainer.top import TRAIN_TOP_NAME, verilog
from ttforge.ir.random import train_case
from tests.support.reset_sim import RESET_OK, reset_testbench, strip_power_up, verilog_ports
from tests.support.sims import icarus_lines


@pytest.fixture(scope="module")
def config():
    state, *_ = train_case(0, batch=4, n_layers=2, d=2, rank=2, n_in=8, hidden=6, n_out=3)
    return TrainEngineConfig(lanes=2, train=state.config, act_depth=64, grad_depth=64, core_depth=64,
                             bias_depth=16, desc_depth=16, max_batch=4, max_classes=4)


def _read_id(config):
    """Testbench statements: read ``ID`` over AXI4-Lite, print ``ID data resp``."""
    aw = train_register_map(config).addr_bits
    return "\n".join([
        "  s_axil_rready = 1;",
        f"  @(negedge clk); s_axil_araddr = {aw}'h{train_register_map(config).addr('ID'):x}; s_axil_arvalid = 1;",
        "  @(posedge clk); while (!s_axil_arready) @(posedge clk); #1 s_axil_arvalid = 0;",
        "  while (!(s_axil_rvalid === 1'b1) && cyc < 1000) @(posedge clk);",
        "  $display(\"ID %0d %0d\", s_axil_rdata, s_axil_rresp);",
    ])


@pytest.mark.parametrize("reset", ["rst", "aresetn"])
@pytest.mark.parametrize("fill", ["x", "ones"])
def test_valid_ready_irq_low_throughout_reset_from_power_up(tmp_path, config, reset, fill):
    v = strip_power_up(verilog(config, reset=reset), fill)
    tb = reset_testbench(TRAIN_TOP_NAME, verilog_ports(v, TRAIN_TOP_NAME), reset, _read_id(config))
    lines = icarus_lines(tmp_path, {"tb.v": tb, "dut.v": v})
    assert RESET_OK in lines, [ln for ln in lines if ln.startswith("RESET_NOT_LOW")][:4]
    assert not [ln for ln in lines if ln.startswith("X_AFTER_RESET")]
    assert f"ID {TRAIN_MAGIC} 0" in lines, lines[-3:]
