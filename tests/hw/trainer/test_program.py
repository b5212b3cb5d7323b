"""The training program and its word-level interpreter against the golden trainer:
after every step the state read back from the interpreter's memories (masters, biases,
generator, and the exponents from MAXACC) equals ``ttforge.ir.train.train_step``'s,
``compare_states`` (exact), over several steps, random networks, widths, batches and
lanes. Each has a sibling that corrupts one thing and must be caught."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from ttforge.errors import ConfigError
from ttforge.hw.trainer.model import load_batch, load_program, run_step
from ttforge.hw.trainer.program import (TRAIN_DESC_WORDS, Op, TrainEngineConfig, TrainOp, read_write_overlap,
                                        batch_slots, compile_training, decode_op, encode_op,
                                        fit_engine, next_exponents, state_from_memories)
from ttforge.ir.random import train_case
from ttforge.ir.train import TrainConfig, train_step
from ttforge.ir.train_diverge import compare_states


def _engine(state, lanes, **kw):
    return TrainEngineConfig(lanes=lanes, train=state.config, act_depth=1 << 16, grad_depth=1 << 14,
                             core_depth=1 << 14, desc_depth=128, max_batch=64, **kw)


def run_engine_model(state, batches, lanes, corrupt=None):
    """Train ``state`` on ``batches`` with the interpreter, the host doing the exponent
    bookkeeping between steps; returns the final state. ``corrupt(mem, step)`` may alter
    the memories after a step (for the siblings)."""
    ecfg = _engine(state, lanes)
    prog = compile_training(state, len(batches[0][1]), ecfg)
    mem = load_program(prog)
    for s, (x, y) in enumerate(batches):
        load_batch(mem, x, y)
        run_step(mem, prog)
        if corrupt is not None:
            corrupt(mem, s)
        new = state_from_memories(state, prog, mem.cmem, mem.bmem, mem.rng)
        state = next_exponents(new, prog, mem.maxacc)
        prog = compile_training(state, len(y), ecfg)
        words = prog.words
        mem.dmem[:len(words)] = words        # the host rewrites the shifts
    return state


def _golden(state, batches):
    for x, y in batches:
        state = train_step(state, x, y)
    return state


def _batches(rng, state, n, batch, act_bits):
    hi = (1 << (act_bits - 1)) - 1
    return [(rng.integers(0, hi + 1, size=(batch, state.in_features)),
             rng.integers(0, state.n_classes, size=batch)) for _ in range(n)]


CASES = [
    # seed, layers, d, rank, batch, lanes, widths
    (0, 2, 3, 3, 6, 4, {}),
    (1, 2, 2, 4, 8, 8, {"w_bits": 2, "master_bits": 6}),
    (2, 3, 3, 2, 5, 2, {"rounding": "nearest"}),
    (3, 1, 3, 3, 3, 1, {"grad_bits": 10, "inter_bits": 12}),
    (4, 2, 1, 1, 16, 16, {"act_bits": 6}),
    (5, 2, 3, 5, 4, 4, {"w_bits": 3, "master_bits": 10, "bias_bits": 16}),
]


@pytest.mark.parametrize("seed,n_layers,d,rank,batch,lanes,cfg", CASES)
def test_interpreter_equals_the_golden_trainer(seed, n_layers, d, rank, batch, lanes, cfg):
    state, x, y, rng = train_case(seed, n_layers=n_layers, d=d, rank=rank, batch=batch, **cfg)
    batches = [(x, y)] + _batches(rng, state, 3, batch, state.config.act_bits)
    got = run_engine_model(state, batches, lanes)
    want = _golden(state, batches)
    assert compare_states(got, want) is None
    assert got.step == want.step == 4
    # the step really changed the state (else equality would prove little)
    assert compare_states(state, want) is not None


@pytest.mark.parametrize("what", ["cmem", "rng", "maxacc"])
def test_sibling_a_corrupted_memory_is_caught(what):
    state, x, y, rng = train_case(7, batch=4)
    batches = [(x, y)] + _batches(rng, state, 2, 4, state.config.act_bits)

    def corrupt(mem, s):
        if s != 1:
            return
        if what == "cmem":
            mem.cmem[3] ^= 1
        elif what == "rng":
            mem.rng ^= 1
        else:
            mem.maxacc[mem.maxacc.argmax()] *= 4

    got = run_engine_model(state, batches, 4, corrupt)
    diff = compare_states(got, _golden(state, batches))
    assert diff is not None


def test_batch_slots_and_lanes():
    assert batch_slots(6, 4) == 8 and batch_slots(3, 8) == 8 and batch_slots(16, 16) == 16
    assert batch_slots(17, 4) == 32


def test_descriptor_round_trip_and_field_range():
    op = TrainOp(OP=Op.CONTRACT, SRC=1, DST=1, BIAS=1, RELU=1, MASK=1, SAT_BITS=16, SHIFT=-7,
                 N=(2, 3, 4, 5), U_BASE=9, U_S=(1, 2, 3, 4), V_BASE=11, V_S=(5, 6, 7, 8), O_BASE=12,
                 O_S=(9, 10, 11), B_BASE=13, BIAS_SHIFT=-100, BIAS_LIMIT=(1 << 46) + 5, M_BASE=14,
                 OUT_VALID=15)
    words = encode_op(op)
    assert len(words) == TRAIN_DESC_WORDS
    assert decode_op(words) == op
    with pytest.raises(ConfigError, match="SHIFT"):
        encode_op(TrainOp(OP=Op.CONTRACT, SHIFT=128))


def test_program_that_does_not_fit_names_the_field():
    state, x, y, _ = train_case(0, batch=6)
    with pytest.raises(ConfigError, match="act_depth"):
        compile_training(state, 6, TrainEngineConfig(lanes=4, train=state.config, act_depth=8))
    with pytest.raises(ConfigError, match="grad_bits"):
        compile_training(state, 6, TrainEngineConfig(lanes=4, train=TrainConfig(grad_bits=12)))


def test_program_shape():
    state, x, y, _ = train_case(0, batch=6)
    prog = compile_training(state, 6, _engine(state, 4))
    kinds = [op.OP for op in prog.ops]
    assert kinds.count(Op.LOSS) == 1
    n_cores = sum(L.d for L in state.layers)
    n_bias = sum(L.bias is not None for L in state.layers)
    assert kinds.count(Op.WGRAD) == n_cores + n_bias
    assert prog.ops[-1].LAST == 1 and all(op.LAST == 0 for op in prog.ops[:-1])
    assert np.array_equal(np.array(prog.words[:TRAIN_DESC_WORDS]), np.array(encode_op(prog.ops[0])))


@pytest.mark.parametrize("seed,lanes,batch", [(0, 4, 6), (3, 1, 2), (5, 16, 16)])
def test_no_operation_reads_a_region_it_writes(seed, lanes, batch):
    # the engine's memories carry no_rw_check: a compiled operation never reads (U, mask)
    # words of the memory region it writes
    state, _, _, _ = train_case(seed, batch=batch)
    prog = compile_training(state, batch, _engine(state, lanes))
    assert all(read_write_overlap(op) is None for op in prog.ops)
    assert sum(op.OP == Op.CONTRACT for op in prog.ops) >= 2


def test_sibling_an_in_place_contract_is_reported():
    state, _, _, _ = train_case(0, batch=6)
    prog = compile_training(state, 6, _engine(state, 4))
    op = next(op for op in prog.ops if op.OP == Op.CONTRACT and op.SRC == 0)
    assert read_write_overlap(op) is None
    assert "in place" in read_write_overlap(replace(op, O_BASE=op.U_BASE))
    masked = next(op for op in prog.ops if op.MASK)
    assert read_write_overlap(masked) is None
    assert "reads M" in read_write_overlap(replace(masked, DST=0, O_BASE=masked.M_BASE + 1))
    assert read_write_overlap(replace(op, O_BASE=op.U_BASE, DST=1)) is None   # another memory


def test_engine_memories_carry_no_rw_check():
    # without the attribute Yosys emulates read-old-data ports on the block RAM (a delayed
    # write and a compare at every block); each of the memories (ACT as act_groups(L)
    # memories, GRAD, CMEM as one block RAM's depth a bank, BMEM, DMEM, labels, MAXACC)
    # carries it in the RTLIL (and hw/emit.py keeps it in the Verilog: tests/hw/test_emit.py)
    from amaranth.back import rtlil

    from ttforge.hw.ecp5_bram import dp16kd_depth
    from ttforge.hw.trainer.engine import TrainEngine, act_groups
    state, _, _, _ = train_case(0, batch=2)
    for lanes in (2, 8):
        cfg = _engine(state, lanes)
        text = rtlil.convert(TrainEngine(cfg), emit_src=False)
        assert act_groups(lanes) == min(lanes, 4)
        banks = -(-cfg.core_depth // dp16kd_depth(cfg.train.master_bits))
        assert banks > 1
        assert text.count("attribute \\no_rw_check 1") == 5 + act_groups(lanes) + banks


def test_engine_memories_above_the_limit_are_one_line_naming_the_depth_that_fits():
    """An engine whose memories no generator run holds (lanes 64, ACT and GRAD 2**20
    words: a minute and 10 GB in the generator, then Yosys crashed) is refused before
    the generator, in one line by the inference engine's check
    (``ttforge.hw.config.check_memory_bits``), naming the depth that holds the most and
    the largest value of it that fits; that value passes."""
    from ttforge.hw.trainer.engine import TrainEngine
    from ttforge.hw.trainer.program import MAX_TRAIN_MEMORY_BITS

    big = dict(lanes=64, act_depth=1 << 20, grad_depth=1 << 20, core_depth=2048)
    with pytest.raises(ConfigError) as e:
        TrainEngine(TrainEngineConfig(**big))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("TrainEngineConfig.grad_depth=1048576: the memories need")
    small = {**big, "grad_depth": 2048}
    fit = int(str(pytest.raises(ConfigError, TrainEngineConfig(**small).check_memory_bits).value)
              .split("use act_depth <= ")[1].split(" ")[0].replace(",", ""))
    ok = TrainEngineConfig(**{**small, "act_depth": fit})
    ok.check_memory_bits()
    assert MAX_TRAIN_MEMORY_BITS - 64 * 16 < sum(ok.memory_parts().values()) <= MAX_TRAIN_MEMORY_BITS
    with pytest.raises(ConfigError, match="act_depth"):
        TrainEngineConfig(**{**small, "act_depth": fit + 1}).check_memory_bits()


def test_fit_engine_of_a_program_above_the_memory_limit_names_the_batch_and_network():
    """``generate --train`` / ``build --train`` / ``train-board --sim`` fit the engine to
    the state: a program whose memories no generator run holds is one line naming the
    fix (a smaller batch or network), not a generator run of minutes and gigabytes."""
    state, _, _, _ = train_case(0, n_in=1000, hidden=1000, n_out=10, rank=4, batch=6)
    assert fit_engine(state, 512, lanes=64)         # the same network at a smaller batch fits
    with pytest.raises(ConfigError, match=r"^the training engine for this state at batch 1024 needs "
                                          r".*act_depth=262144.*; use a smaller batch or train a "
                                          r"smaller network"):
        fit_engine(state, 1024, lanes=64)


def test_classes_beyond_the_signed_label_stream_are_refused_before_any_step():
    # 5 classes need label 4; at act_bits=3 a stream element holds -4..3: label 4 arrived
    # as -4 (BAD_LABEL), 8 and 9 as 0 and 1 (a wrong label, trained on without a word)
    state, *_ = train_case(3, batch=4, n_layers=2, d=2, rank=2, n_in=8, hidden=6, n_out=5, act_bits=3)
    want = ("5 classes need labels up to 4, which the training engine carries in signed 3-bit stream elements "
            "(act_bits=3, labels up to 3); train the state with act_bits >= 4 (ttforge train-int --act-bits 4)")
    with pytest.raises(ConfigError) as e:
        compile_training(state, 4, _engine(state, 2, max_classes=8))
    assert str(e.value) == want
    with pytest.raises(ConfigError) as e:
        fit_engine(state, 4, lanes=2)
    assert str(e.value) == want


def test_sibling_classes_at_the_signed_label_limit_train_as_the_golden_trainer():
    # 4 classes at act_bits=3: label 3 is the largest a stream element holds
    state, x, y, rng = train_case(3, batch=4, n_layers=2, d=2, rank=2, n_in=8, hidden=6, n_out=4, act_bits=3)
    batches = [(x, y)] + [(rng.integers(0, 4, size=(4, 8)), np.array([3, 0, 3, 1])) for _ in range(5)]
    got = run_engine_model(state, batches, 2)
    want = _golden(state, batches)
    assert compare_states(got, want) is None
    for a, b in zip(got.layers, want.layers):
        assert all(np.array_equal(m, n) for m, n in zip(a.masters, b.masters)) and np.array_equal(a.bias, b.bias)


def _far_state(kind, by):
    """A calibrated state the golden trainer runs whose ``kind`` shift is ``by`` away
    from the usual (``update``: prob_bits 24, lr_shift 62, in_exp ``-by``; ``loss``: every
    absolute exponent moved down by ``by``; ``bias``: the bias ``by`` exponents under its
    accumulator; ``grad``: layer 1's gradient exponent raised by ``by``) and its batch."""
    from ttforge.ir.random import train_layer_shapes
    from ttforge.ir.train import calibrate_state, export_network, init_state

    rng = np.random.default_rng(0)
    cfg = TrainConfig(prob_bits=24) if kind == "update" else TrainConfig()
    state = init_state(train_layer_shapes(rng, 1 if kind in ("update", "bias") else 2, 1, 1, 16, 8, 4), cfg,
                       seed=0, lr_shift=62 if kind == "update" else 6, in_exp=-by if kind == "update" else -7)
    x, y = rng.integers(-128, 128, size=(4, state.in_features)), rng.integers(0, 4, size=4)
    state = calibrate_state(state, x, y, fast=False)
    if kind == "loss":
        state = replace(state, in_exp=state.in_exp - by, layers=tuple(
            replace(L, step_exps=tuple(e - by for e in L.step_exps), bias_exp=L.bias_exp - by) for L in state.layers))
    elif kind == "bias":
        e_acc = export_network(state).layers[0].acc_exp(0)
        state = replace(state, layers=(replace(state.layers[0], bias_exp=e_acc - by),))
    elif kind == "grad":
        L1 = state.layers[1]
        state = replace(state, layers=(state.layers[0], replace(L1, grad_exps=(L1.grad_exps[0] + by,))))
    train_step(state, x, y)          # the golden trainer takes it
    return state


@pytest.mark.parametrize("kind, by, starts", [
    ("update", 50, "the update of layer 0 core 0 shifts by 129 (master_exps[0] -7 + lr_shift 62 - (gradient "
                   "exponent -24 + input exponent -50)), outside the descriptor's signed 8-bit SHIFT field "
                   "-128..127; use lr_shift in 0..60 (the state has 62, which a resume keeps: start a new run "
                   "from its network, ttforge train-int --resume STATE --export A.ttfa, then ttforge train-int "
                   "--from A.ttfa --lr-shift N)"),
    ("loss", 200, "the loss shifts by "),
    ("bias", 200, "the bias alignment of layer 0 shifts by 200 ("),
    ("grad", 200, "the input gradient of layer 1 step 0 shifts by "),
])
def test_a_shift_the_descriptor_cannot_hold_names_the_operation_and_the_fix(kind, by, starts):
    # it said "descriptor field SHIFT=129 is outside -128..127": no layer, no operation, no fix
    state = _far_state(kind, by)
    with pytest.raises(ConfigError) as e:
        compile_training(state, 4, fit_engine(state, 4))
    msg = str(e.value)
    assert msg.startswith(starts) and "\n" not in msg, msg
    assert "outside the descriptor's signed 8-bit " + ("BIAS_SHIFT" if kind == "bias" else "SHIFT") in msg
    fix = msg.split("; ", 1)[1]
    assert {"update": "lr_shift", "loss": "in_exp", "bias": "bias_exp", "grad": "grad_exps[0]"}[kind] in fix


def test_sibling_the_lr_shift_the_line_names_compiles():
    state = _far_state("update", 50)
    for lr in (60, 0):
        fixed = replace(state, lr_shift=lr)
        compile_training(fixed, 4, fit_engine(fixed, 4))


def test_a_state_wider_than_the_engines_accumulators_names_acc_bits_not_the_batch():
    # it said "a batch of 2 needs 40-bit accumulators ...; use a smaller batch" (no batch helps)
    state, x, y, _ = train_case(0, batch=2, acc_bits=40)
    engine = replace(fit_engine(state, 2), acc_bits=32)
    with pytest.raises(ConfigError, match=r"^the state's acc_bits=40 exceeds the engine's acc_bits=32 \(its forward "
                                          r"accumulators are that wide at any batch\); generate the engine with "
                                          r"acc_bits >= 40 or train the state with acc_bits <= 32$"):
        compile_training(state, 2, engine)
    compile_training(state, 2, replace(engine, acc_bits=40))      # the control: the fix named
