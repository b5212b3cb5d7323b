"""Job directories of simulations (``ttforge.atomic.job_dir``) and what a killed run left."""

from __future__ import annotations

import subprocess
import sys
import tempfile

import pytest

from ttforge.atomic import JOB_MARKER, job_dir

#: An orphaned simulator: it works in its job directory until told to finish, then
#: writes ``results.xml`` as cocotb does (``Path(f).parent.mkdir(parents=True)``).
_ORPHAN = """
import os, sys, time
from pathlib import Path
job, go = sys.argv[1], Path(sys.argv[2])
print("ready", flush=True)
while not go.exists():
    time.sleep(0.02)
f = Path(job) / "results.xml"
f.parent.mkdir(parents=True, exist_ok=True)
f.write_text("<testsuites/>")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_a_job_directory_an_orphaned_simulator_works_in_is_kept_until_it_ends(tmp_path, monkeypatch):
    """A simulator left running by a SIGKILLed regress (``vvp``) had its directory
    removed by the next job and cocotb made it again for ``results.xml``, without the
    marker: it lingered for good. Now the directory stays while the orphan works there
    and a later job removes it, marker and all."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                           text=True, check=True).stdout.strip()
    dead = tmp_path / "tmp" / f"ttforge-sim-{ended}-killed"
    dead.mkdir()
    (dead / JOB_MARKER).write_text("a ttforge job\n")
    go = tmp_path / "go"
    orphan = subprocess.Popen([sys.executable, "-c", _ORPHAN, str(dead), str(go)], cwd=dead,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert orphan.stdout.readline().strip() == "ready"
        mine = job_dir("ttforge-sim-")   # the next run's job, while the orphan still runs
        go.touch()
        assert orphan.wait(timeout=60) == 0
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()
    later = job_dir("ttforge-sim-")
    assert sorted(p.name for p in (tmp_path / "tmp").iterdir()) == sorted([mine.name, later.name])


def test_the_processes_are_read_once_per_cleanup_not_once_per_leftover(tmp_path, monkeypatch):
    """Each leftover directory scanned every process in /proc (~2 us a process: 10,000
    processes and 100 leftovers cost 2 s a job): one scan serves every leftover."""
    import ttforge.atomic as atomic

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                           text=True, check=True).stdout.strip()
    for i in range(5):
        d = tmp_path / "tmp" / f"ttforge-sim-{ended}-killed{i}"
        d.mkdir()
        (d / JOB_MARKER).write_text("a ttforge job\n")
    scans = []
    real = atomic.os.listdir
    monkeypatch.setattr(atomic.os, "listdir", lambda p=".": (scans.append(p) if p == "/proc" else None) or real(p))
    mine = job_dir("ttforge-sim-")
    assert len(scans) <= 1 and [p.name for p in (tmp_path / "tmp").iterdir()] == [mine.name]


def _train_job(tmp_path):
    """``(build, case)`` of a small training job (the build is never compiled here)."""
    from types import SimpleNamespace

    from ttforge.sim.train_runner import case_config

    engine = dict(lanes=2, act_depth=64, grad_depth=64, core_depth=64, bias_depth=16, desc_depth=16,
                  max_batch=2, max_classes=4)
    case = dict(seed=0, batch=2, steps=1, engine=engine, net=dict(n_layers=1, d=2, rank=2, n_in=4, hidden=4, n_out=3))
    return SimpleNamespace(config=case_config(case)[1], sim="icarus", build_dir=tmp_path), case


@pytest.mark.parametrize("job", ["inference", "training"])
@pytest.mark.parametrize("stop", [KeyboardInterrupt, SystemExit])
def test_an_interrupted_job_takes_its_work_directory_with_it(tmp_path, monkeypatch, job, stop):
    """Ctrl-C (or SIGTERM, SystemExit) during a simulation removes its new work directory
    (three interrupted runs left three ``ttforge-sim-<pid>-*`` until a later process
    simulated); a failed job keeps its own (its error names the ``sim.log`` there), and
    a ``workdir`` given by the caller is never removed."""
    import numpy as np

    import ttforge.sim.runner as runner
    from ttforge.errors import SimError
    from ttforge.sim.train_runner import run_train

    from tests.support.tiny_builds import SMALL

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    if job == "inference":
        build = runner.SimBuild(config=SMALL, sim="icarus", fault=None, waves=False, build_dir=tmp_path,
                                key="k", build_seconds=0.0, cached=True)

        def start(**kw):
            return runner.run_job(build, [], {"x": np.zeros((1, 2))}, out_count=1, **kw)
    else:
        build, case = _train_job(tmp_path)

        def start(**kw):
            return run_train(build, case, **kw)

    seen = []

    def interrupted(sim, build_dir, module, top, wd, *a, **kw):
        seen.append(wd)
        assert (wd / "job.json").is_file()
        raise stop

    monkeypatch.setattr(runner, "run_testbench", interrupted)
    with pytest.raises(stop):
        start()
    assert seen and list(tmp.iterdir()) == []
    mine = tmp_path / "mine"
    with pytest.raises(stop):
        start(workdir=mine)
    assert (mine / "job.json").is_file()

    def failed(sim, build_dir, module, top, wd, *a, **kw):
        raise SimError(f"icarus simulation failed (exit 1); see {wd / 'sim.log'}")

    monkeypatch.setattr(runner, "run_testbench", failed)
    with pytest.raises(SimError):
        start()
    assert [p.name.startswith(f"ttforge-{'sim' if job == 'inference' else 'train'}-") for p in tmp.iterdir()] == [True]


@pytest.mark.parametrize("stop", [KeyboardInterrupt, OSError])
def test_a_job_directory_whose_marker_was_not_written_is_removed(tmp_path, monkeypatch, stop):
    """A Ctrl-C (or a full disk) between the directory's creation and its marker left an
    unmarked directory no later job removes (only marked ones are: the name is no proof)."""
    import pathlib

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    real = pathlib.Path.write_text

    def write_text(self, *a, **k):
        if self.name == JOB_MARKER:
            raise stop("at the marker")
        return real(self, *a, **k)

    monkeypatch.setattr(pathlib.Path, "write_text", write_text)
    with pytest.raises(stop):
        job_dir("ttforge-sim-")
    assert list(tmp_path.iterdir()) == []


def test_a_training_simulation_s_job_file_names_itself(tmp_path, monkeypatch):
    """``job.json`` of a training simulation on a full ``$TMPDIR``: ``Path.write_text``
    raised ENOSPC naming no file, and the line named nothing (the inference job's named
    its own, ``ttforge.atomic.names_file``)."""
    import errno
    from pathlib import Path

    import ttforge.sim.runner as runner
    from ttforge.sim.train_runner import run_train

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")   # a full disk's write names no file

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    build, case = _train_job(tmp_path)
    real = Path.write_text
    monkeypatch.setattr(Path, "write_text",
                        lambda self, *a, **k: full_disk() if self.name == "job.json" else real(self, *a, **k))
    monkeypatch.setattr(runner, "run_testbench", full_disk)   # never reached
    with pytest.raises(OSError) as info:
        run_train(build, case)
    named = Path(info.value.filename)
    assert info.value.errno == errno.ENOSPC and named.name == "job.json"
    assert named.parent.parent == tmp_path / "tmp" and named.parent.name.startswith("ttforge-train-")
