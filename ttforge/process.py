"""External programs (compilers, Verilator, the FPGA tools, openFPGALoader) run bounded.

:func:`run_bounded` is ``subprocess.run(..., capture_output=True, timeout=...)`` with the
guarantees of docs/hardening.md that plain ``subprocess.run`` lacks:

- **bounded memory**: of each output stream only the last
  :data:`~ttforge.limits.MAX_TOOL_OUTPUT_BYTES` are kept (a compiler or a loader that
  prints without end grew ttforge by the size of everything it printed: 400 MB of NUL
  bytes from a loader took 11 GB);
- **nothing outlives it**: the program runs in a process group of its own, which is
  killed on a timeout, on Ctrl-C or SIGTERM, and once the program has ended (a wrapper
  script's children, which ``subprocess.run``'s timeout left running, held the USB
  cable after ttforge had given up);
- **it ends when the program ends**: output still arriving through a pipe that a
  daemon of the program holds (one that started a session of its own, out of reach of
  the group) is read for :data:`_DRAIN_S` more seconds, then the pipes are closed (a
  daemon held ttforge past ``--timeout``, deaf to Ctrl-C), and the processes still
  holding them are killed too (on Linux, found through ``/proc``: only the program's
  descendants can hold its pipes). A daemon that let go of its output (standard
  streams to ``/dev/null``) is out of reach; no tool ttforge runs starts one.

The pipes are read in this thread with ``selectors`` (no reader threads, whose blocked
reads a close would wait for). This module imports nothing heavy (``hw`` uses it and
knows nothing of PyTorch).
"""

from __future__ import annotations

import os
import selectors
import shlex
import shutil
import signal
import subprocess
import threading
import time
from typing import Mapping, Sequence

from ttforge.errors import ConfigError
from ttforge.limits import MAX_TOOL_OUTPUT_BYTES

__all__ = ["run_bounded", "c_compiler"]

#: Seconds the output of a program that has ended may take to arrive (its pipes are
#: held open by a process it left running).
_DRAIN_S = 2.0
#: Seconds between looks at whether the program has ended while its pipes stay open.
_POLL_S = 0.05


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
        pause = min(2 * pause, _POLL_S)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _pipe_holders(inodes: set[int]) -> list[int]:
    """Processes other than this one that hold a pipe of ``inodes`` open (Linux:
    ``/proc/<pid>/fd``; elsewhere none are found)."""
    links, me, found = {f"pipe:[{i}]" for i in inodes}, os.getpid(), []
    try:
        pids = [int(n) for n in os.listdir("/proc") if n.isdigit()]
    except OSError:
        return []
    for pid in pids:
        if pid == me:
            continue
        fds = f"/proc/{pid}/fd"
        try:
            names = os.listdir(fds)
        except OSError:
            continue   # ended meanwhile, or another user's
        for fd in names:
            try:
                if os.readlink(f"{fds}/{fd}") in links:
                    found.append(pid)
                    break
            except OSError:
                continue
    return found


def _kill_pipe_holders(inodes: set[int]) -> None:
    """Kill what still holds the program's output pipes after its group is gone: a
    daemon of it in a session of its own (the group's kill misses it; it ran on)."""
    for pid in _pipe_holders(inodes):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _feed(proc: subprocess.Popen, data: bytes) -> None:
    """Write ``data`` to the program's stdin and close it (on a thread of its own: a
    program that does not read would block the write; the group's kill ends it)."""
    try:
        proc.stdin.write(data)
    except (BrokenPipeError, OSError, ValueError):
        pass   # it did not read all of it; its exit status says why
    finally:
        try:
            proc.stdin.close()
        except (BrokenPipeError, OSError):
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
    deadline = None if timeout is None else time.monotonic() + timeout
    bufs = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
    inodes = {os.fstat(fd).st_ino for fd in bufs}
    sel = selectors.DefaultSelector()
    try:
        if input is not None:
            threading.Thread(target=_feed, args=(proc, input.encode() if isinstance(input, str) else input),
                             daemon=True).start()
        for fd in bufs:
            sel.register(fd, selectors.EVENT_READ)
        ended_at = None
        while sel.get_map():
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                _kill_group(proc.pid)
                raise subprocess.TimeoutExpired(list(cmd), timeout)
            if ended_at is None and _ended(proc.pid, 0):
                ended_at = now
            if ended_at is not None and now - ended_at > _DRAIN_S:
                break   # a process of another session holds the pipes: stop reading
            wait = _POLL_S if deadline is None else max(0.0, min(_POLL_S, deadline - now))
            for key, _ in sel.select(wait):
                data = os.read(key.fd, 1 << 16)
                if not data:
                    sel.unregister(key.fd)
                    continue
                buf = bufs[key.fd]
                buf += data
                if len(buf) > 2 * keep:   # trimmed now and then, not per read
                    del buf[:len(buf) - keep]
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not _ended(proc.pid, left):
            _kill_group(proc.pid)
            raise subprocess.TimeoutExpired(list(cmd), timeout)
    finally:
        # a timeout, an interrupt, or children of an ended program; before the program is
        # reaped, so its process group's id cannot be another's
        _kill_group(proc.pid)
        if sel.get_map():   # a pipe not yet at its end: someone outside the group holds it
            _kill_pipe_holders(inodes)
        proc.wait()
        sel.close()
        for s in (proc.stdout, proc.stderr):
            try:
                s.close()
            except OSError:
                pass
    out, err = (bytes(b[max(0, len(b) - keep):]).decode("utf-8", "replace") for b in bufs.values())
    return subprocess.CompletedProcess(list(cmd), proc.returncode, out, err)


def c_compiler(cc: str | None = None) -> list[str] | None:
    """The C compiler as a command line.

    Parameters
    ----------
    cc : str, optional
        A compiler command; default ``$CC``.

    Returns
    -------
    list of str or None
        ``cc`` (or, when not given, ``$CC``) split as a shell splits it (``"gcc -m64"`` is
        the compiler ``gcc`` with ``-m64``); when neither is set, ``cc`` or else ``gcc``,
        the first on ``PATH``; None when neither is.

    Raises
    ------
    ConfigError
        ``cc`` or ``$CC`` names no program on ``PATH``: one line naming it and the fix
        (a silent fallback to ``cc`` would build with a compiler the user did not ask for).
    """
    for c, what in ((cc, "cc"), (os.environ.get("CC"), "CC")):
        if not c or not c.strip():
            continue
        try:
            argv = shlex.split(c)
        except ValueError:      # an unbalanced quote: its words as they are
            argv = c.split()
        if argv and shutil.which(argv[0]):
            return argv
        raise ConfigError(f"{what}={c!r}: {(argv or [c])[0]!r} is not a program on PATH; install it or give "
                          f"the full path of an installed C compiler"
                          + (" (or unset CC to use cc or gcc)" if what == "CC" else ""))
    for c in ("cc", "gcc"):
        if shutil.which(c):
            return [c]
    return None
