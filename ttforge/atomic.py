"""Atomic writes: every file ttforge writes appears complete or not at all.

A file is written to a temporary name in its target's directory, flushed to disk and
renamed over the target with ``os.replace`` (atomic on POSIX within one file system),
so an error, a full disk or Ctrl-C never leaves a half-written file under the real
name, and never a stray temporary either. A directory of files is built the same way,
in a temporary directory next to it, then renamed into place.

Paths that cannot be written (the parent is a file, the target is a directory, no
permission) are one-line :class:`~ttforge.errors.OutputError` s naming the path and
the fix; errors raised by the caller's own code inside :func:`atomic_path` and
:func:`atomic_dir` pass through unchanged (after the temporaries are removed).

This module imports nothing heavy (``hw`` uses it and knows nothing of PyTorch).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Mapping

from ttforge.errors import OutputError

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_path", "atomic_dir",
           "write_files_atomically", "check_output_file", "check_output_dir", "make_output_dir"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fail(path: Path, e: OSError) -> OutputError:
    why = e.strerror or str(e) or type(e).__name__
    return OutputError(f"cannot write {path} ({why}); choose another output path")


def check_output_file(path: str | os.PathLike, flag: str = "-o", example: str = "out") -> Path:
    """``path`` as a :class:`Path` if a file can be written there, else one-line error.

    Called before long work so a bad output path fails at once, not after it. Checks
    what can be checked without writing: the target is not a directory and no existing
    ancestor is a file. (Permissions show when the file is written.)
    """
    p = Path(path).expanduser()
    if p.is_dir():
        raise OutputError(f"{flag} {p} is a directory; give a file name (e.g. {p}/{example})")
    _check_ancestors(p, flag)
    return p


def check_output_dir(path: str | os.PathLike, flag: str = "-o") -> Path:
    """``path`` as a :class:`Path` if a directory can be created or used there."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise OutputError(f"{flag} {p} exists and is not a directory; choose another output path")
    _check_ancestors(p, flag)
    return p


def make_output_dir(path: str | os.PathLike, flag: str = "-o") -> Path:
    """:func:`check_output_dir`, then create the directory (and its parents); a
    directory that cannot be created is a one-line :class:`OutputError`."""
    p = check_output_dir(path, flag)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        why = e.strerror or str(e) or type(e).__name__
        raise OutputError(f"{flag} {p}: cannot create it ({why}); choose another output path") from None
    return p


def _check_ancestors(p: Path, flag: str) -> None:
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                where = f"{flag} {p}" if flag else f"cannot write {p}"
                raise OutputError(f"{where}: {parent} is a file, not a directory; "
                                  f"choose another output path")
            return


def _mkdir(parent: Path, path: Path) -> None:
    _check_ancestors(path, "")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _fail(path, e) from None


def _replace(tmp: Path, path: Path) -> None:
    if path.is_dir():
        raise OutputError(f"{path} is a directory; give a file name (e.g. {path}/out)")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual mode
        os.replace(tmp, path)
    except OSError as e:
        raise _fail(path, e) from None


def _unlink(tmp: str | os.PathLike) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)


def _fsync_file(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file and a rename."""
    return atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path next to ``path`` that replaces ``path`` when the block ends.

    For libraries that write by file name (``torch.save``, ``savefig``, ``np.save``,
    ``onnx.save``): write to the yielded path. On success it is flushed and renamed
    over ``path``; on any exception it is removed and ``path`` is left as it was.
    ``suffix`` keeps the extension a library may insist on (e.g. ``".npy"``).
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OutputError(f"{path} is a directory; give a file name (e.g. {path}/out)")
    _mkdir(parent, path)
    try:
        fd, name = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=suffix)
    except OSError as e:
        raise _fail(path, e) from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _fsync_file(tmp)
        _replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary directory next to ``path`` that replaces ``path`` when the block ends.

    Fill the yielded directory; on success it is renamed to ``path`` (an existing
    ``path`` is replaced: moved aside, then deleted once the new one is in place). On
    any exception the temporary directory is deleted and ``path`` is left as it was.
    The caller decides whether an existing ``path`` may be replaced.
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} exists and is not a directory; choose another output path")
    parent = out.parent if str(out.parent) else Path(".")
    _mkdir(parent, out)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700; give the usual mode
    except OSError as e:
        raise _fail(out, e) from None
    old = None
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                _fsync_file(f)
        try:
            if out.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=parent))
                os.rmdir(old)
                os.replace(out, old)
            os.replace(tmp, out)
        except OSError as e:
            raise _fail(out, e) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists() and not out.exists():
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_files_atomically(out: str | os.PathLike, files: Mapping[str, bytes]) -> Path:
    """Replace the directory ``out`` by one holding exactly ``files`` (name -> bytes)."""
    out = Path(out)
    with atomic_dir(out) as tmp:
        for name, data in files.items():
            target = tmp / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as f:
                f.write(data)
    return out
