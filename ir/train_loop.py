"""The training loop around the all-integer step: epochs of shuffled mini-batches.

:func:`run_training` runs epochs of :func:`~ttforge.ir.train.train_step_fast` (or the
golden step) in the host's sample order (:func:`epoch_order`), evaluates after each and
hands every epoch's state to a callback; :func:`tt_layers` is the default network of
``ttforge train-int``. numpy only, like the step.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ttforge.errors import ConfigError, ShapeError
from ttforge.ir.schedule import ContractionSchedule
from ttforge.ir.arith import quantize
from ttforge.ir.train import (TrainConfig, TrainState, calibrate_state, check_batch, check_lr, predict,
                              state_from_network, train_step_fast, train_step_stats, truncate_ranks)
from ttforge.ir.tt import TTShape, factorize

__all__ = ["epoch_order", "tt_layers", "check_fits", "run_training", "Truncation", "plan_truncations",
           "network_train_config", "state_from_artifact"]


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


def network_train_config(net, **widths) -> TrainConfig:
    """The training widths of a compiled network (its first layer's core, activation,
    intermediate and accumulator widths; masters four bits wider than the cores, at most
    24), with ``widths`` (fields of :class:`~ttforge.ir.train.TrainConfig`) on top."""
    L0 = net.layers[0]
    d = TrainConfig(w_bits=L0.w_bits, act_bits=L0.in_bits, inter_bits=L0.inter_bits, acc_bits=L0.acc_bits,
                    master_bits=min(24, L0.w_bits + 4)).to_dict()
    d.update({k: v for k, v in widths.items() if v is not None})
    return TrainConfig(**d)


def state_from_artifact(net, x: np.ndarray, y: np.ndarray, *, config, seed: int, lr_shift: int,
                        calib_samples: int, meta: dict | None = None, what: str = "the artifact",
                        labels: np.ndarray | None = None,
                        check: Callable[[TrainState], None] | None = None) -> TrainState:
    """The training state that continues a compiled network ``net`` (``ttforge train-int
    --from``, the flow's on-device training): :func:`~ttforge.ir.train.state_from_network`
    with the stochastic-rounding seed of ``seed``, checked against the data (``x`` float
    features, ``y`` labels; ``labels``: every label the run will see, default ``y``) and
    by ``check`` (e.g. the batch's accumulators and memory), then calibrated on the first
    ``calib_samples`` of epoch 0's order."""
    state = state_from_network(net, config, lr_shift=lr_shift,
                               sr_seed=int(np.random.SeedSequence([seed, 2]).generate_state(1)[0]) or 1,
                               meta=meta)
    check_fits(state, x.shape[1], y if labels is None else labels, what)
    if check is not None:
        check(state)
    xq = quantize(x, state.config.act_bits, state.in_exp)
    cal = epoch_order(seed, 0, len(y))[:calib_samples]
    return calibrate_state(state, xq[cal], y[cal])


@dataclass(frozen=True)
class Truncation:
    """A host rank truncation: after epoch ``epoch``, the internal bonds of TT layer
    ``layer`` (``None``: the first TT layer) keep ``ranks`` slices each
    (:func:`~ttforge.ir.train.truncate_ranks`)."""

    epoch: int
    layer: int | None
    ranks: tuple[int, ...]

    def __str__(self) -> str:
        at = f"{self.epoch}" if self.layer is None else f"{self.epoch}:{self.layer}"
        return f"{at}:{','.join(map(str, self.ranks))}"

    def to_json(self) -> list:
        return [self.epoch, self.layer, list(self.ranks)]

    @classmethod
    def from_json(cls, v: Any) -> "Truncation":
        """One entry of a state's ``meta["truncate_ranks"]`` (a file: checked, one line)."""
        ok = (isinstance(v, list) and len(v) == 3 and _is_int(v[0])
              and (v[1] is None or _is_int(v[1])) and isinstance(v[2], list) and v[2]
              and all(_is_int(r) for r in v[2]))
        if not ok:
            raise ConfigError(f"the state's meta truncate_ranks entry {v!r} is not [epoch, layer, [ranks]]; "
                              f"give --truncate-ranks explicitly")
        return cls(int(v[0]), None if v[1] is None else int(v[1]), tuple(int(r) for r in v[2]))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def plan_truncations(state: TrainState, truncations, epochs: int,
                     flag: str = "--truncate-ranks") -> tuple[Truncation, ...]:
    """The truncations still to run (epochs ``state.epoch + 1 .. epochs``), each with its
    layer resolved, in the order they apply; one :class:`ConfigError` line (before any step)
    for a layer that is not a TT layer, a wrong number of ranks, a rank that does not lower
    the bond's rank at that point, an epoch after ``epochs`` or two for one layer and epoch.
    Earlier epochs are skipped: a resumed state already carries them."""
    tt = [i for i, L in enumerate(state.layers) if L.d >= 2]
    ranks = {i: list(state.layers[i].schedule.shape.ranks) for i in tt}
    seen, out = set(), []
    for t in sorted(truncations, key=lambda t: t.epoch):
        if not tt:
            raise ConfigError(f"{flag} {t}: the network has no TT layer (every layer has one core)")
        layer = tt[0] if t.layer is None else t.layer
        if layer not in ranks:
            raise ConfigError(f"{flag} {t}: layer {layer} is not a TT layer; its TT layers are "
                              f"{', '.join(map(str, tt))}")
        if (t.epoch, layer) in seen:
            raise ConfigError(f"{flag} {t}: layer {layer} is truncated twice after epoch {t.epoch}; give it once")
        seen.add((t.epoch, layer))
        if t.epoch > epochs:
            raise ConfigError(f"{flag} {t}: epoch {t.epoch} is after the last one (--epochs {epochs}); "
                              f"it would never apply")
        d = len(ranks[layer]) - 1
        if len(t.ranks) != d - 1:
            raise ConfigError(f"{flag} {t}: give {d - 1} internal ranks for layer {layer} "
                              f"(its ranks are {','.join(map(str, ranks[layer]))})")
        if t.epoch <= state.epoch:
            continue
        for k, r in enumerate(t.ranks, start=1):
            if not 1 <= r <= ranks[layer][k]:
                raise ConfigError(f"{flag} {t}: rank {r} of bond {k} of layer {layer} must be in "
                                  f"1..{ranks[layer][k]} (a truncation only lowers ranks)")
        ranks[layer][1:-1] = list(t.ranks)
        out.append(Truncation(t.epoch, layer, tuple(t.ranks)))
    return tuple(out)


def run_training(state: TrainState, xq: np.ndarray, y: np.ndarray, xq_test: np.ndarray, y_test: np.ndarray,
                 epochs: int, batch: int, seed: int, lr_decay_at=(), golden: bool = False,
                 on_step=None, on_epoch=None, truncations=()) -> tuple[TrainState, list[dict[str, Any]]]:
    """Epochs ``state.epoch + 1 .. epochs``; returns the final state and one row per epoch.

    After an epoch's steps, the host halves the learning rate (``lr_decay_at``) and applies
    the epoch's ``truncations`` (:func:`plan_truncations`, in their order) before the
    evaluation: the epoch's row, and the state handed to ``on_epoch``, are of the
    truncated network."""
    truncations = plan_truncations(state, truncations, epochs)
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
        for t in truncations:
            if t.epoch == epoch:
                state = truncate_ranks(state, t.layer, t.ranks)
        seconds = time.perf_counter() - t0
        test_acc = float(np.mean(predict(state, xq_test) == y_test))
        row = {"epoch": epoch, "step": state.step, "train_loss_bits": loss / n, "train_acc": correct / n,
               "test_acc": test_acc, "lr_shift": state.lr_shift, "saturations": sat,
               "grad_saturations": gsat, "changed_fraction": changed / max(elements, 1),
               "seconds": seconds, "samples_per_s": n / seconds, "words": state.words,
               "tt_ranks": {str(i): list(L.schedule.shape.ranks) for i, L in enumerate(state.layers) if L.d >= 2}}
        history.append(row)
        if on_epoch:
            on_epoch(state, row)
    return state, history
