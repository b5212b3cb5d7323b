"""The process environment ``ttforge.sim.runner`` gives cocotb's runner: its own names
only, put back after, shared by runs in threads."""

from __future__ import annotations

import os
import threading

import pytest

from tests.support.tiny_builds import need_native


def test_a_variable_the_host_sets_during_a_run_is_kept(monkeypatch):
    """The whole os.environ was saved before a simulation and put back after: a variable
    a host thread set meanwhile was gone."""
    from ttforge.sim.runner import runner_env

    monkeypatch.setenv("PYTEST_CURRENT_TEST", "host value")
    monkeypatch.delenv("TTF_HOST_SET", raising=False)
    with runner_env("icarus", own={"TTFORGE_SIM_JOB": "/the/job"}):
        assert "PYTEST_CURRENT_TEST" not in os.environ
        os.environ["TTF_HOST_SET"] = "1"
    assert os.environ["TTF_HOST_SET"] == "1" and os.environ["PYTEST_CURRENT_TEST"] == "host value"


def test_verilator_runs_in_threads_leave_the_host_environment_as_it_was(monkeypatch):
    """Two runs at once, the first to start ending first: the second had saved the first's
    environment and put it back, so the host kept Verilator's PATH, VERILATOR_ROOT and
    MAKEFLAGS and lost PYTEST_CURRENT_TEST. Both runs see the same environment."""
    need_native()
    from ttforge.sim.runner import runner_env

    monkeypatch.setenv("PYTEST_CURRENT_TEST", "host value")
    monkeypatch.setenv("MAKEFLAGS", "-k")
    before = dict(os.environ)
    seen, started, first_done = [], threading.Event(), threading.Event()

    def second():
        with runner_env("verilator"):
            seen.append({k: os.environ.get(k) for k in ("PATH", "VERILATOR_ROOT", "MAKEFLAGS")})
            started.set()
            first_done.wait(10)

    with runner_env("verilator"):
        seen.append({k: os.environ.get(k) for k in ("PATH", "VERILATOR_ROOT", "MAKEFLAGS")})
        t = threading.Thread(target=second)
        t.start()
        assert started.wait(10)
    first_done.set()
    t.join(10)
    assert seen[0] == seen[1] and "CFG_CXXFLAGS_PCH_I=-include" in seen[0]["MAKEFLAGS"].split()
    assert seen[0]["MAKEFLAGS"].startswith("-k ") and seen[0]["VERILATOR_ROOT"]
    assert dict(os.environ) == before


@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_nothing_of_a_run_stays_in_the_environment(sim, monkeypatch):
    if sim == "verilator":
        need_native()
    from ttforge.sim.runner import runner_env

    monkeypatch.delenv("VERILATOR_ROOT", raising=False)
    before = dict(os.environ)
    with runner_env(sim, own=["TTFORGE_SIM_JOB"]):
        pass
    assert dict(os.environ) == before


def test_a_removed_working_directory_is_one_line(tmp_path):
    """A long-lived service whose working directory was removed got a bare
    FileNotFoundError from cocotb's runner (``Path.cwd()``) out of ``run_inference``."""
    import os

    from ttforge.errors import SimError
    from ttforge.sim.runner import runner_env

    here, gone = os.getcwd(), tmp_path / "gone"
    gone.mkdir()
    os.chdir(gone)
    try:
        gone.rmdir()
        with pytest.raises(SimError, match="^the current directory was removed .*change to an existing"):
            with runner_env("icarus"):
                pass
    finally:
        os.chdir(here)
