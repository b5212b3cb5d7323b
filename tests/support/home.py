"""A fresh interpreter whose ``$HOME`` cannot be written: where matplotlib's first import
logged "mkdir -p failed ..." and "Matplotlib created a temporary cache directory ..." on
stderr (``ttforge.model.plots.figure_class`` imports it without them)."""

from __future__ import annotations

import os
import subprocess
import sys


def run_with_unwritable_home(code: str, *args: str) -> subprocess.CompletedProcess:
    """``python -c code args...`` with ``HOME`` under a file (``/dev/null``: the mkdir of
    ``$HOME/.config/matplotlib`` fails, as on a read-only ``$HOME``) and no setting that
    would give matplotlib another directory."""
    env = {k: v for k, v in os.environ.items() if k not in ("MPLCONFIGDIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME")}
    env["HOME"] = os.devnull
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True,
                          timeout=300)
