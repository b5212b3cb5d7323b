"""Compile one of the project's C files (``firmware/c/``) into a shared library with the
system C compiler at ``-O2`` and load it with ctypes: the C reference implementations
(:mod:`~ttforge.firmware.train_c`, :mod:`~ttforge.firmware.infer_c`) are tested equal to
the golden Python ones and timed through it.
"""

from __future__ import annotations

import ctypes as C
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from ttforge.errors import ConfigError
from ttforge.process import run_bounded

__all__ = ["load_c_library"]

_LIBS: dict[str, C.CDLL] = {}


def load_c_library(source: Path, cache: str | os.PathLike | None = None, cc: str | None = None) -> C.CDLL:
    """``source`` compiled with ``cc -O2 -std=c99`` (once per content: the library is kept
    under ``cache``, default a ``ttforge-c`` directory in the temp dir, by the source's
    sha256) and loaded. No compiler, or a compile error: one :class:`ConfigError` line."""
    src = Path(source).read_bytes()
    key = hashlib.sha256(src).hexdigest()[:16]
    name = f"lib{Path(source).stem}-{key}"
    if name in _LIBS:
        return _LIBS[name]
    cc = cc or os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise ConfigError(f"no C compiler (cc) found; install gcc to build {Path(source).name}")
    cache = Path(cache or Path(tempfile.gettempdir()) / "ttforge-c")
    cache.mkdir(parents=True, exist_ok=True)
    lib = cache / f"{name}.so"
    if not lib.exists():
        from ttforge.atomic import atomic_path

        with atomic_path(lib, suffix=".so") as tmp:   # a killed compile leaves no half library
            r = run_bounded([cc, "-O2", "-std=c99", "-Wall", "-shared", "-fPIC", "-o", str(tmp), str(source)],
                            timeout=600)
            if r.returncode != 0:
                raise ConfigError(f"compiling {Path(source).name} failed: {r.stderr.strip().splitlines()[-1:]}")
    _LIBS[name] = so = C.CDLL(str(lib))
    return so
