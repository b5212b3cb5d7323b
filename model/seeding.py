"""Deterministic PyTorch runs: the one place that switches on PyTorch's deterministic
algorithms and fixes the thread count (:func:`deterministic`), the one way to seed a
generator from a seed and a key such as the epoch (:func:`seeded_generator`), and the one
way a run builds and initialises its network (:func:`seeded_model`).

Training (:mod:`ttforge.model.train`), calibration and QAT (:mod:`ttforge.quant.ptq`) and
low-precision training (:mod:`ttforge.quant.stochastic`) all run inside
:func:`deterministic` and draw their shuffles from :func:`seeded_generator`, so a run is
a function of its seed (and a resumed one ends where an uninterrupted one does). None of
them draws from or reseeds torch's global generator: the initial weights come from a
generator of their own (:func:`seeded_model`), so another thread of the host drawing from
``torch.rand`` meanwhile changes neither the run nor, afterwards, the host's stream.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from ttforge.model.network import ModelConfig

__all__ = ["autograd_on", "deterministic", "empty_model", "init_weights", "seeded_generator", "seeded_model"]

# torch's deterministic-algorithms flag and thread count are process-wide: concurrent runs
# share one setting, saved by the first run to enter and given back by the last to leave
# (each saved and restored its own, and two interleaved runs left the host with the
# flag on and one thread for good)
_RUNS = threading.Condition()
_inside = 0            # runs inside deterministic(), all threads
_threads = 0           # the thread count they run with
_saved: tuple[bool, bool, int] | None = None
_mine = threading.local()   # depth of this thread's own runs (a run inside a run)


def _after_fork_in_child() -> None:
    """A forked child has only the thread that forked: the runs of the parent's other
    threads never leave there, so they are forgotten (a child's run of another thread
    count waited for them for good, and one of the same count never gave the settings
    back); the forking thread's own runs, if any, stay."""
    global _RUNS, _inside, _threads, _saved
    _RUNS = threading.Condition()        # another thread may have held the old one's lock
    _inside = getattr(_mine, "depth", 0)
    if not _inside:
        _threads, _saved = 0, None


os.register_at_fork(after_in_child=_after_fork_in_child)


@contextlib.contextmanager
def deterministic(threads: int) -> Iterator[None]:
    """PyTorch's deterministic algorithms on and ``threads`` CPU threads while inside;
    both restored afterwards, when the last of concurrent runs leaves. A run of another
    thread count waits until the others have left (torch has one thread count for the
    process, and a run's sums depend on it)."""
    global _inside, _threads, _saved
    depth = getattr(_mine, "depth", 0)
    with _RUNS:
        if not depth:
            _RUNS.wait_for(lambda: _inside == 0 or _threads == threads)
        if _inside == 0:
            _saved = (torch.are_deterministic_algorithms_enabled(),
                      torch.is_deterministic_algorithms_warn_only_enabled(), torch.get_num_threads())
            torch.use_deterministic_algorithms(True, warn_only=True)
        outer = _threads
        torch.set_num_threads(threads)
        _threads = threads
        _inside += 1
        _mine.depth = depth + 1
    try:
        yield
    finally:
        with _RUNS:
            _inside -= 1
            _mine.depth = depth
            if _inside == 0:
                assert _saved is not None
                before, warn_only, n_threads = _saved
                torch.use_deterministic_algorithms(before, warn_only=warn_only)
                torch.set_num_threads(n_threads)
                _threads, _saved = 0, None
                _RUNS.notify_all()
            elif depth:   # back to the enclosing run's count
                torch.set_num_threads(outer)
                _threads = outer


@contextlib.contextmanager
def autograd_on() -> Iterator[None]:
    """Gradients recorded inside, whatever the caller's context: training called under
    ``torch.no_grad()`` or ``torch.inference_mode()`` failed with torch's "element 0 of
    tensors does not require grad"."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def seeded_generator(seed: int, *key: int) -> torch.Generator:
    """A generator seeded from ``(seed, *key)`` through numpy's ``SeedSequence`` (e.g.
    ``seeded_generator(seed, epoch)`` for one epoch's shuffle)."""
    state = np.random.SeedSequence([seed, *key]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def empty_model(model_cfg: ModelConfig) -> nn.Sequential:
    """``build_model(model_cfg)`` in float32 on the CPU with uninitialised weights (for
    loading a state dict): no random number drawn, whatever torch's default dtype."""
    from ttforge.model.network import build_model

    with torch.device("meta"):   # thread-local: the layers' own initialisation draws nothing
        model = build_model(model_cfg)
    return model.to(torch.float32).to_empty(device="cpu")


def init_weights(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Initialise every layer of ``model`` in module order as its constructor does, drawing
    from ``generator``: after ``torch.manual_seed(s)`` building the network gives the
    weights that this gives with ``torch.Generator().manual_seed(s)``."""
    from ttforge.model.layers import TTLinear

    done: set[int] = set()
    for m in model.modules():
        if isinstance(m, TTLinear):
            m.reset_parameters(generator=generator)
        elif isinstance(m, nn.Linear):   # nn.Linear.reset_parameters, with the generator
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
            if m.bias is not None:
                fan_in = m.weight.shape[1]
                bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
                nn.init.uniform_(m.bias, -bound, bound, generator=generator)
        else:
            continue
        done.update(map(id, m.parameters()))
    left = [name for name, p in model.named_parameters() if id(p) not in done]
    if left:
        raise TypeError(f"init_weights: no initialisation for {', '.join(left)}")
    return model


def seeded_model(model_cfg: ModelConfig, seed: int) -> tuple[nn.Sequential, torch.Generator]:
    """``build_model(model_cfg)`` in float32 with the weights it had after
    ``torch.manual_seed(seed)``, drawn from a generator of its own (returned, in the state
    after the draws): torch's global generator is neither reseeded nor drawn from."""
    gen = torch.Generator().manual_seed(seed)
    return init_weights(empty_model(model_cfg), gen), gen
