"""The sans-I/O protocol core: SLIP framing, CRC-16, request encodings byte by byte,
an incremental parser that survives any split of the byte stream, resynchronisation."""

from __future__ import annotations

import random

import pytest

from ttforge.firmware import protocol as P
from ttforge.firmware.protocol import Cmd, Response, Status


def test_crc16_known_value_and_residue():
    assert P.crc16(b"123456789") == 0x31C3       # CRC-16/XMODEM check value
    m = b"\x01\x02\xC0\xDB"
    assert P.crc16(m + P.crc16(m).to_bytes(2, "big")) == 0
    assert P.PROTOCOL_VERSION == 3


def test_write32_bytes_exactly():
    f = P.write32(0x40, 0x1)
    body = bytes([0x06, 0x40, 0, 0, 0, 0x01, 0, 0, 0])
    assert f == bytes([0xC0]) + body + P.crc16(body).to_bytes(2, "big") + bytes([0xC0])


def _flip(content: bytes, bits) -> bytes:
    """``content`` with bit ``k`` (MSB of byte 0 first) flipped for each ``k`` in ``bits``."""
    b = bytearray(content)
    for k in bits:
        b[k // 8] ^= 0x80 >> (k % 8)
    return bytes(b)


def _content(frame: bytes) -> bytes:
    ((content, ok),) = P.SlipDecoder().feed(frame)
    assert ok
    return content


def test_two_bit_error_127_bits_apart_is_refused():
    """Protocol version 1's CRC-8 (period 127) accepted this 40-element output frame with
    elements 0 and 15 changed (0 -> 128, 15 -> 14)."""
    data = bytes(range(40))
    bad = _flip(_content(P.encode_output(data)), [8, 8 + 127])
    assert bad[1:41] != data
    (item,) = P.Parser().feed(P.slip_encode(bad))
    assert isinstance(item, P.BadFrame) and item.reason.startswith("bad CRC")


def test_every_error_of_up_to_3_bits_is_detected_in_the_longest_frame():
    """Hamming distance >= 4 over MAX_FRAME_BYTES: the CRC is linear (initial value 0), so
    an error ``e`` is missed iff ``crc16(e) == 0``, iff the polynomial ``g`` divides
    ``e(x)``. 1 and 2 bits: every ``x^k mod g`` (k below the frame's bit count) is nonzero
    and no two are equal, checked for every k; 3 bits: ``g`` has an even number of terms,
    so (x + 1) divides it and no odd-weight error. Random errors through the parser check
    the model against the real thing."""
    g = (1 << 16) | P.CRC_POLY
    assert bin(g).count("1") % 2 == 0                  # g(1) = 0: odd weights detected
    n_bits = 8 * P.MAX_FRAME_BYTES
    seen, r = set(), 1
    for _ in range(n_bits):
        assert r and r not in seen                      # 1-bit and 2-bit errors detected
        seen.add(r)
        r <<= 1
        if r >> 16:
            r ^= g
    # the model is the real CRC: crc16 of a one-bit pattern k bits from the end is x^(k+16)
    rng = random.Random(7)
    powers = [1]
    for _ in range(n_bits + 16):
        r = powers[-1] << 1
        powers.append(r ^ g if r >> 16 else r)
    for k in [0, 1, 15, 16, 127, n_bits - 1] + rng.sample(range(n_bits), 20):
        e = _flip(bytes(P.MAX_FRAME_BYTES), [n_bits - 1 - k])
        assert P.crc16(e) == powers[k + 16]
    # random 1-, 2- and 3-bit errors in the longest output frame, through the parser
    frame = P.encode_output(bytes(rng.randrange(256) for _ in range(P.MAX_DATA_BYTES - 1)))
    content = _content(frame)
    assert len(content) == P.MAX_FRAME_BYTES
    p = P.Parser()
    (ok,) = p.feed(frame)
    assert isinstance(ok, P.OutputFrame)
    for i in range(300):
        bits = rng.sample(range(n_bits), 1 + i % 3)
        (item,) = p.feed(P.slip_encode(_flip(content, bits)))
        assert isinstance(item, P.BadFrame), bits


def test_no_frame_is_longer_than_the_crc_covers():
    """Every encoder refuses a frame longer than MAX_DATA_BYTES (the CRC-16 would miss
    some 2-bit errors in it), and the longest of each kind is accepted."""
    assert P.MAX_FRAME_BYTES == P.MAX_DATA_BYTES + 2 and 8 * P.MAX_DATA_BYTES <= 32751
    assert len(_content(P.write_burst(0, range(P.MAX_BURST)))) == P.MAX_FRAME_BYTES - 2
    with pytest.raises(ValueError, match="1..1021 words"):
        P.write_burst(0, range(P.MAX_BURST + 1))
    for eb in (1, 2, 3, 4):
        most = (P.MAX_DATA_BYTES - 3) // eb
        assert len(_content(P.stream_in([0] * most, eb))) <= P.MAX_FRAME_BYTES
        with pytest.raises(ValueError, match=f"1..{most} elements of {eb} bytes"):
            P.stream_in([0] * (most + 1), eb)
    assert len(_content(P.encode_output(bytes(P.MAX_DATA_BYTES - 1)))) == P.MAX_FRAME_BYTES
    with pytest.raises(ValueError, match="4,094 bytes is longer than the protocol's 4,093"):
        P.encode_output(bytes(P.MAX_DATA_BYTES))


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
    assert P.write32(0x40, 1).hex(" ") == "c0 06 40 00 00 00 01 00 00 00 da ec c0"
    assert P.encode_response(Response(Cmd.WRITE32, 0)).hex(" ") == "c0 86 00 00 89 fa c0"
    assert P.ping().hex(" ") == "c0 05 50 a5 c0"
    assert P.encode_response(Response(Cmd.PING, 0, info=(3, 1, 2, 13))).hex(" ") == \
        "c0 85 00 03 01 02 0d 8c 02 c0"


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
    big = P.encode_output((bytes(range(256)) * 16)[:P.MAX_DATA_BYTES - 1])
    (f,) = p.feed(big)
    assert not isinstance(f, P.BadFrame) and len(f.elements(4)) == (P.MAX_DATA_BYTES - 1) // 4


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


class _Version1Bridge:
    """A transport whose bridge answers PING with version 1, as version 1 did (a CRC-8
    byte) or, with ``crc16``, as a version-2 frame."""
    name, default_timeout = "v1board", 0.5

    def __init__(self, crc16: bool = False):
        self.crc16, self.out = crc16, b""

    def write(self, data: bytes, timeout: float | None = None) -> None:
        if P.ping() not in data:
            return
        content = bytes([0x85, Status.BAD_LENGTH, 1, 1, 2, 13])   # its answer to a v2 PING
        if self.crc16:
            self.out += P.encode_response(Response(Cmd.PING, 0, info=(1, 1, 2, 13)))
            return
        crc = 0
        for b in content:                              # CRC-8/SMBUS
            crc ^= b
            for _ in range(8):
                crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        self.out += P.slip_encode(content + bytes([crc]))

    def read(self, timeout: float) -> bytes:
        out, self.out = self.out, b""
        return out

    def close(self) -> None:
        pass


def test_a_version_1_bridge_is_refused_with_the_fix():
    """A version-1 bitstream's answers fail the CRC-16 (its CRC-8 byte is no CRC-16), but
    check as CRC-8 frames: one line naming both versions and the fix, not "no answer to
    PING"; a version-1 answer with a good CRC is refused too."""
    from ttforge.errors import DeviceError, DeviceTimeout
    from ttforge.firmware.host import Device

    with pytest.raises(DeviceError, match=r"^v1board: bridge protocol version 1 \(its frames have a CRC-8\), "
                                          r"this driver speaks 3; rebuild the bitstream with this ttforge$") as e:
        Device(_Version1Bridge(), timeout=0.3).ping()
    assert not isinstance(e.value, DeviceTimeout)
    # a corrupt frame alone is no version-1 frame
    with pytest.raises(DeviceTimeout, match=r"no answer to PING within 0.3 s \(\d+ corrupt frames received\)"):
        Device(_Babbler(bytes([0xDB, 0x01, P.END])), timeout=0.3).ping()
    with pytest.raises(DeviceError, match=r"^v1board: bridge protocol version 1, this driver speaks 3; "
                                          r"rebuild the bitstream with this ttforge$"):
        Device(_Version1Bridge(crc16=True), timeout=0.5).ping()


# ------------------------------------------------------- vectors longer than one frame

@pytest.mark.parametrize("eb,se,n", [(1, 2, 5000), (1, 1, 4096), (2, 3, 4100), (4, 7, 3000), (1, 2, 4090)])
def test_a_long_vector_goes_as_stream_in_frames_of_whole_beats(eb, se, n):
    """Every frame within MAX_DATA_BYTES; all but the last hold whole beats and have bit 15
    of n (more follows); the elements in order."""
    vals = [(i * 37) % 200 - 100 for i in range(n)]
    frames = P.stream_in_frames(vals, eb, se)
    k = P.stream_piece_elems(eb, se)
    assert k % se == 0 and 3 + k * eb <= P.MAX_DATA_BYTES < 3 + (k + se) * eb
    got = []
    for j, f in enumerate(frames):
        c = _content(f)
        assert len(c) <= P.MAX_FRAME_BYTES and c[0] == Cmd.STREAM_IN
        count = int.from_bytes(c[1:3], "little")
        more = j + 1 < len(frames)
        assert bool(count & P.STREAM_MORE) == more
        count &= 0x7FFF
        assert count == (k if more else n - k * (len(frames) - 1))
        got += P.unpack_elements(c[3:-2], eb)
    assert got == vals and len(frames) == -(-n // k)
    if n <= k:
        assert frames == [P.stream_in(vals, eb)]        # one frame: no `more`, as before


def test_output_frames_and_their_assembly():
    data = bytes(range(256)) * 20                       # 5,120 bytes
    stream = P.output_frames(data, 1, 2)
    items = P.Parser().feed(stream)
    assert [(len(x.data), x.cont) for x in items] == [(4092, False), (1028, True)]
    assert stream[1] == P.OUTPUT_TYPE and stream.index(bytes([0xC0, P.OUTPUT_CONT])) > 0
    asm = P.OutputAssembler(len(data), 1, 2)
    assert asm.add(items[0]) is None and asm.add(items[1]) == data
    # a piece of any number of whole beats (the bridge closes a frame for a waiting answer)
    asm = P.OutputAssembler(6, 2, 1)
    assert asm.add(P.OutputFrame(b"\1\0")) is None
    assert asm.add(P.OutputFrame(b"\2\0\3\0", cont=True)) == b"\1\0\2\0\3\0"
    assert P.output_frames(b"\1\2", 1, 2) == P.encode_output(b"\1\2")


@pytest.mark.parametrize("frames, msg", [
    ([P.OutputFrame(b"\1\2", cont=True)], r"a continuation output frame \(2 bytes\) without a start"),
    ([P.OutputFrame(b"\1\2"), P.OutputFrame(b"\1\2")], r"a new output vector started after 2 of 6 elements"),
    ([P.OutputFrame(b"\1\2" * 4)], r"output vector has 8 elements, expected 6"),
    ([P.OutputFrame(b"\1\2"), P.OutputFrame(b"\1" * 6, cont=True)], r"output vector has 8 elements, expected 6"),
    ([P.OutputFrame(b"\1\2\3")], r"an output frame of 3 bytes, not whole beats of 2"),
    ([P.OutputFrame(b"")], r"an output frame of 0 bytes"),
])
def test_output_pieces_that_make_no_vector_are_refused(frames, msg):
    asm = P.OutputAssembler(6, 1, 2, what="port: vector 3")
    with pytest.raises(P.ProtocolError, match=rf"^port: vector 3: {msg}"):
        for f in frames:
            asm.add(f)


def test_continuation_type_is_parsed_and_others_near_it_are_not():
    assert P.OUTPUT_CONT == 0xA1
    assert P.Parser().feed(P.encode_output(b"\5", cont=True)) == [P.OutputFrame(b"\5", cont=True)]
    bad = P.Parser().feed(P.encode_request(0xA2, b"\5"))
    assert isinstance(bad[0], P.BadFrame) and "0xA2" in bad[0].reason


def test_stream_in_frames_refuses_what_no_frame_can_carry():
    with pytest.raises(ValueError, match="at least 1 element"):
        P.stream_in_frames([], 1, 2)
    with pytest.raises(ValueError, match="stream_elems=0"):
        P.stream_in_frames([1], 1, 0)


def test_the_bridges_refusal_of_an_unknown_request_type_is_parsed():
    """The resync marker's answers (``t | 0x80``, ``BAD_CMD``, or ``OVERRUN`` which goes
    before it) are told from every other frame; a marker type is no command's and its
    answer no output frame's."""
    for t in (P.SYNC_TYPES[0], P.SYNC_TYPES[-1], 0x33):
        for st in (P.Status.BAD_CMD, P.Status.OVERRUN):
            assert P.Parser().feed(P.encode_request(t | 0x80, bytes([st]))) == [P.Refused(t, st)]
    # another status, or a longer body, is no refusal of the bridge's
    assert isinstance(P.Parser().feed(P.encode_request(0xB3, bytes([P.Status.OK])))[0], P.BadFrame)
    assert isinstance(P.Parser().feed(P.encode_request(0xB3, bytes([3, 0])))[0], P.BadFrame)
    assert not {t & 0x7F for t in P.SYNC_TYPES} & {int(c) for c in P.Cmd}
    assert not {t | 0x80 for t in P.SYNC_TYPES} & {P.OUTPUT_TYPE, P.OUTPUT_CONT}


# ------------------------------------------- version 3: request types two bits apart

def test_one_flipped_bit_of_a_request_type_is_no_command():
    """Any two request types differ in at least two bits, so one bit flipped on the link
    makes a type the bridge refuses (``BAD_CMD``), never another command (version 2's
    WRITE32 0x01 became WRITE_BURST 0x03, which writes before its CRC); nor 0x20/0x21,
    whose refusal reads as an output frame's type. PING keeps 0x05, and no resync marker
    has a type of this version or of version 2."""
    codes = [int(c) for c in Cmd]
    assert Cmd.PING == 0x05
    for c in codes:
        for k in range(8):
            t = c ^ (1 << k)
            assert t not in codes and t | 0x80 not in (P.OUTPUT_TYPE, P.OUTPUT_CONT), (hex(c), k)
    assert not set(P.SYNC_TYPES) & (set(codes) | set(P.V2_TYPES))


def test_the_refusal_of_a_command_type_with_bit_7_is_parsed_as_a_refusal():
    """A request of type ``cmd | 0x80`` (a command's, its top bit flipped) is refused as
    unknown and answered with that type and ``BAD_CMD`` alone: a refusal, not a
    "malformed response" (which left the host waiting for an answer until its timeout)."""
    for c in Cmd:
        for st in (P.Status.BAD_CMD, P.Status.OVERRUN):
            assert P.Parser().feed(P.encode_request(c | 0x80, bytes([st]))) == [P.Refused(c | 0x80, st)]


class _Version2Bridge:
    """A bridge of protocol version 2: its command types 0x01..0x05, every other type
    refused (BAD_CMD), PING answered with version 2."""
    name, default_timeout = "v2board", 0.5

    def __init__(self):
        self.out, self.dec, self.ran = b"", P.SlipDecoder(), []

    def write(self, data: bytes, timeout: float | None = None) -> None:
        for content, ok in self.dec.feed(data):
            t = content[0]
            if t == Cmd.PING:
                self.out += P.encode_response(Response(Cmd.PING, 0, info=(2, 1, 2, 13)))
            elif t in P.V2_TYPES:
                self.ran.append(t)        # a version-2 command: must never be sent
                self.out += P.encode_request(t | 0x80, bytes([Status.BAD_LENGTH, 0]))
            else:
                self.out += P.encode_request(t | 0x80, bytes([Status.BAD_CMD]))

    def read(self, timeout: float) -> bytes:
        out, self.out = self.out, b""
        return out

    def close(self) -> None:
        pass


def test_a_version_2_bridge_is_named_through_the_resync():
    """The resync markers are refused by a version-2 bridge (no marker has a version-2
    command's type), so its PING answer names it: one line, not "no answer"."""
    from ttforge.errors import DeviceError
    from ttforge.firmware.host import Device

    bridge = _Version2Bridge()
    dev = Device(bridge, timeout=0.5)
    for _ in range(3):
        dev.resync()
    with pytest.raises(DeviceError, match=r"^v2board: bridge protocol version 2, this driver speaks 3; "
                                          r"rebuild the bitstream with this ttforge$"):
        dev.ping()
    assert bridge.ran == []
