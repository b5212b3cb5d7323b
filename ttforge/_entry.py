"""The ``ttforge`` console script: :func:`ttforge.cli.main`, with an interrupt during its
imports (the first tenth of a second of every command) reported as one line, not a
traceback; ``ttforge/__init__.py`` imports nothing, so only Python's own start-up
(about 10 ms) comes before this module."""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> int:
    """Import and run :func:`ttforge.cli.main`; Ctrl-C outside a command's own boundary
    (:func:`ttforge.boundary.run_command`, which names the command): exit 130."""
    try:
        from ttforge.cli import main as cli_main

        return cli_main()
    except KeyboardInterrupt:
        sys.stderr.write("ttforge: interrupted\n")
        return 130
