"""The simulator build cache across tasks, workers and runs: the emitted Verilog is cached
by config, fault and generator (``ttforge.sim.runner.emit_verilog``), a model is built
once per key however many workers ask for it at once, and two regressions on one machine
share a build root without colliding."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import ttforge.sim.runner as runner
from ttforge.sim.cluster import ClusterSpec, connect

from tests.support.sims import _available

from tests.support.tiny_builds import SMALL


def _need(sim):
    reason = _available(sim)
    if reason:
        pytest.skip(reason)


@pytest.fixture
def fresh_process_cache(monkeypatch):
    monkeypatch.setattr(runner, "_EMITTED", {})


def test_emitted_verilog_is_cached_on_disk_by_config_fault_and_generator(tmp_path, fresh_process_cache,
                                                                         monkeypatch):
    text = runner.emit_verilog(SMALL, None, cache_root=tmp_path)
    files = sorted((tmp_path / "verilog").glob("*.v"))   # each with its record, <key>.json
    assert len(files) == 1 and files[0].read_text() == text
    # another process (here: this one with its memory cleared) finds it without elaborating
    monkeypatch.setattr(runner, "_EMITTED", {})
    monkeypatch.setattr(runner, "_emit_uncached", lambda *a: pytest.fail("elaborated again"))
    assert runner.emit_verilog(SMALL, None, cache_root=tmp_path) == text


def test_another_fault_or_generator_is_another_key(tmp_path, fresh_process_cache, monkeypatch):
    calls = []
    monkeypatch.setattr(runner, "_emit_uncached", lambda c, f: calls.append(f) or f"// {f}\n")
    runner.emit_verilog(SMALL, None, cache_root=tmp_path)
    runner.emit_verilog(SMALL, "requant_lsb", cache_root=tmp_path)
    assert calls == [None, "requant_lsb"] and len(list((tmp_path / "verilog").glob("*.v"))) == 2
    monkeypatch.setattr(runner, "_EMITTED", {})
    monkeypatch.setattr(runner, "_FINGERPRINT", ["a-changed-generator"])   # an edited hw/ source
    runner.emit_verilog(SMALL, None, cache_root=tmp_path)
    assert calls == [None, "requant_lsb", None] and len(list((tmp_path / "verilog").glob("*.v"))) == 3


def test_the_generator_fingerprint_follows_the_sources(monkeypatch):
    import ttforge.sources as sources

    a = runner.generator_fingerprint()
    assert a == runner.generator_fingerprint()
    monkeypatch.setattr(runner, "_FINGERPRINT", [])
    real = sources.sources_digest
    monkeypatch.setattr(sources, "sources_digest", lambda *names: real(*names) + ("-edited" if "hw" in names else ""))
    assert runner.generator_fingerprint() != a


def test_two_workers_asking_for_one_model_at_once_build_it_once(tmp_path):
    """Two Dask workers build the same (cold) key at the same moment: the file lock lets one
    compile it, the other waits and takes the finished build."""
    _need("icarus")
    with connect(ClusterSpec(None, 2)) as client:
        client.wait_for_workers(2, timeout=60)
        futs = [client.submit(runner.build, SMALL, "icarus", build_root=str(tmp_path), pure=False,
                              workers=[w], key=f"build-{i}")
                for i, w in enumerate(sorted(client.nthreads()))]
        builds = client.gather(futs)
    assert len({b.build_dir for b in builds}) == 1
    assert sorted(b.cached for b in builds) == [False, True]          # one compiled, one reused
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("icarus-") and p.is_dir()]) == 1


@pytest.mark.slow
def test_two_regressions_at_once_share_a_build_root_without_colliding(tmp_path):
    """Two ``ttforge regress --jobs 2`` processes at once, one cold build root: both pass,
    each key is built once, each run keeps its own outputs."""
    _need("icarus")
    cfg = tmp_path / "engine.json"
    cfg.write_text(SMALL.to_json())
    exe = Path(sys.executable).parent / "ttforge"
    procs = [subprocess.Popen([str(exe), "regress", "--seeds", "3", "--seed-start", str(10 * k),
                               "--vectors", "4", "--jobs", "2", "--config", str(cfg),
                               "--build-root", str(tmp_path / "root"), "--out", str(tmp_path / f"out{k}")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=900)
        assert p.returncode == 0, err[-2000:]
    built = [json.loads(m.read_text()) for m in (tmp_path / "root").glob("icarus-*/ttforge_build.json")]
    assert len(built) == 1
    for k in range(2):
        s = json.loads((tmp_path / f"out{k}" / "summary.json").read_text())
        assert s["passed"] == 3 and [r["seed"] for r in s["results"]] == [10 * k, 10 * k + 1, 10 * k + 2]


def test_an_empty_build_root_is_one_line(tmp_path, monkeypatch, capsys):
    """``--build-root ""`` was the working directory (builds landed among the user's files)."""
    from ttforge.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["regress", "--seeds", "1", "--build-root", "", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--build-root is empty" in err[0] and sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_link_or_file_where_a_build_goes_is_one_line(tmp_path):
    """It was an ERROR row per case (NotADirectoryError), exit 1, with reproducers."""
    from ttforge.errors import OutputError
    from ttforge.sim.runner import fresh_build_dir

    (tmp_path / "f").write_text("mine")
    (tmp_path / "l").symlink_to(tmp_path / "elsewhere")
    for name in ("f", "l"):
        with pytest.raises(OutputError, match="not a build directory"):
            fresh_build_dir(tmp_path / name)
    assert (tmp_path / "f").read_text() == "mine" and (tmp_path / "l").is_symlink()
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "x.v").write_text("a build that died")
    fresh_build_dir(tmp_path / "half")
    assert list((tmp_path / "half").iterdir()) == []


def test_the_process_keeps_only_the_most_recently_used_texts(fresh_process_cache, monkeypatch):
    """The Verilog kept in memory is bounded (a sweep over configs, or a long-lived Dask
    worker, kept every text for good): EMITTED_KEPT entries, least recently used first
    out, and at most EMITTED_KEPT_BYTES of them, the newest always kept."""
    calls = []
    monkeypatch.setattr(runner, "_emit_uncached", lambda c, f: calls.append(c) or "x" * c[1])
    k = getattr(runner, "EMITTED_KEPT", 8)   # (8 read on the code before the bound)
    for i in range(k):
        runner.emit_verilog(("cfg", 10, i))
    runner.emit_verilog(("cfg", 10, 0))                 # used again: the newest
    runner.emit_verilog(("cfg", 10, k))                 # pushes out the oldest, 1
    assert len(runner._EMITTED) == k and len(calls) == k + 1
    runner.emit_verilog(("cfg", 10, 0))
    runner.emit_verilog(("cfg", 10, 1))
    assert [c[2] for c in calls[k + 1:]] == [1]         # 0 was kept, 1 elaborated again
    monkeypatch.setattr(runner, "EMITTED_KEPT_BYTES", 100, raising=False)
    runner.emit_verilog(("cfg", 60, 0))                 # four of 10 fit beside it
    assert [c[:2] for c, _ in runner._EMITTED] == [("cfg", 10)] * 4 + [("cfg", 60)]
    runner.emit_verilog(("cfg", 500, 0))                # larger than the budget: kept alone
    assert list(runner._EMITTED) == [(("cfg", 500, 0), None)]


def test_the_training_top_texts_are_bounded_too(monkeypatch):
    """The training top's texts (ttforge.sim.train_runner) follow the same bound."""
    import ttforge.hw.trainer.top as train_top
    import ttforge.sim.train_runner as train_runner

    monkeypatch.setattr(train_runner, "_EMITTED", {})
    k = getattr(runner, "EMITTED_KEPT", 8)
    calls = []
    monkeypatch.setattr(train_top, "verilog", lambda c, fault=None: calls.append(c) or f"// {c}\n")
    for i in range(k + 5):
        assert train_runner._emit(i) == f"// {i}\n"
    assert len(train_runner._EMITTED) == k
    train_runner._emit(k + 4)                           # kept: not emitted again
    assert len(calls) == k + 5
