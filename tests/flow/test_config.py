"""Flow configs: the examples parse, bad configs give one precise line (exit 2 from the CLI)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ttforge.cli import main
from ttforge.errors import ConfigError
from ttforge.flow import DEFAULT_CONFIG, FlowConfig, default_config, load_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GOOD = """
[flow]
name = "t"
[train]
data = "digits"
epochs = 1
[train.model]
hidden = [16]
ranks = 2
[quant]
w_bits = 4
[bitstream]
board = "none"
"""


def _cfg(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_every_example_parses():
    names = sorted(p.name for p in EXAMPLES.glob("*.toml"))
    assert {"digits-icebreaker.toml", "mnist-ulx3s.toml", "wide-1024.toml"} <= set(names)
    from ttforge.flow.sweep import load_sweep

    for p in EXAMPLES.glob("*.toml"):
        if "[sweep]" in p.read_text(encoding="utf-8"):   # a ttforge sweep config, not a flow config
            load_sweep(p)
            continue
        cfg = FlowConfig.load(p)
        assert cfg.name == p.stem
    mnist = FlowConfig.load(EXAMPLES / "mnist-ulx3s.toml")
    assert mnist.bitstream.board == "ulx3s" and mnist.quant.w_bits == 4
    assert mnist.train.model.hidden == (512,) and mnist.train.model.in_features == 784
    wide = FlowConfig.load(EXAMPLES / "wide-1024.toml")
    specs = wide.train.model.with_features(64, 10).layer_specs()
    assert any(s.kind == "tt" and (s.in_features, s.out_features) == (1024, 1024) for s in specs)


def test_default_is_the_digits_icebreaker_example():
    # one source of truth: the packaged default is the example file itself
    assert DEFAULT_CONFIG.read_bytes() == (EXAMPLES / "digits-icebreaker.toml").read_bytes()
    cfg = default_config()
    assert cfg == load_config(None)
    assert cfg.name == "digits-icebreaker" and cfg.bitstream.board == "icebreaker"
    assert cfg.train.data == "digits" and cfg.train.rank_adaptive and cfg.quant.w_bits == 4


def test_relative_data_resolves_against_the_config_file(tmp_path):
    d = tmp_path / "sub"
    d.mkdir()
    p = _cfg(d, GOOD.replace('data = "digits"', 'data = "../idx"').replace("[train.model]",
             "[train.model]\nin_features = 784\nout_features = 10"))
    assert FlowConfig.load(p).train.data == str((tmp_path / "idx").resolve())


@pytest.mark.parametrize("edit, message", [
    (("[quant]", "[quantize]"), "unknown section 'quantize'; valid sections: flow, train, quant, hw, sim, device_train, bitstream, short"),
    (("w_bits = 4", "w_bit = 4"), "[quant] unknown key 'w_bit'; valid keys: w_bits, act_bits"),
    (("w_bits = 4", "w_bits = 0"), "[quant] w_bits = 0 is out of range; give an integer in 2..8"),
    (("w_bits = 4", 'w_bits = "4"'), "[quant] w_bits = '4' must be an integer (2..8)"),
    (('board = "none"', 'board = "none"\nfreq_mhz = 1e308'), "[bitstream] freq_mhz = 1e+308 must be a number of MHz up to 1000"),
    (('board = "none"', 'board = "arty"'), "[bitstream] board = 'arty' is not valid; choose one of icebreaker, ulx3s, none"),
    (("epochs = 1", "epochs = 0"), "[train] epochs=0 must be an integer in 1..100,000"),
    (("epochs = 1", "epoch = 1"), "[train] unknown key 'epoch'; valid keys:"),
    (("ranks = 2", "rank = 2"), "[train.model] unknown key 'rank'"),
    (("ranks = 2", "ranks = 2\nin_modes = [[5, 5]]"), "[train.model] TT layer 0 (64 -> 16): in_modes [5, 5] multiply to 25, fewer than 64"),
    (('name = "t"', 'name = "a/b"'), "[flow] name = 'a/b' must be a non-empty name"),
    (("[bitstream]", "[sim]\nsimulator = \"modelsim\"\n[bitstream]"), "[sim] simulator = 'modelsim' is not valid; choose one of auto, verilator-native, icarus, verilator"),
    (("[bitstream]", "[hw]\nlanes = 3\n[bitstream]"), "[hw] lanes=3 must be a power of two"),
    # [short] keys within the range of what they cap (named as written, not as the capped key)
    (("[bitstream]", "[short]\nvectors = 20000000\n[bitstream]"), "[short] vectors = 20000000 is out of range; give an integer in 1..1000000"),
    (("[bitstream]", "[short]\ndevice_samples = 20000000\n[bitstream]"), "[short] device_samples = 20000000 is out of range"),
    (("[bitstream]", "[sim]\nvectors = 1000000000000\n[bitstream]"), "[sim] vectors = 1000000000000 is out of range; give an integer in 1..1000000"),
    (("[bitstream]", "[hw]\nstream_elems = 3\n[bitstream]"),
     "[hw] stream_elems=3 must be a power of two in 1..128 (tdata is at most 1024 bits)"),
    (("[bitstream]", "[hw]\nstream_elems = 0\n[bitstream]"), "[hw] stream_elems=0 must be a power of two in 1..128"),
    (("[bitstream]", "[hw]\nstream_elems = 256\n[bitstream]"), "[hw] stream_elems=256 must be a power of two"),
    (("[bitstream]", "[hw]\nstream_elems = \"2\"\n[bitstream]"), "[hw] stream_elems='2' must be an integer"),
    (("[bitstream]", "[hw]\nstream_elems = 1e9\n[bitstream]"), "[hw] stream_elems=1000000000.0 must be an integer"),
    (("w_bits = 4", "w_bits = 4\nact_bits = 12\n[hw]\nstream_elems = 128"),
     "[hw] stream_elems=128 must be a power of two in 1..64 (tdata is at most 1024 bits) for 12-bit "
     "activations ([quant] act_bits)"),
    (("[quant]", "[quant]\nlayer_bits = \"0:9\""), "[quant] layer_bits (layer 0) = 9 is out of range; give an integer in 2..8"),
    (("ranks = 2", "ranks = 2\nobjective = \"cycles\""),
     "[train.model] objective='cycles' needs lanes (the accelerator's MAC lanes); set [hw] lanes or use objective='macs'"),
    (("ranks = 2", "ranks = 2\nobjective = \"fast\""), "objective='fast' must be one of 'macs', 'peak', 'cycles'"),
    (("ranks = 2", "ranks = 2\nlanes = 8\n[hw]\nlanes = 16"),
     "[train.model] lanes = 8 differs from [hw] lanes = 16; drop [train.model] lanes (the flow takes it from [hw])"),
    # seeds: nextpnr's is a 32-bit int (refused by the build stage, after the others had run);
    # the others had no upper bound at all
    (('board = "none"', 'board = "none"\nseed = 2147483648'),
     "[bitstream] seed = 2147483648 is out of range; give an integer in 0..2147483647"),
    (("[bitstream]", "[sim]\nseed = 9223372036854775808\n[bitstream]"),
     "[sim] seed = 9223372036854775808 is out of range; give an integer in 0..9223372036854775807"),
    (("[bitstream]", "[device_train]\nseed = 9223372036854775808\n[bitstream]"),
     "[device_train] seed = 9223372036854775808 is out of range; give an integer in 0..9223372036854775807"),
])
def test_bad_config_is_one_precise_line(tmp_path, capsys, edit, message):
    old, new = edit
    assert old in GOOD
    p = _cfg(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as e:
        FlowConfig.load(p)
    text = str(e.value)
    assert "\n" not in text and message in text, text
    assert main(["flow", str(p), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "b").exists()  # nothing written for a bad config


def test_good_config_parses_and_unknown_freq_is_refused(tmp_path):
    cfg = FlowConfig.load(_cfg(tmp_path, GOOD))
    assert cfg.name == "t" and cfg.train.epochs == 1 and cfg.bitstream.board == "none"
    short = cfg.shortened()
    assert short.sim.vectors == min(cfg.sim.vectors, cfg.short.vectors)
    with pytest.raises(ConfigError, match=r"\[bitstream\] freq_mhz: 33 MHz is not available on the icebreaker"):
        FlowConfig.from_dict({"bitstream": {"board": "icebreaker", "freq_mhz": 33}})


def test_missing_or_broken_file(tmp_path, capsys):
    assert main(["flow", str(tmp_path / "nope.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    p = _cfg(tmp_path, "[flow\nname=1")
    assert main(["flow", str(p)]) == 2
    err = capsys.readouterr().err
    assert "is not valid TOML" in err and err.count("\n") == 1


def test_quant_section_checks_the_bounds_of_ttforge_quantize():
    """[quant] takes its QAT options and their bounds from the one statement that
    quantize_trained and ttforge quantize use (ttforge.quant.ptq.QUANTIZE_INT_RANGES)."""
    import inspect

    from ttforge.flow.config import QuantSection
    from ttforge.quant.ptq import QUANTIZE_INT_RANGES, quantize_trained

    keys = {*QUANTIZE_INT_RANGES, "lr"}
    assert keys <= set(QuantSection.__dataclass_fields__)
    assert keys <= set(inspect.signature(quantize_trained).parameters)
    for key, (lo, hi) in QUANTIZE_INT_RANGES.items():
        assert getattr(QuantSection(**{key: lo}), key) == lo
        assert getattr(QuantSection(**{key: hi}), key) == hi
        for bad in (lo - 1, hi + 1):
            with pytest.raises(ConfigError, match=rf"^\[quant\] {key} = {bad} is out of range; give an integer in {lo}\.\.{hi}$"):
                QuantSection(**{key: bad})
            with pytest.raises(ConfigError, match=rf"^{key}={bad} must be an integer in {lo}\.\.{hi:,}$"):
                quantize_trained(None, **{key: bad})
    for bad in (0, -1e-3, float("nan"), float("inf"), True):
        with pytest.raises(ConfigError, match=r"^\[quant\] lr = .* must be a positive number"):
            QuantSection(lr=bad)
        with pytest.raises(ConfigError, match=r"^lr=.* must be a positive number"):
            quantize_trained(None, lr=bad)


def test_the_cycles_objective_takes_the_lanes_from_hw(tmp_path):
    """[train.model] objective = "cycles" chooses the TT orders for [hw] lanes; with the
    default objective the network does not depend on the lanes (a sweep over lanes trains
    once)."""
    text = GOOD.replace("ranks = 2", "ranks = 2\nobjective = \"cycles\"") + "[hw]\nlanes = 16\n"
    model = FlowConfig.load(_cfg(tmp_path, text)).train.model
    assert (model.objective, model.lanes) == ("cycles", 16)
    plain = FlowConfig.load(_cfg(tmp_path, GOOD + "[hw]\nlanes = 16\n", "p.toml")).train.model
    assert (plain.objective, plain.lanes) == ("macs", None)

