"""The fast path's no-graph backward (ttforge.model.fast._backward_buffered): every way
it forms a matrix gradient (flat step in either orientation, per-sample loop, batched
product and sum) and every way it gets the step inputs (kept intermediates sliced per
backward chunk, or recomputed) gives the hardware-order path's gradients."""

import math

import pytest
import torch

import ttforge.model.fast as fast
from ttforge.ir.schedule import ContractionSchedule, schedule_orders
from ttforge.ir.tt import TTShape
from ttforge.model.layers import TTLinear, apply_schedule


def _plans(shape: TTShape, chunk: int, backward_chunk):
    for groups in fast._partitions(shape.d):
        merged = fast._merged_shape(shape, groups)
        for order in schedule_orders(merged.d):
            yield fast.FastPlan(groups, ContractionSchedule.from_order(merged, order), chunk, 0.0,
                                backward_chunk)


@pytest.mark.parametrize("loop_call", [0, 10 ** 12], ids=["per-sample-loop", "bmm-and-sum"])
@pytest.mark.parametrize("chunk,backward_chunk", [(0, None), (0, 2), (3, 1), (3, 0)],
                         ids=["kept", "kept-sliced", "recomputed-small", "recomputed-whole"])
def test_every_backward_route_equals_the_schedule(monkeypatch, one_thread, loop_call, chunk,
                                                  backward_chunk):
    monkeypatch.setattr(fast, "_LOOP_CALL", loop_call)
    torch.manual_seed(5)
    layer = TTLinear(30, 20, ranks=[3, 4], in_modes=[2, 3, 5], out_modes=[2, 2, 5]).double()
    x = torch.randn(7, 30, dtype=torch.float64)
    gy = torch.randn(7, 20, dtype=torch.float64)
    cores = [c.detach().clone().requires_grad_() for c in layer.cores]
    xr = x.clone().requires_grad_()
    apply_schedule(xr, cores, layer.schedule).backward(gy)
    ref = [xr.grad] + [c.grad for c in cores]
    seen = set()
    for plan in _plans(layer.tt_shape, chunk, backward_chunk):
        steps = plan.schedule.steps
        seen |= {("wide", fast._wide(s)) for s in steps if s.Q == 1}
        seen |= {("loop", fast._loops(s)) for s in steps if s.Q > 1}
        assert fast._keep(plan, 7) == (chunk == 0)
        cs = [c.detach().clone().requires_grad_() for c in cores]
        xf = x.clone().requires_grad_()
        fast.tt_apply(xf, cs, plan).backward(gy)
        for got, want in zip([xf.grad] + [c.grad for c in cs], ref):
            assert torch.allclose(got, want, atol=1e-11, rtol=0), plan.describe()
    # both orientations of a flat step's gradient and the route chosen for this test ran
    assert {("wide", True), ("wide", False), ("loop", loop_call == 0)} <= seen


def test_a_corrupted_backward_route_is_caught(monkeypatch, one_thread):
    """The comparison above can fail: a per-sample loop that skips the last sample of
    each chunk gives a different core gradient."""
    torch.manual_seed(5)
    layer = TTLinear(30, 20, ranks=[3, 4], in_modes=[2, 3, 5], out_modes=[2, 2, 5]).double()
    x = torch.randn(7, 30, dtype=torch.float64)
    plan = next(p for p in _plans(layer.tt_shape, 3, 2) if any(s.Q > 1 for s in p.schedule.steps))
    real = fast._addmm
    calls = []

    def skipping(acc, a, b):
        calls.append(1)
        return real(acc, a, b) if len(calls) % 2 or acc is None else acc

    def grads():
        cs = [c.detach().clone().requires_grad_() for c in layer.cores]
        fast.tt_apply(x, cs, plan).sum().backward()
        return [c.grad for c in cs]

    monkeypatch.setattr(fast, "_LOOP_CALL", 0)
    good = grads()
    monkeypatch.setattr(fast, "_addmm", skipping)
    bad = grads()
    assert calls and not all(torch.allclose(a, b) for a, b in zip(good, bad))


def test_the_backward_uses_chunks_no_larger_than_the_forward():
    shape = TTShape((8, 8, 8, 8), (8, 8, 8, 8), 16)
    plan = fast.plan_for(shape, 256, threads=1)
    assert 0 < plan.backward_chunk <= plan.chunk < 256
    assert plan.backward_chunk * plan.per_sample_intermediate <= fast.BACKWARD_CHUNK_ELEMENTS
    assert plan.describe()["backward_chunk"] == plan.backward_chunk
    small = fast.plan_for(shape, 1, threads=1)
    assert small.backward_chunk == 0  # one sample: the whole batch at once


@pytest.mark.parametrize("loop_call", [0, 10 ** 12], ids=["per-sample-loop", "bmm-and-sum"])
def test_gradcheck_float64_with_sliced_kept_and_recomputed_chunks(monkeypatch, one_thread, loop_call):
    monkeypatch.setattr(fast, "_LOOP_CALL", loop_call)
    torch.manual_seed(6)
    layer = TTLinear(30, 20, ranks=[2, 3], in_modes=[2, 3, 5], out_modes=[1, 4, 5]).double()
    x = torch.randn(3, 30, dtype=torch.float64, requires_grad=True)
    cores = [c.detach().clone().requires_grad_() for c in layer.cores]
    for chunk, backward_chunk in ((0, 2), (2, 1)):
        # one plan with a step over samples (the route under test) per chunking
        plan = next(p for p in _plans(layer.tt_shape, chunk, backward_chunk)
                    if any(s.Q > 1 for s in p.schedule.steps))
        f = lambda x, *cs: fast.tt_apply(x, cs, plan)  # noqa: E731
        assert torch.autograd.gradcheck(f, (x, *cores)), plan.describe()


@pytest.mark.parametrize("plain", [False, True], ids=["custom-backward", "plain-operations"])
@pytest.mark.parametrize("in_modes,out_modes,ranks,batch", [
    ([256], [256], [], 8),                      # one core: its own dense weight
    ([16, 16], [16, 16], [4], 8),               # one group of two cores, rebuilt
    ([4, 8, 4, 8], [4, 8, 4, 8], [8, 8, 8], 64),  # merged pairs
    ([2, 3, 5], [2, 2, 5], [3, 4], 7),          # a small layer
], ids=["one-core", "one-group", "merged-pairs", "small"])
def test_gradients_accumulate_over_calls(monkeypatch, one_thread, plain, in_modes, out_modes,
                                         ranks, batch):
    """Two backward passes into the same ``.grad`` give the sum of their gradients (as
    ``nn.Linear``'s do), and a gradient taken from one call is not changed by the next:
    no gradient is a view of a work buffer that a later call writes (a one-core
    layer's was, so a second backward doubled the new gradient instead of adding)."""
    monkeypatch.setattr(fast, "PLAIN_WHEN_KEPT", plain)
    torch.manual_seed(11)
    layer = TTLinear(math.prod(in_modes), math.prod(out_modes), ranks=ranks, in_modes=in_modes,
                     out_modes=out_modes)
    xs = [torch.randn(batch, layer.in_features, requires_grad=True) for _ in range(2)]
    params = [*layer.cores, layer.bias]
    alone = []
    for x in xs:
        layer.zero_grad(set_to_none=True)
        layer(x).square().sum().backward()
        alone.append([p.grad for p in params])
    for first, again in zip(alone[0], alone[1]):
        assert not torch.equal(first, again)  # two different gradients, not one buffer
    kept = [g.clone() for g in alone[0]]
    layer.zero_grad(set_to_none=True)
    for x in xs:
        layer(x).square().sum().backward()
    for p, a, b in zip(params, *alone):
        assert torch.equal(p.grad, a + b)
    for a, k in zip(alone[0], kept):
        assert torch.equal(a, k)
