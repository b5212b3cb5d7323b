"""The flow's on-device training stage: ``[device_train]`` validated on construction, off
by default, and (slow) a short run on the simulated board whose state is byte-identical to
the golden trainer's, recomputed here independently, with a sibling whose engine carries a
deliberate fault and must be caught."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ttforge.errors import ConfigError
from ttforge.flow import FlowConfig, run_flow
from ttforge.flow.config import DeviceTrainSection, default_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_device_training_is_off_by_default_and_skipped_with_a_reason(build_copy):
    assert default_config().device_train.enabled is False
    res = run_flow(default_config(), build_copy, short=True)
    st = {s.name: s for s in res.stages}
    assert st["device-train"].status == "not run"
    assert st["device-train"].reason == "[device_train] enabled = false"
    assert not (build_copy / "device-train").exists()


@pytest.mark.parametrize("kw, message", [
    (dict(transport="usb"), "[device_train] transport = 'usb' is not valid; choose one of sim, serial"),
    (dict(lanes=3), "[device_train] lanes = 3 must be a power of two"),
    (dict(lanes=128), "[device_train] lanes = 128 is out of range"),
    (dict(enabled="yes"), "[device_train] enabled = 'yes' must be true or false"),
    (dict(enabled=True, transport="serial"), "[device_train] transport = 'serial' needs port"),
    (dict(batch=0), "[device_train] batch = 0 is out of range"),
    (dict(epochs=10 ** 9), "[device_train] epochs = 1000000000 is out of range"),
    (dict(master_bits=40), "[device_train] master_bits = 40 is out of range"),
    (dict(rounding="up"), "[device_train] rounding = 'up' is not valid"),
    (dict(port=5), "[device_train] port = 5 must be a string"),
])
def test_bad_device_train_values_are_one_line_naming_the_key(kw, message):
    with pytest.raises(ConfigError) as e:
        DeviceTrainSection(**kw)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_the_section_parses_from_toml_and_unknown_keys_are_refused(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[device_train]\nenabled = true\nbatch = 8\nlanes = 8\n')
    c = FlowConfig.load(p)
    assert c.device_train.enabled and c.device_train.batch == 8 and c.device_train.lanes == 8
    p.write_text('[device_train]\nenable = true\n')
    with pytest.raises(ConfigError, match=r"\[device_train\] unknown key 'enable'; valid keys: enabled, "):
        FlowConfig.load(p)


def test_short_caps_the_device_run_to_one_epoch_of_few_samples():
    c = FlowConfig.load(EXAMPLES / "mnist-ulx3s-train.toml")
    assert c.device_train.enabled and c.device_train.lanes == 16
    s = c.shortened().device_train
    assert s.epochs == 1 and s.samples == c.short.device_samples and s.eval_samples == c.short.vectors


# ------------------------------------------------------------------------------ slow
def _device_cfg(**kw):
    cfg = default_config()
    return replace(cfg, device_train=DeviceTrainSection(enabled=True, batch=8, lanes=4, samples=16,
                                                        eval_samples=64, **kw))


def _golden_state(build: Path, cfg):
    """The golden trainer's state after the same batches, recomputed here from the
    quantized artifact (not from anything the stage wrote)."""
    from ttforge.ir.arith import quantize
    from ttforge.ir.artifact import load_artifact
    from ttforge.ir.train import train_step
    from ttforge.ir.train_loop import epoch_order, network_train_config, state_from_artifact
    from ttforge.model.train_int import load_numpy

    dt = cfg.device_train
    _, x, y, xt, yt = load_numpy(cfg.train.data)
    net = load_artifact(build / "quantize" / "model.ttfa")
    st = state_from_artifact(net, np.asarray(x, float), np.asarray(y, np.int64),
                             config=network_train_config(net, rounding=dt.rounding), seed=dt.seed,
                             lr_shift=dt.lr_shift, calib_samples=dt.calib_samples,
                             meta={"from": "flow:" + cfg.name}, labels=np.concatenate([y, yt]))
    xq = quantize(np.asarray(x, float), st.config.act_bits, st.in_exp)
    order = epoch_order(dt.seed, 1, len(y))[:dt.samples]
    for i in range(0, dt.samples - dt.batch + 1, dt.batch):
        st = train_step(st, xq[order[i:i + dt.batch]], np.asarray(y)[order[i:i + dt.batch]])
    return st


@pytest.mark.slow
def test_device_training_on_the_simulated_board_equals_the_golden_trainer(build_copy):
    from ttforge.ir.train_state import dumps_state, load_state

    cfg = _device_cfg()
    res = run_flow(cfg, build_copy, short=True)
    st = {s.name: s.status for s in res.stages}
    assert st["device-train"] == "ran" and st["sim"] == "skipped" and res.verified is True
    rec = json.loads((build_copy / "device-train" / "stage.json").read_text())["summary"]
    assert rec["equal_to_golden"] is True and rec["steps"] == 2 and rec["samples"] == 16
    # the engine's counters: MAC-lane cycles exactly the program's; CYCLES at least the model's
    # (it also counts waiting for samples over the UART)
    assert rec["mac_cycles_per_step_measured"] == rec["mac_cycles_per_step_model"]
    assert rec["cycles_per_step_measured"] >= rec["cycles_per_step_model"]
    state = load_state(build_copy / "device-train" / "device.ttts")
    golden = _golden_state(build_copy, cfg)
    assert dumps_state(state) == dumps_state(golden)
    assert rec["state_sha256"] == hashlib.sha256(dumps_state(golden)).hexdigest()
    report = (build_copy / "report.md").read_text()
    assert "On-device training: verification" in report and rec["state_sha256"] in report
    # unchanged: skipped; a changed [device_train] reruns only it and the report
    res = run_flow(cfg, build_copy, short=True)
    assert {s.name: s.status for s in res.stages}["device-train"] == "skipped"


@pytest.mark.slow
def test_a_faulty_training_engine_is_caught_and_stops_the_flow(build_copy, monkeypatch):
    from ttforge.firmware import train_board

    real = train_board.simulated_train_device
    monkeypatch.setattr(train_board, "simulated_train_device",
                        lambda ecfg, **kw: real(ecfg, fault="update_sign", **kw))
    res = run_flow(_device_cfg(), build_copy, short=True)
    dev = next(s for s in res.stages if s.name == "device-train")
    assert dev.status == "failed" and "differs from the golden trainer" in dev.reason
    assert res.verified is False
    rec = json.loads((build_copy / "device-train" / "stage.json").read_text())["summary"]
    assert rec["equal_to_golden"] is False and rec["mismatch"]
