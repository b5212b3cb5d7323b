"""``IssueUnit``: the address generator, the operand pipeline and the MAC lanes."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, ResetInserter, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.memory import ReadPort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ttforge.hw.blocks import (AddressGen, MacLanes, decode_onehot, ge_const, lut_compares,
                               onehot_select, saturate_value)
from ttforge.hw.engine.geometry import Geometry
from ttforge.hw.engine.signatures import BOUND_WORDS, descriptor_layout
from ttforge.hw.regmap import ErrorCode

__all__ = ["IssueUnit", "result_tag_layout", "tag_has_bias", "bias_address"]


def tag_has_bias(geom: Geometry) -> bool:
    """Whether the result tag carries the bias address ``b``: not with one lane and
    serial requantization (the iCE40UP5K's MNIST engine), whose one bias read per result
    is at ``b = o + (B_BASE - O_BASE)`` of the result's own ``e``, so the writer adds the
    offset itself (:func:`bias_address`) instead of ``b`` travelling through five
    pipeline registers (80 flip-flops, each a logic cell there)."""
    return not (geom.serial and geom.L == 1)


def result_tag_layout(geom: Geometry) -> data.StructLayout:
    """What travels with an iteration through the MAC lanes: its output element address
    ``e``, bias address ``b`` (if :func:`tag_has_bias`), valid lanes ``nv`` and (word
    outputs) the lanes whose output index is padding, ``zmask``."""
    return data.StructLayout({"e": geom.awp, **({"b": geom.awp} if tag_has_bias(geom) else {}),
                              "nv": geom.nvw, **({} if geom.serial else {"zmask": geom.L})})


def bias_address(m: Module, o, b_off, aw: int, name: str = "b", sum_name: str | None = None,
                 signal: bool = True):
    """The bias element address of output element ``o``: ``o + b_off`` (``b_off =
    B_BASE - O_BASE``), 0 below 0, saturating at ``2**aw`` (``aw + 1`` bits); a signal
    ``name``, or with ``signal=False`` the expression (for a user that reads only some
    of its bits: no named wire with unread bits)."""
    b_sum = Signal(signed(aw + 3), name=sum_name or f"{name}_sum")
    m.d.comb += b_sum.eq(o + b_off)
    value = Mux(b_sum < 0, 0, saturate_value(b_sum[:aw + 2], aw))
    if not signal:
        return value
    b_ptr = Signal(aw + 1, name=name)
    m.d.comb += b_ptr.eq(value)
    return b_ptr


class IssueUnit(wiring.Component):
    """One loop iteration per cycle while ``running``: the address generator
    (:class:`~ttforge.hw.blocks.AddressGen`, started by ``start``) addresses the source
    buffer (``x_addr``; the engine reads it and returns the word in ``x_word``) and CMEM
    (``cmem``); the words are registered, the broadcast operand is selected (mode 1:
    lane ``x mod L`` of the x word; mode 0: lane ``c mod L`` of the core word) into
    :class:`~ttforge.hw.blocks.MacLanes`, whose results (``res``, ``res_valid``,
    ``res_tag``; one cycle ahead ``pre_valid``/``pre_tag``) go to the result writer.

    Element outputs (``elem_out``): the serial writer needs ``v_b`` cycles for block
    ``b``, so the last iteration of block ``b+1`` is held until ``v_b`` cycles after
    block ``b``'s; only the address generator ever waits. Word outputs through fewer
    requantization units than lanes wait the same way, ``v_b = Geometry.drain``. ``lanes_issued`` is the valid
    lanes of the iteration issued this cycle (0 if none); ``busy`` is high while an
    iteration is in flight; ``errors`` are the address checks at issue and, one stage
    later, of the bias word, in the order of :attr:`ERRORS`. ``flush`` empties the
    pipeline. ``mode_g``: ``FLAGS.MODE`` again, one copy per lane group (the operand
    selects of that group's lanes)."""

    ERRORS = (ErrorCode.BUF_RANGE, ErrorCode.MISALIGNED, ErrorCode.CMEM_RANGE,
              ErrorCode.MISALIGNED, ErrorCode.BUF_RANGE, ErrorCode.MISALIGNED,
              ErrorCode.BMEM_RANGE, ErrorCode.MISALIGNED)

    def __init__(self, geom: Geometry, *, fault: str | None = None):
        self.geom = g = geom
        c = g.config
        self.fault = fault
        self.tag_layout = result_tag_layout(g)
        super().__init__({
            "start": In(1),
            "running": In(1),
            "flush": In(1),
            "elem_out": In(1),
            "desc": In(descriptor_layout(g.aw, g.cw)),
            "mode_g": In(g.groups),
            "ov_end": In(g.awp),
            "b_off": In(signed(g.awp + 1)),
            "x_addr": Out(g.awp),
            "x_word": In(data.ArrayLayout(signed(c.inter_bits), g.L)),
            "cmem": In(ReadPort.Signature(addr_width=ceil_log2(c.core_depth // g.L),
                                          shape=data.ArrayLayout(signed(c.core_bits), g.L))),
            "lanes_issued": Out(g.nvw),
            "busy": Out(1),
            "pre_valid": Out(1),
            "pre_tag": Out(self.tag_layout),
            "res_valid": Out(1),
            "res_tag": Out(self.tag_layout),
            "res": Out(data.ArrayLayout(signed(c.acc_bits), g.L)),
            "errors": Out(len(self.ERRORS)),
        })

    def elaborate(self, platform):
        m = Module()
        g, c = self.geom, self.geom.config
        L, lg, aw, AWP, nvw = g.L, g.lg, g.aw, g.awp, g.nvw
        IB, CB, AB = c.inter_bits, c.core_bits, c.acc_bits
        desc, flags = self.desc, self.desc.flags
        mode = flags.mode
        word_out = ~mode | flags.out_word
        tag_layout = self.tag_layout
        flush = self.flush
        running = self.running

        gen = AddressGen(bound_width=g.cw, addr_width=aw,
                         streams=(("x", 4), ("c", 4), ("o", 3)), slab=(),
                         fault=self.fault if self.fault == "wrong_stride" else None)
        m.submodules.gen = ResetInserter({"sync": flush})(gen)
        m.d.comb += [gen.start.eq(self.start), gen.x_base.eq(desc.x_base),
                     gen.c_base.eq(desc.c_base), gen.o_base.eq(desc.o_base)]
        for j, n in enumerate(BOUND_WORDS):
            m.d.comb += gen.bound_m1[j].eq(desc[n.lower()])
        for j in range(4):
            m.d.comb += [gen.x_stride[j].eq(desc[f"x_s{j}"]), gen.c_stride[j].eq(desc[f"c_s{j}"])]
        for j in range(3):
            m.d.comb += gen.o_stride[j].eq(desc[f"o_s{j}"])

        # (data flops without reset: the flush and reset nets drive only the valid bits)
        mac = MacLanes(lanes=L, x_bits=IB, c_bits=CB, acc_bits=AB, tag_width=tag_layout.size,
                       reset_less_data=True, groups=g.groups)
        m.submodules.mac = ResetInserter({"sync": flush})(mac)
        stall = Signal()          # the address generator holds (only it ever waits)
        g_valid = Signal()
        adv = Signal()
        m.d.comb += [g_valid.eq(running & gen.valid), adv.eq(g_valid & ~stall),
                     gen.en.eq(running & ~stall)]
        x_ptr, c_ptr, o_ptr = gen.x_addr, gen.c_addr, gen.o_addr
        m.d.comb += self.x_addr.eq(x_ptr)
        # the bias address B_BASE + (o - O_BASE) = o + (B_BASE - O_BASE), saturating
        # (without tag_has_bias: of the output address at stage 1, for its check there;
        # b_off is held through the step)
        with_b = tag_has_bias(g)
        if with_b:
            b_ptr = bias_address(m, o_ptr, self.b_off, aw, "b_ptr", "b_sum")
        # lanes valid in this iteration: LAST_LANES in the last p block of mode 1
        g_nv = Signal(nvw)
        m.d.comb += g_nv.eq(Mux(mode & gen.i2_last, flags.last_lanes[:nvw], L))
        m.d.comb += self.lanes_issued.eq(Mux(adv, g_nv, 0))

        # stage 1: memory reads in flight; stage 2: the words registered (no logic after
        # a block RAM output), then the broadcast operand is selected into MacLanes
        ZL = 1 if g.serial else L
        s1_v, s1_first, s1_last = Signal(name="s1_v"), Signal(name="s1_first"), Signal(name="s1_last")
        s1_xlane = Signal(g.lane_bits)
        s1_clane = Signal(g.lane_bits)
        s1_tag = Signal(tag_layout)
        # o + l >= OV_END  <=>  rel = OV_END - o <= l: one subtraction, then each lane
        # compares rel's few low bits with its constant (no adder per lane)
        g_rel = Signal(signed(AWP + 1))
        m.d.comb += g_rel.eq(self.ov_end - o_ptr)

        def padding(rel):
            """The lanes whose output index is padding, from ``rel = OV_END - o``."""
            small = ~rel[lg:].any()          # 0 <= rel < L
            if ZL == 1:
                return rel[-1] | (small & (rel[:lg] == 0 if lg else 1))
            return Cat(*[rel[-1] | (small & (rel[:lg] <= l)) for l in range(L)])

        # With a read register the tag waits a cycle anyway: rel is registered at stage 1
        # and the mask made from it on the way into that register, so no path runs from
        # the address generator through the subtraction and the compares into a flop
        # (gen.o_addr -> s1_tag.zmask, 7 levels, was the ULX3S board top's routed seed 2
        # path at 2a13b22 and the four-engine harness' seed 1 path at 53fe0fd)
        late_mask = c.read_registers >= 1 and not g.serial
        s1_ovalid = Signal()                 # lane 0's output index is not padding
        if late_mask:
            s1_rel = Signal(signed(AWP + 1), reset_less=True)
            m.d.sync += s1_rel.eq(g_rel)
            m.d.comb += s1_ovalid.eq(~padding(s1_rel)[0])
        else:
            m.d.sync += s1_ovalid.eq(~padding(g_rel)[0])      # o < OV_END
        s2_v, s2_first, s2_last = Signal(name="s2_v"), Signal(name="s2_first"), Signal(name="s2_last")
        s2_xoh = Signal(L)                   # the broadcast lanes, one-hot (AND-OR select)
        s2_coh = Signal(L)
        s2_tag = Signal(tag_layout)
        s2_x = Signal(data.ArrayLayout(signed(IB), L))
        s2_c = Signal(data.ArrayLayout(signed(CB), L))
        m.d.sync += [s1_v.eq(adv), s1_first.eq(gen.first), s1_last.eq(gen.last),
                     s1_xlane.eq(g.lane_of(x_ptr)), s1_clane.eq(g.lane_of(c_ptr)),
                     s1_tag.e.eq(o_ptr), *([s1_tag.b.eq(b_ptr)] if with_b else []),
                     s1_tag.nv.eq(g_nv)]
        s1_b = s1_tag.b if with_b else bias_address(m, s1_tag.e, self.b_off, aw, "s1_b",
                                                    signal=False)
        if not g.serial and not late_mask:
            m.d.sync += s1_tag.zmask.eq(padding(g_rel))
        # AccelConfig.read_registers: the words come a cycle later (the engine's buffers
        # and CMEM register each block RAM's read data, hw/engine/banks.py), so the
        # control goes through a stage of its own and the words pass as they are
        r_v, r_first, r_last = s1_v, s1_first, s1_last
        r_xlane, r_clane, r_tag = s1_xlane, s1_clane, s1_tag
        r_x, r_c = self.x_word, self.cmem.data
        valids = [s1_v, s2_v]
        for k in range(c.read_registers):
            q_v, q_first, q_last = Signal(name=f"r{k}_v"), Signal(name=f"r{k}_first"), Signal(name=f"r{k}_last")
            q_xlane = Signal(g.lane_bits, name=f"r{k}_xlane")
            q_clane = Signal(g.lane_bits, name=f"r{k}_clane")
            q_tag = Signal(tag_layout, name=f"r{k}_tag", reset_less=True)
            m.d.sync += [q_v.eq(r_v), q_first.eq(r_first), q_last.eq(r_last),
                         q_xlane.eq(r_xlane), q_clane.eq(r_clane), q_tag.eq(r_tag)]
            if late_mask and k == 0:
                m.d.sync += q_tag.zmask.eq(padding(s1_rel))
            r_v, r_first, r_last, r_xlane, r_clane, r_tag = (
                q_v, q_first, q_last, q_xlane, q_clane, q_tag)
            valids.append(q_v)
        m.d.sync += [s2_v.eq(r_v), s2_first.eq(r_first), s2_last.eq(r_last),
                     s2_tag.eq(r_tag), s2_c.eq(r_c), s2_x.eq(r_x)]
        if c.read_registers <= 1:     # (at 2 the operands are selected before stage 2)
            m.d.sync += [s2_xoh.eq(decode_onehot(r_xlane, L)), s2_coh.eq(decode_onehot(r_clane, L))]
        with m.If(flush):
            m.d.sync += [v.eq(0) for v in valids]

        # checks at issue (G stage), and of the bias word one stage later (b is the sum
        # of o and an offset)
        s1_bias = s1_v & word_out & flags.bias & s1_ovalid
        lut = lut_compares(platform)          # (the range checks as logic, hw/blocks.py)
        m.d.comb += self.errors.eq(Cat(
            g_valid & ge_const(x_ptr, c.buf_depth, lut),          # BUF_RANGE
            g_valid & ~mode & g.misaligned(x_ptr),               # MISALIGNED
            g_valid & ge_const(c_ptr, c.core_depth, lut),         # CMEM_RANGE
            g_valid & mode & g.misaligned(c_ptr),                # MISALIGNED
            g_valid & word_out & ge_const(o_ptr, c.buf_depth, lut),   # BUF_RANGE
            g_valid & word_out & g.misaligned(o_ptr),            # MISALIGNED
            running & s1_bias & ge_const(s1_b, c.bias_depth, lut),   # BMEM_RANGE
            running & s1_bias & g.misaligned(s1_b),              # MISALIGNED
        ))

        # operand selection from the registered words
        m.d.comb += [self.cmem.addr.eq(g.word_of(c_ptr, c.core_depth)), self.cmem.en.eq(1)]
        xsel = Signal(signed(IB))
        csel = Signal(signed(CB))
        if L == 1:
            m.d.comb += [xsel.eq(s2_x[0]), csel.eq(s2_c[0])]
        elif c.read_registers > 1:
            # the words arrive from a register (the banks' select register), so the
            # broadcast operands are selected on their way into stage 2 and registered:
            # only the mode's mux lies before the multipliers (the 16-way select of
            # s2_x by s2_xoh into a DSP's input was a floorplanned four-engine array's
            # critical path, bench/results/synth_seeds.mnist-l16-e4-floorplan-errq.json)
            m.d.sync += [xsel.eq(r_x[r_xlane]), csel.eq(r_c[r_clane])]
        else:
            m.d.comb += [xsel.eq(onehot_select([s2_x[l] for l in range(L)], s2_xoh)),
                         csel.eq(onehot_select([s2_c[l] for l in range(L)], s2_coh))]
        # (each lane group's selects from its own copy of FLAGS.MODE, mode_g)
        for l in range(L):
            mode_l = self.mode_g[g.group(l)]
            m.d.comb += [
                mac.x[l].eq(Mux(mode_l, xsel, s2_x[l])),
                mac.c[l].eq(Mux(mode_l, s2_c[l], csel)),
            ]
        m.d.comb += [mac.en.eq(1), mac.in_valid.eq(s2_v), mac.in_first.eq(s2_first),
                     mac.in_last.eq(s2_last), mac.in_tag.eq(s2_tag.as_value()),
                     self.pre_valid.eq(mac.pre_valid), self.pre_tag.eq(mac.pre_tag),
                     self.res_valid.eq(mac.res_valid), self.res_tag.eq(mac.res_tag),
                     self.res.eq(mac.res)]

        # Element outputs: the writer needs v_b cycles for block b, so the last iteration
        # of block b+1 may enter the pipeline no earlier than v_b cycles after block b's
        # (it then reaches the accumulators just as the writer takes b's last lane). The
        # address generator holds instead of the pipeline: nothing after it ever stalls.
        # (hold_nz is only ever set in an element-output step and cleared at its start,
        # so the stall needs no elem_out: two registers, one LUT before gen.en)
        hold = Signal(nvw)
        hold_nz = Signal()                    # hold != 0, as a register
        m.d.comb += stall.eq(gen.last & hold_nz)
        with m.If(adv & self.elem_out & gen.last):
            m.d.sync += [hold.eq(g_nv - 1), hold_nz.eq(g_nv > 1)]
        if g.drain > 1:
            # fewer requantization units than lanes: a word result drains through them in
            # `drain` cycles from the result register, like `drain` element outputs
            with m.Elif(adv & gen.last):
                m.d.sync += [hold.eq(g.drain - 1), hold_nz.eq(1)]
        with m.Elif(hold_nz):
            m.d.sync += [hold.eq(hold - 1), hold_nz.eq(hold != 1)]
        with m.If(gen.start):
            m.d.sync += [hold.eq(0), hold_nz.eq(0)]

        m.d.comb += self.busy.eq(gen.valid | Cat(*valids).any() | mac.busy)
        #: internal signals for tests and debugging (not ports)
        self.debug = {"stall": stall}
        return m
