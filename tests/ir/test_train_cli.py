"""`ttforge train-int`: runs, resumes bit-exactly, and refuses bad input in one line
(exit 2) before any step."""

from __future__ import annotations

import json

import pytest

from ttforge.cli import main
from ttforge.ir.train_state import load_state, save_state

def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["train-int", "--quiet", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_train_then_resume_equals_one_straight_run(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    common = ["--batch", "64", "--hidden", "16", "--ranks", "2", "--seed", "3"]
    code, out, _ = _run(capsys, "-o", str(a), "--epochs", "2", *common)
    assert code == 0 and "final" in out
    for f in ("state.ttts", "model.ttfa", "metrics.json", "curves.png"):
        assert (a / f).is_file()
    assert _run(capsys, "-o", str(b), "--epochs", "1", *common)[0] == 0
    assert load_state(b / "state.ttts").epoch == 1
    assert _run(capsys, "-o", str(b), "--epochs", "2", "--resume", str(b / "state.ttts"))[0] == 0
    assert (a / "state.ttts").read_bytes() == (b / "state.ttts").read_bytes()
    hist = json.loads((b / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in hist] == [1, 2]


def test_resume_sibling_another_seed_differs(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    common = ["--batch", "64", "--hidden", "16", "--ranks", "2", "--epochs", "1"]
    assert _run(capsys, "-o", str(a), "--seed", "1", *common)[0] == 0
    assert _run(capsys, "-o", str(b), "--seed", "2", *common)[0] == 0
    assert (a / "state.ttts").read_bytes() != (b / "state.ttts").read_bytes()


def _foreign_state(tmp_path, n_in=30, n_out=6):
    from ttforge.ir import ContractionSchedule, TTShape
    from ttforge.ir.train import TrainConfig, init_state

    s1 = ContractionSchedule(TTShape((n_in,), (n_in,), (1, 1)), (0,))
    s2 = ContractionSchedule(TTShape((n_out,), (n_in,), (1, 1)), (0,))
    return save_state(init_state([(n_in, n_in, s1), (n_in, n_out, s2)], TrainConfig()),
                      tmp_path / f"f{n_in}-{n_out}.ttts")


@pytest.mark.parametrize("case, pattern", [
    ("features", "takes 30 inputs but the data has 64 features"),
    ("labels", "labels of the data are 0..9 but"),
    ("batch", r"--batch=1,048,576: .*float64-exact fast path.*use a smaller --batch"),
    # the calibration step holds --calib-samples samples (default 256), not --batch: the
    # line once said "a batch of 256 ... use a smaller batch" to a run of --batch 4
    ("calib", r"^ttforge train-int: error: --calib-samples=256: .* 58 bits wide, more than the float64-exact fast "
              r"path allows \(54\); use a smaller --calib-samples or narrower grad_bits/inter_bits$"),
    ("lr", "rounds every update to zero"),
    ("epochs", r"--epochs=0 must be in 1\.\.100,000"),
    ("batch-bound", r"--batch=1,?099,?511,?627,?776 must be in 1\.\.1,048,576"),
    ("seed", r"--seed=\d+ must be in 0\.\.9,223,372,036,854,775,807"),
    ("cores", r"--cores=40 must be in 1\.\.12"),
    ("modes", r"--in-modes=.*give 1\.\.12 modes"),
])
def test_bad_input_is_one_line_exit_2_before_any_step(tmp_path, capsys, case, pattern):
    out = tmp_path / "out"
    argv = {"features": lambda: ["--resume", str(_foreign_state(tmp_path))],
            "labels": lambda: ["--resume", str(_foreign_state(tmp_path, n_in=64, n_out=6))],
            "batch": lambda: ["--batch", str(1 << 20)],
            "batch-bound": lambda: ["--batch", str(1 << 40)],
            "calib": lambda: ["--w-bits", "8", "--master-bits", "24", "--act-bits", "16", "--acc-bits", "48",
                              "--inter-bits", "24", "--grad-bits", "24", "--hidden", "16", "--cores", "2",
                              "--ranks", "2", "--batch", "4"],
            "seed": lambda: ["--seed", str(10 ** 23)],
            "cores": lambda: ["--cores", "40"],
            "modes": lambda: ["--in-modes", ",".join(["2"] * 13)],
            "lr": lambda: ["--lr-shift", "62"],
            "epochs": lambda: ["--epochs", "0"]}[case]()
    code, _, err = _run(capsys, "-o", str(out), *argv)
    assert code == 2
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and __import__("re").search(pattern, lines[0]), err
    assert not out.exists()  # nothing written: no step ran


def test_verify_steps_replays_golden_against_fast(tmp_path, capsys):
    code, out, _ = _run(capsys, "-o", str(tmp_path / "v"), "--epochs", "1", "--batch", "64", "--hidden", "16",
                        "--ranks", "2", "--verify-steps", "3")
    assert code == 0 and "golden and fast steps equal for 3 steps" in out


def test_verify_steps_sibling_a_faulty_fast_path_is_named(tmp_path, capsys, monkeypatch):
    from ttforge.ir import train as T

    real = T._Fast.core_grad

    def faulty(dout, x):  # one gradient element off by one: must be named, exit 1
        r = real(dout, x)
        r.flat[0] += 1
        return r

    monkeypatch.setattr(T._Fast, "core_grad", staticmethod(faulty))
    code, out, _ = _run(capsys, "-o", str(tmp_path / "v"), "--epochs", "1", "--batch", "64", "--hidden", "16",
                        "--ranks", "2", "--verify-steps", "2")
    assert code == 1 and "training step 0, phase gradient, layer 1" in out and "element 0" in out
    assert not (tmp_path / "v").exists()


def test_export_writes_the_artifact_of_a_state(tmp_path, capsys):
    import numpy as np

    from ttforge.ir import execute, load_artifact
    from ttforge.ir.train import export_network

    p = _foreign_state(tmp_path, n_in=64, n_out=10)
    code, out, _ = _run(capsys, "--resume", str(p), "--export", str(tmp_path / "m.ttfa"))
    assert code == 0 and "wrote" in out
    net, ref = load_artifact(tmp_path / "m.ttfa"), export_network(load_state(p))
    x = np.random.default_rng(0).integers(0, 128, size=(5, 64))
    assert np.array_equal(execute(net, x), execute(ref, x))
    code, _, err = _run(capsys, "--export", str(tmp_path / "n.ttfa"))
    assert code == 2 and "--export needs --resume" in err


def test_outputs_never_replace_the_state_or_artifact_they_come_from(tmp_path, capsys):
    """--export over the --resume state, and a --from artifact inside -o: refused in one
    line before anything is written; the inputs keep their bytes."""
    run = tmp_path / "r"
    assert _run(capsys, "-o", str(run), "--epochs", "1", "--batch", "64", "--hidden", "16", "--ranks", "2")[0] == 0
    state, model = (run / "state.ttts").read_bytes(), (run / "model.ttfa").read_bytes()
    code, _, err = _run(capsys, "--resume", str(run / "state.ttts"), "--export", str(run / "state.ttts"))
    assert code == 2 and "is the input" in err and len(err.strip().splitlines()) == 1
    code, _, err = _run(capsys, "--from", str(run / "model.ttfa"), "-o", str(run), "--epochs", "1")
    assert code == 2 and "is the input" in err and len(err.strip().splitlines()) == 1
    assert (run / "state.ttts").read_bytes() == state and (run / "model.ttfa").read_bytes() == model


def test_a_run_starts_from_an_artifact(tmp_path, capsys):
    """--from ARTIFACT (here a train-int run's own export) trains: the state records
    where it came from, the golden and fast steps agree on it, and two runs repeat."""
    small = ["--batch", "64", "--hidden", "16", "--ranks", "2"]
    src = tmp_path / "src"
    assert _run(capsys, "-o", str(src), "--epochs", "1", *small)[0] == 0
    runs = []
    for name in ("a", "b"):
        code, out, err = _run(capsys, "--from", str(src / "model.ttfa"), "-o", str(tmp_path / name),
                              "--epochs", "1", "--batch", "64", "--verify-steps", "2")
        assert code == 0, err
        assert "golden and fast steps equal for 2 steps" in out
        runs.append(tmp_path / name / "state.ttts")
    state = load_state(runs[0])
    assert state.epoch == 1 and state.meta["from"] == "model.ttfa"   # its name, not the machine path
    assert runs[0].read_bytes() == runs[1].read_bytes()


def _files(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_a_run_never_silently_replaces_another_run_or_a_users_files(tmp_path, capsys):
    """-o holding a run (a new run, or a resume of another state), or files of the run's
    names but no state (a user's): refused in one line, exit 2, every file kept; with
    --overwrite replaced; resuming the run's own state continues it."""
    small = ["--batch", "64", "--hidden", "16", "--ranks", "2"]
    run, other = tmp_path / "run", tmp_path / "other"
    assert _run(capsys, "-o", str(run), "--epochs", "1", *small)[0] == 0
    assert _run(capsys, "-o", str(other), "--epochs", "1", "--seed", "9", *small)[0] == 0
    kept = _files(run)
    for argv, says in ((["--epochs", "1", *small], "--resume it"),
                       (["--epochs", "2", "--resume", str(other / "state.ttts")], "not the state resumed")):
        code, _, err = _run(capsys, "-o", str(run), *argv)
        assert code == 2 and "already holds a run (state.ttts)" in err and says in err, err
        assert len(err.strip().splitlines()) == 1 and _files(run) == kept
    users = tmp_path / "users"
    users.mkdir()
    (users / "model.ttfa").write_text("precious\n")
    (users / "metrics.json").write_text('{"mine": true}\n')
    code, _, err = _run(capsys, "-o", str(users), "--epochs", "1", *small)
    assert code == 2 and "holds model.ttfa but no state.ttts" in err, err
    assert _files(users) == {"metrics.json": b'{"mine": true}\n', "model.ttfa": b"precious\n"}
    assert _run(capsys, "-o", str(users), "--epochs", "1", "--overwrite", *small)[0] == 0
    assert load_state(users / "state.ttts").epoch == 1
    assert _run(capsys, "-o", str(run), "--epochs", "1", "--seed", "9", "--overwrite", *small)[0] == 0
    assert (run / "state.ttts").read_bytes() == (other / "state.ttts").read_bytes()
    assert _run(capsys, "-o", str(run), "--epochs", "2", "--resume", str(run / "state.ttts"))[0] == 0
    assert load_state(run / "state.ttts").epoch == 2


# --truncate-ranks: host truncation between epochs --------------------------------------
_TR = ["--batch", "64", "--hidden", "16", "--ranks", "4", "--seed", "5"]


def test_truncate_ranks_is_truncate_ranks_of_the_epoch_state_and_resumes(tmp_path, capsys):
    """`--truncate-ranks 1:2,3` is `truncate_ranks(state after epoch 1, 0, (2, 3))` on the
    host, then epoch 2 on the smaller network; byte-identical however the run is cut,
    and the schedule travels in the state."""
    from ttforge.ir.train import truncate_ranks

    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert _run(capsys, "-o", str(a), "--epochs", "2", "--truncate-ranks", "1:2,3", *_TR)[0] == 0
    sa = load_state(a / "state.ttts")
    assert list(sa.layers[0].schedule.shape.ranks) == [1, 2, 3, 1]
    assert sa.meta["truncate_ranks"] == [[1, None, [2, 3]]]
    hist = json.loads((a / "metrics.json").read_text())["history"]
    assert [h["tt_ranks"]["0"] for h in hist] == [[1, 2, 3, 1], [1, 2, 3, 1]]
    # cut after epoch 1: the saved state is already truncated; the resume follows the state's schedule
    assert _run(capsys, "-o", str(b), "--epochs", "1", "--truncate-ranks", "1:2,3", *_TR)[0] == 0
    assert _run(capsys, "-o", str(b), "--epochs", "2", "--resume", str(b / "state.ttts"))[0] == 0
    assert (b / "state.ttts").read_bytes() == (a / "state.ttts").read_bytes()
    # by hand: one epoch without the flag, truncate_ranks, one more epoch
    assert _run(capsys, "-o", str(c), "--epochs", "1", *_TR)[0] == 0
    s1 = load_state(c / "state.ttts")
    s1 = truncate_ranks(s1, 0, (2, 3))
    save_state(s1.replace(meta={**s1.meta, "truncate_ranks": [[1, None, [2, 3]]]}), c / "state.ttts")
    assert _run(capsys, "-o", str(c), "--epochs", "2", "--resume", str(c / "state.ttts"))[0] == 0
    assert (c / "state.ttts").read_bytes() == (a / "state.ttts").read_bytes()


def test_truncate_ranks_sibling_another_truncation_differs(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert _run(capsys, "-o", str(a), "--epochs", "2", "--truncate-ranks", "1:2,3", *_TR)[0] == 0
    assert _run(capsys, "-o", str(b), "--epochs", "2", "--truncate-ranks", "1:3,2", *_TR)[0] == 0
    assert (a / "state.ttts").read_bytes() != (b / "state.ttts").read_bytes()


@pytest.mark.parametrize("spec, pattern", [
    ("x:2,2", r"argument --truncate-ranks: 'x:2,2' is not EPOCH:R1,R2,\.\.\. or EPOCH:LAYER:R1,R2"),
    ("1:2,a", r"is not EPOCH:R1,R2"),
    ("0:2,2", r"'0:2,2': the epoch must be in 1\.\.100,000"),
    ("1:99999999:2,2", r"the layer must be in 0\.\.65,535"),
    ("1:0,2", r"give 1\.\.11 internal ranks, each in 1\.\.65,536"),
    ("1:2,2,2", r"--truncate-ranks 1:2,2,2: give 2 internal ranks for layer 0 \(its ranks are 1,4,4,1\)"),
    ("1:5,2", r"rank 5 of bond 1 of layer 0 must be in 1\.\.4 \(a truncation only lowers ranks\)"),
    ("1:1:2,2", r"layer 1 is not a TT layer; its TT layers are 0"),
    ("3:2,2", r"epoch 3 is after the last one \(--epochs 2\); it would never apply"),
])
def test_bad_truncate_ranks_is_one_line_exit_2_before_any_step(tmp_path, capsys, spec, pattern):
    out = tmp_path / "out"
    try:
        code, _, err = _run(capsys, "-o", str(out), "--epochs", "2", "--truncate-ranks", spec, *_TR)
    except SystemExit as e:   # argparse: its own one line, exit 2
        code, err = e.code, capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.strip()]
    assert code == 2 and len(lines) == 1 and __import__("re").search(pattern, lines[0]), err
    assert not out.exists()


def test_a_second_truncation_must_lower_the_first(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = _run(capsys, "-o", str(out), "--epochs", "3", "--truncate-ranks", "1:2,2",
                        "--truncate-ranks", "2:3,2", *_TR)
    assert code == 2 and "--truncate-ranks 2:3,2: rank 3 of bond 1 of layer 0 must be in 1..2" in err
    code, _, err = _run(capsys, "-o", str(out), "--epochs", "3", "--truncate-ranks", "1:2,2",
                        "--truncate-ranks", "1:0:3,3", *_TR)
    assert code == 2 and "is truncated twice after epoch 1" in err
    assert not out.exists()


def test_an_epoch_interrupted_while_its_files_are_written_leaves_the_last_epochs_files(
        tmp_path, capsys, monkeypatch):
    """Ctrl-C while epoch 2's files are written (here: in its plot, the slowest) leaves
    epoch 1's four files, consistent with one another, and no temporary; before, the
    state, artifact and metrics of epoch 2 were already in place beside epoch 1's plot."""
    import ttforge.model.train_int as train_int

    run = tmp_path / "run"
    small = ["--batch", "64", "--hidden", "16", "--ranks", "2", "--seed", "3"]
    assert _run(capsys, "-o", str(run), "--epochs", "1", *small)[0] == 0
    before = _files(run)
    real = train_int.plot_int_history

    def interrupted(history, path, title):
        real(history, path, title)   # the plot is written, then Ctrl-C before the renames
        raise KeyboardInterrupt

    monkeypatch.setattr(train_int, "plot_int_history", interrupted)
    code, _, _ = _run(capsys, "-o", str(run), "--epochs", "2", "--resume", str(run / "state.ttts"))
    assert code == 130
    assert _files(run) == before and load_state(run / "state.ttts").epoch == 1
    monkeypatch.setattr(train_int, "plot_int_history", real)
    assert _run(capsys, "-o", str(run), "--epochs", "2", "--resume", str(run / "state.ttts"))[0] == 0
    assert load_state(run / "state.ttts").epoch == 2
    assert [h["epoch"] for h in json.loads((run / "metrics.json").read_text())["history"]] == [1, 2]
