"""``ttforge flow [CONFIG] [--out DIR] [--until STAGE] [--force STAGE|all] [--short]``."""

from __future__ import annotations

import argparse
import time

from ttforge.flow.stages import STAGES

__all__ = ["flow_cli_spec"]


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = ("Stages: " + " -> ".join(STAGES) + ". Each writes into DIR/<stage>/ and is skipped "
                "when its inputs (config section, upstream outputs, ttforge version) are unchanged. "
                "Examples: 'ttforge flow' (the embedded digits default for the iCEBreaker); "
                "'ttforge flow examples/mnist-ulx3s.toml --short'; 'ttforge flow --force sim'.")
    p.add_argument("config", metavar="CONFIG", nargs="?",
                   help="a flow config (.toml, see examples/); default: the embedded "
                        "digits-icebreaker config")
    p.add_argument("--out", metavar="DIR", help="build directory (default build/<name>)")
    p.add_argument("--until", metavar="STAGE", choices=STAGES,
                   help="stop after this stage (the report still covers what ran)")
    p.add_argument("--force", metavar="STAGE|all", action="append", default=[],
                   choices=[*STAGES, "all"], help="run this stage even if unchanged (repeatable)")
    p.add_argument("--short", action="store_true",
                   help="a quick run: the config's [short] caps (epochs, vectors), no bitstream")


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from ttforge.flow.config import load_config
    from ttforge.flow.stages import FlowError, run_flow

    cfg = load_config(args.config)
    console = Console(highlight=False)
    err = Console(stderr=True, highlight=False)
    status = {"s": None}
    t_all = time.perf_counter()
    colour = {"ran": "green", "skipped": "cyan", "failed": "red", "not run": "yellow"}

    def on_stage(name: str, _: str) -> None:
        status["s"] = console.status(f"[bold]{name}[/] running ...", spinner="dots")
        status["s"].start()

    def on_done(res) -> None:
        if status["s"] is not None:
            status["s"].stop()
            status["s"] = None
        c = colour.get(res.status, "white")
        detail = res.figure if res.status in ("ran", "skipped") else res.reason
        console.print(f"[{c}]{res.status:>8}[/] {res.name:<9} {res.seconds:7.1f} s  {detail}")

    def say(text: str) -> None:
        if status["s"] is not None:
            status["s"].update(f"[bold]{text}[/] ...")

    console.print(f"ttforge flow [bold]{cfg.name}[/]" + (" (short)" if args.short else "")
                  + f" -> {args.out or 'build/' + cfg.name}")
    try:
        result = run_flow(cfg, args.out, until=args.until, force=set(args.force), short=args.short,
                          on_stage=on_stage, on_done=on_done, say=say)
    except FlowError:
        if status["s"] is not None:
            status["s"].stop()
        raise
    table = Table(title=f"ttforge flow {cfg.name}: {time.perf_counter() - t_all:.1f} s",
                  title_justify="left")
    for col in ("stage", "status", "time", "key figure"):
        table.add_column(col, justify="right" if col == "time" else "left")
    for r in result.stages:
        c = colour.get(r.status, "white")
        table.add_row(r.name, f"[{c}]{r.status}[/]", f"{r.seconds:.1f} s" if r.status != "not run" else "-",
                      r.figure if r.status in ("ran", "skipped") else r.reason)
    console.print(table)
    if result.verified is False:
        sim = result.stage("sim").record["summary"]
        first = sim.get("first_mismatch") or {}
        err.print(f"ttforge flow: verification FAILED: {sim['agree']}/{sim['vectors']} vectors equal "
                  f"on {sim['simulator']} (first mismatch {first}); see {result.out_dir / 'sim'}")
        return 1
    if (result.out_dir / "report.html").is_file():
        console.print(f"report: {result.out_dir / 'report.html'}")
    return 0


def flow_cli_spec():
    return _add_arguments, _run
