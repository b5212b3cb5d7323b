"""The training engine's native Verilator harness: many steps of RTL training equal the
golden trainer bit for bit (state compared after the run, ``compare_states``), and a core
word corrupted over the host port in the middle of a run is caught."""

from __future__ import annotations

import numpy as np
import pytest

from ttforge.hw.trainer.engine import HostSel
from ttforge.hw.trainer.program import TrainEngineConfig, compile_training
from ttforge.ir.random import train_case
from ttforge.ir.train import train_step
from ttforge.ir.train_diverge import compare_states
from ttforge.sim.train_native import TrainSession, build_train_native, train_native


def _setup(seed=0, steps=25, batch=6):
    state, x, y, rng = train_case(seed, batch=batch, n_layers=2, d=2, rank=2, n_in=12, hidden=8, n_out=4)
    cfg = TrainEngineConfig(lanes=4, train=state.config, act_depth=512, grad_depth=256, core_depth=512,
                            bias_depth=64, desc_depth=48, max_batch=16, max_classes=8)
    hi = (1 << (state.config.act_bits - 1)) - 1
    batches = [(x, y)] + [(rng.integers(0, hi + 1, size=(batch, state.in_features)),
                           rng.integers(0, state.n_classes, size=batch)) for _ in range(steps - 1)]
    return state, cfg, batches


@pytest.fixture(scope="module")
def build():
    _, cfg, _ = _setup()
    return build_train_native(cfg)


def _golden(state, batches):
    for x, y in batches:
        state = train_step(state, x, y)
    return state


def test_native_training_equals_golden(build):
    state, _, batches = _setup()
    got, records = train_native(build, state, batches)
    assert compare_states(got, _golden(state, batches)) is None
    assert got.step == state.step + len(batches)
    assert len({r["cycles"] for r in records}) == 1        # fixed by the program alone


def test_sibling_a_core_word_corrupted_mid_run_is_caught(build):
    state, cfg, batches = _setup(seed=0, steps=1)
    prog = compile_training(state, len(batches[0][1]), cfg)
    want = compile_training(train_step(state, *batches[0]), len(batches[0][1]), cfg).cmem
    with TrainSession(build) as s:
        s.load(prog)
        s.step(*batches[0])
        before, _, _ = s.memories(prog)
        s.write(HostSel.CMEM, 5, [int(before[5]) ^ 2])
        after, _, _ = s.memories(prog)
    assert np.array_equal(before, want)          # the control: equal before the corruption
    assert not np.array_equal(after, want)
