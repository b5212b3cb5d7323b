"""AccelConfig: validation, serialization, fitting a network."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.support.nets import example_network
from ttforge.errors import ConfigError
from ttforge.hw.config import AccelConfig


def test_defaults_are_valid_and_resolve_the_address_width():
    c = AccelConfig()
    assert c.axil_addr_bits == c.required_addr_bits
    assert 1 << c.axil_addr_bits == 4 * c.region_bytes
    assert c.region_bytes >= 4 * c.core_depth


@pytest.mark.parametrize("kwargs, pattern", [
    ({"lanes": 3}, r"lanes=3 must be a power of two in 1\.\.64"),
    ({"lanes": 128}, r"lanes=128"),
    ({"lanes": 4.0}, r"lanes=4\.0 must be an integer"),
    ({"lanes": True}, r"lanes=True must be an integer"),
    ({"act_bits": 1}, r"act_bits=1 must be in 2\.\.32"),
    ({"core_bits": 17}, r"core_bits=17 must be in 2\.\.16"),
    ({"inter_bits": 6}, r"inter_bits=6 must be >= act_bits=8"),
    ({"acc_bits": 49}, r"acc_bits=49 must be in 2\.\.48"),
    ({"acc_bits": 24, "bias_bits": 32}, r"bias_bits=32 must be in 2\.\.acc_bits=24"),
    ({"lanes": 8, "core_depth": 100}, r"core_depth=100 must be a multiple of lanes=8 .*use 104"),
    ({"buf_depth": 0}, r"buf_depth=0 must be a multiple"),
    ({"bias_depth": 1 << 25}, r"bias_depth=33554432"),
    ({"desc_depth": 0}, r"desc_depth=0 must be in 1\.\.4096"),
    ({"stream_elems": 3}, r"stream_elems=3 must be a power of two in 1\.\.128"),
    ({"stream_elems": 256}, r"stream_elems=256"),
    ({"axil_addr_bits": 8}, r"axil_addr_bits=8 must be in 16\.\.32"),
    ({"serial_requant": 2}, r"serial_requant=2 must be in 0\.\.1"),
    ({"counter_bits": 23}, r"counter_bits=23 must be in 24\.\.48"),
    ({"lanes": 16, "requant_units": 3}, r"requant_units=3 must be a power of two in 2\.\.lanes=16"),
    ({"lanes": 16, "requant_units": 32}, r"requant_units=32 must be a power of two in 2\.\.lanes=16"),
    ({"lanes": 16, "requant_units": 1}, r"requant_units=1 .*\(one unit: serial_requant=1\)"),
    ({"lanes": 16, "requant_units": 0}, r"requant_units=0 must be a power of two"),
    ({"lanes": 16, "requant_units": 4.0}, r"requant_units=4\.0 must be an integer"),
    ({"serial_requant": 1, "requant_units": 2}, r"requant_units=2 with serial_requant=1 must be 1"),
])
def test_bad_fields_are_named(kwargs, pattern):
    with pytest.raises(ConfigError, match=pattern) as e:
        AccelConfig(**kwargs)
    assert "\n" not in str(e.value)


def test_requant_units_resolve():
    # None: one unit per lane (one with serial_requant); a single lane has its one unit
    assert AccelConfig(lanes=16).requant_count == 16
    assert AccelConfig(lanes=16, requant_units=4).requant_count == 4
    assert AccelConfig(lanes=16, serial_requant=1).requant_count == 1
    assert AccelConfig(lanes=16, serial_requant=1, requant_units=1).requant_count == 1
    assert AccelConfig(lanes=1, requant_units=1).requant_count == 1
    c = AccelConfig(lanes=64, requant_units=16)
    assert AccelConfig.from_dict(json.loads(c.to_json())) == c


def test_device_presets():
    c = AccelConfig.for_device("ice40up5k", 4)
    assert c.lanes == 4 and c.serial_requant == 1 and c.buf_depth == 1024 and c.counter_bits == 24
    assert AccelConfig.for_device("ecp5-85f", 16) == AccelConfig(lanes=16)
    assert AccelConfig.for_device("ice40up5k", 2, buf_depth=512).buf_depth == 512
    with pytest.raises(ConfigError, match="device='x' has no preset"):
        AccelConfig.for_device("x")


def test_round_trip_json_and_toml(tmp_path):
    c = AccelConfig(lanes=16, core_depth=8192, stream_elems=4, axil_addr_bits=20)
    assert AccelConfig.from_dict(c.to_dict()) == c
    assert AccelConfig.from_dict(json.loads(c.to_json())) == c
    p = tmp_path / "c.json"
    p.write_text(c.to_json())
    assert AccelConfig.load(p) == c
    t = tmp_path / "c.toml"
    t.write_text("[accel]\nlanes = 16\ncore_depth = 8192\nstream_elems = 4\naxil_addr_bits = 20\n")
    assert AccelConfig.load(t) == c
    t.write_text("lanes = 2\n")
    assert AccelConfig.load(t) == AccelConfig(lanes=2)


def test_bad_files_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        AccelConfig.load(tmp_path / "missing.json")
    p = tmp_path / "bad.json"
    p.write_text("{lanes: 4}")
    with pytest.raises(ConfigError, match="is not valid JSON"):
        AccelConfig.load(p)
    p.write_text('{"lanes": 4, "lane": 8}')
    with pytest.raises(ConfigError, match=r"unknown field 'lane'"):
        AccelConfig.load(p)
    p.write_text('{"lanes": 6}')
    with pytest.raises(ConfigError, match=r"bad.json: lanes=6"):
        AccelConfig.load(p)
    p.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must be an object"):
        AccelConfig.load(p)
    t = tmp_path / "bad.toml"
    t.write_text("lanes = = 4")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        AccelConfig.load(t)


@pytest.mark.parametrize("lanes", [1, 2, 4, 8, 16])
def test_for_network_is_the_smallest_that_fits(lanes):
    net = example_network()
    c = AccelConfig.for_network(net, lanes=lanes)
    c.check(net)
    assert c.fits(net)
    assert (c.act_bits, c.core_bits, c.inter_bits) == (8, 4, 8)
    assert c.desc_depth == 3
    # every field that carries a requirement is tight: one less does not fit
    for name in ("core_bits", "acc_bits", "bias_bits", "desc_depth"):
        smaller = AccelConfig(**{**c.to_dict(), name: getattr(c, name) - 1, "axil_addr_bits": None})
        with pytest.raises(ConfigError, match=rf"does not fit: {name}="):
            smaller.check(net)
    for name in ("core_depth", "bias_depth", "buf_depth"):
        if getattr(c, name) > lanes:
            smaller = AccelConfig(**{**c.to_dict(), name: getattr(c, name) - lanes, "axil_addr_bits": None})
            assert not smaller.fits(net)


def test_check_names_field_needed_and_have():
    net = example_network()
    c = AccelConfig(lanes=4, core_bits=2, core_depth=4, desc_depth=2)
    with pytest.raises(ConfigError) as e:
        c.check(net)
    msg = str(e.value)
    assert msg.startswith("does not fit: ")
    assert "core_bits=2 but" in msg and "needs 4; raise core_bits to 4" in msg
    assert "desc_depth=2 but" in msg and "needs 3" in msg
    assert "core_depth=4 but" in msg
    assert "\n" not in msg


# -- memory bits: bounded by what a board can hold -----------------------------------------
def test_the_memory_limit_is_twice_the_largest_devices_ram():
    from ttforge.hw.config import BRAM_BITS, SPRAM_BITS
    from ttforge.hw.config import MAX_MEMORY_BITS

    assert MAX_MEMORY_BITS == 2 * max(BRAM_BITS[d] + SPRAM_BITS[d] for d in BRAM_BITS)
    for device in ("ice40up5k", "ecp5-85f"):          # the presets are far inside it
        assert AccelConfig.for_device(device, 16).memory_parts()


@pytest.mark.parametrize("kwargs, field, bits, fit", [
    # the probe's cases: all three depths at 2**24 (8.3 GB at 120 s), buf_depth 2**20
    ({"core_depth": 1 << 24, "bias_depth": 1 << 24, "buf_depth": 1 << 24, "desc_depth": 4096},
     "bias_depth", 1_211_105_280, None),
    ({"buf_depth": 1 << 20}, "buf_depth", 33_628_160, 237_312),
    ({"lanes": 1, "core_depth": 1 << 23}, "core_depth", 67_280_896, 936_960),
    ({"throughput": 1, "buf_depth": 1 << 18}, "buf_depth", 10_559_488, 189_848),
    ({"engines": 8, "desc_depth": 4096}, "desc_depth", 26_607_616, 1_013),
])
def test_memories_above_the_limit_are_one_line_naming_the_depth_and_the_fix(kwargs, field, bits, fit):
    with pytest.raises(ConfigError) as e:
        AccelConfig(**kwargs)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{field}={kwargs[field]}: the memories need {bits:,} bits")
    assert "above ttforge's limit of 7,667,712" in msg
    if fit is None:
        assert "use smaller depths" in msg
        return
    assert f"use {field} <= {fit:,}" in msg
    step = 1 if field == "desc_depth" else kwargs.get("lanes", 4)
    AccelConfig(**{**kwargs, field: fit})                       # the advice holds ...
    with pytest.raises(ConfigError, match="the memories need"):  # ... and is the largest
        AccelConfig(**{**kwargs, field: fit + step})


def test_a_network_too_large_for_any_board_names_its_size():
    from ttforge.ir.executor import IntNetwork, layer_from_dense

    w = np.random.default_rng(0).integers(-7, 8, size=(600_000, 1))
    net = IntNetwork((layer_from_dense(w, core_exps=(-3,), w_bits=4, in_bits=8, in_exp=-2, inter_bits=16,
                                       out_bits=8, step_exps=(-1,), acc_bits=16),), meta={})
    with pytest.raises(ConfigError) as e:
        AccelConfig.for_network(net)
    msg = str(e.value)
    assert msg.startswith("the network's program needs buf_depth=600000: the memories need ")
    assert msg.endswith("; quantize a smaller network (narrower layers, lower ranks)") and "use buf_depth" not in msg



# -- MAC lanes: bounded by what a board can hold ---------------------------------------------
def test_mac_lanes_above_twice_the_largest_devices_multipliers_are_one_line():
    """``lanes=64, engines=8`` took 126 s and 0.94 GB to emit, for a design no board holds:
    ``lanes * engines`` is at most twice the ECP5-85F's 156 multipliers."""
    with pytest.raises(ConfigError) as e:
        AccelConfig(lanes=64, engines=8)
    assert str(e.value) == ("lanes=64, engines=8: 512 MAC lanes (lanes x engines), above ttforge's "
                            "limit of 312 (twice the multipliers of the largest supported device, "
                            "the ECP5-85F); use engines <= 4 at lanes=64 or fewer lanes")
    with pytest.raises(ConfigError, match="^config: lanes=64, engines=5: 320 MAC lanes"):
        AccelConfig.from_dict({**AccelConfig(lanes=64).to_dict(), "engines": 5})
    AccelConfig(lanes=64, engines=4)                     # the largest the repository uses: 64
    AccelConfig(lanes=32, engines=8)

    from ttforge.hw.config import MAX_MAC_LANES, MULTIPLIERS

    assert MAX_MAC_LANES == 2 * max(MULTIPLIERS.values()) == 312

# -- biases: loaded as 32-bit AXI4-Lite words ------------------------------------------------
def test_a_bias_wider_than_its_load_word_is_refused():
    from ttforge.hw.config import MAX_BIAS_BITS

    assert MAX_BIAS_BITS == 32
    AccelConfig(acc_bits=48, bias_bits=32)                       # the widest that loads whole
    with pytest.raises(ConfigError) as e:
        AccelConfig(acc_bits=48, bias_bits=33)
    assert str(e.value) == ("bias_bits=33 must be in 2..32: each bias is loaded as one 32-bit "
                            "AXI4-Lite word; use bias_bits <= 32")


def test_a_network_whose_bias_needs_more_than_32_bits_names_the_layer():
    from ttforge.ir.executor import IntNetwork, layer_from_dense

    w = np.ones((2, 2), dtype=np.int64)
    layer = layer_from_dense(w, core_exps=(-3,), w_bits=4, in_bits=8, in_exp=-2, inter_bits=16, out_bits=8,
                             step_exps=(-1,), acc_bits=48, bias=np.array([1 << 35, -5], dtype=np.int64))
    net = IntNetwork((layer,), meta={})
    with pytest.raises(ConfigError) as e:
        AccelConfig.for_network(net)
    assert str(e.value) == ("layer 0's bias (37-bit values) needs bias_bits=37, above the 32 bits a bias is "
                            "loaded in (one AXI4-Lite word); quantize with --acc-bits 32 or less")
    # sibling: the same layer with a bias that fits one word compiles
    small = layer_from_dense(w, core_exps=(-3,), w_bits=4, in_bits=8, in_exp=-2, inter_bits=16, out_bits=8,
                             step_exps=(-1,), acc_bits=48, bias=np.array([(1 << 31) - 1, -5], dtype=np.int64))
    assert AccelConfig.for_network(IntNetwork((small,), meta={})).bias_bits == 32
