"""The code runs on the oldest Python ``requires-python`` admits: no standard-library name
newer than that floor unless guarded (``if sys.version_info >= ...``, ``hasattr``, or a
``try`` catching ImportError/AttributeError). ``import tomllib`` (3.11) made every TOML
config an internal error on 3.10, ``hashlib.file_digest`` (3.11) every flow stage digest;
the suite runs on 3.11, so only a scan sees them."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.support.toml import load_toml

ROOT = Path(__file__).resolve().parent.parent

# (module, name) -> the Python version that added it; name None: the module itself
NEWER: dict[tuple[str, str | None], tuple[int, int]] = {
    ("tomllib", None): (3, 11), ("wsgiref.types", None): (3, 11),
    ("hashlib", "file_digest"): (3, 11), ("datetime", "UTC"): (3, 11),
    ("contextlib", "chdir"): (3, 11), ("math", "cbrt"): (3, 11), ("math", "exp2"): (3, 11),
    ("operator", "call"): (3, 11), ("sys", "exception"): (3, 11), ("re", "NOFLAG"): (3, 11),
    ("logging", "getLevelNamesMapping"): (3, 11), ("inspect", "getmembers_static"): (3, 11),
    ("asyncio", "TaskGroup"): (3, 11), ("asyncio", "timeout"): (3, 11),
    ("asyncio", "timeout_at"): (3, 11), ("asyncio", "Runner"): (3, 11), ("asyncio", "Barrier"): (3, 11),
    **{("enum", n): (3, 11) for n in ("StrEnum", "ReprEnum", "verify", "member", "nonmember",
                                      "global_enum", "EnumCheck", "FlagBoundary", "property")},
    **{("typing", n): (3, 11) for n in ("Self", "LiteralString", "Never", "assert_never",
                                        "assert_type", "reveal_type", "Required", "NotRequired",
                                        "TypeVarTuple", "Unpack", "dataclass_transform",
                                        "get_overloads", "clear_overloads")},
    ("itertools", "batched"): (3, 12), ("math", "sumprod"): (3, 12), ("typing", "override"): (3, 12),
    ("typing", "TypeAliasType"): (3, 12), ("os.path", "splitroot"): (3, 12),
    ("inspect", "markcoroutinefunction"): (3, 12),
    ("copy", "replace"): (3, 13), ("warnings", "deprecated"): (3, 13), ("math", "fma"): (3, 13),
    ("os", "process_cpu_count"): (3, 13), ("typing", "ReadOnly"): (3, 13), ("typing", "TypeIs"): (3, 13),
}
# builtins and methods, by bare name
NEWER_NAMES = {"ExceptionGroup": (3, 11), "BaseExceptionGroup": (3, 11)}
NEWER_METHODS = {"add_note": (3, 11)}
# keyword arguments: shutil.rmtree(onexc=), tempfile.NamedTemporaryFile(delete_on_close=)
NEWER_KEYWORDS = {"onexc": (3, 12), "delete_on_close": (3, 12)}


def python_floor(root: Path = ROOT) -> tuple[int, int]:
    spec = load_toml(root / "pyproject.toml")["project"]["requires-python"]
    m = re.fullmatch(r"\s*>=\s*(\d+)\.(\d+)\s*", spec)
    assert m, f"requires-python {spec!r}: expected '>=X.Y'"
    return int(m[1]), int(m[2])


def _guarded(parents: list[ast.AST], node: ast.AST) -> bool:
    """Whether ``node`` sits in the body of a version/feature test or an import fallback."""
    chain = [*parents, node]
    for outer, inner in zip(chain, chain[1:]):
        if isinstance(outer, ast.If) and inner in outer.body:
            text = ast.unparse(outer.test)
            if "version_info" in text or "hasattr(" in text:
                return True
        if isinstance(outer, ast.Try) and inner in outer.body:
            for h in outer.handlers:
                caught = ast.unparse(h.type) if h.type is not None else ""
                if re.search(r"\b(ImportError|ModuleNotFoundError|AttributeError)\b", caught):
                    return True
    return False


def newer_uses(source: str, floor: tuple[int, int], name: str = "<src>") -> list[str]:
    """``line: what (3.X)`` for each unguarded use in ``source`` of a name newer than ``floor``."""
    tree = ast.parse(source, name)
    found: list[str] = []
    aliases: dict[str, str] = {}    # local name -> module, from `import m` / `import m as a`

    def visit(node: ast.AST, parents: list[ast.AST]) -> None:
        what, ver = None, None
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[(a.asname or a.name).split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
                if (a.name, None) in NEWER:
                    what, ver = f"import {a.name}", NEWER[(a.name, None)]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if (node.module, None) in NEWER:
                what, ver = f"from {node.module} import", NEWER[(node.module, None)]
            for a in node.names:
                if (node.module, a.name) in NEWER:
                    what, ver = f"{node.module}.{a.name}", NEWER[(node.module, a.name)]
        elif isinstance(node, ast.Attribute):
            dotted = ast.unparse(node.value)
            module = aliases.get(dotted.split(".")[0], dotted.split(".")[0]) + dotted[len(dotted.split(".")[0]):]
            if (module, node.attr) in NEWER:
                what, ver = f"{module}.{node.attr}", NEWER[(module, node.attr)]
            elif node.attr in NEWER_METHODS:
                what, ver = f".{node.attr}()", NEWER_METHODS[node.attr]
        elif isinstance(node, ast.Name) and node.id in NEWER_NAMES:
            what, ver = node.id, NEWER_NAMES[node.id]
        elif isinstance(node, ast.keyword) and node.arg in NEWER_KEYWORDS:
            what, ver = f"{node.arg}=", NEWER_KEYWORDS[node.arg]
        elif type(node).__name__ == "TryStar":
            what, ver = "except*", (3, 11)
        if what and ver > floor and not _guarded(parents, node):
            found.append(f"{getattr(node, 'lineno', '?')}: {what} ({ver[0]}.{ver[1]})")
        for child in ast.iter_child_nodes(node):
            visit(child, [*parents, node])

    visit(tree, [])
    return found


def _sources() -> list[Path]:
    """Every Python file of the packages, the tests and the benchmarks (a git checkout
    or an unpacked sdist alike)."""
    folders = {*load_toml(ROOT / "pyproject.toml")["tool"]["setuptools"]["package-dir"].values(),
               "tests", "bench"}
    return sorted(p for f in folders for p in (ROOT / f).rglob("*.py") if "__pycache__" not in p.parts)


def test_no_python_newer_than_requires_python():
    floor = python_floor()
    files = _sources()
    assert len(files) > 100
    bad = [f"{f.relative_to(ROOT)}:{u}" for f in files
           for u in newer_uses(f.read_text(encoding="utf-8"), floor, str(f))]
    assert bad == [], f"Python newer than requires-python >={floor[0]}.{floor[1]}: {bad}"


def test_the_scan_sees_each_kind_and_accepts_guards():
    src = """
import tomllib
import hashlib as hl
from typing import Self
x = hl.file_digest(f, "sha256")
raise ExceptionGroup("m", [])
e.add_note("n")
shutil.rmtree(p, onexc=None)
if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib
try:
    from enum import StrEnum
except ImportError:
    StrEnum = None
if hasattr(hashlib, "file_digest"):
    hashlib.file_digest(f, "sha256")
"""
    assert newer_uses(src, (3, 10)) == [
        "2: import tomllib (3.11)", "4: typing.Self (3.11)", "5: hashlib.file_digest (3.11)",
        "6: ExceptionGroup (3.11)", "7: .add_note() (3.11)", "8: onexc= (3.12)"]
    assert newer_uses(src, (3, 12)) == []


def test_tomli_stands_in_for_tomllib_below_3_11():
    """The guarded ``import tomli`` needs its package where tomllib is missing."""
    if python_floor() >= (3, 11):
        return
    deps = load_toml(ROOT / "pyproject.toml")["project"]["dependencies"]
    assert any(re.fullmatch(r"""tomli\s*>=\s*[\d.]+\s*;\s*python_version\s*<\s*["']3\.11["']""", d)
               for d in deps), deps
