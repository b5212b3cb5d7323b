"""Engine datapath blocks in Amaranth's simulator, against Python references, exactly."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from ttforge.errors import ConfigError
from ttforge.hw.blocks import AddressGen, MacLanes, Requant, RequantDecode
from ttforge.ir.arith import rshift_round, saturate


def run(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


# ---------------------------------------------------------------------- requantization
def ref_requant(acc, bias, bias_en, shift, sat_bits, relu, zero):
    """Python reference through ttforge.ir.arith (exact Python ints where int64 can't be)."""
    v = acc + (bias if bias_en else 0)
    if -62 + max(v.bit_length(), 1) < shift < 62 and abs(v) < 2**55:
        r = int(rshift_round(np.array([v]), shift)[0])
    else:  # beyond int64: the same formula on Python ints
        r = (v + (1 << (shift - 1))) >> shift if shift > 0 else v << -shift
    y = int(saturate(np.array([min(max(r, -2**62), 2**62)]), sat_bits)[0])
    sat = y != r
    if relu:
        y = max(y, 0)
    if zero:
        y = 0
    return y, sat


class RequantPair(wiring.Component):
    """Decode + one lane, as the engine wires them."""

    def __init__(self, hold_consts=False, late_sat=False, **w):
        self.dec = RequantDecode(**w)
        self.rq = Requant(hold_consts=hold_consts, late_sat=late_sat, **w)
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.dec = self.dec
        m.submodules.rq = self.rq
        m.d.comb += [self.rq.shamt.eq(self.dec.shamt), self.rq.round.eq(self.dec.round),
                     self.rq.hi.eq(self.dec.hi), self.rq.lo.eq(self.dec.lo)]
        return m


@pytest.mark.parametrize("hold_consts,late_sat", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("acc_bits,bias_bits,inter_bits", [(24, 16, 8), (20, 24, 16), (9, 4, 4)])
def test_requant_equals_arith(acc_bits, bias_bits, inter_bits, hold_consts, late_sat):
    """(hold_consts: the constants are set a cycle before the first value, as the engine
    sets them; late_sat: the saturation check a stage later, as the training engine's)"""
    rng = random.Random(acc_bits * 100 + inter_bits)
    dut = RequantPair(acc_bits=acc_bits, bias_bits=bias_bits, inter_bits=inter_bits,
                      hold_consts=hold_consts, late_sat=late_sat)
    amax, bmax = 2 ** (acc_bits - 1), 2 ** (bias_bits - 1)
    vw = max(acc_bits, bias_bits) + 1
    cases = []
    # per "step" constants; several values per step, including the extremes
    for _ in range(40):
        shift = rng.choice([rng.randint(-4, 12), rng.randint(-128, 127), 0, 1, -1, vw, vw - 1,
                            vw + 1, -inter_bits, -inter_bits - 1, 127, -128])
        sat_bits = rng.randint(2, inter_bits)
        relu = rng.random() < 0.5
        vals = []
        for _ in range(6):
            acc = rng.choice([rng.randint(-amax, amax - 1), -amax, amax - 1, 0,
                              rng.randint(-min(300, amax), min(300, amax - 1))])
            bias = rng.choice([rng.randint(-bmax, bmax - 1), -bmax, bmax - 1, 0])
            vals.append((acc, bias, rng.random() < 0.6, rng.random() < 0.15))
        cases.append((shift, sat_bits, relu, vals))
    seen = {"sat": 0, "neg_shift": 0}

    async def bench(ctx):
        rq, dec = dut.rq, dut.dec
        for shift, sat_bits, relu, vals in cases:
            ctx.set(dec.shift, shift)
            ctx.set(dec.sat_bits, sat_bits)
            ctx.set(rq.relu, relu)
            assert ctx.get(dec.bad_sat) == 0
            for acc, bias, ben, zero in vals:
                ey, esat = ref_requant(acc, bias, ben, shift, sat_bits, relu, zero)
                ctx.set(rq.in_valid, 1)
                ctx.set(rq.acc, acc)
                ctx.set(rq.bias, bias)
                ctx.set(rq.bias_en, ben)
                ctx.set(rq.zero, zero)
                await ctx.tick()
                ctx.set(rq.in_valid, 0)
                await ctx.tick().repeat(Requant.LATENCY - 1)
                assert ctx.get(rq.out_valid) == 1
                y, sat = ctx.get(rq.out), ctx.get(rq.sat)
                assert (y, sat) == (ey, esat), (acc, bias, ben, shift, sat_bits, relu, zero)
                seen["sat"] += sat
                seen["neg_shift"] += shift < 0

    run(dut, bench)
    assert seen["sat"] > 10 and seen["neg_shift"] > 10


def _back_to_back(dut, shift, sat_bits, vals):
    """``(out, sat)`` of each ``(acc, bias, bias_en)`` in ``vals`` fed one a cycle."""
    got = []

    async def bench(ctx):
        rq, dec = dut.rq, dut.dec
        ctx.set(dec.shift, shift)
        ctx.set(dec.sat_bits, sat_bits)
        for t in range(len(vals) + Requant.LATENCY):
            ctx.set(rq.in_valid, int(t < len(vals)))
            if t < len(vals):
                ctx.set(rq.acc, vals[t][0])
                ctx.set(rq.bias, vals[t][1])
                ctx.set(rq.bias_en, vals[t][2])
            await ctx.tick()
            if ctx.get(rq.out_valid):
                got.append((ctx.get(rq.out), ctx.get(rq.sat)))

    run(dut, bench)
    return got


@pytest.mark.parametrize("hold_consts", [False, True])
def test_requant_pipelined_back_to_back(hold_consts):
    """One value per cycle, outputs exactly LATENCY cycles later, in order."""
    rng = random.Random(5)
    w = dict(acc_bits=20, bias_bits=12, inter_bits=8)
    dut = RequantPair(hold_consts=hold_consts, **w)
    shift, sat_bits = 6, 8
    vals = [(rng.randint(-2**19, 2**19 - 1), rng.randint(-2**11, 2**11 - 1), 1) for _ in range(50)]
    exp = [ref_requant(a, b, True, shift, sat_bits, False, False)[0] for a, b, _ in vals]
    assert [y for y, _ in _back_to_back(dut, shift, sat_bits, vals)] == exp


@pytest.mark.parametrize("late_sat", [False, True])
def test_requant_fit_travels_with_its_value(late_sat):
    """Back to back, values whose shifted ``u`` does not fit ``T`` bits but whose window
    is 0 (only the fit says they saturate) between values that fit: a fit decision one
    stage off its value (``late_sat`` reading the next value's) gets both wrong."""
    w = dict(acc_bits=20, bias_bits=12, inter_bits=8)
    dut = RequantPair(late_sat=late_sat, **w)
    shift, sat_bits = 6, 8               # u = v >> 6 on T = 10 bits: 2^10, 2^11, 2^12 window 0
    accs = [v for k in range(12) for v in ((-1) ** k * (65536 << (k % 3)), 64 * (k % 5 + 1))]
    exp = [ref_requant(a, 0, False, shift, sat_bits, False, False) for a in accs]
    assert sum(s for _, s in exp) == len(accs) // 2
    assert _back_to_back(dut, shift, sat_bits, [(a, 0, 0) for a in accs]) == exp


def test_requant_decode_flags_bad_sat_bits():
    dut = RequantDecode(acc_bits=16, bias_bits=16, inter_bits=8)

    async def bench(ctx):
        for sb in range(0, 12):
            ctx.set(dut.sat_bits, sb)
            await ctx.delay(1e-9)
            assert ctx.get(dut.bad_sat) == (not 2 <= sb <= 8)

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("acc_bits,bias_bits,inter_bits", [(48, 48, 8), (24, 16, 8), (9, 4, 4),
                                                        (20, 24, 16)])
def _decode_mismatches(flip: int = 0, **w):
    """Every SHIFT through the pipelined and the combinational decode: the shifts whose
    pipelined shamt and round, a cycle later (shamt XOR ``flip``: a corrupted result),
    differ from the combinational ones; and the shamt values seen."""
    comb, pipe = RequantDecode(**w), RequantDecode(pipelined=True, **w)
    top = Module()
    top.submodules.comb, top.submodules.pipe = comb, pipe
    top.d.comb += pipe.shift.eq(comb.shift)
    bad, seen = [], []

    async def bench(ctx):
        for s in range(-128, 128):
            ctx.set(comb.shift, s)
            await ctx.delay(1e-9)
            want = (ctx.get(comb.shamt), ctx.get(comb.round))
            await ctx.tick()
            got = (ctx.get(pipe.shamt) ^ flip, ctx.get(pipe.round))
            if got != want:
                bad.append((s, got, want))
            seen.append(want[0])

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return bad, seen


@pytest.mark.parametrize("acc_bits,bias_bits,inter_bits", [(48, 48, 8), (24, 16, 8), (9, 4, 4),
                                                        (20, 24, 16)])
def test_requant_decode_pipelined_equals_combinational(acc_bits, bias_bits, inter_bits):
    """Every SHIFT: the pipelined decode's shamt and round, a cycle after the shift is
    set, equal the combinational decode's (which test_requant_equals_arith proves)."""
    bad, seen = _decode_mismatches(acc_bits=acc_bits, bias_bits=bias_bits, inter_bits=inter_bits)
    assert not bad, f"(shift, pipelined, combinational): {bad[:3]}"
    assert len(set(seen)) > 3 + inter_bits          # both clamps and the sums are exercised


def test_requant_decode_comparison_sees_one_flipped_bit():
    """Sibling: with one bit of the pipelined shamt flipped, every SHIFT disagrees."""
    bad, _ = _decode_mismatches(flip=1, acc_bits=24, bias_bits=16, inter_bits=8)
    assert len(bad) == 256


def test_requant_one_bit_fault_is_caught():
    """Sibling: a reference with one bit flipped disagrees (the comparison can fail)."""
    y, _ = ref_requant(1000, 0, False, 3, 8, False, False)
    assert y == 125
    assert (y ^ 1) != ref_requant(1000, 0, False, 3, 8, False, False)[0]


# ---------------------------------------------------------------------- MAC lanes
@pytest.mark.parametrize("lanes", [1, 4, 16])
def test_mac_lanes_sum_blocks(lanes):
    rng = random.Random(lanes)
    dut = MacLanes(lanes=lanes, x_bits=8, c_bits=6, acc_bits=24, tag_width=8)
    blocks = []
    for b in range(12):
        K = rng.randint(1, 6)
        xs = [[rng.randint(-128, 127) for _ in range(lanes)] for _ in range(K)]
        cs = [[rng.randint(-31, 31) for _ in range(lanes)] for _ in range(K)]
        blocks.append((K, xs, cs))
    expect = [[sum(xs[k][l] * cs[k][l] for k in range(K)) for l in range(lanes)]
              for K, xs, cs in blocks]

    async def bench(ctx):
        feed = []
        for bi, (K, xs, cs) in enumerate(blocks):
            for k in range(K):
                feed.append((k == 0, k == K - 1, bi, xs[k], cs[k]))
        got, tags = [], []
        fi = 0
        for t in range(len(feed) * 3 + 20):
            stall = rng.random() < 0.3
            gap = rng.random() < 0.2
            ctx.set(dut.en, not stall)
            if fi < len(feed) and not gap:
                first, last, tag, x, c = feed[fi]
                ctx.set(dut.in_valid, 1)
                ctx.set(dut.in_first, first)
                ctx.set(dut.in_last, last)
                ctx.set(dut.in_tag, tag)
                for l in range(lanes):
                    ctx.set(dut.x[l], x[l])
                    ctx.set(dut.c[l], c[l])
            else:
                ctx.set(dut.in_valid, 0)
            if ctx.get(dut.res_valid) and not stall:
                got.append([ctx.get(dut.res[l]) for l in range(lanes)])
                tags.append(ctx.get(dut.res_tag))
            if not stall and fi < len(feed) and not gap:
                fi += 1
            await ctx.tick()
        assert tags == list(range(len(blocks)))
        assert got == expect

    run(dut, bench)


# ---------------------------------------------------------------------- address generator
def ref_addresses(bounds, bases, strides, aw):
    """Nested loops; every address saturates at 2**aw."""
    out = []
    for idx in itertools.product(*[range(n) for n in bounds]):
        row = {}
        for name, base in bases.items():
            s = strides[name]
            row[name] = min(base + sum(i * st for i, st in zip(idx, s)), 2**aw)
        row["first"] = idx[3] == 0
        row["last"] = idx[3] == bounds[3] - 1
        row["slab"] = min(bases["o"] + (idx[0] + 1) * strides["o"][0], 2**aw)
        out.append(row)
    return out


def _agen_case(rng, aw, big=False):
    bounds = [rng.randint(1, 4) for _ in range(4)]
    lim = 2**aw if big else 2 ** (aw - 3)
    bases = {n: rng.randint(0, lim) for n in "xcob"}
    strides = {n: [rng.choice([0, 1, rng.randint(0, lim)]) for _ in range(4 if n in "xc" else 3)]
               for n in "xcob"}
    return bounds, bases, strides


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_address_generator_equals_nested_loops(seed):
    rng = random.Random(seed)
    aw = 10
    dut = AddressGen(bound_width=4, addr_width=aw, next_streams=("x", "c", "o"))
    cases = [_agen_case(rng, aw, big=(i % 3 == 2)) for i in range(6)]
    ahead = {"equal": 0, "moved": 0, "lvl": 0}   # <n>_addr_next against the next <n>_addr
    cases.append(([3, 2, 2, 5], {"x": 0, "c": 0, "o": 0, "b": 4}, {"x": [40, 0, 4, 8],
                  "c": [0, 5, 0, 1], "o": [24, 8, 4], "b": [24, 8, 4]}))  # a mode-0 step

    async def bench(ctx):
        for bounds, bases, strides in cases:
            ref = ref_addresses(bounds, bases, strides, aw)
            for j in range(4):
                ctx.set(dut.bound_m1[j], bounds[j] - 1)
            for n in "xcob":
                ctx.set(getattr(dut, f"{n}_base"), bases[n])
                for j, s in enumerate(strides[n]):
                    ctx.set(getattr(dut, f"{n}_stride")[j], min(s, 2**aw))
            ctx.set(dut.start, 1)

            def next_of(n):
                """<n>_addr_next, checked to be the one candidate its one-hot select names."""
                sel = ctx.get(getattr(dut, f"{n}_next_sel"))
                assert sel and not sel & (sel - 1), (n, bin(sel))
                cand = ctx.get(getattr(dut, f"{n}_next_cand")[sel.bit_length() - 1])
                nxt = ctx.get(getattr(dut, f"{n}_addr_next"))
                assert cand == nxt, (n, cand, nxt)
                return nxt

            def check_lvl_valid(en):
                """lvl_valid: one-hot, or 0 when no loop would advance; with en high, the
                loop whose candidate the generator chooses (base at start, held if none)."""
                lv, sel = ctx.get(dut.lvl_valid), ctx.get(dut.x_next_sel)
                valid, start = ctx.get(dut.valid), ctx.get(dut.start)
                assert not lv & (lv - 1), bin(lv)
                assert bool(lv) == bool(valid and not ctx.get(dut.final)), (bin(lv), valid)
                if en and valid and not start:
                    # candidates: base, loops 3, 2, 1, 0, held
                    want = 1 << (1 + (3, 2, 1, 0).index(lv.bit_length() - 1)) if lv else 1 << 5
                    assert sel == want, (bin(sel), bin(lv))
                    ahead["lvl"] += bool(lv)

            def check_ahead(nxt):
                for n, v in nxt.items():
                    now = ctx.get(getattr(dut, f"{n}_addr"))
                    assert now == v, (n, now, v)
                    ahead["equal"] += 1
                    ahead["moved"] += v != prev[n]

            prev = {n: ctx.get(getattr(dut, f"{n}_addr")) for n in "xco"}
            nxt = {n: next_of(n) for n in "xco"}
            await ctx.tick()
            check_ahead(nxt)
            ctx.set(dut.start, 0)
            got = []
            for _ in range(len(ref) * 3 + 5):
                en = rng.random() < 0.7
                ctx.set(dut.en, en)
                check_lvl_valid(en)
                if ctx.get(dut.valid) and en:
                    row = {n: ctx.get(getattr(dut, f"{n}_addr")) for n in "xcob"}
                    row["first"] = bool(ctx.get(dut.first))
                    row["last"] = bool(ctx.get(dut.last))
                    row["slab"] = ctx.get(dut.o_slab_end)
                    got.append(row)
                prev = {n: ctx.get(getattr(dut, f"{n}_addr")) for n in "xco"}
                nxt = {n: next_of(n) for n in "xco"}
                await ctx.tick()
                check_ahead(nxt)
                if not ctx.get(dut.valid):
                    break
            assert ctx.get(dut.valid) == 0
            assert got == ref

    run(dut, bench)
    # the check compared values that change (not only held ones)
    assert ahead["moved"] > 50 and ahead["equal"] > ahead["moved"] and ahead["lvl"] > 50


def test_address_generator_next_names_its_streams():
    with pytest.raises(ConfigError, match="next_streams"):
        AddressGen(bound_width=4, addr_width=8, next_streams=("q",))


def test_address_generator_catches_a_wrong_stride():
    """Sibling: a reference with one stride off by one disagrees with the hardware."""
    bounds, bases, strides = [2, 2, 2, 2], dict(x=0, c=0, o=0, b=0), dict(
        x=[8, 4, 2, 1], c=[8, 4, 2, 1], o=[4, 2, 1], b=[4, 2, 1])
    good = ref_addresses(bounds, bases, strides, 10)
    strides["x"][2] ^= 1
    assert ref_addresses(bounds, bases, strides, 10) != good


@pytest.mark.parametrize("late_sat", [False, True])
def test_requant_exhaustive_small_widths(late_sat):
    """Every accumulator value of a 7-bit accumulator (+ a few biases) at every shift in
    -6..9, every SAT_BITS, both ReLU settings, pipelined one value per cycle (and with
    the saturation check a stage later, ``late_sat``)."""
    w = dict(acc_bits=7, bias_bits=3, inter_bits=4)
    dut = RequantPair(late_sat=late_sat, **w)
    accs = list(range(-64, 64))
    groups = [(s, sb, relu, bias) for s in range(-6, 10) for sb in (2, 3, 4)
              for relu in (False, True) for bias in (0, -4)]

    async def bench(ctx):
        rq, dec = dut.rq, dut.dec
        bad = []
        for shift, sb, relu, bias in groups:
            ctx.set(dec.shift, shift)
            ctx.set(dec.sat_bits, sb)
            ctx.set(rq.relu, relu)
            ctx.set(rq.bias, bias)
            ctx.set(rq.bias_en, 1)
            outs = []
            for t in range(len(accs) + Requant.LATENCY):
                if t < len(accs):
                    ctx.set(rq.in_valid, 1)
                    ctx.set(rq.acc, accs[t])
                else:
                    ctx.set(rq.in_valid, 0)
                _, _, ov, y, sat = await ctx.tick().sample(rq.out_valid, rq.out, rq.sat)
                if ov:
                    outs.append((y, sat))
            exp = [ref_requant(a, bias, True, shift, sb, relu, False) for a in accs]
            if outs != exp:
                bad.append((shift, sb, relu, bias))
        assert not bad, bad[:5]

    run(dut, bench)


# ---------------------------------------------------------------------- one-hot selects
def _onehot_select_outputs(n, width, pick):
    """Every (index, word values) case of ``onehot_select(items, decode_onehot(idx, n))``,
    with ``pick(onehot)`` choosing the one-hot fed to the select."""
    from amaranth.hdl import Signal, signed

    from ttforge.hw.blocks import decode_onehot, onehot_select

    m = Module()
    idx = Signal(range(n + 1))
    items = [Signal(signed(width), name=f"w{i}") for i in range(n)]
    out = Signal(signed(width))
    m.d.comb += out.eq(onehot_select(items, pick(decode_onehot(idx, n))))
    rng = random.Random(n)
    vals = [rng.randrange(-2**(width - 1), 2**(width - 1)) for _ in range(n)]
    got = []

    async def bench(ctx):
        for i, s in enumerate(items):
            ctx.set(s, vals[i])
        for k in range(n + 1):
            ctx.set(idx, k)
            got.append(ctx.get(out))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    return vals, got


@pytest.mark.parametrize("n", [1, 2, 5, 64])
def test_onehot_select_equals_indexing(n):
    vals, got = _onehot_select_outputs(n, 32, lambda oh: oh)
    assert got == vals + [0]          # an index past the items selects nothing


def test_onehot_select_with_a_shifted_onehot_differs():
    # the sibling that must fail: the one-hot one lane off selects other words
    from amaranth.hdl import Cat
    vals, got = _onehot_select_outputs(8, 16, lambda oh: Cat(oh[1:], oh[0]))
    assert got != vals + [0]


# ---------------------------------------------------------------------- ge_const
@pytest.mark.parametrize("n", [1, 2, 3, 6])
def test_ge_const_equals_the_comparison(n):
    """ge_const's AND-OR (the iCE40 form of a compare with a constant) is ``>=`` for every
    value and every constant, in range or not; the ECP5 form is the comparison itself."""
    from amaranth.hdl import Signal
    from ttforge.hw.blocks import ge_const
    from ttforge.hw.target import ECP5, ICE40
    from ttforge.hw.blocks import lut_compares

    assert lut_compares(None) and lut_compares(ICE40) and not lut_compares(ECP5)
    x = Signal(n)
    ks = list(range(-2, (1 << n) + 3))
    outs = [Signal(name=f"ge{i}") for i in range(len(ks))]
    m = Module()
    m.d.comb += [o.eq(ge_const(x, k)) for o, k in zip(outs, ks)]
    seen = []

    async def bench(ctx):
        for v in range(1 << n):
            ctx.set(x, v)
            seen.append([ctx.get(o) for o in outs])

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert seen == [[int(v >= k) for k in ks] for v in range(1 << n)]


def test_ge_const_corrupted_constant_fails():
    """The sibling that must fail: the AND-OR of k + 1 differs from ``>= k`` (at k)."""
    from amaranth.hdl import Signal
    from ttforge.hw.blocks import ge_const

    x = Signal(4)
    out = Signal()
    m = Module()
    m.d.comb += out.eq(ge_const(x, 6))
    got = []

    async def bench(ctx):
        for v in range(16):
            ctx.set(x, v)
            got.append(ctx.get(out))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert got == [int(v >= 6) for v in range(16)]
    assert got != [int(v >= 7) for v in range(16)]
