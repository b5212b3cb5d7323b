"""The compiled artifact: one file that carries an :class:`IntNetwork` into hardware land.

An artifact is a ZIP container (every member *stored*, uncompressed) with exactly two
members, in this order:

``manifest.json``
    UTF-8 JSON: format name and version, the arithmetic spec it obeys, every layer's
    widths, exponents, derived shifts and contraction schedule, and a table of tensors
    (name, offset, byte count, shape, dtype, sha256), plus a sha256 of the payload.
``tensors.bin``
    The payload: every tensor as little-endian two's complement integers, row-major,
    each starting at an offset that is a multiple of 8 (zero bytes in between).

``docs/artifact.md`` specifies the format precisely enough to write an executor from
it. Writing is deterministic (no timestamps: the same network and meta give the same
bytes) and atomic (temporary name, then ``os.replace``). Loading verifies everything
it reads and reports each problem as one line, a :class:`~ttforge.errors.ArtifactError`.

The on-chip byte accounting is :mod:`ttforge.ir.onchip`; ``ttforge inspect`` is in
:mod:`ttforge.ir.cli`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ttforge import __version__
from ttforge.errors import ArtifactError, TTForgeError, file_path, show, show_path
from ttforge.limits import MAX_ARTIFACT_BYTES, MAX_LAYER_ELEMENTS, read_bounded
from ttforge.ir.schedule import ContractionSchedule
from ttforge.ir.arith import ARITHMETIC_SPEC_VERSION, ROUNDING, ROUNDING_ALIASES, value_range
from ttforge.ir.container import (MANIFEST, PAYLOAD, ManifestReader, Payload, check_container, check_member_count,
                                  pack, parse_manifest, read_tensors)
from ttforge.ir.executor import EXP_RANGE, LAYER_ARRAY_RANGES, LAYER_INT_RANGES, IntLayer, IntNetwork

__all__ = [
    "ARTIFACT_FORMAT",
    "ARTIFACT_FORMAT_VERSION",
    "ARITHMETIC_SPEC_VERSION",
    "save_artifact",
    "load_artifact",
    "meta_text",
    "source_name",
    "absolute_data_spec",
    "arrays_digest",
    "dumps_artifact",
    "loads_artifact",
    "layer_kind",
    "dump_json",
    "check_container",
    "parse_manifest",
]

ARTIFACT_FORMAT = "ttforge-artifact"
#: Version of the container and manifest layout; bumped on any change a reader must know.
ARTIFACT_FORMAT_VERSION = 1
#: Version of ``docs/arithmetic.md`` the stored network follows.



# ---------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------
def layer_kind(layer: IntLayer) -> str:
    return "dense" if layer.schedule.shape.d == 1 else "tt"


def _acc_exps(layer: IntLayer) -> list[int]:
    return [int(layer.acc_exp(t)) for t in range(len(layer.step_exps))]


def _json_meta(meta: dict) -> dict:
    if not isinstance(meta, dict):
        raise ArtifactError(f"meta must be a dict of JSON values, got {type(meta).__name__}")
    try:
        # round trip so that what is stored is exactly what load returns (tuples -> lists, ...)
        return json.loads(json.dumps(meta, sort_keys=True, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise ArtifactError(f"meta is not plain JSON data ({e}); store numbers, strings, lists and dicts") from None


def _build(net: IntNetwork, meta: dict | None) -> tuple[bytes, bytes]:
    """``(manifest bytes, payload bytes)`` of a network."""
    if not isinstance(net, IntNetwork):
        raise ArtifactError(f"save_artifact needs an IntNetwork (compile_network(...)), got {type(net).__name__}")
    merged = _json_meta({**dict(net.meta), **(meta or {})})
    payload = Payload()
    add = payload.add

    layers = []
    for i, layer in enumerate(net.layers):
        # stored in the width of its range (LAYER_ARRAY_RANGES); add refuses a value outside it
        (cw, cn), (bw, bn) = LAYER_ARRAY_RANGES["cores"], LAYER_ARRAY_RANGES["bias"]
        cores = [add(f"layers.{i}.cores.{k}", g, getattr(layer, cw), narrow=cn) for k, g in enumerate(layer.cores)]
        bias = (add(f"layers.{i}.bias", layer.bias, getattr(layer, bw), narrow=bn)
                if layer.bias is not None else None)
        layers.append({
            "kind": layer_kind(layer),
            "in_features": int(layer.in_features),
            "out_features": int(layer.out_features),
            "relu": bool(layer.relu),
            "has_bias": layer.bias is not None,
            "w_bits": int(layer.w_bits),
            "in_bits": int(layer.in_bits),
            "inter_bits": int(layer.inter_bits),
            "out_bits": int(layer.out_bits),
            "acc_bits": int(layer.acc_bits),
            "in_exp": int(layer.in_exp),
            "core_exps": [int(e) for e in layer.core_exps],
            "step_exps": [int(e) for e in layer.step_exps],
            "acc_exps": _acc_exps(layer),
            "shifts": [int(s) for s in layer.shifts()],
            "schedule": layer.schedule.to_dict(),
            "cores": cores,
            "bias": bias,
        })
    first, last = net.layers[0], net.layers[-1]
    manifest = {
        "format": ARTIFACT_FORMAT,
        "format_version": ARTIFACT_FORMAT_VERSION,
        "arithmetic": {
            "spec": "docs/arithmetic.md",
            "version": ARITHMETIC_SPEC_VERSION,
            "rounding": ROUNDING,
            "overflow": "saturate",
            "weights": "narrow",
        },
        "producer": {"name": "ttforge", "version": __version__},
        "meta": merged,
        "input": {"features": int(first.in_features), "bits": int(first.in_bits), "exp": int(first.in_exp)},
        "output": {"features": int(last.out_features), "bits": int(last.out_bits), "exp": int(last.out_exp)},
        "layers": layers,
        "tensors": payload.tensors,
        "payload": payload.info(),
    }
    text = dump_json(manifest) + "\n"
    return text.encode("utf-8"), bytes(payload.data)


def meta_text(meta: dict) -> str:
    """A file's ``meta`` as one line for ``ttforge inspect``: ``key=value, ...``, each key
    and value shown as untrusted text (:func:`ttforge.errors.shown`) and cut at
    ``2 * MAX_VALUE_CHARS`` characters (the whole value is in ``--json``)."""
    from ttforge.errors import MAX_VALUE_CHARS, shown

    return ", ".join(f"{shown(k, MAX_VALUE_CHARS)}={shown(v, 2 * MAX_VALUE_CHARS)}" for k, v in meta.items())


def source_name(path: str | os.PathLike | bytes) -> str:
    """What a file's meta records for the file it came from (an artifact's ``source``, a
    training state's ``from``, a decomposed checkpoint's ``source``): the final component
    of the resolved path (``run``, ``model.ttfa``), the same however the path was typed
    (relative, absolute, through a symbolic link) and without the machine's directories,
    so that the same input gives the same bytes anywhere."""
    p = Path(os.path.realpath(file_path(path)))   # realpath: a loop of links is no error here
    return p.name or p.as_posix()   # '/' has no final component


def absolute_data_spec(data: str, base: str | os.PathLike | None = None) -> str:
    """A data set as a training state or a run records it (its ``data_spec``): ``digits``,
    or the IDX directory as an absolute path (``idx:`` kept; ``~`` expanded, as the loader
    does), so that a resume or a command run from another directory reads the same files.

    Parameters
    ----------
    data : str
        The data as given.
    base : path, optional
        The directory a relative path is relative to (a config file's); default the
        current directory.
    """
    if data == "digits":
        return data
    prefix = "idx:" if data.startswith("idx:") else ""
    path = os.path.expanduser(data[len(prefix):])
    return prefix + os.path.abspath(os.path.join(base, path) if base is not None else path)


def arrays_digest(arrays) -> str:
    """The sha256 (hex) of arrays' contents, in order: each one's dtype and shape, then
    its bytes (the same bytes cut at another place are other data). A data set's digest
    (``ttforge.model.data.data_digest``: ``x_train``, ``y_train``, ``x_test``,
    ``y_test``), which runs, artifacts and training states record beside the data's path
    (``meta.data_sha256``) so that a later command can tell whether the path still holds
    that data."""
    h = hashlib.sha256()
    for t in arrays:
        a = np.ascontiguousarray(t)
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def dump_json(obj: Any, indent: str = "") -> str:
    """Deterministic, readable JSON: one key per line, lists of scalars on one line."""
    inner = indent + "  "
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{inner}{json.dumps(str(k))}: {dump_json(v, inner)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        return "[\n" + ",\n".join(inner + dump_json(v, inner) for v in obj) + "\n" + indent + "]"
    return json.dumps(obj, ensure_ascii=True, allow_nan=False)


def dumps_artifact(net: IntNetwork, meta: dict | None = None) -> bytes:
    """The artifact of ``net`` as bytes (what :func:`save_artifact` writes)."""
    return pack(*_build(net, meta))


def save_artifact(net: IntNetwork, path: str | os.PathLike, meta: dict | None = None) -> Path:
    """Write ``net`` (and ``meta``, JSON data merged over ``net.meta``) to one file, atomically.

    The bytes are built in memory first; they reach ``path`` through a temporary file in
    the same directory and ``os.replace``, so an error never leaves a partial artifact.
    By convention the file is named ``*.ttfa``.
    """
    from ttforge.atomic import atomic_write_bytes

    return atomic_write_bytes(path, dumps_artifact(net, meta))


# ---------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------
def _open(data: bytes, r: ManifestReader) -> tuple[dict, bytes]:
    """The manifest and the payload of an artifact's bytes (container-level checks)."""
    if not data:
        raise r.fail("is empty (0 bytes); it is not a ttforge artifact (write one with save_artifact)")
    if data[:4] != b"PK\x03\x04":
        raise r.fail("is not a ttforge artifact (no ZIP signature); give a .ttfa file written by save_artifact")
    check_member_count(data, r.fail)
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
    except Exception as e:  # noqa: BLE001 - zipfile raises many kinds on a damaged directory
        raise r.fail(f"is truncated or damaged ({len(data)} bytes; {type(e).__name__}: {e}); "
                     f"re-copy it") from None
    with z:
        infos = z.infolist()
        names = [i.filename for i in infos]
        if MANIFEST not in names:
            raise r.fail(f"is not a ttforge artifact (no {MANIFEST} member); give a .ttfa file written by save_artifact")
        check_container(z, r.fail, len(data))

        def read(name: str) -> bytes:
            try:
                return z.read(name)
            except zipfile.BadZipFile as e:
                raise r.fail(f"is corrupt: member {name} fails its ZIP check ({e}); re-copy it") from None
            except Exception as e:  # noqa: BLE001 - any failure of a damaged member is one line
                raise r.fail(f"is damaged: member {name} cannot be read ({type(e).__name__}: {e}); re-copy it") from None

        manifest = parse_manifest(read(MANIFEST), r.fail)
        if not isinstance(manifest, dict) or manifest.get("format") != ARTIFACT_FORMAT:
            from ttforge.ir.train_state import STATE_FORMAT

            if isinstance(manifest, dict) and manifest.get("format") == STATE_FORMAT:
                raise r.fail("is a training state (ttforge train-int), not an artifact: the training engine "
                             "takes it (generate --train, train-board); its artifact is the model.ttfa "
                             "train-int writes beside it")
            raise r.fail(f"is not a ttforge artifact ({MANIFEST} lacks format={ARTIFACT_FORMAT!r})")
        version = manifest.get("format_version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise r.fail(f"has an unknown format_version {show(version)}; it is damaged")
        if version > ARTIFACT_FORMAT_VERSION:
            raise r.fail(
                f"has format_version {version}, written by a newer ttforge (this one reads "
                f"{ARTIFACT_FORMAT_VERSION}); upgrade ttforge"
            )
        member = r.get(r.get(manifest, "payload", ""), "member", "payload")
        if member != PAYLOAD or PAYLOAD not in names:
            raise r.fail(f"has no {PAYLOAD} payload member; it is damaged")
        payload = read(PAYLOAD)
        producer = r.get(manifest, "producer", "")
        for key in ("name", "version"):
            if not isinstance(r.get(producer, key, "producer"), str):
                raise r.fail(f"manifest field producer.{key} must be a string")
    return manifest, payload


def _check_arithmetic(manifest: dict, r: ManifestReader) -> None:
    ar = r.get(manifest, "arithmetic", "")
    version = r.int_(ar, "version", "arithmetic")
    if version != ARITHMETIC_SPEC_VERSION:
        hint = "upgrade ttforge" if version > ARITHMETIC_SPEC_VERSION else "it is damaged"
        raise r.fail(f"follows arithmetic spec version {version}; this ttforge implements "
                     f"{ARITHMETIC_SPEC_VERSION}; {hint}")
    for key, want in (("rounding", ROUNDING), ("overflow", "saturate"), ("weights", "narrow")):
        got = r.get(ar, key, "arithmetic")
        if key == "rounding" and got in ROUNDING_ALIASES:
            continue  # the same rule under its earlier name
        if got != want:
            raise r.fail(f"manifest field arithmetic.{key}={show(got)}; this ttforge only executes {want!r}")


def _layer(i: int, d: dict, tensors: dict[str, np.ndarray], r: ManifestReader) -> IntLayer:
    w = f"layers[{i}]"
    sd = r.get(d, "schedule", w)
    r.get(sd, "steps", f"{w}.schedule")   # required: a reader executes them (docs/artifact.md)
    for key in ("out_modes", "in_modes", "ranks"):
        v = r.get(sd, key, f"{w}.schedule")
        if isinstance(v, list) and (len(v) > 64 or any(isinstance(e, int) and not isinstance(e, bool)
                                                        and e > MAX_LAYER_ELEMENTS for e in v)):
            raise r.fail(f"manifest field {w}.schedule.{key}={show(v)} is out of range (at most 64 "
                         f"entries of at most {MAX_LAYER_ELEMENTS:,})")
    try:
        sched = ContractionSchedule.from_dict(sd)
    except TTForgeError as e:
        raise r.fail(f"{w}.schedule: {e}") from None
    except (TypeError, ValueError) as e:
        raise r.fail(f"{w}.schedule is malformed ({e})") from None
    shape = sched.shape
    sizes = [shape.in_size] + [st.A * st.K * st.Q for st in sched.steps] + [st.A * st.P * st.Q for st in sched.steps]
    if max(sizes) > MAX_LAYER_ELEMENTS:
        raise r.fail(f"{w} has an intermediate of {max(sizes):,} elements per sample, above ttforge's "
                     f"limit of {MAX_LAYER_ELEMENTS:,}; it is damaged or not from ttforge")
    kind = r.get(d, "kind", w)
    if kind != ("dense" if shape.d == 1 else "tt"):
        raise r.fail(f"{w}.kind={show(kind)} but its schedule has {shape.d} cores "
                     f"(dense is exactly 1 core, tt more)")
    # the ranges IntLayer itself refuses outside (one table: what builds, saves and loads)
    f = {k: r.int_(d, k, w, lo, hi) for k, (lo, hi) in LAYER_INT_RANGES.items()}
    bits = {k: f[k] for k in ("w_bits", "in_bits", "inter_bits", "out_bits", "acc_bits")}
    in_f, out_f, in_exp = f["in_features"], f["out_features"], f["in_exp"]
    core_exps = r.ints(d, "core_exps", w, shape.d)
    step_exps = r.ints(d, "step_exps", w, shape.d)
    for key, values in (("core_exps", core_exps), ("step_exps", step_exps)):
        if any(not EXP_RANGE[0] <= e <= EXP_RANGE[1] for e in values):
            raise r.fail(f"manifest field {w}.{key}={show(values)} is out of range "
                         f"{EXP_RANGE[0]}..{EXP_RANGE[1]}")
    relu = r.bool_(d, "relu", w)
    has_bias = r.bool_(d, "has_bias", w)
    names = r.get(d, "cores", w)
    if not isinstance(names, list) or len(names) != shape.d:
        raise r.fail(f"{w}.cores must list {shape.d} tensor names (one per core)")
    def span(array: str) -> tuple[int, int]:   # the range IntLayer.value_range gives, from the manifest
        width, narrow = LAYER_ARRAY_RANGES[array]
        return value_range(bits[width], narrow)

    lo, hi = span("cores")
    cores = []
    for k, (name, want) in enumerate(zip(names, shape.core_shapes)):
        if not isinstance(name, str) or name not in tensors:
            raise r.fail(f"{w}.cores[{k}] names tensor {show(name)}, which the tensor table lacks")
        g = tensors[name]
        if tuple(g.shape) != want:
            raise r.fail(f"{w} core {k} ({name}) has shape {list(g.shape)} but the schedule "
                         f"needs {list(want)} (r, m, n, r')")
        if g.size and (g.min() < lo or g.max() > hi):
            raise r.fail(f"{w} core {k} ({name}) has values in [{g.min()}, {g.max()}], outside the "
                         f"{bits['w_bits']}-bit narrow range [{lo}, {hi}]")
        cores.append(g)
    bias = None
    bias_name = r.get(d, "bias", w)
    if has_bias != (bias_name is not None):
        raise r.fail(f"{w}.has_bias={has_bias} disagrees with {w}.bias={show(bias_name)}")
    if has_bias:
        if not isinstance(bias_name, str) or bias_name not in tensors:
            raise r.fail(f"{w}.bias names tensor {show(bias_name)}, which the tensor table lacks")
        bias = tensors[bias_name]
        if tuple(bias.shape) != (out_f,):
            raise r.fail(f"{w} bias ({bias_name}) has shape {list(bias.shape)}; expected [{out_f}]")
        blo, bhi = span("bias")
        if bias.size and (bias.min() < blo or bias.max() > bhi):
            raise r.fail(f"{w} bias ({bias_name}) leaves the {bits['acc_bits']}-bit accumulator range")
    try:
        layer = IntLayer(in_features=in_f, out_features=out_f, schedule=sched, cores=tuple(cores),
                         core_exps=tuple(core_exps), w_bits=bits["w_bits"], in_bits=bits["in_bits"],
                         in_exp=in_exp, inter_bits=bits["inter_bits"], out_bits=bits["out_bits"],
                         step_exps=tuple(step_exps), acc_bits=bits["acc_bits"], bias=bias, relu=relu)
    except TTForgeError as e:
        raise r.fail(f"{w}: {e}") from None
    for key, derived in (("acc_exps", _acc_exps(layer)), ("shifts", list(layer.shifts()))):
        stored = r.ints(d, key, w, shape.d)
        if stored != derived:
            raise r.fail(f"{w}.{key}={show(stored)} do not match the exponents (they give {derived}); "
                         f"the artifact is inconsistent, re-export it")
    return layer


def loads_artifact(data: bytes, source: str = "<bytes>") -> IntNetwork:
    """Parse and verify an artifact's bytes; ``source`` names it in error messages."""
    r = ManifestReader(source)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ArtifactError(f"loads_artifact takes the file's bytes, got {type(data).__name__}; "
                            f"give a path to load_artifact")
    manifest, payload = _open(bytes(data), r)
    _check_arithmetic(manifest, r)
    tensors = read_tensors(manifest, payload, r)
    layers_d = r.get(manifest, "layers", "")
    if not isinstance(layers_d, list) or not layers_d:
        raise r.fail("manifest field layers must be a non-empty list")
    layers = tuple(_layer(i, d, tensors, r) for i, d in enumerate(layers_d))
    meta = r.get(manifest, "meta", "")
    if not isinstance(meta, dict):
        raise r.fail("manifest field meta must be a JSON object")
    try:
        net = IntNetwork(layers, meta=meta)
    except TTForgeError as e:
        raise r.fail(f"layers do not chain: {e}") from None
    first, last = layers[0], layers[-1]
    for key, want in (("input", {"features": first.in_features, "bits": first.in_bits, "exp": first.in_exp}),
                      ("output", {"features": last.out_features, "bits": last.out_bits, "exp": last.out_exp})):
        got = r.get(manifest, key, "")
        if got != want:
            raise r.fail(f"manifest field {key}={show(got)} disagrees with the layers ({want}); re-export it")
    return net


def load_artifact(path: str | os.PathLike) -> IntNetwork:
    """Read and verify an artifact file; its meta is in the returned network's ``meta``.

    Every problem (not an artifact, newer format, checksum mismatch, truncation,
    out-of-range values, inconsistent shapes or shifts, layers that do not chain) is
    one line, an :class:`~ttforge.errors.ArtifactError`.
    """
    given = path = file_path(path)   # its trailing '/', if any, is read_bounded's to judge
    path = Path(path)
    if path.is_dir():
        raise ArtifactError(f"{show_path(path)} is a directory; give the artifact file (e.g. model.ttfa)")
    if not os.path.lexists(path):
        raise ArtifactError(f"{show_path(path)} does not exist; give the path of a ttforge artifact (.ttfa)")
    # a regular file of bounded size, checked before reading (a FIFO or /dev/zero never ends)
    data = read_bounded(given, "artifact", MAX_ARTIFACT_BYTES, ArtifactError)
    return loads_artifact(data, show_path(path))
