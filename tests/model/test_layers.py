import copy
import re

import numpy as np
import pytest
import torch
from torch import nn

from ttforge.errors import ConfigError, DataError, ShapeError
from ttforge.model.layers import TTLinear, apply_schedule
from ttforge.ir.schedule import schedule_orders


def test_forward_equals_dense_weight_for_every_order():
    torch.manual_seed(0)
    layer = TTLinear(30, 20, ranks=[3, 4], in_modes=[2, 3, 5], out_modes=[2, 2, 5],
                     impl="schedule").double()
    x = torch.randn(7, 30, dtype=torch.float64)
    ref = x @ layer.to_dense().T + layer.bias
    for order in schedule_orders(3):
        layer._set_schedule(order)
        assert torch.allclose(layer(x), ref, atol=1e-12, rtol=0)


def test_padding_of_badly_factoring_sizes():
    torch.manual_seed(1)
    layer = TTLinear(13, 10, ranks=3, in_modes=None, out_modes=None).double()
    assert layer.tt_shape.in_size >= 13 and layer.tt_shape.out_size >= 10
    x = torch.randn(4, 13, dtype=torch.float64)
    assert layer.to_dense().shape == (10, 13)
    assert torch.allclose(layer(x), x @ layer.to_dense().T + layer.bias, atol=1e-12)


def test_leading_dims_are_kept():
    layer = TTLinear(16, 8, 2, in_modes=[4, 4], out_modes=[2, 4])
    assert layer(torch.randn(2, 3, 16)).shape == (2, 3, 8)


def test_gradcheck_float64():
    torch.manual_seed(2)
    layer = TTLinear(12, 6, ranks=[2, 3], in_modes=[2, 3, 2], out_modes=[1, 3, 2]).double()
    x = torch.randn(3, 12, dtype=torch.float64, requires_grad=True)
    cores = [c.detach().clone().requires_grad_() for c in layer.cores]
    assert torch.autograd.gradcheck(lambda x, *cs: apply_schedule(x, cs, layer.schedule), (x, *cores))


def test_core_gradients_equal_those_through_the_dense_weight():
    torch.manual_seed(6)
    layer = TTLinear(24, 12, ranks=[3, 2], in_modes=[2, 3, 4], out_modes=[3, 2, 2]).double()
    x = torch.randn(5, 24, dtype=torch.float64)
    grads = {}
    for impl in ("schedule", "fast"):
        layer.impl = impl
        layer.zero_grad()
        layer(x).sin().sum().backward()
        grads[impl] = [c.grad.clone() for c in layer.cores]
    layer.zero_grad()
    (x @ layer.to_dense().T + layer.bias).sin().sum().backward()
    for impl in ("schedule", "fast"):
        for a, b in zip(grads[impl], layer.cores):
            assert torch.allclose(a, b.grad, atol=1e-12, rtol=1e-10), impl


def test_variance_preserving_init():
    torch.manual_seed(3)
    for ranks in (2, 8, 16):
        var = torch.stack([
            TTLinear(256, 256, ranks, in_modes=[4, 4, 4, 4], out_modes=[4, 4, 4, 4]).to_dense().var()
            for _ in range(20)
        ]).mean()
        # target 1/256; products of Gaussians are heavy-tailed, so allow a factor ~1.5
        assert 1 / 256 / 1.5 < var < 1 / 256 * 1.5, (ranks, var)


def test_inside_a_module_trains():
    torch.manual_seed(4)
    net = nn.Sequential(TTLinear(64, 32, 4), nn.ReLU(), nn.Linear(32, 3))
    x, y = torch.randn(128, 64), torch.randint(0, 3, (128,))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_from_linear_honours_error_and_copies_bias():
    torch.manual_seed(5)
    lin = nn.Linear(48, 40)
    tt = TTLinear.from_linear(lin, rel_error=0.2)
    W = lin.weight.detach().double()
    err = torch.linalg.norm(tt.to_dense().double() - W) / torch.linalg.norm(W)
    assert err <= 0.2 + 1e-6
    assert torch.equal(tt.bias, lin.bias)
    full = TTLinear.from_linear(lin, rel_error=0.0)
    x = torch.randn(3, 48)
    assert torch.allclose(full(x), lin(x), atol=1e-5)
    capped = TTLinear.from_linear(lin, max_rank=2)
    assert max(capped.ranks) == 2


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_from_linear_keeps_the_linears_dtype_and_reports_the_stored_error(dtype):
    """The layer has the Linear's dtype (a float64 Linear became float32 cores and its
    float64 input raised) and ``decomposition_error`` is that of the cores it holds
    (2e-15 was reported for float32 cores 5e-8 off)."""
    torch.manual_seed(0)
    lin = nn.Linear(64, 32, dtype=dtype)
    tt = TTLinear.from_linear(lin, rel_error=1e-12)
    assert {p.dtype for p in tt.parameters()} == {dtype}
    W = lin.weight.detach().double()
    held = copy.deepcopy(tt).double().to_dense().detach()  # the stored cores, multiplied exactly enough
    stored = (torch.linalg.norm(held - W) / torch.linalg.norm(W)).item()
    assert tt.decomposition_error == pytest.approx(stored, rel=1e-6, abs=1e-15)
    if dtype != torch.float64:
        assert tt.decomposition_error > 1e-9  # the cores' rounding, not the SVD's
    x = torch.randn(3, 64, dtype=dtype)
    assert tt(x).dtype == dtype
    assert torch.allclose(tt(x).double(), lin(x).double(), atol=0.05 if dtype == torch.bfloat16 else 1e-5)


def test_sizes_take_integral_numbers_but_not_bools():
    """numpy integers are sizes, as for nn.Linear and the modes (they were refused as not
    positive integers); a bool is refused in one line (True passed and failed in
    factorize with 'size True cannot be factored')."""
    layer = TTLinear(np.int64(16), np.int32(4), 2)
    assert (layer.in_features, layer.out_features) == (16, 4)
    assert type(layer.in_features) is int and type(layer.out_features) is int
    assert layer(torch.randn(3, 16)).shape == (3, 4)
    for args, field in [((True, 4, 2), "in_features=True"), ((16, False, 2), "out_features=False"),
                        ((16.0, 4, 2), "in_features=16.0"), ((np.int64(0), 4, 2), "in_features=np.int64(0)")]:
        with pytest.raises(ShapeError, match=f"^{re.escape(field)} must be a positive integer$"):
            TTLinear(*args)


@pytest.mark.parametrize("impl", ["fast", "schedule"])
def test_an_input_of_another_dtype_is_one_line_naming_both(impl):
    """x of another dtype than the layer: a RuntimeError as nn.Linear's, but one line
    naming both dtypes and the fix (the hardware order said 'expected scalar type Double
    but found Float', naming neither operand); under autocast only what autocast does not
    bring to one dtype is refused, as nn.Linear does."""
    layer = TTLinear(64, 32, 4, impl=impl)
    for dtype in (torch.float64, torch.float16):
        with pytest.raises(RuntimeError, match=re.escape(
                f"input has dtype {dtype}, this TTLinear torch.float32; convert one to the other "
                f"(x.to(torch.float32) or layer.to({dtype}))") + "$"):
            layer(torch.ones(2, 64, dtype=dtype))
    with pytest.raises(RuntimeError, match=re.escape("input has dtype torch.int64, this TTLinear "
                                                     "torch.float32; convert one to the other "
                                                     "(x.to(torch.float32))") + "$"):
        layer(torch.ones(2, 64, dtype=torch.int64))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer(torch.ones(2, 64, dtype=torch.float16)).dtype == torch.bfloat16
        with pytest.raises(RuntimeError, match="input has dtype torch.float64, this TTLinear torch.float32"):
            layer(torch.ones(2, 64, dtype=torch.float64))  # autocast leaves float64 as it is
        with pytest.raises(RuntimeError, match="input has dtype torch.float32, this TTLinear torch.float64"):
            layer.double()(torch.ones(2, 64))


def test_errors_name_the_problem():
    with pytest.raises(ShapeError, match="multiply to 24, fewer than 30"):
        TTLinear(30, 8, 2, in_modes=[2, 3, 4], out_modes=[2, 2, 2])
    with pytest.raises(ShapeError, match="same length"):
        TTLinear(8, 8, 2, in_modes=[2, 4], out_modes=[2, 2, 2])
    with pytest.raises(ShapeError, match="maximal TT rank"):
        TTLinear(16, 16, [20], in_modes=[4, 4], out_modes=[4, 4])
    with pytest.raises(ShapeError, match="takes 16"):
        TTLinear(16, 16, 2)(torch.randn(2, 15))
    with pytest.raises(ShapeError, match="in_features"):
        TTLinear(0, 16, 2)


@pytest.mark.parametrize("kw, message", [
    ({"in_modes": [8.5, 8], "out_modes": [4, 8]}, "in_modes=[8.5, 8] must be a sequence of integers"),
    ({"in_modes": [8, 8], "out_modes": ["4", 8]}, "out_modes=['4', 8] must be a sequence of integers"),
    ({"in_modes": [True, 64], "out_modes": [4, 8]}, "in_modes=[True, 64] must be a sequence"),
    ({"ranks": 4.5}, "ranks=4.5 must be an int (an upper bound) or a sequence of ints"),
    ({"ranks": "4"}, "ranks='4' must be an int"),
    ({"ranks": None}, "ranks=None must be an int"),
    ({"ranks": [2.5], "in_modes": [8, 8], "out_modes": [4, 8]}, "ranks=[2.5] must be a sequence of integers"),
    ({"schedule": "ab", "in_modes": [8, 8], "out_modes": [4, 8]},
     "schedule order ('a', 'b') must be a sequence of core indices 0..1"),
    ({"schedule": [0.0, 1.0], "in_modes": [8, 8], "out_modes": [4, 8]}, "must be a sequence of core indices"),
])
def test_arguments_that_int_would_bend_are_one_line_errors(kw, message):
    """int() took "4", True and 8.5 (as 8) silently, and a string schedule failed inside
    int() with a bare ValueError."""
    kw = {"ranks": 4, **kw}
    with pytest.raises(ShapeError) as e:
        TTLinear(64, 32, **kw)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_numpy_integers_are_integers():
    np = pytest.importorskip("numpy")
    layer = TTLinear(64, 32, ranks=np.int64(4), in_modes=np.array([8, 8]), out_modes=[4, 8],
                     schedule=np.array([1, 0]))
    assert layer.in_modes == (8, 8) and layer.ranks == (1, 4, 1) and layer.schedule.order == (1, 0)
    assert all(type(v) is int for v in (*layer.in_modes, *layer.ranks, *layer.schedule.order))
    assert TTLinear(64, 32, ranks=np.array([4]), in_modes=[8, 8], out_modes=[4, 8]).ranks == (1, 4, 1)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_from_linear_refuses_non_finite_weights(bad):
    """Before: NaN failed inside the SVD (with MKL's messages on stderr), inf gave a
    rank-1 layer of garbage."""
    dense = torch.nn.Linear(64, 32)
    with torch.no_grad():
        dense.weight[3, 5] = bad
    with pytest.raises(DataError, match="NaN or infinite values"):
        TTLinear.from_linear(dense, rel_error=0.1)


def test_from_linear_takes_a_linear_layer():
    with pytest.raises(ConfigError, match="from_linear takes an nn.Linear .* not Conv2d"):
        TTLinear.from_linear(torch.nn.Conv2d(3, 3, 3), rel_error=0.1)


@pytest.mark.parametrize("case, message", [
    ("features", "x has shape (3, 63); these cores take (batch, 64)"),
    ("three-d", "x has shape (2, 3, 64); these cores take (batch, 64)"),
    ("fewer cores", "the cores have shapes [(1, 4, 8, 4)]; the schedule is for [(1, 4, 8, 4), (4, 8, 8, 1)]"),
    ("a list", "schedule must be a ContractionSchedule"),
])
def test_apply_schedule_names_operands_that_do_not_fit(case, message):
    """Before: a reshape failure, an IndexError or an AttributeError from inside."""
    layer = TTLinear(64, 32, ranks=4, in_modes=[8, 8], out_modes=[4, 8], impl="schedule")
    x, cores, schedule = torch.randn(3, 64), list(layer.cores), layer.schedule
    if case == "features":
        x = torch.randn(3, 63)
    elif case == "three-d":
        x = torch.randn(2, 3, 64)
    elif case == "fewer cores":
        cores = cores[:1]
    else:
        schedule = list(schedule.order)
    with pytest.raises(ShapeError) as e:
        apply_schedule(x, cores, schedule)
    assert message in str(e.value)


def test_cores_are_contracted_in_their_order_after_a_parametrization_is_removed():
    """``remove_parametrizations`` (and ``prune``) put a core back at the end of the
    list's parameters: the layer still contracts cores 0, 1, ... (it used the dict's
    order: equal-shaped cores swapped silently, others failed in a reshape) and a pruned
    core is the masked one."""
    from torch.nn.utils import parametrize, prune

    class Double(torch.nn.Module):
        def forward(self, w):
            return 2 * w

    torch.manual_seed(0)
    for layer in (TTLinear(4, 4, ranks=1, in_modes=[2, 2], out_modes=[2, 2]),
                  TTLinear(24, 30, ranks=[3, 2], in_modes=[2, 3, 4], out_modes=[5, 3, 2])):
        x = torch.randn(5, layer.in_features)
        for impl in ("fast", "schedule"):
            layer.impl = impl
            parametrize.register_parametrization(layer.cores, "0", Double())
            assert torch.allclose(layer(x), x @ layer.to_dense().T + layer.bias, atol=1e-5)
            parametrize.remove_parametrizations(layer.cores, "0")
            assert list(layer.cores._parameters)[-1] == "0"   # moved to the end
            assert torch.allclose(layer(x), x @ layer.to_dense().T + layer.bias, atol=1e-5)
    prune.l1_unstructured(layer.cores, name="1", amount=0.5)
    with torch.no_grad():
        layer.cores.get_parameter("1_orig").mul_(3)   # the hook recomputes the pruned core
    y = layer(x)
    pruned = layer.cores.get_parameter("1_orig") * layer.cores.get_buffer("1_mask")
    assert int((pruned == 0).sum()) > 0 and torch.equal(layer.cores[1], pruned)
    assert torch.allclose(y, x @ layer.to_dense().T + layer.bias, atol=1e-5)
    prune.remove(layer.cores, "1")
    assert torch.allclose(layer(x), x @ layer.to_dense().T + layer.bias, atol=1e-5)


def test_a_scalar_input_or_one_on_another_device_is_one_line():
    layer = TTLinear(16, 8, ranks=2)
    with pytest.raises(ShapeError, match=r"scalar \(0-d\); this TTLinear takes \(\.\.\., 16\)"):
        layer(torch.tensor(1.0))
    for impl in ("fast", "schedule"):
        layer.impl = impl
        with pytest.raises(ConfigError, match="input is on meta, this TTLinear on cpu"):
            layer(torch.empty(3, 16, device="meta"))
