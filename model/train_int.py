"""What ``ttforge train-int`` (declared in :mod:`ttforge.model.cli`, run by
:func:`ttforge.ir.cli.train_int_run`) takes from the PyTorch side: the project's data
sets (:func:`~ttforge.model.data.load_dataset`: digits or MNIST IDX files) and its loss and
accuracy plot (matplotlib). The integer step itself lives in the torch-free contract."""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

__all__ = ["load_numpy", "plot_int_history"]


def load_numpy(spec: str, flag: str | None = None) -> tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(name, x_train, y_train, x_test, y_test)`` of a data spec as numpy arrays (errors
    name ``flag``, as in :func:`~ttforge.model.data.load_dataset`)."""
    from ttforge.model.data import load_dataset

    ds = load_dataset(spec, flag)
    return (ds.name, ds.x_train.numpy(), ds.y_train.numpy(), ds.x_test.numpy(), ds.y_test.numpy())


def plot_int_history(history: Sequence[dict[str, Any]], path: str | os.PathLike, title: str) -> None:
    """Loss (bits) and train/test accuracy per epoch, written atomically as a PNG."""
    from ttforge.atomic import atomic_path
    from ttforge.model.plots import figure_class, plain_title

    Figure = figure_class()   # matplotlib's object interface, imported without its directory warnings

    ep = [h["epoch"] for h in history]
    fig = Figure(figsize=(9, 3.5), layout="constrained")
    a, b = fig.subplots(1, 2)
    a.plot(ep, [h["train_loss_bits"] for h in history], "o-", ms=3)
    a.set(xlabel="epoch", ylabel="cross-entropy (bits)", title="training loss")
    b.plot(ep, [100 * h["train_acc"] for h in history], "o-", ms=3, label="train")
    b.plot(ep, [100 * h["test_acc"] for h in history], "s-", ms=3, label="test")
    b.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    b.legend()
    fig.suptitle(plain_title(title), parse_math=False)   # a data set's name is text ("m$\\f$" broke mathtext)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
