"""``train-int --from ARTIFACT`` records the artifact by name in the state's meta
(``from``: the resolved path's final component): the same artifact typed as a relative
path, an absolute one or through a symbolic link gives the same ``state.ttts`` and
``model.ttfa``, byte for byte (the path as typed made them differ by working directory)."""

from __future__ import annotations

import pytest

from ttforge.cli import main
from ttforge.ir.train_state import load_state


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    d = tmp_path_factory.mktemp("from")
    assert main(["train", "--epochs", "1", "--hidden", "8", "--ranks", "2", "--out", str(d / "run"),
                 "--quiet"]) == 0
    assert main(["quantize", str(d / "run"), "--w-bits", "4", "-o", str(d / "a.ttfa"), "--quiet"]) == 0
    (d / "sub").mkdir()
    (d / "link.ttfa").symlink_to(d / "a.ttfa")
    return d


def test_the_same_artifact_typed_three_ways_gives_one_state(artifact, tmp_path, monkeypatch):
    monkeypatch.chdir(artifact / "sub")
    for i, src in enumerate(("../a.ttfa", str(artifact / "a.ttfa"), "../link.ttfa")):
        assert main(["train-int", "--from", src, "--epochs", "1", "-o", str(tmp_path / f"r{i}"), "--quiet"]) == 0
    for name in ("state.ttts", "model.ttfa"):
        assert len({(tmp_path / f"r{i}" / name).read_bytes() for i in range(3)}) == 1, name
    assert load_state(tmp_path / "r0" / "state.ttts").meta["from"] == "a.ttfa"
