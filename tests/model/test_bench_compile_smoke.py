"""bench/bench_compile.py runs end to end (both networks, one small batch, two repetitions,
eager, eager with plain fake quantization, and AOT autograd); no timing is judged, only what it counts and compares."""

import json

from tests.support.benches import load_bench


def test_run_writes_json_and_the_table(tmp_path, capsys):
    bench = load_bench("bench_compile")
    out = tmp_path / "compile.json"
    result = bench.main(["--batches", "8", "--reps", "2", "--contenders", "eager", "aot_eager", "eager-plain",
                         "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    rows = {r["network"]: r for r in result["rows"]}
    assert set(rows) == {"tt", "qat"} and len(result["rows"]) == 2
    for kind, row in rows.items():
        eager, compiled = row["contenders"]["eager"], row["contenders"]["aot_eager"]
        plain = row["contenders"]["eager-plain"]
        assert row["batch"] == 8 and eager["graphs"] is None and plain["graphs"] is None
        # one graph, no break; other batch sizes: dynamo's dynamic recompile and batch 1's
        assert (compiled["graphs"], compiled["breaks"]) == (1, 0)
        assert compiled["new_graphs_at_sizes"] <= 2 and eager["new_graphs_at_sizes"] == 0
        assert compiled["sizes"] == [5, 16, 1, 24, 8]
        for c in (eager, compiled, plain):
            assert c["step_ms"] > 0 and c["inference_ms"] > 0 and c["first_step_s"] > 0
            # the quantized network's inference equals the integer executor's
            assert c["bit_exact"] is (True if kind == "qat" else None)
    table = capsys.readouterr().out
    assert "| tt | 8 | `aot_eager` | 1 / 0 |" in table and "| tt | 8 | eager | - |" in table
    assert "| qat | 8 | `aot_eager` | 1 / 0 |" in table and "**yes** |" in table
    assert "| qat | 8 | eager, plain fake quantization | - |" in table
    from ttforge.quant import qat
    assert qat.FAKE_QUANT_IN_PLACE  # the run leaves the switch as it found it


def test_the_plain_run_fake_quantizes_in_the_plain_operations(monkeypatch):
    """``eager-plain`` never reaches the in-place node; ``eager`` does (its sibling)."""
    import torch

    from ttforge.quant import qat

    bench = load_bench("bench_compile")
    net = bench.network("qat")
    calls = []
    real = qat._FakeQuantSTE.apply
    monkeypatch.setattr(qat._FakeQuantSTE, "apply", lambda *a: calls.append(1) or real(*a))
    x = torch.randn(4, 784)
    bench.PlainFakeQuant(net)(x).sum().backward()
    assert calls == [] and qat.FAKE_QUANT_IN_PLACE
    net(x).sum().backward()
    assert calls
