"""The configuration of a training run (:class:`TrainConfig`), validated on construction,
and the checks that a resumed run matches the checkpoint it continues.

The names of the files a run writes (:data:`CHECKPOINT_NAME`, :data:`METRICS_NAME`,
:data:`PLOT_NAME`) and its default directory (:func:`default_out_dir`) live here too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ttforge.errors import CheckpointError, ConfigError, show
from ttforge.limits import MAX_BATCH, MAX_EPOCHS, MAX_RATE, MAX_SEED, MAX_THREADS
from ttforge.model.defaults import PRIORS as _PRIORS
from ttforge.model.network import ModelConfig, check_known_fields

__all__ = ["TrainConfig", "default_out_dir", "CHECKPOINT_NAME", "METRICS_NAME", "PLOT_NAME"]

CHECKPOINT_NAME = "last.pt"
METRICS_NAME = "metrics.json"
PLOT_NAME = "metrics.png"
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
        afterwards, when the last of concurrent runs ends; a run of another count waits
        for them, see :func:`~ttforge.model.seeding.deterministic`). The default 1 is
        fastest for these small layers (multi-threading tiny matrix products mostly
        waits on itself, badly so on a busy machine) and makes results independent of
        the machine's core count.
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
        _check(_is_int(self.epochs) and 1 <= self.epochs <= MAX_EPOCHS,
               f"epochs={show(self.epochs)} must be an integer in 1..{MAX_EPOCHS:,}")
        _check(_is_int(self.batch_size) and 1 <= self.batch_size <= MAX_BATCH,
               f"batch_size={show(self.batch_size)} must be an integer in 1..{MAX_BATCH:,}")
        _check(_is_num(self.lr) and 0 < self.lr <= MAX_RATE,
               f"lr={self.lr!r} must be a positive number up to {MAX_RATE:g} (e.g. 1e-2)")
        _check(_is_num(self.weight_decay) and 0 <= self.weight_decay <= MAX_RATE,
               f"weight_decay={self.weight_decay!r} must be a number in 0..{MAX_RATE:g}")
        _check(_is_int(self.seed) and 0 <= self.seed <= MAX_SEED,
               f"seed={show(self.seed)} must be an integer in 0..{MAX_SEED} (2^63-1)")
        _check(isinstance(self.rank_adaptive, bool), f"rank_adaptive={self.rank_adaptive!r} must be true or false")
        _check(self.prior in _PRIORS, f"prior={self.prior!r} must be one of {', '.join(_PRIORS)}")
        _check(_is_num(self.eta) and self.eta > 0, f"eta={self.eta!r} must be a positive number")
        _check(_is_int(self.prior_update_every) and self.prior_update_every >= 0,
               f"prior_update_every={self.prior_update_every!r} must be an integer >= 0 (0: once per epoch)")
        _check(_is_num(self.truncation_threshold) and 0 < self.truncation_threshold < 1,
               f"truncation_threshold={self.truncation_threshold!r} must be between 0 and 1 (e.g. 0.01)")
        _check(_is_int(self.finetune_epochs) and 0 <= self.finetune_epochs <= MAX_EPOCHS,
               f"finetune_epochs={show(self.finetune_epochs)} must be an integer in 0..{MAX_EPOCHS:,}")
        _check(_is_int(self.threads) and 1 <= self.threads <= MAX_THREADS,
               f"threads={show(self.threads)} must be an integer in 1..{MAX_THREADS:,}")
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
        check_known_fields(cls, data, "config")
        kw = dict(data)
        if "model" in kw:
            kw["model"] = ModelConfig.from_dict(kw["model"])
        return cls(**kw)


def _data_name(spec: str) -> str:
    if spec == "digits":
        return "digits"
    path = spec[4:] if spec.startswith("idx:") else spec
    return Path(path).resolve().name or "idx"


def default_out_dir(cfg: TrainConfig) -> Path:
    """``runs/<data>-<kind>[-ra]`` (e.g. ``runs/digits-tt-ra``)."""
    return Path("runs") / f"{_data_name(cfg.data)}-{cfg.model.kind}{'-ra' if cfg.rank_adaptive else ''}"


def _compare_for_resume(given: TrainConfig, stored: TrainConfig, truncated: bool, path: Path,
                        by_path: bool = True) -> None:
    """Refuse a resume whose settings differ from the run's (``epochs`` may grow before a
    truncation); ``by_path=False`` leaves the data out (compared by its digest instead,
    :func:`ttforge.model.train._resume_dataset`: a run moved with its data resumes)."""
    from ttforge.ir import absolute_data_spec

    a, b = given.to_dict(), stored.to_dict()
    # one directory however it is written: a run written before runs recorded it absolute
    # keeps the path as typed, read (as then) from the current directory
    a["data"], b["data"] = absolute_data_spec(a["data"]), absolute_data_spec(b["data"])
    if not by_path:
        a["data"] = b["data"]
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
