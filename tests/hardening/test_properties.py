"""Property-based tests of the loaders: valid input round-trips, anything else is one line.

The artifact loader, the TrainConfig and AccelConfig loaders and the IDX reader either
return a validated object or raise :class:`~ttforge.errors.TTForgeError` with a
one-line message; never another exception type. Examples are derandomized (the same
on every run and in CI) and few enough to keep the file fast.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import struct
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ttforge.errors import TTForgeError
from ttforge.hw.config import AccelConfig
from ttforge.model.data import read_idx
from ttforge.model.network import ModelConfig
from ttforge.model.train import TrainConfig
from ttforge.ir.artifact import dumps_artifact, loads_artifact
from ttforge.quant.qat import compile_network

from tests.support.nets import small_net

# the deadline is generous: the machine running CI may be busy; a hang still fails
FAST = settings(max_examples=120, deadline=5000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def one_line(e: TTForgeError) -> None:
    msg = str(e)
    assert msg and "\n" not in msg and "Traceback" not in msg, msg


def loads_or_one_line(call):
    """``call()``'s result, or None after checking a TTForgeError is one line."""
    try:
        return call()
    except TTForgeError as e:
        one_line(e)
        return None


# ---------------------------------------------------------------------------------------
# artifacts
# ---------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def artifact_bytes(seed: int = 0) -> bytes:
    q, _ = small_net(seed=seed, ranks=(2, 2))
    return dumps_artifact(compile_network(q), {"seed": seed, "note": "hardening"})


@pytest.fixture(scope="module", autouse=True)
def _warm_caches():
    """Build the valid inputs before the examples run (their time is not the loaders')."""
    for seed in range(4):
        artifact_bytes(seed)
    checkpoint_bytes()


@settings(FAST, max_examples=4)
@given(st.integers(0, 3))
def test_valid_artifact_round_trips_to_identical_bytes(seed):
    data = artifact_bytes(seed)
    net = loads_artifact(data)
    assert dumps_artifact(net) == data
    assert dumps_artifact(loads_artifact(dumps_artifact(net))) == data


def _equal_or_error(data: bytes) -> None:
    net = loads_or_one_line(lambda: loads_artifact(data, "x.ttfa"))
    if net is not None:  # a change that does not matter (e.g. a ZIP header's unused field)
        assert dumps_artifact(net) == artifact_bytes()


@FAST
@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=4))
def test_byte_flips_load_the_same_network_or_fail_in_one_line(flips):
    data = bytearray(artifact_bytes())
    for pos, xor in flips:
        data[pos % len(data)] ^= xor
    _equal_or_error(bytes(data))


@FAST
@given(st.integers(0, 10**6))
def test_truncations_fail_in_one_line(n):
    data = artifact_bytes()
    cut = n % len(data)
    with pytest.raises(TTForgeError) as e:
        loads_artifact(data[:cut], "x.ttfa")
    one_line(e.value)


@FAST
@given(st.binary(max_size=600))
def test_random_bytes_fail_in_one_line(blob):
    for data in (blob, b"PK\x03\x04" + blob):
        with pytest.raises(TTForgeError) as e:
            loads_artifact(data, "x.ttfa")
        one_line(e.value)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def _rezip(manifest: dict, payload: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("manifest.json", json.dumps(manifest))
        z.writestr("tensors.bin", payload)
    return buf.getvalue()


@FAST
@given(st.data())
def test_manifest_values_of_any_type_with_valid_checksums_fail_in_one_line(data):
    """Replace one manifest value (any depth) by random JSON; the CRCs and sha256 stay valid."""
    with zipfile.ZipFile(io.BytesIO(artifact_bytes())) as z:
        manifest, payload = json.loads(z.read("manifest.json")), z.read("tensors.bin")
    paths = [p for p in _paths(manifest) if p]
    path = data.draw(st.sampled_from(paths))
    value = data.draw(JSON)
    obj = manifest
    for k in path[:-1]:
        obj = obj[k]
    assume(obj[path[-1]] != value)
    obj[path[-1]] = value
    if path[0] != "tensors" and path[:2] != ("payload", "sha256"):
        for t in manifest["tensors"]:  # keep the checksums right where the edit allows
            if isinstance(t, dict) and {"offset", "nbytes"} <= set(t):
                try:
                    t["sha256"] = hashlib.sha256(payload[t["offset"]:t["offset"] + t["nbytes"]]).hexdigest()
                except TypeError:
                    pass
    net = loads_or_one_line(lambda: loads_artifact(_rezip(manifest, payload), "x.ttfa"))
    if net is not None:  # only changes that carry no information (e.g. producer, meta) load
        again = loads_artifact(dumps_artifact(net))
        assert dumps_artifact(again) == dumps_artifact(net)


# ---------------------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------------------
TRAIN_FIELDS = ["data", "model", "epochs", "batch_size", "lr", "weight_decay", "seed", "rank_adaptive",
                "prior", "eta", "prior_update_every", "truncation_threshold", "finetune_epochs", "threads"]
MODEL_FIELDS = ["kind", "in_features", "hidden", "out_features", "ranks", "n_cores", "in_modes",
                "out_modes", "tt_last_layer", "bias"]
SCALARS = (st.none() | st.booleans() | st.integers(-3, 70) | st.integers(-2**64, 2**64)
           | st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(["tt", "dense", "digits", "log_uniform", "", "x"]))
VALUES = SCALARS | st.lists(st.integers(-2, 40) | st.lists(st.integers(-1, 9), max_size=4), max_size=4)


def small_model_dicts():
    # sizes small enough that a valid draw builds in microseconds
    return st.dictionaries(st.sampled_from(MODEL_FIELDS + ["widht"]), VALUES, max_size=5)


@FAST
@given(st.dictionaries(st.sampled_from(TRAIN_FIELDS + ["lr_rate", "out"]),
                       VALUES | small_model_dicts(), max_size=6))
def test_train_config_from_random_dicts(d):
    cfg = loads_or_one_line(lambda: TrainConfig.from_dict(d))
    if cfg is not None:
        assert TrainConfig.from_dict(cfg.to_dict()) == cfg  # a valid config round-trips


@FAST
@given(small_model_dicts())
def test_model_config_from_random_dicts(d):
    cfg = loads_or_one_line(lambda: ModelConfig.from_dict(d))
    if cfg is not None:
        assert ModelConfig.from_dict(cfg.to_dict()) == cfg


ACCEL_FIELDS = [f for f in AccelConfig().to_dict()]


@FAST
@given(st.dictionaries(st.sampled_from(ACCEL_FIELDS + ["mac_lanes"]),
                       st.none() | st.booleans() | st.integers(-2, 70) | st.sampled_from([2**k for k in range(26)])
                       | st.integers(-2**40, 2**40) | st.floats() | st.text(max_size=3), max_size=6))
def test_accel_config_from_random_dicts(d):
    cfg = loads_or_one_line(lambda: AccelConfig.from_dict(d, source="c.json"))
    if cfg is not None:
        assert AccelConfig.from_dict(cfg.to_dict()) == cfg


@settings(FAST, max_examples=60)
@given(st.binary(max_size=80) | st.text(max_size=80).map(str.encode), st.sampled_from([".json", ".toml"]))
def test_config_files_of_random_bytes(tmp_path_factory, blob, suffix):
    from ttforge.model.cli import _read_config_file

    p = tmp_path_factory.mktemp("cfg") / f"c{suffix}"
    p.write_bytes(blob)
    loads_or_one_line(lambda: AccelConfig.load(p))
    data = loads_or_one_line(lambda: _read_config_file(str(p)))
    if data is not None:
        loads_or_one_line(lambda: TrainConfig.from_dict(data))


# ---------------------------------------------------------------------------------------
# IDX files
# ---------------------------------------------------------------------------------------
CODES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@st.composite
def idx_files(draw):
    """A valid IDX file and its array, sometimes damaged (then the array is None)."""
    code = draw(st.sampled_from(sorted(CODES)))
    shape = tuple(draw(st.lists(st.integers(0, 5), min_size=1, max_size=3)))
    n = math.prod(shape)
    arr = np.arange(n, dtype=np.int64).astype(CODES[code]).reshape(shape)
    data = bytes([0, 0, code, len(shape)]) + b"".join(struct.pack(">I", s) for s in shape) + arr.tobytes()
    how = draw(st.sampled_from(["valid", "truncate", "extend", "flip", "random"]))
    if how == "truncate":
        data = data[:draw(st.integers(0, max(0, len(data) - 1)))]
    elif how == "extend":
        data += draw(st.binary(min_size=1, max_size=9))
    elif how == "flip":
        pos = draw(st.integers(0, len(data) - 1))
        data = data[:pos] + bytes([data[pos] ^ draw(st.integers(1, 255))]) + data[pos + 1:]
    elif how == "random":
        data = draw(st.binary(max_size=64))
    return data, (arr if how == "valid" else None)


@FAST
@given(idx_files(), st.booleans())
def test_idx_reader_reads_valid_files_exactly_and_rejects_damage_in_one_line(tmp_path_factory, case, gz):
    import gzip

    data, arr = case
    p = tmp_path_factory.mktemp("idx") / "f-idx"
    p.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    got = loads_or_one_line(lambda: read_idx(p))
    if arr is not None:
        assert got is not None and got.shape == arr.shape
        assert np.array_equal(got, arr) and got.dtype == arr.dtype.newbyteorder("=")


# ---------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def checkpoint_bytes() -> bytes:
    import tempfile
    from pathlib import Path

    import torch

    from ttforge.model.checkpoint import save_checkpoint

    with tempfile.TemporaryDirectory() as d:
        p = save_checkpoint(Path(d) / "c.pt", {"config": {"epochs": 1}, "w": torch.arange(12.0)})
        return p.read_bytes()


@settings(FAST, max_examples=60)
@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), max_size=3), st.integers(0, 10**6),
       st.booleans())
def test_damaged_checkpoints_fail_in_one_line(tmp_path_factory, flips, cut, truncate):
    import torch

    from ttforge.model.checkpoint import load_checkpoint

    data = bytearray(checkpoint_bytes())
    for pos, xor in flips:
        data[pos % len(data)] ^= xor
    if truncate:
        data = data[:cut % len(data)]
    p = tmp_path_factory.mktemp("ckpt") / "c.pt"
    p.write_bytes(bytes(data))
    got = loads_or_one_line(lambda: load_checkpoint(p))
    if got is not None:  # only an undamaged file loads
        assert bytes(data) == checkpoint_bytes()
        assert got["config"] == {"epochs": 1} and torch.equal(got["w"], torch.arange(12.0))


@st.composite
def flow_dicts(draw):
    """Flow configs: real sections with real and misspelled keys, values of any type."""
    import dataclasses

    from ttforge.flow.config import FlowConfig

    sections = {f.name: f.default_factory for f in dataclasses.fields(FlowConfig)
                if f.default_factory is not dataclasses.MISSING}
    out = {}
    for name in draw(st.lists(st.sampled_from([*sections, "train", "tarin"]), max_size=4, unique=True)):
        if name == "train":
            out[name] = draw(st.dictionaries(st.sampled_from(TRAIN_FIELDS + ["lr_rate"]),
                                             VALUES | small_model_dicts(), max_size=4))
            continue
        cls = sections.get(name)
        keys = [f.name for f in dataclasses.fields(cls)] if cls else ["x"]
        out[name] = draw(st.dictionaries(st.sampled_from(keys + ["nosuchkey"]), VALUES, max_size=4)
                         | VALUES)
    return out


@FAST
@given(flow_dicts())
def test_flow_config_from_random_tables(d):
    from ttforge.flow.config import FlowConfig

    cfg = loads_or_one_line(lambda: FlowConfig.from_dict(d))
    if cfg is not None:
        assert FlowConfig.from_dict(cfg.to_dict()) == cfg
