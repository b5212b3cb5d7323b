"""The UART bridge protocol, sans I/O (``docs/boards.md``, "Protocol").

Pure functions and classes that turn requests into bytes and bytes into responses; no
serial port, no clock, no threads. The transports (:mod:`ttforge.firmware.host`) move
the bytes; the RTL bridge (:mod:`ttforge.firmware.uart`) implements the device side of
the same specification.

Framing is SLIP (RFC 1055): a frame is its content with ``END`` (0xC0) and ``ESC``
(0xDB) bytes escaped (``ESC ESC_END`` / ``ESC ESC_ESC``), preceded and followed by one
``END``. The content is ``type, payload..., crc`` where ``crc`` is CRC-8 (polynomial
0x07, initial value 0, no reflection, no final XOR: CRC-8/SMBUS) of ``type`` and the
payload. Multi-byte fields are little-endian. A host resynchronises by sending ``END``:
the device drops any partial frame, and an empty frame is ignored.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
from typing import Iterable, Iterator

from ttforge.errors import ConfigError, ProtocolError

__all__ = [
    "END", "ESC", "ESC_END", "ESC_ESC", "PROTOCOL_VERSION", "Cmd", "Status", "OUTPUT_TYPE",
    "crc8", "slip_encode", "SlipDecoder", "encode_request", "encode_response",
    "write32", "read32", "write_burst", "stream_in", "ping",
    "Response", "OutputFrame", "BadFrame", "Parser", "ProtocolError",
    "MAX_BURST", "MAX_STREAM", "MAX_FRAME_BYTES", "pack_elements", "unpack_elements", "split_bursts",
]

END, ESC, ESC_END, ESC_ESC = 0xC0, 0xDB, 0xDC, 0xDD
PROTOCOL_VERSION = 1
#: largest WRITE_BURST (words) and STREAM_IN (elements) in one frame (u16 count fields)
MAX_BURST = 0xFFFF
MAX_STREAM = 0xFFFF


class Cmd(enum.IntEnum):
    """Request types. A response has type ``cmd | 0x80``."""
    WRITE32 = 0x01      # addr u32, data u32           -> status, resp
    READ32 = 0x02       # addr u32                     -> status, resp, data u32
    WRITE_BURST = 0x03  # addr u32, n u16, n x u32     -> status, resp, done u16
    STREAM_IN = 0x04    # n u16, n elements            -> status, done u16
    PING = 0x05         # (nothing)                    -> status, version, elem_bytes,
    #                                                     stream_elems, addr_bits


#: type of the frame that carries one output vector (every lane of every m_axis beat)
OUTPUT_TYPE = 0xA0


class Status(enum.IntEnum):
    """The bridge's own status byte of a response (0: the command ran)."""
    OK = 0
    BAD_CRC = 1       # the frame's CRC did not check (WRITE32/READ32 were not executed)
    BAD_LENGTH = 2    # the frame is shorter or longer than its command needs
    BAD_CMD = 3       # unknown command type
    STALL = 4         # STREAM_IN: the core did not take an element in time; vector aborted
    TIMEOUT = 5       # the AXI4-Lite slave did not answer in time
    OVERRUN = 6       # bytes were lost (receive FIFO overflow or UART framing error)


_RESP_LEN = {Cmd.WRITE32: 2, Cmd.READ32: 6, Cmd.WRITE_BURST: 4, Cmd.STREAM_IN: 3, Cmd.PING: 5}
#: AXI response names
AXI_RESP = {0: "OKAY", 1: "EXOKAY", 2: "SLVERR", 3: "DECERR"}


# ------------------------------------------------------------------ CRC and SLIP

def _crc_table() -> list[int]:
    t = []
    for b in range(256):
        c = b
        for _ in range(8):
            c = ((c << 1) ^ 0x07) & 0xFF if c & 0x80 else (c << 1) & 0xFF
        t.append(c)
    return t


_CRC = _crc_table()


def crc8(data: Iterable[int], crc: int = 0) -> int:
    """CRC-8/SMBUS (poly 0x07, init 0). ``crc8(m + bytes([crc8(m)])) == 0``."""
    for b in data:
        crc = _CRC[(crc ^ b) & 0xFF]
    return crc


def slip_encode(content: bytes) -> bytes:
    """``END``, the escaped content, ``END``."""
    out = bytearray([END])
    for b in content:
        if b == END:
            out += bytes([ESC, ESC_END])
        elif b == ESC:
            out += bytes([ESC, ESC_ESC])
        else:
            out.append(b)
    out.append(END)
    return bytes(out)


#: The longest frame content a decoder keeps: an output frame of :data:`MAX_STREAM`
#: 32-bit elements and its header. A longer frame is bad and only its first this many
#: bytes are kept (a port that babbles without a frame delimiter grew the host without
#: bound for the whole ``--timeout``).
MAX_FRAME_BYTES = 4 * MAX_STREAM + 16


class SlipDecoder:
    """Incremental SLIP decoder: :meth:`feed` bytes, get complete frame contents.

    Empty frames are dropped; an invalid escape marks the frame ``bad``, and so does a
    content longer than :data:`MAX_FRAME_BYTES`, of which the rest is dropped (either is
    returned as a :class:`BadFrame` by :class:`Parser`)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._esc = False
        self._bad = False

    def feed(self, data: bytes) -> list[tuple[bytes, bool]]:
        """``[(content, ok), ...]`` for every frame completed by ``data``."""
        out = []
        for b in data:
            if b == END:
                if self._buf or self._bad:
                    out.append((bytes(self._buf), not (self._bad or self._esc)))
                self._buf.clear()
                self._esc = self._bad = False
            elif self._esc:
                self._esc = False
                if b == ESC_END:
                    self._buf.append(END)
                elif b == ESC_ESC:
                    self._buf.append(ESC)
                else:
                    self._bad = True
            elif b == ESC:
                self._esc = True
            elif len(self._buf) < MAX_FRAME_BYTES:
                self._buf.append(b)
            else:
                self._bad = True
        return out

    @property
    def pending(self) -> int:
        """Bytes of a frame started but not finished (at most :data:`MAX_FRAME_BYTES`)."""
        return len(self._buf)


# -------------------------------------------------------------------- requests

def _frame(content: bytes) -> bytes:
    return slip_encode(content + bytes([crc8(content)]))


def encode_request(cmd: int, payload: bytes = b"") -> bytes:
    return _frame(bytes([int(cmd)]) + payload)


def _u32(v: int, what: str) -> bytes:
    if not 0 <= int(v) <= 0xFFFFFFFF:
        raise ConfigError(f"{what}={v} is not an unsigned 32-bit value")
    return struct.pack("<I", int(v))


def write32(addr: int, data: int) -> bytes:
    return encode_request(Cmd.WRITE32, _u32(addr, "addr") + _u32(data, "data"))


def read32(addr: int) -> bytes:
    return encode_request(Cmd.READ32, _u32(addr, "addr"))


def write_burst(addr: int, words: Iterable[int]) -> bytes:
    words = [int(w) for w in words]
    if not 1 <= len(words) <= MAX_BURST:
        raise ConfigError(f"a burst has 1..{MAX_BURST} words, got {len(words)}")
    body = b"".join(_u32(w, "data") for w in words)
    return encode_request(Cmd.WRITE_BURST, _u32(addr, "addr") + struct.pack("<H", len(words)) + body)


def pack_elements(values: Iterable[int], elem_bytes: int) -> bytes:
    """Two's complement, ``elem_bytes`` little-endian bytes each."""
    mask = (1 << (8 * elem_bytes)) - 1
    return b"".join((int(v) & mask).to_bytes(elem_bytes, "little") for v in values)


def unpack_elements(data: bytes, elem_bytes: int) -> list[int]:
    """Inverse of :func:`pack_elements` (sign-extended from ``8*elem_bytes`` bits)."""
    if len(data) % elem_bytes:
        raise ProtocolError(f"output frame of {len(data)} bytes is not a multiple of "
                            f"{elem_bytes}-byte elements")
    return [int.from_bytes(data[i:i + elem_bytes], "little", signed=True)
            for i in range(0, len(data), elem_bytes)]


def stream_in(values: Iterable[int], elem_bytes: int) -> bytes:
    values = list(values)
    if not 1 <= len(values) <= MAX_STREAM:
        raise ConfigError(f"a vector has 1..{MAX_STREAM} elements, got {len(values)}")
    return encode_request(Cmd.STREAM_IN, struct.pack("<H", len(values)) + pack_elements(values, elem_bytes))


def ping() -> bytes:
    return encode_request(Cmd.PING)


def split_bursts(writes: Iterable[tuple[int, int]], max_words: int = 256) -> Iterator[tuple[int, list[int]]]:
    """Group ordered ``(address, data)`` writes into runs at consecutive word addresses
    (order kept), each at most ``max_words`` long."""
    run_addr, run = None, []
    for a, d in writes:
        if run and a == run_addr + 4 * len(run) and len(run) < max_words:
            run.append(d)
            continue
        if run:
            yield run_addr, run
        run_addr, run = a, [d]
    if run:
        yield run_addr, run


# ------------------------------------------------------------------- responses

@dataclasses.dataclass(frozen=True)
class Response:
    """A response frame: ``cmd`` it answers, bridge ``status``, and per command:
    ``resp`` (AXI response), ``data`` (READ32), ``count`` (WRITE_BURST, STREAM_IN),
    ``info`` (PING: version, elem_bytes, stream_elems, addr_bits)."""
    cmd: Cmd
    status: int
    resp: int = 0
    data: int = 0
    count: int = 0
    info: tuple[int, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == Status.OK and self.resp == 0

    def describe(self) -> str:
        try:
            st = Status(self.status).name
        except ValueError:
            st = f"status {self.status}"
        return f"{self.cmd.name}: {st}, AXI {AXI_RESP.get(self.resp, self.resp)}"


@dataclasses.dataclass(frozen=True)
class OutputFrame:
    """One output vector: the raw element bytes (every lane of every beat)."""
    data: bytes

    def elements(self, elem_bytes: int) -> list[int]:
        return unpack_elements(self.data, elem_bytes)

    def describe(self) -> str:
        return f"output frame of {len(self.data)} bytes"


@dataclasses.dataclass(frozen=True)
class BadFrame:
    """A frame that failed its CRC, escape or length check (``reason``)."""
    content: bytes
    reason: str


def encode_response(r: Response) -> bytes:
    """The bytes the device sends for ``r`` (used by tests and the RTL's spec)."""
    body = bytes([int(r.cmd) | 0x80, r.status & 0xFF])
    if r.cmd == Cmd.WRITE32:
        body += bytes([r.resp])
    elif r.cmd == Cmd.READ32:
        body += bytes([r.resp]) + struct.pack("<I", r.data)
    elif r.cmd == Cmd.WRITE_BURST:
        body += bytes([r.resp]) + struct.pack("<H", r.count)
    elif r.cmd == Cmd.STREAM_IN:
        body += struct.pack("<H", r.count)
    elif r.cmd == Cmd.PING:
        body += bytes(r.info)
    return _frame(body)


def encode_output(data: bytes) -> bytes:
    return _frame(bytes([OUTPUT_TYPE]) + data)


def _decode(content: bytes) -> Response | OutputFrame | BadFrame:
    if len(content) < 2:
        return BadFrame(content, "frame shorter than type + crc")
    if crc8(content) != 0:
        return BadFrame(content, "bad CRC")
    t, body = content[0], content[1:-1]
    if t == OUTPUT_TYPE:
        return OutputFrame(bytes(body))
    try:
        cmd = Cmd(t & 0x7F)
    except ValueError:
        return BadFrame(content, f"unknown frame type 0x{t:02X}")
    if not t & 0x80 or len(body) != _RESP_LEN[cmd]:
        return BadFrame(content, f"malformed {cmd.name} response ({len(body)} bytes)")
    st = body[0]
    if cmd == Cmd.WRITE32:
        return Response(cmd, st, resp=body[1])
    if cmd == Cmd.READ32:
        return Response(cmd, st, resp=body[1], data=struct.unpack("<I", body[2:6])[0])
    if cmd == Cmd.WRITE_BURST:
        return Response(cmd, st, resp=body[1], count=struct.unpack("<H", body[2:4])[0])
    if cmd == Cmd.STREAM_IN:
        return Response(cmd, st, count=struct.unpack("<H", body[1:3])[0])
    return Response(cmd, st, info=tuple(body[1:]))


class Parser:
    """Incremental parser of the device's byte stream: :meth:`feed` bytes, get
    :class:`Response`, :class:`OutputFrame` and :class:`BadFrame` objects in order."""

    def __init__(self) -> None:
        self._slip = SlipDecoder()

    def feed(self, data: bytes) -> list[Response | OutputFrame | BadFrame]:
        out = []
        for content, ok in self._slip.feed(data):
            out.append(_decode(content) if ok else BadFrame(content, (
                f"longer than {MAX_FRAME_BYTES:,} bytes" if len(content) >= MAX_FRAME_BYTES else "bad SLIP escape")))
        return out

    @property
    def pending(self) -> int:
        return self._slip.pending


__all__ += ["encode_output", "AXI_RESP"]
