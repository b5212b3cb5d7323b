"""MNIST-format IDX files for the data-loading tests."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    header = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", s) for s in arr.shape)
    return header + arr.astype(dtype).tobytes()


def write_pair(directory: Path, prefix: str, n: int, gz: bool = False, n_labels: int | None = None):
    rng = np.random.default_rng(n)
    images = rng.integers(0, 256, size=(n, 4, 3), dtype=np.uint8)
    labels = (np.arange(n if n_labels is None else n_labels) % 10).astype(np.uint8)
    for kind, arr, ndim in (("images", images, 3), ("labels", labels, 1)):
        data = idx_bytes(arr)
        name = f"{prefix}-{kind}-idx{ndim}-ubyte"
        if gz:
            (directory / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (directory / name).write_bytes(data)
    return images, labels
