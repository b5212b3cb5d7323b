"""Inference calls of the fast path reuse the merged step matrices while the cores are
bit for bit unchanged (ttforge.model.fast.MergeCache), and never after any change."""

import copy
import pickle

import pytest
import torch

import ttforge.model.fast as fast
from ttforge.model.layers import TTLinear


def _layer(seed=0, **kw):
    torch.manual_seed(seed)
    kw = {"ranks": 16, "in_modes": (7, 4, 7, 4), "out_modes": (4, 8, 4, 4), **kw}
    return TTLinear(784, 512, **kw)


def _fresh(layer, x):
    """The layer's output with nothing kept from before."""
    with torch.no_grad():
        return fast.tt_apply(x, [c.detach().clone() for c in layer.cores],
                             fast.plan_for(layer.tt_shape, x.shape[0]), bias=layer.bias)


def _count_merges(monkeypatch):
    calls = []
    real = fast._step_matrices

    def counted(cores, plan, *rest):
        calls.append(plan)
        return real(cores, plan, *rest)

    monkeypatch.setattr(fast, "_step_matrices", counted)
    return calls


def test_inference_calls_merge_once_and_repeat_exactly(monkeypatch, one_thread):
    layer, x = _layer(), torch.randn(256, 784)
    calls = _count_merges(monkeypatch)
    with torch.no_grad():
        y1, y2, y3 = layer(x), layer(x), layer(x)
    assert len(calls) == 1
    assert torch.equal(y1, y2) and torch.equal(y1, y3)
    assert torch.equal(y1, _fresh(layer, x))
    assert layer._merge_cache.nbytes >= 784 * 512 * 4  # the dense weight (one group)


def _change_is_seen(layer, x, change):
    """After ``change(layer)`` the next inference call equals a fresh computation."""
    with torch.no_grad():
        layer(x)
        change(layer)
        y = layer(x)
    assert torch.equal(y, _fresh(layer, x))


def _flip_one_bit(layer):
    core = layer.cores[2].data  # .data: no version-counter bump
    core.view(-1).view(torch.int32)[5] ^= 1 << 20


def _scale_in_place(layer):
    layer.cores[1].data.mul_(2.0)


def _optimizer_step(layer):
    with torch.enable_grad():
        layer(torch.randn(4, 784)).sum().backward()
    torch.optim.SGD(layer.parameters(), lr=0.1).step()


def _load_state(layer):
    layer.load_state_dict(_layer(seed=9).state_dict())


def _set_cores(layer):
    layer.set_cores([c.detach() * 0.5 for c in layer.cores])


@pytest.mark.parametrize("change", [_flip_one_bit, _scale_in_place, _optimizer_step, _load_state,
                                    _set_cores])
def test_every_change_of_the_cores_is_seen(change, one_thread):
    _change_is_seen(_layer(), torch.randn(64, 784), change)


def test_a_zero_that_changes_sign_merges_again(monkeypatch, one_thread):
    """``0.0 -> -0.0`` compares equal as floats; the cache compares the bits."""
    layer, x = _layer(), torch.randn(8, 784)
    with torch.no_grad():
        layer.cores[1].data.view(-1)[3] = 0.0
        layer(x)
        calls = _count_merges(monkeypatch)
        layer(x)
        layer.cores[1].data.view(-1)[3] = -0.0
        layer(x)
    assert len(calls) == 1


def test_a_strided_core_is_compared_by_its_values(monkeypatch, one_thread):
    """A core that is a transposed view (compared as such, without a copy): the same
    values in other strides keep the merge, a changed value through ``.data`` does not."""
    layer, x = _layer(), torch.randn(8, 784)
    core = layer.cores[2]
    core.data = core.data.transpose(1, 2).contiguous().transpose(1, 2)
    assert not core.is_contiguous()
    with torch.no_grad():
        layer(x)
        calls = _count_merges(monkeypatch)
        layer(x)
        assert len(calls) == 0
        core.data[0, 1, 2, 3] += 1.0
        y = layer(x)
    assert len(calls) == 1 and torch.equal(y, _fresh(layer, x))


def test_a_cache_trusting_stale_matrices_is_caught(monkeypatch, one_thread):
    """Sibling: if the byte comparison always said "unchanged", a flipped bit (made
    through ``.data``, which version counters miss) would go unseen."""
    monkeypatch.setattr(fast, "_bits", lambda t: torch.zeros(1, dtype=torch.uint8))
    with pytest.raises(AssertionError):
        _change_is_seen(_layer(), torch.randn(64, 784), _flip_one_bit)


def test_autograd_calls_never_use_it(monkeypatch, one_thread):
    layer, x = _layer(), torch.randn(32, 784)
    with torch.no_grad():
        layer(x)
    calls = _count_merges(monkeypatch)
    y = layer(x)
    y.sum().backward()
    assert len(calls) == 1 and all(c.grad is not None for c in layer.cores)
    assert y.grad_fn is not None


def test_dtype_and_plan_changes_merge_again(monkeypatch, one_thread):
    layer = _layer()
    calls = _count_merges(monkeypatch)
    with torch.no_grad():
        layer(torch.randn(256, 784))
        layer(torch.randn(2, 784))  # another batch bucket: another plan
        layer.double()
        y = layer(torch.ones(2, 784, dtype=torch.float64))
    assert len(calls) == 3 and y.dtype == torch.float64


def test_switched_off_it_merges_every_call(monkeypatch, one_thread):
    monkeypatch.setattr(fast, "CACHE_MERGED", False)
    layer, x = _layer(), torch.randn(8, 784)
    calls = _count_merges(monkeypatch)
    with torch.no_grad():
        layer(x), layer(x)
    assert len(calls) == 2 and layer._merge_cache.nbytes == 0


def test_copies_and_pickles_carry_no_kept_matrices(one_thread):
    layer, x = _layer(), torch.randn(8, 784)
    with torch.no_grad():
        y = layer(x)
    assert layer._merge_cache.nbytes > 0
    assert not any("cache" in k for k in layer.state_dict())
    for other in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        assert other._merge_cache.nbytes == 0
        with torch.no_grad():
            assert torch.equal(other(x), y)


def test_a_parametrized_core_is_what_the_layer_computes_with():
    """torch.nn.utils.parametrize moves a core out of the list's registered parameters;
    the layer then takes the list's items (the parametrized value), on both paths."""
    from torch.nn.utils import parametrize

    class Doubled(torch.nn.Module):
        def forward(self, c):
            return 2 * c

    for impl in ("fast", "schedule"):
        torch.manual_seed(0)
        layer = TTLinear(30, 20, ranks=3, in_modes=[2, 3, 5], out_modes=[2, 2, 5], impl=impl).double()
        x = torch.randn(4, 30, dtype=torch.float64)
        before = layer(x) - layer.bias
        parametrize.register_parametrization(layer.cores, "1", Doubled())
        for grad_on in (False, True):
            with torch.set_grad_enabled(grad_on):
                after = layer(x) - layer.bias
            assert torch.allclose(after, 2 * before, atol=1e-12, rtol=0), (impl, grad_on)
