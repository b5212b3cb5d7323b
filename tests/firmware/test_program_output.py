"""``ttforge program``: the reason quoted from a loader that fails is text. A loader
that floods its output with NUL bytes, control bytes or binary garbage is "exit status N
(no readable output)", not a line of escaped NULs; the last words it did say are kept
(NULs inside a line dropped) and a long line is cut to its end; the fix stays on the line."""

from __future__ import annotations

import random

import pytest

from ttforge.cli import main

# the first bytes of a real ECP5 bitstream (yowasp-ecppack's comment header, then the preamble)
ECP5_BIT = bytes.fromhex("ff00ffffffbdb3ffffffff3b000000e20000004111304322")
FIX = "; is the board attached over USB (and no other program using it)?"


@pytest.mark.parametrize("script, reason", [
    # the probe's flood.sh: 50 MB of NUL bytes, nothing else
    ("head -c 20000000 /dev/zero", "exit status 1 (no readable output)"),
    ("head -c 300000 /dev/zero | tr '\\000' '\\001'", "exit status 1 (no readable output)"),
    ("cat {tmp}/random.bin", "exit status 1 (no readable output)"),
    # the words it said on stderr, the flood on stdout (which came last: it was the reason)
    ("echo 'Cable not detected' >&2; head -c 3000000 /dev/zero", "Cable not detected"),
    ("printf 'Error: cable\\000\\000\\000 lost\\n' >&2", "Error: cable lost"),
    ("cat {tmp}/random.bin; echo; echo 'JTAG init failed' >&2", "JTAG init failed"),
    ("printf 'x%.0s' $(seq 1000) >&2; echo ' the end' >&2", "...xxxxxxxx"),
    # as before: no output, and a line with ANSI escapes (escaped on the line)
    ("true", "exit status 1"),
    ("printf '\\033[31mError: bad board\\n' >&2", "\\x1b[31mError: bad board"),
])
def test_a_failing_loader_s_reason_is_readable_and_bounded(tmp_path, capsys, monkeypatch, script, reason):
    (tmp_path / "random.bin").write_bytes(random.Random(5).randbytes(1 << 20))
    tool = tmp_path / "loader.sh"
    tool.write_text(f"#!/bin/sh\n{script.format(tmp=tmp_path)}\nexit 1\n")
    tool.chmod(0o755)
    (tmp_path / "a.bit").write_bytes(ECP5_BIT)
    monkeypatch.setenv("OPENFPGALOADER", str(tool))
    assert main(["program", "--board", "ulx3s", "--timeout", "60", str(tmp_path / "a.bit")]) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.endswith(FIX), err[:600]
    assert f"could not program the ulx3s: {reason}" in err, err[:600]
    assert len(err) < 600, err[:600]
    if reason.startswith("..."):
        assert err.endswith(" the end" + FIX), err
