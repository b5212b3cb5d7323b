"""Shared by the bench scripts: what a measurement ran on (the time, the git state, the CPU,
package versions)."""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def git(*args: str) -> str | None:
    """``git args...`` in the repository: its stripped stdout, or None when git fails."""
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_dirty(*paths: str) -> bool | None:
    """Whether ``paths`` differ from the commit (None when git cannot tell)."""
    status = git("status", "--porcelain", "--", *paths)
    return None if status is None else bool(status)


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second (``2026-11-28T23:03:00Z``)."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def output_path(example: str):
    """An argparse ``type`` for a bench's output file: the path as a :class:`Path`, checked
    before any measurement (:func:`ttforge.atomic.check_output_file`), so that a
    directory, a device, a FIFO or a file under a file is a usage error (exit 2, one
    line) at once, not a traceback after minutes or hours of work. ``example`` names a
    file of the kind in the message (``result.json``, ``plot.png``)."""

    def checked(text: str | Path) -> Path:
        from ttforge.atomic import check_output_file
        from ttforge.errors import OutputError

        try:
            return check_output_file(text, "", example)
        except OutputError as e:  # argparse names the flag: "argument --out: <why>"
            raise argparse.ArgumentTypeError(str(e).strip()) from None

    checked.__name__ = "output file"  # argparse's name for it in other errors
    return checked


#: The ``type`` of a bench's ``--out`` (its JSON result).
result_path = output_path("result.json")


def write_result(path: Path, result: dict, *, announce: bool = True) -> None:
    """Write a bench's ``result`` as indented JSON to ``path``, atomically (a crash or a
    signal leaves the previous file, never half of one), its folder made first."""
    from ttforge.atomic import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    if announce:
        print(f"wrote {path}")


def package_version(dist: str) -> str | None:
    """The installed version of distribution ``dist``, or None when it is not installed."""
    try:
        return version(dist)
    except PackageNotFoundError:
        return None
