import json
from dataclasses import replace

import pytest
import torch
from torch import nn

from ttforge.errors import ConfigError, ShapeError
from ttforge.model.layers import TTLinear
from ttforge.model.network import ModelConfig, build_model, describe, describe_table

ALLOWED = (nn.Flatten, TTLinear, nn.Linear, nn.ReLU)


def test_tt_model_is_a_plain_sequential():
    model = build_model(ModelConfig(in_features=64, hidden=(32, 16), out_features=10, ranks=4))
    assert type(model) is nn.Sequential
    assert all(type(m) in ALLOWED for m in model)
    kinds = [type(m).__name__ for m in model]
    assert kinds == ["Flatten", "TTLinear", "ReLU", "TTLinear", "ReLU", "Linear"]
    assert model(torch.zeros(3, 8, 8)).shape == (3, 10)


def test_dense_and_tt_last_layer():
    dense = build_model(ModelConfig("dense", 64, (32,), 10))
    assert [type(m).__name__ for m in dense] == ["Flatten", "Linear", "ReLU", "Linear"]
    tt = build_model(ModelConfig("tt", 64, (32,), 10, ranks=3, tt_last_layer=True))
    assert [type(m).__name__ for m in tt] == ["Flatten", "TTLinear", "ReLU", "TTLinear"]
    assert tt[-1].out_features == 10 and tt[-1].tt_shape.out_size >= 10  # padded


def test_resolved_config_rebuilds_the_same_network_and_round_trips_json():
    cfg = ModelConfig(in_features=64, hidden=(64,), out_features=10, ranks=8, n_cores=3)
    r = cfg.resolved()
    assert r.in_modes == ((4, 4, 4),) and r.ranks == ((1, 8, 8, 1),) and r.n_cores is None
    assert r.layer_specs() == cfg.layer_specs()
    again = ModelConfig.from_dict(json.loads(json.dumps(r.to_dict())))
    assert again == r
    torch.manual_seed(0)
    model = build_model(cfg)
    assert ModelConfig.of_model(model) == r
    build_model(again).load_state_dict(model.state_dict())


def test_with_ranks_describes_a_truncated_model():
    cfg = ModelConfig(in_features=64, hidden=(64,), out_features=10, ranks=8, n_cores=3)
    model = build_model(cfg)
    layer = model[1]
    layer.set_cores([g[..., :2] if k == 0 else (g[:2, ..., :3] if k == 1 else g[:3]) for k, g in
                     enumerate(layer.cores)])
    small = cfg.with_ranks([layer.ranks])
    assert small.ranks == ((1, 2, 3, 1),)
    build_model(small).load_state_dict(model.state_dict())


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(ranks=0), ConfigError, "ranks=0 must be an integer >= 1"),
    (dict(hidden=(64, 0)), ConfigError, r"hidden\[1\]=0"),
    (dict(kind="conv"), ConfigError, "kind='conv' must be 'tt' or 'dense'"),
    (dict(hidden=()), ConfigError, "has no TT layer"),
    (dict(ranks=(4, 4)), ConfigError, "one entry per TT layer"),
    (dict(ranks=((1, 99, 1),)), ShapeError, "TT layer 0 .*exceeds the maximal TT rank 64"),
    (dict(in_modes=((4, 4),), out_modes=((8, 8),)), ShapeError, "multiply to 16, fewer than 64"),
    (dict(in_modes=((8, 8),), n_cores=3), ConfigError, "disagree with n_cores=3"),
    (dict(in_features=0), ConfigError, "in_features=0"),
    (dict(objective="cycles"), ConfigError, "objective='cycles' needs lanes"),
    (dict(objective="time"), ConfigError, "objective='time' must be one of 'macs', 'peak', 'cycles'"),
    (dict(lanes=0), ConfigError, "lanes=0 must be an integer >= 1"),
])
def test_bad_configs_are_one_line_errors(kwargs, error, message):
    base = dict(in_features=64, out_features=10)
    with pytest.raises(error, match=message) as e:
        ModelConfig(**{**base, **kwargs})
    assert "\n" not in str(e.value)


def test_from_dict_rejects_unknown_fields_and_features_must_agree():
    with pytest.raises(ConfigError, match="unknown model config field 'rank'"):
        ModelConfig.from_dict({"rank": 3})
    with pytest.raises(ConfigError, match="in_features=64 but the data has 784"):
        ModelConfig(in_features=64).with_features(784, 10)
    with pytest.raises(ConfigError, match="with_features"):
        build_model(ModelConfig())


def test_describe_counts_parameters_and_compression():
    model = build_model(ModelConfig(in_features=64, hidden=(64,), out_features=10, ranks=4))
    rows = describe(model)
    assert [r["type"] for r in rows] == ["TTLinear", "Linear"]
    tt = rows[0]
    assert tt["ranks"] == [1, 4, 1] and tt["in_modes"] == [8, 8]
    assert tt["params"] == 2 * 8 * 8 * 4 + 64
    assert tt["dense_params"] == 64 * 64 + 64
    assert tt["compression"] == pytest.approx(64 * 64 / 512)
    assert sum(r["params"] for r in rows) == sum(p.numel() for p in model.parameters())
    assert describe_table(model).row_count == 3


def test_the_order_objective_and_lanes_survive_json_and_of_model():
    cfg = ModelConfig(in_features=105, hidden=(64,), out_features=10, ranks=4,
                      in_modes=((3, 5, 7),), out_modes=((4, 2, 8),), objective="cycles", lanes=16)
    model = build_model(cfg)
    fast = model[1].schedule
    assert fast.order != build_model(replace(cfg, objective="macs", lanes=None))[1].schedule.order
    again = ModelConfig.from_dict(json.loads(json.dumps(cfg.resolved().to_dict())))
    assert (again.objective, again.lanes) == ("cycles", 16)
    assert build_model(again)[1].schedule == fast
    assert ModelConfig.of_model(model) == cfg.resolved()


@pytest.mark.parametrize("field", ["objective", "lanes", "bias"])
def test_of_model_refuses_layers_it_cannot_describe_with_one_value(field):
    """ModelConfig has one objective, lane count and bias flag: layers that differ in
    one of them are refused (one line naming it), not described by the first layer's."""
    cfg = ModelConfig(in_features=105, hidden=(64,), out_features=10, ranks=4, tt_last_layer=True,
                      in_modes=((3, 5, 7), (4, 4, 4)), out_modes=((4, 2, 8), (2, 5, 1)),
                      objective="cycles", lanes=16)
    model = build_model(cfg)
    assert ModelConfig.of_model(model) == cfg.resolved()        # all alike: described
    last = model[-1]
    if field == "bias":
        last.bias = None
    else:
        setattr(last, field, "macs" if field == "objective" else 4)
    with pytest.raises(ConfigError, match=f"the layers' {field} differ"):
        ModelConfig.of_model(model)

