"""``bench/bench_schedule.py --quick`` runs: the study and one simulated layer where the
two objectives differ, equal to the golden executor with the cycle model exact."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_schedule_quick(tmp_path):
    out = tmp_path / "schedule.json"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_schedule.py"), "--quick", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    d = json.loads(out.read_text())
    assert [s["lanes"] for s in d["study"]] == [4, 16, 64]
    assert all(s["never_slower"] for s in d["study"])
    (e,) = d["engine"]
    slow, fast = e["runs"]
    assert slow["order"] != fast["order"] and fast["cycles"] < slow["cycles"]
    assert all(x["equal_golden"] and x["model_exact"] for x in e["runs"])
