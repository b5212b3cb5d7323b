"""Same config, same bytes: the artifact, the generated Verilog and the bitstream.

Each chain runs the same command lines in a fresh directory (the artifact records the
checkpoint path as given, so the working directory changes but the arguments do not).
The generated files are also compared across processes with different
``PYTHONHASHSEED`` s, which would expose any output that depends on set or dict-of-str
iteration order. The bitstream test is slow (place and route); tests/firmware's
``test_build_slow.py`` also builds each board twice from one artifact.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ttforge.cli import main

TRAIN = ["train", "--epochs", "2", "--hidden", "16", "--ranks", "2", "--seed", "3", "--quiet",
         "--out", "run"]
QUANTIZE = ["quantize", "run/last.pt", "-o", "model.ttfa", "--quiet", "--calib-samples", "128"]
GENERATE = ["generate", "model.ttfa", "-o", "gen", "--lanes", "2"]


def _files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _chain(d: Path, monkeypatch) -> Path:
    d.mkdir()
    monkeypatch.chdir(d)
    for argv in (TRAIN, QUANTIZE, GENERATE):
        assert main(argv) == 0, argv
    return d


@pytest.fixture(scope="module")
def chains(tmp_path_factory):
    root = tmp_path_factory.mktemp("det")
    with pytest.MonkeyPatch.context() as mp:
        return _chain(root / "a", mp), _chain(root / "b", mp)


def test_same_config_gives_identical_artifact_bytes(chains):
    a, b = chains
    assert (a / "model.ttfa").read_bytes() == (b / "model.ttfa").read_bytes()


def test_a_different_seed_gives_a_different_artifact(chains, tmp_path, monkeypatch, capsys):
    a, _ = chains
    monkeypatch.chdir(tmp_path)
    argv = [*TRAIN[:-2], "--out", "run"]
    argv[argv.index("--seed") + 1] = "4"
    assert main(argv) == 0
    assert main(QUANTIZE) == 0
    capsys.readouterr()
    assert (tmp_path / "model.ttfa").read_bytes() != (a / "model.ttfa").read_bytes()


def test_same_artifact_gives_identical_generated_files(chains):
    a, b = chains
    fa, fb = _files(a / "gen"), _files(b / "gen")
    assert "ttforge_accel.v" in fa and len(fa["ttforge_accel.v"]) > 10_000
    assert fa == fb
    # the plot of the training curves is a pure function of the history too
    assert (a / "run" / "metrics.png").read_bytes() == (b / "run" / "metrics.png").read_bytes()


def test_generated_files_do_not_depend_on_the_hash_seed(chains, tmp_path):
    a, _ = chains
    out = tmp_path / "gen"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    exe = Path(sys.executable).parent / "ttforge"
    proc = subprocess.run([str(exe), *GENERATE[:3], str(out), *GENERATE[4:]], cwd=a,
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert _files(out) == _files(a / "gen")


def test_generate_json_records_every_file_hash(chains):
    a, _ = chains
    man = json.loads((a / "gen" / "generate.json").read_text())
    for name, digest in man["files"].items():
        assert hashlib.sha256((a / "gen" / name).read_bytes()).hexdigest() == digest


@pytest.mark.slow
def test_same_config_gives_the_same_bitstream_through_the_whole_chain(tmp_path):
    """train -> quantize -> build, twice, each in its own process and directory."""
    exe = str(Path(sys.executable).parent / "ttforge")
    digests = []
    for i, seed in enumerate(("1", "2")):
        d = tmp_path / f"c{i}"
        d.mkdir()
        env = {**os.environ, "PYTHONHASHSEED": seed}
        for argv in (TRAIN, QUANTIZE, ["build", "model.ttfa", "--board", "icebreaker", "-o", "build",
                                       "--json"]):
            proc = subprocess.run([exe, *argv], cwd=d, capture_output=True, text=True, env=env,
                                  timeout=1800)
            assert proc.returncode == 0, proc.stderr
        man = json.loads((d / "build" / "build.json").read_text())
        bit = d / "build" / man["bitstream"]["file"]
        assert hashlib.sha256(bit.read_bytes()).hexdigest() == man["bitstream"]["sha256"]
        digests.append(man["bitstream"]["sha256"])
    assert digests[0] == digests[1]
