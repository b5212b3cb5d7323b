"""The controller's phase flags (``fetching``, ``running``, ``outputting`` and the
internal ``idle``, ``taking``, ...) are registers of their own (one-hot flops beside ``state``, for Fmax): under random stimulus, including
aborts and soft resets in every state, each must equal its decode of ``state`` in every
cycle. The sibling feeds the same check a wrong decode and must find mismatches."""

from __future__ import annotations

import random

from amaranth.sim import Simulator

from ttforge.hw.config import AccelConfig
from ttforge.hw.engine import Controller, Geometry, State

FLAGS = {"fetching": (State.FETCH,), "running": (State.RUN,), "outputting": (State.OUTPUT,),
         "idle": (State.IDLE,), "taking": (State.IDLE, State.INPUT), "inputting": (State.INPUT,),
         "drain": (State.DRAIN,), "pad": (State.PAD,), "zfill": (State.ZFILL,)}


def _trace(seed: int, cycles: int = 3000) -> list[tuple[int, dict[str, int]]]:
    """``(state, flags)`` of every cycle of a Controller driven at random."""
    dut = Controller(Geometry(AccelConfig(lanes=4)))
    rng = random.Random(seed)
    out = []

    async def bench(ctx):
        ctx.set(dut.program.in_count, 3)
        ctx.set(dut.program.in_pad, 5)
        ctx.set(dut.program.out_count, 2)
        ctx.set(dut.control.enable, 1)
        ctx.set(dut.zf_start, 2)
        ctx.set(dut.zf_end, 4)
        for _ in range(cycles):
            for sig, p in ((dut.inp.valid, 0.7), (dut.inp.payload.last, 0.3),
                           (dut.fetch_done, 0.3), (dut.pipe_busy, 0.5), (dut.last_step, 0.3),
                           (dut.zf_nonempty, 0.3), (dut.out_finished, 0.2),
                           (dut.abort, 0.01), (dut.control.soft_reset, 0.01),
                           (dut.error, 0.02)):
                ctx.set(sig, rng.random() < p)
            await ctx.tick()
            out.append((ctx.get(dut.state), {n: ctx.get(flags[n]) for n in FLAGS}))

    sim = Simulator(dut)
    flags = {**dut.debug, **{n: getattr(dut, n) for n in ("fetching", "running", "outputting")}}
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out


def mismatches(trace, decode=FLAGS) -> list[tuple[int, str]]:
    """Cycles where a flag differs from ``state in decode[flag]``."""
    return [(t, n) for t, (state, flags) in enumerate(trace) for n, s in decode.items()
            if flags[n] != (state in s)]


def test_phase_flags_equal_the_state_decodes():
    for seed in range(3):
        trace = _trace(seed)
        assert {s for s, _ in trace} >= set(State)      # every state visited
        assert mismatches(trace) == []


def test_a_wrong_decode_is_found():
    wrong = {**FLAGS, "taking": (State.IDLE,)}
    assert mismatches(_trace(0), wrong)
