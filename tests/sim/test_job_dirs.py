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
