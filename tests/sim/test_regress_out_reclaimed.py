"""``regress --out R`` removed during the run stays a ttforge work directory."""

from __future__ import annotations

import os

from ttforge.atomic import WORK_MARKER, claim_work_dir
from ttforge.sim.regress import _Collector


def test_a_regress_out_removed_during_the_run_is_claimed_again(tmp_path):
    """``regress --out R`` with R removed during the run: the results made R again
    without its claim and every later run was refused ("not a ttforge work directory")."""
    out = claim_work_dir(tmp_path / "R", "--out")
    col = _Collector([0], "icarus", None, out, None, None)
    (out / WORK_MARKER).unlink()
    os.rmdir(out)   # removed during the run
    col.report()
    assert sorted(os.listdir(out)) == [WORK_MARKER, "junit.xml", "summary.json"]
    assert claim_work_dir(out, "--out") == out   # the next run takes it
    # a directory the user filled meanwhile is not marked as ttforge's
    (out / WORK_MARKER).unlink()
    (out / "mine.txt").write_text("the user's\n")
    col.report()
    assert not (out / WORK_MARKER).exists()
