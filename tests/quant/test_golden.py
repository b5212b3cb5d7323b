"""The QAT model in eval mode, the integer executor and a second formulation agree exactly."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from ttforge.errors import ConfigError
from ttforge.model import TTLinear, schedule_orders
from ttforge.ir.executor import IntLayer, execute, execute_traced
from ttforge.quant.qat import LayerQuant, QuantConfig, calibrate, compile_network, quantize_model

from .reference import reference_execute


def small_net(seed=0, ranks=(4, 3), w_bits=8, inter_bits=16, act_bits=8, calibration="max"):
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Flatten(), TTLinear(30, 20, [ranks[0], 2], in_modes=[2, 3, 5], out_modes=[2, 5, 2]),
        nn.ReLU(), TTLinear(20, 12, [ranks[1]], in_modes=[4, 5], out_modes=[3, 4]), nn.ReLU(),
        nn.Linear(12, 5),
    )
    x = torch.rand(64, 30) * 2 - 0.5
    q = quantize_model(net, QuantConfig(LayerQuant(w_bits, act_bits, inter_bits), calibration=calibration))
    calibrate(q, x, calibration)
    return q, x


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


@st.composite
def random_network(draw):
    d = draw(st.integers(1, 3))
    in_modes = [draw(st.integers(1, 4)) for _ in range(d)]
    out_modes = [draw(st.integers(1, 4)) for _ in range(d)]
    in_f = draw(st.integers(max(1, int(np.prod(in_modes)) - 2), int(np.prod(in_modes))))
    out_f = draw(st.integers(max(1, int(np.prod(out_modes)) - 2), int(np.prod(out_modes))))
    from ttforge.ir.tt import max_ranks

    lim = max_ranks(out_modes, in_modes)
    ranks = [draw(st.integers(1, min(lim[k], 5))) for k in range(1, d)]
    order = draw(st.sampled_from(schedule_orders(d)))
    layer = TTLinear(in_f, out_f, ranks, in_modes=in_modes, out_modes=out_modes,
                     bias=draw(st.booleans()), schedule=order)
    hidden_out = draw(st.integers(1, 6))
    net = nn.Sequential(layer, nn.ReLU(), nn.Linear(out_f, hidden_out))
    cfg = QuantConfig(
        LayerQuant(w_bits=draw(st.integers(2, 8)), act_bits=draw(st.sampled_from([8, 16])),
                   inter_bits=draw(st.sampled_from([8, 16]))),
        calibration=draw(st.sampled_from(["max", "mse"])),
    )
    seed = draw(st.integers(0, 10_000))
    return net, cfg, in_f, seed


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_network())
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
