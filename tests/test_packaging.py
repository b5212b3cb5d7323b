"""Every Python package of the source tree is in the wheel: ``[tool.setuptools] packages``
names each folder with an ``__init__.py`` under a mapped folder (an editable install finds
unlisted subpackages, a wheel silently drops them: ``ttforge.hw.engine`` was missing)."""

from __future__ import annotations

from pathlib import Path

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
