"""Mutations of the training path: every deliberate fault of ``TrainEngine``
(:data:`ttforge.hw.faults.TRAIN_FAULTS`) must make the exact comparison fail.

One small random network (``ttforge.ir.random.train_case``: a TT hidden layer with ReLU
and a bias, a dense output layer, stochastic rounding) is trained for two steps in the
Amaranth simulator. After every step the engine's masters, biases, MAXACC and generator
are compared with the program interpreter run from the same starting state, and the
state read back with the golden trainer's step (``np.array_equal``, never a tolerance).
The fault-free engine agrees on this very case (so a kill is the fault's doing) and the
case exercises every fault, checked in software: masked lanes with a non-zero gradient,
WGRAD sums wider than ``acc_bits // 2``, non-square transposed cores, a non-zero bias
in the second step, a softmax that reads table entry 1. The engine is built with the
narrowest ``acc_bits`` the spec allows for the case.
"""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.sim import Simulator

import ttforge.hw.trainer.model as tmodel
from tests.support.train_engine import load_program, read_state, run_batch
from ttforge.errors import ConfigError, ShapeError
from ttforge.hw.config import AccelConfig
from ttforge.hw.engine import TTEngine
from ttforge.hw.faults import (FAULTS, TRAIN_ENGINE_FAULTS, TRAIN_FAULT_BLOCKS, TRAIN_FAULTS,
                               check_fault)
from ttforge.hw.trainer.engine import TrainEngine
from ttforge.hw.trainer.program import (OP_FIELDS, TRAIN_DESC_WORDS, Op, TrainEngineConfig,
                                        compile_training, next_exponents, state_from_memories)
from ttforge.ir.random import train_case
from ttforge.ir.train import _TABLES, exp2_table, train_step, widths
from ttforge.ir.train_diverge import compare_states

REQUIRED = ("wrong_transpose", "drop_word", "update_sign", "acc_width", "no_mask")
STEPS = 2
SEED, BATCH, LANES = 4, 6, 4
# table_frac_bits=4: the logits' t = u >> 1 reaches odd table entries (with the default 6,
# t = u << 1 here and entry 1, the one loss_table flips, is never read)
SHAPE = dict(n_layers=2, d=2, rank=3, n_in=16, hidden=16, n_out=4, table_frac_bits=4)


# ------------------------------------------------------------------------ registry
def test_registry():
    for name in REQUIRED + ("loss_table", "bias_shift_off"):
        assert name in TRAIN_FAULTS
    for name, desc in TRAIN_FAULTS.items():
        assert desc and "\n" not in desc, name
    assert set(TRAIN_FAULT_BLOCKS) == set(TRAIN_FAULTS)
    assert TrainEngine.FAULTS == TRAIN_ENGINE_FAULTS == tuple(TRAIN_FAULTS)
    # the inference registry is untouched: its mutation run builds every one of FAULTS
    assert not set(TRAIN_FAULTS) & set(FAULTS)


@pytest.mark.filterwarnings("ignore:.*created but never used")
def test_unknown_or_foreign_fault_is_refused():
    cfg = TrainEngineConfig(lanes=2)
    with pytest.raises(ConfigError, match="known: wrong_transpose, drop_word"):
        TrainEngine(cfg, fault="nope")
    with pytest.raises(ConfigError, match="known: wrong_transpose"):
        TrainEngine(cfg, fault="requant_lsb")          # an inference fault
    with pytest.raises(ConfigError, match="known: requant_lsb"):
        TTEngine(AccelConfig(), fault="no_mask")       # a training fault
    with pytest.raises(ConfigError, match="known: requant_lsb"):
        check_fault("acc_width")                       # TTAccel's default set
    assert check_fault("no_mask", TRAIN_ENGINE_FAULTS, "TrainEngine") == "no_mask"


def test_no_fault_is_the_real_hardware():
    cfg = TrainEngineConfig(lanes=2, act_depth=32, grad_depth=32, core_depth=32, bias_depth=8,
                            desc_depth=4, max_batch=4, max_classes=4)
    assert rtlil.convert(TrainEngine(cfg, fault=None)) == rtlil.convert(TrainEngine(cfg))


# ------------------------------------------------------------------------ the case
_CASE: dict = {}


def _case():
    if not _CASE:
        state, x, y, rng = train_case(SEED, batch=BATCH, **SHAPE)
        hi = (1 << (state.config.act_bits - 1)) - 1
        batches = [(x, y)] + [(rng.integers(0, hi + 1, size=(BATCH, state.in_features)),
                               rng.integers(0, state.n_classes, size=BATCH)) for _ in range(STEPS - 1)]
        acc_bits = max(w["bits"] for w in widths(state, BATCH))       # the spec's minimum
        cfg = TrainEngineConfig(lanes=LANES, train=state.config, acc_bits=acc_bits, act_depth=512,
                                grad_depth=256, core_depth=512, bias_depth=64, desc_depth=48,
                                max_batch=16, max_classes=8)
        _CASE.update(state=state, batches=batches, cfg=cfg)
    return _CASE


def _interpret(prog, x, y):
    """The interpreter's memories after one step from ``state``'s program."""
    mem = tmodel.load_program(prog)
    tmodel.load_batch(mem, x, y)
    tmodel.run_step(mem, prog)
    return mem


def _train(fault):
    """``STEPS`` steps on ``TrainEngine(cfg, fault=fault)``; per step the list of what
    differs from the interpreter and the golden trainer (empty: exact), or an engine error."""
    c = _case()
    cfg = c["cfg"]
    dut = TrainEngine(cfg, fault=fault)
    out = []

    async def body(ctx):
        st = c["state"]
        prog = compile_training(st, BATCH, cfg)
        await load_program(ctx, dut, prog)
        for x, y in c["batches"]:
            try:
                await run_batch(ctx, dut, x, y, max_cycles=200_000)
            except (RuntimeError, TimeoutError) as e:        # an error stop is a difference too
                out.append([f"engine: {e}"])
                return
            cm, bm, mx, rng = await read_state(ctx, dut, prog)
            mem = _interpret(prog, x, y)
            diff = [name for name, ok in (
                ("cmem", np.array_equal(cm, mem.cmem[:cm.size])),
                ("bmem", np.array_equal(bm, mem.bmem[:bm.size])),
                ("maxacc", np.array_equal(mx, mem.maxacc[:mx.size])),
                ("rng", rng == mem.rng)) if not ok]
            try:
                new = next_exponents(state_from_memories(st, prog, cm, bm, rng), prog, mx)
            except (ShapeError, ConfigError) as e:          # read back leaves the ranges
                out.append(diff + [f"state: {e}"])
                return
            g = compare_states(train_step(st, x, y), new)
            if g is not None:
                diff.append(f"golden: {g}")
            out.append(diff)
            st = new
            prog = compile_training(st, BATCH, cfg)
            await load_program(ctx, dut, prog, images=False)   # the host rewrites the shifts

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(body)
    sim.run()
    return out


def test_case_exercises_every_fault():
    """In software: the case reaches what each fault breaks."""
    c = _case()
    st, cfg = c["state"], c["cfg"]
    tc = st.config
    assert tc.rounding == "stochastic"                              # drop_word
    assert st.layers[0].relu and st.layers[0].d >= 2                # no_mask, wrong_transpose
    steps = st.layers[0].schedule.steps
    assert any(s.P != s.K for s in steps)                           # wrong_transpose
    rec = {"wgrad": 0, "masked": 0, "bias": 0, "table": 0}
    key = (tc.table_bits, tc.table_frac_bits)
    table = exp2_table(*key)
    flipped = table.copy()
    flipped[1] ^= 1
    orig = tmodel.update_values

    def spy(old, v, *args, **kwargs):
        rec["wgrad"] = max(rec["wgrad"], int(np.abs(v).max()))
        return orig(old, v, *args, **kwargs)

    for x, y in c["batches"]:
        prog = compile_training(st, BATCH, cfg)
        rec["bias"] = max(rec["bias"], int(np.abs(prog.bmem).max()))
        mem = tmodel.load_program(prog)
        tmodel.load_batch(mem, x, y)
        # the masked input gradient: run without MASK and count lanes the mask zeroes
        nomask = tmodel.load_program(prog)
        tmodel.load_batch(nomask, x, y)
        for j, op in enumerate(prog.ops):
            if op.OP == Op.CONTRACT and op.MASK:
                nomask.dmem[j * TRAIN_DESC_WORDS] &= ~(1 << OP_FIELDS["MASK"][0])
        tmodel.update_values = spy
        try:
            tmodel.run_step(mem, prog)
            tmodel.run_step(nomask, prog)
        finally:
            tmodel.update_values = orig
        rec["masked"] += int(np.count_nonzero(mem.cmem != nomask.cmem))
        nxt = train_step(st, x, y)
        _TABLES[key] = flipped                                       # the loss_table fault
        try:
            rec["table"] += compare_states(nxt, train_step(st, x, y)) is not None
        finally:
            _TABLES[key] = table
        st = nxt
    assert rec["wgrad"] >= 1 << (cfg.acc_bits // 2 - 1), rec       # acc_width
    assert rec["masked"] > 0, rec                                   # no_mask
    assert rec["bias"] > 0, rec                                     # bias_shift_off (step 2)
    assert rec["table"] > 0, rec                                    # loss_table


def test_fault_free_engine_agrees_on_the_case():
    out = _train(None)
    assert out == [[]] * STEPS, out


@pytest.mark.parametrize("fault", TRAIN_ENGINE_FAULTS)
def test_fault_is_killed(fault):
    out = _train(fault)
    assert any(out), f"{fault} survived {STEPS} steps: {out}"
