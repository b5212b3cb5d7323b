"""Shared by the flow tests: one short run of the embedded default."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture(scope="session")
def default_build(tmp_path_factory):
    """A ``--short`` build of the embedded default (train ... sim, report; no bitstream)."""
    from ttforge.cli import main

    out = tmp_path_factory.mktemp("flow") / "digits-icebreaker"
    assert main(["flow", "--short", "--out", str(out)]) == 0
    return out


@pytest.fixture
def build_copy(default_build, tmp_path):
    """A private copy of :func:`default_build` that a test may change."""
    dst = tmp_path / "build"
    shutil.copytree(default_build, dst)
    return dst
