"""`ttforge train-int --resume`: what a resume is given is either the run's from then on
(recorded, so the continuation of an interrupted resume repeats it) or refused in one
line; an interruption never leaves a hole in the history, nor an empty `-o`; a state
whose counters cannot advance through the epochs asked is refused before any work."""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest

from ttforge.cli import main
from ttforge.ir.train_state import load_state, save_state

_NET = ["--batch", "64", "--hidden", "16", "--ranks", "2", "--seed", "3"]


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["train-int", "--quiet", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _epochs(run) -> list[int]:
    return [h["epoch"] for h in json.loads((run / "metrics.json").read_text())["history"]]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A run at epoch 2 (batch 64, no decay)."""
    d = tmp_path_factory.mktemp("resume") / "base"
    assert main(["train-int", "--quiet", "-o", str(d), "--epochs", "2", *_NET]) == 0
    return d


def _copy(base, tmp_path, name: str):
    d = tmp_path / name
    shutil.copytree(base, d)
    return d


# D1: --batch and --lr-decay-at given to a resume are recorded -----------------------------
@pytest.mark.parametrize("flags", [["--batch", "32"], ["--lr-decay-at", "3"]])
def test_a_resume_interrupted_and_continued_equals_the_straight_resume(base, tmp_path, capsys, flags):
    """Resumed to epoch 4 with the flag and "interrupted" there, then continued as
    documented (`--resume run/state.ttts -o run --epochs N`, no flag): the bytes of the
    resume straight to epoch 5 with the flag. The meta kept the old batch and no decay."""
    straight, cut = _copy(base, tmp_path, "straight"), _copy(base, tmp_path, "cut")
    assert _run(capsys, "--resume", str(straight / "state.ttts"), "-o", str(straight), "--epochs", "5",
                *flags)[0] == 0
    assert _run(capsys, "--resume", str(cut / "state.ttts"), "-o", str(cut), "--epochs", "4", *flags)[0] == 0
    assert _run(capsys, "--resume", str(cut / "state.ttts"), "-o", str(cut), "--epochs", "5")[0] == 0
    assert (cut / "state.ttts").read_bytes() == (straight / "state.ttts").read_bytes()
    meta = load_state(cut / "state.ttts").meta
    assert (meta["batch"], meta["lr_decay_at"]) == ((32, []) if flags[0] == "--batch" else (64, [3]))


def test_a_resume_sibling_without_the_flag_differs(base, tmp_path, capsys):
    """Sibling: the flags change the run (else the test above proves nothing)."""
    a, b = _copy(base, tmp_path, "a"), _copy(base, tmp_path, "b")
    assert _run(capsys, "--resume", str(a / "state.ttts"), "-o", str(a), "--epochs", "3")[0] == 0
    assert _run(capsys, "--resume", str(b / "state.ttts"), "-o", str(b), "--epochs", "3", "--batch", "32")[0] == 0
    assert (a / "state.ttts").read_bytes() != (b / "state.ttts").read_bytes()


# D2: what a resume cannot honour is refused, not ignored ----------------------------------
@pytest.mark.parametrize("flag, value, theirs", [
    ("--seed", "9", "3"), ("--lr-shift", "4", "8"), ("--hidden", "32", "16"), ("--cores", "2", "3"),
    ("--ranks", "3", "ranks 1,2,2,1"), ("--in-modes", "2,4,8", "4,4,4"), ("--out-modes", "2,2,4", "4,2,2"),
    ("--w-bits", "6", "4"), ("--master-bits", "10", "8"), ("--act-bits", "6", "8"), ("--inter-bits", "12", "16"),
    ("--acc-bits", "40", "32"), ("--grad-bits", "12", "16"), ("--rounding", "nearest", "stochastic"),
])
def test_an_option_a_resume_cannot_honour_is_one_line_exit_2(base, tmp_path, capsys, flag, value, theirs):
    run = _copy(base, tmp_path, "run")
    before = (run / "state.ttts").read_bytes()
    code, _, err = _run(capsys, "--resume", str(run / "state.ttts"), "-o", str(run), "--epochs", "3", flag, value)
    lines = [l for l in err.splitlines() if l.strip()]
    assert code == 2 and len(lines) == 1, err
    assert f"{flag} {value} differs from the run being resumed ({theirs}); drop {flag}" \
        in lines[0], lines[0]
    assert (run / "state.ttts").read_bytes() == before


def test_calib_samples_with_a_resume_is_one_line_exit_2(base, tmp_path, capsys):
    run = _copy(base, tmp_path, "run")
    code, _, err = _run(capsys, "--resume", str(run / "state.ttts"), "-o", str(run), "--epochs", "3",
                        "--calib-samples", "5")
    assert code == 2 and "--calib-samples is for a new run" in err and "drop --calib-samples" in err


def test_the_states_own_values_resume_as_before(base, tmp_path, capsys):
    """Sibling: the run's own values (those it was started with) are accepted and change
    nothing."""
    a, b = _copy(base, tmp_path, "a"), _copy(base, tmp_path, "b")
    assert _run(capsys, "--resume", str(a / "state.ttts"), "-o", str(a), "--epochs", "3")[0] == 0
    code, _, err = _run(capsys, "--resume", str(b / "state.ttts"), "-o", str(b), "--epochs", "3", *_NET,
                        "--lr-shift", "8", "--cores", "3", "--w-bits", "4", "--acc-bits", "32",
                        "--rounding", "stochastic")
    assert code == 0, err
    assert (a / "state.ttts").read_bytes() == (b / "state.ttts").read_bytes()


# D3: the history has no hole ----------------------------------------------------------------
@pytest.mark.parametrize("name", ["state.ttts", "model.ttfa", "metrics.json", "curves.png"])
def test_an_interruption_between_an_epochs_renames_leaves_no_hole(tmp_path, capsys, monkeypatch, name):
    """Ctrl-C at the rename of one of epoch 2's files, then --resume: the history holds
    every epoch and the state is the straight run's. With the state renamed first, an
    interruption before metrics.json's rename lost epoch 2's row for good."""
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert _run(capsys, "-o", str(ref), "--epochs", "3", *_NET)[0] == 0
    real = os.replace

    # epoch 1's files land; the interruption is at `name` in epoch 2's save
    state_renames = []

    def replace_in_epoch_2(src, dst):
        base = os.path.basename(dst)
        if base == name and len(state_renames) == 1:
            raise KeyboardInterrupt
        result = real(src, dst)
        if base == "state.ttts":
            state_renames.append(dst)
        return result

    monkeypatch.setattr(os, "replace", replace_in_epoch_2)
    assert _run(capsys, "-o", str(run), "--epochs", "3", *_NET)[0] == 130
    monkeypatch.setattr(os, "replace", real)
    assert not [p for p in run.iterdir() if "ttforge-" in p.name]   # no temporary
    assert load_state(run / "state.ttts").epoch in (1, 2)
    assert _run(capsys, "--resume", str(run / "state.ttts"), "-o", str(run), "--epochs", "3")[0] == 0
    assert _epochs(run) == [1, 2, 3]
    assert (run / "state.ttts").read_bytes() == (ref / "state.ttts").read_bytes()


def test_an_interrupted_first_epoch_leaves_no_files(tmp_path, capsys, monkeypatch):
    """Ctrl-C at the state's rename of a new run's first epoch: the files renamed before
    it are removed again, and the directory the run made with them; the same command
    then runs (it did not need --overwrite)."""
    run = tmp_path / "new" / "run"
    real = os.replace

    def replace(src, dst):
        if os.path.basename(dst) == "state.ttts":
            raise KeyboardInterrupt
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    assert _run(capsys, "-o", str(run), "--epochs", "1", *_NET)[0] == 130
    monkeypatch.setattr(os, "replace", real)
    assert not (tmp_path / "new").exists()
    assert _run(capsys, "-o", str(run), "--epochs", "1", *_NET)[0] == 0


def test_a_state_ahead_of_its_metrics_marks_the_lost_epoch(tmp_path, capsys):
    """A state copied over a run's (epoch 3 beside the metrics of epoch 2): epoch 3's row
    cannot be recomputed (its training statistics need the epoch-2 state); it is listed in
    missing_epochs, with one line, and the history goes on (it held epochs 1, 2, 4, 5
    without a word)."""
    x, y = tmp_path / "x", tmp_path / "y"
    assert _run(capsys, "-o", str(x), "--epochs", "2", *_NET)[0] == 0
    assert _run(capsys, "-o", str(y), "--epochs", "3", *_NET)[0] == 0
    shutil.copy(y / "state.ttts", x / "state.ttts")
    code, _, err = _run(capsys, "--resume", str(x / "state.ttts"), "-o", str(x), "--epochs", "5")
    assert code == 0
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and re.search(r"metrics\.json has no row for epoch 3 .*missing_epochs", lines[0]), err
    m = json.loads((x / "metrics.json").read_text())
    assert [h["epoch"] for h in m["history"]] == [1, 2, 4, 5] and m["missing_epochs"] == [3]
    # the record travels: a later resume keeps it and says nothing more
    assert _run(capsys, "--resume", str(x / "state.ttts"), "-o", str(x), "--epochs", "6")[2] == ""
    assert json.loads((x / "metrics.json").read_text())["missing_epochs"] == [3]


# M1: counters at their limit -----------------------------------------------------------------
@pytest.mark.parametrize("counter", ["step", "words"])
def test_a_counter_that_cannot_advance_is_refused_before_any_work(base, tmp_path, capsys, counter):
    st = load_state(base / "state.ttts")
    path = save_state(st.replace(**{counter: (1 << 63) - 1}), tmp_path / "s.ttts")
    out = tmp_path / "out"
    code, _, err = _run(capsys, "--resume", str(path), "-o", str(out), "--epochs", "3")
    lines = [l for l in err.splitlines() if l.strip()]
    assert code == 2 and len(lines) == 1, err
    assert re.search(rf"the state .*s\.ttts: its {counter} counter \(9,223,372,036,854,775,807\) would pass "
                     rf"2\^63-1 in the \d+ steps asked; give fewer --epochs", lines[0]), lines[0]
    assert not out.exists()


def test_a_counter_sibling_with_room_for_the_steps_runs(base, tmp_path, capsys):
    st = load_state(base / "state.ttts")
    path = save_state(st.replace(step=(1 << 63) - 1 - 23), tmp_path / "s.ttts")   # 23 steps an epoch
    assert _run(capsys, "--resume", str(path), "-o", str(tmp_path / "out"), "--epochs", "3")[0] == 0
    assert load_state(tmp_path / "out" / "state.ttts").step == (1 << 63) - 1


# M2: an interruption before the first epoch --------------------------------------------------
def test_an_interruption_before_the_first_epoch_leaves_no_directory(tmp_path, capsys, monkeypatch):
    import ttforge.ir.cli as cli

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run_training", interrupted)
    out = tmp_path / "a" / "run"
    assert _run(capsys, "-o", str(out), "--epochs", "1", *_NET)[0] == 130
    assert not out.exists()


# the run's own starting values are accepted after its schedule changed the state -------------
def test_the_runs_own_command_resumes_after_a_decay_and_a_truncation(tmp_path, capsys):
    """The state's lr_shift is halved by --lr-decay-at and its ranks truncated by
    --truncate-ranks; repeating the run's command with more --epochs was refused
    ('--lr-shift 8 differs ... (9)', '--ranks 2 differs ... (ranks 1,1,1)'); likewise the
    default --calib-samples 256 given explicitly."""
    run = tmp_path / "run"
    start = ["--batch", "64", "--hidden", "16", "--ranks", "2", "--seed", "3", "--lr-shift", "8",
             "--lr-decay-at", "1", "--truncate-ranks", "1:1,1", "--calib-samples", "256"]
    assert _run(capsys, "-o", str(run), "--epochs", "2", *start)[0] == 0
    st = load_state(run / "state.ttts")
    assert st.lr_shift != 8 and st.layers[0].schedule.shape.ranks != (1, 2, 2, 1)   # the schedule changed them
    code, _, err = _run(capsys, "--resume", str(run / "state.ttts"), "-o", str(run), "--epochs", "3", *start)
    assert code == 0, err
    # sibling: a value the run never had is still refused
    code, _, err = _run(capsys, "--resume", str(run / "state.ttts"), "-o", str(run), "--epochs", "4",
                        "--lr-shift", "5")
    assert code == 2 and "--lr-shift 5 differs" in err


def test_a_fifo_in_place_of_the_metrics_does_not_hang_a_resume(base, tmp_path, capsys):
    import signal

    run = _copy(base, tmp_path, "run")
    (run / "metrics.json").unlink()
    os.mkfifo(run / "metrics.json")

    def hung(*_):
        raise TimeoutError("the resume blocked on the FIFO")

    import time

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    t0 = time.monotonic()
    try:
        code, _, err = _run(capsys, "--resume", str(run / "state.ttts"), "-o", str(run), "--epochs", "3")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    # the old read blocked until the alarm (60 s; its OSError was then taken for a missing file)
    assert time.monotonic() - t0 < 30
    assert code in (0, 2) and "Traceback" not in err, err


def test_from_an_artifact_the_calibration_memory_is_named_before_it_runs(base, tmp_path, capsys, monkeypatch):
    """--from calibrated first and its step then refused 'batch=256 ... use batch <= N'
    even with --batch below N: --calib-samples is named, before any step."""
    from ttforge.ir import train
    from ttforge.ir.artifact import load_artifact

    net = load_artifact(base / "model.ttfa")
    per_sample = 2 * train.sample_values(net.layers)
    monkeypatch.setattr(train, "MAX_STEP_VALUES", per_sample * 100)
    calls = []
    monkeypatch.setattr(train, "_step", lambda *a, **k: calls.append(1))
    code, _, err = _run(capsys, "--from", str(base / "model.ttfa"), "-o", str(tmp_path / "r"), "--epochs", "1",
                        "--batch", "50", "--calib-samples", "200")
    assert code == 2 and err.count("\n") == 1 and "--calib-samples=200" in err and "<= 100" in err, err
    assert not calls and not (tmp_path / "r").exists()


# leftovers of the probes: M4, a directory at a run's file, the step checks in one place ---
def _metrics_without_timings(run) -> dict:
    m = json.loads((run / "metrics.json").read_text())
    for row in m["history"]:
        del row["seconds"], row["samples_per_s"]
    return m


def test_a_resumed_runs_metrics_equal_the_straight_runs(base, tmp_path, capsys):
    """A resume wrote the resumed state's accuracy as `initial_test_acc` (88% where the
    run started at 6%): its metrics.json now equals the straight run's but for timings."""
    straight, resumed = tmp_path / "straight", _copy(base, tmp_path, "resumed")
    assert _run(capsys, "-o", str(straight), "--epochs", "3", *_NET)[0] == 0
    code, out, _ = _run(capsys, "--resume", str(resumed / "state.ttts"), "-o", str(resumed), "--epochs", "3")
    assert code == 0
    want = _metrics_without_timings(straight)
    assert _metrics_without_timings(resumed) == want
    assert f"initial test {100 * want['initial_test_acc']:.2f}%" in " ".join(out.split())


@pytest.mark.parametrize("name", ["model.ttfa", "metrics.json", "curves.png"])
def test_a_directory_at_a_runs_file_is_named_with_a_real_fix_before_any_step(base, tmp_path, capsys,
                                                                             monkeypatch, name):
    """A directory at `-o/metrics.json` failed after an epoch with 'give a file name (e.g.
    run/metrics.json/out)', which the user cannot: the name is the run's."""
    from ttforge.ir import train

    run = _copy(base, tmp_path, "run")
    (run / name).unlink()
    (run / name).mkdir()
    calls = []
    monkeypatch.setattr(train, "_step", lambda *a, **k: calls.append(1))
    code, _, err = _run(capsys, "--resume", str(run / "state.ttts"), "-o", str(run), "--epochs", "3")
    assert code == 2 and err.count("\n") == 1, err
    assert f"{run / name} is a directory" in err and "remove or move it" in err and "/out" not in err, err
    assert not calls and (run / "state.ttts").read_bytes() == (base / "state.ttts").read_bytes()


@pytest.mark.parametrize("start", ["new", "from", "resume"])
def test_the_batch_is_checked_once_and_counts_at_most_the_samples(base, tmp_path, capsys, monkeypatch, start):
    """check_batch ran twice in a new run (before the calibration and again after), and the
    second memory check counted the nominal --batch: 300,000 was refused ('use --batch <=
    217,180') on digits' 1,437 samples (the default network), which the first had accepted."""
    from ttforge.ir import cli

    calls = []
    real = cli.check_batch
    # (the calibration's --calib-samples step is checked by itself, name="--calib-samples")
    monkeypatch.setattr(cli, "check_batch", lambda *a, **k: calls.append(k.get("name")) or real(*a, **k))
    run = _copy(base, tmp_path, "run") if start == "resume" else tmp_path / "run"
    how = {"new": [], "from": ["--from", str(base / "model.ttfa")],
           "resume": ["--resume", str(run / "state.ttts")]}[start]
    code, _, err = _run(capsys, "-o", str(run), "--epochs", "3", *how, "--batch", "300000")
    assert code == 0, err
    assert calls.count("--batch") == 1


# A state trained on IDX files resumes on them: the documented MNIST resume (no --data)
# took the digits and failed on the feature count ('takes 784 inputs but the data has 64')
@pytest.fixture(scope="module")
def idx_run(tmp_path_factory):
    """A run at epoch 1 on a small IDX directory given by a relative path."""
    from tests.support.data import write_pair

    root = tmp_path_factory.mktemp("idx")
    (root / "data").mkdir()
    write_pair(root / "data", "t10k", 300)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert main(["train-int", "--quiet", "--data", "data", "-o", "run", "--epochs", "1", *_NET]) == 0
    finally:
        os.chdir(cwd)
    return root


def test_a_resume_without_data_trains_on_the_states_idx_files(idx_run, tmp_path, capsys, monkeypatch):
    run = _copy(idx_run / "run", tmp_path, "run")
    assert load_state(run / "state.ttts").meta["data_spec"] == str(idx_run / "data")
    monkeypatch.chdir(tmp_path)   # elsewhere: the relative path it was given would not do
    code, _, err = _run(capsys, "--resume", str(run / "state.ttts"), "--epochs", "2", "-o", str(run))
    assert (code, err) == (0, "")
    assert _epochs(run) == [1, 2]
    assert json.loads((run / "metrics.json").read_text())["data"] == "data"


def test_an_older_idx_state_without_data_is_one_line_naming_data(idx_run, tmp_path, capsys):
    state = load_state(idx_run / "run" / "state.ttts")
    meta = {k: v for k, v in state.meta.items() if k != "data_spec"}
    old = tmp_path / "old.ttts"
    save_state(state.replace(meta=meta), old)
    code, _, err = _run(capsys, "--resume", str(old), "--epochs", "2", "-o", str(tmp_path / "r"))
    assert code == 2
    assert re.fullmatch(r"ttforge train-int: error: the state \S+old\.ttts was trained on 'data' and does not "
                        r"record where its files are \(an older state\); give --data DIR, the directory "
                        r"of its IDX files\n", err)
    assert not (tmp_path / "r").exists()


def test_a_digits_state_without_data_spec_resumes_on_digits(base, tmp_path, capsys):
    run = _copy(base, tmp_path, "run")
    state = load_state(run / "state.ttts")
    assert state.meta["data_spec"] == "digits"
    save_state(state.replace(meta={k: v for k, v in state.meta.items() if k != "data_spec"}), run / "state.ttts")
    code, _, err = _run(capsys, "--resume", str(run / "state.ttts"), "--epochs", "3", "-o", str(run))
    assert (code, err) == (0, "")


def test_a_states_data_that_is_gone_is_named_as_the_states(idx_run, tmp_path, capsys):
    """The directory a state records and no longer finds: the line says it is the state's
    (the user typed no --data; it said "data='/...'")."""
    state = load_state(idx_run / "run" / "state.ttts")
    gone = tmp_path / "moved"
    save_state(state.replace(meta={**state.meta, "data_spec": str(gone)}), tmp_path / "s.ttts")
    code, _, err = _run(capsys, "--resume", str(tmp_path / "s.ttts"), "--epochs", "2", "-o", str(tmp_path / "r"))
    assert code == 2
    assert err.startswith(f"ttforge train-int: error: the state's data {gone} does not exist"), err


@pytest.mark.parametrize("act_bits, noted", [(4, True), (5, False)])
def test_a_state_the_engine_cannot_take_is_noted_before_training(tmp_path, capsys, act_bits, noted):
    """10 classes at act_bits 4: the golden run is right, but the training engine carries
    labels up to 7 and refuses the state; train-int trained it without a word (the user
    learnt it at train-board). The sibling at act_bits 5 says nothing."""
    code, _, err = _run(capsys, "--act-bits", str(act_bits), "--epochs", "1", "--hidden", "8", "--ranks", "2",
                        "-o", str(tmp_path / "r"))
    assert code == 0
    note = ("ttforge train-int: note: train-board, generate --train and build --train will refuse this state: "
            "10 classes need labels up to 9, which the training engine carries in signed 4-bit stream elements "
            "(act_bits=4, labels up to 7); train the state with act_bits >= 5 (ttforge train-int --act-bits 5)\n")
    assert err == (note if noted else ""), err
