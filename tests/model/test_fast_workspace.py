"""The fast path's reused work buffers (ttforge.model.fast._buffers) never leak into a
result, and the merge's own backward (fast._Merge2) gives autograd's gradients."""

import pytest
import torch

import ttforge.model.fast as fast
from ttforge.ir.schedule import ContractionSchedule
from ttforge.ir.tt import TTShape
from ttforge.model.layers import TTLinear


def _chunked_plan(shape: TTShape) -> fast.FastPlan:
    groups = ((0, 1), (1, shape.d))
    merged = fast._merged_shape(shape, groups)
    return fast.FastPlan(groups, ContractionSchedule.from_order(merged, (1, 0)), 2, 0.0, 1)


def _run(layer, plan, x, gy):
    cores = [c.detach().clone().requires_grad_() for c in layer.cores]
    xr = x.clone().requires_grad_()
    y = fast.tt_apply(xr, cores, plan)
    y.backward(gy)
    return [y.detach(), xr.grad] + [c.grad for c in cores]


def test_results_survive_the_next_call_and_the_block_is_kept(one_thread):
    """A second call (another batch, reusing the block) leaves the first call's output
    and gradients as they were: none of them is a view of the work block."""
    torch.manual_seed(3)
    layer = TTLinear(30, 20, ranks=[3, 4], in_modes=[2, 3, 5], out_modes=[2, 2, 5]).double()
    plan = _chunked_plan(layer.tt_shape)
    x, gy = torch.randn(7, 30, dtype=torch.float64), torch.randn(7, 20, dtype=torch.float64)
    fast.clear_workspace()
    first = _run(layer, plan, x, gy)
    kept = [t.clone() for t in first]
    assert fast.workspace_bytes() > 0
    _run(layer, plan, 3 * torch.randn(7, 30, dtype=torch.float64), torch.randn(7, 20, dtype=torch.float64))
    for got, want in zip(first, kept):
        assert torch.equal(got, want)
    fast.clear_workspace()
    assert fast.workspace_bytes() == 0
    again = _run(layer, plan, x, gy)  # a fresh block gives the same results
    for got, want in zip(again, kept):
        assert torch.equal(got, want)


def test_a_result_aliasing_the_block_is_caught(monkeypatch, one_thread):
    """The check above can fail: a backward whose input gradient lives in the work
    block is overwritten by the next call."""
    torch.manual_seed(3)
    layer = TTLinear(30, 20, ranks=[3, 4], in_modes=[2, 3, 5], out_modes=[2, 2, 5]).double()
    plan = _chunked_plan(layer.tt_shape)
    real = fast._backward_buffered

    def aliasing(x, *args, **kw):
        gx, gmats = real(x, *args, **kw)
        held = fast._buffers(x, [gx.numel()])[0].view_as(gx)
        return held.copy_(gx), gmats

    monkeypatch.setattr(fast, "_backward_buffered", aliasing)
    x, gy = torch.randn(7, 30, dtype=torch.float64), torch.randn(7, 20, dtype=torch.float64)
    first = _run(layer, plan, x, gy)
    gx = first[1].clone()
    _run(layer, plan, 3 * torch.randn(7, 30, dtype=torch.float64), torch.randn(7, 20, dtype=torch.float64))
    assert not torch.equal(first[1], gx)


@pytest.mark.parametrize("cut", [1, 2])
def test_the_merge_backward_equals_autograd_of_the_dense_product(cut):
    """_Merge2's gradients (work-buffer and create_graph branches) are those of an
    einsum of the two cores, and its double backward passes gradgradcheck."""
    torch.manual_seed(cut)
    a = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, 2, 3, 1 + cut, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 6, 12, 1 + cut, dtype=torch.float64)
    ref = torch.einsum("amnr,rpqs->ampnqs", a, b).reshape(2, 6, 12, 1 + cut)
    want = torch.autograd.grad(ref, (a, b), g)
    got = torch.autograd.grad(fast._merge2(a, b), (a, b), g)
    for u, v in zip(got, want):
        assert torch.allclose(u, v, atol=1e-12, rtol=0)
    assert torch.autograd.gradgradcheck(fast._merge2, (a, b))


def test_a_wrong_merge_backward_is_caught(monkeypatch):
    """The comparison above can fail: a backward that skips the move of ``MB`` in
    front of ``NA`` gives other core gradients."""
    torch.manual_seed(1)
    a = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, 2, 3, 2, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 6, 12, 2, dtype=torch.float64)
    want = torch.autograd.grad(torch.einsum("amnr,rpqs->ampnqs", a, b).reshape(2, 6, 12, 2), (a, b), g)

    def unmoved(ctx, g):
        a, b = ctx.saved_tensors
        gp = g.reshape(a[..., 0].numel(), b[0].numel())
        return ((gp @ b.reshape(b.shape[0], -1).t()).view(a.shape),
                (a.reshape(-1, a.shape[-1]).t() @ gp).view(b.shape))

    monkeypatch.setattr(fast._Merge2, "backward", staticmethod(unmoved))
    got = torch.autograd.grad(fast._merge2(a, b), (a, b), g)
    assert not all(torch.allclose(u, v, atol=1e-12, rtol=0) for u, v in zip(got, want))


def test_a_set_larger_than_the_cap_is_not_kept(monkeypatch):
    """A thread keeps at most KEEP_BYTES between calls: larger sets are fresh tensors."""
    fast.clear_workspace()
    like = torch.empty(1)
    monkeypatch.setattr(fast, "KEEP_BYTES", 4 * 1000)
    small = fast._buffers(like, [100, 200])
    assert fast.workspace_bytes() == 4 * (112 + 208)  # offsets aligned to 16 values
    assert small[1].data_ptr() - small[0].data_ptr() == 4 * 112
    big = fast._buffers(like, [2000])
    assert fast.workspace_bytes() == 4 * (112 + 208) and big[0].numel() == 2000
    fast.clear_workspace()


def _interleaved(layers, plans, xs, gys):
    """Both forwards first, then both backwards (the second forward reuses the block
    while the first layer's merged matrices wait for their backward)."""
    runs = []
    for layer, plan, x in zip(layers, plans, xs):
        cores = [c.detach().clone().requires_grad_() for c in layer.cores]
        x = x.clone().requires_grad_()
        runs.append((x, cores, fast.tt_apply(x, cores, plan)))
    for (_, _, y), gy in zip(runs, gys):
        y.backward(gy)
    return [[y.detach(), x.grad] + [c.grad for c in cores] for x, cores, y in runs]


def _merged_plan(shape: TTShape) -> fast.FastPlan:
    groups = ((0, shape.d),)
    return fast.FastPlan(groups, ContractionSchedule.from_order(fast._merged_shape(shape, groups), (0,)), 0, 0.0)


@pytest.mark.parametrize("alias", [False, True], ids=["fresh", "aliasing-sibling"])
def test_merged_matrices_survive_another_layers_forward(monkeypatch, one_thread, alias):
    """The merge's products go through the work block, its result does not: a second
    layer's forward between the first's forward and backward leaves the first's
    gradients as computed alone. Sibling: a merge whose result is a view of the block
    changes them or is refused by autograd."""
    torch.manual_seed(4)
    layers = [TTLinear(30, 20, ranks=[3, 4], in_modes=[2, 3, 5], out_modes=[2, 2, 5]).double(),
              TTLinear(30, 20, ranks=[2, 2], in_modes=[2, 3, 5], out_modes=[2, 2, 5]).double()]
    plans = [_merged_plan(l.tt_shape) for l in layers]
    xs = [torch.randn(5, 30, dtype=torch.float64) for _ in layers]
    gys = [torch.randn(5, 20, dtype=torch.float64) for _ in layers]
    alone = [_interleaved([l], [p], [x], [g])[0] for l, p, x, g in zip(layers, plans, xs, gys)]
    if alias:
        real = fast._merge2_product

        def aliasing(a, b):
            out = real(a, b)
            return fast._buffers(a, [out.numel()])[0].view_as(out).copy_(out)

        monkeypatch.setattr(fast, "_merge2_product", aliasing)
    try:
        both = _interleaved(layers, plans, xs, gys)
    except RuntimeError as e:  # autograd refuses a block view modified in place
        assert alias and "inplace" in str(e)
        return
    same = all(torch.equal(a, b) for want, got in zip(alone, both) for a, b in zip(want, got))
    assert same != alias


@pytest.mark.parametrize("then", ["train", "no_grad_new_weights", "no_grad_new_batch"])
def test_a_block_first_made_under_inference_mode_serves_later_calls(one_thread, then):
    """The work block made by a call under ``torch.inference_mode`` (the first of the
    thread, or one needing a bigger block) is an ordinary tensor: a training step, or
    an inference call that merges again, writes into it afterwards (before, each raised
    "Inplace update to inference tensor outside InferenceMode")."""
    torch.manual_seed(0)
    layer = TTLinear(784, 512, ranks=8)
    x = torch.randn(256, 784)
    fast.clear_workspace()
    with torch.inference_mode():
        layer(x)
    want = x @ layer.to_dense().detach().T + layer.bias.detach()
    if then == "train":
        y = layer(x)
        y.sum().backward()
        assert all(c.grad is not None for c in layer.cores)
    elif then == "no_grad_new_weights":
        with torch.no_grad():
            layer.cores[1].mul_(1.5)
            want = x @ layer.to_dense().T + layer.bias
            y = layer(x)
    else:
        with torch.no_grad():
            x, want = x[:1], want[:1]
            y = layer(x)
    torch.testing.assert_close(y.detach(), want, rtol=1e-4, atol=1e-4)


def test_the_cap_is_the_threads_across_dtypes(monkeypatch):
    """KEEP_BYTES bounds a thread's blocks of every dtype together (float32 and float64
    sets of almost the cap each kept both): a block that would pass it drops the
    others; one that fits beside them keeps them."""
    fast.clear_workspace()
    monkeypatch.setattr(fast, "KEEP_BYTES", 8 * 1000)
    fast._buffers(torch.empty(1), [1600])                       # 6,400 bytes of float32
    assert fast.workspace_bytes() == 4 * 1600
    fast._buffers(torch.empty(1, dtype=torch.float64), [800])   # 6,400 of float64
    assert fast.workspace_bytes() == 8 * 800 <= fast.KEEP_BYTES
    fast._buffers(torch.empty(1), [192])                        # fits beside it: both kept
    assert fast.workspace_bytes() == 8 * 800 + 4 * 192
    fast._buffers(torch.empty(1, dtype=torch.float64), [800])   # reused: nothing changes
    assert fast.workspace_bytes() == 8 * 800 + 4 * 192
    fast.clear_workspace()
