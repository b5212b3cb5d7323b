"""The all-integer training step (docs/arithmetic.md, "Training"): golden vs fast path,
the math of the backward pass, the exponent table, the word order, bad input."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ttforge.errors import ConfigError, ShapeError
from ttforge.ir import ContractionSchedule, TTShape, execute, schedule_orders
from ttforge.ir.rng import Xorshift32, stochastic_rshift
from ttforge.ir.train import (TrainConfig, calibrate_state, check_batch, check_lr, exp2_table,
                              export_network, init_state, softmax_grad, train_step,
                              train_step_fast, train_step_traced, round_update)
from ttforge.ir.random import train_case
from ttforge.ir.train_diverge import compare_states, compare_train_traces


def _case(seed: int, **kw):
    return train_case(seed, **kw)


def _assert_states_equal(a, b):
    assert compare_states(a, b) is None


# ---------------------------------------------------------------------------------------
def test_exp2_table_is_round_to_nearest_exactly():
    for P, F in ((15, 6), (8, 3), (12, 0)):
        T = exp2_table(P, F)
        N = 1 << F
        assert T[0] == 1 << P and len(T) == N
        for j in range(N):
            # floor(v + 1/2) == t  <=>  t - 1/2 <= v < t + 1/2, checked by N-th powers of rationals
            v_n = Fraction(2) ** (N * P - j)  # v^N
            t = int(T[j])
            assert Fraction(2 * t - 1, 2) ** N <= v_n < Fraction(2 * t + 1, 2) ** N


def test_exp2_table_sibling_detects_an_off_by_one():
    T = exp2_table(8, 3).copy()
    T[5] += 1
    v_n = Fraction(2) ** (8 * 8 - 5)
    assert not (Fraction(2 * int(T[5]) - 1, 2) ** 8 <= v_n < Fraction(2 * int(T[5]) + 1, 2) ** 8)


def test_softmax_grad_matches_base2_softmax():
    cfg = TrainConfig()
    rng = np.random.default_rng(0)
    z = rng.integers(-128, 128, size=(50, 10))
    y = rng.integers(0, 10, size=50)
    for e_z in (-5, -3, 0):
        sm = softmax_grad(z, e_z, y, cfg)
        p = 2.0 ** (z * 2.0 ** e_z)
        p /= p.sum(axis=1, keepdims=True)
        got = sm["p"] / 2.0 ** cfg.prob_bits
        assert np.abs(got - p).max() < 2e-3  # a float reference of an integer approximation
        assert np.all(sm["g"][np.arange(50), y] <= 0)
        assert np.all(np.abs(sm["g"]) <= 1 << cfg.prob_bits)


def test_round_update_equals_the_stochastic_shift_of_ir_rng():
    cfg = TrainConfig(rounding="stochastic")
    v = np.random.default_rng(1).integers(-10**6, 10**6, size=(7, 9))
    for s in (1, 5, 17, 32):
        a, _ = round_update(v, s, cfg, Xorshift32(99))
        b = stochastic_rshift(v, s, Xorshift32(99))
        assert np.array_equal(a, b)
    a, _ = round_update(v, 5, cfg, Xorshift32(99))
    assert not np.array_equal(a, stochastic_rshift(v, 5, Xorshift32(100)))


# ---------------------------------------------------------------------------------------
def test_forward_of_a_step_is_the_inference_executor_of_the_exported_network():
    state, x, y, _ = _case(0)
    _, trace = train_step_traced(state, x, y)
    logits = [r.value for r in trace.records if r.phase == "forward" and r.name == "output"][-1]
    assert np.array_equal(execute(export_network(state), x), logits)
    bad = logits.copy()
    bad[0, 0] ^= 1
    assert not np.array_equal(execute(export_network(state), x), bad)


def test_core_gradient_is_the_gradient_of_the_tt_matrix():
    """One TT layer, wide gradients: the real value of each core's integer gradient sum
    equals d(sum g * W x)/d core computed from the dense matrix in float (a check of the
    math of the transposed-core steps, independent of the implementation)."""
    rng = np.random.default_rng(3)
    shape = TTShape((3, 2, 2), (2, 3, 2), (1, 2, 3, 1))
    for order in schedule_orders(3):
        sched = ContractionSchedule(shape, order)
        cfg = TrainConfig(inter_bits=24, grad_bits=24, acc_bits=48, master_bits=8, w_bits=8)
        state = init_state([(12, 12, sched)], cfg, seed=1, lr_shift=4, bias=False)
        x = rng.integers(0, 128, size=(4, 12))
        y = rng.integers(0, 12, size=4)
        state = calibrate_state(state, x, y, fast=False)
        _, trace = train_step_traced(state, x, y)
        net = export_network(state)
        L = net.layers[0]
        cores = [g.astype(np.float64) * 2.0 ** e for g, e in zip(L.cores, L.core_exps)]
        g = [r for r in trace.records if r.name == "g"][0]
        gz = g.value * 2.0 ** g.exp
        xr = x * 2.0 ** state.in_exp

        def dense(cs):
            W = cs[0]
            for c in cs[1:]:
                W = np.einsum("...a,amnb->...mnb", W, c)
            W = W.reshape(shape.out_modes + shape.in_modes) if False else W
            # W[(m0 n0 m1 n1 m2 n2)] -> (m0 m1 m2, n0 n1 n2)
            W = W.reshape(3, 2, 2, 3, 2, 2).transpose(0, 2, 4, 1, 3, 5).reshape(12, 12)
            return W

        for rec in (r for r in trace.records if r.phase == "gradient" and r.name == "core_acc"):
            k = rec.core
            st_ = next(s for s in sched.steps if s.core == k)
            got = rec.value * 2.0 ** rec.exp  # (P, K) of the step
            want = np.zeros(cores[k].shape)
            for idx in np.ndindex(cores[k].shape):
                e = [c.copy() for c in cores]
                e[k] = np.zeros_like(cores[k])
                e[k][idx] = 1.0
                want[idx] = np.sum(gz * (xr @ dense(e).T))
            want_pk = want.transpose(st_.core_axes).reshape(st_.P, st_.K)
            scale = np.abs(want_pk).max()
            assert np.abs(got - want_pk).max() <= 1e-3 * scale, (order, k)


# ---------------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), n_layers=st.integers(1, 3), d=st.integers(1, 4),
       rank=st.integers(1, 4), batch=st.integers(1, 9), w_bits=st.integers(2, 8),
       extra=st.integers(0, 6), act_bits=st.integers(4, 10), inter_bits=st.integers(8, 16),
       grad_bits=st.integers(4, 16), rounding=st.sampled_from(["stochastic", "nearest"]))
def test_fast_path_equals_golden(seed, n_layers, d, rank, batch, w_bits, extra, act_bits, inter_bits,
                                 grad_bits, rounding):
    state, x, y, _ = _case(seed, n_layers=n_layers, d=d, rank=rank, batch=batch, w_bits=w_bits,
                           master_bits=max(3, w_bits + extra), act_bits=act_bits, inter_bits=inter_bits,
                           grad_bits=grad_bits, rounding=rounding)
    a = b = state
    for _ in range(3):
        a, ta = train_step_traced(a, x, y)
        b, tb = train_step_traced(b, x, y, fast=True)
        assert compare_train_traces(ta, tb) is None
    _assert_states_equal(a, b)
    assert a.words == (3 * state.n_stored() if rounding == "stochastic" else 0)


def test_fast_path_sibling_one_corrupted_bit_is_named():
    state, x, y, _ = _case(5)
    a, ta = train_step_traced(state, x, y)
    b, tb = train_step_traced(state, x, y, fast=True)
    rec = next(r for r in tb.records if r.phase == "backward" and r.name == "out")
    rec.value.flat[3] ^= 1
    m = compare_train_traces(ta, tb)
    assert m is not None and m.phase == "backward" and m.layer == rec.layer and m.name == "out"
    assert m.element == 3
    masters = list(b.layers[0].masters)
    masters[0] = masters[0].copy()
    masters[0].flat[0] += 1 if masters[0].flat[0] < 0 else -1
    bad = b.replace(layers=(b.layers[0].__class__(**{**b.layers[0].__dict__, "masters": tuple(masters)}),
                            *b.layers[1:]))
    m = compare_states(a, bad)
    assert m is not None and m.layer == 0 and m.core == 0 and m.element == 0


def test_train_step_is_train_step_traced():
    state, x, y, _ = _case(7)
    a = train_step(state, x, y)
    b, _ = train_step_traced(state, x, y)
    c, _ = train_step_fast(state, x, y)
    _assert_states_equal(a, b)
    _assert_states_equal(a, c)


def test_word_order_is_bias_then_cores_in_reverse_schedule_order():
    """The stochastic words of a step: layers from the last, in a layer its bias then the
    core of every step from the last step to the first, each row-major in its (P, K) matrix."""
    state, x, y, _ = _case(11, n_layers=2, d=3)
    new, trace = train_step_traced(state, x, y)
    gen = Xorshift32(state.rng)
    cfg = state.config
    for rec in (r for r in trace.records if r.phase == "gradient"):
        L = state.layers[rec.layer]
        if rec.name == "bias_acc":
            s = L.bias_exp + state.lr_shift - rec.exp
            d, _ = round_update(rec.value, s, cfg, gen, cfg.bias_bits)
            want = np.clip(L.bias - d, -(1 << (cfg.bias_bits - 1)) + 1, (1 << (cfg.bias_bits - 1)) - 1)
            assert np.array_equal(new.layers[rec.layer].bias, want)
        else:
            st_ = L.schedule.steps[rec.step]
            s = L.master_exps[rec.core] + state.lr_shift - rec.exp
            d, _ = round_update(rec.value, s, cfg, gen)
            hi = (1 << (cfg.master_bits - 1)) - 1
            m = L.masters[rec.core].transpose(st_.core_axes).reshape(st_.P, st_.K)
            got = new.layers[rec.layer].masters[rec.core].transpose(st_.core_axes).reshape(st_.P, st_.K)
            assert np.array_equal(got, np.clip(m - d, -hi, hi))
    assert gen.state == new.rng and gen.drawn == new.words


# ---------------------------------------------------------------------------------------
def test_bad_labels_are_one_line():
    state, x, y, _ = _case(2)
    with pytest.raises(ShapeError, match="labels must be in 0..4"):
        train_step(state, x, np.full_like(y, 5))


def test_batch_that_would_overflow_the_fast_path_is_refused():
    state, x, y, _ = _case(2, grad_bits=24, inter_bits=24)
    with pytest.raises(ConfigError, match="float64-exact fast path"):
        check_batch(state, 1 << 12, fast=True)
    check_batch(state, 1 << 12, fast=False)


def test_learning_rate_that_rounds_every_update_to_zero_is_refused():
    state, x, y, _ = _case(2)
    check_lr(state, 6)
    with pytest.raises(ConfigError, match="rounds every update to zero"):
        check_lr(state.replace(lr_shift=62), 6)


def test_config_validation():
    with pytest.raises(ConfigError, match="master_bits"):
        TrainConfig(w_bits=6, master_bits=4)
    with pytest.raises(ConfigError, match="rounding"):
        TrainConfig(rounding="up")


def test_truncate_ranks_keeps_the_strongest_slices_deterministically():
    from ttforge.ir.train import truncate_ranks

    state, x, y, _ = _case(4, n_layers=2, d=3, rank=4)
    L = state.layers[0]
    r = L.schedule.shape.ranks
    small = tuple(max(1, v - 1) for v in r[1:-1])
    a = truncate_ranks(state, 0, small)
    b = truncate_ranks(state, 0, small)
    assert compare_states(a, b) is None
    assert a.layers[0].schedule.shape.ranks == (1, *small, 1)
    assert a.layers[0].schedule.order == L.schedule.order
    # the kept slices are slices of the original masters
    g0 = L.masters[0]
    kept = a.layers[0].masters[0]
    for j in range(kept.shape[3]):
        assert any(np.array_equal(kept[..., j], g0[..., i]) for i in range(g0.shape[3]))
    train_step(a, x, y)  # a truncated state still trains
    with pytest.raises(ShapeError, match="truncation only"):
        truncate_ranks(state, 0, tuple(v + 1 for v in r[1:-1]))


def test_left_shift_updates_saturate_and_never_wrap_int64():
    """s <= 0 far enough that the old int64 shift wrapped (24-bit stored width, s <= -38):
    the update saturates at +-2^(b+1), and a requantization at the clamp of its width."""
    from ttforge.ir.train import shift_sat

    v = np.array([(1 << 39) - 1, -(1 << 39), 1 << 30, 5, 0, -1], dtype=np.int64)
    for s in (-38, -40, -60):
        d, _ = round_update(v, s, TrainConfig(rounding="nearest"), None, 24)
        lim = 1 << 25
        assert d.tolist() == [max(-lim, min(lim, int(x) << min(-s, 40))) for x in v]
        out, sat = shift_sat(v, s, 24)
        hi = (1 << 23) - 1
        assert out.tolist() == [max(-hi - 1, min(hi, int(x) << min(-s, 40))) for x in v]
        assert sat == 5
