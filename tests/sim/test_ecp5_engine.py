"""The whole accelerator in its ECP5 form (``verilog(config, platform=ECP5)``: every MAC
lane's operand and product registers inside a MULT18X18D) in Icarus, with ttforge's own
MULT18X18D model (``ttforge.hw.ecp5_dsp.mult18x18d_model``; ours, not Lattice's):
outputs ``np.array_equal`` to the golden executor with random stream pauses and
back-pressure, and the cycle counters exactly the analytic model's. A wrong model (the
operands taken as unsigned, the output register missing) must fail."""

from __future__ import annotations

import numpy as np
import pytest

import ttforge.sim.runner as runner
from ttforge.hw.cycles import program_cycles
from ttforge.hw.ecp5_dsp import ECP5, mult18x18d_model
from ttforge.hw.program import compile_program
from ttforge.hw.top import verilog
from ttforge.ir.executor import execute

from tests.support.engine import config_for, random_inputs, random_net
from tests.support.sims import _available


def _ecp5_build(monkeypatch, tmp_path, config, model_fault=None):
    """A ``SimBuild`` of the ECP5 form of ``TTAccel(config)`` plus the DSP model (one
    Verilog file: the runner's cache key is a hash of the text)."""
    reason = _available("icarus")
    if reason:
        pytest.skip(reason)
    text = verilog(config, platform=ECP5)
    assert text.count("MULT18X18D #(") == config.lanes
    monkeypatch.setattr(runner, "_emit", lambda cfg, fault, root=None: text + mult18x18d_model(model_fault))
    return runner.build(config, "icarus", build_root=tmp_path / "build")


@pytest.fixture(scope="module")
def case():
    net = random_net(4)
    cfg = config_for(net, 4)
    prog = compile_program(net, cfg)
    X = random_inputs(net, 10, 4)
    return net, cfg, prog, X, execute(net, X)


def test_ecp5_engine_is_bit_and_cycle_exact_in_icarus(monkeypatch, tmp_path, case):
    net, cfg, prog, X, golden = case
    b = _ecp5_build(monkeypatch, tmp_path, cfg)
    r = runner.run_inference(b, prog, X, seed=2, gaps=0.3, backpressure=0.3, expected=golden)
    assert not r.timeout and r.load_errors == 0
    assert np.array_equal(r.outputs, golden)
    assert r.job.passed
    c, B = r.counters, len(X)
    model = program_cycles(prog.descriptors, cfg, prog.globals)
    assert c["VECTORS"] == B and c["BUSY_LANE_CYCLES"] == model.busy_lane_cycles * B
    assert c["OUT_STALL"] > 0
    assert c["CYCLES"] == model.total * B + c["IN_STALL"] + c["OUT_STALL"]
    # the siblings: one flipped golden bit, or a model one cycle per vector off, differ
    bad = golden.copy()
    bad.flat[0] ^= 1
    assert not np.array_equal(r.outputs, bad)
    assert c["CYCLES"] != (model.total + 1) * B + c["IN_STALL"] + c["OUT_STALL"]


@pytest.mark.parametrize("fault", ["unsigned", "no_output_reg"])
def test_ecp5_engine_with_a_wrong_dsp_model_fails(monkeypatch, tmp_path, case, fault):
    net, cfg, prog, X, golden = case
    b = _ecp5_build(monkeypatch, tmp_path, cfg, fault)
    r = runner.run_inference(b, prog, X[:4])
    assert r.outputs.shape != golden[:4].shape or not np.array_equal(r.outputs, golden[:4])
