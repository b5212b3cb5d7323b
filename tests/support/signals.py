"""Child processes of tests that deliver signals: started as from a terminal."""

from __future__ import annotations

import signal


def as_from_a_terminal() -> None:
    """``preexec_fn`` of a child that must get Ctrl-C: SIGINT back to its default action.

    A job started in the background by a shell without job control (``cmd &`` in a
    script, as CI may run the suite) has SIGINT ignored, its children too, and Python
    started with SIGINT ignored never raises KeyboardInterrupt: a test of what Ctrl-C
    does saw nothing happen."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
