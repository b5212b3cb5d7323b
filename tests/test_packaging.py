"""Every Python package of the source tree is in the wheel: ``[tool.setuptools] packages``
names each folder with an ``__init__.py`` under a mapped folder (an editable install finds
unlisted subpackages, a wheel silently drops them: ``ttforge.hw.engine`` was missing)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.toml import load_toml

ROOT = Path(__file__).resolve().parent.parent


def missing_packages(root: Path) -> list[str]:
    cfg = load_toml(root / "pyproject.toml")["tool"]["setuptools"]
    listed = set(cfg["packages"])
    missing = []
    for name, folder in cfg["package-dir"].items():
        base = root / folder
        for init in sorted(base.rglob("__init__.py")):
            rel = init.parent.relative_to(base)
            dotted = ".".join([name, *rel.parts]) if rel.parts else name
            if dotted not in listed:
                missing.append(dotted)
    return missing


def test_every_package_is_listed():
    assert missing_packages(ROOT) == []


def test_an_unlisted_subpackage_is_found(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[tool.setuptools]\npackages = ["p"]\n[tool.setuptools.package-dir]\n"p" = "src"\n')
    (tmp_path / "src" / "sub").mkdir(parents=True)
    (tmp_path / "src" / "__init__.py").write_text("")
    (tmp_path / "src" / "sub" / "__init__.py").write_text("")
    assert missing_packages(tmp_path) == ["p.sub"]


def test_license_is_an_spdx_expression_and_the_backend_reads_it():
    """``license = {text = ...}`` is deprecated: setuptools warns on every build that it stops
    being supported after 2027-02-18. The SPDX string form needs setuptools >= 77."""
    import re

    cfg = load_toml(ROOT / "pyproject.toml")
    assert isinstance(cfg["project"]["license"], str), cfg["project"]["license"]
    floors = [re.fullmatch(r"setuptools\s*>=\s*(\d+).*", r) for r in cfg["build-system"]["requires"]]
    assert any(m and int(m[1]) >= 77 for m in floors), cfg["build-system"]["requires"]


def test_the_license_text_is_the_one_the_metadata_names():
    cfg = load_toml(ROOT / "pyproject.toml")
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert cfg["project"]["license"] == "Apache-2.0"
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


def test_the_sdist_holds_what_its_tests_need(tmp_path):
    """The sdist is built from the tracked files and holds every one of tests/ (support
    code and corpora too), docs/, examples/, bench/ and .ci/, and the example configs as
    package data: setuptools alone took the 11 top-level tests/test_*.py, which could not
    even be collected without tests/support. Built without isolation (setuptools of this
    environment): a few seconds."""
    import shutil
    import subprocess
    import sys
    import tarfile

    try:
        tracked = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                 cwd=ROOT, capture_output=True, check=True, timeout=60).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout (an unpacked sdist is already what this checks)")
    files = [f for f in tracked.decode().split("\0") if f and os.path.lexists(ROOT / f)]
    tree = tmp_path / "tree"
    for f in files:
        (tree / f).parent.mkdir(parents=True, exist_ok=True)
        src = ROOT / f
        if src.is_symlink():
            os.symlink(os.readlink(src), tree / f)
        else:
            shutil.copy2(src, tree / f)
    code = "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "dist")], cwd=tree,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    with tarfile.open(tmp_path / "dist" / r.stdout.split()[-1]) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    wanted = [f for f in files if f.split("/")[0] in ("tests", "docs", "examples", "bench", ".ci")]
    assert len(wanted) > 500
    assert [f for f in wanted if f not in names] == []
    examples = sorted(p.name for p in (ROOT / "examples").glob("*.toml"))
    assert examples and all(f"flow/examples/{n}" in names for n in examples)
    assert not [n for n in names if n.endswith((".pyc", ".pyo")) or "__pycache__" in n]
    # Apache-2.0 section 4(a): a redistribution carries the licence's text (metadata
    # alone said Apache-2.0 while no LICENSE file existed to pass on)
    assert "LICENSE" in names
