"""A write that fails (refused, unanswered, answered by another command) may still have
changed the device: a WRITE32 whose type byte was corrupted on the link into a
``WRITE_BURST`` (protocol version 2) wrote its data's high half and its CRC bytes into
the register before its CRC refused it. :class:`~ttforge.firmware.host.Device` then
forgets the loaded model: a later ``infer`` on the same object (library use) is one
line until the next ``load``, where it ran on the half-written device and returned
numbers. A load that fails part-way likewise leaves no model to run, not the one
loaded before it."""

from __future__ import annotations

import numpy as np
import pytest

from ttforge.errors import DeviceError, DeviceTimeout
from ttforge.firmware import protocol as P
from ttforge.firmware.host import Device
from ttforge.hw.config import AccelConfig
from ttforge.ir.executor import execute
from ttforge.quant.qat import compile_network

from tests.support.fakeboard import FakeBoard
from tests.support.nets import small_net

LOST = r"^/dev/fakeUSB0: the .* failed, so what the device's memories .* unknown; load the model again"


@pytest.fixture(scope="module")
def net_x():
    q, x = small_net()
    net = compile_network(q)
    return net, net.quantize_input(x.numpy())[:3]


class _Corrupting:
    """``board``'s transport, with one bit of the CRC of the ``nth`` (1-based) frame of
    request type ``cmd`` flipped: the board drops the frame, the host hears nothing."""

    def __init__(self, board: FakeBoard, cmd: int, nth: int = 1):
        self.board, self.cmd, self.left = board, int(cmd), int(nth)
        self.name, self.default_timeout = board.name, 0.3

    def write(self, data: bytes, timeout: float | None = None) -> None:
        if len(data) > 1 and data[0] == P.END and data[1] == self.cmd:
            self.left -= 1
            if self.left == 0:
                b = bytearray(data)
                b[-2] ^= 0x04 if b[-2] not in (P.END ^ 0x04, P.ESC ^ 0x04) else 0x02
                data = bytes(b)
        self.board.write(data, timeout)

    def read(self, timeout: float) -> bytes:
        return self.board.read(timeout)

    def close(self) -> None:
        pass


def _device(net, nth_write=10**9, cmd=P.Cmd.WRITE32):
    board = FakeBoard(net, AccelConfig.for_network(net, lanes=4, stream_elems=2))
    return Device(_Corrupting(board, cmd, nth_write), timeout=0.3)


def test_a_failed_write_then_infer_refuses_until_the_next_load(net_x):
    net, x = net_x
    dev = _device(net)
    dev.load(net)
    golden = execute(net, x)
    assert np.array_equal(dev.infer(x), golden)
    dev.t.left = 1                                   # the next WRITE32 is lost on the link
    with pytest.raises(DeviceTimeout, match="no answer to WRITE32"):
        dev.write32(dev._reg("IN_COUNT"), 0x1234)
    with pytest.raises(DeviceError, match=LOST) as e:
        dev.infer(x)
    assert "\n" not in str(e.value) and "write of 0x" in str(e.value)
    dev.load(net)
    assert np.array_equal(dev.infer(x), golden)


@pytest.mark.parametrize("cmd", [P.Cmd.WRITE_BURST, P.Cmd.WRITE32])
def test_a_load_that_fails_part_way_leaves_no_model_to_run(net_x, cmd):
    """The second load's second burst (or its first WRITE32, after the bursts) is lost:
    the first load's program is not run on what the second half wrote."""
    net, x = net_x
    dev = _device(net)
    dev.load(net)
    dev.t.cmd, dev.t.left = int(cmd), 2 if cmd == P.Cmd.WRITE_BURST else 1
    with pytest.raises(DeviceTimeout):
        dev.load(net)
    assert dev.program is None
    with pytest.raises(DeviceError, match=LOST):
        dev.infer(x)
    dev.load(net)
    assert np.array_equal(dev.infer(x), execute(net, x))


def test_a_bad_argument_to_write32_forgets_nothing(net_x):
    """Refused before anything was sent: the device is as it was."""
    from ttforge.errors import ConfigError

    net, x = net_x
    dev = _device(net)
    dev.load(net)
    with pytest.raises(ConfigError):
        dev.write32(dev._reg("IN_COUNT"), -1)
    assert dev.load_lost is None
    assert np.array_equal(dev.infer(x), execute(net, x))


def test_a_training_load_that_fails_part_way_leaves_no_state_to_step():
    """TrainDevice: the second load's bursts stop part-way (Ctrl-C, or a write lost on the
    link): a step went on from the first load's program on half-written memories."""
    from ttforge.firmware.train_host import LinkModel, TrainDevice
    from ttforge.hw.trainer.program import fit_engine
    from ttforge.ir.random import train_case

    state, x, y, _ = train_case(1, batch=4, n_layers=2, d=2, rank=2, n_in=8, hidden=6, n_out=3)
    cfg = fit_engine(state, 4, lanes=4)
    model = LinkModel(cfg)
    dev = TrainDevice(model, cfg, timeout=1.0)
    dev.connect()
    dev.load(state, 4)
    real_write, bursts = model.write, []

    def interrupted(data, timeout=None):
        if data[1:2] == bytes([P.Cmd.WRITE_BURST]):
            bursts.append(1)
            if len(bursts) == 2:
                raise KeyboardInterrupt             # Ctrl-C between two bursts of the load
        real_write(data, timeout)

    model.write = interrupted
    with pytest.raises(KeyboardInterrupt):
        dev.load(state, 4)
    model.write = real_write
    for call in (lambda: dev.step(state, x, y), lambda: dev.read_state(state)):
        with pytest.raises(DeviceError, match="the last load did not complete, .* load a state again"):
            call()
    dev.load(state, 4)                    # known again: a step runs as usual
    from ttforge.firmware.train_host import logits_from_trace, maxacc_from_trace
    from ttforge.ir.train import train_step_traced

    _, trace = train_step_traced(state, x, y)
    model.set_step(dev.program, maxacc_from_trace(dev.program, trace), logits_from_trace(trace))
    assert np.array_equal(dev.step(state, x, y, logits=True).logits, logits_from_trace(trace))
