"""Training curves (ttforge.model.plots.plot_history): any number of layers, no
warning on stderr."""

import os
import warnings

import pytest

from ttforge.model.plots import plot_history


def _history(layers: int, bonds: int, epochs: int = 2) -> list[dict]:
    return [{"epoch": e, "train_loss": 1.0 / e, "test_loss": 1.1 / e, "train_acc": 0.5, "test_acc": 0.4,
             "ranks": {str(i): [1, *([2] * bonds), 1] for i in range(layers)}} for e in range(1, epochs + 1)]


@pytest.mark.parametrize("layers", [1, 17, 100])
def test_any_number_of_tt_bonds_plots_without_a_warning(tmp_path, layers):
    """85 bonds (17 six-core layers) ran out of the 80 colours the plot had (an internal
    error after the run was written, and no plot); 40-80 collapsed the figure under their
    legend with a matplotlib warning on stderr. The plot is written, and past MAX_LEGEND
    bonds there is no legend."""
    out = tmp_path / "curves.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_history(_history(layers, 5), out, "title")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_loss_of_zero_plots_without_a_warning(tmp_path, recwarn):
    """A log scale with no positive value warned on stderr."""
    from ttforge.model.plots import plot_history

    h = [{"epoch": e, "train_loss": 0.0, "test_loss": 0.0, "train_acc": 1.0, "test_acc": 1.0, "ranks": {}}
         for e in (1, 2)]
    plot_history(h, tmp_path / "p.png")
    assert (tmp_path / "p.png").is_file() and not [w for w in recwarn if "positive" in str(w.message)]


def test_the_hosts_backend_figures_and_warnings_filters_stay(tmp_path):
    """plot_history and plot_int_history called matplotlib.use("Agg"): a notebook's
    inline backend was switched for good (its figures stopped showing), and
    warnings.catch_warnings() around savefig, which is not thread-safe, left
    ('ignore', UserWarning) in the filters of concurrent runs for good."""
    import matplotlib
    import matplotlib.pyplot as plt

    from ttforge.model.train_int import plot_int_history

    before = matplotlib.get_backend()
    plt.switch_backend("svg")
    try:
        fig = plt.figure()
        filters = list(warnings.filters)
        plot_history(_history(1, 2), tmp_path / "a.png", "title")
        plot_int_history([{"epoch": 1, "train_loss_bits": 1.0, "train_acc": 0.5, "test_acc": 0.4}],
                         tmp_path / "b.png", "title")
        assert matplotlib.get_backend() == "svg" and plt.get_fignums() == [fig.number]
        assert warnings.filters == filters
    finally:
        plt.close("all")
        plt.switch_backend(before)


@pytest.mark.parametrize("title", ["数据 😀", "a\n" * 60, "tab\there", "bad \udcff byte \x00"])
def test_any_title_plots_without_a_warning(tmp_path, title):
    """A data set's name is the user's text: a CJK one warned "Glyph ... missing" on
    stderr, one of many lines collapsed the layout with a warning (both were silenced
    with catch_warnings, which is not thread-safe), and a path's undecodable byte raised
    a TypeError after training. Drawn as one line, '?' for what the font lacks."""
    from ttforge.model.train_int import plot_int_history

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_history(_history(1, 2), tmp_path / "a.png", title)
        plot_int_history([{"epoch": 1, "train_loss_bits": 1.0, "train_acc": 0.5, "test_acc": 0.4}],
                         tmp_path / "b.png", title)
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"


_PLOT_IN_A_FRESH_PROCESS = """
import logging, os, sys
from ttforge.model.plots import plot_history
plot_history([{"epoch": 1, "train_loss": 1.0, "test_loss": 1.0, "train_acc": 0.5, "test_acc": 0.5,
               "ranks": {}}], sys.argv[1], "title")
print(os.environ.get("MPLCONFIGDIR"), logging.getLogger("matplotlib").filters)
"""


def test_a_home_that_cannot_be_written_prints_nothing(tmp_path):
    """A read-only ``$HOME`` (here one under a file): matplotlib's first import logged
    "mkdir -p failed ..." and "Matplotlib created a temporary cache directory ..." on
    stderr during ``train``. The plot is written without a word, and the host keeps its
    environment (matplotlib set ``MPLCONFIGDIR``) and its logger's filters."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("MPLCONFIGDIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME")}
    env["HOME"] = os.devnull   # mkdir of $HOME/.config/matplotlib fails ("Not a directory")
    out = tmp_path / "curves.png"
    p = subprocess.run([sys.executable, "-c", _PLOT_IN_A_FRESH_PROCESS, str(out)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    assert p.stdout == "None []\n"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
