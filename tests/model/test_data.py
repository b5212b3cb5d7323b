import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.support.data import idx_bytes, write_pair
from ttforge.errors import DataError
from ttforge.model.data import DIGITS_SPLIT_SEED, load_dataset, load_digits_split, load_mnist_idx, read_idx

MNIST = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mnist-t10k"
if not MNIST.is_dir():
    MNIST = Path("/work/shared/data/mnist-t10k")


# -- digits -----------------------------------------------------------------------------
def test_digits_split_is_fixed_scaled_and_stratified():
    torch.manual_seed(123)
    a = load_digits_split()
    torch.manual_seed(456)
    b = load_digits_split()
    assert a.name == "digits"
    assert a.x_train.shape == (1437, 64) and a.x_test.shape == (360, 64)
    assert a.x_train.dtype == torch.float32 and a.y_train.dtype == torch.int64
    for name in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert float(a.x_train.min()) == 0.0 and float(a.x_train.max()) == 1.0
    assert a.n_classes == 10 and a.n_features == 64
    # stratified: every class is 20% test, to within one sample
    total = torch.bincount(torch.cat([a.y_train, a.y_test]))
    test = torch.bincount(a.y_test)
    assert torch.all((test - 0.2 * total).abs() <= 1)



@pytest.mark.parametrize("fraction", [0.2, 0.1, 0.37, 0.5, 0.9])
def test_digits_split_is_scikit_learns(fraction):
    """The arrays are those of scikit-learn's ``load_digits`` and stratified
    ``train_test_split`` (seed 0), which ttforge computes without importing it."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x, y = (digits.data / 16.0).astype(np.float32), digits.target.astype(np.int64)
    want = train_test_split(x, y, test_size=fraction, stratify=y, random_state=DIGITS_SPLIT_SEED)
    got = load_digits_split(fraction)
    for name, w in zip(("x_train", "x_test", "y_train", "y_test"), want):
        assert np.array_equal(getattr(got, name).numpy(), w), name


def test_digits_load_imports_neither_scikit_learn_nor_scipy():
    """Importing scikit-learn brings SciPy and SciPy's OpenBLAS: 1.6 s of every digits
    command, and under an address-space limit (RLIMIT_AS ~750-800 MiB) OpenBLAS's start-up
    retried its allocation for good, deaf to SIGTERM."""
    code = ("import sys; from ttforge.model.data import load_digits_split; load_digits_split(); "
            "print(sorted(m for m in ('sklearn', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# -- IDX parsing --------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("code", [0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E])
def test_read_idx_round_trip(tmp_path, gz, code):
    arr = (np.arange(24).reshape(2, 3, 4) - (0 if code == 0x08 else 12)).astype(np.float64)
    data = idx_bytes(arr, code)
    path = tmp_path / "x.idx"
    path.write_bytes(gzip.compress(data) if gz else data)
    out = read_idx(path)
    assert out.shape == (2, 3, 4)
    assert np.array_equal(out, arr)
    assert out.dtype.isnative


def test_read_idx_bad_magic(tmp_path):
    path = tmp_path / "bad-images-idx3-ubyte"
    path.write_bytes(b"\x12\x34\x08\x01" + b"\x00\x00\x00\x01" + b"\x00")
    with pytest.raises(DataError, match=r"magic number 0x12340801.*not an IDX file") as e:
        read_idx(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_read_idx_unknown_type(tmp_path):
    path = tmp_path / "t.idx"
    path.write_bytes(b"\x00\x00\x07\x01\x00\x00\x00\x01\x00")
    with pytest.raises(DataError, match="unknown data type code 0x07"):
        read_idx(path)


@pytest.mark.parametrize("cut, message", [(3, "shorter than the 4-byte magic"),
                                          (10, "truncated inside its header"),
                                          (-1, "is truncated: its header declares shape")])
def test_read_idx_truncated(tmp_path, cut, message):
    data = idx_bytes(np.zeros((5, 2, 2), np.uint8))
    path = tmp_path / "t.idx"
    path.write_bytes(data[:cut])
    with pytest.raises(DataError, match=message) as e:
        read_idx(path)
    assert "re-copy" in str(e.value)


def test_read_idx_truncated_gzip_and_extra_bytes(tmp_path):
    data = idx_bytes(np.zeros((50, 2, 2), np.uint8))
    path = tmp_path / "t.idx.gz"
    path.write_bytes(gzip.compress(data)[:-12])
    with pytest.raises(DataError, match="damaged gzip stream"):
        read_idx(path)
    path.write_bytes(data + b"\x00\x00")
    with pytest.raises(DataError, match="2 bytes beyond the shape"):
        read_idx(path)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_idx(tmp_path / "nope")


# -- MNIST directories ---------------------------------------------------------------------
@pytest.mark.parametrize("gz", [False, True])
def test_single_pair_split_first_80_last_20_percent(tmp_path, gz):
    images, labels = write_pair(tmp_path, "t10k", 20, gz=gz)
    ds = load_mnist_idx(tmp_path)
    assert ds.x_train.shape == (16, 12) and ds.x_test.shape == (4, 12)
    assert torch.equal(ds.y_test, torch.from_numpy(labels[16:].astype(np.int64)))
    assert torch.allclose(ds.x_train[3], torch.from_numpy(images[3].reshape(-1) / 255.0).float())
    assert ds.x_train.dtype == torch.float32 and float(ds.x_train.max()) <= 1.0


def test_train_and_t10k_pairs_use_the_official_split(tmp_path):
    write_pair(tmp_path, "train", 12)
    write_pair(tmp_path, "t10k", 7)
    ds = load_dataset(f"idx:{tmp_path}")
    assert ds.x_train.shape[0] == 12 and ds.x_test.shape[0] == 7


def test_image_label_count_mismatch(tmp_path):
    write_pair(tmp_path, "t10k", 10, n_labels=9)
    with pytest.raises(DataError, match="holds 10 images but t10k-labels-idx1-ubyte holds 9 labels"):
        load_mnist_idx(tmp_path)


def test_missing_labels_file(tmp_path):
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((5, 2, 2), np.uint8)))
    with pytest.raises(DataError, match="no t10k-labels-idx1-ubyte"):
        load_mnist_idx(tmp_path)


@pytest.mark.parametrize("make, kind", [(os.mkfifo, "a FIFO"), (os.mkdir, "a directory")])
def test_a_file_of_the_name_that_is_not_a_file_is_named(tmp_path, make, kind):
    """A FIFO or a directory where the labels file should be: said to be one (it was
    "has no t10k-labels-idx1-ubyte"), never read (a FIFO would block)."""
    write_pair(tmp_path, "t10k", 5)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    make(tmp_path / "t10k-labels-idx1-ubyte")
    with pytest.raises(DataError, match=f"t10k-labels-idx1-ubyte is {kind}, not a regular file"):
        load_mnist_idx(tmp_path)


def test_load_dataset_bad_specs(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(str(tmp_path / "missing"))
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataError, match="is a file"):
        load_dataset(str(tmp_path / "f"))
    with pytest.raises(DataError, match="holds no MNIST IDX files"):
        load_dataset(str(tmp_path))


def _links(tmp_path):
    """A loop of symbolic links, a link to a missing path, and data directories whose
    images file is a self-loop and whose labels file links to a missing path."""
    os.symlink("loop", tmp_path / "loop")
    os.symlink("missing", tmp_path / "dangling")
    for name, entry, target in (("a", "t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte"),
                                ("b", "t10k-labels-idx1-ubyte", "gone")):
        (tmp_path / name).mkdir()
        write_pair(tmp_path / name, "t10k", 10)
        (tmp_path / name / entry).unlink()
        os.symlink(target, tmp_path / name / entry)


@pytest.mark.parametrize("data, message", [
    ("loop", "loop is a loop of symbolic links (ELOOP"),
    ("idx:loop", "loop is a loop of symbolic links (ELOOP"),
    ("loop/x", "loop, a part of its path, is a loop of symbolic links (ELOOP"),
    ("dangling", "dangling is a symbolic link to missing, which does not exist; point the link at an "
                 "existing directory"),
    ("a", "t10k-images-idx3-ubyte is a loop of symbolic links (ELOOP"),
    ("b", "t10k-labels-idx1-ubyte is a symbolic link to gone, which does not exist; point the link at an "
          "existing file"),
])
def test_a_broken_symbolic_link_is_named_as_one(tmp_path, capsys, monkeypatch, data, message):
    """A loop of links as ``--data`` said "loop does not exist", a loop of links as an
    IDX file "cannot be read (Too many levels of symbolic links)" and a link to a
    missing path "does not exist": each is now one line naming the link, exit 2."""
    from ttforge.cli import main

    _links(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--data", data, "--out", "run", "--epochs", "1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "run").exists()


def test_load_dataset_names_the_flag_given(tmp_path):
    _links(tmp_path)
    with pytest.raises(DataError, match=r"^--mnist-dir \S*loop is a loop of symbolic links \(ELOOP"):
        load_dataset(f"idx:{tmp_path / 'loop'}", "--mnist-dir")
    with pytest.raises(DataError, match=r"^--mnist-dir \S*missing does not exist; give a directory holding"):
        load_dataset(f"idx:{tmp_path / 'missing'}", "--mnist-dir")


@pytest.mark.skipif(not (MNIST / "t10k-images-idx3-ubyte.gz").exists(), reason="MNIST t10k not present")
def test_mnist_t10k_fixed_split():
    ds = load_dataset(f"idx:{MNIST}")
    assert ds.x_train.shape == (8000, 784) and ds.x_test.shape == (2000, 784)
    labels = read_idx(MNIST / "t10k-labels-idx1-ubyte.gz")
    assert np.array_equal(ds.y_test.numpy(), labels[8000:])
    assert float(ds.x_train.max()) == 1.0 and float(ds.x_train.min()) == 0.0
    assert ds.n_classes == 10


def test_a_data_set_is_held_once_as_float32(tmp_path):
    """Loading copied the pixels several times (the raw bytes, their native copy, the
    division, its float32 copy, a clone of each split): a 1 GiB IDX file went past
    24 GB in train-board. Now the raw bytes and one float32 copy, the splits views of it."""
    import tracemalloc

    from tests.support.data import idx_bytes

    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(1000, 64, 64), dtype=np.uint8)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(images))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes((np.arange(1000) % 10).astype(np.uint8)))
    tracemalloc.start()
    try:
        ds = load_mnist_idx(tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 6 * images.size
    assert ds.x_train.data_ptr() + ds.x_train.numel() * 4 == ds.x_test.data_ptr()   # one tensor
    want = images.reshape(1000, -1).astype(np.float32) / np.float32(255.0)
    assert np.array_equal(np.concatenate([ds.x_train.numpy(), ds.x_test.numpy()]), want)


@pytest.mark.parametrize("ndim", [33, 64, 65, 255])
def test_more_dimensions_than_an_array_has_are_one_line(tmp_path, ndim):
    """The dimension byte goes to 255; numpy's reshape raised its own ValueError past 64
    (32 on numpy 1): one line naming the file and the count."""
    path = tmp_path / "many-idx"
    path.write_bytes(bytes([0, 0, 0x08, ndim]) + b"\0\0\0\1" * ndim + b"\7")
    with pytest.raises(DataError, match=rf"^IDX file \S+many-idx declares {ndim} dimensions, more than the 32 "):
        read_idx(path)


def test_thirty_two_dimensions_are_read(tmp_path):
    path = tmp_path / "d32-idx"
    path.write_bytes(idx_bytes(np.arange(2, dtype=np.uint8).reshape((1,) * 31 + (2,))))
    assert read_idx(path).shape == (1,) * 31 + (2,)


def test_a_path_with_a_newline_stays_on_one_line(tmp_path):
    """The path went into the message raw: a newline in it split the error in lines."""
    bad = tmp_path / "bad\nidx"
    bad.write_bytes(b"\1\0\x08\1" + b"\0" * 8)
    short = tmp_path / "short\nidx"
    short.write_bytes(idx_bytes(np.zeros(4, dtype=np.uint8))[:-1])
    for path in (bad, short):
        with pytest.raises(DataError) as e:
            read_idx(path)
        assert len(str(e.value).splitlines()) == 1 and "\\n" in str(e.value), str(e.value)


def test_digits_without_scikit_learn_is_the_missing_package(monkeypatch):
    """Without scikit-learn (whose data file the digits are) the error is the missing
    package, as its import was, so the CLI names the extra that installs it."""
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ModuleNotFoundError) as e:
        load_digits_split()
    assert e.value.name == "sklearn"
