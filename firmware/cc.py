"""Compile one of the project's C files (``firmware/c/``) into a shared library with the
system C compiler at ``-O2`` and load it with ctypes: the C reference implementations
(:mod:`~ttforge.firmware.train_c`, :mod:`~ttforge.firmware.infer_c`) are tested equal to
the golden Python ones and timed through it.

:func:`ttforge.process.c_compiler` names the compiler (as it does for
:func:`ttforge.sim.native.link_c_driver`).
"""

from __future__ import annotations

import ctypes as C
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ttforge.errors import ConfigError
from ttforge.process import c_compiler, run_bounded

__all__ = ["load_c_library"]

_LIBS: dict[str, C.CDLL] = {}
_VERSIONS: dict[tuple[str, ...], str] = {}
#: the flags load_c_library compiles with (part of the cache key)
_FLAGS = ("-O2", "-std=c99", "-Wall", "-shared", "-fPIC")


def _version(argv: Sequence[str]) -> str:
    """The first line of ``argv --version`` (once per process; "" if it does not say)."""
    key = tuple(argv)
    if key not in _VERSIONS:
        try:
            r = run_bounded([*argv, "--version"], timeout=60)
            _VERSIONS[key] = (r.stdout.strip().splitlines() or [""])[0] if r.returncode == 0 else ""
        except (OSError, subprocess.TimeoutExpired):
            _VERSIONS[key] = ""
    return _VERSIONS[key]


def _cache_key(source: Path, argv: Sequence[str]) -> str:
    """sha256 of what the library depends on: the source, the headers beside it that it
    includes, the compiler (its command, the program it resolves to and its version) and
    the flags; a library built by another compiler or flag set is never reused."""
    h = hashlib.sha256()
    text = source.read_bytes()
    h.update(text)
    for name in sorted(set(re.findall(rb'#include\s+"([^"]+)"', text))):
        header = source.parent / name.decode(errors="replace")
        h.update(b"\0" + name + b"\0" + (header.read_bytes() if header.is_file() else b""))
    for part in (*argv, "\0", shutil.which(argv[0]) or "", _version(argv), "\0", *_FLAGS):
        h.update(part.encode(errors="replace") + b"\0")
    return h.hexdigest()[:16]


def load_c_library(source: Path, cache: str | os.PathLike | None = None, cc: str | None = None) -> C.CDLL:
    """``source`` compiled with ``cc -O2 -std=c99`` (``cc``, else ``$CC``, else ``cc`` or
    ``gcc``, arguments allowed: :func:`c_compiler`) once per source, included headers,
    compiler and flags (the library is kept under ``cache``, default a ``ttforge-c``
    directory in the temp dir, by their sha256) and loaded. No compiler, or a compile
    error: one :class:`ConfigError` line."""
    source = Path(source)
    argv = c_compiler(cc)
    if argv is None:
        asked = cc or os.environ.get("CC")
        raise ConfigError(f"no C compiler found ({f'{asked!r}, ' if asked else ''}cc and gcc are not on PATH); "
                          f"install gcc or set CC to an installed compiler to build {source.name}")
    name = f"lib{source.stem}-{_cache_key(source, argv)}"
    if name in _LIBS:
        return _LIBS[name]
    cache = Path(cache or Path(tempfile.gettempdir()) / "ttforge-c")
    cache.mkdir(parents=True, exist_ok=True)
    lib = cache / f"{name}.so"
    if not lib.exists():
        from ttforge.atomic import atomic_path

        with atomic_path(lib, suffix=".so") as tmp:   # a killed compile leaves no half library
            try:
                r = run_bounded([*argv, *_FLAGS, "-o", str(tmp), str(source)], timeout=600)
            except (OSError, subprocess.TimeoutExpired) as e:
                raise ConfigError(f"compiling {source.name} with {shlex.join(argv)} failed: "
                                  f"{type(e).__name__}: {e}") from None
            if r.returncode != 0:
                raise ConfigError(f"compiling {source.name} failed: {r.stderr.strip().splitlines()[-1:]}")
    _LIBS[name] = so = C.CDLL(str(lib))
    return so
