"""The whole engine in Amaranth's simulator: compiled random networks, streamed with
random gaps and back-pressure, must equal ``ttforge.quant.execute`` exactly; counters
equal the executor's saturation and MAC counts; cycle counts follow ENGINE_TIMING;
malformed descriptors and streams set the error status and the next inference works."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from amaranth.back import verilog

from ttforge.hw.config import AccelConfig
from ttforge.hw.engine import ENGINE_TIMING, ERROR_CODES, TTEngine
from ttforge.hw.program import compile_program, decode_descriptor, encode_descriptor
from ttforge.ir.executor import IntLayer, IntNetwork, execute, execute_traced

from tests.support.engine import (COUNTERS, _layer, config_for, coverage_net, load_program, macs_per_vector,
                                  pulse, random_inputs, random_net, send_vector, simulate, stream_script,
                                  wait_idle)


def check_bit_exact(lanes, seed, vectors=2, gap=0.25, stall=0.25, **over):
    net = random_net(seed)
    cfg = config_for(net, lanes, **over)
    prog = compile_program(net, cfg)
    X = random_inputs(net, vectors, seed)
    golden, traces = execute_traced(net, X)
    run = simulate(cfg, stream_script(prog, X, gap=gap), expect_vectors=len(X), seed=seed,
                   stall=stall)
    got = np.array(run.outputs, dtype=np.int64)
    assert got.shape == golden.shape
    assert np.array_equal(got, golden)
    assert all(ls == [0] * (len(ls) - 1) + [1] for ls in run.lasts)
    assert run.status["error"] == 0
    assert run.counters["vectors"] == len(X)
    assert run.done_pulses == len(X)
    assert run.counters["sat_events"] == sum(t.saturations for t in traces)
    assert run.counters["busy_lane_cycles"] == macs_per_vector(net) * len(X)
    if gap and stall:
        assert run.counters["in_stall"] + run.counters["out_stall"] > 0
    return run


#: (lanes, seed) of random networks that together cover every step kind at L = 1..16
FAST_CASES = [(1, 21), (2, 0), (4, 15), (4, 37), (8, 10), (16, 4), (16, 31)]


@pytest.mark.parametrize("lanes,seed", FAST_CASES)
def test_random_network_bit_exact_with_gaps_and_backpressure(lanes, seed):
    check_bit_exact(lanes, seed)


@pytest.mark.parametrize("lanes,seed,rr", [(1, 21, 1), (4, 37, 1), (16, 31, 1), (4, 37, 2),
                                           (16, 31, 2), (4, 15, 2), (8, 10, 2)])
def test_read_registers_bit_exact_with_gaps_and_backpressure(lanes, seed, rr, monkeypatch):
    # AccelConfig.read_registers = 1 (2): the operands a stage (two) later, the same values
    # (seeds 15 and 10 broadcast core elements from lanes other than 0, which at 2 are
    # selected on their way into stage 2);
    # with a read of a word as it is written poisoned (the banks are no_rw_check in
    # synthesis): exact, so the engine never uses such a read
    import ttforge.hw.engine.banks as banks

    monkeypatch.setattr(banks, "POISON_COLLISIONS", True)
    check_bit_exact(lanes, seed, read_registers=rr)


@pytest.mark.parametrize("lanes,seed,rr", [(1, 21, 1), (4, 37, 1), (1, 21, 2), (4, 37, 2)])
def test_read_registers_with_cmem_in_several_banks(lanes, seed, rr, monkeypatch):
    # CMEM in banks of 4 words (hw/engine/banks.py; 512 on the ECP5), so that the cores
    # span several banks and the bank select is exercised: exact, and the cycle model's
    import ttforge.hw.engine.banks as banks

    monkeypatch.setattr(banks, "BANK_DEPTH", 4)
    monkeypatch.setattr(banks, "POISON_COLLISIONS", True)     # (as above)
    net = random_net(seed)
    cfg = config_for(net, lanes, read_registers=rr)
    assert cfg.core_depth // lanes > 4 * 2
    run = check_bit_exact(lanes, seed, read_registers=rr)
    prog = compile_program(net, cfg)
    X = random_inputs(net, 1, seed)
    run = simulate(cfg, stream_script(prog, X, pause=5), expect_vectors=1)
    assert np.array_equal(np.array(run.outputs), execute(net, X))
    assert run.counters["cycles"] == model_cycles(prog, cfg)


@pytest.mark.parametrize("fault,rr", [("requant_lsb", 1), ("requant_lsb", 2)])
def test_read_registers_fault_breaks_equality(fault, rr, monkeypatch):
    # the sibling of the banked reads' exactness: the same engine with one bit of a
    # result flipped must differ from the executor
    import ttforge.hw.engine.banks as banks

    monkeypatch.setattr(banks, "BANK_DEPTH", 4)
    net = random_net(37)
    cfg = config_for(net, 4, read_registers=rr)
    prog = compile_program(net, cfg)
    X = random_inputs(net, 2, 37)
    run = simulate(cfg, stream_script(prog, X), expect_vectors=len(X), fault=fault,
                   max_cycles=20_000)
    assert not np.array_equal(np.array(run.outputs), execute(net, X))


@pytest.mark.slow
@pytest.mark.parametrize("lanes", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("seed", range(30))
def test_random_network_sweep(lanes, seed):
    check_bit_exact(lanes, seed, vectors=3, gap=0.2, stall=0.2)


def test_modes_and_bias_paths_are_all_exercised():
    net, cfg, prog = coverage_net()
    kinds = [(s.mode, s.out_word, s.bias, s.Q, s.last_lanes) for s in prog.steps]
    assert kinds == [(1, True, False, 1, 4), (0, False, True, 4, 4), (1, False, True, 1, 2),
                     (1, False, False, 1, 2), (1, False, True, 3, 2)], kinds
    X = random_inputs(net, 3, 11)
    golden, traces = execute_traced(net, X)
    run = simulate(cfg, stream_script(prog, X, gap=0.2), expect_vectors=len(X), seed=3, stall=0.2)
    assert np.array_equal(np.array(run.outputs), golden)
    assert run.counters["sat_events"] == sum(t.saturations for t in traces)
    assert run.counters["busy_lane_cycles"] == macs_per_vector(net) * len(X)


def test_quantized_pytorch_network_end_to_end():
    """A calibrated QAT network (two TT layers with ReLU and a dense head, the builder
    of tests/quant/test_golden.py), compiled and run: equal to the executor."""
    from tests.support.nets import small_net
    from ttforge.quant.qat import compile_network

    q, x = small_net(seed=3, ranks=(3, 2), w_bits=6, inter_bits=16, act_bits=8)
    net = compile_network(q)
    cfg = config_for(net, 4)
    prog = compile_program(net, cfg)
    X = net.quantize_input(x.numpy()[:2])
    golden, traces = execute_traced(net, X)
    run = simulate(cfg, stream_script(prog, X, gap=0.2), expect_vectors=len(X), stall=0.2)
    assert np.array_equal(np.array(run.outputs), golden)
    assert np.array_equal(np.array(run.outputs), q.forward_int(x[:2]))
    assert run.counters["sat_events"] == sum(t.saturations for t in traces)
    assert run.counters["busy_lane_cycles"] == macs_per_vector(net) * len(X)


def test_input_waits_for_enable():
    net, cfg, prog, X = _small()
    seen = {}

    async def script(ctx, dut, rng):
        await load_program(ctx, dut, prog)
        ctx.set(dut.inp.valid, 1)
        ctx.set(dut.inp.payload.data, int(X[0][0]))
        await ctx.tick().repeat(5)
        seen["ready_disabled"] = ctx.get(dut.inp.ready)
        seen["busy_disabled"] = ctx.get(dut.status.busy)
        ctx.set(dut.inp.valid, 0)
        ctx.set(dut.control.enable, 1)
        await send_vector(ctx, dut, X[0], rng, 0.0)

    run = simulate(cfg, script, expect_vectors=1)
    assert seen == {"ready_disabled": 0, "busy_disabled": 0}
    assert np.array_equal(np.array(run.outputs), execute(net, X[:1]))


def test_saturation_and_negative_shifts_are_counted():
    rng = np.random.default_rng(21)
    # tiny reduction with 2-bit cores: accumulators are narrow -> left shifts; jitter
    # saturates some outputs
    l0 = _layer(rng, [2, 2], [3, 2], [2], (0, 1), w_bits=2, in_bits=4, in_exp=0,
                inter_bits=16, out_bits=4, bias=True, relu=False, in_features=4, out_features=6,
                jitter=False)
    sh = l0.shifts()
    fields = {f: getattr(l0, f) for f in l0.__dataclass_fields__}
    # force a left shift on step 0 and an aggressive right shift (saturating) on step 1
    e0 = l0.acc_exp(0) - 3
    fields["step_exps"] = (e0, e0 + l0.core_exps[l0.schedule.steps[1].core] - 1)
    l0 = IntLayer(**fields)
    assert l0.shifts()[0] < 0, sh
    net = IntNetwork((l0,))
    cfg = config_for(net, 4)
    prog = compile_program(net, cfg)
    X = random_inputs(net, 4, 21)
    golden, traces = execute_traced(net, X)
    assert sum(t.saturations for t in traces) > 0
    run = simulate(cfg, stream_script(prog, X), expect_vectors=len(X))
    assert np.array_equal(np.array(run.outputs), golden)
    assert run.counters["sat_events"] == sum(t.saturations for t in traces)


# ------------------------------------------------------------------------ siblings that must fail
def _small():
    net = random_net(37)
    cfg = config_for(net, 4)
    prog = compile_program(net, cfg)
    X = random_inputs(net, 2, 2)
    return net, cfg, prog, X


def test_one_core_bit_flipped_in_cmem_breaks_equality():
    net, cfg, prog, X = _small()
    golden = execute(net, X)
    cm = prog.cmem.copy()
    nz = int(np.flatnonzero(cm)[0])
    cm[nz] ^= 1
    run = simulate(cfg, stream_script(prog, X, cmem=cm.tolist()), expect_vectors=len(X))
    assert not np.array_equal(np.array(run.outputs), golden)


def test_one_golden_bit_flipped_breaks_equality():
    net, cfg, prog, X = _small()
    golden = execute(net, X).copy()
    run = simulate(cfg, stream_script(prog, X), expect_vectors=len(X))
    assert np.array_equal(np.array(run.outputs), golden)
    golden[1, 0] ^= 1
    assert not np.array_equal(np.array(run.outputs), golden)


def test_rtl_fault_breaks_equality():
    net, cfg, prog, X = _small()
    run = simulate(cfg, stream_script(prog, X), expect_vectors=len(X), fault="requant_lsb")
    assert not np.array_equal(np.array(run.outputs), execute(net, X))


# ------------------------------------------------------------------------ errors
def _corrupt(prog, step, **fields):
    descs = [list(d) for d in prog.descriptors]
    d = decode_descriptor(descs[step])
    descs[step] = list(encode_descriptor(d.__class__(**{**d.__dict__, **fields})))
    return descs


def _error_then_recover(prog, X, net, cfg, *, bad_load, bad_lasts=None, expect_code):
    """Load a bad program (or send a bad stream), expect the error; then reload the good
    program, clear the error and require a correct inference."""
    golden = execute(net, X[:1])
    seen = {}

    async def script(ctx, dut, rng):
        await load_program(ctx, dut, prog, **bad_load)
        ctx.set(dut.control.enable, 1)
        vec = list(X[0]) + ([] if bad_lasts is None else [0] * bad_lasts[1])
        await send_vector(ctx, dut, vec, rng, 0.0, lasts=None if bad_lasts is None else bad_lasts[0])
        for _ in range(3):
            await ctx.tick()
        await wait_idle(ctx, dut)
        for _ in range(3):
            await ctx.tick()
        seen["error"] = ctx.get(dut.status.error)
        seen["code"] = ctx.get(dut.status.error_code)
        seen["step"] = ctx.get(dut.status.error_step)
        seen["ready_while_error"] = ctx.get(dut.inp.ready)
        await load_program(ctx, dut, prog)
        await pulse(ctx, dut.control.clear_error)
        seen["error_after_clear"] = ctx.get(dut.status.error)
        await send_vector(ctx, dut, X[0], rng, 0.0)

    run = simulate(cfg, script, expect_vectors=1)
    assert seen["error"] == 1
    assert seen["code"] == expect_code, (seen, ERROR_CODES)
    assert seen["ready_while_error"] == 0
    assert seen["error_after_clear"] == 0
    assert np.array_equal(np.array(run.outputs), golden)
    assert run.status["error"] == 0
    return seen


def _descriptor_faults(prog, cfg):
    """(name, descriptors, expected code, expected step) for malformed programs."""
    steps = prog.steps
    last = len(steps) - 1
    w0 = next(i for i, s in enumerate(steps) if s.mode == 0 and s.bias)          # word + bias
    e1 = next(i for i, s in enumerate(steps) if s.mode == 1 and not s.out_word and s.bias)
    m1 = next(i for i, s in enumerate(steps) if s.mode == 1)
    cases = [
        ("bound 0", last, {"N": (1, 0, 1, 1)}, "BOUND_ZERO"),
        ("bound beyond the loop counters", last, {"N": (1, 1 << cfg.loop_bits, 1, 1)}, "BOUND_ZERO"),
        ("SAT_BITS 1", 0, {"SAT_BITS": 1}, "SAT_BITS"),
        ("SAT_BITS > inter_bits", last, {"SAT_BITS": cfg.inter_bits + 1}, "SAT_BITS"),
        ("LAST_LANES 0", m1, {"LAST_LANES": 0}, "LAST_LANES"),
        ("LAST_LANES > L", m1, {"LAST_LANES": cfg.lanes + 1}, "LAST_LANES"),
        ("ZFILL_TO < ZFILL_FROM", 0, {"ZFILL_FROM": 9, "ZFILL_TO": 3}, "ZFILL_ORDER"),
        ("C_BASE beyond CMEM", last, {"C_BASE": 1 << 20}, "CMEM_RANGE"),
        ("X_BASE beyond BUF", last, {"X_BASE": 1 << 31}, "BUF_RANGE"),
        ("O_BASE beyond BUF (element writes)", e1, {"O_BASE": cfg.buf_depth - 1}, "BUF_RANGE"),
        ("zero fill beyond BUF", 0, {"ZFILL_TO": cfg.buf_depth + 1}, "BUF_RANGE"),
        ("output word misaligned", w0, {"O_BASE": 1}, "MISALIGNED"),
        ("x word misaligned", w0, {"X_BASE": 1}, "MISALIGNED"),
        ("core word misaligned", m1, {"C_BASE": 1}, "MISALIGNED"),
        ("bias word misaligned", w0, {"B_BASE": 1}, "MISALIGNED"),
        ("word output with O_LANE 2", w0, {"O_LANE": 2}, "MISALIGNED"),
        ("bias word beyond BMEM", w0, {"B_BASE": cfg.bias_depth}, "BMEM_RANGE"),
        ("bias element beyond BMEM", e1, {"B_BASE": cfg.bias_depth - 1}, "BMEM_RANGE"),
    ]
    out = [(name, _corrupt(prog, st, **f), ERROR_CODES[code], st) for name, st, f, code in cases]
    descs = [list(d) for d in prog.descriptors]
    descs[-1][0] &= ~(1 << 5)  # no LAST anywhere: step desc_depth fails
    out.append(("no LAST", descs, ERROR_CODES["NO_LAST"], cfg.desc_depth))
    return out


def test_malformed_descriptors_set_error_and_the_next_inference_works():
    """Each malformed program stops its inference with the right code and step; the
    error refuses input until cleared; then the good program runs bit-exactly."""
    net, cfg, prog = coverage_net()
    assert cfg.desc_depth == len(prog.steps)
    X = random_inputs(net, 1, 5)
    golden = execute(net, X)
    faults = _descriptor_faults(prog, cfg)
    seen = []

    async def script(ctx, dut, rng):
        await load_program(ctx, dut, prog, parts=("cmem", "bmem", "globals"))
        ctx.set(dut.control.enable, 1)
        for name, descs, code, step in faults:
            await load_program(ctx, dut, prog, descriptors=descs, parts=("dmem",))
            await send_vector(ctx, dut, X[0], rng, 0.0)
            await ctx.tick()
            await wait_idle(ctx, dut)
            await ctx.tick()
            seen.append((name, ctx.get(dut.status.error), ctx.get(dut.status.error_code), ctx.get(dut.status.error_step),
                         ctx.get(dut.inp.ready), ctx.get(dut.counters.vectors)))
            await load_program(ctx, dut, prog, parts=("dmem",))
            await pulse(ctx, dut.control.clear_error)
            assert ctx.get(dut.status.error) == 0
            await send_vector(ctx, dut, X[0], rng, 0.0)
            await wait_idle(ctx, dut)    # never rewrite DMEM under a running inference

    run = simulate(cfg, script, expect_vectors=len(faults))
    for (name, _, code, step), (_, err, got_code, got_step, ready, vectors), i in zip(
            faults, seen, range(len(faults))):
        assert (err, got_code, got_step) == (1, code, step), name
        assert ready == 0, name           # input refused while the error is pending
        assert vectors == i, name         # the failed inference produced no vector
    assert len(run.outputs) == len(faults)
    for out in run.outputs:                # every good inference after a failure is exact
        assert np.array_equal(np.array([out]), golden)


@pytest.mark.parametrize("bad", [{"OUT_COUNT": 0}, {"IN_COUNT": 0}, {"IN_PAD": 1 << 20},
                                 {"OUT_COUNT": 1 << 16}])
def test_bad_globals(bad):
    """Bad program registers: error GLOBALS, the vector is drained, then all is well."""
    net, cfg, prog, X = _small()
    bad = {k: (cfg.buf_depth + 1 if v >= 1 << 16 else v) for k, v in bad.items()}
    _error_then_recover(prog, X, net, cfg, bad_load={"globals_": bad},
                        expect_code=ERROR_CODES["GLOBALS"])


@pytest.mark.parametrize("reg", ["IN_COUNT", "IN_PAD", "OUT_COUNT"])
def test_bad_globals_in_the_high_bits(reg):
    """A program register whose low bits are valid and bit 31 set (the controller checks
    the high bits apart from its address-width comparisons): error GLOBALS."""
    net, cfg, prog, X = _small()
    bad = {reg: prog.globals[reg] | 1 << 31}
    _error_then_recover(prog, X, net, cfg, bad_load={"globals_": bad},
                        expect_code=ERROR_CODES["GLOBALS"])


def test_tlast_late_drains_the_vector():
    """No tlast on element IN_COUNT - 1: error TLAST_LATE, the rest of the vector up to
    its tlast is drained (the stream stays in sync), the next vector runs."""
    net, cfg, prog, X = _small()
    n = len(X[0])
    late = [0] * (n + 3)
    late[-1] = 1
    _error_then_recover(prog, X, net, cfg, bad_load={}, bad_lasts=(late, 3),
                        expect_code=ERROR_CODES["TLAST_LATE"])


def test_tlast_early():
    net, cfg, prog, X = _small()
    golden = execute(net, X[:1])
    seen = {}

    async def script(ctx, dut, rng):
        await load_program(ctx, dut, prog)
        ctx.set(dut.control.enable, 1)
        lasts = [0] * len(X[0])
        lasts[1] = 1
        await send_vector(ctx, dut, list(X[0][:2]), rng, 0.0, lasts=lasts[:2])
        await ctx.tick().repeat(3)
        seen["code"] = ctx.get(dut.status.error_code)
        await pulse(ctx, dut.control.clear_error)
        await send_vector(ctx, dut, X[0], rng, 0.0)

    run = simulate(cfg, script, expect_vectors=1)
    assert seen["code"] == ERROR_CODES["TLAST_EARLY"]
    assert np.array_equal(np.array(run.outputs), golden)


def test_soft_reset_aborts_and_memories_keep():
    net, cfg, prog, X = _small()
    golden = execute(net, X[:1])
    seen = {}

    async def script(ctx, dut, rng):
        await load_program(ctx, dut, prog)
        ctx.set(dut.control.enable, 1)
        await send_vector(ctx, dut, X[0], rng, 0.0)
        await ctx.tick().repeat(40)           # in the middle of the steps
        seen["busy_before"] = ctx.get(dut.status.busy)
        await pulse(ctx, dut.control.soft_reset)
        await ctx.tick()
        seen["busy_after"] = ctx.get(dut.status.busy)
        await send_vector(ctx, dut, X[0], rng, 0.0)

    run = simulate(cfg, script, expect_vectors=1)
    assert seen == {"busy_before": 1, "busy_after": 0}
    assert np.array_equal(np.array(run.outputs), golden)
    assert run.counters["vectors"] == 1


def test_clear_counters():
    net, cfg, prog, X = _small()

    async def script(ctx, dut, rng):
        await load_program(ctx, dut, prog)
        ctx.set(dut.control.enable, 1)
        await send_vector(ctx, dut, X[0], rng, 0.0)
        await wait_idle(ctx, dut)
        await ctx.tick().repeat(3)
        assert ctx.get(dut.counters.cycles) > 0 and ctx.get(dut.counters.vectors) == 1
        await pulse(ctx, dut.control.clear_counters)
        for n in COUNTERS:
            assert ctx.get(getattr(dut.counters, n)) == 0, n

    simulate(cfg, script, expect_vectors=1)


# ------------------------------------------------------------------------ timing
def model_cycles(prog, cfg, vectors=1):
    """The analytic cycle count of docs/hardware.md "Engine timing" (no stream stalls),
    written independently of ttforge.hw.cycles."""
    T = {f.upper(): v for f, v in dataclasses.asdict(ENGINE_TIMING).items()}
    L, extra = cfg.lanes, cfg.read_registers       # the operand stage drains one more
    total = max(prog.in_pad, prog.in_count)
    for s in prog.steps:
        d = decode_descriptor(prog.descriptors[s.index])
        N0, N1, N2, N3 = d.N
        total += T["FETCH"] + N0 * N1 * N2 * N3
        if (d.MODE == 1 and not d.OUT_WORD) or cfg.serial_requant:
            blocks = ([L] * (N2 - 1) + [d.LAST_LANES]) * (N0 * N1)
            total += sum(max(0, v - N3) for v in blocks[:-1])
            total += T["DRAIN_ELEM"] + (T["BIAS_SELECT"] if L > 1 else 0) + blocks[-1] + extra
        else:
            drain = L // cfg.requant_count      # cycles of a word result through the units
            total += (N0 * N1 * N2 - 1) * max(0, drain - N3)
            total += T["DRAIN_WORD"] + drain - 1 + extra
        z = d.ZFILL_TO - d.ZFILL_FROM
        total += z + (T["ZFILL_EXIT"] if z else 0)
    total += T["OUTPUT_LATENCY"] + extra + prog.out_count       # (a read a cycle longer)
    return total * vectors


@pytest.mark.parametrize("lanes,seed,read_registers",
                         [(1, 5, 0), (2, 13, 0), (4, 9, 0), (16, 15, 0), (1, 5, 1), (16, 15, 1),
                          (1, 5, 2), (16, 15, 2)])
def test_cycle_counter_equals_engine_timing_model(lanes, seed, read_registers):
    net = random_net(seed)
    cfg = config_for(net, lanes, read_registers=read_registers)
    prog = compile_program(net, cfg)
    X = random_inputs(net, 2, seed)
    run = simulate(cfg, stream_script(prog, X, pause=5), expect_vectors=len(X))
    assert np.array_equal(np.array(run.outputs), execute(net, X))
    assert run.counters["in_stall"] == 0 and run.counters["out_stall"] == 0
    assert run.counters["cycles"] == model_cycles(prog, cfg, len(X))
    # the project's analytic model (hw/cycles.py), fed the RTL's constants, agrees exactly
    from ttforge.hw.cycles import program_cycles
    model = program_cycles(prog.descriptors, cfg, prog.globals, ENGINE_TIMING)
    assert model.total * len(X) == run.counters["cycles"]
    assert model.busy_lane_cycles * len(X) == run.counters["busy_lane_cycles"]


@pytest.mark.slow
@pytest.mark.parametrize("lanes,seed", [(32, 4), (64, 31)])
def test_wide_engines_bit_exact_and_cycle_exact(lanes, seed):
    # the lane counts of issue 16's MACs per cycle: one-hot selects and 64-lane words
    check_bit_exact(lanes, seed)
    net = random_net(seed)
    cfg = config_for(net, lanes)
    prog = compile_program(net, cfg)
    X = random_inputs(net, 1, seed)
    run = simulate(cfg, stream_script(prog, X, pause=5), expect_vectors=1)
    assert np.array_equal(np.array(run.outputs), execute(net, X))
    from ttforge.hw.cycles import program_cycles
    assert run.counters["cycles"] == model_cycles(prog, cfg)
    assert program_cycles(prog.descriptors, cfg, prog.globals, ENGINE_TIMING).total == run.counters["cycles"]


@pytest.mark.slow
@pytest.mark.parametrize("lanes,seed,fault", [(64, 31, "requant_lsb"), (32, 4, "wrong_stride")])
def test_wide_engine_fault_breaks_equality(lanes, seed, fault):
    # the sibling of the wide engines' exactness: with their lane groups (per-group control
    # copies) a deliberate fault still shows in the outputs
    net = random_net(seed)
    cfg = config_for(net, lanes)
    prog = compile_program(net, cfg)
    X = random_inputs(net, 1, seed)
    run = simulate(cfg, stream_script(prog, X, pause=5), expect_vectors=1, fault=fault)
    assert not np.array_equal(np.array(run.outputs), execute(net, X))


@pytest.mark.slow
@pytest.mark.parametrize("lanes", [32, 64])
def test_wide_serial_requant_engine_is_exact(lanes):
    # serial_requant with lane groups: one requantization unit (one copy of its constants)
    # beside the MAC lanes' and the writer's per-group copies
    net = random_net(4)
    cfg = config_for(net, lanes, serial_requant=1)
    prog = compile_program(net, cfg)
    X = random_inputs(net, 1, 4)
    run = simulate(cfg, stream_script(prog, X, pause=5), expect_vectors=1)
    assert np.array_equal(np.array(run.outputs), execute(net, X))
    assert run.counters["cycles"] == model_cycles(prog, cfg)


@pytest.mark.parametrize("lanes,groups", [(4, 1), (16, 1), (32, 4), (64, 8)])
def test_lane_groups_have_their_own_control_copies(lanes, groups):
    """Up to 16 lanes one register each (the design unchanged); above, one kept copy per
    8 lanes of every per-lane control register (fanout_copies), visible in the RTLIL."""
    from amaranth.back import rtlil

    from ttforge.hw.engine.geometry import Geometry

    cfg = AccelConfig(lanes=lanes)
    assert Geometry(cfg).groups == groups
    text = rtlil.convert(TTEngine(cfg), name="e", emit_src=False)
    for name in ("deposit", "pr_v", "pr_first", "mode", "src", "elem_out", "flush", "y_valid", "rq",
                 "running"):
        copies = [k for k in range(groups) if f"\\{name}_g{k} " in text or f"\\{name}_g{k}\n" in text
                  or f"\\{name}_g{k}." in text]
        assert len(copies) == (groups if groups > 1 else 0), (name, copies)
    # (besides, every requantization unit keeps its own copy of the step constants, *_h,
    # at any lane count: Requant's hold_consts)
    import re
    kept = re.findall(r"attribute \\keep 1\n\s*wire [^\n]*\\(\S+)\n", text)
    assert any(n.endswith("_h") for n in kept)
    assert any(not n.endswith("_h") for n in kept) == (groups > 1)


@pytest.mark.parametrize("lanes,seed", [(1, 21), (2, 0), (4, 15), (4, 37), (8, 10), (16, 4),
                                        (16, 31), (4, 9)])
def test_serial_requant_is_bit_exact_and_follows_the_model(lanes, seed):
    """serial_requant=1: one requantization unit, word outputs through the serial writer;
    the same outputs and counters, the element-output timing for every step."""
    check_variant(lanes, seed, serial_requant=1)


def check_variant(lanes, seed, **config):
    """A random network on the engine with the ``config`` overrides: exact with gaps and
    back-pressure (outputs, saturation and busy counters), and without them its cycles
    equal both cycle models; returns the config, program, inputs and cycles."""
    from ttforge.hw.cycles import program_cycles

    net = random_net(seed)
    cfg = config_for(net, lanes, **config)
    prog = compile_program(net, cfg)
    X = random_inputs(net, 2, seed)
    golden, traces = execute_traced(net, X)
    run = simulate(cfg, stream_script(prog, X, gap=0.2), expect_vectors=len(X), seed=seed,
                   stall=0.2)
    assert np.array_equal(np.array(run.outputs), golden)
    assert run.counters["sat_events"] == sum(t.saturations for t in traces)
    assert run.counters["busy_lane_cycles"] == macs_per_vector(net) * len(X)
    quiet = simulate(cfg, stream_script(prog, X, pause=5), expect_vectors=len(X))
    assert np.array_equal(np.array(quiet.outputs), golden)
    cycles = quiet.counters["cycles"]
    assert cycles == model_cycles(prog, cfg, len(X))
    assert program_cycles(prog.descriptors, cfg, prog.globals).total * len(X) == cycles
    return cfg, prog, X, cycles


#: (lanes, requant_units, seed): random networks whose word-output steps include blocks
#: shorter than the drain (K < lanes / units: the issue unit waits), mode 0 and bias words
SHARED_REQUANT_CASES = [(4, 2, 30), (4, 2, 69), (8, 2, 53), (8, 4, 4), (16, 4, 79), (16, 4, 57),
                        (16, 2, 10)]


@pytest.mark.parametrize("lanes,units,seed", SHARED_REQUANT_CASES)
def test_shared_requant_units_are_bit_exact_and_follow_the_model(lanes, units, seed):
    """requant_units < lanes: a word result drains through the units in lanes / units
    cycles; the same outputs and counters as the golden executor, and the cycles of the
    model (which differ from a unit per lane's wherever a word step has more than one
    chunk)."""
    from ttforge.hw.cycles import program_cycles

    cfg, prog, X, cycles = check_variant(lanes, seed, requant_units=units)
    # the sibling: a unit per lane's model is a different count (the drain is measured)
    full = dataclasses.replace(cfg, requant_units=None)
    assert program_cycles(prog.descriptors, full, prog.globals).total * len(X) != cycles


def _shared_run(lanes, units, seed, vectors, fault=None):
    """One quiet run of a random network on ``units`` shared requantization units: the
    run, the golden outputs, the program and the config."""
    net = random_net(seed)
    cfg = config_for(net, lanes, requant_units=units)
    prog = compile_program(net, cfg)
    X = random_inputs(net, vectors, seed)
    run = simulate(cfg, stream_script(prog, X, pause=5), expect_vectors=len(X), fault=fault)
    return run, execute(net, X), prog, cfg


@pytest.mark.parametrize("lanes,units,seed", [(4, 2, 30), (16, 4, 79)])
def test_shared_requant_units_fault_breaks_equality(lanes, units, seed):
    run, golden, _, _ = _shared_run(lanes, units, seed, 2, fault="requant_lsb")
    assert not np.array_equal(np.array(run.outputs), golden)


@pytest.mark.slow
@pytest.mark.parametrize("lanes,units,seed", [(32, 8, 4), (64, 16, 31)])
def test_wide_shared_requant_engines_are_exact(lanes, units, seed):
    # the wide engines with fewer units than lanes (the area lever of issue 16): the
    # drain's chunk select per group of units beside the lane groups
    run, golden, prog, cfg = _shared_run(lanes, units, seed, 1)
    assert np.array_equal(np.array(run.outputs), golden)
    assert run.counters["cycles"] == model_cycles(prog, cfg)


@pytest.mark.parametrize("bits", [32, 24])
def test_narrow_counters_count_the_same(bits):
    net = random_net(37)
    cfg = config_for(net, 4, counter_bits=bits)
    prog = compile_program(net, cfg)
    X = random_inputs(net, 2, 2)
    golden, traces = execute_traced(net, X)
    run = simulate(cfg, stream_script(prog, X, pause=5), expect_vectors=len(X))
    assert np.array_equal(np.array(run.outputs), golden)
    assert run.counters["cycles"] == model_cycles(prog, cfg, len(X))
    assert run.counters["busy_lane_cycles"] == macs_per_vector(net) * len(X)
    assert run.counters["sat_events"] == sum(t.saturations for t in traces)
    assert run.counters["vectors"] == 2


@pytest.mark.parametrize("variant", [{"serial_requant": 1}, {"requant_units": 2}])
def test_requant_variants_coverage_net(variant):
    # mode 0 with a bias word, mode 1 OUT_WORD and element outputs, padding lanes, on one
    # serial unit and on 2 units shared by the 4 lanes
    net, cfg, prog = coverage_net()
    cfg = config_for(net, 4, **variant)
    prog = compile_program(net, cfg)
    X = random_inputs(net, 3, 11)
    golden, traces = execute_traced(net, X)
    run = simulate(cfg, stream_script(prog, X, gap=0.2), expect_vectors=len(X), seed=3, stall=0.2)
    assert np.array_equal(np.array(run.outputs), golden)
    assert run.counters["sat_events"] == sum(t.saturations for t in traces)


def test_serial_requant_fault_breaks_equality():
    net, cfg, prog, X = _small()
    cfg = config_for(net, 4, serial_requant=1)
    prog = compile_program(net, cfg)
    run = simulate(cfg, stream_script(prog, X), expect_vectors=len(X), fault="requant_lsb")
    assert not np.array_equal(np.array(run.outputs), execute(net, X))


# ------------------------------------------------------------------------ verilog
def test_verilog_converts():
    cfg = AccelConfig(lanes=2, core_depth=64, bias_depth=16, buf_depth=64, desc_depth=4)
    text = verilog.convert(TTEngine(cfg), name="ttforge_engine")
    assert "module ttforge_engine" in text
