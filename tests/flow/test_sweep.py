"""``ttforge sweep``: the config and its one-line errors, the Pareto front, the TOML of the
best point, and a small sweep run end to end and then resumed without recomputing."""

from __future__ import annotations

import csv
import errno
import json
from pathlib import Path

import pytest

from ttforge.cli import main
from ttforge.errors import ConfigError, FlowError, MachineFailure, OutputError, TTForgeError
from ttforge.flow import FlowConfig
from ttforge.flow import sweep as sweep_mod
from ttforge.flow.sweep import load_sweep, pareto_front, run_sweep, to_toml

from tests.support.flows import TINY_FLOW_TOML
from tests.support.toml import tomllib

BASE = TINY_FLOW_TOML


def _write(tmp_path, grid: str, sweep: str = "") -> str:
    (tmp_path / "base.toml").write_text(BASE)
    p = tmp_path / "s.toml"
    p.write_text(f'[sweep]\nname = "t"\nflow = "base.toml"\n{sweep}\n[grid]\n{grid}\n')
    return str(p)


def test_points_are_validated_flow_configs(tmp_path):
    cfg = load_sweep(_write(tmp_path, "ranks = [2, 3]\nw_bits = [4, 8]\nboard = ['icebreaker', 'ulx3s']"))
    pts = cfg.points()
    assert len(pts) == 8 and len({p.key for p in pts}) == 8
    flows = [FlowConfig.from_dict(p.flow) for p in pts]
    assert {(f.train.model.ranks, f.quant.w_bits, f.bitstream.board) for f in flows} == {
        (r, w, b) for r in (2, 3) for w in (4, 8) for b in ("icebreaker", "ulx3s")}
    assert all(f.train.epochs == 1 for f in flows)          # the base config's other values


@pytest.mark.parametrize("grid,sweep,match", [
    ("", "", r"\[grid\] is empty"),
    ("colour = [1]", "", "not an axis"),
    ("w_bits = [4, 1]", "", r"point w_bits=1: \[quant\] w_bits"),
    ("ranks = []", "", "non-empty list"),
    ("ranks = [2, 2]", "", "twice"),
    ("hidden = [40, 48]", "", r"each value is a list of hidden layer widths; write hidden = \[\[40\], \[48\]\]"),
    ("ranks = [2]", 'until = "report"', "until"),
    ("ranks = [2]", "speed = 1", "unknown key"),
    ("board = ['icebreaker', 'de10']", "", "board"),
    ("stream_elems = [1, 3]", "", r"point stream_elems=3: \[hw\] stream_elems=3 must be a power of two in 1\.\.128"),
    ("lanes = [1]", 'until = "bitstream"\nshort = true', r"\[sweep\] short = true builds no bitstream"),
])
def test_a_bad_sweep_config_is_one_line(tmp_path, grid, sweep, match, capsys):
    path = _write(tmp_path, grid, sweep)
    with pytest.raises(ConfigError, match=match):
        load_sweep(path)
    assert main(["sweep", path, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and not (tmp_path / "o").exists()


def test_pareto_front_keeps_only_undominated_points():
    rows = [{"cycles": 100, "int_acc": 0.90}, {"cycles": 200, "int_acc": 0.95},
            {"cycles": 150, "int_acc": 0.89},          # dominated by the first
            {"cycles": 300, "int_acc": 0.95},          # dominated by the second (same acc, more cycles)
            {"cycles": None, "int_acc": 0.99}]         # no cost: left out
    assert pareto_front(rows, "cycles") == [0, 1]
    rows[2]["int_acc"] = 0.91                           # the sibling: now it is on the front
    assert pareto_front(rows, "cycles") == [0, 2, 1]


def test_toml_of_a_flow_config_reads_back_as_the_same_config(tmp_path):
    (tmp_path / "base.toml").write_text(BASE)
    cfg = FlowConfig.load(tmp_path / "base.toml")
    text = to_toml(sweep_mod._plain(cfg.to_dict()), "a header\nof two lines")
    again = FlowConfig.from_dict(tomllib.loads(text))
    assert again.to_dict() == cfg.to_dict()


def test_toml_strings_beyond_the_basic_plane_and_del_read_back_exactly():
    """An emoji was written as JSON's surrogate pair "\\ud83d\\ude00", which TOML refuses
    (best-*.toml of a sweep over such a value did not load); DEL is escaped, as TOML needs."""
    values = ["\U0001f600 \u00e9", "a\x7fb\x1b\n\"\\", "\u202e"]
    text = to_toml({"device_train": {"port": values}})
    assert "\x7f" not in text
    assert tomllib.loads(text)["device_train"]["port"] == values


def test_a_small_sweep_end_to_end_and_resumed(tmp_path, monkeypatch):
    """Two points (rank bound 2 and 3) through train -> quantize -> compile: a row each
    with accuracy, on-chip bytes and cycles, the CSV, the Pareto plot and the best point's
    flow config (which loads); a second run recomputes nothing."""
    cfg = load_sweep(_write(tmp_path, "ranks = [2, 3]"))
    res = run_sweep(cfg, tmp_path / "out")
    assert [r["status"] for r in res.rows] == ["ok", "ok"], [r["reason"] for r in res.rows]
    assert all(0 < r["int_acc"] <= 1 and r["cycles"] > 0 and r["on_chip_bytes"] > 0 for r in res.rows)
    assert res.rows[0]["on_chip_bytes"] < res.rows[1]["on_chip_bytes"]    # rank 2 is smaller
    out = tmp_path / "out"
    with open(out / "sweep.csv") as f:
        table = list(csv.DictReader(f))
    assert [t["ranks"] for t in table] == ["2", "3"] and all(t["status"] == "ok" for t in table)
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    best = FlowConfig.load(out / "best-icebreaker.toml")
    want = max(res.rows, key=lambda r: (r["int_acc"], -r["cycles"]))
    assert best.train.model.ranks == want["params"]["train.model.ranks"]
    assert json.loads((out / "sweep.json").read_text())["complete"]

    monkeypatch.setattr(sweep_mod, "point_task", lambda args: pytest.fail("recomputed a finished point"))
    again = run_sweep(cfg, out)
    assert again.reused == 2 and again.rows == res.rows

    # a file the sweep wrote and the user edited since, or one it did not write, is never
    # replaced (an edited best-*.toml was overwritten silently)
    toml = out / "best-icebreaker.toml"
    mine = toml.read_text() + "# my tuned\n"
    toml.write_text(mine)
    with pytest.raises(OutputError, match="best-icebreaker.toml was changed after ttforge sweep wrote it"):
        run_sweep(cfg, out)
    assert toml.read_text() == mine
    toml.unlink()
    (out / "notes.txt").write_text("mine\n")
    with pytest.raises(OutputError, match="holds notes.txt, which ttforge sweep did not write"):
        run_sweep(cfg, out)
    (out / "notes.txt").unlink()
    assert run_sweep(cfg, out).reused == 2 and toml.is_file()

    # a crafted record: a row's board naming a path outside --out writes nothing there
    # (best-x/../../victim/precious.toml replaced a user's file), a row of wrong types is
    # run again (an int_acc of "abc" was an internal error), and a record without the
    # files it wrote recognises none of them
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.toml").write_text("mine\n")
    doc = json.loads((out / "sweep.json").read_text())
    doc["rows"][0]["board"] = "x/../../victim/precious"
    doc["rows"][1]["int_acc"] = "abc"
    (out / "sweep.json").write_text(json.dumps(doc))
    monkeypatch.undo()
    again = run_sweep(cfg, out)
    assert again.reused == 1 and (victim / "precious.toml").read_text() == "mine\n"
    assert not (out / "best-x").exists() and all(r["board"] == "icebreaker" for r in again.rows)
    doc = json.loads((out / "sweep.json").read_text())
    del doc["files"]
    (out / "sweep.json").write_text(json.dumps(doc))
    with pytest.raises(OutputError, match=r"not a ttforge sweep output \(no valid sweep.json: another tool's, or one an older ttforge wrote\)"):
        run_sweep(cfg, out)


def test_a_finished_row_is_reused_only_for_the_same_until_short_data_and_code(tmp_path, monkeypatch):
    """A row was reused whenever its point's flow config matched: the figures of a
    ``short`` sweep for the full one, an ``until = "compile"`` row for ``"sim"`` (no
    simulation run, the record "complete"), the accuracy on other IDX files under the
    same names. Each of these, and other code, now runs the point again."""
    import shutil

    import ttforge.sources as sources
    from ttforge.flow import stages

    (tmp_path / "base.toml").write_text(BASE)
    sweep = tmp_path / "s.toml"

    def load(until="compile", short=True):
        sweep.write_text(f'[sweep]\nname = "t"\nflow = "base.toml"\nuntil = "{until}"\n'
                         f'short = {str(short).lower()}\n[grid]\nranks = [2]\n')
        return load_sweep(str(sweep))

    out = tmp_path / "out"
    assert run_sweep(load(), out).rows[0]["status"] == "ok"

    def recompute(args):
        raise RuntimeError("ran again")

    monkeypatch.setattr(sweep_mod, "point_task", recompute)
    assert run_sweep(load(), out).reused == 1                      # the same: reused
    real_data, real_code = stages._data_digest, sources.sources_digest
    for change in ("short", "until", "data", "code"):
        with monkeypatch.context() as m:
            if change == "data":
                m.setattr(stages, "_data_digest", lambda spec: real_data(spec) + "-other files")
            if change == "code":
                m.setattr(sources, "sources_digest", lambda *names: real_code(*names) + "-edited")
            cfg = load(until="sim" if change == "until" else "compile", short=change != "short")
            shutil.copytree(out, tmp_path / f"out-{change}")   # the first run's output each time
            with pytest.raises(RuntimeError, match="ran again"):   # (in this process: raised)
                run_sweep(cfg, tmp_path / f"out-{change}")


def test_a_directory_merely_holding_a_sweep_json_is_not_a_sweeps(tmp_path, capsys):
    """A user's sweep.json, sweep.csv and pareto.png: refused in one line, all kept (any
    file named sweep.json counted as proof that the directory was a sweep's)."""
    path = _write(tmp_path, "ranks = [2]")
    user = tmp_path / "user"
    user.mkdir()
    mine = {"sweep.json": b'{"my": "data"}\n', "sweep.csv": b"my,csv\n", "pareto.png": b"mine\n"}
    for name, data in mine.items():
        (user / name).write_bytes(data)
    assert main(["sweep", path, "--out", str(user)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "not a ttforge sweep output (no valid sweep.json: another tool's, or one an older ttforge wrote)" in err
    assert {p.name: p.read_bytes() for p in user.iterdir()} == mine


@pytest.mark.slow
def test_a_sweep_on_a_local_cluster_gives_the_rows_of_one_process(tmp_path):
    cfg = load_sweep(_write(tmp_path, "ranks = [2, 3]\nlanes = [1, 2]"))
    here = run_sweep(cfg, tmp_path / "here")
    there = run_sweep(cfg, tmp_path / "there", cluster="local", jobs=2)

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    assert strip(there.rows) == strip(here.rows)


def test_points_that_differ_downstream_train_once(tmp_path):
    """Two points that differ only in lanes: the second starts from the first one's trained
    and quantized network (its train and quantize records are the first one's, byte for
    byte, timings included), and its own compile stage ran for its lanes."""
    cfg = load_sweep(_write(tmp_path, "lanes = [1, 2]"))
    res = run_sweep(cfg, tmp_path / "out")
    assert [r["status"] for r in res.rows] == ["ok", "ok"]
    a, b = (tmp_path / "out" / "points" / r["key"] for r in res.rows)
    for stage in ("train", "quantize"):
        assert (a / stage / "stage.json").read_bytes() == (b / stage / "stage.json").read_bytes()
    assert (a / "compile" / "stage.json").read_bytes() != (b / "compile" / "stage.json").read_bytes()
    assert [r["lanes"] for r in res.rows] == [1, 2] and res.rows[0]["int_acc"] == res.rows[1]["int_acc"]


def test_the_placed_figures_come_from_the_bitstream_record(tmp_path):
    """``until = "bitstream"`` rows carry the logic (LUTs or iCE40 logic cells), block RAMs
    and Fmax of the flow's bitstream record (a record written here: place and route takes
    minutes)."""
    for stage, summary in (("bitstream", {"resources": {"lc": {"used": 4825, "available": 5280},
                                                        "bram": {"used": 8, "available": 30}},
                                          "fmax_mhz": 31.2}),
                           ("compile", {"cycles": 1538, "lanes": 1, "utilization": 0.87})):
        (tmp_path / stage).mkdir()
        (tmp_path / stage / "stage.json").write_text(json.dumps(
            {"format": "ttforge-flow-stage", "stage": stage, "summary": summary}))
    m = sweep_mod._metrics(tmp_path, {"compile", "bitstream"})
    assert (m["logic"], m["logic_kind"], m["bram"], m["fmax_mhz"], m["cycles"]) == (4825, "lc", 8, 31.2, 1538)
    assert "int_acc" not in m                                        # no quantize record: no accuracy
    # a record of a stage this run did not complete is another run's: not this row's
    assert sweep_mod._metrics(tmp_path, {"compile"}) == {"cycles": 1538, "lanes": 1, "utilization": 0.87,
                                                         "stream_elems": 1}


def test_a_failed_point_shows_no_figure_of_an_earlier_run(tmp_path):
    """The point's build is its grid values' directory: after a base config change that
    made training fail, the failed row carried the earlier run's accuracy, memory and
    cycles (its stage records were still there), training never having run."""
    (tmp_path / "base.toml").write_text(BASE)
    sweep = tmp_path / "s.toml"
    sweep.write_text('[sweep]\nname = "t"\nflow = "base.toml"\nuntil = "compile"\nshort = true\n'
                     '[grid]\nranks = [2]\n')
    out = tmp_path / "out"
    first = run_sweep(load_sweep(str(sweep)), out).rows[0]
    assert first["status"] == "ok" and first["int_acc"] is not None and first["cycles"]
    (tmp_path / "empty").mkdir()
    (tmp_path / "base.toml").write_text(BASE.replace('data = "digits"', f'data = "{tmp_path / "empty"}"'))
    row = run_sweep(load_sweep(str(sweep)), out).rows[0]
    assert row["status"] == "failed" and "stage train failed" in row["reason"]
    assert all(row.get(k) is None for k in ("float_acc", "int_acc", "on_chip_bytes", "cycles", "utilization"))
    csv_row = (out / "sweep.csv").read_text().splitlines()[1]
    assert str(first["cycles"]) not in csv_row.split(",")


@pytest.mark.parametrize("until", ["compile", pytest.param("sim", marks=pytest.mark.slow)])
def test_stream_width_is_an_axis(tmp_path, until):
    """``stream_elems = [1, 2]``: one trained and quantized network, two accelerators that
    differ only in their AXI4-Stream beat (the compile stage's config, the stream_elems
    column of the CSV) and take the same cycles; with ``until = "sim"`` each is checked
    exactly in simulation."""
    cfg = load_sweep(_write(tmp_path, "stream_elems = [1, 2]", f'until = "{until}"'))
    assert cfg.axes == ["hw.stream_elems"]
    res = run_sweep(cfg, tmp_path / "out")
    assert [r["status"] for r in res.rows] == ["ok", "ok"], [r["reason"] for r in res.rows]
    assert [r["stream_elems"] for r in res.rows] == [1, 2]
    a, b = (tmp_path / "out" / "points" / r["key"] for r in res.rows)
    for stage in ("train", "quantize"):
        assert (a / stage / "stage.json").read_bytes() == (b / stage / "stage.json").read_bytes()
    ca, cb = (json.loads((d / "compile" / "config.json").read_text()) for d in (a, b))
    assert cb == {**ca, "stream_elems": 2}
    assert res.rows[0]["cycles"] == res.rows[1]["cycles"] and res.rows[0]["int_acc"] == res.rows[1]["int_acc"]
    with open(tmp_path / "out" / "sweep.csv") as f:
        table = list(csv.DictReader(f))
    assert [t["stream_elems"] for t in table] == ["1", "2"]
    if until == "sim":
        assert [r["exact"] for r in res.rows] == [True, True]
        assert all(r["cycles_per_vector"] > 0 for r in res.rows)


@pytest.mark.slow
def test_one_placed_point_takes_its_columns_from_nextpnr(tmp_path):
    """One point of ``until = "bitstream"`` through real place and route (the iCEBreaker,
    one lane, two elements per beat; minutes): its LUT/BRAM/Fmax columns are the numbers
    of the nextpnr report the build wrote (read here from the raw JSON, not through the
    flow), the latency column is the cycles at that Fmax, and the bitstream is the one the
    manifest hashes."""
    import hashlib

    cfg = load_sweep(_write(tmp_path, "stream_elems = [2]", 'until = "bitstream"'))
    res = run_sweep(cfg, tmp_path / "out")
    (row,) = res.rows
    assert row["status"] == "ok", row["reason"]
    bit = tmp_path / "out" / "points" / row["key"] / "bitstream"
    raw = json.loads((bit / "pnr_report.json").read_text())
    util = raw["utilization"]
    fmax = min(float(v["achieved"]) for v in raw["fmax"].values() if v.get("achieved") is not None)
    assert (row["logic_kind"], row["logic"], row["bram"]) == (
        "lc", util["ICESTORM_LC"]["used"], util["ICESTORM_RAM"]["used"])
    assert row["fmax_mhz"] == round(fmax, 2) and row["fmax_mhz"] >= 12.0     # the board clock met
    assert row["us_at_fmax"] == round(row["cycles"] / row["fmax_mhz"], 3)
    assert row["exact"] is True and row["stream_elems"] == 2
    man = json.loads((bit / "build.json").read_text())
    assert man["config"]["stream_elems"] == 2
    assert hashlib.sha256((bit / man["bitstream"]["file"]).read_bytes()).hexdigest() == man["bitstream"]["sha256"]
    with open(tmp_path / "out" / "sweep.csv") as f:
        (line,) = list(csv.DictReader(f))
    assert (line["logic"], line["fmax_mhz"]) == (str(row["logic"]), str(row["fmax_mhz"]))


def test_a_scheduler_that_cannot_be_reached_leaves_no_new_output(tmp_path, capsys):
    """``--cluster`` to a port nothing listens on: one line, exit 3, and the new ``--out``
    (and the parent made for it) is not left behind (it held an empty sweep.json); an
    ``--out`` that existed is kept as it was."""
    import socket

    path = _write(tmp_path, "ranks = [2]")
    with socket.socket() as s:       # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    new = tmp_path / "new" / "out"
    assert main(["sweep", path, "--out", str(new), "--cluster", f"tcp://127.0.0.1:{port}"]) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot reach the scheduler" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.toml", "s.toml"]
    mine = tmp_path / "mine"
    mine.mkdir()
    assert main(["sweep", path, "--out", str(mine), "--cluster", f"tcp://127.0.0.1:{port}"]) == 3
    assert mine.is_dir() and not any(mine.iterdir())


def test_ctrl_c_of_a_sweep_on_a_local_cluster_leaves_no_stage_temporaries(tmp_path, monkeypatch):
    """Ctrl-C while the local cluster's workers write a point's stage: the workers are
    ended with the cluster before their cleanup runs (``.report.ttforge-<pid>.*.tmp`` was
    left in ``points/``); the sweep removes what they left once they are gone."""
    import os
    import time
    from pathlib import Path

    from ttforge.atomic import staging_dir

    cfg = load_sweep(_write(tmp_path, "ranks = [2, 3]"))
    started = tmp_path / "started"
    started.mkdir()

    def stuck(args):   # a nested function: Dask sends it to the workers by value
        point = Path(args[0])
        staging_dir(point / "report")   # as the flow's report stage does, never finished
        (started / f"{point.name}-{os.getpid()}").touch()
        time.sleep(300)

    monkeypatch.setattr(sweep_mod, "point_task", stuck)

    # Ctrl-C while the sweep waits for its tasks, once both points are being written. Not
    # a real SIGINT: CI runs the tests as a background job, whose processes inherit
    # SIGINT ignored (POSIX, a non-interactive shell's `&`; see test_process.py), so it
    # was lost there twice and run_sweep returned once the tasks had slept their 600 s
    # out. The wait's poll sleep raises it instead.
    from ttforge.sim import cluster as cluster_mod

    class _CtrlC:
        def __getattr__(self, name):
            return getattr(time, name)

        @staticmethod
        def sleep(seconds):
            if len(list(started.iterdir())) >= 2:
                raise KeyboardInterrupt
            time.sleep(seconds)

    monkeypatch.setattr(cluster_mod, "time", _CtrlC())
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_sweep(cfg, out, jobs=2)
    assert len(list(started.iterdir())) == 2
    points = out / "points"
    assert sorted(p.name for p in points.iterdir()) == sorted(p.key for p in cfg.points())
    assert [p for p in points.rglob("*") if p.name.startswith(".")] == []
    assert json.loads((out / "sweep.json").read_text())["rows"] == []


def test_a_point_whose_task_returns_no_row_is_a_failed_point(tmp_path, monkeypatch):
    """A task that came back with ``None`` (seen once in CI as a local cluster was
    interrupted) ended the whole sweep with a TypeError (an internal error): the point
    is failed, with a reason, and the sweep goes on."""
    cfg = load_sweep(_write(tmp_path, "ranks = [2, 3]"))
    monkeypatch.setattr(sweep_mod, "point_task", lambda args: None)
    res = run_sweep(cfg, tmp_path / "out")
    assert [r["status"] for r in res.rows] == ["failed", "failed"]
    assert all("returned no result (NoneType)" in r["reason"] for r in res.rows)


def test_a_point_whose_simulation_disagrees_reports_it_each_run(tmp_path, monkeypatch):
    """A simulation that ran and found a mismatch is a "failed" stage with this run's
    record: the row kept no verdict (exact missing) the first time, and exact=False once
    the rerun skipped it."""
    from ttforge.flow import stages

    real = stages._simulate

    def one_bit_off(*args):
        got, counters = real(*args)
        got = got.copy()
        got[0, 0] ^= 1
        return got, counters

    monkeypatch.setattr(stages, "_simulate", one_bit_off)
    (tmp_path / "base.toml").write_text(BASE)
    sweep = tmp_path / "s.toml"
    sweep.write_text('[sweep]\nname = "t"\nflow = "base.toml"\nuntil = "sim"\nshort = true\n'
                     '[grid]\nranks = [2]\n')
    for _ in range(2):
        (row,) = run_sweep(load_sweep(str(sweep)), tmp_path / "out").rows
        assert row["status"] == "failed" and "differ from the golden executor" in row["reason"]
        assert row["exact"] is False and row["cycles_per_vector"]


def test_the_threads_of_one_worker_run_one_point_at_a_time(tmp_path, monkeypatch):
    """``dask worker --nthreads 4`` ran up to four points at once in one process: a flow
    sets process-wide state (torch's thread count, the simulator's environment), and a
    sweep on such a worker gave other accuracies than in-process. The point tasks of one
    process take turns (``ttforge.sim.cluster.one_at_a_time``), as regress's cases do."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from ttforge.flow import stages

    lock, inside, most = threading.Lock(), [0], [0]

    def run_flow(*args, **kwargs):
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.2)
        with lock:
            inside[0] -= 1
        raise OutputError("stopped here")

    monkeypatch.setattr(stages, "run_flow", run_flow)
    data = tomllib.loads(BASE)
    with ThreadPoolExecutor(3) as ex:
        rows = list(ex.map(sweep_mod.point_task,
                           [(str(tmp_path / f"p{i}"), data, None, "train", True) for i in range(3)]))
    assert [r["reason"] for r in rows] == ["stopped here"] * 3
    assert most[0] == 1


_PARETO_PLOT_FIRST = """
import sys
from ttforge.flow.sweep import _plot
rows = [{"status": "ok", "board": "icebreaker", "int_acc": 0.9, "cycles": 100, "on_chip_bytes": 1000,
         "params": {"ranks": 2}}]
sys.stdout.write(str(_plot(rows, "t")[:4]))
"""


def test_the_pareto_plot_prints_nothing_under_a_home_that_cannot_be_written(tmp_path):
    """A sweep whose points ran on workers imports matplotlib first for ``pareto.png``:
    a read-only ``$HOME`` printed matplotlib's two lines about its config directory."""
    from tests.support.home import run_with_unwritable_home

    p = run_with_unwritable_home(_PARETO_PLOT_FIRST)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    assert p.stdout == str(b"\x89PNG")


def _flow_failing_at(point: int, failure):
    """A ``run_flow`` for the points ``ranks = 2, 3, 4, 5``: 2 finishes, 3 fails as a
    design point (a stage's error), ``point`` raises ``failure()``; a later one must not run."""
    import types

    def run_flow(cfg, out, **kwargs):
        ranks = cfg.train.model.ranks
        ranks = ranks if isinstance(ranks, int) else ranks[0]
        if ranks == point:
            failure(Path(out))
        if ranks > point:
            pytest.fail("a point ran after the machine failed")
        if ranks == 3:
            raise FlowError("stage quantize failed: the design's own trouble")
        return types.SimpleNamespace(verified=None)

    return run_flow


def _full_disk(out):
    raise OSError(errno.ENOSPC, "No space left on device", str(out / "train" / "last.pt"))


def _out_of_memory(out):
    raise MemoryError()


def _open_files_limit_in_a_stage(out):
    """As ``_run_one`` says a stage's output the machine could not write (ulimit -n)."""
    import tempfile

    from ttforge.atomic import atomic_path

    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).is_relative_to(out):
            raise OSError(errno.EMFILE, "Too many open files")
        return real(*args, dir=dir, **kwargs)

    tempfile.mkstemp = mkstemp
    try:
        with atomic_path(out / "train" / "last.pt"):
            pass
    except TTForgeError as e:
        raise FlowError(f"stage train failed: {e}", exit_code=e.exit_code) from None
    finally:
        tempfile.mkstemp = real


def _build_cache_on_a_full_disk(out):
    """As the sim stage says a build cache the machine cannot create (review V7: a
    ``TTFORGE_SIM_CACHE`` out of inodes was a "failed" row, exit 1)."""
    from ttforge.sim.runner import build_root_dir

    real = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if self.name == "cache":
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, *args, **kwargs)

    Path.mkdir = mkdir
    try:
        build_root_dir(out / "cache", sim="icarus")
    except TTForgeError as e:
        raise FlowError(f"stage sim failed: {e}", exit_code=e.exit_code) from e
    finally:
        Path.mkdir = real


@pytest.mark.parametrize("failure, says", [(_full_disk, "last.pt: No space left on device"),
                                           (_out_of_memory, "ran out of memory"),
                                           (_open_files_limit_in_a_stage, "ulimit -n"),
                                           (_build_cache_on_a_full_disk, "cache: No space left on device")])
def test_the_machine_failing_under_a_point_stops_the_sweep_in_one_line(tmp_path, monkeypatch, capsys,
                                                                       failure, says):
    """A full disk, memory exhausted or a limit reached under a point made it a "failed"
    row, as if the design had failed, and the sweep went on to exit 1: it is no verdict
    on the point. The sweep stops there in one line naming the point, the cause and the
    fix, exit 3 (as regress); the points that finished, a design's failure among them,
    are kept, and the stopped point is no row (the next run runs it)."""
    from ttforge.flow import stages

    monkeypatch.setattr(stages, "run_flow", _flow_failing_at(4, failure))
    out = tmp_path / "out"
    assert main(["sweep", _write(tmp_path, "ranks = [2, 3, 4, 5]"), "--out", str(out)]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("ttforge sweep: error: point ranks=4 could not run: ")
    assert says in err[-1] and "the sweep stopped there, a failure of the machine" in err[-1]
    assert "ranks=4" not in "".join(err[:-1])   # not a row's progress line either
    rows = json.loads((out / "sweep.json").read_text())["rows"]
    assert [(r["params"]["train.model.ranks"], r["status"]) for r in rows] == [(2, "ok"), (3, "failed")]
    assert "the design's own trouble" in rows[1]["reason"]


def test_a_worker_s_machine_failure_stops_a_sweep_on_a_cluster(tmp_path, monkeypatch):
    """On a cluster the outcome comes back from the worker: the point's own
    ``MachineFailure``, or the bare error of a task that failed outside it."""
    import contextlib
    import types

    import ttforge.sim.cluster as cluster

    @contextlib.contextmanager
    def no_cluster(spec):
        yield types.SimpleNamespace(nthreads=lambda: {"worker": 1})

    outcomes = [RuntimeError("a bug of the point"),
                MachineFailure("/w/points/x/train/last.pt: No space left on device (a problem of the machine)"),
                OSError(errno.EIO, "Input/output error", "/w/x")]

    def run_tasks(client, fn, tasks, done, **kw):
        for i, outcome in enumerate(outcomes):
            done(i, outcome)

    monkeypatch.setattr(cluster, "connect", no_cluster)
    monkeypatch.setattr(cluster, "run_tasks", run_tasks)
    cfg = load_sweep(_write(tmp_path, "ranks = [2, 3, 4]"))
    with pytest.raises(MachineFailure, match=r"^point ranks=3 could not run: /w/points/x/train/last.pt: No space"):
        run_sweep(cfg, tmp_path / "out", jobs=2)
    rows = json.loads((tmp_path / "out" / "sweep.json").read_text())["rows"]
    assert [(r["params"]["train.model.ranks"], r["status"]) for r in rows] == [(2, "failed")]   # a bug stays a row
    outcomes[1] = RuntimeError("another bug")
    with pytest.raises(MachineFailure, match=r"^point ranks=4 could not run: /w/x: Input/output error"):
        run_sweep(cfg, tmp_path / "out", jobs=2)
