"""AXI4-Stream adapters: packing, sign extension, tlast, partial last beats, back-pressure."""

from __future__ import annotations

import random

import pytest
from amaranth.sim import Simulator

from ttforge.hw.axis import AXISToElements, ElementsToAXIS, lane_bits


def _pack(elems, E, W):
    """Reference packing: element j of a beat in lane j, two's complement in W bits."""
    beats = []
    for i in range(0, len(elems), E):
        chunk = elems[i:i + E]
        word = 0
        for j, v in enumerate(chunk):
            word |= (v & ((1 << W) - 1)) << (j * W)
        beats.append((word, i + E >= len(elems)))
    return beats


def _rand_vec(rng, n, bits):
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return [rng.randint(lo, hi) for _ in range(n)]


def _stream_through(E, A, *, fault=None, ready_p=0.7, pause_p=0.3):
    """Vectors of several lengths through ``AXISToElements`` with random ``tvalid``
    pauses and element back-pressure: (elements received, elements expected)."""
    rng = random.Random(E * 100 + A)
    dut = AXISToElements(stream_elems=E, act_bits=A, count_bits=8, fault=fault)
    W = lane_bits(A)
    lengths = [1, E, E + 1, 2 * E, 3 * E - 1 if E > 1 else 3, 7]
    vectors = [_rand_vec(rng, n, A) for n in lengths]
    got = []

    async def source(ctx):
        for vec in vectors:
            ctx.set(dut.count, len(vec))
            for word, last in _pack(vec, E, W):
                # garbage in the upper lane bits and in unused lanes must be ignored
                junk = rng.getrandbits(E * W)
                mask = 0
                for j in range(E):
                    mask |= ((1 << A) - 1) << (j * W)
                word = (word & mask) | (junk & ~mask)
                while rng.random() < pause_p:
                    await ctx.tick()
                ctx.set(dut.s.tdata, word)
                ctx.set(dut.s.tlast, last)
                ctx.set(dut.s.tvalid, 1)
                await ctx.tick().until(dut.s.tready)
                ctx.set(dut.s.tvalid, 0)
            # count is held until the last beat of the vector has been taken in
            await ctx.tick().repeat(2 * E + 4)

    async def sink(ctx):
        total = sum(len(v) for v in vectors)
        while len(got) < total:
            ready = rng.random() < ready_p
            ctx.set(dut.out.ready, ready)
            _, _, valid, data, last = await ctx.tick().sample(
                dut.out.valid, dut.out.p.data, dut.out.p.last)
            if valid and ready:
                got.append((data, last))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(source)
    sim.add_testbench(sink, background=True)
    sim.run_until(1e-2)
    expected = [(v, i == len(vec) - 1) for vec in vectors for i, v in enumerate(vec)]
    return [(d, bool(l)) for d, l in got], expected


@pytest.mark.parametrize("E,A", [(1, 8), (4, 8), (3, 5), (2, 12), (8, 4)])
def test_axis_to_elements(E, A):
    got, expected = _stream_through(E, A)
    assert got == expected


@pytest.mark.parametrize("E,A", [(1, 8), (4, 8)])
def test_axis_to_elements_heavy_backpressure(E, A):
    """Mostly-stalled element side and a source that never pauses: the skid register
    fills and empties often; every beat arrives once, in order."""
    got, expected = _stream_through(E, A, ready_p=0.25, pause_p=0.0)
    assert got == expected


@pytest.mark.parametrize("E,A", [(1, 8), (4, 8)])
def test_axis_to_elements_skid_drop_fault_loses_a_beat(E, A):
    """Sibling: a skid register that never fills loses a beat under back-pressure."""
    got, expected = _stream_through(E, A, fault="skid_drop", ready_p=0.25, pause_p=0.0)
    assert got != expected


def test_axis_to_elements_tready_is_registered():
    """``tready`` does not follow the element side's ``ready`` or ``open`` within a
    cycle (it comes from flops): changing them between clock edges leaves it alone."""
    E, A = 2, 8
    dut = AXISToElements(stream_elems=E, act_bits=A, count_bits=8)
    seen = []

    async def tb(ctx):
        ctx.set(dut.count, 6)
        ctx.set(dut.s.tvalid, 1)
        rng = random.Random(5)
        for _ in range(60):
            ctx.set(dut.s.tdata, rng.getrandbits(E * 8))
            ctx.set(dut.s.tlast, rng.random() < 0.3)
            before = ctx.get(dut.s.tready)
            for ready, opn in ((0, 0), (1, 1), (0, 1), (1, 0)):
                ctx.set(dut.out.ready, ready)
                ctx.set(dut.open, opn)
                assert ctx.get(dut.s.tready) == before
            ctx.set(dut.out.ready, rng.random() < 0.4)
            ctx.set(dut.open, rng.random() < 0.8)
            seen.append(before)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert 0 in seen and 1 in seen


def test_axis_to_elements_open_closes_tready_from_the_next_cycle():
    """``open`` low: ``tready`` is low from the next cycle on; a beat taken in the
    cycle ``open`` fell is held, and leaves once the element side takes it."""
    E, A = 1, 8
    dut = AXISToElements(stream_elems=E, act_bits=A, count_bits=8)

    async def tb(ctx):
        ctx.set(dut.count, 3)
        ctx.set(dut.out.ready, 0)
        await ctx.tick()
        assert ctx.get(dut.s.tready)            # open (init 1) registered after reset
        ctx.set(dut.s.tvalid, 1)
        ctx.set(dut.s.tdata, 7)
        ctx.set(dut.open, 0)
        assert ctx.get(dut.s.tready)            # still high in the cycle open falls
        await ctx.tick()                        # beat 7 taken
        ctx.set(dut.s.tdata, 9)
        for _ in range(5):
            assert not ctx.get(dut.s.tready)
            await ctx.tick()
        assert ctx.get(dut.out.valid) and ctx.get(dut.out.p.data) == 7
        ctx.set(dut.out.ready, 1)
        await ctx.tick()
        assert not ctx.get(dut.out.valid)       # beat 9 was never taken
        ctx.set(dut.open, 1)
        await ctx.tick()
        assert ctx.get(dut.s.tready)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()


def test_axis_to_elements_full_rate():
    """With tvalid and ready held high, one element leaves every cycle (no bubbles)."""
    E, A = 4, 8
    dut = AXISToElements(stream_elems=E, act_bits=A, count_bits=8)
    n = 16
    vec = list(range(-8, 8))
    beats = _pack(vec, E, 8)
    cycles_with_data = []

    async def tb(ctx):
        ctx.set(dut.count, n)
        ctx.set(dut.out.ready, 1)
        bi = 0
        for cyc in range(40):
            if bi < len(beats):
                ctx.set(dut.s.tdata, beats[bi][0])
                ctx.set(dut.s.tlast, beats[bi][1])
                ctx.set(dut.s.tvalid, 1)
            else:
                ctx.set(dut.s.tvalid, 0)
            _, _, tready, valid, data = await ctx.tick().sample(
                dut.s.tready, dut.out.valid, dut.out.p.data)
            if bi < len(beats) and tready:
                bi += 1
            if valid:
                cycles_with_data.append((cyc, data))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert [d for _, d in cycles_with_data] == vec
    first = cycles_with_data[0][0]
    assert [c for c, _ in cycles_with_data] == list(range(first, first + n))


def test_axis_to_elements_early_and_late_tlast_pass_through():
    """A wrong tlast is not hidden: early tlast marks the beat's last lane, a missing
    tlast leaves `last` clear; the adapter then resynchronises on the next tlast."""
    E, A = 2, 8
    dut = AXISToElements(stream_elems=E, act_bits=A, count_bits=8)
    got = []
    # count 5, but: beat [1,2] tlast=1 (early), then [3,4],[5,6],[7,8] tlast=0, [9,10] tlast=1
    beats = [((2 << 8) | 1, 1), ((4 << 8) | 3, 0), ((6 << 8) | 5, 0), ((8 << 8) | 7, 0),
             ((10 << 8) | 9, 1), ((12 << 8) | 11, 0), ((14 << 8) | 13, 0), (15, 1)]

    async def tb(ctx):
        ctx.set(dut.count, 5)
        ctx.set(dut.out.ready, 1)
        for word, last in beats:
            ctx.set(dut.s.tdata, word)
            ctx.set(dut.s.tlast, last)
            ctx.set(dut.s.tvalid, 1)
            await ctx.tick().until(dut.s.tready)
        ctx.set(dut.s.tvalid, 0)

    async def sink(ctx):
        while len(got) < 14:
            _, _, valid, data, last = await ctx.tick().sample(
                dut.out.valid, dut.out.p.data, dut.out.p.last)
            if valid:
                got.append((data, int(last)))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.add_testbench(sink)
    sim.run_until(1e-3)
    assert got[:2] == [(1, 0), (2, 1)]                    # early tlast, passed through
    # late tlast: 6 elements without `last`, then the tlast beat gives one element (the
    # vector is already past IN_COUNT) marked last
    assert got[2:9] == [(3, 0), (4, 0), (5, 0), (6, 0), (7, 0), (8, 0), (9, 1)]
    assert got[9:] == [(11, 0), (12, 0), (13, 0), (14, 0), (15, 1)]   # back in step


@pytest.mark.parametrize("E,A", [(1, 8), (4, 8), (3, 5), (2, 12), (8, 4)])
def test_elements_to_axis(E, A):
    rng = random.Random(E * 7 + A)
    dut = ElementsToAXIS(stream_elems=E, act_bits=A)
    W = lane_bits(A)
    lengths = [1, E, E + 1, 2 * E, 5, 3]
    vectors = [_rand_vec(rng, n, A) for n in lengths]
    got = []

    async def source(ctx):
        for vec in vectors:
            for i, v in enumerate(vec):
                while rng.random() < 0.3:
                    await ctx.tick()
                ctx.set(dut.inp.p.data, v)
                ctx.set(dut.inp.p.last, i == len(vec) - 1)
                ctx.set(dut.inp.valid, 1)
                await ctx.tick().until(dut.inp.ready)
                ctx.set(dut.inp.valid, 0)

    async def sink(ctx):
        total = sum((len(v) + E - 1) // E for v in vectors)
        held = None
        while len(got) < total:
            ready = rng.random() < 0.6
            ctx.set(dut.m.tready, ready)
            _, _, valid, tdata, tlast = await ctx.tick().sample(
                dut.m.tvalid, dut.m.tdata, dut.m.tlast)
            if held is not None:      # AXI4-Stream: once valid, stable until taken
                assert valid and (tdata, tlast) == held
            held = None
            if valid and ready:
                got.append((tdata, bool(tlast)))
            elif valid:
                held = (tdata, tlast)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(source)
    sim.add_testbench(sink)
    sim.run_until(1e-2)
    # reference: sign-extended lanes, unused lanes zero, tlast on a vector's last beat
    expected = []
    for vec in vectors:
        for i in range(0, len(vec), E):
            word = 0
            for j, v in enumerate(vec[i:i + E]):
                word |= (v & ((1 << W) - 1)) << (j * W)
            expected.append((word, i + E >= len(vec)))
    assert got == expected


def test_elements_to_axis_full_rate():
    """With tready high, one element per cycle is accepted (no bubbles)."""
    E, A = 4, 8
    dut = ElementsToAXIS(stream_elems=E, act_bits=A)
    accepted = []

    async def tb(ctx):
        ctx.set(dut.m.tready, 1)
        ctx.set(dut.inp.valid, 1)
        for cyc in range(24):
            ctx.set(dut.inp.p.data, cyc)
            ctx.set(dut.inp.p.last, cyc % 8 == 7)
            _, _, ready = await ctx.tick().sample(dut.inp.ready)
            accepted.append(ready)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert all(accepted)
