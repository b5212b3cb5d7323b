"""Real bitstreams (slow: place and route runs for minutes) and the `ttforge run --sim`
command end to end. Run with ``pytest -m slow tests/firmware``."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

from ttforge.cli import main

pytestmark = pytest.mark.slow


def _build(board, artifact, out, capsys):
    assert main(["build", "--board", board, str(artifact / "small.ttfa"), "-o", str(out)]) == 0, \
        capsys.readouterr().err
    man = json.loads((out / "build.json").read_text())
    bit = out / man["bitstream"]["file"]
    assert hashlib.sha256(bit.read_bytes()).hexdigest() == man["bitstream"]["sha256"]
    assert man["timing_met"] and man["fmax_mhz"] >= man["clock_hz"] / 1e6
    return man


def test_ulx3s_build_twice_gives_the_same_bitstream(artifact, tmp_path, capsys):
    a = _build("ulx3s", artifact, tmp_path / "a", capsys)
    b = _build("ulx3s", artifact, tmp_path / "b", capsys)
    assert a["bitstream"]["sha256"] == b["bitstream"]["sha256"]
    assert (tmp_path / "a" / "ttforge_ulx3s.bit").read_bytes() == \
        (tmp_path / "b" / "ttforge_ulx3s.bit").read_bytes()
    assert a["clock_hz"] == 50_000_000 and a["config"]["lanes"] == 4
    assert a["resources"]["dsp"]["used"] >= 4
    assert a["resources"] == b["resources"] and a["fmax_mhz"] == b["fmax_mhz"]


def test_ulx3s_engine_array_build_is_floorplanned(artifact, tmp_path, capsys):
    """Two engines with ``read_registers = 2`` on the ULX3S: the block RAMs folded, a free
    placement, the floorplan (each engine's block RAMs and multipliers in its half of the
    die), then the bitstream, timing met at 50 MHz; build.json records both steps."""
    from ttforge.hw.config import AccelConfig
    from ttforge.ir.artifact import load_artifact

    cfg = AccelConfig.for_network(load_artifact(artifact / "small.ttfa"), lanes=4)
    conf = tmp_path / "cfg.json"
    conf.write_text(json.dumps({**cfg.to_dict(), "engines": 2, "read_registers": 2}))
    out = tmp_path / "o"
    assert main(["build", "--board", "ulx3s", str(artifact / "small.ttfa"), "--config", str(conf),
                 "-o", str(out)]) == 0, capsys.readouterr().err
    man = json.loads((out / "build.json").read_text())
    assert man["timing_met"] and man["config"]["engines"] == 2
    assert man["floorplan"]["engines"] == 2 and man["floorplan"]["cells"] >= 2
    assert man["outreg_fold"]["brams"] >= 1
    bit = out / man["bitstream"]["file"]
    assert hashlib.sha256(bit.read_bytes()).hexdigest() == man["bitstream"]["sha256"]


def test_icebreaker_build_twice_gives_the_same_bitstream(artifact, tmp_path, capsys):
    """One lane, one serial requantization unit, 32-bit counters: about 91% of the
    iCE40UP5K's logic cells, 12 MHz met (about 2 minutes a build)."""
    a = _build("icebreaker", artifact, tmp_path / "a", capsys)
    b = _build("icebreaker", artifact, tmp_path / "b", capsys)
    assert a["bitstream"]["sha256"] == b["bitstream"]["sha256"]
    assert (tmp_path / "a" / "ttforge_icebreaker.bin").read_bytes() == \
        (tmp_path / "b" / "ttforge_icebreaker.bin").read_bytes()
    assert a["config"]["lanes"] == 1 and a["clock_hz"] == 12_000_000
    assert a["resources"]["lc"]["used"] <= a["resources"]["lc"]["available"]


@pytest.mark.skipif(shutil.which("iverilog") is None, reason="needs Icarus Verilog")
def test_run_sim_cli_verifies_against_the_golden_executor(artifact, tmp_path, capsys):
    out = tmp_path / "y.npy"
    assert main(["run", "--board", "icebreaker", "--sim", "--verify", str(artifact / "small.ttfa"),
                 str(artifact / "x.npy"), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "equal to the golden executor: 3/3 vectors" in text
    from ttforge.ir.artifact import load_artifact
    from ttforge.ir.executor import execute
    net = load_artifact(artifact / "small.ttfa")
    assert np.array_equal(np.load(out), execute(net, np.load(artifact / "x.npy")))
