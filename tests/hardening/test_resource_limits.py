"""Resource limits and their signals (probe R): a file-size limit, the CPU time limit, a
full disk, too many open files, memory exhausted while a library loads. Each is the
machine's (exit 3) in one line naming the limit's own fix, with every cleanup run."""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
import sys

import pytest


#: The console script's entry as an interpreter that does not ignore SIGXFSZ (one embedded
#: without Python's signal handlers): its default action, a kill with a core, is back.
_ENTRY_WITH_SIGXFSZ = ("import signal, sys\n"
                       "signal.signal(signal.SIGXFSZ, signal.SIG_DFL)\n"
                       "from ttforge._entry import main\n"
                       "sys.exit(main())\n")


def _file_size_limit(limit: int):
    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


def test_a_write_past_the_file_size_limit_is_one_line_exit_3_with_its_cleanup(tmp_path):
    """``ulimit -f``: SIGXFSZ killed the command (exit 153 in a shell) and left the
    temporary of the file it wrote; it is ignored, the write fails with EFBIG, and the
    command ends in one line naming the file and the limit, exit 3, no temporary left."""
    out = tmp_path / "ex"
    p = subprocess.run([sys.executable, "-c", _ENTRY_WITH_SIGXFSZ, "examples", str(out)], capture_output=True,
                       text=True, timeout=120, preexec_fn=_file_size_limit(200))
    assert p.returncode == 3, (p.returncode, p.stderr)
    assert p.stderr.count("\n") == 1 and "File too large" in p.stderr and "ulimit -f" in p.stderr, p.stderr
    assert not [n for n in (os.listdir(out) if out.exists() else []) if "ttforge-" in n]


def test_a_child_process_gets_the_default_action_of_sigxfsz_back():
    """SIGXFSZ ignored in ttforge stays ignored across ``exec`` unless reset: a program it
    starts (a simulator, the toolchain) sees the default action, as from a shell."""
    from ttforge._entry import ignore_file_size_signal
    from ttforge.process import run_bounded

    before = signal.getsignal(signal.SIGXFSZ)
    try:
        ignore_file_size_signal()
        assert signal.getsignal(signal.SIGXFSZ) == signal.SIG_IGN
        status = run_bounded(["cat", "/proc/self/status"], timeout=30).stdout
    finally:
        signal.signal(signal.SIGXFSZ, before)
    ignored = int(next(ln for ln in status.splitlines() if ln.startswith("SigIgn:")).split()[1], 16)
    assert not ignored & (1 << (signal.SIGXFSZ - 1))


@pytest.mark.parametrize("code, kind", [(errno.ENOSPC, 3), (errno.EMFILE, 3), (errno.EFBIG, 3), (errno.EIO, 3),
                                        (errno.EACCES, 2), (errno.EROFS, 2)])
def test_an_output_that_cannot_be_written_is_the_users_or_the_machines_by_errno(tmp_path, monkeypatch, code,
                                                                               kind):
    """Every OSError of an atomic write was the user's ("choose another output path", exit
    2): out of inodes, a full disk was exit 2 where out of blocks it was 3, and ``regress``
    under ``ulimit -n`` ended its passed run with ``cannot write out/junit.xml (Too many
    open files); choose another output path``. The errno decides: a permission or a
    read-only disk is the user's, exit 2; the machine's is exit 3 with its own fix."""
    import tempfile

    from ttforge.atomic import atomic_write_bytes, check_writable
    from ttforge.errors import OutputError

    def refused(*a, **k):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    for write in (lambda: atomic_write_bytes(tmp_path / "out" / "junit.xml", b"x"),
                  lambda: check_writable(tmp_path / "out" / "junit.xml", "--out")):
        with pytest.raises(OutputError) as e:
            write()
        assert e.value.exit_code == kind and os.strerror(code) in str(e.value)
        assert ("choose" in str(e.value)) == (kind == 2), str(e.value)
        assert ("a problem of the machine" in str(e.value)) == (kind == 3), str(e.value)
    assert os.listdir(tmp_path) == []


def test_too_many_open_files_at_the_command_line_is_exit_3(tmp_path, monkeypatch, capsys):
    """Through the command: one line, exit 3, nothing written (it was exit 2, "choose
    another output path", the wrong fix for a descriptor limit)."""
    import tempfile

    from ttforge.cli import main

    def refused(*a, **k):
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    assert main(["examples", str(tmp_path / "ex")]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Too many open files" in err and "ulimit -n" in err, err


@pytest.mark.parametrize("error", [
    ImportError("libtorch_cpu.so: failed to map segment from shared object"),
    ImportError("/x/scipy/optimize/_highspy/_core.cpython-311-x86_64-linux-gnu.so: failed to map segment from "
                "shared object"),
    OSError("libopenblas.so.0: cannot allocate memory"),
    OSError(errno.ENOMEM, "Cannot allocate memory"),
], ids=["torch", "scipy", "ctypes", "enomem"])
def test_a_library_that_cannot_be_loaded_for_lack_of_memory_is_out_of_memory(monkeypatch, capsys, error):
    """Under ``ulimit -v`` of 400-850 MiB the dynamic loader cannot map torch's (or
    scipy's) extension: ``internal error ImportError: libtorch_cpu.so: failed to map
    segment ...; this is a bug in ttforge``, exit 70. It is the documented line of memory
    exhausted, exit 3."""
    import builtins

    from ttforge.cli import main

    plain = builtins.__import__

    def no_memory(name, *a, **k):
        if name.partition(".")[0] == "torch":
            raise error
        return plain(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_memory)
    assert main(["train", "--epochs", "1", "--out", "never"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ran out of memory" in err and "bug" not in err, err


def test_a_static_tls_block_is_not_out_of_memory(capsys):
    """"cannot allocate memory in static TLS block" is the loader's TLS, not memory."""
    from ttforge.boundary import run_command

    def run(args):
        raise ImportError("libgomp.so.1: cannot allocate memory in static TLS block")

    assert run_command("train", run, None) == 70
    assert "ran out of memory" not in capsys.readouterr().err


def _cpu_limit() -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (1, 30))


def test_the_cpu_time_limit_ends_the_command_as_sigterm_does(tmp_path):
    """``ulimit -t``: SIGXCPU's default action killed the command with a core (exit 152
    in a shell), its temporaries and its output's lock left behind. It is an interrupt
    inside the command, as SIGTERM: one line naming the limit, every cleanup, exit 143."""
    p = subprocess.run([sys.executable, "-m", "ttforge.cli", "train", "--epochs", "10000", "--quiet",
                        "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=120,
                       preexec_fn=_cpu_limit, cwd=tmp_path)
    assert p.returncode == 143, (p.returncode, p.stderr)
    assert p.stderr.count("\n") == 1 and "SIGXCPU" in p.stderr and "ulimit -t" in p.stderr, p.stderr
    assert [n for n in os.listdir(tmp_path) if "ttforge-" in n or n.startswith("core")] == []
    assert not (tmp_path / "run").exists() or not [n for n in os.listdir(tmp_path / "run") if "ttforge-" in n]


def test_a_full_disk_names_its_file_system(tmp_path, monkeypatch):
    """"free space on that disk" left the user to find which of the mounts under the path
    is full: the line names the file system's mount point (as ``df`` finds it)."""
    import tempfile

    from ttforge.atomic import atomic_write_bytes
    from ttforge.errors import OutputError

    target = tmp_path / "new" / "out.bin"
    mount = subprocess.run(["df", "--output=target", str(tmp_path)], capture_output=True, text=True,
                           check=True).stdout.splitlines()[-1].strip()

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile, "mkstemp", full)
    with pytest.raises(OutputError) as e:
        atomic_write_bytes(target, b"x")
    assert e.value.exit_code == 3 and str(e.value).endswith(f"free space on that disk, {mount})"), str(e.value)
