"""bench/bench_layer_profile.py runs end to end (a small batch, two calls); no time is
judged, only what it writes."""

import json

import pytest

from tests.support.benches import load_bench


def test_run_writes_both_profiles(tmp_path, capsys):
    bench = load_bench("bench_layer_profile")
    out = tmp_path / "p.json"
    result = bench.main(["--case", "b", "--batch", "8", "--calls", "2", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert set(result["profiles"]) == {"ttforge", "dense"}
    for prof in result["profiles"].values():
        assert prof["us_per_call"] > 0 and prof["ops"] and abs(sum(o["share"] for o in prof["ops"])) <= 1.0001
    assert "aten::" in capsys.readouterr().out


def test_bad_arguments_are_usage_errors(capsys):
    bench = load_bench("bench_layer_profile")
    with pytest.raises(SystemExit) as e:
        bench.main(["--calls", "0"])
    assert e.value.code == 2 and "--calls must be positive" in capsys.readouterr().err
