"""``ErrorUnit``: the first error, the abort of the inference and the pipeline flush."""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ttforge.hw.blocks import fanout_copies
from ttforge.hw.engine.signatures import ERROR_CODE_BITS, STEP_BITS
from ttforge.hw.regmap import ErrorCode

__all__ = ["ErrorUnit"]


class ErrorUnit(wiring.Component):
    """``conds[i]`` reports error ``codes[i]`` (in priority order: the first true one
    wins) during an inference; an error found in cycle ``t`` stops the inference in
    ``t + 2`` (``abort``): the conditions are registered as they arrive (with the step),
    so that the range compares and the checks of every unit end in flops of their own
    and no path runs from them through the priority choice into the abort code, the
    flush or the controller (the floorplanned four-engine array's three routed seeds
    all ended in this unit: an address's range compare -> ``abort_code`` / ``flush_g``);
    conditions in the cycle after one is registered are ignored (the abort that follows
    flushes them). In between nothing irreversible happens: writes out of range are
    suppressed or land in buffers whose contents the failed inference owns, and a write
    of a result issued in ``t`` or ``t + 1`` is still in the pipeline that the flush
    clears. The stream
    and program-register errors ``in_err``/``in_code`` of the controller are taken at
    once. ``error``, ``error_code``, ``error_step`` keep the first error until
    ``clear_error`` or ``soft_reset``; ``error_pulse`` is high in the cycle ``error``
    rises. ``flush`` (one register driving the large flush net) rises with ``abort`` or
    the cycle after a soft reset; ``flush_g`` is ``groups`` copies of it, one per lane
    group (:func:`~ttforge.hw.blocks.fanout_copies`)."""

    def __init__(self, codes: tuple[ErrorCode, ...], groups: int = 1):
        self.codes = tuple(ErrorCode(c) for c in codes)
        self.groups = int(groups)
        super().__init__({
            "conds": In(len(self.codes)),
            "in_err": In(1),
            "in_code": In(ERROR_CODE_BITS),
            "step": In(STEP_BITS),
            "clear_error": In(1),
            "soft_reset": In(1),
            "abort": Out(1),
            "flush": Out(1),
            "flush_g": Out(self.groups),
            "error": Out(1),
            "error_pulse": Out(1),
            "error_code": Out(ERROR_CODE_BITS),
            "error_step": Out(STEP_BITS),
        })

    def _first_of(self, conds):
        """The code of the first true one of ``conds``, as a balanced tree (short paths)."""
        nodes = [(conds[i], Const(int(cd), ERROR_CODE_BITS)) for i, cd in enumerate(self.codes)]
        while len(nodes) > 1:
            nxt = []
            for k in range(0, len(nodes) - 1, 2):
                (ca, ka), (cb, kb) = nodes[k], nodes[k + 1]
                nxt.append((ca | cb, Mux(ca, ka, kb)))
            if len(nodes) % 2:
                nxt.append(nodes[-1])
            nodes = nxt
        return nodes[0][1]

    def elaborate(self, platform):
        m = Module()
        # the conditions and the step as they arrive, none while an error is on its way
        conds_q = Signal(len(self.codes), name="conds_q")
        step_q = Signal(STEP_BITS, name="step_q")
        err_now = Signal()
        m.d.comb += err_now.eq(conds_q.any())
        m.d.sync += [conds_q.eq(Mux(err_now | self.abort | self.soft_reset, 0, self.conds)),
                     step_q.eq(self.step)]
        abort_code = Signal(ERROR_CODE_BITS)
        abort_step = Signal(STEP_BITS)
        m.d.sync += [self.abort.eq(err_now & ~self.abort & ~self.soft_reset),
                     abort_code.eq(self._first_of(conds_q)), abort_step.eq(step_q)]
        with m.If((self.abort | self.in_err) & ~self.error):
            m.d.sync += [self.error.eq(1),
                         self.error_code.eq(Mux(self.abort, abort_code, self.in_code)),
                         self.error_step.eq(Mux(self.abort, abort_step, 0))]
        with m.If(self.clear_error | self.soft_reset):
            m.d.sync += [self.error.eq(0), self.error_code.eq(0), self.error_step.eq(0)]
        error_q = Signal()
        m.d.sync += error_q.eq(self.error)
        m.d.comb += self.error_pulse.eq(self.error & ~error_q)
        flush_next = (err_now & ~self.abort & ~self.soft_reset) | self.soft_reset
        m.d.sync += self.flush.eq(flush_next)
        copies = fanout_copies(1, self.groups, "flush") if self.groups > 1 else [self.flush]
        if self.groups > 1:
            m.d.sync += [f.eq(flush_next) for f in copies]
        m.d.comb += [self.flush_g[k].eq(f) for k, f in enumerate(copies)]
        return m
