"""The import rules of docs/architecture.md, read from the source with ``ast``: data flows
one way (model -> quant -> ir -> hw -> sim -> firmware -> flow), ``ttforge.ir`` imports
nothing of PyTorch or Amaranth, and ``hw``, ``sim`` and ``firmware`` import the contract,
never ``model`` or ``quant``. Every import counts, also one inside a function.

tests/test_torch_free.py checks the same promise at run time (fresh interpreters with
torch blocked); this test names the file and line of a forbidden import, including one on
a path that no run-time check happens to execute."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# subpackage -> its folder (pyproject.toml, [tool.setuptools.package-dir])
FOLDERS = {"ir": "ir", "model": "model", "quant": "quant", "hw": "hw", "sim": "sim",
           "firmware": "firmware", "flow": "flow"}
CORE = "core"   # ttforge/ itself: the CLI, errors, atomic writes

# which ttforge subpackages each may import (itself always)
MAY_IMPORT = {
    "ir": {CORE},
    "model": {CORE, "ir"},
    "quant": {CORE, "ir", "model"},
    "hw": {CORE, "ir"},
    "sim": {CORE, "ir", "hw"},
    "firmware": {CORE, "ir", "hw", "sim"},
    "flow": {CORE, "ir", "model", "quant", "hw", "sim", "firmware"},
}
TRAIN_ONLY = {"torch", "sklearn", "matplotlib", "onnx", "onnxruntime", "qonnx"}
# third-party packages each may not import
MAY_NOT_USE = {
    "ir": TRAIN_ONLY | {"amaranth", "cocotb", "cocotb_tools", "cocotbext"},
    "hw": TRAIN_ONLY,
    "sim": TRAIN_ONLY,
    "firmware": TRAIN_ONLY,
}


def _module_name(pkg: str, folder: Path, path: Path) -> tuple[list[str], bool]:
    parts = ["ttforge"] + ([] if pkg == CORE else [pkg]) + list(path.relative_to(folder).with_suffix("").parts)
    if parts[-1] == "__init__":
        return parts[:-1], True
    return parts, False


def imports(pkg: str, folder: Path, path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path`` (relative ones resolved)."""
    mod, is_pkg = _module_name(pkg, folder, path)
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod if is_pkg else mod[:-1]
                base = base[:len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
                # ``from . import x``: x may itself be a subpackage
                names = [f"{name}.{a.name}" for a in node.names] if not node.module else [name]
            else:
                names = [node.module]
            out += [(node.lineno, n) for n in names]
    return out


def target(name: str) -> str:
    """The ttforge subpackage (or CORE) or the third-party top-level package ``name`` is in."""
    parts = name.split(".")
    if parts[0] != "ttforge":
        return parts[0]
    return parts[1] if len(parts) > 1 and parts[1] in FOLDERS else CORE


def violations(pkg: str, folder: Path) -> list[str]:
    bad = []
    for path in sorted(folder.rglob("*.py")):
        for line, name in imports(pkg, folder, path):
            t = target(name)
            internal = name.split(".")[0] == "ttforge"
            if internal and t != pkg and t not in MAY_IMPORT[pkg]:
                bad.append(f"{path.relative_to(folder.parent)}:{line}: {pkg} imports {name}")
            elif not internal and t in MAY_NOT_USE.get(pkg, ()):
                bad.append(f"{path.relative_to(folder.parent)}:{line}: {pkg} imports {name}")
    return bad


@pytest.mark.parametrize("pkg", sorted(FOLDERS))
def test_imports_flow_one_way(pkg):
    bad = violations(pkg, ROOT / FOLDERS[pkg])
    assert not bad, "imports against docs/architecture.md:\n" + "\n".join(bad)


def test_the_core_imports_no_train_package_at_module_level():
    """ttforge/ (CLI, errors, atomic writes) is imported by everything: nothing heavy at its top."""
    bad = []
    for path in sorted((ROOT / "ttforge").glob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            bad += [f"ttforge/{path.name}:{node.lineno}: {n}" for n in names
                    if n.split(".")[0] in TRAIN_ONLY | {"amaranth"}
                    or (n.startswith("ttforge.") and target(n) != CORE)]
    assert not bad, "module-level imports of the core that load a subpackage or torch:\n" + "\n".join(bad)


def test_a_forbidden_import_is_found(tmp_path):
    """The check can fail: hardware code that reaches into quant or torch is named with its line."""
    hw = tmp_path / "hw"
    (hw / "engine").mkdir(parents=True)
    (hw / "__init__.py").write_text("")
    (hw / "engine" / "__init__.py").write_text("from ...quant import arith\n")
    (hw / "engine" / "lanes.py").write_text("def f():\n    import torch\n    from ttforge.ir import execute\n")
    assert violations("hw", hw) == [
        "hw/engine/__init__.py:1: hw imports ttforge.quant",
        "hw/engine/lanes.py:2: hw imports torch",
    ]
    ir = tmp_path / "ir"
    ir.mkdir()
    (ir / "x.py").write_text("from amaranth import Signal\nfrom . import arith\n")
    assert violations("ir", ir) == ["ir/x.py:1: ir imports amaranth"]


def private_imports(pkg: str, folder: Path) -> list[str]:
    """``file:line: module.name`` of every private name (``_x``) ``pkg`` imports from
    another ttforge package: what one package uses of another is that package's public
    face, so that the owner can change its private helpers freely."""
    bad = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not isinstance(node, ast.ImportFrom) or node.level or not (node.module or "").startswith("ttforge"):
                continue
            if target(node.module) == pkg:
                continue
            bad += [f"{path.relative_to(folder.parent)}:{node.lineno}: {node.module}.{a.name}" for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")]
    return bad


@pytest.mark.parametrize("pkg", sorted(FOLDERS) + [CORE])
def test_no_package_imports_another_s_private_names(pkg):
    folder = ROOT / ("ttforge" if pkg == CORE else FOLDERS[pkg])
    bad = private_imports(pkg, folder)
    assert not bad, "private names imported across packages (make them public in their owner):\n" + "\n".join(bad)


def test_a_private_import_is_found(tmp_path):
    """The check can fail: model reaching into the contract's private helper (review V6:
    model.train imported ir.cli._data_spec) is named with its line; the package's own
    private names are its business."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "train.py").write_text("def f():\n    from ttforge.ir.cli import _data_spec, load\n"
                                    "    from ttforge.model.data import _read\n")
    assert private_imports("model", model) == ["model/train.py:2: ttforge.ir.cli._data_spec"]
