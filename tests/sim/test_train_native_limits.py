"""The native training harness at the edges of its widths: labels at the largest value a
signed ``act_bits`` stream element holds and 32-bit biases (read back sign-extended) train
as the golden trainer does, bit for bit; a label or feature the stream would wrap, and a
state whose classes the stream cannot carry, are refused before any step."""

from __future__ import annotations

import numpy as np
import pytest

from ttforge.errors import ConfigError
from ttforge.hw.trainer.engine import HostSel
from ttforge.hw.trainer.program import TrainEngineConfig, compile_training
from ttforge.ir.random import train_case
from ttforge.ir.train import train_step
from ttforge.ir.train_diverge import compare_states
from ttforge.sim.train_native import TrainSession, build_train_native, train_native

#: act_bits=3: stream elements -4..3, so 4 classes (labels 0..3) are the most it carries
WIDTHS = dict(act_bits=3, bias_bits=32)


def _case(n_out=4, steps=12):
    state, x, y, rng = train_case(3, batch=4, n_layers=2, d=2, rank=2, n_in=8, hidden=6, n_out=n_out, **WIDTHS)
    batches = [(x, y)] + [(rng.integers(0, 4, size=(4, 8)), rng.integers(0, n_out, size=4))
                          for _ in range(steps - 1)]
    return state, batches


def _config(state):
    return TrainEngineConfig(lanes=2, train=state.config, act_depth=512, grad_depth=256, core_depth=256,
                             bias_depth=32, desc_depth=64, max_batch=8, max_classes=8)


@pytest.fixture(scope="module")
def build():
    return build_train_native(_config(_case()[0]))


def _golden(state, batches):
    for x, y in batches:
        state = train_step(state, x, y)
    return state


def test_labels_at_the_stream_limit_and_32_bit_biases_equal_golden(build):
    state, batches = _case()
    want = _golden(state, batches)
    # the controls: the largest label the stream holds is used, and a bias is negative
    # (read as >= 2^31 without the sign extension: "bias leaves the 32-bit range")
    assert max(int(y.max()) for _, y in batches) == 3
    assert min(int(L.bias.min()) for L in want.layers) < 0
    got, _ = train_native(build, state, batches)
    assert compare_states(got, want) is None
    for a, b in zip(got.layers, want.layers):
        assert np.array_equal(a.bias, b.bias)
        assert all(np.array_equal(m, n) for m, n in zip(a.masters, b.masters))
    assert got.rng == want.rng


def _answering(words):
    """A session whose harness answers one read with ``words`` (no process)."""
    s = object.__new__(TrainSession)
    s._send = lambda text: None
    s._answer = lambda: ["v", *map(str, words)]
    return s


def test_a_32_bit_word_is_read_sign_extended_and_maxacc_halves_unsigned():
    # a negative 32-bit bias came back as 2^32 - 1: "layer 0 bias leaves the 32-bit range"
    assert _answering([0xFFFFFFFF, 0x80000000, 5]).read(HostSel.BMEM, 0, 3, 32).tolist() == [-1, -(1 << 31), 5]
    assert _answering([0xFFFFFFFF, 0x80]).read(HostSel.CMEM, 0, 2, 8).tolist() == [-1, -128]
    # MAXACC is 48 bits in two words: its low half is a plain 32-bit number
    assert _answering([0x80000001, 0x7]).maxacc(1).tolist() == [(0x7 << 32) | 0x80000001]


@pytest.mark.parametrize("label", [8, 4])
def test_a_label_the_stream_would_wrap_is_refused_not_trained(build, label):
    # 8 reached the engine as 0 (a valid, wrong label: no error), 4 as -4 (BAD_LABEL)
    state, batches = _case(steps=1)
    x, y = batches[0]
    y = y.copy()
    y[0] = label
    with TrainSession(build) as s:
        s.load(compile_training(state, 4, build.config))
        with pytest.raises(ConfigError, match=f"a label of the batch is {label}, outside the training engine's "
                                              r"signed 3-bit stream elements \(act_bits=3, -4\.\.3\)"):
            s.step(x, y)


def test_classes_the_stream_cannot_carry_are_refused_before_any_step(build):
    state, batches = _case(n_out=5)
    with pytest.raises(ConfigError, match=r"^5 classes need labels up to 4, which the training engine carries in "
                                          r"signed 3-bit stream elements \(act_bits=3, labels up to 3\); train the "
                                          r"state with act_bits >= 4 \(ttforge train-int --act-bits 4\)$"):
        train_native(build, state, batches)
