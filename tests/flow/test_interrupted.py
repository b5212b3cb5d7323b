"""What an interrupted or tampered-with flow build leaves, and how the next run takes it:
a run killed (SIGKILL) in its first stage, a sweep killed before its first point ends,
a FIFO in place of a stage's file."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ttforge.cli import main
from ttforge.flow import default_config, run_flow
from ttforge.flow import stages as stages_mod


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.fixture
def quick_stages(monkeypatch):
    """``train`` and ``report`` as stand-ins that write one file each (the machinery of
    running, skipping and cleaning is what these tests look at, not the stages)."""
    calls = []

    def stage(name):
        def run(ctx, out):
            calls.append(name)
            (out / f"{name}.txt").write_text(name)
            return {}, name
        return run

    for name in ("train", "report"):
        monkeypatch.setitem(stages_mod._RUN, name, stage(name))
    monkeypatch.setattr(stages_mod, "_publish", lambda root, seen: [])
    return calls


def test_a_run_killed_in_its_first_stage_can_be_rerun(tmp_path, quick_stages, capsys):
    """SIGKILL during ``train`` of a new build left only ``.train.ttforge-<pid>.*.tmp``; the
    rerun called the directory "not a ttforge flow build" (exit 2) for good. The dead
    run's temporary goes, the flow runs."""
    out = tmp_path / "f_k"
    half = out / f".train.ttforge-{_dead_pid()}.abc123.tmp"
    half.mkdir(parents=True)
    (half / "metrics.json").write_text("{half")
    assert main(["flow", "--short", "--until", "train", "--out", str(out)]) == 0, capsys.readouterr().err
    assert quick_stages == ["train", "report"]
    assert sorted(p.name for p in out.iterdir()) == ["report", "train"]


def test_a_stage_moved_aside_by_a_killed_run_comes_back(tmp_path, quick_stages):
    """A run killed between moving the old ``train/`` aside and renaming the new one in:
    the old stage is put back and skipped (it was deleted with the temporaries, and ran
    again); a temporary whose pid is alive (reused, or of another PID namespace) is gone
    too, since the build's lock says no run writes there."""
    out = tmp_path / "b"
    run_flow(default_config(), out, until="train", short=True)
    os.rename(out / "train", out / f".train.ttforge-{_dead_pid()}.xyz.old")
    other = out / f".train.ttforge-{os.getppid()}.xyw.tmp"
    other.mkdir()
    quick_stages.clear()
    res = run_flow(default_config(), out, until="train", short=True)
    assert res.stage("train").status == "skipped" and quick_stages == []
    assert sorted(p.name for p in out.iterdir()) == ["report", "train"]


def test_a_users_directory_is_still_refused(tmp_path, quick_stages, capsys):
    """Only ttforge's own temporaries are taken away: a directory holding anything else
    is refused as before, and kept."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / ".train.notes").write_text("mine")
    (out / f".train.ttforge-{_dead_pid()}.abc.tmp").mkdir()
    assert main(["flow", "--short", "--until", "train", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "is not empty and not a ttforge flow build" in err and err.count("\n") == 1
    assert (out / ".train.notes").read_text() == "mine" and quick_stages == []


class _Hung(Exception):
    pass


def _within(seconds: int):
    """Raise :class:`_Hung` in the test if the block takes longer than ``seconds``."""
    import contextlib
    import signal

    @contextlib.contextmanager
    def block():
        def ring(*_):
            raise _Hung(f"still running after {seconds} s")
        old = signal.signal(signal.SIGALRM, ring)
        signal.alarm(seconds)
        try:
            yield
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)
    return block()


@pytest.mark.parametrize("victim", ["train/train.txt", "report/stage.json"])
def test_a_fifo_in_a_build_is_one_line_not_a_hang(tmp_path, quick_stages, capsys, victim):
    """A FIFO in place of a stage's output or of its ``stage.json`` hung ``flow`` for good
    (both were opened with a plain ``open``). It is not intact, so the stage would run
    again; as for ``generate -o`` and ``sweep --out``, a stage directory holding what the
    flow never writes is then refused in one line (exit 2), the FIFO left as it is."""
    import stat

    out = tmp_path / "b"
    run_flow(default_config(), out, until="train", short=True)
    fifo = out / victim
    fifo.unlink()
    os.mkfifo(fifo)
    quick_stages.clear()
    with _within(20):
        code = main(["flow", "--short", "--until", "train", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("ttforge flow: error: --out "), err
    assert str(out / victim.split("/")[0]) in err and victim.split("/")[1] in err
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and quick_stages == []


_KILLED_IN_QUANTIZE = """
import os, signal, sys
from ttforge.flow import stages
from ttforge.flow.sweep import load_sweep, run_sweep

def killed(ctx, out):
    (out / "model.ttfa").write_bytes(b"half")
    os.kill(os.getpid(), signal.SIGKILL)   # no cleanup, no except clause runs

stages._RUN["quantize"] = killed
run_sweep(load_sweep(sys.argv[1]), sys.argv[2])
"""


def test_a_sweep_killed_in_its_first_point_resumes(tmp_path, monkeypatch):
    """SIGKILL after the first point's train stage, before any point ended, left
    ``points/<key>/{train,.quantize...tmp}`` and no ``sweep.json``: every later run refused
    ``--out`` as "not a ttforge sweep output". The record is written before the first
    point starts: the sweep resumes, and the point skips the train stage it completed."""
    from tests.support.flows import TINY_FLOW_TOML
    from ttforge.flow.sweep import load_sweep, run_sweep

    (tmp_path / "base.toml").write_text(TINY_FLOW_TOML)
    conf = tmp_path / "s.toml"
    conf.write_text('[sweep]\nname = "t"\nflow = "base.toml"\n[grid]\nlanes = [1]\n')
    out = tmp_path / "s_k"
    p = subprocess.run([sys.executable, "-c", _KILLED_IN_QUANTIZE, str(conf), str(out)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == -9, p.stderr[-2000:]
    # beside it the lock file of the killed run's flow (a killed process cannot remove it;
    # the next run into the point takes it, since no process holds it)
    (point,) = [q for q in (out / "points").iterdir() if not q.name.endswith(".ttforge-lock")]
    trained = (point / "train" / "stage.json").read_bytes()
    assert (point / "train" / "stage.json").is_file() and not (point / "quantize").exists()

    def retrained(ctx, out):
        raise AssertionError("the completed train stage ran again")

    monkeypatch.setitem(stages_mod._RUN, "train", retrained)
    res = run_sweep(load_sweep(conf), out)
    assert [r["status"] for r in res.rows] == ["ok"], [r["reason"] for r in res.rows]
    assert (point / "train" / "stage.json").read_bytes() == trained
    assert (point / "compile" / "stage.json").is_file() and (out / "sweep.csv").is_file()
    assert not [q.name for q in point.iterdir() if q.name.startswith(".")]
    assert [q.name for q in (out / "points").iterdir()] == [point.name]   # the lock went with the run
