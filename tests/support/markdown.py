"""Fenced code blocks and links of the Markdown pages, for the tests that keep them honest.

Convention (``docs/index.md``, "Writing docs"): a ``python`` block on a page whose
examples are executed must run as it stands; commands that are shown but not run by
the tests (installs, board commands, long builds) are ``console`` blocks, other
languages (``tcl``, ``c``, ``text``) are never run.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["ROOT", "DOCS", "code_blocks", "links", "anchors", "slug"]

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

# an opening fence with its info string (language first), the body, the closing fence
_FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.M | re.S)
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)


def code_blocks(path: str | Path, lang: str) -> list[str]:
    """The bodies of the fenced blocks of ``path`` whose language is ``lang``."""
    text = Path(path).read_text(encoding="utf-8")
    return [body for info, body in _FENCE.findall(text) if info.split()[:1] == [lang]]


def _prose(text: str) -> str:
    return _FENCE.sub("", text)


def links(path: str | Path) -> list[str]:
    """Link targets in ``path`` outside code blocks."""
    return _LINK.findall(_prose(Path(path).read_text(encoding="utf-8")))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces -> '-'."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: str | Path) -> set[str]:
    """The heading anchors of ``path``."""
    return {slug(h) for h in _HEADING.findall(_prose(Path(path).read_text(encoding="utf-8")))}
