"""Training TT (and dense baseline) networks: ``ttforge train`` and ``ttforge decompose``.

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

Determinism: the weights are initialised after ``torch.manual_seed(seed)``; every
epoch shuffles with its own generator seeded from ``(seed, epoch)``, so an
interrupted run resumed from ``last.pt`` ends with exactly the weights of an
uninterrupted one; PyTorch's deterministic algorithms are switched on while training.
The data split never depends on the seed (see :mod:`ttforge.model.data`).

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

import argparse
import contextlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from ttforge.atomic import atomic_write_text, check_output_dir, check_output_file
from ttforge.errors import CheckpointError, ConfigError, DataError, ShapeError
from ttforge.model.checkpoint import load_checkpoint, save_checkpoint
from ttforge.model.data import Dataset, load_dataset
from ttforge.model.layers import TTLinear
from ttforge.model.network import ModelConfig, build_model, describe, describe_table

__all__ = [
    "TrainConfig",
    "TrainResult",
    "Trained",
    "train",
    "evaluate",
    "load_trained",
    "decompose",
    "cli_spec",
    "decompose_cli_spec",
]

CHECKPOINT_NAME = "last.pt"
METRICS_NAME = "metrics.json"
PLOT_NAME = "metrics.png"
_PRIORS = ("log_uniform", "half_cauchy")
_KIND = "ttforge.train"


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (validated on construction).

    Parameters
    ----------
    data : str
        ``"digits"`` (embedded), or ``"idx:DIR"`` / ``DIR``: MNIST-format IDX files.
    model : ModelConfig
        The network; ``in_features``/``out_features`` may be left out (taken from the data).
    epochs : int
        Training epochs (before truncation when rank-adaptive).
    batch_size, lr, weight_decay : int, float, float
        Adam on mini-batches.
    seed : int
        Seeds the initialisation and the shuffling.
    rank_adaptive : bool
        Train with the low-rank prior, then truncate (TT models only).
    prior : {"log_uniform", "half_cauchy"}
        Hyperprior of the rank variances.
    eta : float
        Half-Cauchy scale.
    prior_update_every : int
        Also update the rank variances in closed form every this many steps; 0 means
        only at the end of each epoch (where they are always re-fitted together with
        the gauge, see the module docstring).
    truncation_threshold : float
        Rank indices with variance below this times their bond's largest are cut.
    finetune_epochs : int
        Epochs of plain training after truncation (only with ``rank_adaptive``).
    threads : int
        CPU threads PyTorch uses while training (``torch.set_num_threads``; restored
        afterwards). The default 1 is fastest for these small layers (multi-threading
        tiny matrix products mostly waits on itself, badly so on a busy machine) and
        makes results independent of the machine's core count.
    """

    data: str = "digits"
    model: ModelConfig = field(default_factory=ModelConfig)
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-2
    weight_decay: float = 0.0
    seed: int = 0
    rank_adaptive: bool = False
    prior: str = "log_uniform"
    eta: float = 1.0
    prior_update_every: int = 0
    truncation_threshold: float = 1e-2
    finetune_epochs: int = 10
    threads: int = 1

    def __post_init__(self) -> None:
        _check(isinstance(self.data, str) and bool(self.data),
               f"data={self.data!r} must be 'digits' or a directory of IDX files")
        _check(isinstance(self.model, ModelConfig), "model must be a ModelConfig")
        _check(_is_int(self.epochs) and self.epochs >= 1, f"epochs={self.epochs!r} must be an integer >= 1")
        _check(_is_int(self.batch_size) and self.batch_size >= 1,
               f"batch_size={self.batch_size!r} must be an integer >= 1")
        _check(_is_num(self.lr) and self.lr > 0, f"lr={self.lr!r} must be a positive number (e.g. 1e-2)")
        _check(_is_num(self.weight_decay) and self.weight_decay >= 0,
               f"weight_decay={self.weight_decay!r} must be a number >= 0")
        _check(_is_int(self.seed) and self.seed >= 0, f"seed={self.seed!r} must be an integer >= 0")
        _check(isinstance(self.rank_adaptive, bool), f"rank_adaptive={self.rank_adaptive!r} must be true or false")
        _check(self.prior in _PRIORS, f"prior={self.prior!r} must be one of {', '.join(_PRIORS)}")
        _check(_is_num(self.eta) and self.eta > 0, f"eta={self.eta!r} must be a positive number")
        _check(_is_int(self.prior_update_every) and self.prior_update_every >= 0,
               f"prior_update_every={self.prior_update_every!r} must be an integer >= 0 (0: once per epoch)")
        _check(_is_num(self.truncation_threshold) and 0 < self.truncation_threshold < 1,
               f"truncation_threshold={self.truncation_threshold!r} must be between 0 and 1 (e.g. 0.01)")
        _check(_is_int(self.finetune_epochs) and self.finetune_epochs >= 0,
               f"finetune_epochs={self.finetune_epochs!r} must be an integer >= 0")
        _check(_is_int(self.threads) and self.threads >= 1, f"threads={self.threads!r} must be an integer >= 1")
        if self.rank_adaptive and self.model.kind != "tt":
            raise ConfigError("rank_adaptive needs TT layers; use model kind 'tt' (--model tt)")

    @property
    def total_epochs(self) -> int:
        return self.epochs + (self.finetune_epochs if self.rank_adaptive else 0)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["model"] = self.model.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"a training config is a table/object of fields, not {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        for key in data:
            if key not in known:
                raise ConfigError(
                    f"unknown config field {key!r}; known fields: {', '.join(sorted(known))}"
                )
        kw = dict(data)
        if "model" in kw:
            kw["model"] = ModelConfig.from_dict(kw["model"])
        return cls(**kw)


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
    """A network loaded from a checkpoint (in eval mode)."""

    model: nn.Sequential
    model_config: ModelConfig
    config: TrainConfig
    payload: dict[str, Any]


# -- helpers ---------------------------------------------------------------------------
@contextlib.contextmanager
def _deterministic(threads: int) -> Iterator[None]:
    before = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    n_threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_only)
        torch.set_num_threads(n_threads)


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, epoch]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 2048) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)`` (eval mode restored after)."""
    was_training = model.training
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, x.shape[0], batch):
        out = model(x[i:i + batch])
        loss += float(nn.functional.cross_entropy(out, y[i:i + batch], reduction="sum"))
        correct += int((out.argmax(1) == y[i:i + batch]).sum())
    model.train(was_training)
    return loss / x.shape[0], correct / x.shape[0]


def _tt_ranks(model: nn.Module) -> dict[str, list[int]]:
    return {n: list(m.ranks) for n, m in model.named_modules() if isinstance(m, TTLinear)}


def _tt_params(model: nn.Module) -> tuple[int, int]:
    """(core entries, dense weight entries) over the TT layers."""
    rows = [m for m in model.modules() if isinstance(m, TTLinear)]
    return sum(m.n_params for m in rows), sum(m.in_features * m.out_features for m in rows)


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _data_name(spec: str) -> str:
    if spec == "digits":
        return "digits"
    path = spec[4:] if spec.startswith("idx:") else spec
    return Path(path).resolve().name or "idx"


def default_out_dir(cfg: TrainConfig) -> Path:
    """``runs/<data>-<kind>[-ra]`` (e.g. ``runs/digits-tt-ra``)."""
    return Path("runs") / f"{_data_name(cfg.data)}-{cfg.model.kind}{'-ra' if cfg.rank_adaptive else ''}"


def _load_data(cfg: TrainConfig) -> tuple[Dataset, ModelConfig]:
    ds = load_dataset(cfg.data)
    model_cfg = cfg.model.with_features(ds.n_features, ds.n_classes).resolved()
    return ds, model_cfg


def _json_ready(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _compare_for_resume(given: TrainConfig, stored: TrainConfig, truncated: bool, path: Path) -> None:
    a, b = given.to_dict(), stored.to_dict()
    for key in a:
        if key == "epochs" and not truncated and a[key] >= b[key]:
            continue  # a run may be extended
        if key == "model":
            for mk in a["model"]:
                if a["model"][mk] != b["model"][mk]:
                    raise ConfigError(
                        f"--resume: {path} was trained with model {mk}={b['model'][mk]!r}, not "
                        f"{a['model'][mk]!r}; resume with the same settings or choose a new --out"
                    )
        elif a[key] != b[key]:
            raise ConfigError(
                f"--resume: {path} was trained with {key}={b[key]!r}, not {a[key]!r}; resume with "
                f"the same settings or choose a new --out"
            )


def _stored_config(payload: dict, path: Path) -> TrainConfig:
    if payload.get("kind") != _KIND or "config" not in payload or "model_config" not in payload:
        raise CheckpointError(f"{path} is a ttforge checkpoint but not of a training run; give a "
                              f"file written by ttforge train or ttforge decompose")
    try:
        return TrainConfig.from_dict(payload["config"])
    except ConfigError as e:
        raise CheckpointError(f"{path} holds an invalid training config ({e})") from None


def load_trained(path: str | os.PathLike) -> Trained:
    """The network of a checkpoint of :func:`train` or :func:`decompose` (a run directory
    means its ``last.pt``), in eval mode."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    payload = load_checkpoint(path)
    cfg = _stored_config(payload, path)
    try:
        model_cfg = ModelConfig.from_dict(payload["model_config"])
        model = build_model(model_cfg)
        model.load_state_dict(payload["state_dict"])
    except (ConfigError, ShapeError, RuntimeError, KeyError) as e:
        raise CheckpointError(
            f"{path}: its weights do not fit its model config ({str(e).splitlines()[0]}); the "
            f"checkpoint is damaged"
        ) from None
    model.eval()
    return Trained(model, model_cfg, cfg, payload)


# -- training --------------------------------------------------------------------------
class _Progress:
    """A rich progress bar plus one line per epoch, or nothing."""

    def __init__(self, enabled: bool, total_steps: int, done_steps: int) -> None:
        self.enabled = enabled
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.console = Console()
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TimeRemainingColumn(), console=self.console,
                            transient=True)
        self.task = self.bar.add_task("training", total=total_steps, completed=done_steps)

    def __enter__(self):
        if self.enabled:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.__exit__(*exc)

    def describe(self, text: str) -> None:
        if self.enabled:
            self.bar.update(self.task, description=text)

    def step(self) -> None:
        if self.enabled:
            self.bar.advance(self.task)

    def log(self, text: str) -> None:
        if self.enabled:
            self.bar.console.print(text, highlight=False)


def _make_prior(cfg: TrainConfig, model: nn.Module):
    try:
        from ttforge.model.rank_adaptive import RankAdaptivePrior
    except ImportError as e:  # pragma: no cover - the module ships with ttforge
        raise ConfigError(f"rank-adaptive training is unavailable ({e}); drop --rank-adaptive") from None
    return RankAdaptivePrior(model, prior=cfg.prior, eta=cfg.eta)


def train(
    cfg: TrainConfig,
    out_dir: str | os.PathLike,
    resume: bool = False,
    progress: bool = True,
    overwrite: bool = False,
    stop_after: int | None = None,
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
        Start afresh even if ``out_dir`` already holds a checkpoint.
    stop_after : int, optional
        Stop after this many epochs in this call (``result.complete`` is then False);
        for time-boxed runs and tests of resuming.

    Nothing is written before the config, the data and the model have been checked.
    """
    if not isinstance(cfg, TrainConfig):
        raise ConfigError("train() needs a TrainConfig")
    out_dir = Path(out_dir)
    ckpt_path = out_dir / CHECKPOINT_NAME
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file; give a directory for the run")
    check_output_dir(out_dir, "--out")
    payload = None
    if resume:
        if not ckpt_path.exists():
            raise CheckpointError(f"--resume: {ckpt_path} does not exist; drop --resume to start a new run")
        payload = load_checkpoint(ckpt_path)
        stored = _stored_config(payload, ckpt_path)
        _compare_for_resume(cfg, stored, payload.get("truncation") is not None, ckpt_path)
        if payload.get("optimizer") is None:
            raise CheckpointError(f"--resume: {ckpt_path} holds no optimizer state (not a training "
                                  f"checkpoint); drop --resume")
    elif ckpt_path.exists() and not overwrite:
        raise ConfigError(
            f"--out {out_dir} already holds a run ({CHECKPOINT_NAME}); pass --resume to continue "
            f"it, --overwrite to replace it, or choose another --out"
        )
    if stop_after is not None and (not _is_int(stop_after) or stop_after < 1):
        raise ConfigError(f"stop_after={stop_after!r} must be an integer >= 1")

    ds, model_cfg = _load_data(cfg)
    n_train = ds.x_train.shape[0]
    steps_per_epoch = math.ceil(n_train / cfg.batch_size)
    torch.manual_seed(cfg.seed)
    model = build_model(model_cfg)
    prior = _make_prior(cfg, model) if cfg.rank_adaptive and payload is None else None

    history: list[dict[str, Any]] = []
    truncation: dict[str, Any] | None = None
    start_epoch = 0
    elapsed_before = 0.0
    if payload is not None:
        try:
            model_cfg = ModelConfig.from_dict(payload["model_config"])
            model = build_model(model_cfg)
            model.load_state_dict(payload["state_dict"])
        except (ConfigError, ShapeError, RuntimeError, KeyError) as e:
            raise CheckpointError(f"--resume: {ckpt_path} does not fit its config "
                                  f"({str(e).splitlines()[0]}); start a new run") from None
        history = list(payload["history"])
        truncation = payload.get("truncation")
        start_epoch = int(payload["epoch"])
        elapsed_before = float(payload.get("elapsed_s", 0.0))
        if cfg.rank_adaptive:
            prior = _make_prior(cfg, model)
            if payload.get("prior") is not None:
                prior.load_state_dict(payload["prior"], resize_layers=False)
        torch.set_rng_state(payload["rng"]["torch"])

    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if payload is not None:
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
            "rng": {"torch": torch.get_rng_state()},
            "elapsed_s": elapsed_before + time.perf_counter() - t_start,
            "data": {"name": ds.name, "n_train": n_train, "n_test": int(ds.x_test.shape[0])},
        }
        save_checkpoint(ckpt_path, state)
        _write_metrics(out_dir, cfg, model_cfg, history, truncation, None)
        out_dir_written = True

    epoch = start_epoch
    ran = 0
    with _deterministic(cfg.threads), bar:
        for epoch in range(start_epoch + 1, total + 1):
            if stop_after is not None and ran >= stop_after:
                epoch -= 1
                break
            phase = "train" if epoch <= cfg.epochs else "finetune"
            use_prior = prior is not None and phase == "train"
            bar.describe(f"epoch {epoch}/{total}" + (" (fine-tune)" if phase == "finetune" else ""))
            t0 = time.perf_counter()
            model.train()
            perm = torch.randperm(n_train, generator=_epoch_generator(cfg.seed, epoch))
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
        _print_summary(model, summary, complete, out_dir)
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
    rebuilt = build_model(model_cfg)
    rebuilt.load_state_dict(model.state_dict())  # raises if any shape differs


def _summary(cfg, model, ds, history, truncation, elapsed) -> dict[str, Any]:
    last = history[-1] if history else {}
    tt, tt_dense = _tt_params(model)
    rows = describe(model)
    s = {
        "data": ds.name,
        "n_train": int(ds.x_train.shape[0]),
        "n_test": int(ds.x_test.shape[0]),
        "model": cfg.model.kind,
        "epochs": last.get("epoch", 0),
        "seed": cfg.seed,
        "train_acc": last.get("train_acc"),
        "test_acc": last.get("test_acc"),
        "test_loss": last.get("test_loss"),
        "best_test_acc": max((h["test_acc"] for h in history), default=None),
        "params": _n_params(model),
        "dense_params": sum(r["dense_params"] for r in rows),
        "tt_params": tt,
        "tt_dense_params": tt_dense,
        "tt_compression": (tt_dense / tt) if tt else None,
        "ranks": _tt_ranks(model),
        "elapsed_s": elapsed,
    }
    if truncation:
        s["truncation"] = truncation
    return s


def _write_metrics(out_dir, cfg, model_cfg, history, truncation, summary) -> Path:
    doc = {
        "config": cfg.to_dict(),
        "model_config": model_cfg.to_dict(),
        "history": history,
        "truncation": truncation,
        "summary": summary,
    }
    return atomic_write_text(out_dir / METRICS_NAME, json.dumps(_json_ready(doc), indent=2) + "\n")


def _print_summary(model, summary, complete, out_dir) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(describe_table(model, title="network"))
    t = Table(title="run summary" + ("" if complete else " (stopped early; --resume to continue)"))
    t.add_column("", justify="left")
    t.add_column("value", justify="right")
    pct = lambda v: "-" if v is None else f"{100 * v:.2f}%"  # noqa: E731
    t.add_row("data", f"{summary['data']} ({summary['n_train']} train / {summary['n_test']} test)")
    t.add_row("model", summary["model"])
    t.add_row("epochs", str(summary["epochs"]))
    t.add_row("train accuracy", pct(summary["train_acc"]))
    t.add_row("test accuracy", pct(summary["test_acc"]))
    t.add_row("parameters", f"{summary['params']:,} (dense MLP: {summary['dense_params']:,})")
    if summary["tt_params"]:
        t.add_row("TT layers", f"{summary['tt_params']:,} core entries vs {summary['tt_dense_params']:,} "
                               f"dense ({summary['tt_compression']:.1f}x)")
    tr = summary.get("truncation")
    if tr:
        for name, v in tr["layers"].items():
            t.add_row(f"ranks, layer {name}", f"{v['before']} -> {v['after']}")
        t.add_row("TT entries before -> after truncation", f"{tr['tt_params_before']:,} -> {tr['tt_params_after']:,}")
        t.add_row("test accuracy before -> after truncation",
                  f"{pct(tr['test_acc_before'])} -> {pct(tr['test_acc_after'])}")
    t.add_row("time", f"{summary['elapsed_s']:.1f} s")
    t.add_row("written", f"{out_dir}/{{{CHECKPOINT_NAME}, {METRICS_NAME}, {PLOT_NAME}}}")
    console.print(t)


# -- decompose -------------------------------------------------------------------------
def decompose(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    rel_error: float | None = None,
    max_rank: int | None = None,
    skip_last: bool = False,
    data: str | None = None,
) -> dict[str, Any]:
    """Turn every ``nn.Linear`` of a trained checkpoint into a ``TTLinear`` by TT-SVD.

    Give exactly one of ``rel_error`` (each layer's TT weight is within that relative
    Frobenius error of the dense one, guaranteed) and ``max_rank`` (every bond capped;
    the error is whatever results, and reported). ``skip_last`` keeps the classifier
    dense. Test accuracy is measured before and after on the checkpoint's data (or
    ``data``). Writes a checkpoint at ``out`` loadable by :func:`load_trained`; returns
    the per-layer report.
    """
    if (rel_error is None) == (max_rank is None):
        raise ConfigError("give exactly one of --rel-error and --max-rank")
    if rel_error is not None and not (_is_num(rel_error) and 0 < rel_error < 1):
        raise ConfigError(f"--rel-error={rel_error!r} must be between 0 and 1 (e.g. 0.1)")
    if max_rank is not None and not (_is_int(max_rank) and max_rank >= 1):
        raise ConfigError(f"--max-rank={max_rank!r} must be an integer >= 1")
    out = check_output_file(out, "-o", example="tt.pt")
    src = load_trained(checkpoint)
    cfg, model = src.config, src.model
    ds = load_dataset(data or cfg.data)
    if ds.n_features != src.model_config.in_features:
        raise DataError(f"data {ds.name} has {ds.n_features} features but the checkpoint's model takes "
                        f"{src.model_config.in_features}; give the data it was trained on (--data)")
    _, acc_before = evaluate(model, ds.x_test, ds.y_test)
    linear_idx = [i for i, m in enumerate(model) if isinstance(m, nn.Linear)]
    last = max(i for i, m in enumerate(model) if isinstance(m, (nn.Linear, TTLinear)))
    if skip_last:
        linear_idx = [i for i in linear_idx if i != last]
    if not linear_idx:
        raise ConfigError(f"{checkpoint} has no nn.Linear layer to decompose"
                          + (" (besides the last, kept by --skip-last)" if skip_last else ""))
    new = nn.Sequential(*list(model))
    layers = []
    for i in linear_idx:
        lin = model[i]
        tt = TTLinear.from_linear(lin, max_rank=max_rank, rel_error=rel_error)
        err = float(tt.decomposition_error)
        if rel_error is not None and err > rel_error:  # tt_svd guarantees this; never pass it on
            raise ShapeError(f"layer {i}: TT-SVD reached relative error {err:.3g} > --rel-error {rel_error}")
        new[i] = tt
        layers.append({
            "name": str(i),
            "in_features": lin.in_features,
            "out_features": lin.out_features,
            "in_modes": list(tt.in_modes),
            "out_modes": list(tt.out_modes),
            "ranks": list(tt.ranks),
            "rel_error": err,
            "dense_params": lin.in_features * lin.out_features,
            "tt_params": tt.n_params,
            "compression": tt.compression,
        })
    new.eval()
    new_cfg = ModelConfig.of_model(new, bias=src.model_config.bias)
    _check_rebuild(new, new_cfg)
    _, acc_after = evaluate(new, ds.x_test, ds.y_test)
    report = {
        "source": str(checkpoint),
        "rel_error": rel_error,
        "max_rank": max_rank,
        "layers": layers,
        "test_acc_before": acc_before,
        "test_acc_after": acc_after,
        "params_before": _n_params(model),
        "params_after": _n_params(new),
    }
    new_cfg_train = replace(cfg, model=replace(new_cfg, in_features=None, out_features=None),
                            rank_adaptive=False, finetune_epochs=0)
    payload = {
        "kind": _KIND,
        "config": new_cfg_train.to_dict(),
        "model_config": new_cfg.to_dict(),
        "state_dict": new.state_dict(),
        "optimizer": None,
        "epoch": src.payload.get("epoch", 0),
        "history": src.payload.get("history", []),
        "truncation": None,
        "prior": None,
        "decomposition": report,
    }
    save_checkpoint(out, payload)
    return report


# -- CLI -------------------------------------------------------------------------------
def _int_list(text: str) -> tuple[int, ...]:
    from ttforge.ir.cli import parse_int_list

    if text.strip().lower() in ("", "none"):
        return ()
    return tuple(parse_int_list(text))


def _add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = (
        "Writes DIR/last.pt (checkpoint after every epoch), DIR/metrics.json and DIR/metrics.png. "
        "Options given on the command line override those of --config. Examples: "
        "'ttforge train --rank-adaptive --out runs/digits'; "
        "'ttforge train --model dense --out runs/digits-dense'; "
        "'ttforge train --data ../shared/data/mnist-t10k --hidden 256 --ranks 8 --epochs 20'."
    )
    g = p.add_argument_group("data and model")
    g.add_argument("--data", metavar="digits|DIR",
                   help="'digits' (embedded scikit-learn 8x8 digits, default) or a directory of MNIST "
                        "IDX files (t10k-images-idx3-ubyte[.gz] ...; 'idx:DIR' also works)")
    g.add_argument("--model", choices=["tt", "dense"], help="TT hidden layers (default) or a dense baseline")
    g.add_argument("--hidden", type=_int_list, metavar="N[,N...]",
                   help="hidden layer widths (default 64; 'none' for no hidden layer)")
    g.add_argument("--ranks", type=int, metavar="R", help="upper bound on every TT rank, clipped to each bond's maximal rank (default 8); exact per-layer ranks go in --config")
    g.add_argument("--n-cores", type=int, metavar="D", help="cores per TT layer (default: by size)")
    g.add_argument("--tt-last-layer", action="store_true", default=None,
                   help="make the classifier a TT layer too")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, metavar="N", help="epochs (default 30)")
    g.add_argument("--batch-size", type=int, metavar="B", help="mini-batch size (default 64)")
    g.add_argument("--lr", type=float, help="Adam learning rate (default 1e-2)")
    g.add_argument("--weight-decay", type=float, metavar="W", help="Adam weight decay (default 0)")
    g.add_argument("--seed", type=int, metavar="S", help="seed of initialisation and shuffling (default 0)")
    g.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads while training (default 1: fastest for small layers)")
    g = p.add_argument_group("rank-adaptive training")
    g.add_argument("--rank-adaptive", action="store_true", default=None,
                   help="learn the ranks with a low-rank prior, then truncate them")
    g.add_argument("--prior", choices=list(_PRIORS), help="hyperprior of the rank variances (default log_uniform)")
    g.add_argument("--threshold", type=float, dest="truncation_threshold", metavar="T",
                   help="truncate rank indices with variance below this times their bond's max (default 0.01)")
    g.add_argument("--finetune-epochs", type=int, metavar="N",
                   help="epochs of plain training after truncation (default 10)")
    g = p.add_argument_group("run")
    g.add_argument("--config", metavar="FILE", help="a .json or .toml file of TrainConfig fields "
                   "(data, epochs, ..., a [model] table; may also set out)")
    g.add_argument("--out", metavar="DIR", help="run directory (default runs/<data>-<model>[-ra])")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    g.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    g.add_argument("--quiet", action="store_true", help="no progress bar or tables")


def _read_config_file(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--config {path} does not exist; give a .json or .toml file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"--config {path} is not UTF-8 text ({e.reason} at byte {e.start}); "
                          f"save it as UTF-8 JSON or TOML") from None
    try:
        if p.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif p.suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"--config {path}: unknown file type {p.suffix!r}; use .json or .toml")
    except (ValueError, TypeError) as e:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"--config {path} does not parse ({str(e).splitlines()[0]}); fix the syntax") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path} must hold an object/table of fields")
    return data


_TRAIN_FLAGS = ("data", "epochs", "batch_size", "lr", "weight_decay", "seed", "rank_adaptive",
                "prior", "truncation_threshold", "finetune_epochs", "threads")
_MODEL_FLAGS = {"model": "kind", "hidden": "hidden", "ranks": "ranks", "n_cores": "n_cores",
                "tt_last_layer": "tt_last_layer"}


def _config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, Path]:
    file_out = None
    if args.config:
        data = _read_config_file(args.config)
        file_out = data.pop("out", None)
        if file_out is not None and (not isinstance(file_out, str) or not file_out):
            raise ConfigError(f"--config {args.config}: out={file_out!r} must be a directory path "
                              f"(a string, e.g. \"runs/digits\")")
        base = TrainConfig.from_dict(data)
    else:
        base = TrainConfig()
    out = Path(args.out or file_out) if (args.out or file_out) else None
    if args.resume:
        if out is None:
            raise ConfigError("--resume needs --out DIR, the run to continue")
        ckpt = out / CHECKPOINT_NAME
        if not ckpt.exists():
            raise CheckpointError(f"--resume: {ckpt} does not exist; drop --resume to start a new run")
        if not args.config:
            base = _stored_config(load_checkpoint(ckpt), ckpt)
    if args.ranks is not None and args.ranks < 1:
        raise ConfigError(f"--ranks={args.ranks} must be >= 1")
    train_kw = {k: getattr(args, k) for k in _TRAIN_FLAGS if getattr(args, k) is not None}
    model_kw = {v: getattr(args, k) for k, v in _MODEL_FLAGS.items() if getattr(args, k) is not None}
    model = base.model
    if model_kw:
        d = model.to_dict()
        if any(k in model_kw and model_kw[k] != d[k] for k in ("kind", "n_cores", "tt_last_layer")) or (
            "hidden" in model_kw and list(model_kw["hidden"]) != d["hidden"]
        ):
            d["in_modes"] = d["out_modes"] = None  # explicit modes no longer fit a changed shape
        d.update({k: (list(v) if isinstance(v, tuple) else v) for k, v in model_kw.items()})
        model = ModelConfig.from_dict(d)
    cfg = replace(base, **train_kw, model=model) if (train_kw or model_kw) else base
    if train_kw or model_kw:
        cfg = TrainConfig.from_dict(cfg.to_dict())  # validate the combination
    return cfg, out if out is not None else default_out_dir(cfg)


def _run_train(args: argparse.Namespace) -> int:
    cfg, out = _config_from_args(args)
    result = train(cfg, out, resume=args.resume, progress=not args.quiet, overwrite=args.overwrite)
    return 0 if result.complete else 1


def cli_spec():
    return ("Train a TT network (or a dense baseline) on the embedded digits set or on MNIST IDX "
            "files; writes checkpoint, metrics and a plot.", _add_train_arguments, _run_train)


def _add_decompose_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = ("Example: 'ttforge decompose runs/digits-dense/last.pt --rel-error 0.3 -o tt.pt'. "
                "The new checkpoint loads like a trained one (ttforge.model.train.load_trained).")
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="a checkpoint of ttforge train (or its run directory)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--rel-error", type=float, metavar="E",
                   help="relative Frobenius error bound per layer, guaranteed (e.g. 0.1)")
    g.add_argument("--max-rank", type=int, metavar="R", help="cap on every TT rank")
    p.add_argument("-o", "--out", required=True, metavar="OUT", help="file of the new TT checkpoint")
    p.add_argument("--skip-last", action="store_true", help="keep the classifier layer dense")
    p.add_argument("--data", metavar="digits|DIR", help="data to measure accuracy on (default: the "
                   "checkpoint's)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def _run_decompose(args: argparse.Namespace) -> int:
    report = decompose(args.checkpoint, args.out, rel_error=args.rel_error, max_rank=args.max_rank,
                       skip_last=args.skip_last, data=args.data)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    bound = f"rel. error <= {args.rel_error}" if args.rel_error is not None else f"max rank {args.max_rank}"
    t = Table(title=f"TT-SVD of {args.checkpoint} ({bound})")
    for col in ("layer", "shape", "modes in -> out", "ranks", "rel. error", "dense", "TT", "compression"):
        t.add_column(col, justify="right")
    for r in report["layers"]:
        t.add_row(r["name"], f"{r['in_features']} -> {r['out_features']}",
                  "x".join(map(str, r["in_modes"])) + " -> " + "x".join(map(str, r["out_modes"])),
                  ",".join(map(str, r["ranks"])), f"{r['rel_error']:.4f}", f"{r['dense_params']:,}",
                  f"{r['tt_params']:,}", f"{r['compression']:.2f}x")
    console = Console()
    console.print(t)
    console.print(f"test accuracy {100 * report['test_acc_before']:.2f}% -> "
                  f"{100 * report['test_acc_after']:.2f}%   parameters {report['params_before']:,} -> "
                  f"{report['params_after']:,}   written {args.out}", highlight=False)
    for r in report["layers"]:
        if r["compression"] < 1:
            console.print(f"[yellow]note:[/] layer {r['name']} holds more entries as TT than dense "
                          f"({r['compression']:.2f}x); a larger --rel-error or a smaller --max-rank "
                          f"compresses it")
    return 0


def decompose_cli_spec():
    return ("Decompose the dense layers of a trained checkpoint into TT layers (TT-SVD) and report "
            "rank, error, compression and accuracy.", _add_decompose_arguments, _run_decompose)
