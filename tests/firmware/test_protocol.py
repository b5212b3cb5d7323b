"""The sans-I/O protocol core: SLIP framing, CRC-8, request encodings byte by byte,
an incremental parser that survives any split of the byte stream, resynchronisation."""

from __future__ import annotations

import random

import pytest

from ttforge.firmware import protocol as P
from ttforge.firmware.protocol import Cmd, Response, Status


def test_crc8_known_value_and_residue():
    assert P.crc8(b"123456789") == 0xF4          # CRC-8/SMBUS check value
    m = b"\x01\x02\xC0\xDB"
    assert P.crc8(m + bytes([P.crc8(m)])) == 0


def test_write32_bytes_exactly():
    f = P.write32(0x40, 0x1)
    body = bytes([0x01, 0x40, 0, 0, 0, 0x01, 0, 0, 0])
    assert f == bytes([0xC0]) + body + bytes([P.crc8(body), 0xC0])


def test_slip_escapes_and_roundtrip():
    content = bytes([0xC0, 0xDB, 0x00, 0xDC, 0xDD])
    enc = P.slip_encode(content)
    assert enc == bytes([0xC0, 0xDB, 0xDC, 0xDB, 0xDD, 0x00, 0xDC, 0xDD, 0xC0])
    assert P.SlipDecoder().feed(enc) == [(content, True)]


def test_parser_is_incremental_over_any_split():
    rs = [Response(Cmd.WRITE32, 0, resp=2), Response(Cmd.READ32, 0, data=0xC0DBC0DB),
          Response(Cmd.WRITE_BURST, 0, count=300), Response(Cmd.STREAM_IN, Status.STALL, count=3),
          Response(Cmd.PING, 0, info=(1, 1, 2, 13))]
    stream = b"".join(P.encode_response(r) for r in rs) + P.encode_output(bytes([0xC0, 1, 0xFF]))
    rng = random.Random(0)
    for _ in range(20):
        p, got, i = P.Parser(), [], 0
        while i < len(stream):
            n = rng.randint(1, 5)
            got += p.feed(stream[i:i + n])
            i += n
        assert got[:-1] == rs
        assert got[-1].elements(1) == [-64, 1, -1]


def test_garbage_then_resync():
    p = P.Parser()
    bad = p.feed(b"\x11\x22\x33\xC0")                  # noise before a delimiter
    assert len(bad) == 1 and isinstance(bad[0], P.BadFrame)
    assert p.feed(P.encode_response(Response(Cmd.WRITE32, 0))) == [Response(Cmd.WRITE32, 0)]
    f = bytearray(P.encode_response(Response(Cmd.READ32, 0, data=5)))
    f[3] ^= 0x10
    (b,) = p.feed(bytes(f))
    assert isinstance(b, P.BadFrame) and "CRC" in b.reason


def test_split_bursts_keeps_order_and_runs():
    writes = [(0x40, 0), (0x44, 2), (0x200, 1), (0x204, 2), (0x208, 3), (0x60, 5), (0x40, 1)]
    assert list(P.split_bursts(writes, max_words=2)) == [
        (0x40, [0, 2]), (0x200, [1, 2]), (0x208, [3]), (0x60, [5]), (0x40, [1])]


def test_elements_pack_signed():
    assert P.pack_elements([-1, 2, -128], 1) == bytes([0xFF, 2, 0x80])
    assert P.unpack_elements(P.pack_elements([-2, 300], 2), 2) == [-2, 300]
    with pytest.raises(ValueError):
        P.stream_in([], 1)


def test_docs_examples_are_exact():
    """The byte examples of docs/boards.md."""
    assert P.write32(0x40, 1).hex(" ") == "c0 01 40 00 00 00 01 00 00 00 b3 c0"
    assert P.encode_response(Response(Cmd.WRITE32, 0)).hex(" ") == "c0 81 00 00 60 c0"
    assert P.ping().hex(" ") == "c0 05 1b c0"
    assert P.encode_response(Response(Cmd.PING, 0, info=(1, 1, 2, 13))).hex(" ") == \
        "c0 85 00 01 01 02 0d 15 c0"


def test_a_frame_without_end_is_bounded_and_bad():
    """A port that babbles without a frame delimiter grew the decoder's buffer without
    bound (680 MB in a minute on a pty)."""
    p = P.Parser()
    for _ in range(8):
        assert p.feed(b"A" * 65536) == []
    assert p.pending == P.MAX_FRAME_BYTES
    (b,) = p.feed(bytes([P.END]))
    assert isinstance(b, P.BadFrame) and b.reason == f"longer than {P.MAX_FRAME_BYTES:,} bytes"
    assert len(b.content) == P.MAX_FRAME_BYTES
    # the largest legal frame still decodes
    big = P.encode_output((bytes(range(256)) * 1024)[:4 * P.MAX_STREAM])
    (f,) = p.feed(big)
    assert not isinstance(f, P.BadFrame) and len(f.elements(4)) == P.MAX_STREAM


class _Babbler:
    """A transport whose device sends ``chunk`` on every read and nothing else."""
    name, default_timeout = "babbler", 0.5

    def __init__(self, chunk: bytes):
        self.chunk = chunk

    def write(self, data: bytes, timeout: float | None = None) -> None:
        pass

    def read(self, timeout: float) -> bytes:
        return self.chunk

    def close(self) -> None:
        pass


def test_a_device_that_talks_unasked_is_bounded():
    """Corrupt frames were each kept (44 M objects, 4.5 GB in a minute); valid frames
    nobody asked for queued without end."""
    from ttforge.errors import DeviceTimeout, ProtocolError
    from ttforge.firmware.host import MAX_UNREAD_FRAMES, Device

    dev = Device(_Babbler(bytes([0xDB, 0x01, P.END]) * 1000), timeout=0.3)
    with pytest.raises(DeviceTimeout, match=r"no answer to PING within 0.3 s \(\d+ corrupt frames received\)"):
        dev.ping()
    assert dev.bad_frame_count > 1000 and len(dev.bad_frames) == 16
    dev = Device(_Babbler(P.encode_output(b"\x01") * 100), timeout=5)   # outputs of no vector
    with pytest.raises(ProtocolError, match=f"more than {MAX_UNREAD_FRAMES} frames nobody asked for"):
        dev.read32(0)
