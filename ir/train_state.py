"""The training-state file: one versioned, hashed, atomically written file per state.

The container is the artifact's (``docs/artifact.md``): a ZIP, every member stored, with
``manifest.json`` (format ``ttforge-train-state``, the config, counters, RNG state,
exponents, schedules and a tensor table with a sha256 per tensor) and ``tensors.bin``
(little-endian two's complement integers, 8-byte aligned, sha256 in the manifest).
Writing is deterministic (no timestamps) and atomic (:mod:`ttforge.atomic`); loading
checks the format, its version, every checksum, every shape and range and the
consistency of the state, and reports each problem in one line (an
:class:`~ttforge.errors.ArtifactError` naming the file). ``docs/arithmetic.md``
("Training") specifies what the fields mean; by convention the file ends in ``.ttts``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any


from ttforge import __version__
from ttforge.errors import ArtifactError, ConfigError, TTForgeError, file_path, show, show_path
from ttforge.limits import MAX_ARTIFACT_BYTES, MAX_BATCH, MAX_MANIFEST_BYTES, file_kind, read_bounded
from ttforge.ir.arith import ARITHMETIC_SPEC_VERSION, ROUNDING, shift_range
from ttforge.ir.artifact import dump_json, meta_text
from ttforge.ir.container import (MANIFEST, PAYLOAD, ManifestReader, Payload, check_container, check_member_count,
                                  pack, parse_manifest, read_tensors)
from ttforge.ir.schedule import ContractionSchedule
from ttforge.ir.train import (_MAX_COUNTER, STATE_ARRAY_RANGES, TRAIN_SPEC_VERSION, TrainConfig, TrainLayer, TrainState,
                              export_network, forward_shift_problem)

__all__ = ["STATE_FORMAT", "STATE_FORMAT_VERSION", "MANIFEST_SHA256", "manifest_sha256", "dumps_state", "loads_state", "save_state",
           "load_state", "is_state_file", "state_summary"]

STATE_FORMAT = "ttforge-train-state"
#: Version of the container and manifest layout of a training state.
STATE_FORMAT_VERSION = 1
#: The manifest's own checksum: the ZIP CRC-32 of a member is rewritten by whatever
#: re-zips it, so an edited meta, counter or exponent loaded as the state's own. Not a
#: field a reader needs to compute the right result, so no new format version: a state
#: written before it (without the key) loads as before.
MANIFEST_SHA256 = "manifest_sha256"


def manifest_sha256(manifest: dict) -> str:
    """The sha256 of ``manifest`` without its :data:`MANIFEST_SHA256` key, over its
    canonical JSON (keys sorted, no spaces, ASCII): the value parsed, not the text, so
    it is the same whatever the layout the file was written in."""
    body = {k: v for k, v in manifest.items() if k != MANIFEST_SHA256}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _build(state: TrainState) -> tuple[bytes, bytes]:
    cfg = state.config
    payload = Payload()
    add = payload.add
    (mw, mn), (bw, bn) = STATE_ARRAY_RANGES["masters"], STATE_ARRAY_RANGES["bias"]

    layers = []
    for i, L in enumerate(state.layers):
        layers.append({
            "in_features": int(L.in_features),
            "out_features": int(L.out_features),
            "relu": bool(L.relu),
            "schedule": L.schedule.to_dict(),
            "master_exps": [int(e) for e in L.master_exps],
            "bias_exp": int(L.bias_exp),
            "step_exps": [int(e) for e in L.step_exps],
            "grad_exps": [int(e) for e in L.grad_exps],
            # stored in the width of its range (STATE_ARRAY_RANGES); add refuses a value outside it
            "masters": [add(f"layers.{i}.masters.{k}", g, getattr(cfg, mw), narrow=mn)
                        for k, g in enumerate(L.masters)],
            "bias": None if L.bias is None else add(f"layers.{i}.bias", L.bias, getattr(cfg, bw), narrow=bn),
        })
    try:
        meta = json.loads(json.dumps(state.meta, sort_keys=True, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise ArtifactError(f"state meta is not plain JSON data ({e})") from None
    manifest = {
        "format": STATE_FORMAT,
        "format_version": STATE_FORMAT_VERSION,
        "arithmetic": {"spec": "docs/arithmetic.md", "version": ARITHMETIC_SPEC_VERSION,
                       "training_version": TRAIN_SPEC_VERSION, "rounding": ROUNDING,
                       "overflow": "saturate", "weights": "narrow"},
        "producer": {"name": "ttforge", "version": __version__},
        "meta": meta,
        "config": state.config.to_dict(),
        "counters": {"step": int(state.step), "epoch": int(state.epoch), "words": int(state.words)},
        "rng": {"generator": "xorshift32", "state": int(state.rng)},
        "lr_shift": int(state.lr_shift),
        "in_exp": int(state.in_exp),
        "layers": layers,
        "tensors": payload.tensors,
        "payload": payload.info(),
    }
    manifest[MANIFEST_SHA256] = manifest_sha256(manifest)
    return (dump_json(manifest) + "\n").encode("utf-8"), bytes(payload.data)


def dumps_state(state: TrainState) -> bytes:
    """The state file's bytes (deterministic: equal states give equal bytes)."""
    if not isinstance(state, TrainState):
        raise ArtifactError(f"save_state needs a TrainState, got {type(state).__name__}")
    bad = forward_shift_problem(state)
    if bad is not None:   # loads_state would refuse the file: never write it
        i, t, s = bad
        raise ConfigError(f"this state cannot be saved: layer {i} step {t} shifts by {s}, outside "
                          f"{'..'.join(map(str, shift_range(state.config.acc_bits)))} at acc_bits="
                          f"{state.config.acc_bits}, so no step can run it and load_state would refuse it")
    return pack(*_build(state))


def save_state(state: TrainState, path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` atomically (temporary name, then rename)."""
    from ttforge.atomic import atomic_write_bytes

    return atomic_write_bytes(path, dumps_state(state))


# ---------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------
def _open(data: bytes, r: ManifestReader) -> tuple[dict, bytes]:
    if not data:
        raise r.fail("is empty (0 bytes); it is not a ttforge training state")
    if data[:4] != b"PK\x03\x04":
        raise r.fail("is not a ttforge training state (no ZIP signature); give a .ttts file written by "
                     "ttforge train-int")
    check_member_count(data, r.fail)
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
    except Exception as e:  # noqa: BLE001 - zipfile raises many kinds on a damaged directory
        raise r.fail(f"is truncated or damaged ({len(data)} bytes; {type(e).__name__}: {e}); re-copy it") from None
    with z:
        names = z.namelist()
        if MANIFEST not in names or PAYLOAD not in names:
            raise r.fail(f"is not a ttforge training state (members {show(names[:4])}); give a .ttts file")
        check_container(z, r.fail, len(data))   # the artifact's container rules (ZIP bombs, ...)

        def read(name: str) -> bytes:
            try:
                return z.read(name)
            except Exception as e:  # noqa: BLE001 - any failure of a damaged member is one line
                raise r.fail(f"is damaged: member {name} cannot be read ({e}); re-copy it") from None

        manifest = parse_manifest(read(MANIFEST), r.fail)
        fmt = manifest.get("format") if isinstance(manifest, dict) else None
        if fmt != STATE_FORMAT:
            hint = (" (it is an inference artifact: make a training state from it with: ttforge train-int "
                    "--from ARTIFACT)" if fmt == "ttforge-artifact" else "")
            raise r.fail(f"is not a ttforge training state (format {fmt!r}){hint}")
        version = manifest.get("format_version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise r.fail(f"has an unknown format_version {version!r}; it is damaged")
        if version > STATE_FORMAT_VERSION:
            raise r.fail(f"has format_version {version}, written by a newer ttforge (this one reads "
                         f"{STATE_FORMAT_VERSION}); upgrade ttforge")
        _check_manifest_sha256(manifest, r)
        payload = read(PAYLOAD)
    return manifest, payload


def _check_manifest_sha256(manifest: dict, r: ManifestReader) -> None:
    """The manifest against its :data:`MANIFEST_SHA256`, before any field is believed."""
    if MANIFEST_SHA256 not in manifest:
        return   # written before the key existed: its members' ZIP CRC-32 is all it has
    try:
        same = manifest_sha256(manifest) == manifest[MANIFEST_SHA256]
    except (ValueError, RecursionError):   # NaN or a nesting ttforge never writes
        same = False
    if not same:
        raise r.fail(f"is corrupt: {MANIFEST} does not match its {MANIFEST_SHA256} (edited or damaged since "
                     f"ttforge wrote it); re-copy it, or resume from another state")


def loads_state(data: bytes, source: str = "<bytes>") -> TrainState:
    """Parse and verify a state file's bytes; every problem is one line naming ``source``."""
    r = ManifestReader(source, noun="state file")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ArtifactError(f"loads_state takes the file's bytes, got {type(data).__name__}; "
                            f"give a path to load_state")
    manifest, payload = _open(bytes(data), r)
    ar = r.get(manifest, "arithmetic")
    if r.int_(ar, "version", "arithmetic") != ARITHMETIC_SPEC_VERSION:
        raise r.fail(f"follows arithmetic spec version {ar['version']}; this ttforge implements "
                     f"{ARITHMETIC_SPEC_VERSION}")
    tv = r.int_(ar, "training_version", "arithmetic")
    if tv != TRAIN_SPEC_VERSION:
        raise r.fail(f"follows training spec version {tv}; this ttforge implements {TRAIN_SPEC_VERSION}")
    tensors = read_tensors(manifest, payload, r)
    cfg_d = r.get(manifest, "config")
    if not isinstance(cfg_d, dict):
        raise r.fail("manifest field config must be a JSON object")
    try:
        cfg = TrainConfig.from_dict(cfg_d)
    except TTForgeError as e:
        raise r.fail(f"config: {e}") from None
    except TypeError as e:
        raise r.fail(f"config is malformed ({e})") from None
    layers_d = r.get(manifest, "layers")
    if not isinstance(layers_d, list) or not layers_d:
        raise r.fail("manifest field layers must be a non-empty list")
    layers = []
    for i, d in enumerate(layers_d):
        w = f"layers[{i}]"
        try:
            sched = ContractionSchedule.from_dict(r.get(d, "schedule", w))
        except TTForgeError as e:
            raise r.fail(f"{w}.schedule: {e}") from None
        except (TypeError, ValueError, AttributeError) as e:
            raise r.fail(f"{w}.schedule is malformed ({e})") from None
        nd = sched.shape.d
        names = r.get(d, "masters", w)
        if not isinstance(names, list) or len(names) != nd or any(n not in tensors for n in names
                                                                  if isinstance(n, str)):
            raise r.fail(f"{w}.masters must name {nd} tensors of the tensor table")
        if any(not isinstance(n, str) for n in names):
            raise r.fail(f"{w}.masters must be tensor names")
        bname = r.get(d, "bias", w)
        if bname is not None and (not isinstance(bname, str) or bname not in tensors):
            raise r.fail(f"{w}.bias names tensor {bname!r}, which the tensor table lacks")
        relu = r.get(d, "relu", w)
        if not isinstance(relu, bool):
            raise r.fail(f"manifest field {w}.relu must be true or false")
        layers.append(TrainLayer(
            in_features=r.int_(d, "in_features", w, 1), out_features=r.int_(d, "out_features", w, 1),
            schedule=sched, relu=relu, masters=tuple(tensors[n] for n in names),
            master_exps=tuple(r.ints(d, "master_exps", w, nd)), bias=None if bname is None else tensors[bname],
            bias_exp=r.int_(d, "bias_exp", w), step_exps=tuple(r.ints(d, "step_exps", w, nd)),
            grad_exps=tuple(r.ints(d, "grad_exps", w, nd))))
    counters = r.get(manifest, "counters")
    rng = r.get(manifest, "rng")
    if r.get(rng, "generator", "rng") != "xorshift32":
        raise r.fail("manifest field rng.generator must be 'xorshift32'")
    meta = r.get(manifest, "meta")
    if not isinstance(meta, dict):
        raise r.fail("manifest field meta must be a JSON object")
    try:
        state = TrainState(config=cfg, layers=tuple(layers), in_exp=r.int_(manifest, "in_exp"),
                          lr_shift=r.int_(manifest, "lr_shift", "", 0, 62),
                          rng=r.int_(rng, "state", "rng", 1, 0xFFFFFFFF),
                          words=r.int_(counters, "words", "counters", 0, _MAX_COUNTER),
                          step=r.int_(counters, "step", "counters", 0, _MAX_COUNTER),
                          epoch=r.int_(counters, "epoch", "counters", 0, _MAX_COUNTER), meta=meta)
        # the forward pass's shifts within shift_range, as the artifact loader checks them:
        # what loads, the trainer computes (the exponents alone are checked by check_state)
        export_network(state)
    except TTForgeError as e:
        raise r.fail(f"inconsistent state: {e}") from None
    return state


def load_state(path: str | os.PathLike) -> TrainState:
    """Read and verify a training-state file (one-line ArtifactError on any problem)."""
    given = path = file_path(path)   # its trailing '/', if any, is read_bounded's to judge
    path = Path(path)
    if path.is_dir():
        raise ArtifactError(f"{show_path(path)} is a directory; give the state file (e.g. run/state.ttts)")
    if not os.path.lexists(path):
        raise ArtifactError(f"{show_path(path)} does not exist; give the path of a training state (.ttts)")
    data = read_bounded(given, "training state", MAX_ARTIFACT_BYTES, ArtifactError)
    return loads_state(data, show_path(path))


def is_state_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a ZIP whose manifest says ``ttforge-train-state`` (no full check)."""
    try:
        if file_kind(os.stat(path).st_mode) is not None:
            return False   # a FIFO or a device is never opened here
        with zipfile.ZipFile(path) as z:
            info = z.getinfo(MANIFEST)
            if info.file_size > MAX_MANIFEST_BYTES or info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 1:
                return False
            return json.loads(z.read(MANIFEST)).get("format") == STATE_FORMAT
    except Exception:  # noqa: BLE001 - anything unreadable is "not a state"; the loader says why
        return False


def _meta_int_ok(v: object, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def meta_int(state: TrainState, key: str, default: int, lo: int, hi: int, fix: str) -> int:
    """The state's ``meta[key]`` (``default`` when absent): an integer (not a bool, not a
    float, not a string) in ``lo..hi``, else a one-line :class:`ConfigError` naming the key
    and ``fix`` (e.g. ``"give --batch explicitly"``). The meta is the run's record, which
    the loader does not check (a batch of ``"abc"`` was exit 70 at resume, ``1.5``
    trained with batch 1)."""
    v = state.meta.get(key, default)
    if not _meta_int_ok(v, lo, hi):
        raise ConfigError(f"the state's meta {key}={show(v)} is not an integer in {lo}..{hi:,}; {fix}")
    return v


def meta_epochs(state: TrainState, key: str, hi: int, fix: str) -> list[int]:
    """The state's ``meta[key]`` (``[]`` when absent): a list of integer epochs in
    ``1..hi``, else one line as :func:`meta_int` (a string ``"12"`` decayed after epochs 1
    and 2)."""
    v = state.meta.get(key, [])
    if not (isinstance(v, list) and all(_meta_int_ok(e, 1, hi) for e in v)):
        raise ConfigError(f"the state's meta {key}={show(v)} is not a list of epochs in 1..{hi:,}; {fix}")
    return list(v)


def meta_list(state: TrainState, key: str, fix: str) -> list:
    """The state's ``meta[key]`` (``[]`` when absent) if it is a list (its items are the
    caller's to check), else one line as :func:`meta_int`."""
    v = state.meta.get(key, [])
    if not isinstance(v, list):
        raise ConfigError(f"the state's meta {key}={show(v)} is not a list; {fix}")
    return v


def memory_batch(state: TrainState, batch: int | None = None) -> tuple[int, str]:
    """The batch the training memory is stated for, and where it comes from: ``batch``
    (``"--batch"``), else the batch the state was trained with (``"state"``: its meta),
    else 32 (``"default"``)."""
    if batch is not None:
        return int(batch), "--batch"
    b = state.meta.get("batch")
    if _meta_int_ok(b, 1, MAX_BATCH):
        return b, "state"
    return 32, "default"


#: The MAC lanes ``ttforge inspect`` states a state's training memory for by default: those
#: of the engine ``ttforge generate --train`` makes, and ``ttforge build --train`` on the ULX3S.
INSPECT_LANES = 4


def state_summary(state: TrainState, path: str | None = None, batch: int | None = None,
                  lanes: int = INSPECT_LANES, engine=None) -> dict[str, Any]:
    """What ``ttforge inspect`` shows for a state: counters, config, per-layer exponents and
    training memory for ``batch`` (:func:`memory_batch`) and ``lanes``.

    The memory is the bit-packed count the step needs
    (:func:`~ttforge.ir.train_memory.training_memory`) and, under ``"engine"``,
    ``engine(state, batch, lanes)``: the memory of the training engine ttforge generates
    and whether it fits a board (:func:`ttforge.hw.trainer.program.engine_memory`,
    passed in by the command: ir does not import hw). Without ``engine`` it is None and
    nothing is said about a board.
    """
    from ttforge.ir.train_memory import training_memory

    b, src = memory_batch(state, batch)
    layers = []
    for i, L in enumerate(state.layers):
        s = L.schedule.shape
        layers.append({
            "kind": "dense" if s.d == 1 else "tt", "in_features": L.in_features,
            "out_features": L.out_features, "out_modes": list(s.out_modes), "in_modes": list(s.in_modes),
            "ranks": list(s.ranks), "order": list(L.schedule.order), "relu": L.relu,
            "master_exps": list(L.master_exps), "bias_exp": L.bias_exp, "step_exps": list(L.step_exps),
            "grad_exps": list(L.grad_exps), "params": int(sum(g.size for g in L.masters)
                                                          + (0 if L.bias is None else L.bias.size)),
        })
    return {"state": path, "format": STATE_FORMAT, "format_version": STATE_FORMAT_VERSION,
            "training_version": TRAIN_SPEC_VERSION, "config": state.config.to_dict(),
            "step": state.step, "epoch": state.epoch, "words": state.words, "rng": state.rng,
            "lr_shift": state.lr_shift, "in_exp": state.in_exp, "meta": state.meta, "layers": layers,
            "memory": {**training_memory(state, batch=b, lanes=lanes), "batch_from": src,
                       "engine": None if engine is None else engine(state, b, lanes)}}


def inspect_state_run(path: str | os.PathLike, as_json: bool = False, batch: int | None = None,
                      lanes: int | None = None, engine=None) -> int:
    """``ttforge inspect STATE``: counters, widths, per-layer exponents, training memory at
    ``batch`` (:func:`memory_batch`) with ``lanes`` (default :data:`INSPECT_LANES`) and its
    ratio against FP32 dense training with Adam (``engine``: :func:`state_summary`)."""
    state = load_state(path)
    info = state_summary(state, str(path), batch, INSPECT_LANES if lanes is None else lanes, engine)
    if as_json:
        print(dump_json(info))
        return 0
    from rich.console import Console
    from rich.table import Table

    from ttforge.errors import shown
    from ttforge.ir.train_memory import engine_text, ratio_words

    c = Console(emoji=False)   # ":x:" in a meta value stays ":x:"
    cfg = state.config
    c.print(f"[bold]{shown(path)}[/]: {STATE_FORMAT} v{STATE_FORMAT_VERSION}, training spec v{TRAIN_SPEC_VERSION}, "
            f"step {state.step}, epoch {state.epoch}, {state.words:,} xorshift32 words drawn "
            f"(state {state.rng:#010x}), learning rate 2^-{state.lr_shift}, rounding {cfg.rounding}",
            highlight=False)
    c.print(f"widths: cores {cfg.w_bits} (master {cfg.master_bits}), activations {cfg.act_bits}, "
            f"intermediates {cfg.inter_bits}, accumulators {cfg.acc_bits}, gradients {cfg.grad_bits}, "
            f"probabilities 2^-{cfg.prob_bits}, bias {cfg.bias_bits}", highlight=False)
    if state.meta:
        c.print("meta: " + meta_text(state.meta), highlight=False)
    t = Table(title="Layers", title_justify="left")
    for col in ("#", "kind", "in->out", "ranks", "order", "params", "master exps", "bias exp", "step exps",
                "grad exps"):
        t.add_column(col, justify="left" if col in ("kind", "order") else "right", no_wrap=True)
    for i, L in enumerate(info["layers"]):
        t.add_row(str(i), L["kind"], f"{L['in_features']}->{L['out_features']}",
                  ",".join(map(str, L["ranks"])), ",".join(map(str, L["order"])), f"{L['params']:,}",
                  ",".join(map(str, L["master_exps"])), str(L["bias_exp"]),
                  ",".join(map(str, L["step_exps"])), ",".join(map(str, L["grad_exps"])))
    c.print(t)
    mem = info["memory"]
    m = Table(title=f"Training memory the step needs, batch {mem['batch']}, {mem['lanes']} lanes "
                    f"(bytes, counted bit-packed) vs FP32 dense + Adam", title_justify="left")
    m.add_column("item")
    m.add_column("bytes", justify="right")
    for k, v in mem["items"].items():
        m.add_row(k.replace("_", " "), f"{v:,}", end_section=k == "rng_and_exponents")
    m.add_row("FP32 dense + Adam", f"{mem['fp32_dense_adam']['total']:,}")
    m.add_row("total vs FP32 dense + Adam", ratio_words(mem["ratio"]))
    c.print(m)
    eng = mem["engine"]
    if eng is not None and "why" not in eng:
        e = Table(title=f"Memories of the training engine generate --train / build --train make "
                        f"({eng['lanes']} lanes, {eng['slots']} slots, depths powers of two)", title_justify="left")
        e.add_column("memory")
        e.add_column("bits", justify="right")
        for k, v in eng["parts"].items():
            e.add_row(k, f"{v:,}")
        e.add_row("total", f"{eng['bits']:,} ({eng['bytes']:,} bytes)")
        c.print(e)
    sizes = "-".join(str(n) for n in [state.in_features] + [L.out_features for L in state.layers])
    src = {"--batch": "given by --batch", "state": "the batch the state was trained with; --batch B states "
           "another", "default": "no batch in the state; --batch B states another"}[mem["batch_from"]]
    fp32 = mem["fp32_dense_adam"]["total"]
    c.print(f"training memory at batch {mem['batch']} ({src}), counted bit-packed as arXiv:2104.03420 counts "
            f"it (what the step's data need, not what an engine holds): {mem['items']['total']:,} bytes against "
            f"{fp32:,} for FP32 dense training with Adam of the same sizes ({sizes}), {ratio_words(mem['ratio'])}; "
            f"without the batch's buffers (weights and optimizer state only) {ratio_words(mem['state_ratio'])}",
            highlight=False)
    if eng is not None:
        c.print(engine_text(eng, fp32), highlight=False)
    return 0
