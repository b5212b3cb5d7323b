"""UART (8N1) and the UART-to-AXI4-Lite/AXI4-Stream bridge, in Amaranth.

The bridge is a chain of small components joined by ``amaranth.lib.stream`` interfaces
(``docs/boards.md``, "Protocol"):

    rx pin -> UARTRx -> StreamFIFO -> CommandParser -> AXI4LiteMaster -> axil
                                         |     \\-> m_axis (input vectors)
                                         v response
              tx pin <- UARTTx <- SlipEscaper <- FrameSender <- s_axis (output vectors)

* :class:`UARTRx`, :class:`UARTTx`: 8 data bits, no parity, one stop bit, LSB first;
  one bit lasts ``divisor`` clock cycles (``divisor = round(f_clk / baud)``, >= 4). The
  receiver synchronises the pin through two flip-flops, samples each bit in its middle
  and reports a byte whose stop bit is 0 as a framing error. A UART cannot wait: the
  receiver's stream is ``always_ready`` (a byte its consumer does not take is lost).
* :class:`StreamFIFO`: the received bytes, buffered (:class:`amaranth.lib.fifo.SyncFIFOBuffered`).
* :class:`CommandParser`: SLIP-framed requests of :mod:`ttforge.firmware.protocol` in;
  AXI4-Lite requests (WRITE32, READ32, WRITE_BURST) to the :class:`AXI4LiteMaster`, beats
  of input vectors on ``m_axis`` (STREAM_IN), and one response per request to the
  :class:`FrameSender`.
* :class:`FrameSender`: responses and output-vector frames (every ``s_axis`` beat of the
  core) as bytes, with their CRC-16 (0x1021); :class:`SlipEscaper` escapes them.
* :class:`Bridge` joins parser, master and sender; :class:`BridgeCore` adds the UART,
  the FIFO and the escaper (the pins level).

Nothing here waits forever: every wait for a handshake goes through one helper,
:class:`HandshakeTimeout`; an AXI4-Lite transaction and a stream beat the core does not
take are abandoned after a timeout and reported (``Status.TIMEOUT``, ``Status.STALL``).
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, enum, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ttforge.firmware.protocol import (CRC_BYTES, CRC_POLY, END, ESC, ESC_END, ESC_ESC, OUTPUT_CONT,
                                       OUTPUT_TYPE, PROTOCOL_VERSION, Cmd, Status, output_piece_bytes)
from ttforge.hw.axil import AXI4LiteSignature, DATA_BITS
from ttforge.hw.axis import AXISSignature

__all__ = ["UARTRx", "UARTTx", "StreamFIFO", "SlipEscaper", "HandshakeTimeout", "TxByte",
           "AXI4LiteMaster", "axil_request_layout", "AXIL_RESPONSE", "RESPONSE", "CommandParser",
           "FrameSender", "Bridge", "BridgeCore", "crc16_next", "CRC_BITS", "MIN_DIVISOR", "MAX_DIVISOR",
           "RX_FIFO_DEPTH", "AXIL_TIMEOUT_TICKS"]

MIN_DIVISOR = 4
#: The largest: the bit counter is 20 bits wide.
MAX_DIVISOR = (1 << 20) - 1
RX_FIFO_DEPTH = 32
#: ticks (byte times) an AXI4-Lite handshake may take before the bridge abandons it
AXIL_TIMEOUT_TICKS = 2
#: the AXI4-Lite response the bridge gives itself for an address beyond the core's
DECERR = 3


def _check_divisor(divisor: int) -> int:
    divisor = int(divisor)
    if divisor < MIN_DIVISOR or divisor > MAX_DIVISOR:
        raise ValueError(f"UART divisor={divisor} must be in {MIN_DIVISOR}..{MAX_DIVISOR} "
                         "(clock cycles per bit)")
    return divisor


# ----------------------------------------------------------------------- helpers

class HandshakeTimeout:
    """The one wait-for-a-handshake-with-a-timeout of the bridge.

    One tick counter per state machine: :meth:`wait`, called inside the states that wait
    for a handshake, counts ``tick`` pulses while the machine waits (the count restarts
    whenever the handshake completes or no state waits) and moves ``state`` to ``ok`` on
    the handshake, or to ``fail`` once ``limit`` ticks passed without it.
    """

    def __init__(self, m: Module, tick, limit: int, *, name: str):
        self.limit = int(limit)
        self.count = Signal(range(self.limit + 2), name=f"{name}_ticks")
        self.waiting = Signal(name=f"{name}_waiting")
        with m.If(~self.waiting):
            m.d.sync += self.count.eq(0)
        with m.Elif(tick):
            m.d.sync += self.count.eq(self.count + 1)

    def wait(self, m: Module, done, *, state: Signal, ok, fail):
        """Wait for ``done`` in the current state; return the "gave up" condition (for the
        caller's own bookkeeping: it is true in the cycle ``state`` moves to ``fail``)."""
        expired = self.count == self.limit
        m.d.comb += self.waiting.eq(1)
        with m.If(done):
            m.d.sync += [self.count.eq(0), state.eq(ok)]
        with m.Elif(expired):
            m.d.sync += state.eq(fail)
        return ~done & expired


def _select(m: Module, index, values, out):
    """``out = values[index]`` (a case per value; ``out`` keeps its default elsewhere)."""
    with m.Switch(index):
        for k, v in enumerate(values):
            with m.Case(k):
                m.d.comb += out.eq(v)


#: width of the CRC register (``protocol.CRC_BYTES`` bytes)
CRC_BITS = 8 * CRC_BYTES


def _crc_matrix(width: int, poly: int) -> list[tuple[list[int], list[int]]]:
    """For each output bit of one byte step of an MSB-first CRC of ``width`` bits and
    polynomial ``poly``: (crc bits, data bits) XORed."""
    # symbolic bits: ("c", i) or ("d", i); each register bit is a set (XOR). The byte
    # enters at the top of the register (MSB first), then 8 shifts with feedback.
    reg = [{("c", i)} for i in range(width)]
    for i in range(8):
        reg[width - 8 + i] ^= {("d", i)}
    for _ in range(8):
        top = reg[width - 1]
        reg = [set()] + reg[:width - 1]
        for i in range(width):
            if poly >> i & 1:
                reg[i] = reg[i] ^ top
    return [(sorted(i for k, i in r if k == "c"), sorted(i for k, i in r if k == "d")) for r in reg]


_CRC_MATRIX = _crc_matrix(CRC_BITS, CRC_POLY)


def crc16_next(crc, byte):
    """The CRC-16/XMODEM register after one more byte (an XOR network, no loop)."""
    bits = []
    for cs, ds in _CRC_MATRIX:
        terms = [crc[i] for i in cs] + [byte[i] for i in ds]
        v = terms[0]
        for t in terms[1:]:
            v = v ^ t
        bits.append(v)
    return Cat(*bits)


# -------------------------------------------------------------------------- UART

class _UARTPort(wiring.Component):
    """A UART side clocked every ``divisor`` cycles per bit (the signature is the subclass's)."""

    def __new__(cls, divisor, *args, src_loc_at=0, **kwargs):
        _check_divisor(divisor)      # before the object exists: nothing left to warn about
        return super().__new__(cls, src_loc_at=1 + src_loc_at)

    def __init__(self, divisor: int):
        self.divisor = _check_divisor(divisor)
        super().__init__()


class UARTRx(_UARTPort):
    """``rx`` pin -> byte stream ``o`` (``valid`` one cycle per byte; ``always_ready``:
    a UART cannot wait). ``frame_error`` pulses for a byte whose stop bit is 0 (the byte
    is dropped)."""

    rx: In(1, init=1)
    o: Out(stream.Signature(8, always_ready=True))
    frame_error: Out(1)

    class State(enum.Enum, shape=3):
        IDLE = 0
        START = 1
        DATA = 2
        STOP = 3
        BREAK = 4       # a framing error: wait for the line to return high

    def elaborate(self, platform):
        m = Module()
        S = self.State
        d = self.divisor
        s1 = Signal(init=1)
        s2 = Signal(init=1)
        m.d.sync += [s1.eq(self.rx), s2.eq(s1)]
        cnt = Signal(range(d))
        bit = Signal(range(8))
        sr = Signal(8)
        state = Signal(S)
        m.d.comb += self.o.payload.eq(sr)     # valid while `o.valid` is high (and until the next start bit)
        m.d.sync += [self.o.valid.eq(0), self.frame_error.eq(0)]
        with m.If(cnt != 0):
            m.d.sync += cnt.eq(cnt - 1)
        with m.Switch(state):
            with m.Case(S.IDLE):
                with m.If(~s2):
                    m.d.sync += [cnt.eq(d // 2 - 1), state.eq(S.START)]
            with m.Case(S.START):
                with m.If(cnt == 0):
                    with m.If(~s2):
                        m.d.sync += [cnt.eq(d - 1), bit.eq(0), state.eq(S.DATA)]
                    with m.Else():
                        m.d.sync += state.eq(S.IDLE)      # a glitch, not a start bit
            with m.Case(S.DATA):
                with m.If(cnt == 0):
                    m.d.sync += [sr.eq(Cat(sr[1:], s2)), cnt.eq(d - 1), bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.d.sync += state.eq(S.STOP)
            with m.Case(S.STOP):
                with m.If(cnt == 0):
                    with m.If(s2):
                        m.d.sync += [self.o.valid.eq(1), state.eq(S.IDLE)]
                    with m.Else():
                        m.d.sync += [self.frame_error.eq(1), state.eq(S.BREAK)]
            with m.Case(S.BREAK):
                with m.If(s2):
                    m.d.sync += state.eq(S.IDLE)
        return m


class UARTTx(_UARTPort):
    """Byte stream ``i`` -> ``tx`` pin (idle high); ``i.ready`` while idle."""

    i: In(stream.Signature(8))
    tx: Out(1, init=1)

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        sr = Signal(10, init=0x3FF)
        bits = Signal(range(11))
        cnt = Signal(range(d))
        m.d.comb += [self.tx.eq(sr[0]), self.i.ready.eq(bits == 0)]
        with m.If(bits == 0):
            with m.If(self.i.valid):
                m.d.sync += [sr.eq(Cat(Const(0, 1), self.i.payload, Const(1, 1))), bits.eq(10),
                             cnt.eq(d - 1)]
        with m.Elif(cnt == 0):
            m.d.sync += [sr.eq(Cat(sr[1:], Const(1, 1))), bits.eq(bits - 1), cnt.eq(d - 1)]
        with m.Else():
            m.d.sync += cnt.eq(cnt - 1)
        return m


class StreamFIFO(wiring.Component):
    """A first-word-fall-through FIFO of ``depth`` bytes between two byte streams
    (:class:`amaranth.lib.fifo.SyncFIFOBuffered`)."""

    w: In(stream.Signature(8))
    r: Out(stream.Signature(8))

    def __init__(self, depth: int):
        self.depth = int(depth)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = q = fifo.SyncFIFOBuffered(width=8, depth=self.depth)
        m.d.comb += [q.w_data.eq(self.w.payload), q.w_en.eq(self.w.valid), self.w.ready.eq(q.w_rdy),
                     self.r.payload.eq(q.r_data), self.r.valid.eq(q.r_rdy), q.r_en.eq(self.r.ready)]
        return m


class TxByte(data.Struct):
    """A byte to send; ``raw`` marks a frame delimiter (END) the escaper must not escape."""
    data: 8
    raw: 1


class SlipEscaper(wiring.Component):
    """:class:`TxByte` stream -> UART bytes: a non-raw END or ESC goes out as two bytes
    (ESC, ESC_END/ESC_ESC)."""

    i: In(stream.Signature(TxByte))
    o: Out(stream.Signature(8))

    def elaborate(self, platform):
        m = Module()
        second = Signal()
        second_b = Signal(8)
        byte = self.i.payload.data
        needs = ~self.i.payload.raw & ((byte == END) | (byte == ESC))
        with m.If(second):
            m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(second_b)]
            with m.If(self.o.ready):
                m.d.sync += second.eq(0)
        with m.Else():
            m.d.comb += [self.o.valid.eq(self.i.valid), self.i.ready.eq(self.o.ready),
                         self.o.payload.eq(Mux(needs, ESC, byte))]
            with m.If(self.i.valid & self.o.ready & needs):
                m.d.sync += [second.eq(1), second_b.eq(Mux(byte == END, ESC_END, ESC_ESC))]
        return m


# ------------------------------------------------------------------ AXI4-Lite master

def axil_request_layout(addr_bits: int) -> data.StructLayout:
    """One AXI4-Lite transaction: a write of ``data`` to ``addr``, or a read of ``addr``."""
    return data.StructLayout({"write": 1, "addr": addr_bits, "data": DATA_BITS})


#: the outcome of a transaction: the AXI response, the read data, or a timeout
AXIL_RESPONSE = data.StructLayout({"resp": 2, "data": DATA_BITS, "timeout": 1})


class AXI4LiteMaster(wiring.Component):
    """One AXI4-Lite transaction per ``req`` beat; its outcome is one ``rsp`` beat.

    ``req`` is taken (``ready``) in the cycle its ``rsp`` is: the request's payload (held
    by its sender) drives the address and write data for the whole transaction, so the
    master keeps no copy. A write drives AW and W together; every handshake (AW and W,
    B, AR, R) is abandoned after ``timeout_ticks`` ticks (``rsp.timeout``). ``rsp.data``
    is the read data (valid for a read that did not time out).
    """

    class State(enum.Enum, shape=3):
        IDLE = 0
        WRITE = 1       # AW and W
        B = 2
        AR = 3
        R = 4
        TIMEOUT = 5

    def __init__(self, addr_bits: int, *, timeout_ticks: int = AXIL_TIMEOUT_TICKS):
        self.addr_bits = int(addr_bits)
        self.timeout_ticks = int(timeout_ticks)
        super().__init__({
            "req": In(stream.Signature(axil_request_layout(self.addr_bits))),
            "rsp": Out(stream.Signature(AXIL_RESPONSE)),
            "axil": Out(AXI4LiteSignature(self.addr_bits)),
            "tick": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        S = self.State
        ax, req, rsp = self.axil, self.req, self.rsp
        state = Signal(S)
        timer = HandshakeTimeout(m, self.tick, self.timeout_ticks, name="axil")
        aw_done = Signal()
        w_done = Signal()
        m.d.comb += [ax.awaddr.eq(req.p.addr), ax.araddr.eq(req.p.addr), ax.wdata.eq(req.p.data),
                     ax.wstrb.eq(0xF),
                     rsp.p.data.eq(ax.rdata), rsp.p.resp.eq(Mux(state == S.R, ax.rresp, ax.bresp)),
                     rsp.p.timeout.eq(state == S.TIMEOUT),
                     req.ready.eq(rsp.valid & rsp.ready)]
        with m.Switch(state):
            with m.Case(S.IDLE):
                m.d.sync += [aw_done.eq(0), w_done.eq(0)]
                with m.If(req.valid):
                    m.d.sync += state.eq(Mux(req.p.write, S.WRITE, S.AR))
            with m.Case(S.WRITE):
                m.d.comb += [ax.awvalid.eq(~aw_done), ax.wvalid.eq(~w_done)]
                with m.If(ax.awready):
                    m.d.sync += aw_done.eq(1)
                with m.If(ax.wready):
                    m.d.sync += w_done.eq(1)
                timer.wait(m, (aw_done | ax.awready) & (w_done | ax.wready),
                           state=state, ok=S.B, fail=S.TIMEOUT)
            with m.Case(S.B):
                m.d.comb += [rsp.valid.eq(ax.bvalid), ax.bready.eq(rsp.ready)]
                timer.wait(m, ax.bvalid & rsp.ready, state=state, ok=S.IDLE, fail=S.TIMEOUT)
            with m.Case(S.AR):
                m.d.comb += ax.arvalid.eq(1)
                timer.wait(m, ax.arready, state=state, ok=S.R, fail=S.TIMEOUT)
            with m.Case(S.R):
                m.d.comb += [rsp.valid.eq(ax.rvalid), ax.rready.eq(rsp.ready)]
                timer.wait(m, ax.rvalid & rsp.ready, state=state, ok=S.IDLE, fail=S.TIMEOUT)
            with m.Case(S.TIMEOUT):
                m.d.comb += rsp.valid.eq(1)
                with m.If(rsp.ready):
                    m.d.sync += state.eq(S.IDLE)
        return m


# ------------------------------------------------------------------ the frame sides

def _beat_bits(elem_bytes: int, stream_elems: int) -> int:
    """Width of an AXI4-Stream beat of the bridge: ``stream_elems`` elements of
    ``elem_bytes`` bytes."""
    return int(elem_bytes) * 8 * int(stream_elems)


class _FrameSide(wiring.Component):
    """What both frame sides (:class:`CommandParser`, :class:`FrameSender`) are made
    from: the bridge's ``addr_bits``, ``elem_bytes``, ``stream_elems`` and
    ``stall_ticks``, and a signature of :meth:`members` for the stream beat's width."""

    def __init__(self, *, addr_bits: int, elem_bytes: int, stream_elems: int, stall_ticks: int):
        self.addr_bits = int(addr_bits)
        self.elem_bytes = int(elem_bytes)
        self.stream_elems = int(stream_elems)
        self.stall_ticks = int(stall_ticks)
        super().__init__(self.members(_beat_bits(self.elem_bytes, self.stream_elems)))

    def members(self, beat_bits: int) -> dict:
        """The signature's members, for stream beats of ``beat_bits`` bits."""
        raise NotImplementedError


# -------------------------------------------------------------------- command side

#: a response to send, from the command side's frame registers (held until taken)
#: (``kind``: the request type decoded once, one bit per :data:`_KINDS` entry, none for an
#: unknown one; ``data_ok``: READ32 data is sent only from a completed OKAY read, else 0)
_HDR_LEN = {Cmd.WRITE32: 8, Cmd.READ32: 4, Cmd.WRITE_BURST: 6, Cmd.STREAM_IN: 2, Cmd.PING: 0}
_KINDS = tuple(_HDR_LEN)
RESPONSE = data.StructLayout({"cmd": 8, "kind": len(_KINDS), "status": 3, "resp": 2, "count": 16,
                              "data": DATA_BITS, "data_ok": 1})


def _one_hot_select(kind, values: dict):
    """``values[c]`` for the one kind ``c`` set in the one-hot ``kind`` (0 for none): an
    AND-OR of the few values, no compare of the 8-bit request type."""
    out = Const(0, 1)
    for c, v in values.items():
        out = out | Mux(kind[_KINDS.index(c)], v, 0)
    return out


class CommandParser(_FrameSide):
    """Received bytes (``rx``: SLIP-framed requests) -> AXI4-Lite requests (``bus_req``,
    outcomes on ``bus_rsp``), input-vector beats (``m_axis``) and one ``response`` per
    request.

    ``lost`` pulses when a byte was lost before the parser (reported as OVERRUN in the
    next response). ``busy``: a vector is being streamed in; ``error``: the last
    response had a status other than OK or an AXI response other than OKAY. A beat the
    core does not take within ``stall_ticks`` ticks is abandoned (STALL).

    Written for size (it shares the iCE40UP5K with the accelerator): the header is one
    64-bit register written a byte lane at a time, burst data and READ32 data reuse its
    upper half, and the response is sent from the frame registers while the parser waits
    (the host sends one request at a time).

    Written for speed too (it shares the ECP5's clock with a 100 MHz engine): a byte is
    decoded in the cycle it appears at the FIFO's output and taken and acted on in the
    next, from that registered decode and from the frame's comparisons (``hdr_cnt + 1 ==
    hdr_len``, ``done + 1 == n_items``, the length check), registered every cycle, so no
    counter's compare sits in front of the state register. Two cycles a byte is far above
    any UART's rate. The frame registers are cleared in a state of their own after the
    response is taken, so the sender's handshake does not fan out to them.
    """

    class State(enum.Enum, shape=3):
        RX = 0
        BEAT = 1        # an input beat for the core
        BUS = 2         # an AXI4-Lite transaction
        NEXT_ADDR = 3   # the burst's next word address
        EXEC = 4        # the frame is complete: run it or answer it
        RESPOND = 5
        SEND = 6
        CLEAR = 7       # the response is taken: clear the frame registers

    def members(self, beat_bits: int) -> dict:
        return {
            "rx": In(stream.Signature(8)), "lost": In(1), "tick": In(1),
            "bus_req": Out(stream.Signature(axil_request_layout(self.addr_bits))),
            "bus_rsp": In(stream.Signature(AXIL_RESPONSE)),
            "m_axis": Out(AXISSignature(beat_bits)),
            "response": Out(stream.Signature(RESPONSE)),
            "busy": Out(1), "error": Out(1),
        }

    def elaborate(self, platform):
        m = Module()
        S = self.State
        B, E = self.elem_bytes, self.stream_elems
        LW = 8 * B
        AB = self.addr_bits
        state = Signal(S)
        beat_timer = HandshakeTimeout(m, self.tick, self.stall_ticks, name="beat")

        # ------------------------------------------------------------ frame state
        esc = Signal()
        started = Signal()
        cmd = Signal(8)
        hdr_cnt = Signal(4)
        hdr = Signal(64)             # header bytes; [32:64] also burst words, stream
        #                              elements and READ32 data. Address bits at and above
        #                              addr_bits are never stored: `addr_over` records that
        #                              one was set (they only ever make the access DECERR)
        in_body = Signal()
        n_items = Signal(16)
        done = Signal(16)
        ebyte = Signal(2)
        tail = Signal(2)             # bytes after the payload: the CRC's (CRC_BYTES of them)
        crc = Signal(CRC_BITS)
        bad_esc = Signal()
        overrun = Signal()
        stalled = Signal()
        timed_out = Signal()
        resp = Signal(2)             # first non-OKAY AXI response of the frame
        rd_ok = Signal()             # READ32: the read completed OKAY (its data is sent)
        addr_over = Signal()         # the address is beyond the core's space (a high
        #                              address bit set, or a burst ran past its end)
        lane = Signal(range(max(E, 2)))
        beat = Signal(LW * E)
        beat_last = Signal()
        more = Signal()              # STREAM_IN: n's bit 15, the vector goes on in the next
        #                              frame (no tlast on this frame's last element)
        bad_split = Signal()         # a `more` frame ended inside a beat (BAD_LENGTH)
        last_err = Signal()
        st = Signal(3)               # the status being reported
        m.d.comb += self.error.eq(last_err)
        with m.If(self.lost):
            m.d.sync += overrun.eq(1)

        # the request type, decoded once when its byte arrives (one-hot: every use below
        # is one flip-flop, not a compare of the 8-bit cmd)
        kind = Signal(len(_KINDS))
        known = kind.any()
        hdr_len = Signal(4)
        m.d.comb += hdr_len.eq(_one_hot_select(kind, _HDR_LEN))

        def is_(c):
            return kind[_KINDS.index(c)]
        is_burst = is_(Cmd.WRITE_BURST)
        is_stream = is_(Cmd.STREAM_IN)
        addr_bad = addr_over

        # the byte at the FIFO's output (its register), decoded in the cycle it is first
        # seen (``have`` then rises) and taken and acted on in the next
        have = Signal()
        byte_in = self.rx.payload
        b_end, b_esc, b_esc_end, b_esc_esc = (Signal(name=f"b_{n}") for n in
                                              ("end", "esc", "esc_end", "esc_esc"))
        data_b = Signal(8)
        m.d.comb += data_b.eq(Mux(esc, Mux(b_esc_end, END, ESC), byte_in))

        new_frame = [started.eq(0), esc.eq(0), hdr_cnt.eq(0), in_body.eq(0), done.eq(0),
                     ebyte.eq(0), tail.eq(0), crc.eq(0), bad_esc.eq(0), stalled.eq(0),
                     timed_out.eq(0), resp.eq(0), rd_ok.eq(0), lane.eq(0), addr_over.eq(0),
                     more.eq(0), bad_split.eq(0)]
        m.d.comb += self.busy.eq(started & is_stream)
        m.d.comb += [self.bus_req.p.write.eq(~is_(Cmd.READ32)),
                     self.bus_req.p.addr.eq(hdr[:AB]), self.bus_req.p.data.eq(hdr[32:64]),
                     # one element per beat: the element bytes in hdr are the beat
                     self.m_axis.tdata.eq(beat if E > 1 else hdr[32:32 + LW]),
                     self.m_axis.tlast.eq(beat_last)]
        # the response is sent from the frame registers
        m.d.comb += [self.response.p.cmd.eq(cmd), self.response.p.kind.eq(kind),
                     self.response.p.status.eq(st),
                     self.response.p.resp.eq(resp), self.response.p.count.eq(done),
                     self.response.p.data.eq(hdr[32:64]), self.response.p.data_ok.eq(rd_ok)]

        # the frame's comparisons, registered every cycle: a byte is acted on the cycle
        # after it is taken, and nothing they read changes in the taking cycle, so they
        # are current wherever they are used (in RX with ``have``, in EXEC and RESPOND)
        hdr_more, hdr_last, body_more, last_el, bad_len = (Signal(name=n) for n in (
            "hdr_more", "hdr_last", "body_more", "last_el", "bad_len"))
        hdr_short, body_short = hdr_cnt != hdr_len, done != n_items
        m.d.sync += [
            hdr_more.eq(hdr_short), hdr_last.eq(hdr_cnt + 1 == hdr_len),
            body_more.eq(in_body & body_short), last_el.eq(done + 1 == n_items),
            bad_len.eq(hdr_short | (in_body & (body_short | (n_items == 0))) | (tail != CRC_BYTES)
                       | bad_split),
        ]
        status = Signal(3)
        m.d.comb += status.eq(
            Mux(overrun, Status.OVERRUN,
                Mux(~known, Status.BAD_CMD,
                    Mux(bad_len, Status.BAD_LENGTH,
                        Mux((crc != 0) | bad_esc, Status.BAD_CRC,
                            Mux(stalled, Status.STALL,
                                Mux(timed_out, Status.TIMEOUT, Status.OK)))))))

        # byte lane of hdr written by this data byte: header bytes 0..7, body bytes 4..7
        lane_w = Signal(3)
        m.d.comb += lane_w.eq(Mux(in_body, 4 + ebyte, hdr_cnt[:3]))

        with m.Switch(state):
            with m.Case(S.RX):
                m.d.comb += self.rx.ready.eq(have)
                with m.If(self.rx.valid & ~have):
                    m.d.sync += [have.eq(1), b_end.eq(byte_in == END), b_esc.eq(byte_in == ESC),
                                 b_esc_end.eq(byte_in == ESC_END),
                                 b_esc_esc.eq(byte_in == ESC_ESC)]
                with m.If(have):
                    m.d.sync += have.eq(0)
                    with m.If(b_end):
                        m.d.sync += esc.eq(0)
                        with m.If(started):
                            m.d.sync += state.eq(S.EXEC)
                        with m.Else():
                            m.d.sync += new_frame      # an empty frame: ignored
                    with m.Elif(b_esc & ~esc):
                        m.d.sync += esc.eq(1)
                    with m.Else():
                        m.d.sync += [esc.eq(0), crc.eq(crc16_next(crc, data_b))]
                        with m.If(esc & ~b_esc_end & ~b_esc_esc):
                            m.d.sync += bad_esc.eq(1)
                        with m.If(~started):
                            m.d.sync += [started.eq(1), cmd.eq(data_b),
                                         kind.eq(Cat(*(data_b == c for c in _KINDS)))]
                        with m.Elif(hdr_more | body_more):
                            with m.Switch(lane_w):
                                for k in range(8):
                                    with m.Case(k):
                                        # address bits below addr_bits (lane 0 whole:
                                        # it is also the low byte of STREAM_IN's n)
                                        low = 8 if k >= 4 else max(0, min(8, AB - 8 * k))
                                        keep = 8 if k == 0 else low
                                        if keep:
                                            m.d.sync += hdr[8 * k:8 * k + keep].eq(data_b[:keep])
                                        if low < 8:       # a header byte of the address
                                            with m.If(~in_body & (data_b[low:] != 0)):
                                                m.d.sync += addr_over.eq(1)
                            with m.If(~in_body):
                                m.d.sync += hdr_cnt.eq(hdr_cnt + 1)
                                with m.If(hdr_last & (is_burst | is_stream)):
                                    # STREAM_IN: n is 15 bits, bit 15 is `more`
                                    m.d.sync += [in_body.eq(1), more.eq(is_stream & data_b[7]),
                                                 n_items.eq(Mux(is_burst, Cat(hdr[32:40], data_b),
                                                                Cat(hdr[0:8], data_b[:7])))]
                            with m.Else():
                                eb_last = Mux(is_burst, ebyte == 3, ebyte == B - 1)
                                m.d.sync += ebyte.eq(Mux(eb_last, 0, ebyte + 1))
                                with m.If(eb_last):
                                    m.d.sync += done.eq(done + 1)
                                    with m.If(is_burst):
                                        m.d.sync += state.eq(S.BUS)
                                    with m.Elif(~stalled):
                                        el = Signal(LW)
                                        m.d.comb += el.eq(Cat(hdr[32:32 + 8 * (B - 1)], data_b)
                                                          if B > 1 else data_b)
                                        if E > 1:
                                            with m.Switch(lane):
                                                for j in range(E):
                                                    with m.Case(j):
                                                        m.d.sync += beat[LW * j:LW * (j + 1)].eq(el)
                                        with m.If(last_el | (lane == E - 1)):
                                            m.d.sync += [beat_last.eq(last_el & ~more), lane.eq(0),
                                                         state.eq(S.BEAT)]
                                            if E > 1:
                                                # a frame that a next one continues ends with
                                                # a whole beat (the host splits so)
                                                with m.If(more & (lane != E - 1)):
                                                    m.d.sync += bad_split.eq(1)
                                        with m.Else():
                                            m.d.sync += lane.eq(lane + 1)
                        with m.Elif(tail != 3):
                            m.d.sync += tail.eq(tail + 1)

            with m.Case(S.BEAT):
                # an input beat for the core; abandoned after stall_ticks ticks
                m.d.comb += self.m_axis.tvalid.eq(1)
                gave_up = beat_timer.wait(m, self.m_axis.tready, state=state, ok=S.RX, fail=S.RX)
                with m.If(gave_up):
                    m.d.sync += stalled.eq(1)
                if E > 1:
                    with m.If(self.m_axis.tready | gave_up):
                        m.d.sync += beat.eq(0)         # unused lanes of a last beat are 0

            with m.Case(S.EXEC):
                ok = status == Status.OK
                with m.If(ok & (is_(Cmd.WRITE32) | is_(Cmd.READ32))):
                    m.d.sync += state.eq(S.BUS)
                with m.Else():
                    m.d.sync += state.eq(S.RESPOND)

            with m.Case(S.BUS):
                # one AXI4-Lite transaction: a burst word (then back to RX), WRITE32 or READ32
                after = Mux(is_burst, S.NEXT_ADDR, S.RESPOND)
                with m.If(addr_bad):
                    m.d.sync += [resp.eq(Mux(resp == 0, DECERR, resp)),   # beyond the core
                                 state.eq(after)]
                with m.Else():
                    m.d.comb += [self.bus_req.valid.eq(1), self.bus_rsp.ready.eq(1)]
                    with m.If(self.bus_rsp.valid):
                        m.d.sync += state.eq(after)
                        with m.If(self.bus_rsp.p.timeout):
                            m.d.sync += timed_out.eq(1)
                        with m.Else():
                            # (the read data; after a write, hdr[32:64] is not needed again)
                            m.d.sync += [resp.eq(Mux(resp == 0, self.bus_rsp.p.resp, resp)),
                                         hdr[32:64].eq(self.bus_rsp.p.data),
                                         rd_ok.eq(self.bus_rsp.p.resp == 0)]

            with m.Case(S.NEXT_ADDR):
                # the burst's next word address (a carry out of the core's space: DECERR)
                nxt = Signal(AB - 1)
                m.d.comb += nxt.eq(hdr[2:AB] + 1)
                m.d.sync += [hdr[2:AB].eq(nxt), state.eq(S.RX)]
                with m.If(nxt == 0):
                    m.d.sync += addr_over.eq(1)

            with m.Case(S.RESPOND):
                m.d.sync += [st.eq(status), overrun.eq(self.lost), state.eq(S.SEND)]
            with m.Case(S.SEND):
                m.d.comb += self.response.valid.eq(1)
                with m.If(self.response.ready):
                    m.d.sync += [last_err.eq((st != 0) | (resp != 0)), state.eq(S.CLEAR)]
            with m.Case(S.CLEAR):
                m.d.sync += [*new_frame, state.eq(S.RX)]
        return m


# ---------------------------------------------------------------------- transmitter

class FrameSender(_FrameSide):
    """Responses (``response``) and output vectors (``s_axis``, every beat of the core up
    to ``tlast``) -> frames of :class:`TxByte` (``o``): END, type, body, CRC-16 (two
    bytes, high first), END (END raw; the escaper escapes the rest). A response frame and
    an output frame never interleave; a response waiting wins. An output frame whose next beat does not come
    within ``stall_ticks`` ticks is closed.

    An output frame holds at most ``protocol.output_piece_bytes(B, E)`` data bytes (whole
    beats; a frame's ``type`` and data are at most ``MAX_DATA_BYTES``): a frame full
    without ``tlast`` is closed, and so is one waiting for a beat while a response waits;
    the vector goes on in the next output frame, of type ``OUTPUT_CONT`` (a frame's type
    is sent before its beats, so a frame cannot say that one follows it; the one after
    says that it continues). A frame closed because the core stopped mid-vector is not
    continued: the next output frame starts a vector. Nor is one after ``flush`` (the core
    dropped the rest of its output vector: its soft reset), whatever closed the frame."""

    # one state sequence for both kinds of frame (``output`` tells them apart): a
    # response goes START, TYPE, BODY, CRC, STOP; an output vector START, TYPE, then
    # WAIT/BYTES per beat, CRC, STOP (fewer states: a smaller decode on the iCE40UP5K)
    class State(enum.Enum, shape=3):
        IDLE = 0
        START = 1
        TYPE = 2
        BODY = 3        # the response's body bytes
        WAIT = 4        # the next beat of the output vector (held by the core until taken)
        BYTES = 5       # the beat's bytes
        CRC = 6
        STOP = 7

    def members(self, beat_bits: int) -> dict:
        return {
            "response": In(stream.Signature(RESPONSE)),
            "s_axis": In(AXISSignature(beat_bits)),
            "o": Out(stream.Signature(TxByte)),
            "tick": In(1),
            "flush": In(1),
        }

    def elaborate(self, platform):
        m = Module()
        S = self.State
        B, E = self.elem_bytes, self.stream_elems
        r = self.response.p
        o = self.o
        state = Signal(S)
        timer = HandshakeTimeout(m, self.tick, self.stall_ticks, name="out")

        tcrc = Signal(CRC_BITS)
        crc_left = Signal(range(CRC_BYTES))   # CRC bytes still to send after this one
        max_beats = output_piece_bytes(B, E) // (B * E)
        beats = Signal(range(max_beats))      # beats already in this output frame
        cont = Signal()              # the last output frame was full without tlast: the
        #                              next continues its vector (type OUTPUT_CONT)
        dropped = Signal()           # `flush` since the last output frame began: the
        #                              core has no vector to continue, the next starts one
        tidx = Signal(3)
        obyte = Signal(range(max(B * E, 2)))
        send = Signal()
        m.d.comb += send.eq(o.valid & o.ready)
        with m.If(send & ~o.p.raw):
            m.d.sync += tcrc.eq(crc16_next(tcrc, o.p.data))

        # the response body: byte tidx for cmd, and its length
        r_len = Signal(3)
        r_byte = Signal(8)
        ping = [PROTOCOL_VERSION, B, E, self.addr_bits]
        data = Mux(r.data_ok, r.data, 0)
        bodies = {
            Cmd.WRITE32: [r.status, r.resp],
            Cmd.READ32: [r.status, r.resp, *[data[8 * k:8 * k + 8] for k in range(4)]],
            Cmd.WRITE_BURST: [r.status, r.resp, r.count[0:8], r.count[8:16]],
            Cmd.STREAM_IN: [r.status, r.count[0:8], r.count[8:16]],
            Cmd.PING: [r.status, *ping],
        }
        # an unknown request's body is its status alone
        m.d.comb += r_len.eq(Mux(r.kind.any(), _one_hot_select(r.kind, {c: len(b) for c, b in bodies.items()}), 1))
        with m.Switch(tidx):
            with m.Case(0):
                m.d.comb += r_byte.eq(r.status)
            for k in range(1, max(map(len, bodies.values()))):
                with m.Case(k):
                    m.d.comb += r_byte.eq(_one_hot_select(
                        r.kind, {c: b[k] for c, b in bodies.items() if k < len(b)}))
        out_byte = Signal(8)
        _select(m, obyte, [self.s_axis.tdata[8 * k:8 * k + 8] for k in range(B * E)], out_byte)

        def put(byte, nxt, *, raw=False):
            """Send ``byte`` in this state, then go to ``nxt``."""
            m.d.comb += [o.valid.eq(1), o.p.data.eq(byte), o.p.raw.eq(raw)]
            with m.If(o.ready):
                m.d.sync += state.eq(nxt)

        output = Signal()            # the frame is an output vector (else a response)
        with m.Switch(state):
            with m.Case(S.IDLE):
                m.d.sync += [tcrc.eq(0), tidx.eq(0), obyte.eq(0), crc_left.eq(CRC_BYTES - 1), beats.eq(0)]
                with m.If(self.response.valid):
                    m.d.sync += [output.eq(0), state.eq(S.START)]
                with m.Elif(self.s_axis.tvalid):
                    m.d.sync += [output.eq(1), state.eq(S.START)]
            with m.Case(S.START):
                put(END, S.TYPE, raw=True)
            with m.Case(S.TYPE):
                put(Mux(output, Mux(cont & ~dropped, OUTPUT_CONT, OUTPUT_TYPE), r.cmd | 0x80),
                    Mux(output, S.WAIT, S.BODY))
                with m.If(output & o.ready):
                    m.d.sync += dropped.eq(0)
            with m.Case(S.BODY):
                m.d.comb += [o.valid.eq(1), o.p.data.eq(r_byte)]
                with m.If(o.ready):
                    m.d.sync += tidx.eq(tidx + 1)
                    with m.If(tidx + 1 == r_len):
                        m.d.sync += state.eq(S.CRC)
            with m.Case(S.WAIT):
                # the core stopped mid-vector: close the frame (the next starts a vector)
                timer.wait(m, self.s_axis.tvalid, state=state, ok=S.BYTES, fail=S.CRC)
                m.d.sync += obyte.eq(0)
                with m.If(~self.s_axis.tvalid & self.response.valid):
                    # a response waits (a STREAM_IN frame with `more` is answered before
                    # the host sends the rest of the vector, whose beats this frame would
                    # wait for): close the frame, the vector goes on in the next
                    m.d.sync += [state.eq(S.CRC), cont.eq(1)]
            with m.Case(S.BYTES):
                m.d.comb += [o.valid.eq(1), o.p.data.eq(out_byte)]
                with m.If(o.ready):
                    m.d.sync += obyte.eq(obyte + 1)
                    with m.If(obyte == B * E - 1):
                        m.d.comb += self.s_axis.tready.eq(1)     # the beat is sent: take it
                        full = beats == max_beats - 1
                        m.d.sync += [state.eq(Mux(self.s_axis.tlast | full, S.CRC, S.WAIT)),
                                     beats.eq(beats + 1), cont.eq(~self.s_axis.tlast & full)]
            with m.Case(S.CRC):
                # always the register's top byte: a CRC byte goes through the register
                # like any other, and a byte equal to the top byte shifts the register up
                # by 8 with no feedback, so the next CRC byte is then on top (and the
                # register is 0 after the last one; no second register, no byte select)
                m.d.comb += [o.valid.eq(1), o.p.data.eq(tcrc[CRC_BITS - 8:])]
                with m.If(o.ready):
                    m.d.sync += crc_left.eq(crc_left - 1)
                    with m.If(crc_left == 0):
                        m.d.sync += state.eq(S.STOP)
            with m.Case(S.STOP):
                put(END, S.IDLE, raw=True)
                m.d.comb += self.response.ready.eq(o.ready & ~output)   # the response is sent
        with m.If(self.flush):      # last: it wins over the TYPE state's clearing
            m.d.sync += dropped.eq(1)
        return m


# ----------------------------------------------------------------------------- bridge

class Bridge(wiring.Component):
    """Byte streams <-> AXI4-Lite master ``axil`` and AXI4-Stream ``m_axis`` (input
    vectors to the core) / ``s_axis`` (output vectors from the core): a
    :class:`CommandParser`, an :class:`AXI4LiteMaster` and a :class:`FrameSender`.

    ``rx``: received bytes (SLIP-framed requests); ``rx_lost`` pulses when a byte was
    lost before the bridge (reported as OVERRUN in the next response). ``tx``: bytes to
    send (:class:`TxByte`, to a :class:`SlipEscaper`). ``busy``: a vector is being
    streamed in; ``error``: the last response had a status other than OK or an AXI
    response other than OKAY.

    Timeouts are counted in ticks of ``tick_cycles`` clock cycles: a stream beat the
    core does not take within ``stall_ticks`` ticks is abandoned (STALL), an AXI4-Lite
    handshake not completed within :data:`AXIL_TIMEOUT_TICKS` ticks is abandoned
    (TIMEOUT), and an output frame whose next beat does not come within ``stall_ticks``
    ticks is closed.

    ``output_reset``: ``(address, mask)`` of the core's register write that drops the rest
    of its output vector (its soft reset), or None. After such a write (completed OKAY)
    the next output frame starts a vector: a frame closed full just before it would
    otherwise have marked the next vector's first frame a continuation.
    """

    def __init__(self, *, addr_bits: int, elem_bytes: int, stream_elems: int,
                 tick_cycles: int = 1024, stall_ticks: int = 16,
                 output_reset: tuple[int, int] | None = None):
        self.addr_bits = int(addr_bits)
        self.output_reset = None if output_reset is None else (int(output_reset[0]), int(output_reset[1]))
        self.elem_bytes = int(elem_bytes)
        self.stream_elems = int(stream_elems)
        self.tick_cycles = max(2, int(tick_cycles))
        self.stall_ticks = max(2, int(stall_ticks))
        if not 1 <= self.elem_bytes <= 4:
            raise ValueError(f"elem_bytes={elem_bytes} must be 1..4")
        if not 2 <= self.addr_bits <= 32:
            raise ValueError(f"addr_bits={addr_bits} must be 2..32")
        W = _beat_bits(self.elem_bytes, self.stream_elems)
        super().__init__({
            "rx": In(stream.Signature(8)), "rx_lost": In(1),
            "tx": Out(stream.Signature(TxByte)),
            "axil": Out(AXI4LiteSignature(self.addr_bits)),
            "m_axis": Out(AXISSignature(W)),
            "s_axis": In(AXISSignature(W)),
            "busy": Out(1), "error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        shape = dict(addr_bits=self.addr_bits, elem_bytes=self.elem_bytes,
                     stream_elems=self.stream_elems, stall_ticks=self.stall_ticks)
        m.submodules.parser = parser = CommandParser(**shape)
        m.submodules.master = master = AXI4LiteMaster(self.addr_bits)
        m.submodules.sender = sender = FrameSender(**shape)

        # ticks: the time base of every timeout
        pre = Signal(range(self.tick_cycles))
        tick = Signal()
        m.d.comb += tick.eq(pre == self.tick_cycles - 1)
        m.d.sync += pre.eq(Mux(tick, 0, pre + 1))
        m.d.comb += [parser.tick.eq(tick), master.tick.eq(tick), sender.tick.eq(tick)]

        wiring.connect(m, wiring.flipped(self.rx), parser.rx)
        wiring.connect(m, parser.bus_req, master.req)
        wiring.connect(m, master.rsp, parser.bus_rsp)
        wiring.connect(m, parser.response, sender.response)
        wiring.connect(m, master.axil, wiring.flipped(self.axil))
        wiring.connect(m, parser.m_axis, wiring.flipped(self.m_axis))
        wiring.connect(m, wiring.flipped(self.s_axis), sender.s_axis)
        wiring.connect(m, sender.o, wiring.flipped(self.tx))
        m.d.comb += [parser.lost.eq(self.rx_lost), self.busy.eq(parser.busy),
                     self.error.eq(parser.error)]
        if self.output_reset is not None:
            # the parser's write completes in the cycle of the master's answer (its address
            # and data still held): an OKAY write of the soft reset bit to its register
            addr, mask = self.output_reset
            req, rsp = parser.bus_req, parser.bus_rsp
            m.d.comb += sender.flush.eq(req.valid & req.p.write & rsp.valid & rsp.ready & ~rsp.p.timeout
                                        & (rsp.p.resp == 0) & (req.p.addr == addr) & (req.p.data & mask).any())
        return m


class BridgeCore(wiring.Component):
    """UART pins <-> :class:`Bridge` (with the receive FIFO, the SLIP escaper and the
    UART itself). ``rx``/``tx`` are the pins; the bus ports are those of the bridge."""

    def __init__(self, *, divisor: int, addr_bits: int, elem_bytes: int, stream_elems: int,
                 stall_ticks: int = 16, output_reset: tuple[int, int] | None = None):
        self.divisor = _check_divisor(divisor)
        # a tick is about one byte time; a stall of 16 byte times is half the FIFO
        self.bridge = Bridge(addr_bits=addr_bits, elem_bytes=elem_bytes,
                             stream_elems=stream_elems, tick_cycles=10 * self.divisor,
                             stall_ticks=stall_ticks, output_reset=output_reset)
        W = _beat_bits(elem_bytes, stream_elems)
        super().__init__({
            "rx": In(1, init=1), "tx": Out(1, init=1),
            "axil": Out(AXI4LiteSignature(addr_bits)),
            "m_axis": Out(AXISSignature(W)),
            "s_axis": In(AXISSignature(W)),
            "busy": Out(1), "error": Out(1), "rx_activity": Out(1), "tx_activity": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.urx = urx = UARTRx(self.divisor)
        m.submodules.utx = utx = UARTTx(self.divisor)
        m.submodules.fifo = q = StreamFIFO(RX_FIFO_DEPTH)
        m.submodules.bridge = br = self.bridge
        m.submodules.esc = esc = SlipEscaper()
        # the receiver cannot wait (always_ready): a byte the FIFO cannot take is lost
        m.d.comb += [q.w.payload.eq(urx.o.payload), q.w.valid.eq(urx.o.valid),
                     br.rx_lost.eq((urx.o.valid & ~q.w.ready) | urx.frame_error)]
        wiring.connect(m, q.r, br.rx)
        wiring.connect(m, br.tx, esc.i)
        wiring.connect(m, esc.o, utx.i)
        m.d.comb += [
            urx.rx.eq(self.rx), self.tx.eq(utx.tx),
            self.busy.eq(br.busy), self.error.eq(br.error),
            self.rx_activity.eq(~urx.rx), self.tx_activity.eq(~utx.tx),
        ]
        wiring.connect(m, wiring.flipped(self.axil), br.axil)
        wiring.connect(m, wiring.flipped(self.m_axis), br.m_axis)
        wiring.connect(m, wiring.flipped(self.s_axis), br.s_axis)
        return m
