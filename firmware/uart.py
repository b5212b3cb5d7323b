"""UART (8N1) and the UART-to-AXI4-Lite/AXI4-Stream bridge, in Amaranth.

* :class:`UARTRx`, :class:`UARTTx`: 8 data bits, no parity, one stop bit, LSB first;
  one bit lasts ``divisor`` clock cycles (``divisor = round(f_clk / baud)``, >= 4). The
  receiver synchronises the pin through two flip-flops, samples each bit in its middle
  and reports a byte whose stop bit is 0 as a framing error.
* :class:`Bridge`: the device side of the protocol of :mod:`ttforge.firmware.protocol`
  (``docs/boards.md``): SLIP-framed requests in, an AXI4-Lite master (WRITE32, READ32,
  WRITE_BURST), an AXI4-Stream master that streams input vectors into the core
  (STREAM_IN), responses and output-vector frames (every ``m_axis`` beat of the core)
  out. Frames carry a CRC-8 (0x07); every response carries the AXI response code.
* :class:`BridgeCore`: UART pins <-> receive FIFO <-> bridge <-> SLIP escaper <->
  transmitter; the byte level and the pins level in one component.

Nothing here waits forever: an AXI4-Lite transaction and a stream beat the core does not
take are abandoned after a timeout and reported (``Status.TIMEOUT``, ``Status.STALL``).
"""



from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import fifo, wiring
from amaranth.lib.wiring import In, Out

from ttforge.firmware.protocol import END, ESC, ESC_END, ESC_ESC, OUTPUT_TYPE, PROTOCOL_VERSION, Cmd, Status
from ttforge.hw.axil import AXI4LiteSignature
from ttforge.hw.axis import AXISSignature

__all__ = ["UARTRx", "UARTTx", "Bridge", "BridgeCore", "crc8_next", "MIN_DIVISOR",
           "RX_FIFO_DEPTH"]

MIN_DIVISOR = 4
RX_FIFO_DEPTH = 32


def _check_divisor(divisor: int) -> int:
    divisor = int(divisor)
    if divisor < MIN_DIVISOR or divisor >= 1 << 20:
        raise ValueError(f"UART divisor={divisor} must be in {MIN_DIVISOR}..{(1 << 20) - 1} "
                         "(clock cycles per bit)")
    return divisor


class _UARTPort(wiring.Component):
    """A UART side clocked every ``divisor`` cycles per bit (the signature is the subclass's)."""

    def __init__(self, divisor: int):
        try:
            self.divisor = _check_divisor(divisor)
        except ValueError:
            self._MustUse__silence = True     # not an elaboratable to warn about
            raise
        super().__init__()


class UARTRx(_UARTPort):
    """``rx`` pin -> ``data``/``valid`` (a one-cycle pulse per byte); ``frame_error``
    pulses for a byte whose stop bit is 0 (the byte is dropped)."""

    rx: In(1, init=1)
    data: Out(8)
    valid: Out(1)
    frame_error: Out(1)

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        s1 = Signal(init=1)
        s2 = Signal(init=1)
        m.d.sync += [s1.eq(self.rx), s2.eq(s1)]
        cnt = Signal(range(d))
        bit = Signal(range(8))
        sr = Signal(8)
        m.d.comb += self.data.eq(sr)          # valid while `valid` is high (and until the next start bit)
        m.d.sync += [self.valid.eq(0), self.frame_error.eq(0)]
        with m.If(cnt != 0):
            m.d.sync += cnt.eq(cnt - 1)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~s2):
                    m.d.sync += cnt.eq(d // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(cnt == 0):
                    with m.If(~s2):
                        m.d.sync += [cnt.eq(d - 1), bit.eq(0)]
                        m.next = "DATA"
                    with m.Else():
                        m.next = "IDLE"      # a glitch, not a start bit
            with m.State("DATA"):
                with m.If(cnt == 0):
                    m.d.sync += [sr.eq(Cat(sr[1:], s2)), cnt.eq(d - 1), bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(cnt == 0):
                    with m.If(s2):
                        m.d.sync += self.valid.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += self.frame_error.eq(1)
                        m.next = "BREAK"
            with m.State("BREAK"):       # wait for the line to return high
                with m.If(s2):
                    m.next = "IDLE"
        return m


class UARTTx(_UARTPort):
    """``data``/``valid``/``ready`` -> ``tx`` pin (idle high)."""

    data: In(8)
    valid: In(1)
    ready: Out(1)
    tx: Out(1, init=1)

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        sr = Signal(10, init=0x3FF)
        bits = Signal(range(11))
        cnt = Signal(range(d))
        m.d.comb += [self.tx.eq(sr[0]), self.ready.eq(bits == 0)]
        with m.If(bits == 0):
            with m.If(self.valid):
                m.d.sync += [sr.eq(Cat(Const(0, 1), self.data, Const(1, 1))), bits.eq(10),
                             cnt.eq(d - 1)]
        with m.Elif(cnt == 0):
            m.d.sync += [sr.eq(Cat(sr[1:], Const(1, 1))), bits.eq(bits - 1), cnt.eq(d - 1)]
        with m.Else():
            m.d.sync += cnt.eq(cnt - 1)
        return m


def _crc8_matrix() -> list[tuple[list[int], list[int]]]:
    """For each output bit of one CRC-8 (0x07) byte step: (crc bits, data bits) XORed."""
    # symbolic bits: ("c", i) or ("d", i); each register bit is a set (XOR)
    reg = [{("c", i)} for i in range(8)]
    for i in range(8):
        reg[i] ^= {("d", i)}
    for _ in range(8):
        top = reg[7]
        reg = [set()] + reg[:7]
        for i in (0, 1, 2):   # 0x07
            reg[i] = reg[i] ^ top
    return [(sorted(i for k, i in r if k == "c"), sorted(i for k, i in r if k == "d")) for r in reg]


_CRC8_MATRIX = _crc8_matrix()


def crc8_next(crc, byte):
    """The CRC-8/SMBUS register after one more byte (an XOR network, no loop)."""
    bits = []
    for cs, ds in _CRC8_MATRIX:
        terms = [crc[i] for i in cs] + [byte[i] for i in ds]
        v = terms[0]
        for t in terms[1:]:
            v = v ^ t
        bits.append(v)
    return Cat(*bits)


_HDR_LEN = {Cmd.WRITE32: 8, Cmd.READ32: 4, Cmd.WRITE_BURST: 6, Cmd.STREAM_IN: 2, Cmd.PING: 0}


class Bridge(wiring.Component):
    """Byte streams <-> AXI4-Lite master ``axil`` and AXI4-Stream ``m_axis`` (input
    vectors to the core) / ``s_axis`` (output vectors from the core).

    ``rx_data``/``rx_valid``/``rx_ready``: received bytes (SLIP-framed requests);
    ``rx_lost`` pulses when a byte was lost before the bridge (reported as OVERRUN in
    the next response). ``tx_data``/``tx_raw``/``tx_valid``/``tx_ready``: bytes to
    send, ``tx_raw`` marking the frame delimiters that the escaper must not escape.
    ``busy``: a vector is being streamed in; ``error``: the last response had a status
    other than OK or an AXI response other than OKAY.

    Timeouts are counted in ticks of ``tick_cycles`` clock cycles: a stream beat the
    core does not take within ``stall_ticks`` ticks is abandoned (STALL), an AXI4-Lite
    handshake not completed within 2 ticks is abandoned (TIMEOUT), and an output frame
    whose next beat does not come within ``stall_ticks`` ticks is closed.

    Written for size (it shares the iCE40UP5K with the accelerator): the header is
    one 64-bit register written a byte lane at a time, burst data and READ32 data reuse
    its upper half, and responses are sent from the frame registers while the
    command side waits (the host sends one request at a time).
    """

    def __init__(self, *, addr_bits: int, elem_bytes: int, stream_elems: int,
                 tick_cycles: int = 1024, stall_ticks: int = 16):
        self.addr_bits = int(addr_bits)
        self.elem_bytes = int(elem_bytes)
        self.stream_elems = int(stream_elems)
        self.tick_cycles = max(2, int(tick_cycles))
        self.stall_ticks = max(2, int(stall_ticks))
        if not 1 <= self.elem_bytes <= 4:
            raise ValueError(f"elem_bytes={elem_bytes} must be 1..4")
        if not 2 <= self.addr_bits <= 32:
            raise ValueError(f"addr_bits={addr_bits} must be 2..32")
        W = self.elem_bytes * 8 * self.stream_elems
        super().__init__({
            "rx_data": In(8), "rx_valid": In(1), "rx_ready": Out(1), "rx_lost": In(1),
            "tx_data": Out(8), "tx_raw": Out(1), "tx_valid": Out(1), "tx_ready": In(1),
            "axil": Out(AXI4LiteSignature(self.addr_bits)),
            "m_axis": Out(AXISSignature(W)),
            "s_axis": In(AXISSignature(W)),
            "busy": Out(1), "error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        B, E = self.elem_bytes, self.stream_elems
        LW = 8 * B
        AB = self.addr_bits
        ax = self.axil

        # ------------------------------------------------------------------ ticks
        pre = Signal(range(self.tick_cycles))
        tick = Signal()
        m.d.comb += tick.eq(pre == self.tick_cycles - 1)
        m.d.sync += pre.eq(Mux(tick, 0, pre + 1))

        # ------------------------------------------------------------ frame state
        esc = Signal()
        started = Signal()
        cmd = Signal(8)
        hdr_cnt = Signal(4)
        hdr = Signal(64)             # header bytes; [32:64] also burst words, stream
        #                              elements and READ32 data
        in_body = Signal()
        n_items = Signal(16)
        done = Signal(16)
        ebyte = Signal(2)
        tail = Signal(2)
        crc = Signal(8)
        bad_esc = Signal()
        overrun = Signal()
        stalled = Signal()
        timed_out = Signal()
        resp = Signal(2)             # first non-OKAY AXI response of the frame
        addr_over = Signal()         # a burst ran past the core's address space
        lane = Signal(range(max(E, 2)))
        beat = Signal(LW * E)
        beat_last = Signal()
        tmo = Signal(range(self.stall_ticks + 1))
        aw_done = Signal()
        w_done = Signal()
        after_write = Signal()       # 0: back to RX (burst), 1: respond (WRITE32)
        last_err = Signal()
        st = Signal(3)               # the status being reported
        r_go = Signal()              # command side -> transmitter: send the response
        r_done = Signal()            # transmitter -> command side: response sent
        m.d.comb += self.error.eq(last_err)
        with m.If(self.rx_lost):
            m.d.sync += overrun.eq(1)

        known = Signal()
        hdr_len = Signal(4)
        with m.Switch(cmd):
            for c, h in _HDR_LEN.items():
                with m.Case(int(c)):
                    m.d.comb += [known.eq(1), hdr_len.eq(h)]
        is_burst = cmd == Cmd.WRITE_BURST
        is_stream = cmd == Cmd.STREAM_IN
        addr_bad = Signal()
        m.d.comb += addr_bad.eq(addr_over | (hdr[AB:32] != 0 if AB < 32 else 0))

        byte_in = self.rx_data
        data_b = Signal(8)
        m.d.comb += data_b.eq(Mux(esc, Mux(byte_in == ESC_END, END, ESC), byte_in))

        new_frame = [started.eq(0), esc.eq(0), hdr_cnt.eq(0), in_body.eq(0), done.eq(0),
                     ebyte.eq(0), tail.eq(0), crc.eq(0), bad_esc.eq(0), stalled.eq(0),
                     timed_out.eq(0), resp.eq(0), lane.eq(0), addr_over.eq(0)]
        m.d.comb += self.busy.eq(started & is_stream)
        m.d.comb += [ax.awaddr.eq(hdr[:AB]), ax.araddr.eq(hdr[:AB]),
                     ax.wdata.eq(hdr[32:64]), ax.wstrb.eq(0xF),
                     # one element per beat: the element bytes in hdr are the beat
                     self.m_axis.tdata.eq(beat if E > 1 else hdr[32:32 + LW]),
                     self.m_axis.tlast.eq(beat_last)]

        status = Signal(3)
        bad_len = (hdr_cnt != hdr_len) | (in_body & ((done != n_items) | (n_items == 0))) | (tail != 1)
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

        with m.FSM():
            with m.State("RX"):
                m.d.comb += self.rx_ready.eq(1)
                with m.If(self.rx_valid):
                    with m.If(byte_in == END):
                        m.d.sync += esc.eq(0)
                        with m.If(started):
                            m.next = "EXEC"
                        with m.Else():
                            m.d.sync += new_frame      # an empty frame: ignored
                    with m.Elif((byte_in == ESC) & ~esc):
                        m.d.sync += esc.eq(1)
                    with m.Else():
                        m.d.sync += [esc.eq(0), crc.eq(crc8_next(crc, data_b))]
                        with m.If(esc & (byte_in != ESC_END) & (byte_in != ESC_ESC)):
                            m.d.sync += bad_esc.eq(1)
                        with m.If(~started):
                            m.d.sync += [started.eq(1), cmd.eq(data_b)]
                        with m.Elif((hdr_cnt != hdr_len) | (in_body & (done != n_items))):
                            with m.Switch(lane_w):
                                for k in range(8):
                                    with m.Case(k):
                                        m.d.sync += hdr[8 * k:8 * k + 8].eq(data_b)
                            with m.If(~in_body):
                                m.d.sync += hdr_cnt.eq(hdr_cnt + 1)
                                with m.If((hdr_cnt + 1 == hdr_len) & (is_burst | is_stream)):
                                    m.d.sync += [in_body.eq(1),
                                                 n_items.eq(Mux(is_burst, Cat(hdr[32:40], data_b),
                                                                Cat(hdr[0:8], data_b)))]
                            with m.Else():
                                eb_last = Mux(is_burst, ebyte == 3, ebyte == B - 1)
                                m.d.sync += ebyte.eq(Mux(eb_last, 0, ebyte + 1))
                                with m.If(eb_last):
                                    m.d.sync += done.eq(done + 1)
                                    with m.If(is_burst):
                                        m.d.sync += [aw_done.eq(0), w_done.eq(0), tmo.eq(0),
                                                     after_write.eq(0)]
                                        m.next = "WRITE"
                                    with m.Elif(~stalled):
                                        el = Signal(LW)
                                        m.d.comb += el.eq(Cat(hdr[32:32 + 8 * (B - 1)], data_b)
                                                          if B > 1 else data_b)
                                        if E > 1:
                                            with m.Switch(lane):
                                                for j in range(E):
                                                    with m.Case(j):
                                                        m.d.sync += beat[LW * j:LW * (j + 1)].eq(el)
                                        last_el = done + 1 == n_items
                                        with m.If(last_el | (lane == E - 1)):
                                            m.d.sync += [beat_last.eq(last_el), lane.eq(0), tmo.eq(0)]
                                            m.next = "BEAT"
                                        with m.Else():
                                            m.d.sync += lane.eq(lane + 1)
                        with m.Elif(tail != 3):
                            m.d.sync += tail.eq(tail + 1)

            with m.State("BEAT"):
                # an input beat for the core; abandoned after stall_ticks ticks
                m.d.comb += self.m_axis.tvalid.eq(1)
                with m.If(tick):
                    m.d.sync += tmo.eq(tmo + 1)
                give_up = tmo == self.stall_ticks
                with m.If(self.m_axis.tready | give_up):
                    if E > 1:
                        m.d.sync += beat.eq(0)         # unused lanes of a last beat are 0
                    m.next = "RX"
                with m.If(~self.m_axis.tready & give_up):
                    m.d.sync += stalled.eq(1)

            with m.State("WRITE"):
                with m.If(addr_bad):
                    m.d.sync += resp.eq(Mux(resp == 0, 3, resp))   # DECERR: beyond the core
                    m.next = "WDONE"
                with m.Else():
                    m.d.comb += [ax.awvalid.eq(~aw_done), ax.wvalid.eq(~w_done)]
                    with m.If(ax.awready):
                        m.d.sync += aw_done.eq(1)
                    with m.If(ax.wready):
                        m.d.sync += w_done.eq(1)
                    with m.If(tick):
                        m.d.sync += tmo.eq(tmo + 1)
                    with m.If((aw_done | ax.awready) & (w_done | ax.wready)):
                        m.d.sync += tmo.eq(0)
                        m.next = "BRESP"
                    with m.Elif(tmo == 2):
                        m.d.sync += timed_out.eq(1)
                        m.next = "WDONE"
            with m.State("BRESP"):
                m.d.comb += ax.bready.eq(1)
                with m.If(tick):
                    m.d.sync += tmo.eq(tmo + 1)
                with m.If(ax.bvalid):
                    with m.If(resp == 0):
                        m.d.sync += resp.eq(ax.bresp)
                    m.next = "WDONE"
                with m.Elif(tmo == 2):
                    m.d.sync += timed_out.eq(1)
                    m.next = "WDONE"
            with m.State("WDONE"):
                # the burst's next word address (a carry out of the core's space: DECERR)
                nxt = Signal(AB - 1)
                m.d.comb += nxt.eq(hdr[2:AB] + 1)
                m.d.sync += hdr[2:AB].eq(nxt)
                with m.If(nxt == 0):
                    m.d.sync += addr_over.eq(1)
                with m.If(after_write):
                    m.next = "RESPOND"
                with m.Else():
                    m.next = "RX"

            with m.State("EXEC"):
                m.d.sync += [aw_done.eq(0), w_done.eq(0), tmo.eq(0)]
                ok = status == Status.OK
                with m.If(ok & (cmd == Cmd.WRITE32)):
                    m.d.sync += after_write.eq(1)
                    m.next = "WRITE"
                with m.Elif(ok & (cmd == Cmd.READ32)):
                    with m.If(addr_bad):
                        m.d.sync += resp.eq(3)
                        m.next = "RESPOND"
                    with m.Else():
                        m.next = "AR"
                with m.Else():
                    m.next = "RESPOND"
            with m.State("AR"):
                m.d.comb += ax.arvalid.eq(1)
                with m.If(tick):
                    m.d.sync += tmo.eq(tmo + 1)
                with m.If(ax.arready):
                    m.d.sync += tmo.eq(0)
                    m.next = "R"
                with m.Elif(tmo == 2):
                    m.d.sync += timed_out.eq(1)
                    m.next = "RESPOND"
            with m.State("R"):
                m.d.comb += ax.rready.eq(1)
                with m.If(tick):
                    m.d.sync += tmo.eq(tmo + 1)
                with m.If(ax.rvalid):
                    m.d.sync += [hdr[32:64].eq(ax.rdata), resp.eq(ax.rresp)]
                    m.next = "RESPOND"
                with m.Elif(tmo == 2):
                    m.d.sync += timed_out.eq(1)
                    m.next = "RESPOND"

            with m.State("RESPOND"):
                m.d.sync += [st.eq(status), overrun.eq(self.rx_lost)]
                m.next = "SEND"
            with m.State("SEND"):
                # the transmitter sends the response from the frame registers
                m.d.comb += r_go.eq(1)
                with m.If(r_done):
                    m.d.sync += [last_err.eq((st != 0) | (resp != 0)), *new_frame]
                    m.next = "RX"

        # ------------------------------------------------------------ transmitter
        # frames: END, type, body..., crc, END (END raw; the rest escaped downstream)
        tcrc = Signal(8)
        tidx = Signal(3)
        obyte = Signal(range(max(B * E, 2)))
        otmo = Signal(range(self.stall_ticks + 1))
        send = Signal()
        m.d.comb += send.eq(self.tx_valid & self.tx_ready)
        with m.If(send & ~self.tx_raw):
            m.d.sync += tcrc.eq(crc8_next(tcrc, self.tx_data))

        rd_ok = Signal()
        with m.If(r_done):
            m.d.sync += rd_ok.eq(0)
        with m.If(self.axil.rvalid & self.axil.rready & (self.axil.rresp == 0)):
            m.d.sync += rd_ok.eq(1)
        # the response body: byte tidx for cmd, and its length
        r_len = Signal(3)
        r_byte = Signal(8)
        ping = [PROTOCOL_VERSION, B, E, AB]
        bodies = {
            Cmd.WRITE32: [st, resp],
            # READ32 data only from a completed OKAY read (0 otherwise)
            Cmd.READ32: [st, resp, *[hdr[32 + 8 * k:40 + 8 * k] & rd_ok.replicate(8) for k in range(4)]],
            Cmd.WRITE_BURST: [st, resp, done[0:8], done[8:16]],
            Cmd.STREAM_IN: [st, done[0:8], done[8:16]],
            Cmd.PING: [st, *ping],
        }
        m.d.comb += r_len.eq(1)
        with m.If(tidx == 0):
            m.d.comb += r_byte.eq(st)
        with m.Switch(cmd):
            for c, body in bodies.items():
                with m.Case(int(c)):
                    m.d.comb += r_len.eq(len(body))
                    with m.Switch(tidx):
                        for k, v in enumerate(body[1:], start=1):
                            with m.Case(k):
                                m.d.comb += r_byte.eq(v)
        out_byte = Signal(8)
        with m.Switch(obyte):
            for k in range(B * E):
                with m.Case(k):
                    m.d.comb += out_byte.eq(self.s_axis.tdata[8 * k:8 * k + 8])

        with m.FSM():
            with m.State("IDLE"):
                m.d.sync += [tcrc.eq(0), tidx.eq(0), obyte.eq(0), otmo.eq(0)]
                with m.If(r_go):
                    m.next = "R_START"
                with m.Elif(self.s_axis.tvalid):
                    m.next = "O_START"
            with m.State("R_START"):
                m.d.comb += [self.tx_valid.eq(1), self.tx_raw.eq(1), self.tx_data.eq(END)]
                with m.If(send):
                    m.next = "R_TYPE"
            with m.State("R_TYPE"):
                m.d.comb += [self.tx_valid.eq(1), self.tx_data.eq(cmd | 0x80)]
                with m.If(send):
                    m.next = "R_BODY"
            with m.State("R_BODY"):
                m.d.comb += [self.tx_valid.eq(1), self.tx_data.eq(r_byte)]
                with m.If(send):
                    m.d.sync += tidx.eq(tidx + 1)
                    with m.If(tidx + 1 == r_len):
                        m.next = "R_CRC"
            with m.State("R_CRC"):
                m.d.comb += [self.tx_valid.eq(1), self.tx_data.eq(tcrc)]
                with m.If(send):
                    m.next = "R_STOP"
            with m.State("R_STOP"):
                m.d.comb += [self.tx_valid.eq(1), self.tx_raw.eq(1), self.tx_data.eq(END)]
                with m.If(send):
                    m.d.comb += r_done.eq(1)
                    m.next = "IDLE"
            with m.State("O_START"):
                m.d.comb += [self.tx_valid.eq(1), self.tx_raw.eq(1), self.tx_data.eq(END)]
                with m.If(send):
                    m.next = "O_TYPE"
            with m.State("O_TYPE"):
                m.d.comb += [self.tx_valid.eq(1), self.tx_data.eq(OUTPUT_TYPE)]
                with m.If(send):
                    m.next = "O_WAIT"
            with m.State("O_WAIT"):
                # the next beat of the output vector (held by the core until taken)
                with m.If(tick):
                    m.d.sync += otmo.eq(otmo + 1)
                with m.If(self.s_axis.tvalid):
                    m.d.sync += [obyte.eq(0), otmo.eq(0)]
                    m.next = "O_BYTES"
                with m.Elif(otmo == self.stall_ticks):
                    m.next = "CRC"             # the core stopped mid-vector: close the frame
            with m.State("O_BYTES"):
                m.d.comb += [self.tx_valid.eq(1), self.tx_data.eq(out_byte)]
                with m.If(send):
                    m.d.sync += obyte.eq(obyte + 1)
                    with m.If(obyte == B * E - 1):
                        m.d.comb += self.s_axis.tready.eq(1)     # the beat is sent: take it
                        with m.If(self.s_axis.tlast):
                            m.next = "CRC"
                        with m.Else():
                            m.next = "O_WAIT"
            with m.State("CRC"):
                m.d.comb += [self.tx_valid.eq(1), self.tx_data.eq(tcrc)]
                with m.If(send):
                    m.next = "STOP"
            with m.State("STOP"):
                m.d.comb += [self.tx_valid.eq(1), self.tx_raw.eq(1), self.tx_data.eq(END)]
                with m.If(send):
                    m.next = "IDLE"
        return m


class SlipEscaper(wiring.Component):
    """``data``/``raw``/``valid``/``ready`` -> UART bytes: a non-raw END or ESC goes out
    as two bytes (ESC, ESC_END/ESC_ESC)."""

    data: In(8)
    raw: In(1)
    valid: In(1)
    ready: Out(1)
    o_data: Out(8)
    o_valid: Out(1)
    o_ready: In(1)

    def elaborate(self, platform):
        m = Module()
        second = Signal()
        second_b = Signal(8)
        needs = ~self.raw & ((self.data == END) | (self.data == ESC))
        with m.If(second):
            m.d.comb += [self.o_valid.eq(1), self.o_data.eq(second_b)]
            with m.If(self.o_ready):
                m.d.sync += second.eq(0)
        with m.Else():
            m.d.comb += [self.o_valid.eq(self.valid), self.ready.eq(self.o_ready),
                         self.o_data.eq(Mux(needs, ESC, self.data))]
            with m.If(self.valid & self.o_ready & needs):
                m.d.sync += [second.eq(1), second_b.eq(Mux(self.data == END, ESC_END, ESC_ESC))]
        return m


class BridgeCore(wiring.Component):
    """UART pins <-> :class:`Bridge` (with the receive FIFO, the SLIP escaper and the
    UART itself). ``rx``/``tx`` are the pins; the bus ports are those of the bridge."""

    def __init__(self, *, divisor: int, addr_bits: int, elem_bytes: int, stream_elems: int,
                 stall_ticks: int = 16):
        self.divisor = _check_divisor(divisor)
        # a tick is about one byte time; a stall of 16 byte times is half the FIFO
        self.bridge = Bridge(addr_bits=addr_bits, elem_bytes=elem_bytes,
                             stream_elems=stream_elems, tick_cycles=10 * self.divisor,
                             stall_ticks=stall_ticks)
        W = elem_bytes * 8 * stream_elems
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
        m.submodules.fifo = q = fifo.SyncFIFOBuffered(width=8, depth=RX_FIFO_DEPTH)
        m.submodules.bridge = br = self.bridge
        m.submodules.esc = esc = SlipEscaper()
        m.d.comb += [
            urx.rx.eq(self.rx), self.tx.eq(utx.tx),
            q.w_data.eq(urx.data), q.w_en.eq(urx.valid),
            br.rx_data.eq(q.r_data), br.rx_valid.eq(q.r_rdy), q.r_en.eq(br.rx_ready),
            br.rx_lost.eq((urx.valid & ~q.w_rdy) | urx.frame_error),
            esc.data.eq(br.tx_data), esc.raw.eq(br.tx_raw), esc.valid.eq(br.tx_valid),
            br.tx_ready.eq(esc.ready),
            utx.data.eq(esc.o_data), utx.valid.eq(esc.o_valid), esc.o_ready.eq(utx.ready),
            self.busy.eq(br.busy), self.error.eq(br.error),
            self.rx_activity.eq(~urx.rx), self.tx_activity.eq(~utx.tx),
        ]
        wiring.connect(m, wiring.flipped(self.axil), br.axil)
        wiring.connect(m, wiring.flipped(self.m_axis), br.m_axis)
        wiring.connect(m, wiring.flipped(self.s_axis), br.s_axis)
        return m
