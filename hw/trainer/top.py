"""``TrainAccel``: the training engine behind an AXI4-Lite slave and an AXI4-Stream input.

The same conventions as the inference top (:mod:`ttforge.hw.top`): one clock ``clk``,
``rst`` active high and synchronous (or ``aresetn``, see :func:`verilog`),
``s_axil_aw*/w*/b*/ar*/r*`` (AXI4-Lite slave, :class:`ttforge.hw.axil.AXI4LiteSlave`
unchanged, with the register file :class:`ttforge.hw.axil.RegisterFile` built from the
training register map :mod:`ttforge.hw.trainer.regmap`), ``s_axis_tdata/tvalid/tready/
tlast`` (the labelled samples) and ``irq``.

What the top adds around the slave and the register file:

* **read windows** onto the engine memories. The register bus answers a read in the
  cycle it is strobed, the engine's ``host`` port six cycles after ``re``
  (:data:`~ttforge.hw.trainer.engine.HOST_READ_LATENCY`); so a gate on
  the AR channel holds each read address, and if it falls in a window, reads the
  element through ``host`` first (while the engine is idle; otherwise the answer is
  ``SLVERR``) and only then passes the address on to the slave, whose register bus
  answers it from the latched element. The gate takes a new address only when the
  slave holds none, so the latch is never overwritten before it was used.
* **write windows** ``DMEM``/``CMEM``/``BMEM``: the register file's window ports drive
  ``host.we``; a window write (and a write of ``RNG`` or of a program register:
  ``BATCH``, ``BW_LOG``, ``IN_COUNT``, ``IN_BASE``, ``STOCH``) while the engine is busy
  answers ``SLVERR`` and has no effect. Writes to the read-only windows answer ``SLVERR``.
* ``RNG``: a read returns the generator state, a write loads it.
* ``CMD.START`` arms exactly one step (the engine's ``enable`` is
  ``CTRL.ENABLE | armed``, and ``armed`` clears when the step starts); ``STATUS.DONE``
  and the interrupt bits.
* the sample stream: one element per beat (``tdata`` is ``act_bits`` rounded up to
  bytes; the low ``act_bits`` are the element, two's complement); each sample is
  ``IN_COUNT`` features then its label. ``tready`` is high while the engine takes
  samples (``STATUS.IN_OPEN``) and while a stream error discards the rest of a packet.
* the ``TLAST`` check (``CTRL.TLAST_CHECK``; off: ``tlast`` is ignored): a sample is one
  packet, ``tlast`` on its label and nowhere else. ``tlast`` on a feature is
  ``TLAST_EARLY`` (the packet ended: the next beat starts a new one); a label without
  ``tlast`` is ``TLAST_LATE``, and the rest of that packet is taken and discarded up to
  and including its ``tlast`` beat, so the next sample starts in sync, as the inference
  top does. Either stops the step at once (the engine is soft-reset in the cycle of the
  beat; what it wrote keeps), sets ``STATUS.ERROR`` with the code and the sample of the
  batch in ``ERROR_CODE.OP``, and no step starts until ``CMD.CLEAR_ERROR`` or
  ``CMD.SOFT_RESET``. The codes (16, 17) lie above the engine's 4-bit ``TrainError``,
  so the two never collide.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ttforge.errors import ConfigError
from ttforge.hw.axil import AXI4LiteSignature, AXI4LiteSlave, RegisterFile, low_in_reset
from ttforge.hw.axil import Reg as _AReg
from ttforge.hw.axil import Window as _AWin
from ttforge.hw.axis import AXISSignature
from ttforge.hw.config import stream_lane_bits
from ttforge.hw.emit import port_map
from ttforge.hw.trainer.engine import HostSel, TrainEngine
from ttforge.hw.trainer.program import TrainEngineConfig
from ttforge.hw.trainer.regmap import TOP_ERRORS, WINDOW_ORDER, TrainRegisterMap

__all__ = ["TRAIN_TOP_NAME", "TrainAccel", "verilog", "generate_train_verilog",
           "verilator_waivers"]

TRAIN_TOP_NAME = "ttforge_train"

class TrainAccel(wiring.Component):
    """The training accelerator: ``axil`` (AXI4-Lite slave), ``s_axis`` (samples in), ``irq``."""

    def __init__(self, config: TrainEngineConfig, *, fault: str | None = None):
        if not isinstance(config, TrainEngineConfig):
            raise ConfigError(f"TrainAccel needs a TrainEngineConfig, got {type(config).__name__}")
        from ttforge.hw.faults import TRAIN_ENGINE_FAULTS, check_fault

        #: a deliberate fault of ``hw.faults.TRAIN_FAULTS`` built into the engine (mutation
        #: runs only; ``None`` is the real hardware)
        self.fault = check_fault(fault, TRAIN_ENGINE_FAULTS, "TrainAccel")
        self.config = config
        self.regmap = TrainRegisterMap(config)
        self.addr_bits = self.regmap.addr_bits
        super().__init__({
            "axil": In(AXI4LiteSignature(self.addr_bits)),
            "s_axis": In(AXISSignature(stream_lane_bits(config.train.act_bits))),
            "irq": Out(1),
        })

    def _rf_map(self):
        regs = []
        for r in self.regmap.registers:
            access = "WO" if r.name == "RNG" else r.access   # RNG reads: served by the top
            regs.append(_AReg(r.name, r.addr, access, r.width, r.reset))
        wins = [_AWin(w.name, w.base, w.depth, 32) for w in self.regmap.windows if w.access == "RW"]
        return regs, wins

    def elaborate(self, platform):
        m = Module()
        cfg, rm = self.config, self.regmap
        AB = self.addr_bits
        m.submodules.engine = eng = (TrainEngine(cfg) if self.fault is None
                                     else TrainEngine(cfg, fault=self.fault))
        m.submodules.axil = slave = AXI4LiteSlave(AB)
        m.submodules.regs = rf = RegisterFile(self._rf_map(), AB)
        ax, inner = self.axil, slave.axil
        st = eng.status

        # ------------------------------------------------ AW, W, B, R pass straight through
        # (every VALID/READY/irq output is LOW during reset, from power-up on: hw/axil.py)
        for name in ("awaddr", "awvalid", "wdata", "wstrb", "wvalid", "bready", "rready"):
            m.d.comb += getattr(inner, name).eq(getattr(ax, name))
        for name in ("bresp", "rdata", "rresp"):
            m.d.comb += getattr(ax, name).eq(getattr(inner, name))
        for name in ("awready", "wready", "bvalid", "rvalid"):
            m.d.comb += getattr(ax, name).eq(low_in_reset(getattr(inner, name)))

        # ------------------------------------------------ window decode (word addresses)
        rb_log = (rm.region_bytes - 1).bit_length()      # byte-address bits inside a region
        wins = list(rm.windows)

        def decode(word_addr, prefix):
            """``(hit, writable, sel, offset)`` of a word address."""
            region = word_addr[rb_log - 2:]
            offset = Signal(rb_log - 2, name=f"{prefix}_off")
            m.d.comb += offset.eq(word_addr[:rb_log - 2])
            hit, wr = Signal(name=f"{prefix}_hit"), Signal(name=f"{prefix}_rw")
            sel = Signal(HostSel, name=f"{prefix}_sel")
            for i, w in enumerate(wins):
                assert w.name == WINDOW_ORDER[i]
                with m.If((region == i + 1) & (offset < w.depth)):
                    m.d.comb += [hit.eq(1), wr.eq(int(w.access == "RW")), sel.eq(HostSel[w.name])]
            return hit, wr, sel, offset

        busy = Signal()
        m.d.comb += busy.eq(st.busy)

        # ------------------------------------------------ AR gate: fetch window elements first
        g_full = Signal()
        g_addr = Signal(AB)
        g_phase = Signal(2)          # 0: decide, 1: wait for the element, 2: forward
        latch = Signal(32)
        latch_err = Signal()
        g_hit, _, g_sel, g_off = decode(g_addr[2:], "ar")
        ar_ready = Signal()         # the gate's ARREADY (the port: LOW during reset as well)
        m.d.comb += [ar_ready.eq(~g_full & inner.arready), ax.arready.eq(low_in_reset(ar_ready)),
                     inner.araddr.eq(g_addr), inner.arvalid.eq(g_full & (g_phase == 2))]
        with m.If(ax.arvalid & ar_ready):
            m.d.sync += [g_full.eq(1), g_addr.eq(ax.araddr), g_phase.eq(0)]
        any_we = Signal()
        rd_issue = Signal()
        with m.If(g_full):
            with m.Switch(g_phase):
                with m.Case(0):
                    with m.If(~g_hit):
                        m.d.sync += g_phase.eq(2)
                    with m.Elif(busy):
                        m.d.sync += [latch.eq(0), latch_err.eq(1), g_phase.eq(2)]
                    with m.Elif(~any_we):
                        m.d.comb += rd_issue.eq(1)
                        m.d.sync += g_phase.eq(1)
                with m.Case(1):
                    with m.If(eng.host_rvalid):
                        m.d.sync += [latch.eq(eng.host_rdata), latch_err.eq(0), g_phase.eq(2)]
                with m.Case(2):
                    with m.If(inner.arready):
                        m.d.sync += g_full.eq(0)

        # ------------------------------------------------ register bus between slave and file
        sb, fb = slave.bus, rf.bus
        rng_word = rm.addr("RNG") >> 2
        r_hit, _, _, _ = decode(sb.r_addr, "rb")
        w_hit, w_rw, _, _ = decode(sb.w_addr, "wb")
        r_rng = Signal()
        m.d.comb += r_rng.eq(sb.r_addr == rng_word)
        # the program registers the step reads while it runs (a write took effect on the step
        # in flight: its state was then no program's)
        prog_words = [rm.addr(n) >> 2 for n in ("BATCH", "BW_LOG", "IN_COUNT", "IN_BASE", "STOCH")]
        w_busy_reg = Signal()
        m.d.comb += w_busy_reg.eq(Cat(*(sb.w_addr == w for w in (rng_word, *prog_words))).any())
        w_block = Signal()      # a write that must not happen: SLVERR
        m.d.comb += w_block.eq((w_hit & (busy | ~w_rw)) | (w_busy_reg & busy))
        m.d.comb += [fb.w_stb.eq(sb.w_stb & ~w_block), fb.w_addr.eq(sb.w_addr),
                     fb.w_data.eq(sb.w_data), fb.w_strb.eq(sb.w_strb),
                     sb.w_err.eq(fb.w_err | w_block),
                     fb.r_stb.eq(sb.r_stb & ~r_hit & ~r_rng), fb.r_addr.eq(sb.r_addr)]
        with m.If(r_hit):
            m.d.comb += [sb.r_data.eq(latch), sb.r_err.eq(latch_err)]
        with m.Elif(r_rng):
            m.d.comb += [sb.r_data.eq(st.rng), sb.r_err.eq(0)]
        with m.Else():
            m.d.comb += [sb.r_data.eq(fb.r_data), sb.r_err.eq(fb.r_err)]

        # ------------------------------------------------ the engine's host port
        host = eng.host
        we = {w.name: getattr(rf, f"{w.name.lower()}_we") for w in wins if w.access == "RW"}
        m.d.comb += any_we.eq(sum(we.values()) != 0)
        with m.If(any_we):
            for name, w_en in we.items():
                with m.If(w_en):
                    m.d.comb += [host.sel.eq(HostSel[name]),
                                 host.addr.eq(getattr(rf, f"{name.lower()}_addr")),
                                 host.wdata.eq(getattr(rf, f"{name.lower()}_data")),
                                 host.we.eq(1)]
        with m.Else():
            m.d.comb += [host.sel.eq(g_sel), host.addr.eq(g_off), host.re.eq(rd_issue)]

        # ------------------------------------------------ program, control, status
        prog = eng.program
        m.d.comb += [prog.batch.eq(rf.batch), prog.bw_log.eq(rf.bw_log),
                     prog.in_count.eq(rf.in_count), prog.in_base.eq(rf.in_base),
                     prog.stoch.eq(rf.stoch), prog.rng_load.eq(rf.rng_wstb)]
        # RNG is RW on the map, so a write honours WSTRB like every RW register: the file
        # holds it as WO (reads are the generator's state, served above), whose pulse
        # carries the strobed bytes only; the others come from the state, and the mask is
        # registered with the pulse (a one-byte write loaded 0x000000DD, no strobe 0)
        rng_keep = Signal(32)
        m.d.sync += rng_keep.eq(~Cat(*(bit.replicate(8) for bit in fb.w_strb)))
        m.d.comb += prog.rng_value.eq(rf.rng | (st.rng & rng_keep))
        start = Signal()
        t_bad = Signal()            # a beat breaks the TLAST rule (see "samples" below)
        t_err = Signal()            # the TLAST error stands
        error = Signal()            # the engine's or the stream's
        m.d.comb += [start.eq(rf.cmd[0]),
                     # a TLAST error stops the step in the cycle of its beat
                     eng.control.soft_reset.eq(rf.cmd[1] | t_bad),
                     eng.control.clear_error.eq(rf.cmd[2]), error.eq(st.error | t_err)]
        armed = Signal()
        with m.If(start):
            m.d.sync += armed.eq(1)
        with m.If(busy | error | rf.cmd[1] | rf.cmd[2]):
            m.d.sync += armed.eq(0)
        m.d.comb += eng.control.enable.eq((rf.ctrl[0] | armed) & ~t_err)
        busy_d, err_d = Signal(name="busy_d"), Signal(name="err_d")
        m.d.sync += [busy_d.eq(busy), err_d.eq(error)]
        done = Signal()
        with m.If(start | (busy & ~busy_d)):
            m.d.sync += done.eq(0)
        with m.If(st.done_pulse):
            m.d.sync += done.eq(1)
        err_pulse = Signal()
        m.d.comb += err_pulse.eq(error & ~err_d)
        t_code = Signal(8)
        t_smp_err = Signal(16)
        t_ready = Signal()          # the sample stream's TREADY (the port: LOW during reset)
        m.d.comb += [
            rf.status.eq(busy | (done << 1) | (error << 2) | (armed << 3) | (t_ready << 4)),
            rf.error_code.eq(Mux(t_err, t_code | (t_smp_err << 16),
                                 st.error_code.as_value() | (st.error_op << 16))),
            rf.op.eq(st.op),
            rf.cycles.eq(st.cycles), rf.mac_cycles.eq(st.mac_cycles),
            rf.steps.eq(st.steps), rf.changed.eq(st.changed),
            rf.irq_status_set.eq(st.done_pulse | (err_pulse << 1)),
            self.irq.eq(low_in_reset(((rf.irq_status & (rf.ctrl >> 1)) & 0b11) != 0)),
        ]
        for r in rm.registers:      # constants read their value
            if r.access == "RO" and r.value is not None:
                m.d.comb += getattr(rf, r.port).eq(r.value)

        # ------------------------------------------------ samples, and the TLAST check
        ab = cfg.train.act_bits
        ax_s = self.s_axis
        t_pos = Signal(16)          # the element the next beat is (IN_COUNT: the label) ...
        t_smp = Signal(16)          # ... of this sample of the batch: the engine's in_f, in_b
        t_drop = Signal()           # discarding the rest of a packet after TLAST_LATE
        beat = Signal()             # a beat the engine takes
        is_label = Signal()
        m.d.comb += [eng.inp.payload.eq(ax_s.tdata[:ab].as_signed()),
                     eng.inp.valid.eq(ax_s.tvalid & ~t_drop),
                     t_ready.eq(eng.inp.ready | t_drop), ax_s.tready.eq(low_in_reset(t_ready)),
                     beat.eq(ax_s.tvalid & eng.inp.ready & ~t_drop),
                     is_label.eq(t_pos == rf.in_count),
                     t_bad.eq(beat & rf.ctrl[3] & (ax_s.tlast != is_label))]
        # the position follows the engine's input writer: it starts at 0 whenever the
        # engine is not taking samples (a new batch, a step's end, an abort)
        with m.If(~eng.inp.ready):
            m.d.sync += [t_pos.eq(0), t_smp.eq(0)]
        with m.Elif(beat):
            m.d.sync += [t_pos.eq(Mux(is_label, 0, t_pos + 1)), t_smp.eq(t_smp + is_label)]
        with m.If(t_drop & ax_s.tvalid & ax_s.tlast):
            m.d.sync += t_drop.eq(0)
        with m.If(rf.cmd[1] | rf.cmd[2]):
            m.d.sync += t_err.eq(0)
        with m.If(t_bad):           # the first error is kept (the engine is idle meanwhile)
            m.d.sync += [t_err.eq(1), t_smp_err.eq(t_smp), t_drop.eq(is_label),
                         t_code.eq(Mux(is_label, TOP_ERRORS["TLAST_LATE"], TOP_ERRORS["TLAST_EARLY"]))]
        with m.If(rf.cmd[1]):       # a soft reset also ends a discard
            m.d.sync += t_drop.eq(0)
        return m


def verilog(config: TrainEngineConfig, *, reset: str = "rst", name: str = TRAIN_TOP_NAME,
            fault: str | None = None) -> str:
    """The Verilog text of ``TrainAccel(config)`` as module ``name`` (``ttforge_train``):
    ports ``clk``, ``rst`` (active high, synchronous; ``reset="aresetn"``: ``aresetn``,
    active low, synchronous), ``s_axil_*``, ``s_axis_*``, ``irq``. Byte-identical for the
    same inputs. ``fault`` builds a deliberately broken engine (mutation runs)."""
    from ttforge.hw.top import emit_with_reset

    core = TrainAccel(config, fault=fault)
    return emit_with_reset(core, name, port_map(core, {"axil": "s_axil", "s_axis": "s_axis", "irq": "irq"}),
                           reset)


#: the name the task and the docs use
generate_train_verilog = verilog


def verilator_waivers(*, name: str = TRAIN_TOP_NAME) -> str:
    """The ``.vlt`` configuration for ``verilog(config, name=name)`` saved as
    ``<name>.v``: the inference top's waivers and the training engine's own, each with
    its reason and applying to that file only (``verilator --lint-only -Wall`` reports
    nothing with them; ``tests/hw/trainer/test_top.py`` checks it)."""
    from ttforge.hw.top import _scope_waivers, verilator_waivers as accel_waivers

    return accel_waivers(name=name) + _scope_waivers(
        "// Signals of the training engine that are read only in part, by design: addresses\n"
        "// and result tags computed one bit wider than the memories they index (a base plus\n"
        "// an offset, carried through the pipeline delays: bias_addr, mask_addr_d*, to*,\n"
        "// y_o_d*), the update unit's sum that it halves (update.sum3 >> 1: bit 0 unread),\n"
        "// the bias aligner's bit length (balign.blh, sized for any limit), and the registered\n"
        "// copy of the program inputs (prog_q), of which only the fields that must settle\n"
        "// before a step are compared. Only such partly read signals of the engine are\n"
        "// waived: a signal nothing reads at all is still reported (\"Signal is not used\").\n"
        "lint_off -rule UNUSEDSIGNAL -match \"Bits of signal are not used: '*engine.*\"\n"
        "// The ACT memories' address registers in one copy per memory (act_ra_g*, aw_addr_g*,\n"
        "// kept apart for synthesis): where Yosys names such a register after the memory port\n"
        "// it drives, the kept copy's own name remains as an alias that nothing reads.\n"
        "lint_off -rule UNUSEDSIGNAL -match \"Signal is not used: '*engine.act_ra_g*\"\n"
        "lint_off -rule UNUSEDSIGNAL -match \"Signal is not used: '*engine.aw_addr_g*\"\n"
        "// The requantization decode's own SHIFT and SAT_BITS copies (rq_shift_h, rq_sat_h,\n"
        "// kept apart from the descriptor's flags): the kept registers take the names of the\n"
        "// decode's inputs they drive, and those aliases are read by nothing.\n"
        "lint_off -rule UNUSEDSIGNAL -match \"Signal is not used: '*engine.sat_bits'\"\n"
        "lint_off -rule UNUSEDSIGNAL -match \"Signal is not used: '*engine.shift$*'\"\n", name)
