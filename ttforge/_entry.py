"""The ``ttforge`` console script: :func:`ttforge.cli.main`, with an interrupt during its
imports (the first tenth of a second of every command) reported as one line, not a
traceback; ``ttforge/__init__.py`` imports nothing, so only Python's own start-up
(about 10 ms) comes before this module. Before anything else, the standard streams
that were closed are opened on ``/dev/null`` (:func:`open_standard_streams`), and the
imports of numpy and torch are made uninterruptible (:func:`guard_imports`)."""

from __future__ import annotations

import builtins
import contextlib
import os
import signal
import sys
from typing import Callable, Iterator

__all__ = ["main", "run_to_shutdown", "open_standard_streams", "closed_at_start", "guard_imports",
           "interrupts_held", "ignore_file_size_signal", "INTERRUPTS"]

#: The standard file descriptors (0, 1, 2) that were closed when ttforge started, as
#: :func:`open_standard_streams` found them.
_CLOSED: frozenset[int] = frozenset()


def open_standard_streams() -> frozenset[int]:
    """Open ``/dev/null`` on each of the file descriptors 0, 1 and 2 that is closed, and
    return those.

    A closed descriptor is the lowest free one, so the next file opened gets it: with
    stdout closed (``ttforge train ... >&-``, a daemon's closed stdio) a file ttforge
    writes would receive anything written to fd 1 itself (by C code, by a child given
    the descriptor). Python leaves ``sys.stdout`` ``None`` then, where
    ``sys.stdout.write`` ended ``quantize`` in exit 70 after its artifact was written;
    it becomes a stream on ``/dev/null``, so the messages are dropped. Both entries call this first: the
    console script (:func:`main`) and ``python -m ttforge.cli``.
    """
    global _CLOSED
    closed = set()
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        try:
            new = os.open(os.devnull, os.O_RDONLY if fd == 0 else os.O_WRONLY)
        except OSError:   # no /dev/null (a bare chroot): nothing safer to put there
            continue
        if new != fd:
            os.dup2(new, fd)   # inheritable: a child process gets /dev/null too
            os.close(new)
        else:
            os.set_inheritable(fd, True)
        closed.add(fd)
        if getattr(sys, name) is None:
            # backslashreplace: nothing printed to /dev/null can fail to encode
            stream = open(fd, "r" if fd == 0 else "w", encoding="utf-8", errors="backslashreplace",
                          closefd=False)
            setattr(sys, name, stream)
            setattr(sys, f"__{name}__", stream)
    _CLOSED = frozenset(closed)
    return _CLOSED


def closed_at_start() -> frozenset[int]:
    """The standard descriptors :func:`open_standard_streams` found closed (none if it
    has not run: ttforge called in-process)."""
    return _CLOSED


#: The signals that end a command (``ttforge.boundary``: SIGTERM, SIGHUP and SIGXCPU, the
#: CPU time limit, act as Ctrl-C).
INTERRUPTS = frozenset(s for s in (getattr(signal, n, None) for n in ("SIGINT", "SIGTERM", "SIGHUP", "SIGXCPU"))
                       if s)


def ignore_file_size_signal() -> None:
    """SIGXFSZ ignored in this process: a write past the file-size limit (``ulimit -f``)
    then fails with ``EFBIG``, which every write turns into one line, exit 3, after its
    cleanup, where the signal's default action kills the process (with a core) and
    leaves the temporaries and the lock. Python's start-up ignores it already; an
    interpreter embedded without its signal handlers does not. A child process gets the
    default back (``subprocess`` restores SIGXFSZ for every program it starts:
    ``restore_signals``), so a simulator or toolchain past the limit stops as it would
    from a shell. Both entries call this."""
    if hasattr(signal, "SIGXFSZ"):
        with contextlib.suppress(ValueError, OSError):   # not the main thread
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

#: Packages whose first import runs with the interrupting signals held back
#: (:func:`guard_imports`): their C extensions cannot be imported twice in a process.
GUARDED_IMPORTS = frozenset({"numpy", "torch"})


@contextlib.contextmanager
def interrupts_held() -> Iterator[frozenset | None]:
    """Hold :data:`INTERRUPTS` back in this thread for the block and deliver them after
    it, their handlers raising where the block ended; yields the signal mask before the
    block (``None`` where there are no signal masks: nothing is held)."""
    if not hasattr(signal, "pthread_sigmask"):
        yield None
        return
    before = frozenset(signal.pthread_sigmask(signal.SIG_BLOCK, INTERRUPTS))
    try:
        yield before
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def guard_imports() -> None:
    """Hold SIGINT, SIGTERM and SIGHUP back while a package of :data:`GUARDED_IMPORTS` is
    first imported, and deliver them once it is (a Ctrl-C during ``import torch`` ends
    the command right after it, exit 130, as anywhere else).

    Raised inside numpy's import (the first second of a command that loads torch), the
    interrupt left numpy half-initialised: torch swallowed it and the command went on,
    to exit 0 (the Ctrl-C lost), exit 70 ("cannot load module more than once per
    process"), a false "nested too deeply" (exit 2) or an abort by pybind11 (SIGABRT).
    Both entries call this (:func:`main`, ``python -m ttforge.cli``); the library
    imported by a user's program is left as it is.
    """
    if not hasattr(signal, "pthread_sigmask") or getattr(builtins.__import__, "_ttforge_guard", False):
        return
    plain = builtins.__import__

    def guarded(name, globals=None, locals=None, fromlist=(), level=0):
        top = name.partition(".")[0]
        if level or top not in GUARDED_IMPORTS or top in sys.modules:
            return plain(name, globals, locals, fromlist, level)
        with interrupts_held():   # delivered after, in the importing frame, the package whole
            return plain(name, globals, locals, fromlist, level)

    guarded._ttforge_guard = True  # type: ignore[attr-defined]
    builtins.__import__ = guarded


def run_to_shutdown(command: Callable[[], int]) -> int:
    """``command()``, after which Ctrl-C is ignored: the command has ended (its outputs
    complete or not written), and a Ctrl-C while the interpreter shuts down raised
    inside torch's atexit handlers and printed their traceback (with exit 0); SIGTERM
    keeps its default, which prints nothing. SIGXCPU, which the kernel sends again every
    second of CPU past the soft limit, is ignored too: its default action would dump a
    core of the finished command (the hard limit still ends it). Both entries use it:
    the console script (:func:`main`) and ``python -m ttforge.cli``."""
    try:
        return command()
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if hasattr(signal, "SIGXCPU"):
            signal.signal(signal.SIGXCPU, signal.SIG_IGN)


def main() -> int:
    """Import and run :func:`ttforge.cli.main`; Ctrl-C outside a command's own boundary
    (:func:`ttforge.boundary.run_command`, which names the command): exit 130."""
    open_standard_streams()
    ignore_file_size_signal()
    guard_imports()
    try:
        from ttforge.cli import main as cli_main

        return run_to_shutdown(cli_main)
    except KeyboardInterrupt:
        sys.stderr.write("ttforge: interrupted\n")
        return 130
