"""Untrusted text in the flow and the sweep: a config under a directory whose name is not
UTF-8, control characters in grid values, a config moved to another path; and the
build directory held by another run or not writable. Each refusal or escape is checked
on the files and the terminal, not only the exit status."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import pytest

from ttforge.atomic import output_lock
from ttforge.cli import main
from ttforge.errors import OutputError
from ttforge.flow import FlowConfig, default_config, run_flow
from ttforge.flow import sweep as sweep_mod
from ttforge.flow.config import DEFAULT_CONFIG
from ttforge.flow.sweep import load_sweep, run_sweep

from tests.support.flows import TINY_FLOW_TOML as BASE
from tests.support.readonly import read_only
from tests.support.toml import tomllib


def _odd_dir(tmp_path: Path) -> Path:
    """A directory whose name holds the byte 0xff (not UTF-8)."""
    d = Path(os.fsdecode(os.fsencode(tmp_path) + b"/c\xff"))
    d.mkdir()
    return d


def _strict_json(path: Path) -> dict:
    """``path`` read as a strict parser would: UTF-8, no lone surrogate escapes."""
    text = path.read_bytes().decode("utf-8")
    assert "\\udc" not in text.lower(), "a lone surrogate escape (strict JSON parsers refuse it)"
    return json.loads(text)


def test_a_config_path_that_is_not_utf8_is_written_escaped_into_the_report(build_copy, tmp_path, capsys):
    """A config under ``c\\xff/``: the report names it ``c\\xff`` (the stage wrote
    report.html with the surrogate, exit 70 after train, quantize and compile)."""
    cfg = _odd_dir(tmp_path) / "digits-icebreaker.toml"
    shutil.copy(DEFAULT_CONFIG, cfg)
    assert main(["flow", str(cfg), "--short", "--force", "report", "--out", str(build_copy)]) == 0, \
        capsys.readouterr().err
    for name in ("report.html", "report.md"):
        text = (build_copy / name).read_bytes().decode("utf-8")
        assert f"{tmp_path}/c\\xff/digits-icebreaker.toml" in text, name
    _strict_json(build_copy / "report" / "stage.json")


def test_the_report_names_the_config_it_ran_from_and_escapes_a_bidi_override(build_copy, tmp_path, capsys):
    """The same config from another path: the report is written anew naming it (it was
    skipped and kept naming the old path), with a right-to-left override escaped."""
    d = tmp_path / "ab\u202ecd"
    d.mkdir()
    cfg = d / "digits-icebreaker.toml"
    shutil.copy(DEFAULT_CONFIG, cfg)
    assert main(["flow", str(cfg), "--short", "--out", str(build_copy)]) == 0, capsys.readouterr().err
    html = (build_copy / "report.html").read_text(encoding="utf-8")
    assert f"{tmp_path}/ab\\u202ecd/digits-icebreaker.toml" in html and "\u202e" not in html
    assert str(DEFAULT_CONFIG) not in html


def test_a_second_flow_into_a_build_in_progress_says_so(tmp_path):
    """Another run holds --out (its temporary stage directory is all there is yet): one
    line saying so, not "not a ttforge flow build"; nothing of it is touched."""
    root = tmp_path / "b"
    root.mkdir()
    (root / ".train.ttforge-1.x.tmp").mkdir()
    with output_lock(root, "--out"):
        with pytest.raises(OutputError, match="is being written by another ttforge run"):
            run_flow(default_config(), root, short=True, until="train")
    assert [p.name for p in root.iterdir()] == [".train.ttforge-1.x.tmp"]


def test_a_build_directory_that_cannot_be_written_is_one_line_before_any_stage(tmp_path, monkeypatch):
    root = tmp_path / "ro"
    root.mkdir()
    read_only(monkeypatch, root)
    monkeypatch.setattr("ttforge.flow.stages._RUN", {})   # any stage run is a KeyError
    with pytest.raises(OutputError, match="--out .*ro cannot be written.*Read-only file system"):
        run_flow(default_config(), root, short=True, until="train")


def test_a_sweep_directory_that_cannot_be_written_is_one_line_before_any_point(tmp_path, monkeypatch):
    (tmp_path / "base.toml").write_text(BASE)
    (tmp_path / "s.toml").write_text('[sweep]\nname = "t"\nflow = "base.toml"\n[grid]\nw_bits = [4]\n')
    out = tmp_path / "ro"
    out.mkdir()
    read_only(monkeypatch, out)
    monkeypatch.setattr(sweep_mod, "point_task", lambda args: pytest.fail("ran a point"))
    with pytest.raises(OutputError, match="--out .*ro cannot be written"):
        run_sweep(load_sweep(tmp_path / "s.toml"), out)


def test_a_second_sweep_into_a_sweep_in_progress_says_so(tmp_path, monkeypatch):
    """One sweep at a time into --out (as flow --out): two at once ran the same points
    and wrote sweep.json over each other."""
    (tmp_path / "base.toml").write_text(BASE)
    (tmp_path / "s.toml").write_text('[sweep]\nname = "t"\nflow = "base.toml"\n[grid]\nw_bits = [4]\n')
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(sweep_mod, "point_task", lambda args: pytest.fail("ran a point"))
    with output_lock(out, "--out"):
        with pytest.raises(OutputError, match="is being written by another ttforge run"):
            run_sweep(load_sweep(tmp_path / "s.toml"), out)
    assert list(out.iterdir()) == []


def test_a_sweep_under_a_directory_that_is_not_utf8_runs_its_points(tmp_path):
    """Every point failed with UnicodeEncodeError at its report, no best-*.toml."""
    d = _odd_dir(tmp_path)
    (d / "base.toml").write_text(BASE)
    (d / "s.toml").write_text('[sweep]\nname = "t"\nflow = "base.toml"\n[grid]\nw_bits = [4]\n')
    res = run_sweep(load_sweep(d / "s.toml"), tmp_path / "out")
    assert [r["status"] for r in res.rows] == ["ok"], [r["reason"] for r in res.rows]
    FlowConfig.load(tmp_path / "out" / "best-icebreaker.toml")


def test_a_sweep_over_data_under_a_directory_that_is_not_utf8_writes_valid_json(tmp_path):
    """The base flow's IDX directory under ``c\\xff/`` reached ``sweep.json`` as the lone
    surrogate ``"\\udcff"`` (strict parsers refuse it); it is written ``c\\xff`` as the
    other files write it, and the next run still finds the point finished."""
    from tests.support.data import write_pair

    d = _odd_dir(tmp_path)
    (d / "idx").mkdir()
    write_pair(d / "idx", "t10k", 60)
    (d / "base.toml").write_text(BASE.replace('data = "digits"', 'data = "idx"'))
    (d / "s.toml").write_text('[sweep]\nname = "t"\nflow = "base.toml"\n[grid]\nw_bits = [4]\n')
    cfg = load_sweep(d / "s.toml")
    res = run_sweep(cfg, tmp_path / "out")
    assert [r["status"] for r in res.rows] == ["ok"], [r["reason"] for r in res.rows]
    doc = _strict_json(tmp_path / "out" / "sweep.json")
    assert doc["rows"][0]["flow"]["train"]["data"] == f"{tmp_path}/c\\xff/idx"
    # best-*.toml held it as "\\udcff", which TOML refuses: the file did not load
    best = tomllib.loads((tmp_path / "out" / "best-icebreaker.toml").read_text(encoding="utf-8"))
    assert best["train"]["data"] == f"{tmp_path}/c\\xff/idx"
    assert run_sweep(cfg, tmp_path / "out").reused == 1


def test_grid_values_with_control_characters_are_escaped_on_the_terminal_and_in_the_files(tmp_path, capfd):
    """An OSC sequence in a grid value and in --out reached the terminal raw (it set the
    window title); a control character made best-*.toml's comment invalid TOML; the
    values drew "Glyph missing" warnings on the plot. The values themselves stay exact."""
    values = ["\x1b]0;PWNED\x07\x1b[31mRED", "p\x01q[/]", "x\x0by\u2028z"]
    (tmp_path / "base.toml").write_text(BASE)
    grid = ", ".join(json.dumps(v) for v in values)
    (tmp_path / "s.toml").write_text(f'[sweep]\nname = "t"\nflow = "base.toml"\n[grid]\n'
                                     f'"device_train.port" = [{grid}]\n')
    out = tmp_path / "o\x1b[31mR"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["sweep", str(tmp_path / "s.toml"), "--out", str(out)]) == 0
    assert not [w for w in caught if "Glyph" in str(w.message)], [str(w.message) for w in caught]
    cap = capfd.readouterr()
    for stream in (cap.out, cap.err):
        assert "\x1b" not in stream and "\x07" not in stream and "\x01" not in stream, stream
    assert "o\\x1b[31mR" in cap.out and "port=p\\x01q[/]" in cap.err, cap
    best = out / "best-icebreaker.toml"
    doc = tomllib.loads(best.read_text(encoding="utf-8"))
    assert doc["device_train"]["port"] in values
    assert FlowConfig.load(best).device_train.port in values
    assert all(ln.startswith("#") for ln in best.read_text().split("\n")[:3])
