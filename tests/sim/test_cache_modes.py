"""The build caches' directories have the usual mode (``0777 & ~umask``), so a cache can
be shared by the users of a group, however the build was made."""

from __future__ import annotations

import os

import pytest

from tests.support.sims import _available
from tests.support.tiny_builds import TINY_V, build_tiny


@pytest.fixture
def group_umask():
    old = os.umask(0o002)
    try:
        yield 0o775
    finally:
        os.umask(old)


@pytest.mark.parametrize("name", ["cache", "ca che"])
def test_a_native_build_directory_has_the_usual_mode(tmp_path, group_umask, name):
    """It was made with mkdtemp (0700), in the cache or (a path make cannot build in,
    ``ca che``) copied in from a job directory: only its builder could use it."""
    directory, cached, _ = build_tiny(tmp_path / name)
    assert not cached and oct(directory.stat().st_mode & 0o777) == oct(group_umask)


def test_a_cocotb_build_copied_in_from_a_job_directory_has_the_usual_mode(tmp_path, group_umask):
    """copytree gave the cache's build directory the job directory's 0700."""
    reason = _available("icarus")
    if reason:
        pytest.skip(reason)
    from ttforge.sim.runner import cocotb_build

    root = tmp_path / "nl\nc"   # iverilog cannot build there: built in a job directory
    bdir = root / "icarus-tiny"
    bdir.mkdir(parents=True)
    cocotb_build("icarus", root, bdir, "tiny", {"tiny.v": TINY_V.decode()}, waves=False)
    assert (bdir / "sim.vvp").is_file() and oct(bdir.stat().st_mode & 0o777) == oct(group_umask)
