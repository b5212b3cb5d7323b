"""The bias at the accumulator exponent (docs/arithmetic.md, "Forward"): ``b << (e_b - e_acc)``
clamped to the bias limit, exactly, whatever the widths. With a 48-bit accumulator the
golden trainer once capped the shift at ``62 - bitlen(limit)`` (15 here), so a bias 16 or
more exponent steps above the accumulator lost its top bits against the spec."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest

from ttforge.ir.random import train_case
from ttforge.ir.train import bias_limit, export_network, train_step
from ttforge.ir.train_diverge import compare_states
from ttforge.ir.train_state import dumps_state, loads_state

WIDE = dict(acc_bits=48, inter_bits=16, bias_frac_bits=0, bias_bits=32)


def _state_with_bias_above(up: int, bias=(1, -1, 3)):
    """A one-layer state (acc_bits 48) whose bias sits ``up`` exponent steps above the last
    accumulator, as the loader accepts it."""
    state, x, y, _ = train_case(3, n_layers=1, d=1, rank=1, n_in=4, n_out=3, batch=2, lr_shift=6, **WIDE)
    e_acc = export_network(state).layers[0].acc_exp(0)
    L = replace(state.layers[0], bias=np.array(bias, dtype=np.int64), bias_exp=e_acc + up)
    return loads_state(dumps_state(replace(state, layers=(L,)))), x, y


def _spec(b: int, up: int, lim: int) -> int:
    return max(-lim, min(lim, b << up))


@pytest.mark.parametrize("up", [14, 15, 16, 20, 40, 47, 48, 63, 200])
def test_exported_bias_is_the_spec_left_shift(up):
    state, _, _ = _state_with_bias_above(up, (1, -1, 3))
    lim = bias_limit(state.config, state.layers[0])
    assert lim.bit_length() == 47
    got = export_network(state).layers[0].bias.tolist()
    assert got == [_spec(b, up, lim) for b in (1, -1, 3)]


def test_exported_bias_at_the_limit_saturates_not_wraps():
    # |b| << s just below, at and just above the limit; the largest 32-bit biases
    for up in (17, 20, 30):
        state, _, _ = _state_with_bias_above(up, (0, 0, 0))
        lim = bias_limit(state.config, state.layers[0])
        t = lim >> up
        for bias in ((t, -t, t + 1), (-t - 1, (1 << 31) - 1, -(1 << 31) + 1)):
            s2, _, _ = _state_with_bias_above(up, bias)
            assert export_network(s2).layers[0].bias.tolist() == [_spec(b, up, lim) for b in bias]


def test_step_uses_the_spec_bias():
    # the step's forward pass adds the spec's bias: its output exponent follows the 2^20
    # bias (the capped 2^15 left the accumulator small enough for the old exponent)
    state, x, y = _state_with_bias_above(20, (1 << 10, -(1 << 10), 3 << 10))
    net = export_network(state)
    assert net.layers[0].bias.tolist() == [1 << 30, -(1 << 30), 3 << 30]
    new = train_step(state, x, y)
    e_acc = net.layers[0].acc_exp(0)
    assert new.layers[0].step_exps[-1] >= e_acc + 32 - (state.config.act_bits - 1)


@pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")), reason="needs a C compiler")
@pytest.mark.parametrize("up", [16, 20, 47, 100])
def test_c_step_aligns_the_bias_as_the_golden(up):
    from ttforge.firmware.train_c import train_step_c

    state, x, y = _state_with_bias_above(up, (1, -1, 3))
    a = b = state
    for _ in range(2):
        a, b = train_step(a, x, y), train_step_c(b, x, y)
        assert compare_states(b, a) is None
