"""The integer trainer's evaluation (``ttforge.ir.train.predict``) runs a batch in chunks
bounded by ``ttforge.limits.MAX_CHUNK_VALUES`` (512 samples of a layer with 2^19-element
intermediates took 7.5 GB), with the same classes as one pass."""

from __future__ import annotations

import numpy as np

import ttforge.limits
from ttforge.ir import train
from ttforge.ir.random import train_case


def test_chunks_are_bounded_by_their_values_and_give_the_same_classes(monkeypatch):
    state, _, _, _ = train_case(3)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 128, size=(40, 27))
    whole = train.predict(state, x, chunk=1000)
    rows = []
    real = train._Fast.forward
    monkeypatch.setattr(train._Fast, "forward", staticmethod(lambda net, xs: (rows.append(len(xs)), real(net, xs))[1]))
    net = train.export_network(state)
    per_sample = sum(la.schedule.shape.in_size + 4 * sum(s.out_elements for s in la.schedule.steps)
                     for la in net.layers)
    monkeypatch.setattr(ttforge.limits, "MAX_CHUNK_VALUES", 3 * per_sample)
    got = train.predict(state, x)
    assert np.array_equal(got, whole)
    assert max(rows) == 3 and sum(rows) == 40
    # sibling: an unbounded budget runs the default 512-sample chunk (one pass here)
    rows.clear()
    monkeypatch.setattr(ttforge.limits, "MAX_CHUNK_VALUES", 1 << 40)
    assert np.array_equal(train.predict(state, x), whole) and rows == [40]


def test_a_step_that_would_hold_too_many_values_is_refused_before_it_runs(monkeypatch):
    import pytest

    from ttforge.errors import ConfigError

    state, x, y, _ = train_case(3)
    per_sample = 2 * train.sample_values(state.layers)
    monkeypatch.setattr(train, "MAX_STEP_VALUES", per_sample * (len(y) - 1))
    with pytest.raises(ConfigError) as e:
        train.train_step_fast(state, x, y)
    assert str(e.value) == (f"batch={len(y)}: a step holds {len(y) * per_sample:,} values ({per_sample:,} a "
                            f"sample), above ttforge's limit of {per_sample * (len(y) - 1):,}; use batch <= "
                            f"{len(y) - 1} or a network with smaller intermediates")
    # sibling: one sample fewer runs
    train.train_step_fast(state, x[:-1], y[:-1])


def test_the_mnist_benchmark_network_trains_at_batch_4096():
    from ttforge.ir import ContractionSchedule, TTShape
    from ttforge.limits import MAX_STEP_VALUES

    tt = ContractionSchedule(TTShape((4, 8, 4, 4), (7, 4, 7, 4), (1, 16, 16, 16, 1)), (0, 1, 2, 3))
    dense = ContractionSchedule(TTShape((10,), (512,), (1, 1)), (0,))

    class _L:
        def __init__(self, schedule):
            self.schedule = schedule

    assert 4096 * 2 * train.sample_values([_L(tt), _L(dense)]) <= MAX_STEP_VALUES
