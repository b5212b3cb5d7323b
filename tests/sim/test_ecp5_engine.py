"""The whole accelerator in its ECP5 form (``verilog(config, platform=ECP5)``: every MAC
lane's operand and product registers inside a MULT18X18D) in Icarus, with ttforge's own
MULT18X18D model (``ttforge.hw.ecp5_dsp.mult18x18d_model``; ours, not Lattice's):
outputs ``np.array_equal`` to the golden executor with random stream pauses and
back-pressure, and the cycle counters exactly the analytic model's. A wrong model (the
operands taken as unsigned, the output register missing) must fail. The ECP5 form of the
fetch's ZFILL_ORDER check (from flip-flops at the check, not from the block RAM's output
a cycle ahead) reports ZFILL_TO < ZFILL_FROM with its code and step, and not ZFILL_TO ==
ZFILL_FROM."""

from __future__ import annotations

import numpy as np
import pytest

import ttforge.sim.runner as runner
from ttforge.hw.ecp5_dsp import ECP5, mult18x18d_model
from ttforge.hw.program import compile_program, decode_descriptor, encode_descriptor, load_image
from ttforge.hw.regmap import ErrorCode
from ttforge.hw.top import verilog
from ttforge.ir.executor import execute

from tests.support.engine import config_for, random_inputs, random_net
from tests.support.sims import assert_exact_run, family_build


def _ecp5_build(monkeypatch, tmp_path, config, model_fault=None):
    """A ``SimBuild`` of the ECP5 form of ``TTAccel(config)`` plus the DSP model."""
    text = verilog(config, platform=ECP5)
    assert text.count("MULT18X18D #(") == config.lanes
    return family_build(monkeypatch, tmp_path, config, text + mult18x18d_model(model_fault))


@pytest.fixture(scope="module")
def case():
    net = random_net(4)
    cfg = config_for(net, 4)
    prog = compile_program(net, cfg)
    X = random_inputs(net, 10, 4)
    return net, cfg, prog, X, execute(net, X)


def test_ecp5_engine_is_bit_and_cycle_exact_in_icarus(monkeypatch, tmp_path, case):
    assert_exact_run(_ecp5_build(monkeypatch, tmp_path, case[1]), case)


@pytest.mark.parametrize("fault", ["unsigned", "no_output_reg"])
def test_ecp5_engine_with_a_wrong_dsp_model_fails(monkeypatch, tmp_path, case, fault):
    net, cfg, prog, X, golden = case
    b = _ecp5_build(monkeypatch, tmp_path, cfg, fault)
    r = runner.run_inference(b, prog, X[:4])
    assert r.outputs.shape != golden[:4].shape or not np.array_equal(r.outputs, golden[:4])


def _corrupt(prog, step, **fields):
    descs = [list(d) for d in prog.descriptors]
    d = decode_descriptor(descs[step])
    descs[step] = list(encode_descriptor(d.__class__(**{**d.__dict__, **fields})))
    return prog.with_words(descriptors=descs)


@pytest.mark.parametrize("zfill, error", [((9, 3), True), ((3, 3), False)], ids=["to<from", "to==from"])
def test_ecp5_zfill_order_check(monkeypatch, tmp_path, case, zfill, error):
    net, cfg, prog, X, golden = case
    b = _ecp5_build(monkeypatch, tmp_path, cfg)
    regs = runner.register_addresses(cfg)
    bad = _corrupt(prog, 0, ZFILL_FROM=zfill[0], ZFILL_TO=zfill[1])
    ops = [{"op": "load", "writes": "bad", "name": "load_bad"},
           {"op": "stream", "inputs": "one", "name": "first", "timeout_cycles": 3000},
           {"op": "read", "addr": regs["STATUS"], "name": "status"},
           {"op": "read", "addr": regs["ERROR_CODE"], "name": "code"},
           {"op": "load", "writes": "good", "name": "load_good"},    # CMD.CLEAR_ERROR inside
           {"op": "stream", "inputs": "X", "expected": "golden", "name": "out",
            "timeout_cycles": 50_000}]
    job = runner.run_job(b, ops, {"bad": np.asarray(load_image(bad), dtype=np.int64),
                           "good": runner.load_writes(prog), "one": X[:1], "X": X[:3],
                           "golden": golden[:3]}, out_count=prog.out_count)
    if error:
        assert job.op("first")["received"] == 0
        assert job.op("status")["data"] & 0b100                   # STATUS.ERROR
        assert job.op("code")["data"] & 0xFF == ErrorCode["ZFILL_ORDER"]
        assert job.op("code")["data"] >> 16 == 0                  # step 0
    else:
        assert not job.op("status")["data"] & 0b100
        assert job.op("code")["data"] & 0xFF != ErrorCode["ZFILL_ORDER"]
    assert np.array_equal(job.arrays["out"], golden[:3])
