"""``bench/bench_board_build.py`` without a toolchain: its config loading and its reading
of what the builds left (``--reparse`` over a work directory laid out as a run leaves it:
a seed that met timing, one the build refused, one stopped before its report)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ttforge.hw import parse_report
from tests.support.benches import load_bench

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def bench():
    return load_bench("bench_board_build")


def test_config_is_the_file_or_its_config_entry(bench, tmp_path):
    cfg = {"lanes": 16, "engines": 4}
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    (tmp_path / "r.json").write_text(json.dumps({"label": "x", "config": cfg, "runs": []}))
    assert bench.load_config(tmp_path / "c.json") == cfg
    assert bench.load_config(tmp_path / "r.json") == cfg


def _seed(work: Path, seed: int, rc: int | None, report: bool, manifest: bool, log: str) -> None:
    s = work / f"s{seed}"
    s.mkdir(parents=True)
    (s / "build.log").write_text(log)
    if rc is not None:
        (s / "returncode").write_text(f"{rc}\n")
    if report:
        (s / "keep" / "build").mkdir(parents=True)
        shutil.copy(DATA / "ulx3s_mnist_pnr_report.json", s / "keep" / "build" / "report.json")
    if manifest:
        (s / "out").mkdir()
        (s / "out" / "build.json").write_text(json.dumps({"lut_mapper": "abc9", "fanout_keep": True}))


def test_reparse_reads_met_refused_and_stopped_seeds(bench, tmp_path):
    work = tmp_path / "work"
    _seed(work, 1, 0, True, True, "building...\n")
    _seed(work, 2, 3, True, False, "building...\nerror: timing not met on the ulx3s: Fmax 95.9 MHz\n")
    _seed(work, 3, None, False, False, "building...\n")
    out = tmp_path / "r.json"
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"lanes": 16}))
    assert bench.main(["--config", str(cfg), "--freq", "106.25", "--seeds", "1,2,3", "--label", "t",
                       "--work", str(work), "--reparse", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    s1, s2, s3 = r["seeds"]
    fmax = parse_report(DATA / "ulx3s_mnist_pnr_report.json", "ecp5-85f").fmax_mhz
    assert (s1["timing_met"], s1["fmax_mhz"], s1["lut_mapper"], s1["message"]) == (True, fmax, "abc9", None)
    assert (s2["timing_met"], s2["fmax_mhz"]) == (False, fmax)
    assert s2["message"].startswith("error: timing not met")
    assert (s3["timing_met"], s3["routed"]) == (None, False)
    assert r["summary"] == {"met_seeds": [1], "fmax_min_mhz": fmax, "fmax_median_mhz": fmax}
    assert (r["config"], r["freq_mhz"], r["device"]) == ({"lanes": 16}, 106.25, "ecp5-85f")


def test_reparse_needs_work_and_seeds_are_integers(bench, tmp_path, capsys):
    cfg = tmp_path / "c.json"
    cfg.write_text("{}")
    for argv in (["--reparse"], ["--seeds", "1,x"], ["--jobs", "0"]):
        with pytest.raises(SystemExit) as e:
            bench.main(["--config", str(cfg), "--freq", "100", "--label", "t", *argv])
        assert e.value.code == 2


def test_config_fifo_or_non_object_is_one_usage_line(bench, tmp_path, capsys):
    """A FIFO with no writer as ``--config`` is refused before it is opened (opening it
    would block forever); a JSON that is not an object is refused too."""
    import os
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "list.json").write_text("[1, 2]")
    for path, says in ((fifo, "a FIFO"), (tmp_path / "list.json", "no JSON object")):
        with pytest.raises(SystemExit) as e:
            bench.main(["--config", str(path), "--freq", "100", "--label", "t",
                        "--out", str(tmp_path / "r.json")])
        assert e.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert "--config" in err and says in err, err
    assert not (tmp_path / "r.json").exists()


def test_vs_cpu_takes_the_highest_clock_a_seed_met(tmp_path, monkeypatch):
    """``bench_vs_cpu.board_builds``: per engine config, the board build with the highest
    clock at which some seed met timing; a build no seed met is not a clock reached."""
    vs = load_bench("bench_vs_cpu")
    monkeypatch.setattr(vs, "RESULTS", tmp_path)
    cfg = {"lanes": 16, "requant_units": None, "engines": 4, "read_registers": 2}

    def result(label, mhz, met, fmax):
        (tmp_path / f"board_build.{label}.json").write_text(json.dumps({
            "label": label, "device": "ecp5-85f", "freq_mhz": mhz, "config": cfg,
            "environment": {"git_commit": "c" * 40, "git_dirty": False},
            "summary": {"met_seeds": met}, "seeds": [{"seed": 1, "fmax_mhz": fmax}]}))

    result("a", 100.0, [1], 104.0)
    result("b", 106.25, [1], 107.0)
    result("c", 110.0, [], 107.5)
    got = vs.board_builds()
    assert list(got) == [(16, None, 1, 4, 2)]
    b = got[(16, None, 1, 4, 2)]
    assert (b["label"], b["mhz"], b["met_seeds"], b["fmax_mhz"]) == ("b", 106.25, [1], {"1": 107.0})
