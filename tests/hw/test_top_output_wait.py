"""A whole output vector held at m_axis: TTAccel's STATUS, irq and counters wait for it.

The output adapter (``ElementsToAXIS``) took the element that closed a vector's last beat
into its output register while ``m_axis_tready`` was low, so an output of at most
``stream_elems`` elements fitted it whole: the engine went idle with ``m_axis_tvalid``
high and no beat taken, STATUS read DONE (BUSY 0), VECTORS 1, irq rose, and OUT_STALL
and CYCLES stopped (docs/hardware.md: BUSY until the last output element is accepted,
OUT_STALL the cycles with ``tvalid`` high and ``tready`` low)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.held_output import held_output_run

BUSY, DONE = 0b01, 0b10


@pytest.mark.parametrize("engines", [1, 2])
def test_status_and_counters_wait_for_a_whole_output_held_in_the_adapter(engines):
    """stream_elems=4, a 3-element output (one beat), m_axis_tready low 2,000 cycles:
    STATUS reads BUSY (not DONE), VECTORS 0 and irq low while the beat waits, OUT_STALL
    grows a cycle per cycle, and at the end CYCLES - IN_STALL - OUT_STALL is the cycle
    model's (as it is, with OUT_STALL 0, when tready never falls)."""
    got, golden, model, _, end = held_output_run(engines, 4, 0)
    assert np.array_equal(got, golden) and golden.shape[1] <= 4
    assert end["OUT_STALL_LO"] == 0 and end["CYCLES_LO"] - end["IN_STALL_LO"] == model

    got, golden, model, held, end = held_output_run(engines, 4, 2000)
    assert np.array_equal(got, golden)
    waiting = [s for s in held if s["tvalid"]]
    assert len(waiting) > 20                    # the output was offered most of the hold
    assert all(s["STATUS"] & (BUSY | DONE) == BUSY for s in held), held
    assert all(s["VECTORS_LO"] == 0 and s["irq"] == 0 for s in held), held
    stalls = [s["OUT_STALL_LO"] for s in waiting]
    assert stalls[-1] - stalls[0] >= 50 * (len(stalls) - 1) - 5 and stalls[-1] > 1000
    assert end["STATUS"] & (BUSY | DONE) == DONE and end["irq"] == 1 and end["VECTORS_LO"] == 1
    assert end["CYCLES_LO"] - end["IN_STALL_LO"] - end["OUT_STALL_LO"] == model
