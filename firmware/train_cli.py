"""``ttforge train-board``: train a TT network on a board (or its simulation) over the UART
bridge, watch it learn, pull the learned state back (``docs/boards.md``, "Training on the
board").

The command is declared here without any data set code (firmware never imports
``ttforge.model``): ``train_board_run(args, load_data)`` takes the loader of ``ttforge
train-int`` (:func:`ttforge.model.train_int.load_numpy`), which ``ttforge.cli`` passes in.

The run is a sequence of global steps counted from the step of the state it started
from: step ``k`` of the run takes batch ``k mod S`` (``S`` batches per epoch) of epoch
``E0 + k // S + 1`` in the order :func:`ttforge.ir.train_loop.epoch_order` gives, like
``train-int``. Checkpoints are the output state file itself, written atomically, with the
run's parameters in its ``meta["board_run"]`` (:data:`RECORD_KEYS`: where the run started,
its target step, its data, batch, seed and lanes, and the sha256 of the state it started
from); ``--resume`` checks that record key by key, and that STATE is the state the run
started from, before any work, and continues to the recorded target step, so an
interrupted and resumed run ends in the same bytes as one that was never interrupted.
The output is checked before any work too: a file must be creatable where ``-o`` goes,
so a run is never lost at its end to a path that cannot be written.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import re
import sys
from typing import Callable

import numpy as np

from ttforge.errors import ConfigError, show, show_path, shown
from ttforge.limits import MAX_EPOCHS, MAX_SEED, MAX_TIMEOUT_S

__all__ = ["train_board_arguments", "train_board_run", "run_batches", "META_KEY"]

#: the state's ``meta`` key that records a board run (its start and its parameters)
META_KEY = "board_run"
_MAX_STEPS = 10_000_000
_MAX_BATCH, _MAX_LANES = 4096, 64
_MAX_COUNTER = (1 << 63) - 1       # a step or epoch counter (int64)

#: the keys of ``meta["board_run"]``: name -> (lo, hi) for an integer, or the allowed values
RECORD_KEYS = {"start_step": (0, _MAX_COUNTER), "start_epoch": (0, _MAX_COUNTER),
               "target_step": (1, _MAX_COUNTER), "data": ("digits", "mnist"),
               "batch": (1, _MAX_BATCH), "seed": (0, MAX_SEED), "lanes": (1, _MAX_LANES),
               "origin": "sha256"}
_SHA256 = re.compile(r"[0-9a-f]{64}")


def train_board_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("state", metavar="STATE", help="the training state to start from (.ttts, e.g. from "
                                                  "ttforge train-int)")
    p.add_argument("--data", default="digits", choices=["digits", "mnist"],
                   help="'digits' (embedded, default) or 'mnist' (IDX files in --mnist-dir)")
    p.add_argument("--mnist-dir", metavar="DIR", help="with --data mnist: the directory of MNIST IDX files")
    link = p.add_mutually_exclusive_group()
    link.add_argument("--port", metavar="PORT", help="the board's serial port (e.g. /dev/ttyUSB0)")
    link.add_argument("--sim", action="store_true",
                      help="train on the simulated board top (Icarus or Verilator + cocotb, the real UART bridge RTL)")
    p.add_argument("--simulator", choices=["icarus", "verilator"], default=None,
                   help="--sim: the simulator of the board top (default icarus; verilator compiles for "
                        "minutes, then runs several times faster)")
    p.add_argument("--baud", type=int, default=115200, help="UART baud rate (default 115200)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, metavar="N", help="train N steps")
    length.add_argument("--epochs", type=int, metavar="E", help="train E epochs (default 1)")
    p.add_argument("--batch", type=int, help="samples per step (default: the state's, or 32)")
    p.add_argument("--lanes", type=int, default=None,
                   help="--sim: MAC lanes of the simulated engine (default 4; a board's engine is read from it)")
    p.add_argument("--seed", type=int, default=None, help="sample order seed (default: the state's, or 0)")
    p.add_argument("--checkpoint-every", type=int, default=0, metavar="K",
                   help="read the whole state back and write -o every K steps (default: only at the end)")
    p.add_argument("--loss-every", type=int, default=1, metavar="K",
                   help="read the batch's logits every K steps for the running loss (0: never; default 1)")
    p.add_argument("-o", "--out", required=True, metavar="OUT.ttts",
                   help="the learned state (and the checkpoints), written atomically")
    p.add_argument("--resume", action="store_true",
                   help="continue the run from its last checkpoint (-o) to the same end")
    p.add_argument("--check", action="store_true",
                   help="run the golden trainer alongside and stop at the first difference (exit 1)")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds to wait for an answer (default 2; 120 with --sim)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run_batches(xq: np.ndarray, y: np.ndarray, batch: int, seed: int, start_epoch: int, first: int,
                last: int):
    """The batches of run steps ``first .. last-1`` (see the module docstring)."""
    from ttforge.ir.train_loop import epoch_order

    n = len(y)
    per = math.ceil(n / batch)
    order, cur = None, None
    for k in range(first, last):
        e, j = start_epoch + k // per + 1, k % per
        if e != cur:
            order, cur = epoch_order(seed, e, n), e
        idx = order[j * batch:(j + 1) * batch]
        yield xq[idx], y[idx]


def _check_args(args: argparse.Namespace) -> None:
    for name, lo, hi in (("steps", 1, _MAX_STEPS), ("epochs", 1, MAX_EPOCHS), ("batch", 1, _MAX_BATCH),
                         ("lanes", 1, _MAX_LANES), ("seed", 0, MAX_SEED), ("checkpoint_every", 0, _MAX_STEPS),
                         ("loss_every", 0, _MAX_STEPS), ("baud", 1, 100_000_000)):
        v = getattr(args, name)
        if v is not None and not lo <= v <= hi:
            raise ConfigError(f"--{name.replace('_', '-')} {v} must be in {lo}..{hi:,}")
    if args.timeout is not None and not (math.isfinite(args.timeout) and 0 < args.timeout <= MAX_TIMEOUT_S):
        raise ConfigError(f"--timeout {args.timeout:g} must be a number of seconds in (0, {MAX_TIMEOUT_S:,g}]")
    if not args.port and not args.sim:
        raise ConfigError("give --port PORT (the board's serial port, e.g. /dev/ttyUSB0) or --sim")
    if args.simulator and not args.sim:     # a board is no simulation: say so, not ignore it
        raise ConfigError(f"--simulator {args.simulator} is for --sim (the simulated board); drop it "
                          "with --port")
    if args.port and not os.path.exists(args.port):
        raise ConfigError(f"--port {args.port} does not exist; give the board's serial port (e.g. "
                          "/dev/ttyUSB0; is the board attached?)")
    if args.data == "mnist" and not args.mnist_dir:
        raise ConfigError("--data mnist needs --mnist-dir DIR (the directory of the MNIST IDX files)")
    if args.data != "mnist" and args.mnist_dir:
        raise ConfigError("--mnist-dir is for --data mnist; drop it or give --data mnist")


def _record(run, out) -> dict:
    """``meta["board_run"]`` of the checkpoint ``out``, every key checked (presence, type,
    range), or one line naming ``out`` and the key."""
    if not isinstance(run, dict):
        raise ConfigError(f"-o {show_path(out)} was not written by ttforge train-board (no {META_KEY} record); "
                          "drop --resume to start a new run")
    fix = "the checkpoint is damaged; drop --resume to start a new run (from STATE)"

    def bad(key, why):
        return ConfigError(f"-o {show_path(out)}: meta.{META_KEY}.{key} {why}; {fix}")

    for key in run:
        if key not in RECORD_KEYS:
            raise bad(show(key), f"is not a key of a train-board record (those are {', '.join(RECORD_KEYS)})")
    for key, allowed in RECORD_KEYS.items():
        if key not in run:
            raise bad(key, "is missing")
        v = run[key]
        if allowed == "sha256":
            if not isinstance(v, str) or not _SHA256.fullmatch(v):
                raise bad(key, f"= {show(v)} must be a sha256 (64 lowercase hex digits)")
        elif isinstance(allowed[0], str):
            if v not in allowed:
                raise bad(key, f"= {show(v)} must be one of {', '.join(map(repr, allowed))}")
        else:
            lo, hi = allowed
            if isinstance(v, bool) or not isinstance(v, int):
                raise bad(key, f"= {show(v)} must be an integer")
            if not lo <= v <= hi:
                raise bad(key, f"= {show(v)} is out of range {lo}..{hi:,}")
    if run["target_step"] <= run["start_step"]:
        raise bad("target_step", f"= {run['target_step']} must be after start_step ({run['start_step']})")
    return dict(run)


def _same_network(a, b) -> bool:
    return (a.config == b.config and a.in_exp == b.in_exp and len(a.layers) == len(b.layers)
            and all((la.in_features, la.out_features, la.schedule, la.relu,
                     tuple(m.shape for m in la.masters)) ==
                    (lb.in_features, lb.out_features, lb.schedule, lb.relu, tuple(m.shape for m in lb.masters))
                    for la, lb in zip(a.layers, b.layers)))


def _resume_params(state, origin, args, out) -> dict:
    """The run recorded in the checkpoint ``state`` (read from ``out``), checked key by
    key and against ``origin`` (the positional STATE: the state the run started from)
    and this invocation's arguments, before any work."""
    run = _record(state.meta.get(META_KEY), out)
    for name in ("batch", "seed", "lanes"):
        v = getattr(args, name)
        if v is not None and v != run[name]:
            raise ConfigError(f"--{name} {v} differs from the run being resumed ({run[name]}); drop "
                              f"--{name} to continue it")
    if run["data"] != args.data:
        raise ConfigError(f"--data {args.data} differs from the run being resumed ({run['data']}); "
                          "give the same --data")
    if not run["start_step"] <= state.step <= run["target_step"]:
        raise ConfigError(f"-o {show_path(out)} is at step {state.step}, outside its run (meta.{META_KEY}: "
                          f"start_step {run['start_step']}, target_step {run['target_step']}); the checkpoint "
                          "is damaged; drop --resume to start a new run")
    fix = (f"give the state the run started from (step {run['start_step']}) as STATE, or drop --resume "
           "to start a new run")
    if not _same_network(origin, state):
        raise ConfigError(f"STATE {show_path(args.state)} is not the state of the run in -o {show_path(out)}: "
                          f"its network (config, layer shapes or input exponent) differs; {fix}")
    from ttforge.ir.train_state import dumps_state

    if hashlib.sha256(dumps_state(origin)).hexdigest() != run["origin"]:
        raise ConfigError(f"STATE {show_path(args.state)} (step {origin.step}) is not the state the run in "
                          f"-o {show_path(out)} started from (its sha256 differs from meta.{META_KEY}.origin); "
                          f"{fix}")
    for key, want in (("start_step", origin.step), ("start_epoch", origin.epoch)):
        # the batches of the resumed steps are counted from these: another value would
        # take other batches than the run that was interrupted
        if run[key] != want:
            raise ConfigError(f"-o {show_path(out)}: meta.{META_KEY}.{key} = {run[key]}, but the state the run "
                              f"started from is at {key.split('_')[1]} {want}; the checkpoint is damaged; drop "
                              f"--resume to start a new run")
    return run


#: Steps whose wall time the run measures before it states the time the rest will take.
_MEASURED_STEPS = 2


def _duration(seconds: float) -> str:
    """``seconds`` for a person: ``"40 s"``, ``"12 min"``, ``"3.5 h"``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _sim_plan(state, batch: int, engine, steps: int, in_features: int) -> str:
    """One line before a simulated run: its steps and the engine cycles each takes (exact:
    the engine never stalls; :func:`~ttforge.hw.trainer.engine.op_cycles`, the batch
    streamed in one element a cycle). A simulator runs a few thousand to some tens of
    thousands of cycles a second, so a careless batch showed nothing for many minutes."""
    from ttforge.hw.trainer.engine import op_cycles
    from ttforge.hw.trainer.program import compile_training

    prog = compile_training(state, batch, engine)
    cycles = sum(op_cycles(op, engine, prog.slots) for op in prog.ops) + batch * (in_features + 1)
    return (f"{steps:,} step{'s' * (steps != 1)} of batch {batch} on the simulated board, {cycles:,} engine "
            f"cycles a step ({steps * cycles:,} in all, the UART's besides); the time a step takes is stated "
            f"after the first {_MEASURED_STEPS} (a smaller --batch or --steps is quicker)")


def train_board_run(args: argparse.Namespace, load_data: Callable) -> int:
    """The command; ``load_data(spec[, flag]) -> (name, x_train, y_train, x_test, y_test)``
    as for ``ttforge train-int`` (errors name ``flag``)."""
    from ttforge.atomic import check_not_input, check_output_file, check_writable, note_input
    from ttforge.hw.trainer.program import check_labels_fit, fit_engine
    from ttforge.ir.arith import quantize
    from ttforge.ir.train import check_batch, predict
    from ttforge.ir.train_loop import check_fits
    from ttforge.ir.train_state import dumps_state, load_state, save_state

    _check_args(args)
    note_input(args.state)     # the run never writes over the state it starts from
    out = check_output_file(args.out, "-o", "state.ttts")
    check_writable(out)        # before any work: a run is never lost to an output it cannot write
    origin = load_state(args.state)
    if args.resume:
        if not out.exists():
            raise ConfigError(f"--resume: -o {out} does not exist, so there is no run to resume; drop --resume "
                              "to start one")
        state = load_state(out)
        run = _resume_params(state, origin, args, out)
    else:
        state = origin
        run = {"start_step": int(state.step), "start_epoch": int(state.epoch), "data": args.data,
               "batch": args.batch, "seed": args.seed, "lanes": int(args.lanes or 4),
               "origin": hashlib.sha256(dumps_state(state)).hexdigest()}
        for key, default in (("batch", 32), ("seed", 0)):   # not given: the state's meta, checked as the option
            if run[key] is None:
                v, (lo, hi) = state.meta.get(key, default), RECORD_KEYS[key]
                if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                    raise ConfigError(f"the state {show_path(args.state)} says {key}={show(v)} (its meta), not an "
                                      f"integer in {lo}..{hi:,}; give --{key}")
                run[key] = v
    batch, seed, lanes = run["batch"], run["seed"], run["lanes"]
    try:
        check_batch(state, batch)
    except ConfigError as e:
        if not args.resume or args.batch is not None:
            raise
        raise ConfigError(f"-o {show_path(out)}: meta.{META_KEY}.batch = {batch}: {e}") from None
    check_labels_fit(state)    # a board's engine is read only later: refused before the data and the port
    # idx: so that a directory named "digits" is read as one; errors name --mnist-dir
    ds_name, x, y, xt, yt = (load_data(f"idx:{args.mnist_dir}", "--mnist-dir") if args.data == "mnist"
                             else load_data("digits"))
    check_not_input(out)       # the data files just read (IDX), before the run, not after it
    y, yt = np.asarray(y, dtype=np.int64), np.asarray(yt, dtype=np.int64)
    check_fits(state, np.asarray(x).shape[1], np.concatenate([y, yt]), f"the state {args.state}")
    xq = quantize(np.asarray(x), state.config.act_bits, state.in_exp)   # in blocks, no float64 copy
    per = math.ceil(len(y) / batch)
    longest = max(_MAX_STEPS, MAX_EPOCHS * per)
    asked = args.steps if args.steps is not None else args.epochs * per if args.epochs is not None else None
    if args.resume:      # to the recorded end; a length that ends elsewhere is refused
        if run["target_step"] - run["start_step"] > longest:
            raise ConfigError(f"-o {show_path(out)}: meta.{META_KEY}.target_step = {run['target_step']} makes "
                              f"the run longer than {longest:,} steps; the checkpoint is damaged; drop "
                              "--resume to start a new run")
        if asked is not None and run["start_step"] + asked != run["target_step"]:
            given = f"--steps {args.steps}" if args.steps is not None else f"--epochs {args.epochs}"
            raise ConfigError(f"{given} ends the run at step {run['start_step'] + asked}, but the run being "
                              f"resumed ends at step {run['target_step']}; drop {given.split()[0]} to continue "
                              "it to its end")
    else:
        run["target_step"] = run["start_step"] + (asked if asked is not None else per)
    first, last = state.step - run["start_step"], run["target_step"] - run["start_step"]
    if first >= last:
        raise ConfigError(f"-o {show_path(out)} is at step {state.step}, the end of its run; to train on, start "
                          f"a new run from it: give {show_path(out)} as STATE, another -o and no --resume")
    # the simulated board is generated for the state; a board's engine is read from it
    engine = fit_engine(state, batch, lanes=lanes) if args.sim else None

    def stamped(st):
        k = st.step - run["start_step"]
        return st.replace(epoch=run["start_epoch"] + k // per, meta={**st.meta, META_KEY: dict(run)})

    from ttforge.firmware.train_board import open_train_device

    dev = open_train_device(engine, sim=args.sim, port=args.port, baud=args.baud, timeout=args.timeout,
                            train=state.config, **({"simulator": args.simulator or "icarus"} if args.sim else {}))

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    from ttforge.firmware.train_host import train_on_device

    console = Console(stderr=True)
    where = "simulated board" if args.sim else f"board on {args.port} at {args.baud} baud"
    if args.sim:   # a simulated step can take minutes: say what is coming before the first
        print(f"ttforge train-board: {_sim_plan(state, batch, engine, last - first, xq.shape[1])}", file=sys.stderr)
    told = {"done": False}
    loss_shown = {"sum": 0.0, "n": 0, "correct": 0, "last": None}
    with dev, Progress(TextColumn("[bold]train-board[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[rate]}"), TextColumn("{task.fields[loss]}"),
                       TimeRemainingColumn(), console=console, disable=args.quiet, transient=True) as prog:
        task = prog.add_task(f"{ds_name} on the {where}", total=last - first, rate="", loss="")

        def on_step(info):
            if info.loss_bits is not None:
                n = min(loss_shown["n"] + 1, 20)      # a running mean over about 20 steps
                loss_shown["last"] = info.loss_bits if loss_shown["last"] is None else \
                    loss_shown["last"] + (info.loss_bits - loss_shown["last"]) / n
                loss_shown["n"] = n
            rate = f"{info.samples / max(info.seconds, 1e-9):.1f} samples/s"
            loss = "" if loss_shown["last"] is None else f"loss {loss_shown['last']:.3f} bits (device)"
            prog.update(task, advance=1, rate=rate, loss=loss)
            done = info.step - run["start_step"] - first
            if not told["done"] and done >= _MEASURED_STEPS and last - first > done:
                told["done"] = True
                left = info.seconds / done * (last - first - done)
                console.print(f"ttforge train-board: {info.seconds / done:.1f} s a step measured over {done}; about "
                              f"{_duration(left)} for the {last - first - done:,} steps left", highlight=False)

        res = train_on_device(dev, state, run_batches(xq, y, batch, seed, run["start_epoch"], first, last),
                              checkpoint_every=args.checkpoint_every,
                              on_checkpoint=lambda st: save_state(stamped(st), out), check=args.check,
                              loss_every=args.loss_every, on_step=on_step)
    final = stamped(res.state)
    digest = hashlib.sha256(dumps_state(final)).hexdigest()
    acc = float(np.mean(predict(final, quantize(np.asarray(xt), state.config.act_bits,
                                                state.in_exp)) == yt)) if res.mismatch is None else None
    table = Table(title=f"ttforge train-board: {shown(ds_name)} on the {shown(where)}", title_justify="left")
    table.add_column("")
    table.add_column("", justify="right")
    rows = [("steps", f"{res.steps} (state step {final.step} of {run['target_step']})"),
            ("samples", f"{res.samples:,}"),
            ("wall time", f"{res.seconds:.1f} s ({res.samples / max(res.seconds, 1e-9):.1f} samples/s)"),
            ("device cycles", f"{res.cycles:,} ({res.mac_cycles:,} MAC lane-cycles)"),
            ("link bytes", f"{res.tx:,} to the board, {res.rx:,} back"),
            ("per step", f"{np.mean(res.step_tx):,.0f} + {np.mean(res.step_rx):,.0f} bytes"
                         if res.step_tx else "-")]
    if res.losses:
        lo = res.losses
        rows.append(("loss (device logits)", f"{lo[0][1]:.4f} -> {lo[-1][1]:.4f} bits"))
        rows.append(("train accuracy (device)", f"{100 * sum(c for _, _, c, _ in lo) / sum(n for *_, n in lo):.2f}%"))
    if acc is not None:
        rows.append(("test accuracy", f"{100 * acc:.2f}%"))
    rows.append(("state sha256", digest if res.mismatch is None else "(not written: it diverged)"))
    if args.check:
        rows.append(("equal to golden", "yes, byte for byte" if res.mismatch is None else "NO"))
    for k, v in rows:
        table.add_row(k, v)
    Console().print(table)
    if res.mismatch is not None:
        last_ok = max([c for c in res.checkpoints if c < (res.mismatch.step or 0)], default=run["start_step"])
        print(f"ttforge train-board: the device diverged from the golden trainer: {res.mismatch.describe()} "
              f"(the last state known equal is step {last_ok}; -o holds the last good checkpoint"
              f"{'' if args.checkpoint_every == 1 else '; rerun with --checkpoint-every 1 to name the step'})")
        return 1
    print(f"wrote {show_path(out)} (step {final.step}, sha256 {digest})")
    return 0
