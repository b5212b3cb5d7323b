"""The boundary between a ``ttforge`` command and the person who ran it.

:func:`run_command` runs one subcommand so that, whatever happens, the user sees at
most one error line ``ttforge COMMAND: error: ...`` and a documented exit status
(docs/cli.md, "Exit codes"; docs/hardening.md):

====== ==================================================================================
status meaning
====== ==================================================================================
0      success
1      the command ran and its check failed (``regress``, ``diverge``)
2      a problem the user can fix: :class:`~ttforge.errors.UserError`, a bad command line,
       a file that does not exist or cannot be read, an input nested too deeply, stdout
       closed for a command that only prints (``ttforge.cli.PRINTS_ONLY``)
3      the machine, a tool or a device failed: :class:`~ttforge.errors.EnvironmentFailure`,
       a full disk or an I/O error, memory exhausted; a stdout that could not be written
       (said once the command has run to its end and written its files); a stderr that
       could not be written, for a command that otherwise succeeded (silently: the
       command runs to its end, and any other status is its own)
70     a bug in ttforge (any other exception); ``TTFORGE_DEBUG=1`` shows its traceback
130    interrupted (Ctrl-C); 143: terminated (SIGTERM, SIGHUP, or SIGXCPU: the CPU time limit)
141    stdout was closed by its reader (``| head``): the command stops without a word,
       as a SIGPIPE would stop it
====== ==================================================================================

While the command runs, SIGTERM, SIGHUP and SIGXCPU act like Ctrl-C (every atomic write removes
its temporary and keeps the old file), and the command's input files are protected
from its own outputs (:func:`ttforge.atomic.command_inputs`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

from ttforge.errors import (EXIT_ENVIRONMENT, EXIT_FAILED, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_PIPE,
                            EXIT_TERMINATED, EXIT_USER, ConfigError, EnvironmentFailure, MachineFailure, TTForgeError, one_line,
                            show_path)
from ttforge.limits import slash_on_file

__all__ = ["run_command", "Terminated", "signals_interrupt", "input_paths", "INPUT_ARGUMENTS",
           "describe_os_error", "machine_failure"]

#: The argument names (argparse ``dest``) that name a command's input files or
#: directories; an output may never be one of them (:func:`ttforge.atomic.command_inputs`).
INPUT_ARGUMENTS = ("checkpoint", "source", "artifact", "config", "data", "input", "inputs", "replay",
                   "bitstream")

#: Input files that a command may also write (``train-int --resume STATE`` continues the
#: state in its own directory): :func:`check_input_slashes` checks them too, by these names.
_UPDATED_INPUTS = {"from_artifact": "--from", "resume": "--resume"}

# errno values a user fixes by giving another path or fixing permissions (exit 2); any
# other OSError is the machine's (exit 3: disk full, I/O error, too many open files, ...)
_USER_ERRNOS = {errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR, errno.EEXIST,
                errno.ENAMETOOLONG, errno.ELOOP, errno.EROFS, errno.ENXIO, errno.ENOTEMPTY,
                errno.EINVAL, errno.EXDEV, errno.ETXTBSY, errno.EBUSY}

# the fix of a machine's OSError, by errno (any other: free space or retry); with _USER_ERRNOS
# the one table of whose an OSError is: the boundary's lines and every output error
# (ttforge.atomic._failure, through describe_os_error) use it
_MACHINE_FIXES = {errno.ENOSPC: "free space on that disk", errno.EDQUOT: "free space within your disk quota",
                  errno.EFBIG: "raise the file-size limit (ulimit -f) or free space",
                  errno.EMFILE: "raise the open-file limit (ulimit -n)",
                  errno.ENFILE: "close other programs' files (the system's open-file table is full)",
                  errno.ENOMEM: "free memory", errno.EIO: "check that disk (an I/O error) and retry"}


class Terminated(KeyboardInterrupt):
    """SIGTERM, SIGHUP or SIGXCPU (the CPU time limit), raised like Ctrl-C so every cleanup
    that handles an interrupt (atomic writes, temporary directories, child processes) runs."""


#: The signals :func:`signals_interrupt` raises as :class:`Terminated` (SIGINT raises
#: ``KeyboardInterrupt`` by itself): those of ``ttforge._entry.INTERRUPTS``, which the
#: entries hold back while numpy or torch is imported.
_TERMINATING = ("SIGTERM", "SIGHUP", "SIGXCPU")

#: What :class:`Terminated` says of SIGXCPU, whose default action killed the command with a
#: core and no cleanup (its temporaries and its output's lock left, as by SIGKILL).
_CPU_LIMIT = "SIGXCPU: the CPU time limit (ulimit -t) was reached; raise it or give the command less work"


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """While the block runs (in the main thread), SIGTERM, SIGHUP and SIGXCPU raise
    :class:`Terminated`; the previous handlers come back afterwards. After a SIGXCPU the
    next ones are ignored: the kernel sends one every second of CPU past the soft limit,
    and each would raise again inside the cleanup the first one started (the hard limit
    still ends the process)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {}

    def handler(signum, frame):  # noqa: ARG001
        if signum == getattr(signal, "SIGXCPU", None):
            signal.signal(signum, signal.SIG_IGN)
            raise Terminated(_CPU_LIMIT)
        raise Terminated(signal.Signals(signum).name)

    for sig in (getattr(signal, name, None) for name in _TERMINATING):
        if sig is None:
            continue
        try:
            saved[sig] = signal.signal(sig, handler)
        except (ValueError, OSError):  # pragma: no cover - not the main thread / not settable
            pass
    try:
        yield
    finally:
        for sig, old in saved.items():
            with contextlib.suppress(ValueError, OSError):
                signal.signal(sig, old)


#: Arguments that name a path to write (besides :data:`INPUT_ARGUMENTS`).
OUTPUT_ARGUMENTS = ("out", "output", "export", "keep", "save_checkpoint", "json")


def check_no_empty_paths(args: Any) -> None:
    """A one-line :class:`~ttforge.errors.ConfigError` for a path argument given as the
    empty string (``inspect ''`` read as the current directory: ". is a directory")."""
    for key in (*INPUT_ARGUMENTS, *OUTPUT_ARGUMENTS):
        value = getattr(args, key, None)
        if any(v == "" for v in (value if isinstance(value, (list, tuple)) else [value])):
            raise ConfigError(f"{key.upper() if key in INPUT_ARGUMENTS else '--' + key.replace('_', '-')} "
                              f"is an empty path; give a file or directory name")


def check_input_slashes(args: Any) -> None:
    """A one-line :class:`~ttforge.errors.ConfigError` for an input path that ends in
    '/' but names a file (:func:`ttforge.limits.slash_on_file`): the commands turn
    their paths into ``Path`` objects, which drop the '/'."""
    for key in (*INPUT_ARGUMENTS, *_UPDATED_INPUTS):
        value = getattr(args, key, None)
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, str):
                line = slash_on_file(v[4:] if key == "data" and v.startswith("idx:") else v,
                                     _UPDATED_INPUTS.get(key, key.upper()))
                if line:
                    raise ConfigError(line)


def input_paths(args: Any) -> list[str]:
    """The values of ``args`` (an argparse namespace) that name existing input paths."""
    out: list[str] = []
    for key in INPUT_ARGUMENTS:
        value = getattr(args, key, None)
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, (str, os.PathLike)) and str(v) and str(v) != "-":
                if key == "data" and str(v).startswith("idx:"):   # --data idx:DIR names DIR
                    v = str(v)[4:]
                with contextlib.suppress(OSError, ValueError):
                    if os.path.exists(Path(v).expanduser()):
                        out.append(str(Path(v).expanduser()))
    return out


def describe_os_error(e: OSError, path: str | os.PathLike | None = None) -> tuple[str, int]:
    """One line and the exit status for an :class:`OSError` nobody turned into a
    :class:`~ttforge.errors.TTForgeError`. A full disk or quota names the file system
    (its mount point) of the file the error names, or of ``path`` (the output a caller
    names itself)."""
    why = e.strerror or str(e) or type(e).__name__
    name = e.filename if e.filename is not None else None
    where = f"{show_path(name)}: " if name is not None else ""
    if e.errno in _USER_ERRNOS or isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError,
                                                  NotADirectoryError, FileExistsError)):
        fix = ("check the path and its permissions" if e.errno in (errno.EACCES, errno.EPERM)
               else "check the path")
        return f"{where}{why}; {fix}", EXIT_USER
    fix = _MACHINE_FIXES.get(e.errno, "free space or retry")
    disk = _disk_of(path if path is not None else name) if e.errno in (errno.ENOSPC, errno.EDQUOT) else None
    if disk is not None:
        fix = f"{fix}, {show_path(disk)}"
    return f"{where}{why} (a problem of the machine, not of the input; {fix})", EXIT_ENVIRONMENT


def _disk_of(path: str | os.PathLike | bytes | None) -> str | None:
    """The mount point of the file system ``path`` is on (of its nearest existing
    ancestor, for a file the failed write never made), ``None`` if unknown: "free space
    on that disk" of a path under several mounts left the user to find which."""
    if path is None:
        return None
    try:
        p = os.path.realpath(os.fsdecode(path))
        while not os.path.exists(p):
            p = os.path.dirname(p)
        while not os.path.ismount(p):
            p = os.path.dirname(p)
    except (OSError, ValueError, TypeError):
        return None
    return p


def machine_failure(e: BaseException) -> EnvironmentFailure | None:
    """``e`` as the machine's failure, or ``None`` when it is not one.

    The machine's: an :class:`~ttforge.errors.EnvironmentFailure` (returned as it is), an
    :class:`OSError` that :func:`describe_os_error` counts as the machine's (a full disk, an
    I/O error, a limit reached: exit 3), memory exhausted (``MemoryError``, torch's
    allocator). Work that turns other errors into a verdict (a ``regress`` case's ERROR
    row) stops on these instead: they say nothing of what it checks.

    Returns
    -------
    EnvironmentFailure or None
        ``e`` itself, or a :class:`~ttforge.errors.MachineFailure` in the line
        :func:`run_command` would print for ``e`` (its class tells it from a tool's own
        failure where a caller passes it on: a build cache the disk cannot hold, under a
        ``sweep`` point, was a "failed" design row).
    """
    if isinstance(e, EnvironmentFailure):
        return e
    if _out_of_memory(e):
        return MachineFailure(_OUT_OF_MEMORY)
    if isinstance(e, OSError):
        message, code = describe_os_error(e)
        return MachineFailure(message) if code == EXIT_ENVIRONMENT else None
    return None


def _prefix(command: str) -> str:
    return f"ttforge {command}: " if command else "ttforge: "


def _say(command: str, message: str) -> None:
    _tell(_prefix(command) + "error: " + one_line(message))


def _tell(line: str) -> None:
    """``line`` on stderr, if it can be written: a stderr that fails (``2> /dev/full``)
    made the error's own report raise, and the command ended in a traceback nobody saw
    and exit 1 (a failed check, to a script) instead of its status."""
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        # what failed stays in the stream's buffer: the interpreter's last flush would
        # fail on it again and end in exit 120
        with contextlib.suppress(OSError, ValueError, AttributeError):
            _to_devnull(sys.stderr.fileno())
            sys.stderr.flush()


def run_command(command: str, run: Callable[[Any], Any], args: Any,
                missing_extra: Callable[[str, ModuleNotFoundError], str | None] | None = None) -> int:
    """``run(args)`` as the command ``command``: its exit status, or one stderr line and
    the status of what went wrong (the table in this module's docstring)."""
    out, err = _StdoutWatch.install("stdout"), _StderrWatch.install("stderr")
    try:
        code = _run_command(command, run, args, missing_extra)
    finally:
        err.remove()
        out.remove()
    if out.failure is not None and code in (EXIT_OK, EXIT_FAILED):
        if isinstance(out.failure, BrokenPipeError):
            # the reader went away and the command went on (argparse drops the error
            # of ``--help | head``'s write): 141, as a SIGPIPE would have ended it
            return EXIT_PIPE
        _say(command, _stdout_failed(out.failure))
        return EXIT_ENVIRONMENT
    if err.failure is not None and code == EXIT_OK:
        # as GNU coreutils' close_stdout (which checks stderr too: exit 1) and Python
        # (exit 120 when its last flush of stderr fails): not all that was said reached
        # the user. Silent: stderr is where the line would go. Any other status is the
        # command's own (a failed check stays 1, a user's mistake 2).
        return EXIT_ENVIRONMENT
    return code


def _stdout_failed(e: OSError) -> str:
    why = e.strerror or str(e) or type(e).__name__
    return (f"cannot write standard output ({why}): the command ran to its end, but what it printed is "
            f"incomplete (any file it wrote is complete); free space where standard output goes, or "
            f"redirect it elsewhere")


class _StreamWatch:
    """A standard stream (``sys.stdout`` or ``sys.stderr``) while a command runs: the
    first write or flush that fails is recorded in :attr:`failure` and what follows is
    dropped, so the command runs to its end and writes its files."""

    def __init__(self, name: str, stream: Any) -> None:
        self._name = name
        self._stream = stream
        self.failure: OSError | None = None

    @classmethod
    def install(cls, name: str) -> "_StreamWatch":
        stream = getattr(sys, name)
        watch = cls(name, stream)
        if stream is not None and not isinstance(stream, _StreamWatch):
            setattr(sys, name, watch)
        return watch

    def remove(self) -> None:
        if getattr(sys, self._name) is self:
            setattr(sys, self._name, self._stream)
        if self.failure is not None:
            self._drain()

    def _drain(self) -> None:
        # the text that failed stays in the stream's buffer, and the interpreter's last
        # flush would fail on it again ("Exception ignored", exit 120): its descriptor
        # goes to /dev/null, and the buffer with it
        with contextlib.suppress(OSError, ValueError, AttributeError):
            fd = self._stream.fileno()
            if fd in (1, 2):
                _to_devnull(fd)
                self._stream.flush()

    def _failed(self, e: OSError) -> None:
        self.failure = e

    def _guard(self, call: Callable[[], Any], default: Any) -> Any:
        if self.failure is not None:
            return default
        try:
            return call()
        except OSError as e:
            self._failed(e)
            return default

    def write(self, text: str) -> int:
        return self._guard(lambda: self._stream.write(text), len(text))

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._guard(self._stream.flush, None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _StdoutWatch(_StreamWatch):
    """``sys.stdout``: a write that fails (a full disk, ``> /dev/full``, an I/O error) is
    said by :func:`run_command` once the command has ended, exit 3. A progress line that
    could not be printed ended ``quantize > /dev/full`` before its artifact was written,
    in a line that did not name standard output. A reader that went away (``| head``,
    ``BrokenPipeError``) still stops the command, as a SIGPIPE would (exit 141, also
    when the error was caught on its way)."""

    def _failed(self, e: OSError) -> None:
        self.failure = e
        if isinstance(e, BrokenPipeError):
            raise e


class _StderrWatch(_StreamWatch):
    """``sys.stderr``, where progress goes (rich ``Console(stderr=True)``, tqdm, the
    per-case lines of ``regress``): a write that fails, a reader that went away
    (``2> >(head -c 10)``) included, is recorded and stderr goes to ``/dev/null`` at
    once, so the command runs to its end with its files whole (a progress line that
    could not be written ended ``regress 2> /dev/full`` before its summary, exit 3 with
    no word; a broken pipe there was taken for stdout's, exit 141 and stdout dropped).
    /dev/null at once: what writes to the descriptor without this stream (a logging
    handler holding the stream, C code, a child process) goes nowhere either."""

    def _failed(self, e: OSError) -> None:
        self.failure = e
        self._drain()


def _run_command(command: str, run: Callable[[Any], Any], args: Any,
                 missing_extra: Callable[[str, ModuleNotFoundError], str | None] | None) -> int:
    from ttforge.atomic import command_inputs

    stdout_was = _fd_identity(1)
    try:
        try:
            with signals_interrupt(), command_inputs(input_paths(args)):
                check_no_empty_paths(args)
                check_input_slashes(args)
                code = int(run(args) or 0)
                # what the command printed is written out here, where a failure is the
                # command's to report (at the interpreter's exit it was "Exception ignored")
                for stream in (sys.stdout, sys.stderr):
                    if stream is not None:
                        stream.flush()
                return code
        except BaseException:
            # before the traceback's frames, and any design half-built in them, are freed
            _quiet_unused_elaboratables()
            raise
    except SystemExit as e:
        # rich ends a process whose stdout reader went away with exit 1, pointing
        # stdout at /dev/null first: that is a closed pipe, not a failed check
        if e.code == 1 and _stdout_closed(stdout_was):
            return EXIT_PIPE
        raise
    except Terminated as e:
        _tell(f"{_prefix(command)}terminated ({e})")
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        _tell(f"{_prefix(command)}interrupted")
        return EXIT_INTERRUPTED
    except TTForgeError as e:
        _say(command, str(e))
        return int(getattr(e, "exit_code", EXIT_USER))
    except ModuleNotFoundError as e:
        hint = missing_extra(command, e) if missing_extra else None
        if hint is None:
            return _internal(command, e)
        _tell(hint)
        # not installed, as a simulator or the FPGA toolchain missing (ToolchainMissing):
        # the environment's, exit 3 (it was 2, against the documented table)
        return EXIT_ENVIRONMENT
    except OSError as e:
        if isinstance(e, BrokenPipeError) and _stdout_closed(stdout_was):
            return EXIT_PIPE
        if _out_of_memory(e):
            _say(command, _OUT_OF_MEMORY)
            return EXIT_ENVIRONMENT
        message, code = describe_os_error(e)
        _say(command, message)
        return code
    except RecursionError:
        _say(command, "an input is nested too deeply to read (a JSON/TOML document, manifest or "
                      "config nested thousands of levels); give a file ttforge wrote or a plain one")
        return EXIT_USER
    except MemoryError:
        _say(command, _OUT_OF_MEMORY)
        return EXIT_ENVIRONMENT
    except Exception as e:  # noqa: BLE001 - the boundary: a bug is one line too
        if _out_of_memory(e):
            _say(command, _OUT_OF_MEMORY)
            return EXIT_ENVIRONMENT
        return _internal(command, e)


_OUT_OF_MEMORY = "ran out of memory; give smaller inputs or sizes, or free memory"
#: What torch's CPU allocator says when ``malloc`` fails (it raises a plain
#: ``RuntimeError``, not a ``MemoryError``: ``[enforce fail at alloc_cpu.cpp:...]
#: DefaultCPUAllocator: can't allocate memory: you tried to allocate ... bytes``).
_ALLOCATOR_WORDS = ("can't allocate memory", "DefaultCPUAllocator")


#: What the dynamic loader says when it cannot map a shared library for lack of memory (an
#: ``ImportError`` of torch's or scipy's extension under ``ulimit -v``: "libtorch_cpu.so:
#: failed to map segment from shared object"; ``ctypes``' ``OSError``), lower-case.
_LOAD_WORDS = ("failed to map segment", "cannot allocate memory")


def _out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` is memory exhausted: a ``MemoryError``, torch's allocator failing
    (:func:`_is_allocator_failure`), an ``OSError`` of ``ENOMEM``, or a shared library
    that could not be loaded for lack of memory (an ``ImportError`` or ``OSError`` whose
    text says so: it was "internal error ImportError ...; this is a bug", exit 70). A
    static TLS block that is too small is the loader's, not memory."""
    if isinstance(e, MemoryError) or _is_allocator_failure(e):
        return True
    if isinstance(e, OSError) and e.errno == errno.ENOMEM:
        return True
    if not isinstance(e, (ImportError, OSError)):
        return False
    text = str(e).lower()
    return any(w in text for w in _LOAD_WORDS) and "static tls" not in text


def _is_allocator_failure(e: BaseException) -> bool:
    """Whether ``e`` is torch's allocator running out of memory, matched by type name and
    message so that this module never imports torch."""
    if not isinstance(e, RuntimeError) or type(e).__name__ not in ("RuntimeError", "OutOfMemoryError"):
        return False
    message = str(e)
    return any(w in message for w in _ALLOCATOR_WORDS)


def _fd_identity(fd: int | str) -> tuple[int, int] | None:
    """``(device, inode)`` of an open file descriptor or a path; ``None`` if unknown."""
    try:
        st = os.fstat(fd) if isinstance(fd, int) else os.stat(fd)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _stdout_closed(was: tuple[int, int] | None) -> bool:
    """Whether stdout's reader went away (``| head``): writing it fails with EPIPE, or
    rich has already pointed it at ``/dev/null``. If so stdout goes to ``/dev/null``,
    so that the interpreter's last flush is quiet too."""
    devnull = _fd_identity(os.devnull)
    now = _fd_identity(1)
    closed = now is not None and now == devnull and was != devnull
    if not closed:
        # a pipe whose reader is gone reports an error condition to poll (the failed
        # write's buffer is dropped, so a flush would not tell)
        with contextlib.suppress(OSError, ValueError, AttributeError):
            import select

            poll = select.poll()
            poll.register(1, select.POLLOUT)
            closed = any(ev & select.POLLERR for _, ev in poll.poll(0))
    if closed:
        _to_devnull(1)
    return closed


def _to_devnull(fd: int) -> None:
    """File descriptor ``fd`` on ``/dev/null``: what its stream still buffers goes
    nowhere, quietly."""
    with contextlib.suppress(OSError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fd)
        os.close(null)


def _quiet_unused_elaboratables() -> None:
    """A command that stopped part-way (an error, Ctrl-C, SIGTERM) may leave half-built
    Amaranth designs, and at exit each warned that it was "created but never used" (30
    lines after the one that said what happened, on a SIGTERM during ``generate``):
    their warnings are off from the moment the command fails."""
    ir = sys.modules.get("amaranth.hdl._ir")
    if ir is not None and hasattr(ir, "UnusedElaboratable"):
        warnings.filterwarnings("ignore", category=ir.UnusedElaboratable)


def _internal(command: str, e: BaseException) -> int:
    if os.environ.get("TTFORGE_DEBUG"):
        raise e
    _say(command, f"internal error {type(e).__name__}: {e}; this is a bug in ttforge, please "
                  f"report it (run with TTFORGE_DEBUG=1 for the traceback)")
    return EXIT_INTERNAL
