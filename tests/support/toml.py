"""``tomllib`` on every Python ttforge supports: the standard library's from 3.11, the
``tomli`` package it came from on 3.10 (a dependency there)."""

from __future__ import annotations

import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

__all__ = ["load_toml", "tomllib"]


def load_toml(path: Path) -> dict:
    """The TOML file ``path``, parsed."""
    return tomllib.loads(Path(path).read_text(encoding="utf-8"))
