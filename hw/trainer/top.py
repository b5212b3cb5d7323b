"""``TrainAccel``: the training engine behind an AXI4-Lite slave and an AXI4-Stream input.

The same conventions as the inference top (:mod:`ttforge.hw.top`): one clock ``clk``,
``rst`` active high and synchronous (or ``aresetn``, see :func:`verilog`),
``s_axil_aw*/w*/b*/ar*/r*`` (AXI4-Lite slave, :class:`ttforge.hw.axil.AXI4LiteSlave`
unchanged, with the register file :class:`ttforge.hw.axil.RegisterFile` built from the
training register map :mod:`ttforge.hw.trainer.regmap`), ``s_axis_tdata/tvalid/tready/
tlast`` (the labelled samples) and ``irq``.

What the top adds around the slave and the register file:

* **read windows** onto the engine memories. The register bus answers a read in the
  cycle it is strobed, the engine's ``host`` port two cycles after ``re``; so a gate on
  the AR channel holds each read address, and if it falls in a window, reads the
  element through ``host`` first (while the engine is idle; otherwise the answer is
  ``SLVERR``) and only then passes the address on to the slave, whose register bus
  answers it from the latched element. The gate takes a new address only when the
  slave holds none, so the latch is never overwritten before it was used.
* **write windows** ``DMEM``/``CMEM``/``BMEM``: the register file's window ports drive
  ``host.we``; a window write (and a write of ``RNG``) while the engine is busy answers
  ``SLVERR`` and has no effect. Writes to the read-only windows answer ``SLVERR``.
* ``RNG``: a read returns the generator state, a write loads it.
* ``CMD.START`` arms exactly one step (the engine's ``enable`` is
  ``CTRL.ENABLE | armed``, and ``armed`` clears when the step starts); ``STATUS.DONE``
  and the interrupt bits.
* the sample stream: one element per beat (``tdata`` is ``act_bits`` rounded up to
  bytes; the low ``act_bits`` are the element, two's complement); each sample is
  ``IN_COUNT`` features then its label; ``tlast`` is not used (a master may set it on
  each label). ``tready`` is high while the engine takes samples (``STATUS.IN_OPEN``).
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ttforge.errors import ConfigError
from ttforge.hw.axil import AXI4LiteSignature, AXI4LiteSlave, RegisterFile
from ttforge.hw.axil import Reg as _AReg
from ttforge.hw.axil import Window as _AWin
from ttforge.hw.axis import AXISSignature
from ttforge.hw.config import stream_lane_bits
from ttforge.hw.emit import VERILATOR_WAIVERS, port_map
from ttforge.hw.trainer.engine import HostSel, TrainEngine
from ttforge.hw.trainer.program import TrainEngineConfig
from ttforge.hw.trainer.regmap import WINDOW_ORDER, TrainRegisterMap

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
        for name in ("awaddr", "awvalid", "wdata", "wstrb", "wvalid", "bready", "rready"):
            m.d.comb += getattr(inner, name).eq(getattr(ax, name))
        for name in ("awready", "wready", "bresp", "bvalid", "rdata", "rresp", "rvalid"):
            m.d.comb += getattr(ax, name).eq(getattr(inner, name))

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
        m.d.comb += [ax.arready.eq(~g_full & inner.arready),
                     inner.araddr.eq(g_addr), inner.arvalid.eq(g_full & (g_phase == 2))]
        with m.If(ax.arvalid & ax.arready):
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
        w_block = Signal()      # a write that must not happen: SLVERR
        m.d.comb += w_block.eq((w_hit & (busy | ~w_rw)) | ((sb.w_addr == rng_word) & busy))
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
                     prog.stoch.eq(rf.stoch), prog.rng_value.eq(rf.rng),
                     prog.rng_load.eq(rf.rng_wstb)]
        start = Signal()
        m.d.comb += [start.eq(rf.cmd[0]), eng.control.soft_reset.eq(rf.cmd[1]),
                     eng.control.clear_error.eq(rf.cmd[2])]
        armed = Signal()
        with m.If(start):
            m.d.sync += armed.eq(1)
        with m.If(busy | st.error | rf.cmd[1] | rf.cmd[2]):
            m.d.sync += armed.eq(0)
        m.d.comb += eng.control.enable.eq(rf.ctrl[0] | armed)
        busy_d, err_d = Signal(), Signal()
        m.d.sync += [busy_d.eq(busy), err_d.eq(st.error)]
        done = Signal()
        with m.If(start | (busy & ~busy_d)):
            m.d.sync += done.eq(0)
        with m.If(st.done_pulse):
            m.d.sync += done.eq(1)
        err_pulse = Signal()
        m.d.comb += err_pulse.eq(st.error & ~err_d)
        m.d.comb += [
            rf.status.eq(busy | (done << 1) | (st.error << 2) | (armed << 3) | (eng.inp.ready << 4)),
            rf.error_code.eq(st.error_code.as_value() | (st.error_op << 16)),
            rf.op.eq(st.op),
            rf.cycles.eq(st.cycles), rf.mac_cycles.eq(st.mac_cycles),
            rf.steps.eq(st.steps), rf.changed.eq(st.changed),
            rf.irq_status_set.eq(st.done_pulse | (err_pulse << 1)),
            self.irq.eq(((rf.irq_status & (rf.ctrl >> 1)) & 0b11) != 0),
        ]
        for r in rm.registers:      # constants read their value
            if r.access == "RO" and r.value is not None:
                m.d.comb += getattr(rf, r.port).eq(r.value)

        # ------------------------------------------------ samples
        ab = cfg.train.act_bits
        m.d.comb += [eng.inp.payload.eq(self.s_axis.tdata[:ab].as_signed()),
                     eng.inp.valid.eq(self.s_axis.tvalid),
                     self.s_axis.tready.eq(eng.inp.ready)]
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


def verilator_waivers() -> str:
    """The ``.vlt`` configuration for the emitted training top."""
    return VERILATOR_WAIVERS + (
        "// The training top takes one element per beat; tlast is not used (docs/hardware.md,\n"
        "// \"Training engine: registers and host protocol\").\n"
        "lint_off -rule UNUSEDSIGNAL -file \"*\" -match \"*'s_axis_tlast'*\"\n")
