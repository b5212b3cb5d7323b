"""``ttforge.atomic``: a write is complete or absent, never half-done, never a stray temporary."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from ttforge.atomic import (atomic_dir, atomic_path, atomic_write_bytes, atomic_write_text,
                            check_output_dir, check_output_file, write_files_atomically)
from ttforge.errors import OutputError, TTForgeError


class Boom(Exception):
    pass


def test_write_bytes_and_text_replace_the_target(tmp_path):
    p = tmp_path / "a" / "b.bin"
    assert atomic_write_bytes(p, b"one") == p
    atomic_write_text(p, "two\n")
    assert p.read_bytes() == b"two\n"
    assert sorted(os.listdir(p.parent)) == ["b.bin"]
    assert (p.stat().st_mode & 0o777) == 0o666 & ~_umask()


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def test_exception_inside_atomic_path_leaves_neither_target_nor_temporary(tmp_path):
    p = tmp_path / "x.npy"
    with pytest.raises(Boom):
        with atomic_path(p, suffix=".npy") as tmp:
            np.save(tmp, np.arange(10))
            assert tmp.parent == tmp_path and tmp.exists()
            raise Boom()
    assert os.listdir(tmp_path) == []


def test_exception_inside_atomic_path_keeps_the_old_file(tmp_path):
    p = tmp_path / "model.bin"
    p.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(p) as tmp:
            tmp.write_bytes(b"new, half")
            raise KeyboardInterrupt
    assert p.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["model.bin"]


def test_atomic_path_success(tmp_path):
    p = tmp_path / "y.npy"
    with atomic_path(p, suffix=".npy") as tmp:
        np.save(tmp, np.arange(3))  # np.save keeps a name that already ends in .npy
    assert np.array_equal(np.load(p), np.arange(3))
    assert os.listdir(tmp_path) == ["y.npy"]


def test_failing_write_leaves_no_temporary(tmp_path, monkeypatch):
    p = tmp_path / "z.bin"
    p.write_bytes(b"old")

    def broken(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OutputError, match=r"cannot write .*z\.bin: No space left on device") as e:
        atomic_write_bytes(p, b"new")
    assert e.value.exit_code == 3 and "choose another output path" not in str(e.value)   # the machine's
    assert p.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["z.bin"]


@pytest.mark.parametrize("make", ["dir", "under_file"])
def test_unwritable_targets_are_one_line_output_errors(tmp_path, make):
    (tmp_path / "f").write_text("x")
    (tmp_path / "d").mkdir()
    target = tmp_path / ("d" if make == "dir" else "f/sub/out.bin")
    for call in (lambda: atomic_write_bytes(target, b"x"), lambda: check_output_file(target)):
        with pytest.raises(OutputError) as e:
            call()
        assert isinstance(e.value, TTForgeError) and "\n" not in str(e.value)
    assert sorted(os.listdir(tmp_path)) == ["d", "f"]
    assert os.listdir(tmp_path / "d") == []


def test_check_output_dir(tmp_path):
    (tmp_path / "f").write_text("x")
    assert check_output_dir(tmp_path / "new" / "dir") == tmp_path / "new" / "dir"
    with pytest.raises(OutputError, match="not a directory"):
        check_output_dir(tmp_path / "f")
    with pytest.raises(OutputError, match="is a file"):
        check_output_dir(tmp_path / "f" / "out")


def test_directory_of_files_is_replaced_whole_or_not_at_all(tmp_path):
    out = tmp_path / "gen"
    write_files_atomically(out, {"a.txt": b"1", "sub/b.txt": b"2"})
    assert (out / "sub" / "b.txt").read_bytes() == b"2"
    assert (out.stat().st_mode & 0o777) == 0o777 & ~_umask()
    with pytest.raises(Boom):
        with atomic_dir(out) as tmp:
            (tmp / "a.txt").write_bytes(b"new")
            raise Boom()
    assert (out / "a.txt").read_bytes() == b"1"  # the old directory, untouched
    assert sorted(os.listdir(tmp_path)) == ["gen"]  # no temporary directory left
    write_files_atomically(out, {"c.txt": b"3"})
    assert sorted(p.name for p in out.iterdir()) == ["c.txt"]
    assert sorted(os.listdir(tmp_path)) == ["gen"]


def test_interrupted_directory_write_leaves_nothing_new(tmp_path):
    out = tmp_path / "repro"
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(out) as tmp:
            (tmp / "case.json").write_text("{")
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_outputs_named_through_a_link_keep_the_link_and_replace_its_target(tmp_path):
    """A user's symbolic link as the output (a file or a directory): what it names is
    replaced, the link stays a link, and nothing is left beside either (a rename over
    the link swapped it for a new file, and a directory moved aside as a link was never
    deleted)."""
    real_file, file_link = tmp_path / "v1.bin", tmp_path / "latest.bin"
    real_file.write_bytes(b"old")
    file_link.symlink_to(real_file.name)
    atomic_write_bytes(file_link, b"new")
    assert file_link.is_symlink() and os.readlink(file_link) == "v1.bin"
    assert real_file.read_bytes() == b"new"
    real_dir, dir_link = tmp_path / "gen1", tmp_path / "gen"
    write_files_atomically(real_dir, {"a.txt": b"1"})
    dir_link.symlink_to(real_dir.name)
    write_files_atomically(dir_link, {"b.txt": b"2"})
    assert dir_link.is_symlink() and os.readlink(dir_link) == "gen1"
    assert sorted(p.name for p in real_dir.iterdir()) == ["b.txt"]
    assert sorted(os.listdir(tmp_path)) == ["gen", "gen1", "latest.bin", "v1.bin"]
    dangling = tmp_path / "next.bin"
    dangling.symlink_to("v2.bin")
    atomic_write_bytes(dangling, b"v2")
    assert dangling.is_symlink() and (tmp_path / "v2.bin").read_bytes() == b"v2"


def test_an_output_directory_is_written_by_one_run_at_a_time(tmp_path, capsys):
    """While a run holds its output directory, another (here: train and train-int
    started into it) is one line, exit 2, and writes nothing; the lock goes with the run
    (four concurrent trains into one new directory all ended 0, the checkpoint of one
    seed beside the metrics of another)."""
    from ttforge.atomic import output_lock
    from ttforge.cli import main

    run = tmp_path / "run"
    with output_lock(run):
        with pytest.raises(OutputError, match="is being written by another ttforge run"):
            with output_lock(run):
                pass
        for argv in (["train", "--epochs", "1", "--out", str(run), "--quiet"],
                     ["train-int", "--epochs", "1", "-o", str(run), "--quiet"]):
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and "is being written by another ttforge run" in err
        assert not run.exists()
    assert os.listdir(tmp_path) == []   # the lock file goes with the block
    with output_lock(tmp_path / "no" / "such" / "parent"):   # nothing created before a command's checks
        pass
    assert os.listdir(tmp_path) == []
    # a link where the lock goes is not followed (it would create and hold a file elsewhere)
    (tmp_path / ".run.ttforge-lock").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OutputError, match="cannot write"):
        with output_lock(run):
            pass
    assert sorted(os.listdir(tmp_path)) == [".run.ttforge-lock"]


def test_a_run_that_locks_a_lock_file_its_holder_just_removed_takes_the_new_one(tmp_path, monkeypatch):
    """Run B opened the lock file, run A ended (removing it) and run C created and took
    a new one before B's flock: B's flock on the removed file succeeds, yet C holds the
    directory. B looks again and is refused (before, B and C both wrote)."""
    import fcntl

    from ttforge.atomic import output_lock

    lock, real, third = tmp_path / ".run.ttforge-lock", fcntl.flock, []

    def racing(fd, op):
        if not third:
            os.unlink(lock)   # A ended
            third.append(os.open(lock, os.O_RDWR | os.O_CREAT))   # C started
            real(third[0], fcntl.LOCK_EX | fcntl.LOCK_NB)
        return real(fd, op)

    monkeypatch.setattr(fcntl, "flock", racing)
    with pytest.raises(OutputError, match="is being written by another ttforge run"):
        with output_lock(tmp_path / "run"):
            pytest.fail("two runs hold the directory")
    os.close(third[0])
    monkeypatch.setattr(fcntl, "flock", real)
    with output_lock(tmp_path / "run"):   # C ended: B may run now
        pass


def test_no_writer_outside_ttforge_atomic_renames_by_itself():
    """Every ``os.replace`` of the packages (but hw/synth.py) lives in ttforge.atomic."""
    root = Path(__file__).resolve().parents[2]
    offenders = []
    for pkg in ("model", "quant", "hw", "sim", "ttforge", "firmware", "flow", "ir"):
        for f in (root / pkg).rglob("*.py"):
            if f.name == "atomic.py" or f == root / "hw" / "synth.py":
                continue
            text = f.read_text()
            for needle in ("os.replace(", "tempfile.mkstemp(", "torch.save(f", ".savefig(path"):
                if needle in text:
                    offenders.append(f"{f.relative_to(root)}: {needle}")
    assert offenders == []


def test_a_cache_lock_never_writes_through_a_link_nor_truncates(tmp_path):
    """A build cache's lock file that is a link to a user's file (the cache in a shared
    directory): ``open(lock, "w")`` truncated that file; now one line, the file kept."""
    from ttforge.atomic import cache_lock

    victim = tmp_path / "precious.txt"
    victim.write_text("years of work\n")
    (tmp_path / "k.lock").symlink_to(victim)
    with pytest.raises(OutputError, match="k.lock is a symbolic link, not ttforge's lock file"):
        with cache_lock(tmp_path / "k.lock"):
            pass
    os.mkfifo(tmp_path / "f.lock")
    with pytest.raises(OutputError, match="f.lock is a FIFO"):
        with cache_lock(tmp_path / "f.lock"):
            pass
    (tmp_path / "old.lock").write_text("a lock is never emptied\n")
    with cache_lock(tmp_path / "old.lock"), cache_lock(tmp_path / "new.lock"):
        pass
    assert victim.read_text() == "years of work\n"
    assert (tmp_path / "old.lock").read_text() == "a lock is never emptied\n" and (tmp_path / "new.lock").is_file()


def test_every_lock_file_is_taken_through_ttforge_atomic():
    """``fcntl.flock`` only in ttforge.atomic (output_lock, cache_lock)."""
    root = Path(__file__).resolve().parents[2]
    offenders = [str(f.relative_to(root)) for pkg in ("model", "quant", "hw", "sim", "ttforge", "firmware", "flow", "ir")
                 for f in (root / pkg).rglob("*.py") if f.name != "atomic.py" and "flock(" in f.read_text()]
    assert offenders == []


def test_an_output_through_a_loop_of_links_is_refused_and_the_links_stay(tmp_path):
    """``realpath`` gives up on a loop and returned the link itself, which the rename
    then replaced with a regular file."""
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(OutputError, match="a loop of links"):
        atomic_write_bytes(tmp_path / "a", b"x")
    assert (tmp_path / "a").is_symlink() and (tmp_path / "b").is_symlink()


def test_a_job_directory_of_another_pid_namespace_is_kept(tmp_path, monkeypatch):
    """A job of a container sharing ``$TMPDIR`` has pids of its own namespace: one that
    is dead *here* may be running there, so its directory stays; a dead job of this
    namespace, and one whose marker predates the namespace line, go."""
    import subprocess
    import sys
    import tempfile

    from ttforge.atomic import JOB_MARKER, job_dir

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                           text=True, check=True).stdout.strip()
    ours = os.readlink("/proc/self/ns/pid")
    markers = {"theirs": "a ttforge job\npid namespace: pid:[1]\n",
               "ours": f"a ttforge job\npid namespace: {ours}\n", "old": ""}
    for name, text in markers.items():
        (tmp_path / f"ttforge-sim-{ended}-{name}").mkdir()
        (tmp_path / f"ttforge-sim-{ended}-{name}" / JOB_MARKER).write_text(text)
    d = job_dir("ttforge-sim-")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([d.name, f"ttforge-sim-{ended}-theirs"])
    assert f"pid namespace: {ours}" in (d / JOB_MARKER).read_text().splitlines()


def test_a_job_directory_whose_marker_cannot_be_written_names_it(tmp_path, monkeypatch):
    """A full ``$TMPDIR`` under the marker's write (``Path.write_text`` names no file
    then): the line of ``report``'s synthesis or ``run --sim``'s board (``job_dir``
    without ``names_file`` around it) named no file; it names the marker, and its disk."""
    import errno
    import pathlib
    import tempfile

    from ttforge.atomic import JOB_MARKER, job_dir
    from ttforge.boundary import describe_os_error

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    real = pathlib.Path.write_text

    def write_text(self, *a, **k):
        if self.name == JOB_MARKER:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *a, **k)

    monkeypatch.setattr(pathlib.Path, "write_text", write_text)
    with pytest.raises(OSError) as e:
        job_dir("ttforge-synth-")
    named = Path(e.value.filename)
    assert named.name == JOB_MARKER and named.parent.parent == tmp_path and named.parent.name.startswith(
        f"ttforge-synth-{os.getpid()}-")
    line, code = describe_os_error(e.value)
    assert line.startswith(f"{named}: No space left on device") and code == 3
    assert list(tmp_path.iterdir()) == []   # and the directory went, as before


@pytest.mark.parametrize("name", ["out.bin/", "sub/"])
def test_a_file_path_ending_in_a_separator_is_refused(tmp_path, name):
    """``out.bin/`` names a directory; ``Path`` drops the slash and a file ``out.bin``
    was written (``cp`` refuses: "Not a directory")."""
    with pytest.raises(OutputError, match="a directory's name"):
        atomic_write_bytes(f"{tmp_path}/{name}", b"x")
    with pytest.raises(OutputError, match="a directory's name"):
        with atomic_path(f"{tmp_path}/{name}"):
            pass
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_takes_back_the_directories_it_made(tmp_path):
    """A full disk (ENOSPC while writing) left the new output directory behind, empty
    (``train --out new/run``); directories that were there before stay."""
    import errno

    def full_disk(path):
        raise OSError(errno.ENOSPC, "No space left on device")

    (tmp_path / "old").mkdir()
    for target in (tmp_path / "new" / "run" / "f.bin", tmp_path / "old" / "run" / "f.bin"):
        with pytest.raises(OSError, match="No space left"):   # the writer's error, as it was
            with atomic_path(target) as tmp:
                full_disk(tmp)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"] and list((tmp_path / "old").iterdir()) == []
    # a directory that got a file of another write meanwhile is not empty: it stays
    (tmp_path / "new").mkdir()
    with pytest.raises(OSError):
        with atomic_path(tmp_path / "new" / "a" / "f.bin") as tmp:
            (tmp_path / "new" / "a" / "other.txt").write_text("another write's")
            full_disk(tmp)
    assert (tmp_path / "new" / "a" / "other.txt").is_file()


_KILLED_IN_A_NESTED_WRITE = """
import os, sys
from ttforge.atomic import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    with atomic_path(tmp) as inner:   # a writer given the enclosing temporary (train-int's saves)
        open(inner, "w").write("half")
        os._exit(9)   # killed (SIGKILL): no cleanup of any kind
"""


def test_a_temporary_written_through_atomic_path_leaves_nothing_the_next_run_keeps(tmp_path):
    """A writer that writes atomically to the temporary an enclosing ``atomic_path`` gave
    it, killed in the middle: a temporary of the temporary (``..curves.png.ttforge-P.X
    .png.ttforge-P.Y.png``) was named for no target and stayed for good; now the inner
    write goes to the enclosing temporary itself, and the next write cleans it."""
    import subprocess
    import sys

    target = tmp_path / "curves.png"
    out = subprocess.run([sys.executable, "-c", _KILLED_IN_A_NESTED_WRITE, str(target)], timeout=60)
    assert out.returncode == 9
    assert len(list(tmp_path.iterdir())) == 1   # the enclosing temporary, and nothing else
    atomic_write_text(target, "whole")
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"] and target.read_text() == "whole"


def test_a_discarded_directory_is_gone_and_one_cut_short_goes_with_the_next_clean(tmp_path, monkeypatch):
    import shutil

    from ttforge.atomic import clean_stale, command_inputs, discard_dir

    d = tmp_path / "rtl"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "a.v").write_text("module a; endmodule\n")
    discard_dir(d)
    assert not d.exists() and os.listdir(tmp_path) == []
    # killed while deleting: what is left has a temporary's name, which the next
    # clean removes once the process is gone (never the old directory put back)
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "a.v").write_text("x")
    monkeypatch.setattr(shutil, "rmtree", lambda *a, **k: None)
    discard_dir(d)
    monkeypatch.undo()
    left = os.listdir(tmp_path)
    assert not d.exists() and len(left) == 1 and left[0].startswith(".rtl.ttforge-") and left[0].endswith(".tmp")
    dead = left[0].replace(f"ttforge-{os.getpid()}.", "ttforge-999999999.")
    os.replace(tmp_path / left[0], tmp_path / dead)
    clean_stale(tmp_path, "rtl")
    assert os.listdir(tmp_path) == []
    # a directory holding the command's input is not deleted
    (d / "sub").mkdir(parents=True)
    (d / "in.toml").write_text("x")
    with command_inputs([d / "in.toml"]):
        with pytest.raises(TTForgeError):
            discard_dir(d)
    assert (d / "in.toml").read_text() == "x"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel gives the umask in /proc")
def test_reading_the_umask_never_sets_it(monkeypatch):
    """ttforge.atomic read the umask by setting it to 0 and back: a file another thread of
    the host created in that moment was world-writable. It reads it without setting it,
    anew each time (the host may change it)."""
    from ttforge import atomic

    def no(mask):
        raise AssertionError(f"os.umask({mask:#o}) called")

    old = os.umask(0o027)
    try:
        monkeypatch.setattr(atomic.os, "umask", no)
        assert atomic.current_umask() == 0o027
        monkeypatch.undo()
        os.umask(0o002)
        monkeypatch.setattr(atomic.os, "umask", no)
        assert atomic.current_umask() == 0o002
    finally:
        monkeypatch.undo()
        os.umask(old)


def test_an_error_inside_a_replaced_directory_names_the_output_not_its_temporary(tmp_path, monkeypatch):
    """``train --out run --overwrite`` under ``ulimit -f`` said
    ``.run.ttforge-<pid>.<rand>.tmp/metrics.png: File too large``, a temporary gone when
    the line is read; it names ``run/metrics.png`` (also through a write's own
    temporary, and in the one-line error of a write that failed to be renamed)."""
    import errno

    from ttforge.atomic import replace_dir

    monkeypatch.chdir(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last.pt").write_bytes(b"old")

    def named(d):
        raise OSError(errno.EFBIG, "File too large", str(d / "metrics.png"))

    def unnamed_in_a_write(d):
        with atomic_path(d / "metrics.png"):
            raise OSError(errno.EFBIG, "File too large")

    for fill in (named, unnamed_in_a_write):
        with pytest.raises(OSError) as e:
            replace_dir("run", fill, own=["last.pt", "metrics.png"])
        assert e.value.filename == os.path.join("run", "metrics.png")

    def rename_fails(src, dst):
        raise OSError(errno.EIO, "Input/output error")

    def renamed(d):
        monkeypatch.setattr(os, "replace", rename_fails)
        atomic_write_bytes(d / "metrics.png", b"png")

    with pytest.raises(OutputError) as e:
        replace_dir("run", renamed, own=["last.pt", "metrics.png"])
    monkeypatch.undo()
    assert "ttforge-" not in str(e.value) and os.path.join("run", "metrics.png") in str(e.value)
    assert os.listdir(tmp_path) == ["run"] and (tmp_path / "run" / "last.pt").read_bytes() == b"old"


def test_an_error_naming_no_file_inside_a_directory_write_keeps_its_own_text(tmp_path):
    """Inside ``atomic_dir`` (a flow stage) an error that names no file is not the
    directory's: a stage failing on a full ``$TMPDIR`` said ``fl/sim: No space left on
    device``, a directory on a disk with space. A file's write still names its file."""
    import errno

    out = tmp_path / "sim"
    with pytest.raises(OSError) as e:
        with atomic_dir(out):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert e.value.filename is None
    with pytest.raises(OSError) as e:
        with atomic_dir(out) as d:
            with atomic_path(d / "image.bin"):
                raise OSError(errno.ENOSPC, "No space left on device")
    assert e.value.filename == str(out / "image.bin")
    assert os.listdir(tmp_path) == []
