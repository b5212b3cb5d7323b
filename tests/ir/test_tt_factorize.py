"""``factorize`` on sizes of every kind: the same splits as an exhaustive search over
every integer (the rule as documented), and bounded time on any size it accepts
(prime, semiprime, highly composite, up to 2^62 - 1), where a search over every integer
below the size was killed after 60 s at 10^12."""

import math
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ttforge.errors import ShapeError
from ttforge.ir import tt
from ttforge.ir.tt import MAX_FACTOR_SIZE, factorize


def _exhaustive_split(n: int, d: int) -> tuple[int, ...]:
    """Every descending split of ``n`` into ``d`` factors, the least (sum, larger
    tuple first) kept: the documented rule, by brute force."""
    best = None

    def rec(rest, parts, cap, acc):
        nonlocal best
        if parts == 1:
            if rest <= cap:
                cand = acc + (rest,)
                if best is None or (sum(cand), [-c for c in cand]) < (sum(best), [-c for c in best]):
                    best = cand
            return
        for f in range(min(cap, rest), 0, -1):
            if rest % f == 0:
                rec(rest // f, parts - 1, f, acc + (f,))

    rec(n, d, n, ())
    return best


def _exhaustive_factorize(n: int, d: int, max_padding: float = 0.25) -> tuple[int, ...]:
    for size in range(n, math.floor(n * (1 + max_padding)) + 1):
        split = _exhaustive_split(size, d)
        if split[0] <= 2 * math.ceil(round(size ** (1.0 / d), 9)):
            return split
    return _exhaustive_split(n, d)


@pytest.mark.parametrize("d", [1, 2, 3, 4, 5, 6])
def test_every_small_size_splits_as_the_exhaustive_search(d):
    for n in range(1, 400 if d < 5 else 160):
        assert factorize(n, d) == _exhaustive_factorize(n, d), (n, d)


@given(n=st.integers(400, 40_000), d=st.integers(1, 8), pad=st.sampled_from([0.0, 0.1, 0.25]))
@settings(max_examples=60, deadline=None)
def test_random_sizes_split_as_the_exhaustive_search(n, d, pad):
    assert factorize(n, d, pad) == _exhaustive_factorize(n, d, pad)


@given(n=st.integers(2, 1 << 40))
@settings(max_examples=200, deadline=None)
def test_divisors_are_every_divisor(n):
    divs = tt._divisors(n)
    assert divs == sorted(set(divs)) and divs[0] == 1 and divs[-1] == n
    assert all(n % q == 0 for q in divs)
    assert math.prod(p ** e for p, e in tt._prime_factors(n).items()) == n
    assert all(tt._is_prime(p) for p in tt._prime_factors(n))
    if n < 5000:
        assert divs == [q for q in range(1, n + 1) if n % q == 0]


@pytest.mark.parametrize("n, d", [
    (10 ** 12, 4), (2 ** 61 - 1, 4), (999_983 * 999_979, 3), (MAX_FACTOR_SIZE, 12),
    (10 ** 18 + 9, 6), (10 ** 18 + 9, 12), (897_612_484_786_617_600, 12),
    (897_612_484_786_617_600, 3), (720_720 ** 2, 8), (1_037_441, 12),
])
def test_any_accepted_size_splits_in_bounded_time(n, d):
    """Before: 10^12 into 4 modes and 2^61 - 1 ran past 60 s (every integer below the
    size was tried as a factor); the highly composite 897,612,484,786,617,600 into 3
    took 108 s and into 6, 8, 12 past 120 s (the split search had no bound)."""
    t0 = time.perf_counter()
    modes = factorize(n, d)
    assert time.perf_counter() - t0 < 5
    assert len(modes) == d and list(modes) == sorted(modes, reverse=True)
    assert n <= math.prod(modes) <= n * 1.25


def test_the_rule_holds_on_large_sizes():
    """A large size splits into the balanced factors of the smallest good padded size."""
    assert factorize(10 ** 12, 4) == (1000, 1000, 1000, 1000)
    assert factorize(2 ** 62 - 1, 2) == (2 ** 31 + 1, 2 ** 31 - 1)  # no padding needed
    modes = factorize(10 ** 18 + 9, 6)  # a prime: the next size with a balanced split
    assert max(modes) <= 2 * tt._ceil_root(math.prod(modes), 6)


def test_sizes_above_the_limit_are_one_line_errors():
    with pytest.raises(ShapeError, match="too large to factor.*give the modes explicitly"):
        factorize(MAX_FACTOR_SIZE + 1, 4)


@given(n=st.integers(1, 1 << 62), k=st.integers(1, 12))
@settings(max_examples=300, deadline=None)
def test_ceil_root_is_the_ceiling_of_the_root(n, k):
    r = tt._ceil_root(n, k)
    if n >= 1 << 52:  # exact integers; below, the float rule kept as it always was
        assert r ** k >= n and (r - 1) ** k < n
    else:
        assert r == math.ceil(round(n ** (1.0 / k), 9))
