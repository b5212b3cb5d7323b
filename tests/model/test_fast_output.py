"""What the fast path hands back is an ordinary tensor: an in-place op on it (``y.relu_()``,
a following ``nn.ReLU(inplace=True)``) works under autograd as on ``nn.Linear``'s output
(the custom Functions returned a view of their last product, which autograd refuses to
modify in place), and a complex layer is refused in one line (its forward was right, its
gradients silently wrong: the hand-written backwards do not conjugate)."""

import pytest
import torch
from torch import nn

import ttforge.model.fast as fast
from ttforge.errors import ConfigError
from ttforge.ir.schedule import ContractionSchedule, schedule_orders
from ttforge.model.layers import TTLinear, apply_schedule


def _plans(shape, chunk):
    for groups in fast._partitions(shape.d):
        merged = fast._merged_shape(shape, groups)
        for order in schedule_orders(merged.d):
            yield fast.FastPlan(groups, ContractionSchedule.from_order(merged, order), chunk, 0.0, None)


@pytest.mark.parametrize("chunk", [0, 3], ids=["whole", "chunked"])
@pytest.mark.parametrize("bias", [False, True])
def test_in_place_ops_on_the_output_give_the_reference_gradients(one_thread, chunk, bias):
    torch.manual_seed(3)
    layer = TTLinear(30, 20, ranks=[3, 4], in_modes=[2, 3, 5], out_modes=[2, 2, 5], bias=bias).double()
    x = torch.randn(7, 30, dtype=torch.float64)
    gy = torch.randn(7, 20, dtype=torch.float64)
    b = layer.bias.detach() if bias else None
    cores = [c.detach().clone().requires_grad_() for c in layer.cores]
    xr = x.clone().requires_grad_()
    y_ref = apply_schedule(xr, cores, layer.schedule)
    torch.relu((y_ref if b is None else y_ref + b) * 2).backward(gy)
    ref = [xr.grad] + [c.grad for c in cores]
    for plan in _plans(layer.tt_shape, chunk):
        cs = [c.detach().clone().requires_grad_() for c in layer.cores]
        xs = x.clone().requires_grad_()
        y = fast.tt_apply(xs, cs, plan, bias=b)
        assert y._base is None, plan.describe()
        y.mul_(2).relu_()
        y.backward(gy)
        for got, want in zip([xs.grad] + [c.grad for c in cs], ref):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("batch", [1, 64, 256])
def test_a_layer_followed_by_an_in_place_relu_trains(one_thread, batch):
    """The common pattern the view broke: ``nn.Sequential(TTLinear, nn.ReLU(inplace=True))``."""
    torch.manual_seed(0)
    net = nn.Sequential(TTLinear(512, 512, 16), nn.ReLU(inplace=True), nn.Linear(512, 10))
    x = torch.randn(batch, 512)
    net(x).sum().backward()
    ref = nn.Sequential(TTLinear(512, 512, 16), nn.ReLU(), nn.Linear(512, 10))
    ref.load_state_dict(net.state_dict())
    ref.zero_grad()
    ref(x).sum().backward()
    for (name, p), q in zip(net.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_a_complex_layer_is_one_line(dtype):
    with pytest.raises(ConfigError, match="TT layers are real"):
        TTLinear(16, 16, 2, dtype=dtype)
    layer = TTLinear(16, 16, 2).to(dtype)
    with pytest.raises(ConfigError, match="TT layers are real"):
        layer(torch.randn(4, 16, dtype=dtype))
    with pytest.raises(ConfigError, match="tt_apply's cores"):
        fast.tt_apply(torch.randn(4, 16, dtype=dtype), list(layer.cores))


def test_sibling_real_dtypes_are_taken():
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        layer = TTLinear(16, 16, 2, dtype=dtype)
        assert layer(torch.randn(4, 16, dtype=dtype)).dtype == dtype
