"""Every bench script refuses a result file it cannot write before it measures anything
(a FIFO, a device, a directory: exit 2, one line, no traceback, nothing blocks), and
writes its result atomically."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
#: its --out is the sweep's build directory, checked by ``ttforge sweep`` itself
DIRECTORY_OUT = {"bench_sweep_pnr.py"}
SCRIPTS = sorted(p.name for p in BENCH.glob("bench_*.py")
                 if '"--out"' in p.read_text() and p.name not in DIRECTORY_OUT)


def _out_argument(text: str) -> str:
    line = next(ln for ln in text.splitlines() if '"--out"' in ln and "add_argument" in ln)
    return line


def test_the_bench_scripts_are_found():
    assert len(SCRIPTS) >= 20 and "bench_speed.py" in SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS)
def test_out_is_checked_by_result_path(script):
    """One owner of the check: the argument's type (bench/_env.py)."""
    assert "type=result_path" in _out_argument((BENCH / script).read_text())


#: the other files a bench writes where the user says
OTHER_OUTPUTS = ("--doc", "--png", "--synth-out")


def test_every_other_output_argument_is_checked_too():
    found = []
    for p in sorted(BENCH.glob("bench_*.py")):
        for line in p.read_text().splitlines():
            flag = next((f for f in OTHER_OUTPUTS if f'add_argument("{f}"' in line), None)
            if flag:
                found.append((p.name, flag))
                assert "type=result_path" in line or "type=output_path(" in line, (p.name, line)
    assert len(found) >= 5


@pytest.mark.parametrize("script, flag, example", [
    ("bench_hw.py", "--doc", "section.md"), ("bench_stochastic.py", "--png", "plot.png")])
def test_other_outputs_fail_before_any_work(script, flag, example, tmp_path):
    r = subprocess.run([sys.executable, str(BENCH / script), flag, str(tmp_path)],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"argument {flag}: {tmp_path} is a directory; give a file name (e.g. {tmp_path}/{example})" \
        in r.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_results_are_written_atomically(script):
    text = (BENCH / script).read_text()
    assert not re.search(r"\.write_text\(json\.dumps\((out|result|res|doc)\b", text), \
        "a result JSON written in place: a signal mid-write leaves half a file"
    assert not re.search(r"""\.tmp["']\)""", text), \
        "a hand-made temporary name (fixed: it can clobber a file of that name); use atomic_write_text"


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_fifo_as_out_is_a_usage_error_before_any_work(script, tmp_path):
    fifo = tmp_path / "result.json"
    os.mkfifo(fifo)
    r = subprocess.run([sys.executable, str(BENCH / script), "--out", str(fifo)],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "argument " in last and "--out: " in last and "is a FIFO" in last, last
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_result_path_messages(tmp_path):
    sys.path.insert(0, str(BENCH))
    try:
        from _env import result_path
    finally:
        sys.path.remove(str(BENCH))
    import argparse

    assert result_path(str(tmp_path / "new.json")) == tmp_path / "new.json"
    (tmp_path / "old.json").write_text("{}")
    assert result_path(str(tmp_path / "old.json")) == tmp_path / "old.json"
    for bad, why in [(tmp_path, "is a directory"), ("/dev/null", "is a character device"),
                     (tmp_path / "old.json" / "x.json", "old.json")]:
        with pytest.raises(argparse.ArgumentTypeError, match=why) as e:
            result_path(str(bad))
        assert not str(e.value).startswith(" ") and "\n" not in str(e.value)
