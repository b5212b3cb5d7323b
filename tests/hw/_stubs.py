"""A stand-in engine with TTEngine's ports, for tests of the top level that must not
depend on the engine's datapath (emission, lint, binding, AXI paths)."""

from __future__ import annotations

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ttforge.hw.axis import element_layout

COUNTERS = ("cycles", "busy_lane_cycles", "in_stall", "out_stall", "sat_events", "vectors")


class StubEngine(wiring.Component):
    """Echoes each input element plus ``bias`` (the CMEM word written last) to the output;
    counts cycles and vectors; raises ``error`` when an element arrives while ``enable``
    is low (code 9), cleared by ``clear_error``."""

    def __init__(self, cfg):
        self.cfg = cfg
        cb = max(1, int(cfg.buf_depth).bit_length())
        members = {
            "inp": In(stream.Signature(element_layout(cfg.act_bits))),
            "out": Out(stream.Signature(element_layout(cfg.act_bits))),
            "cmem_addr": In(max(1, (cfg.core_depth - 1).bit_length())),
            "cmem_data": In(cfg.core_bits), "cmem_we": In(1),
            "bmem_addr": In(max(1, (cfg.bias_depth - 1).bit_length())),
            "bmem_data": In(cfg.bias_bits), "bmem_we": In(1),
            "dmem_addr": In(max(1, (cfg.desc_depth * 24 - 1).bit_length())),
            "dmem_data": In(32), "dmem_we": In(1),
            "in_count": In(cb), "in_pad": In(cb), "out_count": In(cb), "out_buf": In(1),
            "enable": In(1), "clear_error": In(1), "clear_counters": In(1), "soft_reset": In(1),
            "busy": Out(1), "done": Out(1), "error": Out(1), "error_code": Out(4),
            "error_step": Out(16),
        }
        for c in COUNTERS:
            members[c] = Out(48)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        bias = Signal(signed(self.cfg.core_bits))
        with m.If(self.cmem_we):
            m.d.sync += bias.eq(self.cmem_data)
        m.d.comb += [
            self.out.valid.eq(self.inp.valid & self.enable & ~self.error),
            self.out.p.data.eq(self.inp.p.data + bias),
            self.out.p.last.eq(self.inp.p.last & self.enable),
            self.inp.ready.eq(self.out.ready | ~self.enable),
        ]
        with m.If(self.inp.valid & self.inp.ready & ~self.enable):
            m.d.sync += [self.error.eq(1), self.error_code.eq(9), self.error_step.eq(3)]
        with m.If(self.clear_error | self.soft_reset):
            m.d.sync += [self.error.eq(0), self.error_code.eq(0)]
        took = self.out.valid & self.out.ready
        with m.If(took):
            m.d.sync += self.busy.eq(~self.inp.p.last)
        m.d.sync += self.done.eq(took & self.inp.p.last)
        # every counter is a function of the inputs, so none is optimised away
        m.d.sync += self.cycles.eq(self.cycles + 1)
        with m.If(took & self.inp.p.last):
            m.d.sync += self.vectors.eq(self.vectors + 1)
        extra = (self.dmem_data ^ self.dmem_addr ^ self.bmem_data ^ self.bmem_addr
                 ^ self.cmem_addr ^ self.in_count ^ self.in_pad ^ self.out_count ^ self.out_buf)
        m.d.sync += [self.busy_lane_cycles.eq(self.busy_lane_cycles + extra),
                     self.in_stall.eq(self.in_stall + (self.dmem_we | self.bmem_we))]
        with m.If(self.clear_counters):
            for c in COUNTERS:
                m.d.sync += getattr(self, c).eq(0)
        return m
