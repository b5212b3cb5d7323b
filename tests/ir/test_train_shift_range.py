"""A step never returns (and save_state never writes) a state whose forward pass leaves
``shift_range``: delayed scaling fits a layer's step exponents at this step's input
exponent, so a layer output exponent that jumps (+17 here, wide widths, lr_shift 0, inputs
all at the minimum) left the next layer's first shift at -17 while acc_bits 48 allows
-15..62. The step returned that state; the next step, export_network and load_state of
the file save_state wrote all refused it ("step 0 shifts by -17 ... change the
exponents"), so a checkpoint the tool wrote could not be resumed."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ttforge.cli import main
from ttforge.errors import ConfigError
from ttforge.ir.train import export_network, forward_shift_problem, train_step, train_step_fast
from ttforge.ir.train_state import dumps_state, load_state, loads_state, save_state

from tests.support.train_cases import jumping_run


@pytest.mark.parametrize("step", [train_step, lambda s, x, y: train_step_fast(s, x, y)[0]])
def test_a_step_refuses_to_leave_an_unrunnable_state(step):
    state, batches = jumping_run()
    for x, y in batches[:2]:
        state = step(state, x, y)
        assert loads_state(dumps_state(state)).step == state.step      # every returned state loads
    before = dumps_state(state)
    with pytest.raises(ConfigError) as e:
        step(state, *batches[2])
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("training step 3 (epoch 1) would leave layer 1 step 0 shifting by -17 "
                          "(layer 0's output exponent moved by +17 in this step), outside -15..62 at acc_bits=48")
    assert "larger lr_shift" in msg and "smaller acc_bits" in msg and "narrower act_bits/inter_bits" in msg
    assert dumps_state(state) == before                                # the input state untouched
    assert forward_shift_problem(state) is None and export_network(state).layers


@pytest.mark.parametrize("kw", [dict(lr_shift=4), dict(acc_bits=44), dict(act_bits=12, inter_bits=16)])
def test_each_fix_the_line_names_trains_on(kw):
    state, batches = jumping_run(**kw)
    for x, y in batches:
        state = train_step(state, x, y)
    assert forward_shift_problem(state) is None and loads_state(dumps_state(state)).step == len(batches)


def test_save_state_never_writes_a_state_load_state_refuses(tmp_path):
    state, _ = jumping_run()
    L = state.layers[1]
    bad = replace(state, layers=(state.layers[0], replace(L, step_exps=(L.step_exps[0] - 40,) + L.step_exps[1:]),
                                 state.layers[2]))
    assert forward_shift_problem(bad) == (1, 0, forward_shift_problem(bad)[2])
    with pytest.raises(ConfigError, match=r"^this state cannot be saved: layer 1 step 0 shifts by -\d+, outside "
                                          r"-15\.\.62 at acc_bits=48, so no step can run it"):
        save_state(bad, tmp_path / "s.ttts")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigError, match="step 0 shifts by"):   # what the loader would say
        export_network(bad)


def test_train_int_refusing_a_step_exits_2_and_keeps_the_last_epochs_checkpoint(tmp_path, capsys, monkeypatch):
    # a forward exponent fit that drops by 40 once epoch 1's checkpoint is written (the
    # exponent rule is not the point: the step's refusal and what train-int keeps are)
    import ttforge.ir.train as train

    out = tmp_path / "run"
    real = train._fit_exp
    monkeypatch.setattr(train, "_fit_exp",
                        lambda acc, e, bits: real(acc, e, bits) - (40 if (out / "state.ttts").exists() else 0))
    code = main(["train-int", "--quiet", "--batch", "512", "--hidden", "16", "--ranks", "2", "--epochs", "3",
                 "-o", str(out)])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert "training step 4 (epoch 2) would leave layer 0 step 0 shifting by" in lines[0] and "lr_shift" in lines[0]
    assert load_state(out / "state.ttts").epoch == 1                     # the last good checkpoint
