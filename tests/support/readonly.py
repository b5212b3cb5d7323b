"""A directory that behaves as on a read-only mount, for output checks made before work."""

from __future__ import annotations

import errno
import tempfile
from pathlib import Path


def read_only(monkeypatch, ro: Path) -> None:
    """Creating a file in ``ro`` fails with EROFS, as on a read-only mount (which root's
    permissions, unlike ``chmod``, do not bypass): how ``ttforge.atomic.check_writable``
    finds out a directory cannot take an output."""
    real = tempfile.mkstemp

    def mkstemp(*a, dir=None, **kw):
        if dir is not None and Path(dir) == ro:
            raise OSError(errno.EROFS, "Read-only file system")
        return real(*a, dir=dir, **kw)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
