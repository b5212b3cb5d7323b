"""What docs/hardware.md promises about STATUS.DONE and about refusing input, checked on
the whole TTAccel (AXI4-Lite register reads, s_axis_tready) in Amaranth's simulator.

Both failed on the RTL before the engine was split into components (issue 12, part 8):
DONE read BUSY+DONE for the whole next inference when vectors were queued, and the input
adapter took one beat after reset, while disabled and while in error."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator

from ttforge.hw.axil import OKAY
from ttforge.hw.config import AccelConfig
from ttforge.hw.program import compile_program, load_image
from ttforge.hw.regmap import ErrorCode, RegisterMap
from ttforge.hw.top import TTAccel
from ttforge.ir.executor import execute
from ttforge.ir.random import engine_network, random_inputs

from tests.support.axil import Master
from tests.support.axis_drive import send_vectors

BUSY, DONE, ERROR = 0b001, 0b010, 0b100


def _setup(n_vectors=3):
    net = engine_network(37)
    cfg = AccelConfig.for_network(net, lanes=4)
    prog = compile_program(net, cfg)
    X = random_inputs(net, n_vectors, np.random.default_rng(2))
    return net, cfg, prog, X


def _simulate(dut, *benches, sink=None):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for b in benches:
        sim.add_testbench(b)
    if sink is not None:
        sim.add_process(sink)
    sim.run()


def _sink(dut, got):
    async def sink(ctx):
        ctx.set(dut.m_axis.tready, 1)
        cur = []
        while True:
            _, _, valid, data, last = await ctx.tick().sample(
                dut.m_axis.tvalid, dut.m_axis.tdata, dut.m_axis.tlast)
            if valid:
                cur.append(data - (1 << 8) if data >> 7 else data)
                if last:
                    got.append(cur)
                    cur = []
    return sink


def test_status_done_clears_when_a_queued_vector_starts():
    """Three vectors streamed back to back: while the second and third run, STATUS reads
    BUSY without DONE (a driver polling DONE sees no false completion); at the end DONE
    without BUSY."""
    net, cfg, prog, X = _setup(3)
    rm = RegisterMap(cfg)
    dut = TTAccel(cfg)
    got: list[list[int]] = []
    loaded = {"ok": False}
    seen: list[tuple[int, int]] = []        # (vectors out so far, STATUS)

    async def control(ctx):
        m = Master(ctx, dut.axil)
        for addr, data in load_image(prog, rm):
            assert await m.write(addr, data) == OKAY
        loaded["ok"] = True
        for _ in range(20_000):
            status, resp = await m.read(rm.addr("STATUS"))
            assert resp == OKAY
            seen.append((len(got), status))
            if len(got) == len(X):
                break
        status, _ = await m.read(rm.addr("STATUS"))
        seen.append((len(got), status))

    async def stream(ctx):
        while not loaded["ok"]:
            await ctx.tick()
        await send_vectors(ctx, dut.s_axis, X, cfg.stream_elems, 8)

    _simulate(dut, control, stream, sink=_sink(dut, got))
    assert np.array_equal(np.array(got), execute(net, X))
    both = [s for _, s in seen if s & (BUSY | DONE) == BUSY | DONE]
    assert not both, f"STATUS read BUSY and DONE together {len(both)} times"
    during_next = [s for n, s in seen if n in (1, 2)]
    assert during_next and all(s & (BUSY | DONE) == BUSY for s in during_next[1:])
    assert seen[-1][1] == DONE


def test_input_refused_after_reset_while_disabled_and_in_error():
    """s_axis_tready stays low right after reset (CTRL.ENABLE is 0), while the engine is
    disabled and while STATUS.ERROR is set; no beat is taken then, and after
    CMD.CLEAR_ERROR the vector offered meanwhile runs exactly."""
    net, cfg, prog, X = _setup(1)
    rm = RegisterMap(cfg)
    dut = TTAccel(cfg)
    got: list[list[int]] = []
    taken = {"reset": 0, "error": 0, "disabled": 0}

    async def offer(ctx, phase, cycles):
        """Offer X[0][0] for ``cycles`` cycles; count the beats taken."""
        ctx.set(dut.s_axis.tdata, int(X[0][0]) & 0xFF)
        ctx.set(dut.s_axis.tlast, 0)
        ctx.set(dut.s_axis.tvalid, 1)
        for _ in range(cycles):
            _, _, ready = await ctx.tick().sample(dut.s_axis.tready)
            taken[phase] += ready
        ctx.set(dut.s_axis.tvalid, 0)

    async def bench(ctx):
        m = Master(ctx, dut.axil)
        await offer(ctx, "reset", 20)                     # right after reset
        for addr, data in load_image(prog, rm):           # ends with CTRL.ENABLE = 1
            assert await m.write(addr, data) == OKAY
        # a vector whose tlast comes on its second element: TLAST_EARLY
        await send_vectors(ctx, dut.s_axis, [list(X[0][:2])], 1, 8)
        await ctx.tick().repeat(4)
        status, _ = await m.read(rm.addr("STATUS"))
        assert status & ERROR
        assert (await m.read(rm.addr("ERROR_CODE")))[0] & 0xFF == ErrorCode.TLAST_EARLY
        await offer(ctx, "error", 30)
        assert (await m.read(rm.addr("STATUS")))[0] & ERROR
        assert await m.write(rm.addr("CMD"), rm["CMD"].field("CLEAR_ERROR").mask) == OKAY
        await send_vectors(ctx, dut.s_axis, [X[0]], 1, 8)
        for _ in range(20_000):
            if got:
                break
            await ctx.tick()
        assert await m.write(rm.addr("CTRL"), 0) == OKAY
        await offer(ctx, "disabled", 20)

    _simulate(dut, bench, sink=_sink(dut, got))
    assert taken == {"reset": 0, "error": 0, "disabled": 0}
    assert np.array_equal(np.array(got), execute(net, X[:1]))


def _load_while_busy(engines: int, flip: bool = False):
    """Program A loaded, its vector sent with m_axis_tready low, program B's whole load
    image written 100 cycles later (the vector still computing), tready raised, then a
    vector for B. The output vectors, and A's and B's golden outputs."""
    a, cfg, prog_a, X = _setup(2)
    b = engine_network(38)
    ca, cb = (AccelConfig.for_network(n, lanes=4).to_dict() for n in (a, b))
    cfg = AccelConfig(**{k: max(v, cb[k]) if type(v) is int else v for k, v in ca.items()}  # fits both
                      | {"engines": engines})
    rm = RegisterMap(cfg)
    prog_a, prog_b = compile_program(a, cfg), compile_program(b, cfg)
    Xb = random_inputs(b, 1, np.random.default_rng(3))
    dut = TTAccel(cfg)
    got: list[list[int]] = []
    sink = {"on": False}

    async def control(ctx):
        m = Master(ctx, dut.axil)
        for addr, data in load_image(prog_a, rm):
            assert await m.write(addr, data) == OKAY
        await send_vectors(ctx, dut.s_axis, X[:1], cfg.stream_elems, 8)
        await ctx.tick().repeat(100)
        writes = load_image(prog_b, rm)
        if flip:   # the sibling: one bit (its sign: a low one rounds away) of B's first nonzero core element
            w = rm.window("CMEM")
            k = next(i for i, (a, d) in enumerate(writes) if w.base <= a < w.base + 4 * w.depth and d)
            writes[k] = (writes[k][0], writes[k][1] ^ (1 << (cfg.core_bits - 1)))
        for addr, data in writes:
            assert await m.write(addr, data) == OKAY
        sink["on"] = True
        ctx.set(dut.s_axis.tvalid, 1)            # B's vector, one element a beat (stream_elems 1)
        for k, v in enumerate(Xb[0]):
            ctx.set(dut.s_axis.tdata, int(v) & 0xFF)
            ctx.set(dut.s_axis.tlast, k == len(Xb[0]) - 1)
            for _ in range(20_000):              # bounded: an engine left in error takes none
                if (await ctx.tick().sample(dut.s_axis.tready))[2]:
                    break
            else:
                got.append(["input refused"])
                break
        ctx.set(dut.s_axis.tvalid, 0)
        for _ in range(40_000):
            if len(got) >= 2:
                break
            await ctx.tick()
        await ctx.tick().repeat(2000)

    async def drain(ctx):
        cur = []
        while True:
            ctx.set(dut.m_axis.tready, sink["on"])
            _, _, valid, ready, data, last = await ctx.tick().sample(
                dut.m_axis.tvalid, dut.m_axis.tready, dut.m_axis.tdata, dut.m_axis.tlast)
            if valid and ready:
                cur.append(data - (1 << 8) if data >> 7 else data)
                if last:
                    got.append(cur)
                    cur = []

    _simulate(dut, control, sink=drain)
    return got, execute(a, X[:1])[0].tolist(), execute(b, Xb)[0].tolist()


@pytest.mark.parametrize("engines", [1, 2])
def test_a_load_while_a_vector_is_in_flight_aborts_it(engines):
    """The load image applied while a vector of the old program is still computing (the
    C driver's ttfd_load writes straight through): its first writes stopped new input
    only, the vector went on with memories half rewritten and came out as neither
    program's result, with no error. The image now soft-resets the core first: that
    vector has no output, and the next one is the new program's, exactly."""
    got, old, new = _load_while_busy(engines)
    assert got == [new], (got, old, new)


def test_sibling_a_flipped_core_bit_of_the_new_program_is_seen():
    """The same load with one bit of the new program's first core element flipped: the
    next vector's output must differ from the golden one (the check above can fail)."""
    got, _, new = _load_while_busy(1, flip=True)
    assert len(got) == 1 and got[0] != new, (got, new)


@pytest.mark.parametrize("engines", [1, 2])
def test_while_in_error_no_vector_is_taken_by_any_engine(engines):
    """A vector that ends early (TLAST_EARLY) puts the core in error; a whole vector
    offered then is refused (s_axis_tready low) until CMD.CLEAR_ERROR, with engines 1 as
    with 2: the array's next engine took it and ran it beside STATUS.ERROR (DONE|ERROR,
    irq for DONE, VECTORS 1). After the clear the next vector's output is exact."""
    net, _, _, X = _setup(3)
    cfg = AccelConfig(**{**AccelConfig.for_network(net, lanes=4).to_dict(), "engines": engines})
    prog, rm = compile_program(net, cfg), RegisterMap(cfg)
    dut = TTAccel(cfg)
    got: list[list[int]] = []
    log = {}

    async def bench(ctx):
        m = Master(ctx, dut.axil)
        for addr, data in load_image(prog, rm):
            assert await m.write(addr, data) == OKAY
        ctrl = rm["CTRL"]
        await m.write(rm.addr("CTRL"), ctrl.field("ENABLE").mask | ctrl.field("IRQ_DONE_EN").mask)
        await send_vectors(ctx, dut.s_axis, [list(X[0][:2])], 1, 8)      # TLAST_EARLY
        await ctx.tick().repeat(10)
        ctx.set(dut.s_axis.tvalid, 1)
        ctx.set(dut.s_axis.tdata, int(X[1][0]) & 0xFF)
        ctx.set(dut.s_axis.tlast, 0)
        taken = 0
        for _ in range(300):
            taken += (await ctx.tick().sample(dut.s_axis.tready))[2]
        ctx.set(dut.s_axis.tvalid, 0)
        await ctx.tick().repeat(200)
        log.update(taken=taken, status=(await m.read(rm.addr("STATUS")))[0], irq=ctx.get(dut.irq),
                   vectors=(await m.read(rm.addr("VECTORS_LO")))[0], outputs=len(got))
        assert await m.write(rm.addr("CMD"), rm["CMD"].field("CLEAR_ERROR").mask) == OKAY
        await send_vectors(ctx, dut.s_axis, [X[2]], 1, 8)
        for _ in range(20_000):
            if got:
                break
            await ctx.tick()

    _simulate(dut, bench, sink=_sink(dut, got))
    assert log == dict(taken=0, status=ERROR, irq=0, vectors=0, outputs=0), log
    assert got == [execute(net, X[2:])[0].tolist()]
