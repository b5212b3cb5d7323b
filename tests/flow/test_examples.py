"""Every example config, run in its short form (few epochs and vectors, no bitstream);
the default's bitstream runs in a slow test."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from ttforge.flow import FlowConfig, run_flow

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MNIST_DIR = Path(os.environ.get("TTFORGE_MNIST_DIR", "/work/shared/data/mnist-t10k"))


def _summary(build: Path, stage: str) -> dict:
    return json.loads((build / stage / "stage.json").read_text())["summary"]


def _check_short(res, build: Path) -> None:
    st = {s.name: s.status for s in res.stages}
    assert st == {"train": "ran", "quantize": "ran", "compile": "ran", "rtl": "ran", "sim": "ran",
                  "device-train": "not run", "bitstream": "not run", "report": "ran"}, st
    assert res.verified is True
    sim = _summary(build, "sim")
    assert sim["exact"] and sim["agree"] == sim["vectors"]
    assert (build / "report.html").is_file()


def test_mnist_ulx3s_short(tmp_path):
    cfg = FlowConfig.load(EXAMPLES / "mnist-ulx3s.toml")
    if not Path(cfg.train.data).is_dir():  # the example's own relative path (../shared/...)
        if not MNIST_DIR.is_dir():
            pytest.skip(f"no MNIST IDX directory: neither {cfg.train.data} nor {MNIST_DIR} "
                        f"(set TTFORGE_MNIST_DIR)")
        cfg = replace(cfg, train=replace(cfg.train, data=str(MNIST_DIR)))
    build = tmp_path / "mnist"
    res = run_flow(cfg, build, short=True)
    _check_short(res, build)
    tr, q, comp = (_summary(build, s) for s in ("train", "quantize", "compile"))
    assert (tr["n_train"], tr["n_test"]) == (8000, 2000)
    assert q["w_bits"] == 4 and q["layers"][0]["in_features"] == 784
    assert q["layers"][0]["out_features"] == 512 and q["layers"][0]["kind"] == "tt"
    assert comp["board"] == "ulx3s" and comp["lanes"] == 4
    assert q["on_chip"]["on_chip_bytes"] < q["on_chip"]["dense_int8_bytes"] / 10


def test_wide_1024_short(tmp_path):
    cfg = FlowConfig.load(EXAMPLES / "wide-1024.toml")
    build = tmp_path / "wide"
    res = run_flow(cfg, build, short=True)
    _check_short(res, build)
    q = _summary(build, "quantize")
    wide = [L for L in q["layers"] if (L["in_features"], L["out_features"]) == (1024, 1024)]
    assert wide and wide[0]["kind"] == "tt"
    assert _summary(build, "compile")["board"] == "none"


@pytest.mark.slow
def test_default_flow_builds_the_icebreaker_bitstream(tmp_path):
    """The whole default, bitstream included (place and route: a few minutes)."""
    from ttforge.cli import main

    build = tmp_path / "digits-icebreaker"
    assert main(["flow", "--out", str(build)]) == 0
    bit = _summary(build, "bitstream")
    assert bit["board"] == "icebreaker" and bit["fmax_mhz"] >= 12
    lc = bit["resources"]["lc"]
    assert lc["used"] <= lc["available"]
    assert (build / "bitstream" / bit["bitstream"]["file"]).stat().st_size == bit["bitstream"]["bytes"]
    page = (build / "report.html").read_text()
    assert "Fmax" in page and "not built" not in page
    # a second run skips everything, the bitstream included
    res = run_flow(FlowConfig.load(EXAMPLES / "digits-icebreaker.toml"), build)
    assert {s.status for s in res.stages} == {"skipped"}
