"""bench/bench_layer_profile.py runs end to end (a small batch, two calls); no time is
judged, only what it writes."""

import json

import pytest

from tests.support.benches import load_bench


def test_run_writes_both_profiles(tmp_path, capsys):
    bench = load_bench("bench_layer_profile")
    out = tmp_path / "p.json"
    result = bench.main(["--case", "b", "--batch", "8", "--calls", "2", "--repeats", "3", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert set(result["profiles"]) == {"ttforge", "dense"} and result["repeats"] == 3
    for prof in result["profiles"].values():
        # each share is an operation's median over the repeats against the median total:
        # at most 1 each (an operation's time is part of its profile's total in every
        # repeat), but medians do not add up, so their sum may pass 1 under load (1.045
        # in a CI run beside other work: one repeat's addmm at 6.6 ms)
        assert prof["us_per_call"] > 0 and prof["ops"]
        assert all(0 <= o["share"] <= 1 for o in prof["ops"]), prof["ops"]
        assert prof["us_range"][0] <= prof["us_per_call"] <= prof["us_range"][1]
        for op in prof["ops"]:
            assert op["us_range"][0] <= op["us_per_call"] <= op["us_range"][1]
    assert "aten::" in capsys.readouterr().out


def test_one_slow_profile_does_not_move_the_medians():
    # what a single profile did: a 150 us copy came out at 720 us in one 20-call run
    bench = load_bench("bench_layer_profile")
    copy, mm = ("aten::copy_", "[[32, 16]]"), ("aten::mm", "[[8, 8]]")
    runs = [{copy: (150.0, 1), mm: (1000.0, 1)}, {copy: (720.0, 1), mm: (1010.0, 1)},
            {copy: (152.0, 1), mm: (990.0, 1)}, {mm: (1005.0, 2)}]
    prof = bench.summarize(runs, rows=5)
    ops = {o["name"]: o for o in prof["ops"]}
    assert ops["aten::copy_"]["us_per_call"] == 151.0  # median of 0, 150, 152, 720
    assert ops["aten::copy_"]["us_range"] == [0.0, 720.0]
    assert ops["aten::mm"]["us_per_call"] == 1002.5 and ops["aten::mm"]["calls"] == 2
    assert prof["us_per_call"] == 1146.0  # median of the totals 1150, 1730, 1142, 1005
    assert [o["name"] for o in prof["ops"]] == ["aten::mm", "aten::copy_"]
    assert [o["name"] for o in bench.summarize(runs, rows=1)["ops"]] == ["aten::mm"]


def test_bad_arguments_are_usage_errors(capsys):
    bench = load_bench("bench_layer_profile")
    with pytest.raises(SystemExit) as e:
        bench.main(["--calls", "0"])
    assert e.value.code == 2 and "--calls must be positive" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        bench.main(["--repeats", "0"])
    assert e.value.code == 2 and "--repeats must be positive" in capsys.readouterr().err
