"""``TTEngine``: the programmable TT-contraction engine of ``docs/hardware.md``.

A :class:`amaranth.lib.wiring.Component` parameterised by an
:class:`~ttforge.hw.config.AccelConfig`, made of small components connected with
:func:`amaranth.lib.wiring.connect` around the memories it owns (CMEM, BMEM, BUF0/BUF1,
DMEM, with synchronous read ports):

========================  ==========================================================
:class:`Controller`       phases: input, pad, descriptor fetch, run, zero fill, output;
                          ``STATUS`` bits; the input, pad and fill writes
:class:`DescriptorFetch`  reads and decodes one step's descriptor, the step constants
:class:`IssueUnit`        address generator, operand pipeline, ``L`` MAC lanes
:class:`ResultWriter`     result register, bias reads, the serial element writer
:class:`RequantBank`      ``L`` requantization units (one with ``serial_requant``)
:class:`OutputPath`       reads the output vector through a FIFO onto ``out``
:class:`ErrorUnit`        the first error, the abort and the pipeline flush
:class:`PerfCounters`     the performance counters
========================  ==========================================================

:class:`EngineArray` (``hw/engine/array.py``) puts ``AccelConfig.engines`` engines behind
one engine's ports, the vectors taking turns.

The engine's ports are the typed groups of :mod:`ttforge.hw.engine.signatures`; the descriptor
and its ``FLAGS`` word are :class:`amaranth.lib.data.Struct` views generated from the
field table of :mod:`ttforge.hw.regmap`; the controller's states are the
:class:`~ttforge.hw.engine.signatures.State` enum. The timing it follows is documented
in ``docs/hardware.md`` ("Engine timing") and is :data:`ttforge.hw.cycles.ENGINE_TIMING`.
A new datapath unit is a component here with an annotated signature, wired in
:meth:`TTEngine.elaborate`; an error it detects is one more bit of ``errors`` with its
code in its ``ERRORS``.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.utils import ceil_log2

from ttforge.errors import ConfigError
from ttforge.hw.axis import element_layout
from ttforge.hw.blocks import decode_onehot, read_port, write_port
from ttforge.hw.config import DESC_WORDS, AccelConfig
from ttforge.hw.cycles import ENGINE_TIMING
from ttforge.hw.engine.buffers import SINGLE_PORT_ATTR, connect_single_port
from ttforge.hw.engine.controller import Controller
from ttforge.hw.engine.counters import PerfCounters
from ttforge.hw.engine.errors import ErrorUnit
from ttforge.hw.engine.fetch import DescriptorFetch
from ttforge.hw.engine.geometry import Geometry
from ttforge.hw.engine.array import EngineArray
from ttforge.hw.engine.banks import RegisteredBanks
from ttforge.hw.engine.issue import IssueUnit, tag_has_bias
from ttforge.hw.engine.output import OutputPath
from ttforge.hw.engine.requant import RequantBank
from ttforge.hw.engine.signatures import ComputeState, InputState, State, engine_signature
from ttforge.hw.engine.writer import ResultWriter
from ttforge.hw.faults import ENGINE_FAULTS, check_fault
from ttforge.hw.regmap import ErrorCode

__all__ = ["TTEngine", "ERROR_CODES", "ERROR_NAMES", "ENGINE_TIMING", "DESC_WORDS",
           "element_layout", "State", "InputState", "ComputeState", "Controller", "DescriptorFetch", "IssueUnit",
           "ResultWriter", "RequantBank", "OutputPath", "ErrorUnit", "PerfCounters",
           "Geometry", "EngineArray", "RegisteredBanks"]

#: ``error_code`` values: :class:`ttforge.hw.regmap.ErrorCode` (0: no error). The first
#: error is kept until ``clear_error`` or ``soft_reset``. ``MISALIGNED`` also covers a
#: word-output step (mode 0, or ``OUT_WORD``) whose ``O_LANE`` is not 1 (its lanes would
#: not form one word).
ERROR_CODES = {e.name: int(e) for e in ErrorCode}
ERROR_NAMES = {int(e): e.name for e in ErrorCode}


class TTEngine(wiring.Component):
    """The engine; see the module docstring and ``docs/hardware.md``.

    Ports (:mod:`ttforge.hw.engine.signatures`):

    * ``inp`` (stream in), ``out`` (stream out) of :func:`~ttforge.hw.axis.element_layout`;
    * ``load`` (``dmem``/``cmem``/``bmem``: ``addr``, ``data``, ``we``), ``program``
      (``in_count``, ``in_pad``, ``out_count``, ``out_buf``), ``control`` (``enable``;
      pulses ``clear_error``, ``clear_counters``, ``soft_reset``);
    * ``status``: ``busy``, ``done`` (``STATUS.DONE``), ``done_pulse`` (the cycle after a
      vector's last output element is accepted), ``error``, ``error_pulse``,
      ``error_code`` (:data:`ERROR_CODES`), ``error_step``, ``in_open``;
    * ``counters``: ``cycles``, ``busy_lane_cycles``, ``in_stall``, ``out_stall``,
      ``sat_events``, ``vectors`` (48 bits; ``counter_bits`` of them count).
    """

    #: deliberate faults for the tests that must fail (never set in generated hardware);
    #: the registry with their descriptions is :data:`ttforge.hw.faults.FAULTS`
    FAULTS = ENGINE_FAULTS

    def __init__(self, config: AccelConfig, *, fault: str | None = None):
        if not isinstance(config, AccelConfig):
            raise ConfigError(f"TTEngine needs an AccelConfig, got {type(config).__name__}")
        self.fault = check_fault(fault, self.FAULTS, "TTEngine")
        self.config = config
        self.geom = Geometry(config)
        super().__init__(engine_signature(config))

    def elaborate(self, platform):
        m = Module()
        g, c = self.geom, self.config
        L, IB = g.L, c.inter_bits
        fault = self.fault

        # ------------------------------------------------------------------ memories
        word = data.ArrayLayout(signed(IB), L)
        single = c.buf_ports == 1      # one port per buffer (hw/engine/buffers.py)
        battrs = {SINGLE_PORT_ATTR: 1} if single else None
        # Two ports (block RAM): BUF0 and BUF1 are the halves of one memory, the buffer's
        # number its address's low bit, so that a block RAM's output goes straight into
        # the operand register (a DP16KD's output takes 5.83 ns; with a select of two
        # memories after it this was the critical path of two ECP5 L = 16 seeds, buf0
        # -> issue.s2_x, 95.3 and 102.2 MHz), and the two halves share every block RAM's
        # depth (a 256-word buffer used half of each 512 x 36 block). One port each
        # (single-port RAM, hw/engine/buffers.py): two memories. (The low bit, not the
        # top one: the halves interleave, addressed by wiring, and a buffer of a number
        # of words that is not a power of two takes no more rows than it has.)
        words = c.buf_depth // L
        word_bits = ceil_log2(words)
        if single:
            buf = [Memory(shape=word, depth=words, init=[], attrs=battrs) for _ in range(2)]
        elif c.read_registers:
            # each block RAM's read data registered by itself (hw/engine/banks.py): the
            # issue unit's and the output path's reads take a cycle more
            bufs = RegisteredBanks(word, 2 * words, select_register=c.read_registers > 1,
                                   write_register=c.read_registers > 1)
        else:
            bufs = Memory(shape=word, depth=2 * words, init=[])
        cword = data.ArrayLayout(signed(c.core_bits), L)
        if c.read_registers:
            cmem = RegisteredBanks(cword, c.core_depth // L,      # (as the buffers)
                                   select_register=c.read_registers > 1,
                                   write_register=c.read_registers > 1)
        else:
            cmem = Memory(shape=cword, depth=c.core_depth // L, init=[])
        bmem = Memory(shape=data.ArrayLayout(signed(c.bias_bits), L), depth=c.bias_depth // L,
                      init=[])
        dmem = Memory(shape=32, depth=g.dmem_depth, init=[])
        if single:
            m.submodules.buf0, m.submodules.buf1 = buf
            buf_rp = [read_port(b, f"buf{i}_rp") for i, b in enumerate(buf)]
            buf_wp = [write_port(b, f"buf{i}_wp", granularity=1) for i, b in enumerate(buf)]
        else:
            m.submodules.bufs = bufs
            if c.read_registers:
                bufs_rp, bufs_wp = bufs.read, bufs.write
            else:
                bufs_rp, bufs_wp = read_port(bufs, "bufs_rp"), write_port(bufs, "bufs_wp", granularity=1)
            buf_rp = [bufs_rp, bufs_rp]       # (either buffer's data: the one port's)
        m.submodules.cmem, m.submodules.bmem, m.submodules.dmem = cmem, bmem, dmem
        cmem_wp = cmem.write if c.read_registers else write_port(cmem, "cmem_wp", granularity=1)
        bmem_wp = bmem.write_port(granularity=1)
        dmem_wp = dmem.write_port()

        # load ports: element writes with per-lane enables
        ld = self.load
        m.d.comb += [
            cmem_wp.addr.eq(g.word_of(ld.cmem.addr, c.core_depth)),
            cmem_wp.en.eq(Mux(ld.cmem.we, g.onehot(ld.cmem.addr), 0)),
            bmem_wp.addr.eq(g.word_of(ld.bmem.addr, c.bias_depth)),
            bmem_wp.en.eq(Mux(ld.bmem.we, g.onehot(ld.bmem.addr), 0)),
            dmem_wp.addr.eq(ld.dmem.addr),
            dmem_wp.data.eq(ld.dmem.data),
            dmem_wp.en.eq(ld.dmem.we),
        ]
        for l in range(L):
            m.d.comb += [cmem_wp.data[l].eq(ld.cmem.data), bmem_wp.data[l].eq(ld.bmem.data)]
        if c.throughput:
            # throughput mode: the staging memory the next vector streams into
            stage = Memory(shape=data.ArrayLayout(signed(c.act_bits), L), depth=c.buf_depth // L,
                           init=[])
            m.submodules.stage = stage
            stage_wp, stage_rp = write_port(stage, "stage_wp", granularity=1), read_port(stage, "stage_rp")

        # ------------------------------------------------------------------ components
        m.submodules.ctrl = ctrl = Controller(g)
        m.submodules.fetch = fetch = DescriptorFetch(g)
        m.submodules.issue = issue = IssueUnit(g, fault=fault)
        m.submodules.writer = writer = ResultWriter(g)
        m.submodules.requant = rqb = RequantBank(g, fault=fault)
        m.submodules.output = outp = OutputPath(g, fault=fault)
        m.submodules.errors = err = ErrorUnit(
            DescriptorFetch.ERRORS + IssueUnit.ERRORS + ResultWriter.ERRORS
            + (ErrorCode.BUF_RANGE,), groups=g.rq_groups)
        m.submodules.counters = cnt = PerfCounters(g)

        desc, flags = fetch.desc, fetch.desc.flags
        flush = err.flush
        # results leave through the serial element writer (mode 1 element outputs; every
        # output with serial_requant, which has one requantization unit)
        elem_out = Signal()
        m.d.comb += elem_out.eq(1 if g.serial else fetch.elem_out)

        # the controller: streams, program registers, control
        wiring.connect(m, wiring.flipped(self.inp), ctrl.inp)
        wiring.connect(m, wiring.flipped(self.program), ctrl.program)
        wiring.connect(m, wiring.flipped(self.control), ctrl.control)
        m.d.comb += [
            ctrl.error.eq(err.error), ctrl.abort.eq(err.abort),
            ctrl.fetch_done.eq(fetch.done),
            ctrl.pipe_busy.eq(issue.busy | writer.busy | rqb.busy),
            ctrl.last_step.eq(flags.last), ctrl.src.eq(flags.src),
            ctrl.zf_nonempty.eq(fetch.zf_nonempty), ctrl.zf_start.eq(fetch.zf_start),
            ctrl.zf_end.eq(fetch.zf_end), ctrl.out_finished.eq(outp.finished),
        ]
        # the descriptor fetch
        wiring.connect(m, fetch.dmem, read_port(dmem, "dmem_rp"))
        m.d.comb += [fetch.active.eq(ctrl.fetching), fetch.base.eq(ctrl.dptr),
                     fetch.step.eq(ctrl.step)]
        # issue: the source buffer word comes back from the buffer read ports below
        wiring.connect(m, issue.cmem, cmem.read if c.read_registers else read_port(cmem, "cmem_rp"))
        m.d.comb += [
            issue.start.eq(fetch.done), issue.running.eq(ctrl.running), issue.flush.eq(flush),
            issue.elem_out.eq(elem_out), issue.desc.eq(desc), issue.ov_end.eq(fetch.ov_end),
            issue.b_off.eq(fetch.b_off), issue.mode_g.eq(fetch.mode),
        ]
        # the source buffer's word, each lane group selecting with its own copy of
        # FLAGS.SRC (fetch.src_g)
        for l in range(L):
            m.d.comb += issue.x_word[l].eq(Mux(fetch.src_g[g.group(l)], buf_rp[1].data[l],
                                               buf_rp[0].data[l]) if single else buf_rp[0].data[l])
        # the result writer
        wiring.connect(m, writer.bmem, read_port(bmem, "bmem_rp"))
        m.d.comb += [
            writer.running.eq(ctrl.running), writer.flush.eq(flush),
            writer.elem_out.eq(elem_out), writer.use_bias.eq(flags.bias),
            writer.o_lane.eq(desc.o_lane), writer.ov_end.eq(fetch.ov_end),
            *([] if tag_has_bias(g) else [writer.b_off.eq(fetch.b_off)]),
            writer.pre_valid.eq(issue.pre_valid), writer.pre_tag.eq(issue.pre_tag),
            writer.res_valid.eq(issue.res_valid), writer.res_tag.eq(issue.res_tag),
            writer.res.eq(issue.res),
        ]
        # requantization
        m.d.comb += [
            rqb.flush.eq(flush), rqb.flush_g.eq(err.flush_g), rqb.rq.eq(fetch.rq),
            rqb.valid.eq(writer.valid), rqb.acc.eq(writer.acc), rqb.bias.eq(writer.bias),
            rqb.bias_en.eq(writer.bias_en), rqb.zero.eq(writer.zero),
            rqb.addr_valid.eq(writer.addr_valid), rqb.addr.eq(writer.addr),
        ]
        # the output path
        wiring.connect(m, outp.out, wiring.flipped(self.out))
        m.d.comb += [
            outp.active.eq(ctrl.outputting), outp.begin.eq(ctrl.out_begin),
            outp.flush.eq(flush), outp.out_last.eq(ctrl.out_last),
        ]
        m.d.comb += [outp.words[b][l].eq(buf_rp[b].data[l][:c.act_bits])
                     for b in range(2) for l in range(L)]
        m.d.comb += outp.buf.eq(self.program.out_buf)
        # errors, in priority order: descriptor fields, issue, serial writer, zero fill
        m.d.comb += [
            err.conds.eq(Cat(fetch.errors, issue.errors, writer.errors, ctrl.zfill_err)),
            err.in_err.eq(ctrl.in_err), err.in_code.eq(ctrl.in_code), err.step.eq(ctrl.step),
            err.clear_error.eq(self.control.clear_error),
            err.soft_reset.eq(self.control.soft_reset),
        ]

        if c.throughput:
            m.d.comb += [
                stage_wp.addr.eq(g.word_of(ctrl.stage_elem, c.buf_depth)),
                stage_wp.en.eq(Mux(ctrl.stage_we, g.onehot(ctrl.stage_elem), 0)),
                stage_rp.addr.eq(ctrl.copy_addr[:len(stage_rp.addr)]),
            ]
            m.d.comb += [stage_wp.data[l].eq(ctrl.stage_value) for l in range(L)]

        # ------------------------------------------------------------------ buffer ports
        # reads: the output phase's element of OUT_BUF, else the issue unit's source
        # element (FLAGS.SRC, held through the step)
        if not single:
            rd_word = Signal(word_bits)
            rd_buf = Signal()
            m.d.comb += [
                rd_word.eq(Mux(ctrl.outputting, g.word_of(outp.rd_addr, c.buf_depth),
                               g.word_of(issue.x_addr, c.buf_depth))),
                rd_buf.eq(Mux(ctrl.outputting, self.program.out_buf, flags.src)),
                bufs_rp.addr.eq(Cat(rd_buf, rd_word)),
                # (always enabled: a word read without a use is never consumed, and an
                # enable would gate every output register of the buffers)
                bufs_rp.en.eq(1),
            ]
        # writes: requantized results while running, else the controller's element
        # (input, padding, zero fill)
        wr_en = Signal()
        wr_sel = Signal()
        wr_addr = Signal(word_bits)
        wr_mask = Signal(L)
        wr_data = Signal(word)
        y_v = ctrl.running & rqb.y_valid
        if g.drain == 1:
            word_mask = rqb.y_mask
        else:
            # a chunk of `units` lanes of the word (the lane field of y_addr names it)
            U = g.units
            chunk = decode_onehot(rqb.y_addr[U.bit_length() - 1:g.lg], g.drain)
            word_mask = Cat(*[Mux(chunk[j], rqb.y_mask, 0) for j in range(g.drain)])
        with m.If(y_v):
            m.d.comb += [wr_en.eq(1), wr_sel.eq(~flags.src),
                         wr_addr.eq(g.word_of(rqb.y_addr, c.buf_depth)),
                         wr_mask.eq(Mux(~elem_out, word_mask, g.onehot(rqb.y_addr)))]
        if c.throughput:
            # the copy of a staged vector into BUF0, a word per cycle
            with m.Elif(ctrl.copy_we):
                m.d.comb += [wr_en.eq(1), wr_sel.eq(0), wr_mask.eq(-1),
                             wr_addr.eq(ctrl.copy_word[:len(wr_addr)])]
        with m.Else():
            m.d.comb += [wr_en.eq(ctrl.wr_en), wr_sel.eq(ctrl.wr_sel),
                         wr_addr.eq(g.word_of(ctrl.wr_elem, c.buf_depth)),
                         wr_mask.eq(g.onehot(ctrl.wr_elem))]
        # the write data, in the same priority, each lane group selecting with its own
        # copies of RUN, the result valid and ELEM_OUT (running_g, y_valid_g, elem_out_g: per-lane
        # control nets end in one group, fanout_copies)
        y0 = rqb.y[0]
        if fault == "requant_lsb":   # test hook: flip bit 0 of lane 0
            y0 = (y0 ^ 1).as_signed()
        y_vg = [Signal(name=f"y_v_g{k}") for k in range(g.rq_groups)]
        m.d.comb += [v.eq(ctrl.running_g[k] & rqb.y_valid_g[k]) for k, v in enumerate(y_vg)]
        for l in range(L):
            k = g.group(l) if not g.serial else 0
            u = l % g.units        # (lane l's unit; l itself with a unit per lane)
            y_l = y0 if (g.serial or u == 0) else Mux(~fetch.elem_out_g[k], rqb.y[u], y0)
            other = ctrl.wr_value
            if c.throughput:
                other = Mux(ctrl.copy_we, stage_rp.data[l], ctrl.wr_value)
            m.d.comb += wr_data[l].eq(Mux(y_vg[k], y_l, other))
        if not single:
            m.d.comb += [
                bufs_wp.addr.eq(Cat(wr_sel, wr_addr)),
                bufs_wp.data.eq(wr_data),
                bufs_wp.en.eq(Mux(wr_en, wr_mask, 0)),
            ]
        clash = []
        for b in range(2 if single else 0):
            # the source buffer's data may be used in any RUN cycle, OUT_BUF's while
            # outputting (a superset of the cycles that use it)
            clash.append(connect_single_port(
                m, b, buf_rp[b], buf_wp[b],
                rd_addr=Mux(ctrl.outputting, g.word_of(outp.rd_addr, c.buf_depth),
                            g.word_of(issue.x_addr, c.buf_depth)),
                rd_en=Mux(ctrl.outputting, outp.rd_en, 1),
                rd_need=Mux(ctrl.outputting, outp.rd_en & (self.program.out_buf == b),
                            ctrl.running & (flags.src == b)),
                wr=wr_en & (wr_sel == b), wr_addr=wr_addr, wr_data=wr_data, wr_mask=wr_mask))

        # ------------------------------------------------------------------ status, counters
        st = self.status
        m.d.comb += [
            st.busy.eq(ctrl.busy), st.done.eq(ctrl.done), st.done_pulse.eq(ctrl.done_pulse),
            st.error.eq(err.error), st.error_pulse.eq(err.error_pulse),
            st.error_code.eq(err.error_code), st.error_step.eq(err.error_step),
            st.in_open.eq(ctrl.in_open),
        ]
        wiring.connect(m, cnt.counters, wiring.flipped(self.counters))
        m.d.comb += [
            cnt.clear.eq(self.control.clear_counters), cnt.busy.eq(ctrl.busy),
            cnt.running.eq(ctrl.running), cnt.lanes_issued.eq(issue.lanes_issued),
            cnt.result_written.eq(rqb.y_valid), cnt.sat_count.eq(rqb.sat_count),
            cnt.in_stall.eq(ctrl.in_stall),
            cnt.out_stall.eq(self.out.valid & ~self.out.ready),
            cnt.done.eq(ctrl.done_pulse),
        ]
        #: internal signals for tests and debugging (not ports)
        self.debug = {"state": ctrl.state, "step": ctrl.step,
                      **({"buf_clash": Cat(*clash)} if single else {})}
        return m
