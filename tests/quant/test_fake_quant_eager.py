"""fake_quant's eager paths (in place, and :class:`_FakeQuantSTE` under autograd) give
the plain operations' values and straight-through gradients bit for bit: the plain
operations are what compiled, captured and transformed calls run, and what the QAT
model's exactness against the integer executor was first proven with."""

import copy

import numpy as np

import pytest
import torch
from torch import nn

from ttforge.model import fast
from ttforge.model.layers import TTLinear
from ttforge.quant import calibrate, fake_quant, quantize_model


def _plain(monkeypatch, *args):
    """``fake_quant(*args)`` through its plain operations."""
    with monkeypatch.context() as m:
        m.setattr(fast, "plain_ops_only", lambda: True)
        return fake_quant(*args)


def _inputs(dtype, bits, exp, narrow):
    """Random values over and beyond the range, and the edges: the range's ends, the
    rounding ties around them and inside, zero, tiny and huge values."""
    torch.manual_seed(bits + 7 * exp)
    hi = 2.0 ** (bits - 1) - 1
    lo = -hi if narrow else -hi - 1
    edges = [lo, hi, lo - 0.5, hi + 0.5, lo - 0.25, hi + 0.25, lo + 0.5, hi - 0.5, 0.5, -0.5, 1.5,
             -1.5, 0.0, -0.0, 1e-30, -1e-30, 1e30, -1e30]
    scale = 2.0 ** exp
    x = torch.cat([torch.randn(500, dtype=torch.float64) * hi * 1.5, torch.tensor(edges, dtype=torch.float64)])
    return (x * scale).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bits, exp, narrow", [(2, 0, False), (4, -3, True), (8, -7, False), (8, 5, True),
                                               (16, -13, False), (32, -20, False)])
@pytest.mark.parametrize("tensor_exp", [False, True], ids=["int-exp", "tensor-exp"])
def test_eager_values_and_gradients_are_the_plain_operations(monkeypatch, dtype, bits, exp, narrow, tensor_exp):
    e = torch.tensor(exp) if tensor_exp else exp
    x = _inputs(dtype, bits, exp, narrow)
    before = x.clone()
    want = _plain(monkeypatch, x, bits, e, narrow)
    assert torch.equal(fake_quant(x, bits, e, narrow), want)  # no autograd: in place
    xs = [x.clone().requires_grad_() for _ in range(2)]
    g = torch.randn_like(x)
    got = fake_quant(xs[0], bits, e, narrow)
    assert got.grad_fn is not None and type(got.grad_fn).__name__ == "_FakeQuantSTEBackward"
    got.backward(g)
    _plain(monkeypatch, xs[1], bits, e, narrow).backward(g)
    assert torch.equal(got.detach(), want)
    assert torch.equal(xs[0].grad, xs[1].grad)
    assert torch.equal(x, before)  # the input is never written
    # the straight-through gradient: the output gradient where the rounded value is in range,
    # compared exactly (2^31 - 1 is 2^31 in float32, which is outside 32 bits)
    hi = 2.0 ** (bits - 1) - 1
    r = torch.floor(x * 2.0 ** -exp + 0.5).double()
    inside = (r >= (-hi if narrow else -hi - 1)) & (r <= hi)
    assert torch.equal(xs[0].grad, torch.where(inside, g, torch.zeros_like(g)))


def test_second_derivatives_are_the_plain_operations(monkeypatch):
    """``create_graph``: the gradient is differentiable in the output gradient, as the
    plain operations' is."""
    x = _inputs(torch.float64, 8, -4, False)
    results = []
    for plain in (False, True):
        xr = x.clone().requires_grad_()
        w = torch.linspace(-1, 1, x.numel(), dtype=torch.float64, requires_grad=True)
        with monkeypatch.context() as m:
            if plain:
                m.setattr(fast, "plain_ops_only", lambda: True)
            y = fake_quant(xr, 8, -4)
        (gx,) = torch.autograd.grad((y * w).sum(), xr, create_graph=True)
        (gw,) = torch.autograd.grad((gx ** 2).sum(), w)
        results.append((gx.detach(), gw))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    assert results[0][1].abs().sum() > 0


def test_a_quantized_networks_training_step_is_the_plain_operations(monkeypatch):
    """The 784-512-10 QAT network: loss and every parameter's gradient of a training
    step bit for bit; and a corrupted network is told apart (the sibling: one core
    value moved by more than its quantization step)."""
    torch.manual_seed(0)
    net = nn.Sequential(TTLinear(784, 512, 16, in_modes=[7, 4, 7, 4], out_modes=[4, 8, 4, 4]),
                        nn.ReLU(), TTLinear(512, 10, 4))
    q = calibrate(quantize_model(net), torch.randn(256, 784)).train()
    x, labels = torch.randn(64, 784), torch.randint(0, 10, (64,))

    def step(model, plain):
        model.zero_grad(set_to_none=True)
        with monkeypatch.context() as m:
            if plain:
                m.setattr(fast, "plain_ops_only", lambda: True)
            loss = nn.functional.cross_entropy(model(x), labels)
            loss.backward()
        return [loss.detach(), *(p.grad for p in model.parameters())]

    eager, plain = step(q, False), step(q, True)
    assert len(eager) > 2 and all(g is not None for g in eager)
    assert all(torch.equal(a, b) for a, b in zip(eager, plain))
    nudged = copy.deepcopy(q)
    with torch.no_grad():
        nudged.qlayers[0].layer.cores[1].view(-1)[5] += 0.25
    assert not all(torch.equal(a, b) for a, b in zip(step(nudged, False), plain))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_an_infinity_saturates_in_place_and_with_infinities_in_the_plain_operations(monkeypatch, dtype):
    """An infinite value, and a finite one whose ``x / 2^exp`` overflows, saturate in place
    as the integer executor's quantization does, with a zero gradient; NaN stays NaN. The
    plain operations (what a compiled eval model runs) give NaN for them (``inf - inf`` in
    the straight-through rounding) unless ``infinities`` is set, as the network's input
    quantization does: without it a compiled model's ``forward_int`` gave int64's
    minimum for an infinite input (probe D, F1)."""
    from ttforge.ir.arith import quantize

    big = torch.finfo(dtype).max
    x = torch.tensor([float("inf"), -float("inf"), float("nan"), 3.0, big, -big], dtype=dtype)
    num = [0, 1, 3, 4, 5]
    got = fake_quant(x, 8, -2)
    assert got[num].tolist() == [127 * 0.25, -128 * 0.25, 3.0, 127 * 0.25, -128 * 0.25] and got[2].isnan()
    assert (quantize(x[num].double().numpy(), 8, -2) * 0.25).tolist() == got[num].tolist()
    assert _plain(monkeypatch, x, 8, -2)[[0, 1, 2, 4, 5]].isnan().all()   # documented
    plain = _plain(monkeypatch, x, 8, -2, False, True)
    assert plain[2].isnan() and torch.equal(plain[num], got[num])
    assert torch.equal(fake_quant(x, 8, -2, False, True)[num], got[num])
    xs = [x.clone().requires_grad_() for _ in range(2)]
    fake_quant(xs[0], 8, -2).backward(torch.ones_like(x))
    _plain(monkeypatch, xs[1], 8, -2, False, True).backward(torch.ones_like(x))
    assert torch.equal(xs[0].grad, xs[1].grad) and xs[1].grad.tolist() == [0, 0, 0, 1, 0, 0]


@pytest.mark.parametrize("bits, exp, narrow", [(2, 0, False), (8, -7, True), (16, -13, False), (32, -20, False)])
def test_the_input_clamp_changes_no_finite_value_or_gradient(monkeypatch, bits, exp, narrow):
    """``infinities`` clamps ``x / 2^exp`` to ``+-2^bits`` before rounding: every value that
    rounds into the range is inside, so values and straight-through gradients are the
    plain operations' without it, the range's ends and the ties beyond them included."""
    x = _inputs(torch.float64, bits, exp, narrow)
    xs = [x.clone().requires_grad_() for _ in range(2)]
    a = _plain(monkeypatch, xs[0], bits, exp, narrow, True)
    b = _plain(monkeypatch, xs[1], bits, exp, narrow)
    assert torch.equal(a, b)
    g = torch.randn_like(x)
    a.backward(g)
    b.backward(g)
    assert torch.equal(xs[0].grad, xs[1].grad)


def _near_half_steps(exp: int) -> torch.Tensor:
    """float64 values at, just below and just above every half step ``(k + 1/2) 2^exp``
    of -300..300, and random ones with all 53 bits used."""
    half = torch.arange(-300, 300, dtype=torch.float64) + 0.5
    below = torch.nextafter(half, torch.tensor(-np.inf, dtype=torch.float64))
    above = torch.nextafter(half, torch.tensor(np.inf, dtype=torch.float64))
    torch.manual_seed(exp & 0xFFFF)
    rand = torch.rand(2000, dtype=torch.float64) * 600 - 300
    return torch.cat([half, below, above, rand]) * 2.0 ** exp


@pytest.mark.parametrize("exp", [0, -7, 9])
def test_rounding_is_the_integer_executors_next_to_half_steps(monkeypatch, exp):
    """``floor(v + 1/2)`` as ``ir.arith.quantize`` computes it, on both paths: adding the
    half first rounded ``0.49999999999999994`` (the float64 just below 1/2) up to 1."""
    from ttforge.ir.arith import quantize

    x = _near_half_steps(exp)
    want = torch.from_numpy(quantize(x.numpy(), 16, exp).astype(np.float64)) * 2.0 ** exp
    assert torch.equal(fake_quant(x, 16, exp), want)
    assert torch.equal(_plain(monkeypatch, x, 16, exp), want)
    assert fake_quant(torch.tensor([0.49999999999999994], dtype=torch.float64), 8, 0).item() == 0.0


def test_a_quantized_network_is_the_executor_on_float64_inputs_next_to_half_steps():
    """A float64 input within an ulp below a half step of the input quantization: the
    QAT model in eval mode and the integer executor agree (they did not)."""
    from ttforge.ir.executor import execute
    from ttforge.quant import compile_network

    torch.manual_seed(1)
    net = nn.Sequential(TTLinear(64, 32, 4), nn.ReLU(), TTLinear(32, 10, 2))
    q = calibrate(quantize_model(net), torch.randn(256, 64)).eval()
    e = int(q.qlayers[0].in_exp)
    k = torch.randint(-100, 100, (64, 64)).double() + 0.5
    x = torch.nextafter(k, torch.tensor(-np.inf, dtype=torch.float64)) * 2.0 ** e
    inet = compile_network(q)
    assert np.array_equal(q.forward_int(x), execute(inet, inet.quantize_input(x.numpy())))


def test_the_in_place_switch_runs_the_plain_operations_eagerly(monkeypatch):
    """``FAKE_QUANT_IN_PLACE = False`` (the bench's ``eager-plain`` run) takes the plain
    operations' path eagerly, with and without autograd, and gives the in-place values."""
    from ttforge.quant import qat

    x = _inputs(torch.float32, 8, -4, False)
    want = fake_quant(x, 8, -4)
    xs = x.clone().requires_grad_()
    assert type(fake_quant(xs, 8, -4).grad_fn).__name__ == "_FakeQuantSTEBackward"
    with monkeypatch.context() as m:
        m.setattr(qat, "FAKE_QUANT_IN_PLACE", False)
        calls = []
        m.setattr(qat, "_round_ste", lambda v: calls.append(1) or v + (qat._round_half_up(v) - v).detach())
        plain = fake_quant(xs, 8, -4)
        assert calls and type(plain.grad_fn).__name__ != "_FakeQuantSTEBackward"
        assert torch.equal(plain.detach(), want)
        with torch.no_grad():
            assert torch.equal(fake_quant(x, 8, -4), want) and len(calls) == 2


@pytest.mark.parametrize("exp", [0, -5, 3])
def test_rounding_is_the_integer_executors_where_every_value_is_an_integer(monkeypatch, exp):
    """float32 from ``2^23`` on: every value is an integer and stays itself, as in the
    executor. ``floor(v) + 1/2`` there is a tie that rounds to ``floor(v)`` for even
    values, and a 32-bit quantization of ``2^23`` gave ``2^23 + 1``."""
    from ttforge.ir.arith import quantize

    ints = [2.0 ** 23 + k for k in range(6)] + [2.0 ** 24 - 2, 2.0 ** 24, 2.0 ** 30 + 128, 2.0 ** 31 - 128]
    v = torch.tensor(ints + [-i for i in ints], dtype=torch.float32)
    x = v * 2.0 ** exp
    want = torch.from_numpy(quantize(x.double().numpy(), 32, exp).astype(np.float32)) * 2.0 ** exp
    assert torch.equal(want, x)  # the executor keeps them
    assert torch.equal(fake_quant(x, 32, exp), want)
    assert torch.equal(_plain(monkeypatch, x, 32, exp), want)
    xs = x.clone().requires_grad_()
    assert torch.equal(fake_quant(xs, 32, exp).detach(), want)
    # sibling: the executor's values with one of them one step off are told apart
    corrupted = want.clone()
    corrupted[0] += 2.0 ** exp
    assert not torch.equal(fake_quant(x, 32, exp), corrupted)
