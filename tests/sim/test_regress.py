"""``ttforge regress``: random cases, a short regression on both simulators in the
default run (longer ones with ``-m slow``), reproducers, the divergence locator, replay
and the command line."""

from __future__ import annotations

import dataclasses

import json
import xml.etree.ElementTree as ET

import numpy as np
import os

import pytest
from pathlib import Path

from ttforge.cli import main
from ttforge.hw.config import AccelConfig
from ttforge.hw.program import compile_program
from ttforge.ir.executor import execute
from ttforge.ir.random import random_network
from ttforge.sim.cases import make_case, random_config
from ttforge.sim.check import locate_divergence
from ttforge.sim.regress import regress
from ttforge.sim.reproducer import replay

from tests.support.sims import SIMS, _available
from tests.support.readonly import read_only

#: One engine most random networks fit: every default-run case on Verilator shares its
#: build (Verilator builds take 15-80 s on this machine; Icarus builds 3 s).
STANDARD = AccelConfig(lanes=4, act_bits=8, core_bits=8, inter_bits=16, acc_bits=32,
                       bias_bits=32, core_depth=1024, bias_depth=128, buf_depth=1024,
                       desc_depth=16, stream_elems=2)


def _need(sim):
    reason = _available(sim)
    if reason:
        pytest.skip(reason)


# ------------------------------------------------------------------------ cases (no simulator)
def test_cases_are_deterministic_and_fit_their_config():
    ranks, lanes, modes, throughput, units = set(), set(), set(), set(), set()
    read_regs = set()
    for seed in range(40):
        a, b = make_case(seed, 3), make_case(seed, 3)
        throughput.add(a.config.throughput)
        read_regs.add((a.config.lanes, a.config.read_registers))
        units.add((a.config.lanes, a.config.requant_units))
        assert a.shape == b.shape and a.config == b.config
        assert np.array_equal(a.inputs, b.inputs)
        smallest = AccelConfig.for_network(a.net, lanes=a.config.lanes,
                                           stream_elems=a.config.stream_elems)
        for k, v in smallest.to_dict().items():
            if k not in ("axil_addr_bits", "requant_units", "buf_ports"):   # options, not sizes
                assert getattr(a.config, k) >= v, (seed, k)
        prog = compile_program(a.net, a.config)
        modes |= {s.mode for s in prog.steps}
        lanes.add(a.config.lanes)
        for layer in a.net.layers:
            ranks |= set(layer.schedule.shape.ranks[1:-1])
    assert {3, 5, 7} <= ranks                   # the odd ranks rank-adaptive training leaves
    assert {1, 2, 4, 8, 16} <= lanes and modes == {0, 1}
    assert throughput == {0, 1}
    # the operand register stage at one lane and at several
    # (and the bank select registered too, 2, at one lane and at several)
    assert {(1, 1), (4, 1), (1, 2), (4, 2)} <= read_regs and {r for _, r in read_regs} == {0, 1, 2}
    # shared requantization units at 4..16 lanes, below the lanes
    shared = {(L, U) for L, U in units if U is not None}
    assert {L for L, _ in shared} >= {4, 8, 16} and all(2 <= U < L for L, U in shared)
    # the short Icarus regression (seeds 0..2) runs one engine in throughput mode
    assert [make_case(s, 1).config.throughput for s in range(3)] == [0, 1, 0]


def test_random_configs_draw_the_icebreakers_options():
    """Single-port buffers and the one serial requantization unit, the iCEBreaker's
    form, were never drawn: the one-lane serial path ran only under --config. Seeds 5
    and 11 draw single-port buffers at one lane, 27 serial requantization at one lane,
    56 both; the networks (drawn first) are those of every other draw."""
    drawn = {s: (make_case(s, 1).config.buf_ports, make_case(s, 1).config.serial_requant)
             for s in range(60)}
    assert drawn[5] == drawn[11] == (1, 0) and drawn[27] == (2, 1) and drawn[56] == (1, 1)
    assert [make_case(s, 1).config.lanes for s in (5, 11, 27)] == [1, 1, 1]
    share = sum(d != (2, 0) for d in drawn.values()) / len(drawn)
    assert 0.1 <= share <= 0.35, share


def test_regression_in_the_icebreakers_form(tmp_path):
    """Seeds 27 (one lane, serial requantization) and 56 (single-port buffers and serial
    requantization at four lanes): outputs exact and cycles the model's, on Icarus."""
    _need("icarus")
    rep = regress([27, 56], "icarus", vectors=6, out_dir=tmp_path)
    assert rep.failed == 0, [(r.seed, r.reason) for r in rep.results if not r.passed]


def test_random_config_is_at_least_the_smallest():
    rng = np.random.default_rng(5)
    for _ in range(20):
        net = random_network(rng)
        cfg = random_config(net, rng)
        assert cfg.fits(net)


def test_more_vectors_keep_the_case():
    a, b = make_case(7, 2), make_case(7, 9)
    assert a.shape == b.shape and (a.gaps, a.backpressure) == (b.gaps, b.backpressure)
    assert np.array_equal(b.inputs[:2].shape, (2, a.inputs.shape[1]))


# ------------------------------------------------------------------------ the default run
@pytest.mark.parametrize("sim", SIMS)
def test_short_regression(sim, tmp_path):
    """A few random networks (random configs on Icarus; on Verilator one shared engine),
    with gaps and back-pressure, every output exact and every counter as predicted."""
    _need(sim)
    config = STANDARD if sim == "verilator" else None
    n, vectors = (4, 40) if sim == "verilator" else (3, 16)
    rep = regress(range(n), sim, jobs=2, vectors=vectors, out_dir=tmp_path, config=config)
    assert rep.failed == 0, [(r.seed, r.reason) for r in rep.results if not r.passed]
    assert rep.vectors == n * vectors and rep.cycles_per_second > 0
    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    assert suite.get("tests") == str(n) and suite.get("failures") == "0"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["passed"] == n and summary["cycles_per_second"] > 0
    assert all(r["cycles"] > 0 for r in summary["results"])


def test_regression_with_the_operand_register_stage(tmp_path):
    """Seed 4 draws ``read_registers = 2`` (the short regression's seeds 0..2 draw 0):
    its outputs exact and its cycles the model's, on Icarus."""
    _need("icarus")
    assert make_case(4, 1).config.read_registers == 2
    rep = regress([4], "icarus", vectors=8, out_dir=tmp_path)
    assert rep.failed == 0, [(r.seed, r.reason) for r in rep.results if not r.passed]


def test_regression_on_an_engine_array(tmp_path):
    """Two engines taking the vectors in turn (``engines = 2``) behind the same AXI
    ports: random networks, gaps and back-pressure, every output exact and in order, the
    summed counters as the model predicts (CYCLES: the engines' busy cycles, so each
    engine's vectors plus its stalls, waiting for its output turn included)."""
    _need("icarus")
    cfg = dataclasses.replace(STANDARD, engines=2)
    rep = regress([0, 1], "icarus", vectors=7, out_dir=tmp_path, config=cfg)
    assert rep.failed == 0, [(r.seed, r.reason) for r in rep.results if not r.passed]
    assert rep.vectors == 14


def test_random_configs_draw_engine_arrays(tmp_path):
    """Some random configs are engine arrays (seeds 20 and 24 draw three engines, 26 two;
    the short regression's seeds 0..2 one): seed 20's random network, gaps and
    back-pressure on three engines, every output exact and in order, on Icarus."""
    drawn = {s: make_case(s, 1).config.engines for s in range(30)}
    assert {s: e for s, e in drawn.items() if e > 1} == {20: 3, 24: 3, 26: 2}
    _need("icarus")
    rep = regress([20], "icarus", vectors=7, out_dir=tmp_path)
    assert rep.failed == 0, [(r.seed, r.reason) for r in rep.results if not r.passed]


def test_a_faulty_rtl_fails_with_a_reproducer_that_replays(tmp_path, capsys):
    """The sibling of the regression: RTL with a flipped requantization bit fails, the
    reproducer holds everything (waveform included), names layer 0 step 0 and the
    element, and replays (still failing, exit 1)."""
    _need("icarus")
    rep = regress([1], "icarus", vectors=3, out_dir=tmp_path, fault="requant_lsb")
    assert rep.failed == 1
    r = rep.results[0]
    assert r.result == "FAIL" and r.reproducer
    rtl = r.divergence["rtl"]
    assert (rtl["step_index"], rtl["layer"], rtl["step"]) == (0, 0, 0)
    assert (rtl["expected"] ^ rtl["got"]) & 1            # bit 0 of the result flipped
    d = tmp_path / "repro-icarus-requant_lsb-seed1"
    for f in ("case.json", "artifact.ttfa", "config.json", "inputs.npy", "expected.npy",
              "got.npy", "load_image.json", "divergence.txt", "waves.fst"):
        assert (d / f).is_file(), f
    assert not np.array_equal(np.load(d / "got.npy"), np.load(d / "expected.npy"))
    assert "layer 0, step 0" in (d / "divergence.txt").read_text()
    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    assert suite.get("failures") == "1"
    assert main(["regress", "--replay", str(d)]) == 1
    assert "layer 0, step 0" in capsys.readouterr().out


def test_a_relative_workdir_gets_its_waveform(tmp_path, monkeypatch):
    """``regress --out`` is relative by default (``regress-out``) and a reproducer's
    waveform run works in ``<out>/.repro-*/waves_run``: the simulator runs inside that
    directory, so the job and waveform paths it is handed must be absolute (relative,
    they named nothing: no job, no results, no ``waves.fst``)."""
    from ttforge.sim.runner import build, run_inference

    _need("icarus")
    case = make_case(3, 1, config=STANDARD)
    prog = compile_program(case.net, STANDARD)
    b = build(STANDARD, "icarus", waves=True)
    monkeypatch.chdir(tmp_path)
    r = run_inference(b, prog, case.inputs[:1], waves=True, workdir="regress-out/waves_run")
    assert np.array_equal(r.outputs, execute(case.net, case.inputs[:1]))
    assert r.waves == tmp_path / "regress-out" / "waves_run" / "waves.fst"
    assert r.waves.stat().st_size > 0


def test_locator_finds_no_divergence_on_good_rtl(get_build):
    _need("icarus")
    case = make_case(3, 1, config=STANDARD)
    b = get_build("icarus", STANDARD)
    prog = compile_program(case.net, STANDARD)
    loc = locate_divergence(b, prog, case.inputs[0])
    assert loc["step_index"] is None
    # and the final outputs of the same run are the executor's
    from ttforge.sim.runner import run_inference
    r = run_inference(b, prog, case.inputs)
    golden = execute(case.net, case.inputs)
    assert np.array_equal(r.outputs, golden)
    golden[0, 0] ^= 1                       # the sibling: one flipped golden bit disagrees
    assert not np.array_equal(r.outputs, golden)


@pytest.mark.parametrize("argv,flag", [
    (["--seeds", "0"], "--seeds"), (["--jobs", "0"], "--jobs"), (["--vectors", "-1"], "--vectors"),
    (["--sim", "modelsim"], "--sim"), (["--fault", "nope"], "--fault"),
    (["--replay", "/nonexistent"], "--replay"),
])
def test_bad_arguments_are_one_line_and_exit_2(argv, flag, capsys):
    assert main(["regress", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag in err


def test_replay_with_out_is_one_line_before_the_replay(tmp_path, monkeypatch, capsys):
    """``--replay R --out DIR`` accepted ``--out`` and dropped it: nothing was written
    there, no message; it is refused in one line, exit 2, before the replay runs."""
    import ttforge.sim.cli as sim_cli

    calls = []
    monkeypatch.setattr(sim_cli, "replay", lambda *a, **k: calls.append(a))
    d = tmp_path / "repro-icarus-seed1"
    d.mkdir()
    (d / "case.json").write_text("{}")
    out = tmp_path / "o"
    assert main(["regress", "--replay", str(d), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--out" in err[0] and "--replay" in err[0] and "drop --out" in err[0], err
    assert calls == [] and not out.exists()


@pytest.mark.parametrize("extra", [["--vectors", "3"], ["--fault", "requant_lsb"], ["--config", "c.toml"],
                                   ["--seeds", "2"], ["--seed-start", "5"], ["--jobs", "2"],
                                   ["--train"], ["--steps", "3"], ["--cluster"], ["--case", "0123456789abcdef"]])
def test_replay_refuses_every_option_it_would_drop(tmp_path, monkeypatch, capsys, extra):
    """``--replay R`` took ``--vectors 3`` and still ran the reproducer's 16 vectors, and
    ``--fault`` gave the reproducer's own verdict as if the fault had been checked: each
    option a replay does not use is one line, exit 2, before the replay."""
    import ttforge.sim.cli as sim_cli

    calls = []
    monkeypatch.setattr(sim_cli, "replay", lambda *a, **k: calls.append(a))
    d = tmp_path / "repro-icarus-seed1"
    d.mkdir()
    (d / "case.json").write_text("{}")
    assert main(["regress", "--replay", str(d), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"drop {extra[0]}" in err[0] and "--replay" in err[0], err
    assert calls == []


@pytest.mark.parametrize("sim", ["icarus", "verilator-native"])
@pytest.mark.parametrize("how", ["flag", "env"])
def test_a_build_cache_that_is_a_file_is_one_line_before_any_case(tmp_path, monkeypatch, capsys, how, sim):
    """--build-root (or $TTFORGE_SIM_CACHE / $TTFORGE_NATIVE_CACHE) naming a file: one
    line naming it, exit 2, nothing written (it failed every case as an RTL error)."""
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    argv = ["regress", "--seeds", "1", "--vectors", "1", "--sim", sim, "--out", str(tmp_path / "r")]
    if how == "flag":
        argv += ["--build-root", str(afile)]
        name = "--build-root"
    else:
        name = "$TTFORGE_NATIVE_CACHE" if sim == "verilator-native" else "$TTFORGE_SIM_CACHE"
        monkeypatch.setenv(name[1:], str(afile))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{name} {afile} is not a directory" in err, err
    assert afile.read_text() == "mine\n" and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_a_build_cache_that_cannot_be_written_is_one_line_before_any_case(tmp_path, monkeypatch, capsys):
    """A read-only cache (here: creating a file in it fails with EROFS, as on a
    read-only mount, which root's permissions do not bypass) failed every case as an
    RTL error: exit 1, "regression failed", a reproducer written."""
    ro = tmp_path / "ro"
    ro.mkdir()
    read_only(monkeypatch, ro)
    monkeypatch.setenv("TTFORGE_SIM_CACHE", str(ro))
    assert main(["regress", "--seeds", "1", "--vectors", "1", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"$TTFORGE_SIM_CACHE {ro} cannot be written" in err, err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("field, value, says", [
    ("gaps", 1e308, "gaps=1e+308 must be a probability in [0, 1)"),
    ("gaps", -1, "gaps=-1 must be a probability"),
    ("gaps", "x", "gaps='x' must be a probability"),
    ("backpressure", 5, "backpressure=5 must be a probability"),
    ("fault", "nosuch", "fault='nosuch' is unknown"),
    ("sim", "modelsim", "sim='modelsim' must be one of"),
    ("seed", -1, "seed=-1 must be an integer"),
    ("seed", 2**70, "seed=1180591620717411303424 must be an integer"),
    ("seed", True, "seed=True must be an integer"),
])
def test_a_damaged_reproducer_is_one_line_not_a_verdict(tmp_path, capsys, field, value, says):
    """A reproducer's case.json with a value regress never writes: one line naming
    case.json and the field, exit 2, before anything runs (gaps of 1e308 read as "1 of 1
    vectors differ", an unknown fault as an ERROR case, exit 1 both)."""
    import json

    d = tmp_path / "repro-icarus-seed0"
    d.mkdir()
    info = {"seed": 0, "sim": "icarus", "fault": None, "gaps": 0.1, "backpressure": 0.2}
    info[field] = value
    (d / "case.json").write_text(json.dumps(info))
    assert main(["regress", "--replay", str(d)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "case.json " + says in err, err


def test_job_directories_of_ended_processes_are_removed(tmp_path, monkeypatch):
    """A job's temporary directory carries its process id; the next job removes those of
    processes that have ended (a failed job's directory, which its error names, was
    never removed), and leaves a running process's and other names alone."""
    import subprocess
    import sys
    import tempfile

    from ttforge.sim.runner import job_dir

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                           text=True, check=True).stdout.strip()
    (tmp_path / f"ttforge-sim-{ended}-abc").mkdir()
    (tmp_path / f"ttforge-sim-{ended}-abc" / "sim.log").write_text("log")
    (tmp_path / f"ttforge-sim-{ended}-abc" / ".ttforge-job").write_text("")
    # a directory of such a name that ttforge did not make (no marker) is never deleted
    (tmp_path / f"ttforge-sim-{ended}-mine").mkdir()
    (tmp_path / f"ttforge-sim-{ended}-mine" / "important.txt").write_text("mine")
    (tmp_path / f"ttforge-sim-{os.getppid()}-def").mkdir()   # a running process
    (tmp_path / "ttforge-sim-notapid").mkdir()
    (tmp_path / "ttforge-simulation").mkdir()
    d = job_dir("ttforge-sim-")
    assert d.parent == tmp_path and d.name.startswith(f"ttforge-sim-{os.getpid()}-")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [d.name, f"ttforge-sim-{os.getppid()}-def", "ttforge-sim-notapid", "ttforge-simulation",
         f"ttforge-sim-{ended}-mine"])
    assert (d / ".ttforge-job").is_file()
    assert job_dir("ttforge-sim-").exists() and d.exists()   # this process's own stay


# ------------------------------------------------------------------------ slow
@pytest.mark.slow
@pytest.mark.parametrize("sim", SIMS)
def test_long_regression(sim, tmp_path):
    _need(sim)
    rep = regress(range(100, 124), sim, jobs=2, vectors=32, out_dir=tmp_path)
    assert rep.failed == 0, [(r.seed, r.reason) for r in rep.results if not r.passed]


@pytest.mark.slow
@pytest.mark.parametrize("sim", SIMS)
@pytest.mark.parametrize("fault", ["requant_lsb", "wrong_stride", "sat_bound", "drop_tlast",
                                   "round_off_by_one"])
def test_faults_fail_the_regression(sim, fault, tmp_path):
    _need(sim)
    # round_off_by_one changes ties only: 32 vectors per seed see them (4 of 4 seeds fail)
    vectors = 32 if fault == "round_off_by_one" else 16
    rep = regress(range(4), sim, jobs=2, vectors=vectors, out_dir=tmp_path, fault=fault,
                  config=STANDARD)
    assert rep.failed >= 1
    assert all(r.reproducer for r in rep.results if not r.passed)


@pytest.mark.slow
def test_a_reproducer_replays_on_the_other_simulator(tmp_path):
    """An Icarus reproducer (with its fault) fails the same way on Verilator."""
    _need("icarus")
    _need("verilator")
    rep = regress([2], "icarus", vectors=2, out_dir=tmp_path, fault="requant_lsb")
    res = replay(rep.results[0].reproducer, sim="verilator")
    assert res.result == "FAIL"
    assert res.divergence["rtl"]["step_index"] == rep.results[0].divergence["rtl"]["step_index"]


@pytest.mark.slow
def test_verilator_reproducer_has_a_vcd(tmp_path):
    _need("verilator")
    rep = regress([1], "verilator", vectors=2, out_dir=tmp_path, fault="requant_lsb",
                  config=STANDARD)
    d = tmp_path / "repro-verilator-requant_lsb-seed1"
    assert rep.failed == 1 and (d / "dump.vcd").is_file()
    assert "$enddefinitions" in (d / "dump.vcd").read_text()[:200_000]


# ------------------------------------------------------------------------ native bulk runs
def test_native_regression_and_its_fault_sibling(tmp_path):
    """``--sim verilator-native``: the same cases and checks through the C++ harness (one
    shared engine); the same engine with a flipped requantization bit must fail."""
    _need("verilator")
    rep = regress(range(4), "verilator-native", jobs=2, vectors=50, out_dir=tmp_path / "ok",
                  config=STANDARD)
    assert rep.failed == 0, [(r.seed, r.reason) for r in rep.results if not r.passed]
    assert rep.vectors == 200 and all(r.cycles > 0 for r in rep.results)
    bad = regress(range(2), "verilator-native", jobs=1, vectors=8, out_dir=tmp_path / "bad",
                  config=STANDARD, fault="requant_lsb")
    assert bad.failed == 2 and all("vectors differ" in r.reason for r in bad.results)


def test_summary_table_marks_throughput_mode():
    """The summary table says which cases ran an engine in throughput mode."""
    import io

    from ttforge.sim.check import CaseResult
    from ttforge.sim.report import RegressReport, print_table

    def row(seed, tp):
        return CaseResult(seed=seed, sim="icarus", shape="4>4", lanes=4, stream_elems=1,
                          steps=1, vectors=2, gaps=0.0, backpressure=0.0,
                          config={"lanes": 4, "throughput": tp})
    buf = io.StringIO()
    print_table(RegressReport(sim="icarus", results=[row(11, 0), row(12, 1)], seconds=1.0),
                file=buf)
    lines = {ln.split()[1]: ln for ln in buf.getvalue().splitlines()
             if ln.split()[1:2] in (["11"], ["12"])}
    assert "yes" in lines["12"] and "yes" not in lines["11"]


@pytest.mark.parametrize("error", ["OutputError", "ToolchainMissing", "NativeError"])
def test_a_native_case_builds_under_build_root_and_the_machine_s_trouble_stops_the_run(monkeypatch, tmp_path,
                                                                                        error):
    """``--build-root`` reached the cocotb builds only (the native harness went to
    ``~/.cache``), and a cache lock that is a link or a missing tool was an ERROR row per
    case (exit 1, reproducers); a failed build stays the case's row (the generated RTL may
    be what fails to compile), marked ``build_failed`` so that the run ends in exit 3."""
    import ttforge.errors as errors
    import ttforge.sim.native as native
    from ttforge.sim.check import run_case

    seen = {}

    def build_native(config, *, fault=None, build_root=None, **kw):
        seen["root"] = build_root
        raise getattr(errors, error)("the trouble")

    monkeypatch.setattr(native, "build_native", build_native)
    case = make_case(3, 2)
    if error == "NativeError":
        res = run_case(case, "verilator-native", build_root=tmp_path)
        assert res.result == "ERROR" and "the trouble" in res.reason and res.build_failed
    else:
        with pytest.raises(getattr(errors, error), match="the trouble"):
            run_case(case, "verilator-native", build_root=tmp_path)
    assert seen["root"] == tmp_path


# ------------------------------------------------------------------ commands to paste (no simulator)
HOSTILE_OUT = "rq o;$(touch PWN)`touch PWN2`'\""


def _pasted(command: str, cwd: Path) -> list[str]:
    """The arguments ``ttforge`` gets when ``command`` is pasted into a shell."""
    import subprocess

    out = subprocess.run(["sh", "-c", 'ttforge() { printf "%s\\0" "$@"; }\n' + command], cwd=cwd,
                         capture_output=True, timeout=30, check=True).stdout
    assert not (cwd / "PWN").exists() and not (cwd / "PWN2").exists()
    return os.fsdecode(out).split("\0")[:-1]


def test_the_replay_command_of_a_reproducer_is_quoted_for_the_shell(tmp_path):
    """``--out 'rq o;$(touch PWN)'``: case.json said ``ttforge regress --replay rq o;$(touch
    PWN)/repro-...``, which ran ``touch PWN`` when pasted (and replayed ``rq``), also in a
    reproducer that came back from a cluster worker (``_unpack_reproducer``)."""
    import io
    import tarfile

    from ttforge.sim.check import CaseResult
    from ttforge.sim.regress import _unpack_reproducer
    from ttforge.sim.reproducer import write_reproducer

    case = make_case(3, 2, config=STANDARD)
    prog = compile_program(case.net, STANDARD)
    res = CaseResult(seed=3, sim="icarus", shape=case.shape, lanes=4, stream_elems=2, steps=1, vectors=2,
                     gaps=0, backpressure=0, result="FAIL", reason="a test")
    out = tmp_path / HOSTILE_OUT
    expected = execute(case.net, case.inputs)
    d = write_reproducer(case, "icarus", res, prog, expected, expected, out, waves=False)
    info = json.loads((d / "case.json").read_text())
    assert _pasted(info["replay"], d) == ["regress", "--replay", "."]

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(d, arcname=".")
    other = tmp_path / (HOSTILE_OUT + " 2")
    other.mkdir()
    res.reproducer = str(d)
    _unpack_reproducer(buf.getvalue(), other, res)
    info = json.loads((other / d.name / "case.json").read_text())
    assert _pasted(info["replay"], other / d.name) == ["regress", "--replay", "."]


def test_a_reproducer_s_replay_command_runs_wherever_the_directory_is(tmp_path, monkeypatch, capsys):
    """case.json's replay command held ``--out`` as typed (``regress --out rg``:
    ``--replay rg/repro-...``), relative to where regress ran: from anywhere else, or
    once the directory was moved or sent to a colleague, it named nothing. It is run in
    the reproducer's directory (``replay_from`` says so) and names no path of this
    machine."""
    import shlex

    from ttforge.sim.check import CaseResult
    from ttforge.sim.reproducer import write_reproducer

    _need("icarus")
    case = make_case(3, 2, config=STANDARD)
    prog = compile_program(case.net, STANDARD)
    res = CaseResult(seed=3, sim="icarus", shape=case.shape, lanes=4, stream_elems=2, steps=1, vectors=2,
                     gaps=0, backpressure=0, result="FAIL", reason="a test")
    expected = execute(case.net, case.inputs)
    monkeypatch.chdir(tmp_path)
    d = write_reproducer(case, "icarus", res, prog, expected, expected, Path("rg"), waves=False)
    text = (d / "case.json").read_text()
    assert str(tmp_path) not in text and shlex.split(json.loads(text)["replay"])[-2:] == ["--replay", "."]
    moved = tmp_path / "elsewhere" / "sent"
    moved.parent.mkdir()
    d.rename(moved)
    info = json.loads((moved / "case.json").read_text())
    assert "case.json" in info["replay_from"]
    monkeypatch.chdir(moved)   # where replay_from says to run it
    argv = shlex.split(info["replay"])
    assert argv[0] == "ttforge" and main(argv[1:]) == 0   # the stored outputs were the golden ones
    assert "passes now" in capsys.readouterr().out


def test_the_reproduce_command_of_a_training_case_is_quoted_and_keeps_its_fault(tmp_path):
    """It left out ``--fault``: a mutation run's failing case passed when rerun."""
    from ttforge.sim.train_regress import reproduce_command

    assert _pasted(reproduce_command(7, 100, "x;touch PWN"), tmp_path) == [
        "regress", "--train", "--seed-start", "7", "--seeds", "1", "--steps", "100", "--fault", "x;touch PWN"]
    assert "--fault" not in reproduce_command(7, 100, None)


def test_a_failed_simulator_build_is_exit_3_as_in_flow_after_every_case_ran(monkeypatch, tmp_path, capsys):
    """A native build that failed made ``regress`` exit 1 (an ERROR row, as if the check
    had failed) and ``flow`` exit 3 for the same failure; both are 3 now (the tool's
    trouble, docs/hardening.md), with every case run and written first, also for
    ``--replay``; a case that failed its check still makes it 1."""
    import ttforge.sim.native as native
    from ttforge.errors import NativeError

    from ttforge.sim.runner import simulator_problem

    if simulator_problem("verilator-native"):
        pytest.skip(simulator_problem("verilator-native"))

    def build_native(config, **kw):
        raise NativeError("native harness build failed (verilator exit 2): main.cpp:1:1: error: no")

    monkeypatch.setattr(native, "build_native", build_native)
    out = tmp_path / "rg"
    assert main(["regress", "--sim", "verilator-native", "--seeds", "2", "--vectors", "2",
                 "--out", str(out)]) == 3
    err = capsys.readouterr().err
    assert "error: 2 of 2 cases could not be built (seed 0: NativeError: native harness build failed" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cases"] == 2 and all(r["build_failed"] for r in summary["results"])
    repro = next(out.glob("repro-*"))
    assert main(["regress", "--replay", str(repro)]) == 3
    # the hardware's verdict comes first
    from ttforge.sim.check import CaseResult
    from ttforge.sim.cli import _verdict

    row = dict(seed=1, sim="verilator-native", shape="?", lanes=1, stream_elems=1, steps=1, vectors=1,
               gaps=0, backpressure=0)
    assert _verdict([CaseResult(**row, result="FAIL"), CaseResult(**row, result="ERROR", build_failed=True)]) == 1
    assert _verdict([CaseResult(**row, result="ERROR")]) == 1 and _verdict([CaseResult(**row)]) == 0


def test_a_config_that_is_one_of_the_outputs_is_refused_before_any_case(tmp_path, monkeypatch, capsys):
    """``--config OUT/summary.json --out OUT``: the clash was found after every case ran,
    with junit.xml of the new run written beside the old summary.json (the user's
    config); now one line, exit 2, before any case, both files as they were."""
    from ttforge.atomic import claim_work_dir
    from ttforge.sim import cli as sim_cli

    out = claim_work_dir(tmp_path / "own")
    (out / "summary.json").write_text('{"lanes": 4}\n')   # the user's config, under that name
    (out / "junit.xml").write_text("<testsuite/>\n")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(sim_cli, "regress", lambda *a, **k: pytest.fail("ran a case"))
    assert main(["regress", "--seeds", "1", "--vectors", "1", "--config", str(out / "summary.json"),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "summary.json is the input" in err, err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_run_that_fails_before_its_work_takes_back_its_new_out(tmp_path, capsys):
    """A scheduler nobody listens on: exit 3 in one line, and the new --out it made is
    gone (it was left holding only its claim, ``.ttforge-work``)."""
    out = tmp_path / "new" / "out"
    assert main(["regress", "--seeds", "1", "--vectors", "1", "--cluster", "tcp://127.0.0.1:1",
                 "--out", str(out)]) == 3
    assert capsys.readouterr().err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []
