"""The hardware side never needs PyTorch (docs/architecture.md): ``ttforge.ir``, ``hw``,
``sim`` and ``firmware`` import without it, and ``ttforge --version``, ``--help``,
``inspect`` and ``generate`` run without loading it. Each check runs in a fresh
interpreter, so an import anywhere in the chain shows up in ``sys.modules``."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# A guard that makes any import of these fail: stronger than checking sys.modules after the
# fact (an import inside a function that ran and was then deleted would still be caught).
_BLOCK = textwrap.dedent("""
    import sys
    class _Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {blocked!r}:
                raise ModuleNotFoundError(f"blocked import of {{name}} (the hardware side must not need it)",
                                          name=name)
            return None
    sys.meta_path.insert(0, _Block())
""")

TRAIN_ONLY = ("torch", "sklearn", "matplotlib", "onnx")


def _run(code: str, blocked=TRAIN_ONLY, cwd=None) -> subprocess.CompletedProcess:
    src = _BLOCK.format(blocked=set(blocked)) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", src], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


@pytest.mark.parametrize("module", ["ttforge.ir", "ttforge.hw", "ttforge.sim", "ttforge.firmware",
                                    "ttforge.cli"])
def test_hardware_side_imports_without_train_packages(module):
    r = _run(f"import {module}")
    assert r.returncode == 0, r.stderr


def test_the_guard_can_fail():
    """The import guard does block: importing the model side's layers fails under it."""
    r = _run("from ttforge.model import TTLinear")
    assert r.returncode != 0 and "blocked import of torch" in r.stderr


@pytest.mark.parametrize("package", ["ttforge.model", "ttforge.quant"])
def test_the_torch_packages_import_lazily(package):
    """``import ttforge.model`` / ``ttforge.quant`` imports no torch (their names load on
    first use): what the train commands' parsers import, without torch."""
    r = _run(f"import {package}; assert 'TTLinear' in dir({package}) or 'QuantNetwork' in dir({package})")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["generate", "--help"], ["inspect", "--help"],
                                  ["regress", "--help"], ["run", "--help"], ["build", "--help"]])
def test_cli_without_train_packages(argv):
    r = _run(f"""
        from ttforge.cli import main
        try:
            code = main({argv!r})
        except SystemExit as e:
            code = e.code
        assert "torch" not in sys.modules
        sys.exit(code)
    """)
    assert r.returncode in (0, 2) and "Traceback" not in r.stderr, r.stderr
    assert "usage" in r.stdout or "ttforge" in r.stdout


@pytest.mark.parametrize("argv", [["train", "--epochs", "1"], ["decompose", "x.pt", "--max-rank", "2", "-o", "y.pt"],
                                  ["export-onnx", "x.pt", "-o", "y.onnx"], ["quantize", "x.pt", "-o", "y.ttfa"],
                                  ["diverge", "x.pt"], ["train-int", "--epochs", "1"]])
def test_train_command_without_torch_is_one_line(argv, tmp_path):
    """A command that needs the ``train`` extra says which install gives it, in one line,
    and writes nothing (its parser is torch-free; what it runs is not)."""
    r = _run(f"""
        from ttforge.cli import main
        sys.exit(main({argv!r}))
    """, cwd=tmp_path)
    assert r.returncode == 3, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "pip install 'ttforge[train]'" in r.stderr
    assert list(tmp_path.iterdir()) == []


_TRAIN_EXTRA_COMMANDS = ["train", "decompose", "export-onnx", "quantize", "diverge", "export-qonnx", "train-int"]


def _help(command: str, blocked) -> str:
    r = _run(f"""
        import os
        os.environ["COLUMNS"] = "100"   # argparse wraps to the terminal's width
        from ttforge.cli import main
        try:
            code = main([{command!r}, "--help"])
        except SystemExit as e:
            code = e.code
        assert "torch" not in sys.modules or not {bool(blocked)!r}
        sys.exit(code)
    """, blocked=blocked)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    return r.stdout


@pytest.mark.parametrize("command", _TRAIN_EXTRA_COMMANDS)
def test_help_of_a_train_command_without_torch(command):
    """``--help`` is no run: without torch it is the whole help, every option, the same
    text as with torch (it was the description and the install line only: the parser's
    module imported torch)."""
    without = _help(command, TRAIN_ONLY)
    assert without == _help(command, ()) and f"usage: ttforge {command} [-h] " in without


def test_cli_reference_without_torch():
    """The CLI reference lists every command's options without torch: the same page."""
    from ttforge.cli_reference import render

    r = _run("""
        from ttforge.cli_reference import main
        sys.exit(main(["-o", "-"]))
    """)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert r.stdout == render()


def test_inspect_and_generate_an_artifact_without_torch(tmp_path):
    """An artifact made elsewhere: inspect it and generate its RTL with no torch importable."""
    r = _run(f"""
        import numpy as np
        from ttforge.ir import save_artifact
        from ttforge.ir.random import random_network
        from ttforge.cli import main
        net = random_network(np.random.default_rng(3))
        save_artifact(net, {str(tmp_path / 'net.ttfa')!r})
        assert main(["inspect", {str(tmp_path / 'net.ttfa')!r}]) == 0
        assert main(["generate", {str(tmp_path / 'net.ttfa')!r}, "-o", {str(tmp_path / 'rtl')!r}]) == 0
        assert "torch" not in sys.modules
    """)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "rtl").is_dir() and any((tmp_path / "rtl").glob("*.v"))
