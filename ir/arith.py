"""The integer primitives of ``docs/arithmetic.md``, on numpy ``int64`` arrays.

Every other model of the arithmetic (fake-quant, the executor, the RTL) must agree with
these functions bit for bit; tests check them against exact rational arithmetic.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ttforge.errors import ConfigError, DataError, show

__all__ = [
    "ARITHMETIC_SPEC_VERSION",
    "MAX_ACC_BITS",
    "BIT_RANGES",
    "shift_range",
    "ROUNDING",
    "ROUNDING_ALIASES",
    "int_range",
    "value_range",
    "saturate",
    "rshift_round",
    "quantize",
    "quantize_wide",
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

#: The widest accumulator the int64 executor computes exactly: every sum fits 48 bits,
#: so the rounding constant and any shift of :func:`shift_range` never overflow int64
#: (and a float64 model of the same sums is exact too).
MAX_ACC_BITS = 48

#: The widths a quantized network may use, ``name: (lo, hi)`` inclusive: core (weight)
#: bits, the input and layer-output bits, the intermediate bits between contraction steps
#: and the accumulator bits. ``ttforge quantize``, QAT, low-precision training and
#: ``ttforge flow`` all check against this one table.
BIT_RANGES = {"w_bits": (2, 8), "act_bits": (2, 16), "inter_bits": (2, 16), "acc_bits": (8, MAX_ACC_BITS)}


def shift_range(acc_bits: int) -> tuple[int, int]:
    """``(lo, hi)``: the shifts for which :func:`rshift_round` on an ``acc_bits``-bit
    accumulator is exact in int64: a left shift (negative) keeps every value below
    2^63 (``acc_bits - 1 - lo <= 62``), a right shift adds at most 2^61 (``hi = 62``)."""
    return acc_bits - 63, 62


def int_range(bits: int, narrow: bool = False) -> tuple[int, int]:
    """``(lo, hi)`` of a signed two's complement width; ``narrow`` drops ``-2^(b-1)``."""
    if not isinstance(bits, (int, np.integer)) or bits < 2 or bits > 32:
        raise ConfigError(f"bit width {bits!r} must be an integer in 2..32")
    return value_range(bits, narrow)


def value_range(bits: int, narrow: bool = False) -> tuple[int, int]:
    """:func:`int_range` of any width ``1 <= bits <= 64``, unchecked: the range of a stored
    value (a bias at a 48-bit accumulator) rather than of a datapath width."""
    hi = (1 << (int(bits) - 1)) - 1
    return (-hi if narrow else -hi - 1), hi


def saturate(v: np.ndarray, bits: int, narrow: bool = False) -> np.ndarray:
    """Clamp to the range of ``bits`` (never wrap)."""
    lo, hi = int_range(bits, narrow)
    return np.clip(v, lo, hi)


def rshift_round(a: np.ndarray, s: int) -> np.ndarray:
    """``floor(a / 2^s + 1/2)`` (ties toward plus infinity) for ``s >= 1``; ``a * 2^-s`` for ``s <= 0``.

    Exact for every int64 ``a`` and every right shift (``s >= 64`` gives 0). A left shift
    whose result would leave int64 is a one-line :class:`~ttforge.errors.DataError`
    naming the shifts these values allow (values never wrap); a non-integer ``s`` or a
    non-integer ``a`` is a :class:`~ttforge.errors.ConfigError` /
    :class:`~ttforge.errors.DataError` (a float is never truncated).
    """
    if isinstance(s, bool) or not isinstance(s, (int, np.integer)):
        raise ConfigError(f"rshift_round: shift s={s!r} must be an integer (a right shift, or left if "
                          f"negative)")
    s = int(s)
    a = _int64_array(a, "rshift_round")
    if s <= 0:
        return _lshift_exact(a, s, "rshift_round", " (an acc_bits-bit accumulator: shift_range)")
    if s == 1:
        return (a >> np.int64(1)) + (a & np.int64(1))   # a + 1 would wrap at 2^63 - 1
    # floor((floor(a / 2^(s-1)) + 1) / 2): no a + 2^(s-1) that could pass 2^63 (q < 2^62);
    # from s = 65 on, q is 0 or -1 and the result 0, as it is for s = 64
    q = a >> np.int64(min(s - 1, 63))
    q += np.int64(1)
    q >>= np.int64(1)
    return q


def _lshift_exact(a: np.ndarray, s: int, who: str, hint: str = "") -> np.ndarray:
    """``a << -s`` for ``s <= 0`` (a new int64 array), or a one-line DataError when a value
    would leave int64 (named as ``who``'s, ``hint`` appended): a shift never wraps.

    The one check of every left shift of the arithmetic (:func:`rshift_round`, and the
    stochastic shift's ``s <= 0``)."""
    k = -s
    if k and a.size:
        lo, hi = int(a.min()), int(a.max())
        if lo == hi == 0:
            return np.zeros_like(a)
        # signed width of the widest value: a left shift by k is exact iff width + k <= 64
        width = max(max(hi, 0).bit_length(), (-1 - min(lo, -1)).bit_length()) + 1
        if width + k > 64:
            raise DataError(f"{who}: a left shift by {k} (s={s}) takes values in "
                            f"[{lo}, {hi}] beyond int64; for them s must be at least {width - 64}{hint}")
    if not k or not a.size:   # nothing to shift (an empty array: k may be past int64)
        return a.copy()
    return a << np.int64(k)


def _int64_array(a, who: str) -> np.ndarray:
    """``a`` as an int64 array, or a one-line DataError (floats, objects, values past int64)."""
    arr = np.asarray(a)
    if arr.dtype.kind in "ib":
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind == "u":
        if arr.size and arr.dtype.itemsize == 8 and int(arr.max()) > np.iinfo(np.int64).max:
            raise DataError(f"{who}: values reach {int(arr.max())}, beyond int64; give int64 integers")
        return arr.astype(np.int64)
    if arr.dtype.kind == "O" and all(isinstance(v, (int, np.integer)) for v in arr.reshape(-1)):
        # Python integers past int64 (np.asarray([2**70])): refused, not an OverflowError
        info = np.iinfo(np.int64)
        if arr.size and (min(arr.reshape(-1)) < info.min or max(arr.reshape(-1)) > info.max):
            raise DataError(f"{who}: values leave int64 [{info.min}, {info.max}]; give int64 integers")
        return arr.astype(np.int64)
    raise DataError(f"{who}: takes integers, got an array of {arr.dtype}; quantize real values first")


#: Values :func:`quantize` converts at a time.
_QUANTIZE_BLOCK = 1 << 20


def quantize(x: np.ndarray, bits: int, exp: int, narrow: bool = False) -> np.ndarray:
    """Real values to integers of ``(bits, exp)``: ``sat(floor(x / 2^exp + 1/2))``, exactly.

    ``x / 2^exp`` is exact in float64 (a power of two; an underflow only to values
    far below one half); ``floor(v + 1/2)`` is computed as ``floor(v)`` plus one when
    ``v >= floor(v) + 1/2``, which is exact for every finite ``v`` (adding one half in
    float64 would round ``0.49999999999999994`` up to 1). ``+-inf`` saturate; a NaN is
    a one-line :class:`~ttforge.errors.DataError` naming its position. ``bits`` is a
    datapath width, 2..32 (:func:`int_range`); :func:`quantize_wide` takes a stored
    value's, up to :data:`MAX_ACC_BITS`.
    """
    return _quantize(x, exp, *int_range(bits, narrow))


def quantize_wide(x: np.ndarray, bits: int, exp: int, narrow: bool = False) -> np.ndarray:
    """:func:`quantize` to a stored value's width, 2..:data:`MAX_ACC_BITS` (a bias at a
    48-bit accumulator, a 48-bit weight update), exactly as :func:`quantize`: every
    integer below 2^52 is exact in float64."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 2 <= bits <= MAX_ACC_BITS:
        raise ConfigError(f"bit width {bits!r} must be an integer in 2..{MAX_ACC_BITS}")
    return _quantize(x, exp, *value_range(bits, narrow))


def _quantize(x: np.ndarray, exp: int, lo: int, hi: int) -> np.ndarray:
    """``clip(floor(x / 2^exp + 1/2), lo, hi)`` exactly (:func:`quantize`)."""
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise DataError(f"quantize: x holds {x.dtype} values; give real numbers (integers or floats)")
    if isinstance(exp, bool) or not isinstance(exp, (int, np.integer)):
        raise ConfigError(f"quantize: exp={exp!r} must be an integer (values are x / 2^exp)")
    # past +-2200 every finite float64 scales to 0 or to +-inf (|x| < 2^1024, >= 2^-1074),
    # the exact results after rounding and saturation: ldexp of 10^20 would overflow C's int
    exp = max(-2200, min(int(exp), 2200))
    out = np.empty(x.shape, dtype=np.int64)
    flat, into = x.reshape(-1), out.reshape(-1)
    # in blocks: the float64 temporaries of a whole data set were ~40 bytes a value (a
    # 1 GiB IDX file of 8-bit pixels took 24 GB in train-board)
    for start in range(0, flat.size, _QUANTIZE_BLOCK):
        with np.errstate(over="ignore"):   # an overflow is +-inf, which saturates
            v = np.ldexp(np.asarray(flat[start:start + _QUANTIZE_BLOCK], dtype=np.float64), -exp)
        nan = np.isnan(v)
        if nan.any():
            first = start + int(np.argmax(nan))
            where = tuple(int(i) for i in np.unravel_index(first, x.shape))
            total = int(np.count_nonzero(np.isnan(np.asarray(flat, dtype=np.float64))))
            raise DataError(f"input value at index {where if len(where) != 1 else where[0]} is NaN "
                            f"({total} NaN in all); inputs must be numbers")
        f = np.floor(v)
        with np.errstate(invalid="ignore"):
            up = v >= f + 0.5             # f + 1/2 is exact while |f| < 2^52
        scaled = np.where(np.abs(v) >= 2.0 ** 52, v, f + up)   # from 2^52 on, v is an integer
        into[start:start + v.size] = np.clip(scaled, lo, hi)
    return out


def acc_bits_needed(k: int, w_bits: int, x_bits: int, bias_max: int = 0) -> int:
    """Smallest signed width that holds any sum of ``k`` products (plus a bias).

    Weights are narrow-range (``|w| <= 2^(w_bits-1) - 1``), inputs full-range
    (``|x| <= 2^(x_bits-1)``); both widths in 2..32 (:func:`int_range`).
    """
    for name, b in (("w_bits", w_bits), ("x_bits", x_bits)):
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or not 2 <= b <= 32:
            # (1 << 10^12 would never end)
            raise ConfigError(f"acc_bits_needed: {name}={show(b)} must be an integer in 2..32")
    for name, v in (("k", k), ("bias_max", bias_max)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ConfigError(f"acc_bits_needed: {name}={v!r} must be an integer")
    if k < 0:
        raise ConfigError(f"acc_bits_needed: k={k} must be >= 0 (products in a sum)")
    bound = int(k) * ((1 << (w_bits - 1)) - 1) * (1 << (x_bits - 1)) + abs(int(bias_max))
    return max(2, bound.bit_length() + 1)


def exponent_for_max(max_abs: float, bits: int, narrow: bool = False) -> int:
    """Smallest exponent ``e`` with ``max_abs <= (2^(bits-1) - 1) * 2^e`` (max-based
    calibration): the symmetric range before rounding, whatever the sign and ``narrow``,
    so a magnitude just past ``2^(bits-1) - 1`` units of ``e - 1`` that would round or
    fit into it (``-2^(bits-1)``) takes ``e`` (``docs/arithmetic.md``, Calibration); 0 for
    0; a one-line ConfigError if it is not a finite number or the exponent leaves
    ``+-MAX_EXP``."""
    from ttforge.limits import MAX_EXP

    _, hi = int_range(bits, narrow)
    if isinstance(max_abs, bool) or not isinstance(max_abs, numbers.Real):
        raise ConfigError(f"exponent_for_max: max_abs={show(max_abs)} must be a real number")
    try:
        m = float(max_abs)
    except OverflowError:   # an int past float64 (10^400)
        m = math.inf
    if not m > 0 or not math.isfinite(m):
        return 0 if m == 0 else _bad_max(max_abs)
    e = math.ceil(math.log2(m) - math.log2(hi))
    # guard against log2 rounding at exact powers of two (ldexp: 2.0**e underflows to 0
    # for the smallest floats)
    while math.ldexp(m, -e) > hi:
        e += 1
    while math.ldexp(m, 1 - e) <= hi:
        e -= 1
    if abs(e) > MAX_EXP:
        raise ConfigError(f"calibration saw a largest magnitude of {m!r}, which needs exponent {e}, "
                          f"outside {-MAX_EXP}..{MAX_EXP}; check the model and data")
    return e


def _bad_max(max_abs: float) -> int:
    raise ConfigError(f"calibration saw a value that is not a finite float64 ({show(max_abs)}); check the "
                      f"model and data")
