"""Digests of ttforge's own code, for results that must not outlive the code that made
them (``ttforge.__version__`` stays the same across a developer's edits)."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from pathlib import Path

__all__ = ["sources_digest", "SOURCE_SUFFIXES"]

#: The files of a package that are code: Python, and the C/C++ and SystemVerilog the
#: package compiles or hands to a tool (the native Verilator harness, the C drivers, the
#: formal property wrappers): an edit of them changes what the package computes.
SOURCE_SUFFIXES = (".py", ".c", ".h", ".cpp", ".sv")


@functools.lru_cache(maxsize=32)
def sources_digest(*subpackages: str) -> str:
    """A short sha256 of the sources (:data:`SOURCE_SUFFIXES`) of ``ttforge.<name>`` for
    each of ``subpackages`` (file names and contents, in a fixed order), read from the
    package directories without importing them (``model`` would import torch)."""
    h = hashlib.sha256()
    for name in subpackages:
        spec = importlib.util.find_spec(f"ttforge.{name}")
        if spec is None or not spec.submodule_search_locations:
            h.update(f"{name} -\0".encode())
            continue
        base = Path(list(spec.submodule_search_locations)[0]).resolve()
        h.update(f"{name}\0".encode())
        for f in sorted(f for f in base.rglob("*") if f.suffix in SOURCE_SUFFIXES and f.is_file()):
            h.update(f.relative_to(base).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:20]
