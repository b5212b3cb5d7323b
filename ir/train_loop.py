"""The training loop around the all-integer step: epochs of shuffled mini-batches.

:func:`run_training` runs epochs of :func:`~ttforge.ir.train.train_step_fast` (or the
golden step) in the host's sample order (:func:`epoch_order`), evaluates after each and
hands every epoch's state to a callback; :func:`tt_layers` is the default network of
``ttforge train-int``. numpy only, like the step.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from ttforge.errors import ShapeError
from ttforge.ir.schedule import ContractionSchedule
from ttforge.ir.train import TrainState, check_batch, check_lr, predict, train_step_fast, train_step_stats
from ttforge.ir.tt import TTShape, factorize

__all__ = ["epoch_order", "tt_layers", "check_fits", "run_training"]


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The sample order of an epoch (host side): ``default_rng(SeedSequence([seed, 1, epoch]))``."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), 1, int(epoch)])).permutation(n)


def tt_layers(args, n_in: int, n_out: int, digits: bool) -> list[tuple[int, int, ContractionSchedule]]:
    """A TT layer ``n_in -> hidden`` and a dense classifier ``hidden -> n_out``; ``args`` has
    ``hidden``, ``cores``, ``ranks``, ``in_modes``, ``out_modes`` (``None``: the defaults of
    digits or MNIST)."""
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


def check_fits(state: TrainState, n_features: int, y: np.ndarray, what: str) -> None:
    """One line if the data does not fit ``state`` (features, label range)."""
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
