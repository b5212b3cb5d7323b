"""A training state's exponents are bounded on load like an artifact's (within
``+-MAX_EXP``, the forward shifts within ``shift_range``): whatever ``loads_state``
accepts, the trainer computes, with no builtin exception (an ``OverflowError`` from
``1 << s``, a ``MemoryError`` from ``1 << (2^63 - 1)``)."""

from __future__ import annotations

import json
import zipfile
import io

import numpy as np
import pytest

from ttforge.errors import ArtifactError, ConfigError, TTForgeError
from ttforge.ir import ContractionSchedule, TTShape
from ttforge.ir.container import pack
from ttforge.ir.train import TrainConfig, calibrate_state, init_state, train_step, train_step_fast
from ttforge.ir.train_state import MANIFEST_SHA256, dumps_state, loads_state, manifest_sha256


@pytest.fixture(scope="module")
def base():
    s1 = ContractionSchedule(TTShape((4, 4), (4, 4), 2), (0, 1))
    s2 = ContractionSchedule(TTShape((3,), (16,), (1, 1)), (0,))
    st = init_state([(16, 16, s1), (16, 3, s2)], TrainConfig(), seed=1)
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, size=(8, 16))
    y = rng.integers(0, 3, size=8)
    return calibrate_state(st, x, y), x, y


def _edit(st, path, value) -> bytes:
    """The state's bytes with one manifest field set (the ZIP rebuilt, CRCs right)."""
    z = zipfile.ZipFile(io.BytesIO(dumps_state(st)))
    m = json.loads(z.read("manifest.json"))
    obj = m
    for key in path[:-1]:
        obj = obj[key]
    obj[path[-1]] = value
    m[MANIFEST_SHA256] = manifest_sha256(m)   # resealed: the field's own check is reached
    return pack(json.dumps(m).encode(), z.read("tensors.bin"))


@pytest.mark.parametrize("path, value, match", [
    (["layers", 0, "grad_exps"], [2000, 2000], r"layer 0 grad_exps=\(2000, 2000\) must be integers in -1024\.\.1024"),
    (["layers", 0, "grad_exps"], [10**30, 0], r"grad_exps=.* must be integers in -1024\.\.1024"),
    (["layers", 1, "grad_exps"], [-1025], r"layer 1 grad_exps=\(-1025,\)"),
    (["layers", 0, "master_exps"], [2000, 2000], r"master_exps=\(2000, 2000\) must be integers"),
    (["layers", 0, "master_exps"], [2**63, 0], r"master_exps=.* must be integers"),
    (["layers", 0, "master_exps"], [1024, 0], r"master_exps=\(1024, 0\) must be integers in -1024\.\.1020"),
    (["layers", 1, "bias_exp"], -2000, r"layer 1 bias_exp=-2000 must be an integer in -1024\.\.1024"),
    (["layers", 0, "step_exps"], [5000, 0], r"step_exps=\(5000, 0\)"),
    (["in_exp"], -5000, r"in_exp=-5000 must be an integer"),
    (["counters", "step"], -5, r"counters\.step=-5 is out of range 0\.\.9223372036854775807"),
    (["counters", "words"], 10**30, r"counters\.words=.* is out of range 0\.\."),
])
def test_out_of_range_exponents_and_counters_are_refused_on_load(base, path, value, match):
    st, _, _ = base
    with pytest.raises(ArtifactError, match=match) as e:
        loads_state(_edit(st, path, value), "s.ttts")
    assert "None" not in str(e.value) and "\n" not in str(e.value)


def test_a_forward_shift_outside_shift_range_is_refused_on_load(base):
    st, _, _ = base
    # exponents in range, but the first step then shifts left by ~1000 (beyond acc_bits - 63)
    with pytest.raises(ArtifactError, match=r"inconsistent state: .*shifts by -\d+ .*exact range"):
        loads_state(_edit(st, ["layers", 0, "step_exps"], [-1000, st.layers[0].step_exps[1]]), "s.ttts")


@pytest.mark.parametrize("field", ["grad_exps", "master_exps", "bias_exp", "step_exps", "in_exp"])
@pytest.mark.parametrize("value", [-1024, -300, -70, 70, 200, 1024])
def test_what_loads_trains_golden_equal_to_fast(base, field, value):
    st, x, y = base
    layer = 1 if field == "bias_exp" else 0
    path = ["in_exp"] if field == "in_exp" else ["layers", layer, field]
    v = value if field in ("bias_exp", "in_exp") else [value] * len(st.layers[layer].grad_exps)
    try:
        loaded = loads_state(_edit(st, path, v), "s.ttts")
    except ArtifactError:
        return   # refused with one line: fine
    try:
        golden = train_step(loaded, x, y)
    except TTForgeError as e:   # a one-line refusal of the step, never a builtin exception
        assert isinstance(e, ConfigError) and "\n" not in str(e)
        return
    fast, _ = train_step_fast(loaded, x, y)
    for a, b in zip(golden.layers, fast.layers):
        assert all(np.array_equal(g, h) for g, h in zip(a.masters, b.masters))
        assert a.grad_exps == b.grad_exps and a.step_exps == b.step_exps


def test_check_state_refuses_a_non_integer_exponent(base):
    import dataclasses

    st, _, _ = base
    with pytest.raises(ConfigError, match=r"layer 0 master_exps=\(0\.5, 0\) must be integers"):
        st.replace(layers=(dataclasses.replace(st.layers[0], master_exps=(0.5, 0)), st.layers[1]))
