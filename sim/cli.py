"""The ``ttforge.sim`` subcommand: ``regress`` (and ``regress --train``).

``regress_cli_spec()`` returns ``(add_arguments, run)`` for :mod:`ttforge.cli`, which
holds the one-line help of every subcommand.
"""

from __future__ import annotations

import argparse
import copy
import contextlib
import inspect
import os
import shutil
import sys
from pathlib import Path
from typing import Callable, Iterator

from ttforge.atomic import (WORK_MARKER, check_not_input, check_output_dir, claim_work_dir,
                            output_lock)
from ttforge.errors import (ConfigError, LimitError, MachineFailure, NativeError, SchedulerLost, SimError, one_line,
                            show_path, shown)
from ttforge.limits import MAX_JOBS, MAX_SEED, MAX_SEEDS, MAX_VECTORS
from ttforge.hw.faults import FAULTS
from ttforge.sim.check import NATIVE, REGRESS_SIMULATORS, CaseResult, describe
from ttforge.sim.cluster import LOCAL, ClusterSpec
from ttforge.sim.regress import regress
from ttforge.sim.report import print_table
from ttforge.sim.reproducer import replay
from ttforge.sim.runner import build_root_dir

__all__ = ["regress_cli_spec"]

#: vectors a case runs when --vectors is not given (regress()'s own default)
DEFAULT_VECTORS: int = inspect.signature(regress).parameters["vectors"].default


#: Where ``regress`` writes when no ``--out`` is given.
_DEFAULT_OUT = "regress-out"


def _add_arguments(p: argparse.ArgumentParser) -> None:
    # --seeds and --seed-start default to None (filled in by _run): --replay refuses them given
    p.add_argument("--seeds", type=int, default=None, metavar="N",
                   help="number of random cases (seeds S .. S+N-1; default 8)")
    p.add_argument("--seed-start", type=int, default=None, metavar="S", help="first seed (default 0)")
    p.add_argument("--jobs", type=int, default=None, metavar="J",
                   help="cases simulated in parallel: J > 1 runs them on a local Dask cluster of J "
                        "worker processes (default 1: in this process; with a bare --cluster: the cores)")
    p.add_argument("--cluster", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run each case as a Dask task: with no ADDRESS on a local cluster (--jobs "
                        "workers), else on the running scheduler at tcp://HOST:PORT or named by a "
                        "scheduler file (dask scheduler --scheduler-file FILE)")
    p.add_argument("--sim", metavar="SIM",
                   help="simulator: icarus or verilator (the cocotb testbench), or verilator-native "
                        "(the C++ harness, for bulk runs); default icarus; with --replay, the "
                        "reproducer's")
    p.add_argument("--vectors", type=int, default=None, metavar="V",
                   help=f"input vectors per case (default {DEFAULT_VECTORS}; not with --train, whose "
                        f"cases train on batches)")
    p.add_argument("--out", metavar="DIR", default=None,   # None: not given (refused with --replay)
                   help=f"junit.xml, summary.json and reproducers go here (default {_DEFAULT_OUT})")
    p.add_argument("--replay", metavar="DIR", help="rerun one reproducer directory")
    p.add_argument("--fault", metavar="NAME", help="build the RTL with a deliberate fault")
    p.add_argument("--config", metavar="FILE",
                   help="run every case on this AccelConfig (JSON/TOML) instead of random ones")
    p.add_argument("--build-root", metavar="DIR",
                   help="simulator build cache (default $TTFORGE_SIM_CACHE or ~/.cache/ttforge/sim; "
                        "for verilator-native and --train $TTFORGE_NATIVE_CACHE or ~/.cache/ttforge/native)")
    p.add_argument("--train", action="store_true",
                   help="training regression: random networks, widths, ranks, batches and lanes "
                        "trained in RTL (the native harness) against the golden trainer")
    p.add_argument("--steps", type=int, default=None, metavar="N",
                   help="with --train: training steps per case (default 100)")
    p.add_argument("--case", metavar="DIGEST", default=None,
                   help="with --train and --seeds 1: the digest of the case a reproduce command "
                        "names; a seed that draws another case here (another ttforge) is refused")


def _check_args(args: argparse.Namespace) -> None:
    if args.vectors is None:
        args.vectors = DEFAULT_VECTORS
    for flag, v, lo, hi in (("--seeds", args.seeds, 1, MAX_SEEDS),
                            ("--jobs", 1 if args.jobs is None else args.jobs, 1, MAX_JOBS),
                            ("--vectors", args.vectors, 1, MAX_VECTORS),
                            ("--seed-start", args.seed_start, 0, MAX_SEED - args.seeds)):
        if v < lo:
            raise ConfigError(f"{flag} {v}: must be at least {lo}")
        if v > hi:   # stated limits (docs/hardening.md); --jobs is also capped to the cases
            raise LimitError(f"{flag} {v}: above ttforge's limit of {hi:,}")
    if args.sim is not None and args.sim not in REGRESS_SIMULATORS:
        raise ConfigError(f"--sim {args.sim}: use one of {', '.join(REGRESS_SIMULATORS)}")
    if args.fault is not None and args.fault not in FAULTS:
        raise ConfigError(f"--fault {args.fault}: unknown; use one of {', '.join(FAULTS)}")
    if args.cluster is not None:
        if args.cluster != LOCAL and args.jobs is not None:
            raise ConfigError(f"--jobs {args.jobs}: a running cluster's workers run the cases; drop "
                              f"--jobs (it sizes the local cluster of a bare --cluster)")
        ClusterSpec.parse(args.cluster)   # a bad address or a missing scheduler file: exit 2 now
    # the build cache before any case (a file there failed every case as an RTL error)
    build_root_dir(args.build_root, native=bool(getattr(args, "train", False)) or args.sim == NATIVE,
                   sim=args.sim if args.replay else args.sim or "icarus")
    if args.out:
        check_output_dir(args.out, "--out")  # before the simulations, not after
    if args.replay and not (Path(args.replay) / "case.json").is_file():
        raise ConfigError(f"--replay {args.replay}: no case.json there; give a reproducer "
                          f"directory written by ttforge regress")
    if args.out and not args.replay:
        # what this run writes or replaces must not be an input (--config OUT/summary.json
        # was found only at the end, after junit.xml had been rewritten beside it)
        _check_outputs_not_inputs(Path(args.out))
        # junit.xml, summary.json and repro-*/ go there: a new, empty or earlier regress
        # directory, never one holding the user's files (ttforge.atomic.claim_work_dir)
        claim_work_dir(args.out, "--out")
        _clear_reproducers(Path(args.out))


def _check_outputs_not_inputs(out: Path) -> None:
    """A one-line :class:`~ttforge.errors.OutputError` before any case when a file this
    run writes into ``out`` (or a reproducer it replaces) is one of its inputs."""
    for name in (WORK_MARKER, "junit.xml", "summary.json"):
        check_not_input(out / name, "--out")
    with contextlib.suppress(OSError):
        for e in os.scandir(out):
            if e.name.startswith("repro-"):
                check_not_input(e.path, "--out", tree=True)


def _clear_reproducers(out: Path) -> None:
    """Remove the reproducers an earlier run left in the claimed ``out``: beside this
    run's ``summary.json`` they told of failures it did not have (a failing run's
    ``repro-*`` stayed next to a later pass). Only ttforge's own: a directory (not a
    link) named ``repro-*`` holding a ``case.json`` and nothing but the files a
    reproducer is written with; one the user added a file to is left, with a note."""
    with contextlib.suppress(OSError):
        for e in os.scandir(out):
            if not (e.name.startswith("repro-") and e.is_dir(follow_symlinks=False)
                    and os.path.isfile(os.path.join(e.path, "case.json"))):
                continue
            from ttforge.sim.reproducer import REPRODUCER_FILES

            names = set(os.listdir(e.path))
            if all(n in REPRODUCER_FILES or n.startswith("waves.") for n in names):
                shutil.rmtree(e.path)
            else:
                print(f"ttforge regress: note: {shown(e.path)} holds files a reproducer is not written with; "
                      f"left as it is (it tells of an earlier run)", file=sys.stderr)


def _without_fault(args: argparse.Namespace) -> argparse.Namespace:
    out = copy.copy(args)
    out.fault = None
    return out


#: What a replay takes from its reproducer, not from these options (given, each was
#: dropped without a word: ``--fault`` gave the reproducer's own verdict as if a fault
#: had been checked).
_NOT_WITH_REPLAY = (("--out", "out", "it writes no junit.xml, summary.json or reproducer"),
                    ("--vectors", "vectors", "the reproducer's vectors are replayed"),
                    ("--fault", "fault", "the reproducer's RTL (and its fault, if any) is rebuilt"),
                    ("--config", "config", "the reproducer's config is replayed"),
                    ("--seeds", "seeds", "it reruns one case"),
                    ("--seed-start", "seed_start", "it reruns one case"),
                    ("--jobs", "jobs", "it reruns one case here"),
                    ("--cluster", "cluster", "it reruns one case here"),
                    ("--train", "train", "it reruns the reproducer's own kind of case"),
                    ("--steps", "steps", "it reruns the reproducer's own case"),
                    ("--case", "case", "it reruns the reproducer's own case"))


def _run(args: argparse.Namespace) -> int:
    if args.replay:
        for flag, key, why in _NOT_WITH_REPLAY:
            if getattr(args, key, None) not in (None, False):   # given: refused, not dropped
                raise ConfigError(f"{flag}: --replay reruns one reproducer as it was written ({why}); "
                                  f"drop {flag}")
    if args.seeds is None:
        args.seeds = 8
    if args.seed_start is None:
        args.seed_start = 0
    if args.out is None and not args.replay:
        args.out = _DEFAULT_OUT
    if args.out and not args.replay:
        # one run at a time into --out (as flow and sweep): two ran to the end and one
        # verdict silently replaced the other's. A run that wrote nothing (a scheduler that
        # cannot be reached, Ctrl-C while the local cluster starts) has the lock take back
        # the directories it made (a new --out was left holding only its claim); a run the
        # lock refuses takes back none (it took the running run's new --out away)
        with output_lock(args.out, "--out"):
            return _run_held(args)
    return _run_held(args)


def _run_held(args: argparse.Namespace) -> int:
    if args.train:
        from ttforge.sim.train_regress import check_train_args, run_train_cli

        check_train_args(args)
        _check_args(_without_fault(args))   # a training fault is not in FAULTS
        return run_train_cli(args)
    if args.steps is not None:   # silently ignored before
        raise ConfigError(f"--steps {args.steps}: training steps apply to --train only; drop --steps or add --train")
    if args.case is not None:
        raise ConfigError(f"--case {args.case}: names a training case; it applies to --train only "
                          f"(an inference case replays from its reproducer directory: --replay)")
    _check_args(args)
    if args.replay:
        res = replay(args.replay, sim=args.sim, build_root=args.build_root)
        print(describe(res))
        if res.passed:
            print(f"replay of {show_path(args.replay)}: passes now ({res.vectors} vectors on {res.sim})")
        return _verdict([res])
    config = None
    if args.config:
        from ttforge.hw.config import AccelConfig

        config = AccelConfig.load(args.config)
    seeds = range(args.seed_start, args.seed_start + args.seeds)
    with _progress(args.seeds) as progress:
        try:
            rep = regress(seeds, args.sim or "icarus", jobs=args.jobs, vectors=args.vectors,
                          out_dir=args.out, fault=args.fault, build_root=args.build_root, config=config,
                          progress=progress, cluster=args.cluster)
        except (SchedulerLost, MachineFailure) as e:
            if e.report is not None and e.report.results:
                print_table(e.report)   # what finished (also in junit.xml and summary.json)
            if isinstance(e, MachineFailure) and e.report is not None and any(
                    r.result == "FAIL" for r in e.report.results):
                # a case that failed its check before the machine did: the hardware's
                # verdict comes first (as before a failed build), the stop is said too
                print(f"ttforge regress: note: {one_line(e)}", file=sys.stderr)
                return 1
            raise
    print_table(rep)
    print(f"wrote {show_path(Path(args.out) / 'junit.xml')} and {show_path(Path(args.out) / 'summary.json')}")
    return _verdict(rep.results, f"; every case is in {show_path(Path(args.out) / 'summary.json')}")


def _verdict(results: list[CaseResult], where: str = "") -> int:
    """The exit code: 1 when a case failed its check (the hardware's verdict first), else
    exit 3 (raised) when a case's simulator build failed (the tool's trouble, as in
    ``flow``), else 1 for any other ERROR, else 0."""
    if any(r.result == "FAIL" for r in results):
        return 1
    unbuilt = [r for r in results if r.build_failed]
    if unbuilt:
        r = unbuilt[0]
        error = NativeError if r.sim == NATIVE else SimError
        raise error(f"{len(unbuilt)} of {len(results)} cases could not be built (seed {r.seed}: "
                    f"{r.reason}){where}")
    return 0 if all(r.passed for r in results) else 1


@contextlib.contextmanager
def _progress(total: int) -> Iterator[Callable[[CaseResult], None]]:
    """A progress bar on a terminal (stderr), one line per finished case otherwise."""
    from rich.console import Console

    console = Console(stderr=True)
    done = [0]
    if not console.is_terminal:
        def line(r: CaseResult) -> None:
            done[0] += 1
            print(f"[{done[0]}/{total}] seed {r.seed}: {r.result} ({r.seconds:.1f} s)",
                  file=sys.stderr, flush=True)

        yield line
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    failed = [0]
    with Progress(TextColumn("regress"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[fails]}"),
                  TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("cases", total=total, fails="")

        def advance(r: CaseResult) -> None:
            if not r.passed:
                failed[0] += 1
                bar.console.print(f"seed {r.seed}: {r.result} ({r.seconds:.1f} s)", markup=False,
                                  highlight=False)
            bar.update(task, advance=1, fails=f"{failed[0]} failed" if failed[0] else "")

        yield advance


def regress_cli_spec():
    return _add_arguments, _run
