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
