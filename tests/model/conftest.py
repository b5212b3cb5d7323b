"""Fixtures shared by the fast path's tests."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """One intra-op thread: the autograd route that merges the cores through autograd."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
