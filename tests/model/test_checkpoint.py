import struct

import pytest
import torch

from ttforge.errors import CheckpointError
from ttforge.atomic import atomic_write_text
from ttforge.model.checkpoint import FORMAT_VERSION, MAGIC, load_checkpoint, save_checkpoint

PAYLOAD = {
    "config": {"epochs": 3, "hidden": [64], "name": "x", "ratio": 0.5, "none": None},
    "state_dict": {"w": torch.arange(12.0).reshape(3, 4), "b": torch.zeros(3, dtype=torch.int64)},
    "history": [{"epoch": 1, "test_acc": 0.5}],
    "rng": torch.get_rng_state(),
}


@pytest.fixture
def ckpt(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, PAYLOAD)
    return path


def test_round_trip(ckpt):
    raw = ckpt.read_bytes()
    assert raw.startswith(MAGIC)
    assert struct.unpack(">I", raw[8:12])[0] == FORMAT_VERSION
    out = load_checkpoint(ckpt)
    assert out["config"] == PAYLOAD["config"] and out["history"] == PAYLOAD["history"]
    assert torch.equal(out["state_dict"]["w"], PAYLOAD["state_dict"]["w"])
    assert torch.equal(out["rng"], PAYLOAD["rng"])
    assert [p.name for p in ckpt.parent.iterdir()] == ["last.pt"]  # no temporary left


def one_line(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("where", [20, 60, -1])  # in the sha256, in the payload, last byte
def test_flipped_byte_is_corrupt(ckpt, where):
    raw = bytearray(ckpt.read_bytes())
    raw[where] ^= 0x01
    ckpt.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="corrupt") as e:
        load_checkpoint(ckpt)
    assert str(ckpt) in one_line(e)


@pytest.mark.parametrize("keep", [4, 30, 100, -1])
def test_truncated(ckpt, keep):
    ckpt.write_bytes(ckpt.read_bytes()[:keep])
    with pytest.raises(CheckpointError, match="truncated") as e:
        load_checkpoint(ckpt)
    one_line(e)


def test_extra_bytes(ckpt):
    ckpt.write_bytes(ckpt.read_bytes() + b"junk")
    with pytest.raises(CheckpointError, match="4 bytes after its payload"):
        load_checkpoint(ckpt)


def test_newer_version(ckpt):
    raw = bytearray(ckpt.read_bytes())
    raw[8:12] = struct.pack(">I", FORMAT_VERSION + 1)
    ckpt.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="newer than this ttforge reads.*upgrade ttforge") as e:
        load_checkpoint(ckpt)
    one_line(e)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 a zip file, as torch.save writes", b"TTFCKPX\0" + bytes(60)])
def test_not_a_checkpoint(tmp_path, content):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a ttforge checkpoint"):
        load_checkpoint(path)


def test_plain_torch_save_is_rejected(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(PAYLOAD, path)
    with pytest.raises(CheckpointError, match="bad magic"):
        load_checkpoint(path)


def test_missing_and_directory(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(tmp_path)


class Evil:
    def __reduce__(self):
        return (print, ("code ran",))


def test_payload_is_loaded_weights_only(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    save_checkpoint(path, {"x": Evil()})  # a valid checksum over a pickle that runs code
    with pytest.raises(CheckpointError, match="unreadable payload"):
        load_checkpoint(path)
    assert "code ran" not in capsys.readouterr().out


def test_failed_write_keeps_the_old_file(ckpt):
    before = ckpt.read_bytes()
    with pytest.raises(Exception):
        save_checkpoint(ckpt, {"f": lambda: 0})  # cannot be pickled
    assert ckpt.read_bytes() == before
    assert [p.name for p in ckpt.parent.iterdir()] == ["last.pt"]


def test_atomic_write_text_creates_parents(tmp_path):
    path = atomic_write_text(tmp_path / "a" / "b.json", "{}\n")
    assert path.read_text() == "{}\n"


def test_a_path_with_a_newline_stays_on_one_line(tmp_path):
    """The path went into the message raw: a newline in it split the error in lines."""
    run = tmp_path / "run\nA"
    run.mkdir()
    bad = tmp_path / "bad\nmagic.pt"
    bad.write_bytes(b"not a checkpoint")
    for path in (run, bad, tmp_path / "gone\n.pt"):
        with pytest.raises(CheckpointError) as e:
            load_checkpoint(path)
        assert len(str(e.value).splitlines()) == 1 and "\\n" in str(e.value), str(e.value)


@pytest.mark.parametrize("payload", [[1, 2], None, "state"])
def test_a_payload_that_is_no_dict_is_one_line_and_writes_nothing(tmp_path, payload):
    """save_checkpoint is public (ttforge.model.__all__): a ttforge error, not TypeError."""
    from ttforge.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^a checkpoint payload is a dict .*not a \w+; pass a dict"):
        save_checkpoint(tmp_path / "x.pt", payload)
    assert list(tmp_path.iterdir()) == []
