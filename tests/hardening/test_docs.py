"""docs/artifact.md, docs/cli.md and docs/hardening.md say what the code does (issue 19,
class 6): the worked example's size and hash, the documented imports, every exit status
and every stated limit."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

import ttforge.errors as errors
import ttforge.limits as limits

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_the_worked_example_has_the_stated_size_and_hash():
    from ttforge.ir import dumps_artifact

    from tests.support.nets import example_network

    text = (DOCS / "artifact.md").read_text()
    m = re.search(r"The file is ([\d,]+) bytes\s+with sha256 `([0-9a-f]{64})`", text)
    assert m, "docs/artifact.md no longer states the example's size and sha256"
    data = dumps_artifact(example_network())
    assert (int(m.group(1).replace(",", "")), m.group(2)) == (len(data), hashlib.sha256(data).hexdigest())


def test_the_documented_imports_work():
    text = (DOCS / "artifact.md").read_text()
    block = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    imports = [line.split("#")[0] for line in block.splitlines() if line.startswith(("from ", "import "))]
    assert any("ttforge.ir import" in line and "dumps_artifact" in line and "loads_artifact" in line
               for line in imports)
    for line in imports:
        if "ttforge.quant" in line:
            pytest.importorskip("torch")
        exec(line, {})


def test_every_exit_status_is_documented():
    page = (DOCS / "cli.md").read_text()
    table = page[page.index("## Exit codes"):]
    for name in dir(errors):
        if name.startswith("EXIT_"):
            assert f"| {getattr(errors, name)} |" in table, f"{name} is not in docs/cli.md, Exit codes"


def test_every_limit_is_stated_in_docs_hardening():
    page = (DOCS / "hardening.md").read_text()
    for name in limits.__all__:
        if name.startswith("MAX_"):
            assert f"`{name}`" in page, f"ttforge.limits.{name} is not in docs/hardening.md"


def test_the_artifact_refusal_table_states_the_exact_ranges():
    from ttforge.ir.arith import MAX_ACC_BITS, shift_range

    page = (DOCS / "artifact.md").read_text()
    lo, hi = shift_range(0)
    assert f"| `acc_bits` | 2..{MAX_ACC_BITS} |" in page
    assert f"`acc_bits - {-lo}` .. {hi}" in page
    assert f"-{limits.MAX_EXP}..{limits.MAX_EXP}" in page
