"""bench/bench_speed.py runs end to end on a tiny case (so it cannot rot); no timing is judged."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("tltorch")

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_speed", ROOT / "bench" / "bench_speed.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_speed"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_tiny_run_writes_json_and_doc_section(tmp_path):
    bench = _bench()
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# ttforge benchmarks\n\n## Accuracy\n\nother text\n")
    out = tmp_path / "speed.json"
    args = ["--cases", "tiny", "--reps", "1", "--warmup", "0", "--batch", "4", "--threads", "1",
            "--out", str(out), "--doc", str(doc)]
    bench.main(args)
    result = json.loads(out.read_text())
    case = result["cases"][0]
    assert case["case"] == "tiny"
    assert case["facts"]["ranks"]["ttforge"] == case["facts"]["ranks"]["tltorch"]
    assert case["facts"]["weight_params"]["ttforge"] == case["facts"]["weight_params"]["tltorch"]
    for key in ("ttforge", "tltorch", "dense", "proto_merged_pairs"):
        assert case["timings_ms"][key]["fwd"]["n"] == 1
        assert case["timings_ms"][key]["fwd_bwd"]["median"] > 0
    assert result["environment"]["torch_threads"] == 1
    text = doc.read_text()
    assert text.startswith("# ttforge benchmarks\n")
    assert "## Accuracy\n\nother text" in text  # other sections untouched
    assert "## TT layer speed" in text and "| tiny |" in text
    # a second run replaces the generated part and keeps text written below the marker
    doc.write_text(text + "hand-written analysis\n")
    bench.main(args)
    again = doc.read_text()
    assert again.count("## TT layer speed") == 1 and again.count("| tiny | ") == 3
    assert "hand-written analysis" in again and "other text" in again
