"""The whole accelerator in its iCE40 form (``verilog(config, platform=ICE40)``: the
performance counters in ``SB_MAC16`` accumulators, AXI4-Lite reads answered in the
address cycle) in Icarus, with Yosys's ``SB_MAC16`` model
(``ttforge.hw.ice40_dsp.sb_mac16_model``): outputs ``np.array_equal`` to the golden
executor with random stream pauses and back-pressure, every counter exactly the analytic
model's. A model that ignores the accumulators' load (their clear and reset) must
fail."""

from __future__ import annotations

import pytest

import ttforge.sim.runner as runner
from ttforge.errors import SimError
from ttforge.hw.cycles import program_cycles
from ttforge.hw.ice40_dsp import ICE40, sb_mac16_model
from ttforge.hw.program import compile_program
from ttforge.hw.top import verilog
from ttforge.ir.executor import execute

from tests.support.engine import config_for, random_inputs, random_net
from tests.support.sims import assert_exact_run, family_build


def _ice40_build(monkeypatch, tmp_path, config, model_fault=None):
    """A ``SimBuild`` of the iCE40 form of ``TTAccel(config)`` plus the SB_MAC16 model."""
    text = verilog(config, platform=ICE40)
    assert text.count("SB_MAC16 #(") == 6
    return family_build(monkeypatch, tmp_path, config, text + sb_mac16_model(model_fault))


@pytest.fixture(scope="module")
def case():
    net = random_net(4)
    cfg = config_for(net, 1, counter_bits=24)         # the iCEBreaker's: one lane, 24 bits
    prog = compile_program(net, cfg)
    X = random_inputs(net, 8, 4)
    return net, cfg, prog, X, execute(net, X)


def test_ice40_engine_is_bit_and_cycle_exact_in_icarus(monkeypatch, tmp_path, case):
    assert_exact_run(_ice40_build(monkeypatch, tmp_path, case[1]), case)


def test_ice40_engine_with_a_model_that_ignores_the_clear_fails(monkeypatch, tmp_path, case):
    net, cfg, prog, X, golden = case
    b = _ice40_build(monkeypatch, tmp_path, cfg, "no_load")
    try:
        r = runner.run_inference(b, prog, X[:2])
    except SimError:
        return        # never cleared, not even by the reset: the counters read as X over AXI
    model = program_cycles(prog.descriptors, cfg, prog.globals)
    c = r.counters
    assert c["VECTORS"] != 2 or c["CYCLES"] != model.total * 2 + c["IN_STALL"] + c["OUT_STALL"]
