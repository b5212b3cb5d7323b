"""Resource limits and their signals (probe R): a file-size limit, the CPU time limit, a
full disk, too many open files, memory exhausted while a library loads. Each is the
machine's (exit 3) in one line naming the limit's own fix, with every cleanup run."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys


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
    assert p.stderr.count("\n") == 1 and "File too large" in p.stderr, p.stderr
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
