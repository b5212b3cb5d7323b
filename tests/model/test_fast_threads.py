"""The fast path's thread choice (ttforge.model.fast.THREADS = "auto", _ThreadTuner):
it follows the measured times, and the products it times give the same function at
either thread count."""

import os
import threading

import pytest
import torch

import ttforge.model.fast as fast
from ttforge.model.layers import TTLinear, apply_schedule


def _drive(tuner, cost, calls, n=2, key="k"):
    """Run ``calls`` picks, each recorded with ``cost(call, threads)`` seconds; the picks."""
    picks = []
    for i in range(calls):
        t = tuner.pick(key, n)
        tuner.record(key, n, t, cost(i, t))
        picks.append(t)
    return picks


def _probes(picks, fast_count, start):
    """Indices from ``start`` on where the other count ran."""
    return [i for i, t in enumerate(picks) if i >= start and t != fast_count]


@pytest.mark.parametrize("fast_count", [1, 2])
def test_the_faster_count_is_chosen_after_trying_both(fast_count):
    """Both counts are tried (two threads winning by 1.5x after three calls, one thread
    after four), then the faster one runs; the slower one is only probed, one call at a
    time, at intervals that double, the first after RETRY calls where one thread won
    and RETRY_MORE where two did."""
    picks = _drive(fast._ThreadTuner(), lambda i, t: 1.0 if t == fast_count else 1.5, 300)
    assert picks[:4] == ([1, 2, 2, 1] if fast_count == 1 else [1, 2, 2, 2])
    trials = 4 if fast_count == 1 else 3
    slow = _probes(picks, fast_count, trials)
    assert 1 <= len(slow) <= 8  # probes 4 (16), 8 (32), ..., 256 calls apart
    # two threads won against one one-thread time (the region's first call): retimed soon
    assert slow[0] == trials - 1 + fast._ThreadTuner.RETRY
    if fast_count == 2:  # then at intervals from RETRY_MORE on
        assert slow[1] - slow[0] == fast._ThreadTuner.RETRY_MORE
    assert all(slow[k + 1] - slow[k] >= 2 * (slow[k] - slow[k - 1]) for k in range(1, len(slow) - 1))


@pytest.mark.parametrize("fast_count", [1, 2])
def test_a_count_much_slower_is_tried_twice_then_probed(fast_count):
    """A count five times as slow as the other (a busy core) runs its two trials (one
    slow trial does not decide: it may be a slow start), then only single probes
    whose intervals double."""
    picks = _drive(fast._ThreadTuner(), lambda i, t: 1.0 if t == fast_count else 5.0, 40)
    assert picks[:4] == ([1, 2, 2, 1] if fast_count == 1 else [1, 2, 2, 2])
    trials = 4 if fast_count == 1 else 3
    slow = _probes(picks, fast_count, trials)
    assert len(slow) <= 4 and all(b - a > 1 for a, b in zip(slow, slow[1:]))  # 4, 8, 16 apart
    assert picks[trials:trials + 3] == [fast_count] * 3


@pytest.mark.parametrize("fast_count", [1, 2])
def test_a_slow_start_is_corrected_within_a_few_calls(fast_count):
    """The faster count's first calls are slow: two threads' first three (right after a
    program moves to two threads its first parallel regions can be several times
    slower), one thread's first (a region's first call is cold, and one thread takes
    it): a probe soon after finds it fast, one confirming call switches, and from call
    15 on it runs except for single probes of the other."""
    seen = {1: 0, 2: 0}
    slow_calls = 3 if fast_count == 2 else 1

    def cost(i, t):
        seen[t] += 1
        if t != fast_count:
            return 1.0
        return 8.0 if seen[t] <= slow_calls else 0.5

    picks = _drive(fast._ThreadTuner(), cost, 40)
    assert picks[14:].count(fast_count) >= len(picks[14:]) - 3
    slow = _probes(picks, fast_count, 14)
    assert all(b - a > 1 for a, b in zip(slow, slow[1:]))


def test_two_threads_win_early_only_by_a_clear_margin():
    """Two threads 1.1x faster (less than EARLY): the fourth trial runs, and with two
    one-thread times the first probe comes RETRY_MORE calls on."""
    picks = _drive(fast._ThreadTuner(), lambda i, t: 1.0 if t == 2 else 1.1, 100)
    assert picks[:4] == [1, 2, 2, 1]
    slow = _probes(picks, 2, 4)
    assert slow[0] == 3 + fast._ThreadTuner.RETRY_MORE


class _OldSlower(fast._ThreadTuner):
    """Sibling: a call at two threads counts as slow only past SLOWER (as before
    SLOWER_MORE)."""

    SLOWER_MORE = fast._ThreadTuner.SLOWER


@pytest.mark.parametrize("tuner, caught", [(fast._ThreadTuner, True), (_OldSlower, False)])
def test_two_threads_slower_than_one_thread_is_retried_at_once(tuner, caught):
    """Two threads chosen; from call 30 they take 1.2x one thread's time (a core partly
    taken): two such calls in a row retry one thread at once, which then wins; the
    sibling waits for the next probe."""
    change = 30

    def cost(i, t):
        return (1.0 if t == 1 else 0.5) if i < change else (1.0 if t == 1 else 1.2)

    picks = _drive(tuner(), cost, 60)
    assert picks[change - 1:change + 2] == [2, 2, 2]
    assert (picks[change + 2] == 1) is caught
    if caught:
        assert picks[change + 6:].count(1) >= len(picks[change + 6:]) - 3


def test_a_single_lucky_probe_does_not_switch():
    """Two threads beside a busy core are slow but once fast: the confirming call is
    slow again, and one thread stays (but for single probes)."""
    seen = {1: 0, 2: 0}

    def cost(i, t):
        seen[t] += 1
        return 1.0 if t == 1 else (0.4 if seen[t] == 3 else 5.0)

    picks = _drive(fast._ThreadTuner(), cost, 40)
    assert picks[:2] == [1, 2]
    lucky = [i for i, t in enumerate(picks) if t == 2][2]
    assert picks[lucky + 1] == 2  # the confirmation
    slow = _probes(picks, 1, lucky + 2)
    assert all(b - a > 1 for a, b in zip(slow, slow[1:])) and len(slow) <= 3


def test_a_tuner_without_confirmation_is_caught():
    """Sibling: a tuner whose probes are never confirmed stays on the count its slow
    start chose for longer than the slow-start test allows."""

    class Unconfirmed(fast._ThreadTuner):
        def record(self, key, n, t, seconds):
            super().record(key, n, t, seconds)
            st = self.state[(key, n)]
            if st["retry"] == t:
                st["retry"] = None

    seen = {1: 0, 2: 0}

    def cost(i, t):
        seen[t] += 1
        return 1.0 if t == 1 else (8.0 if seen[t] <= 3 else 0.5)

    picks = _drive(Unconfirmed(), cost, 40)
    assert picks[14:].count(2) < len(picks[14:]) - 3


def test_the_choice_follows_a_change_of_load():
    """Two threads win while idle; once two calls in a row at two threads take longer
    than one thread's median (a core taken), one thread is retried at once, and kept
    once two threads' median is the slower (three slow calls); afterwards two threads
    only in single probes."""
    busy_from = 40

    def cost(i, t):
        if i < busy_from:
            return 1.0 if t == 2 else 1.6
        return 8.0 if t == 2 else 1.6

    picks = _drive(fast._ThreadTuner(), cost, 60)
    probes = _probes(picks, 2, 4)
    probes = [i for i in probes if i < busy_from]
    assert len(probes) <= 5 and all(b - a > 1 for a, b in zip(probes, probes[1:]))
    assert picks[busy_from:busy_from + 2] == [2, 2] and picks[busy_from + 2] == 1
    late = _probes(picks, 1, busy_from + 6)
    assert len(late) <= 3 and all(b - a > 1 for a, b in zip(late, late[1:]))


def test_a_broken_tuner_is_caught():
    """Sibling: a tuner that keeps the first count whatever it measures fails the
    first test's check."""

    class Stuck(fast._ThreadTuner):
        def pick(self, key, n):
            super().pick(key, n)
            return 1

    picks = _drive(Stuck(), lambda i, t: 1.0 if t == 2 else 1.5, 100)
    assert picks[:4] != [1, 2, 2, 2]


@pytest.fixture
def two_threads_auto(monkeypatch):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    monkeypatch.setattr(fast, "THREADS", "auto")
    monkeypatch.setattr(fast, "_TUNER", fast._ThreadTuner())
    yield
    torch.set_num_threads(before)


def test_every_count_the_tuner_picks_gives_the_schedule_function(two_threads_auto):
    """Enough calls that both counts run the forward and the backward (float64: equal
    to the hardware order within rounding)."""
    torch.manual_seed(5)
    layer = TTLinear(64, 48, ranks=[3, 4], in_modes=[4, 4, 4], out_modes=[4, 3, 4]).double()
    x = torch.randn(33, 64, dtype=torch.float64, requires_grad=True)
    ref = apply_schedule(x, list(layer.cores), layer.schedule) + layer.bias
    gref = torch.autograd.grad(ref.sum(), [x, *layer.cores])
    seen = set()
    orig = fast._TUNER.pick

    def pick(key, n):
        t = orig(key, n)
        seen.add((key[3], t))
        return t

    fast._TUNER.pick = pick
    for _ in range(6):
        y = layer(x)
        g = torch.autograd.grad(y.sum(), [x, *layer.cores])
        assert torch.allclose(y, ref, rtol=1e-12, atol=1e-12)
        for a, b in zip(g, gref):
            assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)
    assert seen >= {("forward", 1), ("forward", 2), ("backward", 1), ("backward", 2)}


def test_off_the_cpu_or_with_a_fixed_count_nothing_is_timed(monkeypatch):
    """THREADS as a number caps the threads without a tuner; a key of None (another
    device) is never timed."""
    tuner = fast._ThreadTuner()
    monkeypatch.setattr(fast, "_TUNER", tuner)
    monkeypatch.setattr(fast, "THREADS", 1)
    with fast._compute(("k",)):
        pass
    monkeypatch.setattr(fast, "THREADS", "auto")
    with fast._compute(None):
        pass
    assert tuner.state == {}


def _fwd_bwd_twice():
    """Forward+backward of one layer twice on the same input: the two results."""
    torch.manual_seed(7)
    layer = TTLinear(1024, 1024, ranks=8, in_modes=[4, 8, 8, 4], out_modes=[4, 8, 8, 4])
    x = torch.randn(256, 1024, requires_grad=True)
    runs = []
    for _ in range(2):
        y = layer(x)
        runs.append([y, *torch.autograd.grad(y.square().sum(), [x, *layer.cores])])
    return runs


def test_deterministic_algorithms_fix_the_count_and_results_repeat(two_threads_auto):
    """Under deterministic algorithms (what training runs in) "auto" times nothing and
    runs torch's count: the same call gives the same bits."""
    from ttforge.model.seeding import deterministic

    with deterministic(2):
        a, b = _fwd_bwd_twice()
    assert fast._TUNER.state == {}
    for u, v in zip(a, b):
        assert torch.equal(u, v)


def test_without_deterministic_algorithms_auto_is_timed(two_threads_auto):
    """Sibling: outside deterministic algorithms the tuner picks (and times) the count,
    which is what may change the last bits between calls."""
    _fwd_bwd_twice()
    assert fast._TUNER.state != {}


def test_a_seeded_training_run_at_two_threads_repeats(tmp_path, two_threads_auto):
    """``ttforge.model.train.train`` at 2 threads, twice from one seed: equal weights."""
    from ttforge.model.network import ModelConfig
    from ttforge.model.train import TrainConfig, train

    cfg = TrainConfig(model=ModelConfig(hidden=(32,), ranks=4), epochs=1, batch_size=128,
                      threads=2)
    a = train(cfg, tmp_path / "a", progress=False).model.state_dict()
    b = train(cfg, tmp_path / "b", progress=False).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert fast._TUNER.state == {}


class _Losing(fast._ThreadTuner):
    """Picks two threads and expects one thread to take ``expect`` seconds."""

    def __init__(self, expect):
        super().__init__()
        self.expected, self.recorded = expect, []

    def pick(self, key, n):
        return 2

    def expect(self, key, n, t):
        return self.expected

    def record(self, key, n, t, seconds):
        self.recorded.append((key[3], t, seconds))


def _threads_per_chunk(monkeypatch, tuner):
    """Forward+backward of a chunked layer under ``tuner``: the thread count each
    step of each chunk ran on, per pass, and the gradients against the hardware order
    (the backward on intra-op threads, not split: SPLIT_BACKWARD off)."""
    monkeypatch.setattr(fast, "_TUNER", tuner)
    monkeypatch.setattr(fast, "SPLIT_BACKWARD", False)
    monkeypatch.setattr(fast, "CHUNK_ELEMENTS", 1 << 12)  # chunks of 2 samples
    monkeypatch.setattr(fast, "BACKWARD_CHUNK_ELEMENTS", 1 << 12)
    fast._plan_cached.cache_clear()
    seen = []
    step = fast._step
    monkeypatch.setattr(fast, "_step", lambda *a, **k: seen.append(torch.get_num_threads()) or step(*a, **k))
    torch.manual_seed(2)
    layer = TTLinear(512, 512, ranks=4, in_modes=[8, 8, 8], out_modes=[8, 8, 8]).double()
    x = torch.randn(40, 512, dtype=torch.float64)
    assert fast.plan_for(layer.tt_shape, 40).chunk == 2
    try:
        y = layer(x)
        g = torch.autograd.grad(y.sum(), list(layer.cores))
    finally:
        fast._plan_cached.cache_clear()
    ref = apply_schedule(x, list(layer.cores), layer.schedule) + layer.bias
    assert torch.allclose(y, ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(g, torch.autograd.grad(ref.sum(), list(layer.cores))):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)
    return seen


def test_a_count_losing_within_a_call_hands_the_rest_to_the_other(two_threads_auto, monkeypatch):
    """Two threads projected far slower than one thread's median (a busy core) run a
    sixteenth of the region; the rest runs on one thread, and the call is recorded at
    the projected time; torch's count is back afterwards."""
    tuner = _Losing(1e-9)
    seen = _threads_per_chunk(monkeypatch, tuner)
    assert seen[0] == 2 and seen[-1] == 1 and 1 < seen.count(2) < len(seen) // 2
    assert [(w, t) for w, t, _ in tuner.recorded] == [("forward", 2), ("backward", 2)]
    assert all(s > 1e-6 for _, _, s in tuner.recorded)
    assert torch.get_num_threads() == 2


def test_without_a_median_to_lose_against_the_count_stays(two_threads_auto, monkeypatch):
    """Sibling: with nothing to compare (the other count not yet timed) every chunk
    runs on the picked count."""
    assert set(_threads_per_chunk(monkeypatch, _Losing(None))) == {2}


class _Picks(fast._ThreadTuner):
    """Always picks ``count`` (nothing to compare against)."""

    def __init__(self, count):
        super().__init__()
        self.count = count

    def pick(self, key, n):
        return self.count

    def expect(self, key, n, t):
        return None

    def record(self, key, n, t, seconds):
        pass


def _chunk_sizes(monkeypatch, count, split=False):
    """Forward (inference) and forward+backward of a chunked layer with the tuner
    picking ``count``: the samples of each step's chunk, the one-thread plan, and the
    results checked against the hardware order (float64); the backward split or not
    (:data:`fast.SPLIT_BACKWARD`)."""
    monkeypatch.setattr(fast, "_TUNER", _Picks(count))
    monkeypatch.setattr(fast, "SPLIT_BACKWARD", split)
    monkeypatch.setattr(fast, "SPLIT_MACS", 1)  # this small layer split too
    monkeypatch.setattr(fast, "CHUNK_ELEMENTS", 1 << 12)
    monkeypatch.setattr(fast, "BACKWARD_CHUNK_ELEMENTS", 1 << 12)
    fast._plan_cached.cache_clear()
    fast._for_threads.cache_clear()
    sizes = []
    step = fast._step
    monkeypatch.setattr(fast, "_step", lambda t, C, s, b, *a, **k: sizes.append(b) or step(t, C, s, b, *a, **k))
    torch.manual_seed(2)
    layer = TTLinear(512, 512, ranks=4, in_modes=[8, 8, 8], out_modes=[8, 8, 8]).double()
    x = torch.randn(40, 512, dtype=torch.float64)
    try:
        plan = fast.plan_for(layer.tt_shape, 40)
        ref = apply_schedule(x, list(layer.cores), layer.schedule) + layer.bias
        with torch.no_grad():
            assert torch.allclose(layer(x), ref, rtol=1e-12, atol=1e-12)
        y = layer(x)
        g = torch.autograd.grad(y.sum(), list(layer.cores))
        for a, b in zip(g, torch.autograd.grad(ref.sum(), list(layer.cores))):
            assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)
    finally:
        fast._plan_cached.cache_clear()
        fast._for_threads.cache_clear()
    return sizes, plan


def test_a_region_on_two_threads_runs_their_larger_chunks(two_threads_auto, monkeypatch):
    """Under "auto" the plan is the one-thread plan; a region the tuner runs on two
    threads takes the two-thread chunks (4x the values: fewer parallel regions), with
    the same merges and order, so the same function."""
    sizes, plan = _chunk_sizes(monkeypatch, 2)
    two = fast._for_threads(plan, 2)
    assert plan.chunk == 2 and two.chunk == 8 and two.groups == plan.groups
    assert two.schedule == plan.schedule
    assert max(sizes) == 8 and 2 not in sizes


def test_a_split_backward_takes_the_one_thread_chunks(two_threads_auto, monkeypatch):
    """Split, each half of the backward runs the one-thread plan's chunks (on one
    intra-op thread each), the forward the two-thread chunks."""
    sizes, plan = _chunk_sizes(monkeypatch, 2, split=True)
    assert plan.chunk == 2 and fast._for_threads(plan, 2).chunk == 8
    assert set(sizes) == {8, 2}  # without the split, 2 is not among them (the test above)


def test_a_region_on_one_thread_keeps_the_plan_chunks(two_threads_auto, monkeypatch):
    """Sibling: picked one thread, every chunk is the plan's own."""
    sizes, plan = _chunk_sizes(monkeypatch, 1)
    assert set(sizes) == {plan.chunk}


def test_the_tuner_forgets_the_least_recently_picked_regions():
    """Its keys hold the exact batch size: a server fed many sizes keeps at most KEYS
    records, the recently used ones, and a record for a forgotten region is dropped."""
    tuner = fast._ThreadTuner()
    tuner.pick("hot", 2)
    for b in range(3 * tuner.KEYS):
        tuner.pick(("batch", b), 2)
        if b % 100 == 0:
            tuner.pick("hot", 2)  # kept: picked again and again
    assert len(tuner.state) == tuner.KEYS
    assert ("hot", 2) in tuner.state and (("batch", 0), 2) not in tuner.state
    assert (("batch", 3 * tuner.KEYS - 1), 2) in tuner.state
    tuner.record(("batch", 0), 2, 1, 0.01)  # picked, then forgotten: no error, no record
    assert (("batch", 0), 2) not in tuner.state and len(tuner.state) == tuner.KEYS
    tuner.record("hot", 2, 1, 0.01)
    assert tuner.state[("hot", 2)]["times"][1] == [0.01]


# -- the split backward (SPLIT_BACKWARD) ---------------------------------------------
@pytest.fixture
def two_threads_fixed(monkeypatch):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    monkeypatch.setattr(fast, "THREADS", 2)
    yield
    torch.set_num_threads(before)


def _split_calls(monkeypatch):
    """The thread counts :func:`fast._backward_split` is called with, as they come."""
    calls = []
    orig = fast._backward_split
    monkeypatch.setattr(fast, "_backward_split", lambda *a: calls.append(a[-1]) or orig(*a))
    return calls


def _split_error(batch, need_x):
    """Largest difference between the fast path's gradients at two threads and the
    hardware order's (float64): the 1024 x 1024 rank-8 layer, whose plan keeps its
    intermediates at batch 3 and chunks them (32 samples) above."""
    torch.manual_seed(11)
    layer = TTLinear(1024, 1024, ranks=8, in_modes=[4, 8, 8, 4], out_modes=[4, 8, 8, 4]).double()
    x = torch.randn(batch, 1024, dtype=torch.float64, requires_grad=need_x)
    wrt = ([x] if need_x else []) + list(layer.cores)
    ref = apply_schedule(x, list(layer.cores), layer.schedule) + layer.bias
    gref = torch.autograd.grad(ref.square().sum(), wrt)
    y = layer(x)
    g = torch.autograd.grad(y.square().sum(), wrt)
    return max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(g, gref))


@pytest.mark.parametrize("need_x", [True, False])
@pytest.mark.parametrize("batch", [3, 40, 200])
def test_the_split_backward_gives_the_hardware_order_gradients(two_threads_fixed, monkeypatch,
                                                               batch, need_x):
    """At two threads the backward runs as two halves of the batch on two Python
    threads (kept intermediates at batch 3, split below SPLIT_MACS here; chunks of 32
    above; with and without the input's gradient): the gradients are the hardware
    order's within float64 rounding."""
    monkeypatch.setattr(fast, "SPLIT_MACS", 1)
    calls = _split_calls(monkeypatch)
    assert _split_error(batch, need_x) < 1e-12
    assert calls == [2]
    assert torch.get_num_threads() == 2


def test_a_split_that_loses_a_part_is_caught(two_threads_fixed, monkeypatch):
    """Sibling: a split whose second part's matrix gradients are dropped fails the
    comparison above."""
    monkeypatch.setattr(fast, "SPLIT_MACS", 1)
    part = fast._part

    def lossy(x, gy, *rest):
        gms = part(x, gy, *rest)
        return gms if threading.current_thread() is threading.main_thread() else [0 * g for g in gms]

    monkeypatch.setattr(fast, "_part", lossy)
    assert _split_error(40, True) > 1e-3


def test_without_the_split_or_under_deterministic_algorithms_it_is_not_used(two_threads_fixed, monkeypatch):
    """Sibling: SPLIT_BACKWARD off, parts of less than SPLIT_MACS of work (up to 511
    samples of this layer), or deterministic algorithms on (training's runs: products
    on torch's threads): no split; 512 samples a part split."""
    from ttforge.model.seeding import deterministic

    calls = _split_calls(monkeypatch)
    monkeypatch.setattr(fast, "SPLIT_BACKWARD", False)
    assert _split_error(40, True) < 1e-12
    monkeypatch.setattr(fast, "SPLIT_BACKWARD", True)
    assert _split_error(1, True) < 1e-12
    assert _split_error(5, True) < 1e-12
    assert _split_error(1023, True) < 1e-12  # 511 samples a part: 268 M MACs, below SPLIT_MACS
    with deterministic(2):
        _split_error(1024, True)
    assert calls == []
    assert _split_error(1024, True) < 1e-12  # 512 samples, 2^28 MACs a part
    assert calls == [2]


def test_the_split_backward_repeats_bit_for_bit(two_threads_fixed, monkeypatch):
    """A fixed split and a fixed order of the sums: the same call, the same bits."""
    monkeypatch.setattr(fast, "SPLIT_MACS", 1)
    calls = _split_calls(monkeypatch)
    a, b = _fwd_bwd_twice()
    assert calls == [2, 2]
    for u, v in zip(a, b):
        assert torch.equal(u, v)


def test_a_split_whose_chunks_move_between_calls_does_not_repeat(two_threads_fixed, monkeypatch):
    """Sibling: parts whose chunks differ from call to call (the same function, another
    order of the sums) give other last bits, which the comparison above catches."""
    monkeypatch.setattr(fast, "SPLIT_MACS", 1)
    real, calls = fast._backward_split, []

    def moving(x, gy, mats, steps, need_x, chunk, kept, threads):
        calls.append(1)
        return real(x, gy, mats, steps, need_x, chunk - len(calls) % 2, kept, threads)

    monkeypatch.setattr(fast, "_backward_split", moving)
    a, b = _fwd_bwd_twice()
    assert len(calls) == 2
    assert all(((u - v).abs().max() / v.abs().max()).item() < 1e-5 for u, v in zip(a, b))
    assert not all(torch.equal(u, v) for u, v in zip(a, b))


def test_an_error_in_a_worker_part_reaches_the_caller(two_threads_fixed, monkeypatch):
    """A part that fails on the worker thread raises in the backward's caller, after the
    calling thread's part; torch's thread count is restored."""
    monkeypatch.setattr(fast, "SPLIT_MACS", 1)
    buffered = fast._backward_buffered

    def failing(*a, **k):
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("worker part failed")
        return buffered(*a, **k)

    monkeypatch.setattr(fast, "_backward_buffered", failing)
    with pytest.raises(RuntimeError, match="worker part failed"):
        _split_error(40, True)
    assert torch.get_num_threads() == 2


def test_clear_workspace_ends_the_split_threads(two_threads_fixed, monkeypatch):
    """The split's Python threads (and their work blocks) go with clear_workspace and
    come back when needed."""
    monkeypatch.setattr(fast, "SPLIT_MACS", 1)
    def workers():
        return [t for t in threading.enumerate() if t.name.startswith("ttforge-backward")]

    _split_error(40, True)
    assert workers()
    fast.clear_workspace()
    assert not workers() and fast._SPLIT_POOL.pool is None
    assert _split_error(40, True) < 1e-12 and workers()


class _ShutDownMeanwhile(fast._SplitPool):
    """A pool whose executor, once chosen, sees another thread try to shut it down
    (``clear_workspace`` elsewhere) before the submission. ``locked``: submit as
    ``fast._SplitPool`` does (choice and submission under one lock); else the racy
    way (the lock released between them)."""

    def __init__(self, locked):
        super().__init__()
        self.locked = locked

    def _executor(self, workers):
        ex = super()._executor(workers)
        self.other = threading.Thread(target=self.shutdown)  # waits for the lock
        self.other.start()
        return ex

    def submit(self, workers, fn, *args):
        if self.locked:
            return super().submit(workers, fn, *args)
        with self.lock:
            ex = self._executor(workers)
        self.other.join()  # the other thread's shutdown, in the gap
        return ex.submit(fn, *args)


@pytest.mark.parametrize("locked", [True, False])
def test_clear_workspace_cannot_shut_the_executor_under_a_submission(two_threads_fixed, monkeypatch, locked):
    """Another thread's clear_workspace between the choice of the executor and the
    submission waits for the submission; the racy sibling fails ("cannot schedule new
    futures after shutdown")."""
    monkeypatch.setattr(fast, "SPLIT_MACS", 1)
    monkeypatch.setattr(fast, "_SPLIT_POOL", _ShutDownMeanwhile(locked))
    if locked:
        assert _split_error(40, True) < 1e-12
    else:
        with pytest.raises(RuntimeError, match="after shutdown"):
            _split_error(40, True)


def _forked_split(inherit: bool, timeout: float):
    """``_backward_split`` in a forked child after the parent used its threads (the
    child at one intra-op thread: OpenMP itself is not usable after a fork); with
    ``inherit`` the child gets the parent's executor. The child's exit code (``None``:
    still running at ``timeout``, then killed) and whether its gradient equals the
    parent's."""
    import multiprocessing as mp

    torch.manual_seed(3)
    layer = TTLinear(1024, 1024, ranks=8, in_modes=[4, 8, 8, 4], out_modes=[4, 8, 8, 4])
    plan = fast.plan_for(layer.tt_shape, 64, 1)
    with torch.no_grad():
        mats = [m.detach() for m in fast._step_matrices(list(layer.cores), plan)]
    x, gy = torch.randn(64, 1024), torch.randn(64, 1024)
    args = (x, gy, mats, plan.schedule.steps, True, 16, None, 2)
    ref = fast._backward_split(*args)[0]
    ctx = mp.get_context("fork")
    q = ctx.Queue()

    def child():
        if inherit:
            fast._SPLIT_POOL._executor = lambda workers: fast._SPLIT_POOL.pool
        q.put(bool(torch.equal(fast._backward_split(*args)[0], ref)))

    p = ctx.Process(target=child)
    p.start()
    p.join(timeout)
    code = p.exitcode
    if code is None:
        p.kill()
        p.join()
    return code, (q.get(timeout=5) if code == 0 else None)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_makes_its_own_split_threads():
    """A child forked after the parent ran the split has none of its threads: it makes
    its own and gets the parent's gradient."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert _forked_split(False, 60) == (0, True)
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_an_inherited_executor_would_hang_the_child():
    """Sibling: handed the parent's executor, the child waits for threads that are not
    there (what the pid check prevents)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert _forked_split(True, 3)[0] is None
    finally:
        torch.set_num_threads(before)


def _interrupted_set(monkeypatch):
    """``torch.set_num_threads`` that raises KeyboardInterrupt as its first lowering
    returns: what CPython does with a Ctrl-C that arrived during the C call."""
    real = torch.set_num_threads
    armed = [True]

    def set_then_interrupted(k):
        before = torch.get_num_threads()
        real(k)
        if armed[0] and k < before:
            armed[0] = False
            raise KeyboardInterrupt

    monkeypatch.setattr(torch, "set_num_threads", set_then_interrupted)


@pytest.mark.parametrize("where", ["limit", "tuned"])
def test_a_ctrl_c_as_the_count_is_lowered_restores_it(monkeypatch, where):
    """A Ctrl-C raised as ``torch.set_num_threads`` returns, in ``_limit_threads`` or in
    a tuned ``_compute``, still restores torch's count (it was left at one thread for
    the rest of the process)."""
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setattr(fast, "THREADS", "auto")
        tuner = fast._ThreadTuner()
        monkeypatch.setattr(tuner, "pick", lambda key, n: 1)
        monkeypatch.setattr(fast, "_TUNER", tuner)
        _interrupted_set(monkeypatch)
        with pytest.raises(KeyboardInterrupt):
            with (fast._limit_threads(1) if where == "limit" else fast._compute(("k",))):
                pass
        assert torch.get_num_threads() == 2
    finally:
        monkeypatch.undo()
        torch.set_num_threads(n)
