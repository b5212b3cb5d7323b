"""ErrorUnit (hw/engine/errors.py): an error found in cycle t aborts in t + 2 with the
first condition's code and the step of t; the conditions of the cycle after it are
ignored; the flush comes with the abort."""

from __future__ import annotations

import pytest
from amaranth.sim import Simulator

from ttforge.hw.engine.errors import ErrorUnit
from ttforge.hw.regmap import ErrorCode

CODES = (ErrorCode.BUF_RANGE, ErrorCode.MISALIGNED, ErrorCode.CMEM_RANGE, ErrorCode.BMEM_RANGE)


def _run(script):
    """``script``: per cycle ``(conds, step)``; returns per cycle ``(abort, flush, error,
    error_code, error_step)`` as they are in that cycle."""
    dut = ErrorUnit(CODES)
    seen = []

    async def tb(ctx):
        for conds, step in script:
            ctx.set(dut.conds, conds)
            ctx.set(dut.step, step)
            *_, a, f, e, c, s = await ctx.tick().sample(dut.abort, dut.flush, dut.error, dut.error_code,
                                                        dut.error_step)
            seen.append((a, f, e, c, s))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return seen


def test_an_error_aborts_two_cycles_later_with_its_code_and_step():
    seen = _run([(0, 0), (0b0100, 3), (0, 4), (0, 5), (0, 6), (0, 7)])
    # found in cycle 1: abort and flush high in cycle 3
    assert [t for t, s in enumerate(seen) if s[0]] == [3]
    assert [t for t, s in enumerate(seen) if s[1]] == [3]
    assert seen[-1][2:] == (1, int(ErrorCode.CMEM_RANGE), 3)


def test_the_first_condition_wins_and_the_next_cycle_is_ignored():
    # two conditions at once (priority: the lower index), then another one the cycle after
    seen = _run([(0b1010, 9), (0b0001, 10), (0, 11), (0, 12), (0, 13)])
    assert [t for t, s in enumerate(seen) if s[0]] == [2]
    assert seen[-1][2:] == (1, int(ErrorCode.MISALIGNED), 9)


@pytest.mark.parametrize("cycles", [2, 3])
def test_a_condition_that_lasts_until_the_abort_aborts_once(cycles):
    # (in the engine the flush with the abort clears the pipeline the condition comes from)
    seen = _run([(0b1000, 1)] * cycles + [(0, 2)] * 4)
    assert [t for t, s in enumerate(seen) if s[0]] == [2]
    assert seen[-1][2:] == (1, int(ErrorCode.BMEM_RANGE), 1)
