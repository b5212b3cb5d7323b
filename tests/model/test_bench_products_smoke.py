"""bench/bench_products.py runs end to end (one case, two repetitions); no rate is
judged, only which products it times and what it counts."""

import json

import pytest

from tests.support.benches import load_bench


def test_run_writes_json_and_the_table(tmp_path, capsys):
    bench = load_bench("bench_products")
    out = tmp_path / "products.json"
    result = bench.main(["--cases", "b", "--reps", "2", "--rounds", "2", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    (case,) = result["cases"]
    dense, *rows = case["rows"]
    assert dense["product"] == "dense" and dense["of_dense"] == 1.0 and dense["macs"] == 256 * 1024 * 1024
    # the 1024 layer's plan: a step of whole samples, then one over samples
    assert [r["product"] for r in rows] == ["forward", "input grad", "matrix grad", "forward", "input grad",
                                            "input grad, transposed view", "matrix grad"]
    for r in rows:
        n, p, k, q = r["shape"]
        assert r["macs"] == n * p * k * q and r["gmacs"] > 0
        assert r["of_dense"] == pytest.approx(r["gmacs"] / dense["gmacs"])
    # one chunk's products: each step's share of the plan's forward work per chunk
    assert sum(r["macs"] for r in rows if r["product"] == "forward") * (256 // case["chunk"]) == \
        256 * sum(s.macs for s in bench.fast.plan_for(
            bench.TTShape((4, 8, 8, 4), (4, 8, 8, 4), (1, 8, 8, 8, 1)), 256, threads=1).schedule.steps)
    assert "| b | 1 | input grad, transposed view | 32, 32, 256, 32 |" in capsys.readouterr().out


def test_an_unknown_case_is_a_usage_error(capsys):
    bench = load_bench("bench_products")
    with pytest.raises(SystemExit) as e:
        bench.main(["--cases", "z"])
    assert e.value.code == 2 and "unknown case 'z'" in capsys.readouterr().err
