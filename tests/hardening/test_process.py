"""ttforge.process.run_bounded: an external program's output is bounded and nothing it
starts outlives it (docs/hardening.md, "Resources")."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from ttforge.process import run_bounded


def _alive(tag: str) -> list[str]:
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [ln for ln in ps.splitlines() if tag in ln and "ps -eo" not in ln]


def _gone(tag: str, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while _alive(tag) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(tag)


def test_output_status_and_input_as_subprocess_run():
    r = run_bounded(["sh", "-c", "cat; echo err >&2; exit 3"], input="abc\n")
    assert (r.returncode, r.stdout, r.stderr) == (3, "abc\n", "err\n")
    with pytest.raises(FileNotFoundError):
        run_bounded(["/nonexistent/tool"])


def test_only_the_last_bytes_of_each_stream_are_kept():
    r = run_bounded(["sh", "-c", "head -c 5000000 /dev/zero; echo; echo the reason"], keep=1000)
    assert len(r.stdout) == 1000 and r.stdout.endswith("\nthe reason\n")


def test_a_timeout_kills_the_whole_group(tmp_path):
    tag = f"{tmp_path.name}-t"
    t0 = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        run_bounded(["bash", "-c", f"bash -c 'exec -a {tag} sleep 300' & exec -a {tag} sleep 300"], timeout=0.5)
    assert time.monotonic() - t0 < 5 and _gone(tag)


def test_children_of_a_program_that_ended_go_with_it(tmp_path):
    """A child left running holds the pipes: the call returns within the drain time and
    the child is killed (it held the USB cable after openFPGALoader's wrapper ended)."""
    tag = f"{tmp_path.name}-c"
    t0 = time.monotonic()
    r = run_bounded(["bash", "-c", f"bash -c 'exec -a {tag} sleep 300' & sleep 0.2; ps -eo args | grep -c '^{tag}'"])
    assert r.returncode == 0 and r.stdout == "1\n"   # the child ran
    assert time.monotonic() - t0 < 10 and _gone(tag)


def test_an_interrupt_kills_the_group(tmp_path):
    tag = f"{tmp_path.name}-i"
    ready = tmp_path / "ready"
    # Ctrl-C's handler set here: a child of a process that ignores SIGINT (an xdist
    # worker in CI) inherits the ignoring, and Python then installs no handler
    script = textwrap.dedent(f"""
        import signal
        signal.signal(signal.SIGINT, signal.default_int_handler)
        from ttforge.process import run_bounded
        try:
            run_bounded(["bash", "-c", "touch {ready}; exec -a {tag} sleep 300"])
        except KeyboardInterrupt:
            print("interrupted")
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    os.kill(p.pid, signal.SIGINT)
    out, _ = p.communicate(timeout=30)
    assert out.strip() == "interrupted" and _gone(tag)


@pytest.mark.parametrize("how", ["ends", "times out"])
def test_a_daemon_holding_the_pipes_does_not_hold_the_call_nor_outlive_it(tmp_path, how):
    """A program that starts a session of its own (out of the group's reach): its daemon
    keeps the pipes open; the call returns within the drain time (it waited for the
    daemon, past --timeout, deaf to Ctrl-C) and the daemon is killed with the rest (it
    ran on for good); a daemon that let go of the pipes is out of reach, and left."""
    tag, free = f"{tmp_path.name}-d", f"{tmp_path.name}-free"
    script = (f"setsid bash -c 'exec -a {tag} sleep 300' & "
              f"setsid bash -c 'exec -a {free} sleep 300' </dev/null >/dev/null 2>&1 & echo started"
              + ("; sleep 300" if how == "times out" else ""))
    try:
        t0 = time.monotonic()
        if how == "ends":
            r = run_bounded(["bash", "-c", script], timeout=30)
            assert r.returncode == 0 and r.stdout == "started\n"
        else:
            with pytest.raises(subprocess.TimeoutExpired):
                run_bounded(["bash", "-c", script], timeout=1)
        assert time.monotonic() - t0 < 10
        assert _gone(tag)
        assert _alive(free)   # it ran, and nothing reaches it
    finally:
        subprocess.run(["pkill", "-f", tag])
        subprocess.run(["pkill", "-f", free])
