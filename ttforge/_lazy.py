"""Package attributes imported on first use (PEP 562), for the packages whose modules
import PyTorch: ``import ttforge.model`` then costs nothing and works without torch (the
train commands declare their options, ``--help``, from torch-free modules of the
package), and ``from ttforge.model import TTLinear`` imports what defines it."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any, Callable, Mapping


def lazy_attributes(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` of ``package`` whose attribute ``name`` is ``name`` of the
    module ``exports[name]``, imported on first access.

    Any other name that is a submodule of ``package`` is imported too, as the package's
    eager imports used to make ``ttforge.model.train`` an attribute.
    """
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str) -> Any:
        if name in exports:
            value = getattr(importlib.import_module(exports[name]), name)
        elif not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}") is not None:
            value = importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace[name] = value   # cached: the next access is a plain attribute
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
