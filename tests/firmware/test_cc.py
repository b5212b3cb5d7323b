"""``ttforge.firmware.cc``: ``$CC`` with arguments, a missing compiler, and the library
cache keyed on everything the library depends on (source, included headers, compiler,
flags), not on the source alone."""

from __future__ import annotations

import shutil
import stat

import pytest

from ttforge.errors import ConfigError
from ttforge.firmware.cc import load_c_library

CC = shutil.which("cc") or shutil.which("gcc")
pytestmark = pytest.mark.skipif(CC is None, reason="needs a C compiler")

SOURCE = '#include "answer.h"\nint answer(void) { return ANSWER; }\n'


def _source(tmp_path, header="#ifndef ANSWER\n#define ANSWER 0\n#endif\n"):
    (tmp_path / "answer.h").write_text(header)
    src = tmp_path / "answer.c"
    src.write_text(SOURCE)
    return src


def _answer(src, cache, **kw) -> int:
    return load_c_library(src, cache=cache, **kw).answer()


def test_cc_with_arguments_is_split_as_a_shell_would(tmp_path, monkeypatch):
    """``CC="cc -DANSWER=42"`` compiles with that argument (it was run as one program
    named "cc -DANSWER=42": a FileNotFoundError traceback)."""
    src = _source(tmp_path)
    monkeypatch.setenv("CC", f"{CC} -DANSWER=42")
    assert _answer(src, tmp_path / "cache") == 42


def test_c_compiler_is_the_one_helper(monkeypatch):
    """``c_compiler`` (also link_c_driver's): a shell's split of the argument or $CC, then
    cc, then gcc, the first on PATH."""
    from ttforge.process import c_compiler

    monkeypatch.setenv("CC", f"{CC} -m64")
    assert c_compiler() == [CC, "-m64"]
    assert c_compiler(f"'{CC}' -DX='a b'") == [CC, "-DX=a b"]
    monkeypatch.delenv("CC")
    assert c_compiler() in (["cc"], ["gcc"])


@pytest.mark.parametrize("cc, env", [(None, "/nonexistent/cc -m64"), ("clang-no-such-version", None),
                                     (None, "'unbalanced")])
def test_a_compiler_asked_for_that_is_not_there_is_one_line(cc, env, monkeypatch):
    """An explicit compiler (``cc=`` or ``$CC``) naming no program on PATH is one
    ConfigError line naming it and the fix: it silently fell back to cc or gcc, building
    with a compiler the user did not ask for."""
    from ttforge.process import c_compiler

    if env is None:
        monkeypatch.delenv("CC", raising=False)
    else:
        monkeypatch.setenv("CC", env)
    with pytest.raises(ConfigError) as e:
        c_compiler(cc)
    msg = str(e.value)
    assert "\n" not in msg and "is not a program on PATH" in msg and repr(cc or env) in msg
    assert ("unset CC" in msg) == (env is not None)


def test_a_missing_compiler_is_one_line(tmp_path, monkeypatch):
    """No $CC, and no cc or gcc on PATH: one ConfigError line naming CC and the fix,
    nothing left in the cache."""
    src = _source(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("CC", raising=False)
    with pytest.raises(ConfigError) as e:
        load_c_library(src, cache=tmp_path / "cache")
    msg = str(e.value)
    assert "\n" not in msg and "no C compiler found" in msg
    assert "set CC" in msg and "answer.c" in msg
    assert not (tmp_path / "cache").exists()


def _wrapper(path, value):
    path.write_text(f'#!/bin/sh\nexec {CC} -DANSWER={value} "$@"\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_another_compiler_does_not_reuse_the_library(tmp_path):
    """Two compilers (here two wrappers around cc defining ANSWER differently) each get
    their own library: the cache was keyed on the source alone, so the second loaded the
    first one's build."""
    src = _source(tmp_path)
    one, two = _wrapper(tmp_path / "cc1", 1), _wrapper(tmp_path / "cc2", 2)
    assert _answer(src, tmp_path / "cache", cc=one) == 1
    assert _answer(src, tmp_path / "cache", cc=two) == 2
    assert _answer(src, tmp_path / "cache", cc=one) == 1
    assert len(list((tmp_path / "cache").glob("*.so"))) == 2


def test_an_included_header_is_part_of_the_key(tmp_path):
    """A header beside the source that it includes changes the library too."""
    src = _source(tmp_path, "#define ANSWER 5\n")
    assert _answer(src, tmp_path / "cache") == 5
    (tmp_path / "answer.h").write_text("#define ANSWER 6\n")
    assert _answer(src, tmp_path / "cache") == 6
