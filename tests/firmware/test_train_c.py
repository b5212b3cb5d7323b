"""The C implementation of the all-integer training step (firmware/c/ttforge_train.c,
compiled with -O2) equals the golden trainer, np.array_equal on every stored integer,
exponent, counter and the generator state, over random networks, batches and widths."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")), reason="needs a C compiler")

from ttforge.ir.random import train_case as _case
from ttforge.ir.train import train_step
from ttforge.ir.train_diverge import compare_states


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


# ---- shifts of 64 and more: C leaves them undefined (x86 shifts by s mod 64), the spec --
# ---- (ir.arith.rshift_round: 0; ir.train.round_update: floor by min(s - 32, 63)) does not --
def _calibrated(n_layers, seed=0, lr_shift=6, in_exp=-7, **widths):
    """A calibrated default-shape state (16 -> [8 ->] 4, one core a layer) and its batch."""
    from ttforge.ir.random import train_layer_shapes
    from ttforge.ir.train import TrainConfig, calibrate_state, init_state

    rng = np.random.default_rng(seed)
    shapes = train_layer_shapes(rng, n_layers, 1, 1, 16, 8, 4)
    state = init_state(shapes, TrainConfig(**widths), seed=seed, lr_shift=lr_shift, in_exp=in_exp)
    x = rng.integers(-128, 128, size=(4, state.in_features))
    y = rng.integers(0, 4, size=4)
    return calibrate_state(state, x, y, fast=False), x, y


def _reloaded(state):
    """``state`` through the state file's writer and loader: one a user can hand the C step."""
    from ttforge.ir.train_state import dumps_state, loads_state

    return loads_state(dumps_state(state))


def _assert_c_equals_golden(state, x, y):
    """One step by C and by the golden trainer: every array, exponent and counter equal."""
    from ttforge.firmware.train_c import train_step_c

    a, b = train_step(state, x, y), train_step_c(state, x, y)
    m = compare_states(a, b, "golden", "C")
    assert m is None, m.describe()
    for La, Lb in zip(a.layers, b.layers):
        assert all(np.array_equal(ga, gb) for ga, gb in zip(La.masters, Lb.masters))
        assert (La.bias is None and Lb.bias is None) or np.array_equal(La.bias, Lb.bias)
        for name in ("step_exps", "grad_exps", "master_exps", "bias_exp"):
            assert np.array_equal(getattr(La, name), getattr(Lb, name)), name
    assert (a.rng, a.words, a.step) == (b.rng, b.words, b.step)


def test_c_update_shift_past_64_floors_as_the_golden():
    """round_update: prob_bits 24, in_exp -20 and lr_shift 62 give core 0 the update shift
    99, so ``v >> (s - 32)`` by 67 (a state straight from init_state + calibrate_state)."""
    from dataclasses import replace

    from ttforge.ir.random import train_layer_shapes
    from ttforge.ir.train import TrainConfig, calibrate_state, init_state

    cfg, seed = TrainConfig(prob_bits=24), 532380
    rng = np.random.default_rng(seed)
    state = init_state(train_layer_shapes(rng, 1, 1, 1, 16, 8, 4), cfg, seed=seed, lr_shift=62, in_exp=-20)
    x, y = rng.integers(-128, 128, size=(4, state.in_features)), rng.integers(0, 4, size=4)
    state = calibrate_state(state, x, y, fast=False)
    L = state.layers[0]
    assert L.master_exps[0] + state.lr_shift - (-cfg.prob_bits + state.in_exp) - 32 >= 64
    _assert_c_equals_golden(state, x, y)
    _assert_c_equals_golden(replace(state, config=replace(cfg, rounding="nearest")), x, y)


@pytest.mark.parametrize("down", [64, 70, 200])
def test_c_loss_shift_past_64_is_the_golden(down):
    """The loss's ``t = rshift_round(u, -(e_z + F))``: every absolute exponent moved down by
    ``down`` (relative shifts unchanged), so the logit exponent gives a shift of 64 and more."""
    from dataclasses import replace

    from ttforge.ir.train import export_network

    state, x, y = _calibrated(2)
    layers = tuple(replace(L, step_exps=tuple(e - down for e in L.step_exps), bias_exp=L.bias_exp - down)
                   for L in state.layers)
    state = _reloaded(replace(state, in_exp=state.in_exp - down, layers=layers))
    assert -(export_network(state).layers[-1].out_exp + state.config.table_frac_bits) >= 64
    _assert_c_equals_golden(state, x, y)


@pytest.mark.parametrize("below", [64, 70, 127])
def test_c_bias_alignment_shift_past_64_is_the_golden(below):
    """The forward's bias alignment ``rshift_round(b, e_acc - e_b)``: a non-zero bias
    ``below`` exponent steps under its accumulator aligns to 0 (C gave b >> (below mod 64))."""
    from dataclasses import replace

    from ttforge.ir.train import export_network

    state, x, y = _calibrated(1)
    L = state.layers[0]
    e_acc = export_network(state).layers[0].acc_exp(0)
    L = replace(L, bias=np.array([5_000_000, -5_000_000, 3, -3], dtype=np.int64), bias_exp=e_acc - below)
    state = _reloaded(replace(state, layers=(L,)))
    assert np.array_equal(export_network(state).layers[0].bias, np.zeros(4, dtype=np.int64))
    _assert_c_equals_golden(state, x, y)


@pytest.mark.parametrize("up", [64, 70, 80])
def test_c_backward_shift_past_64_is_the_golden(up):
    """The backward requantization ``sat(rshift_round(accX, D - e_acc))``: layer 1's input
    gradient exponent raised by ``up`` makes its shift 64 and more."""
    from dataclasses import replace

    state, x, y = _calibrated(2)
    L1 = state.layers[1]
    state = _reloaded(replace(state, layers=(state.layers[0], replace(L1, grad_exps=(L1.grad_exps[0] + up,)))))
    _assert_c_equals_golden(state, x, y)


def test_c_step_refuses_a_forward_left_shift_past_int64_as_the_golden():
    """A state (built in Python: the loader refuses it) whose forward shift leaves
    shift_range: the C step refuses it in the golden step's line (it shifted left by 100)."""
    from dataclasses import replace

    from ttforge.errors import ConfigError
    from ttforge.firmware.train_c import train_step_c

    state, x, y = _calibrated(1)
    L = state.layers[0]
    state = replace(state, layers=(replace(L, step_exps=(L.step_exps[0] - 100,)),))
    with pytest.raises(ConfigError) as golden:
        train_step(state, x, y)
    with pytest.raises(ConfigError) as e:
        train_step_c(state, x, y)
    assert str(e.value) == str(golden.value)
