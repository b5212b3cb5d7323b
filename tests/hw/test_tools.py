"""``ttforge.hw.tools``: the pip-installed toolchain's environment."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.support.tiny_builds import build_tiny, need_native


def test_a_make_variable_goes_in_once_with_its_blanks_escaped():
    from ttforge.hw.tools import make_variable

    assert make_variable("", "PYTHON3", "/usr/bin/python3") == "PYTHON3=/usr/bin/python3"
    assert make_variable("k CC=gcc", "PYTHON3", "'/a b/py'") == "k CC=gcc PYTHON3='/a\\ b/py'"
    once = make_variable("-j2", "PYTHON3", "/usr/bin/python3")
    assert make_variable(once, "PYTHON3", "/usr/bin/python3") == once


def test_make_runs_a_make_variable_with_blanks_and_dollars_as_given(tmp_path):
    """A MAKEFLAGS variable reaches the recipe as given (an interpreter under a path with
    a space or a ``$``)."""
    import shlex

    from ttforge.hw.tools import make_variable

    if shutil.which("make") is None:
        pytest.skip("no make")
    odd = tmp_path / "a b$(HOME)$$x"
    odd.mkdir()
    (odd / "py").symlink_to(shutil.which("python3") or "/usr/bin/python3")
    (tmp_path / "Makefile").write_text("PYTHON3 = python\nall:\n\t@$(PYTHON3) -c 'print(6 * 7)'\n")
    env = {**os.environ, "MAKEFLAGS": make_variable("-s", "PYTHON3", shlex.quote(str(odd / "py")))}
    out = subprocess.run(["make", "-C", str(tmp_path)], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().splitlines()[-1:] == ["42"], out.stderr


def test_a_verilated_build_needs_no_python_on_path(tmp_path, monkeypatch):
    """The wheel's verilated.mk runs its includer with `python` (PYTHON3 = python): from a
    venv used without activation on a system with python3 only (Debian, Ubuntu), every
    native build (regress --sim verilator-native, --train, flow's sim stage, the C driver
    link) failed with make's "Error 127" and no cause named. Built with this interpreter."""
    need_native()
    path = os.pathsep.join(d for d in ("/usr/local/bin", "/usr/bin", "/bin") if os.path.isdir(d))
    if shutil.which("python", path=path) is not None:
        pytest.skip(f"a python on {path}")
    monkeypatch.setenv("PATH", path)
    monkeypatch.delenv("MAKEFLAGS", raising=False)
    directory, cached, _ = build_tiny(tmp_path / "root")
    assert not cached
    out = subprocess.run([str(directory / "tiny")], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "n=6"


def test_an_environment_overlay_changes_its_names_only_and_gives_them_back(monkeypatch):
    """The runners' environment was the whole os.environ saved and put back: a variable
    the host set meanwhile was lost. Only the overlay's names change, and one the host set
    again meanwhile stays the host's."""
    from ttforge.hw.tools import environ_overlay, host_environ

    monkeypatch.setenv("TTF_A", "host")
    monkeypatch.delenv("TTF_B", raising=False)
    monkeypatch.delenv("TTF_HOST", raising=False)
    monkeypatch.delenv("TTF_C", raising=False)
    with environ_overlay({"TTF_A": None, "TTF_B": "run", "TTF_C": "run"}):
        assert "TTF_A" not in os.environ and os.environ["TTF_B"] == "run"
        assert host_environ().get("TTF_A") == "host" and "TTF_B" not in host_environ()
        os.environ["TTF_HOST"] = "1"     # the host's own, meanwhile
        os.environ["TTF_C"] = "host's"
    assert os.environ["TTF_A"] == "host" and "TTF_B" not in os.environ
    assert os.environ["TTF_HOST"] == "1" and os.environ["TTF_C"] == "host's"


def test_overlays_in_threads_share_equal_values_and_wait_for_other_ones(monkeypatch):
    """Runs at once in threads restored each other's saved environments: the host kept
    the first run's values for good. Equal values are shared (the last out restores);
    another value of a held name waits until it is free."""
    import threading

    from ttforge.hw.tools import environ_overlay

    monkeypatch.setenv("TTF_X", "host")
    a, b = environ_overlay({"TTF_X": "run"}), environ_overlay({"TTF_X": "run"})
    a.__enter__()
    b.__enter__()
    a.__exit__(None, None, None)
    assert os.environ["TTF_X"] == "run"      # b still runs with it
    b.__exit__(None, None, None)
    assert os.environ["TTF_X"] == "host"

    order = []
    with environ_overlay({"TTF_X": "one"}):
        def other():
            with environ_overlay({"TTF_X": "two"}):
                order.append(os.environ["TTF_X"])
        t = threading.Thread(target=other)
        t.start()
        t.join(0.3)
        assert t.is_alive() and os.environ["TTF_X"] == "one"
        order.append("one done")
    t.join(5)
    assert order == ["one done", "two"] and os.environ["TTF_X"] == "host"


def test_a_nested_overlay_that_wants_another_value_is_refused_not_a_wait_for_itself():
    """One thread's block inside its own block, wanting another value of a held name,
    waited for the enclosing block to leave, which it never could (review V5). A nested
    block with the same value still works."""
    import threading

    from ttforge.hw.tools import environ_overlay

    def nested(out):
        with environ_overlay({"TTF_SELF": "a"}):
            try:
                with environ_overlay({"TTF_SELF": "b"}):
                    pass
            except RuntimeError as e:
                out.append(str(e))

    out: list[str] = []
    t = threading.Thread(target=nested, args=(out,), daemon=True)   # a hang fails, not hangs
    t.start()
    t.join(10)
    assert not t.is_alive(), "the nested block waited for its own enclosing block"
    assert out and "TTF_SELF is set to another value by an enclosing block" in out[0]

    # the same value nested is shared (another thread's other value waits its turn:
    # test_overlays_in_threads_share_equal_values_and_wait_for_other_ones)
    with environ_overlay({"TTF_NESTED": "a"}):
        with environ_overlay({"TTF_NESTED": "a"}):
            assert os.environ["TTF_NESTED"] == "a"
        assert os.environ["TTF_NESTED"] == "a"
    assert "TTF_NESTED" not in os.environ
