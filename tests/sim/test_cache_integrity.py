"""A cache entry is trusted only when its record vouches for its content: an emitted
Verilog with its sha256 beside it, a simulator build whose marker holds the sha256 of
the Verilog it compiled and of what it runs (``sim.vvp``, the Verilated executable,
``ttf_native``). A swapped, truncated or emptied entry is a miss, rebuilt; it never gave
a verdict of another design (a clean entry made ``regress --fault`` pass) nor failed
every later run. ``regress --out`` is one run's at a time, and holds only its reproducers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import ttforge.sim.runner as runner
from ttforge.atomic import output_lock
from ttforge.cli import main

from tests.support.tiny_builds import SMALL, build_tiny as _build_tiny
from tests.support.sims import _available

REGRESS = ["regress", "--seed-start", "1", "--seeds", "1", "--vectors", "4", "--sim", "icarus"]


@pytest.fixture
def fresh_process_cache(monkeypatch):
    monkeypatch.setattr(runner, "_EMITTED", {})


# ----------------------------------------------------------------------------- emitted Verilog
def _entry(root: Path) -> Path:
    (v,) = sorted((root / "verilog").glob("*.v"))
    return v


@pytest.mark.parametrize("damage", ["swapped", "empty", "truncated", "record-of-another"])
def test_a_damaged_emitted_verilog_is_emitted_again(tmp_path, monkeypatch, fresh_process_cache, damage):
    calls = []
    monkeypatch.setattr(runner, "_emit_uncached", lambda c, f: calls.append(f) or f"module m; // {f}\nendmodule\n")
    good = runner.emit_verilog(SMALL, "requant_lsb", cache_root=tmp_path)
    v = _entry(tmp_path)
    if damage == "swapped":
        v.write_text("module m; // None\nendmodule\n")   # the clean design's text
    elif damage == "empty":
        v.write_text("")
    elif damage == "truncated":
        v.write_text(good[:5])
    else:   # the text and its record both copied from another key
        other = tmp_path / "verilog" / "0123.v"
        other.write_text("module m; // None\nendmodule\n")
        runner.write_emitted(other, "0123", other.read_text())
        shutil.copy(other, v)
        shutil.copy(other.with_suffix(".json"), v.with_suffix(".json"))
    monkeypatch.setattr(runner, "_EMITTED", {})   # another process
    assert runner.emit_verilog(SMALL, "requant_lsb", cache_root=tmp_path) == good
    assert calls == ["requant_lsb", "requant_lsb"] and v.read_text() == good   # healed
    monkeypatch.setattr(runner, "_EMITTED", {})
    assert runner.emit_verilog(SMALL, "requant_lsb", cache_root=tmp_path) == good and len(calls) == 2


@pytest.mark.parametrize("kind", ["fifo", "directory", "link"])
def test_something_else_in_place_of_an_entry_costs_time_only(tmp_path, monkeypatch, fresh_process_cache, kind):
    """It was 'is a FIFO; ... choose another output path', exit 2: the user's output."""
    monkeypatch.setattr(runner, "_emit_uncached", lambda c, f: "module m;\nendmodule\n")
    runner.emit_verilog(SMALL, None, cache_root=tmp_path)
    v = _entry(tmp_path)
    v.unlink()
    if kind == "fifo":
        os.mkfifo(v)
    elif kind == "directory":
        v.mkdir()
    else:
        (tmp_path / "elsewhere.v").write_text("module m;\nendmodule\n")
        v.symlink_to(tmp_path / "elsewhere.v")
    monkeypatch.setattr(runner, "_EMITTED", {})
    assert runner.emit_verilog(SMALL, None, cache_root=tmp_path) == "module m;\nendmodule\n"
    assert v.is_dir() if kind == "directory" else (v.is_file() and not v.is_symlink())


@pytest.mark.parametrize("kind", ["fifo", "link"])
def test_something_else_in_place_of_a_record_is_replaced(tmp_path, monkeypatch, fresh_process_cache, kind):
    """A FIFO at ``verilog/<key>.json`` was never replaced: the record could never be
    written and that key's Verilog was emitted again on every run."""
    calls = []
    monkeypatch.setattr(runner, "_emit_uncached", lambda c, f: calls.append(f) or "module m;\nendmodule\n")
    runner.emit_verilog(SMALL, None, cache_root=tmp_path)
    rec = _entry(tmp_path).with_suffix(".json")
    elsewhere = tmp_path / "elsewhere.json"
    shutil.copy(rec, elsewhere)
    rec.unlink()
    if kind == "fifo":
        os.mkfifo(rec)
    else:
        rec.symlink_to(elsewhere)
    for _ in range(2):   # two more processes: the first emits and heals, the second reads the cache
        monkeypatch.setattr(runner, "_EMITTED", {})
        assert runner.emit_verilog(SMALL, None, cache_root=tmp_path) == "module m;\nendmodule\n"
    assert len(calls) == 2 and rec.is_file() and not rec.is_symlink()
    assert elsewhere.read_text() == rec.read_text()   # a link's target is left as it was


# ----------------------------------------------------------------------------- regress end to end
@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory):
    """A build cache holding the clean and the ``requant_lsb`` builds of seed 1."""
    if _available("icarus"):
        pytest.skip(_available("icarus"))
    root = tmp_path_factory.mktemp("warm")
    for extra in ([], ["--fault", "requant_lsb"]):
        runner._EMITTED.clear()
        assert main([*REGRESS, *extra, "--build-root", str(root / "c"), "--out", str(root / "o")]) == (1 if extra else 0)
    return root / "c"


def _regress(tmp_path, cache, *extra) -> int:
    runner._EMITTED.clear()   # a new process: what it knows comes from the cache
    return main([*REGRESS, *extra, "--build-root", str(cache), "--out", str(tmp_path / "out")])


def _builds(cache: Path) -> dict[object, Path]:
    return {json.loads((d / "ttforge_build.json").read_text())["fault"]: d for d in cache.glob("icarus-*")
            if (d / "ttforge_build.json").is_file()}


def _verilog(cache: Path, fault) -> Path:
    key = runner.hashlib.sha256(json.dumps({"config": _case_config().to_dict(), "fault": fault,
                                            "generator": runner.generator_fingerprint()},
                                           sort_keys=True).encode()).hexdigest()[:24]
    return cache / "verilog" / f"{key}.v"


def _case_config():
    from ttforge.sim.cases import make_case

    return make_case(1, 4).config


def test_the_clean_verilog_in_place_of_a_faults_does_not_make_the_fault_pass(tmp_path, warm_cache):
    """The probe: ``cp verilog/A.v verilog/B.v`` and ``regress --fault`` said 'seed 1: pass', exit 0."""
    cache = tmp_path / "c"
    shutil.copytree(warm_cache, cache)
    shutil.copy(_verilog(cache, None), _verilog(cache, "requant_lsb"))
    assert _regress(tmp_path, cache, "--fault", "requant_lsb") == 1
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["results"][0]["result"] == "FAIL"


def test_the_clean_simulator_in_place_of_a_faults_does_not_make_the_fault_pass(tmp_path, warm_cache):
    cache = tmp_path / "c"
    shutil.copytree(warm_cache, cache)
    b = _builds(cache)
    shutil.copy(b[None] / "sim.vvp", b["requant_lsb"] / "sim.vvp")
    assert _regress(tmp_path, cache, "--fault", "requant_lsb") == 1


@pytest.mark.parametrize("damage", ["empty verilog", "truncated sim.vvp"])
def test_a_damaged_entry_heals(tmp_path, warm_cache, capsys, damage):
    """An empty Verilog failed every later run, exit 3 ('Unable to find the root module');
    a truncated sim.vvp every case ('Command failed with return code: 1'), exit 1."""
    cache = tmp_path / "c"
    shutil.copytree(warm_cache, cache)
    if damage == "empty verilog":
        _verilog(cache, None).write_text("")
    else:
        vvp = _builds(cache)[None] / "sim.vvp"
        vvp.write_bytes(vvp.read_bytes()[:1000])
    assert _regress(tmp_path, cache) == 0, capsys.readouterr().err
    assert _regress(tmp_path, cache) == 0


def test_a_damaged_verilog_in_a_simulator_build_is_rebuilt(tmp_path):
    """The marker vouched for ``sim.vvp`` only: one flipped byte of the build's
    ``ttforge_accel.v`` (which flow checks against rtl/) failed every later
    ``flow --force sim``, exit 3, telling the user to remove the whole cache."""
    if _available("icarus"):
        pytest.skip(_available("icarus"))
    b = runner.build(SMALL, "icarus", build_root=tmp_path)
    good = b.verilog_path.read_bytes()
    bad = bytearray(good)
    bad[1000] ^= 1
    b.verilog_path.write_bytes(bytes(bad))
    again = runner.build(SMALL, "icarus", build_root=tmp_path)
    assert again.build_dir == b.build_dir and not again.cached
    assert again.verilog_path.read_bytes() == good
    assert runner.build(SMALL, "icarus", build_root=tmp_path).cached   # then cached


def test_a_damaged_verilog_in_a_training_engine_build_is_rebuilt(tmp_path):
    """The training engine's builds as the inference ones': a damaged copy of the
    Verilog kept beside an intact simulator is a miss, rebuilt (the marker vouched for
    ``sim.vvp`` only)."""
    from ttforge.sim.train_runner import build_train, case_config

    if _available("icarus"):
        pytest.skip(_available("icarus"))
    engine = dict(lanes=2, act_depth=64, grad_depth=64, core_depth=64, bias_depth=16, desc_depth=16,
                  max_batch=2, max_classes=4)
    cfg = case_config(dict(seed=0, batch=2, steps=1, engine=engine,
                           net=dict(n_layers=1, d=2, rank=2, n_in=4, hidden=4, n_out=3)))[1]
    b = build_train(cfg, "icarus", build_root=tmp_path)
    good = b.verilog_path.read_bytes()
    b.verilog_path.write_bytes(good[:len(good) // 2])
    again = build_train(cfg, "icarus", build_root=tmp_path)
    assert again.build_dir == b.build_dir and not again.cached and again.verilog_path.read_bytes() == good
    assert build_train(cfg, "icarus", build_root=tmp_path).cached   # then cached


# ----------------------------------------------------------------------------- the native cache
def test_a_truncated_native_executable_is_rebuilt(tmp_path):
    """A truncated ttf_native crashed every case (NativeError: exit status -11), for good."""
    d, cached, _ = _build_tiny(tmp_path)
    good = (d / "tiny").read_bytes()
    (d / "tiny").write_bytes(good[:1000])
    d2, cached2, _ = _build_tiny(tmp_path)
    assert d2 == d and not cached2 and (d / "tiny").read_bytes() == good
    assert subprocess.run([str(d / "tiny")], capture_output=True, text=True).stdout.strip() == "n=6"
    assert _build_tiny(tmp_path)[1]   # then cached


@pytest.mark.parametrize("name", ["tiny.v", "include/tiny.h"])
def test_a_damaged_input_beside_a_native_executable_is_rebuilt(tmp_path, name):
    """build.json vouched for ``ttf_native`` only: a damaged ``ttforge_accel.v`` beside
    it (flow reads it) failed every flow run, exit 3; the headers of ``include/`` are
    what a C driver compiles against."""
    d, _, _ = _build_tiny(tmp_path)
    good = (d / name).read_bytes()
    (d / name).write_bytes(good[:-2] + bytes([good[-2] ^ 1]) + good[-1:])
    d2, cached2, _ = _build_tiny(tmp_path)
    assert d2 == d and not cached2 and (d / name).read_bytes() == good
    assert _build_tiny(tmp_path)[1]   # then cached


def test_what_a_killed_native_build_left_goes_with_the_next_build(tmp_path):
    """``.<key>.<random>/`` had no pid in its name and stayed in the cache for good."""
    d, _, _ = _build_tiny(tmp_path)
    dead = subprocess.Popen(["true"])
    dead.wait()
    left = tmp_path / f".{d.name}.ttforge-{dead.pid}.abc123"
    (left / "obj_dir").mkdir(parents=True)
    shutil.rmtree(d)
    _build_tiny(tmp_path)
    assert not left.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# ----------------------------------------------------------------------------- regress --out
def test_a_second_regress_into_one_out_is_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    with output_lock(out, "--out"):
        assert main([*REGRESS, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "being written by another ttforge run" in err[0]


def test_an_earlier_runs_reproducers_go_when_a_run_starts(tmp_path, warm_cache):
    """A failing run's repro-* stayed beside a later passing summary.json."""
    cache = tmp_path / "c"
    shutil.copytree(warm_cache, cache)
    assert _regress(tmp_path, cache, "--fault", "requant_lsb") == 1
    out = tmp_path / "out"
    assert [p.name for p in out.glob("repro-*")]
    (out / "repro-mine").mkdir()   # not a reproducer: not ours to remove
    # a reproducer the user added a file to (or made: a case.json beside their own file)
    # is theirs too: rmtree took notes.txt and thesis.txt with it
    kept = sorted(out.glob("repro-*-seed*"))[0]
    (kept / "notes.txt").write_text("my analysis")
    (out / "repro-case").mkdir()
    (out / "repro-case" / "case.json").write_text("{}")
    (out / "repro-case" / "thesis.txt").write_text("precious")
    assert _regress(tmp_path, cache) == 0
    assert sorted(p.name for p in out.glob("repro-*")) == sorted(["repro-mine", "repro-case", kept.name])
    assert (kept / "notes.txt").read_text() == "my analysis"
    assert (out / "repro-case" / "thesis.txt").read_text() == "precious"
