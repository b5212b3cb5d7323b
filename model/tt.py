"""Tensor-train (TT) matrix decomposition in PyTorch: TT-SVD, rounding, reconstruction.

Shapes (:class:`~ttforge.ir.tt.TTShape`), rank bounds and mode factorization belong to
the contract (:mod:`ttforge.ir.tt`); this module holds only what needs torch.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch

from ttforge.errors import DataError, ShapeError
from ttforge.ir.tt import TTShape, prod, factorize, max_ranks, resolve_ranks

__all__ = [
    "TTShape",
    "factorize",
    "max_ranks",
    "resolve_ranks",
    "tt_to_dense",
    "tt_svd",
    "tt_round",
    "tt_rel_error",
    "all_finite", "check_finite_layers",
]


def tt_to_dense(cores: Sequence[torch.Tensor]) -> torch.Tensor:
    """Reconstruct the dense ``(M, N)`` matrix (differentiable)."""
    shape = TTShape.of_cores(cores)
    full = cores[0].reshape(shape.out_modes[0] * shape.in_modes[0], -1)  # (m0 n0, r1)
    for g in cores[1:]:
        r, m, n, r2 = g.shape
        full = (full @ g.reshape(r, m * n * r2)).reshape(-1, r2)
    # axes are (m0, n0, m1, n1, ...): bring all m first
    d = shape.d
    full = full.reshape(*[s for mn in zip(shape.out_modes, shape.in_modes) for s in mn])
    perm = [2 * k for k in range(d)] + [2 * k + 1 for k in range(d)]
    return full.permute(*perm).reshape(shape.out_size, shape.in_size)


def _interleave(W: torch.Tensor, out_modes: Sequence[int], in_modes: Sequence[int]) -> torch.Tensor:
    """``(M, N)`` -> ``(m0*n0, m1*n1, ...)`` ordering used by TT-SVD."""
    d = len(out_modes)
    t = W.reshape(*out_modes, *in_modes)
    perm = [p for k in range(d) for p in (k, d + k)]
    return t.permute(*perm).reshape(*[m * n for m, n in zip(out_modes, in_modes)])


def _truncation_rank(s: torch.Tensor, max_rank: int | None, delta: float | None) -> int:
    """Smallest rank whose discarded singular values have norm <= delta, capped."""
    rank = s.numel()
    if delta is not None:
        # tail[i] = ||s[i:]||; keep the smallest i with tail[i] <= delta
        tail = torch.sqrt(torch.flip(torch.cumsum(torch.flip(s.double() ** 2, [0]), 0), [0]))
        ok = (tail <= delta).nonzero()
        rank = int(ok[0]) if ok.numel() else rank
    if max_rank is not None:
        rank = min(rank, int(max_rank))
    return max(rank, 1)


def _check_truncation_args(max_rank, rel_error) -> None:
    if max_rank is None and rel_error is None:
        raise ShapeError("give max_rank and/or rel_error to bound the TT ranks")
    if max_rank is not None and (not isinstance(max_rank, int) or max_rank < 1):
        raise ShapeError(f"max_rank={max_rank!r} must be a positive integer")
    if rel_error is not None and not (0 <= rel_error < 1):
        raise ShapeError(f"rel_error={rel_error!r} must be in [0, 1)")


def all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """Whether no tensor of ``tensors`` holds a NaN or an infinity."""
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def check_finite_layers(layers: Iterable[tuple[int, torch.nn.Module]], fix: str) -> None:
    """A one-line :class:`DataError` naming the first of the ``(index, module)`` pairs
    whose parameters hold NaN or infinite values; ``fix`` says what to do instead."""
    for i, m in layers:
        if not all_finite(m.parameters()):
            raise DataError(f"layer {i} ({type(m).__name__}) holds NaN or infinite weights; {fix}")


def _check_finite(tensors: Sequence[torch.Tensor], what: str) -> None:
    """A one-line :class:`DataError` when ``tensors`` hold NaN or infinite values: an SVD
    of them fails (with the LAPACK library's messages on stderr) or returns garbage."""
    if not all_finite(tensors):
        raise DataError(f"{what} holds NaN or infinite values; TT-SVD needs finite values "
                        f"(did training diverge? a lower learning rate helps)")


def tt_svd(
    W: torch.Tensor,
    out_modes: Sequence[int],
    in_modes: Sequence[int],
    max_rank: int | None = None,
    rel_error: float | None = None,
) -> list[torch.Tensor]:
    """Decompose a dense ``(M, N)`` matrix into TT-matrix cores (Oseledets' TT-SVD).

    With ``rel_error`` alone, ``||W - tt_to_dense(cores)||_F <= rel_error * ||W||_F`` is
    guaranteed: each of the ``d - 1`` SVDs discards at most
    ``rel_error * ||W||_F / sqrt(d - 1)``. ``max_rank`` caps every bond; when both are
    given the cap wins and the bound may not hold (check with :func:`tt_rel_error`).
    The cores have ``W``'s dtype; an integer ``W``'s are float64.
    """
    _check_truncation_args(max_rank, rel_error)
    out_modes, in_modes = tuple(out_modes), tuple(in_modes)
    M, N = prod(out_modes), prod(in_modes)
    if tuple(W.shape) != (M, N):
        raise ShapeError(
            f"weight of shape {tuple(W.shape)} does not match out_modes {list(out_modes)} "
            f"(product {M}) x in_modes {list(in_modes)} (product {N}); pad or choose other modes"
        )
    _check_finite([W], "the weight")
    d = len(out_modes)
    work_dtype = torch.float64
    T = _interleave(W.detach().to(work_dtype), out_modes, in_modes)
    delta = None
    if rel_error is not None:
        delta = rel_error * float(torch.linalg.norm(T)) / math.sqrt(max(d - 1, 1))
    cores = []
    r_prev = 1
    C = T.reshape(1, -1)
    for k in range(d - 1):
        C = C.reshape(r_prev * out_modes[k] * in_modes[k], -1)
        U, s, Vh = torch.linalg.svd(C, full_matrices=False)
        r = _truncation_rank(s, max_rank, delta)
        cores.append(U[:, :r].reshape(r_prev, out_modes[k], in_modes[k], r))
        C = s[:r, None] * Vh[:r]
        r_prev = r
    cores.append(C.reshape(r_prev, out_modes[-1], in_modes[-1], 1))
    # integer weights come back in float64 (rounding the factors to integers would
    # leave nothing of them)
    return [g.to(W.dtype) if W.is_floating_point() or W.is_complex() else g for g in cores]


def tt_round(
    cores: Sequence[torch.Tensor], max_rank: int | None = None, rel_error: float | None = None
) -> list[torch.Tensor]:
    """Truncate the ranks of an existing TT (orthogonalize right-to-left, then SVD left-to-right).

    Same guarantee as :func:`tt_svd`: with ``rel_error`` alone the result is within
    ``rel_error`` (relative Frobenius norm) of the input TT.
    """
    _check_truncation_args(max_rank, rel_error)
    _check_finite(cores, "a core")
    shape = TTShape.of_cores(cores)
    dtype = cores[0].dtype
    work = [g.detach().to(torch.float64).clone() for g in cores]
    d = shape.d
    # right-to-left QR: cores 1..d-1 become right-orthogonal
    for k in range(d - 1, 0, -1):
        r, m, n, r2 = work[k].shape
        Q, R = torch.linalg.qr(work[k].reshape(r, m * n * r2).T)
        work[k] = Q.T.reshape(-1, m, n, r2)
        work[k - 1] = torch.tensordot(work[k - 1], R.T, dims=([3], [0]))
    delta = None
    if rel_error is not None:
        delta = rel_error * float(torch.linalg.norm(work[0])) / math.sqrt(max(d - 1, 1))
    for k in range(d - 1):
        r, m, n, r2 = work[k].shape
        U, s, Vh = torch.linalg.svd(work[k].reshape(r * m * n, r2), full_matrices=False)
        rk = _truncation_rank(s, max_rank, delta)
        work[k] = U[:, :rk].reshape(r, m, n, rk)
        work[k + 1] = torch.tensordot(s[:rk, None] * Vh[:rk], work[k + 1], dims=([1], [0]))
    return [g.to(dtype) for g in work]


def tt_rel_error(cores: Sequence[torch.Tensor], W: torch.Tensor) -> float:
    """Relative Frobenius error ``||W - tt_to_dense(cores)|| / ||W||``."""
    approx = tt_to_dense([g.detach().double() for g in cores])
    W = W.detach().double()
    return float(torch.linalg.norm(W - approx) / torch.linalg.norm(W))
