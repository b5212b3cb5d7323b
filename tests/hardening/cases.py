"""Reading the bad-input corpus manifest (``corpus/cases.toml`` and ``corpus/cli.toml``)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from tests.support.toml import tomllib

CORPUS = Path(__file__).resolve().parent / "corpus"


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    expect: str
    subprocess: bool
    xfail: str | None = None


def load_cases() -> list[Case]:
    """Every case of the corpus, in manifest order."""
    spec = tomllib.loads((CORPUS / "cases.toml").read_text())
    in_subprocess = set(spec.get("subprocess", []))
    xfail = dict(spec.get("xfail", {}))
    out: list[Case] = []
    for group, g in spec["groups"].items():
        folder = g.get("dir", group)
        cmd = g["argv"][0]
        for name, expect in g["cases"]:
            path = CORPUS / folder / name
            assert path.exists(), f"corpus case {folder}/{name} is missing; run make_corpus.py"
            cid = f"{folder}/{name}" + ("" if group == folder else f"@{cmd}")
            argv = tuple(a.replace("{file}", str(path)) for a in g["argv"])
            out.append(Case(cid, argv, expect, cid in in_subprocess, xfail.get(cid)))
    for cid, line, expect in tomllib.loads((CORPUS / "cli.toml").read_text())["cases"]:
        cid = f"cli/{cid}"
        out.append(Case(cid, tuple(shlex.split(line)), expect, cid in in_subprocess, xfail.get(cid)))
    ids = [c.id for c in out]
    assert len(ids) == len(set(ids)), "duplicate corpus case ids"
    unknown = (in_subprocess | set(xfail)) - set(ids)
    assert not unknown, f"cases.toml names unknown cases: {sorted(unknown)}"
    return out


def expand(argv: tuple[str, ...], values: dict[str, Path]) -> list[str]:
    """``argv`` with its placeholders replaced."""
    out = []
    for a in argv:
        for key, value in values.items():
            a = a.replace("{" + key + "}", str(value))
        assert "{" not in a, f"unknown placeholder in {a!r}"
        out.append(a)
    return out
