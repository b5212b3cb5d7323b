import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.nets import random_cores
from ttforge.errors import DataError, ShapeError
from ttforge.model.tt import (
    TTShape,
    factorize,
    max_ranks,
    resolve_ranks,
    tt_rel_error,
    tt_round,
    tt_svd,
    tt_to_dense,
)


def dense_by_definition(cores):
    """Entry-wise evaluation of the TT-matrix definition (independent of tt_to_dense)."""
    shape = TTShape.of_cores(cores)
    W = torch.zeros(shape.out_size, shape.in_size, dtype=cores[0].dtype)
    import itertools

    for i in itertools.product(*[range(m) for m in shape.out_modes]):
        for j in itertools.product(*[range(n) for n in shape.in_modes]):
            v = torch.ones(1, 1, dtype=cores[0].dtype)
            for k, g in enumerate(cores):
                v = v @ g[:, i[k], j[k], :]
            row = sum(i[k] * math.prod(shape.out_modes[k + 1 :]) for k in range(shape.d))
            col = sum(j[k] * math.prod(shape.in_modes[k + 1 :]) for k in range(shape.d))
            W[row, col] = v[0, 0]
    return W


def test_to_dense_matches_definition():
    cores = random_cores((2, 3, 2), (3, 2, 2), (1, 2, 3, 1))
    assert torch.allclose(tt_to_dense(cores), dense_by_definition(cores), rtol=0, atol=1e-12)


def test_to_dense_detects_swapped_modes():
    # sibling: the definition check must notice a core with m and n swapped
    cores = random_cores((2, 2, 2), (2, 2, 2), (1, 2, 2, 1))
    bad = [cores[0], cores[1].transpose(1, 2), cores[2]]
    assert not torch.allclose(tt_to_dense(bad), dense_by_definition(cores))


def test_tt_svd_full_rank_is_exact():
    W = torch.randn(12, 20, dtype=torch.float64)
    cores = tt_svd(W, (3, 2, 2), (5, 2, 2), rel_error=0.0)
    assert tt_rel_error(cores, W) < 1e-12
    assert TTShape.of_cores(cores).ranks == max_ranks((3, 2, 2), (5, 2, 2))


@settings(max_examples=40, deadline=None)
@given(
    modes=st.lists(st.tuples(st.integers(1, 4), st.integers(1, 4)), min_size=2, max_size=4),
    rel_error=st.floats(0.01, 0.9),
    seed=st.integers(0, 1000),
)
def test_tt_svd_honours_relative_error_bound(modes, rel_error, seed):
    out_modes = tuple(m for m, _ in modes)
    in_modes = tuple(n for _, n in modes)
    W = torch.randn(math.prod(out_modes), math.prod(in_modes), dtype=torch.float64,
                    generator=torch.Generator().manual_seed(seed))
    cores = tt_svd(W, out_modes, in_modes, rel_error=rel_error)
    assert tt_rel_error(cores, W) <= rel_error + 1e-12


def test_tt_svd_truncates_when_allowed():
    # a low-rank TT plus small noise: the bound lets TT-SVD find the low rank
    cores = random_cores((4, 4, 4), (4, 4, 4), (1, 2, 3, 1), seed=3)
    W = tt_to_dense(cores)
    W = W + 1e-6 * torch.randn_like(W)
    approx = tt_svd(W, (4, 4, 4), (4, 4, 4), rel_error=1e-3)
    assert TTShape.of_cores(approx).ranks == (1, 2, 3, 1)


def test_tt_svd_max_rank_caps():
    W = torch.randn(64, 64, dtype=torch.float64)
    cores = tt_svd(W, (4, 4, 4), (4, 4, 4), max_rank=5)
    assert max(TTShape.of_cores(cores).ranks) == 5


@settings(max_examples=25, deadline=None)
@given(rel_error=st.floats(0.01, 0.8), seed=st.integers(0, 1000))
def test_tt_round_honours_bound(rel_error, seed):
    cores = random_cores((3, 4, 2, 3), (2, 3, 4, 2), (1, 4, 6, 5, 1), seed=seed)
    rounded = tt_round(cores, rel_error=rel_error)
    assert tt_rel_error(rounded, tt_to_dense(cores)) <= rel_error + 1e-12
    assert TTShape.of_cores(rounded).out_modes == (3, 4, 2, 3)


def test_tt_round_removes_redundant_rank():
    # padding a TT with zero slices doubles the rank without changing the matrix
    cores = random_cores((3, 3, 3), (3, 3, 3), (1, 2, 2, 1), seed=1)
    padded = [
        torch.nn.functional.pad(cores[0], (0, 2)),
        torch.nn.functional.pad(cores[1], (0, 2, 0, 0, 0, 0, 0, 2)),
        torch.nn.functional.pad(cores[2], (0, 0, 0, 0, 0, 0, 0, 2)),
    ]
    assert TTShape.of_cores(padded).ranks == (1, 4, 4, 1)
    rounded = tt_round(padded, rel_error=1e-10)
    assert TTShape.of_cores(rounded).ranks == (1, 2, 2, 1)
    assert tt_rel_error(rounded, tt_to_dense(cores)) < 1e-10


@pytest.mark.parametrize(
    "n, d, modes",
    [(784, 4, (7, 7, 4, 4)), (10, 2, (5, 2)), (13, 2, (7, 2)), (97, 2, (14, 7)),
     (4096, 4, (8, 8, 8, 8)), (1024, 4, (8, 8, 4, 4)), (1, 3, (1, 1, 1))],
)
def test_factorize_documented_examples(n, d, modes):
    assert factorize(n, d) == modes


@given(n=st.integers(1, 5000), d=st.integers(1, 5))
@settings(max_examples=200, deadline=None)
def test_factorize_properties(n, d):
    modes = factorize(n, d)
    assert len(modes) == d
    assert n <= math.prod(modes) <= math.floor(n * 1.25)
    assert list(modes) == sorted(modes, reverse=True)


def test_factorize_without_padding_keeps_size():
    assert math.prod(factorize(97, 2, max_padding=0)) == 97


@pytest.mark.parametrize("n, d", [(0, 2), (-3, 2), (10, 0)])
def test_factorize_rejects_bad_sizes(n, d):
    with pytest.raises(ShapeError):
        factorize(n, d)


def test_max_ranks_and_resolution():
    assert max_ranks((2, 2, 2), (2, 2, 2)) == (1, 4, 4, 1)
    assert resolve_ranks(16, (2, 2, 2), (2, 2, 2)) == (1, 4, 4, 1)
    assert resolve_ranks([3, 2], (2, 2, 2), (2, 2, 2)) == (1, 3, 2, 1)
    with pytest.raises(ShapeError, match="exceeds the maximal TT rank 4"):
        resolve_ranks([5, 2], (2, 2, 2), (2, 2, 2))
    with pytest.raises(ShapeError, match="give 2 internal ranks"):
        resolve_ranks([2, 2, 2], (2, 2, 2), (2, 2, 2))
    with pytest.raises(ShapeError, match=">= 1"):
        resolve_ranks(0, (2, 2), (2, 2))


def test_shape_rejects_mismatched_modes():
    with pytest.raises(ShapeError, match="equal length"):
        TTShape((2, 2), (2, 2, 2), 2)


def test_tt_svd_rejects_wrong_modes():
    with pytest.raises(ShapeError, match="does not match"):
        tt_svd(torch.randn(10, 12), (2, 5), (3, 3), max_rank=2)
    with pytest.raises(ShapeError, match="max_rank and/or rel_error"):
        tt_svd(torch.randn(10, 12), (2, 5), (3, 4))


def test_of_cores_rejects_broken_chain():
    with pytest.raises(ShapeError, match="ends with rank 2"):
        TTShape.of_cores([torch.zeros(1, 2, 2, 2), torch.zeros(3, 2, 2, 1)])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_tt_round_refuses_non_finite_cores(bad):
    """Before: linalg.svd failed to converge (LAPACK's messages on stderr) or, for inf,
    returned garbage."""
    torch.manual_seed(0)
    cores = [torch.randn(1, 4, 8, 4), torch.randn(4, 8, 8, 1)]
    cores[1][2, 3, 4, 0] = bad
    with pytest.raises(DataError, match="a core holds NaN or infinite values"):
        tt_round(cores, rel_error=0.1)


def test_no_cores_is_a_one_line_error():
    """Before: IndexError from inside."""
    for f in (tt_to_dense, lambda c: tt_round(c, max_rank=2)):
        with pytest.raises(ShapeError, match="at least one core"):
            f([])


def test_an_integer_weight_decomposes_in_float64():
    """Before: the factors were cast back to int64, i.e. rounded to zeros."""
    w = torch.arange(256, dtype=torch.int64).reshape(16, 16)
    cores = tt_svd(w, [4, 4], [4, 4], rel_error=1e-9)
    assert all(c.dtype == torch.float64 for c in cores)
    assert torch.allclose(tt_to_dense(cores), w.double(), atol=1e-9)
