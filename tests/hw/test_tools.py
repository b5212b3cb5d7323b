"""``ttforge.hw.tools``: the pip-installed toolchain's environment."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.support.tiny_builds import build_tiny, need_native


def test_a_make_variable_goes_in_once_with_its_blanks_escaped():
    from ttforge.hw.tools import make_variable

    assert make_variable("", "PYTHON3", "/usr/bin/python3") == "PYTHON3=/usr/bin/python3"
    assert make_variable("k CC=gcc", "PYTHON3", "'/a b/py'") == "k CC=gcc PYTHON3='/a\\ b/py'"
    once = make_variable("-j2", "PYTHON3", "/usr/bin/python3")
    assert make_variable(once, "PYTHON3", "/usr/bin/python3") == once


def test_a_verilated_build_needs_no_python_on_path(tmp_path, monkeypatch):
    """The wheel's verilated.mk runs its includer with `python` (PYTHON3 = python): from a
    venv used without activation on a system with python3 only (Debian, Ubuntu), every
    native build (regress --sim verilator-native, --train, flow's sim stage, the C driver
    link) failed with make's "Error 127" and no cause named. Built with this interpreter."""
    need_native()
    path = os.pathsep.join(d for d in ("/usr/local/bin", "/usr/bin", "/bin") if os.path.isdir(d))
    if shutil.which("python", path=path) is not None:
        pytest.skip(f"a python on {path}")
    monkeypatch.setenv("PATH", path)
    monkeypatch.delenv("MAKEFLAGS", raising=False)
    directory, cached, _ = build_tiny(tmp_path / "root")
    assert not cached
    out = subprocess.run([str(directory / "tiny")], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "n=6"
