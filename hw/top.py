"""``TTAccel``: the engine behind an AXI4-Lite slave and two AXI4-Stream ports.

:class:`TTAccel` puts the engine (``hw/engine.py``), the register file built from the
register map (``hw/regmap.py``, through :mod:`ttforge.hw.axil`) and the stream adapters
(:mod:`ttforge.hw.axis`) together, and :func:`verilog` emits it as the Verilog module
``ttforge_accel`` with the conventional port names:

``clk``, ``rst`` (or ``aresetn``), ``s_axil_aw*/w*/b*/ar*/r*`` (AXI4-Lite slave),
``s_axis_tdata/tvalid/tready/tlast`` (input vectors), ``m_axis_tdata/tvalid/tready/tlast``
(output vectors), ``irq``. Every ``*valid``/``*ready`` output and ``irq`` is LOW while
reset is asserted, from power-up on, whatever the registers behind them power up to.

Clock and reset: one clock, ``clk``, rising edge; every flip-flop is in its domain.
``rst`` is **active high and synchronous** (sampled on the rising edge of ``clk``; hold
it for at least one cycle). AXI's own convention is the active-low ``aresetn``;
``verilog(config, reset="aresetn")`` emits that port instead (still synchronous: the
core resets on a rising edge of ``clk`` while ``aresetn`` is low).

Binding: by declaration. Each register, register field and window of the register map
(``hw/regmap.py``) that the engine serves names its engine port (``bind``:
``"control.enable"``, ``"status.error_code"``, ``"counters.cycles"`` on a counter's
``_LO`` register, ``"load.cmem"`` on a window), and the engine's ports are the typed
groups of :mod:`ttforge.hw.engine.signatures`. Writable bits drive ``control``/
``program`` inputs (a ``WO`` command is a one-cycle pulse); read-only bits read
``status``; the ``W1C`` interrupt-status bits are set by the ``status`` events they
name (``done_pulse``, ``error_pulse``) and enabled by the ``CTRL`` fields bound to
``irq_enable.<FIELD>``; ``irq`` is high while any enabled status bit is set. A
read-only register that binds to nothing reads as its reset value (an ID or a
configuration word). Every engine input must be bound, and every binding must name an
engine port of the right direction, or generation fails. The input adapter takes beats
only while the engine's ``status.in_open`` is high (``docs/hardware.md``).
"""

from __future__ import annotations

from amaranth.hdl import ClockDomain, Elaboratable, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ttforge.errors import ConfigError
from ttforge.hw.axil import (AXI4LiteSignature, AXI4LiteSlave, RegisterFile, connect_low_in_reset,
                             low_in_reset)
from ttforge.hw.target import target_family
from ttforge.hw.axis import AXISSignature, AXISToElements, ElementsToAXIS
from ttforge.hw.config import AccelConfig
from ttforge.hw.emit import VERILATOR_WAIVERS, emit_verilog, port_map
from ttforge.hw.faults import ENGINE_FAULTS
from ttforge.hw.regmap import RegisterMap

__all__ = ["TOP_NAME", "TTAccel", "verilog", "verilator_waivers"]

TOP_NAME = "ttforge_accel"


def _engine_ports(engine: wiring.Component) -> dict[str, tuple]:
    """``{"control.enable": (flow, value), ...}``: every leaf port of the engine below
    its stream ports, by dotted path."""
    out = {}
    for path, member, value in engine.signature.flatten(engine):
        if path[0] in ("inp", "out"):
            continue
        out[".".join(map(str, path))] = (member.flow, value)
    return out


class TTAccel(wiring.Component):
    """The accelerator: ``axil`` (AXI4-Lite slave), ``s_axis`` (in), ``m_axis`` (out), ``irq``.

    ``engine`` defaults to ``TTEngine(config)``; tests may pass a stand-in with the same
    port groups. ``fault`` names a deliberate fault of :data:`ttforge.hw.faults.FAULTS`
    (tests that must fail only; ``None`` builds the real hardware).
    """

    def __init__(self, config: AccelConfig, *, engine=None, fault=None):
        from ttforge.hw.faults import check_fault
        if not isinstance(config, AccelConfig):
            raise ConfigError(f"TTAccel needs an AccelConfig, got {type(config).__name__}")
        self.fault = check_fault(fault)
        if fault is not None and engine is not None and fault in ENGINE_FAULTS:
            raise ConfigError(f"fault={fault!r} is in the engine; pass it to the engine instead")
        self.config = config
        self.regmap = RegisterMap(config)
        self._engine = engine
        W = config.tdata_bits
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
        if self.config.engines > 1:
            from ttforge.hw.engine.array import EngineArray
            fault = self.fault if self.fault in ENGINE_FAULTS else None
            return EngineArray(self.config, fault=fault)
        if self.fault in ENGINE_FAULTS:
            return TTEngine(self.config, fault=self.fault)
        return TTEngine(self.config)

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        engine = self._make_engine()
        # reads answer a cycle later from a registered two-level multiplexer: the held
        # read address fanning out to the whole register file was an ECP5 critical path
        # (85dbcb2, seed 3: axil.ar_addr -> s_axil_rdata, 79% routing). Elaborated for the
        # iCE40, in the cycle after the address as before: its board clock is 12 MHz and
        # the register stage cost 120 of the 5,280 logic cells the MNIST network needs
        read_latency = 0 if target_family(platform) == "ice40" else 1
        self._elaborated_read_latency = read_latency          # (for the tests)
        slave = AXI4LiteSlave(cfg.axil_addr_bits, read_latency=read_latency,
                              fault=self.fault if self.fault == "axil_double_resp" else None)
        rf = RegisterFile(self.regmap, cfg.axil_addr_bits, read_latency=read_latency)
        unpack = AXISToElements(cfg, count_bits=len(engine.program.in_count),
                                fault=self.fault if self.fault == "skid_drop" else None)
        pack = ElementsToAXIS(cfg, fault=self.fault if self.fault in ("axis_unstable", "extra_beat") else None)
        m.submodules.engine = engine
        m.submodules.axil = slave
        m.submodules.regs = rf
        m.submodules.s_axis = unpack
        m.submodules.m_axis = pack

        # every VALID/READY/irq output is LOW during reset, from power-up on (hw/axil.py)
        connect_low_in_reset(m, self.axil, slave.axil)
        wiring.connect(m, slave.bus, rf.bus)
        connect_low_in_reset(m, self.s_axis, unpack.s)
        wiring.connect(m, unpack.out, engine.inp)
        wiring.connect(m, engine.out, pack.inp)
        connect_low_in_reset(m, self.m_axis, pack.m)
        m.d.comb += [unpack.count.eq(engine.program.in_count),
                     unpack.open.eq(engine.status.in_open),
                     unpack.flush.eq(engine.control.soft_reset),
                     pack.flush.eq(engine.control.soft_reset)]

        self._bind(m, engine, rf)
        return m

    # ------------------------------------------------------------------ binding
    def _bind(self, m, engine, rf):
        ports = _engine_ports(engine)
        bound: set[str] = set()

        def port(path, flow, where):
            if path not in ports:
                raise ConfigError(f"TTAccel: {where} is bound to {path!r}, which the engine "
                                 "does not have")
            if ports[path][0] != flow:
                raise ConfigError(f"TTAccel: {where} is bound to {path!r}, an engine "
                                 f"{'output' if flow == wiring.In else 'input'}")
            bound.add(path)
            return ports[path][1]

        paired = {r.name for lo, hi in rf.pairs.values() for r in (lo, hi)}
        irq_bits, irq_enables = {}, {}
        for r in self.regmap.registers:
            if r.name in paired:
                if r.bind is not None:             # the _LO register names the counter
                    m.d.comb += getattr(rf, r.name[:-3].lower()).eq(
                        port(r.bind, wiring.Out, r.name))
                continue
            rfp = getattr(rf, r.port)
            if r.access in ("RW", "WO"):
                targets = [(f.bind, f.lsb, f.width, f"{r.name}.{f.name}") for f in r.fields] \
                    or [(r.bind, 0, r.width, r.name)]
                for bind, lsb, w, where in targets:
                    if bind is None:
                        continue
                    if bind.startswith("irq_enable."):
                        irq_enables[bind.split(".", 1)[1]] = rfp[lsb]
                        continue
                    m.d.comb += port(bind, wiring.In, where).eq(rfp[lsb:lsb + w])
            elif r.access == "RO":
                value = Signal(r.width, name=f"{r.port}_value")
                m.d.comb += value.eq(r.reset & ((1 << r.width) - 1))   # constants read their value
                if r.bind is not None:
                    m.d.comb += value.eq(port(r.bind, wiring.Out, r.name))
                for f in r.fields:
                    if f.bind is not None:
                        m.d.comb += value[f.lsb:f.lsb + f.width].eq(
                            port(f.bind, wiring.Out, f"{r.name}.{f.name}"))
                m.d.comb += rfp.eq(value)
            elif r.access == "W1C":
                setb = getattr(rf, r.port + "_set")
                for f in r.fields:
                    if f.bind is not None:
                        m.d.comb += setb[f.lsb].eq(port(f.bind, wiring.Out, f"{r.name}.{f.name}"))
                    irq_bits[f.name] = rfp[f.lsb]
        for w in self.regmap.windows:
            if w.bind is None:
                continue
            for suffix in ("addr", "data", "we"):
                m.d.comb += port(f"{w.bind}.{suffix}", wiring.In, w.name).eq(
                    getattr(rf, f"{w.name.lower()}_{suffix}"))
        # irq: any interrupt-status bit whose enable is set (a bit without an enable: always)
        terms = [bit & irq_enables[f] if f in irq_enables else bit for f, bit in irq_bits.items()]
        if terms:
            any_term = terms[0]
            for t in terms[1:]:
                any_term = any_term | t
            m.d.comb += self.irq.eq(low_in_reset(any_term))

        # status.in_open and program.in_count are also read by the adapter (wired above)
        unbound = [p for p, (flow, _) in ports.items() if flow == wiring.In and p not in bound]
        if unbound:
            raise ConfigError("TTAccel: engine inputs with no register or window in the "
                             f"register map: {', '.join(unbound)}")


class _ActiveLowReset(Elaboratable):
    """Wraps the core with ``clk`` and an active-low synchronous ``aresetn``."""

    def __init__(self, core):
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


def verilog(config: AccelConfig, *, reset: str = "rst", engine=None, name: str = TOP_NAME,
            fault=None, platform=None) -> str:
    """The Verilog text of ``TTAccel(config)`` as module ``name`` (default ``ttforge_accel``).

    ``reset="rst"`` (default): ports ``clk`` and ``rst`` (active high, synchronous);
    ``reset="aresetn"``: ``clk`` and ``aresetn`` (active low, synchronous). The same
    inputs always give byte-identical text. ``fault`` builds a deliberately broken
    variant (:data:`ttforge.hw.faults.FAULTS`; for the mutation and formal checks).
    ``platform`` is what the design is elaborated for (``None``: generic Verilog, for
    simulation; :data:`ttforge.hw.ecp5_dsp.ECP5`: ECP5 synthesis, the multipliers as
    ``MULT18X18D`` instances with their registers).
    """
    from ttforge.hw.faults import check_fault
    check_fault(fault)
    core = TTAccel(config, engine=engine, fault=fault)
    return emit_with_reset(core, name, _ports(core), reset, platform)


def emit_with_reset(core, name: str, ports: dict, reset: str, platform=None) -> str:
    """Verilog of ``core`` as module ``name`` with ``ports`` and the reset convention
    ``reset``: ``"rst"`` (``clk``, ``rst`` active high, synchronous) or ``"aresetn"``
    (``clk``, ``aresetn`` active low, synchronous, through :class:`_ActiveLowReset`)."""
    if reset == "rst":
        return emit_verilog(core, name, ports, platform)
    if reset == "aresetn":
        from amaranth.hdl import _ir
        top = _ActiveLowReset(core)
        ports = {"clk": (top.clk, _ir.PortDirection.Input),
                 "aresetn": (top.aresetn, _ir.PortDirection.Input), **ports}
        return emit_verilog(top, name, ports, platform)
    raise ConfigError(f"reset={reset!r} must be 'rst' or 'aresetn'")


def _scope_waivers(text: str, name: str) -> str:
    """``text`` (a ``.vlt``) with every ``lint_off`` line scoped to the file ``<name>.v``.

    Two lines a waiver, ``-file "<name>.v"`` and ``-file "*/<name>.v"``: Verilator
    matches ``-file`` against the path as given on its command line, and ``*<name>.v``
    would also match a user's ``my_<name>.v``. Unscoped, a waiver switches its rule off
    in every file of the run, a user's SoC linted with the core included.
    """
    import re

    from ttforge.hw.emit import check_module_name

    check_module_name(name, "name")       # the rule generate --name checks, in one place
    out = []
    for line in text.splitlines():
        m = re.fullmatch(r'lint_off -rule (\S+)(?: -file "[^"]*")?(.*)', line)
        if m is None:
            out.append(line)
            continue
        out += [f'lint_off -rule {m[1]} -file "{f}"{m[2]}' for f in (f"{name}.v", f"*/{name}.v")]
    return "\n".join(out) + "\n"


def verilator_waivers(*, name: str = TOP_NAME) -> str:
    """The ``.vlt`` Verilator configuration to lint ``verilog(config, name=name)`` with,
    saved as ``<name>.v``: every waiver applies to that file only."""
    return _scope_waivers(VERILATOR_WAIVERS + (
        "// EngineArray (engines > 1) registers the broadcast load, program and control\n"
        "// inputs once per engine (load_*_e<j>, program_*_e<j>, control_*_e<j>, kept apart\n"
        "// for placement): Yosys names each register after the engine input it drives, and\n"
        "// the kept copy's own name remains as an alias that nothing reads.\n"
        "lint_off -rule UNUSEDSIGNAL -match \"Signal is not used: '*engine.load_*_e?'\"\n"
        "lint_off -rule UNUSEDSIGNAL -match \"Signal is not used: '*engine.program_*_e?'\"\n"
        "lint_off -rule UNUSEDSIGNAL -match \"Signal is not used: '*engine.control_*_e?'\"\n"
        "// Each engine's own done register (ctrl.done_r, its output ctrl.done_pulse) feeds\n"
        "// only the engine's STATUS.DONE and VECTORS, which the array keeps itself: Yosys\n"
        "// removes the register and leaves one of its two names, driven by nothing.\n"
        "lint_off -rule UNUSEDSIGNAL -match \"Signal is not driven, nor used: '*engine.engine?.ctrl.done_*'\"\n"
        "// The MAC lanes' valid register in one copy per group of lanes (pr_v_g<k>, more\n"
        "// than 16 lanes): the first copy takes the name of the valid it is a copy of, and\n"
        "// its own name remains as an alias that nothing reads.\n"
        "lint_off -rule UNUSEDSIGNAL -match \"Signal is not used: '*.issue.mac.pr_v_g*'\"\n"),
        name)

