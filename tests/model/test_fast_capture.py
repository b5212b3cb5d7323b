"""TTLinear recorded as a graph to run elsewhere: ``torch.export`` (static and dynamic
batch) and ``torch.jit.trace``, on both implementations, inside a network; the graph
computes the eager layer's function at other batch sizes too, and records no custom
node, no work buffer and no cached merge."""

import warnings

import pytest
import torch
from torch import nn

import ttforge.model.fast as fast
from ttforge.errors import ShapeError
from ttforge.model.layers import TTLinear

IMPLS = ("fast", "schedule")

#: (in, out, ranks, in_modes, out_modes): one group at every batch; merged pairs (two
#: groups at the capture batch); zero-padded input and output
LAYERS = {
    "one-group": (30, 20, [3, 4], [2, 3, 5], [2, 2, 5]),
    "merged-pairs": (1024, 1024, 8, [4, 8, 8, 4], [4, 8, 8, 4]),
    "padded": (29, 19, [3, 4], [2, 3, 5], [2, 2, 5]),
}


def _net(impl, name, seed=0):
    n_in, n_out, ranks, in_modes, out_modes = LAYERS[name]
    torch.manual_seed(seed)
    tt = TTLinear(n_in, n_out, ranks=ranks, in_modes=in_modes, out_modes=out_modes, impl=impl)
    return nn.Sequential(nn.Linear(n_in, n_in), nn.ReLU(), tt).double()


def _x(batch, net, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, net[0].in_features, generator=g, dtype=torch.float64)


def _close(a, b):
    return torch.allclose(a, b, atol=1e-10, rtol=1e-10)


def test_merged_pairs_layer_has_two_groups_at_the_capture_batch():
    """The case the merged-pairs tests stand for (else they test one group twice)."""
    shape = _net("fast", "merged-pairs")[2].tt_shape
    assert len(fast.plan_for(shape, fast.CAPTURE_BATCH).groups) == 2


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("impl", IMPLS)
def test_export_static_batch(impl, name):
    net = _net(impl, name)
    x = _x(6, net)
    ep = torch.export.export(net, (x,))
    assert _close(ep.module()(x), net(x))


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("impl", IMPLS)
def test_export_dynamic_batch_runs_every_batch(impl, name):
    net = _net(impl, name)
    batch = torch.export.Dim("batch")
    ep = torch.export.export(net, (_x(6, net),), dynamic_shapes=({0: batch},))
    for b in (2, 3, 300):
        x = _x(b, net, seed=b)
        assert _close(ep.module()(x), net(x)), b


@pytest.mark.parametrize("impl", IMPLS)
def test_exported_graph_holds_only_aten_operations(impl):
    """No custom autograd node, no higher-order op, and no tensor constant (a work
    block or a cached merge would be one)."""
    net = _net(impl, "merged-pairs")
    ep = torch.export.export(net, (_x(6, net),))
    calls = [n for n in ep.graph.nodes if n.op == "call_function"]
    assert calls and all(isinstance(n.target, torch._ops.OpOverload)
                         and n.target.namespace == "aten" for n in calls)
    assert not ep.constants


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("impl", IMPLS)
def test_jit_trace_runs_other_batches_without_tracer_warnings(impl, name):
    net = _net(impl, name)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        traced = torch.jit.trace(net, _x(8, net))
    tracer = [w for w in seen if issubclass(w.category, torch.jit.TracerWarning)]
    assert not tracer, [str(w.message) for w in tracer]
    for b in (1, 5, 300):
        x = _x(b, net, seed=b)
        assert _close(traced(x), net(x)), b


def test_captured_only_while_capturing():
    seen = []

    class Probe(nn.Module):
        def forward(self, x):
            seen.append((fast.captured(), fast.plain_ops_only()))
            return x * 2

    x = torch.randn(3, 2)
    Probe()(x)
    torch.export.export(Probe(), (x,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(Probe(), x, check_trace=False)
    assert seen[0] == (False, False)
    assert seen[1:] == [(True, True)] * (len(seen) - 1) and len(seen) >= 3
    assert not fast.captured()


def test_capture_leaves_the_merge_cache_and_workspace_alone():
    net = _net("fast", "merged-pairs").float()
    layer = net[2]
    fast.clear_workspace()
    torch.export.export(net, (_x(6, net).float(),))
    assert fast.workspace_bytes() == 0
    cache = layer.__dict__.get("_merge_cache")
    assert cache is None or cache.nbytes == 0


def test_traced_layer_refuses_another_feature_count():
    """The eager check is skipped under tracing (it would not be recorded); the traced
    reshape still refuses the wrong input, and the eager layer names the field."""
    net = _net("fast", "one-group")
    layer = net[2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(layer, torch.randn(4, 30, dtype=torch.float64))
    with pytest.raises(RuntimeError):
        traced(torch.randn(4, 31, dtype=torch.float64))
    with pytest.raises(ShapeError, match="31 features"):
        layer(torch.randn(4, 31, dtype=torch.float64))


@pytest.mark.parametrize("dynamo", [False, True])
def test_torch_onnx_export_of_a_network_with_tt_layers(dynamo, tmp_path):
    """A user's own network through torch.onnx (both exporters, a dynamic batch) runs in
    onnxruntime as in PyTorch; ttforge's own exporter (docs/export.md) keeps the TT
    structure instead."""
    ort = pytest.importorskip("onnxruntime")
    if dynamo:
        pytest.importorskip("onnxscript")
    np = pytest.importorskip("numpy")
    torch.manual_seed(0)
    net = nn.Sequential(TTLinear(784, 512, ranks=16, in_modes=[7, 4, 7, 4], out_modes=[4, 8, 4, 4]),
                        nn.ReLU(), TTLinear(512, 10, ranks=4)).eval()
    path = tmp_path / "net.onnx"
    kw = ({"dynamic_shapes": ({0: torch.export.Dim("batch")},)} if dynamo
          else {"input_names": ["x"], "dynamic_axes": {"x": {0: "batch"}}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.randn(5, 784),), str(path), dynamo=dynamo, **kw)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for b in (1, 3, 64):
        x = torch.randn(b, 784)
        got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        with torch.no_grad():
            want = net(x).numpy()
        assert np.allclose(got, want, atol=1e-5, rtol=1e-4), b
