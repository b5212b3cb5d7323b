"""``PerfCounters``: the engine's performance counters."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ttforge.hw.engine.geometry import Geometry
from ttforge.hw.engine.signatures import CounterSignature
from ttforge.hw.config import COUNTER_BITS

__all__ = ["PerfCounters"]


class PerfCounters(wiring.Component):
    """The counters of ``docs/hardware.md`` ("Counters"), ``counter_bits`` wide (the
    ports are ``COUNTER_BITS`` wide, zero above), cleared by ``clear``: ``cycles``
    (cycles with ``busy``), ``busy_lane_cycles`` (``lanes_issued`` while ``running``),
    ``in_stall``, ``out_stall`` (the events), ``sat_events`` (``sat_count`` of the
    results written while ``running``), ``vectors`` (``done`` pulses). The multi-bit
    increments are registered first (short paths into the wide adds); they reach the
    counters one cycle later.

    Elaborated for the iCE40, the first :func:`~ttforge.hw.ice40_dsp.dsp_counters`
    counters (in the order above) are ``SB_MAC16`` accumulators
    (:class:`~ttforge.hw.ice40_dsp.Ice40Accumulator`) instead of fabric: the same values
    in the same cycles, a logic cell per bit fewer each (the MNIST network on the
    iCEBreaker is bound by its logic cells)."""

    #: the counters, in the order they take ``SB_MAC16`` blocks
    NAMES = ("cycles", "busy_lane_cycles", "in_stall", "out_stall", "sat_events", "vectors")

    def __init__(self, geom: Geometry):
        self.geom = g = geom
        self.units = g.units
        super().__init__({
            "clear": In(1),
            "busy": In(1),
            "running": In(1),
            "lanes_issued": In(g.nvw),
            "result_written": In(1),
            "sat_count": In(range(self.units + 1)),
            "in_stall": In(1),
            "out_stall": In(1),
            "done": In(1),
            "counters": Out(CounterSignature()),
        })

    def elaborate(self, platform):
        from ttforge.hw.ice40_dsp import Ice40Accumulator, dsp_counters

        m = Module()
        KB = self.geom.config.counter_bits
        in_dsp = set(self.NAMES[:dsp_counters(self.geom.config, platform, len(self.NAMES))])

        def counter(name, inc):
            port = getattr(self.counters, name)
            if KB >= COUNTER_BITS:
                sig = port
            else:
                sig = Signal(KB, name=f"{name}_count")
                m.d.comb += port.eq(sig)
            if name in in_dsp:      # (KB <= 32 here: the accumulator's low bits)
                m.submodules[f"{name}_dsp"] = acc = Ice40Accumulator(len(inc))
                m.d.comb += [acc.inc.eq(inc), acc.clear.eq(self.clear), sig.eq(acc.q[:KB])]
                return
            with m.If(self.clear):
                m.d.sync += sig.eq(0)
            with m.Else():
                m.d.sync += sig.eq(sig + inc)

        blc_r = Signal(self.geom.nvw)
        sat_r = Signal(range(self.units + 1))
        m.d.sync += [blc_r.eq(Mux(self.running, self.lanes_issued, 0)),
                     sat_r.eq(Mux(self.running & self.result_written, self.sat_count, 0))]
        with m.If(self.clear):
            m.d.sync += [blc_r.eq(0), sat_r.eq(0)]
        inc = {"cycles": self.busy, "busy_lane_cycles": blc_r, "in_stall": self.in_stall,
               "out_stall": self.out_stall, "sat_events": sat_r, "vectors": self.done}
        for name in self.NAMES:
            counter(name, inc[name])
        return m
