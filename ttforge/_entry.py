"""The ``ttforge`` console script: :func:`ttforge.cli.main`, with an interrupt during its
imports (the first tenth of a second of every command) reported as one line, not a
traceback; ``ttforge/__init__.py`` imports nothing, so only Python's own start-up
(about 10 ms) comes before this module."""

from __future__ import annotations

import signal
import sys
from typing import Callable

__all__ = ["main", "run_to_shutdown"]


def run_to_shutdown(command: Callable[[], int]) -> int:
    """``command()``, after which Ctrl-C is ignored: the command has ended (its outputs
    complete or not written), and a Ctrl-C while the interpreter shuts down raised
    inside torch's atexit handlers and printed their traceback (with exit 0); SIGTERM
    keeps its default, which prints nothing. Both entries use it: the console script
    (:func:`main`) and ``python -m ttforge.cli``."""
    try:
        return command()
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def main() -> int:
    """Import and run :func:`ttforge.cli.main`; Ctrl-C outside a command's own boundary
    (:func:`ttforge.boundary.run_command`, which names the command): exit 130."""
    try:
        from ttforge.cli import main as cli_main

        return run_to_shutdown(cli_main)
    except KeyboardInterrupt:
        sys.stderr.write("ttforge: interrupted\n")
        return 130
