"""The docs cannot rot: runnable examples run, links resolve, the index lists every page."""

import re
import shlex
import subprocess
import sys

import pytest

from tests.support.markdown import DOCS, anchors, code_blocks, links

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


# pages whose ``ttforge ...`` command lines (in console blocks) must parse with today's CLI
COMMAND_PAGES = ("getting-started.md", "integration.md")


def _commands(page):
    for block in code_blocks(DOCS / page, "console"):
        for line in block.splitlines():
            line = line.split(" #")[0].strip()
            for part in line.split("&&"):
                part = part.strip()
                if part.startswith("ttforge "):
                    yield part


def test_doc_commands_parse():
    from ttforge.cli import build_parser

    parser = build_parser()
    commands = [(page, c) for page in COMMAND_PAGES for c in _commands(page)]
    assert len(commands) >= 12
    bad = []
    for page, command in commands:
        try:
            parser.parse_args(shlex.split(command)[1:])
        except SystemExit:
            bad.append(f"docs/{page}: {command}")
    assert not bad, "commands the CLI no longer accepts:\n" + "\n".join(bad)


def test_a_wrong_command_does_not_parse(capsys):
    from ttforge.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["generate", "digits.ttfa", "-o", "rtl", "--reset-polarity", "low"])


# the step-by-step journey of getting-started.md that needs no board and no minutes-long
# build, run as written (the bitstream build is tests/firmware/test_build_slow.py's)
JOURNEY = ("train", "quantize", "inspect", "generate", "run")


@pytest.mark.slow
def test_getting_started_journey_runs_as_written(tmp_path):
    steps = [c for c in _commands("getting-started.md")
             if shlex.split(c)[1] in JOURNEY and ("--port" not in c)]
    assert [shlex.split(c)[1] for c in steps] == ["train", "quantize", "inspect", "generate", "run"]
    inputs_block = next(b for b in code_blocks(DOCS / "getting-started.md", "python") if "inputs.npy" in b)
    for command in steps:
        if shlex.split(command)[1] == "run":   # the page makes inputs.npy just before
            subprocess.run([sys.executable, "-c", inputs_block], cwd=tmp_path, check=True)
        r = subprocess.run([sys.executable, "-m", "ttforge.cli", *shlex.split(command)[1:]],
                           cwd=tmp_path, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, f"{command}: exit {r.returncode}\n{r.stderr[-2000:]}"
    assert "equal to the golden executor: 8/8 vectors" in r.stdout
