"""Shared by the bench scripts: rewrite one generated section of a Markdown file (``--doc``)."""

from __future__ import annotations

from pathlib import Path

from ttforge.atomic import atomic_write_text

DOC_HEADER = "# ttforge benchmarks"


def update_section(path: Path | None, title: str, generated: str, generated_end: str) -> None:
    """Replace the generated part of section ``title`` (a ``## ...`` line) of ``path``
    with ``generated`` (or append the section), keeping the other sections and the
    hand-written text that follows the ``generated_end`` marker inside this one.
    Nothing when ``path`` is None (the default of every bench's ``--doc``):
    docs/benchmarks.md is rendered from the JSON by bench/_docgen.py."""
    if path is None:
        return
    text = path.read_text() if path.exists() else DOC_HEADER + "\n"
    lines = text.splitlines()
    new = generated.rstrip("\n").splitlines() + ["", generated_end]
    start = next((i for i, line in enumerate(lines) if line.strip() == title), None)
    if start is None:
        while lines and not lines[-1].strip():
            lines.pop()
        lines += [""] + new
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
                   len(lines))
        body = lines[start:end]
        kept = body[body.index(generated_end) + 1:] if generated_end in body else [""]
        lines = lines[:start] + new + kept + lines[end:]
    atomic_write_text(path, "\n".join(lines).rstrip("\n") + "\n")
