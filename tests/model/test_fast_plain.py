"""The fast path's plain route under autograd (fast.PLAIN_WHEN_KEPT): small batches of a
plan with more than one group, and the one-group plan of a small weight
(fast.PLAIN_DENSE), run as autograd's own operations, equal to the hardware order and to
the custom backward within float rounding; larger batches and weights keep their own
nodes."""

import pytest
import torch

import ttforge.model.fast as fast
from ttforge.model.layers import TTLinear, apply_schedule

from tests.support.fastpath import every_plan, node_names, small_layer

CUSTOM = {"_TTApplyMatsBackward", "_TTApplyDenseBackward", "_Merge2Backward"}


def _grads(layer, x, gy, plan):
    cores = [c.detach().clone().requires_grad_() for c in layer.cores]
    xr = x.clone().requires_grad_()
    bias = layer.bias.detach().clone().requires_grad_()
    y = fast.tt_apply(xr, cores, plan, bias=bias)
    nodes = node_names(y.grad_fn)
    y.backward(gy)
    return y.detach(), [xr.grad, bias.grad] + [c.grad for c in cores], nodes


@pytest.fixture
def untuned_threads(request):
    """``threads`` torch threads; at more than one, deterministic algorithms on (as in
    training), where the custom nodes do not tune their threads either."""
    threads = request.param
    before, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(threads > 1, warn_only=True)
    yield threads
    torch.set_num_threads(before)
    torch.use_deterministic_algorithms(det)


@pytest.mark.parametrize("untuned_threads", [1, 2], indirect=True)
def test_every_kept_plan_equals_the_schedule_and_the_custom_backward(monkeypatch, untuned_threads):
    layer = small_layer(seed=7)
    x = torch.randn(7, 30, dtype=torch.float64)
    gy = torch.randn(7, 20, dtype=torch.float64)
    cores = [c.detach().clone().requires_grad_() for c in layer.cores]
    xr = x.clone().requires_grad_()
    ref = apply_schedule(xr, cores, layer.schedule) + layer.bias.detach()
    ref.backward(gy)
    routes = set()
    for plan in every_plan(layer.tt_shape, chunks=(0,)):
        if len(plan.groups) == 1:
            continue
        assert fast._keep(plan, 7)
        y, grads, nodes = _grads(layer, x, gy, plan)
        monkeypatch.setattr(fast, "PLAIN_WHEN_KEPT", False)
        y_custom, grads_custom, nodes_custom = _grads(layer, x, gy, plan)
        monkeypatch.setattr(fast, "PLAIN_WHEN_KEPT", True)
        assert not nodes & CUSTOM and "_TTApplyMatsBackward" in nodes_custom
        routes.add(plan.groups)
        assert torch.allclose(y, ref.detach(), atol=1e-12, rtol=0), plan.describe()
        assert torch.allclose(y, y_custom, atol=1e-12, rtol=0)
        for a, b in zip(grads[:1] + grads[2:], [xr.grad] + [c.grad for c in cores]):
            assert torch.allclose(a, b, atol=1e-11, rtol=0), plan.describe()
        for a, b in zip(grads, grads_custom):
            assert torch.allclose(a, b, atol=1e-11, rtol=0), plan.describe()
    assert len(routes) >= 3


def test_gradcheck_and_gradgradcheck_on_the_plain_route(one_thread):
    layer = small_layer(seed=8)
    plan = next(p for p in every_plan(layer.tt_shape, chunks=(0,)) if len(p.groups) == 2)
    x = torch.randn(3, 30, dtype=torch.float64, requires_grad=True)
    cores = [c.detach().clone().requires_grad_() for c in layer.cores]
    assert torch.autograd.gradcheck(lambda xx, *cs: fast.tt_apply(xx, cs, plan), (x, *cores))
    assert torch.autograd.gradgradcheck(lambda xx, *cs: fast.tt_apply(xx, cs, plan), (x, *cores))


def test_the_route_follows_keep_the_groups_and_the_shared_gradients(one_thread):
    """Plain exactly where the custom path would keep its intermediates, merges more
    than one group and autograd's per-sample gradient of the shared cores is small; the
    one-group plan and the large batches keep their own nodes (the memory bound of the
    backward)."""
    torch.manual_seed(0)
    layer = TTLinear(1024, 1024, ranks=8, in_modes=[4, 8, 8, 4], out_modes=[4, 8, 8, 4])
    seen = {}
    for batch in (1, 16, 32, 64, 256):
        plan = fast.plan_for(layer.tt_shape, batch)
        x = torch.randn(batch, 1024, requires_grad=True)
        nodes = node_names(layer(x).grad_fn)
        plain = fast._plain(plan, batch)
        assert bool(nodes & CUSTOM) != plain, (batch, nodes)
        seen[batch] = plain
    assert seen == {1: True, 16: True, 32: True, 64: False, 256: False}
    # the MNIST network's rank-8 layer: plain up to batch 32, whose shared-core gradient
    # is within PLAIN_EXPANDED though its intermediates would be kept at 64 too
    mnist = TTLinear(784, 512, ranks=8, in_modes=[7, 4, 7, 4], out_modes=[4, 8, 4, 4])
    assert [fast._plain(fast.plan_for(mnist.tt_shape, b), b) for b in (32, 64)] == [True, False]
    assert fast._keep(fast.plan_for(mnist.tt_shape, 64), 64)
    dense = TTLinear(784, 512, ranks=16, in_modes=[7, 4, 7, 4], out_modes=[4, 8, 4, 4])
    assert len(fast.plan_for(dense.tt_shape, 64).groups) == 1
    assert "_TTApplyDenseBackward" in node_names(dense(torch.randn(64, 784, requires_grad=True)).grad_fn)


def test_without_the_plain_route_the_custom_nodes_run(monkeypatch, one_thread):
    """Sibling: switched off, a small batch goes through the custom backward again."""
    layer = small_layer(seed=9)
    x = torch.randn(2, 30, dtype=torch.float64, requires_grad=True)
    assert not node_names(layer(x).grad_fn) & CUSTOM
    monkeypatch.setattr(fast, "PLAIN_WHEN_KEPT", False)
    assert node_names(layer(x).grad_fn) & CUSTOM


def test_a_small_one_group_plan_runs_plain_and_equals_the_custom_node(monkeypatch, one_thread):
    layer = small_layer(seed=10)
    plan = next(p for p in every_plan(layer.tt_shape, chunks=(0,)) if len(p.groups) == 1)
    x = torch.randn(9, 30, dtype=torch.float64)
    gy = torch.randn(9, 20, dtype=torch.float64)
    y, grads, nodes = _grads(layer, x, gy, plan)
    monkeypatch.setattr(fast, "PLAIN_WHEN_KEPT", False)
    y_custom, grads_custom, nodes_custom = _grads(layer, x, gy, plan)
    assert not nodes & CUSTOM and "_TTApplyDenseBackward" in nodes_custom
    assert torch.allclose(y, y_custom, atol=1e-12, rtol=0)
    for a, b in zip(grads, grads_custom):
        assert torch.allclose(a, b, atol=1e-11, rtol=0)


@pytest.mark.parametrize("in_modes, out_modes, plain", [
    ([4, 4, 4], [4, 4, 4], True),   # 64 x 64: the digits network's layer
    ([4, 4, 8], [4, 4, 8], True),   # 128 x 128 = PLAIN_DENSE values
    ([4, 4, 8], [4, 8, 8], False),  # 256 x 128: twice that
])
def test_the_one_group_route_follows_the_weight_size(in_modes, out_modes, plain, one_thread):
    torch.manual_seed(0)
    layer = TTLinear(int(torch.tensor(in_modes).prod()), int(torch.tensor(out_modes).prod()), ranks=4,
                     in_modes=in_modes, out_modes=out_modes)
    plan = fast.plan_for(layer.tt_shape, 256)
    assert len(plan.groups) == 1
    assert (layer.in_features * layer.out_features <= fast.PLAIN_DENSE) == plain
    nodes = node_names(layer(torch.randn(256, layer.in_features, requires_grad=True)).grad_fn)
    assert ("_TTApplyDenseBackward" not in nodes) == plain and not nodes & (CUSTOM - {"_TTApplyDenseBackward"})


@pytest.mark.parametrize("deterministic, plain", [(False, False), (True, True)])
def test_where_the_threads_are_tuned_the_custom_nodes_run(deterministic, plain):
    """At two threads under THREADS = "auto" the custom nodes pick one thread when a
    busy core holds the second up, which plain operations cannot: no plain route there
    (a small batch and a small one-group layer alike); in deterministic runs, untuned
    either way, the plain route stays."""
    before, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    try:
        assert fast._tunes() is not deterministic
        multi = TTLinear(1024, 1024, ranks=8, in_modes=[4, 8, 8, 4], out_modes=[4, 8, 8, 4])
        small = TTLinear(64, 64, ranks=4, in_modes=[4, 4, 4], out_modes=[4, 4, 4])
        for layer, batch in ((multi, 16), (small, 256)):
            assert fast._plain(fast.plan_for(layer.tt_shape, batch), batch)
            nodes = node_names(layer(torch.randn(batch, layer.in_features, requires_grad=True)).grad_fn)
            assert (not nodes & CUSTOM) == plain, (layer, nodes)
    finally:
        torch.set_num_threads(before)
        torch.use_deterministic_algorithms(det)
