"""``quantize`` records the checkpoint it came from by name (``meta.source``: the resolved
path's final component), so the same run gives the same artifact, byte for byte, however
its path was typed: the path as typed went into the artifact (and so into
``generate.json``'s sha256 and the QONNX metadata)."""

from __future__ import annotations

import json

import pytest

from ttforge.cli import main
from ttforge.ir.artifact import load_artifact, source_name


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("source")
    assert main(["train", "--epochs", "1", "--hidden", "8", "--ranks", "2", "--out", str(d / "run"),
                 "--quiet"]) == 0
    (d / "link").symlink_to(d / "run")
    return d


def test_a_run_typed_three_ways_gives_one_artifact(run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(run)
    for i, src in enumerate(("run", str(run / "run"), "link")):
        assert main(["quantize", src, "-o", str(tmp_path / f"a{i}.ttfa"), "--json", "--quiet"]) == 0
        # the console report keeps what the user typed
        assert json.loads(capsys.readouterr().out)["artifact"] == str(tmp_path / f"a{i}.ttfa")
    blobs = {(tmp_path / f"a{i}.ttfa").read_bytes() for i in range(3)}
    assert len(blobs) == 1
    assert load_artifact(tmp_path / "a0.ttfa").meta["source"] == "run"


@pytest.mark.parametrize("given, name", [("run", "run"), ("run/", "run"), ("run/./last.pt", "last.pt"),
                                         ("link", "run"), ("link/../link", "run")])
def test_source_name_is_the_resolved_final_component(run, monkeypatch, given, name):
    monkeypatch.chdir(run)
    assert source_name(given) == name
    assert source_name(given.encode()) == name
    assert source_name(run / given) == name
