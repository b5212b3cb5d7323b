"""The figures of docs/benchmarks.md and of the README's headline table are the JSON's:
``bench/_docgen.py`` renders them from ``bench/results/*.json``, and this test fails when
a page says something else (a hand-edited number, or a JSON re-measured without
``python bench/_docgen.py``)."""

from __future__ import annotations

import sys

from tests.support.markdown import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import _docgen  # noqa: E402


def test_benchmarks_page_and_readme_agree_with_the_json():
    bad = _docgen.stale()
    assert not bad, "stale figures (run: python bench/_docgen.py):\n" + "\n".join(bad)


def test_every_block_is_there():
    """The README's headline table and the page's summary are generated blocks (not prose)."""
    readme, doc = _docgen.README.read_text(), _docgen.DOC.read_text()
    assert "<!-- generated: readme -->" in readme and "<!-- generated: summary -->" in doc
    for name in _docgen.BLOCKS:
        assert f"<!-- generated: {name} -->" in (readme if name == "readme" else doc), name


def test_a_headline_number_that_disagrees_is_found(tmp_path):
    """Sibling: one digit of the README's headline table changed by hand must be caught."""
    text = _docgen.render(_docgen.README.read_text())
    start = text.index("<!-- generated: readme -->")
    i = next(j for j in range(text.index("| [", start), len(text)) if text[j].isdigit())
    changed = tmp_path / "README.md"
    changed.write_text(text[:i] + str((int(text[i]) + 1) % 10) + text[i + 1:])
    assert _docgen.stale([changed]) == [f"{changed}: block 'readme'"]
    same = tmp_path / "same.md"
    same.write_text(text)
    assert _docgen.stale([same]) == []


def test_a_figure_names_its_commit_or_says_to_remeasure():
    for what, figure, goal, src, command in _docgen.headline():
        assert " at `" in src or "re-measure" in src, (what, src)
        assert command.startswith("`python bench/"), (what, command)
