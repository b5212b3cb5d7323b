"""fake_quant (the QAT rounding with its straight-through gradient) under torch.func
transforms and forward-mode AD: the same values as a plain call, bit for bit, and the
straight-through derivative (1 inside the range, 0 where it saturates)."""

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import grad, jvp, vmap

from ttforge.quant import fake_quant


def _values():
    torch.manual_seed(0)
    # inside the 4-bit range at exponent -3 ([-1, 0.875]) and beyond it on both sides,
    # plus the rounding ties
    return torch.cat([torch.randn(3, 40), torch.tensor([[-3.0, 2.0, 0.0625, -0.0625] * 10])])


def test_vmap_equals_the_plain_call_bit_for_bit():
    x = _values()
    got = vmap(lambda v: fake_quant(v, 4, -3))(x)
    assert np.array_equal(got.numpy(), fake_quant(x, 4, -3).numpy())


def test_per_sample_straight_through_gradients():
    x = _values()
    g = vmap(grad(lambda v: fake_quant(v, 4, -3).sum()))(x)
    inside = (x * 8 >= -8.5) & (x * 8 < 7.5)  # floor(v + 1/2) within [-8, 7]
    assert np.array_equal(g.numpy(), inside.double().numpy())
    xr = x.clone().requires_grad_()
    fake_quant(xr, 4, -3).sum().backward()
    assert np.array_equal(g.numpy(), xr.grad.numpy())


def test_forward_mode_tangents_pass_straight_through_inside_the_range():
    x = _values()
    t = torch.randn_like(x)
    y, ty = jvp(lambda v: fake_quant(v, 4, -3), (x,), (t,))
    assert np.array_equal(y.numpy(), fake_quant(x, 4, -3).numpy())
    inside = (x * 8 >= -8.5) & (x * 8 < 7.5)
    assert np.array_equal(ty.numpy(), torch.where(inside, t, torch.zeros_like(t)).numpy())
    with fwAD.dual_level():
        tangent = fwAD.unpack_dual(fake_quant(fwAD.make_dual(x, t), 4, -3)).tangent
    assert np.array_equal(tangent.numpy(), ty.numpy())
