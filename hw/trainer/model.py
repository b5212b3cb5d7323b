"""A word-level interpreter of the training engine's operation program.

:class:`TrainMemories` holds what the engine holds (ACT, GRAD, CMEM, BMEM, the labels,
``MAXACC`` per operation, the generator state); :func:`load_batch` is the input stream
writer and :func:`run_step` executes the operations of a :class:`TrainProgram` *from their
encoded words*, exactly as ``docs/hardware.md`` ("Training engine") defines them. Its
results must equal the golden trainer (:func:`ttforge.ir.train.train_step`) bit for bit;
the RTL must equal this interpreter memory for memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ttforge.errors import ShapeError
from ttforge.hw.trainer.program import (TRAIN_DESC_WORDS, Op, TrainOp, TrainProgram, decode_op)
from ttforge.ir.arith import int_range
from ttforge.ir.rng import Xorshift32
# the golden step's own arithmetic: the interpreter differs from it only in how it moves data
from ttforge.ir.train import TrainConfig, forward_core, round_update, shift_sat, softmax_grad
from ttforge.ir.train import align_bias as golden_align_bias

__all__ = ["TrainMemories", "load_program", "load_batch", "run_step", "requant", "align_bias",
           "derive_core", "update_values"]

@dataclass
class TrainMemories:
    """The engine's memories as numpy arrays: ``act`` (words x L), ``grad`` (words x L),
    ``cmem``/``bmem`` (elements), ``labels`` (batch slots), ``maxacc`` (per operation),
    ``dmem`` (descriptor words), ``rng`` (the xorshift32 state) and the program
    registers ``regs``."""

    act: np.ndarray
    grad: np.ndarray
    cmem: np.ndarray
    bmem: np.ndarray
    labels: np.ndarray
    maxacc: np.ndarray
    dmem: np.ndarray
    rng: int
    regs: dict


def load_program(program: TrainProgram) -> TrainMemories:
    """Fresh memories (zeros, as after configuration) loaded with ``program``."""
    c = program.config
    L = c.lanes
    dmem = np.zeros(c.desc_depth * TRAIN_DESC_WORDS, dtype=np.int64)
    words = program.words
    dmem[:len(words)] = words
    cm = np.zeros(c.core_depth, dtype=np.int64)
    cm[:program.cmem.size] = program.cmem
    bm = np.zeros(c.bias_depth, dtype=np.int64)
    bm[:program.bmem.size] = program.bmem
    regs = {k: v for k, v in program.globals.items() if k != "RNG"}
    return TrainMemories(act=np.zeros((c.act_depth, L), dtype=np.int64),
                         grad=np.zeros((c.grad_depth, L), dtype=np.int64), cmem=cm, bmem=bm,
                         labels=np.zeros(c.max_batch, dtype=np.int64),
                         maxacc=np.zeros(c.desc_depth, dtype=np.int64), dmem=dmem,
                         rng=int(program.globals["RNG"]), regs=regs)


def load_batch(mem: TrainMemories, x: np.ndarray, y: np.ndarray) -> None:
    """The input stream writer: sample ``b``'s feature ``f`` to ACT word
    ``IN_BASE + f*BW + b // L``, lane ``b mod L``; its label to the label memory."""
    L = mem.act.shape[1]
    bw = 1 << mem.regs["BW_LOG"]
    B, nin = x.shape
    if B != mem.regs["BATCH"] or nin != mem.regs["IN_COUNT"]:
        raise ShapeError(f"a batch of shape {x.shape}; the program takes ({mem.regs['BATCH']}, "
                         f"{mem.regs['IN_COUNT']})")
    b = np.arange(B)
    for f in range(nin):
        mem.act[mem.regs["IN_BASE"] + f * bw + b // L, b % L] = x[:, f]
    mem.labels[:B] = y


def derive_core(master: np.ndarray, config: TrainConfig) -> np.ndarray:
    """The forward core of a master (the golden's ``sat_narrow_w(rshift_round(master, x))``)."""
    return forward_core(config, master)


def requant(acc: np.ndarray, shift: int, bits: int) -> np.ndarray:
    """``sat_bits(rshift_round(acc, shift))``; a negative shift is a saturating left shift."""
    return shift_sat(acc, shift, bits)[0]


def align_bias(b: np.ndarray, shift: int, limit: int) -> np.ndarray:
    """The bias at the accumulator exponent (``shift = e_acc - e_b``), clamped to ``+-limit``."""
    return golden_align_bias(b, 0, shift, limit)


def update_values(old: np.ndarray, v: np.ndarray, s: int, bits: int, config: TrainConfig,
                  gen: Xorshift32 | None) -> np.ndarray:
    """``sat_narrow_bits(old - round_s(v))``, one generator word per element in order when
    the rounding is stochastic."""
    d, _ = round_update(v, s, config, gen, bits)
    return np.clip(old - d, *int_range(bits, narrow=True))


def _grid(op: TrainOp, levels: int) -> tuple[np.ndarray, ...]:
    return tuple(np.arange(n).reshape([-1 if j == i else 1 for j in range(levels)])
                 for i, n in enumerate(op.N[:levels]))


def _addr(base: int, strides, idx) -> np.ndarray:
    return base + sum(s * i for s, i in zip(strides, idx))


def run_step(mem: TrainMemories, program: TrainProgram) -> dict:
    """Execute the operations in DMEM from operation 0 to the one with ``LAST``. Returns
    counts (``changed``: updates that changed a value)."""
    c = program.config
    tc = c.train
    L = c.lanes
    bw_log = mem.regs["BW_LOG"]
    bw = 1 << bw_log
    B = mem.regs["BATCH"]
    gen = Xorshift32(mem.rng) if mem.regs["STOCH"] else None
    mems = {0: mem.act, 1: mem.grad}
    stats = {"changed": 0}
    j = 0
    while True:
        op = decode_op(mem.dmem[j * TRAIN_DESC_WORDS:(j + 1) * TRAIN_DESC_WORDS])
        if op.OP == Op.ZFILL:
            mems[op.DST][op.O_BASE:op.O_BASE + op.N[0]] = 0
        elif op.OP == Op.CONTRACT:
            i4 = _grid(op, 4)
            u = mems[op.SRC][_addr(op.U_BASE, op.U_S, i4)]                         # (N0,N1,N2,N3,L)
            cv = derive_core(mem.cmem[_addr(op.V_BASE, op.V_S, i4)], tc)
            acc = (u * cv[..., None]).sum(axis=3)                                   # (N0,N1,N2,L)
            i3 = _grid(op, 3)
            o = _addr(op.O_BASE, op.O_S, i3)
            o = np.broadcast_to(o, acc.shape[:3])
            rel = o - op.O_BASE
            inside = rel < op.OUT_VALID
            if op.BIAS:
                feat = np.where(inside, rel >> bw_log, 0)
                bias = align_bias(mem.bmem[op.B_BASE + feat], op.BIAS_SHIFT, op.BIAS_LIMIT)
                acc = acc + np.where(inside, bias, 0)[..., None]
            sample = ((rel & (bw - 1)) * L)[..., None] + np.arange(L)
            valid = sample < B
            mem.maxacc[j] = int(np.abs(np.where(valid, acc, 0)).max()) if acc.size else 0
            y = requant(acc, op.SHIFT, op.SAT_BITS)
            if op.RELU:
                y = np.maximum(y, 0)
            y = np.where(inside[..., None], y, 0)
            if op.MASK:
                y = np.where(mem.act[op.M_BASE + rel] > 0, y, 0)
            mems[op.DST][o.reshape(-1)] = y.reshape(-1, L)
        elif op.OP == Op.WGRAD:
            i4 = _grid(op, 4)
            u = mems[1][_addr(op.U_BASE, op.U_S, i4)]
            v = 1 if op.ONES else mem.act[_addr(op.V_BASE, op.V_S, i4)]
            tot = (u * v).sum(axis=(2, 3, 4))                                        # (N0, N1)
            t = np.broadcast_to(_addr(op.O_BASE, op.O_S[:2], _grid(op, 2)), tot.shape).reshape(-1)
            store, bits = (mem.bmem, tc.bias_bits) if op.DST else (mem.cmem, tc.master_bits)
            old = store[t].copy()
            store[t] = update_values(old, tot.reshape(-1), op.SHIFT, bits, tc, gen)
            stats["changed"] += int(np.count_nonzero(store[t] != old))
        elif op.OP == Op.LOSS:
            C = op.N[0]
            slots = bw * L
            b = np.arange(slots)
            rows = op.U_BASE + np.arange(C)[None, :] * bw + (b // L)[:, None]
            z = mem.act[rows, (b % L)[:, None]]                                     # (slots, C)
            g = np.zeros_like(z)
            if B:
                g[:B] = softmax_grad(z[:B], op.SHIFT - tc.table_frac_bits, mem.labels[:B], tc)["g"]
            mem.grad[op.O_BASE + np.arange(C)[None, :] * bw + (b // L)[:, None], (b % L)[:, None]] = g
        if op.LAST:
            break
        j += 1
    if gen is not None:
        mem.rng = gen.state
    return stats
