"""``[hw] stream_elems`` through the flow: the stages it re-runs (compile and what reads its
config, never train, quantize or on-device training), the accelerator it builds (the
AXI4-Stream ``tdata`` width of the generated Verilog), and the exact RTL check of a
two-elements-per-beat accelerator, with its sibling that flips one output bit."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from ttforge.flow import default_config, run_flow
from ttforge.flow import stages as stages_mod


def _record(build: Path, stage: str) -> dict:
    return json.loads((build / stage / "stage.json").read_text())


def _statuses(result) -> dict[str, str]:
    return {s.name: s.status for s in result.stages}


def _tdata_bits(verilog: Path) -> int:
    m = re.search(r"input\s+(?:wire\s+)?\[(\d+):0\]\s+s_axis_tdata", verilog.read_text())
    assert m, "no s_axis_tdata port in the generated Verilog"
    return int(m.group(1)) + 1


def _with_elems(cfg, elems: int):
    return replace(cfg, hw=replace(cfg.hw, stream_elems=elems))


def test_stream_elems_reruns_compile_and_the_rtl_but_not_train_or_quantize(build_copy):
    cfg = default_config()
    before = {s: _record(build_copy, s) for s in ("train", "quantize", "compile", "rtl")}
    assert before["compile"]["summary"]["stream_elems"] == 1
    assert _tdata_bits(build_copy / "rtl" / "ttforge_accel.v") == 8
    res = run_flow(_with_elems(cfg, 4), build_copy, short=True, until="rtl")
    st = _statuses(res)
    assert st == {"train": "skipped", "quantize": "skipped", "compile": "ran", "rtl": "ran",
                  "sim": "not run", "device-train": "not run", "bitstream": "not run", "report": "ran"}
    after = {s: _record(build_copy, s) for s in before}
    for s in ("train", "quantize"):
        assert after[s]["fingerprint"] == before[s]["fingerprint"]
    assert after["compile"]["fingerprint"] != before["compile"]["fingerprint"]
    acfg = json.loads((build_copy / "compile" / "config.json").read_text())
    old = json.loads(json.dumps(before["compile"]["summary"]["config"]))
    # the stream width is the one field that changed: the board's sizing is kept
    assert acfg == {**old, "stream_elems": 4}
    s = after["compile"]["summary"]
    assert (s["stream_elems"], s["tdata_bits"]) == (4, 32)
    # the engine takes one element a cycle whatever the beat: the cycle model is unchanged
    assert s["cycles"] == before["compile"]["summary"]["cycles"]
    assert _tdata_bits(build_copy / "rtl" / "ttforge_accel.v") == 32
    assert "4 element(s) per AXI4-Stream beat" in (build_copy / "report.md").read_text()


def test_device_training_does_not_depend_on_the_stream_width():
    """The training engine has its own stream: [hw] stream_elems is not in its key."""
    cfg = default_config()
    ctx = stages_mod._Ctx(cfg, Path("."), False, lambda s: None)
    ctx2 = stages_mod._Ctx(_with_elems(cfg, 2), Path("."), False, lambda s: None)
    for stage, same in (("train", True), ("quantize", True), ("device-train", True), ("compile", False)):
        a = stages_mod.fingerprint(stages_mod._inputs(ctx, stage, {}))
        b = stages_mod.fingerprint(stages_mod._inputs(ctx2, stage, {}))
        assert (a == b) is same, stage


@pytest.mark.slow
def test_two_elements_per_beat_simulate_exactly_and_a_flipped_bit_is_caught(build_copy, monkeypatch):
    """The RTL of a 2-elements-per-beat accelerator equals the golden executor on the test
    vectors; the same run with one output bit flipped fails the flow."""
    cfg = _with_elems(default_config(), 2)
    res = run_flow(cfg, build_copy, short=True, until="sim")
    assert _statuses(res)["sim"] == "ran" and res.verified is True
    sim = _record(build_copy, "sim")["summary"]
    assert sim["exact"] and sim["agree"] == sim["vectors"] > 0
    assert json.loads((build_copy / "compile" / "config.json").read_text())["stream_elems"] == 2

    real = stages_mod._simulate

    def flipped(*args, **kw):
        got, counters = real(*args, **kw)
        got = got.copy()
        got[0, 0] ^= 1
        return got, counters

    monkeypatch.setattr(stages_mod, "_simulate", flipped)
    bad = run_flow(cfg, build_copy, short=True, until="sim", force={"sim"})
    assert bad.verified is False and _statuses(bad)["sim"] == "failed"
    sim = _record(build_copy, "sim")["summary"]
    assert not sim["exact"] and sim["agree"] == sim["vectors"] - 1
    first = sim["first_mismatch"]
    assert (first["vector"], first["element"], first["got"]) == (0, 0, first["expected"] ^ 1)
