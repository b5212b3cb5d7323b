"""The fast float path (ttforge.model.fast) equals the hardware-order path within float
rounding, forward and gradients, for every merge and order; memory and plan caching."""

import pytest
import torch

import ttforge.model.fast as fast
from ttforge.errors import ConfigError, ShapeError
from ttforge.ir.schedule import ContractionSchedule, schedule_orders
from ttforge.ir.tt import TTShape
from ttforge.model.layers import TTLinear, apply_schedule

from tests.support.fastpath import every_plan, small_layer


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def threads(request):
    """Both autograd routes: 1 thread (merges through autograd) and more (merges inside)."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


def test_every_plan_equals_the_schedule_forward_and_gradients(threads):
    layer = small_layer()
    x = torch.randn(7, 30, dtype=torch.float64)
    gy = torch.randn(7, 20, dtype=torch.float64)
    cores = [c.detach().clone().requires_grad_() for c in layer.cores]
    xr = x.clone().requires_grad_()
    ref = apply_schedule(xr, cores, layer.schedule)
    ref.backward(gy)
    ref_grads = [xr.grad] + [c.grad for c in cores]
    for plan in every_plan(layer.tt_shape):
        cs = [c.detach().clone().requires_grad_() for c in cores]
        xf = x.clone().requires_grad_()
        y = fast.tt_apply(xf, cs, plan)
        assert torch.allclose(y, ref, atol=1e-12, rtol=0), plan.describe()
        y.backward(gy)
        for a, b in zip([xf.grad] + [c.grad for c in cs], ref_grads):
            assert torch.allclose(a, b, atol=1e-11, rtol=0), plan.describe()


def test_the_bias_is_added_once_on_every_route(threads):
    """Added by the last product when its rows are whole samples, else after it: the
    same output for every plan and chunking, with and without autograd."""
    layer = small_layer(seed=6)
    x = torch.randn(7, 30, dtype=torch.float64)
    bias = torch.randn(20, dtype=torch.float64)
    ref = apply_schedule(x, list(layer.cores), layer.schedule).detach() + bias
    fused = set()
    for plan in every_plan(layer.tt_shape):
        fused.add(plan.schedule.steps[-1].A == 1)
        with torch.no_grad():
            assert torch.allclose(fast.tt_apply(x, list(layer.cores), plan, bias=bias), ref,
                                  atol=1e-12, rtol=0), plan.describe()
        y = fast.tt_apply(x, list(layer.cores), plan, bias=bias.clone().requires_grad_())
        assert torch.allclose(y.detach(), ref, atol=1e-12, rtol=0), plan.describe()
    assert fused == {True, False}


@pytest.mark.parametrize("chunk", [0, 2])
def test_gradcheck_and_gradgradcheck_float64(chunk, threads):
    layer = small_layer(seed=2, ranks=[2, 3], in_modes=[2, 3, 5], out_modes=[1, 4, 5])
    x = torch.randn(5, 30, dtype=torch.float64, requires_grad=True)
    cores = [c.detach().clone().requires_grad_() for c in layer.cores]
    for plan in every_plan(layer.tt_shape, chunks=(chunk,)):
        f = lambda x, *cs: fast.tt_apply(x, cs, plan)  # noqa: E731
        assert torch.autograd.gradcheck(f, (x, *cores)), plan.describe()
    assert torch.autograd.gradgradcheck(f, (x, *cores))
    bias = torch.randn(20, dtype=torch.float64, requires_grad=True)
    fb = lambda x, b, *cs: fast.tt_apply(x, cs, plan, bias=b)  # noqa: E731
    assert torch.allclose(fb(x, bias, *cores), f(x, *cores) + bias, atol=1e-12)
    assert torch.autograd.gradcheck(fb, (x, bias, *cores))
    assert torch.autograd.gradgradcheck(fb, (x, bias, *cores))


def test_ttlinear_uses_the_fast_path_by_default_and_keeps_the_schedule_path():
    layer = small_layer(seed=3)
    assert layer.impl == "fast" and "impl='fast'" in repr(layer)
    hw = small_layer(seed=3, impl="schedule")
    x = torch.randn(9, 30, dtype=torch.float64)
    assert torch.allclose(layer(x), hw(x), atol=1e-12, rtol=0)
    with pytest.raises(ConfigError, match="impl='magic' must be one of 'fast', 'schedule'"):
        TTLinear(16, 8, 2, impl="magic")


@pytest.mark.parametrize("bias", [False, True])
def test_create_graph_gradients_over_chunks_equal_the_schedule(threads, bias):
    """The differentiable backward (create_graph), recomputed chunk by chunk, sums every
    chunk's core gradients and concatenates the input gradients: first and second
    derivatives equal the hardware-order path's, for every plan with several chunks."""
    layer = small_layer(seed=3)
    x = torch.randn(7, 30, dtype=torch.float64)
    gy = torch.randn(7, 20, dtype=torch.float64)
    b = torch.randn(20, dtype=torch.float64) if bias else None

    def grads(fn):
        cs = [c.detach().clone().requires_grad_() for c in layer.cores]
        xr = x.clone().requires_grad_()
        bb = b.clone().requires_grad_() if bias else None
        y = fn(xr, cs, bb)
        wrt = [xr, *cs] + ([bb] if bias else [])
        first = torch.autograd.grad((y * gy).sum(), wrt, create_graph=True)
        second = torch.autograd.grad(sum((g * g).sum() for g in first), [xr, *cs])
        return [g.detach() for g in first], list(second)

    ref = grads(lambda xr, cs, bb: apply_schedule(xr, cs, layer.schedule)
                + (bb if bb is not None else 0))
    for plan in every_plan(layer.tt_shape, chunks=(2, 3)):
        got = grads(lambda xr, cs, bb: fast.tt_apply(xr, cs, plan, bias=bb))
        for a, r in zip(got[0] + got[1], ref[0] + ref[1]):
            assert torch.allclose(a, r, atol=1e-10, rtol=0), plan.describe()


@pytest.mark.parametrize("batch", [0, 1, 2, 17, 64, 300])
def test_batch_sizes_padding_and_chunks_float32(monkeypatch, batch, threads):
    monkeypatch.setattr(fast, "CHUNK_ELEMENTS", 256)  # several chunks from small batches on
    fast._plan_cached.cache_clear()
    try:
        torch.manual_seed(batch)
        layer = TTLinear(784, 500, ranks=6, in_modes=[7, 4, 7, 4], out_modes=[4, 8, 4, 4])
        hw = TTLinear(784, 500, ranks=6, in_modes=[7, 4, 7, 4], out_modes=[4, 8, 4, 4],
                      impl="schedule")
        hw.load_state_dict(layer.state_dict())
        x = torch.randn(batch, 784)
        gy = torch.randn(batch, 500)
        outs = []
        for m in (layer, hw):
            xi = x.clone().requires_grad_()
            y = m(xi)
            y.backward(gy)
            outs.append((y.detach(), xi.grad, [c.grad for c in m.cores], m.bias.grad))
        (y, gx, gc, gb), (y2, gx2, gc2, gb2) = outs
        assert y.shape == (batch, 500) and y.is_contiguous()
        scale = float(y2.abs().max()) if batch else 1.0
        assert torch.allclose(y, y2, atol=1e-5 * scale, rtol=1e-4)
        assert torch.allclose(gx, gx2, atol=1e-4, rtol=1e-3)
        for a, b in zip(gc, gc2):
            assert torch.allclose(a, b, atol=1e-4 * float(b.abs().max()) + 1e-12, rtol=1e-3)
        assert torch.allclose(gb, gb2)
    finally:
        fast._plan_cached.cache_clear()


def test_backward_keeps_only_the_input_and_core_matrices_when_chunked(monkeypatch):
    """The intermediates of a chunked forward are recomputed, not saved: what autograd
    keeps is the input and the (small) step matrices, whatever the batch."""
    monkeypatch.setattr(fast, "CHUNK_ELEMENTS", 1 << 12)
    fast._plan_cached.cache_clear()
    try:
        layer = TTLinear(4096, 4096, 16, in_modes=[8] * 4, out_modes=[8] * 4)
        x = torch.randn(64, 4096, requires_grad=True)
        plan = fast.plan_for(layer.tt_shape, 64)
        assert 0 < plan.chunk < 64 and plan.per_sample_intermediate > 4096
        saved = []

        def pack(t):
            saved.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y = fast.tt_apply(x, list(layer.cores), plan)
        mats = fast._step_matrices(list(layer.cores), plan)
        custom = x.numel() + sum(m.numel() for m in mats)
        intermediate = 64 * plan.per_sample_intermediate
        assert sum(saved) < custom + 2 * layer.n_params + 4 * sum(m.numel() for m in mats)
        assert sum(saved) < intermediate
        y.sum().backward()
        assert x.grad.shape == x.shape
    finally:
        fast._plan_cached.cache_clear()


def test_plans_are_cached_per_batch_bucket_and_merge_for_large_batches():
    shape = TTShape((8, 8, 8, 8), (8, 8, 8, 8), 16)
    assert fast.plan_for(shape, 200) is fast.plan_for(shape, 256)
    assert fast.batch_bucket(1) == 1 and fast.batch_bucket(257) == 512
    big = fast.plan_for(shape, 256)
    assert big.groups == ((0, 2), (2, 4))  # merged pairs halve the MACs of this layer
    mnist = TTShape((4, 8, 4, 4), (7, 4, 7, 4), 16)
    assert len(fast.plan_for(mnist, 4096).groups) == 1  # a big batch pays for the dense weight
    assert len(fast.plan_for(mnist, 4).groups) > 1


def test_tensors_follow_the_input_dtype():
    layer = small_layer(seed=4).float()
    x = torch.randn(3, 30)
    assert layer(x).dtype == torch.float32
    layer = layer.double()
    assert layer(x.double()).dtype == torch.float64


@pytest.mark.parametrize("need", ["all", "cores", "input"])
def test_the_one_group_plan_is_one_node_with_every_derivative(threads, need):
    """The dense-weight plan (one group) runs as one autograd node that walks the merge
    tree itself: first and second derivatives (gradcheck, gradgradcheck) with the bias,
    for four cores (a tree two merges deep), and only the gradients asked for."""
    torch.manual_seed(7)
    layer = TTLinear(24, 12, ranks=[2, 3, 2], in_modes=[2, 3, 2, 2], out_modes=[1, 3, 2, 2]).double()
    groups = ((0, 4),)
    plan = fast.FastPlan(groups, ContractionSchedule.from_order(
        fast._merged_shape(layer.tt_shape, groups), (0,)), 0, 0.0)
    x = torch.randn(5, 24, dtype=torch.float64, requires_grad=need != "cores")
    bias = torch.randn(12, dtype=torch.float64, requires_grad=need == "all")
    cores = [c.detach().clone().requires_grad_(need != "input") for c in layer.cores]
    y = fast.tt_apply(x, cores, plan, bias=bias)
    assert type(y.grad_fn).__name__ == "_TTApplyDenseBackward"
    ref = apply_schedule(x, cores, layer.schedule) + bias
    assert torch.allclose(y, ref, atol=1e-12, rtol=0)
    f = lambda x, b, *cs: fast.tt_apply(x, cs, plan, bias=b)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, bias, *cores))
    assert torch.autograd.gradgradcheck(f, (x, bias, *cores))


@pytest.mark.parametrize("need_x", [True, False], ids=["x-grad", "no-x-grad"])
def test_plan_macs_counts_every_product_of_every_plan(need_x, monkeypatch):
    """plan_macs against torch's own count of the matrix products (FlopCounterMode; it
    skips in-place accumulations, so the plans here are unchunked), forward and
    forward+backward, with intermediates kept and recomputed."""
    from torch.utils.flop_counter import FlopCounterMode

    monkeypatch.setattr(fast, "SAVE_ELEMENTS", 0)  # keep only what is at most in + out
    torch.manual_seed(0)
    layer = TTLinear(32, 32, ranks=6, in_modes=[2, 4, 4], out_modes=[4, 2, 4])
    batch, kept = 9, set()
    for plan in every_plan(layer.tt_shape, chunks=(0,)):
        x = torch.randn(batch, 32, requires_grad=need_x)
        cores = [c.detach().clone().requires_grad_() for c in layer.cores]
        with FlopCounterMode(display=False) as fc:
            y = fast.tt_apply(x, cores, plan)
        assert fc.get_total_flops() == 2 * fast.plan_macs(layer.tt_shape, plan, batch), plan.describe()
        with FlopCounterMode(display=False) as fc:
            fast.tt_apply(x, cores, plan).backward(torch.randn_like(y))
        want = fast.plan_macs(layer.tt_shape, plan, batch, backward=True, need_x=need_x)
        assert fc.get_total_flops() == 2 * want, plan.describe()
        kept.add(fast._keep(plan, batch))
    assert kept == {True, False}  # both backward routes were counted


def test_many_cores_plan_quickly_into_few_groups():
    """Beyond SEARCH_ALL_CORES cores the search tries cuts into at most SEARCH_GROUPS
    groups (a 12-core layer searched every cut in 17 s a batch bucket); up to it, every
    cut, as the full search over fast._partitions would."""
    import time

    shape = TTLinear(4096, 4096, ranks=4, in_modes=[2] * 12, out_modes=[2] * 12).tt_shape
    fast._plan_cached.cache_clear()
    t0 = time.perf_counter()
    plan = fast.plan_for(shape, 64)
    assert time.perf_counter() - t0 < 5
    assert len(plan.groups) <= fast.SEARCH_GROUPS
    seven = TTLinear(128, 128, ranks=4, in_modes=[2] * 7, out_modes=[2] * 7).tt_shape
    best = min((fast._plan_cost(seven, g, ContractionSchedule.from_order(fast._merged_shape(seven, g), o), 1)[0], g)
               for g in fast._partitions(7) for o in schedule_orders(len(g)))
    assert len(best[1]) > fast.SEARCH_GROUPS  # at batch 1 the best cut has five groups
    assert fast.plan_for(seven, 1).groups == best[1]


@pytest.fixture
def fresh_plans():
    fast._plan_cached.cache_clear()
    yield
    fast._plan_cached.cache_clear()


def test_no_plan_merges_more_than_merged_values(fresh_plans):
    """A wide layer whose dense product is the fewer MACs (ranks near the maximum) is
    not rebuilt: 65536 x 65536 at ranks 64-256-64 (8 M parameters) would form its
    4.3 G-value weight (17 GB) from batch 256 on."""
    wide = TTShape((16,) * 4, (16,) * 4, (1, 64, 256, 64, 1))
    for batch in (1, 256, 4096):
        plan = fast.plan_for(wide, batch)
        assert all(fast._merged_values(wide, lo, hi) <= fast.MERGED_VALUES
                   for lo, hi in plan.groups if hi - lo > 1), (batch, plan.groups)


def test_the_cap_changes_the_plan_only_where_a_merge_exceeds_it(monkeypatch, fresh_plans):
    """4096 x 8192 at rank 64: one group (33.6 M values, 435 MB peak forward+backward at
    batch 256, measured) without the cap; merged pairs (53 MB, 8 % slower) with it. The
    speed table's layers keep their plans."""
    layer = TTShape((8, 8, 8, 16), (8,) * 4, 64)
    assert fast._merged_values(layer, 0, 4) > fast.MERGED_VALUES
    capped = fast.plan_for(layer, 256).groups
    table = {s: [fast.plan_for(s, b).groups for b in (1, 256, 4096)] for s in
             (TTShape((4, 8, 4, 4), (7, 4, 7, 4), 16), TTShape((4, 8, 8, 4), (4, 8, 8, 4), 8),
              TTShape((8,) * 4, (8,) * 4, 16))}
    monkeypatch.setattr(fast, "MERGED_VALUES", 1 << 40)
    fast._plan_cached.cache_clear()
    assert fast.plan_for(layer, 256).groups == ((0, 4),) != capped
    assert {s: [fast.plan_for(s, b).groups for b in (1, 256, 4096)] for s in table} == table


def test_every_cut_over_the_cap_leaves_single_cores(fresh_plans):
    """Eight cores of rank 128: every cut the search tries (at most four groups) merges
    a pair of 67 M values; the plan contracts the cores one by one instead."""
    shape = TTShape((8,) * 8, (8,) * 8, 128)
    plan = fast.plan_for(shape, 64)
    assert plan.groups == tuple((k, k + 1) for k in range(8))


def test_a_capped_plan_computes_the_same_function(monkeypatch, fresh_plans, threads):
    layer = small_layer()
    shape = layer.tt_shape
    free = fast.plan_for(shape, 64)
    monkeypatch.setattr(fast, "MERGED_VALUES", 100)
    fast._plan_cached.cache_clear()
    plan = fast.plan_for(shape, 64)
    assert plan.groups != free.groups
    assert all(hi - lo == 1 or fast._merged_values(shape, lo, hi) <= 100 for lo, hi in plan.groups)
    x = torch.randn(64, layer.in_features, dtype=layer.cores[0].dtype, requires_grad=True)
    ref = apply_schedule(x, list(layer.cores), layer.schedule)
    got = fast.tt_apply(x, list(layer.cores), plan)
    assert torch.allclose(got, ref, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("case, message", [
    ("features", "x has shape (3, 63); these cores take (batch, 64)"),
    ("vector", "x has shape (64,); these cores take (batch, 64)"),
    ("three-d", "x has shape (2, 3, 64); these cores take (batch, 64)"),
    ("bias", "bias has shape (31,); these cores give 32 outputs"),
    ("no cores", "tt_apply needs at least one core (got none)"),
    ("other plan", "the plan is for 3 cores of a 20 x 30 weight, the cores make 2 of 32 x 64"),
])
def test_tt_apply_names_operands_that_do_not_fit(case, message):
    """Before: a reshape deep inside failed with sizes the caller never gave
    ("shape '[3, 8, 8]' is invalid for input of size 189"), or an IndexError."""
    layer = TTLinear(64, 32, ranks=4, in_modes=[8, 8], out_modes=[4, 8])
    cores = list(layer.cores)
    x, bias, plan = torch.randn(3, 64), None, None
    if case == "features":
        x = torch.randn(3, 63)
    elif case == "vector":
        x = torch.randn(64)
    elif case == "three-d":
        x = torch.randn(2, 3, 64)
    elif case == "bias":
        bias = torch.randn(31)
    elif case == "no cores":
        cores = []
    elif case == "other plan":
        plan = fast.plan_for(TTShape((2, 2, 5), (2, 3, 5), 2), 3)
    with pytest.raises(ShapeError) as e:
        fast.tt_apply(x, cores, plan, bias=bias)
    assert message in str(e.value)
    with pytest.raises(ShapeError, match=r"^merge_cores needs at least one core \(got none\)$"):
        fast.merge_cores([])


def test_a_layer_of_many_cores_never_searches_every_order_of_single_cores(fresh_plans):
    """16 cores (a layer given its own schedule may have more than the 12 the hardware
    order searches): the cut into single cores has 2^15 orders; only cuts into at most
    SEARCH_GROUPS groups are searched, and single cores, when nothing else fits the
    cap, take the two end-to-end orders."""
    import time

    t0 = time.perf_counter()
    plan = fast.plan_for(TTShape((2,) * 16, (2,) * 16, 4), 64)
    assert time.perf_counter() - t0 < 5 and len(plan.groups) <= fast.SEARCH_GROUPS
    wide = TTShape((8,) * 8, (8,) * 8, 128)
    assert fast.plan_for(wide, 64).schedule.order in ((7, 6, 5, 4, 3, 2, 1, 0), tuple(range(8)))


def test_the_backward_takes_row_major_matrices_in_its_batched_products():
    """Every batched product of the custom backward takes its first operand with rows
    contiguous: an expanded transposed view of a step matrix ran 1.6x slower (the 4096
    layer's forward+backward 1.07x). The old code fails it (``C.t().expand``)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    seen = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in (torch.ops.aten.bmm.default, torch.ops.aten.bmm.out):
                seen.append(args[0].stride())
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    layer = TTLinear(1024, 1024, ranks=8, in_modes=[4, 8, 8, 4], out_modes=[4, 8, 8, 4])
    x = torch.randn(256, 1024, requires_grad=True)
    assert len(fast.plan_for(layer.tt_shape, 256).groups) == 2  # a step over samples
    y = layer(x)
    with Record():
        y.sum().backward()
    assert seen and all(s[-1] == 1 for s in seen), seen
