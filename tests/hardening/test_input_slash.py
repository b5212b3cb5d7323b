"""An input path ending in '/' names a directory (``ttforge.limits.slash_on_file``)."""
from __future__ import annotations

import pytest

from ttforge.errors import UserError
from ttforge.limits import open_regular, slash_on_file


def test_a_file_named_with_a_trailing_slash_is_refused(tmp_path):
    f = tmp_path / "a.ttfa"
    f.write_bytes(b"x")
    line = slash_on_file(f"{f}/", "artifact")
    assert line is not None and "drop the trailing '/'" in line and str(f) in line
    with pytest.raises(UserError, match="ends in '/'"):
        open_regular(f"{f}/", "artifact", 10)
    # the same file without the slash opens
    fh, size = open_regular(str(f), "artifact", 10)
    fh.close()
    assert size == 1


def test_directories_and_missing_paths_are_left_to_the_caller(tmp_path):
    assert slash_on_file(f"{tmp_path}/", "data") is None            # a directory: fine
    assert slash_on_file(f"{tmp_path}/nope/", "data") is None       # missing: the caller's line
    assert slash_on_file("/", "data") is None
    assert slash_on_file(str(tmp_path), "data") is None             # no slash
    assert slash_on_file(tmp_path / "x", "data") is None            # a Path has none
    assert slash_on_file("a\0b/", "data") is None                   # NUL: the caller's line


def test_a_link_to_a_file_counts_as_the_file(tmp_path):
    f = tmp_path / "a.ttfa"
    f.write_bytes(b"x")
    (tmp_path / "link").symlink_to(f)
    assert slash_on_file(f"{tmp_path}/link/", "artifact") is not None


@pytest.mark.parametrize("loader", ["ttforge.ir.artifact:load_artifact", "ttforge.ir.train_state:load_state",
                                    "ttforge.model.checkpoint:load_checkpoint"])
def test_the_loaders_judge_the_slash_as_given(tmp_path, loader):
    """The loaders turn their path into a ``Path`` (which drops the '/') for their own
    checks; the read itself gets the path as given."""
    import importlib

    module, name = loader.split(":")
    load = getattr(importlib.import_module(module), name)
    f = tmp_path / "a.bin"
    f.write_bytes(b"not a ttforge file")
    with pytest.raises(UserError, match="ends in '/', which names a directory"):
        load(f"{f}/")
    with pytest.raises(UserError) as e:     # sibling: without the slash it is read (and refused as content)
        load(str(f))
    assert "ends in '/'" not in str(e.value)


@pytest.mark.parametrize("tail", ["/.", "/./", "/..", "//"])
def test_a_file_named_with_a_trailing_dot_component_is_refused_too(tmp_path, tail):
    """'FILE/.' was read as FILE (Path drops a trailing '/.'); 'cat FILE/.' says Not a
    directory."""
    f = tmp_path / "a.ttfa"
    f.write_bytes(b"x")
    line = slash_on_file(f"{f}{tail}", "artifact")
    assert line is not None and f"drop the trailing {tail!r}" in line
    assert slash_on_file(f"{tmp_path}{tail}", "artifact") is None     # a directory so named: fine
