"""The training engine's native Verilator harness: many steps of RTL training equal the
golden trainer bit for bit (state compared after the run, ``compare_states``), and a core
word corrupted over the host port in the middle of a run is caught."""

from __future__ import annotations

import numpy as np
import pytest

from ttforge.hw.trainer.engine import HostSel
from ttforge.hw.trainer.program import compile_training
from ttforge.ir.random import train_case
from ttforge.ir.train import train_step
from ttforge.ir.train_diverge import compare_states
from ttforge.sim.train_native import TrainSession, build_train_native, train_native
from ttforge.sim.train_regress import family_config, train_regress_case


def _setup(seed=0, steps=25, batch=6):
    state, x, y, rng = train_case(seed, batch=batch, n_layers=2, d=2, rank=2, n_in=12, hidden=8, n_out=4)
    cfg = family_config(0)       # the engine ttforge regress --train uses for family 0 (one build)
    assert cfg.train == state.config
    hi = (1 << (state.config.act_bits - 1)) - 1
    batches = [(x, y)] + [(rng.integers(0, hi + 1, size=(batch, state.in_features)),
                           rng.integers(0, state.n_classes, size=batch)) for _ in range(steps - 1)]
    return state, cfg, batches


@pytest.fixture(scope="module")
def build():
    _, cfg, _ = _setup()
    return build_train_native(cfg)


def _golden(state, batches):
    for x, y in batches:
        state = train_step(state, x, y)
    return state


def test_native_training_equals_golden(build):
    state, _, batches = _setup()
    got, records = train_native(build, state, batches)
    assert compare_states(got, _golden(state, batches)) is None
    assert got.step == state.step + len(batches)
    assert len({r["cycles"] for r in records}) == 1        # fixed by the program alone


def test_sibling_a_core_word_corrupted_mid_run_is_caught(build):
    state, cfg, batches = _setup(seed=0, steps=1)
    prog = compile_training(state, len(batches[0][1]), cfg)
    want = compile_training(train_step(state, *batches[0]), len(batches[0][1]), cfg).cmem
    with TrainSession(build) as s:
        s.load(prog)
        s.step(*batches[0])
        before, _, _ = s.memories(prog)
        s.write(HostSel.CMEM, 5, [int(before[5]) ^ 2])
        after, _, _ = s.memories(prog)
    assert np.array_equal(before, want)          # the control: equal before the corruption
    assert not np.array_equal(after, want)


def test_regress_train_cli_runs_a_case_and_writes_the_summary(build, tmp_path, capsys):
    import json

    from ttforge.cli import main

    assert train_regress_case(18, 1).family == 0        # the build above serves it
    rc = main(["regress", "--train", "--seed-start", "18", "--seeds", "1", "--steps", "20",
               "--out", str(tmp_path / "out")])
    assert rc == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["cases"] == 1 and summary["failed"] == 0 and summary["results"][0]["passed"]
    assert "1 of 1 passed" in capsys.readouterr().out


@pytest.mark.parametrize("argv,msg", [
    (["--steps", "0"], "--steps 0"), (["--sim", "icarus"], "--sim icarus"),
    (["--fault", "x"], "not a training fault"), (["--fault", "requant_lsb"], "not a training fault"), (["--steps", str(10 ** 7)], "limit"),
])
def test_regress_train_bad_arguments_are_one_line(argv, msg, tmp_path, capsys):
    from ttforge.cli import main

    rc = main(["regress", "--train", "--out", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err
    assert rc == 2 and msg in err and "Traceback" not in err


def test_regress_train_on_a_local_dask_cluster_gives_the_local_verdicts(build, tmp_path, capsys):
    """Two cases as Dask tasks (two workers) and the same two in this process: the same
    verdicts and cycles; the CLI takes --jobs/--cluster with --train."""
    import json

    from ttforge.cli import main
    from ttforge.sim.train_regress import train_regress

    seeds = [18, 21]
    assert all(train_regress_case(s, 1).family == 0 for s in seeds)   # the fixture's build serves them
    local = train_regress(seeds, 6)
    remote = train_regress(seeds, 6, jobs=2)
    key = [(r.seed, r.passed, r.cycles_per_step, r.describe, r.error) for r in local]
    assert key == [(r.seed, r.passed, r.cycles_per_step, r.describe, r.error) for r in remote]
    assert all(r.passed for r in local)
    rc = main(["regress", "--train", "--seed-start", "18", "--seeds", "1", "--steps", "4", "--cluster",
               "--out", str(tmp_path / "out")])
    assert rc == 0 and json.loads((tmp_path / "out" / "summary.json").read_text())["failed"] == 0
    capsys.readouterr()


def test_regress_train_a_failed_harness_build_is_exit_3_on_a_cluster_as_here(tmp_path, monkeypatch, capsys):
    """A harness that cannot be built (here: ``$CXX`` names no program; the local
    cluster's workers inherit it) ends a ``--cluster`` run in the line and exit 3 of a run
    in this process, not in exit 1 (a verdict on the hardware); the summary marks the
    cases ``build_failed``."""
    import json

    from ttforge.cli import main

    monkeypatch.setenv("CXX", "/nonexistent/g++")
    argv = ["regress", "--train", "--seeds", "2", "--steps", "1", "--build-root", str(tmp_path / "cache")]
    rc_here = main([*argv, "--out", str(tmp_path / "here")])
    here = capsys.readouterr().err.strip().splitlines()[-1]
    rc = main([*argv, "--out", str(tmp_path / "cluster"), "--cluster", "--jobs", "1"])
    err = capsys.readouterr().err
    assert rc_here == 3 and here.startswith("ttforge regress: error: ")
    assert rc == 3 and err.strip().splitlines()[-1] == here and "Traceback" not in err
    summary = json.loads((tmp_path / "cluster" / "summary.json").read_text())
    assert summary["cases"] == 2 and all(r["build_failed"] for r in summary["results"])


def test_regress_train_names_its_summary_as_text(tmp_path, monkeypatch, capsys):
    """The 'wrote .../summary.json' line printed --out raw: an ESC sequence reached the
    terminal and a newline split the line."""
    import ttforge.sim.train_regress as tr
    from ttforge.cli import main

    monkeypatch.setattr(tr, "train_regress", lambda seeds, steps, **k: [
        tr.TrainCaseResult(s, 0, "stand-in", steps, True) for s in seeds])
    out = tmp_path / "o\x1b[31mRED\nX"
    assert main(["regress", "--train", "--seeds", "1", "--steps", "2", "--out", str(out)]) == 0
    wrote = [ln for ln in capsys.readouterr().out.splitlines() if "wrote" in ln]
    assert len(wrote) == 1 and "\x1b" not in wrote[0] and "summary.json" in wrote[0], wrote
    assert (out / "summary.json").is_file()


def test_regress_train_out_removed_during_the_run_is_claimed_again(tmp_path, monkeypatch, capsys):
    """``regress --train --out R`` with R removed while the cases ran: the summary made R
    again without its claim, and every later run was refused ("not a ttforge work
    directory"), as ``regress --out`` was before."""
    import shutil

    import ttforge.sim.train_regress as tr
    from ttforge.atomic import WORK_MARKER
    from ttforge.cli import main

    out = tmp_path / "R"

    def cases(seeds, steps, **k):
        shutil.rmtree(out)           # the user removes it during the run
        return [tr.TrainCaseResult(s, 0, "stand-in", steps, True) for s in seeds]

    monkeypatch.setattr(tr, "train_regress", cases)
    assert main(["regress", "--train", "--seeds", "1", "--steps", "2", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [WORK_MARKER, "summary.json"]
    assert main(["regress", "--train", "--seeds", "1", "--steps", "2", "--out", str(out)]) == 0
    capsys.readouterr()


def test_regress_train_reproduce_names_the_case_and_refuses_another(tmp_path, monkeypatch, capsys):
    """A failing case's reproduce command (and summary.json) names the case's digest: the
    seed alone reran whatever the case generator of another ttforge drew for it (three
    of 40 seeds changed with one edge family added), so an old failure could "pass now"
    on a different case. The same digest runs; another is one line, exit 2, before any
    build; --case without --train or with several seeds is refused."""
    import json

    import ttforge.sim.train_regress as tr
    from ttforge.cli import main

    monkeypatch.setattr(tr, "train_regress", lambda seeds, steps, **k: [
        tr.TrainCaseResult(s, 0, "stand-in", steps, False, first_step=1, difference="d",
                           case=tr.train_regress_case(s, steps).digest) for s in seeds])
    want = tr.train_regress_case(5, 2).digest
    assert len(want) == 16 and want != tr.train_regress_case(5, 3).digest != tr.train_regress_case(6, 2).digest
    out = tmp_path / "o"
    assert main(["regress", "--train", "--seed-start", "5", "--seeds", "1", "--steps", "2", "--out", str(out)]) == 1
    cmd = json.loads((out / "summary.json").read_text())["reproduce"][0]
    assert cmd.endswith(f"--steps 2 --case {want}") and f"reproduce: {cmd}" in capsys.readouterr().out
    assert main(cmd.split()[1:] + ["--out", str(out)]) == 1       # the same case: it runs
    capsys.readouterr()
    other = tr.train_regress_case(6, 2).digest                     # "another ttforge's" case
    errs = []
    for argv in (["--train", "--seed-start", "5", "--seeds", "1", "--steps", "2", "--case", other],
                 ["--train", "--seeds", "2", "--steps", "2", "--case", want],
                 ["--seeds", "1", "--case", want]):
        assert main(["regress", *argv, "--out", str(out)]) == 2, argv
        errs.append(capsys.readouterr().err.strip())
        assert len(errs[-1].splitlines()) == 1 and "--case" in errs[-1], errs[-1]
    assert f"seed 5 with --steps 2 draws another case in this ttforge ({want})" in errs[0]
    assert "--seeds 1" in errs[1] and "--train only" in errs[2]
