"""The compiler and the element-level engine model against the golden executor, exactly.

``run_program`` executes the descriptor words; it must equal ``ttforge.quant.execute``
with ``np.array_equal`` for random networks and every lane count, count the same
saturation events as the executor's traces, and fail when one bit of the program is
flipped.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from ttforge.errors import ConfigError
from ttforge.hw.config import DESC_WORDS, AccelConfig
from ttforge.hw.cycles import ENGINE_TIMING, EngineTiming, estimate, program_cycles, step_cycles
from ttforge.hw.model import (AccumulatorOverflow, EngineError, requantize, run_program,
                              run_program_traced)
from ttforge.hw.program import (Descriptor, compile_program, decode_descriptor,
                                encode_descriptor, load_image, load_image_from_bytes,
                                SHIFT_RANGE, load_image_to_bytes, load_image_to_json)
from ttforge.hw.regmap import ErrorCode, RegisterMap
from ttforge.ir.arith import MAX_ACC_BITS, int_range, rshift_round, saturate, shift_range
from ttforge.ir.executor import IntLayer, IntNetwork, execute, execute_traced
from ttforge.ir.random import calibrated_layer as random_layer
from ttforge.ir.random import calibrated_network as random_network

from tests.support.nets import example_network

LANES = (1, 2, 4, 8, 16)


def random_input(net: IntNetwork, rng, batch: int = 9) -> np.ndarray:
    lo, hi = int_range(net.layers[0].in_bits)
    x = rng.integers(lo, hi + 1, size=(batch, net.in_features))
    x[0] = hi
    x[1] = lo
    return x.astype(np.int64)


# -------------------------------------------------------------------------------- tests
def test_descriptor_encoding_round_trips():
    d = Descriptor(MODE=1, SRC=1, BIAS=1, RELU=0, OUT_WORD=1, LAST=1, SAT_BITS=16, SHIFT=-7,
                   LAST_LANES=13, N=(1, 2, 3, 4), X_BASE=5, X_S=(6, 7, 8, 9), C_BASE=10,
                   C_S=(11, 12, 13, 14), O_BASE=15, O_S=(16, 17, 18), O_LANE=19, B_BASE=20,
                   OUT_VALID=21, ZFILL_FROM=22, ZFILL_TO=23)
    w = encode_descriptor(d)
    assert len(w) == DESC_WORDS and w[1:] == tuple(range(1, 24))
    assert w[0] == 1 | 2 | 4 | 16 | 32 | (16 << 8) | (0xF9 << 16) | (13 << 24)
    assert decode_descriptor(w) == d
    with pytest.raises(ConfigError, match="SHIFT=200"):
        encode_descriptor(Descriptor(**{**d.__dict__, "SHIFT": 200}))


def test_the_documented_example_compiles_as_the_doc_says():
    net = example_network()
    cfg = AccelConfig.for_network(net, lanes=4)
    p = compile_program(net, cfg)
    # layer 0 step 0: core 1, A=3 K=2 Q=1 P=4 -> mode 1 (Q % 4 != 0), OUT_WORD (P % 4 == 0)
    s0, s1, s2 = p.steps
    assert (s0.mode, s0.out_word, s0.A, s0.K, s0.Q, s0.P) == (1, True, 3, 2, 1, 4)
    assert (s1.mode, s1.A, s1.K, s1.Q, s1.P, s1.bias, s1.relu) == (1, 1, 6, 2, 2, True, True)
    assert (s1.out_valid, s1.zfill_from, s1.zfill_to) == (4, 4, 4)
    d0 = p.descriptor(0)
    assert d0.N == (3, 1, 1, 2) and d0.X_S == (2, 1, 0, 1) and d0.C_S == (0, 0, 8, 4)
    assert d0.O_S == (4, 1, 4) and d0.O_LANE == 1 and d0.LAST_LANES == 4 and d0.SRC == 0
    d1 = p.descriptor(1)
    assert d1.N == (1, 2, 1, 6) and d1.LAST_LANES == 2 and d1.SRC == 1 and d1.BIAS and d1.RELU
    assert p.descriptor(2).LAST and not p.descriptor(1).LAST
    assert p.globals == {"IN_COUNT": 5, "IN_PAD": 6, "OUT_COUNT": 3, "OUT_BUF": 1}
    # CMEM: step blocks at multiples of L; mode 1 lane-blocked with zero padding
    C0 = net.layers[0].core_matrix(0)  # (4, 2)
    assert p.cmem[0:8].tolist() == [C0[l, k] for k in range(2) for l in range(4)]
    C1 = net.layers[0].core_matrix(1)  # (2, 6)
    assert s1.c_base == 8 and p.cmem[8:8 + 24].tolist() == \
        [C1[l, k] if l < 2 else 0 for k in range(6) for l in range(4)]
    assert s2.c_base % 4 == 0 and s1.b_base == 0 and p.bmem.tolist() == net.layers[0].bias.tolist()
    x = np.array([[100, -37, 5, 127, -128], [3, 64, -90, 0, 41]])
    y, counters = run_program(p, cfg, x)
    assert y.tolist() == [[17, -24, -3], [19, 5, -8]]  # docs/artifact.md, worked example
    assert counters["SAT_EVENTS"] == 1 and counters["VECTORS"] == 2


@pytest.mark.parametrize("lanes", LANES)
@pytest.mark.parametrize("seed", range(24))
def test_random_networks_equal_the_executor(seed, lanes):
    net = random_network(seed)
    rng = np.random.default_rng(1000 + seed)
    x = random_input(net, rng)
    cfg = AccelConfig.for_network(net, lanes=lanes)
    p = compile_program(net, cfg)
    y, counters = run_program(p, cfg, x)
    golden, traces = execute_traced(net, x)
    assert np.array_equal(y, golden)
    assert counters["SAT_EVENTS"] == sum(t.saturations for t in traces)
    macs = sum(s.macs for s in p.steps)
    busy = counters["BUSY_LANE_CYCLES"]
    assert busy == macs * x.shape[0]              # every valid lane-cycle is a useful MAC
    assert counters["MAC_CYCLES"] * lanes >= busy
    # a roomier engine runs the same program unchanged
    big = AccelConfig(**{**cfg.to_dict(), "core_depth": cfg.core_depth + 4 * lanes,
                         "buf_depth": cfg.buf_depth * 2, "desc_depth": cfg.desc_depth + 3,
                         "acc_bits": 48, "bias_bits": 32, "inter_bits": 32, "axil_addr_bits": None})
    assert np.array_equal(run_program(compile_program(net, big), big, x)[0], golden)


def test_some_random_cases_exercise_every_path():
    """The random cases above cover both modes, OUT_WORD, partial last blocks, padding,
    zero fill, bias, ReLU, negative shifts and saturation."""
    seen = set()
    for seed in range(24):
        net = random_network(seed)
        for lanes in LANES:
            p = compile_program(net, AccelConfig.for_network(net, lanes=lanes))
            for s in p.steps:
                seen.add(f"mode{s.mode}")
                seen |= {k for k, v in [("out_word", s.out_word), ("bias", s.bias), ("relu", s.relu),
                                        ("partial", s.mode == 1 and s.last_lanes < lanes),
                                        ("zfill", s.zfill_to > s.zfill_from),
                                        ("padded_out", s.out_valid < s.out_size),
                                        ("left_shift", s.shift < 0)] if v}
    assert seen >= {"mode0", "mode1", "out_word", "bias", "relu", "partial", "zfill", "padded_out", "left_shift"}


def test_a_quantized_torch_network_runs_exactly():
    from tests.support.nets import small_net
    from ttforge.quant.qat import compile_network

    q, xf = small_net(w_bits=4, inter_bits=8)
    net = compile_network(q)
    x = net.quantize_input(xf.numpy() * 20)
    golden, traces = execute_traced(net, x)
    assert sum(t.saturations for t in traces) > 0
    for lanes in (1, 4, 16):
        cfg = AccelConfig.for_network(net, lanes=lanes)
        y, c = run_program(compile_program(net, cfg), cfg, x)
        assert np.array_equal(y, golden)
        assert c["SAT_EVENTS"] == sum(t.saturations for t in traces)


def test_traced_run_matches_every_executor_step():
    net = random_network(9)
    x = random_input(net, np.random.default_rng(0))
    cfg = AccelConfig.for_network(net, lanes=4)
    p = compile_program(net, cfg)
    y, _, records = run_program_traced(p, cfg, x)
    _, traces = execute_traced(net, x)
    assert [r.step for r in records] == list(range(len(traces)))
    for r, t, s in zip(records, traces, p.steps):
        assert r.dst == 1 - s.src and r.saturations == t.saturations
        want = t.out
        if s.out_valid < s.out_size:  # a layer's last step: padded outputs are written as 0
            want = np.where(np.arange(s.out_size) < s.out_valid, want, 0)
        if s.relu:
            want = np.maximum(want, 0)
        assert np.array_equal(r.out[:, :s.out_size], want)
        assert not r.out[:, s.out_size:].any()  # the zero fill


# ----------------------------------------------------------------- corruption must fail
def _case(seed=3, lanes=4):
    net = random_network(seed)
    x = random_input(net, np.random.default_rng(seed), batch=32)
    cfg = AccelConfig.for_network(net, lanes=lanes)
    return net, x, cfg, compile_program(net, cfg), execute(net, x)


def test_flipping_one_cmem_bit_fails():
    net, x, cfg, p, golden = _case()
    assert np.array_equal(run_program(p, cfg, x)[0], golden)
    s = p.steps[0]
    # a real core entry (not mode-1 padding): the first element of the step's block
    i = s.c_base
    cmem = p.cmem.copy()
    cmem[i] ^= 1 << (cfg.core_bits - 2)
    y, _ = run_program(p.with_words(cmem=cmem), cfg, x)
    assert not np.array_equal(y, golden)


# SHIFT, RELU (on a step whose output has negatives), K (N3), the k strides of x and of
# the core, and the top bit of the last step's OUT_VALID (fewer outputs kept)
@pytest.mark.parametrize("word, bit", [(0, 16), (0, 3), (4, 0), (9, 0), (14, 1), (21, None)])
def test_flipping_one_descriptor_bit_fails(word, bit):
    net, x, cfg, p, golden = _case()
    descs = [list(d) for d in p.descriptors]
    s = 0 if word != 21 else len(descs) - 1
    if bit is None:
        bit = descs[s][word].bit_length() - 1
    descs[s][word] ^= 1 << bit
    try:
        y, _ = run_program(p.with_words(descriptors=descs), cfg, x)
    except (EngineError, AccumulatorOverflow):
        return  # the engine refuses it: also a failure to agree
    assert not np.array_equal(y, golden)


def test_flipping_one_bias_bit_fails():
    net = example_network()
    cfg = AccelConfig.for_network(net, lanes=4)
    p = compile_program(net, cfg)
    x = random_input(net, np.random.default_rng(0), 32)
    bmem = p.bmem.copy()
    bmem[2] ^= 1 << 6
    assert not np.array_equal(run_program(p.with_words(bmem=bmem), cfg, x)[0], execute(net, x))


# --------------------------------------------------------------------- engine errors
def _one_step_program(lanes=4):
    net = example_network()
    cfg = AccelConfig.for_network(net, lanes=lanes)
    return net, cfg, compile_program(net, cfg)


@pytest.mark.parametrize("field, value, code", [
    ("N", (0, 1, 1, 2), ErrorCode.BOUND_ZERO),
    ("SAT_BITS", 1, ErrorCode.SAT_BITS),
    ("SAT_BITS", 40, ErrorCode.SAT_BITS),
    ("LAST_LANES", 0, ErrorCode.LAST_LANES),
    ("LAST_LANES", 5, ErrorCode.LAST_LANES),
    ("ZFILL_TO", 1, ErrorCode.ZFILL_ORDER),
    ("C_BASE", 2, ErrorCode.MISALIGNED),
    ("C_BASE", 1 << 20, ErrorCode.CMEM_RANGE),
    ("X_BASE", 1 << 20, ErrorCode.BUF_RANGE),
    ("O_BASE", 1 << 20, ErrorCode.BUF_RANGE),
    ("O_BASE", 1, ErrorCode.MISALIGNED),  # step 0 writes words (OUT_WORD)
    ("ZFILL_TO", 1 << 20, ErrorCode.BUF_RANGE),
    ("O_LANE", 2, ErrorCode.MISALIGNED),  # word outputs need O_LANE = 1
])
def test_malformed_descriptors_set_the_error_code(field, value, code):
    net, cfg, p = _one_step_program()
    d = p.descriptor(0)
    bad = Descriptor(**{**d.__dict__, field: value})
    descs = [encode_descriptor(bad)] + list(p.descriptors[1:])
    x = np.zeros((1, 5), dtype=np.int64)
    with pytest.raises(EngineError) as e:
        run_program(p.with_words(descriptors=descs), cfg, x)
    assert e.value.code == code and e.value.step == 0


def test_a_bound_beyond_the_loop_counters_is_refused_not_truncated():
    """N1 = 2**loop_bits would read as 0 in loop_bits-bit counters: BOUND_ZERO; the
    largest bound that fits (sibling) passes the check and fails later, on its range."""
    net, cfg, p = _one_step_program()
    assert cfg.loop_bits == cfg.addr_bits + 1 < 32
    d = p.descriptor(0)
    x = np.zeros((1, 5), dtype=np.int64)
    codes = []
    for n in (1 << cfg.loop_bits, (1 << cfg.loop_bits) - 1):
        bad = Descriptor(**{**d.__dict__, "N": (d.N[0], n) + tuple(d.N[2:])})
        with pytest.raises(EngineError) as e:
            run_program(p.with_words(descriptors=[encode_descriptor(bad)] + list(p.descriptors[1:])), cfg, x)
        codes.append(e.value.code)
    assert codes[0] == ErrorCode.BOUND_ZERO and codes[1] != ErrorCode.BOUND_ZERO


def test_compiled_bounds_fit_the_loop_counters():
    """Every loop bound compile_program emits is at most the largest memory depth."""
    net, cfg, p = _one_step_program()
    depth = max(cfg.core_depth, cfg.bias_depth, cfg.buf_depth)
    assert max(max(p.descriptor(s).N) for s in range(len(p.steps))) <= depth < 1 << cfg.loop_bits


def test_compile_refuses_a_bound_beyond_the_loop_counters(monkeypatch):
    """A (hypothetical) schedule loop longer than the counters is one error naming the
    field; with the counters one bit wider (sibling) the same program compiles."""
    from ttforge.errors import ConfigError

    net, cfg, p = _one_step_program()
    nb = max(max(p.descriptor(s).N) for s in range(len(p.steps))).bit_length()
    monkeypatch.setattr(AccelConfig, "loop_bits", property(lambda c: nb - 1))
    with pytest.raises(ConfigError, match=r"does not fit: step \d+'s loop bound \d+ needs more than loop_bits="):
        compile_program(net, cfg)
    monkeypatch.setattr(AccelConfig, "loop_bits", property(lambda c: nb))
    compile_program(net, cfg)


def test_more_engine_errors():
    net, cfg, p = _one_step_program()
    x = np.zeros((1, 5), dtype=np.int64)
    # the bias of the last layer-0 step read beyond BMEM
    d = p.descriptor(1)
    descs = list(p.descriptors)
    descs[1] = encode_descriptor(Descriptor(**{**d.__dict__, "B_BASE": cfg.bias_depth}))
    with pytest.raises(EngineError) as e:
        run_program(p.with_words(descriptors=descs), cfg, x)
    assert e.value.code == ErrorCode.BMEM_RANGE and e.value.step == 1
    # no LAST anywhere in DMEM
    d = p.descriptor(2)
    descs = list(p.descriptors)
    descs[2] = encode_descriptor(Descriptor(**{**d.__dict__, "LAST": 0}))
    with pytest.raises(EngineError) as e:
        run_program(p.with_words(descriptors=descs), cfg, x)
    assert e.value.code == ErrorCode.NO_LAST  # the next DMEM word is beyond desc_depth or all-zero
    # bad program registers
    for kw in ({"IN_PAD": 4}, {"OUT_COUNT": 0}, {"IN_PAD": cfg.buf_depth + 1}):
        with pytest.raises(EngineError) as e:
            run_program(p.with_words(**kw), cfg, x)
        assert e.value.code == ErrorCode.GLOBALS and e.value.step == -1


def test_a_too_narrow_accumulator_is_caught_not_wrapped():
    net, cfg, p = _one_step_program()
    small = AccelConfig(**{**cfg.to_dict(), "acc_bits": 8, "bias_bits": 8, "axil_addr_bits": None})
    with pytest.raises(ConfigError, match="does not fit: acc_bits=8"):
        compile_program(net, small)
    x = np.full((1, 5), 127)
    # a hand-made program that claims the narrow engine (run_program refuses a program
    # compiled for another config)
    with pytest.raises((AccumulatorOverflow)):
        run_program(dataclasses.replace(p, config=small), None, x)


@pytest.mark.parametrize("change, fields", [
    ({"core_bits": 3}, "core_bits=4 but the config has core_bits=3"),
    ({"lanes": 2}, "lanes=4, requant_units=4 but the config has lanes=2, requant_units=2"),
    ({"act_bits": 6}, "act_bits=8 but the config has act_bits=6"),
    ({"buf_depth": 1024}, "buf_depth=12 but the config has buf_depth=1024"),
])
def test_a_program_for_another_config_is_refused_in_one_line(change, fields):
    """A narrower core_bits wrapped the cores, other lanes read another layout: wrong
    outputs, nothing raised (only a memory too small was refused)."""
    net, cfg, p = _one_step_program()
    other = dataclasses.replace(cfg, **change)
    x = np.array([[100, -37, 5, 127, -128]])
    with pytest.raises(ConfigError, match=rf"^run_program: the program was compiled for {fields}; "
                                          r"compile it for the config \(compile_program\(net, config\)\)$") as e:
        run_program(p, other, x)
    assert "\n" not in str(e.value)
    # the sibling: its own config, given or not, runs
    assert np.array_equal(run_program(p, cfg, x)[0], run_program(p, None, x)[0])
    assert np.array_equal(run_program(p, None, x)[0], execute(net, x))


def test_inputs_outside_the_input_width_are_refused_as_the_executor_refuses_them():
    """The stream kept act_bits of a value: one past in_bits (act_bits wider) gave an
    output that was neither the executor's on the wrapped nor on the saturated input."""
    from ttforge.errors import ShapeError

    net = random_network(1)
    cfg = AccelConfig.for_network(net, lanes=4)
    cfg = dataclasses.replace(cfg, act_bits=cfg.inter_bits)
    assert cfg.act_bits > net.layers[0].in_bits    # values past in_bits fit the stream
    p = compile_program(net, cfg)
    lo, hi = int_range(net.layers[0].in_bits)
    x = random_input(net, np.random.default_rng(0), batch=2)
    for bad in (hi + 3, lo - 1):
        y = x.copy()
        y[0, 0] = bad
        with pytest.raises(ShapeError) as golden:
            execute(net, y)
        with pytest.raises(ShapeError) as model:
            run_program(p, cfg, y)
        assert str(model.value) == str(golden.value)
        assert f"(got {min(bad, int(y.min()))}.." in str(model.value) and "quantize_input" in str(model.value)
    # the sibling: the ends of the range run
    assert np.array_equal(run_program(p, cfg, x)[0], execute(net, x))


def test_compile_refuses_what_does_not_fit_and_bad_shifts():
    net = example_network()
    with pytest.raises(ConfigError, match=r"does not fit: core_depth=4 but .* raise core_depth to"):
        compile_program(net, AccelConfig(lanes=4, core_depth=4, act_bits=8, core_bits=4))
    lay = net.layers[1]
    fields = {f: getattr(lay, f) for f in lay.__dataclass_fields__}
    fields["step_exps"] = (lay.step_exps[0] + 200,)
    # a shift outside the range where the int64 executor is exact never reaches the compiler:
    # the layer itself refuses it (and every exact shift fits the signed 8-bit SHIFT field)
    with pytest.raises(ConfigError, match=r"step 0 shifts by 204 .* the exact range is -?\d+\.\.62"):
        IntLayer(**fields)


def test_every_exact_shift_fits_the_shift_field():
    """Why compile_program does not check SHIFT itself: every shift an IntLayer accepts
    (shift_range of any acc_bits it accepts) lies inside the signed 8-bit field."""
    for acc_bits in range(2, MAX_ACC_BITS + 1):
        lo, hi = shift_range(acc_bits)
        assert SHIFT_RANGE[0] <= lo <= hi <= SHIFT_RANGE[1], acc_bits


def test_a_shift_outside_the_field_is_refused_by_the_one_check():
    """encode_descriptor is the single SHIFT range check, and compile_program reaches it:
    a layer forced past its own validation to shift by 200 is refused, never wrapped."""
    net = example_network()
    lay = net.layers[1]
    object.__setattr__(lay, "step_exps", (lay.step_exps[0] + 200 - lay.shifts()[0],))
    assert lay.shifts()[0] == 200
    with pytest.raises(ConfigError, match=r"SHIFT=200 is outside the signed 8-bit field -128\.\.127"):
        compile_program(net, AccelConfig.for_network(net, lanes=4))


# --------------------------------------------------------------------------- arithmetic
def test_requantize_is_exact_for_every_shift():
    rng = np.random.default_rng(0)
    acc = np.concatenate([rng.integers(-(1 << 47), 1 << 47, size=200), rng.integers(-300, 300, size=200),
                          np.array([0, 1, -1, (1 << 47) - 1, -(1 << 47)])])
    for shift in list(range(-128, -60, 7)) + list(range(-40, 64)) + [100, 127]:
        for b in (2, 8, 16, 31, 32):
            y, sat = requantize(acc, shift, b)
            lo, hi = -(1 << (b - 1)), (1 << (b - 1)) - 1
            exact = [(a * (1 << -shift)) if shift <= 0 else (2 * a + (1 << shift)) // (2 << shift)
                     for a in acc.tolist()]
            ref = [min(max(v, lo), hi) for v in exact]
            assert y.tolist() == ref, (shift, b)
            assert sat.tolist() == [v != r for v, r in zip(exact, ref)]
    small = rng.integers(-(1 << 30), 1 << 30, size=100)
    for shift in range(-3, 20):
        assert np.array_equal(requantize(small, shift, 16)[0], saturate(rshift_round(small, shift), 16))


# ------------------------------------------------------------------------------ speed
def test_the_mnist_layer_runs_in_seconds():
    rng = np.random.default_rng(7)
    x = rng.integers(-128, 128, size=(4, 784))
    lay = random_layer(rng, 784, 512, [7, 4, 7, 4], [4, 8, 4, 4], [1, 16, 16, 16, 1], (3, 2, 1, 0),
                       w_bits=4, in_bits=8, in_exp=-4, inter_bits=16, out_bits=8, bias=True, relu=True,
                       x_cal=x)
    net = IntNetwork((lay,))
    golden = execute(net, x)
    for lanes in (4, 16):
        cfg = AccelConfig.for_network(net, lanes=lanes)
        p = compile_program(net, cfg)
        t0 = time.perf_counter()
        y, c = run_program(p, cfg, x)
        assert time.perf_counter() - t0 < 5
        assert np.array_equal(y, golden)
        est = estimate(p)
        assert c["BUSY_LANE_CYCLES"] == 4 * est.busy_lane_cycles
        assert c["CYCLES"] == 4 * est.cycles


# ------------------------------------------------------------------------------ cycles
def test_cycle_model_by_hand():
    cfg = AccelConfig(lanes=4)
    t = ENGINE_TIMING
    base = dict(MODE=1, SRC=0, BIAS=0, RELU=0, OUT_WORD=0, LAST=1, SAT_BITS=8, SHIFT=0,
                LAST_LANES=2, N=(2, 3, 2, 3), X_BASE=0, X_S=(0, 0, 0, 0), C_BASE=0, C_S=(0, 0, 0, 0),
                O_BASE=0, O_S=(0, 0, 0), O_LANE=1, B_BASE=0, OUT_VALID=0, ZFILL_FROM=5, ZFILL_TO=9)
    d = Descriptor(**base)
    sc = step_cycles(d, cfg)
    # 12 blocks of K=3 cycles; 6 full blocks (4 lanes) stall 1 each, partial blocks (2) 0; the
    # last block (partial) drains 2 elements
    assert sc.mac_cycles == 36 and sc.busy_lane_cycles == 2 * 3 * 3 * (4 + 2)
    assert sc.stall_cycles == 6 and sc.drain_cycles == t.drain_elem + t.bias_select + 2
    # one lane: no bias lane to select, no stage for it
    one = step_cycles(Descriptor(**{**base, "LAST_LANES": 1}), AccelConfig(lanes=1))
    assert one.drain_cycles == t.drain_elem + 1
    assert sc.zfill_cycles == 4 + t.zfill_exit and sc.overhead_cycles == t.fetch
    d0 = Descriptor(**{**base, "MODE": 0, "LAST_LANES": 4, "ZFILL_TO": 5})
    sc0 = step_cycles(d0, cfg)
    assert sc0.stall_cycles == 0 and sc0.drain_cycles == t.drain_word and sc0.busy_lane_cycles == 36 * 4
    assert sc0.zfill_cycles == 0
    pc = program_cycles([d, d0], cfg, {"IN_COUNT": 7, "IN_PAD": 10, "OUT_COUNT": 3})
    assert pc.total == 10 + sc.total + sc0.total + t.output_latency + 3
    assert 0 < pc.utilization < 1
    slow = EngineTiming.from_mapping({"FETCH": 30, "DRAIN_WORD": 1, "FIFO_DEPTH": 4})
    assert slow.fetch == 30 and slow.drain_word == 1 and slow.drain_elem == t.drain_elem
    with pytest.raises(ConfigError, match="EngineTiming.fetch=-1"):
        EngineTiming(fetch=-1)


@pytest.mark.parametrize("seed", range(12))
def test_schedule_lane_cycles_equal_the_cycle_model(seed):
    """``ContractionStep.lane_cycles`` (the schedule's lanes-aware cost, in model/) counts
    what the engine's cycle model counts for a step: its MAC cycles and writer stalls,
    the last block's write drain included."""
    net = random_network(seed)
    for lanes in LANES + (32,):
        prog = compile_program(net, AccelConfig.for_network(net, lanes=lanes))
        cfg = prog.config
        for s, words in zip(prog.steps, prog.descriptors):
            d = decode_descriptor(words)
            sc = step_cycles(d, cfg)
            st = net.layers[s.layer].schedule.steps[s.step]
            tail = max(0, d.LAST_LANES - d.N[3]) if d.MODE == 1 and not d.OUT_WORD else 0
            assert st.lane_cycles(lanes) == sc.mac_cycles + sc.stall_cycles + tail


def test_timing_equals_the_rtl():
    from ttforge.hw import engine

    assert engine.ENGINE_TIMING is ENGINE_TIMING      # one home: hw/cycles.py


def test_estimate_per_layer_and_dense_comparison():
    net = example_network()
    cfg = AccelConfig.for_network(net, lanes=4)
    est = estimate(compile_program(net, cfg))
    assert [x.layer for x in est.layers] == [0, 1]
    l0, l1 = est.layers
    assert l0.macs == 3 * 2 * 1 * 4 + 1 * 6 * 2 * 2 and l1.macs == 12
    assert l1.dense_cycles == 1 * 4 and l0.dense_cycles == 1 * 5
    assert l0.core_bits == (8 + 24) * cfg.core_bits and l0.bias_bits == 4 * cfg.bias_bits
    assert est.cycles == est.input_cycles + l0.cycles + l1.cycles + est.output_cycles
    d = est.to_dict()
    assert d["layers"][0]["memory_bits"] == l0.memory_bits and d["dense_ratio"] > 0


# --------------------------------------------------------------------------- load image
def test_load_image_order_and_forms():
    net = example_network()
    cfg = AccelConfig.for_network(net, lanes=4)
    p = compile_program(net, cfg)
    rm = RegisterMap(cfg)
    w = load_image(p, rm)
    assert w == load_image(p)  # deterministic
    # the example of docs/hardware.md, "Load image"
    assert rm.addr_bits == 11 and len(w) == 131 and w[2] == (0x200, 0x04030811)
    assert w[-6:] == [(0x60C, 70), (0x060, 5), (0x064, 6), (0x068, 3), (0x06C, 1), (0x040, 1)]
    assert w[0] == (rm.addr("CTRL"), 0) and w[-1] == (rm.addr("CTRL"), 1)
    assert w[1] == (rm.addr("CMD"), 0b11)   # SOFT_RESET (bit 0) | CLEAR_ERROR (bit 1)
    kinds = [rm.decode(a)[0] for a, _ in w]
    # CTRL, CMD, DMEM..., CMEM..., BMEM..., globals, CTRL
    body = kinds[2:-5]
    assert body == ["DMEM"] * (24 * 3) + ["CMEM"] * p.cmem.size + ["BMEM"] * p.bmem.size
    assert kinds[-5:-1] == ["IN_COUNT", "IN_PAD", "OUT_COUNT", "OUT_BUF"]
    cm = rm.window("CMEM")
    neg = [i for i, v in enumerate(p.cmem.tolist()) if v < 0][0]
    assert (cm.base + 4 * neg, p.cmem[neg] & 0xFFFFFFFF) in w  # sign-extended to 32 bits
    assert all(0 <= d < 1 << 32 and a < 1 << rm.addr_bits for a, d in w)
    assert load_image_from_bytes(load_image_to_bytes(w, cfg), cfg) == w
    import json
    j = json.loads(load_image_to_json(w, rm))
    assert j["format"] == "ttforge-load-image" and j["count"] == len(w)
    assert [tuple(x) for x in j["writes"]] == w
    with pytest.raises(ConfigError, match="TTLI"):
        load_image_from_bytes(b"nope")
    with pytest.raises(ConfigError, match="truncated"):
        load_image_from_bytes(load_image_to_bytes(w, cfg)[:-3])


def test_load_image_bytes_checked_whole():
    """load_image.bin carries its format version, the config it was made for and a CRC-32:
    a flipped bit anywhere, a truncated or padded file, an image for another config and a
    version 1 image are refused, each in one line naming the image and the fix."""
    net = example_network()
    cfg = AccelConfig.for_network(net, lanes=4)
    w = load_image(compile_program(net, cfg))
    good = load_image_to_bytes(w, cfg)
    assert good[:4] == b"TTLI" and int.from_bytes(good[4:8], "little") == 2
    assert len(good) == 16 + 4 * 19 + 8 * len(w) + 4   # the layout of docs/hardware.md
    assert load_image_from_bytes(good) == w == load_image_from_bytes(good, cfg)

    def refused(data, match, config=cfg):
        with pytest.raises(ConfigError, match=match) as e:
            load_image_from_bytes(data, config, source="x/load_image.bin")
        assert "\n" not in str(e.value) and str(e.value).startswith("x/load_image.bin: ")

    for byte in (20, 16 + 4 * 19 + 8 * 60 + 4, len(good) - 1):   # a config word, a weight, the CRC
        flipped = bytearray(good)
        flipped[byte] ^= 0x10
        refused(bytes(flipped), "corrupt, regenerate it")
    refused(good[:-1], "truncated or padded")
    refused(good + b"\0" * 8, "truncated or padded")
    refused(good[:10], "not a ttforge load image")
    v1 = b"TTLI" + np.array([1, len(w)], "<u4").tobytes() + np.asarray(w, "<u4").tobytes()
    refused(v1, "version 1 is not 2; regenerate")
    other = AccelConfig(**{**cfg.to_dict(), "lanes": 2})
    refused(good, "is for lanes=4, the config has lanes=2; regenerate it for this config", other)
    wider = AccelConfig(**{**cfg.to_dict(), "axil_addr_bits": cfg.axil_addr_bits + 1})
    refused(good, "axil_addr_bits=11, the config has axil_addr_bits=12", wider)
    with pytest.raises(ConfigError, match="needs the AccelConfig"):
        load_image_to_bytes(w, None)


@pytest.mark.parametrize("addr, why", [(0xFFFFFFF0, "outside the core's AXI4-Lite window 0x0..0x7FF"),
                                       (0x800, "outside the core's AXI4-Lite window 0x0..0x7FF"),
                                       (0x102, "not 4-byte aligned")])
def test_load_image_write_outside_the_window_is_refused(addr, why):
    """A CRC-valid image (made by hand) with a write past the core's 2^axil_addr_bits-byte
    AXI4-Lite window, or not word-aligned, is refused in one line naming the write and its
    address, with or without the config, as ttfi_check refuses it (a memory-mapped loader
    would write base + address anywhere); the window's last word is accepted."""
    net = example_network()
    cfg = AccelConfig.for_network(net, lanes=4)
    assert cfg.axil_addr_bits == 11
    w = load_image(compile_program(net, cfg))
    edge = [*w[:2], (0x7FC, 0), *w[2:]]
    assert load_image_from_bytes(load_image_to_bytes(edge, cfg), cfg) == edge
    bad = load_image_to_bytes([*w[:2], (addr, 0xDEADBEEF), *w[2:]], cfg)
    for config in (cfg, None):
        with pytest.raises(ConfigError) as e:
            load_image_from_bytes(bad, config, source="x/load_image.bin")
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith(f"x/load_image.bin: load image write 2 is to address 0x{addr:08X}, ")
        assert why in msg and "regenerate" in msg


def test_a_config_equal_in_identity_but_spelled_otherwise_runs_the_program():
    """``requant_units=None`` (one per lane) and ``requant_units=lanes`` are one engine:
    the dataclasses differ, the identity does not, and the refusal listed every field
    with equal values on both sides (review V5)."""
    net, cfg, p = _one_step_program()
    assert cfg.requant_units is None
    spelled = dataclasses.replace(cfg, requant_units=cfg.lanes)
    assert spelled != cfg
    x = np.array([[100, -37, 5, 127, -128]])
    assert np.array_equal(run_program(p, spelled, x)[0], execute(net, x))
    # the sibling: one core bit flipped, on the same spelled config, must disagree
    cmem = p.cmem.copy()
    cmem[p.steps[0].c_base] ^= 1 << (cfg.core_bits - 2)
    assert not np.array_equal(run_program(p.with_words(cmem=cmem), spelled, x)[0], execute(net, x))
