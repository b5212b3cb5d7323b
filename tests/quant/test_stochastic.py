"""Stochastic rounding (xorshift32, the stochastic shift) and integer low-precision training."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from ttforge.errors import ConfigError
from ttforge.model.data import load_dataset
from ttforge.model.network import ModelConfig
from ttforge.model.seeding import deterministic, seeded_generator
from ttforge.ir.executor import IntNetwork, execute
from ttforge.quant.stochastic import (
    LowPrecisionConfig,
    Xorshift32,
    integer_update,
    stochastic_rshift,
    train_low_precision,
    xorshift32_step,
)

TWO32 = 1 << 32


def reference_stream(seed: int, n: int) -> list[int]:
    """xorshift32 written independently: multiplications and modulo, Python integers."""
    out, x = [], seed
    for _ in range(n):
        x = (x ^ (x * 8192)) % TWO32        # x ^= x << 13
        x = x ^ (x // 131072)               # x ^= x >> 17
        x = (x ^ (x * 32)) % TWO32          # x ^= x << 5
        out.append(x)
    return out


# ---------------------------------------------------------------------------------------
# the generator
# ---------------------------------------------------------------------------------------
def test_first_words_of_seed_1():
    # 1 -> 1 ^ (1 << 13) = 8193 -> (>> 17 changes nothing) -> 8193 ^ (8193 << 5) = 270369
    assert reference_stream(1, 1) == [270369]
    assert xorshift32_step(1) == 270369
    g = Xorshift32(1)
    assert [g.next_word() for _ in range(8)] == reference_stream(1, 8)
    assert g.words(8).tolist() == reference_stream(1, 16)[8:]


@pytest.mark.parametrize("seed", [1, 2463534242, 0x80000000, TWO32 - 1, 12345])
@pytest.mark.parametrize("n", [1, 2, 63, 64, 65, 1000, 4099])
def test_vectorized_words_equal_scalar(seed, n):
    words = Xorshift32(seed).words(n)
    assert words.dtype == np.uint32
    assert words.tolist() == reference_stream(seed, n)


def test_chunked_draws_continue_the_stream():
    ref = reference_stream(7, 5000)
    g = Xorshift32(7)
    got = []
    for n in (0, 1, 64, 65, 3, 1024, 2000, 1843):
        got.extend(g.words(n).tolist())
    assert got == ref
    assert g.drawn == 5000 and g.state == ref[-1]
    assert Xorshift32(7).draw((3, 4)).tolist() == np.array(ref[:12]).reshape(3, 4).tolist()


def test_vectorized_stream_is_not_trivially_equal():
    # sibling: a single wrong bit in the stream must be seen by the comparison above
    ref = reference_stream(99, 200)
    words = Xorshift32(99).words(200)
    words[137] ^= np.uint32(1 << 31)
    assert words.tolist() != ref


@pytest.mark.parametrize("bad", [0, -1, TWO32, 1.5, True, "1"])
def test_bad_seed(bad):
    with pytest.raises(ConfigError, match="seed"):
        Xorshift32(bad)


# ---------------------------------------------------------------------------------------
# the stochastic shift
# ---------------------------------------------------------------------------------------
def test_stochastic_rshift_formula_row_major():
    v = np.arange(-6, 6, dtype=np.int64).reshape(3, 4) * 37
    s = 5
    words = np.array(reference_stream(3, 12), dtype=np.int64).reshape(3, 4)
    want = (v + (words & 31)) >> 5
    assert np.array_equal(stochastic_rshift(v, s, Xorshift32(3)), want)


@pytest.mark.parametrize("s", [1, 3, 8, 16, 31, 32])
def test_exact_for_multiples(s):
    k = np.random.default_rng(s).integers(-(1 << 20), 1 << 20, size=5000)
    assert np.array_equal(stochastic_rshift(k << s, s, Xorshift32(11)), k)


@pytest.mark.parametrize("s", [1, 4, 13, 32])
def test_result_is_floor_or_floor_plus_one(s):
    v = np.random.default_rng(s).integers(-(1 << 40), 1 << 40, size=20000)
    r = stochastic_rshift(v, s, Xorshift32(5))
    lo = v >> s
    assert np.all((r == lo) | (r == lo + 1))


def _unbiased(results: np.ndarray, expected: float, p: float) -> bool:
    """Mean of ``n`` independent draws of ``floor(x)`` or ``floor(x) + 1`` (the latter
    with probability ``p``) is within 5 standard deviations ``sqrt(p (1 - p) / n)`` of
    ``x``: a fair rounding fails this with probability below 1e-6."""
    n = results.size
    bound = 5 * math.sqrt(max(p * (1 - p), 1e-12) / n)
    return abs(float(results.mean()) - expected) <= bound


@pytest.mark.parametrize("v,s", [(5, 4), (-37, 3), (1, 6), (3 * 2**20 + 77, 22), (-1, 1)])
def test_unbiased(v, s):
    n = 200_000
    r = stochastic_rshift(np.full(n, v, dtype=np.int64), s, Xorshift32(2024))
    x = v / 2**s
    p = x - math.floor(x)
    assert _unbiased(r, x, p)
    # the up-rounding frequency is p itself
    assert _unbiased((r == math.floor(x) + 1).astype(float), p, p)
    # sibling: the same check rejects truncation and round-to-nearest for these values
    assert not _unbiased(np.full(n, v >> s), x, p)
    assert not _unbiased(np.full(n, (v + (1 << (s - 1))) >> s), x, p)


def test_unbiased_on_many_values():
    n = 400_000
    v = np.random.default_rng(1).integers(-(1 << 30), 1 << 30, size=n)
    s = 9
    err = stochastic_rshift(v, s, Xorshift32(77)) - v / 2**s
    # each error has mean 0 and variance p(1-p) <= 1/4
    assert abs(err.mean()) <= 5 * 0.5 / math.sqrt(n)
    assert abs((v >> s).mean() - (v / 2**s).mean()) > 5 * 0.5 / math.sqrt(n)  # truncation is biased


def test_nonpositive_shift_is_exact_and_still_draws():
    v = np.array([[-3, 0, 5], [7, -128, 1]], dtype=np.int64)
    g = Xorshift32(9)
    assert np.array_equal(stochastic_rshift(v, 0, g), v)
    assert np.array_equal(stochastic_rshift(v, -3, g), v << 3)
    assert g.drawn == 12 and g.state == reference_stream(9, 12)[-1]


@pytest.mark.parametrize("bad", [33, 1.0, True])
def test_bad_shift(bad):
    with pytest.raises(ConfigError, match="shift"):
        stochastic_rshift(np.zeros(3, dtype=np.int64), bad, Xorshift32(1))


def test_round_to_nearest_stalls_below_half_an_lsb():
    # every update is 0.1 LSB: nearest drops all of them, stochastic applies 1 LSB to ~10%
    n, e, s = 100_000, -6, 16
    w = np.zeros(n, dtype=np.int64)
    upd = np.full(n, 0.1 * 2.0**e)
    rn, st_rn = integer_update(w, upd, e, -7, 7, s, 32, "nearest", None)
    assert not rn.any() and st_rn.applied == 0 and st_rn.sub_half == n
    sr, st_sr = integer_update(w, upd, e, -7, 7, s, 32, "stochastic", Xorshift32(4))
    p = round(0.1 * 2**s) / 2**s  # v is 0.1 LSB on a 2^-16 grid
    assert set(np.unique(sr)) <= {0, -1}
    assert _unbiased(-sr.astype(float), p, p)
    assert st_sr.applied == int(np.count_nonzero(sr))


def test_update_saturates():
    w = np.array([6, -6, 0], dtype=np.int64)
    upd = np.array([-5.0, 5.0, 0.0])  # w - upd: 11 and -11 clamp to the narrow 4-bit range
    new, st = integer_update(w, upd, 0, -7, 7, 8, 32, "nearest", None)
    assert new.tolist() == [7, -7, 0] and st.saturated == 2


# ---------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------
TINY = ModelConfig(kind="tt", hidden=(16,), n_cores=2, ranks=2)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def run(ds, **kw):
    cfg = LowPrecisionConfig(**{"w_bits": 4, "epochs": 2, "batch_size": 32, "lr": 1.0, **kw})
    return train_low_precision(TINY, ds, cfg)


@pytest.fixture(scope="module")
def trained(digits):
    return run(digits)


def test_same_seed_same_integers(digits, trained):
    again = run(digits)
    a, b = trained.integer_weights(), again.integer_weights()
    assert a.keys() == b.keys() and len(a) == 5  # a 2-core TT layer, a dense layer, 2 biases
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert [h["test_acc"] for h in trained.history] == [h["test_acc"] for h in again.history]
    # the training changed the weights, and the words consumed are one per element per step
    start = run(digits, epochs=0).integer_weights()
    assert not all(np.array_equal(a[k], start[k]) for k in a)
    steps = math.ceil(digits.x_train.shape[0] / 32)
    assert trained.report["words_drawn"] == 2 * steps * sum(v.size for v in a.values())


def test_different_seed_differs(digits, trained):
    other = run(digits, sr_seed=trained.report["sr_seed"] ^ 1)
    a, b = trained.integer_weights(), other.integer_weights()
    assert not all(np.array_equal(a[k], b[k]) for k in a)


def test_nearest_is_deterministic_and_draws_nothing(digits):
    a = run(digits, rounding="nearest", epochs=1)
    b = run(digits, rounding="nearest", epochs=1)
    assert a.report["words_drawn"] == 0
    wa, wb = a.integer_weights(), b.integer_weights()
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)


def test_trained_network_equals_golden_executor(digits, trained):
    qnet, inet = trained.qnet, trained.inet
    x = digits.x_test
    got = execute(inet, inet.quantize_input(x.numpy()))
    assert np.array_equal(qnet.forward_int(x), got)
    # the executor runs exactly the stored integers
    w = trained.integer_weights()
    for i, layer in enumerate(inet.layers):
        for k, core in enumerate(layer.cores):
            assert np.array_equal(core.reshape(w[f"layer{i}.core{k}"].shape), w[f"layer{i}.core{k}"])
        assert np.array_equal(layer.bias, w[f"layer{i}.bias"])
    assert trained.report["bit_exact"] and trained.history[-1]["test_acc"] > 0.5


def test_one_flipped_weight_bit_is_seen(digits, trained):
    inet = trained.inet
    x = inet.quantize_input(digits.x_test.numpy())
    want = execute(inet, x)
    last = inet.layers[-1]
    core = last.cores[0].copy()
    flat = core.reshape(-1)
    i = int(np.flatnonzero((flat >= 0) & (flat <= 3))[0])
    flat[i] ^= 4  # one bit, staying inside the 4-bit range
    bad = IntNetwork(inet.layers[:-1] + (replace(last, cores=(core,)),))
    assert not np.array_equal(execute(bad, x), want)


def test_draw_order_is_the_specified_one(digits):
    """One step replayed by hand: gradient from the fake-quant network, then the update of
    every stored tensor in order (layer 0 cores, layer 0 bias, layer 1 ...) from one
    generator, row-major. Reversing the tensor order gives other integers."""
    n = digits.x_train.shape[0]
    kw = dict(batch_size=n, lr=0.3, lr_schedule="constant", sr_seed=123)
    start = run(digits, epochs=0, **kw)
    one = run(digits, epochs=1, **kw)
    cfg = LowPrecisionConfig(w_bits=4, epochs=1, batch_size=n, lr=0.3, lr_schedule="constant", sr_seed=123)
    qnet = start.qnet
    qnet.train()
    perm = torch.randperm(n, generator=seeded_generator(cfg.seed, 1, 1))
    with torch.random.fork_rng(devices=[]), deterministic(1):
        loss = nn.functional.cross_entropy(qnet(digits.x_train[perm]), digits.y_train[perm])
        loss.backward()

    def replay(masters):
        gen = Xorshift32(123)
        out = {}
        for m in masters:
            grad = m.param.grad.detach().double().numpy()
            out[m.name], _ = integer_update(m.values, cfg.lr * grad, m.exp, m.lo, m.hi, cfg.frac_bits,
                                            cfg.update_bits, "stochastic", gen)
        return out

    got = replay(start.masters)
    trained = one.integer_weights()
    cores = [k for k in trained if ".core" in k]  # biases are shifted by the recalibration after
    assert all(np.array_equal(got[k], trained[k]) for k in cores)
    reversed_order = replay(start.masters[::-1])
    assert not all(np.array_equal(reversed_order[k], trained[k]) for k in cores)


def test_accumulators_and_updates_wider_than_32_bits_train(digits):
    """acc_bits and update_bits 33..48, which the config takes, failed after calibration
    with "bit width 48 must be an integer in 2..32", naming no field. Where no value
    reaches 32 bits they train the same integers as 32, exactly."""
    narrow, wide = run(digits, epochs=1), run(digits, epochs=1, acc_bits=48, update_bits=48)
    a, b = narrow.integer_weights(), wide.integer_weights()
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert [layer.acc_bits for layer in wide.inet.layers] == [48, 48] and wide.report["bit_exact"]
    x = digits.x_test
    assert np.array_equal(wide.qnet.forward_int(x), execute(wide.inet, wide.inet.quantize_input(x.numpy())))


@pytest.mark.parametrize("field,value", [("sr_seed", 0), ("rounding", "down"), ("frac_bits", 33),
                                         ("w_bits", 9), ("lr", -1.0), ("lr_schedule", "step"),
                                         ("master_extra_bits", 17)])
def test_bad_config(field, value):
    with pytest.raises(ConfigError, match=field if field != "sr_seed" else "seed"):
        LowPrecisionConfig(**{field: value})


@pytest.mark.slow
def test_bench_quick_run(tmp_path):
    """bench/bench_stochastic.py runs end to end (so it cannot rot); no number is judged."""
    import json

    from tests.support.benches import load_bench

    mod = load_bench("bench_stochastic")
    out, png = tmp_path / "s.json", tmp_path / "s.png"
    assert mod.main(["--quick", "--out", str(out), "--png", str(png)]) == 0
    result = json.loads(out.read_text())
    assert png.stat().st_size > 0
    assert {r["method"] for r in result["rows"]} == {"SR", "RN"}
    assert all(run["bit_exact"] for r in result["rows"] for run in r["runs"])


def test_the_hosts_global_generator_neither_changes_nor_is_changed_by_training(digits, monkeypatch):
    """The network was built after torch.manual_seed(seed) inside fork_rng, which does not
    protect against another thread: its draws from torch's global generator meanwhile
    changed the integers (1 run in 5 with a thread calling torch.randn), and fork_rng
    reseeded the global generator for the other threads. Now a generator of the run's own,
    the same stream (tests/model/test_seeding.py)."""
    torch.manual_seed(123)
    host = torch.get_rng_state()
    ref = run(digits, epochs=1).integer_weights()
    assert torch.equal(torch.get_rng_state(), host)
    for name in ("normal_", "uniform_", "kaiming_uniform_"):   # another thread's draws, made reproducible
        real = getattr(torch.nn.init, name)
        monkeypatch.setattr(torch.nn.init, name, lambda *a, _real=real, **k: (torch.rand(1), _real(*a, **k))[1])
    got = run(digits, epochs=1).integer_weights()
    assert got.keys() == ref.keys() and all(np.array_equal(got[k], ref[k]) for k in ref)


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode, "float64"])
def test_training_inside_a_no_grad_host_or_with_a_float64_default(digits, context):
    """Under torch.no_grad() / torch.inference_mode() train_low_precision raised torch's
    "element 0 of tensors does not require grad"; with float64 as torch's default dtype
    it gave other integers (the network was initialised in float64). The same integers."""
    ref = run(digits, epochs=1).integer_weights()
    before = torch.get_default_dtype()
    if context == "float64":
        torch.set_default_dtype(torch.float64)
    try:
        with (context() if callable(context) else torch.enable_grad()):
            got = run(digits, epochs=1).integer_weights()
    finally:
        torch.set_default_dtype(before)
    assert got.keys() == ref.keys() and all(np.array_equal(got[k], ref[k]) for k in ref)
