"""The limits ttforge states for what it reads and for its arguments (docs/hardening.md).

Every reader bounds what it will allocate *before* allocating, from sizes it can check
(the file's size, a header's claimed shape, a stored member's size), and every count a
user gives has an upper bound; going past one is a one-line
:class:`~ttforge.errors.LimitError` (exit 2) that names the limit. The limits are far
above anything ttforge is for (small FPGAs: an MNIST network is ~20 KB) and far below
what would exhaust a laptop.

:func:`open_regular` is the one way an input file is opened: it refuses a directory, a
FIFO, a device or a socket up front (reading ``/dev/zero`` or a FIFO would never end)
and a file larger than the reader's limit.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from pathlib import Path
from typing import BinaryIO

from ttforge.errors import LimitError, UserError, show_path

__all__ = [
    "MAX_ARTIFACT_BYTES", "MAX_MANIFEST_BYTES", "MAX_CONFIG_BYTES", "MAX_CHECKPOINT_BYTES",
    "MAX_IDX_BYTES", "MAX_NPY_BYTES", "MAX_CLASSES", "MAX_HIDDEN", "MAX_PARAMETERS",
    "MAX_SEED", "MAX_BATCH", "MAX_SEEDS", "MAX_VECTORS", "MAX_JOBS", "MAX_SEARCH_CORES",
    "MAX_LAYER_ELEMENTS", "MAX_EXP", "MAX_EPOCHS", "MAX_THREADS", "MAX_RATE", "MAX_LAYERS", "MAX_FREQ_MHZ", "MAX_TIMEOUT_S", "MAX_NETLIST_BYTES", "MAX_TOOL_OUTPUT_BYTES", "MAX_CHUNK_VALUES", "MAX_STEP_VALUES", "open_regular", "read_bounded", "read_at_most", "read_array", "check_limit",
    "file_kind", "broken_link", "slash_on_file", "parse_config_text", "chunk_rows",
    "check_chunk_values",
]

MiB = 1 << 20
#: A compiled artifact (.ttfa), whole file.
MAX_ARTIFACT_BYTES = 256 * MiB
#: Its ``manifest.json`` member.
MAX_MANIFEST_BYTES = 16 * MiB
#: A JSON or TOML configuration file.
MAX_CONFIG_BYTES = 4 * MiB
#: A training checkpoint (.pt).
MAX_CHECKPOINT_BYTES = 2048 * MiB
#: One IDX file, after gzip decompression (the MNIST training images are 47 MB): each
#: 8-bit pixel becomes a float32 (training) and an int64 (``train-board``'s quantized
#: inputs), so a file at the limit takes ~2 GB (at 1 GiB it was 24 GB: OOM-killed).
MAX_IDX_BYTES = 128 * MiB
#: A Yosys JSON netlist (``python -m ttforge.hw.ecp5_bram``; the 16-lane training engine's
#: is 43 MB).
MAX_NETLIST_BYTES = 1024 * MiB
#: What ttforge keeps of an external program's output, per stream (the last bytes:
#: where compilers, Verilator, the FPGA tools and openFPGALoader say what went wrong;
#: their full logs go to files of their own), ``ttforge.process``. At 32 MiB a loader
#: printing without end still took 460 MB in the decoding and the error line.
MAX_TOOL_OUTPUT_BYTES = 4 * MiB
#: An ``.npy`` file of inputs (``run``, ``diverge --input``), by its header's shape.
MAX_NPY_BYTES = 256 * MiB
#: Classes a label file may imply (its largest label + 1).
MAX_CLASSES = 10_000
#: Width of one hidden layer.
MAX_HIDDEN = 1 << 16
#: Parameters of a model built from a configuration or a checkpoint's config.
MAX_PARAMETERS = 1 << 28
#: Largest seed (``--seed``, ``seed =``): a non-negative 63-bit integer.
MAX_SEED = (1 << 63) - 1
#: Batch sizes (``--batch``, ``--batch-size``).
MAX_BATCH = 1 << 20
#: ``regress --seeds`` (random cases in one run).
MAX_SEEDS = 100_000
#: ``regress --vectors`` (vectors per case).
MAX_VECTORS = 1_000_000
#: Worker processes (``--jobs``): never more than this, nor more than there is work.
MAX_JOBS = 256
#: Cores of one TT layer whose contraction order is searched (``d * 2^(d-1)`` orders).
MAX_SEARCH_CORES = 12
#: Elements of any intermediate of one layer for one sample (padded input included).
MAX_LAYER_ELEMENTS = 1 << 24
#: Values (intermediates of every stage, all samples) one chunk of a batch holds at once
#: in ``diverge``, ``export-qonnx --check`` and the integer trainer's evaluation (``train-int``):
#: a larger batch runs in chunks, with the
#: same result (500,000 samples of a 64-input network reached 9.4 GB before).
MAX_CHUNK_VALUES = 1 << 24
#: Values one step of the integer trainer holds (``train-int``: the batch's forward and
#: backward intermediates, :func:`ttforge.ir.train.check_step_memory`): 2^30 (8 GiB as
#: int64), so the MNIST benchmark's 784-512-10 network still trains at batch 4,096 (2^29.9).
MAX_STEP_VALUES = 1 << 30
#: Largest magnitude of an exponent (``in_exp``, ``core_exps``, ``step_exps``).
MAX_EXP = 1024
#: Epochs of one training run (``train``, ``train-int``, ``train-board``).
MAX_EPOCHS = 100_000
#: Threads of ``train --threads`` (far beyond any CPU ttforge trains on; 20,000 made the
#: OpenMP runtime abort, 100,000 crashed the process).
MAX_THREADS = 1024
#: Largest learning rate or weight decay (training runs in float32, whose largest value
#: is 3.4e38: the optimizer could not hold 1e39; a rate near this bound diverges at once,
#: which training reports).
MAX_RATE = 1e30
#: Hidden layers of a model (a 4 MB config could list a million: building them took
#: minutes and gigabytes before anything refused it).
MAX_LAYERS = 256
#: Fastest system clock a build is asked for, in MHz (no small FPGA's fabric runs at a
#: gigahertz; 1e308 MHz overflowed the clock in Hz with an internal error).
MAX_FREQ_MHZ = 1000.0
#: Longest wait for a board's answer or a loader, in seconds (a day; 1e300 overflowed
#: the system's time type with an internal error, 1e10 was a wait of centuries).
MAX_TIMEOUT_S = 86_400.0

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"))


def file_kind(mode: int) -> str | None:
    """``None`` for a regular file, else what it is (``"a FIFO"``, ...)."""
    if stat.S_ISREG(mode):
        return None
    return next((k for test, k in _KINDS if test(mode)), "not a regular file")


def broken_link(path: str | os.PathLike, where: str, thing: str = "file") -> str | None:
    """The error line for ``path`` (shown as ``where``) when a symbolic link is why it
    cannot be reached, else ``None``.

    A loop of links (ELOOP) and a link to a missing path both read as "does not exist"
    (``Path.exists`` is ``False``) or as "Too many levels of symbolic links": the line
    names the link, in ``path`` itself or in a directory above it, and what it points to.
    ``thing`` is what the link should lead to (``"file"``, ``"directory"``).
    """
    p = Path(path)
    for part in (*reversed(p.parents), p):   # the first part that cannot be reached
        try:
            os.stat(part)
            continue
        except OSError as e:
            err = e.errno
        except ValueError:
            return None
        if not os.path.islink(part):
            return None
        # a link above the path itself should lead to a directory
        link, want, inside = (("it", thing, "") if part == p else
                              (show_path(part), "directory", f": {show_path(part)}, a part of its path,"))
        fix = f"point the link at an existing {want} or give the {want}'s own path"
        if err == errno.ELOOP:
            return (f"{where}{inside} is a loop of symbolic links (ELOOP: following {link} never reaches a "
                    f"{want}); {fix}")
        if err in (errno.ENOENT, errno.ENOTDIR):
            try:
                target = show_path(os.readlink(part))
            except OSError:
                target = "a path"
            return f"{where}{inside} is a symbolic link to {target}, which does not exist; {fix}"
        return None
    return None


def check_limit(value: int, limit: int, what: str, fix: str = "") -> int:
    """``value`` if ``<= limit``, else a one-line :class:`LimitError` naming both."""
    if value > limit:
        raise LimitError(f"{what} is {value:,}, above ttforge's limit of {limit:,}"
                         + (f"; {fix}" if fix else ""))
    return value


def chunk_rows(per_sample: int, multiple: int = 1, budget: int | None = None) -> int:
    """Samples of a chunk of a batch run a chunk at a time (``diverge``, ``export-qonnx
    --check``, the integer trainer's evaluation): as many as fit ``budget`` values
    (default :data:`MAX_CHUNK_VALUES`) at ``per_sample`` values a sample, rounded down to
    a multiple of ``multiple`` (a graph's fixed batch), at least ``multiple``."""
    budget = MAX_CHUNK_VALUES if budget is None else budget
    return max(1, budget // max(1, per_sample) // multiple) * multiple


def check_chunk_values(per_sample: int, what: str, fix: str, multiple: int = 1) -> None:
    """One line (:class:`LimitError`) when the smallest chunk, ``multiple`` samples of
    ``per_sample`` values (``what`` holds them), is above :data:`MAX_CHUNK_VALUES`: no
    chunking bounds it, so it is refused before any work (``diverge`` of one sample of a
    12-step layer of 2^24 features took > 9 GB). ``fix`` ends the line."""
    if multiple * per_sample > MAX_CHUNK_VALUES:
        raise LimitError(f"{what} holds {multiple * per_sample:,} values at once, above ttforge's limit of "
                         f"{MAX_CHUNK_VALUES:,} (MAX_CHUNK_VALUES); {fix}")


def slash_on_file(path: str | os.PathLike, what: str) -> str | None:
    """The error line when ``path`` ends in '/' but names something that is not a
    directory (shown as ``what`` and the path), else ``None``.

    ``Path`` drops a trailing '/', which asks for a directory: ``inspect a.ttfa/`` read
    the file ``a.ttfa``, where the system (``cat``, ``open``) says "Not a directory".
    """
    raw = os.fspath(path)
    if not isinstance(raw, str):
        return None
    # 'FILE/', 'FILE/.' and 'FILE/..' all ask for FILE as a directory ('cat FILE/.': Not
    # a directory); Path drops a trailing '/' and '/.'
    base = raw
    while base.endswith(("/", "/.")) and base.rstrip("/.") and not base.endswith("/.."):
        base = base[:-1] if base.endswith("/") else base[:-2]
    if base.endswith("/..") and base[:-3].rstrip("/"):
        base = base[:-3]
    base = base.rstrip("/")
    if base == raw or not base:
        return None
    try:
        if os.path.isdir(raw) or not os.path.lexists(base):
            return None   # a directory, or nothing: the caller's own line says which
    except ValueError:    # a NUL byte: the caller's own line
        return None
    tail = raw[len(base):]
    return (f"{what} {show_path(raw)} ends in {tail!r}, which names a directory, but "
            f"{show_path(base)} is not one; drop the trailing {tail!r}")


def open_regular(path: str | os.PathLike, what: str, limit: int,
                 error: type[UserError] = UserError) -> tuple[BinaryIO, int]:
    """Open ``path`` for reading if it is a regular file of at most ``limit`` bytes:
    ``(file, size)``. A missing file, a directory, a FIFO, a device or a socket, an
    unreadable or too large file is a one-line ``error`` naming ``what``."""
    p = Path(path)
    where = f"{what} {show_path(p)}"
    slash = slash_on_file(path, what)
    if slash:
        raise error(slash) from None
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise error(broken_link(p, where) or f"{where} does not exist; check the path") from None
    except (OSError, ValueError) as e:
        raise error(broken_link(p, where)
                    or f"{where} cannot be read ({getattr(e, 'strerror', None) or e})") from None
    kind = file_kind(st.st_mode)
    if kind is not None:
        raise error(f"{where} is {kind}, not a regular file; give the file itself") from None
    if st.st_size > limit:
        raise error(f"{where} has {st.st_size:,} bytes, above ttforge's limit of {limit:,} "
                    f"for {what}s; it is not one ttforge wrote") from None
    # the checks again on what was opened: a FIFO swapped in after the stat blocked the
    # open for good (O_NONBLOCK: the open of a FIFO returns at once, then fstat names it)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise error(f"{where} cannot be read ({e.strerror}); check its permissions") from None
    try:
        st = os.fstat(fd)
        kind = file_kind(st.st_mode)
        if kind is not None:
            raise error(f"{where} is {kind}, not a regular file; give the file itself")
        if st.st_size > limit:
            raise error(f"{where} has {st.st_size:,} bytes, above ttforge's limit of {limit:,} "
                        f"for {what}s; it is not one ttforge wrote")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), st.st_size
    except BaseException:
        os.close(fd)
        raise


def read_bounded(path: str | os.PathLike, what: str, limit: int,
                 error: type[UserError] = UserError) -> bytes:
    """All bytes of a regular file of at most ``limit`` bytes (:func:`open_regular`);
    never more than ``limit`` bytes are read, even if the file grows meanwhile."""
    f, size = open_regular(path, what, limit, error)
    with f:
        try:
            data = read_at_most(f, size + 1)   # not f.read(limit + 1): it allocates the limit
        except OSError as e:
            raise error(f"{what} {show_path(path)} cannot be read ({e.strerror})") from None
    if len(data) > size:
        raise error(f"{what} {show_path(path)} grew while being read; read it again when it is complete")
    return data


def read_at_most(f: BinaryIO, n: int, chunk: int = 1 << 20) -> bytes:
    """Up to ``n`` bytes of ``f`` (fewer at its end), read in chunks: ``f.read(n)``
    allocates ``n`` bytes before reading any (256 MiB for every IDX file read, the limit,
    and 2 GiB for a checkpoint)."""
    parts, got = [], 0
    while got < n:
        part = f.read(min(chunk, n - got))
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def _binary_kind(data: bytes) -> str | None:
    """What a file read as text is when it is binary (``"a ZIP archive (an .npz?)"``, ...),
    else ``None``."""
    if data.startswith(b"PK\x03\x04"):
        return "a ZIP archive (an .npz?)"
    if data.startswith(b"\x93NUMPY"):
        return "a .npy array under another name (name it .npy)"
    if b"\0" in data[:1 << 16]:
        return "binary data"
    return None


def read_array(path: str | os.PathLike, what: str, error: type[UserError] = UserError,
               limit: int = MAX_NPY_BYTES):
    """An array of vectors from a ``.npy`` file (or ``.txt``/``.csv`` text): the one reader
    of user-given input arrays. The ``.npy`` header is checked before any data is read:
    its shape times its item size must fit ``limit`` *and* the file (a 256-byte header
    claiming 10^12 rows is refused, not allocated); object arrays (pickles) and ``.npz``
    archives named ``.npy`` are refused; an empty array is "holds no vectors"; only
    integers and finite real numbers within float32's range are taken (the models run in
    float32: a larger value becomes infinite there); and numpy's own warnings never
    reach the terminal."""
    import io
    import math
    import warnings

    import numpy as np

    p = Path(path)
    where = f"{what} {show_path(p)}"
    if not os.path.lexists(p):
        raise error(f"{where} does not exist; give a .npy, .txt or .csv array")
    if p.suffix != ".npy":
        data = read_bounded(p, what, limit, error)
        if not data.strip():
            raise error(f"{where}: holds no vectors (the file is empty); give at least one")
        binary = _binary_kind(data)
        if binary:   # the text parser would quote its bytes ("could not convert string 'PK\x03...")
            raise error(f"{where}: is {binary}, not a text array; give a .npy, .txt or .csv array "
                        f"(numpy.save writes one .npy)")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                x = np.loadtxt(io.BytesIO(data), delimiter="," if p.suffix == ".csv" else None, ndmin=2)
        except (ValueError, TypeError) as e:
            raise error(f"{where}: cannot read ({str(e).splitlines()[0][:200]}); give a .npy, .txt or "
                        f".csv array of numbers") from None
    else:
        f, size = open_regular(p, what, limit + (1 << 16), error)
        with f:
            try:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                elif version in ((2, 0), (3, 0)):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    raise ValueError(f"unknown .npy version {version}")
            except Exception as e:  # noqa: BLE001 - numpy's header parser raises several kinds
                f.seek(0)
                kind = " (it is a ZIP archive: an .npz named .npy?)" if f.read(4) == b"PK\x03\x04" else ""
                raise error(f"{where}: not a .npy array{kind} ({str(e).splitlines()[0][:200]})") from None
            if dtype.hasobject:
                raise error(f"{where}: holds Python objects; give an array of numbers (pickles are never "
                            f"loaded)")
            nbytes = math.prod(shape) * dtype.itemsize
            if nbytes > limit:
                raise LimitError(f"{where}: its header declares shape {tuple(shape)} ({nbytes:,} bytes), "
                                 f"above ttforge's limit of {limit:,} bytes")
            if nbytes > size - f.tell():
                raise error(f"{where}: is truncated: its header declares shape {tuple(shape)} "
                            f"({nbytes:,} bytes) but {size - f.tell():,} bytes follow it; re-copy it")
            f.seek(0)
            try:
                x = np.load(f, allow_pickle=False)
            except Exception as e:  # noqa: BLE001
                raise error(f"{where}: cannot read ({str(e).splitlines()[0][:200]})") from None
    if x.size == 0:
        raise error(f"{where}: holds no vectors (shape {x.shape}); give at least one")
    if x.dtype.kind not in "iuf":
        raise error(f"{where}: holds {x.dtype} values; give an array of integers or real numbers")
    if x.dtype.kind == "f":
        if not np.isfinite(x).all():
            raise error(f"{where}: holds NaN or infinite values; give finite numbers")
        if np.abs(x).max() > np.finfo(np.float32).max:
            raise error(f"{where}: holds values beyond float32's range (+-3.4e38); give smaller numbers")
    return x


def parse_config_text(text: str, toml: bool, where: str) -> object:
    """``text`` parsed as TOML (``toml``) or JSON, or a one-line :class:`ConfigError`
    starting with ``where``: bad syntax, nesting too deep to read, or an integer longer
    than Python converts (4,300 digits; its own message names a ``sys`` setting, and
    it is no syntax error, so each loader let it through as an internal error)."""
    import json

    from ttforge.errors import ConfigError

    kind = "TOML" if toml else "JSON"
    try:
        if toml:
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # tomllib is 3.11+; tomli is the same parser (a dependency on 3.10)
                import tomli as tomllib

            return tomllib.loads(text)
        return json.loads(text)
    except RecursionError:
        raise ConfigError(f"{where}: is nested too deeply to read; give a plain {kind} file") from None
    except ValueError as e:   # TOMLDecodeError and JSONDecodeError are ValueErrors
        if "integer string conversion" in str(e):
            raise ConfigError(f"{where}: holds an integer of more than 4,300 digits; fix the value") from None
        what = f"{e.msg} at line {e.lineno}" if isinstance(e, json.JSONDecodeError) else str(e).splitlines()[0]
        raise ConfigError(f"{where}: is not valid {kind} ({what}); fix the file") from None
