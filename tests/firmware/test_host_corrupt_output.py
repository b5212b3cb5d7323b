"""A vector's output frame that comes corrupt (bad CRC, a flipped or lost byte) is the
board's one-line error at once (exit 3, naming the cable and the baud rate), not "no
output" after the whole timeout; the device resyncs before its next call. So is any of
the output frames of a vector longer than one frame (a start, ``0xA0``, or a
continuation, ``0xA1``)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from ttforge.cli import main
from ttforge.errors import DeviceTimeout, ProtocolError
from ttforge.firmware import protocol as P
from ttforge.firmware.host import Device
from ttforge.hw.config import AccelConfig
from ttforge.ir.executor import execute
from ttforge.quant.qat import compile_network

from tests.support.fakeboard import FakeBoard
from tests.support.nets import small_net, wide_int_network

#: long enough that the old code's "no output" (after the whole timeout) fails the
#: check of the time taken
TIMEOUT = 3.0


def _bad_crc(c: bytes) -> bytes:
    return c[:-1] + bytes([c[-1] ^ 1])


def _flip_element(c: bytes) -> bytes:
    return c[:1] + bytes([c[1] ^ 0x10]) + c[2:]


def _flip_type(c: bytes) -> bytes:
    return bytes([c[0] ^ 0x04]) + c[1:]


def _lose_byte(c: bytes) -> bytes:
    return c[:2] + c[3:]


class DamagingBoard(FakeBoard):
    """A board whose output frames pass ``damage`` (their content: type, elements, CRC)
    on the way to the host; ``damage = None`` sends them whole. Of a vector sent in
    several output frames, frame ``damage_frame`` is damaged."""

    damage = None
    damage_frame = 0

    def output_frame(self, x) -> bytes:
        frames = super().output_frame(x)
        if self.damage is None:
            return frames
        contents = [content for content, ok in P.SlipDecoder().feed(frames)]
        contents[self.damage_frame] = self.damage(contents[self.damage_frame])
        return b"".join(P.slip_encode(c) for c in contents)


@pytest.fixture(scope="module")
def net_x():
    q, x = small_net()
    net = compile_network(q)
    return net, net.quantize_input(x.numpy())[:3]


@pytest.fixture
def board(net_x):
    net, _ = net_x
    return DamagingBoard(net, AccelConfig.for_network(net, lanes=4, stream_elems=2))


@pytest.mark.parametrize("damage, reason", [
    (_bad_crc, r"bad CRC"), (_flip_element, r"bad CRC"), (_flip_type, r"bad CRC"),
    (_lose_byte, r"bad CRC, \d+ bytes where \d+ were due"),
])
def test_a_corrupt_output_frame_is_reported_at_once(board, net_x, damage, reason):
    """It was "no output of vector 0 within 3 s and no error reported", after 3 s."""
    net, x = net_x
    dev = Device(board, timeout=TIMEOUT)
    dev.load(net)
    board.damage = damage
    t0 = time.monotonic()
    with pytest.raises(ProtocolError, match=rf"^/dev/fakeUSB0: vector 0: the board's output frame came "
                                            rf"corrupt \({reason}\); check the cable and that the baud "
                                            r"rate is the bitstream's, then rerun$"):
        dev.infer(x)
    assert time.monotonic() - t0 < TIMEOUT / 2
    assert len(board.vectors) == 1
    # the error leaves the device to resync: the next call gets its own results
    board.damage = None
    assert np.array_equal(dev.infer(x), execute(net, x))


def test_corrupt_frames_of_no_output_are_named_at_the_timeout(board, net_x):
    """Bad frames that cannot be the output (line noise) do not fail the vector; if its
    output never comes, the timeout says they came (the note of `_wait` was dropped)."""
    net, x = net_x
    dev = Device(board, timeout=0.5)
    dev.load(net)
    board.damage = lambda c: b""      # the output frame is lost ...
    board.send(P.slip_encode(b"\x01\x02\x03"), delay=0.1)   # ... and noise comes after it was sent
    with pytest.raises(DeviceTimeout, match=r"no output of vector 0 within 0.5 s and no error reported "
                                            r"\(1 corrupt frames received, the last: bad CRC\)$"):
        dev.infer(x[0])


def test_run_exits_3_with_one_line_and_writes_nothing(board, net_x, artifact, tmp_path, monkeypatch, capsys):
    net, _ = net_x
    board.damage = _bad_crc
    monkeypatch.setattr(Device, "open_serial",
                        classmethod(lambda cls, port, baud, timeout: cls(board, timeout=timeout)))
    out = tmp_path / "y.npy"
    t0 = time.monotonic()
    assert main(["run", "--board", "ulx3s", "--port", "/dev/fakeUSB0", "--timeout", str(TIMEOUT),
                 str(artifact / "small.ttfa"), str(artifact / "x.npy"), "-o", str(out)]) == 3
    assert time.monotonic() - t0 < TIMEOUT / 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "output frame came corrupt (bad CRC); check the cable" in err, err
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------- a vector whose output takes several frames

@pytest.fixture(scope="module")
def wide_net():
    return wide_int_network()


@pytest.fixture
def wide(wide_net):
    net, x = wide_net
    board = DamagingBoard(net, AccelConfig.for_network(net, lanes=4, stream_elems=2))
    dev = Device(board, timeout=TIMEOUT)
    dev.load(net)
    return board, dev, x[:1]


@pytest.mark.parametrize("frame, got, size", [(0, "", 4095), (1, r" \(after 4092 of its 5000 elements\)", 911)])
@pytest.mark.parametrize("damage, reason", [
    (_bad_crc, r"bad CRC"), (_flip_element, r"bad CRC"), (_flip_type, r"bad CRC"),
    (_lose_byte, r"bad CRC, {} bytes where {} were due"),
])
def test_a_corrupt_frame_of_a_long_output_is_reported_at_once(wide, wide_net, frame, got, size, damage, reason):
    """The start (4,092 bytes of elements) or the continuation (908 bytes) of a 5,000-element
    output: of its type (0xA0 / 0xA1) or its length, the vector's output is lost."""
    board, dev, x = wide
    assert [len(f.data) for f in P.Parser().feed(board.output_frame(x[0]))] == [4092, 908]
    board.damage, board.damage_frame = damage, frame
    t0 = time.monotonic()
    with pytest.raises(ProtocolError, match=rf"^/dev/fakeUSB0: vector 0: the board's output frame{got} came "
                                            rf"corrupt \({reason.format(size - 1, size)}\); check the cable"):
        dev.infer(x)
    assert time.monotonic() - t0 < TIMEOUT / 2
    board.damage = None
    assert np.array_equal(dev.infer(x), execute(wide_net[0], x))


def test_a_lost_continuation_is_named_at_the_timeout_with_the_noise(wide):
    board, dev, x = wide
    board.damage, board.damage_frame = (lambda c: b""), 1
    board.send(P.slip_encode(b"\x01\x02\x03"), delay=0.1)
    with pytest.raises(DeviceTimeout, match=r"no output of vector 0 \(after 4092 of its 5000 elements\) within "
                                            r"0.5 s and no error reported \(1 corrupt frames received, the "
                                            r"last: bad CRC\)$"):
        dev.infer(x, timeout=0.5)
