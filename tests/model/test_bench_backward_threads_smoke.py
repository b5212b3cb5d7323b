"""bench/bench_backward_threads.py runs end to end (small settings); no time is judged,
only what it runs, checks and writes."""

import json

import pytest

from tests.support.benches import load_bench


def test_run_writes_json_and_the_table(tmp_path, capsys):
    bench = load_bench("bench_backward_threads")
    out = tmp_path / "backward_threads.json"
    result = bench.main(["--cases", "b,a", "--batches", "64", "--reps", "1", "--rounds", "2", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    b, a = result["points"]
    assert (b["case"], b["batch"], a["case"]) == ("b", 64, "a")
    assert set(b["ms"]) == {"one thread", "intra-op", "split"} and all(v > 0 for v in b["ms"].values())
    # the split runs the one-thread chunks; two intra-op threads take the whole batch here
    assert b["chunks"] == {"one thread": 32, "intra-op": 64, "split": 32}
    assert max(b["max_rel_diff"].values()) < 1e-4
    assert b["split_vs_intra"] == pytest.approx(b["ms"]["intra-op"] / b["ms"]["split"])
    # through the layer, each way in processes of its own (two rounds: two of each)
    assert set(b["layer_ms"]) == {"intra-op", "split"} and all(v > 0 for v in b["layer_ms"].values())
    assert [len(v) for v in b["layer_process_ms"].values()] == [2, 2]
    assert b["layer_split_vs_intra"] == pytest.approx(b["layer_ms"]["intra-op"] / b["layer_ms"]["split"])
    assert "ms" not in a and "layer_ms" not in a and len(a["plan"]["groups"]) == 1  # the 784 x 512 layer rebuilds its weight
    text = capsys.readouterr().out
    assert "| b | 64 |" in text and "| a | 64 | one group: no split backward |" in text


def test_ways_that_disagree_are_refused(monkeypatch, tmp_path):
    """Sibling: a split that loses a half's matrix gradients is caught before any timing."""
    bench = load_bench("bench_backward_threads")
    real = bench.fast._backward_split

    def lossy(*args):
        gx, gmats = real(*args)
        return gx, [g / 2 for g in gmats]

    monkeypatch.setattr(bench.fast, "_backward_split", lossy)
    with pytest.raises(RuntimeError, match="the ways disagree"):
        bench.main(["--cases", "b", "--batches", "64", "--reps", "1", "--rounds", "1",
                    "--out", str(tmp_path / "o.json")])
    assert not (tmp_path / "o.json").exists()


@pytest.mark.parametrize("args, message", [
    (["--cases", "z"], "unknown case 'z'"),
    (["--batches", "1"], "each batch must be in 2..4,096"),
    (["--batches", "65536"], "each batch must be in 2..4,096"),
    (["--batches", "64,x"], "not a comma-separated list of integers"),
])
def test_bad_arguments_are_usage_errors(capsys, args, message):
    bench = load_bench("bench_backward_threads")
    with pytest.raises(SystemExit) as e:
        bench.main(args)
    assert e.value.code == 2 and message in capsys.readouterr().err
