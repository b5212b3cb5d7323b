"""Data sets for training: the embedded digits set and MNIST-format IDX files.

Nothing here downloads anything. Every data set is returned as a :class:`Dataset` of
``float32`` features in ``[0, 1]`` (flattened to one vector per sample) and ``int64``
labels, already split into train and test parts by a *fixed* rule that does not
depend on the training seed, so runs with different seeds see the same split.

Splits
------
``digits``
    scikit-learn's ``load_digits`` (1,797 8x8 images, pixel values 0..16 divided by
    16), stratified 80/20 split with the fixed seed 0 (1,437 train / 360 test).
IDX directory
    MNIST-format files ``{t10k,train}-images-idx3-ubyte[.gz]`` and
    ``{t10k,train}-labels-idx1-ubyte[.gz]`` (pixel values divided by 255, images
    flattened to ``rows * cols`` = 784 features). If both the ``train-*`` and the
    ``t10k-*`` pairs are present, they are the train and the test set (the official
    MNIST split). If only one pair is present, its first ``n - n // 5`` samples are the
    training set and its last ``n // 5`` the test set, in file order (no shuffling):
    for the 10,000-image MNIST test set that is the first 8,000 / last 2,000.
"""

from __future__ import annotations

import gzip
import math
import os
import stat
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ttforge.errors import DataError
from ttforge.errors import show_path
from ttforge.atomic import note_input
from ttforge.limits import MAX_CLASSES, MAX_IDX_BYTES, broken_link, file_kind, open_regular, read_at_most

__all__ = ["Dataset", "load_digits_split", "stratified_split", "read_idx", "load_mnist_idx",
           "load_dataset", "data_digest", "DIGITS_SPLIT_SEED"]

#: Seed of the digits train/test split; fixed, independent of any training seed.
DIGITS_SPLIT_SEED = 0

# IDX type codes -> big-endian numpy dtypes
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test split: ``x_*`` are ``float32 (n, features)``, ``y_*`` ``int64 (n,)``."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    def __post_init__(self) -> None:
        for part in ("train", "test"):
            x, y = getattr(self, f"x_{part}"), getattr(self, f"y_{part}")
            if x.dtype != torch.float32 or y.dtype != torch.int64:
                raise DataError(f"{self.name}: x_{part} must be float32 and y_{part} int64")
            if x.dim() != 2 or y.dim() != 1 or x.shape[0] != y.shape[0]:
                raise DataError(
                    f"{self.name}: x_{part} {tuple(x.shape)} and y_{part} {tuple(y.shape)} must be "
                    f"(n, features) and (n,) with the same n"
                )
            if x.shape[0] == 0:
                raise DataError(f"{self.name}: the {part} set is empty; give more samples")
        if self.x_train.shape[1] != self.x_test.shape[1]:
            raise DataError(f"{self.name}: train and test sets have different feature counts")

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def n_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={tuple(self.x_train.shape)}, "
                f"test={tuple(self.x_test.shape)}, classes={self.n_classes})")


def load_digits_split(test_fraction: float = 0.2) -> Dataset:
    """scikit-learn's 8x8 digits, scaled to ``[0, 1]``, stratified split with seed 0.

    The same arrays as ``sklearn.datasets.load_digits`` split by
    ``train_test_split(..., stratify=y, random_state=0)``, read from scikit-learn's data
    file without importing scikit-learn: its import brings SciPy and SciPy's BLAS (1.6 s
    of every digits command, and under an address-space limit OpenBLAS's start-up spun
    for good, deaf to SIGTERM).
    """
    if not 0 < test_fraction < 1:
        raise DataError(f"test_fraction={test_fraction} must be between 0 and 1")
    x, y = _digits_arrays()
    train, test = stratified_split(y, test_fraction, DIGITS_SPLIT_SEED)
    return Dataset("digits", torch.from_numpy(x[train]), torch.from_numpy(y[train]),
                   torch.from_numpy(x[test]), torch.from_numpy(y[test]))


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of the 1,797 digits: ``float32`` pixels / 16 and ``int64`` labels, as
    ``load_digits()`` gives them (its ``digits.csv.gz``: 64 pixels and the label a row)."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")   # finds the package, does not import it
    where = spec.submodule_search_locations if spec is not None else None
    path = Path(list(where)[0]) / "datasets" / "data" / "digits.csv.gz" if where else None
    if path is None or not path.is_file():
        # as the import did: the CLI names the extra that installs it
        raise ModuleNotFoundError("No module named 'sklearn' (the embedded digits set comes with it)",
                                  name="sklearn")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        data = np.loadtxt(f, delimiter=",")
    return (data[:, :-1] / 16.0).astype(np.float32), data[:, -1].astype(np.int64)


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices of a stratified split of labels ``y``: those of
    scikit-learn's ``train_test_split(..., test_size=test_fraction, stratify=y,
    random_state=seed)`` (its ``StratifiedShuffleSplit``), computed here the same way
    (tests/model/test_data.py compares the two)."""
    n_test = math.ceil(test_fraction * len(y))
    n_train = len(y) - n_test
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    if n_train < len(classes) or n_test < len(classes) or counts.min() < 2:
        raise DataError(f"test_fraction={test_fraction} leaves a class of the {len(y)} samples "
                        f"out of one part; give a fraction nearer 0.5")
    by_class = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
    rng = np.random.RandomState(seed)
    n_i = _approximate_mode(counts, n_train, rng)
    t_i = _approximate_mode(counts - n_i, n_test, rng)
    train: list = []
    test: list = []
    for i in range(len(classes)):
        members = by_class[i].take(rng.permutation(counts[i]), mode="clip")
        train.extend(members[:n_i[i]])
        test.extend(members[n_i[i]:n_i[i] + t_i[i]])
    return rng.permutation(train), rng.permutation(test)


def _approximate_mode(counts: np.ndarray, draws: int, rng: np.random.RandomState) -> np.ndarray:
    """Samples per class of ``draws`` drawn from classes of ``counts`` (scikit-learn's
    ``_approximate_mode``: the floors of the proportional shares, then one more for the
    largest remainders, ties broken by ``rng``)."""
    continuous = counts / counts.sum() * draws
    floored = np.floor(continuous)
    need = int(draws - floored.sum())
    if need > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            add = min(len(inds), need)
            floored[rng.choice(inds, size=add, replace=False)] += 1
            need -= add
            if need == 0:
                break
    return floored.astype(int)


def _read_bytes(path: Path) -> bytes:
    """The (decompressed) bytes of an IDX file: a regular file, at most ``MAX_IDX_BYTES``
    before and after gzip decompression (a small gzip never inflates past the limit)."""
    if not os.path.lexists(path):
        raise DataError(f"IDX file {show_path(path)} does not exist; give the path of an existing IDX file")
    note_input(path)   # an output of the command never replaces a data file it read
    f, size = open_regular(path, "IDX file", MAX_IDX_BYTES, DataError)
    with f:
        if f.read(2) == b"\x1f\x8b":  # gzip, whatever the file is called
            f.seek(0)
            try:
                with gzip.GzipFile(fileobj=f) as g:
                    raw = read_at_most(g, MAX_IDX_BYTES + 1)
            except (EOFError, OSError, zlib.error) as e:
                raise DataError(
                    f"IDX file {show_path(path)} is a damaged gzip stream ({e}); re-copy the file"
                ) from None
            if len(raw) > MAX_IDX_BYTES:
                raise DataError(f"IDX file {show_path(path)} inflates to more than ttforge's limit of "
                                f"{MAX_IDX_BYTES:,} bytes; it is not an MNIST-sized data set")
            return raw
        f.seek(0)
        return read_at_most(f, size)


#: The most dimensions :func:`read_idx` takes (numpy 1's limit).
_IDX_MAX_DIMS = 32


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse an IDX file (raw or gzip-compressed) into a native-endian numpy array.

    The format: two zero bytes, a type code (0x08 ubyte, 0x09 sbyte, 0x0B int16,
    0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions, one big-endian
    uint32 per dimension, then the big-endian data in row-major order. A wrong magic
    number, an unknown type code, short (truncated) or excess data, or a missing file
    raise :class:`~ttforge.errors.DataError` naming the file.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(
            f"IDX file {show_path(path)} is only {len(data)} bytes, shorter than the 4-byte magic number; "
            f"the file is truncated, re-copy it"
        )
    magic = int.from_bytes(data[:4], "big")
    if data[0] != 0 or data[1] != 0:
        raise DataError(
            f"IDX file {show_path(path)} has magic number 0x{magic:08X}, not an IDX file (expected "
            f"0x000008XX, e.g. 0x00000803 for images); check the path"
        )
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise DataError(
            f"IDX file {show_path(path)} has unknown data type code 0x{code:02X} in its magic number "
            f"0x{magic:08X}; expected one of "
            + ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        )
    if ndim == 0:
        raise DataError(f"IDX file {show_path(path)} declares 0 dimensions; expected at least 1")
    if ndim > _IDX_MAX_DIMS:
        # the dimension byte goes to 255; numpy's arrays stop at 32 (64 from numpy 2)
        raise DataError(f"IDX file {show_path(path)} declares {ndim} dimensions, more than the {_IDX_MAX_DIMS} "
                        f"an array may have (IDX data sets have 1 to 4); the header is damaged, re-copy the file")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(
            f"IDX file {show_path(path)} is truncated inside its header ({len(data)} of {header} bytes); "
            f"re-copy the file"
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_DTYPES[code]
    expected = header + math.prod(dims) * dtype.itemsize
    if len(data) < expected:
        raise DataError(
            f"IDX file {show_path(path)} is truncated: its header declares shape {dims} "
            f"({expected} bytes) but it holds {len(data)} bytes; re-copy the file"
        )
    if len(data) > expected:
        raise DataError(
            f"IDX file {show_path(path)} has {len(data) - expected} bytes beyond the shape {dims} its "
            f"header declares; the file is damaged, re-copy it"
        )
    arr = np.frombuffer(data, dtype=dtype, count=math.prod(dims), offset=header)
    return arr.reshape(dims).astype(dtype.newbyteorder("="), copy=False)   # no copy of 8-bit data


def _find(directory: Path, prefix: str, kind: str) -> Path | None:
    # any entry of the name (a FIFO or a directory too): read_idx then says what it is
    # rather than this saying the file is missing
    for name in (f"{prefix}-{kind}", f"{prefix}-{kind}.gz"):
        if os.path.lexists(directory / name):
            return directory / name
    return None


def _load_pair(directory: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    images_path = _find(directory, prefix, "images-idx3-ubyte")
    labels_path = _find(directory, prefix, "labels-idx1-ubyte")
    if images_path is None or labels_path is None:
        missing = "images" if images_path is None else "labels"
        raise DataError(
            f"{directory} has no {prefix}-{missing}-idx{3 if missing == 'images' else 1}-ubyte"
            f"[.gz] next to its {'labels' if missing == 'images' else 'images'}; add the "
            f"missing file"
        )
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3:
        raise DataError(f"IDX file {show_path(images_path)} has shape {images.shape}; images must be (n, rows, cols)")
    if labels.ndim != 1:
        raise DataError(f"IDX file {show_path(labels_path)} has shape {labels.shape}; labels must be (n,)")
    if images.shape[0] == 0:
        raise DataError(f"IDX file {show_path(images_path)} holds 0 samples; give a file with images")
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{images_path.name} holds {images.shape[0]} images but {labels_path.name} holds "
            f"{labels.shape[0]} labels; use matching image and label files"
        )
    if not np.issubdtype(labels.dtype, np.integer) or (labels.size and labels.min() < 0):
        raise DataError(f"IDX file {show_path(labels_path)} must hold non-negative integer labels")
    if labels.size and int(labels.max()) >= MAX_CLASSES:
        raise DataError(f"IDX file {show_path(labels_path)} holds the label {int(labels.max()):,}, which implies "
                        f"{int(labels.max()) + 1:,} classes; ttforge's limit is {MAX_CLASSES:,} "
                        f"(labels are 0 .. classes-1)")
    if images.dtype != np.uint8:
        raise DataError(
            f"IDX file {show_path(images_path)} holds {images.dtype} pixels; expected unsigned bytes (0x08)"
        )
    return images, labels


def _tensors(images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    # one float32 copy, divided in place (the same float32 division as before, without a
    # second copy of the whole set)
    x = images.reshape(images.shape[0], -1).astype(np.float32)
    x /= np.float32(255.0)
    x = torch.from_numpy(x)
    return x, torch.from_numpy(labels.astype(np.int64))


_IDX_FILES = "t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz] (or train-*)"


def _check_directory(path: Path, where: str, fix: str) -> None:
    """A one-line :class:`DataError` starting with ``where`` unless ``path`` is a
    directory: ``fix`` says what to give instead of a missing one; a loop of symbolic
    links or a link to a missing path is named as such (both once read "does not
    exist")."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise DataError(broken_link(path, where, "directory") or f"{where} does not exist; {fix}") from None
    except (OSError, ValueError) as e:
        raise DataError(broken_link(path, where, "directory") or f"{where} cannot be read "
                        f"({getattr(e, 'strerror', None) or e}); check the path and its permissions") from None
    if not stat.S_ISDIR(mode):
        raise DataError(f"{where} is {file_kind(mode) or 'a file'}; give the directory that holds the images "
                        f"and labels IDX files")


def load_mnist_idx(directory: str | os.PathLike) -> Dataset:
    """MNIST-format IDX files from a directory, with the fixed split of the module docs."""
    directory = Path(directory)
    _check_directory(directory, f"data directory {show_path(directory)}", f"give a directory holding {_IDX_FILES}")
    has = {p: _find(directory, p, "images-idx3-ubyte") or _find(directory, p, "labels-idx1-ubyte")
           for p in ("train", "t10k")}
    if not any(has.values()):
        raise DataError(
            f"{directory} holds no MNIST IDX files; expected t10k-images-idx3-ubyte[.gz] and "
            f"t10k-labels-idx1-ubyte[.gz] (or train-*)"
        )
    name = directory.resolve().name or "idx"
    if has["train"] and has["t10k"]:
        x_tr, y_tr = _tensors(*_load_pair(directory, "train"))
        x_te, y_te = _tensors(*_load_pair(directory, "t10k"))
        if x_tr.shape[1] != x_te.shape[1]:
            raise DataError(f"{directory}: train and t10k images have different sizes")
        return Dataset(name, x_tr, y_tr, x_te, y_te)
    prefix = "train" if has["train"] else "t10k"
    x, y = _tensors(*_load_pair(directory, prefix))
    n = x.shape[0]
    n_test = n // 5
    if n_test == 0:
        raise DataError(f"{directory}: {n} samples are too few to split; give at least 5")
    n_train = n - n_test
    # views of the one tensor (a copy of each split doubled the set in memory)
    return Dataset(name, x[:n_train], y[:n_train], x[n_train:], y[n_train:])


def load_dataset(spec: str, flag: str | None = None, where: str | None = None,
                 fix: str | None = None) -> Dataset:
    """``"digits"``, ``"idx:DIR"`` or a directory path of MNIST-format IDX files.

    Parameters
    ----------
    spec : str
        The data set.
    flag : str, optional
        The option that named it (``"--mnist-dir"``): errors begin with it and the
        path instead of ``data='SPEC'``.
    where : str, optional
        How errors about the directory begin instead, for a path the user did not type
        (``"the data directory DIR that run/last.pt records"``).
    fix : str, optional
        With ``where``: what the line of a missing directory ends with.
    """
    if not isinstance(spec, str) or not spec:
        raise DataError(f"data={spec!r}: give 'digits' or a directory of IDX files")
    if spec == "digits":
        return load_digits_split()
    path = Path(spec[4:] if spec.startswith("idx:") else spec).expanduser()
    if where is not None:
        fix = fix or f"give a directory holding {_IDX_FILES}"
    elif flag:
        where, fix = f"{flag} {show_path(path)}", f"give a directory holding {_IDX_FILES}"
    else:
        where = f"data={spec!r}: {show_path(path)}"
        fix = ("give 'digits' or a directory of MNIST IDX files (t10k-images-idx3-ubyte[.gz], "
               "t10k-labels-idx1-ubyte[.gz])")
    _check_directory(path, where, fix)
    return load_mnist_idx(path)


def data_digest(ds: Dataset) -> str:
    """The sha256 (hex) of a data set's contents: the shape, dtype and bytes of
    ``x_train``, ``y_train``, ``x_test`` and ``y_test`` in that order.

    A run records it, so that a later command reading the run's data path can tell
    whether the path still holds the data the run was trained on (a relative path read
    from another directory, or files replaced since). The split is part of it: the
    same files split otherwise are other data. Cheap: MNIST's 10,000 images take a
    few hundredths of a second.
    """
    from ttforge.ir.artifact import arrays_digest

    return arrays_digest(t.numpy() for t in (ds.x_train, ds.y_train, ds.x_test, ds.y_test))
