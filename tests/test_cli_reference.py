"""docs/cli.md is generated from the parser and cannot go stale."""

import argparse
from pathlib import Path

import pytest

from ttforge.cli import SUBCOMMANDS, build_parser
from ttforge.cli_reference import REGENERATE, main, render, subs_names

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


@pytest.fixture(scope="module")
def rendered():
    return render(build_parser())


def test_docs_cli_md_is_up_to_date(rendered):
    assert DOC.exists(), f"docs/cli.md is missing; regenerate it with: {REGENERATE}"
    assert DOC.read_text(encoding="utf-8") == rendered, (
        f"docs/cli.md is out of date with ttforge.cli.build_parser(); regenerate it with: {REGENERATE}"
    )


def test_every_subcommand_has_a_section(rendered):
    assert subs_names(rendered) == list(SUBCOMMANDS)
    assert set(subs_names(DOC.read_text(encoding="utf-8"))) == set(SUBCOMMANDS), (
        f"docs/cli.md lacks a subcommand; regenerate it with: {REGENERATE}"
    )


def test_every_option_is_listed(rendered):
    from ttforge.cli_reference import subcommand_parsers

    for name, sub in subcommand_parsers(build_parser()).items():
        section = rendered.split(f"## `ttforge {name}`")[1].split("\n## ")[0]
        for action in sub._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert f"`{flag}" in section, (name, flag)


def test_independent_of_the_terminal(rendered, monkeypatch):
    # argparse wraps to $COLUMNS; the page must not
    monkeypatch.setenv("COLUMNS", "40")
    assert render(build_parser()) == rendered


def test_a_new_subcommand_appears_without_edits(rendered):
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    p = sub.add_parser("zz-new", help="A command the generator has never seen.", description="A command the generator has never seen.")
    p.add_argument("--frobs", type=int, default=3, help="how many frobs")
    text = render(parser)
    assert text != rendered
    assert subs_names(text)[-1] == "zz-new"
    assert "| `--frobs FROBS` | `3` | how many frobs |" in text
    assert "[`zz-new`](#ttforge-zz-new)" in text


def test_check_fails_on_a_stale_page_and_names_the_command(tmp_path, capsys, rendered):
    page = tmp_path / "cli.md"
    assert main(["-o", str(page)]) == 0
    assert page.read_text(encoding="utf-8") == rendered
    assert main(["--check", "-o", str(page)]) == 0
    stale = rendered.replace("number of random cases (", "number of random test cases (")
    assert stale != rendered
    page.write_text(stale, encoding="utf-8")
    capsys.readouterr()
    assert main(["--check", "-o", str(page)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.endswith(REGENERATE)
    assert main(["--check", "-o", str(tmp_path / "missing.md")]) == 1
