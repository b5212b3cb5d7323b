"""``ttforge generate --train STATE --batch B``: the training engine fitted to a state, its
register files written; bad options are one line, exit 2."""

from __future__ import annotations

import json

import pytest

from ttforge.cli import main
from ttforge.hw.trainer.program import compile_training, fit_engine
from ttforge.ir.random import train_case
from ttforge.ir.train_state import save_state


@pytest.fixture
def state_file(tmp_path):
    state, *_ = train_case(0, batch=6)
    path = tmp_path / "s.ttts"
    save_state(state, path)
    return state, path


def test_generate_train_writes_the_engine_for_the_state(state_file, tmp_path, capsys):
    state, path = state_file
    out = tmp_path / "out"
    assert main(["generate", "--train", str(path), "--batch", "6", "--lanes", "4", "-o", str(out),
                 "--no-verilog"]) == 0
    cfg = json.loads((out / "train_config.json").read_text())
    assert cfg["lanes"] == 4 and cfg["max_batch"] == 8
    assert "TTFORGE_TRAIN" in (out / "ttforge_train_regs.h").read_text()
    fitted = fit_engine(state, 6, 4)
    assert cfg["act_depth"] == fitted.act_depth
    compile_training(state, 6, fitted)            # the fitted engine holds the program
    assert "operations" in capsys.readouterr().out


def test_fit_engine_is_the_smallest_power_of_two(state_file):
    state, _ = state_file
    cfg = fit_engine(state, 6, 4)
    prog = compile_training(state, 6, cfg)
    r = prog.regions
    assert cfg.act_depth // 2 < r.act_words <= cfg.act_depth
    assert cfg.grad_depth // 2 < r.grad_words <= cfg.grad_depth


@pytest.mark.parametrize("argv,msg", [
    (["--batch", "0"], "--batch 0"), (["--lanes", "3"], "lanes=3"), (["--json"], "--json"),
])
def test_generate_train_bad_options_are_one_line(state_file, tmp_path, capsys, argv, msg):
    _, path = state_file
    rc = main(["generate", "--train", str(path), "-o", str(tmp_path / "o"), "--no-verilog", *argv])
    err = capsys.readouterr().err
    assert rc == 2 and msg in err and "Traceback" not in err


def test_batch_without_train_is_refused(state_file, tmp_path, capsys):
    _, path = state_file
    rc = main(["generate", str(path), "--batch", "3", "-o", str(tmp_path / "o")])
    assert rc == 2 and "--batch" in capsys.readouterr().err


def test_build_and_generate_name_the_training_header_as_the_c_driver_includes_it():
    """``build --train`` wrote ``train_regs.h``, ``generate --train`` and the C driver's
    bundle ``ttforge_train_regs.h``, which ``ttforge_train_driver.h`` includes: firmware
    built from a board build's output did not compile until the header was renamed.
    Both now take their files from one function."""
    from pathlib import Path

    import ttforge.firmware as fw
    from ttforge.firmware.train_c_driver import TRAIN_REGS_H
    from ttforge.hw.trainer.program import TrainEngineConfig
    from ttforge.hw.trainer.regmap import train_register_map
    from ttforge.hw.trainer.verilog import train_regmap_files

    files = train_regmap_files(train_register_map(TrainEngineConfig()))
    assert [n for n in files if n.endswith(".h")] == [TRAIN_REGS_H]
    driver_h = (Path(fw.__file__).parent / "c" / "ttforge_train_driver.h").read_text()
    assert f'#include "{TRAIN_REGS_H}"' in driver_h


def test_generate_train_takes_a_module_name(state_file, tmp_path, capsys):
    """``--name`` with ``--train``: the training top's module and its files (a board with
    two training cores of different sizes needs two names); a bad name is one line."""
    _, path = state_file
    out = tmp_path / "out"
    assert main(["generate", "--train", str(path), "--batch", "2", "--lanes", "2", "--name", "learner",
                 "-o", str(out)]) == 0
    assert (out / "learner.v").read_text().count("module learner(") == 1
    assert (out / "learner.vlt").exists() and not (out / "ttforge_train.v").exists()
    assert main(["generate", "--train", str(path), "--name", "x-y", "-o", str(tmp_path / "o2")]) == 2
    assert "--name 'x-y': give a Verilog module name" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()


def test_generate_train_on_a_state_whose_shift_the_descriptor_cannot_hold_names_the_fix(tmp_path, capsys):
    # prob_bits 24, lr_shift 62, in_exp -50: the golden trainer runs it, the engine's update
    # shift of 129 does not fit; it said "descriptor field SHIFT=129 is outside -128..127"
    import numpy as np

    from ttforge.ir.random import train_layer_shapes
    from ttforge.ir.train import TrainConfig, calibrate_state, init_state, train_step

    rng = np.random.default_rng(0)
    state = init_state(train_layer_shapes(rng, 1, 1, 1, 16, 8, 4), TrainConfig(prob_bits=24), seed=0, lr_shift=62,
                       in_exp=-50)
    x, y = rng.integers(-128, 128, size=(4, state.in_features)), rng.integers(0, 4, size=4)
    state = calibrate_state(state, x, y, fast=False)
    train_step(state, x, y)
    save_state(state, tmp_path / "s.ttts")
    out = tmp_path / "o"
    rc = main(["generate", "--train", str(tmp_path / "s.ttts"), "--batch", "4", "-o", str(out), "--no-verilog"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and not out.exists(), err
    assert err.startswith("ttforge generate: error: the update of layer 0 core 0 shifts by 129 (")
    assert err.endswith("use lr_shift in 0..60 (the state has 62, which a resume keeps: start a new run from its "
                        "network, ttforge train-int --resume STATE --export A.ttfa, then ttforge train-int --from "
                        "A.ttfa --lr-shift N)")


def test_the_lr_shift_fix_generate_names_runs(tmp_path, monkeypatch, capsys):
    """The commands the update shift's line names work: the state's network exported,
    a new run from it at the top of the range, and generate takes the new state. It
    named 'ttforge train-int --lr-shift', which a resume refuses by design (sibling)."""
    import re

    import numpy as np

    from ttforge.ir.random import train_layer_shapes
    from ttforge.ir.train import TrainConfig, calibrate_state, init_state, train_step

    # 64 inputs and 10 classes: train-int --from trains it on digits
    rng = np.random.default_rng(0)
    state = init_state(train_layer_shapes(rng, 1, 1, 1, 64, 8, 10), TrainConfig(prob_bits=24), seed=0, lr_shift=62,
                       in_exp=-50)
    x, y = rng.integers(0, 17, size=(4, 64)), rng.integers(0, 10, size=4)
    state = calibrate_state(state, x, y, fast=False)
    train_step(state, x, y)
    monkeypatch.chdir(tmp_path)
    save_state(state, "s.ttts")
    assert main(["generate", "--train", "s.ttts", "--batch", "4", "-o", "g0", "--no-verilog"]) == 2
    err = capsys.readouterr().err
    top = re.search(r"use lr_shift in \d+\.\.(\d+) ", err).group(1)
    assert "--from A.ttfa --lr-shift N" in err, err
    assert main(["train-int", "--resume", "s.ttts", "--lr-shift", top, "-o", "r", "--epochs", "1", "--quiet"]) == 2
    assert "--lr-shift" in capsys.readouterr().err and not (tmp_path / "r").exists()
    assert main(["train-int", "--resume", "s.ttts", "--export", "a.ttfa"]) == 0
    assert main(["train-int", "--from", "a.ttfa", "--lr-shift", top, "-o", "new", "--epochs", "1", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["generate", "--train", "new/state.ttts", "--batch", "4", "-o", "g1", "--no-verilog"]) == 0, \
        capsys.readouterr().err
