"""TTLinear under torch.func transforms (vmap, grad, jacrev, jvp), forward-mode AD,
torch.compile and on the meta device: the same function as the hardware-order path and the dense weight,
on both implementations; the fast path keeps its own nodes when nothing is transformed."""

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import functional_call, grad, jacrev, jvp, vmap

import ttforge.model.fast as fast
from ttforge.model.layers import TTLinear, apply_schedule
from ttforge.model.tt import tt_to_dense

from tests.support.fastpath import node_names

IMPLS = ("fast", "schedule")


def _layer(impl="fast", seed=0, **kw):
    torch.manual_seed(seed)
    kw = {"ranks": [3, 4], "in_modes": [2, 3, 5], "out_modes": [2, 2, 5], **kw}
    return TTLinear(30, 20, impl=impl, **kw).double()


def _dense(layer):
    return layer.to_dense().detach(), layer.bias.detach()


@pytest.mark.parametrize("impl", IMPLS)
def test_vmap_equals_the_dense_weight(impl):
    layer = _layer(impl)
    w, b = _dense(layer)
    x = torch.randn(4, 3, 30, dtype=torch.float64)
    y = vmap(layer)(x)
    assert torch.allclose(y, x @ w.t() + b, atol=1e-12, rtol=0)


@pytest.mark.parametrize("impl", IMPLS)
def test_per_sample_gradients_equal_one_backward_per_sample(impl):
    """The Opacus-style recipe: vmap(grad(functional_call)) over the samples."""
    layer = _layer(impl, seed=1)
    params = {k: v.detach() for k, v in layer.named_parameters()}
    x = torch.randn(6, 30, dtype=torch.float64)
    t = torch.randn(6, 20, dtype=torch.float64)

    def loss(p, xs, ts):
        return ((functional_call(layer, p, (xs.unsqueeze(0),)) - ts) ** 2).sum()

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, t)
    for i in range(x.shape[0]):
        layer.zero_grad()
        ((layer(x[i:i + 1]) - t[i]) ** 2).sum().backward()
        for k, p in layer.named_parameters():
            assert torch.allclose(per_sample[k][i], p.grad, atol=1e-11, rtol=0), (k, i)


@pytest.mark.parametrize("impl", IMPLS)
def test_jacrev_of_the_input_is_the_dense_weight(impl):
    layer = _layer(impl, seed=2)
    w, _ = _dense(layer)
    jac = jacrev(layer)(torch.randn(30, dtype=torch.float64))
    assert torch.allclose(jac, w, atol=1e-12, rtol=0)


@pytest.mark.parametrize("impl", IMPLS)
def test_jvp_and_forward_mode_ad_through_cores_and_input(impl):
    """Tangents of the input and of every core at once, against the dense weight's."""
    layer = _layer(impl, seed=3)
    cores = [c.detach() for c in layer.cores]
    x = torch.randn(5, 30, dtype=torch.float64)
    tx = torch.randn_like(x)
    tc = [torch.randn_like(c) for c in cores]
    names = [f"cores.{k}" for k in range(len(cores))]

    def through_layer(xx, *cs):
        return functional_call(layer, dict(zip(names, cs)), (xx,))

    def through_dense(xx, *cs):
        return xx @ tt_to_dense(list(cs)).t() + layer.bias.detach()

    y, ty = jvp(through_layer, (x, *cores), (tx, *tc))
    y_ref, ty_ref = jvp(through_dense, (x, *cores), (tx, *tc))
    assert torch.allclose(y, y_ref, atol=1e-12, rtol=0)
    assert torch.allclose(ty, ty_ref, atol=1e-11, rtol=0)
    with fwAD.dual_level():
        out = layer(fwAD.make_dual(x, tx))
        tangent = fwAD.unpack_dual(out).tangent
    assert torch.allclose(tangent, tx @ layer.to_dense().detach().t(), atol=1e-12, rtol=0)


def test_vmap_over_stacked_cores_an_ensemble():
    """Batched cores (an ensemble of layers, torch.func.stack_module_state) as well as
    a batched input: the merges see batched operands."""
    layers = [_layer(seed=s) for s in range(3)]
    params, _ = torch.func.stack_module_state(layers)
    x = torch.randn(7, 30, dtype=torch.float64)
    ys = vmap(lambda p: functional_call(layers[0], p, (x,)))(params)
    for y, layer in zip(ys, layers):
        w, b = _dense(layer)
        assert torch.allclose(y, x @ w.t() + b, atol=1e-12, rtol=0)


def test_merge_cores_and_apply_schedule_under_vmap():
    layer = _layer(seed=4)
    cores = [c.detach() for c in layer.cores]
    stacked = [torch.stack([c, 2 * c]) for c in cores]
    merged = vmap(fast.merge_cores)(stacked)
    one = fast.merge_cores(cores).detach()
    assert torch.allclose(merged[0], one, atol=1e-12, rtol=0)
    assert torch.allclose(merged[1], one * 2 ** len(cores), atol=1e-12, rtol=0)
    x = torch.randn(3, 2, 30, dtype=torch.float64)
    y = vmap(lambda xx: apply_schedule(xx, cores, layer.schedule))(x)
    assert torch.allclose(y, x @ tt_to_dense(cores).t(), atol=1e-12, rtol=0)


def test_transformed_only_inside_a_transform_and_the_fast_nodes_stay_outside():
    """Outside every transform the fast path keeps its own autograd nodes and buffers
    (so the plain operations cost nothing there); inside, none of them run."""
    layer = _layer(seed=5)
    x = torch.randn(4, 30, dtype=torch.float64, requires_grad=True)
    assert not fast.transformed()
    assert node_names(layer(x).grad_fn) & {"_TTApplyDenseBackward", "_TTApplyMatsBackward"}
    with fwAD.dual_level():
        assert not node_names(layer(fwAD.make_dual(x, torch.ones_like(x))).grad_fn) & {
            "_TTApplyDenseBackward", "_TTApplyMatsBackward", "_Merge2Backward"}
    seen = []
    vmap(lambda xx: seen.append(fast.transformed()) or layer(xx))(x.detach())
    with fwAD.dual_level():
        seen.append(fast.transformed())
    assert seen == [True, True]
    assert not fast.transformed()


def test_the_meta_device_builds_and_runs_without_memory_then_materialises():
    layer = TTLinear(784, 512, ranks=16, in_modes=(7, 4, 7, 4), out_modes=(4, 8, 4, 4),
                     device="meta")
    assert all(p.device.type == "meta" for p in layer.parameters())
    for grad_on in (True, False):
        with torch.set_grad_enabled(grad_on):
            y = layer(torch.empty(256, 784, device="meta"))
        assert y.device.type == "meta" and y.shape == (256, 512)
    layer.to_empty(device="cpu")
    layer.reset_parameters()
    assert all(p.device.type == "cpu" and torch.isfinite(p).all() for p in layer.parameters())
    assert layer(torch.randn(3, 784)).shape == (3, 512)


def test_device_and_dtype_as_for_nn_linear():
    layer = TTLinear(30, 20, ranks=3, in_modes=[2, 3, 5], out_modes=[2, 2, 5],
                     device="cpu", dtype=torch.float64)
    assert {p.dtype for p in layer.parameters()} == {torch.float64}
    x = torch.randn(4, 30, dtype=torch.float64)
    assert layer(x).dtype == torch.float64
    ref = apply_schedule(x, list(layer.cores), layer.schedule) + layer.bias
    assert torch.allclose(layer(x), ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize("impl, plain", [("fast", True), ("fast", False), ("schedule", False)],
                         ids=["fast-plain", "fast-custom", "schedule"])
def test_torch_compile_gives_the_eager_function_and_gradients(impl, plain, monkeypatch, one_thread):
    """torch.compile (AOT autograd, eager kernels: no C++ compiler needed) through both
    implementations, the fast path's plain route and its custom backward, and the merge
    cache (no_grad)."""
    monkeypatch.setattr(fast, "PLAIN_WHEN_KEPT", plain)
    torch._dynamo.reset()
    layer = _layer(impl, seed=10)
    compiled = torch.compile(layer, backend="aot_eager")
    x = torch.randn(5, 30, dtype=torch.float64, requires_grad=True)
    gy = torch.randn(5, 20, dtype=torch.float64)
    results = []
    for module in (compiled, layer):
        layer.zero_grad(set_to_none=True)
        x.grad = None
        y = module(x)
        nodes = node_names(y.grad_fn)
        y.backward(gy)
        with torch.no_grad():
            y_inference = module(x)
        results.append([y.detach(), y_inference, x.grad] + [c.grad for c in layer.cores])
    assert bool(nodes & {"_TTApplyMatsBackward", "_TTApplyDenseBackward"}) == (impl == "fast" and not plain)
    for a, b in zip(*results):
        assert torch.allclose(a, b, atol=1e-12, rtol=0)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_vmapped_backward_through_the_fast_nodes(threads, monkeypatch):
    """``torch.autograd.grad(..., is_grads_batched=True)`` (and ``jacobian(...,
    vectorize=True)``) vmaps the backward of a graph recorded unbatched through the fast
    path's own nodes: their ``out=`` products and work buffers had no batching rule
    ("aten::mm.out"), at 2 threads or a large batch; now the gradients of every plan and
    chunking, each of three output gradients, equal one ordinary backward each."""
    from tests.support.fastpath import every_plan, small_layer

    monkeypatch.setattr(fast, "PLAIN_WHEN_KEPT", False)   # the custom nodes, also when small
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        layer = small_layer(seed=3)
        x = torch.randn(7, 30, dtype=torch.float64)
        gys = torch.randn(3, 7, 20, dtype=torch.float64)
        nodes = set()
        for plan in every_plan(layer.tt_shape, chunks=(0, 3)):
            xs = x.clone().requires_grad_()
            cs = [c.detach().clone().requires_grad_() for c in layer.cores]
            y = fast.tt_apply(xs, cs, plan)
            nodes |= node_names(y.grad_fn)
            got = torch.autograd.grad(y, [xs, *cs], gys, is_grads_batched=True)
            for k, gy in enumerate(gys):
                want = torch.autograd.grad(apply_schedule(xs, cs, layer.schedule), [xs, *cs], gy)
                for a, b in zip(got, want):
                    assert torch.allclose(a[k], b, atol=1e-11, rtol=0), plan.describe()
        assert {"_TTApplyMatsBackward", "_TTApplyDenseBackward", "_Merge2Backward"} <= nodes, nodes
        jac = torch.autograd.functional.jacobian(lambda v: fast.tt_apply(v, list(layer.cores)), x,
                                                 vectorize=True)
        w = layer.to_dense().detach()
        assert torch.allclose(jac, torch.einsum("ij,bc->bicj", w, torch.eye(7, dtype=torch.float64)),
                              atol=1e-12, rtol=0)
    finally:
        torch.set_num_threads(before)
