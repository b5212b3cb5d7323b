"""The tests' own rules: helpers shared by several test modules live in ``tests/support/``,
so no test module (nor a conftest) imports a test module or a conftest; and no test skips
because a ttforge module does not import (an import error must fail the run, not hide it).
Each rule is checked with ``ast`` over every file under tests/, and each has a sibling that
feeds it a breaking file and must find it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    """``(line, dotted name)`` of every import in ``path``, relative ones resolved against
    the file's package (``tests.hw``, ...), including imports inside functions."""
    rel = path.relative_to(TESTS.parent).with_suffix("")
    package = list(rel.parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            mod = ".".join([*base, *(node.module.split(".") if node.module else [])])
            out.append((node.lineno, mod))
            out += [(node.lineno, f"{mod}.{a.name}") for a in node.names]
    return out


def _is_test_module(name: str) -> bool:
    # any package path: a test that puts tests/ on sys.path imports ``ir.test_x``
    return any(p.startswith("test_") or p == "conftest" for p in name.split("."))


def cross_imports(root: Path) -> list[str]:
    """Every import of a test module or a conftest by another file under ``root``."""
    bad = []
    for path in sorted(root.rglob("*.py")):
        seen = set()
        for line, name in _imported_modules(path):
            if _is_test_module(name) and line not in seen:
                seen.add(line)
                bad.append(f"{path.relative_to(root.parent)}:{line} imports {name}; move what it needs "
                           f"to tests/support/")
    return bad


def import_skips(root: Path) -> list[str]:
    """Every ``pytest.importorskip`` of a ttforge module under ``root``."""
    bad = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "importorskip" and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and str(node.args[0].value).startswith("ttforge")):
                bad.append(f"{path.relative_to(root.parent)}:{node.lineno} skips when "
                           f"{node.args[0].value} does not import; import it (a failure must show)")
    return bad


def test_no_test_module_imports_another():
    assert cross_imports(TESTS) == []


def test_no_test_skips_on_a_ttforge_import():
    assert import_skips(TESTS) == []


@pytest.fixture
def fake_tests(tmp_path):
    root = tmp_path / "tests"
    (root / "hw").mkdir(parents=True)
    (root / "support").mkdir()
    for d in (root, root / "hw", root / "support"):
        (d / "__init__.py").write_text("")
    return root


def test_a_cross_import_is_found(fake_tests):
    (fake_tests / "hw" / "test_a.py").write_text("def helper():\n    return 1\n")
    (fake_tests / "hw" / "test_b.py").write_text("from .test_a import helper\n")
    (fake_tests / "hw" / "test_c.py").write_text("def f():\n    from tests.hw.conftest import x\n")
    (fake_tests / "hw" / "test_d.py").write_text("from tests.support.nets import small_net\n")
    found = [b.split(" imports ")[0] for b in _cross_imports_at(fake_tests)]
    assert found == ["tests/hw/test_b.py:1", "tests/hw/test_c.py:2"]


def test_an_import_skip_is_found(fake_tests):
    (fake_tests / "hw" / "test_e.py").write_text(
        "import pytest\npytest.importorskip('ttforge.hw.engine')\npytest.importorskip('litex')\n")
    assert [b.split(" skips")[0] for b in import_skips(fake_tests)] == ["tests/hw/test_e.py:2"]


def _cross_imports_at(root: Path) -> list[str]:
    """:func:`cross_imports` for a tree at another place (its package names from ``root``)."""
    global TESTS
    saved, TESTS = TESTS, root
    try:
        return cross_imports(root)
    finally:
        TESTS = saved
