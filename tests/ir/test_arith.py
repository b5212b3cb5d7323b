"""ir.arith.quantize_wide: quantize to a stored value's width, up to the widest accumulator
(a bias at acc_bits 33..48, an update of update_bits 33..48; probe D, F4)."""

import numpy as np
import pytest

from ttforge.errors import ConfigError
from ttforge.ir.arith import MAX_ACC_BITS, quantize, quantize_wide


@pytest.mark.parametrize("bits, narrow", [(2, False), (8, True), (32, False), (32, True)])
def test_the_datapath_widths_are_quantize(bits, narrow):
    x = np.random.default_rng(bits).normal(size=2000) * 2.0 ** (bits - 3)
    x = np.concatenate([x, [np.inf, -np.inf, 2.0 ** 40, -(2.0 ** 40), 0.5, -0.5]])
    assert np.array_equal(quantize_wide(x, bits, -2, narrow), quantize(x, bits, -2, narrow))


@pytest.mark.parametrize("bits", [33, 40, MAX_ACC_BITS])
def test_wider_widths_are_exact_and_saturate(bits):
    top = (1 << (bits - 1)) - 1
    ints = [top, -top - 1, top - 3, top // 3, -(top // 5), 1 << 31, 0]
    x = np.array([float(v) for v in ints]) * 2.0 ** -5 + 2.0 ** -7   # a quarter LSB above each
    assert quantize_wide(x, bits, -5).tolist() == ints
    assert quantize_wide(np.array([np.inf, -np.inf]), bits, 0, narrow=True).tolist() == [top, -top]
    with pytest.raises(ConfigError, match=r"^bit width 33 must be an integer in 2\.\.32$"):
        quantize(x, 33, -5)


@pytest.mark.parametrize("bits", [1, MAX_ACC_BITS + 1, 8.0, True])
def test_widths_outside_the_contract_are_refused(bits):
    with pytest.raises(ConfigError, match=rf"^bit width {bits!r} must be an integer in 2\.\.{MAX_ACC_BITS}$"):
        quantize_wide(np.zeros(3), bits, 0)


@pytest.mark.parametrize("bits", [2, 8, 16])
def test_max_calibration_is_the_documented_symmetric_bound(bits):
    """docs/arithmetic.md, Calibration: the smallest e with m <= (2^(b-1) - 1) 2^e, so -1.0
    (-2^(b-1) units of 2^(1-b), no saturation there) and a magnitude that would round down
    into the range take the exponent above (probe D, F3: the doc said "does not saturate")."""
    from ttforge.ir.arith import exponent_for_max

    hi = (1 << (bits - 1)) - 1
    e = 1 - bits
    assert exponent_for_max(hi * 2.0 ** e, bits) == e
    for m in (1.0, (hi + 0.4) * 2.0 ** e, np.nextafter(hi * 2.0 ** e, 2.0)):
        assert exponent_for_max(m, bits) == e + 1 == exponent_for_max(m, bits, narrow=True)
