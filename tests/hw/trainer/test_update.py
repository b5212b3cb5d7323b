"""The update path's units in Amaranth's simulator, equal to the golden trainer's functions.

Every equality (``np.array_equal``, never a tolerance) has a sibling that builds the unit
with a deliberate fault and must see the result differ.
"""

from __future__ import annotations

import gc
import random
import warnings

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.hdl import Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator
from ttforge.hw.trainer.update import BiasAlign, DeriveCore, UpdateUnit, Xorshift32Gen, _clamp_pow2
from ttforge.ir.rng import Xorshift32, xorshift32_step
from ttforge.ir.train import TrainConfig, align_bias, forward_core, round_update

from ttforge.errors import ConfigError


def run(dut, bench, clock=True):
    sim = Simulator(dut)
    if clock:
        sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


# ------------------------------------------------------------------------- xorshift32
def gen_words(seed, n, fault=None):
    """``n`` words drawn from the unit (with idle cycles between some draws); the state
    after them."""
    dut = Xorshift32Gen(fault=fault)
    words = []
    state = []

    async def bench(ctx):
        ctx.set(dut.load, 1)
        ctx.set(dut.load_value, seed)
        await ctx.tick()
        ctx.set(dut.load, 0)
        assert ctx.get(dut.state) == seed
        for i in range(n):
            if i % 97 == 5:                       # an idle cycle now and then
                ctx.set(dut.draw, 0)
                await ctx.tick()
            ctx.set(dut.draw, 1)
            words.append(ctx.get(dut.word))
            await ctx.tick()
        ctx.set(dut.draw, 0)
        state.append(ctx.get(dut.state))

    run(dut, bench)
    return np.array(words, dtype=np.uint32), state[0]


def test_xorshift32_gen_equals_golden():
    seed = 0x2545F491
    words, state = gen_words(seed, 10_000)
    gen = Xorshift32(seed)
    assert np.array_equal(words, gen.words(10_000))
    assert state == gen.state
    assert words[:3].tolist() == [xorshift32_step(seed), xorshift32_step(xorshift32_step(seed)),
                                  xorshift32_step(xorshift32_step(xorshift32_step(seed)))]
    w1, _ = gen_words(1, 3)
    assert w1.tolist() == [270369, 67634689, 2647435461]       # the spec's first words


def test_xorshift32_gen_fault_differs():
    words, state = gen_words(1, 200, fault="wrong_shift")
    gen = Xorshift32(1)
    assert not np.array_equal(words, gen.words(200))
    assert state != gen.state


# ------------------------------------------------------------------------- DeriveCore
def derive(master_bits, w_bits, values, fault=None):
    dut = DeriveCore(master_bits, w_bits, fault=fault)
    out = []

    async def bench(ctx):
        for x in values:
            ctx.set(dut.master, int(x))
            out.append(ctx.get(dut.core))

    run(dut, bench, clock=False)
    return np.array(out, dtype=np.int64)


def _master_values(mb, rng, n):
    lo, hi = -(1 << (mb - 1)), (1 << (mb - 1)) - 1
    if mb <= 12:
        return np.arange(lo, hi + 1, dtype=np.int64)            # exhaustive
    edges = [lo, lo + 1, hi, hi - 1, 0, 1, -1]
    x = mb - 8
    ties = [(j << x) + (1 << (x - 1)) + d for j in range(-130, 130) for d in (-1, 0, 1)]
    vals = edges + ties + [rng.randint(lo, hi) for _ in range(n)]
    return np.array([v for v in vals if lo <= v <= hi], dtype=np.int64)


@pytest.mark.parametrize("mb,wb", [(8, 4), (12, 4), (4, 4), (5, 2), (24, 8), (16, 8)])
def test_derive_core_equals_golden(mb, wb):
    vals = _master_values(mb, random.Random(mb * 31 + wb), 1500)
    got = derive(mb, wb, vals)
    assert np.array_equal(got, forward_core(TrainConfig(w_bits=wb, master_bits=mb), vals))


def test_derive_core_fault_differs():
    vals = np.arange(-128, 128, dtype=np.int64)
    got = derive(8, 4, vals, fault="floor")
    assert not np.array_equal(got, forward_core(TrainConfig(w_bits=4, master_bits=8), vals))


# -------------------------------------------------------------------------- BiasAlign
def align(bias_bits, acc_bits, cases, fault=None):
    """Stream ``(bias, shift, limit)`` one per cycle (a gap now and then); the outputs."""
    dut = BiasAlign(bias_bits, acc_bits, fault=fault)
    out = []

    async def bench(ctx):
        pending = list(cases)
        i = 0
        cycle = 0
        while len(out) < len(cases):
            if i < len(pending) and cycle % 53 != 7:
                b, s, lim = pending[i]
                ctx.set(dut.in_valid, 1)
                ctx.set(dut.bias, b)
                ctx.set(dut.shift, s)
                ctx.set(dut.limit, lim)
                i += 1
            else:
                ctx.set(dut.in_valid, 0)
            if ctx.get(dut.out_valid):
                out.append(ctx.get(dut.aligned))
            await ctx.tick()
            cycle += 1
            assert cycle < 3 * len(cases) + 100

    run(dut, bench)
    return out


def align_cases(bias_bits, acc_bits, rng):
    bmax = 1 << (bias_bits - 1)
    amax = (1 << (acc_bits - 1)) - 1
    limits = sorted(x for x in {0, 1, 5, bmax - 1, bmax, amax, amax >> 1, (1 << 31) - 1, 1 << 31,
                                rng.randint(1, amax), rng.randint(1, 1 << 20)} if x <= amax)
    cases = []
    for s in range(-64, 64):
        for lim in limits:
            biases = {-bmax, -bmax + 1, bmax - 1, 0, 1, -1, 3, -3}
            if s > 0:
                biases |= {(1 << (s - 1)) - 1, -(1 << (s - 1))} if s <= bias_bits - 1 else set()
            biases |= {rng.randint(-bmax, bmax - 1) for _ in range(3)}
            biases |= {rng.randint(-64, 64)}
            cases += [(b, s, lim) for b in sorted(biases) if -bmax <= b < bmax]
    return cases


def golden_align(cases):
    return [int(align_bias(np.array([b], dtype=np.int64), 0, s, lim)[0]) for b, s, lim in cases]


@pytest.mark.parametrize("bias_bits,acc_bits", [(24, 32), (32, 48), (8, 12)])
def test_bias_align_equals_golden(bias_bits, acc_bits):
    cases = align_cases(bias_bits, acc_bits, random.Random(bias_bits * 100 + acc_bits))
    got = align(bias_bits, acc_bits, cases)
    exp = golden_align(cases)
    assert np.array_equal(np.array(got, dtype=np.int64), np.array(exp, dtype=np.int64))


def align_exact(b, s, lim):
    """docs/arithmetic.md's bias alignment on Python integers, for any shift (the golden's
    ``int64`` stops at -64..63: ``1 << (s - 1)`` overflows at ``s = 64``)."""
    def clip(x):
        return max(-lim, min(lim, x))
    if s < 0:
        return clip(b << -s)
    return clip((b + (1 << (s - 1))) >> s if s else b)


def test_bias_align_whole_shift_range():
    # the port's whole signed(8) range, against the exact form (itself equal to the golden
    # on the golden's range)
    rng = random.Random(11)
    cases = align_cases(24, 48, rng)[::4]
    assert [align_exact(*c) for c in cases] == golden_align(cases)
    bmax = 1 << 23
    ext = [(b, s, lim) for s in (-128, -127, -100, -65, 64, 65, 100, 126, 127)
           for lim in (0, 1, 1000, (1 << 47) - 1, 1 << 40)
           for b in (-bmax, bmax - 1, 0, 1, -1, rng.randint(-bmax, bmax - 1))]
    assert align(24, 48, ext) == [align_exact(*c) for c in ext]


def test_bias_align_wide_left_shift_is_the_spec():
    # acc_bits 48: a bias 16..47 exponent steps above the accumulator is b << s, far
    # inside the ~2^47 limit (the golden and the engine once capped the shift at
    # 62 - bitlen(limit) = 15: 1 became 2^15 at any s >= 15)
    lim = (1 << 47) - 1 - 4 * 127 * (1 << 15)
    cases = [(b, s, lim) for s in (-15, -16, -20, -31, -40, -47, -48, -64, -100)
             for b in (1, -1, 3, -(1 << 31), (1 << 31) - 1)]
    exp = [align_exact(*c) for c in cases]
    assert exp[5] == 1 << 16 and exp[10] == 1 << 20
    assert golden_align(cases) == exp
    assert align(32, 48, cases) == exp


@pytest.mark.parametrize("fault", ["int64_cap", "bias_floor"])
def test_bias_align_fault_differs(fault):
    # the old int64 cap mattered only when bitlen(limit) > 31, i.e. a wide accumulator
    cases = [(b, s, lim) for s in (-40, -20, -16, 1, 2, 5) for lim in ((1 << 47) - 1, 1 << 46)
             for b in (1, -1, 3, 5, -7, 100)]
    got = align(32, 48, cases, fault=fault)
    assert not np.array_equal(np.array(got, dtype=np.int64), np.array(golden_align(cases)))


# ------------------------------------------------------------------------- UpdateUnit
@pytest.mark.parametrize("width,k", [(8, 0), (8, 3), (8, 6), (8, 7), (5, 4), (9, 2)])
def test_clamp_pow2_is_the_clamp(width, k):
    """``_clamp_pow2`` (the update's stage-4 clamp of d) is ``min(max(x, -2^k), 2^k)`` for
    every ``signed(width)`` value, including both bounds and the values next to them."""
    x = Signal(signed(width))
    y = Signal(signed(k + 2))
    m = Module()
    m.d.comb += y.eq(_clamp_pow2(x, k))
    got, want = [], []

    async def bench(ctx):
        for v in range(-(1 << (width - 1)), 1 << (width - 1)):
            ctx.set(x, v)
            got.append(ctx.get(y))
            want.append(min(max(v, -(1 << k)), 1 << k))

    run(m, bench, clock=False)
    assert got == want
    if k < width - 1:           # both bounds are reached (a narrower x is passed through)
        assert got.count(1 << k) > 1 and got.count(-(1 << k)) > 1


class Op:
    """One operation: a tensor (a region of the memory), its constants and its ``v``."""

    def __init__(self, s, stochastic, bits, base, v):
        self.s, self.stochastic, self.bits, self.base = s, stochastic, bits, base
        self.v = np.asarray(v, dtype=np.int64)


def simulate_update(dut, ops, mem0, seed, rng, gap=0.0, hold=False, late=False):
    """Stream the ops' elements through ``dut`` (a gap with probability ``gap``), a memory
    model answering ``rd_addr`` one cycle later (``late``: two) and recording writes
    (``hold``: two idle cycles presenting each op's shift before its first element). Returns the memory,
    the generator state, the words drawn and the ``(address, value, changed)`` of every
    write."""
    mem = dict(mem0)
    res = {}
    L = UpdateUnit.LATENCY
    elems = []              # (s, stochastic, bits, addr, v) or None for an idle cycle
    last_accept = {}        # region base -> cycle of its last element
    cycle = 0
    for op in ops:
        earliest = last_accept.get(op.base, -10**9) + L + 1   # no read while a write is in flight
        while cycle < earliest:
            elems.append(None)
            cycle += 1
        if hold:                 # held_shift: the shift two cycles before the first element
            elems += [op.s, op.s]
            cycle += 2
        for i, v in enumerate(op.v.tolist()):
            while rng.random() < gap:
                elems.append(None)
                cycle += 1
            elems.append((op.s, op.stochastic, op.bits, op.base + i, v))
            cycle += 1
        last_accept[op.base] = cycle - 1
    elems += [None] * (L + 2)

    async def bench(ctx):
        ctx.set(dut.rng_load, 1)
        ctx.set(dut.rng_load_value, seed)
        await ctx.tick()
        ctx.set(dut.rng_load, 0)
        drawn = 0
        changed = []
        pend = None                     # late: the word read at the previous edge
        for e in elems:
            if e is None or isinstance(e, int):
                ctx.set(dut.in_valid, 0)
                if e is not None:
                    ctx.set(dut.shift, e)
            else:
                s, st, b, a, v = e
                ctx.set(dut.in_valid, 1)
                ctx.set(dut.shift, s)
                ctx.set(dut.stochastic, st)
                ctx.set(dut.bits, b)
                ctx.set(dut.addr, a)
                ctx.set(dut.v, v)
            rd_en, rd_addr = ctx.get(dut.rd_en), ctx.get(dut.rd_addr)
            wr_en = ctx.get(dut.wr_en)
            if wr_en:
                wa, wd = ctx.get(dut.wr_addr), ctx.get(dut.wr_data)
                changed.append((wa, wd, ctx.get(dut.changed)))
            drawn += ctx.get(dut.drew)
            await ctx.tick()
            val = mem[rd_addr] if rd_en else None   # non-transparent: before this edge's write
            if late:
                if pend is not None:
                    ctx.set(dut.rd_data, pend)
                pend = val
            elif rd_en:
                ctx.set(dut.rd_data, val)
            if wr_en:
                mem[wa] = wd
        res.update(state=ctx.get(dut.rng_state), drawn=drawn, changed=changed)

    run(dut, bench)
    return mem, res["state"], res["drawn"], res["changed"]


def golden_wraps(bits, s):
    """Whether the golden ``round_update`` can overflow ``int64`` at ``(bits, s)``: for
    ``s <= 0`` it shifts ``clip(v, +-2^(bits+1))`` left by ``min(-s, 40)`` before the
    second clamp, which passes ``2^63`` when ``bits + 1 + min(-s, 40) >= 63`` (e.g. a
    24-bit bias and ``s <= -38``; a 32-bit one and ``s <= -30``)."""
    return s <= 0 and bits + 1 + min(-s, 40) >= 63


def golden_update(ops, mem0, seed, exact=False):
    """The memory, generator state, words drawn and ``(address, value, changed)`` per element
    after ``ops`` by the golden ``round_update`` (``exact=False``), or by the spec's
    formula on Python integers (``exact=True``, ``docs/arithmetic.md``; the same words),
    then the clamp."""
    mem = dict(mem0)
    gen = Xorshift32(seed)
    changed = []
    for op in ops:
        cfg = TrainConfig(rounding="stochastic" if op.stochastic else "nearest")
        if exact:
            words = gen.draw(op.v.shape).tolist() if op.stochastic else [0] * op.v.size
            d = np.array([spec_round(v, op.s, op.stochastic, w, op.bits)
                          for v, w in zip(op.v.tolist(), words)], dtype=np.int64)
        else:
            d, _ = round_update(op.v, op.s, cfg, gen, op.bits)
        hi = (1 << (op.bits - 1)) - 1
        addrs = range(op.base, op.base + op.v.size)
        w = np.array([mem[a] for a in addrs], dtype=np.int64)
        new = np.clip(w - d, -hi, hi)
        for a, x, old in zip(addrs, new.tolist(), w.tolist()):
            mem[a] = x
            changed.append((a, x, int(x != old)))
    return mem, gen.state, gen.drawn, changed


def spec_round(v, s, stochastic, word, b):
    """``round_s(v)`` of ``docs/arithmetic.md`` ("Update"), on Python integers (no wrap)."""
    if s <= 0:
        lim = 1 << (b + 1)
        return max(-lim, min(lim, max(-lim, min(lim, v)) << min(-s, 40)))
    if s > 32:
        v, s = v >> (s - 32), 32
    return (v + ((word & ((1 << s) - 1)) if stochastic else 1 << (s - 1))) >> s


def random_v(rng, acc_bits, s, n):
    amax = 1 << (acc_bits - 1)
    kind = rng.randrange(4)
    out = []
    for _ in range(n):
        k = kind if rng.random() < 0.7 else rng.randrange(4)
        if k == 0:                                 # the full range and its ends
            out.append(rng.choice([rng.randint(-amax, amax - 1), -amax, amax - 1]))
        elif k == 1:                               # around the rounding step 2^s
            m = 1 << max(0, min(s, acc_bits - 2))
            out.append(rng.randint(-4 * m, 4 * m - 1) if m < amax // 4 else rng.randint(-amax, amax - 1))
        elif k == 2:                               # small values and zeros
            out.append(rng.choice([0, 0, 1, -1, rng.randint(-40, 40)]))
        else:                                      # ties of round to nearest
            sh = min(max(s, 1), 32)
            out.append(max(-amax, min(amax - 1, (rng.randint(-50, 50) << sh) + (1 << (sh - 1)))))
    return out


def make_ops(rng, acc_bits, bits_choices, shifts, n_per_op, regions, wrap_region=False):
    """Ops over ``regions`` tensors (a tensor keeps its width); their initial memory. An op
    goes to a tensor where the golden cannot overflow, unless ``wrap_region``."""
    widths = [bits_choices[r % len(bits_choices)] for r in range(regions)]
    base = [r * 64 for r in range(regions)]
    mem0 = {}
    for r in range(regions):
        hi = (1 << (widths[r] - 1)) - 1
        for i in range(64):
            mem0[base[r] + i] = rng.choice([rng.randint(-hi, hi), hi, -hi, 0])
    ops = []
    for s in shifts:
        for st in (1, 0):
            ok = [r for r in range(regions) if wrap_region or not golden_wraps(widths[r], s)]
            if not ok:
                continue
            r = rng.choice(ok)
            n = rng.randint(1, n_per_op)
            ops.append(Op(s, st, widths[r], base[r], random_v(rng, acc_bits, s, n)))
    rng.shuffle(ops)
    return ops, mem0


def check_update(acc_bits, B, bits_choices, shifts, n_per_op, gap, seed, fault=None, regions=6,
                 exact=False, held=False, hold=None, late_read=False, late=None):
    """Random ops through the unit and through the golden (``exact``: the spec on Python
    integers). Returns ``(ops, memory got, memory expected, (state, drawn, writes) got,
    the same expected)``; the memories as arrays in address order."""
    rng = random.Random(seed)
    ops, mem0 = make_ops(rng, acc_bits, bits_choices, shifts, n_per_op, regions, wrap_region=exact)
    dut = UpdateUnit(acc_bits, B, ceil_addr(regions * 64), fault=fault, held_shift=held,
                     late_read=late_read)
    got = simulate_update(dut, ops, mem0, seed, rng, gap=gap, hold=held if hold is None else hold,
                          late=late_read if late is None else late)
    exp = golden_update(ops, mem0, seed, exact=exact)
    keys = sorted(mem0)
    return (ops, np.array([got[0][k] for k in keys]), np.array([exp[0][k] for k in keys]),
            got[1:], exp[1:])


def first_divergence(ops, got_writes, exp_writes):
    """The first write that differs, named by op, element, constants and values."""
    where = [(j, i) for j, op in enumerate(ops) for i in range(op.v.size)]
    for n, (g, e) in enumerate(zip(got_writes, exp_writes)):
        if g != e:
            j, i = where[n]
            op = ops[j]
            return (f"write {n}: op {j} (s={op.s}, stochastic={op.stochastic}, bits={op.bits}) "
                    f"element {i} (v={int(op.v[i])}): expected (addr, w', changed) {e}, got {g}")
    if len(got_writes) != len(exp_writes):
        return f"{len(got_writes)} writes, expected {len(exp_writes)}"
    return None


def ceil_addr(n):
    return max(1, (n - 1).bit_length())


@pytest.mark.parametrize("acc_bits,B,widths,gap", [
    (40, 24, (8, 24), 0.0), (40, 24, (8, 24), 0.3), (48, 32, (32, 16, 8), 0.1)])
def test_update_unit_equals_golden(acc_bits, B, widths, gap):
    # every s in -45..70, both roundings, the stored widths, back to back or with gaps
    ops, got, exp, (gs, gd, gw), (es, ed, ew) = check_update(
        acc_bits, B, widths, range(-45, 71), 20, gap, seed=0x1234567 + acc_bits + int(gap * 10))
    assert first_divergence(ops, gw, ew) is None, first_divergence(ops, gw, ew)
    assert np.array_equal(got, exp)
    assert (gs, gd) == (es, ed)
    assert ed > 900 and sum(c for _, _, c in ew) > 500


@pytest.mark.parametrize("hold", [True, False])
def test_update_unit_held_shift(hold):
    # held_shift (the engine's unit): equal to the golden when the shift is presented two
    # cycles before each operation; not when it changes with the operation's first element
    ops, got, exp, (gs, gd, gw), (es, ed, ew) = check_update(
        40, 24, (8, 24), range(-45, 71), 8, 0.0, seed=0x5eed, held=True, hold=hold)
    if hold:
        assert first_divergence(ops, gw, ew) is None, first_divergence(ops, gw, ew)
        assert np.array_equal(got, exp) and (gs, gd) == (es, ed)
    else:
        assert first_divergence(ops, gw, ew) is not None


@pytest.mark.parametrize("late", [True, False])
@pytest.mark.parametrize("gap", [0.0, 0.3])
def test_update_unit_late_read(late, gap):
    # late_read (the engine's unit, held shift too): equal to the golden when the old value
    # comes two cycles after the element; not when it comes one cycle after
    ops, got, exp, (gs, gd, gw), (es, ed, ew) = check_update(
        40, 24, (8, 24), range(-45, 71), 8, gap, seed=0x1a7e, held=True, late_read=True, late=late)
    if late:
        assert first_divergence(ops, gw, ew) is None, first_divergence(ops, gw, ew)
        assert np.array_equal(got, exp) and (gs, gd) == (es, ed)
    else:
        assert first_divergence(ops, gw, ew) is not None


def test_update_unit_small_widths():
    # a narrow accumulator (below the 33-bit sum) and every stored width 2..8
    ops, got, exp, (gs, gd, gw), (es, ed, ew) = check_update(
        12, 8, (2, 3, 4, 5, 6, 7, 8), list(range(-12, 16)) + [31, 32, 33, 40, 44, 45, 127, -128],
        10, 0.1, seed=99, regions=7)
    assert first_divergence(ops, gw, ew) is None, first_divergence(ops, gw, ew)
    assert np.array_equal(got, exp)
    assert (gs, gd) == (es, ed)


@pytest.mark.parametrize("acc_bits,B,widths", [(40, 24, (24, 8)), (48, 32, (32, 16))])
def test_update_unit_equals_spec_where_golden_wraps(acc_bits, B, widths):
    # s <= 0 down to -64 on the widest tensors, where the golden's int64 can overflow:
    # the unit follows the spec's formula (saturation, never wrap), checked on Python ints
    ops, got, exp, (gs, gd, gw), (es, ed, ew) = check_update(
        acc_bits, B, widths, list(range(-64, 1)) + [1, 5, 33, 70], 12, 0.1, seed=acc_bits * 7,
        exact=True)
    assert first_divergence(ops, gw, ew) is None, first_divergence(ops, gw, ew)
    assert np.array_equal(got, exp)
    assert (gs, gd) == (es, ed)
    assert any(golden_wraps(op.bits, op.s) for op in ops)


def test_spec_reference_equals_golden():
    # the Python-integer reference above is the golden wherever the golden cannot overflow
    rng = random.Random(3)
    for s in range(-45, 71):
        for b in (2, 8, 24, 32):
            if golden_wraps(b, s):
                continue
            for st in (0, 1):
                v = random_v(rng, 48, s, 30)
                gen = Xorshift32(s + 1000)
                cfg = TrainConfig(rounding="stochastic" if st else "nearest")
                d, words = round_update(np.array(v, dtype=np.int64), s, cfg, gen, b)
                ws = words.tolist() if st else [0] * len(v)
                assert d.tolist() == [spec_round(x, s, st, w, b) for x, w in zip(v, ws)]


def test_update_unit_equals_golden_where_golden_used_to_wrap():
    """The golden once wrapped int64 here (24-bit bias, s <= -38); it saturates now, as the
    unit and docs/arithmetic.md do."""
    ops = [Op(-38, 0, 24, 0, [(1 << 39) - 1, -(1 << 39), 1 << 30, 5, 0])]
    mem0 = {a: 0 for a in range(5)}
    got = simulate_update(UpdateUnit(40, 24, 3), ops, mem0, 1, random.Random(0))
    exp = golden_update(ops, mem0, 1)
    assert [got[0][a] for a in range(5)] == [exp[0][a] for a in range(5)]


@pytest.mark.parametrize("fault,shifts", [
    ("drop_word", range(1, 9)), ("sign", range(-2, 6)), ("round_tie", range(1, 9)),
    ("pre_shift", range(33, 45)),
])
def test_update_unit_fault_differs(fault, shifts):
    ops, got, exp, gm, em = check_update(40, 24, (8, 24), shifts, 12, 0.0, seed=7, fault=fault)
    assert first_divergence(ops, gm[2], em[2]) is not None
    assert not (np.array_equal(got, exp) and gm == em)


def test_update_unit_with_memory():
    """Wired to an ``amaranth.lib.memory.Memory`` (non-transparent read port)."""
    depth, B, ab = 16, 8, 16
    rng = random.Random(5)
    init = [rng.randint(-127, 127) for _ in range(depth)]
    vs = [rng.randint(-3000, 3000) for _ in range(depth)]

    class Top(wiring.Component):
        def __init__(self):
            self.upd = UpdateUnit(ab, B, 4)
            self.mem = Memory(shape=signed(B), depth=depth, init=init)
            super().__init__({"in_valid": wiring.In(1), "v": wiring.In(signed(ab)), "addr": wiring.In(4),
                              "seed": wiring.In(32), "seed_load": wiring.In(1)})

        def elaborate(self, platform):
            m = Module()
            m.submodules.upd, m.submodules.mem = u, mem = self.upd, self.mem
            rp, wp = mem.read_port(), mem.write_port()
            m.d.comb += [u.in_valid.eq(self.in_valid), u.v.eq(self.v), u.addr.eq(self.addr),
                         u.shift.eq(6), u.stochastic.eq(1), u.bits.eq(8),
                         u.rng_load.eq(self.seed_load), u.rng_load_value.eq(self.seed),
                         rp.addr.eq(u.rd_addr), rp.en.eq(u.rd_en), u.rd_data.eq(rp.data),
                         wp.addr.eq(u.wr_addr), wp.en.eq(u.wr_en), wp.data.eq(u.wr_data)]
            return m

    dut = Top()
    out = []

    async def bench(ctx):
        ctx.set(dut.seed_load, 1)
        ctx.set(dut.seed, 42)
        await ctx.tick()
        ctx.set(dut.seed_load, 0)
        for step in range(2):
            for a in range(depth):
                ctx.set(dut.in_valid, 1)
                ctx.set(dut.addr, a)
                ctx.set(dut.v, vs[a])
                await ctx.tick()
            ctx.set(dut.in_valid, 0)
            await ctx.tick().repeat(UpdateUnit.LATENCY + 1)
        out.extend(ctx.get(dut.mem.data[a]) for a in range(depth))

    run(dut, bench)
    got = np.array(out, dtype=np.int64)
    gen = Xorshift32(42)
    w = np.array(init, dtype=np.int64)
    for _ in range(2):
        d, _ = round_update(np.array(vs, dtype=np.int64), 6, TrainConfig(), gen, 8)
        w = np.clip(w - d, -127, 127)
    assert np.array_equal(got, w)


@pytest.mark.parametrize("unit", [
    lambda: Xorshift32Gen(init=1), lambda: DeriveCore(24, 8), lambda: DeriveCore(2, 2),
    lambda: BiasAlign(32, 63), lambda: BiasAlign(2, 8), lambda: UpdateUnit(63, 32, 32),
    lambda: UpdateUnit(2, 2, 1)])
def test_units_elaborate_at_extreme_widths(unit):
    rtlil.convert(unit())


def test_faults_refused():
    with warnings.catch_warnings():        # the refused units are never elaborated
        warnings.simplefilter("ignore")
        with pytest.raises(ConfigError, match="UpdateUnit"):
            UpdateUnit(32, 24, 8, fault="floor")
        with pytest.raises(ConfigError, match="w_bits"):
            DeriveCore(4, 8)
        gc.collect()
