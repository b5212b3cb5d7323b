"""Fixtures shared by the fast path's tests."""

import pytest
import torch

import ttforge.model.fast as fast


@pytest.fixture
def one_thread():
    """One intra-op thread: the autograd route that merges the cores through autograd."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def custom_backward(request, monkeypatch):
    """The fast path's own tests (``test_fast*.py``) run its custom backward at every
    batch: small batches otherwise take plain autograd operations
    (``fast.PLAIN_WHEN_KEPT``), which ``test_fast_plain.py`` covers."""
    name = request.module.__name__.rpartition(".")[2]
    if name.startswith("test_fast") and name != "test_fast_plain":
        monkeypatch.setattr(fast, "PLAIN_WHEN_KEPT", False)
