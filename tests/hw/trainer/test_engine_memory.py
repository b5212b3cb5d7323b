"""``engine_memory``: the memory of the training engine ttforge generates and builds
(``fit_engine``'s memories, as ``ttforge build --train`` checks them against a board), not
the bit-packed count of what the step needs; the largest batch it states is the last one
whose engine ``memory_misfit`` accepts, found here by scanning every batch."""

from __future__ import annotations

import pytest

from ttforge.firmware.build import memory_misfit, memory_parts
from ttforge.hw.trainer.program import MAX_ENGINE_BATCH, engine_memory, fit_engine
from ttforge.ir.train_memory import training_memory

from tests.support.train_cases import digits_train_state


def _scan_largest_fitting(state, lanes, device):
    """The last batch, counting up from 1, whose engine ``memory_misfit`` accepts; and the
    first one it refuses."""
    b = 1
    while b <= MAX_ENGINE_BATCH and memory_misfit(fit_engine(state, b, lanes), device) is None:
        b += 1
    return b - 1, b


@pytest.mark.parametrize("lanes", [4, 16])
def test_the_figure_is_fit_engines_memories_and_the_fit_is_builds_check(lanes):
    """The probe's case: batch 216 of the digits network. The bit-packed count (478,444
    bytes at 16 lanes) is under the ECP5-85F's 479,232 bytes of block RAM, and inspect
    said it fitted "up to batch 216"; the engine has 256 slots and ``ttforge build``
    refuses it."""
    st = digits_train_state()
    for batch in (32, 216):
        e = engine_memory(st, batch, lanes, "ecp5-85f", memory_misfit)
        cfg = fit_engine(st, batch, lanes)
        parts = memory_parts(cfg)
        assert e["parts"] == parts and e["bits"] == sum(parts.values()) and e["slots"] == cfg.max_batch
        assert e["bytes"] == -(-sum(parts.values()) // 8)
        assert e["misfit"] == memory_misfit(cfg, "ecp5-85f")
    assert training_memory(st, 216, lanes)["items"]["total"] <= e["device_bits"] // 8 < e["bytes"]
    assert e["misfit"] is not None and "3744 kbit" in e["misfit"]
    largest, refused = _scan_largest_fitting(st, lanes, "ecp5-85f")
    assert e["max_batch"] == largest and largest < 216
    assert memory_misfit(fit_engine(st, refused, lanes), "ecp5-85f") is not None


def test_no_engine_at_a_batch_says_why_and_no_device_says_nothing_of_one():
    st = digits_train_state()
    e = engine_memory(st, MAX_ENGINE_BATCH + 1, 4, "ecp5-85f", memory_misfit)
    assert "bits" not in e and "misfit" not in e and f"{MAX_ENGINE_BATCH:,} samples" in e["why"]
    assert e["max_batch"] == _scan_largest_fitting(st, 4, "ecp5-85f")[0]
    e = engine_memory(st, 8, 4, None, memory_misfit)
    assert e["bits"] == sum(memory_parts(fit_engine(st, 8, 4)).values())
    assert not {"device_bits", "misfit", "max_batch"} & set(e)
