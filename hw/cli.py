"""The ``ttforge.hw`` subcommands: ``generate`` and ``report``.

Each ``*_cli_spec()`` returns ``(add_arguments, run)`` for :mod:`ttforge.cli`, which holds
the one-line help of every subcommand; the work is done by the library
(:func:`ttforge.hw.generate.generate`, :func:`ttforge.hw.report.report`).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ttforge.atomic import atomic_write_text, check_output_dir, check_output_file, check_writable
from ttforge.errors import ConfigError, SynthError, shown
from ttforge.hw.emit import check_module_name
from ttforge.hw.generate import MARKER, generate
from ttforge.hw.report import report, resolve_config
from ttforge.hw.synth import check_pnr_seed

__all__ = ["generate_cli_spec", "report_cli_spec"]


# -- generate --------------------------------------------------------------------------
def _add_generate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("artifact", metavar="ARTIFACT",
                   help="a compiled artifact (.ttfa, from ttforge quantize); with --train, a training "
                        "state (.ttts, from ttforge train-int)")
    p.add_argument("--train", action="store_true",
                   help="generate the training engine for the training state ARTIFACT (docs/hardware.md, "
                        "'Training engine'): Verilog, register map (JSON, C header, Markdown), config")
    p.add_argument("--batch", type=int, metavar="B",
                   help="with --train: the batch size the engine must hold (default 32)")
    p.add_argument("-o", "--out", metavar="DIR", required=True,
                   help="output directory (created, or replaced if it holds a previous output)")
    p.add_argument("--config", metavar="FILE",
                   help="an AccelConfig as JSON or TOML (default: the smallest that runs ARTIFACT)")
    p.add_argument("--lanes", type=int, metavar="L",
                   help="MAC lanes (default 4; overrides the --config file's)")
    p.add_argument("--stream-elems", type=int, metavar="E",
                   help="elements per AXI4-Stream beat (default 1; overrides the --config file's)")
    p.add_argument("--reset", choices=["rst", "aresetn"], default="rst",
                   help="reset port of the Verilog top: rst (active high, default) or aresetn")
    p.add_argument("--name", metavar="MODULE",
                   help="Verilog module name and stem of its .v/.vlt files (default ttforge_accel, "
                        "ttforge_train with --train): give each differently configured core of one "
                        "design its own")
    p.add_argument("--no-verilog", action="store_true",
                   help="skip the Verilog (register map, load image and estimate only; fast)")
    p.add_argument("--json", action="store_true", help="print the estimate as JSON instead of a table")


def _kbits(bits: int) -> str:
    return f"{bits / 1024:.1f}k" if bits >= 1024 else str(bits)


def _run_generate_train(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from ttforge.hw.trainer.engine import op_cycles
    from ttforge.hw.trainer.program import MAX_ENGINE_BATCH, compile_training, fit_engine
    from ttforge.hw.trainer.verilog import generate_train
    from ttforge.ir.train_state import load_state

    for flag, v in (("--config", args.config), ("--stream-elems", args.stream_elems), ("--json", args.json)):
        if v:
            raise ConfigError(f"{flag}: not used with --train (the engine is fitted to the state and --batch)")
    batch = 32 if args.batch is None else args.batch
    if not 1 <= batch <= MAX_ENGINE_BATCH:   # the engine's own bound, stated once
        raise ConfigError(f"--batch {batch}: must be in 1..{MAX_ENGINE_BATCH:,} (the samples the engine holds)")
    check_output_dir(args.out, "-o")   # named by its flag, before any work
    state = load_state(args.artifact)
    cfg = fit_engine(state, batch, 4 if args.lanes is None else args.lanes)
    manifest = generate_train(cfg, args.out, reset=args.reset, verilog=not args.no_verilog,
                              name=args.name)
    prog = compile_training(state, batch, cfg)
    cycles = sum(op_cycles(op, cfg, prog.slots) for op in prog.ops) + batch * (state.in_features + 1)
    console = Console() if Console().is_terminal else Console(width=120)
    t = Table(title=f"ttforge generate --train: L={cfg.lanes}, batch {batch} ({prog.slots} slots)",
              title_justify="left")
    for col in ("memory", "depth", "width", "KiB"):
        t.add_column(col, justify="left" if col == "memory" else "right")
    tc = cfg.train
    for name, depth, width in (("ACT", cfg.act_depth, cfg.lanes * cfg.act_store_bits),
                               ("GRAD", cfg.grad_depth, cfg.lanes * cfg.grad_store_bits),
                               ("CMEM", cfg.core_depth, tc.master_bits), ("BMEM", cfg.bias_depth, tc.bias_bits),
                               ("DMEM", cfg.desc_depth * 32, 32)):
        t.add_row(name, f"{depth:,}", str(width), f"{depth * width / 8192:,.1f}")
    console.print(t)
    console.print(f"one step: {len(prog.ops)} operations, {cycles:,} cycles ({cycles / batch:,.0f} per sample)")
    console.print(f"wrote {len(manifest['files']) + 1} files to {shown(args.out)}")
    return 0


def _run_generate(args: argparse.Namespace) -> int:
    if args.name is not None:
        check_module_name(args.name)     # named by its flag, before any work
    if args.train:
        return _run_generate_train(args)
    if args.batch is not None:
        raise ConfigError("--batch: only with --train (a training engine's batch)")
    res = generate(args.artifact, args.out, config_file=args.config, lanes=args.lanes,
                   stream_elems=args.stream_elems, reset=args.reset, verilog=not args.no_verilog,
                   name=args.name)
    est, cfg = res["_estimate"], res["_config"]
    if args.json:
        print(json.dumps(est.to_dict(), indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=120)
    table = Table(title=f"ttforge generate: {cfg.summary()}", title_justify="left")
    for col in ("layer", "modes", "cycles", "MACs", "util", "core bits", "bias bits",
                "buf bits", "dense", "TT/dense"):
        table.add_column(col, justify="left" if col in ("layer", "modes") else "right")
    for x in est.layers:
        table.add_row(f"{x.layer}: {x.in_features}->{x.out_features}",
                      "".join(str(m) for m in x.modes), f"{x.cycles:,}",
                      f"{x.macs:,}", f"{x.utilization:.1%}", _kbits(x.core_bits), _kbits(x.bias_bits),
                      _kbits(x.buffer_bits), f"{x.dense_cycles:,}", f"{x.dense_ratio:.2f}")
    def ratio(cycles: int) -> str:
        return f"{cycles / est.dense_cycles:.2f}" if est.dense_cycles else "-"

    if est.throughput:   # the latency and the cycles per vector differ: both, util from the latter
        table.add_row("all + I/O, one vector", "", f"{est.cycles:,}", f"{est.macs:,}", "", "", "", "",
                      f"{est.dense_cycles:,}", ratio(est.cycles))
        table.add_row("per vector, back to back", "", f"{est.vector_cycles:,}", f"{est.macs:,}",
                      f"{est.utilization:.1%}", "", "", "", f"{est.dense_cycles:,}", ratio(est.vector_cycles))
    else:
        table.add_row("all + I/O", "", f"{est.cycles:,}", f"{est.macs:,}",
                      f"{est.utilization:.1%}", "", "", "", f"{est.dense_cycles:,}", ratio(est.cycles))
    console.print(table)
    console.print("modes: one digit per step (0: lanes over q, 1: lanes over p); util: busy MAC-lane "
                  "cycles / (L x cycles); dense: ceil(M/L)*N cycles of a dense engine with the same L")
    if est.throughput:
        console.print(f"throughput mode: a vector takes {est.cycles:,} cycles on an idle engine (its staged "
                      f"input copied in {est.stage_cycles:,}), and {est.vector_cycles:,} each back to back "
                      "(the next vector's input overlaps this one's steps and output)")
    for note in res["notes"]:
        console.print(f"note: {note}")
    console.print(f"wrote {len(res['files']) + 1} files to {shown(args.out)}: "
                  + ", ".join(sorted([*res["files"], MARKER])))
    return 0


def generate_cli_spec():
    return _add_generate_arguments, _run_generate


# -- report ----------------------------------------------------------------------------
def _add_report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("artifact", metavar="ARTIFACT", nargs="?",
                   help="report the smallest configuration that runs this artifact")
    p.add_argument("--config", metavar="FILE", help="an AccelConfig as JSON")
    p.add_argument("--lanes", type=int, metavar="P", help="override the number of MAC lanes")
    p.add_argument("--device", choices=["ecp5-85f", "ice40up5k", "all"], default="all",
                   help="target device (default: all)")
    p.add_argument("--target", type=float, metavar="MHZ",
                   help="nextpnr target frequency (default 100 on ECP5, 30 on iCE40)")
    p.add_argument("--seed", type=int, default=1, help="nextpnr placer seed, 0..2^31-1 (default 1)")
    p.add_argument("--router", choices=["router1", "router2"], default="router1",
                   help="nextpnr's router (default router1, nextpnr's own default)")
    p.add_argument("--frontend", choices=["verilog", "rtlil"], default="verilog",
                   help="what Yosys reads: the emitted Verilog (default) or Amaranth's RTLIL of "
                        "the same design (minutes faster from 32 lanes up)")
    p.add_argument("--json", metavar="PATH", nargs="?", const="-",
                   help="write JSON to PATH (or print it, with no PATH) instead of the table")
    p.add_argument("-o", "--out", metavar="PATH",
                   help="also write the JSON report to PATH (with the table)")
    p.add_argument("--keep", metavar="DIR", help="keep the synthesis/PnR work files in DIR")


def _write_json(obj: Any, path: str) -> None:
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    if path == "-":
        print(text, end="")
        return
    atomic_write_text(path, text)


def _pct(r: dict | None) -> str:
    if not r:
        return "-"
    return f"{r['used']}/{r['available']} {100 * r['used'] / max(r['available'], 1):.0f}%"


def _hundredths(total: float, parts: list[float]) -> tuple[int, list[int]]:
    """``total`` and ``parts`` (which sum to it) in hundredths, rounded so that the
    rounded parts sum to the rounded total (largest remainders): each printed with two
    decimals, the terms add up to the printed total.

    Parameters
    ----------
    total : float
        The sum of ``parts``.
    parts : list of float
        The terms, each >= 0.

    Returns
    -------
    (int, list of int)
        ``round(100 * total)`` and the terms in hundredths, summing to it.
    """
    want = round(100 * total)
    if sum(parts) > total > 0:   # terms rounded above the total: shared out in proportion
        parts = [p * total / sum(parts) for p in parts]
    scaled = [100 * p for p in parts]
    out = [int(v // 1) for v in scaled]
    # the terms furthest from their floor take the hundredths the floors left over (or,
    # parts rounded apart summing past the total, the nearest give one back)
    order = sorted(range(len(parts)), key=lambda i: scaled[i] - out[i], reverse=True)
    diff = want - sum(out)
    for i in (order[:diff] if diff > 0 else order[::-1][:-diff]):
        out[i] += 1 if diff > 0 else -1
    return want, out


def _path_sum(cp: dict) -> str:
    """A critical path's delay as the sum of its terms, ``"37.30 ns = 1.39 clk-to-q +
    10.90 logic (12 levels) + 24.19 routing + 0.82 setup"``: the terms add up to the
    total as printed (the setup time was left out, and the terms summed to 36.48). A
    remainder of other step types, if any, is named ``other``."""
    terms = [(cp.get("clk_to_q_ns", 0.0), "clk-to-q"),
             (cp.get("logic_ns", 0.0), f"logic ({cp.get('logic_levels', 0)} levels)"),
             (cp.get("routing_ns", 0.0), "routing"), (cp.get("setup_ns", 0.0), "setup")]
    total = float(cp.get("delay_ns", 0.0))
    other = total - sum(v for v, _ in terms)
    if other >= 0.005:     # a step nextpnr reports under another type (terms above it: rounding)
        terms.append((other, "other"))
    want, parts = _hundredths(total, [float(v) for v, _ in terms])
    return f"{want / 100:.2f} ns = " + " + ".join(f"{p / 100:.2f} {name}" for p, (_, name) in zip(parts, terms))


def _print_table(rep: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    import sys

    # a pipe or a log file gets a width that keeps the table on one line per device
    console = Console() if sys.stdout.isatty() else Console(width=120)
    cfg = rep["config"]
    console.print("[bold]ttforge_accel[/] " + ", ".join(f"{k}={v}" for k, v in cfg.items()),
                  highlight=False)
    t = Table(title="nextpnr, MHz (totals include the I/O harness)", title_justify="left")
    for col in ("device", "LUT (LC)", "FF", "DSP", "BRAM", "Fmax", "goal"):
        t.add_column(col, justify="left" if col == "device" else "right", no_wrap=True)
    paths = []
    for dev, r in rep["devices"].items():
        res = r["resources"]
        ff = res.get("ff")
        if ff is None:   # iCE40: flip-flops live in logic cells; count them from synthesis
            ff_s = str(sum(v for k, v in r['synth_cells'].items() if k.startswith('SB_DFF')))
        else:
            ff_s = _pct(ff)
        fmax = r["fmax_mhz"]
        ok = fmax is not None and fmax >= r["target_mhz"]
        t.add_row(dev, _pct(res.get("lut") or res.get("lc")), ff_s, _pct(res.get("dsp")),
                  _pct(res.get("bram")),
                  f"[{'green' if ok else 'red'}]{fmax if fmax is not None else '-'}[/]",
                  f"{r['target_mhz']:g}")
        cp = r["critical_path"] or {}
        if cp:
            paths.append(f"{dev}: {_path_sum(cp)}, from {(cp.get('start') or {}).get('cell')} "
                         f"to {(cp.get('end') or {}).get('cell')}")
    console.print(t)
    for line in paths:
        console.print("critical path " + line, highlight=False, soft_wrap=True)
    h = next(iter(rep["devices"].values()))["harness"] if rep["devices"] else None
    if h:
        console.print(f"I/O harness: {h['ff']} flip-flops, {h['lut']} LUTs at most "
                      f"({h['input_bits']} input and {h['output_bits']} output port bits).",
                      highlight=False)


def _run_report(args: argparse.Namespace) -> int:
    from ttforge.hw.tools import yowasp_command

    devices = ["ecp5-85f", "ice40up5k"] if args.device == "all" else [args.device]
    # the user's input first (it is checked the same with or without a toolchain) ...
    if args.lanes is not None and args.lanes < 1:
        raise ConfigError(f"--lanes must be >= 1, got {args.lanes}")
    if args.target is not None and not 0 < args.target < 10_000:
        raise ConfigError(f"--target {args.target:g}: give the target frequency in MHz, > 0 (e.g. 50)")
    check_pnr_seed(args.seed)   # nextpnr refused 2^31 only after Yosys had run
    for flag, path in (("--json", args.json), ("-o", args.out)):
        if path and path != "-":
            check_output_file(path, flag)  # before minutes of synthesis, not after
            check_writable(path, flag)     # a read-only directory too (it ran the toolchain first)
    cfg = resolve_config(args.artifact, args.config, args.lanes)
    # ... then a missing toolchain: one line, before any work
    yowasp_command("yosys")
    for d in devices:
        yowasp_command("nextpnr-ecp5" if d.startswith("ecp5") else "nextpnr-ice40")
    try:
        rep = report(cfg, devices, target_mhz=args.target, seed=args.seed, keep=args.keep,
                     router=args.router, frontend=args.frontend)
    except SynthError as e:
        # a design too big for the device is the configuration's (the user's choice of
        # lanes, depths and device): exit 2, as ttforge build and the flow say it; the
        # library keeps it a SynthError (bench/bench_hw.py records it as a result)
        if str(e).startswith("the design does not fit"):
            raise ConfigError(str(e)) from None
        raise
    if args.json:
        _write_json(rep, args.json)
    else:
        _print_table(rep)
    if args.out:
        _write_json(rep, args.out)
    return 0


def report_cli_spec():
    return _add_report_arguments, _run_report
