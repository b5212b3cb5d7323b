"""``ttforge report``: resources, Fmax and the critical path of the generated accelerator.

Generates the Verilog of ``TTAccel`` for a configuration (the smallest that runs an
artifact, a JSON config file, or the default), synthesizes it with yosys and places and
routes it with nextpnr for ECP5-85F (ULX3S: CABGA381, speed grade 6) and/or iCE40UP5K
(iCEBreaker: SG48), then prints a table and writes JSON. See :mod:`ttforge.hw.synth`
for the flow and its I/O harness.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from ttforge.atomic import atomic_write_text, check_output_file
from ttforge.errors import ConfigError

__all__ = ["report", "report_cli_spec", "resolve_config"]


def resolve_config(artifact: str | None = None, config_file: str | None = None,
                   lanes: int | None = None):
    """The :class:`AccelConfig` to report on: from ``config_file`` (JSON), else the
    smallest that runs ``artifact``, else the default; ``lanes`` overrides."""
    from ttforge.hw.config import AccelConfig

    if artifact and config_file:
        raise ConfigError("give an ARTIFACT or --config, not both")
    if config_file:
        cfg = AccelConfig.load(config_file)
        if lanes is not None and lanes != cfg.lanes:
            cfg = AccelConfig.from_dict({**cfg.to_dict(), "lanes": lanes}, source="--lanes")
    elif artifact:
        from ttforge.ir.artifact import load_artifact

        cfg = AccelConfig.for_network(load_artifact(artifact),
                                      **({} if lanes is None else {"lanes": lanes}))
    else:
        cfg = AccelConfig(**({} if lanes is None else {"lanes": lanes}))
    return cfg


def report(config, devices: list[str], *, target_mhz: float | None = None, seed: int = 1,
           keep: str | None = None) -> dict[str, Any]:
    """Implement ``config`` on each device; a JSON-ready dict."""
    from ttforge.hw.synth import implement
    from ttforge.hw.top import verilog

    text = verilog(config)
    results = {}
    for dev in devices:
        wd = None if keep is None else Path(keep) / dev
        results[dev] = implement(text, dev, target_mhz=target_mhz, seed=seed,
                                 workdir=wd).to_dict()
    cfg = config.to_dict() if hasattr(config, "to_dict") else dataclasses.asdict(config)
    return {"config": cfg, "top": "ttforge_accel", "verilog_bytes": len(text.encode()),
            "devices": results}


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("artifact", metavar="ARTIFACT", nargs="?",
                   help="report the smallest configuration that runs this artifact")
    p.add_argument("--config", metavar="FILE", help="an AccelConfig as JSON")
    p.add_argument("--lanes", type=int, metavar="P", help="override the number of MAC lanes")
    p.add_argument("--device", choices=["ecp5-85f", "ice40up5k", "all"], default="all",
                   help="target device (default: all)")
    p.add_argument("--target", type=float, metavar="MHZ",
                   help="nextpnr target frequency (default 100 on ECP5, 30 on iCE40)")
    p.add_argument("--seed", type=int, default=1, help="nextpnr placer seed (default 1)")
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
            paths.append(
                f"{dev}: {cp.get('delay_ns', 0):.2f} ns = {cp.get('clk_to_q_ns', 0):.2f} clk-to-q + "
                f"{cp.get('logic_ns', 0):.2f} logic ({cp.get('logic_levels', 0)} levels) + "
                f"{cp.get('routing_ns', 0):.2f} routing, from {(cp.get('start') or {}).get('cell')} "
                f"to {(cp.get('end') or {}).get('cell')}")
    console.print(t)
    for line in paths:
        console.print("critical path " + line, highlight=False, soft_wrap=True)
    h = next(iter(rep["devices"].values()))["harness"] if rep["devices"] else None
    if h:
        console.print(f"I/O harness: {h['ff']} flip-flops, {h['lut']} LUTs at most "
                      f"({h['input_bits']} input and {h['output_bits']} output port bits).",
                      highlight=False)


def _run(args: argparse.Namespace) -> int:
    from ttforge.hw.tools import yowasp_command

    devices = ["ecp5-85f", "ice40up5k"] if args.device == "all" else [args.device]
    # the user's input first (it is checked the same with or without a toolchain) ...
    if args.lanes is not None and args.lanes < 1:
        raise ConfigError(f"--lanes must be >= 1, got {args.lanes}")
    if args.target is not None and not 0 < args.target < 10_000:
        raise ConfigError(f"--target {args.target:g}: give the target frequency in MHz, > 0 (e.g. 50)")
    for flag, path in (("--json", args.json), ("-o", args.out)):
        if path and path != "-":
            check_output_file(path, flag)  # before minutes of synthesis, not after
    cfg = resolve_config(args.artifact, args.config, args.lanes)
    # ... then a missing toolchain: one line, before any work
    yowasp_command("yosys")
    for d in devices:
        yowasp_command("nextpnr-ecp5" if d.startswith("ecp5") else "nextpnr-ice40")
    rep = report(cfg, devices, target_mhz=args.target, seed=args.seed, keep=args.keep)
    if args.json:
        _write_json(rep, args.json)
    else:
        _print_table(rep)
    if args.out:
        _write_json(rep, args.out)
    return 0


def report_cli_spec():
    return ("Synthesize and place-and-route the accelerator (yosys + nextpnr from pip): "
            "LUT/FF/DSP/BRAM, Fmax and the critical path for ECP5-85F and iCE40UP5K.",
            _add_arguments, _run)

