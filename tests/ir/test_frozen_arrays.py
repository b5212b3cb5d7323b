"""A layer's and a training state's integer arrays are their own and read-only, and the
writers refuse a value outside its declared range instead of casting it (an 8-bit core
edited to 300 computed 309, was saved as int8 44 and loaded as another network; a master
of 1000 was saved as -24)."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

from ttforge.errors import ArtifactError, ShapeError
from ttforge.ir import (ContractionSchedule, IntNetwork, TrainConfig, TTShape, calibrate_state, dumps_artifact,
                        execute, init_state, layer_from_dense, load_state, loads_artifact, save_state, train_step)
from ttforge.ir.train_state import dumps_state, loads_state


def _dense(w=None, **kw):
    w = np.array([[1, 2, 3, 4], [5, 6, 7, 8]], dtype=np.int64) if w is None else w
    args = dict(core_exps=(0,), w_bits=8, in_bits=8, in_exp=0, inter_bits=16, out_bits=16, step_exps=(0,),
                acc_bits=32)
    return layer_from_dense(w, **{**args, **kw})


def _state():
    s1 = ContractionSchedule.optimal(TTShape((4, 4), (4, 4), (1, 4, 1)))
    s2 = ContractionSchedule.optimal(TTShape((2, 5), (4, 4), (1, 3, 1)))
    st = init_state([(16, 16, s1), (16, 10, s2)], TrainConfig(), seed=0)
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, size=(8, 16))
    y = rng.integers(0, 10, size=8)
    return calibrate_state(st, x, y), x, y


def _bypass(obj, name, value):
    """What no public path does: swap a frozen dataclass's array for a writeable one (as
    ``object.__setattr__`` or ctypes could), to reach the writers' own check."""
    object.__setattr__(obj, name, value)


def _read_only(a: np.ndarray) -> None:
    with pytest.raises(ValueError, match="read-only"):
        a.reshape(-1)[0] = 1
    with pytest.raises(ValueError):
        a.flags.writeable = True   # nor can it be made writeable again


def test_a_layer_keeps_its_own_copy_of_the_callers_array():
    w = np.array([[1, 2, 3, 4], [5, 6, 7, 8]], dtype=np.int64)
    net = IntNetwork((_dense(w, bias=np.array([3, -3], dtype=np.int64)),))
    x = np.ones((1, 4), dtype=np.int64)
    before = execute(net, x)
    assert np.array_equal(before, [[13, 23]])
    w[0, 0] = 300   # outside the 8-bit range: the layer never sees it
    assert np.array_equal(execute(net, x), before)
    assert np.array_equal(execute(loads_artifact(dumps_artifact(net)), x), before)


def test_a_layers_arrays_are_read_only_also_after_copy_pickle_and_load():
    layer = _dense(bias=np.array([1, 2], dtype=np.int64))
    net = IntNetwork((layer,))
    for n in (net, copy.deepcopy(net), copy.copy(net), pickle.loads(pickle.dumps(net)),
              loads_artifact(dumps_artifact(net))):
        assert np.array_equal(n.layers[0].cores[0], layer.cores[0])
        assert np.array_equal(n.layers[0].bias, layer.bias)
        _read_only(n.layers[0].cores[0])
        _read_only(n.layers[0].bias)


def test_a_states_arrays_are_read_only_after_init_step_copy_and_load():
    st, x, y = _state()
    new = train_step(st, x, y)
    for s in (st, new, copy.deepcopy(new), pickle.loads(pickle.dumps(new)), loads_state(dumps_state(new))):
        for L in s.layers:
            for g in L.masters:
                _read_only(g)
            _read_only(L.bias)
    # the caller's array given to a layer is copied: editing it changes nothing
    m = np.array(st.layers[0].masters[0])
    L0 = type(st.layers[0])(**{**st.layers[0].__dict__, "masters": (m, *st.layers[0].masters[1:])})
    m.reshape(-1)[0] = 1000
    assert L0.masters[0].reshape(-1)[0] == st.layers[0].masters[0].reshape(-1)[0]


def test_the_artifact_writer_refuses_a_core_or_bias_outside_its_range_never_wraps():
    layer = _dense(bias=np.array([1, 2], dtype=np.int64))
    net = IntNetwork((layer,))
    good = dumps_artifact(net)
    bad = np.array(layer.cores[0])
    bad[0, 0, 0, 0] = 300   # int8 would store 44
    _bypass(layer, "cores", (bad,))
    with pytest.raises(ArtifactError) as e:
        dumps_artifact(net)
    msg = str(e.value)
    assert len(msg.splitlines()) == 1
    assert "layers.0.cores.0" in msg and "[2, 300]" in msg and "8-bit narrow range [-127, 127]" in msg
    bad[0, 0, 0, 0] = -128   # fits int8, but not the narrow range the loader accepts
    with pytest.raises(ArtifactError, match=r"layers\.0\.cores\.0: its values in \[-128, 8\]"):
        dumps_artifact(net)
    _bypass(layer, "cores", (np.array(loads_artifact(good).layers[0].cores[0]),))
    assert dumps_artifact(net) == good
    _bypass(layer, "bias", np.array([1 << 40, 0], dtype=np.int64))
    with pytest.raises(ArtifactError, match=r"layers\.0\.bias: its values in \[0, 1099511627776\] leave the "
                                            r"32-bit range \[-2147483648, 2147483647\]"):
        dumps_artifact(net)


def test_the_state_writer_refuses_a_master_or_bias_outside_its_range_never_wraps(tmp_path):
    st, _, _ = _state()
    p = save_state(st, tmp_path / "s.ttts")
    before = p.read_bytes()
    L = st.layers[0]
    bad = np.array(L.masters[0])
    bad.reshape(-1)[0] = 1000   # 8-bit masters: saved as -24
    _bypass(L, "masters", (bad, *L.masters[1:]))
    with pytest.raises(ArtifactError) as e:
        save_state(st, p)
    msg = str(e.value)
    assert len(msg.splitlines()) == 1
    assert "layers.0.masters.0" in msg and "8-bit narrow range [-127, 127]" in msg
    assert p.read_bytes() == before   # nothing half-written
    _bypass(L, "masters", tuple(load_state(p).layers[0].masters))
    _bypass(L, "bias", np.array([1 << 40] + [0] * (L.out_features - 1), dtype=np.int64))
    with pytest.raises(ArtifactError, match=r"layers\.0\.bias: its values in \[0, 1099511627776\] leave the "
                                            r"24-bit narrow range"):
        dumps_state(st)


def test_compile_program_refuses_a_core_outside_its_range():
    from ttforge.hw.config import AccelConfig
    from ttforge.hw.program import compile_program

    layer = _dense()
    net = IntNetwork((layer,))
    cfg = AccelConfig(act_bits=16)
    compile_program(net, cfg)
    bad = np.array(layer.cores[0])
    bad[0, 1, 0, 0] = 1 << 40
    _bypass(layer, "cores", (bad,))
    with pytest.raises(ShapeError, match=r"^layer 0: core 0 has values in \[1, 1099511627776\], outside the "
                                          r"8-bit range"):
        compile_program(net, cfg)
