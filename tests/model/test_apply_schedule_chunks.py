"""apply_schedule's batch-innermost layout and batch chunking give the schedule's result."""

import pytest
import torch

import ttforge.model.layers as layers
from ttforge.model.layers import TTLinear, apply_schedule
from ttforge.ir.schedule import schedule_orders


@pytest.mark.parametrize("chunk_elements", [1 << 20, 64, 7, 1])
def test_every_order_and_batch_size_matches_the_dense_weight(monkeypatch, chunk_elements):
    monkeypatch.setattr(layers, "_CHUNK_ELEMENTS", chunk_elements)
    torch.manual_seed(0)
    layer = TTLinear(30, 20, ranks=[3, 4], in_modes=[2, 3, 5], out_modes=[2, 2, 5],
                     impl="schedule").double()
    for batch in (0, 1, 5, 37):
        x = torch.randn(batch, 30, dtype=torch.float64)
        ref = x @ layer.to_dense().T + layer.bias
        for order in schedule_orders(3):
            layer._set_schedule(order)
            y = layer(x)
            assert y.shape == (batch, 20) and y.is_contiguous()
            assert torch.allclose(y, ref, atol=1e-12, rtol=0), (batch, order)


@pytest.mark.parametrize("chunk_elements", [1 << 20, 16])
def test_first_and_second_derivatives_when_chunked(monkeypatch, chunk_elements):
    monkeypatch.setattr(layers, "_CHUNK_ELEMENTS", chunk_elements)
    torch.manual_seed(1)
    layer = TTLinear(12, 6, ranks=[2, 3], in_modes=[2, 3, 2], out_modes=[1, 3, 2],
                     schedule=[1, 0, 2]).double()
    x = torch.randn(5, 12, dtype=torch.float64, requires_grad=True)
    cores = [c.detach().clone().requires_grad_() for c in layer.cores]
    f = lambda x, *cs: apply_schedule(x, cs, layer.schedule)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, *cores))
    assert torch.autograd.gradgradcheck(f, (x, *cores))


def test_empty_batch_backward():
    layer = TTLinear(16, 8, ranks=2, in_modes=[4, 4], out_modes=[2, 4])
    x = torch.randn(0, 16, requires_grad=True)
    layer(x).sum().backward()
    assert x.grad.shape == (0, 16)
