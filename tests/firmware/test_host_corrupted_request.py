"""A request whose type was corrupted on the link is refused by the bridge as of an unknown
type ``t``, answered ``t | 0x80``, ``BAD_CMD``. The host names that instead of "no
answer": a refusal of type ``0xA0``/``0xA1`` reads as an output frame (a WRITE32 with
bit 5 flipped, 0x21, in protocol version 2), and one of a command's type with bit 7 set
(a STREAM_IN's 0x84) as a malformed response; both were "no answer to WRITE32 within
10 s; check the port, the baud rate..." (or "no answer to STREAM_IN (1 corrupt frames
received)") although the board had answered."""

from __future__ import annotations

import numpy as np
import pytest

from ttforge.errors import DeviceTimeout, ProtocolError
from ttforge.firmware import protocol as P
from ttforge.firmware.host import Device
from ttforge.hw.config import AccelConfig
from ttforge.ir.executor import execute
from ttforge.quant.qat import compile_network

from tests.support.fakeboard import FakeBoard
from tests.support.nets import small_net


@pytest.fixture(scope="module")
def net_x():
    q, x = small_net()
    net = compile_network(q)
    return net, net.quantize_input(x.numpy())[:2]


class _Retyping:
    """``board``'s transport; the next request of type ``cmd`` goes out with type
    ``new`` (and a CRC that checks: the bridge refuses an unknown type whatever its CRC)."""

    def __init__(self, board: FakeBoard):
        self.board, self.cmd, self.new = board, None, None
        self.name, self.default_timeout = board.name, 0.5

    def write(self, data: bytes, timeout: float | None = None) -> None:
        if self.cmd is not None and len(data) > 1 and data[0] == P.END and data[1] == self.cmd:
            ((content, _),) = P.SlipDecoder().feed(data)
            data = P.encode_request(self.new, content[1:-P.CRC_BYTES])
            self.cmd = None
        self.board.write(data, timeout)

    def read(self, timeout: float) -> bytes:
        return self.board.read(timeout)

    def close(self) -> None:
        pass


def _loaded(net):
    link = _Retyping(FakeBoard(net, AccelConfig.for_network(net, lanes=4, stream_elems=2)))
    dev = Device(link, timeout=0.5)
    dev.load(net)
    return dev, link


def test_a_refusal_that_reads_as_an_output_frame_is_named(net_x):
    net, x = net_x
    dev, link = _loaded(net)
    link.cmd, link.new = P.Cmd.WRITE32, 0x21               # answered 0xA1: an output continuation
    with pytest.raises(DeviceTimeout, match=r"^/dev/fakeUSB0: no answer to WRITE32 within 0.5 s, but an "
                                            r"output frame came while no vector was in flight \(output frame "
                                            r"\(continuation\) of 1 bytes\): the request was corrupted on the "
                                            r"link .* then rerun$") as e:
        dev.write32(dev._reg("IN_COUNT"), 3)
    assert "\n" not in str(e.value)
    dev.load(net)                                          # the link is in step again
    assert np.array_equal(dev.infer(x), execute(net, x))


@pytest.mark.parametrize("cmd", [P.Cmd.STREAM_IN, P.Cmd.WRITE32, P.Cmd.READ32])
def test_a_command_refused_with_bit_7_set_is_named_at_once(net_x, cmd):
    net, x = net_x
    dev, link = _loaded(net)
    link.cmd, link.new = cmd, cmd | 0x80
    what = {P.Cmd.STREAM_IN: r"vector 0: STREAM_IN", P.Cmd.WRITE32: "WRITE32", P.Cmd.READ32: "READ32"}[cmd]
    with pytest.raises(ProtocolError, match=rf"^/dev/fakeUSB0: {what}: the board refused the request as one "
                                            rf"of an unknown type \(answer to request type 0x{cmd | 0x80:02X}: "
                                            r"BAD_CMD\): it was corrupted on the link; check the cable .* rerun$"):
        if cmd == P.Cmd.STREAM_IN:
            dev.infer(x)
        elif cmd == P.Cmd.WRITE32:
            dev.write32(dev._reg("IN_COUNT"), 3)
        else:
            dev.read32(dev._reg("IN_COUNT"))
    dev.load(net)
    assert np.array_equal(dev.infer(x), execute(net, x))
