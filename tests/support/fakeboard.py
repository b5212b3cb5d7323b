"""A board in Python behind the :class:`~ttforge.firmware.host.Transport` interface, for
the host driver's tests: the register file of an :class:`AccelConfig` (every constant
register at its value), the bridge's answers and, per STREAM_IN, the golden executor's
output frame. Its attributes make it misbehave the way a real board or line can
(``ping_info``, ``regs``, ``stream_count``, ``extra_output``, ``output_delay``,
``answer_delay``, ``output_pieces``). As the bridge, it answers a request type no command
has with ``BAD_CMD``, sends its answers in order, reads ``STATUS.BUSY`` while an output
is still to come and drops that output on ``CMD.SOFT_RESET``. A vector longer than one frame holds comes in several STREAM_IN
frames and goes out in several output frames, as through the bridge.

It answers in the calling thread (no pty, no timing): a frame it sends "late" is
released by :meth:`FakeBoard.read` only once its time has come.
"""

from __future__ import annotations

import struct
import time

import numpy as np

from ttforge.firmware import protocol as P
from ttforge.firmware.protocol import Cmd, Response, Status
from ttforge.hw.config import stream_lane_bits
from ttforge.hw.regmap import RegisterMap
from ttforge.ir.executor import execute

__all__ = ["FakeBoard"]


class FakeBoard:
    """The transport of a board that runs ``net`` on a bitstream of ``config``."""

    default_timeout = 1.0

    def __init__(self, net, config, name: str = "/dev/fakeUSB0"):
        self.name = name
        self.net, self.config = net, config
        rm = RegisterMap(config)
        self.addr = rm.addr
        #: the register file (writes are kept; the constant registers at their values)
        self.regs = {r.addr: r.value for r in rm.registers if r.value is not None}
        self.elem_bytes = stream_lane_bits(config.act_bits) // 8
        #: PING's version, elem_bytes, stream_elems, addr_bits
        self.ping_info = [P.PROTOCOL_VERSION, self.elem_bytes, config.stream_elems, rm.addr_bits]
        self.stream_count = None          # STREAM_IN's count answer (None: the elements taken)
        self.extra_output = 0             # send each output frame this many more times
        self.output_delay = 0.0           # seconds before an output frame is sent
        self.answer_delay = 0.0           # seconds before an answer is sent (answers keep their order)
        self._last_answer = 0.0           # when the last answer is sent
        self._busy_until = 0.0            # STATUS.BUSY until the last output frame is sent
        #: a vector's output frames as ``[(data, cont), ...]`` -> the frames to send instead
        self.output_pieces = None
        self.vectors: list[list[int]] = []
        self.stream_frames: list[int] = []  # the element count of every STREAM_IN frame
        self._partial: list[int] = []       # a vector whose last STREAM_IN frame is to come
        self._dec = P.SlipDecoder()
        self._pending: list[tuple[float, bytes]] = []   # (when, bytes) not yet readable

    def set_reg(self, name: str, value: int) -> None:
        self.regs[self.addr(name)] = value & 0xFFFFFFFF

    def send(self, data: bytes, delay: float = 0.0) -> None:
        """Bytes to the host, readable after ``delay`` s."""
        self._pending.append((time.monotonic() + delay, data))

    # ---------------------------------------------------------------- the transport
    def write(self, data: bytes, timeout: float | None = None) -> None:
        for content, ok in self._dec.feed(data):
            if ok and len(content) > P.CRC_BYTES and P.crc16(content) == 0:
                self._handle(content[0], content[1:-P.CRC_BYTES])

    def read(self, timeout: float) -> bytes:
        end = time.monotonic() + max(0.0, timeout)
        while True:
            now = time.monotonic()
            ready = [d for t, d in self._pending if t <= now]
            if ready:
                self._pending = [(t, d) for t, d in self._pending if t > now]
                return b"".join(ready)
            if now >= end:
                return b""
            time.sleep(min(0.005, end - now))

    def close(self) -> None:
        pass

    # ---------------------------------------------------------------- the board
    def _answer(self, r: Response | bytes) -> None:
        # the bridge sends its answers in the order of the requests: a late one holds
        # back the ones after it
        data = r if isinstance(r, bytes) else P.encode_response(r)
        self._last_answer = max(time.monotonic() + self.answer_delay, self._last_answer)
        self._pending.append((self._last_answer, data))

    def _handle(self, t: int, body: bytes) -> None:
        if t == Cmd.PING:
            self._answer(Response(Cmd.PING, Status.OK, info=tuple(self.ping_info)))
        elif t == Cmd.READ32:
            (a,) = struct.unpack("<I", body[:4])
            v = self.regs.get(a, 0)
            if a == self.addr("STATUS") and time.monotonic() < self._busy_until:
                v |= 1                    # BUSY: an output is still to come
            self._answer(Response(Cmd.READ32, Status.OK, data=v))
        elif t == Cmd.WRITE32:
            a, d = struct.unpack("<II", body[:8])
            self.regs[a] = d
            if a == self.addr("CMD") and d & 1:     # SOFT_RESET: the output to come is dropped
                now = time.monotonic()
                self._pending = [(w, b) for w, b in self._pending if w <= now or not all(
                    isinstance(f, P.OutputFrame) for f in P.Parser().feed(b))]
                self._busy_until = 0.0
                self._partial = []                  # as the RTL: a partial input vector goes
            self._answer(Response(Cmd.WRITE32, Status.OK))
        elif t == Cmd.WRITE_BURST:
            _, n = struct.unpack("<IH", body[:6])
            self._answer(Response(Cmd.WRITE_BURST, Status.OK, count=n))
        elif t == Cmd.STREAM_IN:
            (n,) = struct.unpack("<H", body[:2])
            # as the bridge: bit 15 says the vector goes on in the next STREAM_IN frame
            more, n = bool(n & P.STREAM_MORE), n & ~P.STREAM_MORE
            self._partial += P.unpack_elements(body[2:], self.elem_bytes)
            self.stream_frames.append(n)
            count = n if self.stream_count is None else self.stream_count
            self._answer(Response(Cmd.STREAM_IN, Status.OK, count=count))
            if not more:
                x, self._partial = self._partial, []
                self.vectors.append(x)
                self.send(self.output_frame(x) * (1 + self.extra_output), self.output_delay)
                self._busy_until = max(self._busy_until, time.monotonic() + self.output_delay)
        else:    # a request type no command has (a resync marker): its type | 0x80, BAD_CMD
            self._answer(P.encode_request(t | 0x80, bytes([Status.BAD_CMD])))

    def output_frame(self, x) -> bytes:
        """The frames the board sends for input vector ``x``: the golden output, padded
        to whole beats, in pieces as the bridge splits it (``protocol.output_frames``)."""
        y = [int(v) for v in execute(self.net, np.array([x], dtype=np.int64))[0]]
        E = self.config.stream_elems
        y += [0] * (-len(y) % E)
        frames = P.output_frames(P.pack_elements(y, self.elem_bytes), self.elem_bytes, E)
        if self.output_pieces is None:
            return frames
        pieces = [(f.data, f.cont) for f in P.Parser().feed(frames)]
        return b"".join(P.encode_output(d, cont=c) for d, c in self.output_pieces(pieces))
