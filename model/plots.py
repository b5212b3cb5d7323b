"""Training curves as a PNG (matplotlib's object interface, no display needed: the host's
pyplot backend, open figures and warnings filters are left as they are)."""

from __future__ import annotations

import io
import itertools
import os
from pathlib import Path
from typing import Any, Sequence

from ttforge.atomic import atomic_write_bytes

__all__ = ["plain_title", "plot_history", "figure_class"]

#: Most TT bonds the rank plot names in a legend (their ranks and effective ranks).
MAX_LEGEND = 12

#: How the lines start that matplotlib logs on its first import when its configuration or
#: cache directory (under ``$HOME``) cannot be made or written: it works on in a temporary
#: directory, and the two lines were all a read-only ``$HOME`` printed of a ``train``.
_DIRECTORY_WARNINGS = ("mkdir -p failed for path", "%s is not a writable directory",
                       "Matplotlib created a temporary cache directory")


def _directory_warning(record) -> bool:
    """``False`` (dropped) for one of matplotlib's :data:`_DIRECTORY_WARNINGS`."""
    return not (isinstance(record.msg, str) and record.msg.startswith(_DIRECTORY_WARNINGS))


def figure_class() -> type:
    """matplotlib's ``Figure``, matplotlib (and its font manager) imported first without
    the lines it logs about a configuration directory it cannot make
    (:data:`_DIRECTORY_WARNINGS`).

    Nothing of the host's is left changed: the filter on the ``matplotlib`` logger holds
    only for the import (matplotlib decides its directories once a process, then), and
    the ``MPLCONFIGDIR`` matplotlib sets to its temporary directory is given back (it
    keeps using that directory). A matplotlib the host imported before is left as it is.
    """
    import importlib
    import logging
    import sys

    if "matplotlib.font_manager" not in sys.modules:
        log = logging.getLogger("matplotlib")
        was = os.environ.get("MPLCONFIGDIR")
        log.addFilter(_directory_warning)
        try:
            importlib.import_module("matplotlib.font_manager")   # where its directories are decided
        finally:
            log.removeFilter(_directory_warning)
            if os.environ.get("MPLCONFIGDIR") != was:
                if was is None:
                    os.environ.pop("MPLCONFIGDIR", None)
                else:
                    os.environ["MPLCONFIGDIR"] = was
    from matplotlib.figure import Figure   # no pyplot: matplotlib.use("Agg") switched a notebook's backend

    return Figure


def plain_title(text: str) -> str:
    """``text`` as one line the default font draws: other whitespace is a space, a character
    the font lacks (or a control character, a lone surrogate of a path's undecodable byte)
    is ``?``. A data set's name is the user's text: a CJK one warned "Glyph ... missing" on
    stderr, a multi-line one collapsed the layout with a warning, and a surrogate raised
    a TypeError after training. Nothing is silenced with ``warnings.catch_warnings()``,
    which changes the process's filters for every thread."""
    figure_class()   # matplotlib imported quietly
    from matplotlib import font_manager

    font = font_manager.get_font(font_manager.findfont(font_manager.FontProperties()))
    return "".join(c if c.isprintable() and font.get_char_index(ord(c)) else "?" for c in " ".join(text.split()))


def plot_history(
    history: Sequence[dict[str, Any]],
    path: str | os.PathLike,
    title: str = "",
    truncated_after: int | None = None,
) -> Path:
    """Loss, accuracy and TT ranks per epoch, written atomically to ``path``.

    ``history`` rows are the per-epoch metrics of :func:`ttforge.model.train.train`
    (``epoch``, ``train_loss``, ``test_loss``, ``train_acc``, ``test_acc``, ``ranks``:
    ``{layer: [r0, ..., rd]}``, and optionally ``effective_ranks`` of rank-adaptive
    training, drawn dotted). ``truncated_after`` marks the epoch after which ranks
    were truncated.
    """
    Figure = figure_class()
    import matplotlib

    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(13, 3.8), layout="constrained")
    ax_loss, ax_acc, ax_rank = fig.subplots(1, 3)
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", ms=3, label="train")
    ax_loss.plot(epochs, [h["test_loss"] for h in history], "s-", ms=3, label="test")
    losses = [h[k] for h in history for k in ("train_loss", "test_loss")]
    # a log scale of no positive value warned on stderr (a loss of exactly 0)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss",
                yscale="log" if any(v > 0 for v in losses) else "linear")
    ax_acc.plot(epochs, [100 * h["train_acc"] for h in history], "o-", ms=3, label="train")
    ax_acc.plot(epochs, [100 * h["test_acc"] for h in history], "s-", ms=3, label="test")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    layers = sorted({name for h in history for name in h.get("ranks", {})})
    colors = itertools.cycle(matplotlib.rcParams["axes.prop_cycle"].by_key()["color"])
    bonds = 0
    for name in layers:
        n_bonds = max(len(h["ranks"].get(name, [])) for h in history)
        for k in range(1, n_bonds - 1):  # internal bonds only
            color = next(colors)
            bonds += 1
            for key, style, label in (("ranks", "-", ""), ("effective_ranks", ":", " effective")):
                rows = [h for h in history if name in (h.get(key) or {})]
                if not rows:
                    continue
                ax_rank.step([h["epoch"] for h in rows], [h[key][name][k] for h in rows],
                             where="post", ls=style, marker=".", color=color,
                             label=f"layer {name} r{k}{label}")
    ax_rank.set(xlabel="epoch", ylabel="rank", title="TT ranks" if bonds <= MAX_LEGEND else f"TT ranks ({bonds} bonds)")
    if not layers:
        ax_rank.text(0.5, 0.5, "no TT layers (dense model)", ha="center", va="center",
                     transform=ax_rank.transAxes)
    for ax in (ax_loss, ax_acc, ax_rank):
        if truncated_after is not None:
            ax.axvline(truncated_after + 0.5, color="grey", ls="--", lw=1)
        # a legend of every bond of a deep network would take the whole figure (and
        # collapse the axes: matplotlib warned on stderr); past MAX_LEGEND the title counts them
        if 0 < len(ax.get_legend_handles_labels()[0]) <= 2 * MAX_LEGEND:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    if truncated_after is not None:
        ax_rank.annotate("truncation", (truncated_after + 0.5, 0.98), xycoords=("data", "axes fraction"),
                         fontsize=8, color="grey", rotation=90, ha="right", va="top")
    if title:
        fig.suptitle(plain_title(title), parse_math=False)   # a data set's name is text ("m$\\f$" broke mathtext)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return atomic_write_bytes(path, buf.getvalue())
