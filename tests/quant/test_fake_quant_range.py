"""fake_quant at the ends of what it takes: the contract's exponents +-1024 (QAT eval
still equals the integer executor, or calibration refuses what float64 cannot hold),
exponents that are no integers, and widths whose bounds a float dtype cannot hold."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from ttforge.errors import ConfigError
from ttforge.ir import execute
from ttforge.model import fast
from ttforge.quant import LayerQuant, QuantConfig, calibrate, compile_network, fake_quant, quantize_model


def _dense(weight_scale, bias, w_bits=8, seed=0):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(16, 4, bias=bias, dtype=torch.float64))
    with torch.no_grad():
        m[0].weight.uniform_(-1, 1).mul_(weight_scale)
        if bias:
            m[0].bias.uniform_(-1, 1).mul_(weight_scale / 4)
    return m, quantize_model(m, QuantConfig(LayerQuant(w_bits, 8, 16, 32)))


def _equal_to_executor(q, x):
    net = compile_network(q)
    got = q.forward_int(x)
    want = execute(net, net.quantize_input(x.numpy()))
    assert np.array_equal(got, want)
    # the sibling that must fail: one bit of one core value flipped (kept in range)
    L = net.layers[0]
    g = L.cores[0].copy()
    g.reshape(-1)[np.flatnonzero(g.reshape(-1) >= 0)[0]] ^= 1   # v >= 0: v ^ 1 stays in range
    bad = dataclasses.replace(net, layers=(dataclasses.replace(L, cores=(g, *L.cores[1:])), *net.layers[1:]))
    assert not np.array_equal(got, execute(bad, bad.quantize_input(x.numpy())))
    return net, want


@pytest.mark.parametrize("bias", [False, True])
def test_core_exponent_minus_1024_is_the_integer_executor(bias):
    """Weights near 2^-1017 take the contract's smallest exponent; 2^1024 (the scale's
    inverse) overflowed float64: every weight quantized to its sign, compile_network
    raised a bare OverflowError."""
    m, q = _dense(2.0 ** -1017, bias)
    x = torch.randn(64, 16, dtype=torch.float64) / 4
    calibrate(q, x)
    assert int(q.qlayers[0].core_exps[0]) == -1024
    net, want = _equal_to_executor(q, x)
    # the weights are their float values in LSBs, not 127 times their sign
    w = m[0].weight.detach().numpy()
    assert np.array_equal(net.layers[0].cores[0][0, :, :, 0], np.floor(np.ldexp(w, 1024) + 0.5).astype(np.int64))
    assert len(np.unique(np.abs(want))) > 3
    assert not torch.isnan(q.eval()(torch.zeros(2, 16, dtype=torch.float64))).any()


@pytest.mark.parametrize("w_bits, top, exp", [(8, 100 * 2.0 ** 1017, 1017), (2, 0.75 * 2.0 ** 1023, 1023)])
def test_core_exponents_near_plus_1024_are_the_integer_executor(w_bits, top, exp):
    """The largest exponents whose quantized weights float64 holds (127 * 2^1017,
    1 * 2^1023)."""
    m, q = _dense(1.0, False, w_bits)
    with torch.no_grad():
        m[0].weight.mul_(top / float(m[0].weight.abs().max()))
    x = torch.randn(64, 16, dtype=torch.float64) * 2.0 ** -40
    calibrate(q, x)
    assert int(q.qlayers[0].core_exps[0]) == exp
    _equal_to_executor(q, x)


def test_a_weight_exponent_float64_cannot_scale_to_is_refused_at_calibration():
    """2-bit weights above 2^1023 take the exponent 1024, inside the contract, where the
    quantized value 1 * 2^1024 is infinite in float64."""
    m, q = _dense(1.0, False, 2)
    with torch.no_grad():
        m[0].weight.mul_(1.5 * 2.0 ** 1023 / float(m[0].weight.abs().max()))
    with pytest.raises(ConfigError, match=r"^layer 0 \(Linear\): core 0 .*2\^1024.*scale the model or the data down$"):
        calibrate(q, torch.randn(8, 16, dtype=torch.float64) * 2.0 ** -40)


def test_products_finer_than_float64_are_refused_at_calibration():
    """Weights at 2^-1024 times inputs at 2^-65: the products are multiples of 2^-1089,
    which float64 rounds; the integer executor does not."""
    _, q = _dense(2.0 ** -1017, False)
    with pytest.raises(ConfigError, match=r"^layer 0 \(Linear\) step 0: .*2\^-1089.*scale the model or the data up$"):
        calibrate(q, torch.randn(8, 16, dtype=torch.float64) * 2.0 ** -60)


def test_compile_refuses_exponents_set_by_hand():
    _, q = _dense(1.0, False, 2)
    calibrate(q, torch.randn(8, 16, dtype=torch.float64))
    q.qlayers[0].core_exps.fill_(1024)
    with pytest.raises(ConfigError, match=r"^layer 0 \(Linear\): core 0"):
        compile_network(q)


@pytest.mark.parametrize("plain", [False, True])
def test_integer_exponents_at_the_float64_ends(monkeypatch, plain):
    monkeypatch.setattr(fast, "plain_ops_only", lambda: plain)
    x = torch.tensor([2.0 ** -1020, -(2.0 ** -1020) * 3, 0.0, 2.0 ** -1024 * 200], dtype=torch.float64)
    want = torch.tensor([16, -48, 0, 127], dtype=torch.float64) * 2.0 ** -1024
    for e in (-1024, torch.tensor(-1024)):
        assert torch.equal(fake_quant(x, 8, e, True), want)
    for e in (1024, -1075, 10 ** 6):
        with pytest.raises(ConfigError, match=rf"^fake_quant: exp={e} must be in -1074\.\.1023 "):
            fake_quant(x, 8, e)


@pytest.mark.parametrize("exp", [1.5, True, np.float64(2.0), torch.tensor(1.5), torch.tensor(True)])
def test_exponents_that_are_no_integers_are_refused(exp):
    """ttforge.ir.quantize refuses them; a scale 2^1.5 is no power of two."""
    with pytest.raises(ConfigError, match=r"^fake_quant: exp.* (integer|integer tensor) \(values are x / 2\^exp\)$"):
        fake_quant(torch.tensor([1.0, 2.5]), 8, exp)


_BITS = {torch.float64: torch.int64, torch.float32: torch.int32, torch.bfloat16: torch.int16}


def _largest_not_above(v: int, dtype: torch.dtype) -> int:
    """The value of ``dtype`` nearest the integer ``v`` toward zero: ``|v|`` rounded to the
    nearest, stepped one value down (its bit pattern minus one) if that went above."""
    t = torch.tensor([float(abs(v))], dtype=torch.float64).to(dtype)
    if int(t.double()) > abs(v):
        t = (t.view(_BITS[dtype]) - 1).view(dtype)
    assert int(t.double()) <= abs(v)
    return int(t.double()) * (1 if v >= 0 else -1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("mode", ["in-place", "autograd", "plain"])
def test_saturation_stays_in_the_width_in_every_dtype(monkeypatch, dtype, mode):
    """float32 rounds 2^(bits-1) - 1 up to 2^(bits-1) from 26 bits on: 1e30 at 32 bits
    (the bias in a float32 training step) saturated to 2^31, one past the width. The
    bound is the largest value of the dtype in the range."""
    monkeypatch.setattr(fast, "plain_ops_only", lambda: mode == "plain")
    for bits in range(2, 49):
        hi = (1 << (bits - 1)) - 1
        for narrow in (False, True):
            lo = -hi if narrow else -hi - 1
            x = torch.tensor([1e30, -1e30, float("inf"), -float("inf")][:2 if mode == "plain" else 4],
                             dtype=dtype, requires_grad=mode != "in-place")
            got = [int(v) for v in fake_quant(x, bits, 0, narrow).detach().double()]
            want = [_largest_not_above(hi, dtype), _largest_not_above(lo, dtype)] * 2
            assert got == want[:len(got)], (bits, narrow)
