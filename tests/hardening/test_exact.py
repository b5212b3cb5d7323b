"""What the loader accepts, the int64 executor computes exactly (issue 19, class 4).

Random layers with extreme widths, exponents and shifts are paired with exact Python
integer (and rational) arithmetic: an :class:`IntLayer` (and so an artifact) with
fields outside the range where int64 is exact is refused with one line; one inside it
executes to exactly what unbounded integers give. The input quantizer is exact too, also
a hair below a half, and refuses NaN. Torch-free.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ttforge.errors import ArtifactError, ConfigError, DataError, TTForgeError
from ttforge.ir.arith import MAX_ACC_BITS, acc_bits_needed, quantize, shift_range
from ttforge.ir.artifact import dumps_artifact, loads_artifact
from ttforge.ir.executor import IntLayer, IntNetwork, execute
from ttforge.ir.schedule import ContractionSchedule
from ttforge.ir.tt import TTShape
from ttforge.limits import MAX_EXP

FAST = settings(max_examples=150, deadline=5000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def _floor_half(v: Fraction) -> int:
    return math.floor(v + Fraction(1, 2))


def _sat(v: int, bits: int) -> int:
    hi = (1 << (bits - 1)) - 1
    return max(-hi - 1, min(hi, v))


@st.composite
def dense_layers(draw):
    n, m = draw(st.integers(1, 6)), draw(st.integers(1, 4))
    w_bits = draw(st.integers(2, 8))
    in_bits, out_bits = draw(st.integers(2, 32)), draw(st.integers(2, 32))
    whi = (1 << (w_bits - 1)) - 1
    W = np.array(draw(st.lists(st.integers(-whi, whi), min_size=m * n, max_size=m * n)),
                 dtype=np.int64).reshape(m, n)
    bias = draw(st.none() | st.lists(st.integers(-(1 << 20), 1 << 20), min_size=m, max_size=m))
    need = acc_bits_needed(n, w_bits, in_bits, max((abs(b) for b in bias), default=0) if bias else 0)
    acc_bits = draw(st.integers(need, 64))
    in_exp = draw(st.integers(-40, 40))
    core_exp = draw(st.integers(-40, 40))
    shift = draw(st.integers(-90, 90) | st.sampled_from([62, 63, 64, 65, acc_bits - 63, acc_bits - 64]))
    xs = draw(st.lists(st.lists(st.integers(-(1 << (in_bits - 1)), (1 << (in_bits - 1)) - 1),
                                min_size=n, max_size=n), min_size=1, max_size=3))
    return dict(n=n, m=m, W=W, w_bits=w_bits, in_bits=in_bits, out_bits=out_bits, acc_bits=acc_bits,
                in_exp=in_exp, core_exp=core_exp, step_exp=in_exp + core_exp + shift,
                bias=None if bias is None else np.array(bias, dtype=np.int64),
                relu=draw(st.booleans()), x=np.array(xs, dtype=np.int64), shift=shift)


def _layer(f) -> IntLayer:
    shape = TTShape((f["m"],), (f["n"],), (1, 1))
    return IntLayer(in_features=f["n"], out_features=f["m"], schedule=ContractionSchedule.right_to_left(shape),
                    cores=(f["W"].reshape(1, f["m"], f["n"], 1),), core_exps=(f["core_exp"],),
                    w_bits=f["w_bits"], in_bits=f["in_bits"], in_exp=f["in_exp"], inter_bits=f["out_bits"],
                    out_bits=f["out_bits"], step_exps=(f["step_exp"],), acc_bits=f["acc_bits"],
                    bias=f["bias"], relu=f["relu"])


def _reference(f) -> np.ndarray:
    out = []
    for x in f["x"].tolist():
        row = []
        for j in range(f["m"]):
            acc = sum(int(f["W"][j, i]) * x[i] for i in range(f["n"])) + (int(f["bias"][j]) if f["bias"] is not None else 0)
            v = _sat(_floor_half(Fraction(acc) / Fraction(2) ** f["shift"]), f["out_bits"])
            row.append(max(v, 0) if f["relu"] else v)
        out.append(row)
    return np.array(out, dtype=object)


def _exact_range(f) -> bool:
    lo, hi = shift_range(f["acc_bits"])
    return (f["acc_bits"] <= MAX_ACC_BITS and lo <= f["shift"] <= hi
            and all(abs(e) <= MAX_EXP for e in (f["in_exp"], f["core_exp"], f["step_exp"])))


@FAST
@given(dense_layers())
def test_a_layer_is_refused_or_computed_exactly(f):
    try:
        layer = _layer(f)
    except ConfigError as e:
        assert not _exact_range(f), f"refused a layer the executor computes exactly: {e}"
        assert "\n" not in str(e)
        return
    assert _exact_range(f), "accepted fields where int64 is not exact"
    got = execute(IntNetwork((layer,)), f["x"])
    assert got.tolist() == _reference(f).tolist()


@FAST
@given(dense_layers())
def test_the_loader_refuses_exactly_what_the_executor_cannot_compute(f):
    """An artifact carrying the layer's fields (written around the executor's check) loads
    iff the fields are in the exact range, and then computes the reference."""
    import json

    from tests.hardening.make_corpus import _rezip, _unzip

    safe = dict(f, acc_bits=min(f["acc_bits"], MAX_ACC_BITS), step_exp=f["in_exp"] + f["core_exp"])
    safe["shift"] = 0
    if safe["acc_bits"] < acc_bits_needed(f["n"], f["w_bits"], f["in_bits"],
                                          int(np.abs(f["bias"]).max()) if f["bias"] is not None else 0):
        return
    m, p = _unzip(dumps_artifact(IntNetwork((_layer(safe),))))
    lay = m["layers"][0]
    lay["acc_bits"], lay["step_exps"], lay["shifts"] = f["acc_bits"], [f["step_exp"]], [f["shift"]]
    m["output"]["exp"] = f["step_exp"]
    if f["bias"] is not None and f["acc_bits"] != safe["acc_bits"]:
        return  # the bias dtype follows acc_bits; keep the example simple
    data = _rezip(json.loads(json.dumps(m)), p)
    try:
        net = loads_artifact(data)
    except ArtifactError as e:
        assert not _exact_range(f), str(e)
        return
    assert _exact_range(f)
    assert execute(net, f["x"]).tolist() == _reference(f).tolist()


# ------------------------------------------------------------------------------- the quantizer
finite = st.floats(allow_nan=False, allow_infinity=True, width=64)


@st.composite
def near_halves(draw):
    """Doubles at, and one ulp either side of, k + 1/2 (scaled by 2^exp)."""
    k = draw(st.integers(-(1 << 40), 1 << 40))
    v = np.float64(k) + 0.5
    v = draw(st.sampled_from([np.nextafter(v, -np.inf), v, np.nextafter(v, np.inf)]))
    exp = draw(st.integers(-60, 60))
    return float(np.ldexp(v, exp)), exp


@FAST
@given(st.one_of(st.tuples(finite, st.integers(-1100, 1100)), near_halves()), st.integers(2, 32))
def test_the_input_quantizer_is_exact(pair, bits):
    x, exp = pair
    got = int(quantize(np.array([x]), bits, exp)[0])
    if math.isinf(x):
        want = _sat(1 << 40 if x > 0 else -(1 << 40), bits)
    else:
        want = _sat(_floor_half(Fraction(x) / Fraction(2) ** exp), bits)
    assert got == want, (x, exp, bits)


def test_a_hair_below_a_half_rounds_down():
    below = np.nextafter(0.5, 0.0)              # 0.49999999999999994
    assert quantize(np.array([below, 0.5, -0.5, np.nextafter(-0.5, -1.0)]), 8, 0).tolist() == [0, 1, 0, -1]
    assert quantize(np.array([np.ldexp(below, -7)]), 8, -7).tolist() == [0]


def test_nan_inputs_are_an_error_not_int64_min():
    with pytest.raises(DataError, match=r"index \(1, 0\) is NaN"):
        quantize(np.array([[0.0, 1.0], [np.nan, 2.0]]), 8, -4)
    with pytest.raises(TTForgeError):
        IntNetwork((_layer(dict(n=1, m=1, W=np.ones((1, 1), np.int64), w_bits=2, in_bits=8, out_bits=8,
                                acc_bits=16, in_exp=0, core_exp=0, step_exp=0, bias=None, relu=False)),)
                   ).quantize_input(np.array([[np.nan]]))
