"""One run at a time into an output or work directory (``ttforge.atomic.output_lock``,
``claim_work_dir``): a new parent, a link, a refused run's cleanup and ``--keep``
(docs/hardening.md)."""

from __future__ import annotations

import fcntl
import os

import pytest

from ttforge.atomic import WORK_MARKER, claim_work_dir, command_inputs, output_lock
from ttforge.cli import main
from ttforge.errors import OutputError

BUSY = "is being written by another ttforge run"


def _other_run_holds(directory) -> int:
    """Hold ``directory``'s lock as another process's run would (a descriptor of its own:
    ``flock`` locks conflict between open files, as between processes)."""
    fd = os.open(directory.parent / f".{directory.name}.ttforge-lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def test_an_output_whose_parent_is_new_is_held_and_the_parent_taken_back(tmp_path):
    """``--out new/run`` with ``new/`` missing (every default output in a fresh
    directory): nothing was held, and two trains both exited 0 with one seed's
    checkpoint beside the other's metrics. Now held; the parent it made goes with it."""
    run = tmp_path / "new" / "deeper" / "run"
    with output_lock(run):
        assert (tmp_path / "new" / "deeper" / ".run.ttforge-lock").is_file()
        with pytest.raises(OutputError, match=BUSY):
            with output_lock(run):
                pytest.fail("two runs hold new/deeper/run")
    assert os.listdir(tmp_path) == []   # nothing written: the parents it made are gone
    with output_lock(run):
        run.mkdir()
        (run / "metrics.json").write_text("{}")
    assert os.listdir(tmp_path / "new" / "deeper") == ["run"]   # a run's output stays


def test_an_output_named_through_a_link_shares_its_target_s_lock(tmp_path):
    """``--out D`` and ``--out L`` (``L -> D``) took two locks and both wrote ``D``."""
    (tmp_path / "D").mkdir()
    (tmp_path / "L").symlink_to("D")
    with output_lock(tmp_path / "D"):
        with pytest.raises(OutputError, match=BUSY):
            with output_lock(tmp_path / "L"):
                pytest.fail("two runs hold D")
    with output_lock(tmp_path / "L"):
        with pytest.raises(OutputError, match=BUSY):
            with output_lock(tmp_path / "D"):
                pytest.fail("two runs hold D")
    assert sorted(os.listdir(tmp_path)) == ["D", "L"]


def test_a_failed_run_takes_back_its_new_output_but_not_another_s(tmp_path):
    """A run that fails in the block takes back the output it made while it holds only
    its claim; an output it found is left."""
    out = tmp_path / "p" / "out"
    with pytest.raises(RuntimeError):
        with output_lock(out):
            claim_work_dir(out, "--out")
            raise RuntimeError("the scheduler is not reachable")
    assert os.listdir(tmp_path) == []
    out.mkdir(parents=True)
    with pytest.raises(RuntimeError):
        with output_lock(out):
            raise RuntimeError("failed")
    assert out.is_dir()


def test_a_regress_refused_by_the_lock_leaves_the_running_run_s_new_out(tmp_path, monkeypatch, capsys):
    """Two ``regress --out R`` started together, R new: the second, refused, took back
    the "directories it made" (R, made by the first meanwhile, holding its claim), and
    the first wrote its results into no claimed directory."""
    from ttforge.sim import cli as sim_cli

    out = tmp_path / "R"
    real = sim_cli.output_lock

    def first_run_made_it(path, flag):
        out.mkdir(exist_ok=True)   # the first run claims R just before the second's lock
        (out / WORK_MARKER).write_text("claimed\n")
        return real(path, flag)

    monkeypatch.setattr(sim_cli, "output_lock", first_run_made_it)
    with output_lock(out):   # the first run
        assert main(["regress", "--seeds", "1", "--vectors", "1", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and BUSY in err, err
        assert (out / WORK_MARKER).is_file()


def test_a_sweep_refused_by_the_lock_leaves_the_running_sweep_s_new_out(tmp_path, monkeypatch):
    """``sweep`` made ``--out`` before its lock: refused, it took back the directory the
    running sweep had just made."""
    from ttforge.flow import sweep

    out = tmp_path / "S"
    real = sweep.output_lock

    def first_run_made_it(path, flag):
        out.mkdir(exist_ok=True)
        return real(path, flag)

    monkeypatch.setattr(sweep, "output_lock", first_run_made_it)
    with output_lock(out):
        with pytest.raises(OutputError, match=BUSY):
            sweep.run_sweep(None, out)
        assert out.is_dir()


def test_a_claimed_work_dir_is_held_until_the_command_ends(tmp_path):
    """Two ``build --keep K`` at once both wrote ``K/build/``: a lanes-1 output held the
    lanes-2 bitstream. A claim is held for the command; another run's is one line."""
    keep = tmp_path / "K"
    with command_inputs():
        assert claim_work_dir(keep) == keep
        assert claim_work_dir(keep) == keep   # the same command again (report, per device)
        with output_lock(keep.parent / "other"):
            pass
        assert (tmp_path / ".K.ttforge-lock").is_file()
        fd = os.open(tmp_path / ".K.ttforge-lock", os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)   # as another process
        os.close(fd)
    assert sorted(os.listdir(tmp_path)) == ["K"]   # released, its lock file gone
    fd = _other_run_holds(keep)
    try:
        with command_inputs():
            with pytest.raises(OutputError, match=f"--keep .*K {BUSY}"):
                claim_work_dir(keep)
    finally:
        os.close(fd)
    fd = _other_run_holds(tmp_path / "K2")
    try:
        with pytest.raises(OutputError, match=BUSY):
            claim_work_dir(tmp_path / "K2")
        assert not (tmp_path / "K2").exists()   # refused before it made K2
    finally:
        os.close(fd)


def test_a_claim_inside_a_regress_run_shares_the_run_s_lock(tmp_path):
    """``regress --out R`` claims R under its own output_lock: not a second run."""
    out = tmp_path / "R"
    with command_inputs(), output_lock(out, "--out"):
        assert claim_work_dir(out, "--out") == out
    assert os.listdir(tmp_path) == ["R"]


def test_report_keep_held_by_another_run_is_one_line(tmp_path, capsys):
    keep = tmp_path / "K"
    fd = _other_run_holds(keep)
    try:
        assert main(["report", "--device", "ice40up5k", "--keep", str(keep)]) == 2
    finally:
        os.close(fd)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and BUSY in err and "--keep" in err, err
    assert not keep.exists()


def _parent_takes_no_file(monkeypatch, parent) -> None:
    """No new file in ``parent`` (a read-only parent, a volume's root-owned mount point;
    ``chattr +i`` for root): opening one there fails as the kernel's ``EPERM``."""
    real_open = os.open

    def fake_open(path, flags, *args, **kwargs):
        if flags & os.O_CREAT and os.path.dirname(os.path.abspath(path)) == str(parent):
            raise PermissionError(1, "Operation not permitted", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)


def test_a_writable_directory_in_a_read_only_parent_is_held_inside_it(tmp_path, monkeypatch):
    """``cd ro/proj; train --out .`` (and ``--out L`` of a link to a mounted volume,
    ``report --keep .``) was refused as "cannot write ." after the lock moved beside the
    directory: the lock is now inside it, where every run into it meets."""
    proj = tmp_path / "proj"
    proj.mkdir()
    _parent_takes_no_file(monkeypatch, tmp_path)
    monkeypatch.chdir(proj)
    with output_lock(".", "--out"):
        assert os.listdir(proj) == [".ttforge-lock"]
        (proj / "metrics.json").write_text("{}\n")
    assert os.listdir(proj) == ["metrics.json"]   # the lock went with the run
    (proj / "metrics.json").unlink()
    with command_inputs():   # an empty directory's claim passes over its own lock
        assert claim_work_dir(".", "--keep") == type(proj)(".")
    assert os.listdir(proj) == [WORK_MARKER]
    # another run holding the lock inside is refused, through a link too
    (tmp_path / "link").symlink_to(proj)
    fd = os.open(proj / ".ttforge-lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(OutputError, match=BUSY):
            with output_lock(tmp_path / "link", "--out"):
                pass
    finally:
        os.close(fd)


def test_a_lock_that_cannot_be_made_names_the_parent(tmp_path, monkeypatch):
    _parent_takes_no_file(monkeypatch, tmp_path)
    with pytest.raises(OutputError) as e:
        with output_lock(tmp_path / "new", "--out"):
            pass
    assert f"cannot create its lock file in {tmp_path} (Operation not permitted)" in str(e.value)
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("claim", [False, True])
def test_a_missing_parent_through_a_dangling_link_is_refused(tmp_path, claim):
    """``--out L/run`` with ``L -> nowhere/deep`` made the link's target (for a drive
    not mounted, on the disk under its mount point) and ran there."""
    (tmp_path / "L").symlink_to(tmp_path / "nowhere" / "deep")
    with pytest.raises(OutputError, match="L, a part of its path, is a symbolic link to .*which does not "
                                          "exist; point the link at an existing directory"):
        if claim:
            with command_inputs():
                claim_work_dir(tmp_path / "L" / "run", "--keep")
        else:
            with output_lock(tmp_path / "L" / "run", "--out"):
                pass
    assert not (tmp_path / "nowhere").exists()


def test_an_api_call_s_claim_ends_with_the_call(tmp_path, monkeypatch):
    """``report(..., keep=K)`` / ``build(..., keep=K)`` from Python (a notebook) held K
    until the interpreter exited: a terminal's ``report --keep K`` was refused as "being
    written by another ttforge run" long after the call had returned."""
    import ttforge.firmware.build as fbuild
    from ttforge.hw.config import AccelConfig
    from ttforge.hw.report import report

    monkeypatch.chdir(tmp_path)
    with pytest.raises(KeyError):   # an unknown device: after the claim
        report(AccelConfig(), ["no-such-device"], keep="K")
    assert sorted(os.listdir(tmp_path)) == ["K"]

    def after_the_claim(*_a):
        assert (tmp_path / ".B.ttforge-lock").is_file()
        raise RuntimeError("after the claim")

    monkeypatch.setattr(fbuild, "toolchain_env", lambda family: {})
    monkeypatch.setattr(fbuild, "board_config", lambda *a: (AccelConfig(), None))
    monkeypatch.setattr(fbuild, "memory_misfit", lambda *a: None)
    monkeypatch.setattr(fbuild, "toolchain_script", after_the_claim)
    with pytest.raises(RuntimeError, match="after the claim"):
        fbuild.build("icebreaker", "out", keep="B")
    assert sorted(os.listdir(tmp_path)) == ["B", "K"]
