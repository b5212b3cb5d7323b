"""What a stage's fingerprint and output digest hold, and what they leave out: where the
data is (a project moved whole skips every stage) and how long training took (an equal
retrain leaves quantize skipped, a different one does not)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from ttforge.flow import FlowConfig, run_flow
from ttforge.flow import stages as stages_mod

from tests.support.data import write_pair
from tests.support.flows import TINY_FLOW_TOML

#: the stages that read the data (their fingerprints hold its content)
_READ_DATA = ("train", "quantize", "sim", "device-train")


def _record(build: Path, stage: str) -> dict:
    return json.loads((build / stage / "stage.json").read_text())


def _statuses(result) -> dict[str, str]:
    return {s.name: s.status for s in result.stages}


def _project(root: Path, data: str) -> Path:
    """A tiny flow project under ``root``: ``cfg/tiny.toml`` whose ``[train] data`` is
    ``digits`` or ``../data``, a directory of IDX files beside ``cfg/``."""
    (root / "cfg").mkdir(parents=True)
    if data != "digits":
        (root / "data").mkdir()
        write_pair(root / "data", "t10k", 60)
    cfg = root / "cfg" / "tiny.toml"
    cfg.write_text(TINY_FLOW_TOML.replace('data = "digits"', f'data = "{data}"'))
    return cfg


def _fingerprints(cfg: FlowConfig, build: Path) -> dict[str, str]:
    ctx = stages_mod._Ctx(cfg, build, False, lambda s: None)
    return {s: stages_mod.fingerprint(stages_mod._inputs(ctx, s, {})) for s in _READ_DATA}


@pytest.mark.parametrize("data", ["../data", "digits"])
def test_a_project_moved_whole_skips_every_stage(tmp_path, data):
    """``[train] data`` resolves to an absolute path, which train's and sim's fingerprints
    held beside the data's content digest: after ``mv`` of config, data and build the
    rerun trained, quantized and simulated again. The path is shown in the record, not
    fingerprinted; quantize reads the config's data, not the path ``last.pt`` recorded
    (forced after the move, it found no data there)."""
    cfg_file = _project(tmp_path / "t1", data)
    cfg = FlowConfig.load(cfg_file)
    first = _statuses(run_flow(cfg, tmp_path / "t1" / "build", until="quantize"))
    assert first["train"] == first["quantize"] == "ran"
    before = _fingerprints(cfg, tmp_path / "t1" / "build")
    shutil.move(tmp_path / "t1", tmp_path / "t2")
    build = tmp_path / "t2" / "build"
    moved = FlowConfig.load(tmp_path / "t2" / "cfg" / "tiny.toml")
    assert _fingerprints(moved, build) == before
    st = _statuses(run_flow(moved, build, until="quantize"))
    assert st["train"] == st["quantize"] == "skipped", st
    shown = _record(build, "train")["inputs"]["data_path"]
    assert shown == ("digits" if data == "digits" else str(tmp_path / "t1" / "data"))
    st = _statuses(run_flow(moved, build, until="quantize", force={"quantize"}))
    assert (st["train"], st["quantize"]) == ("skipped", "ran")
    assert _record(build, "quantize")["inputs"]["data_path"] == moved.train.data


def test_an_equal_retrain_leaves_quantize_skipped_and_another_seed_does_not(tmp_path):
    """train's output digest hashed ``last.pt`` and ``metrics.json``, which hold timings
    (``elapsed_s``, ``time_s``): ``flow --force train`` to bit-identical weights redid
    quantize. The digest is of what the later stages read, without the timings; weights
    of another seed still re-run quantize."""
    cfg = FlowConfig.load(_project(tmp_path, "digits"))
    build = tmp_path / "build"
    run_flow(cfg, build, until="quantize")
    first = _record(build, "train")
    st = _statuses(run_flow(cfg, build, until="quantize", force={"train"}))
    assert (st["train"], st["quantize"]) == ("ran", "skipped"), st
    again = _record(build, "train")
    # the files differ (their timings), the weights and metrics the later stages read not
    assert again["outputs"]["last.pt"] != first["outputs"]["last.pt"]
    assert again["outputs"]["metrics.json"] != first["outputs"]["metrics.json"]
    assert again["digest"] == first["digest"]
    seed1 = replace(cfg, train=replace(cfg.train, seed=cfg.train.seed + 1))
    st = _statuses(run_flow(seed1, build, until="quantize"))
    assert (st["train"], st["quantize"]) == ("ran", "ran"), st
    assert _record(build, "train")["digest"] != first["digest"]


def test_a_build_of_the_old_fingerprints_runs_once_and_then_skips(tmp_path):
    """A train record written before the data path left the fingerprint (the path in its
    config section, its digest the sha256 of its files) is not refused: train runs once
    (quantize, whose record was made from what train makes now, stays), then skips."""
    cfg = FlowConfig.load(_project(tmp_path, "../data"))
    build = tmp_path / "build"
    run_flow(cfg, build, until="quantize")
    rec = _record(build, "train")
    inputs = {k: v for k, v in rec["inputs"].items() if k != "data_path"}
    inputs["config"]["train"]["data"] = rec["inputs"]["data_path"]
    rec.update(inputs=inputs, fingerprint=stages_mod.fingerprint(inputs),
               digest=stages_mod.hashlib.sha256(stages_mod._canonical(rec["outputs"])).hexdigest())
    (build / "train" / "stage.json").write_text(json.dumps(rec, indent=2) + "\n")
    st = _statuses(run_flow(cfg, build, until="quantize"))
    assert (st["train"], st["quantize"]) == ("ran", "skipped"), st
    assert "data" not in _record(build, "train")["inputs"]["config"]["train"]
    st = _statuses(run_flow(cfg, build, until="quantize"))
    assert (st["train"], st["quantize"]) == ("skipped", "skipped"), st


def test_the_data_is_fingerprinted_by_what_training_reads_not_by_its_files(tmp_path):
    """Flow hashed the files of an IDX directory, a run the arrays it loaded (two digests
    of one data set): a README put beside the files, or the same files gzipped, re-ran
    train, quantize and sim. The one digest is the run's (``model.data.data_digest``):
    those skip, a changed label does not."""
    import gzip

    cfg_file = _project(tmp_path, "../data")
    cfg = FlowConfig.load(cfg_file)
    build = tmp_path / "build"
    run_flow(cfg, build, until="quantize")
    before = _fingerprints(cfg, build)
    data = tmp_path / "data"
    (data / "README.md").write_text("MNIST-shaped test data\n")
    for f in sorted(data.glob("*-ubyte")):
        f.with_name(f.name + ".gz").write_bytes(gzip.compress(f.read_bytes()))
        f.unlink()
    assert _fingerprints(cfg, build) == before
    st = _statuses(run_flow(cfg, build, until="quantize"))
    assert (st["train"], st["quantize"]) == ("skipped", "skipped"), st
    labels = data / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[-1] = (raw[-1] + 1) % 10   # one label
    labels.write_bytes(gzip.compress(bytes(raw)))
    after = _fingerprints(cfg, build)
    assert all(after[s] != before[s] for s in _READ_DATA), (after, before)
    st = _statuses(run_flow(cfg, build, until="quantize"))
    assert (st["train"], st["quantize"]) == ("ran", "ran"), st


def test_the_data_is_loaded_once_while_its_files_stay_as_they_were(tmp_path, monkeypatch):
    """Each of the four stages that read the data loaded it for its fingerprint, every
    run (review V7: 1.1 s of a 2.6 s no-op flow on MNIST-sized data); a file changed
    since is read again."""
    from ttforge.model import data

    cfg = FlowConfig.load(_project(tmp_path, "../data"))
    loads = []
    real = data.load_dataset
    monkeypatch.setattr(data, "load_dataset", lambda spec, *a, **k: loads.append(spec) or real(spec, *a, **k))
    first = _fingerprints(cfg, tmp_path / "build")
    assert _fingerprints(cfg, tmp_path / "build") == first and len(loads) == 1
    write_pair(tmp_path / "data", "t10k", 61)   # other images, the same names
    assert _fingerprints(cfg, tmp_path / "build") != first and len(loads) == 2


def test_the_artifact_records_where_the_data_is_and_its_digest(tmp_path, monkeypatch, capsys):
    """The quantize stage's artifact recorded the data set's name (``data``, the IDX
    directory's own name), which ``diverge ARTIFACT`` reads as a directory relative to
    where it runs: from anywhere else it found no data, or other data. It records the
    absolute path and the digest ``diverge`` checks, as ``ttforge quantize`` does."""
    from ttforge.cli import main
    from ttforge.ir.artifact import load_artifact
    from ttforge.model.data import data_digest, load_dataset

    cfg = FlowConfig.load(_project(tmp_path / "p", "../data"))
    build = tmp_path / "p" / "build"
    run_flow(cfg, build, until="quantize")
    meta = load_artifact(build / "quantize" / "model.ttfa").meta
    data = tmp_path / "p" / "data"
    assert meta["data"] == str(data)
    assert meta["data_sha256"] == data_digest(load_dataset(str(data)))
    monkeypatch.chdir(tmp_path)
    assert main(["diverge", str(build / "quantize" / "model.ttfa"), "--samples", "2"]) == 0, \
        capsys.readouterr().err
