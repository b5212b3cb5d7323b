"""ir.rng's stochastic shift at the edges of int64: it takes what rshift_round takes,
never wraps, and a refused call draws no word (probe D, F2)."""

import numpy as np
import pytest

from ttforge.errors import DataError
from ttforge.ir.arith import rshift_round
from ttforge.ir.rng import Xorshift32, integer_update, stochastic_rshift

I64 = np.iinfo(np.int64)


def _exact(v: list[int], s: int, words: np.ndarray) -> list[int]:
    """``(v + (word & (2^s - 1))) >> s`` in Python integers (no width)."""
    return [(a + (int(w) & ((1 << s) - 1))) >> s for a, w in zip(v, words)]


@pytest.mark.parametrize("s", [1, 17, 31, 32])
def test_values_at_the_ends_of_int64_do_not_wrap(s):
    """``v + word`` passed 2^63 (2^63 - 1 by 32 gave -2^31)."""
    v = [I64.max, I64.max - 5, I64.min, I64.min + 1, -1, 0, 3 << 40]
    words = Xorshift32(1).draw((len(v),))
    got = stochastic_rshift(np.array(v, dtype=np.int64), s, Xorshift32(1))
    assert np.array_equal(got, np.array(_exact(v, s, words), dtype=np.int64))


def test_a_left_shift_is_exact_and_draws_its_words():
    v = np.array([2 ** 31, -3, -(2 ** 32), 1], dtype=np.int64)
    g = Xorshift32(7)
    assert np.array_equal(stochastic_rshift(v, -30, g), np.array([int(a) << 30 for a in v.tolist()]))
    assert g.drawn == v.size
    assert np.array_equal(stochastic_rshift(np.zeros(3, dtype=np.int64), -200, g), np.zeros(3))


@pytest.mark.parametrize("v, s", [([2 ** 40, 2 ** 62], -30), ([1], -64), ([1], -63), ([-1, 2 ** 33], -31)])
def test_a_left_shift_past_int64_is_rshift_rounds_refusal(v, s):
    """It wrapped or truncated ([2^40, 2^62] by 30 gave [0, 0]; [1] by 64 gave [0])."""
    a = np.array(v, dtype=np.int64)
    with pytest.raises(DataError) as theirs:
        rshift_round(a, s)
    g = Xorshift32(3)
    with pytest.raises(DataError, match=r"^stochastic_rshift: a left shift by \d+ \(s=-\d+\) takes values in "
                                        r"\[-?\d+, \d+\] beyond int64; for them s must be at least -?\d+$") as ours:
        stochastic_rshift(a, s, g)
    assert str(ours.value).split(": ", 1)[1] == str(theirs.value).split(": ", 1)[1].split(" (an acc_bits")[0]
    assert g.drawn == 0


@pytest.mark.parametrize("v", [[2.7], np.array([0.5, 1.0]), np.array(["1"])])
def test_non_integer_values_are_refused_not_truncated(v):
    """[2.7] by 1 gave [1] (a float cast to int64)."""
    g = Xorshift32(3)
    with pytest.raises(DataError, match="^stochastic_rshift: takes integers, got an array of"):
        stochastic_rshift(v, 1, g)
    assert g.drawn == 0


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_an_update_wider_than_32_bits_is_applied(rounding):
    """update_bits 33..48 (LowPrecisionConfig takes them) failed in quantize, "bit width 40
    must be an integer in 2..32"; a 2^38-LSB update (frac_bits 8) moves the weight 2^30."""
    w = np.array([5, -5, 0], dtype=np.int64)
    upd = np.array([2.0 ** 30, -(2.0 ** 30), 2.0 ** 60])   # the last saturates at 40 bits
    gen = Xorshift32(9) if rounding == "stochastic" else None
    new, st = integer_update(w, upd, 0, -(1 << 45), 1 << 45, 8, 40, rounding, gen)
    v = (1 << 39) - 1                        # 2^60 at 40 bits
    if rounding == "nearest":
        last = -((v + 128) >> 8)
    else:
        last = -((v + (int(Xorshift32(9).draw((3,))[2]) & 255)) >> 8)
    assert new.tolist() == [5 - 2 ** 30, -5 + 2 ** 30, last] and abs(last) >= 2 ** 31 - 1
    assert st.saturated == 0 and st.applied == 3
