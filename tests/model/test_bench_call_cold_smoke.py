"""bench/bench_call_cold.py runs end to end (one case, one batch, two rounds); no time is
judged, only what it times and writes."""

import json

import pytest

from tests.support.benches import load_bench


def test_run_writes_json_and_the_table(tmp_path, capsys):
    bench = load_bench("bench_call_cold")
    out = tmp_path / "call_cold.json"
    result = bench.main(["--cases", "b", "--batches", "1,4", "--reps", "2", "--flush-mb", "1", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert [(r["case"], r["batch"]) for r in result["runs"]] == [("b", 1), ("b", 4)]
    for r in result["runs"]:
        assert set(r["us"]) == set(bench.ROWS)
        assert all(v[way] > 0 for v in r["us"].values() for way in ("warm", "cold"))
    text = capsys.readouterr().out
    assert "| b | 4 | cold |" in text and "| b | 1 | warm |" in text


@pytest.mark.parametrize("argv, word", [(["--cases", "z"], "unknown case 'z'"),
                                        (["--batches", "0"], "must be positive"),
                                        (["--reps", "0"], "must be positive")])
def test_bad_arguments_are_usage_errors(capsys, argv, word):
    bench = load_bench("bench_call_cold")
    with pytest.raises(SystemExit) as e:
        bench.main(argv)
    assert e.value.code == 2 and word in capsys.readouterr().err
