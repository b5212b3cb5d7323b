"""``EngineArray``: ``AccelConfig.engines`` engines behind one engine's ports.

Every engine holds the same network (the load ports, the program registers and the
control are broadcast to all of them), and the vectors take turns: vector ``k`` of the
input stream goes to engine ``k mod E`` and its output leaves the output stream in
the ``k``-th place, so the host sees one engine that takes ``E`` vectors at a time
(``E`` times the vectors per second, one vector's latency unchanged) and needs no
change at all. The array has :func:`~ttforge.hw.engine.signatures.engine_signature`'s
ports, so :class:`~ttforge.hw.top.TTAccel` puts it where the engine goes.

* Input: elements go to engine ``sel_in``; after an element with ``last`` is taken,
  the next engine. A vector ends at its ``last`` in every case (an engine that
  refused a vector's rest after a stream error discards it up to its ``last``), so
  the turns follow the engines' own vector boundaries.
* Output: elements come from engine ``sel_out`` until one with ``last``, then the next
  engine. An engine whose vector ended with an error has no output for it: the error
  (its ``error_pulse``) leaves a token, and the output side skips that engine's turn by
  taking the token. Each engine holds at most one vector (``throughput = 0``): it
  takes its next vector only after the previous one's output is taken or its error
  raised, so a token always stands for the turn the output side waits for.
* Status, at the array's ports (as one engine's at its own; an element in a FIFO
  beside an engine is in flight though the engine may be idle): ``busy`` is any
  engine's or any FIFO holding an element; ``done_pulse`` the cycle after the output
  port took a vector's last element; ``done`` set by it, cleared when a vector's first
  element is taken, by a soft reset or an error, read only while not ``busy``; ``error``,
  ``error_pulse`` any engine's; ``error_code``/``error_step`` the lowest-numbered
  engine in error; ``in_open`` that of ``sel_in``, low while another engine is in error
  (an error is seen after the FIFO beside its engine: a few elements of a vector
  streamed right behind the failing one still go in, docs/hardware.md).
* Distance: the engines lie apart on the chip, so nothing crosses between them in one
  cycle through logic. The loads, the program and the control reach every engine
  through a register of its own, a cycle after the ports (the engines' status follows
  a cycle later than one engine's would; no beat moves in the cycle a soft reset is on
  its way), and each engine's input and output streams pass a FIFO of three elements
  beside it (flops on the array's side; the soft reset empties them). An engine's
  next vector waits in its input FIFO, so the turns run at the engines' own rate.
* Counters: the sums over the engines (``CYCLES`` counts engine-cycles, so
  ``BUSY_LANE_CYCLES / (CYCLES * L)`` is still the lanes' utilization), kept by the
  array from the engines' increments: they read two cycles late. ``VECTORS`` counts the
  array's ``done_pulse``; a cycle in which an idle engine's finished output waits in its
  FIFO, ready and not taken (port not ready, or not its turn), is one of that engine's
  ``CYCLES`` and ``OUT_STALL``, so ``CYCLES = B x total + IN_STALL + OUT_STALL`` holds.
"""

from __future__ import annotations

import dataclasses

from amaranth.hdl import Cat, Module, Mux, ResetInserter, Signal
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFOBuffered

from ttforge.errors import ConfigError
from ttforge.hw.blocks import FANOUT_ATTR
from ttforge.hw.config import AccelConfig
from ttforge.hw.engine.signatures import COUNTER_NAMES, engine_signature

__all__ = ["EngineArray"]


def _sum_tree(values):
    """The sum of ``values`` as a balanced tree of adders (no long chain of them)."""
    values = list(values)
    while len(values) > 1:
        values = [values[i] + values[i + 1] if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
    return values[0]


class EngineArray(wiring.Component):
    """``config.engines`` :class:`~ttforge.hw.engine.TTEngine` s taking vectors in turn
    (see the module docstring); the ports of one engine."""

    def __init__(self, config: AccelConfig, *, fault: str | None = None):
        if not isinstance(config, AccelConfig):
            raise ConfigError(f"EngineArray needs an AccelConfig, got {type(config).__name__}")
        self.config = config
        #: a deliberate engine fault (tests that must fail), in the last engine only: the
        #: vectors of its turns go wrong, the others stay right
        self.fault = fault
        super().__init__(engine_signature(config))

    def _make_engines(self):
        from ttforge.hw.engine import TTEngine
        one = dataclasses.replace(self.config, engines=1)
        E = self.config.engines
        return [TTEngine(one, fault=self.fault if j == E - 1 else None) for j in range(E)]

    def elaborate(self, platform):
        m = Module()
        engines = self._make_engines()
        E = len(engines)
        for j, e in enumerate(engines):
            m.submodules[f"engine{j}"] = e
            # the same network in every engine: loads, program and control broadcast,
            # through a register in each engine so that no net ties the engines
            # together and the placer may spread them (one cycle later, for all alike).
            # The registers are kept (FANOUT_ATTR): Yosys would merge the E copies of
            # the same value into one, and the soft reset would again reach every
            # engine's flip-flops as one net. Only the control needs a reset.
            for group in ("load", "program", "control"):
                for path, _, value in e.signature.members[group].signature.flatten(
                        getattr(e, group)):
                    src = getattr(self, group)
                    for p in path:
                        src = src[p] if isinstance(p, int) else getattr(src, p)
                    name = "_".join(str(p) for p in (group, *path))
                    copy = Signal.like(value, name=f"{name}_e{j}", attrs={FANOUT_ATTR: 1},
                                       reset_less=group != "control")
                    m.d.sync += copy.eq(src)
                    m.d.comb += value.eq(copy)
        # the array's own turns restart with the engines, on the delayed soft reset
        soft_reset = Signal()
        m.d.sync += soft_reset.eq(self.control.soft_reset)

        # every stream crosses the chip through a small FIFO beside its engine (flops
        # only on the array's side: no path runs from one engine's handshake through
        # the turns into another engine); the soft reset empties them
        elem_bits = len(self.inp.payload.as_value())

        def beside(name):
            fifo = ResetInserter(soft_reset)(SyncFIFOBuffered(width=elem_bits, depth=3))
            m.submodules[name] = fifo
            return fifo

        fifo_in = [beside(f"in_fifo{j}") for j in range(E)]
        fifo_out = [beside(f"out_fifo{j}") for j in range(E)]

        # ---------------------------------------------------------------- input turns
        sel_in = Signal(range(E))
        in_mid = Signal()                 # a vector's first element taken, not its last
        for j, (e, f) in enumerate(zip(engines, fifo_in)):
            m.d.comb += [f.w_data.eq(self.inp.payload.as_value()),
                         f.w_en.eq(self.inp.valid & ~soft_reset & (sel_in == j)),
                         e.inp.payload.eq(f.r_data), e.inp.valid.eq(f.r_rdy),
                         f.r_en.eq(e.inp.ready)]
        ready = Signal()
        open_sel, err_sel = Signal(name="open_sel"), Signal(name="err_sel")    # sel_in's in_open and error
        m.d.comb += [ready.eq(Mux(sel_in == 0, fifo_in[0].w_rdy, 0)),
                     open_sel.eq(engines[0].status.in_open & (sel_in == 0)),
                     err_sel.eq(engines[0].status.error & (sel_in == 0))]
        for j, e in enumerate(engines[1:], 1):
            with m.If(sel_in == j):
                m.d.comb += [ready.eq(fifo_in[j].w_rdy), open_sel.eq(e.status.in_open),
                             err_sel.eq(e.status.error)]
        # while any engine is in error the array takes no vector, as one engine takes none
        # (the next engine's turn took and ran one beside STATUS.ERROR); the engine in
        # error itself still takes the rest of a vector it discards (its own in_open)
        any_error = Signal()
        m.d.comb += [any_error.eq(Cat(*(e.status.error for e in engines)).any()),
                     self.status.in_open.eq(open_sel & (~any_error | err_sel))]
        # no beat goes in or out while the engines' soft reset is on its way to them
        m.d.comb += self.inp.ready.eq(ready & ~soft_reset)
        took_in = Signal()
        m.d.comb += took_in.eq(self.inp.valid & self.inp.ready)
        with m.If(took_in):
            m.d.sync += in_mid.eq(~self.inp.payload.last)
            with m.If(self.inp.payload.last):
                m.d.sync += sel_in.eq(Mux(sel_in == E - 1, 0, sel_in + 1))

        # ---------------------------------------------------------------- output turns
        sel_out = Signal(range(E))
        # an engine's vector that ended in an error: a token, taken in its output turn
        token = [Signal(name=f"token{j}") for j in range(E)]
        taken = Signal()                  # the turn of sel_out's token
        out_valid = Signal()
        for j, (e, f) in enumerate(zip(engines, fifo_out)):
            m.d.comb += [f.w_data.eq(e.out.payload.as_value()), f.w_en.eq(e.out.valid),
                         e.out.ready.eq(f.w_rdy),
                         f.r_en.eq(self.out.ready & ~soft_reset & (sel_out == j))]
            # an engine takes its next vector only once its output is all in its FIFO,
            # so a token waits behind the FIFO's last elements of the vector before
            with m.If(sel_out == j):
                m.d.comb += [self.out.payload.eq(f.r_data), out_valid.eq(f.r_rdy),
                             taken.eq(token[j] & ~f.r_rdy)]
            with m.If(e.status.error_pulse):
                m.d.sync += token[j].eq(1)
            with m.Elif(taken & (sel_out == j)):
                m.d.sync += token[j].eq(0)
        m.d.comb += self.out.valid.eq(out_valid & ~soft_reset)
        with m.If((self.out.valid & self.out.ready & self.out.payload.last) | taken):
            m.d.sync += sel_out.eq(Mux(sel_out == E - 1, 0, sel_out + 1))
        with m.If(soft_reset):
            m.d.sync += [sel_in.eq(0), in_mid.eq(0), sel_out.eq(0)]
            m.d.sync += [t.eq(0) for t in token]
        # an idle engine's finished output still in its FIFO, ready and not taken (the
        # port not ready, or not its turn): the engine waits for the port, so the cycle
        # is one of its CYCLES and OUT_STALL (as for one engine, whose last element
        # waits at the port; cycles in which the port takes the FIFO's elements, and the
        # FIFO's own latency, are no stalls: the model counts none). Registered beside
        # the engine, so that it enters the sums with the engine's own increment
        waiting = []
        for j, (e, f) in enumerate(zip(engines, fifo_out)):
            w = Signal(name=f"out_wait{j}")
            m.d.sync += w.eq(~e.status.busy & f.r_rdy & ~f.r_en & ~soft_reset)
            waiting.append(w)
        #: internal signals for tests (not ports)
        self.debug = {"out_wait": Cat(*waiting)}

        # ---------------------------------------------------------------- status
        st = self.status

        def any_of(name):
            v = getattr(engines[0].status, name)
            for e in engines[1:]:
                v = v | getattr(e.status, name)
            return v

        # BUSY, DONE, done_pulse and VECTORS at the array's ports, as one engine has them
        # at its own: an element in a FIFO beside an engine (taken at the input port, not
        # yet by the engine; or the engine's output, not yet taken at the output port) is
        # an inference in flight, though its engine may be idle
        busy = any_of("busy")
        for f in (*fifo_in, *fifo_out):
            busy = busy | (f.level != 0)
        done_pulse = Signal()             # the cycle after a vector's last element left
        m.d.sync += done_pulse.eq(self.out.valid & self.out.ready & self.out.payload.last)
        # DONE: set by done_pulse, cleared when a vector's first element is taken (in that
        # very cycle), by a soft reset or an error (a vector started after the one done
        # may end in an error before it), and read only with nothing in flight (another
        # engine's vector may still run: BUSY and DONE are never read together)
        start = Signal()
        done_q = Signal()
        m.d.comb += start.eq(took_in & ~in_mid)
        with m.If(start | soft_reset | any_of("error_pulse")):
            m.d.sync += done_q.eq(0)
        with m.Elif(done_pulse):
            m.d.sync += done_q.eq(1)
        m.d.comb += [st.busy.eq(busy), st.error.eq(any_of("error")),
                     st.error_pulse.eq(any_of("error_pulse")), st.done_pulse.eq(done_pulse),
                     st.done.eq(done_q & ~busy & ~start)]
        for j in reversed(range(E)):          # the lowest-numbered engine in error wins
            e = engines[j]
            with m.If(e.status.error):
                m.d.comb += [st.error_code.eq(e.status.error_code),
                             st.error_step.eq(e.status.error_step)]

        # ---------------------------------------------------------------- counters
        # The sums are kept by the array, from the engines' increments: no counter adds
        # more than `lanes` in a cycle, so the low k bits of an engine's counter (2**k >
        # lanes) give its increment exactly, modulo 2**k, and only those bits cross the
        # chip (not E x 6 counters of counter_bits). Each increment is registered beside
        # its engine before the sum (a routed path ran from an engine's counter through
        # the subtraction into the 48-bit sum), so a sum lags its engines by two cycles.
        # The engines clear a cycle after the port (their control register); their
        # increment is void two cycles after that, when the sum clears. The sum wraps at
        # 2**counter_bits as each engine's counter does.
        cb = self.config.counter_bits
        k = max(1, self.config.lanes.bit_length())
        clear_at = Signal(3)              # the engines' clear_counters, 1 / 2 / 3 cycles late
        m.d.sync += clear_at.eq(Cat(self.control.clear_counters, clear_at[:2]))
        # VECTORS is the array's own (a vector's last element taken at the output port),
        # its done_pulse delayed to the cycle an engine's increment would reach the sum.
        # An engine's out_wait adds to its CYCLES and OUT_STALL increments: the two
        # never meet (the engine's count while it is busy, out_wait while it is idle)
        vec_d = Signal(2)
        m.d.sync += vec_d.eq(Cat(done_pulse, vec_d[0]))
        for name in COUNTER_NAMES:
            if name == "vectors":
                incs = [vec_d[1]]
            else:
                incs = []
                for j, e in enumerate(engines):
                    low = getattr(e.counters, name)[:k]
                    before = Signal(k, name=f"{name}_low{j}")
                    inc = Signal(k, name=f"{name}_inc{j}")
                    step = low - before
                    if name in ("cycles", "out_stall"):
                        step = step + waiting[j]
                    m.d.sync += [before.eq(low), inc.eq(step)]
                    incs.append(inc)
            total = Signal(cb, name=f"{name}_sum")
            with m.If(clear_at[2]):
                m.d.sync += total.eq(0)
            with m.Else():
                m.d.sync += total.eq(total + _sum_tree(incs))
            m.d.comb += getattr(self.counters, name).eq(total)
        return m
