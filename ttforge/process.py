"""External programs (compilers, Verilator, the FPGA tools, openFPGALoader) run bounded.

:func:`run_bounded` is ``subprocess.run(..., capture_output=True, timeout=...)`` with the
two guarantees of docs/hardening.md that plain ``subprocess.run`` lacks:

- **bounded memory**: of each output stream only the last
  :data:`~ttforge.limits.MAX_TOOL_OUTPUT_BYTES` are kept (a compiler or a loader that
  prints without end grew ttforge by the size of everything it printed: 400 MB of NUL
  bytes from a loader took 11 GB);
- **nothing outlives it**: the program runs in a process group of its own, which is
  killed on a timeout, on Ctrl-C or SIGTERM, and once the program has ended (a wrapper
  script's children, which ``subprocess.run``'s timeout left running, held the USB
  cable after ttforge had given up).

This module imports nothing heavy (``hw`` uses it and knows nothing of PyTorch).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from typing import IO, Mapping, Sequence

from ttforge.limits import MAX_TOOL_OUTPUT_BYTES

__all__ = ["run_bounded"]

#: Seconds the output of a program that has ended may take to arrive (its pipes are
#: held open by a child it left running, which is then killed).
_DRAIN_S = 2.0


def _tail(stream: IO[bytes], keep: int, out: list) -> None:
    """Read ``stream`` to its end, keeping its last ``keep`` bytes in ``out[0]``."""
    buf = bytearray()
    try:
        while True:
            chunk = stream.read1(1 << 16)
            if not chunk:
                break
            buf += chunk
            if len(buf) > 2 * keep:   # trimmed now and then, not per chunk
                del buf[:len(buf) - keep]
    except (OSError, ValueError):
        pass   # the pipe was closed under us (the group was killed)
    del buf[:max(0, len(buf) - keep)]
    out[0] = bytes(buf)


def _ended(pid: int, timeout: float | None) -> bool:
    """Wait up to ``timeout`` seconds (``None``: without end) for process ``pid`` to end,
    without reaping it (its id stays its own and its group's until then)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = 0.001
    while True:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None:
            return True
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return False
        time.sleep(pause if left is None else min(pause, left))
        pause = min(2 * pause, 0.05)


def _join(readers: Sequence[threading.Thread]) -> None:
    """Wait at most :data:`_DRAIN_S` in all for the readers to reach their streams' ends."""
    deadline = time.monotonic() + _DRAIN_S
    for t in readers:
        t.join(max(0.0, deadline - time.monotonic()))


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_bounded(cmd: Sequence[str], *, timeout: float | None = None, cwd: str | os.PathLike | None = None,
                env: Mapping[str, str] | None = None, input: bytes | str | None = None,
                keep: int = MAX_TOOL_OUTPUT_BYTES) -> subprocess.CompletedProcess:
    """Run ``cmd`` and return its ``CompletedProcess`` with ``stdout`` and ``stderr`` as
    text (undecodable bytes replaced), each the last ``keep`` bytes of what it wrote.

    Raises ``subprocess.TimeoutExpired`` after ``timeout`` seconds (the program's whole
    process group killed first), and ``FileNotFoundError`` / ``PermissionError`` as
    ``subprocess.run`` does for a program that cannot be started.
    """
    proc = subprocess.Popen(list(cmd), cwd=cwd, env=None if env is None else dict(env),
                            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    outs: list[list] = [[b""], [b""]]
    readers = [threading.Thread(target=_tail, args=(s, keep, o), daemon=True)
               for s, o in zip((proc.stdout, proc.stderr), outs)]
    for t in readers:
        t.start()
    try:
        if input is not None:
            try:
                proc.stdin.write(input.encode() if isinstance(input, str) else input)
            except BrokenPipeError:
                pass   # it did not read all of it; its exit status says why
            finally:
                proc.stdin.close()
        if not _ended(proc.pid, timeout):
            _kill_group(proc.pid)
            raise subprocess.TimeoutExpired(list(cmd), timeout)
        _join(readers)
    finally:
        # a timeout, an interrupt, or children of an ended program holding its pipes;
        # before the program is reaped, so its process group's id cannot be another's
        _kill_group(proc.pid)
        proc.wait()
        _join(readers)
        for s in (proc.stdout, proc.stderr):
            try:
                s.close()
            except OSError:
                pass
    out, err = (o[0].decode("utf-8", "replace") for o in outs)
    return subprocess.CompletedProcess(list(cmd), proc.returncode, out, err)
