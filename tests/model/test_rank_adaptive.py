import io
import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar
from torch import nn

from ttforge.errors import CheckpointError, ConfigError, ShapeError
from ttforge.model.layers import TTLinear
from ttforge.model.rank_adaptive import (
    RankAdaptivePrior,
    half_cauchy_map,
    log_uniform_map,
    tt_balance,
)
from ttforge.model.tt import tt_to_dense


def _neg_log_post_1d(S, D, prior, eta):
    """f(u) for lam = exp(u), written from the model, not from the closed form."""
    if prior == "log_uniform":
        return lambda u: S / 2 * math.exp(-u) + D / 2 * u + u
    return lambda u: S / 2 * math.exp(-u) + D / 2 * u + math.log(math.exp(2 * u) + eta**2)


def _numeric_argmin(S, D, prior, eta):
    f = _neg_log_post_1d(S, D, prior, eta)
    lo, hi = math.log(S / (D + 4)) - 2, math.log(S / D) + 2
    grid = np.linspace(lo, hi, 401)
    u0 = grid[int(np.argmin([f(u) for u in grid]))]
    step = grid[1] - grid[0]
    res = minimize_scalar(f, bounds=(u0 - step, u0 + step), method="bounded",
                          options={"xatol": 1e-12})
    return math.exp(res.x)


@pytest.mark.parametrize("prior", ["log_uniform", "half_cauchy"])
def test_closed_form_update_is_the_numeric_argmin(prior):
    for S in [1e-9, 1e-4, 0.3, 1.0, 17.0, 4e3, 1e7]:
        for D in [1, 3, 16, 130, 2048]:
            for eta in [1e-3, 0.5, 1.0, 40.0]:
                if prior == "log_uniform" and eta != 1.0:
                    continue
                t = torch.tensor([S], dtype=torch.float64)
                got = float(log_uniform_map(t, D) if prior == "log_uniform" else half_cauchy_map(t, D, eta))
                want = _numeric_argmin(S, D, prior, eta)
                assert abs(math.log(got / want)) < 1e-6, (S, D, eta, got, want)
                if prior == "half_cauchy":  # and it is a root of the cubic
                    h = (D + 4) * got**3 - S * got**2 + D * eta**2 * got - S * eta**2
                    scale = (D + 4) * got**3 + S * got**2 + D * eta**2 * got + S * eta**2
                    assert abs(h) <= 1e-12 * scale


def test_half_cauchy_is_vectorised_and_zero_for_zero():
    S = torch.tensor([[0.0, 1.0], [2.0, 1e-30]], dtype=torch.float64)
    out = half_cauchy_map(S, 10, 1.0)
    assert out.shape == S.shape and out[0, 0] == 0 and (out[S > 0] > 0).all()
    for i, j in [(0, 1), (1, 0)]:
        assert out[i, j] == half_cauchy_map(S[i, j].reshape(1), 10, 1.0)[0]


def _layer(ranks=(3, 4), seed=0):
    torch.manual_seed(seed)
    return TTLinear(24, 12, ranks=list(ranks), in_modes=[2, 3, 4], out_modes=[3, 2, 2]).double()


def _perturb_lambdas(prior, seed=1):
    g = torch.Generator().manual_seed(seed)
    for lam in prior.lambdas.values():
        for k, v in enumerate(lam):
            lam[k] = torch.exp(torch.randn(v.shape, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("prior_name", ["log_uniform", "half_cauchy"])
def test_update_minimises_the_posterior_in_each_variance(prior_name):
    """After update(), each variance of the last-updated bond is the 1-D argmin of
    penalty() + hyperprior, found numerically through the public objective."""
    layer = _layer()
    prior = RankAdaptivePrior(layer, prior=prior_name, eta=0.7, init=1.0)
    _perturb_lambdas(prior)
    prior.update()
    lam = prior.lambdas[""][-1]  # bond 2 is updated last, with bond 1 already final
    for i in range(lam.numel()):
        best = float(lam[i])

        def f(u):
            lam[i] = math.exp(u)
            return float(prior.neg_log_posterior())

        res = minimize_scalar(f, bounds=(math.log(best) - 3, math.log(best) + 3), method="bounded",
                              options={"xatol": 1e-10})
        assert abs(res.x - math.log(best)) < 1e-5
        lam[i] = best


def test_update_never_increases_the_objective_and_respects_the_floor():
    layer = _layer()
    with torch.no_grad():
        layer.cores[1][1] = 0.0  # rank index 1 of bond 1 is unused on one side
        layer.cores[0][..., 1] = 0.0  # and on the other: S = 0 -> floor
    prior = RankAdaptivePrior(layer, init=3.0, floor=1e-7)
    before = float(prior.neg_log_posterior())
    for _ in range(5):
        prior.update()
        now = float(prior.neg_log_posterior())
        assert now <= before + 1e-9
        before = now
    assert float(prior.lambdas[""][0][1]) == 1e-7


def test_penalty_value_and_gradient_push_cores_to_zero():
    layer = _layer()
    prior = RankAdaptivePrior(layer, init=1.0)
    _perturb_lambdas(prior)
    lam = [torch.ones(1, dtype=torch.float64), *prior.lambdas[""], torch.ones(1, dtype=torch.float64)]
    want = 0.0
    for k, g in enumerate(layer.cores):  # brute force over entries
        g = g.detach()
        for i, a, b, j in np.ndindex(*g.shape):
            var = float(lam[k][i] * lam[k + 1][j])
            want += float(g[i, a, b, j]) ** 2 / (2 * var) + 0.5 * math.log(var)
    pen = prior.penalty()
    assert pen.shape == () and math.isclose(float(pen.detach()), want, rel_tol=1e-12)
    pen.backward()
    norms = []
    for k, g in enumerate(layer.cores):
        var = lam[k][:, None, None, None] * lam[k + 1][None, None, None, :]
        assert torch.allclose(g.grad, g.detach() / var, rtol=1e-12, atol=0)
        assert (g.grad * g.detach() >= 0).all()  # descent direction points at zero
        norms.append(float(g.detach().norm()))
    with torch.no_grad():
        for g in layer.cores:
            g -= 1e-3 * g.grad
    assert all(float(g.detach().norm()) < n for g, n in zip(layer.cores, norms))
    assert all(p.requires_grad is False for lam in prior.lambdas.values() for p in lam)


def test_lambdas_are_not_parameters_and_all_tt_layers_are_found():
    model = nn.Sequential(TTLinear(16, 16, 3, in_modes=[4, 4], out_modes=[4, 4]), nn.ReLU(),
                          nn.Sequential(TTLinear(16, 8, 2, in_modes=[2, 2, 4], out_modes=[2, 2, 2])))
    n_params = len(list(model.parameters()))
    prior = RankAdaptivePrior(model)
    assert sorted(prior.layers) == ["0", "2.0"]
    assert [v.numel() for v in prior.lambdas["2.0"]] == [2, 2]
    assert len(list(model.parameters())) == n_params
    assert torch.isfinite(prior.penalty())


def _zero_slices(cores, keep):
    cores = [g.detach().clone() for g in cores]
    for k, idx in enumerate(keep, start=1):
        drop = torch.ones(cores[k].shape[0], dtype=torch.bool)
        drop[idx] = False
        cores[k - 1][..., drop] = 0
        cores[k][drop] = 0
    return cores


def test_truncation_equals_zeroing_the_dropped_slices():
    layer = _layer(ranks=(5, 6))
    x = torch.randn(7, 24, dtype=torch.float64)
    prior = RankAdaptivePrior(layer, init=1.0)
    prior.lambdas[""][0] = torch.tensor([1.0, 1e-5, 0.5, 2e-3, 1e-9], dtype=torch.float64)
    prior.lambdas[""][1] = torch.tensor([3e-4, 1.0, 0.02, 1e-6, 0.9, 0.011], dtype=torch.float64)
    keep = [torch.tensor([0, 2]), torch.tensor([1, 2, 4, 5])]
    assert prior.effective_ranks(1e-2)[""] == (1, 2, 4, 1)
    reference = TTLinear(24, 12, ranks=[5, 6], in_modes=[2, 3, 4], out_modes=[3, 2, 2]).double()
    reference.set_cores(_zero_slices(layer.cores, keep))
    with torch.no_grad():
        reference.bias.copy_(layer.bias)
    report = prior.truncate(1e-2)
    assert report == {"": ((1, 5, 6, 1), (1, 2, 4, 1))}
    assert layer.ranks == (1, 2, 4, 1) and layer.schedule.shape == layer.tt_shape
    assert [v.numel() for v in prior.lambdas[""]] == [2, 4]
    assert torch.equal(prior.lambdas[""][1], torch.tensor([1.0, 0.02, 0.9, 0.011], dtype=torch.float64))
    assert torch.allclose(layer(x), reference(x), rtol=0, atol=1e-12)
    assert torch.allclose(layer.to_dense(), reference.to_dense(), rtol=0, atol=1e-12)
    assert torch.isfinite(prior.penalty())


def test_truncating_near_zero_slices_changes_the_output_by_about_their_size():
    for eps in (1e-3, 1e-6):
        layer = _layer(ranks=(4, 4), seed=3)
        keep = [torch.tensor([0, 1]), torch.tensor([0, 2, 3])]
        with torch.no_grad():  # dropped slices have entries of size eps
            small = _zero_slices(layer.cores, keep)
            for g, s in zip(layer.cores, small):
                mask = (g != s)
                g[mask] = eps * torch.sign(g[mask])
        x = torch.randn(16, 24, dtype=torch.float64)
        before = layer(x).detach()
        prior = RankAdaptivePrior(layer)
        prior.balance()  # same function (up to directions below 1e-10); tiny variances
        assert torch.allclose(layer(x), before, rtol=0, atol=1e-9)
        assert prior.truncate(1e-2)[""][1] == (1, 2, 3, 1)
        change = float((layer(x).detach() - before).norm() / before.norm())
        assert change < 10 * eps


def test_truncate_keeps_at_least_one_index_per_bond():
    layer = _layer(ranks=(3, 4))
    prior = RankAdaptivePrior(layer, init=1.0)
    prior.lambdas[""][1] = torch.tensor([0.1, 0.7, 0.7, 0.3], dtype=torch.float64)
    assert prior.effective_ranks(2.0)[""] == (1, 1, 1, 1)
    rep = prior.truncate(2.0)
    assert rep[""][1] == (1, 1, 1, 1)
    # the surviving index of bond 2 is the largest variance
    assert torch.equal(prior.lambdas[""][1], torch.tensor([0.7], dtype=torch.float64))


def test_state_round_trip_is_exact_and_resumes_after_truncation():
    torch.manual_seed(4)
    model = nn.Sequential(TTLinear(16, 16, 4, in_modes=[2, 2, 4], out_modes=[4, 2, 2]), nn.Tanh(),
                          TTLinear(16, 4, 3, in_modes=[4, 4], out_modes=[2, 2]))
    prior = RankAdaptivePrior(model, prior="half_cauchy", eta=0.3)
    prior.lambdas["0"][0][1] = 1e-9
    prior.truncate(1e-3)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "prior": prior.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf)

    torch.manual_seed(5)  # fresh model at the original ranks, as a resumed run builds it
    fresh = nn.Sequential(TTLinear(16, 16, 4, in_modes=[2, 2, 4], out_modes=[4, 2, 2]), nn.Tanh(),
                          TTLinear(16, 4, 3, in_modes=[4, 4], out_modes=[2, 2]))
    restored = RankAdaptivePrior(fresh)
    with pytest.raises(CheckpointError, match="resize_layers"):
        restored.load_state_dict(ckpt["prior"], resize_layers=False)
    restored.load_state_dict(ckpt["prior"])
    fresh.load_state_dict(ckpt["model"])
    assert (restored.prior, restored.eta, restored.floor) == ("half_cauchy", 0.3, prior.floor)
    for name in prior.layers:
        assert restored.layers[name].ranks == prior.layers[name].ranks
        for a, b in zip(restored.lambdas[name], prior.lambdas[name]):
            assert a.dtype == torch.float64 and torch.equal(a, b)
    x = torch.randn(5, 16)
    assert torch.equal(fresh(x), model(x))
    assert torch.equal(restored.penalty(), prior.penalty())
    restored.update()
    prior.update()
    for name in prior.layers:
        for a, b in zip(restored.lambdas[name], prior.lambdas[name]):
            assert torch.equal(a, b)


def test_bad_input_gives_clear_errors():
    layer = _layer()
    with pytest.raises(ConfigError, match="prior="):
        RankAdaptivePrior(layer, prior="gaussian")
    with pytest.raises(ConfigError, match="eta="):
        RankAdaptivePrior(layer, prior="half_cauchy", eta=0.0)
    with pytest.raises(ConfigError, match="init="):
        RankAdaptivePrior(layer, init="zeros")
    with pytest.raises(ConfigError, match="no TTLinear"):
        RankAdaptivePrior(nn.Linear(3, 3))
    prior = RankAdaptivePrior(layer)
    layer.set_cores([g[:, :, :, :1] if k == 0 else (g[:1] if k == 1 else g) for k, g in enumerate(layer.cores)])
    with pytest.raises(ShapeError, match="truncate"):
        prior.penalty()
    with pytest.raises(CheckpointError, match="version"):
        prior.load_state_dict({"lambdas": {}})
    state = RankAdaptivePrior(_layer()).state_dict()
    state["lambdas"] = {"other": state["lambdas"][""]}
    with pytest.raises(CheckpointError, match="layers"):
        prior.load_state_dict(state)


def test_balance_keeps_the_function_and_exposes_the_singular_values():
    torch.manual_seed(6)
    cores = [torch.randn(1, 3, 2, 5, dtype=torch.float64), torch.randn(5, 2, 4, 6, dtype=torch.float64),
             torch.randn(6, 2, 4, 1, dtype=torch.float64)]
    cores[1][:, :, :, 3:] = 0  # bond 2 really has rank 3
    new, sv = tt_balance(cores)
    assert [g.shape for g in new] == [g.shape for g in cores]
    assert torch.allclose(tt_to_dense(new), tt_to_dense(cores), rtol=0, atol=1e-12)
    W = tt_to_dense(cores).reshape(3, 2, 2, 2, 4, 4).permute(0, 3, 1, 4, 2, 5)
    for k, s in enumerate(sv, start=1):
        ref = torch.linalg.svdvals(W.reshape(int(np.prod(W.shape[: 2 * k])), -1))
        assert torch.allclose(s[: ref.numel()], ref[: s.numel()], atol=1e-10)
    assert (sv[1][3:] < 1e-12).all()
    for g in new[1:]:  # slices of the unused directions are exactly zero
        assert (g[3:] == 0).all() if g.shape[0] == 6 else True
    assert (new[1][..., 3:] == 0).all()


def test_rescale_keeps_the_function_and_stops_two_small_variances_propping_each_other():
    """Bond-1 indices 2, 3 and bond-2 index 1 are unused (entries 1e-3). With update()
    alone the block where they meet keeps bond-2 index 1 at ~25 % of the largest
    variance; rescale() moves that block's weight out and the variance collapses."""
    layer = _layer(ranks=(4, 4), seed=3)
    keep = [torch.tensor([0, 1]), torch.tensor([0, 2, 3])]
    with torch.no_grad():
        small = _zero_slices(layer.cores, keep)
        for g, s in zip(layer.cores, small):
            g[g != s] = 1e-3 * torch.sign(g[g != s])
    x = torch.randn(9, 24, dtype=torch.float64)
    before = layer(x).detach()
    prior = RankAdaptivePrior(layer)
    prior.update(sweeps=50)
    assert prior.rank_scores()[""][1][1] > 0.1  # propped up
    for _ in range(20):
        prior.rescale()
        prior.update()
    assert torch.allclose(layer(x), before, rtol=0, atol=1e-12)
    assert prior.rank_scores()[""][1][1] < 1e-2
    assert prior.effective_ranks(1e-2)[""] == (1, 2, 3, 1)


def test_proximal_step_is_the_implicit_penalty_step():
    """new = old - lr * grad(penalty / n) evaluated at new (backward Euler)."""
    layer = _layer()
    prior = RankAdaptivePrior(layer)
    _perturb_lambdas(prior)
    old = [g.detach().clone() for g in layer.cores]
    prior.proximal_step(lr=0.05, n_train=7)
    (prior.penalty() / 7).backward()
    for g, o in zip(layer.cores, old):
        assert torch.allclose(g.detach() + 0.05 * g.grad, o, rtol=1e-12, atol=1e-15)
        assert (g.detach().abs() < o.abs()).all()


def _low_rank_problem(n=256, sigma=0.03, seed=0):
    torch.manual_seed(seed)
    teacher = TTLinear(64, 32, ranks=[2, 2], in_modes=[4, 4, 4], out_modes=[4, 4, 2], bias=False).double()
    X = torch.randn(n, 64, dtype=torch.float64)
    with torch.no_grad():
        W = teacher.to_dense()
        W = W / (8 * W.std())
        clean = X @ W.T
    return X, clean, clean + sigma * torch.randn_like(clean)


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only add overhead
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("prior_name", ["log_uniform", "half_cauchy"])
def test_training_with_the_prior_finds_the_teacher_ranks(prior_name, one_thread):
    """Student at rank 8 learns a rank-2 TT; the loop is the documented one."""
    sigma = 0.03
    X, clean, Y = _low_rank_problem(sigma=sigma)
    n = X.shape[0]
    student = TTLinear(64, 32, ranks=8, in_modes=[4, 4, 4], out_modes=[4, 4, 2], bias=False).double()
    prior = RankAdaptivePrior(student, prior=prior_name, eta=1.0)
    opt = torch.optim.Adam(student.parameters(), lr=0.02)
    start = prior.effective_ranks(0.1)[""]
    for step in range(400):
        opt.zero_grad()
        nll = ((student(X) - Y) ** 2).sum(1).mean() / (2 * sigma**2)
        (nll + prior.penalty() / n).backward()
        opt.step()
        if step % 50 == 49:
            prior.balance()
        elif step % 5 == 4:
            prior.update()
    prior.balance()

    def rel_error():
        with torch.no_grad():
            return float((student(X) - clean).norm() / clean.norm())

    fit = rel_error()
    ranks = prior.effective_ranks(0.1)[""]
    report = prior.truncate(0.1)
    after = rel_error()
    assert start == (1, 8, 8, 1)
    assert report[""] == ((1, 8, 8, 1), ranks)
    assert all(2 <= r <= 3 for r in ranks[1:-1]), ranks
    assert fit < 0.02 and after < 0.02, (fit, after)
