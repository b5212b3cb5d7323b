"""``ttforge train-board``: every user error is one line and exit status 2 with nothing
written; on the simulated board an interrupted run resumed from its last checkpoint ends
in the bytes of the golden trainer's uninterrupted run (slow); the bridge RTL answers at
divisor 25 (2,000,000 baud at 50 MHz) on the simulated training board (slow)."""

from __future__ import annotations

import os
import re
import shutil
import sys
from argparse import Namespace

import numpy as np
import pytest

from ttforge.cli import main

needs_icarus = pytest.mark.skipif(shutil.which("iverilog") is None, reason="needs Icarus Verilog")


def _digits():
    pytest.importorskip("sklearn")
    pytest.importorskip("torch")
    from ttforge.model.train_int import load_numpy
    return load_numpy("digits")


@pytest.fixture(scope="module")
def digits_state(tmp_path_factory):
    """A small digits state (64 -> TT 8 -> 10) saved as ``state.ttts``, and the data."""
    from ttforge.ir.arith import quantize
    from ttforge.ir.train import TrainConfig, calibrate_state, init_state
    from ttforge.ir.train_loop import tt_layers
    from ttforge.ir.train_state import save_state

    _, x, y, _, _ = data = _digits()
    shapes = tt_layers(Namespace(hidden=8, cores=2, ranks=2, in_modes=[8, 8], out_modes=[2, 4]), 64, 10, True)
    cfg = TrainConfig()
    st = init_state(shapes, cfg, seed=0, lr_shift=6, in_exp=-(cfg.act_bits - 1))
    xq = quantize(np.asarray(x, dtype=np.float64), cfg.act_bits, st.in_exp)
    st = calibrate_state(st, xq[:32], np.asarray(y[:32], dtype=np.int64))
    st = st.replace(meta={"batch": 4, "seed": 0})
    path = tmp_path_factory.mktemp("tb") / "state.ttts"
    save_state(st, path)
    return path, st, data


def _one_line_error(capsys, argv, match):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and match in err, err
    return err


@pytest.mark.parametrize("extra, match", [
    ([], "give --port PORT"),
    (["--sim", "--data", "mnist"], "--data mnist needs --mnist-dir"),
    (["--sim", "--mnist-dir", "x"], "--mnist-dir is for --data mnist"),
    (["--sim", "--steps", "0"], "--steps 0 must be in 1.."),
    (["--sim", "--checkpoint-every", "-1"], "--checkpoint-every -1"),
    (["--sim", "--batch", "0"], "--batch 0"),
    (["--sim", "--timeout", "0"], "--timeout 0"),
    (["--sim", "--timeout", "1e300"], "--timeout 1e+300 must be a number of seconds in (0, 86,400]"),
])
def test_bad_arguments_are_one_line(capsys, tmp_path, digits_state, extra, match):
    path, _, _ = digits_state
    out = tmp_path / "o.ttts"
    _one_line_error(capsys, ["train-board", str(path), "-o", str(out), *extra], match)
    assert not out.exists()


def test_bad_paths_are_one_line(capsys, tmp_path, digits_state):
    path, _, _ = digits_state
    _one_line_error(capsys, ["train-board", str(path), "--sim", "-o", str(tmp_path)], "is a directory")
    _one_line_error(capsys, ["train-board", str(path), "--sim", "-o", str(path)], "the input")
    _one_line_error(capsys, ["train-board", str(tmp_path / "none.ttts"), "--sim", "-o", str(tmp_path / "o.ttts")],
                    "does not exist")
    # --resume needs a run to resume: none at all, or a state that is not one
    _one_line_error(capsys, ["train-board", str(path), "--sim", "--resume", "-o", str(tmp_path / "o.ttts")],
                    "no run to resume")
    shutil.copy(path, tmp_path / "o.ttts")
    _one_line_error(capsys, ["train-board", str(path), "--sim", "--resume", "-o", str(tmp_path / "o.ttts")],
                    "drop --resume")


def test_a_missing_port_and_a_state_that_does_not_fit_the_data_are_one_line(capsys, tmp_path, digits_state):
    from ttforge.ir.random import train_case
    from ttforge.ir.train_state import save_state

    path, _, _ = digits_state
    out = tmp_path / "o.ttts"
    _one_line_error(capsys, ["train-board", str(path), "--port", str(tmp_path / "ttyNONE"), "-o", str(out)],
                    "--port")
    st, *_ = train_case(0, batch=4, n_layers=2, d=2, rank=2, n_in=8, hidden=6, n_out=3)
    save_state(st, tmp_path / "small.ttts")
    _one_line_error(capsys, ["train-board", str(tmp_path / "small.ttts"), "--sim", "-o", str(out)],
                    "takes 8 inputs but the data has 64 features")
    assert not out.exists()


@pytest.fixture
def no_board(monkeypatch):
    """The board is never opened: reaching it is an internal error (exit 70), so a test
    that expects a refusal before any work fails fast instead of simulating."""
    import ttforge.firmware.train_board as tb

    def opened(*a, **k):
        raise AssertionError("the run reached the board")

    monkeypatch.setattr(tb, "open_train_device", opened)


def _checkpoint(path, origin_path, step=2, **edits):
    """A train-board checkpoint of the run from ``origin_path`` at ``step`` (target step
    3, batch 4, seed 0), its ``board_run`` record edited (``None``: key removed), as the
    probe did by unzipping the .ttts and editing manifest.json's meta."""
    import hashlib

    from ttforge.ir.train_state import dumps_state, load_state, save_state

    origin = load_state(origin_path)
    run = {"start_step": 0, "start_epoch": 0, "data": "digits", "batch": 4, "seed": 0, "lanes": 4,
           "target_step": 3, "origin": hashlib.sha256(dumps_state(origin)).hexdigest()}
    for k, v in edits.items():
        if v is None:
            del run[k]
        else:
            run[k] = v
    save_state(origin.replace(step=step, meta={**origin.meta, "board_run": run}), path)
    return path.read_bytes()


@pytest.mark.parametrize("edits, match", [
    ({"seed": -5}, "board_run.seed = -5 is out of range"),
    ({"seed": 2 ** 80}, "board_run.seed = 1208925819614629174706176 is out of range 0..9,223,372,036,854,775,807"),
    ({"seed": True}, "board_run.seed = True must be an integer"),
    ({"start_epoch": None}, "board_run.start_epoch is missing"),
    ({"start_step": "0"}, "board_run.start_step = '0' must be an integer"),
    ({"batch": 10 ** 6}, "board_run.batch = 1000000 is out of range 1..4,096"),
    ({"lanes": 0}, "board_run.lanes = 0 is out of range"),
    ({"target_step": None}, "board_run.target_step is missing"),
    ({"target_step": 0}, "board_run.target_step = 0"),
    ({"start_step": 5, "target_step": 4}, "board_run.target_step = 4 must be after start_step (5)"),
    ({"start_step": 3, "target_step": 9}, "is at step 2, outside its run"),
    ({"target_step": 10 ** 12}, "board_run.target_step = 1000000000000 makes the run longer"),
    ({"data": "cifar"}, "board_run.data = 'cifar' must be one of"),
    ({"origin": "x" * 64}, "board_run.origin = "),
    ({"origin": None}, "board_run.origin is missing"),
    ({"extra": 1}, "board_run.'extra' is not a key"),
    # the origin's own counters: another start takes other batches than the interrupted run
    ({"start_step": 1}, "board_run.start_step = 1, but the state the run started from is at step 0"),
    ({"start_epoch": 2}, "board_run.start_epoch = 2, but the state the run started from is at epoch 0"),
])
def test_a_hostile_run_record_is_one_line_naming_the_checkpoint_and_key(capsys, tmp_path, digits_state, no_board,
                                                                          edits, match):
    path, _, _ = digits_state
    out = tmp_path / "run.ttts"
    before = _checkpoint(out, path, **edits)
    err = _one_line_error(capsys, ["train-board", str(path), "--sim", "--resume", "-o", str(out)], match)
    assert f"-o {out}" in err
    assert out.read_bytes() == before           # nothing written


def test_resume_goes_to_the_recorded_end_and_refuses_another(capsys, tmp_path, digits_state, monkeypatch):
    """Started with --steps 3 (target step 3), resumed at step 2 without a length: one step
    more, not an epoch; a length that ends elsewhere is one line naming both ends."""
    import contextlib

    import ttforge.firmware.train_board as tb
    import ttforge.firmware.train_host as th

    path, _, _ = digits_state
    out = tmp_path / "run.ttts"
    before = _checkpoint(out, path)
    base = ["train-board", str(path), "--sim", "--resume", "--quiet", "-o", str(out)]
    steps = []

    def trains(dev, state, batches, **k):
        steps.extend(batches)
        raise KeyboardInterrupt

    monkeypatch.setattr(tb, "open_train_device", lambda *a, **k: contextlib.nullcontext())
    monkeypatch.setattr(th, "train_on_device", trains)
    main(base)
    assert len(steps) == 1                   # step 2 -> 3, the recorded end (before: 2 -> 360, one epoch)
    main([*base, "--steps", "3"])            # the length it was started with: the same end
    assert len(steps) == 2
    capsys.readouterr()
    _one_line_error(capsys, [*base, "--steps", "5"], "ends the run at step 5, but the run being resumed ends at step 3")
    _one_line_error(capsys, [*base, "--epochs", "1"], "ends the run at step 360, but the run being resumed ends at "
                                                      "step 3")
    assert out.read_bytes() == before


def test_resume_refuses_a_state_that_is_not_the_runs_origin(capsys, tmp_path, digits_state, no_board):
    from ttforge.ir.random import train_case
    from ttforge.ir.train_state import load_state, save_state

    path, _, _ = digits_state
    out = tmp_path / "run.ttts"
    before = _checkpoint(out, path)
    st, *_ = train_case(0, batch=4, n_layers=2, d=2, rank=2, n_in=8, hidden=6, n_out=3)
    save_state(st, tmp_path / "other.ttts")              # another network
    _one_line_error(capsys, ["train-board", str(tmp_path / "other.ttts"), "--sim", "--resume", "-o", str(out)],
                    "is not the state of the run in -o")
    save_state(load_state(path).replace(lr_shift=5), tmp_path / "same.ttts")   # the same network, other values
    _one_line_error(capsys, ["train-board", str(tmp_path / "same.ttts"), "--sim", "--resume", "-o", str(out)],
                    "is not the state the run in -o")
    assert out.read_bytes() == before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc takes no new files (Linux)")
def test_an_output_that_cannot_be_written_is_refused_before_any_work(capsys, tmp_path, digits_state, no_board):
    """Also as root: /proc takes no new file (before, the whole run went by, then the write
    failed and the trained state was lost)."""
    path, _, _ = digits_state
    for out in ("/proc/run.ttts", "/proc/none/run.ttts"):
        _one_line_error(capsys, ["train-board", str(path), "--sim", "-o", out], f"-o {out} cannot be written")
    if os.geteuid() != 0:                   # root writes into a read-only directory anyway
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        try:
            _one_line_error(capsys, ["train-board", str(path), "--sim", "-o", str(ro / "run.ttts")],
                            "cannot be written")
            _one_line_error(capsys, ["train-board", str(path), "--sim", "-o", str(ro / "new" / "run.ttts")],
                            "cannot be written")
        finally:
            ro.chmod(0o755)
        assert list(ro.iterdir()) == []


@pytest.mark.slow
@needs_icarus
def test_an_interrupted_run_resumed_ends_in_the_uninterrupted_golden_bytes(capsys, tmp_path, digits_state,
                                                                          monkeypatch):
    from ttforge.firmware.train_cli import run_batches
    from ttforge.firmware.train_host import TrainDevice
    from ttforge.ir.arith import quantize
    from ttforge.ir.train import train_step
    from ttforge.ir.train_state import dumps_state, load_state

    path, st, (_, x, y, _, _) = digits_state
    out = tmp_path / "run.ttts"
    argv = ["train-board", str(path), "--sim", "--steps", "3", "--checkpoint-every", "2", "--quiet", "-o", str(out)]
    real = TrainDevice.step
    calls = []

    def dies_at_the_third(self, *a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(TrainDevice, "step", dies_at_the_third)
    assert main(argv) != 0
    monkeypatch.setattr(TrainDevice, "step", real)
    assert load_state(out).step == 2              # the checkpoint, whole
    capsys.readouterr()
    assert main([*argv, "--resume", "--check"]) == 0
    assert "yes, byte for byte" in capsys.readouterr().out
    final = load_state(out)
    xq = quantize(np.asarray(x, dtype=np.float64), st.config.act_bits, st.in_exp)
    gold = st
    for xb, yb in run_batches(xq, np.asarray(y, dtype=np.int64), 4, 0, 0, 0, 3):
        gold = train_step(gold, xb, yb)
    assert final.step == 3
    assert dumps_state(final) == dumps_state(gold.replace(meta=final.meta, epoch=final.epoch))


@pytest.mark.slow
@needs_icarus
def test_the_bridge_answers_at_divisor_25_on_the_simulated_training_board(tmp_path):
    from ttforge.firmware.train_board import simulated_train_device
    from ttforge.hw.trainer.program import fit_engine
    from ttforge.ir.random import train_case

    st, *_ = train_case(0, batch=4, n_layers=2, d=2, rank=2, n_in=8, hidden=6, n_out=3)
    cfg = fit_engine(st, 4, lanes=4)
    # 2,000,000 baud at 50 MHz: 25 clock cycles per bit (a 20 ns clock here)
    with simulated_train_device(cfg, divisor=25, clk_ns=20, build_dir=tmp_path) as dev:
        info = dev.connect()           # PING and every CFG register, at divisor 25
        assert info["elem_bytes"] == 1 and info["stream_elems"] == 1
        words = [0x12, -5 & 0xFFFFFFFF, 0xC0, 0xDB]     # SLIP's END and ESC among them
        dev.host.write_window("CMEM", 0, words)
        assert dev.host.read_window("CMEM", 0, 4) == [0x12, -5, 0xC0 - 256, 0xDB - 256]


def test_an_output_never_replaces_the_data_files_it_reads(capsys, tmp_path, digits_state, no_board):
    """``-o`` naming the IDX label file of ``--mnist-dir`` replaced it with the trained
    state (exit 0): the files the loader reads are inputs, checked before the run."""
    from tests.support.data import write_pair

    path, _, _ = digits_state
    write_pair(tmp_path, "t10k", 20)
    labels = tmp_path / "t10k-labels-idx1-ubyte"
    before = labels.read_bytes()
    _one_line_error(capsys, ["train-board", str(path), "--sim", "--data", "mnist", "--mnist-dir", str(tmp_path),
                             "-o", str(labels)], "is the input")
    assert labels.read_bytes() == before


@pytest.mark.parametrize("target, message", [("loop", "is a loop of symbolic links (ELOOP"),
                                             ("missing", "is a symbolic link to missing, which does not exist")])
def test_a_broken_link_as_mnist_dir_is_named_with_the_flag(capsys, tmp_path, digits_state, no_board, target,
                                                           message):
    """``--mnist-dir`` naming a loop of symbolic links (or a link to a missing path) said
    "data='loop': loop does not exist": it names the flag and what the link is."""
    path, _, _ = digits_state
    os.symlink(target, tmp_path / "loop")
    err = _one_line_error(capsys, ["train-board", str(path), "--sim", "--data", "mnist", "--mnist-dir",
                                   str(tmp_path / "loop"), "-o", str(tmp_path / "out.ttts")], message)
    assert err.startswith(f"ttforge train-board: error: --mnist-dir {tmp_path / 'loop'} "), err
    assert not (tmp_path / "out.ttts").exists()


def test_mnist_dir_named_digits_is_a_directory(capsys, tmp_path, monkeypatch, digits_state, no_board):
    """``--data mnist --mnist-dir digits`` trained on the embedded digits set (the loader
    read "digits" as that set's name), whether or not a directory ``digits`` existed."""
    path, _, _ = digits_state
    monkeypatch.chdir(tmp_path)
    _one_line_error(capsys, ["train-board", str(path), "--sim", "--data", "mnist", "--mnist-dir", "digits",
                             "-o", "out.ttts"], "--mnist-dir digits does not exist; give a directory holding")


def test_a_simulated_run_states_its_length_before_the_first_step_and_its_time_after_two(
        capsys, tmp_path, digits_state, monkeypatch):
    """`train-board --sim` said nothing of its length: batch 64 of this state did not
    finish one step in 120 s (probe M6). Before the first step: the steps and the engine
    cycles of each (exact, from the program); after two: the time a step takes and the
    rest's."""
    import contextlib

    import ttforge.firmware.train_board as tb
    import ttforge.firmware.train_host as th
    from ttforge.firmware.train_host import StepInfo

    path, _, _ = digits_state
    seen = []

    def trains(dev, state, batches, on_step, **k):
        seen.append(capsys.readouterr().err)   # what was said before the first step
        for i in range(3):
            on_step(StepInfo(state.step + i + 1, 4 * (i + 1), None, None, 0, 0, 30.0 * (i + 1)))
        raise KeyboardInterrupt

    monkeypatch.setattr(tb, "open_train_device", lambda *a, **k: contextlib.nullcontext())
    monkeypatch.setattr(th, "train_on_device", trains)
    main(["train-board", str(path), "--sim", "--quiet", "--batch", "4", "--steps", "10", "-o",
          str(tmp_path / "run.ttts")])
    before, after = seen[0], " ".join(capsys.readouterr().err.split())
    assert re.search(r"10 steps of batch 4 on the simulated board, [\d,]+ engine cycles a step", before), before
    assert "30.0 s a step measured over 2; about 4 min for the 8 steps left" in after, after
    assert after.count("measured over") == 1
