"""Training TT (and dense baseline) networks: the loop behind ``ttforge train``.

A run is described by a frozen :class:`TrainConfig` and writes into one directory:

``last.pt``
    Checkpoint after every epoch (atomic, checksummed; see
    :mod:`ttforge.model.checkpoint`) with the config, the resolved model config
    (explicit modes and ranks, truncated ranks included), weights, optimizer state,
    metrics history, RNG states and the rank-adaptive prior's state.
``metrics.json``
    The config, per-epoch metrics and (at the end) a summary.
``metrics.png``
    Loss, accuracy and TT ranks per epoch.

Determinism: the weights are initialised as after ``torch.manual_seed(seed)``, from a
generator of the run's own (:func:`~ttforge.model.seeding.seeded_model`: torch's global
generator is neither drawn from nor reseeded, so another thread of the host drawing from
it changes nothing); every epoch shuffles with its own generator seeded from
``(seed, epoch)``, so an interrupted run resumed from ``last.pt`` ends with exactly the
weights of an uninterrupted one; PyTorch's deterministic algorithms are switched on while
training. The data split never depends on the seed (see :mod:`ttforge.model.data`).
Training records gradients whatever the caller's context (``torch.no_grad()``,
``torch.inference_mode()``) and builds the network in float32 whatever torch's default
dtype.

Rank-adaptive training (``rank_adaptive=True``) adds ``prior.penalty() / n_train`` to
the loss for ``epochs`` epochs. At the end of every epoch it calls
:meth:`~ttforge.model.rank_adaptive.RankAdaptivePrior.balance`: every bond is rotated
to the singular directions of the weight (the network computes the same function)
and the rank variances are set to their closed-form MAP values jointly with a
diagonal gauge; the Adam state is then started afresh, since its per-coordinate
moments belong to the old gauge. With ``prior_update_every > 0`` the variances are
also updated in closed form (without re-gauging) every that many steps. Without
the re-gauging the variances of unused directions do not collapse (gradient
training does not rotate the gauge), and truncation can destroy the network
(measured on digits: 96.7 % -> 10.3 % test accuracy). After the last epoch the
ranks whose variance fell below ``truncation_threshold`` times the largest of their
bond are cut out (the cores physically shrink), ranks and test accuracy before and
after are reported, the optimizer is rebuilt for the new parameters, and the
truncated network is fine-tuned for ``finetune_epochs`` epochs without the prior.
The prior's state (variances) is in every checkpoint, so a resumed run, before or
after truncation, ends with exactly the weights of an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ttforge.atomic import check_output_dir, check_run_dir, check_run_files, note_input, replace_dir
from ttforge.errors import CheckpointError, ConfigError, DataError, ShapeError, show, show_path
from ttforge.limits import MAX_EPOCHS
from ttforge.model.checkpoint import load_checkpoint, save_checkpoint
from ttforge.model.data import Dataset, data_digest, load_dataset
from ttforge.model.layers import TTLinear
from ttforge.model.network import ModelConfig
from ttforge.model.seeding import autograd_on, deterministic, empty_model, seeded_generator, seeded_model
from ttforge.model.tt import all_finite
from ttforge.model.progress import _Progress, _print_summary, _summary, _tt_params, _tt_ranks, _write_metrics
from ttforge.model.train_config import (CHECKPOINT_NAME, METRICS_NAME, PLOT_NAME, TrainConfig, _KIND, _compare_for_resume,
                                        _is_int, _stored_config, default_out_dir)

__all__ = [
    "TrainConfig",
    "TrainResult",
    "Trained",
    "train",
    "evaluate",
    "load_trained",
    "recorded_dataset",
    "run_dataset",
    "data_record",
    "default_out_dir",
]


@dataclass
class TrainResult:
    """What :func:`train` produced."""

    out_dir: Path
    checkpoint: Path
    metrics_path: Path
    plot_path: Path | None
    model: nn.Sequential
    model_config: ModelConfig
    history: list[dict[str, Any]]
    summary: dict[str, Any]
    complete: bool


@dataclass
class Trained:
    """A network loaded from a checkpoint (in eval mode); ``path`` is the checkpoint file."""

    model: nn.Sequential
    model_config: ModelConfig
    config: TrainConfig
    payload: dict[str, Any]
    path: Path | None = None

    def dataset(self, data: str | None = None) -> Dataset:
        """The data set to use the network with: ``data`` when given (the caller's choice,
        not checked), else the one it was trained on (``config.data``), checked against
        the digest its checkpoint records (:func:`run_dataset`).

        Raises
        ------
        DataError
            The run's data path holds other data than it was trained on.
        """
        if data is not None:
            return load_dataset(data)
        return run_dataset(self.config, self.payload, self.path or "the checkpoint",
                           "give --data DIR to use other data on purpose", _MOVED_FIX)


# -- helpers ---------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 2048) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)`` (eval mode restored after)."""
    if x.shape[0] == 0 or x.shape[0] != y.shape[0]:
        raise DataError(f"evaluate takes as many labels as samples, at least one; got "
                        f"{x.shape[0]} samples and {y.shape[0]} labels")
    was_training = model.training
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, x.shape[0], batch):
        out = model(x[i:i + batch])
        loss += float(nn.functional.cross_entropy(out, y[i:i + batch], reduction="sum"))
        correct += int((out.argmax(1) == y[i:i + batch]).sum())
    model.train(was_training)
    return loss / x.shape[0], correct / x.shape[0]


def _recorded_digest(payload: dict[str, Any]) -> str | None:
    """The data digest a checkpoint records (:func:`~ttforge.model.data.data_digest`);
    None for one written before runs recorded it."""
    rec = payload.get("data")
    digest = rec.get("sha256") if isinstance(rec, dict) else None
    return digest if isinstance(digest, str) else None


#: The fix of a run's data directory that no longer exists (a run moved with its data).
_MOVED_FIX = "give --data DIR, the directory that holds it now"


def _recorded_where(spec: str, path: str | os.PathLike) -> str:
    """How a line names the data directory ``spec`` that the checkpoint ``path``
    records: as recorded, the user never typed it (a run written before runs recorded it
    absolute holds it as typed, read from the current directory)."""
    p = spec[4:] if spec.startswith("idx:") else spec
    rel = "" if os.path.isabs(os.path.expanduser(p)) else " (relative to the current directory)"
    return f"the data directory {show_path(p)} that {show_path(path)} records{rel}"


def run_dataset(cfg: TrainConfig, payload: dict[str, Any], path: str | os.PathLike, fix: str,
                missing: str = _MOVED_FIX, given: str | None = None) -> Dataset:
    """The data set of a run, ``cfg.data``, checked against the digest its checkpoint
    records: the one check of ``quantize``, ``diverge``, ``decompose`` and
    ``train --resume`` that take the data from the run.

    Parameters
    ----------
    cfg : TrainConfig
        The run's config.
    payload : dict
        Its checkpoint's payload; one without a digest (written before runs recorded it)
        is not checked.
    path : path
        The checkpoint, as the message names it.
    fix : str
        What the user does about other data, the end of the message.
    missing : str
        What the user does about a recorded directory that does not exist (moved).
    given : str, optional
        Data the user gave instead of ``cfg.data`` (a resume's ``--data``), loaded and
        checked against the digest in its place.

    Raises
    ------
    DataError
        The path holds other data: a relative path read from another directory, or
        files replaced since the run (they trained on other data, silently); or the
        run's directory does not exist.
    """
    return recorded_dataset(cfg.data, _recorded_digest(payload), path, fix, missing, given=given)


def recorded_dataset(spec: str, digest: str | None, path: str | os.PathLike, fix: str,
                     missing: str = _MOVED_FIX, given: str | None = None,
                     did: str = "was trained on") -> Dataset:
    """The data set ``spec`` that the file ``path`` (a checkpoint, or an artifact's
    ``meta``) records, checked against the :func:`~ttforge.model.data.data_digest` it
    records beside it (``None``: not checked).

    Parameters
    ----------
    spec, digest : str
        The recorded data and its digest.
    path : path
        The file that records them, as the message names it.
    fix, missing, given
        As :func:`run_dataset`'s.
    did : str
        What ``path`` did with the data, as the message says it (``"was calibrated on"``).

    Raises
    ------
    DataError
        The data now at ``spec`` (or ``given``) is not the recorded data, or the
        recorded directory does not exist.
    """
    spec = spec if given is None else given
    ds = (load_dataset(spec, where=_recorded_where(spec, path), fix=missing) if given is None
          else load_dataset(spec))
    if digest is not None and data_digest(ds) != digest:
        shown = spec[4:] if spec.startswith("idx:") else spec
        raise DataError(f"data {show_path(shown)} is not the data {show_path(path)} {did} (its "
                        f"images or labels differ); {fix}")
    return ds


def data_record(ds: Dataset) -> dict[str, Any]:
    """What a checkpoint records of the data its weights were trained on (its ``data``):
    the name, the split's sizes and the digest :func:`run_dataset` checks."""
    return {"name": ds.name, "n_train": int(ds.x_train.shape[0]), "n_test": int(ds.x_test.shape[0]),
            "sha256": data_digest(ds)}


def _resume_dataset(cfg: TrainConfig, stored: TrainConfig, payload: dict[str, Any], path: Path) -> Dataset:
    """The data a resume trains on: the run's, compared by content when its checkpoint
    records a digest, so that a run moved with its data resumes with ``--data`` naming
    the new place (``cfg.data``, recorded from then on); other data is refused.

    A run without a digest (written before runs recorded one) was compared by path in
    :func:`~ttforge.model.train_config._compare_for_resume` and is read, unchecked, at
    its recorded path.
    """
    from ttforge.ir import absolute_data_spec

    moved = absolute_data_spec(cfg.data) != absolute_data_spec(stored.data)
    fix = ("--resume continues a run on the data it was trained on: give --data DIR where that data is now, "
           "or choose a new --out")
    # without a digest another directory cannot be told to hold the same data: the
    # relative path recorded is read from the directory the run was started in
    missing = (_MOVED_FIX if _recorded_digest(payload) is not None else
               "resume from the directory the run was started in, or choose a new --out")
    return run_dataset(stored, payload, path, fix, missing, given=cfg.data if moved else None)


def _load_data(cfg: TrainConfig, ds: Dataset | None = None) -> tuple[Dataset, ModelConfig]:
    """The data set (``ds``, or ``cfg.data`` loaded) and the model config that fits it."""
    ds = load_dataset(cfg.data) if ds is None else ds
    model_cfg = cfg.model.with_features(ds.n_features, ds.n_classes).resolved()
    return ds, model_cfg


def _absolute_data(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with its IDX directory absolute (as train-int's states record theirs): a
    run's data is the same files from whatever directory it is read later."""
    from ttforge.ir import absolute_data_spec

    spec = absolute_data_spec(cfg.data)
    return cfg if spec == cfg.data else dataclasses.replace(cfg, data=spec)


def _load_weights(model: nn.Module, state_dict: Any) -> None:
    """``model.load_state_dict(state_dict)`` of real floating-point tensors only (torch
    would cast complex ones with a warning of its own, integers silently)."""
    if not isinstance(state_dict, dict):
        raise KeyError("state_dict is not a mapping")
    for k, v in state_dict.items():
        if not torch.is_tensor(v) or not v.is_floating_point():
            raise ShapeError(f"weight {str(k)[:80]} is {v.dtype if torch.is_tensor(v) else type(v).__name__}, "
                             f"not a real floating-point tensor")
    model.load_state_dict(state_dict)


@contextlib.contextmanager
def _damaged(path: Path, what: str):
    """``what`` of the checkpoint ``path`` is read in the block: any failure is a
    one-line :class:`CheckpointError`."""
    try:
        yield
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        raise CheckpointError(f"--resume: {path}: {what} is damaged ({type(e).__name__}: "
                              f"{show(str(e).splitlines()[0] if str(e) else '')}); start a new run") from None


_HISTORY_NUMBERS = ("train_loss", "train_acc", "test_loss", "test_acc")


def _progress_fields(payload: dict, path: Path) -> tuple[list, int, float]:
    """``(history, epoch, elapsed seconds)`` of a training checkpoint, each checked."""
    epoch, elapsed, history = payload.get("epoch"), payload.get("elapsed_s", 0.0), payload.get("history")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= MAX_EPOCHS:
        raise CheckpointError(f"--resume: {path}: its epoch {show(epoch)} is not an integer in 0..{MAX_EPOCHS:,}; "
                              f"the checkpoint is damaged, start a new run")
    if isinstance(elapsed, bool) or not isinstance(elapsed, (int, float)) or not 0 <= elapsed < math.inf:
        raise CheckpointError(f"--resume: {path}: its elapsed_s {show(elapsed)} is not a number of seconds; "
                              f"the checkpoint is damaged, start a new run")
    good = isinstance(history, list) and all(
        isinstance(h, dict) and isinstance(h.get("epoch"), int) and not isinstance(h.get("epoch"), bool)
        and all(isinstance(h.get(k), (int, float)) and not isinstance(h.get(k), bool) for k in _HISTORY_NUMBERS)
        for h in history)
    if not good:
        raise CheckpointError(f"--resume: {path}: its history is not a list of epoch rows ({', '.join(_HISTORY_NUMBERS)}); "
                              f"the checkpoint is damaged, start a new run")
    return list(history), epoch, float(elapsed)


@autograd_on()   # the weights are ordinary tensors (made under inference_mode, QAT of them failed)
def load_trained(path: str | os.PathLike) -> Trained:
    """The network of a checkpoint of :func:`train` or :func:`decompose` (a run directory
    means its ``last.pt``), in eval mode."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    # an output of the command may never be this file (ttforge.atomic), nor, in a run's
    # directory, the run's other files (`decompose RUN -o RUN/metrics.json`)
    for name in _RUN_FILES if path.name == CHECKPOINT_NAME else (CHECKPOINT_NAME,):
        note_input(path.parent / name if name != CHECKPOINT_NAME else path)
    payload = load_checkpoint(path)
    cfg = _stored_config(payload, path)
    try:
        model_cfg = ModelConfig.from_dict(payload["model_config"])
        model = empty_model(model_cfg)
        _load_weights(model, payload["state_dict"])
    except (ConfigError, ShapeError, RuntimeError, KeyError) as e:
        # torch's first line is only "Error(s) in loading state_dict for Sequential:"
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or [type(e).__name__]
        detail = " ".join(lines[:2]) if lines[0].endswith(":") else lines[0]
        raise CheckpointError(
            f"{path}: its weights do not fit its model config ({detail}); the checkpoint is damaged"
        ) from None
    model.eval()
    return Trained(model, model_cfg, cfg, payload, path)


# -- training --------------------------------------------------------------------------
#: The files a run writes into its directory (the rest of a directory is the user's).
_RUN_FILES = (CHECKPOINT_NAME, METRICS_NAME, PLOT_NAME)


def _relocated(res: TrainResult, out_dir: Path) -> TrainResult:
    """``res`` with its paths in ``out_dir`` (after the staging directory became it)."""
    return dataclasses.replace(
        res, out_dir=out_dir, checkpoint=out_dir / res.checkpoint.name,
        metrics_path=out_dir / res.metrics_path.name,
        plot_path=None if res.plot_path is None else out_dir / res.plot_path.name)


def _make_prior(cfg: TrainConfig, model: nn.Module):
    from ttforge.model.rank_adaptive import RankAdaptivePrior

    return RankAdaptivePrior(model, prior=cfg.prior, eta=cfg.eta)


@autograd_on()
def train(
    cfg: TrainConfig,
    out_dir: str | os.PathLike,
    resume: bool = False,
    progress: bool = True,
    overwrite: bool = False,
    stop_after: int | None = None,
    _shown_dir: Path | None = None,
) -> TrainResult:
    """Train as ``cfg`` says, writing checkpoint, metrics and plot into ``out_dir``.

    Parameters
    ----------
    resume : bool
        Continue from ``out_dir/last.pt`` (the config must match; ``epochs`` may grow
        before a rank-adaptive truncation). Ends with the same weights as an
        uninterrupted run.
    progress : bool
        Show a progress bar, one line per epoch and the final summary tables.
    overwrite : bool
        Start afresh even if ``out_dir`` already holds a checkpoint. The new run is
        built beside the old one and replaces it whole at the end; until then (and after
        an error or an interruption) the old run stays whole. Files in ``out_dir`` that
        a run does not write are kept.
    stop_after : int, optional
        Stop after this many epochs in this call (``result.complete`` is then False);
        for time-boxed runs and tests of resuming.

    Nothing is written before the config, the data and the model have been checked.
    """
    if not isinstance(cfg, TrainConfig):
        raise ConfigError("train() needs a TrainConfig")
    cfg = _absolute_data(cfg)   # what the checkpoint records: read later from anywhere
    out_dir = Path(out_dir)
    ckpt_path = out_dir / CHECKPOINT_NAME
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file; give a directory for the run")
    check_output_dir(out_dir, "--out")
    payload = stored = None
    if resume:
        if not ckpt_path.exists():
            raise CheckpointError(f"--resume: {ckpt_path} does not exist; drop --resume to start a new run")
        payload = load_checkpoint(ckpt_path)
        stored = _stored_config(payload, ckpt_path)
        # with a digest the data is compared by content (_resume_dataset), not by path
        _compare_for_resume(cfg, stored, payload.get("truncation") is not None, ckpt_path,
                            by_path=_recorded_digest(payload) is None)
        if payload.get("optimizer") is None:
            raise CheckpointError(f"--resume: {ckpt_path} holds no optimizer state (not a training "
                                  f"checkpoint); drop --resume")
    else:
        # inside replace_dir (_shown_dir) the directory is a fresh one of this run's own
        check_run_dir(out_dir, _RUN_FILES, "--out", replace=overwrite or _shown_dir is not None,
                      resume_hint="pass --resume to continue it, ")
    if stop_after is not None and (not _is_int(stop_after) or stop_after < 1):
        raise ConfigError(f"stop_after={stop_after!r} must be an integer >= 1")
    if overwrite and not resume and ckpt_path.exists() and _shown_dir is None:
        # the old run stays whole until the new one is complete (ttforge.atomic.replace_dir)
        res = replace_dir(out_dir, lambda d: train(cfg, d, progress=progress, stop_after=stop_after,
                                                   _shown_dir=out_dir), own=_RUN_FILES)
        return _relocated(res, out_dir)
    # the run writes into out_dir itself from here (a resume, or --overwrite without a
    # checkpoint): a FIFO or a directory at one of its names failed only after an epoch
    check_run_files(out_dir, _RUN_FILES, "--out")

    # a resume trains on the run's data, wherever it now is: other data is refused
    ds, model_cfg = _load_data(cfg, None if payload is None else _resume_dataset(cfg, stored, payload, ckpt_path))
    record = data_record(ds)
    n_train = ds.x_train.shape[0]
    steps_per_epoch = math.ceil(n_train / cfg.batch_size)
    model, gen = seeded_model(model_cfg, cfg.seed)
    prior = _make_prior(cfg, model) if cfg.rank_adaptive and payload is None else None

    history: list[dict[str, Any]] = []
    truncation: dict[str, Any] | None = None
    start_epoch = 0
    elapsed_before = 0.0
    if payload is not None:
        try:
            model_cfg = ModelConfig.from_dict(payload["model_config"])
            model = empty_model(model_cfg)
            _load_weights(model, payload["state_dict"])
        except (ConfigError, ShapeError, RuntimeError, KeyError) as e:
            raise CheckpointError(f"--resume: {ckpt_path} does not fit its config "
                                  f"({str(e).splitlines()[0]}); start a new run") from None
        history, start_epoch, elapsed_before = _progress_fields(payload, ckpt_path)
        truncation = payload.get("truncation")
        # a checkpoint whose checksum is right can still hold fields that torch would
        # refuse deep inside (or a library's own words): each is one line here
        with _damaged(ckpt_path, "its sampler state (rng)"):
            gen.set_state(payload["rng"]["torch"])
        if cfg.rank_adaptive:
            prior = _make_prior(cfg, model)
            if payload.get("prior") is not None:
                with _damaged(ckpt_path, "its prior's state"):
                    prior.load_state_dict(payload["prior"], resize_layers=False)

    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if payload is not None:
        with _damaged(ckpt_path, "its optimizer state"):
            optimizer.load_state_dict(payload["optimizer"])

    total = cfg.total_epochs
    bar = _Progress(progress, total * steps_per_epoch, start_epoch * steps_per_epoch)
    out_dir_written = False
    t_start = time.perf_counter()
    if progress and start_epoch:
        bar.log(f"resuming {ckpt_path} after epoch {start_epoch}/{total}")

    def save(epoch: int) -> None:
        nonlocal out_dir_written
        state = {
            "kind": _KIND,
            "config": cfg.to_dict(),
            "model_config": model_cfg.to_dict(),
            "state_dict": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": epoch,
            "history": history,
            "truncation": truncation,
            "prior": prior.state_dict() if prior is not None else None,
            "rng": {"torch": gen.get_state()},   # the initialising generator's
            "elapsed_s": elapsed_before + time.perf_counter() - t_start,
            "data": record,
        }
        save_checkpoint(ckpt_path, state)
        _write_metrics(out_dir, cfg, model_cfg, history, truncation, None)
        out_dir_written = True

    epoch = start_epoch
    ran = 0
    with deterministic(cfg.threads), bar:
        for epoch in range(start_epoch + 1, total + 1):
            if stop_after is not None and ran >= stop_after:
                epoch -= 1
                break
            phase = "train" if epoch <= cfg.epochs else "finetune"
            use_prior = prior is not None and phase == "train"
            bar.describe(f"epoch {epoch}/{total}" + (" (fine-tune)" if phase == "finetune" else ""))
            t0 = time.perf_counter()
            model.train()
            perm = torch.randperm(n_train, generator=seeded_generator(cfg.seed, epoch))
            penalty_sum = 0.0
            for step in range(steps_per_epoch):
                idx = perm[step * cfg.batch_size:(step + 1) * cfg.batch_size]
                out = model(ds.x_train[idx])
                loss = nn.functional.cross_entropy(out, ds.y_train[idx])
                if use_prior:
                    pen = prior.penalty() / n_train
                    penalty_sum += float(pen.detach())
                    loss = loss + pen
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if use_prior and cfg.prior_update_every and (step + 1) % cfg.prior_update_every == 0:
                    prior.update()
                bar.step()
            if not all_finite(model.parameters()):
                # stop here: the last checkpoint (the previous epoch's) stays as it was,
                # and nothing downstream (the prior's SVDs, metrics.json) sees NaN
                raise ConfigError(f"training diverged in epoch {epoch}: the weights hold NaN or "
                                  f"infinite values; lower the learning rate (lr={cfg.lr:g})")
            if use_prior:
                # Re-gauge every bond to the weight's singular directions (same function)
                # and fit variances and diagonal gauge jointly; with update() alone the
                # variances never collapse cleanly and truncation can wreck accuracy.
                prior.balance()
                # Adam's per-coordinate moments refer to the old gauge: start them afresh.
                optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr,
                                             weight_decay=cfg.weight_decay)
            train_loss, train_acc = evaluate(model, ds.x_train, ds.y_train)
            test_loss, test_acc = evaluate(model, ds.x_test, ds.y_test)
            row: dict[str, Any] = {
                "epoch": epoch,
                "phase": phase,
                "train_loss": train_loss,
                "train_acc": train_acc,
                "test_loss": test_loss,
                "test_acc": test_acc,
                "ranks": _tt_ranks(model),
                "time_s": time.perf_counter() - t0,
            }
            if use_prior:
                row["penalty"] = penalty_sum / steps_per_epoch
                row["effective_ranks"] = {
                    k: list(v) for k, v in prior.effective_ranks(cfg.truncation_threshold).items()
                }
            history.append(row)
            bar.log(
                f"epoch {epoch:>3}/{total}  train loss {train_loss:.4f} acc {100 * train_acc:6.2f}%  "
                f"test loss {test_loss:.4f} acc {100 * test_acc:6.2f}%"
                + (f"  effective ranks {row['effective_ranks']}" if use_prior else "")
            )
            if prior is not None and epoch == cfg.epochs:
                truncation = _truncate(cfg, model, prior, ds, row)
                model_cfg = model_cfg.with_ranks([m.ranks for m in model.modules()
                                                  if isinstance(m, TTLinear)])
                _check_rebuild(model, model_cfg)
                optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr,
                                             weight_decay=cfg.weight_decay)
                bar.log(
                    "truncated ranks " + ", ".join(
                        f"layer {n}: {v['before']} -> {v['after']}" for n, v in truncation["layers"].items())
                    + f"; test acc {100 * truncation['test_acc_before']:.2f}% -> "
                      f"{100 * truncation['test_acc_after']:.2f}%"
                )
            save(epoch)
            ran += 1

    complete = epoch >= total
    summary = _summary(cfg, model, ds, history, truncation, elapsed_before + time.perf_counter() - t_start)
    plot_path = None
    if history and (ran or not (out_dir / PLOT_NAME).exists()):
        from ttforge.model.plots import plot_history

        plot_path = plot_history(history, out_dir / PLOT_NAME,
                                 title=f"{ds.name}, {model_cfg.kind} model, seed {cfg.seed}",
                                 truncated_after=truncation["epoch"] if truncation else None)
    elif (out_dir / PLOT_NAME).exists():
        plot_path = out_dir / PLOT_NAME
    metrics_path = _write_metrics(out_dir, cfg, model_cfg, history, truncation,
                                  summary if complete else None)
    if progress:
        _print_summary(model, summary, complete, _shown_dir or out_dir)
    model.eval()
    return TrainResult(out_dir, ckpt_path, metrics_path, plot_path, model, model_cfg, history,
                       summary, complete)


@torch.no_grad()
def _truncate(cfg, model, prior, ds, row) -> dict[str, Any]:
    tt_before, _ = _tt_params(model)
    report = prior.truncate(cfg.truncation_threshold)
    train_loss, train_acc = evaluate(model, ds.x_train, ds.y_train)
    test_loss, test_acc = evaluate(model, ds.x_test, ds.y_test)
    tt_after, tt_dense = _tt_params(model)
    return {
        "epoch": row["epoch"],
        "threshold": cfg.truncation_threshold,
        "layers": {n: {"before": list(b), "after": list(a)} for n, (b, a) in report.items()},
        "tt_params_before": tt_before,
        "tt_params_after": tt_after,
        "tt_dense_params": tt_dense,
        "train_acc_before": row["train_acc"],
        "train_acc_after": train_acc,
        "test_acc_before": row["test_acc"],
        "test_acc_after": test_acc,
        "test_loss_after": test_loss,
    }


def _check_rebuild(model: nn.Module, model_cfg: ModelConfig) -> None:
    """The checkpointed config must rebuild exactly this network."""
    rebuilt = empty_model(model_cfg)
    rebuilt.load_state_dict(model.state_dict())  # raises if any shape differs
