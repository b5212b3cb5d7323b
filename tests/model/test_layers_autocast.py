"""TTLinear under autocast behaves as nn.Linear does: the products in autocast's lower
precision, that dtype out, float32 gradients for the float32 parameters (before, the
fast path's one-group backward mixed bfloat16 and float32 and raised)."""

import pytest
import torch
from torch import nn

from ttforge.model.layers import TTLinear

LAYERS = {
    "784x512 r16": dict(in_features=784, out_features=512, ranks=16, in_modes=[7, 4, 7, 4],
                        out_modes=[4, 8, 4, 4]),
    "1024x1024 r8": dict(in_features=1024, out_features=1024, ranks=8, in_modes=[4, 8, 8, 4],
                         out_modes=[4, 8, 8, 4]),
    "1000x300 padded": dict(in_features=1000, out_features=300, ranks=8),
}


def _layer(name: str, impl: str) -> TTLinear:
    torch.manual_seed(0)
    return TTLinear(**LAYERS[name], impl=impl)


@pytest.mark.parametrize("impl", ["fast", "schedule"])
@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("batch", [1, 8, 256])
def test_bfloat16_autocast_like_nn_linear(name, impl, batch):
    layer = _layer(name, impl)
    dense = nn.Linear(layer.in_features, layer.out_features)
    x = torch.randn(batch, layer.in_features, generator=torch.Generator().manual_seed(1))
    want = layer(x).detach()
    xg = x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(xg)
        with torch.no_grad():
            y_inference = layer(x)
        dense_dtype = dense(x).dtype
    assert y.dtype == y_inference.dtype == dense_dtype == torch.bfloat16
    rel = ((y.float() - want).norm() / want.norm()).item()
    assert rel < 3e-2  # a bfloat16 product: 8 bits of mantissa
    assert ((y_inference.float() - want).norm() / want.norm()).item() < 3e-2
    y.float().square().sum().backward()
    assert xg.grad.dtype == torch.float32 and torch.isfinite(xg.grad).all()
    for p in layer.parameters():
        assert p.dtype == torch.float32 and p.grad.dtype == torch.float32
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_autocast_gradients_near_float32_gradients():
    layer = _layer("784x512 r16", "fast")
    x = torch.randn(256, 784, generator=torch.Generator().manual_seed(2))
    layer(x).square().sum().backward()
    want = [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    y.float().square().sum().backward()
    for p, w in zip(layer.parameters(), want):
        assert ((p.grad - w).norm() / w.norm()).item() < 5e-2


def test_float64_layer_is_not_cast():
    layer = _layer("784x512 r16", "fast").double()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(torch.randn(4, 784, dtype=torch.float64))
    assert y.dtype == torch.float64


def test_outside_autocast_nothing_changes():
    layer = _layer("784x512 r16", "fast")
    x = torch.randn(16, 784)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=False):
        assert layer(x).dtype == torch.float32
    assert torch.equal(layer(x), layer(x))


@pytest.mark.parametrize("batch", [1, 256])
def test_the_functions_follow_autocast_too(batch):
    from ttforge.model.layers import apply_schedule, tt_apply

    layer = _layer("784x512 r16", "fast")
    cores = list(layer.cores)
    x = torch.randn(batch, 784, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ys = [tt_apply(x, cores), tt_apply(x, cores, bias=layer.bias), apply_schedule(x, cores, layer.schedule)]
    for y in ys:
        assert y.dtype == torch.bfloat16
    sum(y.float().sum() for y in ys).backward()
    assert x.grad.dtype == torch.float32 and all(c.grad.dtype == torch.float32 for c in cores)


@pytest.mark.parametrize("impl", ["fast", "schedule"])
@pytest.mark.parametrize("name", ["784x512 r16", "1000x300 padded"])
def test_a_layer_without_bias_under_autocast(name, impl):
    torch.manual_seed(0)
    layer = TTLinear(**LAYERS[name], impl=impl, bias=False)
    x = torch.randn(8, layer.in_features, generator=torch.Generator().manual_seed(1))
    want = layer(x).detach()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16
    assert ((y.float() - want).norm() / want.norm()).item() < 3e-2


@pytest.mark.parametrize("impl", ["fast", "schedule"])
@pytest.mark.parametrize("batch", [3, 300])  # 300: the fast path's chunked batch
def test_a_layer_already_in_autocasts_dtype_takes_a_float32_input(impl, batch):
    """A bfloat16 layer given float32 x under bfloat16 autocast: as ``nn.Linear``,
    bfloat16 out and a float32 ``x.grad`` (x was not cast and autocast stayed on inside,
    so the fast path's float32 work buffers met bfloat16 products and raised)."""
    layer = _layer("784x512 r16", impl).to(torch.bfloat16)
    x = torch.randn(batch, 784, generator=torch.Generator().manual_seed(3))
    want = layer(x.to(torch.bfloat16)).float()
    xg = x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(xg)
        with torch.no_grad():
            y_inference = layer(x)
    assert y.dtype == y_inference.dtype == torch.bfloat16
    for got in (y, y_inference):
        assert ((got.float() - want).norm() / want.norm()).item() < 3e-2
    y.float().square().sum().backward()
    assert xg.grad.dtype == torch.float32 and torch.isfinite(xg.grad).all()
    for p in layer.parameters():
        assert p.grad.dtype == torch.bfloat16 and torch.isfinite(p.grad).all()


@pytest.mark.parametrize("impl", ["fast", "schedule"])
@pytest.mark.parametrize("name", ["784x512 r16", "1000x300 padded"])
def test_a_bias_not_in_autocasts_dtype_is_cast_too(name, impl):
    """Cores and x in autocast's dtype, a float32 bias: the bias is cast as nn.Linear's
    would be, and the output stays in autocast's dtype (it was added uncast: float32 out)."""
    layer = _layer(name, impl).to(torch.bfloat16)
    layer.bias = nn.Parameter(layer.bias.detach().float())
    x = torch.randn(300, layer.in_features, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16
