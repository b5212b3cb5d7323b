"""`ttforge train-int --resume` reads the run's record (the state's meta), which the
loader does not check: every value it uses is checked first, one line, exit 2 (a batch
of "abc" was exit 70, 1.5 trained with batch 1, a decay epoch "12" decayed after
epochs 1 and 2, a seed of 10**30 passed)."""

from __future__ import annotations

import shutil

import pytest

from ttforge.cli import main
from ttforge.ir.train_state import load_state, save_state


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("meta") / "run"
    assert main(["train-int", "--quiet", "-o", str(d), "--epochs", "1", "--batch", "64", "--hidden", "16",
                 "--ranks", "2", "--lr-decay-at", "2"]) == 0
    return d


@pytest.mark.parametrize("key, value", [
    ("batch", "abc"), ("batch", 1.5), ("batch", True), ("batch", 0), ("batch", 2**20 + 1),
    ("lr_decay_at", 5), ("lr_decay_at", "12"), ("lr_decay_at", [{}]), ("lr_decay_at", [0]),
    ("seed", "x"), ("seed", -1), ("seed", 10**30), ("seed", 2.0),
    ("truncate_ranks", "x"), ("truncate_ranks", {}), ("truncate_ranks", [5]), ("truncate_ranks", [[1, None, "a"]]),
])
def test_a_bad_meta_value_is_one_line_exit_2_before_any_step(run, tmp_path, capsys, key, value):
    d = tmp_path / "run"
    shutil.copytree(run, d)
    st = load_state(d / "state.ttts")
    save_state(st.replace(meta={**st.meta, key: value}), d / "state.ttts")
    before = (d / "state.ttts").read_bytes()
    code = main(["train-int", "--quiet", "-o", str(d), "--epochs", "2", "--resume", str(d / "state.ttts")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"the state's meta {key}" in err[0], err
    assert (d / "state.ttts").read_bytes() == before


def test_the_checked_values_resume_as_before(run, tmp_path, capsys):
    """Sibling: the run's own meta resumes (the checks refuse only what is bad)."""
    d = tmp_path / "run"
    shutil.copytree(run, d)
    assert main(["train-int", "--quiet", "-o", str(d), "--epochs", "2", "--resume", str(d / "state.ttts")]) == 0
    st = load_state(d / "state.ttts")
    assert st.epoch == 2 and st.meta["batch"] == 64 and st.meta["lr_decay_at"] == [2]


def test_the_artifact_records_where_its_data_is_and_diverge_checks_it(tmp_path, monkeypatch, capsys):
    """train-int's ``model.ttfa`` recorded the data set's name only (``data``: an IDX
    directory's own name), which ``diverge`` read relative to where it ran: from another
    directory it found nothing, or other data and compared the stages on it, exit 0. It
    records the path absolute and the data's digest, as ``quantize`` does."""
    from ttforge.ir.artifact import load_artifact
    from ttforge.model.data import data_digest, load_dataset
    from tests.support.data import write_pair

    data = tmp_path / "mn"
    data.mkdir()
    write_pair(data, "t10k", 60)
    run = tmp_path / "run"
    assert main(["train-int", "--quiet", "--data", str(data), "-o", str(run), "--epochs", "1",
                 "--batch", "16", "--hidden", "8", "--ranks", "2"]) == 0
    meta = load_artifact(run / "model.ttfa").meta
    assert meta["data"] == str(data)
    assert meta["data_sha256"] == data_digest(load_dataset(str(data)))
    # other data under the same name where diverge runs: the images inverted
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(data, elsewhere / "mn")
    images = elsewhere / "mn" / "t10k-images-idx3-ubyte"
    raw = images.read_bytes()
    images.write_bytes(raw[:16] + bytes(255 - b for b in raw[16:]))
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert main(["diverge", str(run / "model.ttfa"), "--samples", "2"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    (data / images.name).write_bytes(images.read_bytes())   # the recorded data replaced since
    assert main(["diverge", str(run / "model.ttfa"), "--samples", "2"]) == 2
    assert "is not the data" in capsys.readouterr().err
