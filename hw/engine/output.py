"""``OutputPath``: streams the output vector from its buffer through a FIFO."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, ResetInserter, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from ttforge.hw.axis import element_layout
from ttforge.hw.blocks import decode_onehot, onehot_select
from ttforge.hw.cycles import ENGINE_TIMING
from ttforge.hw.engine.geometry import Geometry

__all__ = ["OutputPath"]


class OutputPath(wiring.Component):
    """While ``active``: reads elements ``0 .. OUT_COUNT - 1`` (``out_last`` = OUT_COUNT
    - 1; restarted by ``begin``) of the output buffer (``rd_addr``, ``rd_en``; the engine
    returns the word of both buffers in ``words``, the low ``act_bits`` of each element,
    and ``OUT_BUF`` in ``buf``), one per cycle while the FIFO of
    ``ENGINE_TIMING.fifo_depth`` entries has room for it, and offers them on ``out``, the
    last with ``last``. ``finished`` is high in the cycle the last element is accepted.
    ``flush`` drops what is in flight and in the FIFO.

    Both buffers' words are registered as they leave the block RAMs and ``buf`` selects
    between the registers: no logic between a block RAM output and a flip-flop (the
    select before the register was the routed seed-2 critical path of the ECP5 L = 16
    engine at 4cab273, DP16KD DOB -> LUT -> ``o_raw``, 10.0 ns). ``buf`` must be held
    while an output runs (``OUT_BUF`` is a program register)."""

    def __init__(self, geom: Geometry, *, fault: str | None = None):
        self.geom = g = geom
        c = g.config
        self.fault = fault
        super().__init__({
            "active": In(1),
            "begin": In(1),
            "flush": In(1),
            "out_last": In(g.awp),
            "rd_addr": Out(g.awp),
            "rd_en": Out(1),
            "words": In(data.ArrayLayout(data.ArrayLayout(signed(c.act_bits), g.L), 2)),
            "buf": In(1),
            "out": Out(stream.Signature(element_layout(c.act_bits))),
            "finished": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        g, c = self.geom, self.geom.config
        L, XB = g.L, c.act_bits
        # (read_registers: one entry more, for the read one more cycle in flight; else
        # the credit check below would let the reads run one in every few cycles)
        fifo = SyncFIFO(width=XB, depth=ENGINE_TIMING.fifo_depth + c.read_registers)
        m.submodules.fifo = ResetInserter({"sync": self.flush})(fifo)
        o_idx = Signal(g.awp)
        o_more = Signal()                     # o_idx < OUT_COUNT
        out_issue = Signal()
        # reads in flight: issued (stage 1), word registered (stage 2), then into the FIFO
        o_inf1, o_inf2 = Signal(name="o_inf1"), Signal(name="o_inf2")
        o_lane1 = Signal(g.lane_bits)
        # stream elements (act_bits) of both buffers
        o_raw = Signal(data.ArrayLayout(data.ArrayLayout(signed(XB), L), 2))
        m.d.comb += [
            self.rd_addr.eq(o_idx),
            self.rd_en.eq(out_issue),
            self.out.valid.eq(fifo.r_rdy & self.active),
            self.out.payload.data.eq(fifo.r_data),
            fifo.r_en.eq(self.out.ready & self.active),
        ]
        m.d.sync += o_raw.eq(self.words)
        # AccelConfig.read_registers: the buffers' words come a cycle later (registered at
        # each block RAM, hw/engine/banks.py): one more stage of reads in flight
        extra = [Signal(name=f"o_inf1_r{k}") for k in range(c.read_registers)]
        lanes = [Signal(g.lane_bits, name=f"o_lane1_r{k}") for k in range(c.read_registers)]
        m.d.sync += [o_inf1.eq(out_issue), o_lane1.eq(g.lane_of(o_idx))]
        prev_v, prev_l = o_inf1, o_lane1
        for v, ln in zip(extra, lanes):
            m.d.sync += [v.eq(prev_v), ln.eq(prev_l)]
            prev_v, prev_l = v, ln
        m.d.sync += o_inf2.eq(prev_v)
        o_lane_w = prev_l                     # the lane of the word arriving next cycle
        with m.If(self.flush):
            m.d.sync += [o_inf1.eq(0), o_inf2.eq(0), *[v.eq(0) for v in extra]]
        # the element of each buffer's word, then the buffer: OUT_BUF drives act_bits
        # LUTs, not a select of every lane (L * act_bits)
        if L > 1:
            # (the lane as a registered one-hot: AND-OR selects, each bit on 2 * act_bits
            # LUTs instead of a binary index into every multiplexer of the tree)
            o_oh2 = Signal(L)
            m.d.sync += o_oh2.eq(decode_onehot(o_lane_w, L))
            rsel = Mux(self.buf, onehot_select([o_raw[1][l] for l in range(L)], o_oh2),
                       onehot_select([o_raw[0][l] for l in range(L)], o_oh2))
        else:
            rsel = Mux(self.buf, o_raw[1][0], o_raw[0][0])
        m.d.comb += [fifo.w_en.eq(o_inf2), fifo.w_data.eq(rsel)]

        with m.If(self.active):
            in_flight = o_inf1 + o_inf2
            for v in extra:
                in_flight = in_flight + v
            m.d.comb += out_issue.eq(o_more & (fifo.level + in_flight < fifo.depth))
            with m.If(out_issue):
                m.d.sync += [o_idx.eq(o_idx + 1), o_more.eq(o_idx != self.out_last)]
        with m.If(self.begin):
            m.d.sync += [o_idx.eq(0), o_more.eq(1)]
        # the element at the FIFO's head is the last one when the count of accepted
        # elements says so (a registered compare): `last` and `finished` come from a flop,
        # not from the FIFO's read data, which leaves LUT RAM addressed by the FIFO's read
        # pointer (the stream's adapter decides its tready from `last`, and `finished`
        # ends every phase flop of the controller: 7-8 LUT levels from the read pointer)
        fire = Signal()
        o_acc = Signal(g.awp)                  # elements accepted so far
        o_at_last = Signal()                   # o_acc == OUT_COUNT - 1
        m.d.comb += fire.eq(self.out.valid & self.out.ready)
        with m.If(fire):
            m.d.sync += [o_acc.eq(o_acc + 1), o_at_last.eq(o_acc + 1 == self.out_last)]
        with m.If(self.begin):
            m.d.sync += [o_acc.eq(0), o_at_last.eq(self.out_last == 0)]
        m.d.comb += [
            # (test hook drop_tlast: the last element is never marked at the port)
            self.out.payload.last.eq(0 if self.fault == "drop_tlast" else o_at_last),
            self.finished.eq(fire & o_at_last),
        ]
        return m
