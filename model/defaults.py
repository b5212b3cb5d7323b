"""Choices of the training options, with no PyTorch import: :mod:`ttforge.model.cli`
declares ``train``'s options from them (its ``--help`` lists them without torch), and
:class:`~ttforge.model.train_config.TrainConfig` checks against them."""

from __future__ import annotations

__all__ = ["PRIORS"]

#: The hyperpriors of the rank variances (rank-adaptive training), the default first.
PRIORS = ("log_uniform", "half_cauchy")
