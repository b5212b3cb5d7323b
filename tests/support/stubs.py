"""A stand-in engine with TTEngine's port groups, for tests of the top level that must
not depend on the engine's datapath (emission, lint, binding, AXI paths)."""

from __future__ import annotations

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import wiring

from ttforge.hw.engine.signatures import (COUNTER_NAMES, engine_signature)

COUNTERS = COUNTER_NAMES


class StubEngine(wiring.Component):
    """Echoes each input element plus ``bias`` (the CMEM word written last) to the output;
    counts cycles and vectors; raises ``error`` when an element arrives while ``enable``
    is low (code 9), cleared by ``clear_error``. Its input is always open (``in_open``),
    so that the top's error paths can be driven."""

    def __init__(self, cfg):
        self.cfg = cfg
        super().__init__(engine_signature(cfg))

    def elaborate(self, platform):
        m = Module()
        ld, pg, ct, st, cn = self.load, self.program, self.control, self.status, self.counters
        bias = Signal(signed(self.cfg.core_bits))
        with m.If(ld.cmem.we):
            m.d.sync += bias.eq(ld.cmem.data)
        m.d.comb += [
            self.out.valid.eq(self.inp.valid & ct.enable & ~st.error),
            self.out.p.data.eq(self.inp.p.data + bias),
            self.out.p.last.eq(self.inp.p.last & ct.enable),
            self.inp.ready.eq(self.out.ready | ~ct.enable),
            st.in_open.eq(1),
        ]
        with m.If(self.inp.valid & self.inp.ready & ~ct.enable):
            m.d.sync += [st.error.eq(1), st.error_code.eq(9), st.error_step.eq(3)]
        with m.If(ct.clear_error | ct.soft_reset):
            m.d.sync += [st.error.eq(0), st.error_code.eq(0)]
        err_q = Signal()
        m.d.sync += err_q.eq(st.error)
        m.d.comb += st.error_pulse.eq(st.error & ~err_q)
        took = self.out.valid & self.out.ready
        with m.If(took):
            m.d.sync += st.busy.eq(~self.inp.p.last)
        m.d.sync += st.done_pulse.eq(took & self.inp.p.last)
        with m.If(st.done_pulse):
            m.d.sync += st.done.eq(1)
        with m.Elif(took | ct.soft_reset):
            m.d.sync += st.done.eq(0)
        # every counter is a function of the inputs, so none is optimised away
        m.d.sync += cn.cycles.eq(cn.cycles + 1)
        with m.If(took & self.inp.p.last):
            m.d.sync += cn.vectors.eq(cn.vectors + 1)
        extra = (ld.dmem.data ^ ld.dmem.addr ^ ld.bmem.data ^ ld.bmem.addr
                 ^ ld.cmem.addr ^ pg.in_count ^ pg.in_pad ^ pg.out_count ^ pg.out_buf)
        m.d.sync += [cn.busy_lane_cycles.eq(cn.busy_lane_cycles + extra),
                     cn.in_stall.eq(cn.in_stall + (ld.dmem.we | ld.bmem.we))]
        with m.If(ct.clear_counters):
            for c in COUNTERS:
                m.d.sync += getattr(cn, c).eq(0)
        return m
