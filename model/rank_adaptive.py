"""Automatic rank determination for TT layers (Hawkins & Zhang, arXiv:2010.08689).

Every internal bond ``k`` (between cores ``k-1`` and ``k``) of every
:class:`~ttforge.model.layers.TTLinear` carries one variance per rank index,
``lam[k]`` of length ``r[k]``, shared by the two adjacent cores. With the layer's
cores ``G_k`` of shape ``(r[k], m[k], n[k], r[k+1])`` the prior is

    G_k[i, :, :, j] ~ N(0, lam[k][i] * lam[k+1][j]),     lam[0] = lam[d] = [1],

and each ``lam[k][i]`` has a log-uniform (``p ∝ 1/lam``) or half-Cauchy (scale
``eta``) hyperprior. Training minimises ``mean loss + penalty() / n_train`` over the
cores while :meth:`RankAdaptivePrior.update` sets the variances to their MAP value
given the cores; rank indices whose variance collapses are then cut out with
:meth:`RankAdaptivePrior.truncate`::

    prior = RankAdaptivePrior(model, prior="log_uniform")
    for epoch in range(epochs):
        for x, y in batches:
            loss = F.cross_entropy(model(x), y) + prior.penalty() / n_train
            ...                                   # backward, optimizer.step()
        prior.balance()                           # once per epoch; not update() alone (below)
        optimizer = make_optimizer(model)         # Adam's moments belong to the old gauge
    report = prior.truncate(1e-2)                 # then rebuild the optimiser and fine-tune

This is the loop ``ttforge train --rank-adaptive`` runs (:mod:`ttforge.model.train`),
which also checkpoints :meth:`state_dict` so that a resumed run is exact.

Why :meth:`~RankAdaptivePrior.balance`: a TT has a gauge freedom (any invertible
matrix on a bond), and gradient training does not rotate it, so the function's
unused directions stay smeared over all rank indices and no variance collapses;
truncating by the variances then changes the function. ``balance`` rotates every
bond to the weight's singular directions (same function) and fits variances and
a diagonal gauge jointly. Measured on ``load_digits`` (64-64-10 TT-MLP, rank 8,
3 seeds): with ``update`` only, truncation at ``1e-2`` cut the test accuracy of
one seed from 95.8 % to 17.2 %; with ``balance`` once per epoch truncation left
the accuracy unchanged on all seeds (core parameters 2000 -> 520..760).

How small is small: a direction of weight ``w`` that crosses every internal bond
has variances of about ``w ** (1 / (d - 1))`` (each variance is shared by two
cores), so for ``d = 3`` a threshold of ``1e-2`` on ``lam`` is about ``1e-4`` on
the singular values of the weight.

Derivation of the closed-form updates
-------------------------------------
Fix one rank index ``i`` of bond ``k`` and write ``lam = lam[k][i]``. The core
entries that touch it are the slice ``G_{k-1}[..., i]`` and the slice
``G_k[i, ...]``; each such entry ``x`` has variance ``lam * c`` where ``c`` is the
variance factor of its *other* bond index (1 at a boundary). Let ``D`` be the
number of those entries and ``S = sum(x**2 / c)``. The part of the negative log
posterior that depends on ``lam`` is

    f(lam) = S / (2 lam) + (D / 2) log(lam) - log p(lam).

Log-uniform, ``-log p = log(lam)``:

    f'(lam) = -S / (2 lam^2) + (D + 2) / (2 lam) = 0   =>   lam = S / (D + 2).

Half-Cauchy, ``-log p = log(lam^2 + eta^2) + const``:

    f'(lam) = -S / (2 lam^2) + D / (2 lam) + 2 lam / (lam^2 + eta^2) = 0;

multiplying by ``2 lam^2 (lam^2 + eta^2)``:

    (D + 4) lam^3 - S lam^2 + D eta^2 lam - S eta^2 = 0.

With ``u = log(lam)``, ``f = (S/2) e^-u + (D/2) u + log(e^{2u} + eta^2)`` has
``f'' = (S/2) e^-u + 4 eta^2 e^{2u} / (e^{2u} + eta^2)^2 > 0``: ``f`` is strictly
convex in ``u``, so the cubic has exactly one positive root (it has no negative
roots: all coefficients of ``h(-lam)`` are negative), and that root is the
minimiser. Writing the cubic as ``lam^2 ((D+4) lam - S) + (D lam - S)`` shows the
root lies in ``[S / (D + 4), S / D]``. We take Cardano's formula for the single
real root (in the scaled variable ``t = lam / eta``) and polish it with a few
bracketed Newton steps, all vectorised.

Jointly, the negative log posterior is a sum of exponentials of linear forms in
``log lam`` plus convex hyperprior terms, hence convex in ``log lam``; one call of
:meth:`~RankAdaptivePrior.update` is one sweep of exact coordinate descent over the
bonds (each bond's update uses the freshest neighbours), which never increases it.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from ttforge.errors import CheckpointError, ConfigError, ShapeError
from ttforge.model.defaults import PRIORS
from ttforge.model.layers import TTLinear

__all__ = [
    "RankAdaptivePrior",
    "ard_update",
    "half_cauchy_map",
    "log_uniform_map",
    "tt_balance",
]

Prior = Literal["log_uniform", "half_cauchy"]
_PRIORS = PRIORS     # one tuple: model.defaults (the CLI lists it without torch)
_STATE_VERSION = 1


def log_uniform_map(S: torch.Tensor, D: float) -> torch.Tensor:
    """MAP variance under the log-uniform hyperprior: ``S / (D + 2)``.

    Parameters
    ----------
    S : Tensor
        Sums of ``x**2 / c`` over the entries touching each rank index.
    D : float
        Number of those entries.
    """
    return S / (D + 2.0)


def half_cauchy_map(S: torch.Tensor, D: float, eta: float, newton_steps: int = 6) -> torch.Tensor:
    """MAP variance under a half-Cauchy(``eta``) hyperprior.

    The unique positive root of ``(D+4) l^3 - S l^2 + D eta^2 l - S eta^2`` (see the
    module docstring), by Cardano's formula and bracketed Newton polishing.

    Parameters
    ----------
    S : Tensor
        Sums of ``x**2 / c`` (any shape, >= 0).
    D : float
        Number of entries behind each ``S`` (> 0).
    eta : float
        Scale of the half-Cauchy hyperprior (> 0).
    newton_steps : int
        Safeguarded Newton steps after Cardano.
    """
    S64 = S.to(torch.float64)
    s = S64 / eta  # t = lam / eta solves (D+4) t^3 - s t^2 + D t - s = 0
    a, b, c, d = D + 4.0, -s, float(D), -s
    # depressed cubic y^3 + p y + q = 0 with t = y - b / (3a)
    p = (3 * a * c - b * b) / (3 * a * a)
    q = (2 * b**3 - 9 * a * b * c + 27 * a * a * d) / (27 * a**3)
    disc = (q / 2) ** 2 + (p / 3) ** 3  # >= 0: exactly one real root
    sq = torch.sqrt(torch.clamp(disc, min=0.0))
    # pick the sign that avoids cancellation inside the cube root
    w = -q / 2 - torch.where(q >= 0, sq, -sq)
    A = torch.sign(w) * torch.abs(w) ** (1.0 / 3.0)
    y = torch.where(A != 0, A - p / (3 * torch.where(A != 0, A, torch.ones_like(A))), torch.zeros_like(A))
    t = y - b / (3 * a)
    lo, hi = s / (D + 4.0), s / D
    t = torch.minimum(torch.maximum(t, lo), hi)
    for _ in range(newton_steps):
        h = ((a * t + b) * t + c) * t + d
        lo = torch.where(h < 0, t, lo)
        hi = torch.where(h > 0, t, hi)
        dh = (3 * a * t + 2 * b) * t + c
        step = t - h / torch.where(dh > 0, dh, torch.ones_like(dh))
        ok = (dh > 0) & (step >= lo) & (step <= hi)
        t = torch.where(h == 0, t, torch.where(ok, step, (lo + hi) / 2))
    return (t * eta).to(S.dtype)


def ard_update(S: torch.Tensor, D: float, prior: Prior = "log_uniform", eta: float = 1.0) -> torch.Tensor:
    """MAP variance for sums ``S`` over ``D`` entries under ``prior`` (no floor)."""
    if prior == "log_uniform":
        return log_uniform_map(S, D)
    if prior == "half_cauchy":
        return half_cauchy_map(S, D, eta)
    raise ConfigError(f"prior={prior!r} is unknown; use one of {list(_PRIORS)}")


def _pad_cols(x: torch.Tensor, n: int) -> torch.Tensor:
    return x if x.shape[1] == n else torch.cat([x, x.new_zeros(x.shape[0], n - x.shape[1])], 1)


def _pad_rows(x: torch.Tensor, n: int) -> torch.Tensor:
    return x if x.shape[0] == n else torch.cat([x, x.new_zeros(n - x.shape[0], *x.shape[1:])], 0)


def _equal_rms(cores: list[torch.Tensor]) -> list[torch.Tensor]:
    """Scale whole cores (product of the factors 1) to the same RMS entry."""
    rms = torch.stack([torch.sqrt(torch.mean(g * g)) for g in cores])
    if not bool((rms > 0).all()):
        return cores
    target = torch.exp(torch.log(rms).mean())
    return [g * (target / r) for g, r in zip(cores, rms)]


@torch.no_grad()
def tt_balance(cores, eps: float = 1e-10) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Symmetric (Vidal) gauge of a TT-matrix: same function, same ranks.

    Returns cores ``G_k[i, :, :, j] = sqrt(s_k[i]) * Gamma_k[i, :, :, j] * sqrt(s_{k+1}[j])``
    where ``s_k`` are the singular values of the bond-``k`` unfolding of the full
    weight (sorted descending, padded with zeros) -- exactly the structure of the
    prior ``var = lam_k[i] * lam_{k+1}[j]``. Directions the function does not use
    become near-zero slices.

    Parameters
    ----------
    cores : sequence of Tensor
        ``(r, m, n, r')`` cores.
    eps : float
        Directions whose singular value is ``<= eps * max`` of their bond are zeroed
        (the weight changes by at most about ``eps`` relative); the rest is exact.

    Returns
    -------
    cores : list of Tensor
        Balanced cores (dtype and device of the input).
    singular_values : list of Tensor
        ``s_1 .. s_{d-1}`` (float64), one per internal bond.
    """
    dtype = cores[0].dtype
    w = [g.detach().to(torch.float64).clone() for g in cores]
    d = len(w)
    if d == 1:
        return [g.to(dtype) for g in w], []
    # left-to-right QR: cores 0..d-2 left-orthonormal
    for k in range(d - 1):
        r, m, n, r2 = w[k].shape
        Q, R = torch.linalg.qr(w[k].reshape(r * m * n, r2))
        w[k] = _pad_cols(Q, r2).reshape(r, m, n, r2)
        w[k + 1] = torch.tensordot(_pad_rows(R, r2), w[k + 1], dims=([1], [0]))
    # right-to-left SVD: bond singular values, cores 1..d-1 right-orthonormal
    sv: list[torch.Tensor] = [None] * (d + 1)  # type: ignore[list-item]
    for k in range(d - 1, 0, -1):
        r, m, n, r2 = w[k].shape
        U, s, Vh = torch.linalg.svd(w[k].reshape(r, m * n * r2), full_matrices=False)
        w[k] = _pad_rows(Vh, r).reshape(r, m, n, r2)
        s = torch.cat([s, s.new_zeros(r - s.numel())])
        w[k - 1] = torch.tensordot(w[k - 1], _pad_cols(U, r) * s, dims=([3], [0]))
        sv[k] = s
    # symmetric scaling: G_k = S_k^1/2 B_k S_{k+1}^-1/2 (telescopes to the same product).
    # Directions with s <= eps * max carry (numerically) nothing; their slices are set
    # to zero on both sides: the SVD fills them with an arbitrary orthonormal completion,
    # which the 0/0 scaling would turn into O(1) entries the prior cannot explain.
    one = torch.ones(1, dtype=torch.float64, device=w[0].device)
    root, live = [one], [one > 0]
    for k in range(1, d):
        alive = sv[k] > eps * float(sv[k].max())
        root.append(torch.where(alive, torch.sqrt(sv[k]), torch.ones_like(sv[k])))
        live.append(alive)
    root.append(one)
    live.append(one > 0)
    out = []
    for k in range(d):
        g = w[k] / root[k + 1][None, None, None, :] * root[k][:, None, None, None]
        out.append(g * live[k][:, None, None, None] * live[k + 1][None, None, None, :])
    return [g.to(dtype) for g in _equal_rms(out)], [sv[k] for k in range(1, d)]


class RankAdaptivePrior:
    """Bayesian low-rank prior with automatic rank determination for all TT layers.

    Parameters
    ----------
    model : nn.Module
        Every :class:`TTLinear` in it (found by ``named_modules``, the model itself
        included) gets one variance vector per internal bond.
    prior : {"log_uniform", "half_cauchy"}
        Hyperprior on each variance.
    eta : float
        Scale of the half-Cauchy hyperprior (ignored for log-uniform).
    init : "map" or float
        ``"map"``: start from the MAP variances of the current cores (a few
        coordinate sweeps from 1); a float: every variance starts at that value.
    floor : float
        Smallest variance :meth:`update` may produce (avoids division by zero).

    Notes
    -----
    The variances are plain tensors (float64, on the cores' device, no grad), not
    parameters: the optimiser never sees them. :meth:`truncate` replaces the
    layers' core parameters, so rebuild the optimiser after calling it. Ranks are
    reported as the layers report them, boundaries included: ``(1, r1, ..., 1)``.
    """

    def __init__(
        self,
        model: nn.Module,
        prior: Prior = "log_uniform",
        eta: float = 1.0,
        init: Literal["map"] | float = "map",
        floor: float = 1e-8,
    ) -> None:
        if prior not in _PRIORS:
            raise ConfigError(f"prior={prior!r} is unknown; use one of {list(_PRIORS)}")
        if not (eta > 0 and math.isfinite(eta)):
            raise ConfigError(f"eta={eta!r} must be a positive number (half-Cauchy scale)")
        if not (floor > 0):
            raise ConfigError(f"floor={floor!r} must be > 0")
        self.model = model
        self.prior: Prior = prior
        self.eta = float(eta)
        self.floor = float(floor)
        self.layers: dict[str, TTLinear] = {
            name: m for name, m in model.named_modules() if isinstance(m, TTLinear)
        }
        if not self.layers:
            raise ConfigError("model has no TTLinear layer; rank-adaptive training needs one")
        self.lambdas: dict[str, list[torch.Tensor]] = {}
        if init != "map" and (isinstance(init, str) or not init > 0):
            raise ConfigError(f"init={init!r} must be 'map' or a positive variance")
        start = 1.0 if init == "map" else float(init)
        for name, layer in self.layers.items():
            dev = layer.cores[0].device
            self.lambdas[name] = [
                torch.full((r,), start, dtype=torch.float64, device=dev) for r in layer.ranks[1:-1]
            ]
        if init == "map":
            self.update(sweeps=20)

    # -- helpers ---------------------------------------------------------------------
    def _full(self, name: str) -> list[torch.Tensor]:
        """Variances of all bonds of a layer, boundaries (``[1.]``) included."""
        layer = self.layers[name]
        lam = self.lambdas[name]
        dev = layer.cores[0].device
        if lam and lam[0].device != dev:
            lam = self.lambdas[name] = [v.to(dev) for v in lam]
        ranks = layer.ranks
        if tuple(v.numel() for v in lam) != tuple(ranks[1:-1]):
            raise ShapeError(
                f"layer {name!r} has ranks {list(ranks)} but the prior holds variances for "
                f"{[1, *(v.numel() for v in lam), 1]}; change ranks only through "
                f"RankAdaptivePrior.truncate (or build a new prior)"
            )
        one = torch.ones(1, dtype=torch.float64, device=dev)
        return [one, *lam, one]

    # -- objective -------------------------------------------------------------------
    def penalty(self) -> torch.Tensor:
        """Negative log prior of all cores given the variances (differentiable in the cores).

        ``sum x**2 / (2 var) + 0.5 * sum log var`` over every core entry (the
        ``log 2 pi`` constant dropped; the log terms carry no gradient).
        """
        total = None
        for name, layer in self.layers.items():
            lam = self._full(name)
            for k, g in enumerate(layer.cores):
                var = (lam[k][:, None, None, None] * lam[k + 1][None, None, None, :]).to(g.dtype)
                term = (g * g / (2 * var)).sum()
                mn = g.shape[1] * g.shape[2]
                logdet = 0.5 * mn * (
                    g.shape[3] * torch.log(lam[k]).sum() + g.shape[0] * torch.log(lam[k + 1]).sum()
                )
                term = term + logdet.to(g.dtype)
                total = term if total is None else total + term
        return total

    def hyperprior_penalty(self) -> torch.Tensor:
        """Negative log hyperprior of all variances (constants dropped), float64."""
        total = torch.zeros((), dtype=torch.float64)
        for lam in self.lambdas.values():
            for v in lam:
                if self.prior == "log_uniform":
                    t = torch.log(v).sum()
                else:
                    t = torch.log(v * v + self.eta**2).sum()
                total = total + t.cpu()
        return total

    def neg_log_posterior(self) -> torch.Tensor:
        """``penalty() + hyperprior_penalty()``: what :meth:`update` minimises (float64, no grad)."""
        with torch.no_grad():
            return self.penalty().double().cpu() + self.hyperprior_penalty()

    @torch.no_grad()
    def proximal_step(self, lr: float, n_train: int) -> None:
        """Apply the prior as a decoupled proximal step: ``x <- x / (1 + lr / (var * n_train))``.

        The exact minimiser of ``(x - x0)**2 / (2 lr) + x**2 / (2 var n_train)``, i.e.
        an implicit gradient step on ``penalty() / n_train``; stable for any ``var``.
        Use it after ``optimizer.step()`` *instead of* adding :meth:`penalty` to the
        loss when the optimiser rescales gradients per coordinate (Adam): inside
        the loss, Adam normalises the prior's pull away, so entries whose variance
        has collapsed keep jittering at the size of the learning rate and never
        reach zero (AdamW's argument for decoupled weight decay).
        """
        for name, layer in self.layers.items():
            lam = self._full(name)
            for k, g in enumerate(layer.cores):
                var = (lam[k][:, None, None, None] * lam[k + 1][None, None, None, :])
                g.div_((1.0 + lr / (var * n_train)).to(g.dtype))

    # -- MAP update ------------------------------------------------------------------
    @torch.no_grad()
    def bond_statistics(self, name: str, k: int) -> tuple[torch.Tensor, int]:
        """``(S, D)`` of internal bond ``k`` (1 .. d-1) of layer ``name``."""
        layer = self.layers[name]
        lam = self._full(name)
        left = layer.cores[k - 1].detach().to(torch.float64)  # (r[k-1], m, n, r[k])
        right = layer.cores[k].detach().to(torch.float64)  # (r[k], m, n, r[k+1])
        S = (left**2 / lam[k - 1][:, None, None, None]).sum(dim=(0, 1, 2))
        S = S + (right**2 / lam[k + 1][None, None, None, :]).sum(dim=(1, 2, 3))
        D = left[..., 0].numel() + right[0].numel()
        return S, D

    @torch.no_grad()
    def update(self, sweeps: int = 1) -> None:
        """Set every variance to its MAP value given the cores (coordinate descent).

        Parameters
        ----------
        sweeps : int
            Passes over all bonds; each bond uses its neighbours' latest values.
        """
        for _ in range(sweeps):
            for name, layer in self.layers.items():
                for k in range(1, layer.tt_shape.d):
                    S, D = self.bond_statistics(name, k)
                    new = ard_update(S, D, self.prior, self.eta)
                    self.lambdas[name][k - 1] = torch.clamp(new, min=self.floor)

    @torch.no_grad()
    def balance(self, sweeps: int = 20) -> None:
        """Re-gauge every layer (same function), then fit variances and gauge jointly.

        First :func:`tt_balance` rotates each bond so that every rank index is one
        singular direction of the weight; then ``sweeps`` rounds of
        :meth:`update` and :meth:`rescale` (both exact coordinate-descent steps on
        the negative log posterior). Gradient training cannot rotate the gauge of
        the cores quickly; calling this now and then (e.g. once per epoch, instead
        of :meth:`update`) lets the prior see, and prune, the directions the
        function does not use. Parameters change in place (same shapes), so the
        optimiser keeps working, but a per-coordinate state such as Adam's moments
        then refers to the old gauge; ``ttforge train`` starts Adam afresh after it.
        """
        for name, layer in self.layers.items():
            new, _ = tt_balance(list(layer.cores))
            for p, g in zip(layer.cores, new):
                p.copy_(g)
        for _ in range(sweeps):
            self.update()
            self.rescale()
        self.update(sweeps=3)

    @torch.no_grad()
    def rescale(self) -> None:
        """MAP step over the diagonal gauge of every bond; the weight is unchanged.

        For rank index ``i`` of bond ``k``, ``G_{k-1}[..., i] *= d`` and
        ``G_k[i] /= d`` with ``d**2 = sqrt(b / a)`` (``a``, ``b``: ``sum x**2 / var``
        of the two slices) minimises that index's prior cost ``a d**2 + b / d**2``;
        this moves weight out of blocks where two small variances meet. An index
        one of whose slices is exactly zero carries nothing: both are zeroed.
        Then whole cores are scaled (product 1) to equal RMS: the improper prior
        leaves that overall scale free (the posterior decreases without bound
        along it), so it is fixed here rather than optimised.
        """
        for name, layer in self.layers.items():
            cores = [g.detach().to(torch.float64) for g in layer.cores]
            lam = self._full(name)
            for k in range(1, len(cores)):
                left, right = cores[k - 1], cores[k]
                a = (left**2 / (lam[k - 1][:, None, None, None] * lam[k][None, None, None, :])).sum((0, 1, 2))
                b = (right**2 / (lam[k][:, None, None, None] * lam[k + 1][None, None, None, :])).sum((1, 2, 3))
                used = (a > 0) & (b > 0)
                d = torch.where(used, (b / torch.where(used, a, 1.0)) ** 0.25, torch.zeros_like(a))
                cores[k - 1] = left * d[None, None, None, :]
                cores[k] = right / torch.where(used, d, 1.0)[:, None, None, None] * used[:, None, None, None]
            for p, g in zip(layer.cores, _equal_rms(cores)):
                p.copy_(g)

    # -- ranks -----------------------------------------------------------------------
    def rank_scores(self) -> dict[str, list[torch.Tensor]]:
        """Per layer, per internal bond: the variances divided by that bond's largest."""
        return {
            name: [(v / v.max()).cpu().clone() for v in lam] for name, lam in self.lambdas.items()
        }

    def _keep(self, name: str, threshold: float) -> list[torch.Tensor]:
        keep = []
        for v in self.lambdas[name]:
            mask = v > threshold * v.max()
            mask[torch.argmax(v)] = True
            keep.append(torch.nonzero(mask).flatten())
        return keep

    def effective_ranks(self, threshold: float = 1e-2) -> dict[str, tuple[int, ...]]:
        """Per layer: ``(1, r1, ..., 1)`` counting rank indices with ``lam > threshold * max``.

        Always at least 1 per bond; equal to the ranks :meth:`truncate` would leave.
        """
        out = {}
        for name in self.layers:
            out[name] = (1, *(int(k.numel()) for k in self._keep(name, threshold)), 1)
        return out

    @torch.no_grad()
    def truncate(self, threshold: float = 1e-2) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
        """Cut out the rank indices whose variance is below ``threshold * max`` of their bond.

        Slices both adjacent cores (via :meth:`TTLinear.set_cores`, which also picks a
        new schedule) and the variances. Core parameters are replaced: rebuild the
        optimiser afterwards.

        Returns
        -------
        dict
            Layer name -> ``(ranks_before, ranks_after)``, boundaries included.
        """
        report = {}
        for name, layer in self.layers.items():
            self._full(name)  # checks consistency
            before = tuple(layer.ranks)
            keep = self._keep(name, threshold)
            cores = [g.detach() for g in layer.cores]
            for k, idx in enumerate(keep, start=1):
                idx_dev = idx.to(cores[k].device)
                cores[k - 1] = cores[k - 1].index_select(3, idx_dev)
                cores[k] = cores[k].index_select(0, idx_dev)
                self.lambdas[name][k - 1] = self.lambdas[name][k - 1][idx].clone()
            if tuple(g.shape for g in cores) != tuple(g.shape for g in layer.cores):
                layer.set_cores(cores)
            report[name] = (before, tuple(layer.ranks))
        return report

    # -- checkpointing ---------------------------------------------------------------
    def state_dict(self) -> dict:
        """Settings and variances (CPU copies) for a checkpoint."""
        return {
            "version": _STATE_VERSION,
            "prior": self.prior,
            "eta": self.eta,
            "floor": self.floor,
            "lambdas": {n: [v.detach().cpu().clone() for v in lam] for n, lam in self.lambdas.items()},
        }

    def load_state_dict(self, state: dict, resize_layers: bool = True) -> None:
        """Restore :meth:`state_dict` exactly.

        Parameters
        ----------
        state : dict
            From :meth:`state_dict`.
        resize_layers : bool
            If the checkpoint was saved after :meth:`truncate`, give the layers the
            saved ranks (cores zero-filled) so that ``model.load_state_dict`` of the
            same checkpoint then fits. Load the prior state before the model's.
        """
        if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
            raise CheckpointError(
                f"rank-adaptive prior state has version {state.get('version') if isinstance(state, dict) else None!r}; "
                f"expected {_STATE_VERSION} (save it with RankAdaptivePrior.state_dict)"
            )
        if set(state["lambdas"]) != set(self.layers):
            raise CheckpointError(
                f"prior state is for layers {sorted(state['lambdas'])} but the model has "
                f"{sorted(self.layers)}; load it into the same architecture"
            )
        if state["prior"] not in _PRIORS:
            raise CheckpointError(f"prior state names prior {state['prior']!r}; expected one of {list(_PRIORS)}")
        for name, saved in state["lambdas"].items():
            layer = self.layers[name]
            ranks = (1, *(int(v.numel()) for v in saved), 1)
            if len(ranks) != layer.tt_shape.d + 1:
                raise CheckpointError(
                    f"prior state for layer {name!r} has {len(saved)} bonds; the layer has "
                    f"{layer.tt_shape.d - 1}"
                )
            if ranks != tuple(layer.ranks):
                if not resize_layers:
                    raise CheckpointError(
                        f"prior state for layer {name!r} has ranks {list(ranks)}, the layer "
                        f"{list(layer.ranks)}; pass resize_layers=True"
                    )
                ref = layer.cores[0]
                shape = layer.tt_shape.with_ranks(ranks)
                layer.set_cores([torch.zeros(s, dtype=ref.dtype, device=ref.device) for s in shape.core_shapes])
        self.prior = state["prior"]
        self.eta = float(state["eta"])
        self.floor = float(state["floor"])
        for name, saved in state["lambdas"].items():
            dev = self.layers[name].cores[0].device
            self.lambdas[name] = [v.to(device=dev, dtype=torch.float64).clone() for v in saved]

    def __repr__(self) -> str:
        ranks = {n: list(r) for n, r in self.effective_ranks().items()}
        return f"RankAdaptivePrior(prior={self.prior!r}, eta={self.eta}, effective_ranks={ranks})"
