import json
import re

import pytest
import torch

from ttforge.cli import main
from ttforge.errors import CheckpointError, ConfigError
from ttforge.model.network import ModelConfig
from ttforge.model.decomposition import decompose
from ttforge.model.train import TrainConfig, evaluate, load_trained, train
from ttforge.model.data import load_digits_split

SMALL = ModelConfig(hidden=(32,), ranks=4)


def cfg(**kw) -> TrainConfig:
    base = dict(model=SMALL, epochs=2, batch_size=128)
    return TrainConfig(**{**base, **kw})


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# -- config -----------------------------------------------------------------------------
@pytest.mark.parametrize("kw, message", [
    (dict(epochs=0), "epochs=0 must be an integer in 1..100,000"),
    (dict(epochs=10**20), "epochs=100000000000000000000 must be an integer in 1..100,000"),
    (dict(finetune_epochs=100_001), "finetune_epochs=100001 must be an integer in 0..100,000"),
    (dict(threads=100_000), "threads=100000 must be an integer in 1..1,024"),
    (dict(lr=-1.0), "lr=-1.0 must be a positive number"),
    (dict(batch_size=0), "batch_size=0"),
    (dict(prior="gauss"), "prior='gauss' must be one of log_uniform, half_cauchy"),
    (dict(truncation_threshold=2.0), "truncation_threshold=2.0 must be between 0 and 1"),
    (dict(rank_adaptive=True, model=ModelConfig(kind="dense")), "rank_adaptive needs TT layers"),
    (dict(threads=0), "threads=0"),
])
def test_bad_train_config(kw, message):
    with pytest.raises(ConfigError, match=message) as e:
        TrainConfig(**kw)
    assert "\n" not in str(e.value)


def test_config_round_trips_and_rejects_unknown_fields():
    c = cfg(rank_adaptive=True, prior="half_cauchy")
    assert TrainConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    with pytest.raises(ConfigError, match="unknown config field 'epoch'"):
        TrainConfig.from_dict({"epoch": 3})


# -- training -----------------------------------------------------------------------------
def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    a = train(cfg(), tmp_path / "a", progress=False)
    b = train(cfg(), tmp_path / "b", progress=False)
    c = train(cfg(seed=1), tmp_path / "c", progress=False)
    assert_same_weights(a.model, b.model)
    assert not torch.equal(a.model[1].cores[0], c.model[1].cores[0])
    assert a.history[-1]["test_acc"] == b.history[-1]["test_acc"]


def test_outputs_and_checkpoint_contents(tmp_path):
    r = train(cfg(), tmp_path / "run", progress=False)
    assert r.complete and len(r.history) == 2
    assert (tmp_path / "run" / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    for key in ("train_loss", "train_acc", "test_loss", "test_acc", "ranks"):
        assert key in metrics["history"][-1]
    assert metrics["summary"]["test_acc"] == r.history[-1]["test_acc"]
    loaded = load_trained(tmp_path / "run")
    assert_same_weights(loaded.model, r.model)
    assert loaded.config == cfg()
    assert loaded.payload["epoch"] == 2 and loaded.payload["optimizer"] is not None
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["last.pt", "metrics.json", "metrics.png"]


def test_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path):
    full = train(cfg(epochs=3), tmp_path / "full", progress=False)
    part = train(cfg(epochs=3), tmp_path / "part", progress=False, stop_after=2)
    assert not part.complete and len(part.history) == 2
    resumed = train(cfg(epochs=3), tmp_path / "part", resume=True, progress=False)
    assert resumed.complete
    assert_same_weights(full.model, resumed.model)
    assert [h["test_acc"] for h in resumed.history] == [h["test_acc"] for h in full.history]


def test_a_finished_run_can_be_extended(tmp_path):
    full = train(cfg(epochs=3), tmp_path / "full", progress=False)
    train(cfg(epochs=2), tmp_path / "ext", progress=False)
    extended = train(cfg(epochs=3), tmp_path / "ext", resume=True, progress=False)
    assert_same_weights(full.model, extended.model)


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory):
    run = tmp_path_factory.mktemp("one") / "run"
    train(cfg(epochs=1), run, progress=False)
    return run


def _damage(field, value):
    def apply(p):
        if value is _GONE:
            p.pop(field)
        elif field == "weight":
            name = next(iter(p["state_dict"]))
            p["state_dict"][name] = value(p["state_dict"][name])
        else:
            p[field] = value
    return apply


_GONE = object()


@pytest.mark.parametrize("damage, says", [
    (_damage("optimizer", {"x": 1}), "its optimizer state is damaged"),
    (_damage("optimizer", {"state": {}, "param_groups": []}), "its optimizer state is damaged"),
    (_damage("rng", _GONE), "its sampler state (rng) is damaged"),
    (_damage("rng", {"torch": torch.zeros(3, dtype=torch.uint8)}), "its sampler state (rng) is damaged"),
    (_damage("epoch", -5), "its epoch -5 is not an integer in 0..100,000"),
    (_damage("epoch", 10 ** 30), "is not an integer in 0..100,000"),
    (_damage("epoch", "x"), "its epoch 'x' is not an integer"),
    (_damage("elapsed_s", "x"), "its elapsed_s 'x' is not a number of seconds"),
    (_damage("history", "abc"), "its history is not a list of epoch rows"),
    (_damage("history", [{"epoch": "x"}]), "its history is not a list of epoch rows"),
    (_damage("weight", lambda t: t.to(torch.complex64)), "is torch.complex64, not a real floating-point tensor"),
    (_damage("weight", lambda t: t.to(torch.int64)), "is torch.int64, not a real floating-point tensor"),
])
def test_a_checkpoint_with_a_right_checksum_and_a_damaged_field_is_one_line(one_epoch, tmp_path, damage, says):
    """A checkpoint saved through the public API (so its checksum is right) with a field
    no run writes: --resume is one CheckpointError naming the field (each was an
    internal error inside torch, or a resume from epoch 10^30; complex weights were
    cast with torch's own warning), and the run directory keeps its bytes."""
    import copy

    from ttforge.model.checkpoint import load_checkpoint, save_checkpoint

    payload = copy.deepcopy(load_checkpoint(one_epoch / "last.pt"))
    damage(payload)
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(run / "last.pt", payload)
    before = (run / "last.pt").read_bytes()
    with pytest.raises(CheckpointError, match=re.escape(says)) as e:
        train(cfg(epochs=2), run, resume=True, progress=False)
    assert "\n" not in str(e.value)
    assert (run / "last.pt").read_bytes() == before and sorted(p.name for p in run.iterdir()) == ["last.pt"]


def test_resume_and_overwrite_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist; drop --resume"):
        train(cfg(), tmp_path / "none", resume=True, progress=False)
    train(cfg(epochs=1), tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="already holds a run"):
        train(cfg(epochs=1), tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="was trained with lr=0.01, not 0.1"):
        train(cfg(epochs=2, lr=0.1), tmp_path / "run", resume=True, progress=False)
    with pytest.raises(ConfigError, match="model hidden=\\[32\\], not \\[16\\]"):
        train(cfg(model=ModelConfig(hidden=(16,), ranks=4)), tmp_path / "run", resume=True, progress=False)
    train(cfg(epochs=1, seed=3), tmp_path / "run", progress=False, overwrite=True)
    assert load_trained(tmp_path / "run").config.seed == 3


# -- rank-adaptive ------------------------------------------------------------------------------
RA = dict(model=ModelConfig(hidden=(32,), ranks=6), rank_adaptive=True, epochs=3, finetune_epochs=1,
          truncation_threshold=0.9)


def test_rank_adaptive_truncates_and_the_checkpoint_keeps_the_ranks(tmp_path):
    r = train(cfg(**RA), tmp_path / "ra", progress=False)
    tr = r.summary["truncation"]
    before, after = tr["layers"]["1"]["before"], tr["layers"]["1"]["after"]
    assert before == [1, 6, 1] and after[1] < 6
    assert tr["tt_params_after"] < tr["tt_params_before"]
    assert 0 <= tr["test_acc_after"] <= 1
    assert [h["phase"] for h in r.history] == ["train"] * 3 + ["finetune"]
    assert r.history[-1]["ranks"]["1"] == after
    assert "effective_ranks" in r.history[0]
    loaded = load_trained(tmp_path / "ra")
    assert list(loaded.model[1].ranks) == after
    assert_same_weights(loaded.model, r.model)
    ds = load_digits_split()
    assert evaluate(loaded.model, ds.x_test, ds.y_test)[1] == r.history[-1]["test_acc"]


def test_rank_adaptive_truncation_keeps_the_accuracy_and_shrinks_the_ranks(tmp_path):
    """The loop re-gauges (prior.balance) every epoch, so truncation cuts only what is unused.

    With the variances updated but the gauge never rotated (prior.update() alone), this very
    run lost 22 pp at truncation (92.8 % -> 70.8 %); with balance it loses under 1 pp.
    """
    c = TrainConfig(model=ModelConfig(hidden=(64,), n_cores=3, ranks=8), rank_adaptive=True, epochs=4,
                    finetune_epochs=1, truncation_threshold=0.2, seed=1)
    r = train(c, tmp_path / "ra", progress=False)
    tr = r.summary["truncation"]
    before, after = tr["layers"]["1"]["before"], tr["layers"]["1"]["after"]
    assert before == [1, 8, 8, 1] and sum(after) <= sum(before) - 4, after
    assert tr["tt_params_after"] < 0.6 * tr["tt_params_before"]
    assert tr["test_acc_before"] >= 0.9
    assert tr["test_acc_after"] >= tr["test_acc_before"] - 0.02, tr
    assert r.summary["test_acc"] >= tr["test_acc_before"] - 0.03


@pytest.mark.parametrize("stop", [1, 3])  # before and right after the truncation
def test_rank_adaptive_resume_is_exact(tmp_path, stop):
    full = train(cfg(**RA), tmp_path / "full", progress=False)
    train(cfg(**RA), tmp_path / "part", progress=False, stop_after=stop)
    resumed = train(cfg(**RA), tmp_path / "part", resume=True, progress=False)
    assert_same_weights(full.model, resumed.model)
    assert resumed.summary["truncation"]["layers"] == full.summary["truncation"]["layers"]


# -- CLI ------------------------------------------------------------------------------------------
def test_cli_train_writes_checkpoint_metrics_and_plot(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--hidden", "16", "--ranks", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "run summary" in text and "test accuracy" in text
    assert sorted(p.name for p in out.iterdir()) == ["last.pt", "metrics.json", "metrics.png"]
    # resume with more epochs: only --out and the new --epochs are needed
    assert main(["train", "--resume", "--epochs", "2", "--out", str(out), "--quiet"]) == 0
    assert load_trained(out).payload["epoch"] == 2
    assert load_trained(out).model_config.hidden == (16,)


def test_cli_config_file_toml(tmp_path, capsys):
    conf = tmp_path / "run.toml"
    conf.write_text(f'epochs = 1\nseed = 5\nout = "{tmp_path / "t"}"\n[model]\nkind = "dense"\nhidden = [8]\n')
    assert main(["train", "--config", str(conf), "--quiet"]) == 0
    loaded = load_trained(tmp_path / "t")
    assert loaded.config.seed == 5 and loaded.model_config.kind == "dense"


@pytest.mark.parametrize("args, message", [
    (["--ranks", "0"], "--ranks=0 must be >= 1"),
    (["--data", "/nonexistent/mnist"], "/nonexistent/mnist does not exist"),
    (["--epochs", "0"], "epochs=0 must be an integer in 1..100,000"),
    (["--config", "RANKS"], "exceeds the maximal TT rank 64"),
    (["--model", "dense", "--rank-adaptive"], "rank_adaptive needs TT layers"),
    (["--resume"], "does not exist; drop --resume"),
    (["--config", "CONF"], "unknown config field 'epoch'"),
    (["--config", "BADSYNTAX"], "is not valid"),
])
def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, args, message):
    (tmp_path / "c.json").write_text('{"epoch": 3}')
    (tmp_path / "bad.toml").write_text("epochs = = 3")
    (tmp_path / "ranks.json").write_text('{"model": {"hidden": [64], "ranks": [[1, 99, 1]]}}')
    files = {"CONF": "c.json", "BADSYNTAX": "bad.toml", "RANKS": "ranks.json"}
    args = [str(tmp_path / files[a]) if a in files else a for a in args]
    out = tmp_path / "run"
    assert main(["train", "--quiet", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()


# -- decompose ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dense_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dense") / "run"
    train(TrainConfig(model=ModelConfig(kind="dense", hidden=(32,)), epochs=3), out, progress=False)
    return out


def test_decompose_honours_the_error_bound_and_reports_accuracy(dense_run, tmp_path, capsys):
    out = tmp_path / "tt.pt"
    assert main(["decompose", str(dense_run / "last.pt"), "--rel-error", "0.4", "-o", str(out)]) == 0
    # the table title wraps where the path is long (pytest-xdist's tmp paths are)
    text = " ".join(capsys.readouterr().out.split())
    assert "test accuracy" in text and "rel. error" in text
    report = load_trained(out).payload["decomposition"]
    assert len(report["layers"]) == 2
    for layer in report["layers"]:
        assert layer["rel_error"] <= 0.4
    tt = load_trained(out)
    assert [type(m).__name__ for m in tt.model] == ["Flatten", "TTLinear", "ReLU", "TTLinear"]
    ds = load_digits_split()
    assert evaluate(tt.model, ds.x_test, ds.y_test)[1] == report["test_acc_after"]
    dense = load_trained(dense_run)
    assert evaluate(dense.model, ds.x_test, ds.y_test)[1] == report["test_acc_before"]


def test_decompose_max_rank_and_skip_last(dense_run, tmp_path):
    report = decompose(dense_run, tmp_path / "tt.pt", max_rank=2, skip_last=True)
    assert len(report["layers"]) == 1 and max(report["layers"][0]["ranks"]) <= 2
    assert report["layers"][0]["rel_error"] > 0  # reported, not hidden
    loaded = load_trained(tmp_path / "tt.pt")
    assert [type(m).__name__ for m in loaded.model] == ["Flatten", "TTLinear", "ReLU", "Linear"]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_decompose_names_the_layer_with_non_finite_weights(dense_run, tmp_path, capsys, bad):
    """A checkpoint whose second layer diverged: exit 2, one line naming the layer, no
    output (before: NaN failed inside the SVD with MKL's messages, inf went through)."""
    from ttforge.model.checkpoint import load_checkpoint, save_checkpoint

    payload = load_checkpoint(dense_run / "last.pt")
    payload["state_dict"]["3.weight"][2, 7] = bad
    save_checkpoint(tmp_path / "diverged.pt", payload)
    out = tmp_path / "tt.pt"
    assert main(["decompose", str(tmp_path / "diverged.pt"), "--rel-error", "0.3", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "layer 3 (nn.Linear 32 -> 10)" in err[0]
    assert "NaN or infinite values" in err[0]
    assert not out.exists()


@pytest.mark.parametrize("command", [["decompose", "--rel-error", "0.4"], ["export-onnx"]])
@pytest.mark.parametrize("name", ["metrics.json", "metrics.png", "last.pt"])
def test_an_output_never_replaces_a_file_of_the_run_it_reads(dense_run, tmp_path, capsys, command, name):
    """Not only the checkpoint: its run's metrics and plot are the command's inputs too
    (before, `decompose RUN -o RUN/metrics.json` replaced the run's metrics)."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(dense_run, run)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    assert name in before
    for src in (run, run / "last.pt"):
        assert main([command[0], str(src), *command[1:], "-o", str(run / name)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is the input" in err[0] and name in err[0], err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    # a checkpoint that is not a run's (another name) keeps its neighbours writable
    (tmp_path / "other").mkdir()
    shutil.copy(run / "last.pt", tmp_path / "other" / "tt.pt")
    out = tmp_path / "other" / name
    assert main([command[0], str(tmp_path / "other" / "tt.pt"), *command[1:], "-o", str(out)]) == 0
    assert out.is_file()


def test_decompose_bad_input(dense_run, tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    raw = bytearray((dense_run / "last.pt").read_bytes())
    raw[100] ^= 0xFF
    bad.write_bytes(bytes(raw))
    out = tmp_path / "tt.pt"
    assert main(["decompose", str(bad), "--rel-error", "0.1", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "corrupt" in err[0]
    assert not out.exists()
    assert main(["decompose", str(dense_run), "--rel-error", "1.5", "-o", str(out)]) == 2
    assert "--rel-error=1.5 must be between 0 and 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["decompose", str(dense_run), "--rel-error", "0.1", "--max-rank", "3", "-o", str(out)])
    assert e.value.code == 2
    assert not out.exists()


# -- a real training run (not in the default suite) -------------------------------------------------
@pytest.mark.slow
def test_tt_digits_reaches_95_percent(tmp_path):
    r = train(TrainConfig(), tmp_path / "tt", progress=False)
    assert r.summary["test_acc"] >= 0.95
    ra = train(TrainConfig(rank_adaptive=True), tmp_path / "ra", progress=False)
    assert ra.summary["test_acc"] >= 0.95
    assert ra.summary["tt_compression"] >= 10


@pytest.mark.parametrize("rank_adaptive", [False, True])
def test_a_diverging_run_stops_in_one_line_and_writes_nothing(tmp_path, rank_adaptive):
    """Before: a rank-adaptive run failed inside linalg.svd (exit 70, "a bug in
    ttforge"); a plain one finished 'successfully' at chance accuracy with NaN in
    metrics.json."""
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"training diverged in epoch 1: .* lower the learning "
                                          r"rate \(lr=1e\+30\)"):
        train(cfg(lr=1e30, rank_adaptive=rank_adaptive, finetune_epochs=1), out, progress=False)
    assert not (out / "last.pt").exists() and not (out / "metrics.json").exists()


@pytest.mark.parametrize("n_x, n_y", [(0, 0), (5, 3)])
def test_evaluate_needs_one_label_per_sample(n_x, n_y):
    """Before: ZeroDivisionError for no samples, torch's ValueError for a mismatch."""
    from ttforge.errors import DataError

    with pytest.raises(DataError, match=f"got {n_x} samples and {n_y} labels"):
        evaluate(torch.nn.Linear(4, 3), torch.randn(n_x, 4), torch.zeros(n_y, dtype=torch.long))


def test_paths_are_printed_as_text_not_markup(dense_run, tmp_path, capsys):
    """A path holding ``[/]`` (legal on every file system) failed rich's markup parser
    after the checkpoint was written: exit 70, "a bug". ESC sequences are escaped."""
    from ttforge.errors import shown

    odd = tmp_path / "t[" / "]x\x1b[31m.pt"      # ".../t[/]x<ESC>[31m.pt"
    odd.parent.mkdir()
    assert main(["decompose", str(dense_run), "--max-rank", "2", "-o", str(odd)]) == 0
    out = "".join(capsys.readouterr().out.split())   # rich wraps long lines
    assert "t[/]x\\x1b[31m.pt" in out and "\x1b" not in out and odd.is_file()
    assert shown("a[/]b\x1b\u202ec\x9b[bold]") == "a\\[/]b\\x1b\\u202ec\\x9b\\[bold]"


def test_decompose_refuses_a_kept_layer_with_non_finite_weights(tmp_path, capsys):
    """A TT layer (kept as it is) holding a NaN went through into a checkpoint that
    every other command refuses (exit 0)."""
    from ttforge.model.checkpoint import load_checkpoint, save_checkpoint

    run = tmp_path / "run"
    train(TrainConfig(model=ModelConfig(kind="tt", hidden=(32,)), epochs=1), run, progress=False)
    payload = load_checkpoint(run / "last.pt")
    name = next(k for k in payload["state_dict"] if "cores" in k)
    payload["state_dict"][name].view(-1)[0] = float("nan")
    save_checkpoint(tmp_path / "nan.pt", payload)
    out = tmp_path / "tt.pt"
    assert main(["decompose", str(tmp_path / "nan.pt"), "--max-rank", "2", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds NaN or infinite weights" in err[0] and not out.exists()


def test_a_checkpoint_whose_weights_do_not_fit_names_the_key(dense_run, tmp_path, capsys):
    """The line ended at torch's header, "Error(s) in loading state_dict for Sequential:"."""
    from ttforge.model.checkpoint import load_checkpoint, save_checkpoint

    payload = load_checkpoint(dense_run / "last.pt")
    payload["state_dict"]["3.weight"] = torch.zeros(10, 65)
    save_checkpoint(tmp_path / "bad.pt", payload)
    assert main(["decompose", str(tmp_path / "bad.pt"), "--max-rank", "2", "-o", str(tmp_path / "o.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "size mismatch for 3.weight" in err[0], err


def test_odd_names_print_and_plot_as_text(tmp_path, capsys):
    """A data directory named like ``m$\\f$x`` broke matplotlib's math parser in the plot
    title (exit 70 after training; train-int lost its epoch), and a run directory with
    ``[/]`` failed rich's markup on --resume's line (exit 70, every time)."""
    from tests.support.data import write_pair

    data = tmp_path / "m$\\foo$x"
    data.mkdir()
    write_pair(data, "t10k", 40)
    out = tmp_path / "r[" / "]x"
    out.parent.mkdir()
    assert main(["train", "--data", str(data), "--epochs", "1", "--hidden", "8", "--out", str(out)]) == 0
    assert (out / "metrics.png").is_file()
    assert main(["train", "--data", str(data), "--epochs", "2", "--hidden", "8", "--out", str(out),
                 "--resume"]) == 0, capsys.readouterr().err


def test_data_given_as_idx_dir_is_an_input(tmp_path, capsys):
    """``--data idx:DIR --out DIR`` passed the check of ``--data DIR --out DIR``."""
    from tests.support.data import write_pair

    write_pair(tmp_path, "t10k", 20)
    assert main(["train", "--data", f"idx:{tmp_path}", "--out", str(tmp_path), "--epochs", "1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is the input" in err[0]


@pytest.mark.parametrize("kind", ["fifo", "directory"])
@pytest.mark.parametrize("name", ["metrics.png", "metrics.json"])
def test_resume_refuses_what_a_runs_file_cannot_replace_before_any_step(one_epoch, tmp_path, capsys,
                                                                         monkeypatch, kind, name):
    """A FIFO or a directory at run/metrics.png was found after an epoch, when last.pt and
    metrics.json had been rewritten; train-int refuses it before any step, and so does train."""
    import os
    import shutil

    from ttforge.model import train as train_mod

    run = tmp_path / "run"
    shutil.copytree(one_epoch, run)
    (run / name).unlink(missing_ok=True)
    os.mkfifo(run / name) if kind == "fifo" else (run / name).mkdir()
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != name}
    monkeypatch.setattr(train_mod, "_load_data", lambda *a: pytest.fail("the run started"))
    assert main(["train", "--resume", "--epochs", "2", "--out", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err
    what = "a FIFO" if kind == "fifo" else "a directory"
    assert err.count("\n") == 1 and f"{run / name} is {what} where the run writes its {name}; " \
        f"remove or move it, or choose another --out" in err, err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != name} == before


def test_overwrite_without_a_checkpoint_refuses_a_fifo_at_a_runs_file_before_any_step(tmp_path, capsys,
                                                                                       monkeypatch):
    """--overwrite into a directory without last.pt trains in place: a FIFO at metrics.png
    failed only at the end of the run."""
    import os

    from ttforge.model import train as train_mod

    run = tmp_path / "run"
    run.mkdir()
    os.mkfifo(run / "metrics.png")
    monkeypatch.setattr(train_mod, "_load_data", lambda *a: pytest.fail("the run started"))
    assert main(["train", "--overwrite", "--epochs", "1", "--hidden", "16", "--ranks", "2",
                 "--out", str(run), "--quiet"]) == 2
    assert "metrics.png is a FIFO where the run writes its metrics.png" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == ["metrics.png"]


# -- the host's torch state -------------------------------------------------------------
def _global_draw_before_each_init(monkeypatch):
    """Another thread of the host draws from torch's global generator while the network
    is initialised (made reproducible: a draw before every initialising call)."""
    for name in ("normal_", "uniform_", "kaiming_uniform_"):
        real = getattr(torch.nn.init, name)

        def drawing(*args, _real=real, **kwargs):
            torch.rand(1)
            return _real(*args, **kwargs)

        monkeypatch.setattr(torch.nn.init, name, drawing)


@pytest.mark.parametrize("kind", ["tt", "dense"])
def test_the_hosts_global_generator_neither_changes_nor_is_changed_by_training(tmp_path, monkeypatch, kind):
    """The weights came from torch's global generator after torch.manual_seed(seed):
    another thread drawing from it meanwhile changed them (1 run in 5 with a thread
    calling torch.randn), and after train() the host's torch.rand gave the same values
    whatever seed the host had set. Now a generator of the run's own, equal to the
    former stream (tests/model/test_seeding.py)."""
    c = cfg(epochs=1, model=ModelConfig(kind=kind, hidden=(32,), ranks=4))
    torch.manual_seed(123)
    host = torch.get_rng_state()
    ref = train(c, tmp_path / "ref", progress=False)
    assert torch.equal(torch.get_rng_state(), host)
    _global_draw_before_each_init(monkeypatch)
    got = train(c, tmp_path / "got", progress=False)
    assert_same_weights(got.model, ref.model)


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_training_inside_a_no_grad_host_and_with_a_float64_default(tmp_path, context):
    """Called under torch.no_grad() or torch.inference_mode(), train() raised torch's
    "element 0 of tensors does not require grad"; with float64 as torch's default dtype
    a dtype RuntimeError. Both train the same weights as a plain call."""
    ref = train(cfg(epochs=1), tmp_path / "ref", progress=False)
    with context():
        a = train(cfg(epochs=1), tmp_path / "a", progress=False)
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        b = train(cfg(epochs=1), tmp_path / "b", progress=False)
        loaded = load_trained(tmp_path / "b")
    finally:
        torch.set_default_dtype(before)
    assert_same_weights(a.model, ref.model)
    assert_same_weights(b.model, ref.model)
    assert_same_weights(loaded.model, ref.model)
