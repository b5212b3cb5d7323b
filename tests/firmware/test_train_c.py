"""The C implementation of the all-integer training step (firmware/c/ttforge_train.c,
compiled with -O2) equals the golden trainer, np.array_equal on every stored integer,
exponent, counter and the generator state, over random networks, batches and widths."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")), reason="needs a C compiler")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ir.test_train_int import _case  # noqa: E402

from ttforge.ir.train import train_step  # noqa: E402
from ttforge.ir.train_diverge import compare_states  # noqa: E402


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), n_layers=st.integers(1, 3), d=st.integers(1, 4), rank=st.integers(1, 4),
       batch=st.integers(1, 7), w_bits=st.integers(2, 8), extra=st.integers(0, 6), act_bits=st.integers(4, 10),
       inter_bits=st.integers(8, 16), grad_bits=st.integers(4, 16),
       rounding=st.sampled_from(["stochastic", "nearest"]))
def test_c_step_equals_golden(seed, n_layers, d, rank, batch, w_bits, extra, act_bits, inter_bits, grad_bits,
                              rounding):
    from ttforge.firmware.train_c import train_step_c

    state, x, y, _ = _case(seed, n_layers=n_layers, d=d, rank=rank, batch=batch, w_bits=w_bits,
                           master_bits=max(3, w_bits + extra), act_bits=act_bits, inter_bits=inter_bits,
                           grad_bits=grad_bits, rounding=rounding)
    a = b = state
    for _ in range(3):
        a = train_step(a, x, y)
        b = train_step_c(b, x, y)
    m = compare_states(a, b, "golden", "C")
    assert m is None, m.describe()


def test_c_step_sibling_a_changed_bit_is_named():
    from ttforge.firmware.train_c import train_step_c

    state, x, y, _ = _case(1)
    a = train_step(state, x, y)
    b = train_step_c(state, x, y)
    assert compare_states(a, b) is None
    m = [g.copy() for g in b.layers[0].masters]
    m[1].flat[4] ^= 1
    bad = b.replace(layers=(b.layers[0].__class__(**{**b.layers[0].__dict__, "masters": tuple(m)}),
                            *b.layers[1:]))
    d = compare_states(a, bad, "golden", "C")
    assert d is not None and (d.layer, d.core, d.element) == (0, 1, 4)
    assert compare_states(a, b.replace(rng=b.rng ^ 1)) is not None


def test_c_step_long_run_equals_golden():
    """Many steps (fresh batches each step): state identical after every one."""
    from ttforge.firmware.train_c import train_step_c

    state, _, _, rng = _case(7, n_layers=2, d=3, batch=4)
    a = b = state
    for _ in range(40):
        x = rng.integers(0, 128, size=(4, 27))
        y = rng.integers(0, 5, size=4)
        a = train_step(a, x, y)
        b = train_step_c(b, x, y)
        assert compare_states(a, b) is None
    assert a.step == 40 and a.words == 40 * state.n_stored()


def test_c_step_refuses_to_leave_an_unrunnable_state():
    """As the golden step: the step whose delayed scaling moves layer 0's output exponent
    +17 is refused in the golden step's line, naming the layer and the fix (it returned
    a state whose next step, export and file load all refuse)."""
    from ttforge.errors import ConfigError
    from ttforge.firmware.train_c import train_step_c

    from tests.support.train_cases import JUMPING_STEP, jumping_run

    state, batches = jumping_run()
    for x, y in batches[:JUMPING_STEP - 1]:
        state = train_step_c(state, x, y)
    with pytest.raises(ConfigError) as e:
        train_step_c(state, *batches[JUMPING_STEP - 1])
    with pytest.raises(ConfigError) as golden:
        train_step(state, *batches[JUMPING_STEP - 1])
    assert str(e.value) == str(golden.value)
    assert str(e.value).startswith("training step 3 (epoch 1) would leave layer 1 step 0 shifting by -17")
