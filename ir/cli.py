"""The contract's subcommands: ``ttforge schedule`` (compare the contraction orders of one
TT layer) and ``ttforge inspect`` (what a compiled artifact holds). Neither needs torch."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ttforge.errors import ConfigError, UserError, show, show_path, shown
from ttforge.ir.arith import quantize
from ttforge.ir.arith import ARITHMETIC_SPEC_VERSION, ROUNDING
from ttforge.ir.artifact import (ARTIFACT_FORMAT, ARTIFACT_FORMAT_VERSION, dump_json, layer_kind, meta_text,
                                 load_artifact, source_name, absolute_data_spec, arrays_digest)
from ttforge.ir.executor import IntLayer
from ttforge.ir.onchip import on_chip_bytes
from ttforge.ir.schedule import OBJECTIVES, ContractionSchedule, schedule_orders
from ttforge.ir.train import (TrainConfig, TrainState, calibrate_state, check_batch, check_counters, check_lr, check_step_memory,
                              engine_labels_problem, export_network, init_state, predict)
from ttforge.ir.train_loop import (Truncation, check_fits, epoch_order, network_train_config, plan_truncations,
                                  run_training, state_from_artifact, tt_layers)
from ttforge.ir.tt import MAX_FACTOR_SIZE, TTShape
from ttforge.limits import MAX_ARTIFACT_BYTES, MAX_BATCH, MAX_EPOCHS, MAX_HIDDEN, MAX_SEARCH_CORES, MAX_SEED, read_bounded

__all__ = ["schedule_cli_spec", "inspect_cli_spec", "inspect_artifact", "parse_int_list",
           "train_int_arguments", "train_int_run", "TRAIN_INT_HELP"]


def parse_int_list(text: str) -> list[int]:
    """``"7,4,7,4"`` (or ``"7x4x7x4"``) -> ``[7, 4, 7, 4]``; blank -> ``[]`` (for argparse
    ``type=``). An empty item (``"7,,4"``, ``"7,4,"``) is refused, not dropped: a doubled
    comma is a typo that would otherwise change the list's length."""
    if not text.strip():
        return []
    items = [t.strip() for t in text.replace("x", ",").split(",")]
    try:
        if not all(items):
            raise ValueError
        # a long item is refused below, not parsed (if it is a number at all)
        values = [int(t) for t in items if len(t) <= 40 or not t.lstrip("+-").isdecimal()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text[:80]!r} is not a comma-separated list of integers (e.g. 7,4,7,4)"
        ) from None
    # a mode, rank or epoch of thousands of digits took minutes, or an internal error,
    # before anything refused it; no size ttforge takes is above 2^62 - 1
    if len(values) < len(items) or any(abs(v) > MAX_FACTOR_SIZE for v in values):
        raise argparse.ArgumentTypeError(
            f"{text[:80]!r}: every integer must be at most 2^62 - 1 ({MAX_FACTOR_SIZE:,}) in size")
    return values


def parse_truncation(text: str) -> Truncation:
    """``"EPOCH:R1,R2,..."`` (the first TT layer) or ``"EPOCH:LAYER:R1,R2,..."`` -> a
    :class:`~ttforge.ir.train_loop.Truncation`, bounded (for argparse ``type=``)."""
    parts = text.split(":")
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        epoch, layer = int(parts[0]), (int(parts[1]) if len(parts) == 3 else None)
        ranks = tuple(int(r) for r in parts[-1].split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text[:80]!r} is not EPOCH:R1,R2,... or EPOCH:LAYER:R1,R2,... (e.g. 5:8,8,8)") from None
    if not 1 <= epoch <= MAX_EPOCHS:
        raise argparse.ArgumentTypeError(f"{text[:80]!r}: the epoch must be in 1..{MAX_EPOCHS:,}")
    if layer is not None and not 0 <= layer < MAX_HIDDEN:
        raise argparse.ArgumentTypeError(f"{text[:80]!r}: the layer must be in 0..{MAX_HIDDEN - 1:,}")
    if not 1 <= len(ranks) < MAX_SEARCH_CORES or any(not 1 <= r <= MAX_HIDDEN for r in ranks):
        raise argparse.ArgumentTypeError(f"{text[:80]!r}: give 1..{MAX_SEARCH_CORES - 1} internal ranks, "
                                         f"each in 1..{MAX_HIDDEN:,}")
    return Truncation(epoch, layer, ranks)


def _schedule_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--in-modes", type=parse_int_list, required=True, help="e.g. 7,4,7,4")
    p.add_argument("--out-modes", type=parse_int_list, required=True, help="e.g. 4,8,4,4")
    p.add_argument("--ranks", type=parse_int_list, required=True,
                   help="one int (upper bound on every bond) or the d-1 internal ranks")
    p.add_argument("--batch", type=int, default=1, help="batch size for the costs (default 1)")
    p.add_argument("--objective", choices=list(OBJECTIVES), default="macs",
                   help="what the chosen order minimises first ('cycles' needs --lanes)")
    p.add_argument("--lanes", type=int, default=None,
                   help="MAC lanes of the accelerator: adds each order's cycles on them to the cost")
    p.add_argument("--json", action="store_true", help="print the chosen schedule as JSON")


def _schedule_run(args: argparse.Namespace) -> int:
    if not 1 <= args.batch <= MAX_BATCH:
        raise ConfigError(f"--batch={args.batch} must be in 1..{MAX_BATCH:,}")
    lanes = args.lanes
    if lanes is not None and not 1 <= lanes <= MAX_HIDDEN:
        raise ConfigError(f"--lanes={lanes} must be in 1..{MAX_HIDDEN:,}")
    if args.objective == "cycles" and lanes is None:
        raise ConfigError("--objective cycles needs --lanes (the accelerator's MAC lanes)")
    cores = max(len(args.in_modes), len(args.out_modes))
    if cores > MAX_SEARCH_CORES:  # before the shape, whose errors would quote every mode
        raise ConfigError(f"--in-modes/--out-modes give {cores} cores; ttforge schedule searches "
                          f"the orders of at most {MAX_SEARCH_CORES}: give at most {MAX_SEARCH_CORES} "
                          f"modes each (merge neighbours, e.g. 2,2 -> 4)")
    if len(args.ranks) not in (1, cores - 1) and len(args.in_modes) == len(args.out_modes):
        raise ConfigError(f"--ranks gives {len(args.ranks)} values; give one (a bound on every bond) or the "
                          f"{cores - 1} internal rank{'s' * (cores != 2)} of {cores} cores")
    for flag, modes in (("--in-modes", args.in_modes), ("--out-modes", args.out_modes)):
        if math.prod(modes) > MAX_FACTOR_SIZE:   # TTShape refuses it too, without the flag
            raise ConfigError(f"{flag} multiply to more than 2^62 - 1 ({MAX_FACTOR_SIZE:,}), ttforge's limit "
                              f"of a layer's size; give smaller modes")
    ranks = args.ranks[0] if len(args.ranks) == 1 else args.ranks
    shape = TTShape(tuple(args.out_modes), tuple(args.in_modes), ranks)
    best = ContractionSchedule.optimal(shape, args.batch, args.objective, lanes=lanes)
    if args.json:
        print(json.dumps(best.to_dict(), indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    dense = args.batch * shape.in_size * shape.out_size
    table = Table(title=f"TT {shape.out_size}x{shape.in_size}, ranks {list(shape.ranks)}, "
                        f"batch {args.batch} (dense: {dense:,} MACs)")
    cols = ("order", "MACs", "x dense", "peak elements") + (
        (f"cycles on {lanes} lanes", "lanes busy") if lanes else ()) + ("",)
    for col in cols:
        table.add_column(col, justify="right")
    costs = [(s, s.cost(args.batch, lanes=lanes)) for s in
             (ContractionSchedule(shape, o) for o in schedule_orders(shape.d))]
    for s, c in sorted(costs, key=lambda sc: (sc[1].macs, sc[1].lane_cycles or 0, sc[1].peak_elements)):
        lane_cols = (f"{c.lane_cycles:,}", f"{c.macs / (lanes * c.lane_cycles):.1%}") if lanes else ()
        table.add_row(str(list(s.order)), f"{c.macs:,}", f"{c.macs / dense:.3f}",
                      f"{c.peak_elements:,}", *lane_cols, "chosen" if s.order == best.order else "")
    Console().print(table)
    return 0


def schedule_cli_spec():
    return _schedule_arguments, _schedule_run


# ---------------------------------------------------------------------------------------
# ttforge inspect
# ---------------------------------------------------------------------------------------
# ---------------------------------------------------------------------------------------
def _layer_summary(layer: IntLayer) -> dict[str, Any]:
    s = layer.schedule
    return {
        "kind": layer_kind(layer),
        "in_features": layer.in_features,
        "out_features": layer.out_features,
        "out_modes": list(s.shape.out_modes),
        "in_modes": list(s.shape.in_modes),
        "ranks": list(s.shape.ranks),
        "order": list(s.order),
        "w_bits": layer.w_bits,
        "in_bits": layer.in_bits,
        "inter_bits": layer.inter_bits,
        "out_bits": layer.out_bits,
        "acc_bits": layer.acc_bits,
        "in_exp": layer.in_exp,
        "core_exps": list(layer.core_exps),
        "step_exps": list(layer.step_exps),
        "shifts": list(layer.shifts()),
        "relu": layer.relu,
        "has_bias": layer.bias is not None,
        "macs": sum(st.macs for st in s.steps),
    }


def inspect_artifact(path: str | os.PathLike) -> dict[str, Any]:
    """What ``ttforge inspect --json`` prints: layers, widths, exponents and memory."""
    net = load_artifact(path)
    mem = on_chip_bytes(net)
    layers = [{**_layer_summary(layer), **b} for layer, b in zip(net.layers, mem["layers"])]
    return {
        "artifact": str(path),
        "format": ARTIFACT_FORMAT,
        "format_version": ARTIFACT_FORMAT_VERSION,
        "arithmetic_version": ARITHMETIC_SPEC_VERSION,
        "rounding": ROUNDING,
        "meta": net.meta,
        "layers": layers,
        "total": mem["total"],
    }


def _inspect_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("artifact", metavar="ARTIFACT", help="a .ttfa file written by save_artifact")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of tables")
    p.add_argument("--batch", type=int, default=None, metavar="B",
                   help="a training state (.ttts): state its training memory (the bit-packed count the step "
                        "needs, and the training engine ttforge generates and whether it fits the ECP5-85F), "
                        "and the ratios against FP32 dense training with Adam, for batches of B samples "
                        "(default: the state's batch)")
    p.add_argument("--lanes", type=int, default=None, metavar="L",
                   help="a training state: the training engine's MAC lanes, a power of two in 1..64 (default "
                        "4, as generate --train and build --train on the ULX3S)")


def _fmt_list(v: list[int]) -> str:
    return ",".join(str(x) for x in v)


def _inspect_run(args: argparse.Namespace, engine=None) -> int:
    from ttforge.ir.train_state import inspect_state_run, is_state_file

    if args.batch is not None and not 1 <= args.batch <= MAX_BATCH:
        raise ConfigError(f"--batch={show(args.batch)} must be in 1..{MAX_BATCH:,}")
    if args.lanes is not None and not (1 <= args.lanes <= 64 and args.lanes & (args.lanes - 1) == 0):
        raise ConfigError(f"--lanes={show(args.lanes)} must be a power of two in 1..64 (1, 2, 4, ... 64)")
    if is_state_file(args.artifact):  # a training state (.ttts): its own tables
        return inspect_state_run(args.artifact, args.json, args.batch, args.lanes, engine)
    # read first: a FIFO, a device or a damaged file is said as such, not called an artifact
    info = inspect_artifact(args.artifact)
    for flag, v in (("--batch", args.batch), ("--lanes", args.lanes)):
        if v is not None:
            raise ConfigError(f"{flag} is for a training state (.ttts); {show_path(args.artifact)} is an "
                              f"inference artifact (its memory does not depend on a batch or the lanes)")
    if args.json:
        print(dump_json(info))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console(emoji=False)   # ":x:" in a meta value stays ":x:"
    layers = info["layers"]
    console.print(f"[bold]{shown(args.artifact)}[/]: {info['format']} v{info['format_version']}, "
                  f"arithmetic spec v{info['arithmetic_version']}, rounding {info['rounding']}, "
                  f"{len(layers)} layers", highlight=False)
    if info["meta"]:
        console.print("meta: " + meta_text(info["meta"]),
                      highlight=False)

    def table(title: str, cols: tuple[str, ...], first_width: int = 1) -> Table:
        t = Table(title=title, title_justify="left")
        for col in cols:
            t.add_column(col, min_width=first_width if col == "#" else None, 
                         justify="left" if col in ("kind", "order") else "right", no_wrap=True)
        return t

    shape = table("Layers", ("#", "kind", "in->out", "m\n(out)", "n\n(in)", "ranks", "order", "MACs",
                             "relu", "bias"))
    arith = table("Arithmetic", ("#", "bits\nw/act/inter/acc", "in\nexp", "core\nexps", "step\nexps",
                                 "shifts"))
    for i, L in enumerate(layers):
        act = f"{L['out_bits']}" if L["in_bits"] == L["out_bits"] else f"{L['in_bits']}->{L['out_bits']}"
        shape.add_row(str(i), L["kind"], f"{L['in_features']}->{L['out_features']}",
                      _fmt_list(L["out_modes"]), _fmt_list(L["in_modes"]), _fmt_list(L["ranks"]),
                      _fmt_list(L["order"]), f"{L['macs']:,}", "yes" if L["relu"] else "no",
                      "yes" if L["has_bias"] else "no")
        arith.add_row(str(i), f"{L['w_bits']}/{act}/{L['inter_bits']}/{L['acc_bits']}", str(L["in_exp"]),
                      _fmt_list(L["core_exps"]), _fmt_list(L["step_exps"]), _fmt_list(L["shifts"]))
    mem = table("On-chip bytes per sample (cores bit-packed; peak intermediate incl. input)",
                ("#", "params", "cores", "bias", "peak\ninter.", "on-chip", "dense\nINT8", "ratio", "saving"), 5)

    def row(name: str, d: dict, end_section: bool = False) -> None:
        mem.add_row(name, f"{d['params']:,}", f"{d['core_bytes']:,}", f"{d['bias_bytes']:,}",
                    f"{d['peak_intermediate_bytes']:,}", f"{d['on_chip_bytes']:,}",
                    f"{d['dense_int8_bytes']:,}", f"{d['ratio']:.3f}", f"{1 / d['ratio']:.1f}x",
                    end_section=end_section)

    for i, L in enumerate(layers):
        row(str(i), L, end_section=i == len(layers) - 1)
    row("total", info["total"])
    for t in (shape, arith, mem):
        console.print(t)
    return 0


def inspect_cli_spec(engine=None):
    """``ttforge inspect``: ``(add_arguments, run)``. ``engine``: what a training state's
    summary states of the training engine (:func:`ttforge.ir.train_state.state_summary`);
    ``ttforge.cli`` passes hw's, which ir cannot import."""
    return _inspect_arguments, lambda args: _inspect_run(args, engine)


# ---------------------------------------------------------------------------------------
# ttforge train-int (declared in ttforge.model.cli, which supplies the data sets and plot)
# ---------------------------------------------------------------------------------------
TRAIN_INT_HELP = ("Train with the all-integer step (docs/arithmetic.md, Training) from a random init, an artifact "
        "or a state; writes the state, the exported artifact, metrics and curves.")


def train_int_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, help="'digits' (default) or a directory of MNIST IDX files "
                                                "(a resume: the directory the state records)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--from", dest="from_artifact", metavar="ARTIFACT",
                     help="start from a compiled artifact (.ttfa), e.g. from ttforge quantize")
    src.add_argument("--resume", metavar="STATE", help="continue from a training state (.ttts)")
    p.add_argument("-o", "--out", default="runs/train-int", help="output directory (default runs/train-int)")
    p.add_argument("--epochs", type=int, default=10, help="epochs to run (in total, when resuming)")
    p.add_argument("--batch", type=int, default=None, help="samples per step (default 32, or the state's)")
    p.add_argument("--lr-shift", type=int, default=None,
                   help="learning rate 2^-LR_SHIFT per summed batch gradient (default 8; a resume continues "
                        "the state's)")
    p.add_argument("--lr-decay-at", type=parse_int_list, default=None,
                   help="epochs after which the learning rate halves (lr-shift + 1), e.g. 6,9 (default none, "
                        "or the state's)")
    p.add_argument("--truncate-ranks", type=parse_truncation, action="append", default=None,
                   metavar="EPOCH[:LAYER]:R1,R2,...",
                   help="after epoch EPOCH the host truncates the internal ranks of the TT layer (LAYER, "
                        "default the first) to R1,R2,... (deterministic, integer); repeatable (default "
                        "none, or the state's)")
    p.add_argument("--seed", type=int, default=None, help="(default 0; a resume continues the run's)")
    p.add_argument("--hidden", type=int, default=None, help="TT layer output size (default 64 digits, 512 else)")
    p.add_argument("--cores", type=int, default=None, help="cores of the TT layer (default 3 digits, 4 else)")
    p.add_argument("--ranks", type=int, default=None, help="rank bound (default 4 digits, 16 else)")
    p.add_argument("--in-modes", type=parse_int_list, default=None, help="e.g. 7,4,7,4")
    p.add_argument("--out-modes", type=parse_int_list, default=None, help="e.g. 4,8,4,4")
    for name, default in (("w-bits", 4), ("master-bits", 8), ("act-bits", 8), ("inter-bits", 16),
                          ("acc-bits", 32), ("grad-bits", 16)):
        p.add_argument(f"--{name}", type=int, default=None, help=f"(default {default})")
    p.add_argument("--rounding", choices=["stochastic", "nearest"], default=None)
    p.add_argument("--calib-samples", type=int, default=None, help="(default 256; for a new run)")
    p.add_argument("--golden", action="store_true", help="run the golden int64 step (slow) instead of the fast path")
    p.add_argument("--verify-steps", type=int, default=0, metavar="N",
                   help="first replay N steps with the golden and the fast step side by side and stop at the "
                        "first difference (phase, layer, core, element; exit 1)")
    p.add_argument("--export", metavar="ARTIFACT",
                   help="with --resume: write the state's inference artifact (.ttfa) and exit (no training)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run (or the files of a run's names) already in -o")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


#: The files a ``train-int`` run writes into its directory, its state first.
TRAIN_INT_FILES = ("state.ttts", "model.ttfa", "metrics.json", "curves.png")


def _check_train_int_out(out: Path, resume: str | None, overwrite: bool) -> None:
    """``-o`` may take this run's files (:func:`ttforge.atomic.check_run_dir`): it holds
    none of :data:`TRAIN_INT_FILES`, or its state is the one resumed, or ``overwrite``."""
    from ttforge.atomic import check_run_dir, check_run_files

    state = out / TRAIN_INT_FILES[0]
    own = resume is not None and state.exists() and os.path.samefile(resume, state)
    check_run_dir(out, TRAIN_INT_FILES, "-o", replace=overwrite or own,
                  resume_hint="--resume it to continue it, " if resume is None else "it is not the state resumed; ")
    check_run_files(out, TRAIN_INT_FILES, "-o")


def _config(args: argparse.Namespace, base: TrainConfig | None = None) -> TrainConfig:
    d = (base or TrainConfig()).to_dict()
    for key in ("w_bits", "master_bits", "act_bits", "inter_bits", "acc_bits", "grad_bits", "rounding"):
        v = getattr(args, key)
        if v is not None:
            d[key] = v
    return TrainConfig(**d)


def _truncations_json(truncations) -> list:
    return [t.to_json() for t in sorted(truncations, key=lambda t: (t.epoch, -1 if t.layer is None else t.layer))]


def _check_train_int_bounds(args: argparse.Namespace) -> None:
    """Every numeric argument in its range before anything is read or allocated (one line)."""
    for name, lo, hi in (("epochs", 1, MAX_EPOCHS), ("batch", 1, MAX_BATCH), ("calib_samples", 1, MAX_BATCH),
                         ("seed", 0, MAX_SEED), ("hidden", 1, MAX_HIDDEN), ("cores", 1, MAX_SEARCH_CORES),
                         ("ranks", 1, MAX_HIDDEN), ("verify_steps", 0, MAX_EPOCHS * MAX_BATCH)):
        v = getattr(args, name)
        if v is not None and not lo <= v <= hi:
            raise ConfigError(f"--{name.replace('_', '-')}={show(v)} must be in {lo}..{hi:,}")
    if args.lr_decay_at is not None and any(not 1 <= e <= MAX_EPOCHS for e in args.lr_decay_at):
        raise ConfigError(f"--lr-decay-at={show(args.lr_decay_at)}: each epoch must be in 1..{MAX_EPOCHS:,}")
    for name in ("in_modes", "out_modes"):
        modes = getattr(args, name)
        if modes is not None and (not modes or len(modes) > MAX_SEARCH_CORES
                                  or any(not 1 <= m <= MAX_HIDDEN for m in modes)):
            raise ConfigError(f"--{name.replace('_', '-')}={show(modes)}: give 1..{MAX_SEARCH_CORES} modes, "
                              f"each in 1..{MAX_HIDDEN:,}")


def train_int_run(args: argparse.Namespace, load_data: Callable, plot: Callable | None = None) -> int:
    """The command: ``load_data(spec) -> (name, x_train, y_train, x_test, y_test)`` (floats in
    [0, 1] and integer labels, numpy) and ``plot(history, path, title)`` come from the caller
    (``ttforge.model.train_int``: the data sets and matplotlib live outside the contract).
    One run at a time into ``-o`` (:func:`ttforge.atomic.output_lock`)."""
    from ttforge.atomic import output_lock

    with output_lock(args.out, "-o"):
        return _train_int_run(args, load_data, plot)


#: A resumed run's epochs are ordered by the seed it started with (its meta), which
#: no flag overrides.
_SEED_FIX = "the seed orders the run's epochs: resume a state train-int wrote, or start a new run"


#: ``--flag``: the :class:`TrainConfig` field it sets; a resume trains the state's network.
_CONFIG_FLAGS = {f"--{k.replace('_', '-')}": k for k in ("w_bits", "master_bits", "act_bits", "inter_bits",
                                                          "acc_bits", "grad_bits", "rounding")}


def _check_resume_options(args: argparse.Namespace, state: TrainState, seed: int) -> None:
    """One line (exit 2) for an option given with ``--resume`` that the resume cannot
    honour and that differs from the run being resumed (``seed``: its seed), as
    ``train-board --resume``: they were silently ignored. The network (its shape and
    widths) and the calibration are the state's; the seed orders every epoch; the
    learning-rate shift is the state's, halvings included (``--lr-decay-at`` changes the
    rate of a resumed run, and is recorded)."""
    sh, cfg = state.layers[0].schedule.shape, state.config

    def same_ranks(bound: int) -> bool:   # the rank bound that gives the state's ranks
        try:
            return TTShape(sh.out_modes, sh.in_modes, bound).ranks == sh.ranks
        except ValueError:
            return False

    ranks = _fmt_list(sh.ranks)
    meta = state.meta
    given = [("--seed", args.seed, seed, args.seed == seed),
             ("--lr-shift", args.lr_shift, state.lr_shift,
              args.lr_shift in (state.lr_shift, meta.get("lr_shift_start"))),
             ("--hidden", args.hidden, state.layers[0].out_features, args.hidden == state.layers[0].out_features),
             ("--cores", args.cores, sh.d, args.cores == sh.d),
             ("--ranks", args.ranks, f"ranks {ranks}",
              args.ranks is not None and (same_ranks(args.ranks) or args.ranks == meta.get("ranks_start"))),
             ("--in-modes", args.in_modes, _fmt_list(sh.in_modes), args.in_modes == list(sh.in_modes)),
             ("--out-modes", args.out_modes, _fmt_list(sh.out_modes), args.out_modes == list(sh.out_modes))]
    given += [(flag, getattr(args, k), getattr(cfg, k), getattr(args, k) == getattr(cfg, k))
              for flag, k in _CONFIG_FLAGS.items()]
    for flag, v, theirs, same in given:
        if v is not None and not same:
            v = _fmt_list(v) if isinstance(v, list) else v   # an int in range or a choice: nothing to escape
            hint = " (--lr-decay-at lowers the rate of a resumed run)" if flag == "--lr-shift" else ""
            raise ConfigError(f"{flag} {v} differs from the run being resumed ({theirs}); drop {flag} "
                              f"to continue it{hint}")
    if args.calib_samples is not None and args.calib_samples != meta.get("calib_samples", 256):
        raise ConfigError("--calib-samples is for a new run: the state being resumed is calibrated already; "
                          "drop --calib-samples to continue it")


def _prior_history(path: Path, epoch: int) -> tuple[list[dict[str, Any]], list[int], float | None]:
    """The rows of a resumed run's ``metrics.json`` up to the state's ``epoch``, its
    ``missing_epochs`` and its ``initial_test_acc`` (``None`` if absent or not a fraction);
    an epoch between its first row and ``epoch`` that has no row (the state came from
    elsewhere: the files of an epoch are renamed with the state last, so an
    interruption never loses one) is added to the missing, with one line on stderr."""
    try:
        # bounded and regular files only (a FIFO there hung the resume for good)
        old = json.loads(read_bounded(path, "metrics", MAX_ARTIFACT_BYTES)) if os.path.lexists(path) else {}
        rows = [h for h in old.get("history", []) if isinstance(h, dict)]
        rows = [h for h in rows if _meta_epoch(h.get("epoch")) and h["epoch"] <= epoch]
        missing = [e for e in old.get("missing_epochs", []) if _meta_epoch(e) and e <= epoch]
        acc0 = old.get("initial_test_acc")
    except (OSError, ValueError, AttributeError, TypeError, UserError):
        return [], [], None
    acc0 = float(acc0) if isinstance(acc0, (int, float)) and not isinstance(acc0, bool) and 0 <= acc0 <= 1 else None
    known = {h["epoch"] for h in rows} | set(missing)
    lost = [e for e in range(min(known, default=epoch + 1), epoch + 1) if e not in known]
    if lost:
        print(f"ttforge train-int: note: {shown(path)} has no row for epoch{'s' * (len(lost) > 1)} "
              f"{_fmt_list(lost)} (the state resumed is at epoch {epoch}); the history goes on without "
              f"{'them' if len(lost) > 1 else 'it'} (metrics.json: missing_epochs)", file=sys.stderr)
    return rows, sorted(missing + lost), acc0


def _meta_epoch(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _resumed_data(state: TrainState, resume: str) -> str:
    """The data of a resume given no ``--data``: the state's ``data_spec``; a state that
    records none (written before it was recorded) trained on digits unless its ``data``
    name says otherwise, which is one line (exit 2): the resume took the digits and
    failed on the feature count, a fix the message did not give."""
    spec, name = state.meta.get("data_spec"), state.meta.get("data", "digits")
    if isinstance(spec, str) and spec and "\0" not in spec:
        return spec
    if name == "digits":
        return "digits"
    raise ConfigError(f"the state {show_path(resume)} was trained on {show(name)} and does not record "
                      f"where its files are (an older state); give --data DIR, the directory of its IDX files")


def _train_int_run(args: argparse.Namespace, load_data: Callable, plot: Callable | None) -> int:
    from ttforge.atomic import remove_made_dirs, atomic_path, missing_dirs, atomic_write_text, check_output_dir, check_writable
    from ttforge.ir.artifact import load_artifact, save_artifact
    from ttforge.ir.train_state import load_state, meta_epochs, meta_int, meta_list, save_state

    _check_train_int_bounds(args)
    if args.lr_shift is not None and not 0 <= args.lr_shift <= 62:
        raise ConfigError(f"--lr-shift={args.lr_shift} must be in 0..62")
    if args.export and not args.resume:
        raise ConfigError("--export needs --resume STATE (the state whose network to export)")
    out = check_output_dir(args.out, "-o")
    state: TrainState | None = None
    if args.resume:
        state = load_state(args.resume)
        if args.export:  # the inference artifact of a state, nothing else
            from ttforge.atomic import check_output_file, note_input

            note_input(args.resume)   # exporting never writes over the state it exports
            path = save_artifact(export_network(state, {"from_state": str(args.resume)}),
                                 check_output_file(args.export, "--export", "model.ttfa"))
            print(f"wrote {show_path(path)} (the network of {show_path(args.resume)} at step {state.step}, "
                  f"epoch {state.epoch})")
            return 0
    if args.resume:
        # a run given without --seed continued with seed 0; a state without one still does
        resumed_seed = meta_int(state, "seed", args.seed or 0, 0, MAX_SEED, _SEED_FIX)   # checked before any work
        _check_resume_options(args, state, resumed_seed)
        # --batch and --lr-decay-at given now are the run's from here on: recorded (as
        # --truncate-ranks below), so the continuation of an interrupted resume repeats them
        if args.batch is None:
            args.batch = meta_int(state, "batch", 32, 1, MAX_BATCH, "give --batch explicitly")
        else:
            state = state.replace(meta={**state.meta, "batch": args.batch})
        if args.lr_decay_at is None:
            args.lr_decay_at = meta_epochs(state, "lr_decay_at", MAX_EPOCHS, "give --lr-decay-at explicitly")
        else:
            state = state.replace(meta={**state.meta, "lr_decay_at": list(args.lr_decay_at)})
        if args.truncate_ranks is None:
            args.truncate_ranks = [Truncation.from_json(v) for v in meta_list(state, "truncate_ranks", "give --truncate-ranks explicitly")]
        elif args.truncate_ranks:   # the schedule given now is the one a later resume follows
            state = state.replace(meta={**state.meta, "truncate_ranks": _truncations_json(args.truncate_ranks)})
    elif args.from_artifact:
        from ttforge.atomic import check_not_input, note_input

        note_input(args.from_artifact)   # the run's own files never replace the artifact it starts from
        for name in TRAIN_INT_FILES:
            check_not_input(out / name, "-o")   # refused before any step, not after an epoch
        net = load_artifact(args.from_artifact)
    _check_train_int_out(out, args.resume, args.overwrite)
    args.batch = 32 if args.batch is None else args.batch
    args.lr_decay_at = [] if args.lr_decay_at is None else args.lr_decay_at
    data = _resumed_data(state, args.resume) if args.data is None and args.resume else args.data or "digits"
    # a path the state records is named as such (the user typed no --data)
    ds_name, x, y, xt, yt = (load_data(data, "the state's data") if args.data is None and data != "digits"
                             else load_data(data))
    if args.resume and args.data is not None:   # the data of the run from here on (as --batch)
        state = state.replace(meta={**state.meta, "data": ds_name, "data_spec": absolute_data_spec(data)})
    # what the artifacts record of the data (diverge reads and checks it): the path
    # absolute and the digest of the arrays as loaded (model.data.data_digest's)
    data_meta = {"data": absolute_data_spec(data), "data_sha256": arrays_digest((x, y, xt, yt))}
    x, xt = np.asarray(x, dtype=np.float64), np.asarray(xt, dtype=np.float64)
    y, yt = np.asarray(y, dtype=np.int64), np.asarray(yt, dtype=np.int64)
    seed = 0 if args.seed is None else args.seed
    lr_shift = 8 if args.lr_shift is None else args.lr_shift
    calib_samples = 256 if args.calib_samples is None else args.calib_samples

    def check_steps(st: TrainState, calibrating: bool) -> None:
        """The run's steps checked once, before any (a new run's: before the calibration's
        step; the widths and sizes do not depend on its exponents): the accumulators
        first (a --batch of 2^20 is named for the fast path), then the memory of a step,
        which holds at most the samples there are. The calibration is one step of
        --calib-samples samples on the fast path, whatever --batch."""
        check_batch(st, args.batch, fast=not args.golden, name="--batch")
        check_step_memory(st, min(args.batch, len(y)), "--batch")
        if calibrating:
            check_batch(st, min(calib_samples, len(y)), fast=True, name="--calib-samples")
            check_step_memory(st, min(calib_samples, len(y)), "--calib-samples")

    if state is None:
        if args.from_artifact:
            state = state_from_artifact(net, x, y, config=_config(args, network_train_config(net)), seed=seed,
                                        lr_shift=lr_shift, calib_samples=calib_samples,
                                        meta={"from": source_name(args.from_artifact)},   # same bytes anywhere
                                        what=f"the artifact {show_path(args.from_artifact)}",
                                        labels=np.concatenate([y, yt]),
                                        check=lambda st: check_steps(st, calibrating=True))
        else:
            shapes = tt_layers(args, x.shape[1], int(max(y.max(), yt.max())) + 1, data == "digits")
            state = init_state(shapes, _config(args), seed=seed, lr_shift=lr_shift,
                               in_exp=-(_config(args).act_bits - 1))
            check_fits(state, x.shape[1], np.concatenate([y, yt]), "the network")
            check_steps(state, calibrating=True)
            xq = quantize(x, state.config.act_bits, state.in_exp)
            cal = epoch_order(seed, 0, len(y))[:calib_samples]
            state = calibrate_state(state, xq[cal], y[cal])
        # with what the run started: a resume repeating the run's own command is no
        # change (the state's lr_shift is halved and its ranks truncated along the way)
        start = {"lr_shift_start": lr_shift, "calib_samples": calib_samples}
        if args.ranks is not None:
            start["ranks_start"] = args.ranks if isinstance(args.ranks, int) else list(args.ranks)
        state = state.replace(meta={**state.meta, "seed": seed, "batch": args.batch, "data": ds_name,
                                    "data_spec": absolute_data_spec(data),
                                    "lr_decay_at": list(args.lr_decay_at), **start})
        if args.truncate_ranks:
            state = state.replace(meta={**state.meta, "truncate_ranks": _truncations_json(args.truncate_ranks)})
    else:
        check_fits(state, x.shape[1], np.concatenate([y, yt]), f"the state {show_path(args.resume)}")
        seed = resumed_seed
        if state.epoch >= args.epochs:
            raise ConfigError(f"the state is at epoch {state.epoch}; give --epochs > {state.epoch} to continue")
        check_steps(state, calibrating=False)
    # every start (random, --from, --resume) trains on the state's own input scale
    xq = quantize(x, state.config.act_bits, state.in_exp)
    xq_test = quantize(xt, state.config.act_bits, state.in_exp)
    problem = engine_labels_problem(state)
    if problem:   # the golden run is right; the board's engine would refuse the state later
        print(f"ttforge train-int: note: train-board, generate --train and build --train will refuse this "
              f"state: {problem}", file=sys.stderr)
    truncations = plan_truncations(state, args.truncate_ranks or (), args.epochs)
    check_lr(state, args.batch)   # after the calibration: it depends on the exponents
    if args.resume:   # a fresh state's counters are 0: far from the end
        check_counters(state, (args.epochs - state.epoch) * math.ceil(len(y) / args.batch),
                       f"the state {show_path(args.resume)}",
                       "give fewer --epochs, or export its network (--export) and train that with --from")
    if args.verify_steps < 0:
        raise ConfigError(f"--verify-steps={args.verify_steps} must be >= 0")
    if args.verify_steps:
        from ttforge.ir.train_diverge import replay

        order = epoch_order(seed, state.epoch + 1, len(y))
        batches = [(xq[order[j:j + args.batch]], y[order[j:j + args.batch]])
                   for j in range(0, min(len(y), args.verify_steps * args.batch), args.batch)]
        done, m = replay(state, batches)
        if m is not None:
            print(f"ttforge train-int: golden and fast steps differ: {m.describe()}")
            return 1
        print(f"golden and fast steps equal for {done} steps (every intermediate of every phase, "
              f"and the states)")
    # -o is created by its first epoch's files (and removed with them if they never land):
    # made here, it stayed behind, empty, when the run was interrupted before that epoch
    check_writable(out, "-o", inside=True)

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    console = Console(stderr=True)
    steps_per_epoch = math.ceil(len(y) / args.batch)
    total = (args.epochs - state.epoch) * steps_per_epoch
    metrics_path = out / "metrics.json"
    prior, missing, acc0 = _prior_history(metrics_path, state.epoch) if args.resume else ([], [], None)
    history: list[dict[str, Any]] = list(prior)
    if acc0 is None:
        # a resume keeps its run's initial accuracy (the resumed state's made its metrics.json
        # differ from the uninterrupted run's); a state without its run's metrics starts here
        acc0 = float(np.mean(predict(state, xq_test) == yt))
    t_start = time.perf_counter()

    def save(st: TrainState, row: dict[str, Any]) -> None:
        """An epoch's four files, each written to a temporary first and all renamed
        together at the end, the state last: the state is the commit point. An
        interruption leaves the last epoch's files, or some of the new epoch's beside the
        last epoch's state (which --resume rewrites, the rows after the state's epoch
        dropped and run again); renamed first, the state left a hole in the history
        (its epoch's row never written). With no state in -o yet (a run's first epoch),
        the files renamed before the interruption (known by their temporaries' device and
        inode) and the directories made for them are removed again: no run's files
        without its state, which a rerun would have refused without --overwrite."""
        history.append(row)
        first = not (out / TRAIN_INT_FILES[0]).exists()
        made = missing_dirs(out)
        landed: dict[Path, tuple[int, int]] = {}
        try:
            _save_files(st, landed)
        except BaseException:
            for path, ident in landed.items() if first else ():
                with contextlib.suppress(OSError):
                    st_ = os.stat(path)
                    if (st_.st_dev, st_.st_ino) == ident:   # renamed by this save, not a file of before
                        os.unlink(path)
            if first:
                remove_made_dirs(made)
            raise

    def _save_files(st: TrainState, landed: dict[Path, tuple[int, int]]) -> None:
        with contextlib.ExitStack() as stack:   # renamed in the reverse order of entry: the state last
            names = TRAIN_INT_FILES if plot is not None else TRAIN_INT_FILES[:-1]
            tmp = {name: stack.enter_context(atomic_path(out / name, suffix=Path(name).suffix)) for name in names}
            if plot is not None:
                plot(history, tmp["curves.png"], f"ttforge train-int on {ds_name}")
            atomic_write_text(tmp["metrics.json"], json.dumps(
                {"config": st.config.to_dict(), "data": ds_name, "seed": seed, "batch": args.batch,
                 "initial_test_acc": acc0, "history": history, **({"missing_epochs": missing} if missing else {})},
                indent=1) + "\n")
            save_artifact(export_network(st, data_meta), tmp["model.ttfa"])
            save_state(st, tmp["state.ttts"])
            for name in names[1:]:
                st_ = os.stat(tmp[name])
                landed[out / name] = (st_.st_dev, st_.st_ino)

    shown_name = shown(ds_name)   # a data set's path, shown in rich markup below (saved as is)
    with Progress(TextColumn("[bold]train-int[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=console, disable=args.quiet, transient=True) as prog:
        task = prog.add_task(shown_name, total=total)

        def on_epoch(st: TrainState, row: dict[str, Any]) -> None:
            save(st, row)
            prog.update(task, description=f"{shown_name} epoch {row['epoch']}/{args.epochs} "
                                          f"test {100 * row['test_acc']:.2f}%")

        state, _ = run_training(state, xq, y, xq_test, yt, args.epochs, args.batch, seed,
                                tuple(args.lr_decay_at), args.golden, lambda: prog.advance(task), on_epoch,
                                truncations)
    secs = time.perf_counter() - t_start
    table = Table(title=f"ttforge train-int: {shown_name}, {'golden' if args.golden else 'fast'} step", title_justify="left")
    for col in ("epoch", "loss (bits)", "train %", "test %", "lr shift", "changed %", "saturations", "s"):
        table.add_column(col, justify="right")
    for h in history:
        table.add_row(str(h["epoch"]), f"{h['train_loss_bits']:.4f}", f"{100 * h['train_acc']:.2f}",
                      f"{100 * h['test_acc']:.2f}", str(h["lr_shift"]), f"{100 * h['changed_fraction']:.1f}",
                      f"{h['saturations']}/{h['grad_saturations']}", f"{h['seconds']:.1f}")
    Console().print(table)
    best = max(history, key=lambda h: h["test_acc"]) if history else None
    Console().print(
        f"initial test {100 * acc0:.2f}%, final {100 * history[-1]['test_acc']:.2f}%"
        + (f" (best {100 * best['test_acc']:.2f}% at epoch {best['epoch']})" if best else "")
        + f"; {state.step} steps, {state.words:,} words drawn, {secs:.1f} s; wrote {shown(out / 'state.ttts')}, "
          f"{shown(out / 'model.ttfa')}, {shown(out / 'metrics.json')}, {shown(out / 'curves.png')}",
        highlight=False, emoji=False)
    return 0
