"""``TTAccel``: the engine behind an AXI4-Lite slave and two AXI4-Stream ports.

:class:`TTAccel` puts the engine (``hw/engine.py``), the register file built from the
register map (``hw/regmap.py``, through :mod:`ttforge.hw.axil`) and the stream adapters
(:mod:`ttforge.hw.axis`) together, and :func:`verilog` emits it as the Verilog module
``ttforge_accel`` with the conventional port names:

``clk``, ``rst`` (or ``aresetn``), ``s_axil_aw*/w*/b*/ar*/r*`` (AXI4-Lite slave),
``s_axis_tdata/tvalid/tready/tlast`` (input vectors), ``m_axis_tdata/tvalid/tready/tlast``
(output vectors), ``irq``.

Clock and reset: one clock, ``clk``, rising edge; every flip-flop is in its domain.
``rst`` is **active high and synchronous** (sampled on the rising edge of ``clk``; hold
it for at least one cycle). AXI's own convention is the active-low ``aresetn``;
``verilog(config, reset="aresetn")`` emits that port instead (still synchronous: the
core resets on a rising edge of ``clk`` while ``aresetn`` is low).

Binding: registers and register fields bind to the engine ports of the same
lower-case name (``IN_COUNT`` -> ``in_count``, ``CTRL.SOFT_RESET`` -> ``soft_reset``,
``CYCLES_LO``/``CYCLES_HI`` -> ``cycles``; windows ``DMEM``/``CMEM``/``BMEM`` ->
``dmem_addr/data/we``...). A write-1 field on a read-write register drives a one-cycle
pulse; the ``W1C`` interrupt-status bits are set by the engine's ``done`` pulse and by
the rising edge of ``error``; ``irq`` is high while any enabled status bit is set.
A read-only register that binds to no engine port reads as its reset value (e.g. an
ID or a configuration word). Every engine input must be bound, or generation fails.
"""

from __future__ import annotations

from typing import Any

from amaranth.hdl import ClockDomain, Elaboratable, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ttforge.hw.axil import AXI4LiteSignature, AXI4LiteSlave, RegisterFile, normalize_regmap
from ttforge.hw.axis import AXISSignature, AXISToElements, ElementsToAXIS
from ttforge.hw.emit import VERILATOR_WAIVERS, emit_verilog, port_map
from ttforge.hw.faults import ENGINE_FAULTS

__all__ = ["TOP_NAME", "TTAccel", "verilog", "verilator_waivers", "PULSE_PORTS"]

TOP_NAME = "ttforge_accel"

#: engine control inputs that act on a one-cycle pulse
PULSE_PORTS = ("clear_error", "clear_counters", "soft_reset", "start")


def _fields(regmap: Any) -> dict[str, list[tuple[str, int, int]]]:
    """``register name -> [(field name, lsb, width)]`` from a RegisterMap (if it has
    bit fields)."""
    out: dict[str, list[tuple[str, int, int]]] = {}
    regs = getattr(regmap, "registers", None)
    if regs is None:
        return out
    if isinstance(regs, dict):
        regs = list(regs.values())
    for r in regs:
        fs = getattr(r, "fields", None) or getattr(r, "bitfields", None) or []
        if isinstance(fs, dict):
            fs = list(fs.values())
        lst = []
        for f in fs:
            name = getattr(f, "name")
            lsb = getattr(f, "lsb", getattr(f, "offset", getattr(f, "bit", None)))
            width = getattr(f, "width", getattr(f, "bits", 1))
            lst.append((str(name).upper(), int(lsb), int(width)))
        out[str(r.name).upper()] = lst
    return out


class TTAccel(wiring.Component):
    """The accelerator: ``axil`` (AXI4-Lite slave), ``s_axis`` (in), ``m_axis`` (out), ``irq``.

    ``engine`` and ``regmap`` default to ``TTEngine(config)`` and
    ``RegisterMap(config)``; tests may pass stand-ins. ``fault`` names a deliberate
    fault of :data:`ttforge.hw.faults.FAULTS` (tests that must fail only; ``None``
    builds the real hardware).
    """

    def __init__(self, config, *, engine=None, regmap=None, fault=None):
        from ttforge.hw.faults import check_fault
        self.fault = check_fault(fault)
        if fault is not None and engine is not None and fault in ENGINE_FAULTS:
            raise ValueError(f"fault={fault!r} is in the engine; pass it to the engine instead")
        self.config = config
        if regmap is None:
            from ttforge.hw.regmap import RegisterMap
            regmap = RegisterMap(config)
        self.regmap = regmap
        self._engine = engine
        W = config.tdata_bits if hasattr(config, "tdata_bits") else \
            config.stream_elems * ((config.act_bits + 7) // 8 * 8)
        super().__init__({
            "axil": In(AXI4LiteSignature(config.axil_addr_bits)),
            "s_axis": In(AXISSignature(W)),
            "m_axis": Out(AXISSignature(W)),
            "irq": Out(1),
        })

    def _make_engine(self):
        if self._engine is not None:
            return self._engine
        from ttforge.hw.engine import TTEngine
        if self.fault in ENGINE_FAULTS:
            return TTEngine(self.config, fault=self.fault)
        return TTEngine(self.config)

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        engine = self._make_engine()
        slave = AXI4LiteSlave(cfg.axil_addr_bits,
                              fault=self.fault if self.fault == "axil_double_resp" else None)
        rf = RegisterFile(self.regmap, cfg.axil_addr_bits)
        unpack = AXISToElements(cfg, count_bits=len(engine.in_count))
        pack = ElementsToAXIS(cfg, fault=self.fault if self.fault == "axis_unstable" else None)
        m.submodules.engine = engine
        m.submodules.axil = slave
        m.submodules.regs = rf
        m.submodules.s_axis = unpack
        m.submodules.m_axis = pack

        wiring.connect(m, wiring.flipped(self.axil), slave.axil)
        wiring.connect(m, slave.bus, rf.bus)
        wiring.connect(m, wiring.flipped(self.s_axis), unpack.s)
        wiring.connect(m, unpack.out, engine.inp)
        wiring.connect(m, engine.out, pack.inp)
        wiring.connect(m, pack.m, wiring.flipped(self.m_axis))
        m.d.comb += unpack.count.eq(engine.in_count)

        self._bind(m, engine, rf, unpack, pack)
        return m

    # ------------------------------------------------------------------ binding
    def _bind(self, m, engine, rf, unpack, pack):
        regs, windows = normalize_regmap(self.regmap)
        fields = _fields(self.regmap)
        members = engine.signature.members
        bound: set[str] = {"inp", "out"}
        paired = {n for base in rf.pairs for n in (base + "_LO", base + "_HI")}

        def engine_port(names, flow):
            for n in names:
                if n in members and members[n].flow == flow:
                    return n
            return None

        def field_names(reg, fname):
            # CTRL.ENABLE -> enable; ERROR_CODE.STEP -> error_step; ERROR_CODE.CODE -> error_code
            return [fname.lower(), f"{reg}_{fname}".lower(), f"{reg.split('_')[0]}_{fname}".lower()]

        # events derived from the engine's status
        soft_reset = Signal()
        error_rise = Signal()
        busy_rise = Signal()
        done_flag = Signal()   # STATUS.DONE: set by the done pulse, cleared when the next starts
        if "error" in members:
            error_q = Signal()
            m.d.sync += error_q.eq(engine.error)
            m.d.comb += error_rise.eq(engine.error & ~error_q)
        if "busy" in members:
            busy_q = Signal()
            m.d.sync += busy_q.eq(engine.busy)
            m.d.comb += busy_rise.eq(engine.busy & ~busy_q)
        if "done" in members:
            with m.If(engine.done):
                m.d.sync += done_flag.eq(1)
            with m.Elif(busy_rise | soft_reset):
                m.d.sync += done_flag.eq(0)
        events = {"done": engine.done if "done" in members else None, "error": error_rise}

        irq_bits = {}      # IRQ_STATUS field -> its sticky bit
        irq_enables = {}   # field -> enable bit (a field IRQ_<F>_EN of a RW register)
        for r in regs:
            if r.name in paired:
                continue
            rfp = getattr(rf, r.port)
            fl = fields.get(r.name) or []
            if r.access in ("RW", "WO"):
                wstb = getattr(rf, r.port + "_wstb")
                if fl:
                    targets = [(engine_port(field_names(r.name, f), wiring.In), lsb, w, f)
                               for f, lsb, w in fl]
                else:
                    targets = [(engine_port([r.port], wiring.In), 0, r.width, r.name)]
                for name, lsb, w, fname in targets:
                    val = rfp[lsb:lsb + w]
                    mt = fname.startswith("IRQ_") and fname.endswith("_EN")
                    if mt:
                        irq_enables[fname[4:-3]] = val[0]
                    if name is None:
                        continue
                    if name in PULSE_PORTS and r.access == "RW":
                        val = val & wstb.replicate(w)
                    m.d.comb += getattr(engine, name).eq(val)
                    bound.add(name)
                    if name == "soft_reset":
                        m.d.comb += soft_reset.eq(val[0])
            elif r.access == "RO":
                value = Signal(r.width, name=f"{r.port}_value")
                m.d.comb += value.eq(r.reset & ((1 << r.width) - 1))   # constants read their value
                if fl:
                    for f, lsb, w in fl:
                        if r.name == "STATUS" and f == "DONE" and "done" in members:
                            m.d.comb += value[lsb:lsb + w].eq(done_flag)
                            continue
                        name = engine_port(field_names(r.name, f), wiring.Out)
                        if name is not None:
                            m.d.comb += value[lsb:lsb + w].eq(getattr(engine, name))
                            bound.add(name)
                else:
                    name = engine_port([r.port], wiring.Out)
                    if name is not None:
                        m.d.comb += value.eq(getattr(engine, name))
                        bound.add(name)
                m.d.comb += rfp.eq(value)
            elif r.access == "W1C":
                setb = getattr(rf, r.port + "_set")
                for f, lsb, w in fl:
                    ev = events.get(f.lower())
                    if ev is not None:
                        m.d.comb += setb[lsb].eq(ev)
                        bound.add(f.lower())
                    irq_bits[f] = rfp[lsb]
        # irq: any interrupt-status bit whose enable is set (no enables: any bit)
        terms = [bit & irq_enables[f] if f in irq_enables else bit for f, bit in irq_bits.items()]
        if terms:
            any_term = terms[0]
            for t in terms[1:]:
                any_term = any_term | t
            m.d.comb += self.irq.eq(any_term)

        for base in rf.pairs:
            name = base.lower()
            if name in members:
                m.d.comb += getattr(rf, name).eq(getattr(engine, name))
                bound.add(name)
        for w in windows:
            for suffix in ("addr", "data", "we"):
                name = f"{w.port}_{suffix}"
                if name in members:
                    m.d.comb += getattr(engine, name).eq(getattr(rf, name))
                    bound.add(name)
        m.d.comb += [unpack.flush.eq(soft_reset), pack.flush.eq(soft_reset)]

        unbound = [n for n, mem in members.items() if mem.flow == wiring.In and n not in bound]
        if unbound:
            raise ValueError("TTAccel: engine inputs with no register or window in the "
                             f"register map: {', '.join(unbound)}")


class _ActiveLowReset(Elaboratable):
    """Wraps the core with ``clk`` and an active-low synchronous ``aresetn``."""

    def __init__(self, core: TTAccel):
        self.core = core
        self.clk = Signal()
        self.aresetn = Signal(init=1)

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = cd = ClockDomain("sync")
        m.d.comb += [cd.clk.eq(self.clk), cd.rst.eq(~self.aresetn)]
        m.submodules.core = self.core
        return m


def _ports(core: TTAccel) -> dict:
    return port_map(core, {"axil": "s_axil", "s_axis": "s_axis", "m_axis": "m_axis", "irq": "irq"})


def verilog(config, *, reset: str = "rst", engine=None, regmap=None, name: str = TOP_NAME,
            fault=None) -> str:
    """The Verilog text of ``TTAccel(config)`` as module ``name`` (default ``ttforge_accel``).

    ``reset="rst"`` (default): ports ``clk`` and ``rst`` (active high, synchronous);
    ``reset="aresetn"``: ``clk`` and ``aresetn`` (active low, synchronous). The same
    inputs always give byte-identical text. ``fault`` builds a deliberately broken
    variant (:data:`ttforge.hw.faults.FAULTS`; for the mutation and formal checks).
    """
    from ttforge.hw.faults import check_fault
    check_fault(fault)
    core = TTAccel(config, engine=engine, regmap=regmap, fault=fault)
    ports = _ports(core)
    if reset == "rst":
        return emit_verilog(core, name, ports)
    if reset == "aresetn":
        from amaranth.hdl import _ir
        top = _ActiveLowReset(core)
        ports = {"clk": (top.clk, _ir.PortDirection.Input),
                 "aresetn": (top.aresetn, _ir.PortDirection.Input), **ports}
        return emit_verilog(top, name, ports)
    raise ValueError(f"reset={reset!r} must be 'rst' or 'aresetn'")


def verilator_waivers() -> str:
    """The ``.vlt`` Verilator configuration to lint the emitted Verilog with."""
    return VERILATOR_WAIVERS

