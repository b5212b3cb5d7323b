"""``Controller``: the engine's phases (input, pad, fetch, run, zero fill, output)."""

from __future__ import annotations

from enum import Enum

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ttforge.hw.axis import element_layout
from ttforge.hw.blocks import fanout_copies, ge_const, lut_compares
from ttforge.hw.config import DESC_WORDS
from ttforge.hw.engine.geometry import Geometry
from ttforge.hw.engine.signatures import (ERROR_CODE_BITS, STEP_BITS, ComputeState,
                                          ControlSignature, InputState, ProgramSignature, State)
from ttforge.hw.regmap import ErrorCode

__all__ = ["Controller"]


class Controller(wiring.Component):
    """The state machine of ``docs/hardware.md`` ("Engine timing") over :class:`State`
    (throughput mode: two, the input side's :class:`InputState` and the compute side's
    :class:`ComputeState`).

    Input: accepts ``inp`` while enabled (and not in ``error``, except to discard the
    rest of a vector after a stream error, state ``DRAIN``), writes element ``j`` to
    BUF0 and checks ``tlast`` against ``IN_COUNT`` and the program registers (stream
    errors: ``in_err``/``in_code``, registered: high the cycle after the beat); then ``IN_PAD - IN_COUNT`` zeros. Per step:
    ``fetching`` until the descriptor fetch is ``fetch_done``, ``running`` until the
    datapath is idle (``pipe_busy`` low), then the zero fill ``zf_start .. zf_end - 1``
    of the destination buffer (``zfill_err``: beyond ``buf_depth``); after the step with
    ``last_step``, the output (``out_begin``, ``outputting`` until ``out_finished``);
    ``running_g``: ``running`` again, one register per lane group.
    ``wr_*`` is its buffer write (input elements, padding and fill zeros, one element per
    cycle: ``wr_value`` to element ``wr_elem`` of buffer ``wr_sel``); input and pad
    writes come from registers, a cycle after the element is accepted. ``abort`` or a soft
    reset return it to ``IDLE``.

    Status: ``busy`` (from the cycle accepting the first input element to the return to
    ``IDLE``), ``done_pulse`` (the cycle after the last output element is accepted),
    ``done`` (``STATUS.DONE``: set by ``done_pulse``, cleared when the next inference
    starts, in that very cycle, and by a soft reset), ``in_open`` (the input adapter may
    take a beat: enabled and no error, none being raised; or discarding the rest of a
    vector, never past its ``tlast``), ``in_stall`` (an ``IN_STALL`` cycle)."""

    #: test hook (never set in generated hardware; not in ``ttforge.hw.faults``, whose
    #: every entry the mutation run builds into its one config, without throughput mode;
    #: ``tests/hw/test_throughput.py`` builds this one):
    #: the input side does not wait for the copy, so the next vector's input
    #: overwrites a staged vector that is not yet copied
    STAGE_FAULTS = ("stage_overwrite",)

    def __init__(self, geom: Geometry, *, fault: str | None = None):
        if fault is not None and fault not in self.STAGE_FAULTS:
            raise ValueError(f"Controller fault={fault!r}; known: {', '.join(self.STAGE_FAULTS)}")
        self.fault = fault
        self.geom = g = geom
        c = g.config
        super().__init__({
            "inp": In(stream.Signature(element_layout(c.act_bits))),
            "program": In(ProgramSignature()),
            "control": In(ControlSignature()),
            "error": In(1),
            "abort": In(1),
            "fetch_done": In(1),
            "pipe_busy": In(1),
            "last_step": In(1),
            "src": In(1),
            "zf_nonempty": In(1),
            "zf_start": In(g.awp),
            "zf_end": In(g.awp),
            "out_finished": In(1),
            "state": Out(ComputeState if c.throughput else State),
            "step": Out(STEP_BITS),
            "dptr": Out(max(1, (g.dmem_depth + DESC_WORDS).bit_length())),
            "fetching": Out(1),
            "running": Out(1),
            "running_g": Out(g.groups),
            "out_begin": Out(1),
            "outputting": Out(1),
            "out_last": Out(g.awp),
            "wr_en": Out(1),
            "wr_sel": Out(1),
            "wr_elem": Out(g.eb),
            "wr_value": Out(signed(c.act_bits)),
            "in_err": Out(1),
            "in_code": Out(ERROR_CODE_BITS),
            "zfill_err": Out(1),
            "busy": Out(1),
            "done": Out(1),
            "done_pulse": Out(1),
            "in_open": Out(1),
            "in_stall": Out(1),
            # throughput mode: the staging memory's element write and the copy into BUF0
            **({"stage_we": Out(1), "stage_elem": Out(g.eb),
                "stage_value": Out(signed(c.act_bits)), "copy_addr": Out(g.eb),
                "copy_we": Out(1), "copy_word": Out(g.eb)} if c.throughput else {}),
        })

    def elaborate(self, platform):
        m = Module()
        g, c = self.geom, self.geom.config
        AWP = g.awp
        pg, ct = self.program, self.control
        state, step, dptr = self.state, self.step, self.dptr
        enable, soft_reset = ct.enable, ct.soft_reset

        # checks of the program registers, registered (they are written while disabled)
        # (IN_PAD <= buf_depth < 2**AWP, so IN_COUNT > IN_PAD is IN_COUNT's high bits or
        # an AWP-bit compare: no 32-bit comparator)
        prog_bad = Signal()
        lut = lut_compares(platform)          # (compares with constants as logic, hw/blocks.py)

        def above(v, k):                      # v > k
            return ge_const(v, k + 1) if lut else v > k
        hi = pg.in_count[AWP:].any() | pg.in_pad[AWP:].any() | pg.out_count[AWP:].any()
        m.d.sync += prog_bad.eq(hi | (pg.in_count == 0) | (pg.in_count[:AWP] > pg.in_pad[:AWP])
                                | above(pg.in_pad[:AWP], c.buf_depth) | (pg.out_count == 0)
                                | above(pg.out_count[:AWP], c.buf_depth))
        # (when the registers pass these checks every count fits in AWP bits, so the
        # comparisons below use AWP bits)
        last_idx = Signal(AWP)                # IN_COUNT - 1
        has_pad = Signal()                    # IN_PAD > IN_COUNT
        pad_last = Signal(AWP)                # IN_PAD - 1
        m.d.sync += [last_idx.eq(pg.in_count - 1),
                     has_pad.eq(pg.in_pad[:AWP] > pg.in_count[:AWP]), pad_last.eq(pg.in_pad - 1),
                     self.out_last.eq(pg.out_count - 1)]

        tp = bool(c.throughput)
        # one-hot flops beside `state`, written with every assignment of it (go() below):
        # nothing decodes `state` (fan-out from one flop each; same timing)
        idle = Signal(init=1)                  # IDLE
        taking = Signal(init=1)                # IDLE or INPUT
        inputting = Signal()                   # INPUT
        drain, pad, zfill = Signal(name="drain"), Signal(name="pad"), Signal(name="zfill")
        # `running` again, one copy per lane group (the buffer write data's per-lane
        # selects), written with it; one group: `running` itself
        run_g = fanout_copies(1, g.groups, "running") if g.groups > 1 else []
        m.d.comb += [self.running_g[k].eq(run_g[k] if run_g else self.running)
                     for k in range(g.groups)]
        phase = [(idle, (State.IDLE,)), (taking, (State.IDLE, State.INPUT)),
                 (inputting, (State.INPUT,)), (drain, (State.DRAIN,)), (pad, (State.PAD,)),
                 (self.fetching, (State.FETCH,)), (self.running, (State.RUN,)),
                 *[(r, (State.RUN,)) for r in run_g],
                 (zfill, (State.ZFILL,)), (self.outputting, (State.OUTPUT,))]
        self.debug = {"idle": idle, "taking": taking, "inputting": inputting, "drain": drain,
                      "pad": pad, "zfill": zfill}

        def flags_of(s, table):
            def is_(states):
                if isinstance(s, Enum):
                    return s in states
                return Cat(*[s == x for x in states]).any()
            return [flag.eq(is_(states)) for flag, states in table]

        def go(s):
            return [state.eq(s), *flags_of(s, phase)]

        # Throughput mode runs two state machines: the input side (InputState: IDLE,
        # INPUT, DRAIN, PAD into the staging memory, then STAGED: the vector waits for
        # the copy; it has no state register, only its one-hot flags) and the compute
        # side (`state`, ComputeState: IDLE, COPY into BUF0, FETCH, RUN, ZFILL, OUTPUT).
        # Otherwise one machine (State) does both: in_go and c_go are go, the input
        # side's end is FETCH.
        IS = InputState if tp else State
        CS = ComputeState if tp else State
        in_done = InputState.STAGED if tp else State.FETCH
        staged = Signal()
        c_idle = Signal(init=1)
        copying = Signal()
        if tp:
            in_phase = [(idle, (IS.IDLE,)), (taking, (IS.IDLE, IS.INPUT)),
                        (inputting, (IS.INPUT,)), (drain, (IS.DRAIN,)), (pad, (IS.PAD,)),
                        (staged, (IS.STAGED,))]
            overwrite = self.fault == "stage_overwrite"
            if overwrite:    # staged is set, but the input side is idle again at once
                in_phase = [(idle, (IS.IDLE, IS.STAGED)),
                            (taking, (IS.IDLE, IS.INPUT, IS.STAGED)),
                            *in_phase[2:5]]
            c_phase = [(c_idle, (CS.IDLE,)), (copying, (CS.COPY,)),
                       (self.fetching, (CS.FETCH,)), (self.running, (CS.RUN,)),
                       *[(r, (CS.RUN,)) for r in run_g],
                       (zfill, (CS.ZFILL,)), (self.outputting, (CS.OUTPUT,))]
            self.debug.update(staged=staged, copying=copying, c_idle=c_idle)

            def in_go(s):
                if not overwrite:
                    return flags_of(s, in_phase)
                staging = s is IS.STAGED if isinstance(s, IS) else s == IS.STAGED
                return [*flags_of(s, in_phase), staged.eq(staged | staging)]

            def c_go(s):
                return [state.eq(s), *flags_of(s, c_phase)]
        else:
            in_go = c_go = go

        accept = Signal()
        m.d.comb += [
            # a pending error refuses new vectors, but the offending one is still drained
            self.inp.ready.eq(enable & (drain | (~self.error & ~self.in_err & taking))),
            accept.eq(self.inp.valid & self.inp.ready),
            self.in_stall.eq(inputting & self.inp.ready & ~self.inp.valid),
        ]
        j = Signal(AWP)                       # input element / pad index
        jj = Mux(idle, 0, j)
        # element jj is the vector's last: a flop (the input's decisions start from it),
        # IN_COUNT == 1 after every cycle that may be followed by IDLE (the input side
        # returns to IDLE from anywhere by a soft reset, and without throughput mode by
        # an abort), held while INPUT waits for an element
        exp_last = Signal()
        in_last = self.inp.payload.last
        to_idle = soft_reset if tp else soft_reset | self.abort
        with m.If(accept & ~in_last & ~to_idle):
            m.d.sync += exp_last.eq(jj + 1 == last_idx)
        with m.Elif(~inputting | accept | to_idle):
            m.d.sync += exp_last.eq(pg.in_count == 1)
        # j == IN_PAD - 1 for the j of the next cycle, registered: j only changes by an
        # accepted element (to jj + 1) or a pad write (to j + 1 = jj + 1), and PAD is
        # only entered by an accepted element, so the compare needs no enable and the
        # end of PAD starts from this flop, not from a comparator
        pad_at_last = Signal()
        m.d.sync += pad_at_last.eq(jj + 1 == pad_last)
        z = Signal(AWP)
        # z >= buf_depth (a fill beyond the buffer), z < buf_depth
        if lut:
            z_out = Signal()
            m.d.comb += z_out.eq(ge_const(z, c.buf_depth))
            z_in = ~z_out
        else:
            z_out, z_in = z >= c.buf_depth, z < c.buf_depth
        # the end of a fill (z == zf_end - 1) registered a cycle ahead: z_last is high in
        # the fill's last cycle (zf_pen = zf_end - 2 is registered while running), so the
        # step transition starts from a flop, not from a comparator
        z_last = Signal()
        zf_pen = Signal(AWP + 1)
        # the next step's number and descriptor address, ready before they are needed:
        # registered from step/dptr in every cycle (a step lasts more than one cycle,
        # so they are current whenever next_step() reads them), so their flops have no
        # enable and no select: the step transition's decision ends in step/dptr alone
        step_next = Signal(STEP_BITS, init=1)
        dptr_next = Signal(len(dptr), init=DESC_WORDS)
        m.d.sync += [step_next.eq(step + 1), dptr_next.eq(dptr + DESC_WORDS)]
        # (the registers standing for a compare, for tests/hw/test_controller.py)
        self.debug.update(j=j, last_idx=last_idx, pad_last=pad_last, exp_last=exp_last,
                          pad_at_last=pad_at_last, step_next=step_next, dptr_next=dptr_next)
        done_r = Signal()
        m.d.sync += done_r.eq(0)
        m.d.comb += self.done_pulse.eq(done_r)

        # busy: from the cycle accepting the first element (still IDLE) until the return
        # to IDLE after the last output element (in throughput mode: of both sides)
        m.d.comb += self.busy.eq(~idle | accept | (~c_idle if tp else 0))

        def next_step():
            return [*c_go(CS.FETCH), step.eq(step_next), dptr.eq(dptr_next)]

        def to_output():
            m.d.sync += c_go(CS.OUTPUT)
            m.d.comb += self.out_begin.eq(1)

        # the input and pad writes leave from registers a cycle after the element is
        # accepted (the handshake's logic ends in these flops, not in the buffer's
        # address and enables); the last one lands in the first FETCH cycle, long before
        # a step reads BUF0. The zero fill writes from its own flops (z) directly: it
        # never meets an input or pad write.
        in_we = Signal()
        in_elem = Signal.like(self.wr_elem)
        in_value = Signal.like(self.wr_value)
        m.d.sync += in_we.eq(0)
        if tp:
            m.d.comb += [self.stage_we.eq(in_we), self.stage_elem.eq(in_elem),
                         self.stage_value.eq(in_value),
                         self.wr_en.eq(zfill & z_in), self.wr_sel.eq(~self.src),
                         self.wr_elem.eq(z)]
        else:
            with m.If(zfill):
                m.d.comb += [self.wr_en.eq(z_in), self.wr_sel.eq(~self.src),
                             self.wr_elem.eq(z)]
            with m.Else():
                m.d.comb += [self.wr_en.eq(in_we), self.wr_sel.eq(0), self.wr_elem.eq(in_elem)]
            # the fill's zeros from in_value itself, cleared once the last input write has
            # left (first FETCH cycle; no input is taken until the vector is done): the
            # write data of every lane then has no `zfill` select (940 LUTs at L = 64)
            m.d.comb += self.wr_value.eq(in_value)
            with m.If(self.fetching):
                m.d.sync += in_value.eq(0)

        # (the phases are exclusive: one If per phase flag, no priority chain)
        with m.If(taking):
            with m.If(accept):
                # (j counts every accepted element: after an error it is never read, and
                # its enable then needs no error decode of the stream's last bit)
                m.d.sync += j.eq(jj + 1)
                with m.If(idle & prog_bad):
                    m.d.sync += in_go(Mux(in_last, IS.IDLE, IS.DRAIN))
                with m.Elif(in_last & ~exp_last):
                    m.d.sync += in_go(IS.IDLE)
                with m.Elif(~in_last & exp_last):
                    m.d.sync += in_go(IS.DRAIN)
                with m.Else():
                    m.d.sync += [in_we.eq(1), in_elem.eq(jj),
                                 in_value.eq(self.inp.payload.data)]
                    with m.If(exp_last):
                        m.d.sync += in_go(Mux(has_pad, IS.PAD, in_done))
                    with m.Else():
                        m.d.sync += in_go(IS.INPUT)
        with m.If(drain):
            with m.If(accept & in_last):
                m.d.sync += in_go(IS.IDLE)
        with m.If(pad):
            m.d.sync += [in_we.eq(1), in_elem.eq(j), in_value.eq(0), j.eq(j + 1)]
            with m.If(pad_at_last):
                m.d.sync += in_go(in_done)
        if tp:
            # the copy: staging word q is read in COPY cycle q and written to BUF0 word q
            # in the next cycle (from the read port's data, by the engine); the staging
            # memory is free for the next vector from the cycle after its last read
            q = Signal(AWP)
            q_last = Signal(AWP)                  # word of IN_PAD - 1
            m.d.sync += q_last.eq(pad_last >> g.lg)
            m.d.sync += self.copy_we.eq(0)
            m.d.comb += self.copy_addr.eq(q)
            with m.If(c_idle & staged & ~self.error):
                m.d.sync += [*c_go(CS.COPY), q.eq(0)]
            with m.If(copying):
                m.d.sync += [q.eq(q + 1), self.copy_we.eq(1), self.copy_word.eq(q)]
                with m.If(q == q_last):
                    m.d.sync += c_go(CS.FETCH)
                    m.d.sync += staged.eq(0) if self.fault else in_go(IS.IDLE)
        # step 0's number and descriptor address are set while idle (nothing reads them
        # then; a stream error reports step 0 anyway), not in the cycle the input ends:
        # the input handshake's decisions never reach step/dptr, whose only other
        # assignment is next_step()
        with m.If(c_idle if tp else idle):
            m.d.sync += [step.eq(0), dptr.eq(0)]
        with m.If(self.fetching):
            with m.If(self.fetch_done):
                m.d.sync += c_go(CS.RUN)
        with m.If(zfill):
            m.d.sync += [z.eq(z + 1), z_last.eq(z == zf_pen)]
            with m.If(z_last):
                with m.If(self.last_step):
                    to_output()
                with m.Else():
                    m.d.sync += next_step()
        with m.If(self.outputting):
            with m.If(self.out_finished):
                m.d.sync += [*c_go(CS.IDLE), done_r.eq(1)]
        # the end of RUN last (before the abort; the phases are exclusive, so the order is
        # free): the pipeline's busy bits come from every unit of the datapath, and the
        # last If of a flop's assignments is the last multiplexer before its D input
        # (the L = 16 engine's seed 3 path at da96e89: writer.R_v -> pipe_busy -> 5 LUTs
        # of the earlier phases' selects -> ctrl.fetching)
        with m.If(self.running):
            m.d.sync += zf_pen.eq(self.zf_end - 2)
            with m.If(~self.pipe_busy):
                with m.If(self.zf_nonempty):
                    m.d.sync += [*c_go(CS.ZFILL), z.eq(self.zf_start),
                                 z_last.eq(self.zf_start + 1 == self.zf_end)]
                with m.Elif(self.last_step):
                    to_output()
                with m.Else():
                    m.d.sync += next_step()
        # an engine error stops the computing vector; in throughput mode the input side
        # goes on (the staged vector starts once the error is cleared)
        with m.If(self.abort | soft_reset):
            m.d.sync += c_go(CS.IDLE)
        if tp:
            with m.If(soft_reset):
                m.d.sync += in_go(IS.IDLE)
        m.d.comb += self.zfill_err.eq(zfill & z_out)

        # stream and program-register errors, found when an element is accepted
        in_sel = Signal(ERROR_CODE_BITS)
        with m.If(taking & accept):
            with m.If(idle & prog_bad):
                m.d.comb += in_sel.eq(ErrorCode.GLOBALS)
            with m.Elif(in_last & ~exp_last):
                m.d.comb += in_sel.eq(ErrorCode.TLAST_EARLY)
            with m.Elif(~in_last & exp_last):
                m.d.comb += in_sel.eq(ErrorCode.TLAST_LATE)
        # registered: the error unit's first-error flops take them a cycle later, so no
        # path runs from the stream handshake through this decode into their enables;
        # meanwhile in_err itself keeps the input refused (ready above), as `error` does
        # from the next cycle on
        in_err_now = Signal()
        m.d.comb += in_err_now.eq(in_sel != 0)
        # (a clear or soft reset in the error's own cycle wins over it, as it did when
        # the error unit took it at once)
        m.d.sync += [self.in_err.eq(in_err_now & ~ct.clear_error & ~soft_reset),
                     self.in_code.eq(in_sel)]

        # STATUS.DONE: set when an inference completes, cleared when the next one starts
        # (its first element accepted; in that very cycle, so that BUSY and DONE are
        # never read together) and by a soft reset
        start = Signal()
        done_q = Signal()
        m.d.comb += [start.eq((c_idle & staged & ~self.error) if tp else (accept & idle)),
                     self.done.eq(done_q & ~start)]
        with m.If(start | soft_reset):
            m.d.sync += done_q.eq(0)
        with m.Elif(done_r):
            m.d.sync += done_q.eq(1)
        # the input adapter may take a beat only while the engine takes vectors, or to
        # finish discarding a vector after a stream error (never past its tlast): its
        # tready is low while disabled (so after reset) and while in error
        m.d.comb += self.in_open.eq(enable & (
            (drain & ~(accept & in_last))
            | ~(self.error | in_err_now | self.in_err | self.abort)))
        return m
