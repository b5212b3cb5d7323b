"""``ttforge examples [DIR]``: an installed ttforge has no examples/ directory, yet the
flow's and the sweep's help and errors name its configs; the command writes the packaged
copies out (whole, or nothing when a file there differs)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ttforge.cli import build_parser, main
from ttforge.errors import ConfigError
from ttforge.flow.config import EXAMPLES_DIR, FlowConfig
from ttforge.flow.sweep import load_sweep

from tests.support.toml import load_toml

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "examples"


def _names(d: Path) -> list[str]:
    return sorted(p.name for p in d.glob("*.toml"))


def test_the_packaged_examples_are_the_source_trees():
    """flow/examples links to examples/, and the wheel's package data takes it."""
    assert _names(EXAMPLES_DIR) == _names(SOURCE) and _names(SOURCE)
    data = load_toml(ROOT / "pyproject.toml")["tool"]["setuptools"]["package-data"]["ttforge.flow"]
    assert "examples/*.toml" in data


def test_examples_writes_every_config_and_they_run_as_the_help_says(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["examples"]) == 0
    assert "wrote 6 example configs to examples" in capsys.readouterr().out
    for name in _names(SOURCE):
        assert (tmp_path / "examples" / name).read_bytes() == (SOURCE / name).read_bytes()
    # what the help of flow and sweep names, from the current directory
    helps = [build_parser(only=c) for c in ("flow", "sweep")]
    named = set()
    for parser in helps:
        for action in parser._actions:
            for sub in getattr(action, "choices", None) or {}:
                if sub in ("flow", "sweep"):
                    named |= set(re.findall(r"examples/[\w-]+\.toml", action.choices[sub].format_help()))
    assert named and all((tmp_path / n).is_file() for n in named), named
    assert FlowConfig.load("examples/mnist-ulx3s-train.toml").flow.name
    assert Path(load_sweep("examples/digits-sweep.toml").base_source).name == "digits-icebreaker.toml"
    assert main(["examples"]) == 0   # again: nothing to write, nothing refused
    assert "already in examples" in capsys.readouterr().out


def test_a_different_file_is_refused_and_nothing_is_written(tmp_path, capsys):
    out = tmp_path / "ex"
    assert main(["examples", str(out)]) == 0
    (out / "wide-1024.toml").write_text("# mine\n")
    (out / "digits-sweep.toml").unlink()
    capsys.readouterr()
    assert main(["examples", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "wide-1024.toml exists and is not ttforge's example" in err
    assert (out / "wide-1024.toml").read_text() == "# mine\n" and not (out / "digits-sweep.toml").exists()


@pytest.mark.parametrize("load", [FlowConfig.load, load_sweep])
def test_a_missing_config_names_the_command_not_a_directory(tmp_path, load):
    with pytest.raises(ConfigError, match=r"'ttforge examples' writes the example configs") as e:
        load(tmp_path / "nosuch.toml")
    assert "see examples/" not in str(e.value)


def test_a_first_write_that_fails_leaves_no_new_directory(tmp_path, monkeypatch, capsys):
    """DIR on a read-only disk (here: creating a file in it fails with EROFS, as there):
    the command made DIR, failed its first write and left DIR behind, empty."""
    from tests.support.readonly import read_only

    out = tmp_path / "new" / "ex"
    read_only(monkeypatch, out)
    assert main(["examples", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Read-only file system" in err
    assert list(tmp_path.iterdir()) == []


def test_a_write_that_fails_half_way_takes_back_what_it_wrote(tmp_path, monkeypatch, capsys):
    """A full disk at the third config: the first two stayed in DIR, half of the
    examples; a DIR that was there stays as it was, the user's file in it too."""
    import errno

    import ttforge.atomic as atomic

    out = tmp_path / "ex"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    real, calls = atomic.atomic_write_bytes, []

    def atomic_write_bytes(path, data):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(atomic, "atomic_write_bytes", atomic_write_bytes)
    assert main(["examples", str(out)]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err
    assert len(calls) == 3 and sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "mine\n"
    monkeypatch.setattr(atomic, "atomic_write_bytes", real)
    assert main(["examples", str(out)]) == 0   # and then it writes them all
    assert sorted(p.name for p in out.glob("*.toml")) == _names(SOURCE)
