import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ttforge.errors import ConfigError, DataError
from ttforge.ir.arith import (
    acc_bits_needed,
    exponent_for_max,
    int_range,
    quantize,
    rshift_round,
    saturate,
)


@given(a=st.integers(-(2**40), 2**40), s=st.integers(-8, 30))
def test_rshift_round_is_half_up(a, s):
    expected = math.floor(Fraction(a, 2**s) + Fraction(1, 2)) if s > 0 else a * 2 ** (-s)
    assert int(rshift_round(np.array([a]), s)[0]) == expected


def test_rshift_round_ties_go_up_also_for_negatives():
    assert rshift_round(np.array([-3, -2, -1, 1, 2, 3]), 1).tolist() == [-1, -1, 0, 1, 1, 2]


def test_saturate_never_wraps():
    assert saturate(np.array([-1000, -128, 127, 1000]), 8).tolist() == [-128, -128, 127, 127]
    assert saturate(np.array([-1000, 1000]), 8, narrow=True).tolist() == [-127, 127]
    assert int_range(2, narrow=True) == (-1, 1)


@given(x=st.floats(-1e6, 1e6), bits=st.integers(2, 16), exp=st.integers(-12, 12))
def test_quantize_matches_exact_rational_rounding(x, bits, exp):
    lo, hi = int_range(bits)
    expected = min(max(math.floor(Fraction(x) / Fraction(2) ** exp + Fraction(1, 2)), lo), hi)
    assert int(quantize(np.array([x]), bits, exp)[0]) == expected


@pytest.mark.parametrize("k, wb, xb", [(1, 8, 8), (784, 4, 8), (448, 8, 16), (16, 2, 8)])
def test_acc_bits_is_tight(k, wb, xb):
    bits = acc_bits_needed(k, wb, xb)
    worst = k * ((1 << (wb - 1)) - 1) * (1 << (xb - 1))  # all weights +max, all inputs -2^(b-1)
    assert worst <= (1 << (bits - 1))  # -worst fits in `bits`
    assert worst > (1 << (bits - 2)) - 1  # but not in one bit fewer


@given(m=st.floats(1e-6, 1e6), bits=st.integers(2, 16))
def test_exponent_for_max_is_smallest_without_saturation(m, bits):
    e = exponent_for_max(m, bits)
    hi = (1 << (bits - 1)) - 1
    assert m / 2.0**e <= hi < m / 2.0 ** (e - 1)


def test_bad_widths_are_named():
    with pytest.raises(ConfigError, match="bit width 1"):
        int_range(1)


def test_quantize_converts_in_blocks_with_bounded_temporaries():
    """The float64 temporaries of a whole array were ~5x its int64 result (a 1 GiB IDX
    file of 8-bit pixels took 24 GB in train-board); now a few blocks' worth."""
    import tracemalloc

    from ttforge.ir.arith import quantize

    x = np.random.default_rng(0).standard_normal(1 << 23).astype(np.float32) * 100
    tracemalloc.start()
    try:
        out = quantize(x, 8, 0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2.5 * out.nbytes
    assert np.array_equal(out, np.clip(np.floor(x.astype(np.float64) + 0.5), -128, 127).astype(np.int64))


# -- rshift_round over the whole int64 range: exact or refused, never wrapped ------------
def _exact_shift(a: int, s: int) -> int:
    return math.floor(Fraction(a, 2**s) + Fraction(1, 2)) if s > 0 else a * 2 ** (-s)


@given(a=st.integers(-(2**63), 2**63 - 1), s=st.integers(-70, 200))
def test_rshift_round_is_exact_or_refused_on_all_int64(a, s):
    exact = _exact_shift(a, s)
    if -(2**63) <= exact < 2**63:
        assert int(rshift_round(np.array([a]), s)[0]) == exact
    else:
        with pytest.raises(DataError, match="s must be at least"):
            rshift_round(np.array([a]), s)


@pytest.mark.parametrize("a, s, want", [
    (2**62, 63, 1), (2**63 - 1, 1, 2**62), (-(2**63), 1, -(2**62)), (5, 64, 0), (5, np.int64(64), 0),
    (-(2**63), 64, 0), (-(2**63), 63, -1), (5, 10**30, 0), (0, -100, 0), (3, -5, 96),
    (-(2**62), -1, -(2**63)), (2**62 - 1, -1, 2**63 - 2),
])
def test_rshift_round_edges(a, s, want):
    assert rshift_round(np.array([a]), s).tolist() == [want]


@pytest.mark.parametrize("a, s, err, match", [
    ([2**62], -1, DataError, r"s must be at least 0"),
    ([1], -64, DataError, r"s must be at least -62"),
    ([2**70], 1, DataError, "int64"),
    (np.array([2**64 - 1], dtype=np.uint64), 1, DataError, "int64"),
    ([2.7], 1, DataError, "float64"),
    (["7"], 1, DataError, "integers"),
    ([5], 1.5, ConfigError, "s=1.5 must be an integer"),
    ([5], True, ConfigError, "must be an integer"),
])
def test_rshift_round_refuses_what_it_cannot_compute(a, s, err, match):
    with pytest.raises(err, match=match):
        rshift_round(a, s)


# -- the other primitives on bad arguments: a ttforge error naming the argument -----------
@pytest.mark.parametrize("call, match", [
    (lambda: acc_bits_needed(1, 10**12, 8), r"w_bits=1000000000000 must be an integer in 2\.\.32"),
    (lambda: acc_bits_needed(1, 8, 1), r"x_bits=1 must be"),
    (lambda: acc_bits_needed(-1, 8, 8), r"k=-1 must be >= 0"),
    (lambda: exponent_for_max(5e-324, 8), r"needs exponent -10\d\d, outside -1024\.\.1024"),
    (lambda: exponent_for_max(10**400, 8), r"not a finite float64"),
    (lambda: exponent_for_max("5", 8), r"max_abs='5' must be a real number"),
    (lambda: quantize(np.array([1.0]), 8, 1.5), r"exp=1\.5 must be an integer"),
    (lambda: quantize(np.array([1j]), 8, 0), r"complex128 values; give real numbers"),
    (lambda: quantize(np.array(["a"]), 8, 0), r"<U1 values; give real numbers"),
])
def test_primitives_refuse_bad_arguments_in_one_line(call, match):
    from ttforge.errors import UserError

    with pytest.raises(UserError, match=match):
        call()


def test_quantize_is_exact_for_any_integer_exponent():
    import warnings

    x = np.array([1.0, -1.0, 0.0, 5e-324, -1e308])
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # no numpy RuntimeWarning either
        assert quantize(x, 8, -2000).tolist() == [127, -128, 0, 127, -128]
        assert quantize(x, 8, -10**20).tolist() == [127, -128, 0, 127, -128]
        assert quantize(x, 8, 10**20).tolist() == [0, 0, 0, 0, 0]
        assert quantize(x, 8, 2000).tolist() == [0, 0, 0, 0, 0]
    assert exponent_for_max(1e-300, 8) == -1003


def test_rshift_round_of_an_empty_array_by_any_shift_is_empty():
    """A shift past int64 on no values raised a builtin OverflowError."""
    from ttforge.ir import rshift_round

    for s in (-10**30, 10**30, 0, -3):
        assert rshift_round(np.zeros(0, dtype=np.int64), s).shape == (0,)
    assert np.array_equal(rshift_round(np.array([5, -3]), 0), [5, -3])
