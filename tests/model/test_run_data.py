"""A run's data is the same files from any directory: ``train`` records its IDX directory
as an absolute path and a digest of the data; ``quantize``, ``diverge``, ``decompose`` and
``train --resume`` that take the data from the run refuse other data at that path (one
line, exit 2). ``train --data ../mn`` stored the path as typed, and a later command run
from another directory where ``../mn`` was another data set calibrated, evaluated and
trained on it silently."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from ttforge.cli import main
from ttforge.errors import DataError
from ttforge.model.checkpoint import load_checkpoint, save_checkpoint
from ttforge.model.data import data_digest, load_dataset
from ttforge.model.train import load_trained
from tests.support.data import idx_bytes, write_pair

FAST = ["--epochs", "1", "--hidden", "8", "--ranks", "2", "--quiet"]


def _shift_labels(directory) -> None:
    """The labels of ``directory``'s IDX set moved by one class: the same images, other data."""
    path = directory / "t10k-labels-idx1-ubyte"
    ds = load_dataset(str(directory))   # the current labels, to write them shifted
    y = np.concatenate([ds.y_train.numpy(), ds.y_test.numpy()])
    path.write_bytes(idx_bytes(((y + 1) % 10).astype(np.uint8)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run trained from ``one/cwd`` with ``--data ../mn`` (a relative path), and a
    directory ``two/sub/cwd`` where ``../mn`` is another data set."""
    root = tmp_path_factory.mktemp("reldata")
    for d in ("one/cwd", "one/mn", "two/sub/cwd", "two/sub/mn"):
        (root / d).mkdir(parents=True)
    write_pair(root / "one/mn", "t10k", 60)
    write_pair(root / "two/sub/mn", "t10k", 60)
    _shift_labels(root / "two/sub/mn")
    mp = pytest.MonkeyPatch()
    mp.chdir(root / "one/cwd")
    try:
        assert main(["train", "--data", "../mn", "--out", str(root / "run"), *FAST]) == 0
    finally:
        mp.undo()
    return root


def _copy(trained, tmp_path):
    """A copy of the fixture's tree (a test may change its data or its run)."""
    shutil.copytree(trained, tmp_path / "t", symlinks=True)
    return tmp_path / "t"


def test_train_records_the_absolute_directory_and_the_digest_of_its_data(trained):
    payload = load_checkpoint(trained / "run" / "last.pt")
    assert payload["config"]["data"] == str(trained / "one/mn")
    assert payload["data"]["sha256"] == data_digest(load_dataset(str(trained / "one/mn")))


def test_quantize_from_another_directory_reads_the_runs_data(trained, tmp_path, monkeypatch, capsys):
    """From the training directory and from one where ``../mn`` is other data: the same
    artifact, byte for byte (it calibrated and evaluated on other labels, exit 0)."""
    for i, cwd in enumerate(("one/cwd", "two/sub/cwd")):
        monkeypatch.chdir(trained / cwd)
        assert main(["quantize", str(trained / "run"), "-o", str(tmp_path / f"a{i}.ttfa"), "--quiet"]) == 0
    assert (tmp_path / "a0.ttfa").read_bytes() == (tmp_path / "a1.ttfa").read_bytes()


@pytest.mark.parametrize("argv, fix", [
    (["quantize", "{run}", "-o", "{tmp}/a.ttfa"], "give --data DIR to use other data on purpose"),
    (["diverge", "{run}", "--w-bits", "8"], "give --data DIR to use other data on purpose"),
    (["train", "--resume", "--out", "{run}", "--epochs", "2"], "give --data DIR where that data is now"),
])
def test_other_data_at_the_runs_path_is_one_line_exit_2(trained, tmp_path, capsys, argv, fix):
    t = _copy(trained, tmp_path)
    run_dir = t / "run"
    # the run's checkpoint names the fixture's directory: point it at this copy's
    payload = load_checkpoint(run_dir / "last.pt")
    payload["config"]["data"] = str(t / "one/mn")
    save_checkpoint(run_dir / "last.pt", payload)
    _shift_labels(t / "one/mn")
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    code = main([a.format(run=run_dir, tmp=tmp_path) for a in argv] + ["--quiet"] * (argv[0] != "diverge"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert f"data {t / 'one/mn'} is not the data {run_dir / 'last.pt'} was trained on" in err[0] and fix in err[0]
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before
    assert not (tmp_path / "a.ttfa").exists()


def test_data_given_explicitly_is_the_users_choice(trained, tmp_path, capsys):
    """Sibling: ``--data DIR`` (other data on purpose) is not checked."""
    other = trained / "two/sub/mn"
    assert main(["quantize", str(trained / "run"), "--data", str(other), "-o", str(tmp_path / "a.ttfa"),
                 "--quiet"]) == 0, capsys.readouterr().err
    assert main(["diverge", str(trained / "run"), "--data", str(other), "--w-bits", "8"]) == 0


def test_the_python_api_checks_the_runs_data(trained, tmp_path):
    """``Trained.dataset()`` is the one check: quantize_trained goes through it."""
    from ttforge.quant.ptq import quantize_trained

    t = _copy(trained, tmp_path)
    payload = load_checkpoint(t / "run" / "last.pt")
    payload["config"]["data"] = str(t / "one/mn")
    save_checkpoint(t / "run" / "last.pt", payload)
    run = load_trained(t / "run")
    assert run.dataset().name == "mn"   # sibling: the run's own data passes
    _shift_labels(t / "one/mn")
    with pytest.raises(DataError, match="is not the data .* was trained on"):
        quantize_trained(load_trained(t / "run"))


def test_a_run_written_before_the_digest_works_as_before(trained, tmp_path, monkeypatch, capsys):
    """No digest and a relative path (as written before): read from the current directory,
    unchecked; quantize and resume work."""
    t = _copy(trained, tmp_path)
    payload = load_checkpoint(t / "run" / "last.pt")
    payload["config"]["data"] = "../mn"
    del payload["data"]["sha256"]
    save_checkpoint(t / "run" / "last.pt", payload)
    monkeypatch.chdir(t / "one/cwd")
    assert main(["quantize", str(t / "run"), "-o", str(tmp_path / "a.ttfa"), "--quiet"]) == 0
    assert main(["train", "--resume", "--out", str(t / "run"), "--epochs", "2", "--quiet"]) == 0, \
        capsys.readouterr().err
    resumed = load_checkpoint(t / "run" / "last.pt")
    assert resumed["epoch"] == 2 and resumed["config"]["data"] == str(t / "one/mn")


def test_a_config_files_data_is_relative_to_the_file(trained, tmp_path, monkeypatch, capsys):
    t = _copy(trained, tmp_path)
    conf = t / "one" / "run.toml"
    conf.write_text('data = "mn"\nepochs = 1\n[model]\nhidden = [8]\nranks = 2\n')
    monkeypatch.chdir(t / "two/sub/cwd")
    assert main(["train", "--config", str(conf), "--out", str(tmp_path / "run"), "--quiet"]) == 0, \
        capsys.readouterr().err
    assert load_trained(tmp_path / "run").config.data == str(t / "one/mn")


def test_decompose_checks_the_data_and_records_the_sources_name(tmp_path, monkeypatch, capsys):
    """``decompose`` takes the data from the checkpoint as the others do, carries its
    digest on, and records the source's name, not the path as typed."""
    (tmp_path / "mn").mkdir()
    write_pair(tmp_path / "mn", "t10k", 60)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--model", "dense", "--data", "mn", "--out", "run", "--epochs", "1", "--hidden", "8",
                 "--quiet"]) == 0
    (tmp_path / "link").symlink_to(tmp_path / "run")
    outs = []
    for i, src in enumerate(("run", str(tmp_path / "run"), "link")):
        assert main(["decompose", src, "--max-rank", "2", "-o", f"tt{i}.pt", "--json"]) == 0
        assert f'"source": "{src}"' in capsys.readouterr().out   # the report keeps what was typed
        outs.append(load_checkpoint(tmp_path / f"tt{i}.pt"))
    assert {o["decomposition"]["source"] for o in outs} == {"run"}
    assert outs[0]["data"]["sha256"] == load_checkpoint(tmp_path / "run/last.pt")["data"]["sha256"]
    _shift_labels(tmp_path / "mn")
    assert main(["decompose", "run", "--max-rank", "2", "-o", "tt9.pt"]) == 2
    assert "is not the data" in capsys.readouterr().err
    assert main(["quantize", "tt0.pt", "-o", "a.ttfa", "--quiet"]) == 2   # the digest went along
    assert "is not the data" in capsys.readouterr().err


# -- a run moved with its data; a config reached through a link -----------------------------
@pytest.fixture(scope="module")
def moved(tmp_path_factory):
    """A run trained in ``proj`` with ``--data mn`` (relative), then ``proj`` renamed
    ``proj2``, with ``other`` beside ``mn`` (the same images, other labels), and the
    same run trained for 2 epochs without a break, as the reference for a resume."""
    root = tmp_path_factory.mktemp("moved")
    for d in ("proj/mn", "proj/other"):
        (root / d).mkdir(parents=True)
        write_pair(root / d, "t10k", 60)
    _shift_labels(root / "proj/other")
    mp = pytest.MonkeyPatch()
    mp.chdir(root / "proj")
    try:
        assert main(["train", "--data", "mn", "--out", "run", *FAST]) == 0
        assert main(["train", "--data", "mn", "--out", "full", *FAST[2:], "--epochs", "2"]) == 0
    finally:
        mp.undo()
    (root / "proj").rename(root / "proj2")
    return root


def test_a_moved_runs_missing_directory_names_the_fix(moved, tmp_path, monkeypatch, capsys):
    """The run's recorded directory is gone: the line names it as the run records it and
    ``--data DIR`` (it said ``data='...': ... give 'digits' or a directory``, a field the
    user never typed)."""
    t = _copy(moved, tmp_path)
    monkeypatch.chdir(t / "proj2")
    before = (t / "proj2/run/last.pt").read_bytes()
    gone = moved / "proj" / "mn"
    for argv in (["train", "--resume", "--out", "run", "--epochs", "2", "--quiet"],
                 ["quantize", "run", "-o", "a.ttfa", "--quiet"],
                 ["decompose", "run", "--max-rank", "2", "-o", "tt.pt"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].endswith(
            f"error: the data directory {gone} that run/last.pt records does not exist; give --data DIR, "
            f"the directory that holds it now"), err
    assert (t / "proj2/run/last.pt").read_bytes() == before
    assert not (t / "proj2/a.ttfa").exists() and not (t / "proj2/tt.pt").exists()


def test_a_moved_run_resumes_with_data_naming_the_new_place(moved, tmp_path, monkeypatch, capsys):
    """``--resume --data mn`` from the new place: the same data by digest, so the run
    continues (as an uninterrupted run ends) and records the new path; it was refused as
    'trained with data=...'. Sibling: ``--data other`` (other labels) is refused."""
    t = _copy(moved, tmp_path)
    monkeypatch.chdir(t / "proj2")
    before = (t / "proj2/run/last.pt").read_bytes()
    assert main(["train", "--resume", "--out", "run", "--data", "other", "--epochs", "2", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"data {t / 'proj2/other'} is not the data run/last.pt was trained on" in err[0], err
    assert (t / "proj2/run/last.pt").read_bytes() == before
    assert main(["train", "--resume", "--out", "run", "--data", "mn", "--epochs", "2", "--quiet"]) == 0, \
        capsys.readouterr().err
    resumed, full = load_checkpoint(t / "proj2/run/last.pt"), load_checkpoint(t / "proj2/full/last.pt")
    assert resumed["epoch"] == 2 and resumed["config"]["data"] == str(t / "proj2/mn")
    assert resumed["data"]["sha256"] == full["data"]["sha256"]
    assert resumed["state_dict"].keys() == full["state_dict"].keys()
    assert all(torch.equal(resumed["state_dict"][k], full["state_dict"][k]) for k in full["state_dict"])
    # the new path is the run's from then on: a resume without --data reads it
    assert main(["train", "--resume", "--out", "run", "--epochs", "3", "--quiet"]) == 0, capsys.readouterr().err


def test_an_old_runs_missing_relative_directory_is_named_as_recorded(trained, tmp_path, monkeypatch, capsys):
    """A run written before the digest (``../mn``, no digest) resumed or quantized from a
    directory without ``../mn``: the line names ``../mn`` as recorded (the resume said
    the current directory's absolute path, the field ``data=`` for both)."""
    t = _copy(trained, tmp_path)
    payload = load_checkpoint(t / "run" / "last.pt")
    payload["config"]["data"] = "../mn"
    del payload["data"]["sha256"]
    save_checkpoint(t / "run" / "last.pt", payload)
    (t / "elsewhere").mkdir()
    monkeypatch.chdir(t / "elsewhere")
    where = f"error: the data directory ../mn that {t / 'run'}/last.pt records (relative to the current directory)"
    for argv, fix in (
            (["train", "--resume", "--out", str(t / "run"), "--epochs", "2", "--quiet"],
             "resume from the directory the run was started in, or choose a new --out"),
            (["quantize", str(t / "run"), "-o", "a.ttfa", "--quiet"], "give --data DIR, the directory that holds it now")):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].endswith(f"{where} does not exist; {fix}"), err


def test_a_config_reached_through_a_link_is_relative_to_its_target(tmp_path, monkeypatch, capsys):
    """``train --config linkdir/c.toml`` (a link to ``cfgdir/c.toml``) with ``data = "mn"``
    reads ``cfgdir/mn``, as ``flow`` does (it read ``linkdir/mn``, other data there)."""
    for d in ("cfgdir/mn", "linkdir/mn"):
        (tmp_path / d).mkdir(parents=True)
        write_pair(tmp_path / d, "t10k", 60)
    _shift_labels(tmp_path / "linkdir/mn")
    (tmp_path / "cfgdir/c.toml").write_text('data = "mn"\nepochs = 1\n[model]\nhidden = [8]\nranks = 2\n')
    (tmp_path / "linkdir/c.toml").symlink_to("../cfgdir/c.toml")
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--config", "linkdir/c.toml", "--out", "run", "--quiet"]) == 0, capsys.readouterr().err
    payload = load_checkpoint(tmp_path / "run/last.pt")
    assert payload["config"]["data"] == str(tmp_path / "cfgdir/mn")
    assert payload["data"]["sha256"] == data_digest(load_dataset(str(tmp_path / "cfgdir/mn")))
