"""The CLI with its standard streams closed or failing (docs/hardening.md, "Outputs"):
closed descriptors are opened on /dev/null at start-up (``ttforge._entry``), a command
whose whole product is what it prints refuses a closed stdout (exit 2), a stdout that
fails is named once the command has written its files (exit 3), a stderr that fails
does not stop the command (exit 3 if it otherwise succeeded, else its own status);
``--help`` and ``--version`` are commands that only print. Each case runs the real CLI in a process whose stream is
closed by the shell (``>&-``): ``subprocess.DEVNULL`` is an open stream."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[2]
_SCHEDULE = ["schedule", "--in-modes", "4,4", "--out-modes", "4,4", "--ranks", "2"]

needs_dev_full = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_ROOT), env.get("PYTHONPATH")]))
    env.pop("TTFORGE_DEBUG", None)
    return env


def _cli(argv: list, redirect: str = "", cwd=None, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m ttforge.cli ARGV`` with the shell's ``redirect`` applied (``>&-``,
    ``2>/dev/full``, ...); the streams left open are captured."""
    return subprocess.run(["sh", "-c", f'exec "$@" {redirect}', "sh", sys.executable, "-m", "ttforge.cli",
                           *map(str, argv)], capture_output=True, text=True, env=_env(), cwd=cwd,
                          timeout=timeout)


# the console script's entry, with a look at fds 0-2 once the command has ended
_PROBE = """
import atexit, os, sys
report, sys.argv = sys.argv[1], ['ttforge'] + sys.argv[2:]
def probe():
    null = os.stat(os.devnull)
    seen = []
    for fd in (0, 1, 2):
        try:
            st = os.fstat(fd)
            seen.append('null' if (st.st_dev, st.st_ino) == (null.st_dev, null.st_ino) else 'open')
        except OSError:
            seen.append('closed')
    with open(report, 'w') as f:
        f.write(','.join(seen))
atexit.register(probe)
from ttforge._entry import main
sys.exit(main())
"""


@pytest.fixture(scope="module")
def quantized(valid, tmp_path_factory) -> bytes:
    """The bytes of ``quantize CKPT`` with every stream open (in this process)."""
    from ttforge.cli import main

    out = tmp_path_factory.mktemp("quantized") / "ref.ttfa"
    assert main(["quantize", str(valid["checkpoint"]), "-o", str(out), "--quiet", "--calib-samples", "64"]) == 0
    return out.read_bytes()


def _files(d: Path) -> dict:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("redirect", ["<&-", ">&-", "2>&-", "<&- >&- 2>&-"])
def test_closed_standard_streams_are_dev_null_from_start_up(valid, tmp_path, redirect):
    """The console script with fd 0, 1 or 2 closed (``generate A -o DIR``, a command
    that writes files): the start-up guard opens /dev/null there, so no file ttforge
    opens can take a standard descriptor and receive what is written to it (they were
    still closed when the command ended); the command exits 0 with the files of a run
    with every stream open."""
    closed = [int(r[0]) if r[0].isdigit() else {"<": 0, ">": 1}[r[0]] for r in redirect.split()]
    out, report = tmp_path / "rtl", tmp_path / "fds.txt"
    p = subprocess.run(["sh", "-c", f'exec "$@" {redirect}', "sh", sys.executable, "-c", _PROBE, str(report),
                        "generate", str(valid["artifact"]), "--no-verilog", "-o", str(out)],
                       capture_output=True, text=True, env=_env(), timeout=60)
    assert p.returncode == 0, p.stderr
    seen = report.read_text().split(",")
    assert all(seen[fd] == "null" for fd in closed), seen
    ref = tmp_path / "ref"
    assert _cli(["generate", valid["artifact"], "--no-verilog", "-o", ref], timeout=60).returncode == 0
    assert _files(out) == _files(ref)


def test_a_command_that_writes_files_runs_with_stdout_closed(valid, quantized, tmp_path):
    """``quantize CKPT -o OUT >&-`` wrote its artifact, then ``sys.stdout.write`` (Python
    leaves ``sys.stdout`` None for a closed fd 1) ended it in exit 70; now exit 0, its
    messages dropped, the artifact that of a run with stdout open."""
    out = tmp_path / "q.ttfa"
    p = _cli(["quantize", valid["checkpoint"], "-o", out, "--calib-samples", "64"], ">&-")
    assert p.returncode == 0 and p.stderr == "", p.stderr
    assert out.read_bytes() == quantized


@pytest.mark.parametrize("argv", [
    _SCHEDULE,
    ["inspect", "{artifact}"],
    ["inspect", "--json", "{artifact}"],
    ["diverge", "{artifact}", "--input", "{inputs}"],
    ["report", "{artifact}"],
    ["run", "--board", "icebreaker", "--sim", "{artifact}", "{inputs}"],
], ids=lambda a: " ".join(a[:2]))
def test_a_command_that_only_prints_refuses_a_closed_stdout(valid, argv):
    """A command whose whole product is its output, with stdout closed: one line on
    stderr naming standard output and the fix, exit 2, before any work (it did the
    work and exited 0 with nothing to show, as GNU ``ls >&-`` does not)."""
    argv = [a.format(**valid) for a in argv]
    p = _cli(argv, ">&-", timeout=60)
    assert p.returncode == 2, p.stderr
    assert p.stderr.count("\n") == 1 and p.stderr.startswith(f"ttforge {argv[0]}: error: standard output is "
                                                             f"closed"), p.stderr
    assert "/dev/null" in p.stderr


def test_with_stderr_closed_too_the_refusal_is_silent_exit_2(valid):
    p = _cli(["inspect", valid["artifact"]], ">&- 2>&-", timeout=60)
    assert p.returncode == 2


def test_which_commands_only_print():
    """``report`` and ``run`` print only without an output file; with one they write it
    and run with stdout closed."""
    from ttforge.cli import PRINTS_ONLY

    assert set(PRINTS_ONLY) == {"schedule", "inspect", "diverge", "report", "run"}
    assert PRINTS_ONLY["report"](Namespace(out=None, json="-"))
    assert not PRINTS_ONLY["report"](Namespace(out=None, json="r.json"))
    assert not PRINTS_ONLY["report"](Namespace(out="r.json", json=None))
    assert PRINTS_ONLY["run"](Namespace(out=None)) and not PRINTS_ONLY["run"](Namespace(out="y.npy"))


@needs_dev_full
@pytest.mark.parametrize("argv", [["inspect", "{artifact}"], _SCHEDULE + ["--json"]],
                         ids=["inspect", "schedule --json"])
def test_a_stdout_that_fails_is_named_exit_3(valid, argv):
    """``> /dev/full``: one line naming standard output, exit 3 (it said "No space left
    on device (a problem of the machine, not of the input...)", naming nothing)."""
    p = _cli([a.format(**valid) for a in argv], ">/dev/full", timeout=60)
    assert p.returncode == 3, p.stderr
    assert p.stderr.count("\n") == 1 and "cannot write standard output (No space left on device)" in p.stderr


@needs_dev_full
def test_a_stdout_that_fails_does_not_lose_the_artifact(valid, quantized, tmp_path):
    """``quantize > /dev/full``: its progress line failed and ended the command before
    the artifact was written (exit 3, no artifact); now the command runs to its end, the
    artifact is written whole, and the one line names standard output, exit 3."""
    out = tmp_path / "q.ttfa"
    p = _cli(["quantize", valid["checkpoint"], "-o", out, "--calib-samples", "64"], ">/dev/full")
    assert p.returncode == 3 and p.stderr.count("\n") == 1 and "standard output" in p.stderr, p.stderr
    assert out.read_bytes() == quantized
    assert [x.name for x in tmp_path.iterdir()] == ["q.ttfa"]   # no temporary left


@needs_dev_full
def test_a_stderr_that_fails_keeps_the_exit_status(tmp_path):
    """``2> /dev/full`` and a user's mistake: exit 2 (the error's own line raised, and
    the command ended in a traceback nobody saw and exit 1, a failed check to a script)."""
    p = _cli(["inspect", tmp_path / "missing.ttfa"], "2>/dev/full", timeout=60)
    assert p.returncode == 2 and p.stdout == ""


@needs_dev_full
def test_a_stderr_that_fails_does_not_stop_a_long_command(tmp_path):
    """``regress 2> /dev/full``: its per-case progress line on stderr failed and ended
    the run there (exit 3, no word, no junit.xml or summary.json, no table on stdout);
    now the run goes to its end with its files and its table, exit 3 (a command that
    otherwise succeeded, as GNU coreutils and Python say a failed stderr)."""
    from tests.support.sims import _available

    if _available("icarus"):
        pytest.skip(_available("icarus"))
    out = tmp_path / "rg"
    p = _cli(["regress", "--seeds", "1", "--vectors", "4", "--out", out], "2>/dev/full", timeout=60)
    assert p.returncode == 3, p.returncode
    assert json.loads((out / "summary.json").read_text())["passed"] == 1
    assert (out / "junit.xml").is_file() and "1/1 passed" in p.stdout


def test_a_stderr_reader_gone_does_not_stop_the_command_or_take_stdout(tmp_path):
    """``train-int`` whose stderr is a pipe whose reader has gone (``2> >(head -c 0)``):
    rich took the broken pipe for stdout's, pointed stdout at /dev/null and ended in
    exit 141 with the summary table lost; now the command ends with its files and its
    table, exit 3, and no "Exception ignored" at exit (which ends in 120)."""
    out = tmp_path / "ti"
    p = subprocess.Popen([sys.executable, "-m", "ttforge.cli", "train-int", "--epochs", "1", "-o", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    p.stderr.close()
    text = p.stdout.read().decode()
    assert p.wait(timeout=60) == 3
    assert "ttforge train-int: digits" in text and "wrote" in text, text
    assert sorted(x.name for x in out.iterdir()) == ["curves.png", "metrics.json", "model.ttfa", "state.ttts"]


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["inspect", "--help"]], ids=" ".join)
def test_help_and_version_check_their_stdout(argv):
    """``--help`` and ``--version`` print only, and argparse dropped their write's
    error: exit 0 with stdout closed or failing. Now as the other commands that only
    print: closed, one line naming standard output, exit 2; failing, exit 3; a reader
    gone, 141 without a word."""
    prefix = f"ttforge {argv[0]}: " if len(argv) > 1 else "ttforge: "
    p = _cli(argv, ">&-", timeout=60)
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert p.stderr.startswith(prefix + "error: standard output is closed"), p.stderr
    if os.path.exists("/dev/full"):
        p = _cli(argv, ">/dev/full", timeout=60)
        assert p.returncode == 3 and p.stderr.count("\n") == 1, p.stderr
        assert "cannot write standard output (No space left on device)" in p.stderr
    p = subprocess.Popen([sys.executable, "-m", "ttforge.cli", *argv], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=_env())
    p.stdout.close()
    err = p.stderr.read()
    assert p.wait(timeout=60) == 141 and err == b"", err
    assert _cli(argv, ">/dev/null", timeout=60).returncode == 0


def test_a_stdout_reader_gone_before_the_first_line_is_141_without_a_word(valid):
    """``ttforge inspect A | head`` whose reader has gone before anything was printed:
    exit 141, nothing on stderr (kept as it was)."""
    p = subprocess.Popen([sys.executable, "-m", "ttforge.cli", "inspect", str(valid["artifact"])],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    p.stdout.close()
    err = p.stderr.read()
    assert p.wait(timeout=60) == 141 and err == b"", err


def test_a_stderr_that_fails_while_the_parser_is_built_is_exit_3(monkeypatch):
    """A write to stderr that fails while the command's parser is built (an import's
    warning, ``2> /dev/full``): the parse's status was dropped once the command itself
    succeeded, exit 0 where not all that was said reached the user."""
    import errno
    import io

    from ttforge import cli

    class Full(io.StringIO):
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

    build = cli.build_parser

    def noisy(**kw):
        print("SomeWarning: from an import", file=sys.stderr)
        return build(**kw)

    monkeypatch.setattr(sys, "stderr", Full())
    monkeypatch.setattr(cli, "build_parser", noisy)
    assert cli.main(_SCHEDULE) == 3
