"""An emitted top in Icarus as silicon without flip-flop initial values powers up.

:func:`strip_power_up` takes the power-up values out of the emitted Verilog (every
``reg x = v;`` initialiser, and the all-zero initial contents of the RAMs; a ROM's
contents are logic and stay); :func:`reset_testbench` is a plain Verilog testbench that
holds reset asserted from time zero, before any clock edge, checks that every
``*valid``/``*ready`` output and ``irq`` is exactly 0 throughout (not X, not 1), releases
reset and runs a body of statements after it.
"""

from __future__ import annotations

import re

__all__ = ["strip_power_up", "verilog_ports", "quiet_outputs", "reset_testbench", "RESET_OK"]

#: the line the testbench prints once reset is released with every quiet output 0 throughout
RESET_OK = "RESET_QUIET_OK"


def strip_power_up(verilog: str, fill: str = "x") -> str:
    """``verilog`` without its power-up values.

    ``fill="x"``: each ``reg`` initialiser is dropped (Icarus starts the register at X);
    ``fill="ones"``: each is replaced by all ones (``'1``), a power-up the X of Icarus
    does not show (a flop that powers up at 1). Either way the ``initial`` blocks whose
    contents are all zero (RAMs) are dropped and the others (ROM tables) kept.
    """
    if fill not in ("x", "ones"):
        raise ValueError(f"fill={fill!r}: 'x' or 'ones'")
    tail = " ;" if fill == "x" else " = '1;"
    text = re.sub(r"^(\s*reg\b[^=;]*?)\s*=\s*[^;]+;", lambda mo: mo.group(1) + tail, verilog, flags=re.M)
    out, lines, i = [], text.split("\n"), 0
    while i < len(lines):
        if lines[i].strip() != "initial begin":
            out.append(lines[i])
            i += 1
            continue
        j = i
        while lines[j].strip() != "end":
            j += 1
        block = lines[i:j + 1]
        if any(re.search(r"= \d+'[hdb]0*[1-9a-fA-F]", line) for line in block[1:-1]):
            out.extend(block)               # non-zero contents: a ROM, part of the logic
        i = j + 1
    return "\n".join(out)


def verilog_ports(verilog: str, module: str) -> dict[str, tuple[int, str]]:
    """``{name: (width, "input" | "output")}`` of the ports of ``module`` in ``verilog``,
    in declaration order, ``clk`` and the reset (``rst``/``aresetn``) left out."""
    header, body = verilog.split(f"module {module}(", 1)[1].split(");", 1)
    decls = {name: (int(msb or 0) + 1, d) for d, msb, name in
             re.findall(r"^\s*(input|output)\s+(?:\[(\d+):0\]\s+)?(\w+)\s*;", body, re.M)}
    # the header names the ports (a function's `input` declarations are not ports)
    names = [n.strip() for n in header.split(",")]
    return {n: decls[n] for n in names if n not in ("clk", "rst", "aresetn")}


def quiet_outputs(ports: dict) -> list[str]:
    """The outputs of ``ports`` (:func:`verilog_ports`) that must be LOW during reset:
    every ``*valid``, every ``*ready`` and ``irq``."""
    return [n for n, (_, d) in ports.items()
            if d == "output" and (n.endswith(("valid", "ready")) or n == "irq")]


def reset_testbench(module: str, ports: dict, reset: str, body: str, *, reset_cycles: int = 3,
                    inputs: dict[str, int] | None = None) -> str:
    """A testbench ``tb`` for ``module`` with ``ports`` (:func:`verilog_ports`), reset port ``reset`` (``"rst"``, active high, or ``"aresetn"``).

    Reset is asserted at time zero, before the first rising edge of ``clk`` (period 10),
    and held for ``reset_cycles`` edges; the :func:`quiet_outputs` are checked 1 ns after
    time zero, after every rising edge and at every falling edge of it, each mismatch
    printed as ``RESET_NOT_LOW``. Then reset is released, :data:`RESET_OK` printed if
    nothing was, and ``body`` runs (statements inside the ``initial`` block; the inputs are
    ``reg`` of their port names, 0 unless ``inputs`` names a value). After reset, an X on
    a quiet output is printed as ``X_AFTER_RESET``.
    """
    inputs = dict(inputs or {})
    active = "1'b1" if reset == "rst" else "1'b0"
    quiet = quiet_outputs(ports)
    decl, conn = [], [".clk(clk)", f".{reset}({reset})"]
    for name, (width, direction) in ports.items():
        rng = f"[{width - 1}:0] " if width > 1 else ""
        if direction == "input":
            decl.append(f"reg {rng}{name} = {inputs.get(name, 0)};")
        else:
            decl.append(f"wire {rng}{name};")
        conn.append(f".{name}({name})")
    cat = "{" + ", ".join(quiet) + "}"
    shown = " ".join(f"{q}=%b" for q in quiet)
    args = ", ".join(quiet)
    return "\n".join([
        "`timescale 1ns/1ps",
        "module tb;",
        "reg clk = 0;",
        "always #5 clk = ~clk;",
        f"reg {reset} = {active};",
        *decl,
        f"{module} dut({', '.join(conn)});",
        "integer bad = 0;",
        "integer cyc = 0;",
        "task check_quiet;",
        f"  begin if ({cat} !== {len(quiet)}'b0) begin bad = bad + 1;",
        f"    $display(\"RESET_NOT_LOW t=%0t {shown}\", $time, {args}); end end",
        "endtask",
        "always @(posedge clk) begin",
        "  cyc <= cyc + 1;",
        f"  if ({reset} !== {active} && ^{cat} === 1'bx) $display(\"X_AFTER_RESET t=%0t {shown}\", $time, {args});",
        "end",
        "initial begin",
        "  #1 check_quiet;",
        f"  repeat ({reset_cycles}) begin @(negedge clk); check_quiet; @(posedge clk); #1 check_quiet; end",
        f"  {reset} = ~{active};",
        f"  if (bad == 0) $display(\"{RESET_OK}\");",
        body,
        "  $finish;",
        "end",
        "endmodule",
        "",
    ])
