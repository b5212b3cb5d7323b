"""How a failed case states its first output difference (ttforge.sim.check): a missing,
extra or differently wide output is named for what it is (an RTL run that returned no
vector said 'vector 0, output element None: expected None, got None')."""

from __future__ import annotations

import numpy as np
import pytest

from ttforge.sim.check import _first_output_diff

WANT = np.arange(12, dtype=np.int64).reshape(4, 3)


def test_an_element_that_differs_is_named_with_its_values():
    got = WANT.copy()
    got[2, 1] += 5
    got[3, 0] -= 1
    first = _first_output_diff(got, WANT)
    assert (first["vector"], first["element"], first["expected"], first["got"]) == (2, 1, 7, 12)
    assert first["mismatched"] == 2
    assert first["detail"] == "first: vector 2, output element 1: expected 7, got 12"


@pytest.mark.parametrize("n, vector, mismatched, detail", [
    (0, 0, 4, "the RTL returned 0 of 4 vectors: no output for vector 0 and after"),
    (3, 3, 1, "the RTL returned 3 of 4 vectors: no output for vector 3 and after"),
    (6, None, 2, "the RTL returned 6 of 4 vectors: 2 output vector(s) more than the 4 sent"),
])
def test_missing_or_extra_vectors_are_named(n, vector, mismatched, detail):
    got = np.concatenate([WANT, WANT])[:n].reshape(n, 3)
    first = _first_output_diff(got, WANT)
    assert (first["vector"], first["element"], first["mismatched"], first["detail"]) == (vector, None, mismatched, detail)


def test_a_missing_vector_after_a_differing_one_names_the_difference_first():
    got = WANT[:2].copy()
    got[1, 2] = 99
    first = _first_output_diff(got, WANT)
    assert (first["vector"], first["element"], first["mismatched"]) == (1, 2, 3)


def test_another_output_width_is_named():
    first = _first_output_diff(np.zeros((4, 2), np.int64), WANT)
    assert first["vector"] is None and first["mismatched"] == 4
    assert first["detail"] == "the RTL returned outputs of shape (4, 2); (4, 3) were due"
