"""torch.compile of the fast path (ttforge.model.fast.compiled): each TT layer is one
opaque operation of the graph (``ttforge::tt_apply``, its backward
``ttforge::tt_apply_backward``), so a network compiles as one graph with no break, takes
any batch size without recompiling, and gives the function and gradients of the
hardware-order path (its own code, not the operation's)."""

import math
import shutil

import pytest
import torch
from torch import nn

import ttforge.model.fast as fast
from ttforge.errors import ShapeError
from ttforge.ir.schedule import ContractionSchedule
from ttforge.model.layers import TTLinear, apply_schedule

LAYERS = {
    "small": dict(in_features=30, out_features=20, ranks=3, in_modes=[2, 3, 5], out_modes=[2, 2, 5]),
    "rebuilt": dict(in_features=784, out_features=512, ranks=16, in_modes=[7, 4, 7, 4],
                    out_modes=[4, 8, 4, 4]),
    "merged-pairs": dict(in_features=1024, out_features=1024, ranks=8, in_modes=[4, 8, 4, 8],
                         out_modes=[4, 8, 4, 8]),
    "one-core": dict(in_features=256, out_features=256, ranks=[], in_modes=[256], out_modes=[256]),
    "padded": dict(in_features=29, out_features=17, ranks=3, in_modes=[2, 3, 5], out_modes=[2, 2, 5]),
}


@pytest.fixture(autouse=True)
def fresh_dynamo(custom_backward, monkeypatch):
    """A fresh dynamo, and the fast path's routes as users get them (conftest's
    custom_backward turns the plain ones off for the other fast-path tests)."""
    monkeypatch.setattr(fast, "PLAIN_WHEN_KEPT", True)
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def threads(request):
    """Torch's thread count: with one, a small weight is plain operations in the graph
    (as an eager call's); with two, where the fast path tunes its threads, it is the
    operation too."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


def _operation(layer: TTLinear, threads: int) -> bool:
    """Whether the compiled graph holds ``layer`` as the opaque operation (with more than
    one thread the fast path tunes its threads, unless deterministic algorithms are on)."""
    assert fast._tunes() == (threads > 1 and not torch.are_deterministic_algorithms_enabled())
    return fast._tunes() or layer.tt_shape.in_size * layer.tt_shape.out_size > fast.PLAIN_DENSE


def _layer(name: str, seed: int = 3) -> TTLinear:
    torch.manual_seed(seed)
    return TTLinear(**LAYERS[name]).double()


def _reference(layer: TTLinear, x: torch.Tensor, gy: torch.Tensor):
    """Output and gradients (x, bias, cores) through the hardware-order path."""
    x = x.detach().clone().requires_grad_()
    cores = [c.detach().clone().requires_grad_() for c in layer.cores]
    bias = layer.bias.detach().clone().requires_grad_()
    xp = nn.functional.pad(x, (0, layer.tt_shape.in_size - layer.in_features))
    y = apply_schedule(xp, cores, layer.schedule)[:, :layer.out_features] + bias
    y.backward(gy)
    return [y.detach(), x.grad, bias.grad, *(c.grad for c in cores)]


def _run(module, layer: TTLinear, x: torch.Tensor, gy: torch.Tensor):
    layer.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    y = module(x)
    y.backward(gy)
    return [y.detach(), x.grad, layer.bias.grad, *(c.grad for c in layer.cores)]


def _plans_run(monkeypatch) -> list:
    """The plans the compiled operations run, as they run them."""
    seen = []
    real = fast._op_plan

    def spy(x, cores, spec):
        plan = real(x, cores, spec)
        seen.append(plan)
        return plan

    monkeypatch.setattr(fast, "_op_plan", spy)
    return seen


def test_a_network_compiles_to_one_graph_with_an_operation_per_tt_layer(threads):
    torch.manual_seed(0)
    net = nn.Sequential(TTLinear(784, 512, 16, in_modes=[7, 4, 7, 4], out_modes=[4, 8, 4, 4]),
                        nn.ReLU(), TTLinear(512, 10, 4))
    explained = torch._dynamo.explain(net)(torch.randn(32, 784))
    assert (explained.graph_count, explained.graph_break_count) == (1, 0)
    code = explained.graphs[0].code
    assert code.count("torch.ops.ttforge.tt_apply.default") == sum(_operation(m, threads) for m in net[::2])
    assert ("torch.mm(" in code or "matmul" in code) == (not fast._tunes())  # the small layer's product


@pytest.mark.parametrize("name", list(LAYERS))
def test_compiled_layer_gives_the_hardware_order_function_and_gradients(name, monkeypatch, threads):
    """Every batch size after the first runs the same graph (a recompile fails), on the
    plan picked for that batch, and equals the hardware order; in eval mode under
    no_grad too."""
    layer = _layer(name)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True, dynamic=True)
    plans = _plans_run(monkeypatch)
    batches = [7, 256, 33, 2]
    for i, batch in enumerate(batches):
        torch.manual_seed(batch)
        x = torch.randn(batch, layer.in_features, dtype=torch.float64)
        gy = torch.randn(batch, layer.out_features, dtype=torch.float64)
        with torch.compiler.set_stance("fail_on_recompile" if i else "default"):
            got = _run(compiled, layer, x, gy)
            with torch.no_grad():
                inference = compiled(x)
        want = _reference(layer, x, gy)
        for g, w in zip(got + [inference], want + [want[0]]):
            assert g.shape == w.shape and torch.allclose(g, w, atol=1e-10, rtol=1e-10)
    # forward, backward and inference of each batch, each on its batch's plan
    shape = layer.tt_shape
    if not _operation(layer, threads):
        assert plans == []  # plain operations
        return
    assert plans == [fast.plan_for(shape, b) for b in batches for _ in range(3)]
    if name == "rebuilt":  # its batches' plans differ (small ones merge pairs): each is the one run
        assert len({p.groups for p in plans}) > 1


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                    reason="inductor's CPU code needs a C++ compiler")
def test_inductor_compiles_a_network_with_the_eager_function_and_gradients():
    torch.manual_seed(1)
    net = nn.Sequential(TTLinear(784, 512, 16, in_modes=[7, 4, 7, 4], out_modes=[4, 8, 4, 4]),
                        nn.ReLU(), TTLinear(512, 10, 4)).double()
    x = torch.randn(64, 784, dtype=torch.float64)
    results = []
    for module in (torch.compile(net, fullgraph=True), net):
        net.zero_grad(set_to_none=True)
        y = module(x)
        y.square().sum().backward()
        results.append([y.detach(), *(p.grad for p in net.parameters())])
    for a, b in zip(*results):
        assert torch.allclose(a, b, atol=1e-10, rtol=1e-10)


def test_an_explicit_plan_is_the_one_run(monkeypatch):
    layer = _layer("rebuilt")
    shape, cores = layer.tt_shape, list(layer.cores)
    default = fast.plan_for(shape, 16)
    groups = ((0, 1), (1, 2), (2, 3), (3, 4))
    assert default.groups != groups
    merged = fast._merged_shape(shape, groups)
    plan = fast.FastPlan(groups, ContractionSchedule.from_order(merged, (3, 2, 1, 0)), 5, 0.0, 3)
    plans = _plans_run(monkeypatch)
    compiled = torch.compile(lambda x: fast.tt_apply(x, cores, plan, bias=layer.bias),
                             backend="aot_eager", fullgraph=True)
    x = torch.randn(16, 784, dtype=torch.float64)
    gy = torch.randn(16, 512, dtype=torch.float64)
    got = _run(compiled, layer, x, gy)
    assert plans == [plan, plan]
    for g, w in zip(got, _reference(layer, x, gy)):
        assert torch.allclose(g, w, atol=1e-10, rtol=1e-10)


def test_bad_operands_get_the_eager_one_line_errors():
    layer = _layer("small")
    cores = list(layer.cores)
    with pytest.raises(ShapeError, match=r"input has 31 features; this TTLinear takes 30"):
        torch.compile(layer, backend="aot_eager")(torch.randn(4, 31, dtype=torch.float64))
    apply = torch.compile(lambda x, b: fast.tt_apply(x, cores, bias=b), backend="aot_eager")
    with pytest.raises(ShapeError, match=r"^x has shape \(4, 31\); these cores take \(batch, 30\)$"):
        apply(torch.randn(4, 31, dtype=torch.float64), None)
    with pytest.raises(ShapeError, match=r"^bias has shape \(21,\); these cores give 20 outputs"):
        apply(torch.randn(4, 30, dtype=torch.float64), torch.zeros(21, dtype=torch.float64))


def test_an_empty_batch_gives_zero_gradients():
    layer = _layer("merged-pairs")
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    x = torch.randn(0, 1024, dtype=torch.float64, requires_grad=True)
    y = compiled(x)
    assert y.shape == (0, 1024)
    y.sum().backward()
    assert x.grad.shape == (0, 1024)
    for p in layer.parameters():
        assert p.grad.shape == p.shape and not p.grad.any()


def test_weights_changed_between_compiled_calls_are_used():
    """The compiled operation keeps no merged matrices between calls (no merge cache
    whose staleness a graph could hide): an optimizer step and an in-place change
    through ``.data`` are both seen."""
    layer = _layer("rebuilt")
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    x = torch.randn(64, 784, dtype=torch.float64)
    opt = torch.optim.SGD(layer.parameters(), lr=0.01)
    for change in (lambda: (compiled(x).sum().backward(), opt.step()),
                   lambda: layer.cores[2].data.mul_(-2.0)):
        with torch.no_grad():
            before = compiled(x)
        change()
        with torch.no_grad():
            after = compiled(x)
        want = _reference(layer, x, torch.zeros_like(before))[0]
        assert not torch.allclose(before, after)
        assert torch.allclose(after, want, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("threads", [2], indirect=True)
def test_a_corrupted_backward_operation_is_caught(monkeypatch, threads):
    """The gradient comparisons above can fail: a backward that drops the last sample's
    contribution to the core gradients differs from the hardware order."""
    layer = _layer("small")
    real = fast._backward_buffered

    def corrupted(x, gy, *rest):
        gy = gy.clone()
        gy[-1] = 0
        return real(x, gy, *rest)

    monkeypatch.setattr(fast, "_backward_buffered", corrupted)
    x = torch.randn(5, 30, dtype=torch.float64)
    gy = torch.randn(5, 20, dtype=torch.float64)
    got = _run(torch.compile(layer, backend="aot_eager"), layer, x, gy)
    want = _reference(layer, x, gy)
    assert torch.allclose(got[0], want[0], atol=1e-10, rtol=1e-10)
    assert not all(torch.allclose(g, w, atol=1e-10, rtol=1e-10) for g, w in zip(got[3:], want[3:]))
    assert math.isfinite(float(got[3].sum()))


def test_the_backward_takes_the_forwards_intermediates_and_inference_keeps_none(monkeypatch):
    """A small batch keeps its intermediates for the backward, as an eager call does,
    and the backward takes them (none are left, none recomputed); a call under
    no_grad keeps none; a forward whose backward never runs leaves at most
    COMPILED_KEPT_BYTES."""
    layer = _layer("merged-pairs")
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    x = torch.randn(8, 1024, dtype=torch.float64)
    plan = fast.plan_for(layer.tt_shape, 8)
    assert len(plan.groups) > 1 and fast._keep(plan, 8)
    recomputed = []
    real = fast._backward_buffered
    monkeypatch.setattr(fast, "_backward_buffered",
                        lambda *a, **k: (recomputed.append(a[6] is None), real(*a, **k))[1])
    fast.clear_workspace()
    compiled(x).sum().backward()  # one call, or one a part of the split backward
    assert recomputed and not any(recomputed) and len(fast._KEPT) == 0
    with torch.no_grad():
        compiled(x)
    assert len(fast._KEPT) == 0
    y = compiled(x)  # a forward without backward
    one = fast._KEPT.nbytes
    assert len(fast._KEPT) == 1 and one == 8 * sum(s.out_elements for s in plan.schedule.steps[:-1]) * 8
    monkeypatch.setattr(fast, "COMPILED_KEPT_BYTES", 3 * one)
    xs = [torch.randn(8, 1024, dtype=torch.float64) for _ in range(6)]  # alive: other addresses
    for other in xs:
        compiled(other)
        assert fast._KEPT.nbytes <= 3 * one
    assert len(fast._KEPT) == 3
    y.sum().backward()  # its intermediates were forgotten: recomputed
    assert recomputed[-1] is True


@pytest.mark.parametrize("threads", [2], indirect=True)
def test_the_merges_kept_for_compiled_calls_are_bounded(monkeypatch, threads):
    """Merged matrices kept between compiled calls, over many layers, stay within
    COMPILED_CACHE_BYTES (least recently used forgotten first), and a layer whose
    merges were forgotten still gives its function."""
    fast.clear_workspace()
    layers = [_layer("small", seed=s) for s in range(8)]
    one = fast._CORE_CACHES
    with torch.no_grad():
        torch.compile(layers[0], backend="aot_eager")(torch.randn(4, 30, dtype=torch.float64))
    per_layer = one.nbytes
    assert per_layer > 0
    monkeypatch.setattr(fast, "COMPILED_CACHE_BYTES", 3 * per_layer)
    x = torch.randn(4, 30, dtype=torch.float64)
    for layer in layers:
        compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
        with torch.no_grad():
            y = compiled(x)
        assert one.nbytes <= 3 * per_layer
        assert torch.allclose(y, _reference(layer, x, torch.zeros_like(y))[0], atol=1e-10, rtol=1e-10)
    assert len(one._caches) == 3


def test_autocast_runs_the_compiled_layer_in_its_dtype(threads):
    """Under ``torch.autocast`` a compiled network computes in autocast's dtype and keeps
    float32 gradients, as the eager one does (bfloat16: the two agree to its rounding)."""
    torch.manual_seed(2)
    net = nn.Sequential(TTLinear(784, 512, 16, in_modes=[7, 4, 7, 4], out_modes=[4, 8, 4, 4]),
                        nn.ReLU(), TTLinear(512, 10, 4))
    x = torch.randn(64, 784)
    results = []
    for module in (torch.compile(net, backend="aot_eager", fullgraph=True), net):
        net.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = module(x)
        y.float().square().sum().backward()
        results.append([y, *(p.grad for p in net.parameters())])
    assert results[0][0].dtype == results[1][0].dtype == torch.bfloat16
    for a, b in zip(*results):
        assert a.dtype == b.dtype and torch.allclose(a.float(), b.float(), rtol=0.05, atol=0.05 * float(b.abs().max()))
    assert {g.dtype for g in results[0][1:]} == {torch.float32}


def test_autocast_casts_the_input_of_a_layer_already_in_its_dtype(threads):
    """A bfloat16 network given float32 x under bfloat16 autocast, compiled: as eager and
    ``nn.Linear``, bfloat16 out and a float32 ``x.grad``."""
    torch.manual_seed(2)
    net = nn.Sequential(TTLinear(784, 512, 16, in_modes=[7, 4, 7, 4], out_modes=[4, 8, 4, 4]),
                        nn.ReLU(), TTLinear(512, 10, 4)).to(torch.bfloat16)
    x = torch.randn(64, 784)
    results = []
    for module in (torch.compile(net, backend="aot_eager", fullgraph=True), net):
        xg = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = module(xg)
        y.float().square().sum().backward()
        results.append((y.detach(), xg.grad))
    for y, gx in results:
        assert y.dtype == torch.bfloat16 and gx.dtype == torch.float32
    assert torch.allclose(results[0][0].float(), results[1][0].float(), rtol=0.05,
                          atol=0.05 * float(results[1][0].abs().max()))
