"""bench/bench_hw.py runs end to end (--quick: a small layer at L=4 in Amaranth's
simulator, into a temporary directory); no number is judged except exactness."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_hw_quick(tmp_path):
    out = tmp_path / "hw.json"
    doc = tmp_path / "benchmarks.md"
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_hw.py"), "--quick",
                          "--out", str(out), "--doc", str(doc)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    data = json.loads(out.read_text())
    (row,) = data["rows"]
    assert row["sim"]["bit_exact"] and row["model_minus_sim"] == 0
    assert row["sim"]["busy_lane_cycles"] == row["macs"]
    text = doc.read_text()
    assert "## Accelerator" in text and "bench_hw.py" in text
