"""``ttforge train-board``: every user error is one line and exit status 2 with nothing
written; on the simulated board an interrupted run resumed from its last checkpoint ends
in the bytes of the golden trainer's uninterrupted run (slow); the bridge RTL answers at
divisor 25 (2,000,000 baud at 50 MHz) on the simulated training board (slow)."""

from __future__ import annotations

import shutil
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
