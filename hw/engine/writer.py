"""``ResultWriter``: the result register, the bias reads and the serial element writer."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.memory import ReadPort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ttforge.hw.blocks import (decode_onehot, fanout_copies, ge_const, lut_compares, onehot_select,
                               sat_add)
from ttforge.hw.engine.geometry import Geometry
from ttforge.hw.engine.issue import bias_address, result_tag_layout, tag_has_bias
from ttforge.hw.regmap import ErrorCode

__all__ = ["ResultWriter"]


class ResultWriter(wiring.Component):
    """Takes each MAC result (``res``, while ``running``) into the result register and
    feeds the requantization units: a word result (mode 0, ``OUT_WORD``) to every lane at
    once, with the bias word read from BMEM two cycles ahead; an element result
    (``elem_out``: mode 1, or every result with ``serial_requant``) through the serial
    writer, lanes ``0 .. nv-1`` one per cycle to unit 0, at ``e = o + l*O_LANE`` with
    the bias element ``b + l*O_LANE``, while the lanes compute the next block.

    With fewer units than lanes (``requant_units``, ``Geometry.drain`` > 1) a word result
    and its bias word stay in the result register while they go through the units
    ``units`` lanes a cycle, in ``drain`` cycles (the issue unit holds the next block's
    last iteration so that it never overwrites a result still draining).

    Outputs per requantization unit (``N = Geometry.units``): ``valid``, ``acc``,
    ``bias``, ``bias_en``, ``zero`` (padding); the buffer element address of what enters
    the units, ``addr_valid``/``addr`` (a drained chunk's: its first lane's); ``busy``
    while a result is being written; ``errors`` are the serial writer's address checks,
    in the order of :attr:`ERRORS`. ``flush`` drops what is in flight."""

    ERRORS = (ErrorCode.BUF_RANGE, ErrorCode.BMEM_RANGE)

    def __init__(self, geom: Geometry):
        self.geom = g = geom
        c = g.config
        self.units = N = g.units
        tag = result_tag_layout(g)
        super().__init__({
            "running": In(1),
            "flush": In(1),
            "elem_out": In(1),
            "use_bias": In(1),
            "o_lane": In(g.awp),
            "ov_end": In(g.awp),
            # (without tag_has_bias: B_BASE - O_BASE, the bias address's offset)
            **({} if tag_has_bias(g) else {"b_off": In(signed(g.awp + 1))}),
            "pre_valid": In(1),
            "pre_tag": In(tag),
            "res_valid": In(1),
            "res_tag": In(tag),
            "res": In(data.ArrayLayout(signed(c.acc_bits), g.L)),
            "bmem": In(ReadPort.Signature(addr_width=ceil_log2(c.bias_depth // g.L),
                                          shape=data.ArrayLayout(signed(c.bias_bits), g.L))),
            "valid": Out(N),
            "acc": Out(data.ArrayLayout(signed(c.acc_bits), N)),
            "bias": Out(data.ArrayLayout(signed(c.bias_bits), N)),
            "bias_en": Out(N),
            "zero": Out(N),
            "addr_valid": Out(1),
            "addr": Out(g.eb),
            "busy": Out(1),
            "errors": Out(len(self.ERRORS)),
        })

    def elaborate(self, platform):
        m = Module()
        g, c = self.geom, self.geom.config
        L, aw, AWP, nvw, EB = g.L, g.aw, g.awp, g.nvw, g.eb
        AB, BB = c.acc_bits, c.bias_bits
        running, elem_out, use_bias = self.running, self.elem_out, self.use_bias
        res_tag, pre_tag = self.res_tag, self.pre_tag
        bmem = self.bmem

        R = Signal(data.ArrayLayout(signed(AB), L))
        R_v = Signal()                       # word-mode result valid (one cycle)
        R_e = Signal(EB)
        R_z = Signal(L)
        R_ben = Signal(L)
        R_vm = Signal(L)                     # valid lanes of a word-mode result
        w_busy, w_vnxt = Signal(name="w_busy"), Signal(name="w_vnxt")
        w_lane = Signal(g.lane_bits)
        w_oh = Signal(L)                     # w_lane, one-hot (the AND-OR select of R)
        w_nv = Signal(nvw)
        w_e, w_b = Signal(AWP, name="w_e"), Signal(AWP, name="w_b")
        q0_v, q0_zero, q0_ben = Signal(name="q0_v"), Signal(name="q0_zero"), Signal(name="q0_ben")
        q0_val = Signal(signed(AB))
        q0_e = Signal(EB)
        q0_boh = Signal(L)                   # the bias element's lane, one-hot
        q1_v, q1_zero, q1_ben = Signal(name="q1_v"), Signal(name="q1_zero"), Signal(name="q1_ben")
        q1_val = Signal(signed(AB))
        q1_e = Signal(EB)
        q1_boh = Signal(L)
        # the element with its bias element selected (the lane's AND-OR select of the bias
        # word, registered: it ran into unit 0's bias adder, the routed critical path of
        # all three ECP5 L = 16 seeds at 76f9f95, 93.5-106.3 MHz; one more cycle of the
        # element drain, ENGINE_TIMING.bias_select; only with more than one lane)
        q2_v, q2_zero, q2_ben = Signal(name="q2_v"), Signal(name="q2_zero"), Signal(name="q2_ben")
        q2_val = Signal(signed(AB))
        q2_e = Signal(EB)
        q2_bias = Signal(signed(BB))

        # the deposit (running & res_valid) registered a cycle ahead from the MAC's
        # announcement: a local flop, not the controller's high fan-out `running`, drives
        # the result and lane registers (a flush empties the MAC, so none follows it)
        # (one copy per lane group enables that group's result registers)
        dep_g = fanout_copies(1, g.groups, "deposit")
        deposit = dep_g[0]
        m.d.sync += [d.eq(running & self.pre_valid & ~self.flush) for d in dep_g]
        for l in range(L):
            with m.If(dep_g[g.group(l)]):
                m.d.sync += R[l].eq(self.res[l])
        m.d.sync += R_v.eq(deposit & ~elem_out)
        with m.If(deposit & ~elem_out):
            m.d.sync += R_e.eq(res_tag.e)
            if not g.serial:
                m.d.sync += [R_z.eq(res_tag.zmask), R_ben.eq(Mux(use_bias, ~res_tag.zmask, 0))]
            m.d.sync += [R_vm[l].eq(res_tag.nv > l) for l in range(L)]

        # BMEM reads, registered (bias_r) two cycles after the address: the bias word of a
        # word-mode result (read while the result is one stage before the accumulator, so
        # it arrives with R), or the serial writer's element (arrives with q1)
        bias_r = Signal(data.ArrayLayout(signed(BB), L))
        m.d.sync += bias_r.eq(bmem.data)
        w_inrange = Signal()
        m.d.comb += w_inrange.eq(w_e < self.ov_end)
        # (the read is always enabled: only the reads above are ever used, and an enable
        # drove the clock enable of every BMEM data flip-flop, 2,048 at L = 64)
        with_b = tag_has_bias(g)
        if with_b:
            with m.If(w_busy):
                m.d.comb += [bmem.addr.eq(g.word_of(w_b, c.bias_depth)), bmem.en.eq(1)]
            with m.Else():
                m.d.comb += [bmem.addr.eq(g.word_of(pre_tag.b, c.bias_depth)), bmem.en.eq(1)]
        else:
            # (serial: every result is an element output, its bias read at w_b; a read
            # outside w_busy is never used)
            m.d.comb += [bmem.addr.eq(g.word_of(w_b, c.bias_depth)), bmem.en.eq(1)]

        # the serial element writer
        w_act = w_busy & running
        m.d.sync += q0_v.eq(0)
        m.d.sync += [q1_v.eq(q0_v), q1_val.eq(q0_val), q1_e.eq(q0_e), q1_zero.eq(q0_zero),
                     q1_ben.eq(q0_ben), q1_boh.eq(q0_boh)]
        if L > 1:
            m.d.sync += [q2_v.eq(q1_v), q2_val.eq(q1_val), q2_e.eq(q1_e), q2_zero.eq(q1_zero),
                         q2_ben.eq(q1_ben),
                         q2_bias.eq(onehot_select([bias_r[l] for l in range(L)], q1_boh))]
            # the element entering unit 0: valid, value, address, zero, bias enable, bias
            e_v, e_val, e_e, e_zero, e_ben, e_bias = q2_v, q2_val, q2_e, q2_zero, q2_ben, q2_bias
        else:
            # one lane: nothing to select, so no stage for it (ENGINE_TIMING.bias_select;
            # 60 flip-flops of the MNIST network's iCE40UP5K logic cells)
            e_v, e_val, e_e, e_zero, e_ben, e_bias = q1_v, q1_val, q1_e, q1_zero, q1_ben, bias_r[0]
        with m.If(w_act):
            m.d.sync += [q0_v.eq(1), q0_val.eq(onehot_select([R[l] for l in range(L)], w_oh)),
                         q0_e.eq(w_e), q0_zero.eq(~w_inrange), q0_ben.eq(use_bias & w_inrange),
                         q0_boh.eq(decode_onehot(g.lane_of(w_b), L))]
            with m.If(w_vnxt):
                m.d.sync += [w_lane.eq(w_lane + 1), w_oh.eq(Cat(0, w_oh[:-1]) if L > 1 else 1),
                             w_vnxt.eq(w_lane + 2 < w_nv),
                             w_e.eq(sat_add(w_e, self.o_lane, aw)),
                             w_b.eq(sat_add(w_b, self.o_lane, aw))]
            with m.Else():
                m.d.sync += w_busy.eq(0)
        with m.If(deposit & elem_out):
            m.d.sync += [w_busy.eq(1), w_lane.eq(0), w_oh.eq(1), w_nv.eq(res_tag.nv),
                         w_vnxt.eq(res_tag.nv > 1), w_e.eq(res_tag.e),
                         w_b.eq(res_tag.b if with_b
                                else bias_address(m, res_tag.e, self.b_off, aw, "res_b"))]
        lut = lut_compares(platform)          # (the range checks as logic, hw/blocks.py)
        m.d.comb += self.errors.eq(Cat(
            w_act & ge_const(w_e, c.buf_depth, lut),                         # BUF_RANGE
            w_act & use_bias & w_inrange & ge_const(w_b, c.bias_depth, lut),   # BMEM_RANGE
        ))
        with m.If(self.flush):
            m.d.sync += [R_v.eq(0), w_busy.eq(0), q0_v.eq(0), q1_v.eq(0)]
            if L > 1:
                m.d.sync += q2_v.eq(0)

        # into the requantization units: unit 0 takes word lane 0 or the serial element
        word = ~elem_out
        if g.drain == 1:
            w_v, w_addr = R_v, R_e
            w_in = [(R_v & R_vm[l], R[l], bias_r[l], R_ben[l], R_z[l]) for l in range(self.units)]
        else:
            w_v, w_addr, w_in = self._drain(m, deposit & ~elem_out, R, R_e, R_vm, R_ben, R_z, dep_g, bias_r)
        m.d.comb += [
            self.valid[0].eq(Mux(word, w_in[0][0], e_v)),
            self.acc[0].eq(Mux(word, w_in[0][1], e_val)),
            self.bias[0].eq(Mux(word, w_in[0][2], e_bias)),
            self.bias_en[0].eq(Mux(word, w_in[0][3], e_ben)),
            self.zero[0].eq(Mux(word, w_in[0][4], e_zero)),
            self.addr_valid.eq(Mux(word, w_v, e_v)),
            self.addr.eq(Mux(word, w_addr, e_e)),
            self.busy.eq(w_busy | w_v | q0_v | q1_v | (q2_v if L > 1 else 0)),
        ]
        for u in range(1, self.units):
            valid, acc, bias, ben, zero = w_in[u]
            m.d.comb += [self.valid[u].eq(valid), self.acc[u].eq(acc), self.bias[u].eq(bias),
                         self.bias_en[u].eq(ben), self.zero[u].eq(zero)]
        return m

    def _drain(self, m, start, R, R_e, R_vm, R_ben, R_z, dep_g, bias_r):
        """The word drain through ``U = units`` units: chunk ``j`` (lanes ``jU .. jU+U-1``)
        in the ``j``-th cycle after ``start`` (a word result's deposit). The result
        register and its lane flags shift down by ``U`` lanes a cycle, so unit ``u``
        always reads lane ``u`` (no multiplexer between the register and the unit's
        adder); the bias word arrives in ``bias_r`` with chunk 0 and is kept, shifted a
        chunk ahead, in ``Rb`` for the others. Returns the valid, the chunk's element
        address and each unit's (valid, acc, bias, bias_en, zero); the valid is high
        while the drain is busy."""
        g, c = self.geom, self.geom.config
        L, U, D = g.L, self.units, g.drain
        G = g.groups
        d_busy = Signal()
        d_j = Signal(range(D))
        # copies per lane group: the first chunk's cycle (it loads Rb, and the units take
        # chunk 0's bias from bias_r) and the shift enable (each drives every flip-flop
        # of its group's lanes in R and Rb)
        first_g = fanout_copies(1, G, "drain_first")
        shift_g = fanout_copies(1, G, "drain_shift")
        m.d.sync += [f.eq(start) for f in first_g]
        with m.If(d_busy):
            m.d.sync += [d_j.eq(d_j + 1), d_busy.eq(d_j != D - 1)]
            m.d.sync += [s.eq(d_j != D - 1) for s in shift_g]
        with m.If(start):
            m.d.sync += [d_busy.eq(1), d_j.eq(0)]
            m.d.sync += [s.eq(1) for s in shift_g]
        with m.If(self.flush):
            m.d.sync += [d_busy.eq(0)] + [s.eq(0) for s in shift_g]
        # the shift (a deposit in the same cycle, the next block's, wins: it comes in the
        # cycle of the last chunk at the earliest)
        for l in range(L - U):
            k = g.group(l)
            with m.If(shift_g[k] & ~dep_g[k]):
                m.d.sync += R[l].eq(R[l + U])
        with m.If(d_busy & ~start):
            m.d.sync += [R_vm.eq(R_vm >> U), R_ben.eq(R_ben >> U), R_z.eq(R_z >> U)]
        # Rb: chunks 1 .. D-1 of the bias word, loaded a chunk ahead in chunk 0's cycle
        Rb = Signal(data.ArrayLayout(signed(c.bias_bits), L - U))
        for l in range(L - U):
            k = g.group(l)
            with m.If(first_g[k]):
                m.d.sync += Rb[l].eq(bias_r[l + U])
            if l + U < L - U:
                with m.Elif(shift_g[k]):
                    m.d.sync += Rb[l].eq(Rb[l + U])
        units = []
        for u in range(U):
            k = g.group(u)
            units.append((d_busy & R_vm[u], R[u], Mux(first_g[k], bias_r[u], Rb[u]), R_ben[u],
                          R_z[u]))
        addr = Signal.like(R_e)
        m.d.comb += addr.eq(R_e | (d_j << (U.bit_length() - 1)))
        return d_busy, addr, units
