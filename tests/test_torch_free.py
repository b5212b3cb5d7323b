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
    """The import guard does block: importing the model side fails under it."""
    r = _run("import ttforge.model")
    assert r.returncode != 0 and "blocked import of torch" in r.stderr


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


def test_train_command_without_torch_is_one_line():
    """A command that needs the ``train`` extra says which install gives it, in one line."""
    r = _run("""
        from ttforge.cli import main
        sys.exit(main(["train", "--epochs", "1"]))
    """)
    assert r.returncode == 3, r.stderr
    assert r.stderr.strip().count("\\n") == 0 and "pip install 'ttforge[train]'" in r.stderr


@pytest.mark.parametrize("command", ["train", "quantize", "diverge", "train-int", "export-qonnx"])
def test_help_of_a_train_command_without_torch(command):
    """``--help`` is no run: without torch it shows the command's description and which
    install gives its options, exit 0 (it was the run's refusal, exit 3)."""
    from ttforge.cli import SUBCOMMANDS

    r = _run(f"""
        from ttforge.cli import main
        try:
            code = main([{command!r}, "--help"])
        except SystemExit as e:
            code = e.code
        sys.exit(code)
    """)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    text = " ".join(r.stdout.split())
    assert f"usage: ttforge {command}" in text
    assert " ".join(SUBCOMMANDS[command][1].split()[:3]) in text   # its description
    assert "pip install 'ttforge[train]'" in text


def test_cli_reference_without_torch_is_one_line():
    r = _run("""
        from ttforge.cli_reference import main
        sys.exit(main(["-o", "-"]))
    """)
    assert r.returncode == 3 and r.stdout == "", r.stderr
    assert r.stderr.strip().count("\n") == 0 and "pip install 'ttforge[train]'" in r.stderr


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
