"""bench/bench_accuracy.py runs end to end (--quick: digits, 1 seed, 1 epoch); no accuracy is judged."""

import json

from tests.support.benches import load_bench


def _bench():
    return load_bench("bench_accuracy")


def test_quick_run_writes_json_and_table_and_merge_keeps_other_data_sets(tmp_path, capsys):
    bench = _bench()
    out = tmp_path / "accuracy.json"
    # an existing result for another data set, which --merge must keep
    other = {"dataset": "mnist", "variant": "dense MLP 784-512-10", "epochs": 20, "lr": 3e-3,
             "mean_test_acc": 0.97, "std_test_acc": 0.0, "params": 407050, "tt_params": None,
             "tt_dense_params": None, "tt_compression": None, "runs": []}
    out.write_text(json.dumps({"seeds": [0], "rows": [other],
                               "runs": [{"datasets": ["mnist"], "seconds": 1.0, "command": "x"}]}))
    assert bench.main(["--quick", "--merge", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert [(r["dataset"], r["variant"]) for r in result["rows"]] == [
        ("digits", v[0]) for v in bench.VARIANTS["digits"]] + [("mnist", "dense MLP 784-512-10")]
    digits = [r for r in result["rows"] if r["dataset"] == "digits"]
    for r in digits:
        assert 0 < r["mean_test_acc"] <= 1 and r["epochs"] == 1 and len(r["runs"]) == 1
    ra = digits[2]
    assert ra["truncation"]["tt_params_after"] <= ra["truncation"]["tt_params_before"]
    assert [m["datasets"] for m in result["runs"]] == [["mnist"], ["digits"]]
    assert set(result["goals"]["digits"]) == {digits[1]["variant"], digits[2]["variant"]}
    assert "| digits | rank-adaptive TT (from rank 8) |" in table and "| mnist | dense MLP" in table
    assert not list(tmp_path.glob("*.tmp"))
    # --render-only prints the same table from the file
    assert bench.main(["--render-only", "--out", str(out)]) == 0
    assert capsys.readouterr().out == table
