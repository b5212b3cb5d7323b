"""Atomic, checksummed checkpoints.

File format (all integers big-endian)::

    offset  size  field
    0       8     magic  b"TTFCKPT\\0"
    8       4     format version (uint32), currently 1
    12      8     payload length in bytes (uint64)
    20      32    sha256 of the payload
    52      ...   payload: ``torch.save`` of a dict

The payload dict holds only plain data and tensors (configs are JSON-able dicts), so
it is read back with ``torch.load(weights_only=True)`` and only after its length and
checksum have been verified. Files are written to a temporary name in the same
directory, flushed to disk and renamed over the target (``os.replace``), so a crash
never leaves a half-written checkpoint under the real name.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
from pathlib import Path
from typing import Any

import torch

from ttforge.atomic import atomic_write_bytes
from ttforge.errors import CheckpointError, ConfigError, show_path
from ttforge.limits import MAX_CHECKPOINT_BYTES, read_bounded

__all__ = [
    "MAGIC",
    "FORMAT_VERSION",
    "save_checkpoint",
    "load_checkpoint",
]

MAGIC = b"TTFCKPT\0"
FORMAT_VERSION = 1
_HEADER = struct.Struct(">8sIQ32s")


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Serialize ``payload`` (plain data and tensors) atomically with a checksum."""
    if not isinstance(payload, dict):
        raise ConfigError(f"a checkpoint payload is a dict of plain data and tensors, not a "
                          f"{type(payload).__name__}; pass a dict (e.g. {{'state_dict': ...}})")
    buf = io.BytesIO()
    torch.save(payload, buf)
    body = buf.getvalue()
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, len(body), hashlib.sha256(body).digest())
    return atomic_write_bytes(path, header + body)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read and verify a checkpoint; every problem is a one-line :class:`CheckpointError`."""
    given = path   # its trailing '/', if any, is read_bounded's to judge (Path drops it)
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {show_path(path)} is a directory; give the checkpoint file (e.g. "
                              f"{show_path(path / 'last.pt')})")
    if not os.path.lexists(path):
        raise CheckpointError(f"checkpoint {show_path(path)} does not exist; give the path of a ttforge checkpoint")
    # a regular file of bounded size, refused before reading otherwise (FIFO, /dev/zero)
    data = read_bounded(given, "checkpoint", MAX_CHECKPOINT_BYTES, CheckpointError)
    if data[: len(MAGIC)] != MAGIC[: len(data)] or not data:
        raise CheckpointError(
            f"{show_path(path)} is not a ttforge checkpoint (bad magic number); give a file written by "
            f"ttforge train or ttforge decompose"
        )
    if len(data) < _HEADER.size:
        raise CheckpointError(
            f"checkpoint {show_path(path)} is truncated ({len(data)} bytes, shorter than its "
            f"{_HEADER.size}-byte header); re-copy it or resume from an intact one"
        )
    _, version, length, digest = _HEADER.unpack_from(data)
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {show_path(path)} has format version {version}, newer than this ttforge reads "
            f"({FORMAT_VERSION}); upgrade ttforge"
        )
    if version < 1:
        raise CheckpointError(f"checkpoint {show_path(path)} has unknown format version {version}; it is damaged")
    body = data[_HEADER.size:]
    if len(body) < length:
        raise CheckpointError(
            f"checkpoint {show_path(path)} is truncated ({len(body)} of {length} payload bytes); re-copy "
            f"it or resume from an intact one"
        )
    if len(body) > length:
        raise CheckpointError(
            f"checkpoint {show_path(path)} has {len(body) - length} bytes after its payload; it is damaged, "
            f"re-copy it"
        )
    if hashlib.sha256(body).digest() != digest:
        raise CheckpointError(
            f"checkpoint {show_path(path)} is corrupt (sha256 checksum mismatch); re-copy it or retrain"
        )
    try:
        payload = torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except Exception as e:  # checksum matched, so this is not ours or a bug
        raise CheckpointError(
            f"checkpoint {show_path(path)} has a valid checksum but an unreadable payload "
            f"({type(e).__name__}); it was not written by this ttforge"
        ) from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"checkpoint {show_path(path)} does not hold a dict payload; it was not written by ttforge")
    for key, kind in (("state_dict", dict), ("config", dict), ("model_config", dict)):
        if key in payload and not isinstance(payload[key], kind):
            raise CheckpointError(f"checkpoint {show_path(path)}: its {key} is a {type(payload[key]).__name__}, "
                                  f"not a {kind.__name__}; it was not written by ttforge")
    return payload
