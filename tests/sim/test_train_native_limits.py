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


def _bounded(monkeypatch, call, timeout=120):
    """``call()`` in a thread: ``(its outcome, the sessions it started)``, or a failure,
    never a hang, after ``timeout`` seconds (the harnesses it started are then killed)."""
    import threading

    sessions, out = [], {}
    real_init = TrainSession.__init__

    def init(self, *args, **kw):
        real_init(self, *args, **kw)
        sessions.append(self)

    def run():
        try:
            out["value"] = call()
        except BaseException as e:   # noqa: BLE001 - handed to the test
            out["error"] = e

    monkeypatch.setattr(TrainSession, "__init__", init)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        for s in sessions:
            s.proc.kill()
        t.join(30)
        pytest.fail(f"train_native did not return within {timeout} s: the harness and the host waited on each other")
    return out, sessions


def _sized(sizes):
    """Batches of ``sizes`` samples for the state of :func:`_case`."""
    state, batches = _case(steps=1)
    rng = np.random.default_rng(5)
    return state, [(rng.integers(0, 4, size=(n, 8)), rng.integers(0, 4, size=n)) for n in sizes]


@pytest.mark.parametrize("sizes", [(4, 2), (4, 8), (4, 4, 3)])
def test_a_batch_of_another_size_is_refused_before_the_harness_starts(build, monkeypatch, sizes):
    # the engine's BATCH is loaded with the first program: 4 then 2 left the harness waiting
    # for samples and the host for its answer, for good
    state, batches = _sized(sizes)
    out, sessions = _bounded(monkeypatch, lambda: train_native(build, state, batches))
    e = out.get("error")
    assert isinstance(e, ConfigError), out
    k = len(sizes) - 1
    assert str(e) == (f"batch {k} has {sizes[-1]} samples but batch 0 has 4; train_native runs every batch at the "
                      f"first one's size (the engine's BATCH is loaded once): give batches of one size, or one "
                      f"train_native call per size")
    assert sessions == []          # a list: refused before any step


def test_a_batch_of_another_size_from_a_generator_is_refused_before_it_is_sent(build, monkeypatch):
    state, batches = _sized((4, 4, 2, 4))
    out, sessions = _bounded(monkeypatch, lambda: train_native(build, state, iter(batches)))
    assert isinstance(out.get("error"), ConfigError), out
    assert str(out["error"]).startswith("batch 2 has 2 samples but batch 0 has 4; ")
    assert len(sessions) == 1 and sessions[0].proc.poll() is not None    # two steps ran; the harness ended


@pytest.fixture(scope="module")
def jumping():
    """The shared jumping run at grad_bits 16 (its accumulators fit the engine's 48 bits)
    and the engine fitted to it."""
    from ttforge.hw.trainer.program import fit_engine

    from tests.support.train_cases import jumping_run

    state, batches = jumping_run(grad_bits=16)
    return state, batches, build_train_native(fit_engine(state, 1))


def test_a_step_no_next_step_can_run_is_refused_in_the_golden_steps_line(jumping):
    # it said "step 0 shifts by -17 (left 17); ... change the exponents": no layer, no step
    from tests.support.train_cases import JUMPING_STEP

    state, batches, build = jumping
    want = state
    with pytest.raises(ConfigError) as golden:
        for x, y in batches:
            want = train_step(want, x, y)
    seen = []
    with pytest.raises(ConfigError) as e:
        train_native(build, state, batches, on_step=lambda n, s: seen.append(n))
    assert str(e.value) == str(golden.value)
    assert str(e.value).startswith(f"training step {JUMPING_STEP} (epoch 1) would leave layer 1 step 0 shifting by -17")
    assert seen == list(range(1, JUMPING_STEP))     # refused before its state reached the caller
