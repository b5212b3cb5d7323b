"""cocotb on Icarus and Verilator (the same tests on both): the load image written by
``cocotbext-axi``'s AxiLiteMaster, vectors streamed by AxiStreamSource/AxiStreamSink with
random pauses, every output equal to ``ttforge.quant.execute`` (``np.array_equal``).
Each bit-exactness test has a sibling that must fail (a flipped core bit in the load
image, a deliberate RTL fault, a flipped golden bit)."""

from __future__ import annotations

import numpy as np
import pytest

from ttforge.hw.cycles import program_cycles
from ttforge.hw.program import decode_descriptor, encode_descriptor, load_image
from ttforge.hw.regmap import ErrorCode, RegisterMap
from ttforge.sim.runner import load_writes, register_addresses, run_inference, run_job

SLVERR, OKAY = 2, 0


def _flip_one(a: np.ndarray) -> np.ndarray:
    b = a.copy()
    b.flat[0] ^= 1
    return b


def _assert_exact(got: np.ndarray, golden: np.ndarray) -> None:
    assert got.shape == golden.shape, (got.shape, golden.shape)
    assert np.array_equal(got, golden)
    # the sibling: the same comparison fails when one golden bit is flipped
    assert not np.array_equal(got, _flip_one(golden))


def test_bit_exact_with_gaps_and_backpressure(sim, case, get_build):
    b = get_build(sim, case.config)
    r = run_inference(b, case.program, case.X, seed=1, gaps=0.3, backpressure=0.3,
                      expected=case.golden)
    assert not r.timeout and r.load_errors == 0
    _assert_exact(r.outputs, case.golden)
    assert r.job.passed                      # the cocotb scoreboard agrees
    c, B = r.counters, len(case.X)
    assert c["VECTORS"] == B
    assert c["SAT_EVENTS"] == case.saturations
    macs = sum(s.macs for s in case.program.steps)
    assert c["BUSY_LANE_CYCLES"] == macs * B
    assert c["IN_STALL"] > 0 and c["OUT_STALL"] > 0
    # docs/hardware.md "Engine timing": every IN_STALL and OUT_STALL cycle adds one cycle
    model = program_cycles(case.program.descriptors, case.config, case.program.globals)
    assert c["CYCLES"] == model.total * B + c["IN_STALL"] + c["OUT_STALL"]


def test_back_to_back_counters_equal_the_cycle_model(sim, case, get_build):
    """No pauses: vectors back to back, and CYCLES equals the analytic model exactly."""
    b = get_build(sim, case.config)
    X = case.X[:12]
    r = run_inference(b, case.program, X, expected=case.golden[:12])
    _assert_exact(r.outputs, case.golden[:12])
    model = program_cycles(case.program.descriptors, case.config, case.program.globals)
    c = r.counters
    assert c["IN_STALL"] == 0 and c["OUT_STALL"] == 0
    assert c["CYCLES"] == model.total * len(X)
    assert c["BUSY_LANE_CYCLES"] == model.busy_lane_cycles * len(X)
    assert c["VECTORS"] == len(X)
    # the sibling: a cycle model one cycle off per step is not what the RTL counts
    from ttforge.hw.cycles import ENGINE_TIMING
    off = program_cycles(case.program.descriptors, case.config, case.program.globals,
                         ENGINE_TIMING.replace(fetch=ENGINE_TIMING.fetch + 1))
    assert c["CYCLES"] != off.total * len(X)


def test_flipped_core_bit_in_load_image_disagrees(sim, case, get_build):
    b = get_build(sim, case.config)
    rm = RegisterMap(case.config)
    writes = load_writes(case.program)
    cm = rm.window("CMEM")
    i = next(k for k, (a, d) in enumerate(writes.tolist())
             if cm.base <= a < cm.base + 4 * cm.depth and d != 0)
    writes[i, 1] ^= 1 << (case.config.core_bits - 2)
    r = run_inference(b, case.program, case.X[:8], writes=writes, expected=case.golden[:8])
    assert r.outputs.shape == case.golden[:8].shape
    assert not np.array_equal(r.outputs, case.golden[:8])
    assert not r.job.passed                  # the cocotb scoreboard fails too


def test_rtl_fault_disagrees(sim, case, get_build):
    if sim == "verilator":
        pytest.skip("one faulted build is enough in the default run (Verilator builds "
                    "take ~15 s); tests/sim/test_regress.py runs --fault on both with -m slow")
    b = get_build(sim, case.config, fault="round_off_by_one")
    r = run_inference(b, case.program, case.X[:8])
    assert not np.array_equal(r.outputs, case.golden[:8])


@pytest.mark.parametrize("shift", [0.9, float("nan")])
def test_float_inputs_are_refused_as_the_engine_model_refuses_them(case, get_build, tmp_path, shift):
    """``x + 0.9`` was truncated to ``x`` by an int64 cast (NaN to int64's minimum) and
    simulated; ``run_program`` refuses it. One line, before any simulator work."""
    from ttforge.errors import ShapeError
    from ttforge.hw import run_program

    b = get_build("icarus", case.config)
    X = case.X[:3] + shift
    with pytest.raises(ShapeError) as model:
        run_program(case.program, None, X)
    with pytest.raises(ShapeError, match=r"^input has dtype float64; the engine takes integers$") as sim:
        run_inference(b, case.program, X, workdir=tmp_path / "job")
    assert str(sim.value) == str(model.value)
    assert not (tmp_path / "job").exists()


@pytest.mark.parametrize("change", [{"core_bits": 16}, {"lanes": 2}])
def test_a_program_for_another_config_is_refused_before_the_simulator(case, get_build, tmp_path, change):
    """A program for other widths or lanes than the build's ran: wrong outputs with the
    job passed (core_bits), or a timeout (lanes), nothing raised. One line, no job."""
    import dataclasses

    from ttforge.errors import ConfigError
    from ttforge.hw.program import compile_program

    b = get_build("icarus", case.config)
    other = dataclasses.replace(case.config, **change)
    prog = compile_program(case.net, other)
    (field, value), = change.items()
    with pytest.raises(ConfigError, match=rf"^run_inference: the program was compiled for .*{field}={value}"
                                          rf".* but the simulator's config has .*{field}={getattr(case.config, field)}"
                                          r".*; compile it for the simulator's config "
                                          r"\(compile_program\(net, sim_build.config\)\)$"):
        run_inference(b, prog, case.X[:2], workdir=tmp_path / "job")
    assert not (tmp_path / "job").exists()
    # locate_divergence runs the program's cuts on the build: the same refusal
    from ttforge.sim.check import locate_divergence

    with pytest.raises(ConfigError, match=r"^locate_divergence: the program was compiled for "):
        locate_divergence(b, prog, case.X[0], workdir=tmp_path / "job")
    assert not (tmp_path / "job").exists()


def test_inputs_outside_the_input_width_are_refused_as_the_executor_refuses_them(case, get_build, tmp_path):
    """A value past the network's input width went out as its low act_bits: an output
    no golden model gives. The executor's line, before any simulator work."""
    from ttforge.errors import ShapeError
    from ttforge.ir.executor import execute

    b = get_build("icarus", case.config)
    X = case.X[:2].copy()
    X[0, 0] = 1 << (case.program.in_bits - 1)
    with pytest.raises(ShapeError) as golden:
        execute(case.net, X)
    with pytest.raises(ShapeError) as sim:
        run_inference(b, case.program, X, workdir=tmp_path / "job")
    assert str(sim.value) == str(golden.value)
    assert not (tmp_path / "job").exists()


def test_reset_in_the_middle_of_an_inference(sim, case, get_build):
    """rst during an inference: the registers return to reset (the memories keep), the
    registers are written again, and the next vectors are exact."""
    b = get_build(sim, case.config)
    regs = register_addresses(case.config)
    writes = load_writes(case.program)
    reg_writes = writes[-5:]       # IN_COUNT, IN_PAD, OUT_COUNT, OUT_BUF, CTRL.ENABLE
    assert [a for a, _ in reg_writes.tolist()] == [regs[n] for n in
                                                  ("IN_COUNT", "IN_PAD", "OUT_COUNT", "OUT_BUF", "CTRL")]
    X = case.X[:6]
    ops = [{"op": "load", "writes": "writes", "name": "load"},
           {"op": "reset_during", "inputs": "first", "after": 120, "name": "reset"},
           {"op": "read", "addr": regs["CTRL"], "name": "ctrl"},
           {"op": "read", "addr": regs["STATUS"], "name": "status"},
           {"op": "read", "addr": regs["IN_COUNT"], "name": "in_count"},
           {"op": "load", "writes": "regs", "name": "regs"},
           {"op": "stream", "inputs": "X", "expected": "golden", "name": "out",
            "gaps": 0.2, "backpressure": 0.2, "timeout_cycles": 100_000}]
    job = run_job(b, ops, {"writes": writes, "regs": reg_writes, "first": X[:2], "X": X,
                           "golden": case.golden[:6]}, out_count=case.program.out_count, seed=3)
    assert job.op("reset")["status_before"] & 1        # BUSY: the reset hit an inference
    assert job.op("ctrl")["data"] == 0 and job.op("in_count")["data"] == 0
    assert job.op("status")["data"] == 0
    _assert_exact(job.arrays["out"], case.golden[:6])
    assert job.passed


def test_unmapped_and_illegal_accesses_answer_slverr_without_hanging(sim, case, get_build):
    b = get_build(sim, case.config)
    rm = RegisterMap(case.config)
    regs = register_addresses(case.config)
    region = case.config.region_bytes
    unmapped = [0x0F0, 0x024, region - 4]
    for name in ("DMEM", "CMEM", "BMEM"):
        w = rm.window(name)
        if 4 * w.depth < region:
            unmapped.append(w.base + 4 * w.depth)          # just past the window
    cm = rm.window("CMEM")
    ops = [{"op": "load", "writes": "writes", "name": "load"}]
    for i, a in enumerate(unmapped):
        ops += [{"op": "write", "addr": a, "data": 0xDEADBEEF, "name": f"w{i}"},
                {"op": "read", "addr": a, "name": f"r{i}"}]
    ops += [{"op": "write", "addr": regs["ID"], "data": 1, "name": "write_ro"},
            {"op": "read", "addr": regs["CMD"], "name": "read_wo"},
            {"op": "read", "addr": cm.base, "name": "read_window"},
            # a window write with WSTRB != 0b1111 has no effect (the cores stay exact)
            {"op": "write", "addr": cm.base, "data": 0x7F, "nbytes": 2, "name": "window_wstrb"},
            {"op": "read", "addr": regs["ID"], "name": "id"},
            {"op": "stream", "inputs": "X", "expected": "golden", "name": "out",
             "timeout_cycles": 50_000}]
    X = case.X[:4]
    job = run_job(b, ops, {"writes": load_writes(case.program), "X": X, "golden": case.golden[:4]},
                  out_count=case.program.out_count)
    for i in range(len(unmapped)):
        assert job.op(f"w{i}")["resp"] == SLVERR, hex(unmapped[i])
        assert job.op(f"r{i}")["resp"] == SLVERR and job.op(f"r{i}")["data"] == 0, hex(unmapped[i])
    for name in ("write_ro", "read_wo", "read_window", "window_wstrb"):
        assert job.op(name)["resp"] == SLVERR, name
    assert job.op("id")["resp"] == OKAY and job.op("id")["data"] == 0x54544647
    _assert_exact(job.arrays["out"], case.golden[:4])


def _corrupt(prog, step, **fields):
    descs = [list(d) for d in prog.descriptors]
    d = decode_descriptor(descs[step])
    descs[step] = list(encode_descriptor(d.__class__(**{**d.__dict__, **fields})))
    return prog.with_words(descriptors=descs)


@pytest.mark.parametrize("fault", [("BOUND_ZERO", 2, {"N": (1, 0, 1, 1)}),
                                   ("SAT_BITS", 4, {"SAT_BITS": 1})], ids=lambda f: f[0])
def test_malformed_descriptor_raises_the_error_bit_then_recovers(sim, case, get_build, fault):
    code, step, fields = fault
    b = get_build(sim, case.config)
    regs = register_addresses(case.config)
    bad = _corrupt(case.program, step, **fields)
    ops = [{"op": "load", "writes": "bad", "name": "load_bad"},
           {"op": "stream", "inputs": "one", "name": "none", "timeout_cycles": 3000},
           {"op": "read", "addr": regs["STATUS"], "name": "status"},
           {"op": "read", "addr": regs["ERROR_CODE"], "name": "code"},
           {"op": "read", "addr": regs["IRQ_STATUS"], "name": "irq"},
           {"op": "load", "writes": "good", "name": "load_good"},    # CMD.CLEAR_ERROR inside
           {"op": "read", "addr": regs["STATUS"], "name": "status_after"},
           {"op": "stream", "inputs": "X", "expected": "golden", "name": "out",
            "timeout_cycles": 50_000}]
    X = case.X[:3]
    job = run_job(b, ops, {"bad": np.asarray(load_image(bad), dtype=np.int64),
                           "good": load_writes(case.program), "one": X[:1], "X": X,
                           "golden": case.golden[:3]}, out_count=case.program.out_count)
    assert job.op("none")["received"] == 0 and job.op("none")["timeout"]
    assert job.op("status")["data"] & 0b100                       # STATUS.ERROR
    assert job.op("code")["data"] & 0xFF == ErrorCode[code]
    assert job.op("code")["data"] >> 16 == step
    assert job.op("irq")["data"] & 0b10
    assert not job.op("status_after")["data"] & 0b100
    _assert_exact(job.arrays["out"], case.golden[:3])
