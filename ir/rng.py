"""The stochastic-rounding generator and the integer weight update (``docs/arithmetic.md``).

:class:`Xorshift32` is Marsaglia's xorshift32 (shifts 13/17/5 on 32-bit unsigned words),
vectorized in numpy and bit-exact to the scalar definition; :func:`stochastic_rshift`
is the stochastic right shift ``(v + (word & (2^s - 1))) >> s`` that consumes one word
per element in row-major order; :func:`integer_update` is one update
``w <- sat(w - round_s(v))`` of an integer tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ttforge.errors import ConfigError
from ttforge.ir.arith import _int64_array, _lshift_exact, quantize_wide, rshift_round

__all__ = [
    "Xorshift32",
    "xorshift32_step",
    "stochastic_rshift",
    "derive_sr_seed",
    "integer_update",
    "UpdateStats",
    "Rounding",
]

Rounding = Literal["stochastic", "nearest"]
_M32 = 0xFFFFFFFF


# ---------------------------------------------------------------------------------------
# the generator
# ---------------------------------------------------------------------------------------
def xorshift32_step(x: int) -> int:
    """One xorshift32 state update (the scalar definition every other form must equal)."""
    x ^= (x << 13) & _M32
    x ^= x >> 17
    x ^= (x << 5) & _M32
    return x


def _apply_cols(cols: list[int], x: int) -> int:
    """A GF(2)-linear map on 32-bit words, given by its images of the 32 unit vectors."""
    out = 0
    j = 0
    while x:
        if x & 1:
            out ^= cols[j]
        x >>= 1
        j += 1
    return out


_BITS8 = ((np.arange(256)[:, None] >> np.arange(8)[None, :]) & 1).astype(bool)
_JUMP_COLS: list[list[int]] = []     # level k: columns of M^(2^k)
_JUMP_TABLES: list[np.ndarray] = []  # level k: (4, 256) uint32 byte tables of M^(2^k)


def _jump_table(k: int) -> np.ndarray:
    """Byte tables of ``M^(2^k)``, where ``M`` is one xorshift32 step (linear over GF(2))."""
    while len(_JUMP_TABLES) <= k:
        if not _JUMP_COLS:
            cols = [xorshift32_step(1 << j) for j in range(32)]
        else:
            prev = _JUMP_COLS[-1]
            cols = [_apply_cols(prev, c) for c in prev]  # M^(2^(k+1)) = M^(2^k) o M^(2^k)
        _JUMP_COLS.append(cols)
        c = np.array(cols, dtype=np.uint32).reshape(4, 8)
        tables = np.stack([np.bitwise_xor.reduce(np.where(_BITS8, c[b][None, :], np.uint32(0)), axis=1)
                           for b in range(4)]).astype(np.uint32)
        _JUMP_TABLES.append(tables)
    return _JUMP_TABLES[k]


def _apply_table(t: np.ndarray, w: np.ndarray) -> np.ndarray:
    return (t[0][w & 0xFF] ^ t[1][(w >> 8) & 0xFF] ^ t[2][(w >> 16) & 0xFF] ^ t[3][w >> 24])


class Xorshift32:
    """xorshift32 (``x ^= x << 13; x ^= x >> 17; x ^= x << 5`` on 32-bit unsigned words).

    The state starts at ``seed`` (an integer in ``1 .. 2^32 - 1``); every draw applies
    one update and returns the new state, so the first word of seed 1 is 270369. The
    period is ``2^32 - 1`` (every non-zero word once). :meth:`words` produces a block of
    the stream vectorized: the first word by the scalar update, then, doubling the block
    each time, words ``i + 2^k`` as ``M^(2^k)`` applied to words ``i`` (``M`` being the
    update, a linear map over GF(2), applied through four 256-entry byte tables). It
    equals the scalar definition word for word; the tests check that.
    """

    def __init__(self, seed: int) -> None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 1 <= int(seed) <= _M32:
            raise ConfigError(f"xorshift32 seed {seed!r} must be an integer in 1..{_M32} (zero is a "
                              f"fixed point of the generator)")
        self._state = int(seed)
        self.drawn = 0  #: words drawn so far

    @property
    def state(self) -> int:
        """The last word drawn (the seed before any draw)."""
        return self._state

    def next_word(self) -> int:
        self._state = xorshift32_step(self._state)
        self.drawn += 1
        return self._state

    def words(self, n: int) -> np.ndarray:
        """The next ``n`` words of the stream as ``uint32``."""
        n = int(n)
        if n < 0:
            raise ConfigError(f"cannot draw {n} words")
        out = np.empty(n, dtype=np.uint32)
        if n == 0:
            return out
        if n <= 64:
            x = self._state
            for i in range(n):
                x = xorshift32_step(x)
                out[i] = x
        else:
            out[0] = xorshift32_step(self._state)
            filled, k = 1, 0
            while filled < n:
                take = min(filled, n - filled)
                out[filled:filled + take] = _apply_table(_jump_table(k), out[:take])
                filled += take
                k += 1
        self._state = int(out[-1])
        self.drawn += n
        return out

    def draw(self, shape: tuple[int, ...]) -> np.ndarray:
        """Words for an array of ``shape``, one per element in row-major (C) order."""
        return self.words(math.prod(shape)).reshape(shape)


def stochastic_rshift(v: np.ndarray, s: int, gen: Xorshift32) -> np.ndarray:
    """Stochastic ``v / 2^s``: ``(v + (word & (2^s - 1))) >> s`` per element (``int64``).

    Draws one word per element of ``v`` in row-major order, whatever ``s``. For
    ``1 <= s <= 32`` the result is ``floor(v / 2^s)`` or that plus one, the latter with
    probability ``frac(v / 2^s)`` (exactly ``(v mod 2^s) / 2^s`` over the generator's
    period, up to the one missing zero word); multiples of ``2^s`` are exact. For
    ``s <= 0`` there is nothing to round: the result is ``v << -s`` and the words are
    drawn and discarded, so the stream position never depends on ``s``.

    ``v`` takes what :func:`~.arith.rshift_round` takes (integers within int64; a float
    is a one-line DataError, never truncated), and a left shift that would leave int64
    is its one-line DataError (values never wrap); a refused call draws no word. The
    sum is never formed: ``v + word`` passed 2^63 for ``v`` near the top of int64.
    """
    if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s > 32:
        raise ConfigError(f"stochastic shift s={s!r} must be an integer <= 32 (a word has 32 bits)")
    s = int(s)
    v = _int64_array(v, "stochastic_rshift")
    if s <= 0:
        out = _lshift_exact(v, s, "stochastic_rshift")
        gen.draw(v.shape)
        return out
    words = gen.draw(v.shape)
    mask = np.int64((1 << s) - 1)
    low = (words & np.uint32((1 << s) - 1 if s < 32 else _M32)).astype(np.int64)
    # floor((v + low) / 2^s) as (v >> s) + floor(((v mod 2^s) + low) / 2^s): the second sum
    # is below 2^33
    return (v >> np.int64(s)) + (((v & mask) + low) >> np.int64(s))


def derive_sr_seed(seed: int) -> int:
    """The xorshift32 seed of a training run with ``seed`` when none is given: the first
    32-bit word of ``numpy.random.SeedSequence([seed, 2])``, or ``0x9E3779B9`` if zero."""
    word = int(np.random.SeedSequence([int(seed), 2]).generate_state(1, dtype=np.uint32)[0])
    return word or 0x9E3779B9


# ---------------------------------------------------------------------------------------
# one integer update
# ---------------------------------------------------------------------------------------
@dataclass
class UpdateStats:
    """Counts over the updated elements (summed over tensors and steps).

    ``elements``: updated elements; ``nonzero``: elements with ``v != 0``;
    ``sub_half``: elements with ``0 < |v| < 2^(s-1)`` (below half an LSB: round-to-nearest
    drops them); ``applied``: elements whose integer changed; ``saturated``: elements the
    clamp changed (saturation events); ``update_lsb_abs``: sum of ``|v| / 2^s``.
    """

    elements: int = 0
    nonzero: int = 0
    sub_half: int = 0
    applied: int = 0
    saturated: int = 0
    update_lsb_abs: float = 0.0

    def add(self, other: "UpdateStats") -> None:
        for f in ("elements", "nonzero", "sub_half", "applied", "saturated", "update_lsb_abs"):
            setattr(self, f, getattr(self, f) + getattr(other, f))

    def to_dict(self) -> dict[str, Any]:
        d = {f: getattr(self, f) for f in ("elements", "nonzero", "sub_half", "applied", "saturated")}
        n = max(self.elements, 1)
        d.update(applied_fraction=self.applied / n, sub_half_fraction=self.sub_half / n,
                 saturated_fraction=self.saturated / n, mean_update_lsb=self.update_lsb_abs / n)
        return d


def integer_update(w: np.ndarray, update: np.ndarray, exp: int, lo: int, hi: int, frac_bits: int,
                   update_bits: int, rounding: Rounding, gen: Xorshift32 | None
                   ) -> tuple[np.ndarray, UpdateStats]:
    """``w <- sat(w - round_s(v))`` with ``v = sat_u(round_half_up(update / 2^(exp - s)))``.

    ``update`` is the real-valued step ``lr * grad`` (float64), ``exp`` the exponent of
    ``w``, ``s = frac_bits``, ``u = update_bits`` (full range); the result is clamped to
    ``[lo, hi]``. ``rounding`` is ``"stochastic"`` (:func:`stochastic_rshift`, which draws
    one word of ``gen`` per element of ``w`` in row-major order) or ``"nearest"``
    (:func:`~.arith.rshift_round`, FLOOR_PLUS_HALF, no draws).
    """
    v = quantize_wide(update, update_bits, exp - frac_bits)   # up to 48 bits (LowPrecisionConfig)
    if rounding == "stochastic":
        if gen is None:
            raise ConfigError("stochastic rounding needs a generator")
        d = stochastic_rshift(v, frac_bits, gen)
    elif rounding == "nearest":
        d = rshift_round(v, frac_bits)
    else:
        raise ConfigError(f"rounding={rounding!r} must be 'stochastic' or 'nearest'")
    raw = w - d
    new = np.clip(raw, lo, hi)
    absv = np.abs(v)
    stats = UpdateStats(
        elements=int(w.size),
        nonzero=int(np.count_nonzero(v)),
        sub_half=int(np.count_nonzero((absv > 0) & (absv < (1 << (frac_bits - 1))))),
        applied=int(np.count_nonzero(new != w)),
        saturated=int(np.count_nonzero(new != raw)),
        update_lsb_abs=float(absv.sum()) / 2.0**frac_bits,
    )
    return new, stats
