"""bench/bench_epoch.py runs end to end (digits, 2 epochs, 2 repetitions); no timing is judged."""

import json
import math

import pytest

from tests.support.benches import load_bench
from ttforge.model.layers import TTLinear
from ttforge.model.network import ModelConfig, build_model


def _bench():
    return load_bench("bench_epoch")


def test_run_writes_json_and_the_table(tmp_path, capsys):
    bench = _bench()
    out = tmp_path / "epoch_time.json"
    result = bench.main(["--datasets", "digits", "--epochs", "2", "--reps", "2", "--threads", "1",
                         "--layer-reps", "2", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    (row,) = result["rows"]
    assert (row["dataset"], row["threads"], row["epochs"], row["batch"]) == ("digits", 1, 2, 64)
    assert row["steps_per_epoch"] == math.ceil(row["n_train"] / 64)
    c = row["contenders"]
    assert set(c) == {"tt", "tt_schedule", "dense"}
    for v in c.values():  # the median of the epochs after each run's first
        assert len(v["runs"]) == 2 and all(len(r) == 2 for r in v["runs"])
        assert v["epoch_s"] == (v["runs"][0][1] + v["runs"][1][1]) / 2
        assert all(0 < a <= 1 for a in v["test_acc"])
    assert row["epoch_speedup"] == c["tt_schedule"]["epoch_s"] / c["tt"]["epoch_s"]
    lm = row["layer_ms"]
    for key in ("tt", "tt_schedule", "dense"):  # the layer's epoch share, recomputed here
        assert row["layer_ms_per_epoch"][key] == (row["steps_per_epoch"] * lm[key]["fwd_bwd_ms"]
                                                  + row["eval_batches"] * lm[key]["fwd_ms"])
    assert row["eval_batches"] == math.ceil(row["n_train"] / 2048) + math.ceil(row["n_test"] / 2048)
    assert row["tt_layer"]["in_features"] == 64 and row["tt_layer"]["ranks"] == [1, 4, 4, 1]
    table = capsys.readouterr().out
    assert "| digits | 1 |" in table and f"**{row['epoch_speedup']:.2f}x**" in table
    assert not list(tmp_path.glob("*.tmp"))


def test_the_schedule_contender_builds_hardware_order_layers():
    bench = _bench()
    cfg = ModelConfig(kind="tt", hidden=(64,), n_cores=3, ranks=4).with_features(64, 10)
    with bench._impl("schedule"):
        inside = [m.impl for m in build_model(cfg) if isinstance(m, TTLinear)]
    after = [m.impl for m in build_model(cfg) if isinstance(m, TTLinear)]
    assert inside == ["schedule"] and after == ["fast"]


@pytest.mark.parametrize("args, message", [
    (["--datasets", "cifar"], "unknown data set 'cifar'"),
    (["--threads", "0"], "every entry must be >= 1"),
    (["--reps", "0"], "--reps 0 must be >= 1"),
    (["--out", "/dev/null"], "argument --out: /dev/null is a character device"),
    (["--out", "."], "is a directory"),
])
def test_bad_arguments_are_one_line_errors(args, message, capsys):
    with pytest.raises(SystemExit) as e:
        _bench().parse_args(args)
    assert e.value.code == 2
    assert message in capsys.readouterr().err
