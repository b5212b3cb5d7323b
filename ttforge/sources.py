"""Digests of ttforge's own code, for results that must not outlive the code that made
them (``ttforge.__version__`` stays the same across a developer's edits)."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from pathlib import Path

__all__ = ["sources_digest"]


@functools.lru_cache(maxsize=32)
def sources_digest(*subpackages: str) -> str:
    """A short sha256 of the Python sources of ``ttforge.<name>`` for each of
    ``subpackages`` (file names and contents, in a fixed order), read from the package
    directories without importing them (``model`` would import torch)."""
    h = hashlib.sha256()
    for name in subpackages:
        spec = importlib.util.find_spec(f"ttforge.{name}")
        if spec is None or not spec.submodule_search_locations:
            h.update(f"{name} -\0".encode())
            continue
        base = Path(list(spec.submodule_search_locations)[0]).resolve()
        h.update(f"{name}\0".encode())
        for f in sorted(base.rglob("*.py")):
            h.update(f.relative_to(base).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:20]
