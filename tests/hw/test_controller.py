"""The controller's phase flags (``fetching``, ``running``, ``outputting`` and the
internal ``idle``, ``taking``, ...) are registers of their own (one-hot flops beside ``state``, for Fmax): under random stimulus, including
aborts and soft resets in every state, each must equal its decode of ``state`` in every
cycle. So must the registers that stand for a compare (``exp_last``, ``pad_at_last``,
``step_next``, ``dptr_next``) wherever the controller reads them. The siblings feed the
same checks a wrong decode or a wrong compare and must find mismatches."""

from __future__ import annotations

import random

from amaranth.sim import Simulator

from ttforge.hw.config import AccelConfig, DESC_WORDS
from ttforge.hw.engine import Controller, Geometry, State

FLAGS = {"fetching": (State.FETCH,), "running": (State.RUN,), "outputting": (State.OUTPUT,),
         "idle": (State.IDLE,), "taking": (State.IDLE, State.INPUT), "inputting": (State.INPUT,),
         "drain": (State.DRAIN,), "pad": (State.PAD,), "zfill": (State.ZFILL,)}


#: (IN_COUNT, IN_PAD) per seed: several elements and a pad, one element, one element and a pad
SHAPES = ((3, 5), (1, 1), (1, 4))
#: the compare registers' internal signals, recorded per cycle
REGS = ("j", "last_idx", "pad_last", "exp_last", "pad_at_last", "step_next", "dptr_next")


def _trace(seed: int, cycles: int = 3000) -> list[tuple[int, dict[str, int]]]:
    """``(state, flags)`` of every cycle of a Controller driven at random (the flags
    include :data:`REGS`, ``step`` and ``dptr``)."""
    dut = Controller(Geometry(AccelConfig(lanes=4)))
    rng = random.Random(seed)
    out = []
    in_count, in_pad = SHAPES[seed % len(SHAPES)]

    async def bench(ctx):
        ctx.set(dut.program.in_count, in_count)
        ctx.set(dut.program.in_pad, in_pad)
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
            out.append((ctx.get(dut.state), {n: ctx.get(flags[n]) for n in (*FLAGS, *REGS, "step", "dptr")}))

    sim = Simulator(dut)
    flags = {**dut.debug, **{n: getattr(dut, n) for n in ("fetching", "running", "outputting", "step", "dptr")}}
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out


def mismatches(trace, decode=FLAGS) -> list[tuple[int, str]]:
    """Cycles where a flag differs from ``state in decode[flag]``."""
    return [(t, n) for t, (state, flags) in enumerate(trace) for n, s in decode.items()
            if flags[n] != (state in s)]


def test_phase_flags_equal_the_state_decodes():
    visited = set()
    for seed in range(len(SHAPES)):
        trace = _trace(seed)
        visited |= {s for s, _ in trace}
        assert mismatches(trace) == []
    assert visited == set(State)


def test_a_wrong_decode_is_found():
    wrong = {**FLAGS, "taking": (State.IDLE,)}
    assert mismatches(_trace(0), wrong)


def compare_mismatches(trace, exp_last=lambda jj, last_idx: jj == last_idx) -> list[tuple[int, str]]:
    """Cycles where a compare register differs from its compare where it is read:
    ``exp_last`` while taking input (element ``jj``, 0 while idle, is the last), and
    ``pad_at_last`` while padding (``j == IN_PAD - 1``), ``step_next``/``dptr_next``
    while running or filling (the next step's number and descriptor address)."""
    bad = []
    for t, (state, f) in enumerate(trace):
        jj = 0 if f["idle"] else f["j"]
        if f["taking"] and f["exp_last"] != exp_last(jj, f["last_idx"]):
            bad.append((t, "exp_last"))
        if f["pad"] and f["pad_at_last"] != (f["j"] == f["pad_last"]):
            bad.append((t, "pad_at_last"))
        if f["running"] or f["zfill"]:
            if f["step_next"] != (f["step"] + 1) % (1 << 16):
                bad.append((t, "step_next"))
            if f["dptr_next"] != f["dptr"] + DESC_WORDS:
                bad.append((t, "dptr_next"))
    return bad


def test_compare_registers_equal_their_compares():
    for seed in range(len(SHAPES)):
        trace = _trace(seed)
        in_count, in_pad = SHAPES[seed]
        want = {State.IDLE, State.FETCH, State.RUN, State.ZFILL, State.DRAIN}
        want |= {State.INPUT} if in_count > 1 else set()
        want |= {State.PAD} if in_pad > in_count else set()
        assert {s for s, _ in trace} >= want
        assert compare_mismatches(trace) == []


def test_a_wrong_compare_is_found():
    """The check sees a register one element ahead (the compare of the next element)."""
    assert compare_mismatches(_trace(0), exp_last=lambda jj, last_idx: jj + 1 == last_idx)
