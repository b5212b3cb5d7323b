"""The docs cannot rot: runnable examples run, links resolve, the index lists every page."""

import re

import pytest

from ._markdown import DOCS, anchors, code_blocks, links

# pages whose ``python`` blocks are executed, each in a fresh namespace and directory
RUNNABLE = ("getting-started.md", "concepts.md")
EXAMPLES = [(page, i) for page in RUNNABLE for i in range(len(code_blocks(DOCS / page, "python")))]


def test_runnable_pages_have_examples():
    for page in RUNNABLE:
        assert code_blocks(DOCS / page, "python"), f"docs/{page} lost its Python examples"


@pytest.mark.parametrize("page,index", EXAMPLES, ids=[f"{p}[{i}]" for p, i in EXAMPLES])
def test_doc_example_runs(page, index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = code_blocks(DOCS / page, "python")[index]
    exec(compile(code, f"docs/{page}[python block {index}]", "exec"), {})


def _local_links():
    for page in sorted(DOCS.glob("*.md")):
        for target in links(page):
            if not re.match(r"[a-z]+:", target):     # http:, https:, mailto: are not checked
                yield page, target


def test_links_between_pages_resolve():
    bad = []
    for page, target in _local_links():
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(f"docs/{page.name}: {target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"docs/{page.name}: {target} (no heading '{anchor}' in {dest.name})")
    assert not bad, "broken links:\n" + "\n".join(bad)


def test_a_broken_link_is_found(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("# Title\n\nsee [x](q.md#nowhere) and [y](#title)\n\n```sh\n[z](skip.md)\n```\n")
    (tmp_path / "q.md").write_text("## Somewhere else\n")
    assert links(page) == ["q.md#nowhere", "#title"]
    assert "nowhere" not in anchors(tmp_path / "q.md") and "title" in anchors(page)


def test_index_lists_every_page():
    listed = {t.partition("#")[0] for t in links(DOCS / "index.md")}
    pages = {p.name for p in DOCS.glob("*.md")} - {"index.md"}
    assert pages <= listed, f"docs/index.md does not list: {sorted(pages - listed)}"
