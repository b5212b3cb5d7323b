"""The QAT model in eval mode, the integer executor and a second formulation agree exactly."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from torch import nn

from ttforge.errors import ConfigError
from ttforge.ir.executor import IntLayer, execute, execute_traced
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


def test_flipping_one_core_bit_breaks_equality():
    q, x = small_net()
    inet = compile_network(q)
    xi = inet.quantize_input(x.numpy())
    golden = execute(inet, xi)
    core = inet.layers[0].cores[1]
    core.reshape(-1)[7] ^= 1 << 5  # one bit of one entry (stays inside the 8-bit range)
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


def test_bad_quant_configs_are_named():
    with pytest.raises(ConfigError, match="w_bits=9"):
        LayerQuant(w_bits=9)
    with pytest.raises(ConfigError, match="calibration"):
        QuantConfig(calibration="minmax")
    with pytest.raises(ConfigError, match="cannot quantize a Conv1d"):
        quantize_model(nn.Sequential(nn.Conv1d(1, 1, 1)))
