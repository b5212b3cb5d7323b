"""Every bad input of the corpus gets one line, exit status 2, and nothing written.

The corpus (``corpus/``, listed in ``corpus/cases.toml`` and ``corpus/cli.toml``) holds
damaged configs, artifacts, checkpoints, IDX directories, foreign ONNX files and bad
command lines. Each case runs through :func:`ttforge.cli.main` in a fresh working
directory; a handful also run through a real ``ttforge`` process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ttforge.cli import main

from .cases import CORPUS, expand, load_cases

CASES = load_cases()


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` (hidden temporaries included) with its bytes."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else
                                       "fifo" if p.is_fifo() else "link" if p.is_symlink() else None)
            for p in sorted(root.rglob("*"))}


def prepare(tmp: Path, valid: dict) -> dict[str, Path]:
    (tmp / "existing.txt").write_text("an existing file\n")
    (tmp / "existing_dir").mkdir()
    (tmp / "existing_dir" / "keep.txt").write_text("an existing directory's file\n")
    # inputs the command could destroy: copies of the valid files, links to them, a FIFO
    # and a directory that only pretends to be a ttforge generate output
    shutil.copyfile(valid["artifact"], tmp / "model.ttfa")
    shutil.copyfile(valid["checkpoint"], tmp / "last.pt")
    (tmp / "model-link.ttfa").symlink_to(tmp / "model.ttfa")
    (tmp / "last-hard.pt").hardlink_to(tmp / "last.pt")
    (tmp / "rundir").mkdir()
    (tmp / "fakerun").mkdir()
    (tmp / "fakerun" / "metrics.json").write_text('{"mine": true}\n')
    shutil.copyfile(valid["checkpoint"], tmp / "rundir" / "last.pt")
    (tmp / "fakeint").mkdir()
    (tmp / "fakeint" / "state.ttts").write_text("a state that is not read before the refusal\n")
    os.mkfifo(tmp / "pipe")
    (tmp / "fakegen").mkdir()
    (tmp / "fakegen" / "generate.json").write_text('{"format": "ttforge-generate", "files": {}}\n')
    (tmp / "fakegen" / "thesis.tex").write_text("a user's file\n")
    return {"corpus": CORPUS, "tmp": tmp, "artifact": valid["artifact"], "inputs": valid["inputs"],
            "checkpoint": valid["checkpoint"], "file": tmp / "existing.txt", "dir": tmp / "existing_dir",
            "art_copy": tmp / "model.ttfa", "ckpt_copy": tmp / "last.pt", "art_link": tmp / "model-link.ttfa",
            "ckpt_hard": tmp / "last-hard.pt", "fifo": tmp / "pipe", "fakegen": tmp / "fakegen",
            "run_copy": tmp / "rundir", "fakerun": tmp / "fakerun"}


def check(case, code: int, stderr: str, before: dict, after: dict) -> None:
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, f"{case.id}: stderr must be one line, got {len(lines)}:\n{stderr}"
    cmd = case.argv[0]
    assert lines[0].startswith(f"ttforge {cmd}: error: ") or (
        case.id == "cli/command-unknown" and lines[0].startswith("ttforge: error: ")), lines[0]
    assert code == 2, f"{case.id}: exit {code}: {lines[0]}"
    assert len(lines[0]) <= 1200, f"{case.id}: a {len(lines[0])}-character line"
    assert case.expect.lower() in lines[0].lower(), f"{case.id}: {case.expect!r} not in {lines[0]!r}"
    assert after == before, f"{case.id}: files changed: {sorted(set(after) ^ set(before))}"


def _params(cases):
    return [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=c.xfail)] if c.xfail else [])
            for c in cases]


@pytest.mark.parametrize("case", _params(CASES))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, valid, tmp_path, capsys, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    values = prepare(work, valid)
    monkeypatch.chdir(work)
    before, valid_before = snapshot(work), snapshot(valid["root"])
    try:
        code = main(expand(case.argv, values))
    except SystemExit as e:  # argparse errors exit from inside the parser
        code = e.code
    stderr = capsys.readouterr().err
    check(case, code, stderr, before, snapshot(work))
    assert snapshot(valid["root"]) == valid_before


SUBPROCESS = [c for c in CASES if c.subprocess]


@pytest.mark.parametrize("case", _params(SUBPROCESS))
def test_bad_input_through_a_real_process(case, valid, tmp_path):
    exe = shutil.which("ttforge", path=str(Path(sys.executable).parent)) or shutil.which("ttforge")
    assert exe, "the ttforge console script is not installed"
    work = tmp_path / "work"
    work.mkdir()
    values = prepare(work, valid)
    before = snapshot(work)
    env = {**os.environ, "COLUMNS": "80"}
    out = subprocess.run([exe, *expand(case.argv, values)], cwd=work, capture_output=True, text=True,
                         env=env, timeout=120)
    check(case, out.returncode, out.stderr, before, snapshot(work))


def test_the_corpus_is_large_and_covers_every_kind():
    kinds = {c.id.split("/")[0] for c in CASES}
    assert {"train_config", "accel_config", "flow_config", "artifact", "idx", "onnx", "checkpoint",
            "cli"} <= kinds
    assert len(CASES) >= 60
