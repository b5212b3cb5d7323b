"""``DescriptorFetch``: reads one step's descriptor from DMEM and decodes it."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.memory import ReadPort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ttforge.hw.blocks import (RequantDecode, fanout_copies, ge_const, lut_compares,
                               requant_widths, sat_add, saturate_value)
from ttforge.hw.config import DESC_WORDS
from ttforge.hw.target import target_family
from ttforge.hw.engine.geometry import Geometry
from ttforge.hw.engine.signatures import BOUND_WORDS, STEP_BITS, Flags, descriptor_layout
from ttforge.hw.regmap import DESCRIPTOR_WORDS, ErrorCode

__all__ = ["DescriptorFetch", "requant_consts_layout"]


def requant_consts_layout(geom: Geometry) -> data.StructLayout:
    """The per-step constants of the requantization units (:class:`RequantDecode`, and
    ``FLAGS.RELU``)."""
    c = geom.config
    kw = requant_widths(c.acc_bits, c.bias_bits, c.inter_bits)[2]
    return data.StructLayout({"shamt": kw, "round": 1, "hi": signed(c.inter_bits),
                              "lo": signed(c.inter_bits), "relu": 1})


class DescriptorFetch(wiring.Component):
    """Reads the ``DESC_WORDS`` words of the descriptor at DMEM word ``base`` while
    ``active`` (one synchronous read per cycle, each registered), holds it decoded in
    ``desc`` (:func:`descriptor_layout`: bounds minus one, addresses saturated) and
    derives the step constants: ``ov_end = O_BASE + OUT_VALID``, the zero-fill range
    ``zf_start .. zf_end`` (``zf_nonempty``), the bias offset ``b_off = B_BASE - O_BASE``
    and the requantization constants ``rq`` (``Geometry.rq_groups`` copies, one per lane
    group); ``mode`` and ``src_g`` (``FLAGS.MODE`` and ``FLAGS.SRC``, ``Geometry.groups``
    copies written with ``FLAGS``, for the per-lane operand and source-buffer selects); ``elem_out`` (mode 1 without ``OUT_WORD``)
    is a register one cycle behind ``FLAGS`` (FLAGS is word 0, so it is ready long
    before ``done``; no flag decode before its fan-out; ``elem_out_g``: one copy per lane
group for the buffer write's per-lane selects). ``done`` is high in the cycle the last word
    arrives (``DESC_WORDS + 1`` cycles after ``active`` rose; the address generator
    starts then; a register, so also in the cycle after ``active`` fell in the cycle
    before it); ``zf_end`` is valid from the cycle after ``done``. ``errors`` are the field checks, in the order of :attr:`ERRORS`
    (``NO_LAST`` in the first cycle, the others with ``done``)."""

    ERRORS = (ErrorCode.NO_LAST, ErrorCode.BOUND_ZERO, ErrorCode.SAT_BITS,
              ErrorCode.LAST_LANES, ErrorCode.ZFILL_ORDER, ErrorCode.MISALIGNED)

    def __init__(self, geom: Geometry):
        self.geom = g = geom
        self.dmem_addr_bits = ceil_log2(g.dmem_depth)
        super().__init__({
            "active": In(1),
            "base": In(max(1, (g.dmem_depth + DESC_WORDS).bit_length())),
            "step": In(STEP_BITS),
            "dmem": In(ReadPort.Signature(addr_width=self.dmem_addr_bits, shape=32)),
            "done": Out(1),
            "desc": Out(descriptor_layout(g.aw, g.cw)),
            "zf_nonempty": Out(1),
            "zf_start": Out(g.awp),
            "zf_end": Out(g.awp),
            "ov_end": Out(g.awp),
            "b_off": Out(signed(g.awp + 1)),
            "rq": Out(data.ArrayLayout(requant_consts_layout(g), g.rq_groups)),
            "mode": Out(g.groups),
            "src_g": Out(g.groups),
            "elem_out": Out(1),
            "elem_out_g": Out(g.groups),
            "errors": Out(len(self.ERRORS)),
        })

    def elaborate(self, platform):
        m = Module()
        g, c = self.geom, self.geom.config
        aw = g.aw
        desc, flags = self.desc, self.desc.flags
        fw = Signal(range(DESC_WORDS + 2))
        d_r = Signal(32)                      # DMEM read data, registered
        zfill_from_word = Signal(32)          # ZFILL_FROM as read (not saturated)
        bound_zero = Signal()
        m.d.sync += d_r.eq(self.dmem.data)

        dec = RequantDecode(acc_bits=c.acc_bits, bias_bits=c.bias_bits, inter_bits=c.inter_bits)
        m.submodules.decode = dec
        m.d.comb += [dec.shift.eq(flags.shift), dec.sat_bits.eq(flags.sat_bits)]

        # the copies of the per-lane constants, one per lane group (fanout_copies)
        # (one group: FLAGS.MODE and elem_out themselves, no second register)
        rq_g = fanout_copies(requant_consts_layout(g), g.rq_groups, "rq")
        many = g.groups > 1
        mode_g = fanout_copies(1, g.groups, "mode") if many else []
        src_g = fanout_copies(1, g.groups, "src") if many else []
        eo_g = fanout_copies(1, g.groups, "elem_out") if many and not g.serial else []
        m.d.comb += [self.rq[k].eq(rq_g[k]) for k in range(g.rq_groups)]
        m.d.comb += [self.mode[k].eq(mode_g[k] if many else flags.mode) for k in range(g.groups)]
        m.d.comb += [self.src_g[k].eq(src_g[k] if many else flags.src) for k in range(g.groups)]
        # (serial_requant: every output is an element output)
        m.d.comb += [self.elem_out_g[k].eq(1 if g.serial else eo_g[k] if eo_g else self.elem_out)
                     for k in range(g.groups)]
        d_flags = Flags(d_r)                  # the FLAGS word as it arrives
        o_base = desc.o_base
        assert DESCRIPTOR_WORDS[-1][1] == "ZFILL_TO"
        # Every other word is decoded a cycle after it arrives, into registers of its own
        # (``dec_*``, from d_r in every cycle), and its field is written from those a
        # cycle later: the bound's ``- 1``, the zero and width check and the address
        # saturation do not lie between d_r and the descriptor's flip-flops, where they
        # were the floorplanned four-engine array's critical path on two of three seeds
        # (bench/results/synth_seeds.mnist-l16-e4-floorplan-errq.json: d_r -> 5 LUTs ->
        # desc). The last such field (ZFILL_FROM) is written in the cycle ``done`` is
        # high, so ``zf_start`` takes its value from the decode registers; no other
        # field is read before the cycle after ``done``.
        dec_m1 = Signal(g.cw, name="dec_m1")          # word - 1 (a bound)
        dec_zero = Signal(name="dec_zero")            # a bound of 0 or beyond cw bits
        dec_sat = Signal(aw + 1, name="dec_sat")      # the word saturated (an address)
        m.d.sync += [dec_m1.eq(d_r[:g.cw] - 1), dec_zero.eq((d_r == 0) | d_r[g.cw:].any()),
                     dec_sat.eq(saturate_value(d_r, aw))]
        decoded = {w: name for w, name, _ in DESCRIPTOR_WORDS[1:-1]}
        # Elaborated for any family but the ECP5 (whose timing these registers were laid
        # out for), the fields used only here are not held: B_BASE, OUT_VALID and ZFILL_TO
        # go from the decode registers into b_off, ov_end and zf_end as they pass (all
        # three after O_BASE; the previous step has drained before a fetch), and the
        # raw ZFILL_FROM word is only compared (below): 80 flip-flops, each a logic cell
        # of the iCE40UP5K. Same values in the same cycles from zf_end's on (b_off and
        # ov_end a cycle or two earlier, while nothing reads them).
        lean = target_family(platform) != "ecp5"
        consumed = ("B_BASE", "OUT_VALID") if lean else ()
        zt_dec = Signal()                     # lean: dec_sat holds ZFILL_TO
        if lean:
            m.d.sync += zt_dec.eq(0)
        with m.If(self.active):
            m.d.comb += [self.dmem.addr.eq(self.base + fw), self.dmem.en.eq(1)]
            m.d.sync += fw.eq(fw + 1)
            d = d_r              # word fw - 2 (read at fw - 2, registered at fw - 1)
            with m.Switch(fw):
                for k in range(DESC_WORDS + 2):
                    with m.Case(k):
                        if k == 0:
                            m.d.sync += bound_zero.eq(0)
                        # word k - 2 as it arrives: FLAGS, ZFILL_FROM's raw word, ZFILL_TO
                        name = DESCRIPTOR_WORDS[k - 2][1] if k >= 2 else None
                        if name == "FLAGS":
                            m.d.sync += desc.flags.eq(d)
                            m.d.sync += [mg.eq(d_flags.mode) for mg in mode_g]
                            m.d.sync += [sg.eq(d_flags.src) for sg in src_g]
                            m.d.sync += [rq.relu.eq(d_flags.relu) for rq in rq_g]
                        elif name == "ZFILL_FROM" and not lean:
                            m.d.sync += zfill_from_word.eq(d)
                        elif name == "ZFILL_TO":
                            # the last word arrives; everything else is registered
                            if lean:
                                m.d.sync += [self.zf_start.eq(sat_add(o_base, dec_sat, aw)),
                                             zt_dec.eq(1)]
                            else:
                                m.d.sync += [
                                    desc.zfill_to.eq(saturate_value(d, aw)),
                                    self.zf_nonempty.eq(d > zfill_from_word),
                                    self.zf_start.eq(sat_add(o_base, dec_sat, aw)),
                                    self.ov_end.eq(sat_add(o_base, desc.out_valid, aw)),
                                    self.b_off.eq(desc.b_base - o_base),
                                ]
                            for rq in rq_g:
                                m.d.sync += [rq.shamt.eq(dec.shamt), rq.round.eq(dec.round),
                                             rq.hi.eq(dec.hi), rq.lo.eq(dec.lo)]
                        # word k - 3, decoded: its field
                        name = decoded.get(k - 3)
                        if name in BOUND_WORDS:
                            m.d.sync += desc[name.lower()].eq(dec_m1)
                            # a bound above the cw-bit counters is refused, not truncated
                            with m.If(dec_zero):
                                m.d.sync += bound_zero.eq(1)
                        elif name == "B_BASE" and name in consumed:
                            m.d.sync += self.b_off.eq(dec_sat - o_base)
                        elif name == "OUT_VALID" and name in consumed:
                            m.d.sync += self.ov_end.eq(sat_add(o_base, dec_sat, aw))
                        elif name is not None:
                            m.d.sync += desc[name.lower()].eq(dec_sat)
        with m.Else():
            m.d.sync += fw.eq(0)
        # zf_end = O_BASE + ZFILL_TO from the registered fields, a cycle after done (the
        # controller reads it first in the step's last RUN cycle, at least 3 cycles after
        # done): no path from the DMEM word through ZFILL_TO's saturation and the add
        # (the L = 16 engine's seed 3 path at 2efd00b)
        if lean:
            # (ZFILL_TO saturated in dec_sat the cycle after done: zf_end is written then,
            # as the line below writes it from desc.zfill_to)
            with m.If(zt_dec):
                m.d.sync += self.zf_end.eq(sat_add(o_base, dec_sat, aw))
        else:
            m.d.sync += self.zf_end.eq(sat_add(o_base, desc.zfill_to, aw))
        # done (fw == DESC_WORDS + 1) is a register alone: it starts the address
        # generator, whose start fans out to every counter and address register, and ANDed
        # with `active` it was the L = 16 engine's seed 2 path at 2efd00b (from the
        # controller's FETCH flag). `active` falls between the register's setting and
        # done only by a soft reset (an abort comes from an error, and the only error
        # during a fetch, NO_LAST, is found at fw == 0); done then starts the address
        # generator in IDLE, whose reset (the engine's flush, the cycle after the soft
        # reset) wins, and the controller, no longer fetching, ignores it. The checks
        # below are still taken only while active.
        done_q = Signal()
        m.d.sync += done_q.eq(self.active & (fw == DESC_WORDS))
        m.d.comb += self.done.eq(done_q)

        assert DESCRIPTOR_WORDS[0][1] == "FLAGS"
        m.d.sync += self.elem_out.eq(flags.mode & ~flags.out_word)
        m.d.sync += [e.eq(flags.mode & ~flags.out_word) for e in eo_g]

        # ZFILL_TO < ZFILL_FROM, registered a cycle before the check: ZFILL_TO leaves DMEM
        # while ZFILL_FROM is in d_r (a comparator straight into the error priority was
        # the iCE40's critical path). Elaborated for the ECP5, from flip-flops at the check
        # instead (ZFILL_TO in d_r, ZFILL_FROM in zfill_from_word): a DP16KD's output takes
        # 5.83 ns, so the early compare was every seed's critical path there
        # (bench/results/synth_seeds.mult-dsp-regs.json). Same function, same cycles.
        assert DESCRIPTOR_WORDS[-2][1] == "ZFILL_FROM" and DESCRIPTOR_WORDS[-1][0] == DESC_WORDS - 1
        zf_order_bad = Signal()
        if not lean:
            m.d.comb += zf_order_bad.eq(d_r < zfill_from_word)
        else:
            # ZFILL_TO > ZFILL_FROM (zf_nonempty) from the same compare, and their
            # equality: one 32-bit carry chain, no copy of ZFILL_FROM's word
            zt_below = Signal()
            m.d.comb += zt_below.eq(self.dmem.data < d_r)
            with m.If(self.active & (fw == DESC_WORDS)):
                m.d.sync += [zf_order_bad.eq(zt_below),
                             self.zf_nonempty.eq(~zt_below & (self.dmem.data != d_r))]
        # step >= desc_depth: for a power-of-two depth the step's high bits, no carry chain
        step_over = Signal()
        if c.desc_depth & (c.desc_depth - 1) == 0:
            m.d.comb += step_over.eq(self.step[c.desc_depth.bit_length() - 1:].any())
        else:
            m.d.comb += step_over.eq(ge_const(self.step, c.desc_depth, lut_compares(platform)))

        fetch_end = done_q & self.active
        word_out = ~flags.mode | flags.out_word
        m.d.comb += self.errors.eq(Cat(
            self.active & (fw == 0) & step_over,                              # NO_LAST
            fetch_end & bound_zero,                                           # BOUND_ZERO
            fetch_end & dec.bad_sat,                                          # SAT_BITS
            fetch_end & ((flags.last_lanes == 0) | (ge_const(flags.last_lanes, g.L + 1)
                                                    if lut_compares(platform)
                                                    else flags.last_lanes > g.L)),  # LAST_LANES
            fetch_end & zf_order_bad,                                         # ZFILL_ORDER
            fetch_end & word_out & (desc.o_lane != 1),                        # MISALIGNED
        ))
        return m

