"""The divergence finder names the first layer, step and element where stages differ."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from torch import nn

from ttforge.cli import main
from ttforge.model import TTLinear
from ttforge.model.network import ModelConfig
from ttforge.model.train import TrainConfig, train
from ttforge.ir.artifact import dumps_artifact, load_artifact, save_artifact
from ttforge.quant.diverge import find_divergence, float_model_of, quant_network_for
from ttforge.ir.executor import IntNetwork, execute, execute_traced
from ttforge.quant.qat import LayerQuant, QuantConfig, calibrate, compile_network, quantize_model


def small(seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Flatten(), TTLinear(30, 20, [4, 2], in_modes=[2, 3, 5], out_modes=[2, 5, 2]), nn.ReLU(),
        TTLinear(20, 12, [3], in_modes=[4, 5], out_modes=[3, 4]), nn.ReLU(), nn.Linear(12, 5),
    )
    x = torch.rand(24, 30) * 2 - 0.5
    q = calibrate(quantize_model(net, QuantConfig(LayerQuant(6, 8, 12))), x)
    return q, compile_network(q), x


def step_of_core(layer, core):
    return next(t for t, s in enumerate(layer.schedule.steps) if s.core == core)


def flip_in_range(inet, layer, core, flat, bit, w_bits):
    """``inet`` with one bit of one core value flipped, staying in range (a new network:
    a layer's arrays are read-only)."""
    lim = (1 << (w_bits - 1)) - 1
    L = inet.layers[layer]
    g = L.cores[core].copy()
    v = int(g.reshape(-1)[flat]) ^ (1 << bit)
    assert -lim <= v <= lim
    g.reshape(-1)[flat] = v
    cores = tuple(g if k == core else c for k, c in enumerate(L.cores))
    layers = list(inet.layers)
    layers[layer] = dataclasses.replace(L, cores=cores)
    return dataclasses.replace(inet, layers=tuple(layers))


def test_clean_network_reports_all_steps_equal():
    q, inet, x = small()
    r = find_divergence(q, inet, x)
    assert r.equal and r.quant_vs_int is None
    assert r.n_steps == 6 and r.n_samples == 24
    assert [(s.layer, s.step) for s in r.float_vs_quant] == [(0, -1), (0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (2, 0)]
    assert all(s.max_abs_err >= 0 for s in r.float_vs_quant)
    assert "all 6 steps equal" in r.format() and "quantization error" in r.format()
    assert all(ql.trace is None for ql in q.qlayers)  # the hook is switched off again


def test_trace_hook_does_not_change_the_output():
    q, inet, x = small()
    plain = q.forward_int(x)
    for ql in q.qlayers:
        ql.trace = []
    traced = q.forward_int(x)
    assert np.array_equal(plain, traced) and len(q.qlayers[0].trace) == 3
    for ql in q.qlayers:
        ql.trace = None


@pytest.mark.parametrize("core", [0, 1, 2])
def test_one_flipped_tt_core_bit_is_named(core):
    q, inet, x = small()
    xi = inet.quantize_input(x.numpy())
    _, clean = execute_traced(inet, xi)
    inet = flip_in_range(inet, 0, core, 5, 2, 6)
    _, bad = execute_traced(inet, xi)
    t = step_of_core(inet.layers[0], core)
    r = find_divergence(q, inet, x)
    m = r.quant_vs_int
    assert not r.equal and (m.layer, m.step, m.what) == (0, t, "acc")
    # independently: the first differing accumulator element between the clean and the bad run
    c, b = clean[t].acc, bad[t].acc
    assert all(np.array_equal(clean[i].out, bad[i].out) for i in range(t))
    s, e = np.argwhere(c != b)[0]
    assert (m.sample, m.element, m.expected, m.got) == (s, e, c[s, e], b[s, e])
    assert f"layer 0, step {t} (core {core}), accumulator, sample {s}, element {e}" in r.format()


def test_one_flipped_dense_weight_bit_is_named_at_the_predicted_element():
    q, inet, x = small()
    dense = inet.layers[2]
    i, j = 3, 7
    g = dense.cores[0].copy()   # a layer's arrays are read-only: a new layer with the flip
    w = g[0, :, :, 0]
    w[i, j] = int(w[i, j]) ^ 1 if abs(int(w[i, j]) ^ 1) <= 31 else int(w[i, j]) ^ 2
    inet = IntNetwork((*inet.layers[:2], dataclasses.replace(dense, cores=(g,))))
    xi = inet.quantize_input(x.numpy())
    _, traces = execute_traced(inet, xi)
    layer_in = traces[4].out[:, :12]  # output of layer 1 (before its ReLU), the input of layer 2 after it
    layer_in = np.maximum(layer_in, 0)
    sample = int(np.flatnonzero(layer_in[:, j])[0])  # the first sample whose input j is not zero
    m = find_divergence(q, inet, x).quant_vs_int
    assert (m.layer, m.step, m.what, m.sample, m.element) == (2, 0, "acc", sample, i)
    assert m.got - m.expected == (int(w[i, j]) - int(q.qlayers[2].to_int_layer().cores[0][0, i, j, 0])) * layer_in[sample, j]


def test_a_wrong_exponent_is_a_format_divergence():
    q, inet, x = small()
    layer = inet.layers[1]
    exps = list(layer.step_exps)
    exps[0] -= 1
    bad = IntNetwork((inet.layers[0], dataclasses.replace(layer, step_exps=tuple(exps)), inet.layers[2]))
    m = find_divergence(q, bad, x).quant_vs_int
    assert (m.layer, m.what, m.detail) == (1, "format", "step_exps")


def test_a_wrong_rounding_shows_in_the_requantized_output():
    """Flip one bit of the golden output of a step (accumulators equal): named as 'out'."""
    q, inet, x = small()
    from ttforge.quant import diverge as dv

    real = dv._int_layer   # the integer stage, a layer at a time

    def corrupt(net, li, xi):
        y, traces = real(net, li, xi)
        if li == 0:
            t = traces[1]
            out = t.out.copy()
            out[2, 4] ^= 1
            traces[1] = dataclasses.replace(t, out=out)
        return y, traces

    dv._int_layer = corrupt
    try:
        m = find_divergence(q, inet, x).quant_vs_int
    finally:
        dv._int_layer = real
    assert (m.layer, m.step, m.what, m.sample, m.element, m.n_diff) == (0, 1, "out", 2, 4, 1)
    assert m.got == m.expected ^ 1


def test_float_model_of_an_artifact_round_trips():
    q, inet, x = small()
    q2 = quant_network_for(float_model_of(inet), inet)
    assert np.array_equal(compile_network(q2).layers[0].cores[1], inet.layers[0].cores[1])
    assert find_divergence(q2, inet, x).equal
    assert np.array_equal(q2.forward_int(x), execute(inet, inet.quantize_input(x.numpy())))


# -- CLI --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    d = tmp_path_factory.mktemp("div")
    train(TrainConfig(data="digits", model=ModelConfig(kind="tt", hidden=(16,), n_cores=2, ranks=2),
                      epochs=2, seed=1), d / "run", progress=False)
    assert main(["quantize", str(d / "run"), "-o", str(d / "m.ttfa"), "--calib-samples", "64",
                 "--quiet"]) == 0
    return d


def test_cli_clean_artifact_exit_0(quantized, capsys):
    d = quantized
    assert main(["diverge", str(d / "run"), "--artifact", str(d / "m.ttfa"), "--samples", "8"]) == 0
    out = capsys.readouterr().out
    assert "all 3 steps equal" in out and "float vs fake-quant" in out


def test_cli_corrupted_artifact_exit_1_names_layer_step_element(quantized, tmp_path, capsys):
    d = quantized
    inet = load_artifact(d / "m.ttfa")
    layer = inet.layers[0]
    k = layer.schedule.steps[-1].core  # the core of the last step of layer 0
    g = layer.cores[k].copy()
    idx = (0, 1, g.shape[2] // 2, 0)  # a middle input column: the digits' border columns are all 0
    bit = 0 if int(g[idx]) == -64 else 6
    g[idx] ^= 1 << bit  # one bit; stays inside the 8-bit range
    cores = tuple(g if i == k else c for i, c in enumerate(layer.cores))
    bad = IntNetwork((dataclasses.replace(layer, cores=cores), *inet.layers[1:]), inet.meta)
    save_artifact(bad, tmp_path / "bad.ttfa")
    assert main(["diverge", str(d / "run"), "--artifact", str(tmp_path / "bad.ttfa"), "--json"]) == 1
    rep = json.loads(capsys.readouterr().out)
    m = rep["quant_vs_int"]
    assert not rep["integer_stages_equal"]
    assert (m["layer"], m["step"], m["what"]) == (0, len(layer.schedule.steps) - 1, "acc")
    assert m["expected"] != m["got"]


def test_cli_artifact_only_and_ptq_modes(quantized, capsys):
    d = quantized
    assert main(["diverge", str(d / "m.ttfa"), "--samples", "4"]) == 0
    assert "dequantized weights" in capsys.readouterr().out
    assert main(["diverge", str(d / "run"), "--w-bits", "4", "--calib-samples", "32", "--samples", "4"]) == 0
    assert "all 3 steps equal" in capsys.readouterr().out


def test_cli_input_file(quantized, tmp_path, capsys):
    d = quantized
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((5, 64)))
    assert main(["diverge", str(d / "m.ttfa"), "--input", str(tmp_path / "x.npy")]) == 0
    assert "(5 samples)" in capsys.readouterr().out
    np.save(tmp_path / "bad.npy", np.zeros((5, 63)))
    assert main(["diverge", str(d / "m.ttfa"), "--input", str(tmp_path / "bad.npy")]) == 2
    assert "give (batch, 64) numbers" in capsys.readouterr().err


def test_cli_note_when_weights_differ(quantized, tmp_path, capsys):
    d = quantized
    assert main(["quantize", str(d / "run"), "-o", str(tmp_path / "q.ttfa"), "--qat-epochs", "1",
                 "--calib-samples", "64", "--save-checkpoint", str(tmp_path / "q.pt"), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["diverge", str(d / "run"), "--artifact", str(tmp_path / "q.ttfa"), "--samples", "4"]) == 1
    assert "are not the ones" in capsys.readouterr().out
    assert main(["diverge", str(tmp_path / "q.pt"), "--artifact", str(tmp_path / "q.ttfa"), "--samples", "4"]) == 0


def test_cli_bad_input_exit_2(quantized, tmp_path, capsys):
    d = quantized
    data = (d / "m.ttfa").read_bytes()
    broken = bytearray(data)
    broken[len(broken) // 2] ^= 0x10  # one bit of the file: the checksums catch it
    (tmp_path / "flip.ttfa").write_bytes(bytes(broken))
    cases = [
        ([str(d / "run"), "--artifact", str(tmp_path / "flip.ttfa")], ""),
        ([str(tmp_path / "missing")], "does not exist"),
        ([str(d / "run"), "--samples", "0"], "--samples 0 must be >= 1"),
        ([str(d / "run"), "--artifact", str(tmp_path / "none.ttfa")], "does not exist"),
        ([str(d / "run"), "--w-bits", "12"], "--w-bits 12 is out of range"),
    ]
    for args, msg in cases:
        assert main(["diverge", *args]) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0] and err[0].startswith("ttforge diverge: error:")
    # an artifact of a different network
    q, inet, _ = small()
    (tmp_path / "other.ttfa").write_bytes(dumps_artifact(inet))
    assert main(["diverge", str(d / "run"), "--artifact", str(tmp_path / "other.ttfa")]) == 2
    assert "give the checkpoint the artifact was compiled from" in capsys.readouterr().err


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_cli_a_checkpoint_with_nan_or_inf_weights_is_one_line(quantized, tmp_path, capsys, value):
    """``diverge CKPT --artifact A``, one weight of CKPT NaN or infinite: no artifact is
    compiled from such weights (quantize refuses them); a NaN ended in an internal
    AssertionError of the fake-quant stage (exit 70), an infinity in a divergence."""
    from ttforge.model.checkpoint import load_checkpoint, save_checkpoint

    d = quantized
    ck = load_checkpoint(next((d / "run").glob("*.pt")))
    core = next(k for k in ck["state_dict"] if "cores" in k)
    ck["state_dict"][core].view(-1)[0] = value
    save_checkpoint(tmp_path / "bad.pt", ck)
    assert main(["diverge", str(tmp_path / "bad.pt"), "--artifact", str(d / "m.ttfa"), "--samples", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "NaN or infinite weights" in err[0], err


# -- chunks: bounded memory, the report of the whole batch -------------------------------
def _perturbed(monkeypatch, where):
    """The integer stage (``_int_layer``, a layer at a time) with traces off by one at
    ``where``: {(sample, layer, step, what): element} (samples numbered in the whole
    batch, wherever the chunk starts). Returns the list of the chunks' sizes."""
    import ttforge.quant.diverge as dv

    real = dv._int_layer
    seen = []
    base = [0]

    def fake(net, li, xi):
        y, traces = real(net, li, xi)
        if li == 0:
            # the chunk's first sample, found by its input row (the rows are distinct)
            base[0] = next(i for i in range(len(_ALL_XI)) if np.array_equal(_ALL_XI[i], xi[0]))
            seen.append(xi.shape[0])
        for (sample, layer, step, what), element in where.items():
            if layer == li and base[0] <= sample < base[0] + xi.shape[0]:
                tr = next(t for t in traces if (t.layer, t.step) == (layer, step))
                getattr(tr, what)[sample - base[0], element] += 1
        return y, traces

    monkeypatch.setattr(dv, "_int_layer", fake)
    return seen


_ALL_XI: list = []


@pytest.mark.parametrize("chunk", [1, 5, 8, 23])
def test_chunks_give_the_report_of_the_whole_batch(monkeypatch, chunk):
    """Sample 2 differs at layer 1 and sample 20 at layer 0's first step: in chunks of
    fewer than 20 samples the first chunk finds layer 1, yet the report (as the whole
    batch gives it) names layer 0, sample 20, and counts every difference there."""
    q, inet, x = small()
    _ALL_XI[:] = list(inet.quantize_input(x.numpy()))
    where = {(2, 1, 0, "acc"): 3, (20, 0, 0, "acc"): 4, (22, 0, 0, "acc"): 0, (21, 0, 1, "out"): 1}
    seen = _perturbed(monkeypatch, where)
    whole = find_divergence(q, inet, x, chunk=len(x))
    assert seen == [len(x)]
    m = whole.quant_vs_int
    assert (m.layer, m.step, m.what, m.sample, m.element, m.n_diff) == (0, 0, "acc", 20, 4, 2)
    seen.clear()
    parts = find_divergence(q, inet, x, chunk=chunk)
    assert max(seen) <= chunk and sum(seen) == len(x)
    assert parts.to_dict() == whole.to_dict()


@pytest.mark.parametrize("chunk", [1, 7])
def test_chunks_of_a_clean_and_of_a_corrupted_network_equal_the_whole_batch(chunk):
    q, inet, x = small()
    x = torch.cat([x, x * 3 - 1])   # some saturate, some over tolerance
    for corrupt in (False, True):
        if corrupt:
            inet = flip_in_range(inet, 1, 0, 3, 1, 6)
        whole = find_divergence(q, inet, x, tolerance_lsb=0.5, chunk=len(x))
        assert find_divergence(q, inet, x, tolerance_lsb=0.5, chunk=chunk).to_dict() == whole.to_dict()
        assert whole.equal is not corrupt and whole.n_saturations > 0


def test_a_large_batch_runs_in_chunks_bounded_by_values(monkeypatch):
    """The default chunk holds at most MAX_CHUNK_VALUES values of every stage's
    intermediates (diverge of 500,000 samples took 9.4 GB, a 2^24-element layer 11 GB at
    16 samples: the whole batch ran through every stage at once)."""
    import ttforge.limits as chunks   # chunk_rows reads its budget there
    import ttforge.quant.diverge as dv

    q, inet, x = small()
    _ALL_XI[:] = list(inet.quantize_input(x.numpy()))
    whole = find_divergence(q, inet, x)
    per_sample = dv.values_per_sample(inet)
    monkeypatch.setattr(chunks, "MAX_CHUNK_VALUES", 5 * per_sample + 1)
    seen = _perturbed(monkeypatch, {})
    assert find_divergence(q, inet, x.numpy()).to_dict() == whole.to_dict()
    assert max(seen) == 5 and sum(seen) == len(x)


# -- memory: bounded per chunk whatever the layers; one sample above the bound refused ----
def _chain(d: int, n_layers: int) -> IntNetwork:
    """``n_layers`` TT layers of ``d`` cores of modes 4 and rank 1 (4^d features each):
    a few KB of cores, ``d`` steps of 4^d elements each."""
    from ttforge.ir.random import random_layer

    rng = np.random.default_rng(0)
    layers, in_exp = [], -4
    for _ in range(n_layers):
        L = random_layer(rng, [4] * d, [4] * d, [1] * (d + 1), tuple(range(d)), w_bits=8, in_bits=8,
                         in_exp=in_exp, inter_bits=16, out_bits=8, bias=False, relu=False,
                         in_features=4 ** d, out_features=4 ** d, acc_bits=32)
        layers.append(L)
        in_exp = L.out_exp
    return IntNetwork(tuple(layers))


def test_what_a_sample_holds_does_not_grow_with_the_layers():
    """A chunk holds one layer's steps at a time: four layers count as one (every step of
    every layer of three stages was kept: 4 layers of 2^20 features took 2.1 GB)."""
    import ttforge.quant.diverge as dv

    assert dv.values_per_sample(_chain(5, 4)) == dv.values_per_sample(_chain(5, 1))


def test_the_peak_memory_does_not_grow_with_the_layers():
    """Measured (numpy's allocations): four layers of 2^12 features peak within a
    layer's worth of one, and within the count a chunk is sized by."""
    import tracemalloc

    import ttforge.quant.diverge as dv

    peaks = []
    for n_layers in (1, 4):
        inet = _chain(6, n_layers)
        q = quant_network_for(float_model_of(inet), inet)
        x = np.random.default_rng(1).uniform(-1, 1, (8, inet.in_features))
        tracemalloc.start()
        try:
            assert find_divergence(q, inet, x).equal
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    per_sample = dv.values_per_sample(inet)
    assert peaks[1] < peaks[0] * 1.5 and peaks[1] <= 8 * 8 * per_sample, (peaks, per_sample)


def test_one_sample_above_the_chunk_bound_is_refused_before_any_stage(monkeypatch):
    """A chunk is at least one sample: when one sample alone holds more than
    MAX_CHUNK_VALUES, no chunking bounds it, so it is refused first (one sample of a
    12-step layer of 2^24 features took > 9 GB, then ran out of memory)."""
    import ttforge.limits as limits
    import ttforge.quant.diverge as dv
    from ttforge.errors import LimitError

    q, inet, x = small()
    monkeypatch.setattr(limits, "MAX_CHUNK_VALUES", dv.values_per_sample(inet) - 1)
    monkeypatch.setattr(dv, "execute_traced", lambda *a: pytest.fail("a stage ran"))
    with pytest.raises(LimitError, match=r"layer 0: 3 steps.* above ttforge's limit of .*MAX_CHUNK_VALUES"):
        find_divergence(q, inet, x[:1])


def test_cli_refuses_a_network_one_sample_of_which_is_above_the_bound(tmp_path, capsys):
    """The forged 11 KB artifact of the report (12 cores, 2^24 features): one line, exit 2,
    before the inputs are read or any stage runs (it took > 9 GB for one sample)."""
    path = tmp_path / "big.ttfa"
    save_artifact(_chain(12, 1), path)
    assert main(["diverge", str(path), "--input", str(tmp_path / "never-read.npy")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "16,777,216 elements" in err and "MAX_CHUNK_VALUES" in err, err


@pytest.mark.parametrize("act_bits, inter_bits, acc_bits", [(32, 32, 48), (16, 32, 48)])
def test_an_artifact_wider_than_the_fake_quant_model_is_named_with_a_way_on(tmp_path, capsys, act_bits,
                                                                           inter_bits, acc_bits):
    """32-bit activations or intermediates (the executor and the RTL take them): the line
    said 'act_bits=32 must be an integer in 2..16', neither the layer nor why nor a fix."""
    from ttforge.ir.random import random_layer

    rng = np.random.default_rng(1)
    L = random_layer(rng, [3, 2], [2, 2], [1, 2, 1], (0, 1), w_bits=4, in_bits=act_bits, in_exp=-4,
                     inter_bits=inter_bits, out_bits=act_bits, bias=False, relu=False, in_features=6,
                     out_features=4, acc_bits=acc_bits)
    save_artifact(IntNetwork((L,)), tmp_path / "wide.ttfa")
    np.save(tmp_path / "x.npy", np.zeros((2, 6)))
    assert main(["diverge", str(tmp_path / "wide.ttfa"), "--input", str(tmp_path / "x.npy")]) == 2
    err = capsys.readouterr().err
    name, v = ("act_bits", act_bits) if act_bits > 16 else ("inter_bits", inter_bits)
    assert err == (f"ttforge diverge: error: layer 0 of the artifact has {name}={v}; the fake-quant stage "
                   f"models 2..16 bits, so it cannot be compared here: check the integer stages against the "
                   f"RTL instead (ttforge run --board BOARD --sim --verify ARTIFACT INPUTS)\n")
