"""The runs' torch context (ttforge.model.seeding): the initial weights from a generator of
their own, equal to those after ``torch.manual_seed``, and the process-wide settings of
concurrent runs given back once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from ttforge.model.network import ModelConfig, build_model
from ttforge.model.seeding import deterministic, seeded_model

CONFIGS = [ModelConfig(hidden=(32,), ranks=4), ModelConfig(kind="dense", hidden=(20, 12)),
           ModelConfig(hidden=(100, 30), ranks=3, tt_last_layer=True)]


@pytest.mark.parametrize("model_cfg", CONFIGS, ids=["tt", "dense", "tt-last"])
@pytest.mark.parametrize("seed", [0, 7, 2**63 + 5])
def test_the_weights_are_those_of_torch_manual_seed_and_the_global_generator_untouched(model_cfg, seed):
    """The weights (and the generator's state after them) are byte for byte those of the
    code path before (``torch.manual_seed(seed)`` then ``build_model``), drawn without
    reseeding or drawing from torch's global generator, in float32 whatever the default
    dtype."""
    cfg = model_cfg.with_features(64, 10).resolved()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        want = build_model(cfg).state_dict()
        want_state = torch.get_rng_state()
    host = torch.get_rng_state()
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        model, gen = seeded_model(cfg, seed)
    finally:
        torch.set_default_dtype(before)
    got = model.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert torch.equal(gen.get_state(), want_state)
    assert torch.equal(torch.get_rng_state(), host)


def test_concurrent_runs_give_back_the_hosts_settings():
    """Each run saved the deterministic-algorithms flag and the thread count as it entered
    and restored them as it left: two interleaved runs left the host with the flag on and
    one thread for good. Runs of another thread count wait for the others to leave."""
    want = (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads())
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = []

    def a():
        with deterministic(1):
            a_in.set()
            b_in.wait(5)
        a_out.set()

    def b():
        a_in.wait(5)
        with deterministic(1):
            b_in.set()
            a_out.wait(5)   # a leaves first, b last
            seen.append((torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()))

    with ThreadPoolExecutor(2) as ex:
        [f.result() for f in [ex.submit(a), ex.submit(b)]]
    assert seen == [(True, 1)]
    assert (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()) == want

    order = []

    def other_count():
        a_in.wait(5)
        with deterministic(2):
            order.append(("2 in", torch.get_num_threads()))

    a_in.clear()
    with ThreadPoolExecutor(2) as ex:
        f = ex.submit(other_count)
        with deterministic(1):
            a_in.set()
            threading.Event().wait(0.3)
            order.append(("1 still", torch.get_num_threads()))
        f.result()
    assert order == [("1 still", 1), ("2 in", 2)]
    assert (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()) == want


def _child_runs_with_two_threads(q):
    from ttforge.model.seeding import deterministic

    with deterministic(2):
        q.put(torch.get_num_threads())


def test_a_forked_child_forgets_the_runs_of_the_parents_other_threads():
    """A process forked while another thread trained inherited that run's count: a run of
    another thread count in the child waited for it for good (multiprocessing forks on
    Linux); one of the same count never gave the settings back (review V5)."""
    import multiprocessing as mp
    import threading

    from ttforge.model.seeding import deterministic

    inside, leave = threading.Event(), threading.Event()

    def background():
        with deterministic(1):
            inside.set()
            leave.wait(60)

    t = threading.Thread(target=background, daemon=True)
    t.start()
    assert inside.wait(30)
    try:
        ctx = mp.get_context("fork")
        q = ctx.Queue()
        p = ctx.Process(target=_child_runs_with_two_threads, args=(q,))
        p.start()
        p.join(30)
        alive = p.is_alive()
        if alive:
            p.kill()
        assert not alive, "the child waited for a run that does not exist in it"
        assert p.exitcode == 0 and q.get(timeout=5) == 2
    finally:
        leave.set()
        t.join(30)
