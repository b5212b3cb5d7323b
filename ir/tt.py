"""Tensor-train (TT) matrix shapes: modes, ranks and their factorization.

A weight ``W`` of shape ``(M, N)`` (``out x in``, as in :class:`torch.nn.Linear`) with
``M = prod(out_modes)`` and ``N = prod(in_modes)`` is held as ``d`` cores; core ``k``
has shape ``(r[k], m[k], n[k], r[k+1])`` with ``r[0] = r[d] = 1``, and

    W[(i_0..i_{d-1}), (j_0..j_{d-1})] = G_0[:, i_0, j_0, :] @ ... @ G_{d-1}[:, i_{d-1}, j_{d-1}, :]

where the multi-indices are row-major (``i_0`` is the most significant digit).
"""

from __future__ import annotations

import bisect
import functools
import math
import numbers
import operator
from dataclasses import dataclass
from typing import Iterable, Sequence

from ttforge.errors import LimitError, ShapeError, show

__all__ = ["TTShape", "factorize", "max_ranks", "resolve_ranks", "prod"]


def prod(xs: Sequence[int]) -> int:
    """The product of ``xs`` (1 for none), an ``int``."""
    # a loop, not math.prod over a generator: torch.compile traces this (a layer's
    # sizes in its forward) and breaks the graph at a generator passed to a call
    p = 1
    for x in xs:
        p *= int(x)
    return p


def max_ranks(out_modes: Sequence[int], in_modes: Sequence[int]) -> tuple[int, ...]:
    """Largest useful rank of every bond, boundaries included (``r[0] = r[d] = 1``).

    Bond ``k`` (between cores ``k-1`` and ``k``) can carry at most
    ``min(prod(m[:k] * n[:k]), prod(m[k:] * n[k:]))`` independent directions.
    """
    sizes = [int(m) * int(n) for m, n in zip(out_modes, in_modes)]
    d = len(sizes)
    return tuple(
        1 if k in (0, d) else min(prod(sizes[:k]), prod(sizes[k:])) for k in range(d + 1)
    )


def integers(name: str, values: object) -> tuple[int, ...]:
    """``values`` as a tuple of Python ints (numpy integers too), or a one-line
    :class:`~ttforge.errors.ShapeError` naming ``name``: ``int()`` would take ``"3"``,
    ``True`` and ``8.5`` (as 8) without a word."""
    try:
        out = tuple(operator.index(v) for v in values)  # type: ignore[union-attr]
        if not any(isinstance(v, bool) for v in values):  # type: ignore[union-attr]
            return out
    except TypeError:
        pass
    raise ShapeError(f"{name}={show(values)} must be a sequence of integers")


def resolve_ranks(
    ranks: int | Sequence[int], out_modes: Sequence[int], in_modes: Sequence[int]
) -> tuple[int, ...]:
    """Turn a user's rank request into the full bond tuple ``(1, r1, ..., r_{d-1}, 1)``.

    An ``int`` means "at most this rank": each bond is clipped to its maximal rank.
    A sequence is taken literally (``d - 1`` internal ranks, or ``d + 1`` with the
    boundary ones) and a rank above the maximal TT rank is an error.
    """
    d = len(out_modes)
    limit = max_ranks(out_modes, in_modes)
    if isinstance(ranks, numbers.Integral) and not isinstance(ranks, bool):
        ranks = int(ranks)
        if ranks < 1:
            raise ShapeError(f"ranks={ranks} must be >= 1")
        return tuple(min(ranks, lim) for lim in limit)
    if isinstance(ranks, (str, bytes)) or not isinstance(ranks, Iterable):
        raise ShapeError(f"ranks={show(ranks)} must be an int (an upper bound) or a sequence "
                         f"of ints")
    ranks = integers("ranks", ranks)
    if len(ranks) == d - 1:
        ranks = (1, *ranks, 1)
    if len(ranks) != d + 1:
        raise ShapeError(
            f"ranks has {len(ranks)} entries; give {d - 1} internal ranks for {d} cores "
            f"(or one int as an upper bound)"
        )
    if ranks[0] != 1 or ranks[-1] != 1:
        raise ShapeError(f"ranks={list(ranks)}: the boundary ranks r[0] and r[{d}] must be 1")
    for k, (r, lim) in enumerate(zip(ranks, limit)):
        if r < 1:
            raise ShapeError(f"ranks[{k}]={show(r)} must be >= 1")
        if r > lim:
            raise ShapeError(
                f"ranks[{k}]={show(r)} exceeds the maximal TT rank {lim} of that bond for "
                f"out_modes={list(out_modes)}, in_modes={list(in_modes)}; use ranks[{k}] <= {lim}"
            )
    return ranks


@dataclass(frozen=True)
class TTShape:
    """Modes and ranks of a TT-matrix; validated on construction.

    Parameters
    ----------
    out_modes, in_modes : tuple of int
        ``m[k]`` and ``n[k]``; their products are the (padded) out and in sizes.
    ranks : tuple of int
        All ``d + 1`` bond ranks, ``ranks[0] == ranks[d] == 1``.
    """

    out_modes: tuple[int, ...]
    in_modes: tuple[int, ...]
    ranks: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "out_modes", integers("out_modes", self.out_modes))
        object.__setattr__(self, "in_modes", integers("in_modes", self.in_modes))
        if len(self.out_modes) != len(self.in_modes) or not self.out_modes:
            raise ShapeError(
                f"out_modes {list(self.out_modes)} and in_modes {list(self.in_modes)} must be "
                f"non-empty and of equal length (one pair per core)"
            )
        for name, modes in (("out_modes", self.out_modes), ("in_modes", self.in_modes)):
            if any(m < 1 for m in modes):
                raise ShapeError(f"{name}={show(modes)}: every mode must be >= 1")
            # not the product itself: 12 modes of 400 digits make one Python cannot print
            if prod(modes) > MAX_FACTOR_SIZE:
                raise LimitError(f"{name}={show(modes)} multiply to more than 2^62 - 1 "
                                 f"({MAX_FACTOR_SIZE:,}), ttforge's limit of a TT layer's size; "
                                 f"give smaller modes")
        object.__setattr__(self, "ranks", resolve_ranks(self.ranks, self.out_modes, self.in_modes))

    @property
    def d(self) -> int:
        """Number of cores."""
        return len(self.out_modes)

    @property
    def out_size(self) -> int:
        return prod(self.out_modes)

    @property
    def in_size(self) -> int:
        return prod(self.in_modes)

    @property
    def core_shapes(self) -> tuple[tuple[int, int, int, int], ...]:
        r, m, n = self.ranks, self.out_modes, self.in_modes
        return tuple((r[k], m[k], n[k], r[k + 1]) for k in range(self.d))

    @property
    def n_params(self) -> int:
        """Number of core entries."""
        return sum(prod(s) for s in self.core_shapes)

    def with_ranks(self, ranks: Sequence[int]) -> "TTShape":
        return TTShape(self.out_modes, self.in_modes, tuple(ranks))

    @classmethod
    def of_cores(cls, cores: Sequence) -> "TTShape":
        """The shape of a list of 4-way cores (tensors or arrays; checks that the bonds chain)."""
        if len(cores) == 0:
            raise ShapeError("a TT-matrix needs at least one core (got none)")
        for k, g in enumerate(cores):
            if len(g.shape) != 4:
                raise ShapeError(f"core {k} has {len(g.shape)} axes; TT-matrix cores have 4 (r, m, n, r')")
            if k and cores[k - 1].shape[3] != g.shape[0]:
                raise ShapeError(
                    f"core {k - 1} ends with rank {cores[k - 1].shape[3]} but core {k} starts "
                    f"with rank {g.shape[0]}"
                )
        ranks = [int(cores[0].shape[0])] + [int(g.shape[3]) for g in cores]
        return cls(
            tuple(int(g.shape[1]) for g in cores), tuple(int(g.shape[2]) for g in cores), tuple(ranks)
        )


#: Largest size :func:`factorize` splits: its divisors come from a factorization into
#: primes (trial division, then Pollard's rho), fast up to 64-bit sizes.
MAX_FACTOR_SIZE = (1 << 62) - 1

#: Padded sizes :func:`factorize` tries at most before it splits the size unpadded:
#: far more than any size up to 2^20 needs (at most 11,325 over 20,000 random sizes and
#: 1 to 12 modes), and a bound on the search where good splits are rare (a size near
#: 10^18 split into 12 modes needs 64-smooth sizes, one in ~10^10).
MAX_PAD_TRIES = 1 << 17

_SMALL_PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)


def _is_prime(n: int) -> bool:
    """Miller-Rabin with the first twelve primes as bases: exact below 3.3 * 10^24."""
    if n < 2:
        return False
    for p in _SMALL_PRIMES:
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for a in _SMALL_PRIMES:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def _rho(n: int) -> int:
    """A non-trivial factor of the odd composite ``n`` (Pollard's rho, Brent's cycle
    search, deterministic seeds)."""
    for c in range(1, n):
        y, m, g, r, q = 2, 128, 1, 1, 1
        x = ys = y
        while g == 1:
            x = y
            for _ in range(r):
                y = (y * y + c) % n
            k = 0
            while k < r and g == 1:
                ys = y
                for _ in range(min(m, r - k)):
                    y = (y * y + c) % n
                    q = q * abs(x - y) % n
                g = math.gcd(q, n)
                k += m
            r *= 2
        if g == n:  # the batch overshot: step singly from its start
            g = 1
            while g == 1:
                ys = (ys * ys + c) % n
                g = math.gcd(abs(x - ys), n)
        if g != n:
            return g
    raise AssertionError(f"no factor of {n} found")  # unreachable for composites


@functools.lru_cache(maxsize=256)
def _prime_factors(n: int) -> dict[int, int]:
    """``{prime: exponent}`` of ``n >= 1`` (cached: :func:`factorize` asks for a padded
    size's primes in its smoothness test and again for its divisors; do not modify)."""
    out: dict[int, int] = {}
    for p in range(2, 1000):
        if p * p > n:
            break
        while n % p == 0:
            out[p] = out.get(p, 0) + 1
            n //= p
    stack = [n] if n > 1 else []
    while stack:
        m = stack.pop()
        if _is_prime(m):
            out[m] = out.get(m, 0) + 1
        else:
            f = _rho(m)
            stack += [f, m // f]
    return out


def _divisors(n: int) -> list[int]:
    """Every divisor of ``n``, ascending."""
    divs = [1]
    for p, e in _prime_factors(n).items():
        divs = [q * p ** k for q in divs for k in range(e + 1)]
    return sorted(divs)


@functools.lru_cache(maxsize=64)
def _primes_upto(n: int) -> tuple[int, ...]:
    """The primes ``<= n`` (a sieve)."""
    sieve = bytearray([1]) * (n + 1)
    sieve[:2] = b"\x00\x00"[: n + 1]
    for p in range(2, math.isqrt(n) + 1):
        if sieve[p]:
            sieve[p * p::p] = bytearray(len(range(p * p, n + 1, p)))
    return tuple(i for i, v in enumerate(sieve) if v)


def _smooth(n: int, bound: int) -> bool:
    """Whether every prime factor of ``n`` is at most ``bound``: a split of ``n`` whose
    largest factor is at most ``bound`` needs it (the cheap test before the search)."""
    if n <= bound:
        return True
    if bound < (1 << 16):
        for p in _primes_upto(bound):
            while n % p == 0:
                n //= p
        return n == 1
    return max(_prime_factors(n)) <= bound


def _best_split(n: int, d: int) -> tuple[int, ...]:
    """Factors of ``n`` into ``d`` factors >= 1 with the smallest sum (most balanced).

    Ties go to the lexicographically largest descending tuple; output is descending.
    The candidates of each factor are the divisors of ``n`` (a search over every
    integer up to ``n`` was killed after 60 s at ``n = 10^12``).
    """
    best: tuple[int, ...] | None = None
    best_key: tuple | None = None
    divs = _divisors(n)

    def rec(rest: int, parts: int, cap: int, acc: tuple[int, ...], total: int) -> None:
        nonlocal best, best_key
        if parts == 1:
            if rest <= cap:
                cand = acc + (rest,)
                key = (total + rest, tuple(-c for c in cand))
                if best_key is None or key < best_key:
                    best, best_key = cand, key
            return
        # the remaining factors sum to at least parts * rest ** (1/parts) (AM-GM): a
        # branch whose bound exceeds the best sum cannot win, not even a tie (the bound
        # shrunk by 1e-9 so that float rounding never prunes a tie)
        if best_key is not None and total + parts * rest ** (1.0 / parts) * (1 - 1e-9) > best_key[0]:
            return
        # the largest remaining factor is at least ceil(rest ** (1/parts)); the most
        # balanced candidates first, so that the bound prunes early
        lo = max(1, _ceil_root(rest, parts))
        top = bisect.bisect_right(divs, min(cap, rest))
        for f in divs[bisect.bisect_left(divs, lo):top]:
            if rest % f == 0:
                rec(rest // f, parts - 1, f, acc + (f,), total + f)

    rec(n, d, n, (), 0)
    assert best is not None
    return best


def _ceil_root(n: int, k: int) -> int:
    """``ceil(n ** (1/k))`` as the float rounding of the search has always taken it
    (rounded to nine decimals first, so that 64 ** (1/3) is 4), for any size."""
    if n < (1 << 52):
        return math.ceil(round(n ** (1.0 / k), 9))
    r = int(round(n ** (1.0 / k)))  # exact integer root near the float's
    while r ** k < n:
        r += 1
    while r > 1 and (r - 1) ** k >= n:
        r -= 1
    return r


def factorize(n: int, d: int, max_padding: float = 0.25) -> tuple[int, ...]:
    """Split a size into ``d`` modes, padding it up where it factors badly.

    The rule: a split of ``n'`` is *good* when its largest mode is at most twice
    ``ceil(n' ** (1/d))``. The result is the split with the smallest sum of modes (a TT
    core holds ``r^2 * m * n`` entries, so the sum tracks the parameter count; ties go
    to the more balanced split) of the smallest ``n' in [n, n * (1 + max_padding)]``
    that has a good split (at most :data:`MAX_PAD_TRIES` sizes are tried). If none has,
    ``n`` is split without padding (modes of 1 are allowed). Modes come in descending
    order; their product is ``n'`` and the caller zero-pads from ``n`` to ``n'``. Sizes
    up to :data:`MAX_FACTOR_SIZE` are split in well under a second.

    Examples: ``factorize(784, 4) == (7, 7, 4, 4)``, ``factorize(10, 2) == (5, 2)``,
    ``factorize(13, 2) == (7, 2)`` (padded to 14), ``factorize(97, 2) == (14, 7)``
    (padded to 98).
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ShapeError(f"size {n!r} cannot be factored: it must be a positive integer")
    if not isinstance(d, int) or isinstance(d, bool) or d < 1:
        raise ShapeError(f"number of modes d={d!r} must be a positive integer")
    if max_padding < 0:
        raise ShapeError(f"max_padding={max_padding} must be >= 0")
    if n > MAX_FACTOR_SIZE:
        raise ShapeError(f"size {n} is too large to factor (at most 2^62 - 1); give the modes "
                         f"explicitly")
    last = min(int(math.floor(n * (1 + max_padding))), n + MAX_PAD_TRIES - 1)
    for size in range(n, last + 1):
        bound = 2 * _ceil_root(size, d)
        if _smooth(size, bound):
            split = _best_split(size, d)
            if split[0] <= bound:
                return split
    return _best_split(n, d)
