"""Tensor-train (TT) matrix math.

A weight ``W`` of shape ``(M, N)`` (``out x in``, as in :class:`torch.nn.Linear`) with
``M = prod(out_modes)`` and ``N = prod(in_modes)`` is held as ``d`` cores; core ``k``
has shape ``(r[k], m[k], n[k], r[k+1])`` with ``r[0] = r[d] = 1``, and

    W[(i_0..i_{d-1}), (j_0..j_{d-1})] = G_0[:, i_0, j_0, :] @ ... @ G_{d-1}[:, i_{d-1}, j_{d-1}, :]

where the multi-indices are row-major (``i_0`` is the most significant digit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from ttforge.errors import ShapeError

__all__ = [
    "TTShape",
    "factorize",
    "max_ranks",
    "resolve_ranks",
    "tt_to_dense",
    "tt_svd",
    "tt_round",
    "tt_rel_error",
]


def _prod(xs: Sequence[int]) -> int:
    return math.prod(int(x) for x in xs)


def max_ranks(out_modes: Sequence[int], in_modes: Sequence[int]) -> tuple[int, ...]:
    """Largest useful rank of every bond, boundaries included (``r[0] = r[d] = 1``).

    Bond ``k`` (between cores ``k-1`` and ``k``) can carry at most
    ``min(prod(m[:k] * n[:k]), prod(m[k:] * n[k:]))`` independent directions.
    """
    sizes = [int(m) * int(n) for m, n in zip(out_modes, in_modes)]
    d = len(sizes)
    return tuple(
        1 if k in (0, d) else min(_prod(sizes[:k]), _prod(sizes[k:])) for k in range(d + 1)
    )


def resolve_ranks(
    ranks: int | Sequence[int], out_modes: Sequence[int], in_modes: Sequence[int]
) -> tuple[int, ...]:
    """Turn a user's rank request into the full bond tuple ``(1, r1, ..., r_{d-1}, 1)``.

    An ``int`` means "at most this rank": each bond is clipped to its maximal rank.
    A sequence is taken literally (``d - 1`` internal ranks, or ``d + 1`` with the
    boundary ones) and a rank above the maximal TT rank is an error.
    """
    d = len(out_modes)
    limit = max_ranks(out_modes, in_modes)
    if isinstance(ranks, int) and not isinstance(ranks, bool):
        if ranks < 1:
            raise ShapeError(f"ranks={ranks} must be >= 1")
        return tuple(min(ranks, lim) for lim in limit)
    ranks = tuple(int(r) for r in ranks)
    if len(ranks) == d - 1:
        ranks = (1, *ranks, 1)
    if len(ranks) != d + 1:
        raise ShapeError(
            f"ranks has {len(ranks)} entries; give {d - 1} internal ranks for {d} cores "
            f"(or one int as an upper bound)"
        )
    if ranks[0] != 1 or ranks[-1] != 1:
        raise ShapeError(f"ranks={list(ranks)}: the boundary ranks r[0] and r[{d}] must be 1")
    for k, (r, lim) in enumerate(zip(ranks, limit)):
        if r < 1:
            raise ShapeError(f"ranks[{k}]={r} must be >= 1")
        if r > lim:
            raise ShapeError(
                f"ranks[{k}]={r} exceeds the maximal TT rank {lim} of that bond for "
                f"out_modes={list(out_modes)}, in_modes={list(in_modes)}; use ranks[{k}] <= {lim}"
            )
    return ranks


@dataclass(frozen=True)
class TTShape:
    """Modes and ranks of a TT-matrix; validated on construction.

    Parameters
    ----------
    out_modes, in_modes : tuple of int
        ``m[k]`` and ``n[k]``; their products are the (padded) out and in sizes.
    ranks : tuple of int
        All ``d + 1`` bond ranks, ``ranks[0] == ranks[d] == 1``.
    """

    out_modes: tuple[int, ...]
    in_modes: tuple[int, ...]
    ranks: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "out_modes", tuple(int(m) for m in self.out_modes))
        object.__setattr__(self, "in_modes", tuple(int(n) for n in self.in_modes))
        if len(self.out_modes) != len(self.in_modes) or not self.out_modes:
            raise ShapeError(
                f"out_modes {list(self.out_modes)} and in_modes {list(self.in_modes)} must be "
                f"non-empty and of equal length (one pair per core)"
            )
        for name, modes in (("out_modes", self.out_modes), ("in_modes", self.in_modes)):
            if any(m < 1 for m in modes):
                raise ShapeError(f"{name}={list(modes)}: every mode must be >= 1")
        object.__setattr__(self, "ranks", resolve_ranks(self.ranks, self.out_modes, self.in_modes))

    @property
    def d(self) -> int:
        """Number of cores."""
        return len(self.out_modes)

    @property
    def out_size(self) -> int:
        return _prod(self.out_modes)

    @property
    def in_size(self) -> int:
        return _prod(self.in_modes)

    @property
    def core_shapes(self) -> tuple[tuple[int, int, int, int], ...]:
        r, m, n = self.ranks, self.out_modes, self.in_modes
        return tuple((r[k], m[k], n[k], r[k + 1]) for k in range(self.d))

    @property
    def n_params(self) -> int:
        """Number of core entries."""
        return sum(_prod(s) for s in self.core_shapes)

    def with_ranks(self, ranks: Sequence[int]) -> "TTShape":
        return TTShape(self.out_modes, self.in_modes, tuple(ranks))

    @classmethod
    def of_cores(cls, cores: Sequence[torch.Tensor]) -> "TTShape":
        """The shape of a list of 4-way cores (checks that the bonds chain)."""
        for k, g in enumerate(cores):
            if g.dim() != 4:
                raise ShapeError(f"core {k} has {g.dim()} axes; TT-matrix cores have 4 (r, m, n, r')")
            if k and cores[k - 1].shape[3] != g.shape[0]:
                raise ShapeError(
                    f"core {k - 1} ends with rank {cores[k - 1].shape[3]} but core {k} starts "
                    f"with rank {g.shape[0]}"
                )
        ranks = [int(cores[0].shape[0])] + [int(g.shape[3]) for g in cores]
        return cls(
            tuple(int(g.shape[1]) for g in cores), tuple(int(g.shape[2]) for g in cores), tuple(ranks)
        )


def _best_split(n: int, d: int) -> tuple[int, ...]:
    """Factors of ``n`` into ``d`` factors >= 1 with the smallest sum (most balanced).

    Ties go to the lexicographically largest descending tuple; output is descending.
    """
    best: tuple[int, ...] | None = None

    def rec(rest: int, parts: int, cap: int, acc: tuple[int, ...]) -> None:
        nonlocal best
        if parts == 1:
            if rest <= cap:
                cand = acc + (rest,)
                if best is None or (sum(cand), tuple(-c for c in cand)) < (
                    sum(best),
                    tuple(-c for c in best),
                ):
                    best = cand
            return
        # the largest remaining factor is at least ceil(rest ** (1/parts))
        lo = max(1, math.ceil(round(rest ** (1.0 / parts), 9)))
        for f in range(min(cap, rest), lo - 1, -1):
            if rest % f == 0:
                rec(rest // f, parts - 1, f, acc + (f,))

    rec(n, d, n, ())
    assert best is not None
    return best


def factorize(n: int, d: int, max_padding: float = 0.25) -> tuple[int, ...]:
    """Split a size into ``d`` modes, padding it up where it factors badly.

    The rule: a split of ``n'`` is *good* when its largest mode is at most twice
    ``ceil(n' ** (1/d))``. The result is the split with the smallest sum of modes (a TT
    core holds ``r^2 * m * n`` entries, so the sum tracks the parameter count; ties go
    to the more balanced split) of the smallest ``n' in [n, n * (1 + max_padding)]``
    that has a good split. If none has, ``n`` is split without padding (modes of 1 are
    allowed). Modes come in descending order; their product is ``n'`` and the caller
    zero-pads from ``n`` to ``n'``.

    Examples: ``factorize(784, 4) == (7, 7, 4, 4)``, ``factorize(10, 2) == (5, 2)``,
    ``factorize(13, 2) == (7, 2)`` (padded to 14), ``factorize(97, 2) == (14, 7)``
    (padded to 98).
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ShapeError(f"size {n!r} cannot be factored: it must be a positive integer")
    if not isinstance(d, int) or isinstance(d, bool) or d < 1:
        raise ShapeError(f"number of modes d={d!r} must be a positive integer")
    if max_padding < 0:
        raise ShapeError(f"max_padding={max_padding} must be >= 0")
    for size in range(n, int(math.floor(n * (1 + max_padding))) + 1):
        split = _best_split(size, d)
        if split[0] <= 2 * math.ceil(round(size ** (1.0 / d), 9)):
            return split
    return _best_split(n, d)


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
    """
    _check_truncation_args(max_rank, rel_error)
    out_modes, in_modes = tuple(out_modes), tuple(in_modes)
    M, N = _prod(out_modes), _prod(in_modes)
    if tuple(W.shape) != (M, N):
        raise ShapeError(
            f"weight of shape {tuple(W.shape)} does not match out_modes {list(out_modes)} "
            f"(product {M}) x in_modes {list(in_modes)} (product {N}); pad or choose other modes"
        )
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
    return [g.to(W.dtype) for g in cores]


def tt_round(
    cores: Sequence[torch.Tensor], max_rank: int | None = None, rel_error: float | None = None
) -> list[torch.Tensor]:
    """Truncate the ranks of an existing TT (orthogonalize right-to-left, then SVD left-to-right).

    Same guarantee as :func:`tt_svd`: with ``rel_error`` alone the result is within
    ``rel_error`` (relative Frobenius norm) of the input TT.
    """
    _check_truncation_args(max_rank, rel_error)
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
