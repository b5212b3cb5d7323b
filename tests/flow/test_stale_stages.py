"""What a ``flow`` run leaves of an earlier run's stages and published report: out-of-date
stages go, whatever way the run ends; the user's edits and links stay."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace

import pytest

from ttforge.errors import ConfigError, TTForgeError
from ttforge.flow import FlowError, default_config, run_flow
from ttforge.flow import stages as stages_mod


def _w5():
    cfg = default_config()
    return replace(cfg, quant=replace(cfg.quant, w_bits=5))   # quantize and after change


def _statuses(result) -> dict[str, str]:
    return {s.name: s.status for s in result.stages}


def test_a_report_copy_edited_during_a_failed_run_is_kept(build_copy, monkeypatch):
    # a later stage failed and the published report.html, annotated by the user while
    # the run went on, was deleted with the out-of-date report/
    def broken(ctx, out):
        with open(build_copy / "report.html", "a") as f:
            f.write("<!-- my annotations -->\n")
        raise ConfigError("injected")

    monkeypatch.setitem(stages_mod._RUN, "sim", broken)
    done = []
    with pytest.raises(FlowError, match="stage sim failed: injected"):
        run_flow(default_config(), build_copy, short=True, force={"sim"}, on_done=done.append)
    assert "my annotations" in (build_copy / "report.html").read_text()
    assert not (build_copy / "report").exists() and not (build_copy / "report.md").exists()
    assert "report.html at the top of the build changed during the run: kept" in done[-1].reason


def test_a_report_copy_edited_during_a_run_is_not_overwritten(build_copy, monkeypatch):
    # the report stage ran and _publish replaced the copy the user had annotated meanwhile
    orig = stages_mod._RUN["report"]

    def edit_then_report(ctx, out):
        with open(build_copy / "report.md", "a") as f:
            f.write("my annotations\n")
        return orig(ctx, out)

    monkeypatch.setitem(stages_mod._RUN, "report", edit_then_report)
    res = run_flow(default_config(), build_copy, short=True, force={"report"})
    assert _statuses(res)["report"] == "ran"
    assert (build_copy / "report.md").read_text().endswith("my annotations\n")
    assert (build_copy / "report.html").read_bytes() == (build_copy / "report" / "report.html").read_bytes()
    assert "report.md at the top of the build changed during the run: kept" in res.stage("report").figure


def test_an_edited_current_stage_that_is_not_run_is_left_alone(build_copy):
    # --until quantize on a current build removed rtl/ with the user's edit, calling it
    # out of date; and sim/ after it, whose record names that rtl's digest
    v = build_copy / "rtl" / "ttforge_accel.v"
    with open(v, "a") as f:
        f.write("// my debug probe: keep\n")
    res = run_flow(default_config(), build_copy, short=True, until="quantize")
    assert v.read_text().endswith("// my debug probe: keep\n")
    assert all((build_copy / s / "stage.json").is_file() for s in ("compile", "rtl", "sim"))
    assert "removed" not in res.stage("rtl").reason and "removed" not in res.stage("sim").reason
    # a run that reaches rtl makes it again (same files: sim stays current)
    st = _statuses(run_flow(default_config(), build_copy, short=True))
    assert st["rtl"] == "ran" and st["sim"] == "skipped"
    assert "my debug probe" not in v.read_text()


def test_an_out_of_date_stage_that_is_a_link_is_not_removed(build_copy, tmp_path):
    # the link was renamed to a temporary that the next run deleted
    mine = tmp_path / "myrtl"
    shutil.move(build_copy / "rtl", mine)
    (build_copy / "rtl").symlink_to(mine)
    files = sorted(os.listdir(mine))
    res = run_flow(_w5(), build_copy, short=True, until="quantize")
    assert (build_copy / "rtl").is_symlink() and sorted(os.listdir(mine)) == files
    assert "out of date but a symbolic link: not removed" in res.stage("rtl").reason
    assert not (build_copy / "compile").exists() and not (build_copy / "sim").exists()
    run_flow(_w5(), build_copy, short=True, until="quantize")   # and the next run too
    assert (build_copy / "rtl").is_symlink() and sorted(os.listdir(mine)) == files
    assert not [p for p in os.listdir(build_copy) if p.startswith(".")]


def test_a_stage_refused_as_the_users_leaves_no_later_stage_or_report(build_copy):
    # compile/ holds a note of the user's and must run again: the refusal (OutputError,
    # not FlowError) kept the old rtl/, sim/ and the report beside the new artifact
    (build_copy / "compile" / "notes.txt").write_text("my notes\n")
    with pytest.raises(TTForgeError, match="notes.txt"):
        run_flow(_w5(), build_copy, short=True, until="rtl")
    assert (build_copy / "compile" / "notes.txt").is_file()
    for s in ("rtl", "sim", "report", "report.html", "report.md"):
        assert not (build_copy / s).exists(), s


def test_a_refusal_in_a_stage_not_run_leaves_no_later_stage_or_report(build_copy):
    # rtl/ out of date but holding the user's note: the refusal kept sim/ and the report
    (build_copy / "rtl" / "notes.txt").write_text("my notes\n")
    done = []
    with pytest.raises(TTForgeError, match="notes.txt") as e:
        run_flow(_w5(), build_copy, short=True, until="quantize", on_done=done.append)
    assert "\n" not in str(e.value)
    assert (build_copy / "rtl" / "notes.txt").is_file()
    assert not (build_copy / "compile").exists()   # out of date before the refusal: removed
    for s in ("sim", "report", "report.html", "report.md"):
        assert not (build_copy / s).exists(), s
    assert done[-1].name == "rtl" and done[-1].status == "failed"
