"""bench/bench_speed.py runs end to end on a tiny case (so it cannot rot); no timing is judged."""

import json

import pytest

from tests.support.benches import load_bench

pytest.importorskip("tltorch")


def _bench():
    return load_bench("bench_speed")


def test_tiny_run_writes_json(tmp_path):
    bench = _bench()
    out = tmp_path / "speed.json"
    args = ["--cases", "tiny", "--reps", "1", "--warmup", "0", "--batch", "4",
            "--conditions", "1:idle,2:busy", "--sweep-cases", "tiny", "--sweep-batches", "1,3",
            "--sweep-conditions", "1:idle", "--sweep-reps", "1", "--memory-batches", "4",
            "--out", str(out)]
    bench.main(args)
    result = json.loads(out.read_text())
    case = result["cases"][0]
    assert case["case"] == "tiny"
    assert case["facts"]["ranks"]["ttforge"] == case["facts"]["ranks"]["tltorch"]
    assert case["facts"]["weight_params"]["ttforge"] == case["facts"]["weight_params"]["tltorch"]
    assert case["facts"]["ttforge_plan"]["batch"] == 4
    for key in ("ttforge", "ttforge_uncached", "ttforge_schedule", "tltorch", "dense"):  # headline
        assert case["timings_ms"][key]["fwd"]["n"] == 1
        assert case["timings_ms"][key]["fwd_bwd"]["median"] > 0
        assert case["cpu_ms"][key]["fwd_bwd"]["median"] >= 0
    assert "ttforge_uncached" not in result["conditions"][1]["cases"][0]["timings_ms"]
    assert [c["threads"] for c in result["conditions"]] == [1, 2]
    assert [c["load"] for c in result["conditions"]] == ["idle", "busy"]
    assert result["settings"]["threads"] == 1
    assert [s["batch"] for s in result["sweep"]] == [1, 3]
    # at one thread one warm-up call; at two the tuner's trials (each count twice) too
    assert [s["warmup"] for s in result["sweep"]] == [1, 1]
    assert bench.sweep_warmup(2) == 1 + 2 * 2 and bench.sweep_warmup(1) == 1
    mem = result["memory"][0]["contenders"]
    assert mem["ttforge"]["peak_bytes"] > 0 and mem["dense"]["param_bytes"] > 0
    goals = result["summary"]["goals"]
    assert {g["condition"] for g in goals} == {"1 thread, idle", "2 threads, one core busy"}
    macs = case["facts"]["call_macs"]
    assert macs["dense"]["fwd_bwd"] == 3 * macs["dense"]["fwd"] == 3 * 4 * 6 * 6
    assert macs["ttforge"]["fwd_bwd"] > macs["ttforge"]["fwd"] > 0
    for g in goals:  # every timed goal has its floor, recomputed here from the table
        if g["condition"] == "memory":
            continue
        t = next(c for c in result["conditions"] if c["name"] == g["condition"])["cases"][0]["timings_ms"]
        ref = {"tltorch_opt_einsum": "tltorch_opt_einsum", "tltorch": "tltorch"}.get(
            g["goal"].split()[-1], "dense")
        rate = macs["dense"][g["mode"]] / t["dense"][g["mode"]]["median"]
        assert g["floor"] == t[ref][g["mode"]]["median"] * rate / macs["ttforge"][g["mode"]]


def test_bad_conditions_are_one_line_errors(capsys):
    bench = _bench()
    with pytest.raises(SystemExit) as e:
        bench.parse_args(["--conditions", "2:loaded"])
    assert e.value.code == 2
    assert "2:loaded is not THREADS:idle or THREADS:busy" in capsys.readouterr().err


@pytest.mark.parametrize("out, message", [("/dev/null", "is a character device"), (".", "is a directory")])
def test_an_output_that_cannot_take_the_result_fails_before_any_timing(out, message, capsys):
    with pytest.raises(SystemExit) as e:
        _bench().parse_args(["--out", out])
    assert e.value.code == 2
    assert message in capsys.readouterr().err
