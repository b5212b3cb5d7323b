"""``TTEngine``: the programmable TT-contraction engine of ``docs/hardware.md``.

One :class:`amaranth.lib.wiring.Component`, parameterised by an ``AccelConfig``:
memories (CMEM, BMEM, BUF0/BUF1, DMEM) with synchronous read ports, the load ports,
the controller (input, pad, descriptor fetch, run, zero-fill, output), the address
generator, ``L`` MAC lanes, ``L`` requantization lanes (lane 0 doubles as the serial
unit of mode-1 element outputs), error status and the performance counters.
The AXI4-Lite / AXI4-Stream top wraps this component; the timing it follows is
documented in ``docs/hardware.md`` ("Engine timing") and mirrored by
:data:`ENGINE_TIMING`.
"""

from __future__ import annotations

from amaranth.hdl import (Cat, Const, Module, Mux, ResetInserter, Signal, signed)
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ttforge.hw.blocks import (AddressGen, MacLanes, Requant, RequantDecode, sat_add,
                               saturate_value)
from ttforge.hw.faults import ENGINE_FAULTS, check_fault
from ttforge.hw.regmap import ErrorCode

__all__ = ["TTEngine", "ERROR_CODES", "ERROR_NAMES", "ENGINE_TIMING", "DESC_WORDS",
           "element_layout"]

DESC_WORDS = 24
COUNTER_BITS = 48
STEP_BITS = 16

#: ``error_code`` values: :class:`ttforge.hw.regmap.ErrorCode` (0: no error). The first
#: error is kept until ``clear_error`` or ``soft_reset``. ``MISALIGNED`` also covers a
#: word-output step (mode 0, or ``OUT_WORD``) whose ``O_LANE`` is not 1 (its lanes would
#: not form one word).
ERROR_CODES = {e.name: int(e) for e in ErrorCode}
ERROR_NAMES = {int(e): e.name for e in ErrorCode}
_E = ErrorCode

#: Fixed cycle costs of the engine (see "Engine timing" in docs/hardware.md). The
#: ``cycles`` counter of one inference (``busy`` high: from the cycle that accepts the
#: first input element to the cycle that accepts the last output element, both
#: included) is, when the streams never wait (no ``in_stall``/``out_stall``):
#:
#:   IN_PAD (IN_COUNT elements, then IN_PAD - IN_COUNT zeros, one per cycle)
#:   + sum over steps [FETCH + N0*N1*N2*N3 + writer stalls
#:                     + (DRAIN_WORD | DRAIN_ELEM + v_last) + (ZFILL_TO - ZFILL_FROM)
#:                     + (ZFILL_EXIT if the step zero-fills)]
#:   + OUTPUT_LATENCY + OUT_COUNT
#:
#: For a mode-1 step with element outputs (not OUT_WORD), ``v_b`` is block b's valid
#: lanes (L, or LAST_LANES when i2 = N2-1) in loop order; the writer stalls are the sum
#: over every block but the last of max(0, v_b - N3), and v_last is the last block's
#: v_b. Stream stall cycles add one for one.
ENGINE_TIMING = {
    "FETCH": 26,            # per step: 24 descriptor words (sync read, registered) + checks
    "DRAIN_WORD": 11,       # last issued iteration -> next phase (word outputs): read,
                            # word register, operands, product, accumulate, 5 requant
                            # stages, write
    "DRAIN_ELEM": 12,       # the same for element outputs (one more stage for the bias
                            # element), plus v_last (one lane per cycle)
    "ZFILL_EXIT": 0,        # a zero fill costs exactly one cycle per element
    "OUTPUT_LATENCY": 3,    # entering the output phase -> first beat valid (read, word
                            # register, FIFO)
    "FIFO_DEPTH": 4,        # output FIFO (reads are issued while it has room)
}


def element_layout(act_bits: int) -> data.StructLayout:
    return data.StructLayout({"data": signed(act_bits), "last": 1})


def _bits(v: int) -> int:
    return max(1, int(v).bit_length())


# state encoding
IDLE, INPUT, DRAIN, PAD, FETCH, RUN, ZFILL, OUTPUT = range(8)
STATE_NAMES = ["IDLE", "INPUT", "DRAIN", "PAD", "FETCH", "RUN", "ZFILL", "OUTPUT"]


class TTEngine(wiring.Component):
    """The engine; see the module docstring and ``docs/hardware.md``.

    Ports (``In`` = driven by the top):

    * ``inp`` (stream in), ``out`` (stream out) of ``{"data": signed(act_bits), "last": 1}``;
    * load ports ``cmem_addr/cmem_data/cmem_we``, ``bmem_*`` (element addresses),
      ``dmem_addr/dmem_data/dmem_we`` (DMEM word index);
    * program registers ``in_count``, ``in_pad``, ``out_count`` (32 bits), ``out_buf``;
    * control ``enable``, ``clear_error``, ``clear_counters``, ``soft_reset`` (pulses);
    * status ``busy``, ``done`` (one-cycle pulse, the cycle after a vector's last output
      element is accepted), ``error``, ``error_code`` (4 bits, :data:`ERROR_CODES`),
      ``error_step`` (16 bits);
    * 48-bit counters ``cycles``, ``busy_lane_cycles``, ``in_stall``, ``out_stall``,
      ``sat_events``, ``vectors``.
    """

    #: deliberate faults for the tests that must fail (never set in generated hardware);
    #: the registry with their descriptions is :data:`ttforge.hw.faults.FAULTS`
    FAULTS = ENGINE_FAULTS

    def __init__(self, config, *, fault: str | None = None):
        self.fault = check_fault(fault, self.FAULTS, "TTEngine")
        self.config = c = config
        L = int(c.lanes)
        if L < 1 or L & (L - 1):
            raise ValueError(f"lanes={L} must be a power of two")
        self.L = L
        self.lg = L.bit_length() - 1
        for name in ("core_depth", "bias_depth", "buf_depth"):
            if getattr(c, name) % L:
                raise ValueError(f"{name} must be a multiple of lanes")
        self.aw = max(ceil_log2(max(c.core_depth, c.bias_depth, c.buf_depth)), self.lg, 1)
        self.cw = 32                            # loop counters: any 32-bit bound
        self.dmem_depth = c.desc_depth * DESC_WORDS
        elem = element_layout(c.act_bits)
        super().__init__({
            "inp": In(stream.Signature(elem)),
            "out": Out(stream.Signature(elem)),
            "cmem_addr": In(max(1, ceil_log2(c.core_depth))),
            "cmem_data": In(signed(c.core_bits)),
            "cmem_we": In(1),
            "bmem_addr": In(max(1, ceil_log2(c.bias_depth))),
            "bmem_data": In(signed(c.bias_bits)),
            "bmem_we": In(1),
            "dmem_addr": In(max(1, ceil_log2(self.dmem_depth))),
            "dmem_data": In(32),
            "dmem_we": In(1),
            "in_count": In(32),
            "in_pad": In(32),
            "out_count": In(32),
            "out_buf": In(1),
            "enable": In(1),
            "clear_error": In(1),
            "clear_counters": In(1),
            "soft_reset": In(1),
            "busy": Out(1),
            "done": Out(1),
            "error": Out(1),
            "error_code": Out(4),
            "error_step": Out(STEP_BITS),
            "cycles": Out(COUNTER_BITS),
            "busy_lane_cycles": Out(COUNTER_BITS),
            "in_stall": Out(COUNTER_BITS),
            "out_stall": Out(COUNTER_BITS),
            "sat_events": Out(COUNTER_BITS),
            "vectors": Out(COUNTER_BITS),
        })

    # ----------------------------------------------------------------------------------
    def elaborate(self, platform):
        m = Module()
        c = self.config
        L, lg, aw, cw = self.L, self.lg, self.aw, self.cw
        IB, CB, BB, AB, XB = c.inter_bits, c.core_bits, c.bias_bits, c.acc_bits, c.act_bits
        AWP = aw + 1  # width of (saturating) address registers

        def lane_of(addr):
            return addr[:lg] if lg else Const(0, 1)

        def misaligned(addr):
            return addr[:lg].any() if lg else Const(0, 1)

        def word_of(addr, depth):
            w = ceil_log2(depth // L)
            return addr[lg:lg + w]

        def onehot(addr):
            if L == 1:
                return Const(1, 1)
            return (Const(1, L) << addr[:lg])[:L]

        # ------------------------------------------------------------------ memories
        buf = [Memory(shape=data.ArrayLayout(signed(IB), L), depth=c.buf_depth // L, init=[])
               for _ in range(2)]
        cmem = Memory(shape=data.ArrayLayout(signed(CB), L), depth=c.core_depth // L, init=[])
        bmem = Memory(shape=data.ArrayLayout(signed(BB), L), depth=c.bias_depth // L, init=[])
        dmem = Memory(shape=32, depth=self.dmem_depth, init=[])
        m.submodules.buf0, m.submodules.buf1 = buf
        m.submodules.cmem, m.submodules.bmem, m.submodules.dmem = cmem, bmem, dmem
        buf_rp = [b.read_port() for b in buf]
        buf_wp = [b.write_port(granularity=1) for b in buf]
        cmem_rp, cmem_wp = cmem.read_port(), cmem.write_port(granularity=1)
        bmem_rp, bmem_wp = bmem.read_port(), bmem.write_port(granularity=1)
        dmem_rp, dmem_wp = dmem.read_port(), dmem.write_port()

        # load ports: element writes with per-lane enables
        m.d.comb += [
            cmem_wp.addr.eq(word_of(self.cmem_addr, c.core_depth)),
            cmem_wp.en.eq(Mux(self.cmem_we, onehot(self.cmem_addr), 0)),
            bmem_wp.addr.eq(word_of(self.bmem_addr, c.bias_depth)),
            bmem_wp.en.eq(Mux(self.bmem_we, onehot(self.bmem_addr), 0)),
            dmem_wp.addr.eq(self.dmem_addr),
            dmem_wp.data.eq(self.dmem_data),
            dmem_wp.en.eq(self.dmem_we),
        ]
        for l in range(L):
            m.d.comb += [cmem_wp.data[l].eq(self.cmem_data), bmem_wp.data[l].eq(self.bmem_data)]

        # ------------------------------------------------------------------ state
        state = Signal(range(len(STATE_NAMES)), init=IDLE)
        flush = Signal()          # abort, or soft reset: clears the datapath pipeline
        step = Signal(STEP_BITS)
        dptr = Signal(_bits(self.dmem_depth + DESC_WORDS))

        errs = []                 # (condition, code) in priority order; any aborts to IDLE

        # checks of the program registers, registered (they are written while disabled)
        prog_bad = Signal()
        m.d.sync += prog_bad.eq((self.in_count == 0) | (self.in_count > self.in_pad)
                                | (self.in_pad > c.buf_depth) | (self.out_count == 0)
                                | (self.out_count > c.buf_depth))
        # (when the registers pass these checks every count fits in AWP bits, so the
        # comparisons below use AWP bits)
        last_idx = Signal(AWP)                # IN_COUNT - 1
        one_elem = Signal()                   # IN_COUNT == 1
        has_pad = Signal()                    # IN_PAD > IN_COUNT
        pad_last = Signal(AWP)                # IN_PAD - 1
        out_last = Signal(AWP)                # OUT_COUNT - 1
        m.d.sync += [last_idx.eq(self.in_count - 1), one_elem.eq(self.in_count == 1),
                     has_pad.eq(self.in_pad > self.in_count), pad_last.eq(self.in_pad - 1),
                     out_last.eq(self.out_count - 1)]

        # ------------------------------------------------------------------ descriptor regs
        flags = Signal(32)
        bm1 = Signal(data.ArrayLayout(cw, 4))       # bounds - 1
        fld = {w: Signal(AWP, name=f"desc_w{w}") for w in range(5, DESC_WORDS)}
        raw22 = Signal(32)
        bound_zero = Signal()
        zf_nonempty = Signal()
        mode, src, use_bias, relu, out_word, last_step = (flags[i] for i in range(6))
        last_lanes = flags[24:32]
        word_out = Signal()
        m.d.comb += word_out.eq(~mode | out_word)
        # results leave through the serial element writer (mode 1 element outputs; every
        # output with serial_requant, which has one requantization unit)
        SER = bool(getattr(c, "serial_requant", 0))
        elem_out = Signal()
        m.d.comb += elem_out.eq(1 if SER else ~word_out)
        O_BASE, O_LANE, OUT_VALID = fld[15], fld[19], fld[21]

        dec = RequantDecode(acc_bits=AB, bias_bits=BB, inter_bits=IB)
        m.submodules.rqdec = dec
        m.d.comb += [dec.shift.eq(flags[16:24].as_signed()), dec.sat_bits.eq(flags[8:16])]
        rq_shamt = Signal(dec.kw)
        rq_round = Signal()
        rq_hi = Signal(signed(IB))
        rq_lo = Signal(signed(IB))
        ov_end = Signal(AWP)       # O_BASE + OUT_VALID: outputs at or beyond are padding
        zf_start = Signal(AWP)
        zf_end = Signal(AWP)
        zf_last = Signal(AWP + 1)  # zf_end - 1 (a fill runs from zf_start to here)

        # ------------------------------------------------------------------ address generator
        gen = AddressGen(bound_width=cw, addr_width=aw,
                         streams=(("x", 4), ("c", 4), ("o", 3)), slab=(),
                         fault=self.fault if self.fault == "wrong_stride" else None)
        m.submodules.gen = ResetInserter({"sync": flush})(gen)
        m.d.comb += [gen.bound_m1.eq(bm1),
                     gen.x_base.eq(fld[5]), gen.c_base.eq(fld[10]), gen.o_base.eq(fld[15])]
        for j in range(4):
            m.d.comb += [gen.x_stride[j].eq(fld[6 + j]), gen.c_stride[j].eq(fld[11 + j])]
        for j in range(3):
            m.d.comb += gen.o_stride[j].eq(fld[16 + j])
        # the bias address B_BASE + (o - O_BASE) = o + (B_BASE - O_BASE), saturating
        b_off = Signal(signed(AWP + 1))

        # ------------------------------------------------------------------ MAC pipeline
        nvw = _bits(L)
        # (the padding mask of a word result; serial outputs decide it per element)
        ZL = 1 if SER else L
        tag_layout = data.StructLayout({"e": AWP, "b": AWP, "nv": nvw,
                                        **({} if SER else {"zmask": L})})
        mac = MacLanes(lanes=L, x_bits=IB, c_bits=CB, acc_bits=AB, tag_width=tag_layout.size)
        m.submodules.mac = ResetInserter({"sync": flush})(mac)
        stall = Signal()          # the address generator holds (only it ever waits)
        running = Signal()
        m.d.comb += running.eq(state == RUN)
        g_valid = Signal()
        adv = Signal()
        m.d.comb += [g_valid.eq(running & gen.valid), adv.eq(g_valid & ~stall),
                     gen.en.eq(running & ~stall)]
        x_ptr, c_ptr, o_ptr = gen.x_addr, gen.c_addr, gen.o_addr
        b_sum = Signal(signed(AWP + 2))
        b_ptr = Signal(AWP)
        m.d.comb += [b_sum.eq(o_ptr + b_off),
                     b_ptr.eq(Mux(b_sum < 0, 0, saturate_value(b_sum[:AWP + 1], aw)))]
        # lanes valid in this iteration: LAST_LANES in the last p block of mode 1
        g_nv = Signal(nvw)
        m.d.comb += g_nv.eq(Mux(mode & gen.i2_last, last_lanes[:nvw], L))

        # checks at issue (G stage)
        o_valid_out = Signal()               # o < OV_END (= ~g_zmask[0], below)
        errs += [
            (g_valid & (x_ptr >= c.buf_depth), _E.BUF_RANGE),
            (g_valid & ~mode & misaligned(x_ptr), _E.MISALIGNED),
            (g_valid & (c_ptr >= c.core_depth), _E.CMEM_RANGE),
            (g_valid & mode & misaligned(c_ptr), _E.MISALIGNED),
            (g_valid & word_out & (o_ptr >= c.buf_depth), _E.BUF_RANGE),
            (g_valid & word_out & misaligned(o_ptr), _E.MISALIGNED),
        ]

        # stage 1: memory reads in flight; stage 2: the words registered (no logic after
        # a block RAM output), then the broadcast operand is selected into MacLanes
        s1_v, s1_first, s1_last = Signal(), Signal(), Signal()
        s1_xlane = Signal(max(1, lg))
        s1_clane = Signal(max(1, lg))
        s1_tag = Signal(tag_layout)
        s1_ovalid = Signal()                 # lane 0's output index is not padding
        g_zmask = Signal(ZL)                 # lanes whose output index is padding
        # o + l >= OV_END  <=>  rel = OV_END - o <= l: one subtraction, then each lane
        # compares rel's few low bits with its constant (no adder per lane)
        g_rel = Signal(signed(AWP + 1))
        m.d.comb += g_rel.eq(ov_end - o_ptr)
        rel_small = Signal()                 # 0 <= rel < L
        m.d.comb += rel_small.eq(~g_rel[lg:].any())
        if ZL == 1:
            m.d.comb += g_zmask.eq(g_rel[-1] | (rel_small & (g_rel[:lg] == 0 if lg else 1)))
        else:
            m.d.comb += g_zmask.eq(Cat(*[g_rel[-1] | (rel_small & (g_rel[:lg] <= l))
                                         for l in range(L)]))
        m.d.comb += o_valid_out.eq(~g_zmask[0])
        s2_v, s2_first, s2_last = Signal(), Signal(), Signal()
        s2_xlane = Signal(max(1, lg))
        s2_clane = Signal(max(1, lg))
        s2_tag = Signal(tag_layout)
        s2_x = Signal(data.ArrayLayout(signed(IB), L))
        s2_c = Signal(data.ArrayLayout(signed(CB), L))
        m.d.sync += [s1_v.eq(adv), s1_first.eq(gen.first), s1_last.eq(gen.last),
                     s1_xlane.eq(lane_of(x_ptr)), s1_clane.eq(lane_of(c_ptr)),
                     s1_tag.e.eq(o_ptr), s1_tag.b.eq(b_ptr), s1_tag.nv.eq(g_nv),
                     s1_ovalid.eq(o_valid_out)]
        if not SER:
            m.d.sync += s1_tag.zmask.eq(g_zmask)
        # the bias word checks, one stage later (b is the sum of o and an offset)
        s1_bias = s1_v & word_out & use_bias & s1_ovalid
        errs += [
            (running & s1_bias & (s1_tag.b >= c.bias_depth), _E.BMEM_RANGE),
            (running & s1_bias & misaligned(s1_tag.b), _E.MISALIGNED),
        ]
        m.d.sync += [s2_v.eq(s1_v), s2_first.eq(s1_first), s2_last.eq(s1_last),
                     s2_xlane.eq(s1_xlane), s2_clane.eq(s1_clane), s2_tag.eq(s1_tag),
                     s2_c.eq(cmem_rp.data)]
        m.d.sync += [s2_x[l].eq(Mux(src, buf_rp[1].data[l], buf_rp[0].data[l]))
                     for l in range(L)]

        # operand selection from the registered words
        m.d.comb += [cmem_rp.addr.eq(word_of(c_ptr, c.core_depth)), cmem_rp.en.eq(1)]
        xsel = Signal(signed(IB))
        csel = Signal(signed(CB))
        if L == 1:
            m.d.comb += [xsel.eq(s2_x[0]), csel.eq(s2_c[0])]
        else:
            m.d.comb += [xsel.eq(s2_x[s2_xlane]), csel.eq(s2_c[s2_clane])]
        for l in range(L):
            m.d.comb += [
                mac.x[l].eq(Mux(mode, xsel, s2_x[l])),
                mac.c[l].eq(Mux(mode, s2_c[l], csel)),
            ]
        m.d.comb += [mac.en.eq(1), mac.in_valid.eq(s2_v), mac.in_first.eq(s2_first),
                     mac.in_last.eq(s2_last), mac.in_tag.eq(s2_tag.as_value())]
        res_tag = data.View(tag_layout, mac.res_tag)

        # ------------------------------------------------------------------ result / writer
        R = Signal(data.ArrayLayout(signed(AB), L))
        R_v = Signal()                       # word-mode result valid (one cycle)
        EB = max(1, ceil_log2(c.buf_depth))    # an in-range buffer element address
        R_e = Signal(EB)
        R_z = Signal(L)
        R_ben = Signal(L)
        R_vm = Signal(L)                     # valid lanes of a word-mode result
        w_busy, w_vnxt = Signal(), Signal()
        w_lane = Signal(max(1, lg))
        w_nv = Signal(nvw)
        w_e, w_b = Signal(AWP, name="w_e"), Signal(AWP, name="w_b")
        q0_v, q0_zero, q0_ben = Signal(), Signal(), Signal()
        q0_val = Signal(signed(AB))
        q0_e = Signal(EB)
        q0_blane = Signal(max(1, lg))
        q1_v, q1_zero, q1_ben = Signal(), Signal(), Signal()
        q1_val = Signal(signed(AB))
        q1_e = Signal(EB)
        q1_blane = Signal(max(1, lg))
        pre_tag = data.View(tag_layout, mac.pre_tag)

        # Element outputs: the writer needs v_b cycles for block b, so the last iteration
        # of block b+1 may enter the pipeline no earlier than v_b cycles after block b's
        # (it then reaches the accumulators just as the writer takes b's last lane). The
        # address generator holds instead of the pipeline: nothing after it ever stalls.
        hold = Signal(nvw)
        hold_nz = Signal()                    # hold != 0, as a register
        m.d.comb += stall.eq(elem_out & gen.last & hold_nz)
        with m.If(adv & elem_out & gen.last):
            m.d.sync += [hold.eq(g_nv - 1), hold_nz.eq(g_nv > 1)]
        with m.Elif(hold_nz):
            m.d.sync += [hold.eq(hold - 1), hold_nz.eq(hold != 1)]
        with m.If(gen.start):
            m.d.sync += [hold.eq(0), hold_nz.eq(0)]
        deposit = Signal()
        m.d.comb += deposit.eq(running & mac.res_valid)

        with m.If(deposit):
            m.d.sync += R.eq(mac.res)
        m.d.sync += R_v.eq(deposit & ~elem_out)
        with m.If(deposit & ~elem_out):
            m.d.sync += R_e.eq(res_tag.e)
            if not SER:
                m.d.sync += [R_z.eq(res_tag.zmask), R_ben.eq(Mux(use_bias, ~res_tag.zmask, 0))]
            m.d.sync += [R_vm[l].eq(res_tag.nv > l) for l in range(L)]

        # BMEM reads, registered (bias_r) two cycles after the address: the bias word of a
        # word-mode result (read while the result is one stage before the accumulator, so
        # it arrives with R), or the serial writer's element (arrives with q1)
        bias_r = Signal(data.ArrayLayout(signed(BB), L))
        m.d.sync += bias_r.eq(bmem_rp.data)
        w_inrange = Signal()
        m.d.comb += w_inrange.eq(w_e < ov_end)
        with m.If(w_busy):
            m.d.comb += [bmem_rp.addr.eq(word_of(w_b, c.bias_depth)), bmem_rp.en.eq(1)]
        with m.Else():
            m.d.comb += [bmem_rp.addr.eq(word_of(pre_tag.b, c.bias_depth)),
                         bmem_rp.en.eq(running & mac.pre_valid & ~elem_out)]

        # serial element writer (mode 1 without OUT_WORD): lanes 0 .. nv-1 of the shadow R,
        # one per cycle, at e = o + l*O_LANE and bias address b + l*O_LANE
        w_act = w_busy & running
        m.d.sync += q0_v.eq(0)
        m.d.sync += [q1_v.eq(q0_v), q1_val.eq(q0_val), q1_e.eq(q0_e), q1_zero.eq(q0_zero),
                     q1_ben.eq(q0_ben), q1_blane.eq(q0_blane)]
        with m.If(w_act):
            m.d.sync += [q0_v.eq(1), q0_val.eq(R[w_lane] if L > 1 else R[0]), q0_e.eq(w_e),
                         q0_zero.eq(~w_inrange), q0_ben.eq(use_bias & w_inrange),
                         q0_blane.eq(lane_of(w_b))]
            with m.If(w_vnxt):
                m.d.sync += [w_lane.eq(w_lane + 1), w_vnxt.eq(w_lane + 2 < w_nv),
                             w_e.eq(sat_add(w_e, O_LANE, aw)), w_b.eq(sat_add(w_b, O_LANE, aw))]
            with m.Else():
                m.d.sync += w_busy.eq(0)
        with m.If(deposit & elem_out):
            m.d.sync += [w_busy.eq(1), w_lane.eq(0), w_nv.eq(res_tag.nv),
                         w_vnxt.eq(res_tag.nv > 1), w_e.eq(res_tag.e), w_b.eq(res_tag.b)]
        errs += [
            (w_act & (w_e >= c.buf_depth), _E.BUF_RANGE),
            (w_act & use_bias & w_inrange & (w_b >= c.bias_depth), _E.BMEM_RANGE),
        ]
        blc_add = Signal(nvw)                # busy-lane-cycle increment: valid lanes per MAC
        m.d.comb += blc_add.eq(Mux(adv, g_nv, 0))

        # ------------------------------------------------------------------ requantization
        rq_fault = self.fault if self.fault in ("round_off_by_one", "sat_bound") else None
        rq = [Requant(acc_bits=AB, bias_bits=BB, inter_bits=IB, fault=rq_fault)
              for _ in range(1 if SER else L)]
        for l, unit in enumerate(rq):
            m.submodules[f"rq{l}"] = ResetInserter({"sync": flush})(unit)
            m.d.comb += [unit.shamt.eq(rq_shamt), unit.round.eq(rq_round), unit.relu.eq(relu),
                         unit.hi.eq(rq_hi), unit.lo.eq(rq_lo)]
            if l == 0:
                bsel = bias_r[q1_blane] if L > 1 else bias_r[0]
                m.d.comb += [
                    unit.in_valid.eq(Mux(~elem_out, R_v & R_vm[0], q1_v)),
                    unit.acc.eq(Mux(~elem_out, R[0], q1_val)),
                    unit.bias.eq(Mux(~elem_out, bias_r[0], bsel)),
                    unit.bias_en.eq(Mux(~elem_out, R_ben[0], q1_ben)),
                    unit.zero.eq(Mux(~elem_out, R_z[0], q1_zero)),
                ]
            else:
                m.d.comb += [unit.in_valid.eq(R_v & R_vm[l]), unit.acc.eq(R[l]),
                             unit.bias.eq(bias_r[l]), unit.bias_en.eq(R_ben[l]),
                             unit.zero.eq(R_z[l])]
        # write address alongside the requantization pipeline
        wm_v = [Signal(name=f"wm_v{i}") for i in range(Requant.LATENCY)]
        wm_e = [Signal(EB, name=f"wm_e{i}") for i in range(Requant.LATENCY)]
        m.d.sync += [wm_v[0].eq(Mux(~elem_out, R_v, q1_v)), wm_e[0].eq(Mux(~elem_out, R_e, q1_e))]
        for i in range(1, Requant.LATENCY):
            m.d.sync += [wm_v[i].eq(wm_v[i - 1]), wm_e[i].eq(wm_e[i - 1])]
        y_v, y_e = wm_v[-1], wm_e[-1]
        y_mask = Signal(L)
        m.d.comb += y_mask.eq(Cat(*[u.out_valid for u in rq]))    # (word writes only)
        sat_now = Signal(range(len(rq) + 1))
        m.d.comb += sat_now.eq(sum(u.sat for u in rq))

        # ------------------------------------------------------------------ buffer write port
        wr_en = Signal()
        wr_sel = Signal()
        wr_addr = Signal(max(1, ceil_log2(c.buf_depth // L)))   # word address
        wr_mask = Signal(L)
        wr_data = Signal(data.ArrayLayout(signed(IB), L))
        for b in range(2):
            m.d.comb += [
                buf_wp[b].addr.eq(wr_addr),
                buf_wp[b].data.eq(wr_data),
                buf_wp[b].en.eq(Mux(wr_en & (wr_sel == b), wr_mask, 0)),
            ]

        # ------------------------------------------------------------------ buffer read port
        out_issue = Signal()
        o_idx = Signal(AWP)
        o_more = Signal()                     # o_idx < OUT_COUNT
        for b in range(2):
            m.d.comb += [
                buf_rp[b].addr.eq(Mux(state == OUTPUT, word_of(o_idx, c.buf_depth),
                                      word_of(x_ptr, c.buf_depth))),
                buf_rp[b].en.eq(Mux(state == OUTPUT, out_issue, 1)),
            ]

        # ------------------------------------------------------------------ output FIFO
        fifo = SyncFIFO(width=XB + 1, depth=ENGINE_TIMING["FIFO_DEPTH"])
        m.submodules.ofifo = ResetInserter({"sync": flush})(fifo)
        # reads in flight: issued (stage 1), word registered (stage 2), then into the FIFO
        o_inf1, o_inf2 = Signal(), Signal()
        o_lane1, o_lane2 = Signal(max(1, lg)), Signal(max(1, lg))
        o_last1, o_last2 = Signal(), Signal()
        o_raw = Signal(data.ArrayLayout(signed(XB), L))   # stream elements: act_bits
        m.d.comb += [
            self.out.valid.eq(fifo.r_rdy & (state == OUTPUT)),
            self.out.payload.data.eq(fifo.r_data[:XB]),
            # (test hook drop_tlast: the last element is never marked at the port)
            self.out.payload.last.eq(0 if self.fault == "drop_tlast" else fifo.r_data[XB]),
            fifo.r_en.eq(self.out.ready & (state == OUTPUT)),
        ]
        m.d.sync += [o_raw[l].eq(Mux(self.out_buf, buf_rp[1].data[l], buf_rp[0].data[l])[:XB])
                     for l in range(L)]
        m.d.sync += [o_inf1.eq(out_issue), o_lane1.eq(lane_of(o_idx)),
                     o_last1.eq(o_idx == out_last),
                     o_inf2.eq(o_inf1), o_lane2.eq(o_lane1), o_last2.eq(o_last1)]
        rsel = o_raw[o_lane2] if L > 1 else o_raw[0]
        m.d.comb += [fifo.w_en.eq(o_inf2), fifo.w_data.eq(Cat(rsel, o_last2))]
        out_accept = Signal()
        m.d.comb += out_accept.eq(self.out.valid & self.out.ready)

        # ------------------------------------------------------------------ controller
        accept = Signal()
        m.d.comb += [
            # a pending error refuses new vectors, but the offending one is still drained
            self.inp.ready.eq(self.enable & ((state == DRAIN) | (~self.error & (
                (state == IDLE) | (state == INPUT))))),
            accept.eq(self.inp.valid & self.inp.ready),
        ]
        j = Signal(AWP)                       # input element / pad index
        jj = Mux(state == IDLE, 0, j)
        exp_last_r = Signal()                 # element j is the vector's last
        exp_last = Signal()
        m.d.comb += exp_last.eq(Mux(state == IDLE, one_elem, exp_last_r))
        with m.If(accept):
            m.d.sync += exp_last_r.eq(jj + 1 == last_idx)
        in_last = self.inp.payload.last
        fw = Signal(range(DESC_WORDS + 2))
        d_r = Signal(32)                      # DMEM read data, registered
        m.d.sync += d_r.eq(dmem_rp.data)
        z = Signal(AWP)
        done_r = Signal()
        m.d.sync += done_r.eq(0)
        m.d.comb += self.done.eq(done_r)

        # busy: from the cycle accepting the first element (still IDLE) until the return
        # to IDLE after the last output element
        m.d.comb += self.busy.eq((state != IDLE) | accept)

        #: internal signals for tests and debugging (not ports)
        self.debug = {"state": state, "step": step, "stall": stall, "fw": fw}

        pipe_busy = Signal()
        m.d.comb += pipe_busy.eq(gen.valid | s1_v | s2_v | mac.busy | w_busy | R_v | q0_v | q1_v
                                 | Cat(*wm_v).any())

        with m.Switch(state):
            with m.Case(IDLE, INPUT):
                with m.If(accept):
                    with m.If((state == IDLE) & prog_bad):
                        m.d.sync += state.eq(Mux(in_last, IDLE, DRAIN))
                    with m.Elif(in_last & ~exp_last):
                        m.d.sync += state.eq(IDLE)
                    with m.Elif(~in_last & exp_last):
                        m.d.sync += state.eq(DRAIN)
                    with m.Else():
                        m.d.comb += [wr_en.eq(1), wr_sel.eq(0), wr_addr.eq(word_of(jj, c.buf_depth)),
                                     wr_mask.eq(onehot(jj))]
                        m.d.comb += [wr_data[l].eq(self.inp.payload.data) for l in range(L)]
                        m.d.sync += j.eq(jj + 1)
                        with m.If(exp_last):
                            m.d.sync += [step.eq(0), dptr.eq(0), fw.eq(0)]
                            m.d.sync += state.eq(Mux(has_pad, PAD, FETCH))
                        with m.Else():
                            m.d.sync += state.eq(INPUT)
            with m.Case(DRAIN):
                with m.If(accept & in_last):
                    m.d.sync += state.eq(IDLE)
            with m.Case(PAD):
                m.d.comb += [wr_en.eq(1), wr_sel.eq(0), wr_addr.eq(word_of(j, c.buf_depth)),
                             wr_mask.eq(onehot(j))]
                m.d.sync += j.eq(j + 1)
                with m.If(j == pad_last):
                    m.d.sync += [state.eq(FETCH), step.eq(0), dptr.eq(0), fw.eq(0)]
            with m.Case(FETCH):
                m.d.comb += [dmem_rp.addr.eq(dptr + fw), dmem_rp.en.eq(1)]
                m.d.sync += fw.eq(fw + 1)
                d = d_r              # word fw - 2 (read at fw - 2, registered at fw - 1)
                with m.Switch(fw):
                    with m.Case(0):
                        m.d.sync += bound_zero.eq(0)
                    with m.Case(2):
                        m.d.sync += flags.eq(d)
                    for w in range(1, 5):
                        with m.Case(w + 2):
                            m.d.sync += bm1[w - 1].eq(d - 1)
                            with m.If(d == 0):
                                m.d.sync += bound_zero.eq(1)
                    for w in range(5, DESC_WORDS - 1):
                        with m.Case(w + 2):
                            m.d.sync += fld[w].eq(saturate_value(d, aw))
                            if w == 22:
                                m.d.sync += raw22.eq(d)
                    with m.Case(DESC_WORDS + 1):
                        # the last word (ZFILL_TO) arrives; everything else is registered
                        m.d.sync += [
                            fld[23].eq(saturate_value(d, aw)),
                            zf_nonempty.eq(d > raw22),
                            zf_start.eq(sat_add(O_BASE, fld[22], aw)),
                            zf_end.eq(sat_add(O_BASE, saturate_value(d, aw), aw)),
                            ov_end.eq(sat_add(O_BASE, OUT_VALID, aw)),
                            b_off.eq(fld[20] - O_BASE),
                            rq_shamt.eq(dec.shamt), rq_round.eq(dec.round),
                            rq_hi.eq(dec.hi), rq_lo.eq(dec.lo),
                        ]
                        m.d.comb += gen.start.eq(1)
                        m.d.sync += state.eq(RUN)
            with m.Case(RUN):
                m.d.sync += zf_last.eq(zf_end - 1)
                with m.If(~pipe_busy):
                    with m.If(zf_nonempty):
                        m.d.sync += [state.eq(ZFILL), z.eq(zf_start)]
                    with m.Elif(last_step):
                        m.d.sync += [state.eq(OUTPUT), o_idx.eq(0), o_more.eq(1)]
                    with m.Else():
                        m.d.sync += [state.eq(FETCH), fw.eq(0), step.eq(step + 1),
                                     dptr.eq(dptr + DESC_WORDS)]
                with m.If(y_v):
                    m.d.comb += [wr_en.eq(1), wr_sel.eq(~src), wr_addr.eq(word_of(y_e, c.buf_depth)),
                                 wr_mask.eq(Mux(~elem_out, y_mask, onehot(y_e)))]
                    y0 = rq[0].out
                    if self.fault == "requant_lsb":   # test hook: flip bit 0 of lane 0
                        y0 = (y0 ^ 1).as_signed()
                    for l in range(L):
                        m.d.comb += wr_data[l].eq(
                            y0 if (SER or l == 0) else Mux(~elem_out, rq[l].out, y0))
            with m.Case(ZFILL):
                m.d.comb += [wr_en.eq(z < c.buf_depth), wr_sel.eq(~src),
                             wr_addr.eq(word_of(z, c.buf_depth)), wr_mask.eq(onehot(z))]
                m.d.comb += [wr_data[l].eq(0) for l in range(L)]
                m.d.sync += z.eq(z + 1)
                with m.If(z == zf_last):
                    with m.If(last_step):
                        m.d.sync += [state.eq(OUTPUT), o_idx.eq(0), o_more.eq(1)]
                    with m.Else():
                        m.d.sync += [state.eq(FETCH), fw.eq(0), step.eq(step + 1),
                                     dptr.eq(dptr + DESC_WORDS)]
            with m.Case(OUTPUT):
                m.d.comb += out_issue.eq(o_more & (fifo.level + o_inf1 + o_inf2 < fifo.depth))
                with m.If(out_issue):
                    m.d.sync += [o_idx.eq(o_idx + 1), o_more.eq(o_idx != out_last)]
                o_end = fifo.r_data[XB] if self.fault == "drop_tlast" else self.out.payload.last
                with m.If(out_accept & o_end):
                    m.d.sync += [state.eq(IDLE), done_r.eq(1)]

        # ------------------------------------------------------------------ errors
        def first_of(pairs):
            """The code of the first true condition, as a balanced tree (short paths)."""
            nodes = [(cond, Const(int(cd), 4)) for cond, cd in pairs]
            while len(nodes) > 1:
                nxt = []
                for k in range(0, len(nodes) - 1, 2):
                    (ca, ka), (cb, kb) = nodes[k], nodes[k + 1]
                    nxt.append((ca | cb, Mux(ca, ka, kb)))
                if len(nodes) % 2:
                    nxt.append(nodes[-1])
                nodes = nxt
            return nodes[0][1]

        fetch_end = (state == FETCH) & (fw == DESC_WORDS + 1)
        errs = [
            ((state == FETCH) & (fw == 0) & (step >= c.desc_depth), _E.NO_LAST),
            (fetch_end & bound_zero, _E.BOUND_ZERO),
            (fetch_end & dec.bad_sat, _E.SAT_BITS),
            (fetch_end & ((last_lanes == 0) | (last_lanes > L)), _E.LAST_LANES),
            (fetch_end & (d_r < raw22), _E.ZFILL_ORDER),
            (fetch_end & word_out & (O_LANE != 1), _E.MISALIGNED),
        ] + errs + [
            ((state == ZFILL) & (z >= c.buf_depth), _E.BUF_RANGE),
        ]
        # an error found in this cycle stops the inference in the next one (registered, so
        # that no long path runs from the checks into the controller); in between nothing
        # irreversible happens (writes out of range are suppressed or land in buffers whose
        # contents the failed inference owns)
        err_now = Signal()
        m.d.comb += err_now.eq(Cat(*[cnd for cnd, _ in errs]).any())
        abort = Signal()
        abort_code = Signal(4)
        abort_step = Signal(STEP_BITS)
        m.d.sync += [abort.eq(err_now & ~abort & ~self.soft_reset),
                     abort_code.eq(first_of(errs)), abort_step.eq(step)]
        in_err = Signal()
        in_code = Signal(4)
        in_sel = Signal(4)
        with m.If(((state == IDLE) | (state == INPUT)) & accept):
            with m.If((state == IDLE) & prog_bad):
                m.d.comb += in_sel.eq(_E.GLOBALS)
            with m.Elif(in_last & ~exp_last):
                m.d.comb += in_sel.eq(_E.TLAST_EARLY)
            with m.Elif(~in_last & exp_last):
                m.d.comb += in_sel.eq(_E.TLAST_LATE)
        m.d.comb += [in_err.eq(in_sel != 0), in_code.eq(in_sel)]
        with m.If((abort | in_err) & ~self.error):
            m.d.sync += [self.error.eq(1), self.error_code.eq(Mux(abort, abort_code, in_code)),
                         self.error_step.eq(Mux(abort, abort_step, 0))]
        with m.If(self.clear_error | self.soft_reset):
            m.d.sync += [self.error.eq(0), self.error_code.eq(0), self.error_step.eq(0)]
        with m.If(abort):
            m.d.sync += state.eq(IDLE)

        # ------------------------------------------------------------------ flush / reset
        # one register drives the (large) flush net: it rises with abort, or the cycle
        # after a soft reset
        m.d.sync += flush.eq((err_now & ~abort & ~self.soft_reset) | self.soft_reset)
        with m.If(flush):
            m.d.sync += [s1_v.eq(0), s2_v.eq(0), R_v.eq(0), w_busy.eq(0), q0_v.eq(0), q1_v.eq(0),
                         o_inf1.eq(0), o_inf2.eq(0)]
            m.d.sync += [v.eq(0) for v in wm_v]
        with m.If(self.soft_reset):
            m.d.sync += state.eq(IDLE)

        # ------------------------------------------------------------------ counters
        # counter_bits (<= 48) wide; the ports are 48 bits, zero above counter_bits
        KB = int(getattr(c, "counter_bits", COUNTER_BITS))

        def counter(port, inc):
            if KB >= COUNTER_BITS:
                sig = port
            else:
                sig = Signal(KB, name=f"{port.name}_count")
                m.d.comb += port.eq(sig)
            with m.If(self.clear_counters):
                m.d.sync += sig.eq(0)
            with m.Else():
                m.d.sync += sig.eq(sig + inc)

        counter(self.cycles, self.busy)
        # the multi-bit increments are registered first (short paths into the 48-bit adds);
        # they reach the counters one cycle later
        blc_r = Signal(nvw)
        sat_r = Signal(range(len(rq) + 1))
        m.d.sync += [blc_r.eq(Mux(running, blc_add, 0)), sat_r.eq(Mux(running & y_v, sat_now, 0))]
        with m.If(self.clear_counters):
            m.d.sync += [blc_r.eq(0), sat_r.eq(0)]
        counter(self.busy_lane_cycles, blc_r)
        counter(self.in_stall, (state == INPUT) & self.inp.ready & ~self.inp.valid)
        counter(self.out_stall, self.out.valid & ~self.out.ready)
        counter(self.sat_events, sat_r)
        counter(self.vectors, done_r)
        return m
