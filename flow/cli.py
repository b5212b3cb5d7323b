"""``ttforge flow [CONFIG] [--out DIR] [--until STAGE] [--force STAGE|all] [--short]`` and
``ttforge sweep CONFIG [--out DIR] [--jobs J] [--cluster [ADDRESS]]``, ``ttforge examples [DIR]``."""

from __future__ import annotations

import argparse
import contextlib
import os
import time

from ttforge.errors import shown
from ttforge.flow.stages import STAGES

__all__ = ["flow_cli_spec", "sweep_cli_spec", "examples_cli_spec"]


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = ("Stages: " + " -> ".join(STAGES) + ". Each writes into DIR/<stage>/ and is skipped "
                "when its inputs (config section, upstream outputs, ttforge version, the code of the ttforge "
                "packages it runs, C/C++ included, and for sim the simulator's release) are unchanged; sim checks that it simulates rtl/'s Verilog and "
                "load image. "
                "Examples: 'ttforge flow' (the embedded digits default for the iCEBreaker); "
                "'ttforge flow examples/wide-1024.toml --short' (after 'ttforge examples', which writes "
                "the example configs into ./examples/; the MNIST ones need [train] data set to your MNIST "
                "IDX directory); 'ttforge flow --force sim'.")
    p.add_argument("config", metavar="CONFIG", nargs="?",
                   help="a flow config (.toml; 'ttforge examples' writes examples); default: the embedded "
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
        console.print(f"[{c}]{res.status:>8}[/] {res.name:<9} {res.seconds:7.1f} s  {shown(detail)}")

    def say(text: str) -> None:
        if status["s"] is not None:
            status["s"].update(f"[bold]{text}[/] ...")

    console.print(f"ttforge flow [bold]{cfg.name}[/]" + (" (short)" if args.short else "")
                  + f" -> {shown(args.out or 'build/' + cfg.name)}")
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
                      shown(r.figure if r.status in ("ran", "skipped") else r.reason))
    console.print(table)
    if result.verified is False:
        sim = result.stage("sim").record["summary"]
        first = sim.get("first_mismatch") or {}
        err.print(f"ttforge flow: verification FAILED: {sim['agree']}/{sim['vectors']} vectors equal "
                  f"on {sim['simulator']} (first mismatch {first}); see {result.out_dir / 'sim'}")
        return 1
    if (result.out_dir / "report.html").is_file():
        console.print(f"report: {shown(result.out_dir / 'report.html')}")
    return 0


def flow_cli_spec():
    return _add_arguments, _run


def _sweep_arguments(p: argparse.ArgumentParser) -> None:
    from ttforge.flow.sweep import AXES

    p.epilog = ("A sweep config has [sweep] (name, flow: the base flow config, until: compile, sim or "
                f"bitstream, short) and [grid] (axis = [values]; axes: {', '.join(AXES)}, or any dotted "
                "flow config key). Writes sweep.csv, sweep.json, "
                "pareto.png and best-<board>.toml into DIR; a second run recomputes no finished point. "
                "Example: 'ttforge sweep examples/digits-sweep.toml --jobs 2' (after 'ttforge examples', "
                "which writes the example configs into ./examples/).")
    p.add_argument("config", metavar="CONFIG", help="a sweep config (.toml; 'ttforge examples' writes "
                   "examples/digits-sweep.toml)")
    p.add_argument("--out", metavar="DIR", help="results and one flow build per point (default build/<name>)")
    p.add_argument("--jobs", type=int, default=None, metavar="J",
                   help="points run at once: J > 1 on a local Dask cluster of J workers (default 1: in "
                        "this process; with a bare --cluster: the cores)")
    p.add_argument("--cluster", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run each point as a Dask task: no ADDRESS: a local cluster; else the scheduler "
                        "at tcp://HOST:PORT or named by a scheduler file")


def _sweep_run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ttforge.errors import ConfigError, LimitError
    from ttforge.flow.sweep import load_sweep, run_sweep
    from ttforge.limits import MAX_JOBS
    from ttforge.sim.cluster import LOCAL, ClusterSpec

    if args.jobs is not None and not 1 <= args.jobs <= MAX_JOBS:
        raise (ConfigError if args.jobs < 1 else LimitError)(
            f"--jobs {args.jobs}: give 1..{MAX_JOBS}")
    if args.cluster is not None:
        if args.cluster != LOCAL and args.jobs is not None:
            raise ConfigError(f"--jobs {args.jobs}: a running cluster's workers run the points; drop --jobs")
        ClusterSpec.parse(args.cluster)
    cfg = load_sweep(args.config)
    out = args.out or f"build/{cfg.name}"
    n = [0]
    total = len(cfg.points())
    # values from the grid, reasons and paths are the user's text: through shown() (an
    # ESC sequence in a grid value or --out set the window title); soft_wrap: a pipe or a
    # log gets each line whole
    console = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)

    def label(params) -> str:
        return ", ".join(f"{shown(k.split('.')[-1])}={shown(v)}" for k, v in params.items())

    def progress(row) -> None:
        n[0] += 1
        err.print(f"[{n[0]}] {label(row['params'])}: "
                  f"{shown(row['status'])}" + (f" ({shown(row['reason'])})" if row.get("reason") else "")
                  + (f", int acc {100 * row['int_acc']:.1f}%, {row.get('cycles')} cycles"
                     if row.get("int_acc") is not None else ""))

    console.print(f"ttforge sweep {shown(cfg.name)}: {total} points, until {cfg.until}"
                  + (" (short)" if cfg.short else "") + f" -> {shown(out)}")
    res = run_sweep(cfg, out, jobs=args.jobs, cluster=args.cluster, progress=progress)
    ok = sum(r["status"] == "ok" for r in res.rows)
    nofit = sum(r["status"] == "no fit" for r in res.rows)
    # "ran" counted the points an earlier run had finished too
    console.print(f"{ok} ok, {nofit} do not fit, {len(res.failed)} failed; {len(res.rows) - res.reused} run "
                  f"now, {res.reused} reused from an earlier run; {res.seconds:.1f} s")
    for board, r in sorted(res.best.items()):
        console.print(f"best for {shown(board)}: {label(r['params'])}: int acc {100 * r['int_acc']:.2f}%, "
                      f"{r.get('cycles')} cycles -> {shown(res.out_dir / f'best-{board}.toml')}")
    console.print(f"wrote {shown(res.out_dir / 'sweep.csv')}, sweep.json and pareto.png")
    return 1 if res.failed else 0


def sweep_cli_spec():
    return _sweep_arguments, _sweep_run


def _examples_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = ("Then, e.g.: 'ttforge flow examples/wide-1024.toml --short' (the mnist-* ones need "
                "[train] data set to your MNIST IDX directory); 'ttforge sweep "
                "examples/digits-sweep.toml --jobs 2'. A file already in DIR with the same content is "
                "kept; one that differs is refused, and nothing is written.")
    p.add_argument("dir", metavar="DIR", nargs="?", default="examples",
                   help="directory to write them into (default: examples)")


def _examples_run(args: argparse.Namespace) -> int:
    """The packaged example configs into ``args.dir``: an installed ttforge has no
    examples/ directory, which the flow's and the sweep's help and errors name."""
    from ttforge.atomic import check_output_dir
    from ttforge.errors import ConfigError, OutputError, show_path
    from ttforge.flow.config import EXAMPLES_DIR

    sources = sorted(EXAMPLES_DIR.glob("*.toml"))
    if not sources:
        raise ConfigError(f"the packaged examples in {show_path(EXAMPLES_DIR)} are missing; reinstall ttforge")
    out = check_output_dir(args.dir, "DIR")
    todo, kept = [], []
    for src in sources:   # every file checked before any is written
        data, target = src.read_bytes(), out / src.name
        if os.path.lexists(target):
            if target.is_file() and not target.is_symlink() and target.stat().st_size == len(data) \
                    and target.read_bytes() == data:
                kept.append(src.name)
                continue
            raise OutputError(f"DIR {show_path(target)} exists and is not ttforge's example; move it away "
                              f"or give another DIR")
        todo.append((target, data))
    _write_new(out, todo)
    if not todo:
        print(f"the {len(kept)} example configs are already in {show_path(out)}")
        return 0
    print(f"wrote {len(todo)} example config{'s' * (len(todo) != 1)} to {show_path(out)}: "
          f"{', '.join(t.name for t, _ in todo)}" + (f" ({len(kept)} already there)" if kept else ""))
    return 0


def _write_new(out, todo) -> None:
    """Write ``todo`` (``(target, bytes)`` pairs, none of them there before) into the
    directory ``out``, all or nothing: a write that fails (a full or read-only disk, a
    name taken meanwhile) or an interruption removes the configs written before it, and
    the directories this call made for them (a first write that failed left a new DIR
    behind, empty); a DIR that was there stays as it was."""
    from ttforge.atomic import atomic_write_bytes, make_output_dir, missing_dirs, remove_unused_dirs

    made = missing_dirs(out)   # what a failure takes back, deepest first
    written = []
    try:
        make_output_dir(out, "DIR")
        for target, data in todo:
            atomic_write_bytes(target, data)
            written.append(target)
    except BaseException:
        for target in written:
            with contextlib.suppress(OSError):
                os.unlink(target)
        remove_unused_dirs(made)   # only while empty: a file someone else put there stays
        raise


def examples_cli_spec():
    return _examples_arguments, _examples_run
