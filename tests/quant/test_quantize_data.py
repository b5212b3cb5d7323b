"""``quantize --data DIR`` records the data it used as a run records its own: the
artifact's ``meta.data`` is the directory's absolute path (it was the path as typed, so
``data``, ``./data/`` and the absolute path gave three artifacts of one run), and
``--save-checkpoint`` records that path and its digest (it recorded the run's, though
the weights were calibrated and fine-tuned on ``--data``, so ``quantize q.pt`` read the
run's data and its digest check called that the data q.pt was trained on)."""

from __future__ import annotations

import numpy as np
import pytest

from ttforge.cli import main
from ttforge.ir.artifact import load_artifact
from ttforge.model.checkpoint import load_checkpoint
from ttforge.model.data import data_digest, load_dataset
from tests.support.data import idx_bytes, write_pair


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """``mn`` and ``other`` (the same images, labels moved by one class) and a run
    trained on ``mn`` (1 epoch)."""
    root = tmp_path_factory.mktemp("qdata")
    for d in ("mn", "other"):
        (root / d).mkdir()
        write_pair(root / d, "t10k", 60)
    y = load_dataset(str(root / "other"))
    labels = np.concatenate([y.y_train.numpy(), y.y_test.numpy()])
    (root / "other/t10k-labels-idx1-ubyte").write_bytes(idx_bytes(((labels + 1) % 10).astype(np.uint8)))
    assert main(["train", "--data", str(root / "mn"), "--out", str(root / "run"), "--epochs", "1",
                 "--hidden", "8", "--ranks", "2", "--quiet"]) == 0
    return root


def test_data_typed_three_ways_gives_one_artifact_naming_the_absolute_path(project, tmp_path, monkeypatch):
    monkeypatch.chdir(project)
    for i, data in enumerate(("other", "./other/", str(project / "other"))):
        assert main(["quantize", "run", "--data", data, "-o", str(tmp_path / f"a{i}.ttfa"), "--quiet"]) == 0
    assert len({(tmp_path / f"a{i}.ttfa").read_bytes() for i in range(3)}) == 1
    assert load_artifact(tmp_path / "a0.ttfa").meta["data"] == str(project / "other")


def test_a_checkpoint_fine_tuned_on_other_data_records_that_data(project, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(project)
    q = tmp_path / "q.pt"
    assert main(["quantize", "run", "--data", "other", "--qat-epochs", "1", "--save-checkpoint", str(q),
                 "-o", str(tmp_path / "q.ttfa"), "--quiet"]) == 0, capsys.readouterr().err
    payload = load_checkpoint(q)
    assert payload["config"]["data"] == str(project / "other")
    assert payload["data"]["sha256"] == data_digest(load_dataset(str(project / "other")))
    # the checkpoint quantized again reads (and checks) the data it was fine-tuned on
    assert main(["quantize", str(q), "-o", str(tmp_path / "q2.ttfa"), "--quiet"]) == 0, capsys.readouterr().err
    assert load_artifact(tmp_path / "q2.ttfa").meta["data"] == str(project / "other")


def test_sibling_a_checkpoint_without_data_keeps_the_runs(project, tmp_path, monkeypatch):
    """No ``--data``: the run's data and digest go along unchanged."""
    monkeypatch.chdir(project)
    q = tmp_path / "q.pt"
    assert main(["quantize", "run", "--save-checkpoint", str(q), "-o", str(tmp_path / "q.ttfa"), "--quiet"]) == 0
    run = load_checkpoint(project / "run/last.pt")
    payload = load_checkpoint(q)
    assert payload["config"]["data"] == run["config"]["data"] and payload["data"] == run["data"]


def test_diverge_of_an_artifact_checks_the_data_it_records(project, tmp_path, capsys):
    """``quantize`` records the data's digest beside its path; ``diverge ARTIFACT`` reads
    that data and refuses it when the files hold other data since (it compared the stages
    on whatever the path held, silently), unless ``--data`` names it on purpose."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(project / "mn", data)
    art = tmp_path / "a.ttfa"
    assert main(["quantize", str(project / "run"), "--data", str(data), "-o", str(art), "--quiet"]) == 0
    meta = load_artifact(art).meta
    assert meta["data"] == str(data) and meta["data_sha256"] == data_digest(load_dataset(str(data)))
    assert main(["diverge", str(art), "--samples", "4"]) == 0          # sibling: the same data
    capsys.readouterr()
    (data / "t10k-labels-idx1-ubyte").write_bytes((project / "other/t10k-labels-idx1-ubyte").read_bytes())
    assert main(["diverge", str(art), "--samples", "4"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not the data" in err and "was calibrated on" in err
    assert "--data" in err
    assert main(["diverge", str(art), "--samples", "4", "--data", str(data)]) == 0   # on purpose


@pytest.mark.parametrize("digest", [123, "", "abc", "A" * 64, None])
def test_a_recorded_digest_that_is_no_sha256_is_refused_not_skipped(project, tmp_path, capsys, digest):
    """A ``meta.data_sha256`` present but not a sha256 read as "written before digests"
    turned the check off (the data read unchecked); only an absent one (None: a sibling,
    the artifact saved without the key) is unchecked."""
    from ttforge.ir.artifact import save_artifact

    art = tmp_path / "a.ttfa"
    assert main(["quantize", str(project / "run"), "-o", str(art), "--quiet"]) == 0
    net = load_artifact(art)
    meta = {k: v for k, v in net.meta.items() if k != "data_sha256"}
    if digest is not None:
        meta["data_sha256"] = digest
    save_artifact(net, art, meta)
    capsys.readouterr()
    code = main(["diverge", str(art), "--samples", "2"])
    err = capsys.readouterr().err.strip()
    if digest is None:
        assert code == 0, err
    else:
        assert code == 2 and len(err.splitlines()) == 1 and "meta.data_sha256" in err, err
