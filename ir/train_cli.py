"""``ttforge train-int``: train with the all-integer step (``docs/arithmetic.md``, "Training").

From a random init, from a compiled artifact (``--from``, e.g. a PTQ network) or from a
state (``--resume``). Every epoch ends with the state written atomically
(``state.ttts``), the exported inference artifact (``model.ttfa``), ``metrics.json`` and
``curves.png`` (plotted by the caller). Bad input (labels out of range, a state that does not match the data,
widths that would overflow, a learning rate that rounds every update to zero) is one
line and exit status 2, before any step runs. The command is registered by
:mod:`ttforge.model.train_int`, which supplies the data sets and the plot (the ``train``
extra); everything here, the step included, is numpy-only.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ttforge.errors import ConfigError, DataError, ShapeError
from ttforge.ir.arith import quantize
from ttforge.ir.cli import parse_int_list
from ttforge.ir.schedule import ContractionSchedule
from ttforge.ir.train import (TrainConfig, TrainState, calibrate_state, check_batch, check_lr,
                              export_network, init_state, predict, state_from_network,
                              train_step_fast, train_step_stats)
from ttforge.ir.tt import TTShape, factorize

__all__ = ["arguments", "run", "run_training", "epoch_order", "tt_layers", "HELP"]


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The sample order of an epoch (host side): ``default_rng(SeedSequence([seed, 1, epoch]))``."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), 1, int(epoch)])).permutation(n)


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="digits", help="'digits' (default) or a directory of MNIST IDX files")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--from", dest="from_artifact", metavar="ARTIFACT",
                     help="start from a compiled artifact (.ttfa), e.g. from ttforge quantize")
    src.add_argument("--resume", metavar="STATE", help="continue from a training state (.ttts)")
    p.add_argument("-o", "--out", default="runs/train-int", help="output directory (default runs/train-int)")
    p.add_argument("--epochs", type=int, default=10, help="epochs to run (in total, when resuming)")
    p.add_argument("--batch", type=int, default=None, help="samples per step (default 32, or the state's)")
    p.add_argument("--lr-shift", type=int, default=8, help="learning rate 2^-LR_SHIFT per summed batch gradient")
    p.add_argument("--lr-decay-at", type=parse_int_list, default=None,
                   help="epochs after which the learning rate halves (lr-shift + 1), e.g. 6,9 (default none, "
                        "or the state's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hidden", type=int, default=None, help="TT layer output size (default 64 digits, 512 else)")
    p.add_argument("--cores", type=int, default=None, help="cores of the TT layer (default 3 digits, 4 else)")
    p.add_argument("--ranks", type=int, default=None, help="rank bound (default 4 digits, 16 else)")
    p.add_argument("--in-modes", type=parse_int_list, default=None, help="e.g. 7,4,7,4")
    p.add_argument("--out-modes", type=parse_int_list, default=None, help="e.g. 4,8,4,4")
    for name, default in (("w-bits", 4), ("master-bits", 8), ("act-bits", 8), ("inter-bits", 16),
                          ("acc-bits", 32), ("grad-bits", 16)):
        p.add_argument(f"--{name}", type=int, default=None, help=f"(default {default})")
    p.add_argument("--rounding", choices=["stochastic", "nearest"], default=None)
    p.add_argument("--calib-samples", type=int, default=256)
    p.add_argument("--golden", action="store_true", help="run the golden int64 step (slow) instead of the fast path")
    p.add_argument("--verify-steps", type=int, default=0, metavar="N",
                   help="first replay N steps with the golden and the fast step side by side and stop at the "
                        "first difference (phase, layer, core, element; exit 1)")
    p.add_argument("--export", metavar="ARTIFACT",
                   help="with --resume: write the state's inference artifact (.ttfa) and exit (no training)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _config(args: argparse.Namespace, base: TrainConfig | None = None) -> TrainConfig:
    d = (base or TrainConfig()).to_dict()
    for key in ("w_bits", "master_bits", "act_bits", "inter_bits", "acc_bits", "grad_bits", "rounding"):
        v = getattr(args, key)
        if v is not None:
            d[key] = v
    return TrainConfig(**d)


def tt_layers(args: argparse.Namespace, n_in: int, n_out: int, digits: bool) -> list[tuple[int, int, ContractionSchedule]]:
    hidden = args.hidden or (64 if digits else 512)
    d = args.cores or (3 if digits else 4)
    rank = args.ranks or (4 if digits else 16)
    in_modes = tuple(args.in_modes) if args.in_modes else factorize(n_in, d)
    out_modes = tuple(args.out_modes) if args.out_modes else factorize(hidden, d)
    shape = TTShape(out_modes, in_modes, rank)
    if shape.in_size < n_in or shape.out_size < hidden:
        raise ShapeError(f"--in-modes {list(in_modes)} / --out-modes {list(out_modes)} give "
                         f"{shape.in_size}x{shape.out_size}, smaller than the {n_in} inputs / {hidden} hidden")
    return [(n_in, hidden, ContractionSchedule.optimal(shape)),
            (hidden, n_out, ContractionSchedule(TTShape((n_out,), (hidden,), (1, 1)), (0,)))]


def _check_fits(state: TrainState, n_features: int, y: np.ndarray, what: str) -> None:
    if state.in_features != n_features:
        raise ShapeError(f"{what} takes {state.in_features} inputs but the data has {n_features} features; "
                         f"give the matching --data")
    if y.size and (y.min() < 0 or y.max() >= state.n_classes):
        raise ShapeError(f"labels of the data are {int(y.min())}..{int(y.max())} but {what} has "
                         f"{state.n_classes} classes; give the matching --data")


def run_training(state: TrainState, xq: np.ndarray, y: np.ndarray, xq_test: np.ndarray, y_test: np.ndarray,
                 epochs: int, batch: int, seed: int, lr_decay_at=(), golden: bool = False,
                 on_step=None, on_epoch=None) -> tuple[TrainState, list[dict[str, Any]]]:
    """Epochs ``state.epoch + 1 .. epochs``; returns the final state and one row per epoch."""
    check_batch(state, batch, fast=not golden)
    check_lr(state, batch)
    step = train_step_stats if golden else train_step_fast
    n = len(y)
    steps = math.ceil(n / batch)
    history = []
    for epoch in range(state.epoch + 1, epochs + 1):
        t0 = time.perf_counter()
        order = epoch_order(seed, epoch, n)
        loss = sat = gsat = changed = elements = correct = 0
        for s in range(steps):
            idx = order[s * batch:(s + 1) * batch]
            state, st = step(state, xq[idx], y[idx])
            loss += st.loss_bits * len(idx)
            sat += st.saturations
            gsat += st.grad_saturations
            changed += st.changed
            elements += st.elements
            correct += st.correct
            if on_step:
                on_step()
        state = state.replace(epoch=epoch)
        if epoch in lr_decay_at:
            state = state.replace(lr_shift=state.lr_shift + 1)
        seconds = time.perf_counter() - t0
        test_acc = float(np.mean(predict(state, xq_test) == y_test))
        row = {"epoch": epoch, "step": state.step, "train_loss_bits": loss / n, "train_acc": correct / n,
               "test_acc": test_acc, "lr_shift": state.lr_shift, "saturations": sat,
               "grad_saturations": gsat, "changed_fraction": changed / max(elements, 1),
               "seconds": seconds, "samples_per_s": n / seconds, "words": state.words}
        history.append(row)
        if on_epoch:
            on_epoch(state, row)
    return state, history


def run(args: argparse.Namespace, load_data: Callable, plot: Callable | None = None) -> int:
    """The command: ``load_data(spec) -> (name, x_train, y_train, x_test, y_test)`` (floats in
    [0, 1] and integer labels, numpy) and ``plot(history, path, title)`` come from the caller
    (``ttforge.model.train_int``: the data sets and matplotlib live outside the contract)."""
    from ttforge.atomic import atomic_write_text, check_output_dir, make_output_dir
    from ttforge.ir.artifact import load_artifact, save_artifact
    from ttforge.ir.train_state import load_state, save_state

    for name in ("epochs", "batch", "calib_samples"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')}={getattr(args, name)} must be >= 1")
    if not 0 <= args.lr_shift <= 62:
        raise ConfigError(f"--lr-shift={args.lr_shift} must be in 0..62")
    if args.export and not args.resume:
        raise ConfigError("--export needs --resume STATE (the state whose network to export)")
    out = check_output_dir(args.out, "-o")
    state: TrainState | None = None
    if args.resume:
        state = load_state(args.resume)
        if args.export:  # the inference artifact of a state, nothing else
            from ttforge.atomic import check_output_file

            path = save_artifact(export_network(state, {"from_state": str(args.resume)}),
                                 check_output_file(args.export, "--export", "model.ttfa"))
            print(f"wrote {path} (the network of {args.resume} at step {state.step}, epoch {state.epoch})")
            return 0
        if args.batch is None:
            args.batch = int(state.meta.get("batch", 32))
        if args.lr_decay_at is None:
            args.lr_decay_at = [int(e) for e in state.meta.get("lr_decay_at", [])]
    elif args.from_artifact:
        net = load_artifact(args.from_artifact)
    args.batch = 32 if args.batch is None else args.batch
    args.lr_decay_at = [] if args.lr_decay_at is None else args.lr_decay_at
    ds_name, x, y, xt, yt = load_data(args.data)
    x, xt = np.asarray(x, dtype=np.float64), np.asarray(xt, dtype=np.float64)
    y, yt = np.asarray(y, dtype=np.int64), np.asarray(yt, dtype=np.int64)
    seed = args.seed
    if state is None:
        if args.from_artifact:
            base = TrainConfig(w_bits=net.layers[0].w_bits, act_bits=net.layers[0].in_bits,
                               inter_bits=net.layers[0].inter_bits, acc_bits=net.layers[0].acc_bits,
                               master_bits=min(24, net.layers[0].w_bits + 4))
            state = state_from_network(net, _config(args, base), lr_shift=args.lr_shift,
                                       sr_seed=int(np.random.SeedSequence([seed, 2]).generate_state(1)[0]) or 1,
                                       meta={"from": str(args.from_artifact)})
            what = f"the artifact {args.from_artifact}"
        else:
            shapes = tt_layers(args, x.shape[1], int(max(y.max(), yt.max())) + 1, args.data == "digits")
            state = init_state(shapes, _config(args), seed=seed, lr_shift=args.lr_shift,
                               in_exp=-(_config(args).act_bits - 1))
            what = "the network"
        _check_fits(state, x.shape[1], np.concatenate([y, yt]), what)
        xq = quantize(x, state.config.act_bits, state.in_exp)
        cal = epoch_order(seed, 0, len(y))[:args.calib_samples]
        state = calibrate_state(state, xq[cal], y[cal])
        state = state.replace(meta={**state.meta, "seed": seed, "batch": args.batch, "data": ds_name,
                                    "lr_decay_at": list(args.lr_decay_at)})
    else:
        _check_fits(state, x.shape[1], np.concatenate([y, yt]), f"the state {args.resume}")
        seed = int(state.meta.get("seed", seed))
        xq = quantize(x, state.config.act_bits, state.in_exp)
        if state.epoch >= args.epochs:
            raise ConfigError(f"the state is at epoch {state.epoch}; give --epochs > {state.epoch} to continue")
    xq_test = quantize(xt, state.config.act_bits, state.in_exp)
    check_batch(state, args.batch, fast=not args.golden)
    check_lr(state, args.batch)
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
    make_output_dir(out, "-o")

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    console = Console(stderr=True)
    steps_per_epoch = math.ceil(len(y) / args.batch)
    total = (args.epochs - state.epoch) * steps_per_epoch
    prior = []
    metrics_path = out / "metrics.json"
    if args.resume and metrics_path.exists():
        try:
            prior = json.loads(metrics_path.read_text()).get("history", [])
            prior = [h for h in prior if h.get("epoch", 0) <= state.epoch]
        except (OSError, ValueError, AttributeError):
            prior = []
    history: list[dict[str, Any]] = list(prior)
    acc0 = float(np.mean(predict(state, xq_test) == yt))
    t_start = time.perf_counter()

    def save(st: TrainState, row: dict[str, Any]) -> None:
        history.append(row)
        save_state(st, out / "state.ttts")
        save_artifact(export_network(st, {"data": ds_name}), out / "model.ttfa")
        atomic_write_text(metrics_path, json.dumps({"config": st.config.to_dict(), "data": ds_name,
                                                    "seed": seed, "batch": args.batch,
                                                    "initial_test_acc": acc0, "history": history},
                                                   indent=1) + "\n")
        if plot is not None:
            plot(history, out / "curves.png", f"ttforge train-int on {ds_name}")

    with Progress(TextColumn("[bold]train-int[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=console, disable=args.quiet, transient=True) as prog:
        task = prog.add_task(f"{ds_name}", total=total)

        def on_epoch(st: TrainState, row: dict[str, Any]) -> None:
            save(st, row)
            prog.update(task, description=f"{ds_name} epoch {row['epoch']}/{args.epochs} "
                                          f"test {100 * row['test_acc']:.2f}%")

        state, _ = run_training(state, xq, y, xq_test, yt, args.epochs, args.batch, seed,
                                tuple(args.lr_decay_at), args.golden, lambda: prog.advance(task), on_epoch)
    secs = time.perf_counter() - t_start
    table = Table(title=f"ttforge train-int: {ds_name}, {'golden' if args.golden else 'fast'} step", title_justify="left")
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
        + f"; {state.step} steps, {state.words:,} words drawn, {secs:.1f} s; wrote {out / 'state.ttts'}, "
          f"{out / 'model.ttfa'}, {out / 'metrics.json'}, {out / 'curves.png'}", highlight=False)
    return 0


HELP = ("Train with the all-integer step (docs/arithmetic.md, Training) from a random init, an artifact "
        "or a state; writes the state, the exported artifact, metrics and curves.")
