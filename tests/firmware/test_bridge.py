"""The UART bridge in Amaranth's simulator, at the pins: request bytes bit-banged into
``rx`` -> AXI4-Lite transactions on a real register file (``ttforge.hw.axil``) and
beats on a stream loopback -> the bytes on ``tx`` equal, exactly, the frames the
protocol core encodes for the expected responses."""

from __future__ import annotations

import random

import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.sim import Simulator

from ttforge.firmware import protocol as P
from ttforge.firmware.protocol import Cmd, Response, Status
from ttforge.firmware.uart import Bridge, BridgeCore, SlipEscaper, UARTRx, UARTTx, crc16_next
from ttforge.hw.axil import AXI4LiteSlave, RegisterFile

from tests.support.axil import ADDR_BITS, REGS, WINS

DIV = 4


class Dut(wiring.Component):
    """BridgeCore + AXI4-Lite register file + a stream loopback (each element + 1)."""

    def __init__(self, elem_bytes=1, stream_elems=2, stall_ticks=16, loop=True, slave=True,
                 partial=False):
        self.core = BridgeCore(divisor=DIV, addr_bits=ADDR_BITS, elem_bytes=elem_bytes,
                               stream_elems=stream_elems, stall_ticks=stall_ticks)
        self.eb, self.E, self.loop = elem_bytes, stream_elems, loop
        self.slave, self.partial = slave, partial
        super().__init__({"rx": wiring.In(1, init=1), "tx": wiring.Out(1, init=1),
                          "written": wiring.Out(32)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = c = self.core
        if self.slave:           # else nobody answers on the AXI4-Lite bus
            m.submodules.slave = s = AXI4LiteSlave(ADDR_BITS)
            m.submodules.rf = rf = RegisterFile((REGS, WINS), ADDR_BITS)
            wiring.connect(m, c.axil, s.axil)
            wiring.connect(m, s.bus, rf.bus)
        m.d.comb += [c.rx.eq(self.rx), self.tx.eq(c.tx)]
        LW = 8 * self.eb
        if self.partial:
            # one output beat without tlast, then nothing: the core stopped mid-vector
            sent = Signal()
            m.d.comb += [c.s_axis.tvalid.eq(~sent), c.s_axis.tdata.eq(0x55 * ((1 << LW * self.E) // 255)),
                         c.s_axis.tlast.eq(0)]
            with m.If(c.s_axis.tready):
                m.d.sync += sent.eq(1)
        if self.loop:
            # one-beat register: m_axis -> (+1 per lane) -> s_axis
            full = Signal()
            data = Signal(LW * self.E)
            last = Signal()
            m.d.comb += [c.m_axis.tready.eq(~full), c.s_axis.tvalid.eq(full),
                         c.s_axis.tdata.eq(data), c.s_axis.tlast.eq(last)]
            with m.If(c.m_axis.tvalid & ~full):
                inc = [(c.m_axis.tdata[LW * j:LW * (j + 1)] + 1)[:LW] for j in range(self.E)]
                from amaranth.hdl import Cat
                m.d.sync += [full.eq(1), data.eq(Cat(*inc)), last.eq(c.m_axis.tlast)]
            with m.Elif(c.s_axis.tready):
                m.d.sync += full.eq(0)
        return m


async def uart_send(ctx, pin, data: bytes, gap=0):
    for b in data:
        for bit in [0] + [(b >> i) & 1 for i in range(8)] + [1]:
            ctx.set(pin, bit)
            await ctx.tick().repeat(DIV)
        if gap:
            await ctx.tick().repeat(gap)


def simulate(dut, tb, mon):
    """Run testbench ``tb`` and monitor process ``mon`` on ``dut`` at a 1 MHz clock."""
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.add_process(mon)
    sim.run()


def run(dut, requests: bytes, *, cycles=None, gap=0, stop_after=None):
    """Bit-bang ``requests`` into rx; return every byte seen on tx."""
    got = bytearray()
    done = [False]

    async def tb(ctx):
        await ctx.tick().repeat(5)
        await uart_send(ctx, dut.rx, requests, gap=gap)
        n = cycles if cycles is not None else 4000
        for _ in range(n):
            await ctx.tick()
            if stop_after is not None and len(got) >= stop_after:
                break
        done[0] = True

    async def mon(ctx):
        # a UART receiver sampling mid-bit, one clock at a time
        state, cnt, v, nbit = "idle", 0, 0, 0
        async for _, _, tx in ctx.tick().sample(dut.tx):
            if state == "idle":
                if tx == 0:
                    state, cnt = "start", DIV // 2 - 1
            elif cnt:
                cnt -= 1
            elif state == "start":
                state, cnt, v, nbit = "data", DIV - 1, 0, 0
            elif state == "data":
                v |= tx << nbit
                nbit += 1
                cnt = DIV - 1
                if nbit == 8:
                    state = "stop"
            elif state == "stop":
                assert tx == 1, "stop bit"
                got.append(v)
                state = "idle"

    simulate(dut, tb, mon)
    return bytes(got)


def frames(*rs):
    return b"".join(P.encode_response(r) if isinstance(r, Response) else r for r in rs)


def test_crc16_hardware_matches_protocol():
    from amaranth.sim import Simulator as S
    crc = Signal(16)
    byte = Signal(8)
    out = Signal(16)
    m = Module()
    m.d.comb += out.eq(crc16_next(crc, byte))
    rng = random.Random(1)

    async def tb(ctx):
        for c, b in [(0, 0), (0xFFFF, 0xFF), (0x8000, 0), (0, 0x80)] + [
                (rng.randrange(1 << 16), rng.randrange(256)) for _ in range(300)]:
            ctx.set(crc, c)
            ctx.set(byte, b)
            assert ctx.get(out) == P.crc16([b], c)

    sim = S(m)
    sim.add_testbench(tb)
    sim.run()


def test_write_read_ping_exact_bytes():
    dut = Dut()
    req = (P.write32(0x20, 0xDEADBEEF) + P.read32(0x20) + P.read32(0x00)
           + P.write32(0x04, 1) + P.read32(0x3F0) + P.ping())
    got = run(dut, req, cycles=3000)
    want = frames(Response(Cmd.WRITE32, 0, resp=0),
                  Response(Cmd.READ32, 0, resp=0, data=0xDEADBEEF),
                  Response(Cmd.READ32, 0, resp=0, data=0x0101),
                  Response(Cmd.WRITE32, 0, resp=2),            # RO register: SLVERR
                  Response(Cmd.READ32, 0, resp=2, data=0),     # unmapped: SLVERR
                  Response(Cmd.PING, 0, info=(P.PROTOCOL_VERSION, 1, 2, ADDR_BITS)))
    assert got == want


def test_escaped_bytes_and_burst():
    dut = Dut()
    # 0xC0 / 0xDB in data force escapes both ways
    req = (P.write_burst(0x20, [0xC0DBC0DB]) + P.read32(0x20)
           + P.write_burst(0x800, [1, 2, 3]) + P.write_burst(0x1000 - 4, [5, 6]))
    got = run(dut, req, cycles=3000)
    want = frames(Response(Cmd.WRITE_BURST, 0, resp=0, count=1),
                  Response(Cmd.READ32, 0, resp=0, data=0xC0DBC0DB),
                  Response(Cmd.WRITE_BURST, 0, resp=0, count=3),
                  # 0xFFC is unmapped (SLVERR), 0x1000 is beyond 12 address bits (DECERR):
                  # the first non-OKAY response is reported
                  Response(Cmd.WRITE_BURST, 0, resp=2, count=2))
    assert got == want


def test_addresses_beyond_the_core_are_decerr_and_touch_nothing():
    """An address bit at or above addr_bits (not stored by the parser, only flagged) makes
    the access DECERR without a bus transaction, in every header byte; the sibling
    addresses inside the core are OKAY (a register written before is unchanged)."""
    dut = Dut()
    high = [1 << ADDR_BITS, 1 << 15, 1 << 23, 1 << 31]
    req = (P.write32(0x20, 7) + b"".join(P.write32(h | 0x20, 9) for h in high)
           + b"".join(P.read32(h | 0x20) for h in high) + P.read32(0x20)
           + P.write_burst((1 << ADDR_BITS) | 0x20, [5]))
    got = run(dut, req, cycles=9000)
    want = frames(Response(Cmd.WRITE32, 0, resp=0),
                  *[Response(Cmd.WRITE32, 0, resp=3) for _ in high],
                  *[Response(Cmd.READ32, 0, resp=3, data=0) for _ in high],
                  Response(Cmd.READ32, 0, resp=0, data=7),
                  Response(Cmd.WRITE_BURST, 0, resp=3, count=1))
    assert got == want


def test_stream_in_and_output_frame():
    dut = Dut(elem_bytes=1, stream_elems=2)
    vec = [1, -2, 3, 127, -128]
    got = run(dut, P.stream_in(vec, 1), cycles=1500)
    parsed = P.Parser().feed(got)
    kinds = sorted(type(x).__name__ for x in parsed)
    assert kinds == ["OutputFrame", "Response"], parsed
    resp = next(x for x in parsed if isinstance(x, Response))
    assert resp == Response(Cmd.STREAM_IN, 0, count=5)
    out = next(x for x in parsed if isinstance(x, P.OutputFrame))
    # every lane of every beat, +1 by the loopback (the unused lane of the last beat: 0+1)
    want = [((v + 1 + 128) % 256) - 128 for v in vec] + [1]
    assert out.elements(1) == want
    assert P.encode_output(out.data) in got


def test_wide_elements():
    dut = Dut(elem_bytes=2, stream_elems=1)
    vec = [0x1234, -1, 0x7FFF, -0x8000]
    got = run(dut, P.stream_in(vec, 2), cycles=1500)
    parsed = P.Parser().feed(got)
    out = next(x for x in parsed if isinstance(x, P.OutputFrame))
    assert out.elements(2) == [0x1235, 0, -0x8000, -0x7FFF]


def _with_crc(content: bytes) -> bytes:
    return content + P.crc16(content).to_bytes(2, "big")


# protocol version 1's CRC-8 (polynomial 0x07), to show what it missed
_crc8_smbus = P._crc8


def test_two_bit_error_crc8_missed_is_refused():
    """Two bits 127 apart flipped in a WRITE_BURST's words: version 1's CRC-8 (period
    127) checked and the bridge answered OK; the CRC-16 does not check (BAD_CRC; the
    words run as they arrive, the host fails the load on the status)."""
    dut = Dut()
    ((content, _),) = P.SlipDecoder().feed(P.write_burst(0x800, [1, 2, 3, 4, 5]))
    bad = bytearray(content)
    for k in (8 * 7, 8 * 7 + 127):                       # in words 0 and 3
        bad[k // 8] ^= 0x80 >> (k % 8)
    body = 1 + 4 + 2 + 4 * 5                             # type, addr, n, the words
    assert _crc8_smbus(bad[:body]) == _crc8_smbus(content[:body])
    got = run(dut, P.slip_encode(bytes(bad)), cycles=3000)
    assert got == frames(Response(Cmd.WRITE_BURST, Status.BAD_CRC, resp=0, count=5))


def test_bad_frames_are_reported_and_resync():
    dut = Dut()
    good = P.write32(0x20, 7)
    corrupt = bytearray(good)
    corrupt[3] ^= 0x01                                     # a data bit: CRC fails
    short = P.slip_encode(_with_crc(bytes([Cmd.WRITE32, 1, 2, 3])))
    unknown = P.encode_request(0x33, b"")
    req = (bytes(corrupt) + short + unknown + b"\xC0\xC0\xC0" + b"\x55\x66" + bytes([P.END])
           + P.read32(0x20))
    got = run(dut, req, cycles=3000)
    want = frames(Response(Cmd.WRITE32, Status.BAD_CRC, resp=0),
                  Response(Cmd.WRITE32, Status.BAD_LENGTH, resp=0),
                  P.slip_encode(_with_crc(bytes([0xB3, Status.BAD_CMD]))),
                  # "\x55\x66" is a frame of garbage: 0x55 is not a command
                  P.slip_encode(_with_crc(bytes([0xD5, Status.BAD_CMD]))),
                  Response(Cmd.READ32, 0, resp=0, data=0))     # the bad write never ran
    assert got == want


def test_bytes_offered_every_cycle():
    """The parser acts on a byte the cycle after it takes it, from registered compares:
    with a byte offered on every cycle (a FIFO backed up behind the UART), every request
    of the other tests still gets exactly its response, and no byte is taken on two
    cycles in a row."""
    m = Module()
    m.submodules.br = br = Bridge(addr_bits=ADDR_BITS, elem_bytes=1, stream_elems=2)
    m.submodules.esc = esc = SlipEscaper()
    m.submodules.slave = s = AXI4LiteSlave(ADDR_BITS)
    m.submodules.rf = rf = RegisterFile((REGS, WINS), ADDR_BITS)
    wiring.connect(m, br.axil, s.axil)
    wiring.connect(m, s.bus, rf.bus)
    wiring.connect(m, br.tx, esc.i)
    good = P.write32(0x20, 7)
    corrupt = bytearray(good)
    corrupt[3] ^= 0x01
    req = (P.write32(0x20, 0xC0DBC0DB) + P.read32(0x20) + bytes(corrupt)
           + P.write_burst(0x800, [1, 2, 3]) + P.write_burst(0x20, [0x55]) + P.read32(0x20)
           + P.ping())
    want = frames(Response(Cmd.WRITE32, 0, resp=0),
                  Response(Cmd.READ32, 0, resp=0, data=0xC0DBC0DB),
                  Response(Cmd.WRITE32, Status.BAD_CRC, resp=0),
                  Response(Cmd.WRITE_BURST, 0, resp=0, count=3),
                  Response(Cmd.WRITE_BURST, 0, resp=0, count=1),
                  Response(Cmd.READ32, 0, resp=0, data=0x55),
                  Response(Cmd.PING, 0, info=(P.PROTOCOL_VERSION, 1, 2, ADDR_BITS)))
    got = bytearray()
    taken = []

    async def tb(ctx):
        ctx.set(esc.o.ready, 1)
        for b in req:
            ctx.set(br.rx.payload, b)
            ctx.set(br.rx.valid, 1)
            while True:
                _, _, ready, out_v, out_b = await ctx.tick().sample(
                    br.rx.ready, esc.o.valid, esc.o.payload)
                if out_v:
                    got.append(out_b)
                if ready:
                    break
        ctx.set(br.rx.valid, 0)
        for _ in range(400):
            _, _, out_v, out_b = await ctx.tick().sample(esc.o.valid, esc.o.payload)
            if out_v:
                got.append(out_b)

    async def mon(ctx):
        async for _, _, v, r in ctx.tick().sample(br.rx.valid, br.rx.ready):
            taken.append(bool(v and r))

    simulate(m, tb, mon)
    assert bytes(got) == want
    assert not any(a and b for a, b in zip(taken, taken[1:]))
    assert sum(taken) == len(req)


def test_stream_stall_is_reported_not_hung():
    dut = Dut(loop=False, stall_ticks=4)              # nobody takes m_axis beats
    got = run(dut, P.stream_in([1, 2, 3, 4], 1) + P.ping(), cycles=6000)
    parsed = P.Parser().feed(got)
    assert parsed[0] == Response(Cmd.STREAM_IN, Status.STALL, count=4)
    assert parsed[1].cmd == Cmd.PING and parsed[1].status == 0


def test_axil_timeout_is_reported_not_hung():
    dut = Dut(slave=False)                            # no AXI4-Lite handshake ever completes
    req = P.write32(0x20, 7) + P.read32(0x20) + P.write_burst(0x20, [1, 2]) + P.ping()
    got = run(dut, req, cycles=3000)
    assert got == frames(Response(Cmd.WRITE32, Status.TIMEOUT, resp=0),
                         Response(Cmd.READ32, Status.TIMEOUT, resp=0, data=0),
                         Response(Cmd.WRITE_BURST, Status.TIMEOUT, resp=0, count=2),
                         Response(Cmd.PING, 0, info=(P.PROTOCOL_VERSION, 1, 2, ADDR_BITS)))


def test_output_frame_closed_when_the_core_stops_mid_vector():
    dut = Dut(loop=False, partial=True, stall_ticks=4)
    got = run(dut, b"", cycles=2000)
    assert got == P.encode_output(b"\x55\x55")        # one beat (2 lanes), no tlast


def test_uart_loopback_random_bytes():
    m = Module()
    m.submodules.tx = tx = UARTTx(5)
    m.submodules.rx = rx = UARTRx(5)
    m.d.comb += rx.rx.eq(tx.tx)
    data = bytes(random.Random(3).randrange(256) for _ in range(40))
    got = bytearray()

    async def tb(ctx):
        for b in data:
            ctx.set(tx.i.payload, b)
            ctx.set(tx.i.valid, 1)
            await ctx.tick().until(tx.i.ready)
            ctx.set(tx.i.valid, 0)
            await ctx.tick()
        await ctx.tick().repeat(200)

    async def mon(ctx):
        async for _, _, valid, d, fe in ctx.tick().sample(rx.o.valid, rx.o.payload, rx.frame_error):
            assert not fe
            if valid:
                got.append(d)

    simulate(m, tb, mon)
    assert bytes(got) == data


@pytest.mark.parametrize("bad", [3, 0])
def test_divisor_checked(bad):
    with pytest.raises(ValueError, match="divisor"):
        UARTRx(bad)


@pytest.mark.parametrize("elem_bytes,stream_elems", [(1, 1), (1, 4), (2, 3), (4, 2)])
def test_frame_sides_share_the_bridge_shape(elem_bytes, stream_elems):
    """Parser and sender take the bridge's parameters from one place: their stream beats
    are exactly as wide as the bridge's and the core's (elem_bytes * 8 * stream_elems)."""
    from ttforge.firmware.uart import Bridge, CommandParser, FrameSender

    shape = dict(addr_bits=12, elem_bytes=elem_bytes, stream_elems=stream_elems)
    width = elem_bytes * 8 * stream_elems
    parser, sender = CommandParser(**shape, stall_ticks=5), FrameSender(**shape, stall_ticks=5)
    for side in (parser, sender):
        assert (side.addr_bits, side.elem_bytes, side.stream_elems, side.stall_ticks) == (
            12, elem_bytes, stream_elems, 5)
    assert len(parser.m_axis.tdata) == len(sender.s_axis.tdata) == width
    bridge, core = Bridge(**shape), BridgeCore(divisor=4, **shape)
    assert len(bridge.m_axis.tdata) == len(bridge.s_axis.tdata) == width
    assert len(core.m_axis.tdata) == len(core.s_axis.tdata) == width


# ------------------------------------------------------- vectors longer than one frame

def _bridge_stream(req: bytes, *, elem_bytes: int, stream_elems: int, idle: int = 2000,
                   whole: bool = True):
    """The :class:`Bridge` at its byte ports (a byte offered every cycle, every tx byte
    taken) and a core that takes every m_axis beat at once and sends it back on s_axis
    (+1 per lane): after the vector's tlast beat (``whole``: as the accelerator, whose
    output comes after its input) or at once (a loopback). The tx bytes and the m_axis
    beats ``(lanes, tlast)`` the core took."""
    B, E = elem_bytes, stream_elems
    LW = 8 * B
    mask = (1 << LW) - 1
    m = Module()
    m.submodules.br = br = Bridge(addr_bits=ADDR_BITS, elem_bytes=B, stream_elems=E)
    m.submodules.esc = esc = SlipEscaper()
    wiring.connect(m, br.tx, esc.i)
    got, beats, queue = bytearray(), [], []

    async def tb(ctx):
        ctx.set(esc.o.ready, 1)
        ctx.set(br.rx.valid, 1)
        for b in req:
            ctx.set(br.rx.payload, b)
            while not (await ctx.tick().sample(br.rx.ready))[2]:
                pass
        ctx.set(br.rx.valid, 0)
        quiet = 0
        while quiet < idle:        # until the bridge has been silent for `idle` cycles
            await ctx.tick()
            quiet = 0 if ctx.get(esc.o.valid) or ctx.get(br.s_axis.tvalid) else quiet + 1

    async def core(ctx):
        ctx.set(br.m_axis.tready, 1)
        held = []
        async for _, _, mv, md, ml, sv, sr in ctx.tick().sample(
                br.m_axis.tvalid, br.m_axis.tdata, br.m_axis.tlast, br.s_axis.tvalid, br.s_axis.tready):
            if sv and sr:
                queue.pop(0)
            if mv:
                lanes = [(md >> (LW * j)) & mask for j in range(E)]
                beats.append(([v - (1 << LW) if v >> (LW - 1) else v for v in lanes], bool(ml)))
                held.append((sum(((v + 1) & mask) << (LW * j) for j, v in enumerate(lanes)), bool(ml)))
                if ml or not whole:
                    queue.extend(held)
                    held.clear()
            ctx.set(br.s_axis.tvalid, bool(queue))
            if queue:
                ctx.set(br.s_axis.tdata, queue[0][0])
                ctx.set(br.s_axis.tlast, queue[0][1])

    got += _simulate_bridge(m, esc, tb, core)
    return bytes(got), beats


def _simulate_bridge(m, esc, tb, core) -> bytes:
    """Run ``tb`` and the background ``core`` on ``m``; the bytes out of the escaper ``esc``."""
    got = bytearray()

    async def mon(ctx):
        async for _, _, ov, ob in ctx.tick().sample(esc.o.valid, esc.o.payload):
            if ov:
                got.append(ob)

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.add_testbench(core, background=True)
    sim.add_process(mon)
    sim.run()
    return bytes(got)


def _plus1(v: int, B: int) -> int:
    w = 8 * B
    return ((v + 1 + (1 << (w - 1))) % (1 << w)) - (1 << (w - 1))


@pytest.mark.parametrize("B,E,n", [(1, 2, 5000), (2, 3, 2500)])
def test_vector_longer_than_a_frame_in_and_out(B, E, n):
    """A 5,000-element 8-bit vector (and a 2,500-element 16-bit one on 3 lanes) goes in as
    STREAM_IN frames of whole beats, `more` on all but the last: the core gets its beats
    with tlast on the last one only; it comes back as a full output frame and a
    continuation (OUTPUT_CONT), byte for byte what protocol.output_frames encodes. The
    next vector (3 elements) starts a new output frame."""
    rng = random.Random(n)
    lo = -(1 << (8 * B - 1))
    vec = [rng.randrange(lo, -lo) for _ in range(n)]
    reqs = P.stream_in_frames(vec, B, E)
    k = P.stream_piece_elems(B, E)
    assert len(reqs) == 2 and k % E == 0 and k < n
    got, beats = _bridge_stream(b"".join(reqs) + P.stream_in([1, 2, 3], B), elem_bytes=B, stream_elems=E)
    # the core's side: whole beats, tlast only on the vector's last beat
    nb = -(-n // E)
    assert [t for _, t in beats[:nb]] == [False] * (nb - 1) + [True]
    flat = [v for lanes, _ in beats[:nb] for v in lanes]
    assert flat == vec + [0] * (nb * E - n)
    tail = [1, 2, 3] + [0] * (-3 % E)
    assert beats[nb:] == [(tail[i:i + E], i + E == len(tail)) for i in range(0, len(tail), E)]
    # the host's side
    items = P.Parser().feed(got)
    rs = [x for x in items if isinstance(x, Response)]
    assert rs == [Response(Cmd.STREAM_IN, 0, count=k), Response(Cmd.STREAM_IN, 0, count=n - k),
                  Response(Cmd.STREAM_IN, 0, count=3)]
    outs = [x for x in items if isinstance(x, P.OutputFrame)]
    assert [o.cont for o in outs] == [False, True, False]
    assert len(outs[0].data) == P.output_piece_bytes(B, E) and len(outs[0].data) + 1 <= P.MAX_DATA_BYTES
    want = P.pack_elements([_plus1(v, B) for v in flat], B)
    pk = P.output_piece_bytes(B, E)                    # the exact bytes of each frame
    assert P.encode_output(want[:pk]) in got and P.encode_output(want[pk:], cont=True) in got
    asm = P.OutputAssembler(len(want), B, E)
    assert asm.add(outs[0]) is None and asm.add(outs[1]) == want
    assert outs[2].data == P.pack_elements([_plus1(v, B) for v in tail], B)


def test_full_output_frame_at_the_vectors_end_is_no_continuation():
    """A vector that fills an output frame exactly ends with it (tlast): the next vector's
    frame is a start (OUTPUT_TYPE), not a continuation."""
    k = P.output_piece_bytes(1, 2)
    vec = [i % 100 for i in range(k)]
    got, beats = _bridge_stream(b"".join(P.stream_in_frames(vec, 1, 2)) + P.stream_in([5, 6], 1),
                                elem_bytes=1, stream_elems=2)
    outs = [x for x in P.Parser().feed(got) if isinstance(x, P.OutputFrame)]
    assert [(len(o.data), o.cont) for o in outs] == [(k, False), (2, False)]
    assert outs[1].data == bytes([6, 7])
    assert sum(t for _, t in beats) == 2


def test_more_frame_ending_inside_a_beat_is_bad_length():
    """A STREAM_IN frame with `more` must end at a whole beat: one that ends inside one is
    BAD_LENGTH; the lanes start afresh with the next frame."""
    req = P.stream_in([1, 2, 3], 1, more=True) + P.stream_in([7, 8], 1)
    got, beats = _bridge_stream(req, elem_bytes=1, stream_elems=2, idle=300)
    rs = [x for x in P.Parser().feed(got) if isinstance(x, Response)]
    assert rs == [Response(Cmd.STREAM_IN, Status.BAD_LENGTH, count=3), Response(Cmd.STREAM_IN, 0, count=2)]
    assert beats[-1] == ([7, 8], True)


def test_output_frame_closed_for_a_waiting_response_is_continued():
    """A core that sends each beat back at once (a loopback) has the output frame waiting
    for beats that come only after the host has the answer to the first STREAM_IN
    frame: the output frame is closed for that answer (no deadlock until the stall
    timeout) and the vector goes on in a continuation; the pieces join to the vector."""
    vec = [(7 * i) % 256 - 128 for i in range(5000)]
    got, beats = _bridge_stream(b"".join(P.stream_in_frames(vec, 1, 2)), elem_bytes=1, stream_elems=2,
                                whole=False)
    items = P.Parser().feed(got)
    assert [type(x).__name__ for x in items] == ["OutputFrame", "Response", "OutputFrame", "Response"]
    assert [x.cont for x in items[::2]] == [False, True]
    asm = P.OutputAssembler(5000, 1, 2)
    assert asm.add(items[0]) is None
    assert asm.add(items[2]) == P.pack_elements([_plus1(v, 1) for v in vec], 1)
    assert [t for _, t in beats] == [False] * 2499 + [True]


# ------------------------------------------------------- the core's soft reset

def _reset_mid_vector(write: bytes, output_reset):
    """A :class:`Bridge` on a register file whose core sends a full output frame's beats
    without tlast and stops (a hung engine); the host then sends ``write``, and the core
    a new one-beat vector. The output frames ``[(cont, data), ...]`` and the responses."""
    B, E = 1, 2
    m = Module()
    m.submodules.br = br = Bridge(addr_bits=ADDR_BITS, elem_bytes=B, stream_elems=E, tick_cycles=4,
                                  stall_ticks=4, output_reset=output_reset)
    m.submodules.slave = s = AXI4LiteSlave(ADDR_BITS)
    m.submodules.rf = rf = RegisterFile((REGS, WINS), ADDR_BITS)
    wiring.connect(m, br.axil, s.axil)
    wiring.connect(m, s.bus, rf.bus)
    m.submodules.esc = esc = SlipEscaper()
    wiring.connect(m, br.tx, esc.i)
    full = P.output_piece_bytes(B, E) // (B * E)
    answered = [False]

    async def tb(ctx):
        ctx.set(esc.o.ready, 1)
        await ctx.tick().repeat(20 * full)        # the first frame goes out full, then nothing
        ctx.set(br.rx.valid, 1)
        for b in write:
            ctx.set(br.rx.payload, b)
            while not (await ctx.tick().sample(br.rx.ready))[2]:
                pass
        ctx.set(br.rx.valid, 0)
        await ctx.tick().repeat(400)
        answered[0] = True
        await ctx.tick().repeat(400)

    async def core(ctx):
        for k in range(full):                      # the old vector: no tlast, then it stops
            ctx.set(br.s_axis.tvalid, 1)
            ctx.set(br.s_axis.tdata, 0x0101 * (k % 100))
            ctx.set(br.s_axis.tlast, 0)
            while not (await ctx.tick().sample(br.s_axis.tready))[2]:
                pass
        ctx.set(br.s_axis.tvalid, 0)
        while not answered[0]:
            await ctx.tick()
        ctx.set(br.s_axis.tvalid, 1)               # the next vector: one beat
        ctx.set(br.s_axis.tdata, 0x0907)
        ctx.set(br.s_axis.tlast, 1)
        while not (await ctx.tick().sample(br.s_axis.tready))[2]:
            pass
        ctx.set(br.s_axis.tvalid, 0)

    items = P.Parser().feed(_simulate_bridge(m, esc, tb, core))
    return ([(x.cont, x.data) for x in items if isinstance(x, P.OutputFrame)],
            [x for x in items if isinstance(x, Response)])


@pytest.mark.parametrize("write, output_reset, starts", [
    (P.write32(0x0C, 1), (0x0C, 1), True),          # the soft reset: the next frame starts a vector
    (P.write32(0x0C, 2), (0x0C, 1), False),         # another CMD bit: the vector may go on
    (P.write32(0x20, 1), (0x0C, 1), False),         # another register
    (P.write32(0x0C, 1), None, False)])             # a bridge told of no soft reset
def test_after_the_cores_soft_reset_the_next_output_frame_starts_a_vector(write, output_reset, starts):
    """An output frame closed full (no tlast: the vector goes on) and then a hung core's
    CMD.SOFT_RESET, which drops the rest of its vector: the next vector's first frame
    was marked a continuation (OUTPUT_CONT), and the host refused it ("a continuation
    output frame without a start"). The bridge now sees the soft reset's write and
    starts a vector; other writes leave the continuation as it was."""
    outs, rs = _reset_mid_vector(write, output_reset)
    full = P.output_piece_bytes(1, 2)
    assert rs == [Response(Cmd.WRITE32, 0, resp=0)]
    assert [(c, len(d)) for c, d in outs] == [(False, full), (not starts, 2)]
    assert outs[1][1] == bytes([7, 9])
    if starts:
        assert P.OutputAssembler(2, 1, 2).add(P.OutputFrame(outs[1][1], cont=outs[1][0])) == bytes([7, 9])


@pytest.mark.filterwarnings("ignore::amaranth.hdl._ir.UnusedElaboratable")   # elaborated one level only
def test_the_board_tells_its_bridge_the_accelerators_soft_reset():
    """The inference board's bridge knows ``CMD.SOFT_RESET`` of the accelerator's register
    map (the write the host sends to a hung engine); a training top, which sends no output
    stream back, gives none."""
    from ttforge.firmware.board import BoardCore, output_reset
    from ttforge.hw.config import AccelConfig
    from ttforge.hw.regmap import RegisterMap

    cfg = AccelConfig()
    rm = RegisterMap(cfg)
    cmd = next(r for r in rm.registers if r.name == "CMD")
    bit = next(f for f in cmd.fields if f.name == "SOFT_RESET")
    m = BoardCore(cfg, divisor=4, clk_hz=1_000_000).elaborate(None)
    assert m.submodules.bridge.bridge.output_reset == (rm.addr("CMD"), bit.put(1))
    assert output_reset(type("NoOutput", (), {"regmap": rm})()) is None
