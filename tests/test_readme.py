"""The README's Python examples run, so they cannot rot."""

import pytest

from tests.support.markdown import ROOT, code_blocks

README = ROOT / "README.md"
BLOCKS = code_blocks(README, "python")


def test_readme_has_examples():
    assert BLOCKS, "README.md lost its Python examples"


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(BLOCKS[index], f"README.md[python block {index}]", "exec"), {})
