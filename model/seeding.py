"""Deterministic PyTorch runs: the one place that switches on PyTorch's deterministic
algorithms and fixes the thread count (:func:`deterministic`), and the one way to seed a
generator from a seed and a key such as the epoch (:func:`seeded_generator`).

Training (:mod:`ttforge.model.train`), calibration and QAT (:mod:`ttforge.quant.ptq`) and
low-precision training (:mod:`ttforge.quant.stochastic`) all run inside
:func:`deterministic` and draw their shuffles from :func:`seeded_generator`, so a run is
a function of its seed (and a resumed one ends where an uninterrupted one does).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import torch

__all__ = ["deterministic", "seeded_generator"]


@contextlib.contextmanager
def deterministic(threads: int) -> Iterator[None]:
    """PyTorch's deterministic algorithms on and ``threads`` CPU threads while inside;
    both restored afterwards."""
    before = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    n_threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_only)
        torch.set_num_threads(n_threads)


def seeded_generator(seed: int, *key: int) -> torch.Generator:
    """A generator seeded from ``(seed, *key)`` through numpy's ``SeedSequence`` (e.g.
    ``seeded_generator(seed, epoch)`` for one epoch's shuffle)."""
    state = np.random.SeedSequence([seed, *key]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
