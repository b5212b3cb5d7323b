"""``ttforge regress`` on Dask (``ttforge.sim.cluster``): the dependency stays out of the
imports until a run is parallel; a local cluster gives the verdicts of a run in one
process; a killed worker's case runs again elsewhere and is reported once; a scheduler
that goes away ends the run in one line; bad and unreachable addresses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from ttforge.cli import main
from ttforge.errors import ConfigError, SchedulerLost, one_line
from ttforge.sim.cluster import ClusterSpec, connect, probe, run_tasks
from ttforge.sim.regress import regress

from ttforge.hw.config import AccelConfig

from tests.support.sims import _available
from tests.support.signals import as_from_a_terminal

#: the standard engine of tests/sim/test_regress.py (one build for every case)
STANDARD = AccelConfig(lanes=4, act_bits=8, core_bits=8, inter_bits=16, acc_bits=32,
                       bias_bits=32, core_depth=1024, bias_depth=128, buf_depth=1024,
                       desc_depth=16, stream_elems=2)


def _need(sim):
    reason = _available(sim)
    if reason:
        pytest.skip(reason)


def test_importing_the_simulation_side_imports_no_dask():
    code = ("import sys, ttforge.sim, ttforge.sim.regress, ttforge.sim.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_sibling_sees_an_import_of_dask():
    code = ("import sys, ttforge.sim, distributed; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed'))[:1])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() != "[]"


# ------------------------------------------------------------------------ verdicts on a cluster


#: seeds 2 and 3 on the standard engine with ties rounded the wrong way: 2 passes (no tie
#: in its 4 vectors), 3 fails; one run holds a pass, a FAIL and a reproducer
SEEDS, VECTORS, FAULT = [2, 3], 4, "round_off_by_one"


def _verdict(r) -> tuple:
    div = dict(r.divergence or {})
    div.pop("traceback", None)
    return (r.seed, r.result, r.reason, r.shape, r.cycles, r.sim_cycles, r.mismatched_vectors,
            json.dumps(div, sort_keys=True, default=str), json.dumps(r.config, sort_keys=True))


def test_a_local_cluster_gives_the_verdicts_of_a_run_in_this_process(tmp_path):
    """The same seeds in this process and as Dask tasks on a local cluster of 2 worker
    processes: the same verdicts, cycles and divergences, one row per seed; the failing
    case's reproducer comes back from its worker whole, its replay command naming where it landed."""
    _need("icarus")
    here = regress(SEEDS, "icarus", vectors=VECTORS, out_dir=tmp_path / "here", fault=FAULT,
                   config=STANDARD)
    seen = []
    there = regress(SEEDS, "icarus", vectors=VECTORS, out_dir=tmp_path / "there", fault=FAULT,
                    config=STANDARD, cluster="local", jobs=2, progress=seen.append)
    assert [r.result for r in here.results] == ["pass", "FAIL"]   # the run can fail
    assert [_verdict(r) for r in there.results] == [_verdict(r) for r in here.results]
    assert sorted(r.seed for r in seen) == SEEDS                   # each once, as it finished
    summary = json.loads((tmp_path / "there" / "summary.json").read_text())
    assert summary["complete"] and summary["cluster"]["workers"] == 2
    assert sorted(summary["cluster"]["ran_on"]) == ["2", "3"]
    suite = ET.parse(tmp_path / "there" / "junit.xml").getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("2", "1", "0")
    d = tmp_path / "there" / f"repro-icarus-{FAULT}-seed3"
    assert there.results[1].reproducer == str(d)
    for f in ("case.json", "artifact.ttfa", "inputs.npy", "expected.npy", "got.npy", "waves.fst"):
        assert (d / f).is_file(), f
    assert json.loads((d / "case.json").read_text())["replay"] == "ttforge regress --replay ."   # run in d
    h = tmp_path / "here" / f"repro-icarus-{FAULT}-seed3"
    for f in ("got.npy", "inputs.npy"):
        assert np.array_equal(np.load(d / f), np.load(h / f)), f
    assert (d / "divergence.txt").read_text() == (h / "divergence.txt").read_text()


def test_a_local_cluster_s_scratch_left_by_a_killed_run_goes_with_the_next(tmp_path, monkeypatch):
    """The local cluster's scratch directory is a job directory: a run killed before it
    could remove it (SIGKILL) leaves ``ttforge-dask-<pid>-*``, which the next local
    cluster removes; its own is removed when it closes. The scheduler's scratch is in it
    too: nothing else is made in ``$TMPDIR`` (the scheduler's ``dask-scratch-space/``
    with its two lock files was left by every run)."""
    import subprocess
    import sys
    import tempfile

    from ttforge.atomic import JOB_MARKER
    from ttforge.sim.cluster import ClusterSpec, connect

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                           text=True, check=True).stdout.strip()
    left = tmp_path / f"ttforge-dask-{ended}-x"
    left.mkdir()
    (left / JOB_MARKER).write_text("")
    with connect(ClusterSpec.parse("local", 1)):
        assert not left.exists()
        (own,) = tmp_path.glob(f"ttforge-dask-{os.getpid()}-*")
        assert (own / JOB_MARKER).is_file()
    assert not own.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("text,ok", [
    (None, True), ("local", True), ("tcp://127.0.0.1:8786", True), ("tcp://[::1]:8786", True), ("tcp://", False),
    ("http://host:1", False), ("/nonexistent/scheduler.json", False),
    # Dask's own errors for these came late: an internal AssertionError (exit 70), a 60 s
    # wait and a traceback from its half-made client at exit
    ("tcp://[::1", False), ("tcp://host:99999", False), ("tcp://host:port", False), ("tcp://:8786", False),
    ("/etc/passwd", False),
    # passed the first check, then Dask's int() of the port, or its security settings,
    # failed after 60 s (exit 70)
    ("tcp://127.0.0.1:1?x=y", False), ("tcp://user:pw@127.0.0.1:1", False), ("tcp://127.0.0.1:1#f", False),
    ("tcp://ho st:1", False), ("inproc://x", False), ("ucx://x", False), ("tls://127.0.0.1:1", False),
    ("tcp://sched.example.com:8786", True), ("tcp://[fe80::1%eth0]:1", True), ("ws://127.0.0.1:1", True),
])
def test_cluster_addresses(text, ok):
    if ok:
        spec = ClusterSpec.parse(text, 3)
        assert spec.is_local == (text in (None, "local"))
    else:
        with pytest.raises(ConfigError, match="--cluster"):
            ClusterSpec.parse(text)


@pytest.mark.parametrize("content,says", [
    ('{"address": "tcp://[::1"}', "its address"), ('{"address": 7}', "no scheduler address"),
    ("[1, 2]", "no scheduler address"), ("x" * 100, "JSONDecodeError"),
])
def test_a_scheduler_file_is_checked_before_dask_reads_it(tmp_path, content, says):
    f = tmp_path / "scheduler.json"
    f.write_text(content)
    with pytest.raises(ConfigError, match="not a (scheduler address|Dask scheduler file).*") as e:
        ClusterSpec.parse(str(f))
    assert says in str(e.value) and "\n" not in str(e.value)
    f.write_text('{"address": "tcp://127.0.0.1:8786", "type": "Scheduler"}')
    assert ClusterSpec.parse(str(f)).is_file


@pytest.mark.parametrize("make,kind", [
    (lambda d: os.mkfifo(d / "fifo") or d / "fifo", "a FIFO"),
    (lambda d: Path("/dev/zero"), "a character device"),
    (lambda d: d, "a directory"),
])
def test_a_cluster_path_that_exists_but_is_no_file_is_named_for_what_it_is(tmp_path, make, kind):
    # it exists: "neither ... nor an existing scheduler file" sent the user looking for it
    with pytest.raises(ConfigError) as e:
        ClusterSpec.parse(str(make(tmp_path)))
    assert f"is {kind}, not a scheduler file" in str(e.value) and "existing" not in str(e.value)


@pytest.mark.parametrize("argv,flag", [
    (["--cluster", "/nonexistent/scheduler.json"], "--cluster"),
    (["--cluster", "/etc/passwd"], "--cluster"),
    (["--cluster", "tcp://[::1"], "--cluster"),
    (["--cluster", "tcp://127.0.0.1:1", "--jobs", "2"], "--jobs"),
    (["--cluster", "--replay", "/nonexistent"], "--replay"),
])
def test_bad_cluster_arguments_are_one_line_and_exit_2(argv, flag, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["regress", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag in err


def test_an_unreachable_scheduler_is_one_line_and_exit_3():
    import socket

    from ttforge.errors import ClusterError, one_line
    from ttforge.sim.cluster import connect

    with socket.socket() as s:       # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ClusterError, match="cannot reach the scheduler") as e:
        with connect(ClusterSpec(f"tcp://127.0.0.1:{port}", connect_timeout=1.0)):
            pass
    assert e.value.exit_code == 3 and one_line(str(e.value)) == str(e.value)


class _NotAScheduler:
    """A TCP server on 127.0.0.1 that is not a Dask scheduler: it closes each connection
    (``close``), answers as an HTTP server (``http``), never answers (``silent``) or
    sends a handshake on its first connection only (``handshake-once``)."""

    def __init__(self, mode: str):
        import socket

        self.mode, self.conns = mode, []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.mode == "http":
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n<html></html>")
            if self.mode == "handshake-once":   # passes ttforge's probe, then Dask meets silence
                import struct

                if not self.conns:
                    conn.sendall(struct.pack("<Q", 16) + b"x" * 16)
                self.conns.append(conn)
            elif self.mode == "silent":
                self.conns.append(conn)   # held open, never answered
            else:
                conn.close()

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.mark.parametrize("scheme", ["tcp", "ws"])
@pytest.mark.parametrize("mode", ["close", "http", "silent", "handshake-once"])
def test_a_server_that_is_not_a_scheduler_is_one_line_within_the_connect_timeout(scheme, mode):
    """Dask read an HTTP server's first 8 bytes as a 3.5 EB message (MemoryError, "ran
    out of memory"), waited without bound on a silent server, and its half-made client
    then held the process 60 s on exit with a traceback."""
    from ttforge.errors import ClusterError, one_line
    from ttforge.sim.cluster import connect

    server = _NotAScheduler(mode)
    try:
        t0 = time.monotonic()
        with pytest.raises(ClusterError) as e:
            with connect(ClusterSpec(f"{scheme}://127.0.0.1:{server.port}", connect_timeout=2.0)):
                pass
        assert time.monotonic() - t0 < 15
        assert e.value.exit_code == 3 and one_line(str(e.value)) == str(e.value)
        assert "check the address" in str(e.value)
    finally:
        server.close()


def test_the_command_ends_at_once_after_a_server_that_is_not_a_scheduler(tmp_path):
    """Through a real process: one line, exit 3, and no 60 s wait for Dask's half-made
    client on the way out."""
    server = _NotAScheduler("http")
    try:
        t0 = time.monotonic()
        p = subprocess.run([sys.executable, "-m", "ttforge.cli", "regress", "--cluster",
                            f"ws://127.0.0.1:{server.port}", "--seeds", "1", "--out", str(tmp_path / "o")],
                           capture_output=True, text=True, timeout=50, cwd=tmp_path)
        elapsed = time.monotonic() - t0
    finally:
        server.close()
    assert p.returncode == 3 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "not a Dask scheduler" in p.stderr and elapsed < 30


# ------------------------------------------------------------------------ faults


def _kill_first_taker(markers: Path, killed: list, timeout: float = 60.0) -> threading.Thread:
    """A thread that SIGKILLs the worker process that took the first task (the task
    names itself ``<index>-<pid>`` in ``markers`` when it starts)."""
    def run():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = sorted(markers.iterdir())
            if found:
                index, pid = found[0].name.split("-")
                os.kill(int(pid), signal.SIGKILL)
                killed.append((int(index), int(pid)))
                return
            time.sleep(0.02)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_a_killed_worker_s_task_runs_again_elsewhere_and_is_reported_once(tmp_path):
    """SIGKILL of the worker process in the middle of a task: the scheduler runs the task
    again on a live worker; every task's outcome arrives exactly once, none is an error."""
    markers = tmp_path / "m"
    markers.mkdir()
    outcomes: list = []
    killed: list = []
    with connect(ClusterSpec(None, 2)) as client:
        killer = _kill_first_taker(markers, killed)
        run_tasks(client, probe, [(i, 1.0, str(markers)) for i in range(4)],
                  lambda i, out: outcomes.append((i, out)))
        killer.join()
    assert killed, "no worker was killed"
    index, pid = killed[0]
    assert sorted(i for i, _ in outcomes) == [0, 1, 2, 3]            # once each
    assert not any(isinstance(o, BaseException) for _, o in outcomes)
    ran = sorted(int(m.name.split("-")[1]) for m in markers.iterdir() if m.name.startswith(f"{index}-"))
    assert len(ran) == 2 and pid in ran                                # started twice ...
    final = dict(outcomes)[index][1]
    assert not final.endswith(f":{pid}")                               # ... finished elsewhere


def test_a_task_that_keeps_killing_workers_comes_back_as_killed_worker(tmp_path):
    """Past ``distributed.scheduler.allowed-failures`` (here 0) a task whose worker dies is
    not run again: its outcome is ``KilledWorker`` (an ERROR row in ``ttforge regress``), and
    the run goes on to the others (a task already queued on the dead worker counts the
    death too)."""
    import dask
    from distributed import KilledWorker

    markers = tmp_path / "m"
    markers.mkdir()
    outcomes: dict = {}
    killed: list = []
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        with connect(ClusterSpec(None, 2)) as client:
            killer = _kill_first_taker(markers, killed)
            run_tasks(client, probe, [(i, 1.0, str(markers)) for i in range(3)],
                      lambda i, out: outcomes.__setitem__(i, out))
            killer.join()
    index = killed[0][0]
    assert sorted(outcomes) == [0, 1, 2]
    assert isinstance(outcomes[index], KilledWorker)
    assert all(isinstance(o, (tuple, KilledWorker)) for o in outcomes.values())
    assert any(isinstance(o, tuple) for o in outcomes.values())


def _dask(*args: str, cwd: Path) -> subprocess.Popen:
    exe = Path(sys.executable).parent / "dask"
    return subprocess.Popen([str(exe), *args], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


class _Cluster:
    """A real scheduler and two workers, each its own process in its own directory."""

    def __init__(self, root: Path):
        self.file = root / "scheduler.json"
        self.procs = []
        (root / "s").mkdir()
        self.scheduler = _dask("scheduler", "--scheduler-file", str(self.file), "--host", "127.0.0.1",
                               "--port", "0", "--no-dashboard", cwd=root / "s")
        self.procs.append(self.scheduler)
        deadline = time.monotonic() + 60
        while not self.file.is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        for k in range(2):
            d = root / f"w{k}"
            d.mkdir()
            self.procs.append(_dask("worker", "--scheduler-file", str(self.file), "--nthreads", "1",
                                    "--nworkers", "1", "--no-dashboard", "--local-directory", str(d),
                                    cwd=d))

    def close(self):
        for p in self.procs:   # only the processes this test started, by their own ids
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=30)


@pytest.fixture
def processes_cluster(tmp_path):
    c = _Cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()


def test_a_scheduler_that_goes_away_ends_the_run_in_one_line_keeping_what_finished(processes_cluster):
    """A scheduler and two workers in separate processes and directories; the scheduler is
    killed after the first outcome: the run stops with SchedulerLost (one line, exit 3),
    and the outcome that had arrived was handed on first."""
    c = processes_cluster
    outcomes: list = []

    def on_done(i, out):
        outcomes.append((i, out))
        if c.scheduler.poll() is None:
            os.killpg(c.scheduler.pid, signal.SIGKILL)

    with connect(ClusterSpec(str(c.file), connect_timeout=30)) as client:
        client.wait_for_workers(2, timeout=60)
        start = time.monotonic()
        with pytest.raises(SchedulerLost) as e:
            run_tasks(client, probe, [(i, 0.2 + 2 * i, None) for i in range(4)], on_done)
        assert time.monotonic() - start < 30
    assert [i for i, _ in outcomes] == [0] and e.value.done == 1
    assert e.value.exit_code == 3 and one_line(str(e.value)) == str(e.value)


@pytest.mark.slow
def test_regress_on_a_scheduler_in_other_processes_and_its_loss(processes_cluster, tmp_path, capsys,
                                                               monkeypatch):
    """``ttforge regress --cluster SCHEDULER_FILE`` on a scheduler and two workers in their
    own processes and directories: exit 0 and every seed once. Then the scheduler is killed
    after the first case of a second run: SchedulerLost (exit 3, one line), and junit.xml
    and summary.json keep the finished case and list the others as not run."""
    _need("icarus")
    c = processes_cluster
    cfg = tmp_path / "engine.json"
    cfg.write_text(STANDARD.to_json())
    monkeypatch.chdir(tmp_path)
    assert main(["regress", "--cluster", str(c.file), "--seeds", "2", "--seed-start", "2", "--vectors", "4",
                 "--config", str(cfg), "--out", "ok"]) == 0
    s = json.loads((tmp_path / "ok" / "summary.json").read_text())
    assert [r["seed"] for r in s["results"]] == [2, 3] and s["complete"]

    def kill_scheduler(_res):
        if c.scheduler.poll() is None:
            os.killpg(c.scheduler.pid, signal.SIGKILL)

    with pytest.raises(SchedulerLost) as e:
        regress(range(4, 12), "icarus", vectors=4, config=STANDARD, out_dir=tmp_path / "lost",
                cluster=str(c.file), progress=kill_scheduler)
    assert e.value.exit_code == 3 and one_line(str(e.value)) == str(e.value)
    s = json.loads((tmp_path / "lost" / "summary.json").read_text())
    assert not s["complete"] and len(s["results"]) >= 1
    assert sorted(s["not_run"] + [r["seed"] for r in s["results"]]) == list(range(4, 12))
    suite = ET.parse(tmp_path / "lost" / "junit.xml").getroot().find("testsuite")
    assert suite.get("skipped") == str(len(s["not_run"])) and suite.get("tests") == "8"


# ------------------------------------------------------------------------ interrupts of a local cluster

#: A command's use of a local cluster (``ttforge regress --jobs 2`` or ``sweep --jobs 2``
#: without the work): prints ``starting``, starts it (one worker) and prints ``up``, then
#: waits on a task that runs a program (``child.pid`` names it); an interrupt (SIGTERM as
#: ttforge.boundary raises it) prints one line.
_INTERRUPTED_RUN = """
import subprocess, sys, time
from ttforge.boundary import signals_interrupt
from ttforge.sim.cluster import ClusterSpec, connect, run_tasks

def simulate(pid_file):
    # a simulator of a case: a program of the worker's, in the command's process group
    child = subprocess.Popen(["sleep", "60"])
    open(pid_file, "w").write(str(child.pid))
    return child.wait()

def main():
    import distributed  # noqa: F401 - imported: "starting" is the cluster's start
    with signals_interrupt():
        try:
            print("starting", flush=True)
            with connect(ClusterSpec(None, 1)) as client:
                print("up", flush=True)
                run_tasks(client, simulate, ["child.pid"], lambda i, o: None)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr, flush=True)
            return 130
    return 0

if __name__ == "__main__":
    sys.exit(main())
"""


def _interrupt_local_cluster(tmp_path, sig, when: str, delay: float = 0.0):
    """Run :data:`_INTERRUPTED_RUN` in a session of its own (its ``$TMPDIR`` in
    ``tmp_path``), send ``sig`` to its whole process group (as a terminal's Ctrl-C does)
    ``delay`` s after it printed ``when``; returns ``(exit code, stderr)``."""
    script = tmp_path / "run.py"
    script.write_text(_INTERRUPTED_RUN)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         cwd=tmp_path, env={**os.environ, "TMPDIR": str(tmp)}, start_new_session=True,
                         preexec_fn=as_from_a_terminal)
    try:
        for line in p.stdout:
            if line.decode().strip() == when:
                break
        time.sleep(delay)
        os.killpg(p.pid, sig)
        # well within the task's 60 s: a program that did not get the Ctrl-C held it that long
        _, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    return p.returncode, err.decode(), tmp


def _gone(pid: int, within: float = 5.0) -> bool:
    """Whether process ``pid`` has ended (or is a zombie) within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except (OSError, IndexError):
            return True
        time.sleep(0.1)
    return False


def test_ctrl_c_at_the_terminal_reaches_the_command_not_its_local_workers(tmp_path):
    """Ctrl-C sent to the process group (a terminal's) while a local cluster runs a
    task: the command ends in its own one line, the cluster closed; each worker process
    printed a 30-line KeyboardInterrupt traceback ("Process Dask Worker process (from
    Nanny)") before it. The program the task ran (a simulator) still gets the Ctrl-C:
    it does not outlive the command. Nothing of the cluster stays in $TMPDIR."""
    code, err, tmp = _interrupt_local_cluster(tmp_path, signal.SIGINT, "up", 1.5)
    assert (code, err.strip()) == (130, "interrupted"), err
    assert _gone(int((tmp_path / "child.pid").read_text()))
    assert sorted(p.name for p in tmp.iterdir()) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_while_the_local_cluster_starts_ends_the_command_quietly(tmp_path, sig):
    """SIGINT or SIGTERM while the local cluster starts: it is started whole, then closed,
    and the command ends in its one line (it printed "Exception ignored in atexit callback
    ... AssertionError: Status.init", "Nanny failed to start" and the workers' tracebacks,
    and could leave its scratch directory without its marker, never removed)."""
    code, err, tmp = _interrupt_local_cluster(tmp_path, sig, "starting", 0.3)
    assert (code, err.strip()) == (130, "interrupted"), err
    assert sorted(p.name for p in tmp.iterdir()) == []


def test_the_connection_alarm_gives_the_hosts_timer_back():
    """The alarm around a connection to a scheduler put the host's SIGALRM handler back
    but cancelled its ITIMER_REAL: a host's alarm never rang after regress(cluster=...).
    The timer comes back with what was left of it."""
    from ttforge.sim.cluster import _alarm

    rang = []

    def host(signum, frame):
        rang.append(signum)

    old = signal.signal(signal.SIGALRM, host)
    try:
        signal.setitimer(signal.ITIMER_REAL, 30)
        with _alarm(5):
            time.sleep(0.2)
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 29 < left <= 29.81 and signal.getsignal(signal.SIGALRM) is host
        signal.setitimer(signal.ITIMER_REAL, 0.1)   # one that fell due meanwhile rings after
        with _alarm(5):
            time.sleep(0.3)
        time.sleep(0.05)
        assert rang == [signal.SIGALRM]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


_TRACES = r"""
import json, multiprocessing, os
os.environ["PYTHONHASHSEED"] = "0"   # which Dask replaces
for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MALLOC_TRIM_THRESHOLD_",
          "__DASK_PARENT_PID"):
    os.environ.pop(k, None)
from ttforge.sim.cluster import ClusterSpec, connect

if __name__ == "__main__":
    before = dict(os.environ)
    with connect(ClusterSpec(None, 1)) as client:
        inside = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "PYTHONHASHSEED")}
        os.environ["MKL_NUM_THREADS"] = "5"   # the host's own change meanwhile stays
    after = dict(os.environ)
    print(json.dumps({"inside": inside, "method": multiprocessing.get_start_method(allow_none=True),
                      "changed": {k: [before.get(k), after.get(k)] for k in set(before) | set(after)
                                  if before.get(k) != after.get(k)}}))
"""


def test_a_local_cluster_leaves_no_environment_or_start_method_behind(tmp_path):
    """regress(jobs=2) left Dask's environment for its workers in the host process
    (OMP_NUM_THREADS=1 and the other thread counts, PYTHONHASHSEED, MALLOC_TRIM_THRESHOLD_,
    __DASK_PARENT_PID) and the multiprocessing start method fixed to 'fork'. They are put
    back when the cluster closes; the host's own change meanwhile stays."""
    script = tmp_path / "traces.py"
    script.write_text(_TRACES)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["inside"] == {"OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "6640"}   # Dask's, in the run
    assert seen["changed"] == {"MKL_NUM_THREADS": [None, "5"]}
    assert seen["method"] is None


def test_a_script_without_a_main_guard_is_told_to_add_one(tmp_path):
    """A script calling regress(jobs=2) with no `if __name__ == "__main__":` got "did not
    start (Nanny failed to start.); free memory or processes, or lower --jobs" and a
    traceback from each worker process (which ran the script again, starting a cluster
    again). The parent names the guard; each worker says one line."""
    script = tmp_path / "noguard.py"
    script.write_text("from ttforge.sim.cluster import ClusterSpec, connect\n"
                      "with connect(ClusterSpec(None, 1)):\n    pass\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("ttforge.errors.ClusterError: the local Dask cluster of 1 workers (--jobs) did not "
                           "start") and f"the script {script} starts it outside `if __name__ == \"__main__\":`" in last
    assert out.stderr.count("Traceback") == 1, out.stderr   # the parent's own, not one per worker
