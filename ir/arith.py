"""The integer primitives of ``docs/arithmetic.md``, on numpy ``int64`` arrays.

Every other model of the arithmetic (fake-quant, the executor, the RTL) must agree with
these functions bit for bit; tests check them against exact rational arithmetic.
"""

from __future__ import annotations

import math

import numpy as np

from ttforge.errors import ConfigError

__all__ = [
    "ARITHMETIC_SPEC_VERSION",
    "ROUNDING",
    "ROUNDING_ALIASES",
    "int_range",
    "saturate",
    "rshift_round",
    "quantize",
    "acc_bits_needed",
    "exponent_for_max",
]

#: Version of docs/arithmetic.md these primitives implement (artifacts record it).
ARITHMETIC_SPEC_VERSION = 1

#: Rounding mode: ``floor(v + 1/2)``, ties toward plus infinity. In QONNX's rounding
#: table this is ``FLOOR`` after adding one half (how the QONNX export writes it); the
#: table's own ``HALF_UP`` rounds ties away from zero and differs on negative ties.
ROUNDING = "FLOOR_PLUS_HALF"
#: Earlier manifests named the same rule ``HALF_UP``; readers accept it as an alias.
ROUNDING_ALIASES = ("HALF_UP",)


def int_range(bits: int, narrow: bool = False) -> tuple[int, int]:
    """``(lo, hi)`` of a signed two's complement width; ``narrow`` drops ``-2^(b-1)``."""
    if not isinstance(bits, (int, np.integer)) or bits < 2 or bits > 32:
        raise ConfigError(f"bit width {bits!r} must be an integer in 2..32")
    hi = (1 << (bits - 1)) - 1
    return (-hi if narrow else -hi - 1), hi


def saturate(v: np.ndarray, bits: int, narrow: bool = False) -> np.ndarray:
    """Clamp to the range of ``bits`` (never wrap)."""
    lo, hi = int_range(bits, narrow)
    return np.clip(v, lo, hi)


def rshift_round(a: np.ndarray, s: int) -> np.ndarray:
    """``floor(a / 2^s + 1/2)`` (ties toward plus infinity) for ``s >= 1``; ``a << -s`` for ``s <= 0``."""
    a = np.asarray(a, dtype=np.int64)
    if s <= 0:
        return a << np.int64(-s)
    return (a + np.int64(1 << (s - 1))) >> np.int64(s)


def quantize(x: np.ndarray, bits: int, exp: int, narrow: bool = False) -> np.ndarray:
    """Real values to integers of ``(bits, exp)``: ``sat(floor(x / 2^exp + 1/2))``."""
    scaled = np.floor(np.ldexp(np.asarray(x, dtype=np.float64), -int(exp)) + 0.5)
    lo, hi = int_range(bits, narrow)
    return np.clip(scaled, lo, hi).astype(np.int64)


def acc_bits_needed(k: int, w_bits: int, x_bits: int, bias_max: int = 0) -> int:
    """Smallest signed width that holds any sum of ``k`` products (plus a bias).

    Weights are narrow-range (``|w| <= 2^(w_bits-1) - 1``), inputs full-range
    (``|x| <= 2^(x_bits-1)``).
    """
    bound = k * ((1 << (w_bits - 1)) - 1) * (1 << (x_bits - 1)) + abs(int(bias_max))
    return max(2, bound.bit_length() + 1)


def exponent_for_max(max_abs: float, bits: int, narrow: bool = False) -> int:
    """Smallest exponent at which ``max_abs`` does not saturate (max-based calibration)."""
    _, hi = int_range(bits, narrow)
    if not max_abs > 0 or not math.isfinite(max_abs):
        return 0 if max_abs == 0 else _bad_max(max_abs)
    e = math.ceil(math.log2(max_abs / hi))
    # guard against log2 rounding at exact powers of two
    while max_abs / 2.0**e > hi:
        e += 1
    while max_abs / 2.0 ** (e - 1) <= hi:
        e -= 1
    return e


def _bad_max(max_abs: float) -> int:
    raise ConfigError(f"calibration saw a non-finite value ({max_abs}); check the model and data")
