"""A machine that fails under ``ttforge regress`` (a full disk, an I/O error, a limit
reached, memory exhausted) ends the run as the machine's failure, exit 3, in one line
naming the file and the fix: never an ERROR row with a reproducer and exit 1, a verdict
on the RTL. The writes of the simulation side name their own file when they fail, and a
tool a signal ended is named with what the signal means.

The full disk is simulated by writes that raise ``OSError(ENOSPC)`` as a full disk's
``write`` does (naming no file)."""

from __future__ import annotations

import contextlib
import errno
import json
import types
from pathlib import Path

import numpy as np
import pytest

from ttforge.cli import main
from ttforge.errors import EnvironmentFailure, MachineFailure



def _need(sim: str) -> None:
    from ttforge.sim.runner import simulator_problem

    reason = simulator_problem(sim)
    if reason:
        pytest.skip(reason)


def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")   # a full disk's write names no file


# --------------------------------------------------------------------- the classification
@pytest.mark.parametrize("error, says", [
    (OSError(errno.ENOSPC, "No space left on device", "/t/x"), "/t/x: No space left on device"),
    (OSError(errno.EMFILE, "Too many open files"), "ulimit -n"),
    (OSError(errno.EIO, "Input/output error", "/t/x"), "check that disk"),
    (MemoryError(), "ran out of memory"),
    (EnvironmentFailure("icarus simulation failed (exit 1)"), "icarus simulation failed"),
])
def test_a_machine_failure_of_a_case_stops_it_in_one_line(error, says):
    from ttforge.sim.check import stop_on_machine_failure

    with pytest.raises(MachineFailure, match="seed 4 on icarus could not run") as info:
        stop_on_machine_failure(error, "seed 4 on icarus")
    assert says in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("err, machine", [(errno.ENOSPC, True), (errno.EDQUOT, True), (errno.EACCES, False)])
def test_an_output_the_machine_could_not_write_stops_a_case_as_the_machines(tmp_path, monkeypatch, err, machine):
    """An atomic write's full disk was an ``OutputError`` with exit 3 set on the instance,
    which :func:`~ttforge.boundary.machine_failure` did not count: a case writing through
    ``ttforge.atomic`` on a full disk would have been an ERROR row, a verdict. It is an
    ``OutputFailure`` now, an environment failure; a permission stays the user's."""
    import os

    from ttforge.atomic import atomic_write_bytes
    from ttforge.errors import OutputError, OutputFailure
    from ttforge.sim.check import stop_on_machine_failure

    def refused(src, dst):
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(os, "replace", refused)
    with pytest.raises(OutputError) as info:
        atomic_write_bytes(tmp_path / "out.bin", b"x")
    assert isinstance(info.value, OutputFailure) is machine
    assert info.value.exit_code == (3 if machine else 2)
    if machine:
        with pytest.raises(MachineFailure, match="seed 4 on icarus could not run: cannot write .*out.bin"):
            stop_on_machine_failure(info.value, "seed 4 on icarus")
    else:
        stop_on_machine_failure(info.value, "seed 4 on icarus")   # the case's own error


def test_a_case_whose_output_the_machine_could_not_write_stops_as_the_machines(monkeypatch):
    """``run_case`` passed an ``OutputError`` on as it was: a full disk under a case's
    write ended the run without the case named (and its report of the finished cases)."""
    from ttforge.errors import OutputFailure
    from ttforge.hw import model
    from ttforge.sim.cases import make_case
    from ttforge.sim.check import run_case

    def full(*args, **kwargs):
        raise OutputFailure("cannot write x/y.bin: No space left on device (free space on that disk)")

    monkeypatch.setattr(model, "run_program", full)
    with pytest.raises(MachineFailure, match=r"^seed 3 on icarus could not run: cannot write x/y\.bin"):
        run_case(make_case(3, vectors=1), "icarus")


@pytest.mark.parametrize("error", [ValueError("a bug"), FileNotFoundError(errno.ENOENT, "gone", "/x"),
                                   EnvironmentFailure("the build failed")])
def test_anything_else_stays_the_case_s_own_error(error):
    """What is not the machine's is the case's ERROR row, as before; so is a simulator
    build's own failure (``building``: exit 3 once every case ran)."""
    from ttforge.sim.check import stop_on_machine_failure

    stop_on_machine_failure(error, "seed 4 on icarus", building=isinstance(error, EnvironmentFailure))


# ---------------------------------------------------------------------------------- regress
def test_a_full_tmpdir_ends_regress_in_exit_3_naming_the_file_and_no_verdict(tmp_path, monkeypatch, capsys):
    """``TMPDIR`` on a full disk: the case became ``ERROR: OSError: [Errno 28] No space
    left on device`` (no file named), a ``repro-icarus-seed0/`` was written as for an RTL
    that disagreed, summary.json counted it failed, exit 1."""
    _need("icarus")
    real_savez = np.savez

    def savez(file, *args, **kwargs):
        if Path(file).name == "data.npz":   # the simulation's job data, in $TMPDIR
            _full_disk()
        return real_savez(file, *args, **kwargs)

    monkeypatch.setattr(np, "savez", savez)
    out = tmp_path / "rg"
    assert main(["regress", "--seeds", "2", "--vectors", "2", "--out", str(out)]) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error: seed 0 on icarus could not run: " in err
    assert "data.npz: No space left on device" in err and "free space on that disk" in err
    assert "not of the RTL" in err
    assert not list(out.glob("repro-*"))
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["cases"], summary["failed"], summary["complete"], summary["not_run"]) == (0, 0, False, [0, 1])


def test_a_full_build_cache_ends_regress_in_exit_3_and_stays_a_miss(tmp_path, monkeypatch, capsys):
    """``TTFORGE_SIM_CACHE`` on a full disk: exit 1 as an RTL error; the half-written
    ``ttforge_accel.v`` it leaves has no marker, so the next build makes it again."""
    _need("icarus")
    from ttforge.sim.cases import make_case
    from ttforge.sim.runner import build

    cache = tmp_path / "cache"
    real_write_text = Path.write_text

    def write_text(self, text, *args, **kwargs):
        if self.name == "ttforge_accel.v" and self.parent.parent == cache:
            real_write_text(self, text[:100], *args, **kwargs)   # what fitted on the disk
            _full_disk()
        return real_write_text(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    out = tmp_path / "rg"
    assert main(["regress", "--seeds", "1", "--vectors", "2", "--out", str(out), "--build-root", str(cache)]) == 3
    err = capsys.readouterr().err
    assert "ttforge_accel.v: No space left on device" in err and not list(out.glob("repro-*"))
    monkeypatch.setattr(Path, "write_text", real_write_text)
    config = make_case(0, 2).config
    assert not build(config, "icarus", build_root=cache).cached   # not taken for a build


def test_a_case_that_failed_its_check_before_the_machine_did_keeps_exit_1(tmp_path, monkeypatch, capsys):
    """The hardware's verdict comes first (as before a failed build): exit 1, the failed
    case in summary.json, and the stop said as a note."""
    _need("icarus")
    import ttforge.sim.regress as regress_module
    from ttforge.sim.check import CaseResult

    def run_case(case, sim, **kw):
        if case.seed == 0:
            return CaseResult(seed=0, sim=sim, shape=case.shape, lanes=1, stream_elems=1, steps=1, vectors=2,
                              gaps=0, backpressure=0, result="FAIL", reason="vector 0 differs")
        raise MachineFailure("seed 1 on icarus could not run: /t/data.npz: No space left on device")

    monkeypatch.setattr(regress_module, "run_case", run_case)
    out = tmp_path / "rg"
    assert main(["regress", "--seeds", "3", "--vectors", "2", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "ttforge regress: note: seed 1 on icarus could not run: /t/data.npz: No space left" in err
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["failed"], summary["not_run"]) == (1, [1, 2])


@contextlib.contextmanager
def _no_cluster(spec):
    yield types.SimpleNamespace(nthreads=lambda: {"worker": 1})


@pytest.mark.parametrize("outcome", [
    OSError(errno.ENOSPC, "No space left on device", "/scratch/ttforge-sim-1-a/data.npz"),
    MachineFailure("seed 0 on icarus could not run: /scratch/ttforge-sim-1-a/data.npz: No space left on device"),
])
def test_a_worker_s_full_disk_ends_a_cluster_run_as_the_machine_s(tmp_path, monkeypatch, outcome):
    """On a cluster (``--jobs``), a worker's machine failure was an ERROR row: exit 1."""
    _need("icarus")
    import ttforge.sim.cluster as cluster
    from ttforge.sim.regress import regress

    def run_tasks(client, fn, tasks, done, **kw):
        done(0, outcome)
        raise AssertionError("the run went on after the machine failed")

    monkeypatch.setattr(cluster, "connect", _no_cluster)
    monkeypatch.setattr(cluster, "run_tasks", run_tasks)
    with pytest.raises(MachineFailure) as info:
        regress([0, 1], "icarus", jobs=2, out_dir=tmp_path / "rg")
    text = str(info.value)
    assert text.count("seed 0 on icarus could not run: /scratch/ttforge-sim-1-a/data.npz: No space left") == 1
    assert info.value.report is not None and info.value.report.failed == 0
    assert json.loads((tmp_path / "rg" / "summary.json").read_text())["not_run"] == [0, 1]


# ------------------------------------------------------------------------- regress --train
def test_a_full_disk_under_a_training_case_ends_the_run_as_the_machine_s(tmp_path, monkeypatch, capsys):
    """``regress --train``: the case's error (``res.error``) made it exit 1."""
    import ttforge.sim.train_native as train_native
    from ttforge.sim.train_regress import family_config

    monkeypatch.setattr(train_native, "build_train_native",
                        lambda config, **kw: types.SimpleNamespace(config=config))
    monkeypatch.setattr(train_native, "train_native", _full_disk)
    out = tmp_path / "rg"
    assert main(["regress", "--train", "--seeds", "2", "--steps", "2", "--out", str(out)]) == 3
    err = capsys.readouterr().err
    assert "error: training seed 0 could not run: No space left on device" in err and "not of the RTL" in err
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["failed"], summary["complete"], summary["not_run"]) == (0, False, [0, 1])
    assert family_config(0).lanes == 4   # the fake build's config was the family's


def test_an_engine_that_stops_or_hangs_stays_the_training_case_s_verdict(monkeypatch):
    """The harness's NativeError is what a training fault makes the engine do (stop with
    an error, or never finish the step): the case's error row, exit 1, not the machine's."""
    import ttforge.sim.train_native as train_native
    from ttforge.errors import NativeError
    from ttforge.sim.train_regress import family_config, run_train_case, train_regress_case

    def stuck(*args, **kwargs):
        raise NativeError("the training step did not finish within the cycle limit")

    monkeypatch.setattr(train_native, "train_native", stuck)
    case = train_regress_case(3, 2)
    res = run_train_case(case, types.SimpleNamespace(config=family_config(case.family)))
    assert not res.passed and "did not finish within the cycle limit" in res.error


def test_a_worker_s_full_disk_ends_a_training_cluster_run(monkeypatch):
    import ttforge.sim.cluster as cluster
    from ttforge.sim.train_regress import train_regress

    def run_tasks(client, fn, tasks, done, **kw):
        done(0, OSError(errno.ENOSPC, "No space left on device", "/scratch/x"))

    monkeypatch.setattr(cluster, "connect", _no_cluster)
    monkeypatch.setattr(cluster, "run_tasks", run_tasks)
    with pytest.raises(MachineFailure, match="training seed 3 could not run: /scratch/x: No space left"):
        train_regress([3, 4], 2, jobs=2)


# ------------------------------------------------------------------ writes that name their file
def test_the_native_run_s_writes_name_their_file(tmp_path, monkeypatch):
    """``flow --force sim`` with a full ``$TMPDIR`` said ``fl/sim: No space left on
    device``: the stage's directory, on a disk with space, not image.bin's."""
    from ttforge.sim.native import run_native

    monkeypatch.setattr(Path, "write_bytes", _full_disk)
    build = types.SimpleNamespace(exe="/bin/false", config=None)
    with pytest.raises(OSError) as info:
        run_native(build, b"TTLI", np.zeros((1, 2), dtype=np.int64))
    assert info.value.errno == errno.ENOSPC and Path(info.value.filename).name == "image.bin"


def test_the_native_cache_s_writes_name_their_file_and_leave_nothing(tmp_path, monkeypatch):
    """``$TTFORGE_NATIVE_CACHE`` on a full disk named the flow stage's directory too."""
    from ttforge.sim.native import verilate_cached

    monkeypatch.setattr(Path, "write_bytes", _full_disk)
    with pytest.raises(OSError) as info:
        verilate_cached(tmp_path / "nc", "k1", "exe", {"include/a.cpp": b"int x;\n"}, lambda work: [],
                        cxx="c++", timeout=60, what="a test")
    assert info.value.filename is not None and Path(info.value.filename).name == "a.cpp"
    assert Path(info.value.filename).is_relative_to(tmp_path / "nc")
    assert sorted(p.name for p in (tmp_path / "nc").iterdir()) == ["k1.lock"]


def test_the_native_harness_that_cannot_write_its_outputs_says_so(tmp_path):
    """A full disk under the harness's outputs left report.json truncated: the case was
    ``ERROR: JSONDecodeError`` (exit 1). The harness now says which file and why, exit 4,
    leaving neither output. (A file-size limit with SIGXFSZ ignored makes its writes fail
    as a full disk's do, at a size of our choosing: the outputs take 288 bytes here, the
    report 591.)"""
    _need("verilator-native")
    import resource
    import signal
    import subprocess

    from ttforge.hw.program import compile_program, load_image, load_image_to_bytes
    from ttforge.hw.regmap import RegisterMap
    from ttforge.sim.cases import make_case
    from ttforge.sim.native import build_native, write_vectors

    case = make_case(0, 2)
    nb = build_native(case.config)
    prog = compile_program(case.net, case.config)
    (tmp_path / "image.bin").write_bytes(load_image_to_bytes(load_image(prog, RegisterMap(case.config)),
                                                              case.config))
    write_vectors(tmp_path / "inputs.bin", case.inputs)
    outputs, report = tmp_path / "outputs.bin", tmp_path / "report.json"
    for limit, failed in ((100, outputs), (400, report)):
        def limited(limit=limit):
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

        proc = subprocess.run([str(nb.exe), "--image", str(tmp_path / "image.bin"), "--inputs",
                               str(tmp_path / "inputs.bin"), "--outputs", str(outputs), "--report", str(report)],
                              capture_output=True, text=True, timeout=300, preexec_fn=limited)
        assert proc.returncode == 4, proc.stderr
        assert proc.stderr.strip() == f"ttf_native: cannot write {failed}: File too large"
        assert not outputs.exists() and not report.exists()


# ------------------------------------------------------------------ a tool a signal ended
@pytest.mark.parametrize("log, says", [
    ("File size limit exceeded", "File size limit exceeded (SIGXFSZ: a file grew past the file-size limit; "
                                 "raise it (ulimit -f)"),
    ("%Error: Verilator threw signal 25. Suggest trying --debug --gdbbt\n%Error: Command Failed x",
     "%Error: Verilator threw signal 25. Suggest trying --debug --gdbbt (SIGXFSZ: a file grew past"),
    ("building\nsh: line 1:  4242 Killed                  iverilog -o sim.vvp", "sh: line 1:  4242 Killed"),
    ("x.v:3: error: syntax error", "x.v:3: error: syntax error"),
])
def test_a_failed_build_quotes_the_line_that_says_why_and_what_a_signal_means(log, says):
    """The board's iverilog killed by the file-size limit said only "could not compile the
    board top; see build.log", Verilator under ``ulimit -f`` "threw signal 25"."""
    from ttforge.sim.runner import build_failure_line

    line = build_failure_line(log)
    assert line.startswith(says)
    assert ("SIGKILL: killed, most often by the kernel when memory ran out" in line) == ("Killed" in log)


@pytest.mark.parametrize("code, kind", [(errno.ENOSPC, EnvironmentFailure), (errno.EACCES, "ConfigError")])
def test_a_build_cache_the_machine_cannot_create_is_the_machines(tmp_path, monkeypatch, code, kind):
    """A build cache whose directory a full disk (or a limit) cannot hold is the machine's
    failure, exit 3; only a path the user can fix (permissions, a file in the way) is the
    configuration's, exit 2 (every OSError was "cannot be created; give a writable
    directory", exit 2)."""
    from ttforge.errors import ConfigError
    from ttforge.sim.runner import build_root_dir

    def refuse(self, *a, **k):
        raise OSError(code, "refused", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    want = ConfigError if kind == "ConfigError" else kind
    with pytest.raises(want) as e:
        build_root_dir(tmp_path / "cache", sim="icarus")
    assert (type(e.value) is ConfigError) == (kind == "ConfigError")
