"""``LossUnit`` in Amaranth's simulator against ``ttforge.ir.train.softmax_grad``, exactly.

The bench plays the training engine: it pulses ``start`` (back to back: the next sample
starts in the cycle of the previous ``done``), answers every logit read one cycle later
like a non-transparent synchronous read port (garbage when nothing was read), scrambles
the sample inputs after the ``start`` cycle (the unit must hold them) and pulses ``start``
with garbage while the unit is busy (it must ignore them).
"""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator
from ttforge.hw.trainer.loss import LOSS_FAULTS, LossUnit, loss_cycles
from ttforge.ir.train import TrainConfig, softmax_grad

from ttforge.errors import ConfigError

# (act_bits, prob_bits, table_bits, table_frac_bits, max_classes, samples)
WIDTHS = {
    "default": (8, 15, 15, 6, 10, 200),
    "narrow": (6, 10, 12, 4, 7, 160),
    "wide": (16, 22, 20, 8, 5, 60),
    "widest": (16, 24, 24, 10, 3, 40),   # e R up to 2^48, a 1024-entry table
    "tiny_F0": (2, 2, 2, 0, 4, 60),      # one table entry, the smallest P and G
}


def make_cfg(A, G, P, F):
    return TrainConfig(act_bits=A, prob_bits=G, table_bits=P, table_frac_bits=F)


def random_samples(rng, A, Cmax, n, h_lo=-20, h_hi=10, valid_every=0):
    """``n`` samples ``(z, label, h, valid)``: the full logit range, ties, only the extremes,
    and logits a few LSBs below a common maximum (where the table matters)."""
    lo, hi = -(1 << (A - 1)), (1 << (A - 1)) - 1
    out = []
    for i in range(n):
        C = int(rng.integers(1, Cmax + 1))
        kind = i % 4
        if kind == 0:
            z = rng.integers(lo, hi + 1, C)
        elif kind == 1:
            z = rng.choice(rng.integers(lo, hi + 1, 3), C)
        elif kind == 2:
            z = rng.choice([lo, hi], C)
        else:
            top = int(rng.integers(lo, hi + 1))
            z = np.clip(top - rng.integers(0, 9, C), lo, hi)
        h = int(rng.integers(h_lo, h_hi + 1)) if i % 10 else int(rng.choice([-63, 63, -A - 1, A]))
        valid = 0 if valid_every and i % valid_every == valid_every - 1 else 1
        out.append((np.asarray(z, dtype=np.int64), int(rng.integers(0, C)), h, valid))
    return out


def golden(sample, cfg):
    z, y, h, valid = sample
    if not valid:
        return np.zeros(len(z), dtype=np.int64)
    return softmax_grad(z[None], h - cfg.table_frac_bits, np.array([y]), cfg)["g"][0]


def simulate(unit, samples, seed=0, classes_port=None, mem_delay=None):
    """Run ``samples`` back to back; per sample: (written g in class order, the classes
    written, cycles from start to done). ``classes_port`` overrides the ``classes`` given;
    the logit memory answers ``mem_delay`` cycles after a read (default: ``unit.z_delay``)."""
    rng = np.random.default_rng(seed)
    A, Cmax = unit.act_bits, unit.max_classes
    results = []

    def scramble(ctx, start):
        ctx.set(unit.start, start)
        ctx.set(unit.classes, int(rng.integers(0, Cmax + 1)))
        ctx.set(unit.label, int(rng.integers(0, Cmax)))
        ctx.set(unit.h, int(rng.integers(-64, 64)))
        ctx.set(unit.valid, int(rng.integers(0, 2)))

    async def bench(ctx):
        reqs = [None] * (mem_delay or unit.z_delay)   # the addresses read in the cycles before
        for z, y, h, valid in samples:
            C = len(z)
            limit = loss_cycles(C, unit.prob_bits, unit.z_delay) + 20
            ctx.set(unit.start, 1)
            ctx.set(unit.classes, C if classes_port is None else classes_port)
            ctx.set(unit.label, y)
            ctx.set(unit.h, h)
            ctx.set(unit.valid, valid)
            cyc, values, classes, write_cycles = 0, [], [], []
            while True:
                req = reqs[0]
                ctx.set(unit.z_data, int(z[req]) if req is not None and req < C
                        else int(rng.integers(-(1 << (A - 1)), 1 << (A - 1))))
                if cyc > 0 and ctx.get(unit.done):
                    assert not ctx.get(unit.busy), "busy in the done cycle"
                    break
                assert cyc < limit, f"no done after {cyc} cycles (C={C})"
                if cyc > 0:
                    assert ctx.get(unit.busy), f"busy low at cycle {cyc} before done"
                if ctx.get(unit.g_valid):
                    values.append(ctx.get(unit.g_value))
                    classes.append(ctx.get(unit.g_class))
                    write_cycles.append(cyc)
                if ctx.get(unit.z_en):
                    req = ctx.get(unit.z_addr)
                    assert req < C, f"read of class {req} >= C={C}"
                else:
                    req = None
                reqs = reqs[1:] + [req]
                # z_addr_next is the next z_addr, and z_addr + 1 exactly when z_step (else
                # 0): the engine steps its read address by that rule
                now, nxt, step = ctx.get(unit.z_addr), ctx.get(unit.z_addr_next), ctx.get(unit.z_step)
                assert nxt == (now + 1 if step else 0), f"cycle {cyc}: z_addr {now} -> {nxt}, z_step {step}"
                await ctx.tick()
                assert ctx.get(unit.z_addr) == nxt, f"cycle {cyc}: z_addr_next {nxt} was not the next z_addr"
                cyc += 1
                # the sample's inputs are held by the unit: scramble them, and pulse
                # `start` now and then while busy (ignored)
                scramble(ctx, int(rng.integers(0, 4) == 0))
            assert write_cycles == list(range(cyc - C, cyc)), \
                f"writes at cycles {write_cycles}, done at {cyc}: not C consecutive writes before done"
            results.append((np.array(values, dtype=np.int64), classes, cyc))

    sim = Simulator(unit)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return results


def check_equal(unit, cfg, samples, results):
    for i, (s, (g, classes, cyc)) in enumerate(zip(samples, results)):
        C = len(s[0])
        assert classes == list(range(C)), f"sample {i}: classes written {classes}"
        want = golden(s, cfg)
        assert np.array_equal(g, want), \
            f"sample {i} (z={s[0].tolist()}, y={s[1]}, h={s[2]}, valid={s[3]}): " \
            f"first divergence at class {int(np.flatnonzero(g != want)[0])}: expected {want.tolist()}, got {g.tolist()}"
        want_cyc = loss_cycles(C, cfg.prob_bits, unit.z_delay)
        assert cyc == want_cyc == unit.cycles(C), f"sample {i}: {cyc} cycles for C={C}, loss_cycles says {want_cyc}"


@pytest.mark.parametrize("name", list(WIDTHS))
def test_equals_softmax_grad(name):
    A, G, P, F, Cmax, n = WIDTHS[name]
    cfg = make_cfg(A, G, P, F)
    rng = np.random.default_rng(sum(map(ord, name)))
    samples = random_samples(rng, A, Cmax, n, valid_every=9)
    # every C once at least, so the cycle formula is checked for every C
    samples += [(np.full(C, (1 << (A - 1)) - 1, dtype=np.int64), C - 1, 0, 1) for C in range(1, Cmax + 1)]
    unit = LossUnit(act_bits=A, prob_bits=G, table_bits=P, table_frac_bits=F, max_classes=Cmax)
    check_equal(unit, cfg, samples, simulate(unit, samples, seed=len(name)))


@pytest.mark.parametrize("z_delay", [2, 3])
@pytest.mark.parametrize("name", ["narrow", "wide"])
def test_a_registered_memory_word_is_exact_and_later(name, z_delay):
    """``z_delay`` 2 or 3 (the ACT word registered once or twice before its lane is
    chosen; the training engine's is 3): the same gradients, every sample ``z_delay - 1``
    cycles longer (``loss_cycles``)."""
    A, G, P, F, Cmax, n = WIDTHS[name]
    cfg = make_cfg(A, G, P, F)
    rng = np.random.default_rng(5)
    samples = random_samples(rng, A, Cmax, min(n, 20), valid_every=9)
    unit = LossUnit(act_bits=A, prob_bits=G, table_bits=P, table_frac_bits=F, max_classes=Cmax, z_delay=z_delay)
    results = simulate(unit, samples, seed=1)
    check_equal(unit, cfg, samples, results)
    assert [r[2] for r in results] == [loss_cycles(len(s[0]), G) + z_delay - 1 for s in samples]


@pytest.mark.parametrize("z_delay", [2, 3])
def test_sibling_a_later_unit_on_a_faster_memory_diverges(z_delay):
    """The sibling that must fail: the unit reads each logit a cycle late (the next class's)."""
    A, G, P, F, Cmax, _ = WIDTHS["narrow"]
    cfg = make_cfg(A, G, P, F)
    rng = np.random.default_rng(5)
    samples = random_samples(rng, A, Cmax, 12)
    unit = LossUnit(act_bits=A, prob_bits=G, table_bits=P, table_frac_bits=F, max_classes=Cmax, z_delay=z_delay)
    with pytest.raises(AssertionError, match="first divergence"):
        check_equal(unit, cfg, samples, simulate(unit, samples, seed=1, mem_delay=z_delay - 1))


def test_for_config_and_padding():
    cfg = TrainConfig()
    unit = LossUnit.for_config(cfg, 10)
    rng = np.random.default_rng(7)
    samples = [(s[0], s[1], s[2], 0) for s in random_samples(rng, cfg.act_bits, 10, 12)]
    results = simulate(unit, samples, seed=3)
    for s, (g, _, cyc) in zip(samples, results):
        assert np.array_equal(g, np.zeros(len(s[0]), dtype=np.int64))
        assert cyc == loss_cycles(len(s[0]), cfg.prob_bits)


@pytest.mark.parametrize("name,classes_port,C", [("narrow", 0, 1), ("wide", 7, 5)])
def test_classes_out_of_range_do_not_hang(name, classes_port, C):
    """``classes`` 0 is taken as 1, more than ``max_classes`` (5 of the 3-bit port) as ``max_classes``."""
    A, G, P, F, Cmax, _ = WIDTHS[name]
    cfg = make_cfg(A, G, P, F)
    unit = LossUnit(act_bits=A, prob_bits=G, table_bits=P, table_frac_bits=F, max_classes=Cmax)
    samples = [(np.arange(C, dtype=np.int64) - 3, C // 2, -1, 1)]
    check_equal(unit, cfg, samples, simulate(unit, samples, classes_port=classes_port))


def test_loss_cycles():
    assert [loss_cycles(C, 15) for C in (1, 2, 10)] == [30, 33, 57]      # 3 C + G + 12
    assert [loss_cycles(C, 15, 2) for C in (1, 10)] == [31, 58]
    assert [loss_cycles(C, 15, 3) for C in (1, 10)] == [32, 59]
    with pytest.raises(ConfigError, match="classes"):
        loss_cycles(0, 15)
    with pytest.raises(ConfigError, match="z_delay"):
        loss_cycles(1, 15, 4)


def test_bad_parameters():
    with pytest.raises(ConfigError, match="fault"):
        LossUnit.for_config(TrainConfig(), 10, fault="nope")
    with pytest.raises(ConfigError, match="max_classes"):
        LossUnit(act_bits=8, prob_bits=15, table_bits=15, table_frac_bits=6, max_classes=0)
    with pytest.raises(ConfigError, match="z_delay"):
        LossUnit(act_bits=8, prob_bits=15, table_bits=15, table_frac_bits=6, max_classes=10, z_delay=0)
    with pytest.raises(ConfigError, match="table_frac_bits"):
        LossUnit(act_bits=8, prob_bits=15, table_bits=15, table_frac_bits=11, max_classes=10)


@pytest.mark.parametrize("fault", list(LOSS_FAULTS))
def test_fault_is_seen(fault):
    """The sibling that must fail: a unit with a deliberate fault disagrees with the golden."""
    A, G, P, F, Cmax, _ = WIDTHS["narrow"]
    cfg = make_cfg(A, G, P, F)
    rng = np.random.default_rng(11)
    # t = 1 (u = 1, h = 0) for classes 1..4: table entry 1, four times; with these widths
    # fewer uses of it are lost in the rounding of R and p (found with the golden model)
    samples = [(np.array([5, 4, 4, 4, 4], dtype=np.int64), 0, 0, 1)] + random_samples(rng, A, Cmax, 12)
    unit = LossUnit(act_bits=A, prob_bits=G, table_bits=P, table_frac_bits=F, max_classes=Cmax,
                    fault=fault)
    results = simulate(unit, samples)
    bad = [i for i, (s, (g, _, _)) in enumerate(zip(samples, results)) if not np.array_equal(g, golden(s, cfg))]
    assert bad, f"fault {fault} was not seen on {len(samples)} samples"
    with pytest.raises(AssertionError, match="first divergence"):
        check_equal(unit, cfg, samples, results)
