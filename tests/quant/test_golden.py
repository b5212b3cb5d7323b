"""The QAT model in eval mode, the integer executor and a second formulation agree exactly."""

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from torch import nn

from ttforge.errors import ConfigError
from ttforge.ir.executor import IntLayer, IntNetwork, execute, execute_traced
from ttforge.quant.qat import LayerQuant, QuantConfig, calibrate, compile_network, quantize_model

from tests.support.nets import random_float_network, small_net
from tests.support.reference import reference_execute


def test_qat_eval_equals_executor_equals_reference():
    q, x = small_net()
    inet = compile_network(q)
    xi = inet.quantize_input(x.numpy())
    golden = execute(inet, xi)
    assert np.array_equal(q.forward_int(x), golden)
    assert np.array_equal(reference_execute(inet, xi), golden)


def test_an_empty_batch_is_empty_and_an_empty_calibration_one_line():
    """A batch of no samples: the eval model's reshape refused it (torch's RuntimeError)
    where the float model and the executor return ``(0, out_features)``; calibrating on
    none was the same RuntimeError."""
    q, x = small_net()
    inet = compile_network(q)
    y = q.eval()(x[:0])
    assert tuple(y.shape) == (0, inet.layers[-1].out_features)
    assert execute(inet, inet.quantize_input(x[:0].numpy())).shape == (0, inet.layers[-1].out_features)
    assert q.forward_int(x[:0]).shape == (0, inet.layers[-1].out_features)
    with pytest.raises(ConfigError, match="calibration batch holds no samples"):
        calibrate(q, x[:0])


def test_a_nan_input_to_forward_int_is_the_executors_refusal():
    """A NaN passed the fake quantization and its row came back as int64's minimum; the
    executor's path (quantize_input) refuses it naming the index: the same line."""
    from ttforge.errors import DataError

    q, x = small_net()
    inet = compile_network(q)
    bad = x[:4].clone()
    bad[2, 7] = float("nan")
    with pytest.raises(DataError) as golden:
        inet.quantize_input(bad.numpy())
    with pytest.raises(DataError, match=r"^input value at index \(2, 7\) is NaN") as model:
        q.forward_int(bad)
    assert str(model.value) == str(golden.value)
    # the sibling: infinities saturate, as in the executor's path
    inf = x[:4].clone()
    inf[2, 7] = float("inf")
    assert np.array_equal(q.forward_int(inf), execute(inet, inet.quantize_input(inf.numpy())))


def test_the_plain_operations_saturate_infinite_inputs_as_the_executor(monkeypatch):
    """A compiled eval model runs the plain operations (``QuantNetwork.compile``); there an
    infinite input, or a finite float64 whose ``x / 2^in_exp`` overflows, was NaN and its
    row int64's minimum. Forced here (``plain_ops_only``, as under a trace) to stay fast."""
    from ttforge.model import fast

    q, x = small_net()
    inet = compile_network(q)
    bad = x[:4].double().clone()
    bad[1, 0], bad[2, 3], bad[3, 5] = float("inf"), -float("inf"), 1e308
    golden = execute(inet, inet.quantize_input(bad.numpy()))
    monkeypatch.setattr(fast, "plain_ops_only", lambda: True)
    assert np.array_equal(q.forward_int(bad), golden)


def test_an_output_that_is_not_finite_is_refused_in_one_line():
    """A NaN weight makes its rows NaN, and forward_int cast them to int64's minimum."""
    q, x = small_net()
    with torch.no_grad():
        next(q.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(ConfigError, match=r"^forward_int: the eval output at index \(0, 0\) is nan "
                                          r"\(\d+ not finite in all\); a weight of the model"):
        q.forward_int(x[:3])


def test_calibration_data_of_only_zeros_warn_naming_the_tensors():
    """All-zero calibration data gave input exponent 0 silently (a useless artifact); the
    warning names what was all zero. The sibling: the usual data warn of nothing."""
    import warnings

    from ttforge.quant.qat import CalibrationWarning

    q, x = small_net()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        calibrate(q, x)
    assert not [w for w in caught if issubclass(w.category, CalibrationWarning)]
    # (layer 0's last step adds its bias, so nothing after it is all zero)
    with pytest.warns(CalibrationWarning, match=r"^calibration saw only zeros for layer 0 input, layer 0 step 0, "
                                                r"layer 0 step 1; their exponents say nothing of a scale"):
        calibrate(q, torch.zeros_like(x))
    assert int(q.qlayers[0].in_exp) == 0


def test_flipping_one_core_bit_breaks_equality():
    q, x = small_net()
    inet = compile_network(q)
    xi = inet.quantize_input(x.numpy())
    golden = execute(inet, xi)
    cores = [np.array(c) for c in inet.layers[0].cores]   # a layer's own cores are read-only
    cores[1].reshape(-1)[7] ^= 1 << 5  # one bit of one entry (stays inside the 8-bit range)
    inet = IntNetwork((dataclasses.replace(inet.layers[0], cores=tuple(cores)), *inet.layers[1:]))
    assert not np.array_equal(execute(inet, xi), golden)
    assert not np.array_equal(reference_execute(inet, xi), q.forward_int(x))


def test_flipping_one_expected_bit_breaks_equality():
    q, x = small_net()
    inet = compile_network(q)
    golden = execute(inet, inet.quantize_input(x.numpy()))
    corrupted = golden.copy()
    corrupted[3, 2] ^= 1
    assert not np.array_equal(q.forward_int(x), corrupted)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_float_network())
def test_random_networks_agree_exactly(case):
    net, cfg, in_f, seed = case
    torch.manual_seed(seed)
    for p in net.parameters():
        nn.init.normal_(p, 0, 0.7)
    x = torch.randn(17, in_f)
    q = calibrate(quantize_model(net, cfg), x, cfg.calibration)
    inet = compile_network(q)
    xi = inet.quantize_input(x.numpy())
    golden = execute(inet, xi)
    assert np.array_equal(q.forward_int(x), golden)
    assert np.array_equal(reference_execute(inet, xi), golden)


def test_trace_names_every_step_and_counts_saturation():
    q, x = small_net(w_bits=4, inter_bits=8)
    inet = compile_network(q)
    out, traces = execute_traced(inet, inet.quantize_input(x.numpy() * 50))
    assert [(t.layer, t.step) for t in traces] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (2, 0)]
    assert sum(t.saturations for t in traces) > 0
    assert np.array_equal(traces[-1].out[:, :5], out)


def test_accumulator_overflow_is_refused_at_compile_time():
    q, _ = small_net()
    layer = q.qlayers[0].to_int_layer()
    fields = {f: getattr(layer, f) for f in layer.__dataclass_fields__}
    fields["acc_bits"] = 12
    with pytest.raises(ConfigError, match=r"step 0 .* acc_bits=12; raise acc_bits to \d+"):
        IntLayer(**fields)


def test_sums_past_the_widest_accumulator_name_a_fix_that_exists():
    # "raise acc_bits to 49" named a width that is itself refused (at most 48)
    from ttforge.ir.arith import MAX_ACC_BITS
    from ttforge.ir.schedule import ContractionSchedule
    from ttforge.ir.tt import TTShape

    sched = ContractionSchedule(TTShape((2,), (600,), (1, 1)), (0,))
    fields = dict(in_features=600, out_features=2, schedule=sched, cores=(np.full((1, 2, 600, 1), -127),),
                  core_exps=(0,), w_bits=8, in_bits=32, in_exp=0, inter_bits=32, out_bits=32,
                  step_exps=(10,), acc_bits=MAX_ACC_BITS, bias=None, relu=False)
    with pytest.raises(ConfigError) as e:
        IntLayer(**fields)
    msg = str(e.value)
    assert "can reach 49-bit sums" in msg and "raise acc_bits" not in msg
    assert f"widest accumulator ({MAX_ACC_BITS} bits)" in msg and "w_bits (8)" in msg and "32 bits" in msg
    assert "sum of 600 products" in msg
    # a shorter sum fits: the same layer over 300 inputs is accepted
    sched = ContractionSchedule(TTShape((2,), (300,), (1, 1)), (0,))
    IntLayer(**{**fields, "in_features": 300, "schedule": sched, "cores": (np.full((1, 2, 300, 1), -127),)})


def test_bad_quant_configs_are_named():
    with pytest.raises(ConfigError, match="w_bits=9"):
        LayerQuant(w_bits=9)
    with pytest.raises(ConfigError, match="calibration"):
        QuantConfig(calibration="minmax")
    with pytest.raises(ConfigError, match="cannot quantize a Conv1d"):
        quantize_model(nn.Sequential(nn.Conv1d(1, 1, 1)))


@pytest.mark.parametrize("method", ["MAX", "Max", "minmax", "percentile", "", None, 1])
def test_an_unknown_calibration_method_is_refused_as_quant_config_refuses_it(method):
    """Anything but 'max' calibrated by MSE, None did not calibrate (every exponent 0)."""
    q, x = small_net()
    with pytest.raises(ConfigError, match=r"^method=.* must be 'max' or 'mse'$"):
        calibrate(q, x, method)
    with pytest.raises(ConfigError, match=r"^calibration=.* must be 'max' or 'mse'$"):
        QuantConfig(calibration=method)
    # the sibling: both methods are taken
    for ok in ("max", "mse"):
        calibrate(q, x, ok)


@pytest.mark.parametrize("key, match", [
    ("0", r"^layers key '0' must be a linear-layer index, an integer >= 0"),
    (-1, r"^layers key -1 must be a linear-layer index"),
    (1.0, r"^layers key 1\.0 must be a linear-layer index"),
    (True, r"^layers key True must be a linear-layer index"),
])
def test_a_layer_override_key_that_is_no_index_is_refused(key, match):
    with pytest.raises(ConfigError, match=match):
        QuantConfig(LayerQuant(w_bits=4), layers={key: LayerQuant(w_bits=2)})


def test_a_layer_override_of_a_layer_the_network_lacks_is_refused():
    """An override of layer 5 of a 3-layer network was silently ignored."""
    q, x = small_net()
    net = nn.Sequential(*[m.layer if hasattr(m, "layer") else m for m in q.qlayers])
    for key in (3, 5, np.int64(7)):
        with pytest.raises(ConfigError, match=rf"^layers key {key} matches no layer: the network has 3 "
                                              r"linear layers \(0\.\.2\)$"):
            quantize_model(net, QuantConfig(LayerQuant(w_bits=4), layers={key: LayerQuant(w_bits=2)}))
    # the sibling: the last layer's override is applied
    qn = quantize_model(net, QuantConfig(LayerQuant(w_bits=4), layers={np.int64(2): LayerQuant(w_bits=2)}))
    assert [m.q.w_bits for m in qn.qlayers] == [4, 4, 2]


# -- IntLayer refuses what the artifact loader refuses --------------------------------------
_DENSE = dict(w_bits=8, in_bits=8, in_exp=0, inter_bits=16, out_bits=16, step_exps=(2,), core_exps=(0,),
              acc_bits=32)


@pytest.mark.parametrize("change, match", [
    ({"in_exp": 1.5}, r"in_exp=1\.5 must be an integer in -1024\.\.1024"),
    ({"core_exps": (0.5,)}, r"core_exps=\(0\.5,\) must be integers in -1024\.\.1024"),
    ({"step_exps": (2000,)}, r"step_exps=\(2000,\) must be integers"),
    ({"relu": "no"}, r"relu='no' must be True or False"),
    ({"w_bits": 16}, r"w_bits=16 must be an integer in 2\.\.8"),
    ({"in_exp": True}, r"in_exp=True must be an integer"),
    ({"acc_bits": 49}, r"acc_bits=49 must be an integer in 2\.\.48"),
    ({"bias": np.array([1.0, 2.0])}, r"bias has dtype float64"),
    ({"bias": np.array([1, 2], dtype=np.uint64)}, r"bias has dtype uint64"),
    ({"bias": np.array([1, 2], dtype=object)}, r"bias has dtype object"),
    ({"bias": np.array([1 << 40, 0])}, r"can reach 42-bit sums but acc_bits=32"),
])
def test_int_layer_refuses_what_the_loader_refuses(change, match):
    from ttforge.errors import UserError
    from ttforge.ir.executor import layer_from_dense

    with pytest.raises(UserError, match=match):
        layer_from_dense(np.array([[3, -2], [1, 5]]), **{**_DENSE, **change})


def test_int_layer_that_builds_saves_and_loads_with_plain_ints():
    from ttforge.ir.artifact import dumps_artifact, loads_artifact
    from ttforge.ir.executor import IntNetwork, layer_from_dense

    layer = layer_from_dense(np.array([[3, -2], [1, 5]]), **{**_DENSE, "in_exp": np.int64(1),
                                                            "core_exps": [np.int32(0)], "relu": np.bool_(True)})
    assert type(layer.in_exp) is int and layer.core_exps == (0,) and layer.relu is True
    net = IntNetwork((layer,))
    back = loads_artifact(dumps_artifact(net))
    x = np.array([[1, 2], [-7, 100]])
    assert np.array_equal(execute(back, x), execute(net, x))


def test_a_bias_beyond_any_accumulator_names_both_scales():
    """Calibration samples of 1e-20 next to a sound layer: the line blamed the weights
    alone ("the bias is too large for the weights"); it names the core's and the input's
    scale, and the calibration data as a cause."""
    from ttforge.model import TTLinear

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), TTLinear(30, 20, [4, 2], in_modes=[2, 3, 5], out_modes=[2, 5, 2]))
    q = quantize_model(net, QuantConfig(LayerQuant(8, 8, 16)))
    with pytest.raises(ConfigError, match=r"its last core's scale 2\^-?\d+ times its input's 2\^-\d+\) .*"
                                          r"check the calibration data"):
        calibrate(q, torch.full((4, 30), 1e-20))
        compile_network(q)


@pytest.mark.parametrize("scale", [1e-20, 1e30])
def test_an_all_zero_step_calibrates_to_a_shift_the_accumulator_makes(scale):
    """A zero core after inputs of 1e-20 (or 1e30): its all-zero step took the exponent
    0 of no values, a right shift of 73 (left 93) that no accumulator makes, and
    compiling failed; now 0 or the nearest exponent whose shift it makes, and the network
    is exact."""
    from ttforge.model import TTLinear

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), TTLinear(30, 20, [4, 2], in_modes=[2, 3, 5], out_modes=[2, 5, 2]),
                        nn.ReLU(), nn.Linear(20, 5))
    with torch.no_grad():
        net[1].cores[0].zero_()
        net[1].bias.zero_()
    q = quantize_model(net, QuantConfig(LayerQuant(8, 8, 16)))
    x = (torch.rand(16, 30) - 0.5) * scale
    calibrate(q, x)
    inet = compile_network(q)
    xi = inet.quantize_input(x.numpy())
    assert np.array_equal(q.eval().forward_int(x), execute(inet, xi))
    # sibling: one bit of the last layer's bias flipped (the one its output's LSB is
    # made of, not shifted away), and the equality must fail
    last = inet.layers[-1]
    bias = np.array(last.bias)
    bias[0] ^= 1 << max(int(last.shifts()[-1]), 0)
    bad = IntNetwork((*inet.layers[:-1], dataclasses.replace(last, bias=bias)))
    assert not np.array_equal(q.forward_int(x), execute(bad, xi))


def test_an_integer_layer_refusal_names_its_layer():
    """Exponents set by hand that give a shift beyond the accumulator: the integer
    layer's line ("step 1 shifts by ...") named no layer of the network."""
    q, _ = small_net()
    q.qlayers[1].step_exps[0] += 80
    with pytest.raises(ConfigError, match=r"^layer 1 \(TTLinear\): step \d shifts by"):
        compile_network(q)
