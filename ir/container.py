"""The container shared by the artifact (``.ttfa``) and the training state (``.ttts``).

A ZIP file with exactly two *stored* members: ``manifest.json`` (UTF-8 JSON, at most
``MAX_MANIFEST_BYTES``) and ``tensors.bin`` (every tensor as little-endian two's
complement integers, row-major, each at an offset that is a multiple of ``ALIGN``, with a
sha256 per tensor and one for the payload). ``docs/artifact.md`` specifies it; this
module writes it deterministically and checks everything it reads, each problem one
line (:class:`~ttforge.errors.ArtifactError`). What the manifest says about layers is
the business of :mod:`.artifact` and :mod:`.train_state`.
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import math
import zipfile
from typing import Any

import numpy as np

from ttforge.errors import ArtifactError, show
from ttforge.ir.arith import value_range
from ttforge.ir.executor import frozen_array
from ttforge.limits import MAX_MANIFEST_BYTES

__all__ = ["MANIFEST", "PAYLOAD", "ALIGN", "DTYPES", "dtype_for", "Payload", "pack", "ManifestReader",
           "check_container", "parse_manifest", "read_tensors"]

MANIFEST = "manifest.json"
PAYLOAD = "tensors.bin"
ALIGN = 8
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest ZIP date: no timestamps, reproducible bytes
DTYPES = {"int8": 8, "int16": 16, "int32": 32, "int64": 64}


# ---------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------
def dtype_for(bits: int) -> str:
    """The narrowest little-endian integer dtype that holds a signed ``bits``-bit value."""
    for name, width in DTYPES.items():
        if bits <= width:
            return name
    raise ArtifactError(f"a {bits}-bit tensor does not fit int64")  # pragma: no cover


class Payload:
    """The payload being built: :meth:`add` appends a tensor at the next aligned offset
    and returns its name; :attr:`tensors` is the manifest's tensor table and :meth:`info`
    its ``payload`` entry."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.tensors: list[dict[str, Any]] = []

    def add(self, name: str, array: np.ndarray, bits: int, narrow: bool = False) -> str:
        """Append ``array``, whose every value lies in the signed ``bits``-bit range
        (``narrow``: without ``-2^(bits-1)``), stored in :func:`dtype_for` ``bits``. A value
        outside that range is a one-line ArtifactError naming the tensor: a cast would wrap
        it, and the file would hold another network than the one computed."""
        a = np.asarray(array)
        if not np.issubdtype(a.dtype, np.integer):
            raise ArtifactError(f"cannot store {name}: it has dtype {a.dtype}, not integers")
        lo, hi = value_range(bits, narrow)
        if a.size and (a.min() < lo or a.max() > hi):
            raise ArtifactError(
                f"cannot store {name}: its values in [{a.min()}, {a.max()}] leave the {bits}-bit"
                f"{' narrow' if narrow else ''} range [{lo}, {hi}] it is declared in (was the array "
                f"changed after the layer or state was built? build a new one with dataclasses.replace)")
        dtype = dtype_for(bits)
        data = np.ascontiguousarray(a.astype(np.int64).astype("<" + np.dtype(dtype).str[1:]))
        raw = data.tobytes(order="C")
        self.data.extend(b"\0" * (-len(self.data) % ALIGN))
        self.tensors.append({
            "name": name,
            "offset": len(self.data),
            "nbytes": len(raw),
            "shape": [int(s) for s in data.shape],
            "dtype": dtype,
            "sha256": hashlib.sha256(raw).hexdigest(),
        })
        self.data.extend(raw)
        return name

    def info(self) -> dict[str, Any]:
        return {
            "member": PAYLOAD,
            "byte_order": "little",
            "alignment": ALIGN,
            "nbytes": len(self.data),
            "sha256": hashlib.sha256(bytes(self.data)).hexdigest(),
        }


def _zip_member(z: zipfile.ZipFile, name: str, data: bytes) -> None:
    # fixed date, mode and system: the same members give the same bytes
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
    info.compress_type = zipfile.ZIP_STORED
    info.create_system = 3
    info.external_attr = 0o644 << 16
    z.writestr(info, data)


def pack(manifest: bytes, payload: bytes) -> bytes:
    """The container's bytes: the two members, stored, in this order."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        _zip_member(z, MANIFEST, manifest)
        _zip_member(z, PAYLOAD, payload)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------
class ManifestReader:
    """Validates a manifest field by field; every failure names the field and the file
    (``source``); ``noun`` is what the file is, for the message of a missing field."""

    def __init__(self, source: str, noun: str = "artifact") -> None:
        self.source = source
        self.noun = noun

    def fail(self, msg: str) -> ArtifactError:
        return ArtifactError(f"{self.source}: {' '.join(str(msg).split())}")

    def get(self, obj: Any, key: str, where: str = "") -> Any:
        if not isinstance(obj, dict):
            raise self.fail(f"{where or 'manifest'} must be a JSON object")
        if key not in obj:
            raise self.fail(f"manifest field {where + '.' if where else ''}{key} is missing; the {self.noun} is damaged or not from ttforge")
        return obj[key]

    def int_(self, obj: Any, key: str, where: str = "", lo: int | None = None, hi: int | None = None) -> int:
        v = self.get(obj, key, where)
        name = f"{where + '.' if where else ''}{key}"
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.fail(f"manifest field {name}={show(v)} must be an integer")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            span = f"range {lo}..{hi}" if lo is not None and hi is not None else (
                f"range: it must be >= {lo}" if lo is not None else f"range: it must be <= {hi}")
            raise self.fail(f"manifest field {name}={show(v)} is out of {span}")
        return v

    def ints(self, obj: Any, key: str, where: str, n: int | None = None) -> list[int]:
        v = self.get(obj, key, where)
        name = f"{where}.{key}"
        if not isinstance(v, list) or any(isinstance(e, bool) or not isinstance(e, int) for e in v):
            raise self.fail(f"manifest field {name}={show(v)} must be a list of integers")
        if n is not None and len(v) != n:
            raise self.fail(f"manifest field {name} has {len(v)} entries; the schedule needs {n}")
        return v

    def bool_(self, obj: Any, key: str, where: str) -> bool:
        v = self.get(obj, key, where)
        if not isinstance(v, bool):
            raise self.fail(f"manifest field {where}.{key}={show(v)} must be true or false")
        return v


#: Most members whose names :func:`check_container` reads one by one (a ttforge file
#: holds two or three).
MAX_MEMBERS = 64


def check_member_count(data: bytes, fail, members: tuple[str, ...] = (MANIFEST, PAYLOAD)) -> None:
    """The member count the ZIP's end record declares, checked before :mod:`zipfile`
    reads the central directory: a file of ``MAX_ARTIFACT_BYTES`` can list millions of
    empty members, whose directory alone took minutes to read (and a check of them,
    hours). More than :data:`MAX_MEMBERS` (or a ZIP64 end record, which only more than
    65,535 members need) is ``fail(msg)``; fewer are left to :func:`check_container`,
    which names a duplicate or an extra member; an end record not found, to
    :mod:`zipfile`."""
    at = data.rfind(b"PK\x05\x06", max(0, len(data) - (22 + 0xFFFF)))
    if at < 0 or at + 22 > len(data):
        return
    count = int.from_bytes(data[at + 10:at + 12], "little")
    if count > MAX_MEMBERS:
        many = "more than 65,535" if count == 0xFFFF else f"{count:,}"
        raise fail(f"has {many} members; it holds exactly {' and '.join(members)} (it is damaged or was edited)")


def check_container(z: zipfile.ZipFile, fail, size: int, members: tuple[str, ...] = (MANIFEST, PAYLOAD)) -> None:
    """The container rules of docs/artifact.md (also those of the training state), checked
    on the central directory before any member is read: each of ``members`` once and
    nothing else, every member stored (a compressed member could inflate to gigabytes
    before any check: a ZIP bomb), none encrypted, ``manifest.json`` at most
    ``MAX_MANIFEST_BYTES`` and no member larger than the ``size``-byte file. ``fail(msg)``
    makes the error."""
    infos = z.infolist()
    names = [i.filename for i in infos]
    counts = collections.Counter(names)   # not names.count per name: quadratic in the members
    dup = sorted(n for n, c in counts.items() if c > 1)
    if dup:
        raise fail(f"has the member {show(dup[0])} {counts[dup[0]]} times; it holds each "
                   f"member once (it is damaged or was edited)")
    extra = [n for n in names if n not in members]
    if extra:
        raise fail(f"has the member {show(extra[0])} besides {' and '.join(members)}; it holds "
                   f"exactly those (it is damaged or was edited)")
    for info in infos:
        if info.flag_bits & 0x1:
            raise fail(f"member {show(info.filename)} is encrypted; ttforge never encrypts "
                       f"(it is not from ttforge)")
        if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
            raise fail(f"member {show(info.filename)} is compressed (method {info.compress_type}); "
                       f"members are stored uncompressed (docs/artifact.md), re-export it")
        limit = MAX_MANIFEST_BYTES if info.filename == MANIFEST else size
        if info.file_size > limit:
            raise fail(f"member {show(info.filename)} claims {info.file_size:,} bytes, more than "
                       f"{'the limit of ' + format(limit, ',') if info.filename == MANIFEST else 'the file holds'}; "
                       f"it is damaged")


def parse_manifest(raw: bytes, fail) -> Any:
    """``raw`` as JSON; undecodable, too deeply nested or holding an integer of too many
    digits is ``fail(msg)``."""
    try:
        return json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise fail(f"has a {MANIFEST} nested too deeply to read; it is damaged or not from ttforge") from None
    except (UnicodeDecodeError, ValueError) as e:  # JSONDecodeError, or an int of too many digits
        why = ("an integer of more than 4,300 digits" if "integer string conversion" in str(e)
               else show(str(e)))   # not Python's advice on sys.set_int_max_str_digits
        raise fail(f"has an unreadable {MANIFEST} ({why}); it is damaged or not from ttforge") from None


def read_tensors(manifest: dict, payload: bytes, r: ManifestReader) -> dict[str, np.ndarray]:
    """The tensors of the manifest's table, each checked against the payload (alignment,
    size, bounds, sha256) before it is read, as int64 arrays by name."""
    info = r.get(manifest, "payload", "")
    if r.get(info, "byte_order", "payload") != "little":
        raise r.fail("manifest field payload.byte_order must be 'little'")
    nbytes = r.int_(info, "nbytes", "payload", 0)
    align = r.int_(info, "alignment", "payload", 1, 4096)
    if len(payload) != nbytes:
        raise r.fail(f"payload {PAYLOAD} has {len(payload)} bytes, the manifest says {nbytes}; "
                     f"it is truncated or damaged, re-copy it")
    if hashlib.sha256(payload).hexdigest() != r.get(info, "sha256", "payload"):
        raise r.fail(f"is corrupt: payload sha256 mismatch in {PAYLOAD}; re-copy it or re-export it")
    table = r.get(manifest, "tensors", "")
    if not isinstance(table, list):
        raise r.fail("manifest field tensors must be a list")
    out: dict[str, np.ndarray] = {}
    for j, t in enumerate(table):
        where = f"tensors[{j}]"
        name = r.get(t, "name", where)
        if not isinstance(name, str) or name in out:
            raise r.fail(f"manifest field {where}.name={show(name)} must be a unique string")
        dtype = r.get(t, "dtype", where)
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise r.fail(f"tensor {show(name)} has dtype {show(dtype)}; artifact tensors hold integers "
                         f"({', '.join(DTYPES)}), never non-integer values")
        shape = r.ints(t, "shape", where)
        if any(s < 0 for s in shape):
            raise r.fail(f"tensor {name} has a negative size in shape {show(shape)}")
        if len(shape) > 8 or any(s > len(payload) for s in shape):
            raise r.fail(f"tensor {name} has shape {show(shape)}, larger than its {len(payload)}-byte payload")
        offset = r.int_(t, "offset", where, 0)
        if offset % align:
            raise r.fail(f"tensor {name} starts at byte {offset}, not a multiple of payload.alignment={align}")
        size = r.int_(t, "nbytes", where, 0)
        itemsize = DTYPES[dtype] // 8
        if size != math.prod(shape) * itemsize:
            raise r.fail(f"tensor {name} has {size} bytes but shape {shape} of {dtype} needs "
                         f"{math.prod(shape) * itemsize}")
        if offset + size > len(payload):
            raise r.fail(f"tensor {name} ends at byte {offset + size}, past the {len(payload)}-byte payload")
        raw = payload[offset:offset + size]
        if hashlib.sha256(raw).hexdigest() != r.get(t, "sha256", where):
            raise r.fail(f"is corrupt: tensor {name} fails its sha256 check; re-copy it or re-export it")
        # frozen here, tensor by tensor, so the layers built from them need no copy of their own
        out[name] = frozen_array(np.frombuffer(raw, dtype="<i" + str(itemsize)).reshape(shape)
                                 .astype(np.int64, copy=False))
    return out
