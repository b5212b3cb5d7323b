"""The UART bridge protocol, sans I/O (``docs/boards.md``, "Protocol").

Pure functions and classes that turn requests into bytes and bytes into responses; no
serial port, no clock, no threads. The transports (:mod:`ttforge.firmware.host`) move
the bytes; the RTL bridge (:mod:`ttforge.firmware.uart`) implements the device side of
the same specification.

Framing is SLIP (RFC 1055): a frame is its content with ``END`` (0xC0) and ``ESC``
(0xDB) bytes escaped (``ESC ESC_END`` / ``ESC ESC_ESC``), preceded and followed by one
``END``. The content is ``type, payload..., crc`` where ``crc`` is the CRC-16/XMODEM
(polynomial 0x1021, initial value 0, no reflection, no final XOR) of ``type`` and the
payload, two bytes, most significant first, so that the CRC of a whole content is 0.
Other multi-byte fields are little-endian. A content is at most :data:`MAX_FRAME_BYTES`
long, the length up to which every error of up to 3 bits is detected (protocol version
1 had a CRC-8, which missed two bit errors 127 bits apart). A host resynchronises by
sending ``END``: the device drops any partial frame, and an empty frame is ignored; it
then sends requests of types no command has (:data:`SYNC_TYPES`), each answered with its
type ``| 0x80`` and ``BAD_CMD`` (a :class:`Refused`) after every earlier answer.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
from typing import Iterable, Iterator

from ttforge.errors import ConfigError, ProtocolError

__all__ = [
    "END", "ESC", "ESC_END", "ESC_ESC", "PROTOCOL_VERSION", "Cmd", "Status", "OUTPUT_TYPE",
    "crc16", "CRC_BYTES", "MAX_DATA_BYTES", "slip_encode", "SlipDecoder", "encode_request", "encode_response",
    "write32", "read32", "write_burst", "stream_in", "ping",
    "Response", "OutputFrame", "BadFrame", "Refused", "SYNC_TYPES", "Parser", "ProtocolError",
    "MAX_BURST", "MAX_STREAM", "MAX_FRAME_BYTES", "pack_elements", "unpack_elements", "split_bursts",
]

END, ESC, ESC_END, ESC_ESC = 0xC0, 0xDB, 0xDC, 0xDD
#: 3: the request types are at least two bits apart (:class:`Cmd`); 2: the CRC-16; 1: a CRC-8
PROTOCOL_VERSION = 3
#: bytes of the CRC at the end of a content
CRC_BYTES = 2
#: The longest ``type`` + payload. CRC-16 polynomial 0x1021 is (x + 1) times a primitive
#: polynomial of degree 15: it detects every odd number of bit errors, and two errors
#: only when they are 2**15 - 1 = 32,767 bits apart or more, so every error of up to 3
#: bits is detected in up to 32,767 - 16 = 32,751 bits of type and payload (4,093 bytes).
#: A longer frame would lose that guarantee: no request or output frame may be longer.
MAX_DATA_BYTES = 4093
#: largest WRITE_BURST (words) in one frame: ``type``, ``addr``, ``n`` and the words
MAX_BURST = (MAX_DATA_BYTES - 7) // 4
#: largest STREAM_IN frame (1-byte elements; ``B``-byte elements: ``(MAX_DATA_BYTES - 3) // B``).
#: A longer vector is sent as several STREAM_IN frames (:func:`stream_in_frames`).
MAX_STREAM = MAX_DATA_BYTES - 3
#: bit 15 of STREAM_IN's ``n``: more of this vector follows in the next STREAM_IN frame
#: (the bridge sets ``tlast`` only on the last element of a frame without it)
STREAM_MORE = 0x8000


class Cmd(enum.IntEnum):
    """Request types. A response has type ``cmd | 0x80``.

    Every code has an even number of 1 bits, so any two differ in at least two: one bit
    flipped on the link makes a type no command has (refused, ``BAD_CMD``), never another
    command. ``WRITE_BURST`` and ``STREAM_IN`` act as their bytes arrive, before their
    CRC is checked: in protocol version 2 (``0x01``..``0x05``) one flipped bit turned a
    ``WRITE32`` (``0x01``) into a ``WRITE_BURST`` (``0x03``) that wrote its data's high
    half and its CRC into the register. ``PING`` keeps ``0x05``: every version's bridge
    answers it, and its answer's version names the bitstream's protocol. No code is one
    bit from ``0x20``/``0x21`` either (an unknown type ``t`` is answered ``t | 0x80``,
    which would read as an output frame's type)."""
    WRITE32 = 0x06      # addr u32, data u32           -> status, resp
    READ32 = 0x09       # addr u32                     -> status, resp, data u32
    WRITE_BURST = 0x0A  # addr u32, n u16, n x u32     -> status, resp, done u16
    STREAM_IN = 0x0C    # n u16, n elements            -> status, done u16
    PING = 0x05         # (nothing)                    -> status, version, elem_bytes,
    #                                                     stream_elems, addr_bits


#: the request types of protocol version 2, which a resync marker never has: a bitstream
#: of that version then refuses the marker and answers its PING, whose version says so
V2_TYPES = (0x01, 0x02, 0x03, 0x04, 0x05)


#: type of the frame that carries an output vector (every lane of every m_axis beat), or
#: its first piece: a vector longer than :func:`output_piece_bytes` is sent as several
#: frames, the first of type ``OUTPUT_TYPE``, the others of type :data:`OUTPUT_CONT`
OUTPUT_TYPE = 0xA0
#: type of an output frame that continues the vector of the output frame before it (that
#: frame ended without ``tlast``: it was full, :func:`output_piece_bytes` bytes, or a
#: response was waiting to be sent)
OUTPUT_CONT = OUTPUT_TYPE | 1


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

#: the CRC's polynomial (x^16 + x^12 + x^5 + 1, the x^16 term implied)
CRC_POLY = 0x1021


def _crc_table() -> list[int]:
    t = []
    for b in range(256):
        c = b << 8
        for _ in range(8):
            c = ((c << 1) ^ CRC_POLY) & 0xFFFF if c & 0x8000 else (c << 1) & 0xFFFF
        t.append(c)
    return t


_CRC = _crc_table()


def crc16(data: Iterable[int], crc: int = 0) -> int:
    """CRC-16/XMODEM (poly 0x1021, init 0, no reflection, no final XOR).

    ``crc16(m + crc16(m).to_bytes(2, "big")) == 0``."""
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC[(crc >> 8) ^ (b & 0xFF)]
    return crc


def _crc8(data: bytes) -> int:
    """Protocol version 1's CRC-8/SMBUS (poly 0x07, init 0): only to recognise its frames."""
    crc = 0
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


#: :attr:`BadFrame.reason` of a frame that fails the CRC-16 but checks as a version-1
#: frame (a CRC-8): the board runs a bitstream of protocol version 1 (or, 1 time in
#: 256, a corrupt frame looks like one)
V1_FRAME = "bad CRC (a protocol version 1 frame: CRC-8)"


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


#: The longest frame content (``type``, payload, CRC) the protocol allows and a decoder
#: keeps. A longer frame is bad and only its first this many bytes are kept (a port that
#: babbles without a frame delimiter grew the host without bound for the whole
#: ``--timeout``).
MAX_FRAME_BYTES = MAX_DATA_BYTES + CRC_BYTES


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
    if len(content) > MAX_DATA_BYTES:
        raise ConfigError(f"a frame of {len(content):,} bytes is longer than the protocol's "
                          f"{MAX_DATA_BYTES:,} (its CRC-16 detects every 3-bit error only up to "
                          "there); send less in one frame")
    return slip_encode(content + crc16(content).to_bytes(CRC_BYTES, "big"))


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


def stream_in(values: Iterable[int], elem_bytes: int, *, more: bool = False) -> bytes:
    """One STREAM_IN frame; ``more``: the vector goes on in the next one (no ``tlast``
    here). A longer vector: :func:`stream_in_frames`."""
    values = list(values)
    most = (MAX_DATA_BYTES - 3) // max(int(elem_bytes), 1)
    if not 1 <= len(values) <= most:
        raise ConfigError(f"a STREAM_IN frame has 1..{most} elements of {elem_bytes} bytes (one frame of "
                          f"at most {MAX_DATA_BYTES:,} bytes), got {len(values)}")
    n = len(values) | (STREAM_MORE if more else 0)
    return encode_request(Cmd.STREAM_IN, struct.pack("<H", n) + pack_elements(values, elem_bytes))


def _check_shape(elem_bytes: int, stream_elems: int) -> tuple[int, int]:
    b, e = int(elem_bytes), int(stream_elems)
    if not 1 <= b <= 4 or not 1 <= e <= 255:
        raise ConfigError(f"elem_bytes={elem_bytes} must be 1..4 and stream_elems={stream_elems} 1..255")
    return b, e


def stream_piece_elems(elem_bytes: int, stream_elems: int) -> int:
    """Elements in each STREAM_IN frame of a vector but its last: as many whole beats of
    ``stream_elems`` as one frame holds (the bridge refuses a ``more`` frame that ends
    inside a beat)."""
    b, e = _check_shape(elem_bytes, stream_elems)
    return (MAX_DATA_BYTES - 3) // b // e * e


def stream_in_frames(values: Iterable[int], elem_bytes: int, stream_elems: int) -> list[bytes]:
    """The STREAM_IN frames of one vector: pieces of :func:`stream_piece_elems` elements,
    each but the last with :data:`STREAM_MORE`."""
    values = list(values)
    if not values:
        raise ConfigError("a vector has at least 1 element, got 0")
    k = stream_piece_elems(elem_bytes, stream_elems)
    pieces = [values[i:i + k] for i in range(0, len(values), k)]
    return [stream_in(p, elem_bytes, more=j + 1 < len(pieces)) for j, p in enumerate(pieces)]


def output_piece_bytes(elem_bytes: int, stream_elems: int) -> int:
    """Data bytes of each output frame of a vector but its last: as many whole beats of
    ``elem_bytes * stream_elems`` bytes as one frame holds after its type byte."""
    b, e = _check_shape(elem_bytes, stream_elems)
    return (MAX_DATA_BYTES - 1) // (b * e) * (b * e)


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
    """One output vector, or a piece of one: the raw element bytes (every lane of every
    beat). ``cont``: the frame continues the vector of the output frame before it (type
    :data:`OUTPUT_CONT`); :class:`OutputAssembler` joins the pieces."""
    data: bytes
    cont: bool = False

    def elements(self, elem_bytes: int) -> list[int]:
        return unpack_elements(self.data, elem_bytes)

    def describe(self) -> str:
        return f"output frame{' (continuation)' if self.cont else ''} of {len(self.data)} bytes"


class OutputAssembler:
    """Joins the output frames of one vector of ``want`` bytes (whole beats): a start
    frame, then continuations (each of whole beats, at most :func:`output_piece_bytes`).
    :meth:`add` returns the vector's bytes once complete (else None) and raises
    :class:`ProtocolError` (``what``: the line's prefix) for a continuation without a
    start, a start while the vector is unfinished, or a vector longer than ``want`` (a
    shorter one is unfinished: the next start frame, or the wait's timeout, says so)."""

    def __init__(self, want: int, elem_bytes: int, stream_elems: int, what: str = "output") -> None:
        self.want, self.eb, self.what = int(want), int(elem_bytes), what
        self.beat = int(elem_bytes) * int(stream_elems)
        output_piece_bytes(elem_bytes, stream_elems)        # the shape checked
        self.data = bytearray()
        self.frames = 0

    def _bad(self, why: str) -> ProtocolError:
        return ProtocolError(f"{self.what}: {why}; check that the board runs a ttforge bitstream of "
                             "this protocol version")

    def add(self, frame: OutputFrame) -> bytes | None:
        if frame.cont and not self.frames:
            raise self._bad(f"a continuation output frame ({len(frame.data)} bytes) without a start")
        if not frame.cont and self.frames:
            raise self._bad(f"a new output vector started after {len(self.data) // self.eb} of "
                            f"{self.want // self.eb} elements")
        if not frame.data or len(frame.data) % self.beat:
            raise self._bad(f"an output frame of {len(frame.data)} bytes, not whole beats of {self.beat}")
        self.frames += 1
        self.data += frame.data
        have = len(self.data)
        if have == self.want:
            return bytes(self.data)
        if have > self.want:
            raise self._bad(f"output vector has {have // self.eb} elements, expected {self.want // self.eb}")
        return None


@dataclasses.dataclass(frozen=True)
class Refused:
    """The bridge's answer to a request of a type it does not know (``type | 0x80``,
    status ``BAD_CMD`` or a status of higher priority, e.g. ``OVERRUN``). The host sends
    such requests only as resynchronisation markers (:data:`SYNC_TYPES`); any other is a
    request corrupted on the link. ``cmd``: the request's type without bit 7 (which the
    answer cannot tell), but a command's type with bit 7 set is kept whole."""
    cmd: int
    status: int

    def describe(self) -> str:
        try:
            st = Status(self.status).name
        except ValueError:
            st = f"status {self.status}"
        return f"answer to request type 0x{self.cmd:02X}: {st}"


#: Request types the host sends to resynchronise (:meth:`ttforge.firmware.host.Device.resync`):
#: no command of this protocol or of version 2 has them, and their answers' types
#: (``t | 0x80``) are neither a response of a command nor an output frame, so nothing a
#: host sends otherwise is answered so
SYNC_TYPES = tuple(t for t in range(0x01, 0x80) if t not in set(Cmd) and t not in V2_TYPES
                   and t | 0x80 not in (OUTPUT_TYPE, OUTPUT_CONT))


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


def encode_output(data: bytes, cont: bool = False) -> bytes:
    """One output frame (a continuation: ``cont``)."""
    return _frame(bytes([OUTPUT_CONT if cont else OUTPUT_TYPE]) + data)


def output_frames(data: bytes, elem_bytes: int, stream_elems: int) -> bytes:
    """The output frames the bridge sends for one vector's bytes (whole beats): pieces of
    :func:`output_piece_bytes`, the first of type :data:`OUTPUT_TYPE`, the others
    :data:`OUTPUT_CONT`."""
    k = output_piece_bytes(elem_bytes, stream_elems)
    data = bytes(data)
    return b"".join(encode_output(data[i:i + k], cont=i > 0) for i in range(0, max(len(data), 1), k))


def _decode(content: bytes) -> Response | OutputFrame | BadFrame:
    if len(content) < 1 + CRC_BYTES:
        return BadFrame(content, "frame shorter than type + crc")
    if crc16(content) != 0:
        return BadFrame(content, V1_FRAME if _crc8(content) == 0 else "bad CRC")
    t, body = content[0], content[1:-CRC_BYTES]
    if t in (OUTPUT_TYPE, OUTPUT_CONT):
        return OutputFrame(bytes(body), cont=t == OUTPUT_CONT)
    try:
        cmd = Cmd(t & 0x7F)
    except ValueError:
        # the bridge refused a request type it does not know (OVERRUN is the one status
        # that goes before BAD_CMD)
        if t & 0x80 and len(body) == 1 and body[0] in (Status.BAD_CMD, Status.OVERRUN):
            return Refused(t & 0x7F, body[0])
        return BadFrame(content, f"unknown frame type 0x{t:02X}")
    if t & 0x80 and len(body) == 1 and body[0] in (Status.BAD_CMD, Status.OVERRUN):
        # every command's answer has its full body: this is the refusal of a request of
        # type ``t`` itself, a command's with bit 7 set (corrupted on the link)
        return Refused(t, body[0])
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
    :class:`Response`, :class:`OutputFrame`, :class:`Refused` and :class:`BadFrame`
    objects in order."""

    def __init__(self) -> None:
        self._slip = SlipDecoder()

    def feed(self, data: bytes) -> list[Response | OutputFrame | Refused | BadFrame]:
        out = []
        for content, ok in self._slip.feed(data):
            out.append(_decode(content) if ok else BadFrame(content, (
                f"longer than {MAX_FRAME_BYTES:,} bytes" if len(content) >= MAX_FRAME_BYTES else "bad SLIP escape")))
        return out

    @property
    def pending(self) -> int:
        return self._slip.pending


__all__ += ["encode_output", "AXI_RESP", "CRC_POLY", "V1_FRAME", "STREAM_MORE", "OUTPUT_CONT",
            "stream_piece_elems", "stream_in_frames", "output_piece_bytes", "output_frames",
            "OutputAssembler"]
