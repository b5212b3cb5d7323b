"""Compile a training state into the training engine's operation program.

``compile_training(state, batch, config)`` follows ``docs/hardware.md`` ("Training
engine") exactly: the batch lives in the lanes (a *batch vector* of ``F`` features is
``F * BW`` words, feature ``f`` of sample ``b`` at word ``f*BW + b // L``, lane
``b mod L``, with ``BW = Bp / L`` and ``Bp`` the batch slots), every saved activation
has its own region of ACT, the gradients alternate between two regions of GRAD, the
masters sit in CMEM in the ``P x K`` layout of the step that uses them (so the update's
element order is the order of the xorshift32 words), and the step is a list of
:class:`TrainOp`: ``ZFILL``, ``CONTRACT`` (forward steps, and input gradients through
the transposed core), ``LOSS`` and ``WGRAD`` (core and bias gradients, each followed
by its update).

The exponents change after every step (delayed max scaling): the engine records the
largest ``|acc|`` of every ``CONTRACT`` in ``MAXACC``, and :func:`next_exponents` turns
those into the state's next exponents; :func:`compile_training` of the new state gives
the next program (only shift fields differ). :func:`state_from_memories` reads a state
back from the memory images.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Sequence

import numpy as np

from ttforge.errors import ConfigError, ShapeError
from ttforge.ir.arith import int_range
from ttforge.ir.train import (TrainConfig, TrainState, engine_labels_problem, export_network,
                              update_shift_bounds, widths)

__all__ = [
    "Op", "TrainOp", "TrainEngineConfig", "TrainProgram", "RegionMap", "compile_training",
    "encode_op", "decode_op", "next_exponents", "state_from_memories", "batch_slots",
    "TRAIN_DESC_WORDS", "OP_FIELDS", "fit_engine", "read_write_overlap", "MAX_TRAIN_MEMORY_BITS",
    "check_labels_fit", "engine_memory",
]

#: 32-bit words per operation descriptor.
TRAIN_DESC_WORDS = 32


class Op(IntEnum):
    """Operation kinds (``FLAGS.OP``)."""

    CONTRACT = 0
    WGRAD = 1
    LOSS = 2
    ZFILL = 3


#: ``FLAGS`` bit fields: name -> (lsb, width, signed).
OP_FIELDS = {
    "OP": (0, 2, False), "SRC": (2, 1, False), "DST": (3, 1, False), "BIAS": (4, 1, False),
    "RELU": (5, 1, False), "MASK": (6, 1, False), "ONES": (7, 1, False), "LAST": (8, 1, False),
    "SAT_BITS": (16, 8, False), "SHIFT": (24, 8, True),
}
_SIGNED8 = (-128, 127)


def _ceil_pow2(v: int) -> int:
    return 1 << max(0, int(v) - 1).bit_length()


def batch_slots(batch: int, lanes: int) -> int:
    """``Bp``: the smallest power of two holding ``batch`` samples and at least ``lanes``."""
    return _ceil_pow2(max(int(batch), int(lanes)))


#: Largest batch a training engine holds (its gradient buffers are sized for it).
MAX_ENGINE_BATCH = 4096
#: Most bits of memory a generated training engine may have (:meth:`TrainEngineConfig.
#: check_memory_bits`). Above the inference engine's ``MAX_MEMORY_BITS``: the engine is
#: also simulated (``train-board --sim``), where an MNIST network at batch 64 takes ~2**27
#: bits. 2**28 holds the largest program ``fit_engine`` lays out at 4 lanes (ACT and GRAD
#: 2**20 words of 24 bits, CMEM 2**20): ACT and GRAD of 2**20 words at 64 lanes (2.2e9
#: bits) took a minute and 10 GB in the generator, then Yosys crashed.
MAX_TRAIN_MEMORY_BITS = 1 << 28


@dataclass(frozen=True)
class TrainEngineConfig:
    """Parameters of a generated training engine (validated on construction).

    ``lanes`` (``L``, a power of two 1..64); ``train`` the widths (a
    :class:`~ttforge.ir.train.TrainConfig`); ``acc_bits`` the engine's accumulators
    (every accumulator of a step must fit, checked per program); memory depths
    ``act_depth``/``grad_depth`` in words of ``L`` elements, ``core_depth``/``bias_depth``
    in elements, ``desc_depth`` in operations; ``max_batch`` the batch slots ``Bp`` the
    label memory holds; ``max_classes`` the widest softmax.

    An engine is generated (:class:`~ttforge.hw.trainer.engine.TrainEngine`) only if its
    memories (:meth:`memory_parts`) hold at most :data:`MAX_TRAIN_MEMORY_BITS` bits
    (:meth:`check_memory_bits`). A config itself may be larger: it lays out
    programs (:func:`fit_engine`'s probe) and runs the interpreter
    (:mod:`ttforge.hw.trainer.model`), which hold no memories of that size.
    """

    lanes: int = 4
    train: TrainConfig = TrainConfig()
    acc_bits: int = 48
    act_depth: int = 4096
    grad_depth: int = 1024
    core_depth: int = 4096
    bias_depth: int = 256
    desc_depth: int = 64
    max_batch: int = 64
    max_classes: int = 16

    def __post_init__(self) -> None:
        if not isinstance(self.train, TrainConfig):
            raise ConfigError("TrainEngineConfig.train must be a TrainConfig")
        for name, lo, hi in (("lanes", 1, 64), ("acc_bits", 8, 48), ("act_depth", 1, 1 << 20),
                             ("grad_depth", 1, 1 << 20), ("core_depth", 1, 1 << 20),
                             ("bias_depth", 1, 1 << 16), ("desc_depth", 1, 4096),
                             ("max_batch", 1, MAX_ENGINE_BATCH), ("max_classes", 2, 1024)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
                raise ConfigError(f"TrainEngineConfig.{name}={v!r} must be an integer in {lo}..{hi}")
        for name in ("lanes", "max_batch"):
            v = getattr(self, name)
            if v & (v - 1):
                raise ConfigError(f"TrainEngineConfig.{name}={v} must be a power of two")
        if self.max_batch < self.lanes:
            raise ConfigError(f"max_batch={self.max_batch} must be >= lanes={self.lanes} "
                              f"(a batch fills at least one word)")

    def memory_parts(self) -> dict[str, int]:
        """Bits of each memory the engine instantiates
        (:class:`~ttforge.hw.trainer.engine.TrainEngine`).

        Returns
        -------
        dict
            ``act`` (all of its ``act_groups`` memories), ``grad``, ``cmem``, ``bmem``,
            ``dmem``, ``labels``, ``maxacc`` and the loss unit's ``exp2`` table.
        """
        tc = self.train
        return {"act": self.act_depth * self.lanes * self.act_store_bits,
                "grad": self.grad_depth * self.lanes * self.grad_store_bits,
                "cmem": self.core_depth * tc.master_bits, "bmem": self.bias_depth * tc.bias_bits,
                "dmem": self.desc_depth * TRAIN_DESC_WORDS * 32, "labels": self.max_batch * 16,
                "maxacc": self.desc_depth * self.acc_bits,
                "exp2": (1 << tc.table_frac_bits) * (tc.table_bits + 1)}

    def check_memory_bits(self) -> None:
        """Refuse memories above :data:`MAX_TRAIN_MEMORY_BITS` in one line
        naming the depth that holds the most and the largest value of it that fits
        (:func:`ttforge.hw.config.check_memory_bits`)."""
        from ttforge.hw.config import check_memory_bits

        tc = self.train
        # max_batch (the labels, 16 bits a slot, at most 64 kbit) never holds the most
        check_memory_bits(self.memory_parts(), {
            "act_depth": (self.act_depth, "act", self.lanes * self.act_store_bits, 1, "word"),
            "grad_depth": (self.grad_depth, "grad", self.lanes * self.grad_store_bits, 1, "word"),
            "core_depth": (self.core_depth, "cmem", tc.master_bits, 1, "element"),
            "bias_depth": (self.bias_depth, "bmem", tc.bias_bits, 1, "element"),
            "desc_depth": (self.desc_depth, "dmem and maxacc", TRAIN_DESC_WORDS * 32 + self.acc_bits, 1,
                           "operation")}, prefix="TrainEngineConfig.", limit=MAX_TRAIN_MEMORY_BITS,
            why="what a simulated training engine is generated with in a few GB")

    @property
    def act_store_bits(self) -> int:
        """Width of an ACT element (network inputs, step outputs, logits)."""
        return max(self.train.act_bits, self.train.inter_bits)

    @property
    def grad_store_bits(self) -> int:
        """Width of a GRAD element (logit and step-input gradients)."""
        return max(self.train.grad_bits, self.train.logit_grad_bits)


@dataclass(frozen=True)
class TrainOp:
    """One operation descriptor, field by field (``docs/hardware.md``, "Training engine").

    ``N`` has four loop bounds; ``U_S``/``V_S`` four strides; ``O_S`` three.
    """

    OP: int
    SRC: int = 0
    DST: int = 0
    BIAS: int = 0
    RELU: int = 0
    MASK: int = 0
    ONES: int = 0
    LAST: int = 0
    SAT_BITS: int = 0
    SHIFT: int = 0
    N: tuple[int, int, int, int] = (1, 1, 1, 1)
    U_BASE: int = 0
    U_S: tuple[int, int, int, int] = (0, 0, 0, 0)
    V_BASE: int = 0
    V_S: tuple[int, int, int, int] = (0, 0, 0, 0)
    O_BASE: int = 0
    O_S: tuple[int, int, int] = (0, 0, 0)
    B_BASE: int = 0
    BIAS_SHIFT: int = 0
    BIAS_LIMIT: int = 0
    M_BASE: int = 0
    OUT_VALID: int = 0
    #: what the operation is, for people and for the divergence search (not encoded)
    label: str = field(default="", compare=False)


def _put(name: str, value: int) -> int:
    lsb, width, sgn = OP_FIELDS[name]
    lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if sgn else (0, (1 << width) - 1)
    if not lo <= int(value) <= hi:
        raise ConfigError(f"descriptor field {name}={value} is outside {lo}..{hi}")
    return (int(value) & ((1 << width) - 1)) << lsb


def _get(name: str, word: int) -> int:
    lsb, width, sgn = OP_FIELDS[name]
    v = (word >> lsb) & ((1 << width) - 1)
    return v - (1 << width) if sgn and v >> (width - 1) else v


def encode_op(op: TrainOp) -> tuple[int, ...]:
    """The :data:`TRAIN_DESC_WORDS` unsigned 32-bit words of an operation."""
    flags = 0
    for name in OP_FIELDS:
        flags |= _put(name, getattr(op, name))
    if not _SIGNED8[0] <= op.BIAS_SHIFT <= _SIGNED8[1]:
        raise ConfigError(f"BIAS_SHIFT={op.BIAS_SHIFT} is outside the signed 8-bit field")
    if not 0 <= op.BIAS_LIMIT < 1 << 47:
        raise ConfigError(f"BIAS_LIMIT={op.BIAS_LIMIT} is outside 0..2^47-1")
    words = [flags, *op.N, op.U_BASE, *op.U_S, op.V_BASE, *op.V_S, op.O_BASE, *op.O_S, op.B_BASE,
             op.BIAS_SHIFT & 0xFF, op.BIAS_LIMIT & 0xFFFFFFFF, op.BIAS_LIMIT >> 32, op.M_BASE,
             op.OUT_VALID]
    words += [0] * (TRAIN_DESC_WORDS - len(words))
    for i, w in enumerate(words):
        if not 0 <= int(w) < 1 << 32:
            raise ConfigError(f"descriptor word {i} = {w} does not fit in 32 unsigned bits")
    return tuple(int(w) for w in words)


def decode_op(words: Sequence[int]) -> TrainOp:
    """Inverse of :func:`encode_op`."""
    w = [int(v) & 0xFFFFFFFF for v in words]
    if len(w) != TRAIN_DESC_WORDS:
        raise ShapeError(f"an operation has {TRAIN_DESC_WORDS} words, got {len(w)}")
    f = w[0]
    bs = w[20] & 0xFF
    return TrainOp(
        **{name: _get(name, f) for name in OP_FIELDS},
        N=tuple(w[1:5]), U_BASE=w[5], U_S=tuple(w[6:10]), V_BASE=w[10], V_S=tuple(w[11:15]),
        O_BASE=w[15], O_S=tuple(w[16:19]), B_BASE=w[19], BIAS_SHIFT=bs - 256 if bs >= 128 else bs,
        BIAS_LIMIT=w[21] | (w[22] & 0xFFFF) << 32, M_BASE=w[23], OUT_VALID=w[24])


# ---------------------------------------------------------------------------------------
# the program
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RegionMap:
    """Where things live: ``act[i][t]`` the ACT word base of layer ``i``'s step-``t``
    input (``act[n][0]``: the logits), ``grad`` the two GRAD region bases, ``cmem[i][k]``
    the CMEM element base of layer ``i``'s core ``k`` (``P x K`` of its step), ``bmem[i]``
    the BMEM base of layer ``i``'s bias (``-1``: none)."""

    act: tuple[tuple[int, ...], ...]
    grad: tuple[int, int]
    cmem: tuple[tuple[int, ...], ...]
    bmem: tuple[int, ...]
    act_words: int
    grad_words: int
    cmem_size: int
    bmem_size: int


@dataclass(frozen=True)
class TrainProgram:
    """A compiled training step: operations, memory images and program registers.

    ``maxacc_ops[j]`` names the ``CONTRACT`` whose ``MAXACC`` sets an exponent:
    ``("step", layer, t)`` or ``("grad", layer, t)``. ``cmem``/``bmem`` are the element
    images (masters, biases); ``globals`` the program registers (``BATCH``, ``BW_LOG``,
    ``IN_COUNT``, ``IN_BASE``, ``STOCH``, ``RNG``).
    """

    config: TrainEngineConfig
    batch: int
    slots: int
    ops: tuple[TrainOp, ...]
    regions: RegionMap
    cmem: np.ndarray
    bmem: np.ndarray
    globals: dict
    maxacc_ops: dict

    @property
    def words(self) -> tuple[int, ...]:
        return tuple(w for op in self.ops for w in encode_op(op))

    @property
    def bw(self) -> int:
        return self.slots // self.config.lanes


def _core_pk(state: TrainState, i: int, k: int) -> tuple[np.ndarray, int]:
    """Master ``k`` of layer ``i`` as the ``P x K`` matrix of the step that uses it."""
    L = state.layers[i]
    t = next(t for t, st in enumerate(L.schedule.steps) if st.core == k)
    st = L.schedule.steps[t]
    return L.masters[k].transpose(st.core_axes).reshape(st.P, st.K), t


def _regions(state: TrainState, bw: int) -> RegionMap:
    act: list[tuple[int, ...]] = []
    off = 0
    len(state.layers)
    for i, L in enumerate(state.layers):
        bases = []
        for t, st in enumerate(L.schedule.steps):
            size = st.A * st.K * st.Q
            if t == 0 and i > 0:
                size = max(size, state.layers[i - 1].schedule.shape.out_size)
            bases.append(off)
            off += size * bw
        act.append(tuple(bases))
    act.append((off,))
    off += state.layers[-1].schedule.shape.out_size * bw
    gsize = 0
    for L in state.layers:
        for st in L.schedule.steps:
            gsize = max(gsize, st.A * st.K * st.Q, st.A * st.P * st.Q)
    gsize *= bw
    cm: list[tuple[int, ...]] = []
    c_off = 0
    bm = []
    b_off = 0
    for i, L in enumerate(state.layers):
        bases = [0] * L.d
        for t, st in enumerate(L.schedule.steps):   # cores in the order of their steps
            bases[st.core] = c_off
            c_off += st.P * st.K
        cm.append(tuple(bases))
        if L.bias is None:
            bm.append(-1)
        else:
            bm.append(b_off)
            b_off += L.out_features
    return RegionMap(act=tuple(act), grad=(0, gsize), cmem=tuple(cm), bmem=tuple(bm),
                     act_words=off, grad_words=2 * gsize, cmem_size=c_off, bmem_size=b_off)


def check_labels_fit(state: TrainState) -> None:
    """One line (:class:`ConfigError`) if the state's labels do not fit the training
    engine's input stream (:func:`ttforge.ir.train.engine_labels_problem`), before any
    step rather than diverging on the board."""
    problem = engine_labels_problem(state)
    if problem:
        raise ConfigError(problem)


def _check_fits(state: TrainState, batch: int, cfg: TrainEngineConfig, reg: RegionMap, slots: int) -> None:
    need = [("act_depth", reg.act_words, cfg.act_depth), ("grad_depth", reg.grad_words, cfg.grad_depth),
            ("core_depth", reg.cmem_size, cfg.core_depth), ("bias_depth", reg.bmem_size, cfg.bias_depth),
            ("max_batch", slots, cfg.max_batch), ("max_classes", state.n_classes, cfg.max_classes)]
    for name, want, have in need:
        if want > have:
            raise ConfigError(f"this network at batch {batch} needs {name} >= {want} (the engine has "
                              f"{have}); generate the engine with a larger {name} or use a smaller batch")
    if state.config.acc_bits > cfg.acc_bits:   # the forward sums (bias included) reach it at any batch
        raise ConfigError(f"the state's acc_bits={state.config.acc_bits} exceeds the engine's acc_bits="
                          f"{cfg.acc_bits} (its forward accumulators are that wide at any batch); generate the "
                          f"engine with acc_bits >= {state.config.acc_bits} or train the state with acc_bits "
                          f"<= {cfg.acc_bits}")
    w = max(widths(state, batch), key=lambda w: w["bits"])
    if w["bits"] > cfg.acc_bits:
        # only a gradient's sum runs over the batch; a backward one over the core's P
        fix = ("use a smaller batch or narrower grad_bits/act_bits/inter_bits" if w["phase"] == "gradient" else
               "use narrower w_bits/grad_bits or smaller ranks")
        raise ConfigError(f"a batch of {batch} needs {w['bits']}-bit accumulators ({w['phase']} of layer "
                          f"{w['layer']} step {w['step']}) but the engine has acc_bits={cfg.acc_bits}; {fix}")
    tc, ec = state.config, cfg.train
    for name in ("w_bits", "master_bits", "act_bits", "inter_bits", "grad_bits", "prob_bits",
                 "table_bits", "table_frac_bits", "bias_bits"):
        if getattr(tc, name) != getattr(ec, name):
            raise ConfigError(f"the state has {name}={getattr(tc, name)} but the engine was generated "
                              f"with {getattr(ec, name)}; generate it from the state's TrainConfig")
    check_labels_fit(state)


def _shift8(value: int, what: str, made_of: str, fix: str, field: str = "SHIFT") -> int:
    """``value`` for a signed 8-bit shift field of the descriptor, or one line naming the
    operation (``what``), the state's fields the shift is made of and the fix."""
    lo, hi = _SIGNED8
    if not lo <= value <= hi:
        raise ConfigError(f"the {what} shifts by {value} ({made_of}), outside the descriptor's signed 8-bit "
                          f"{field} field {lo}..{hi}; {fix}")
    return int(value)


def _lr_fix(state: TrainState) -> str:
    """The fix of an update shift outside the 8-bit field: the ``lr_shift`` values that
    bring every update's shift in (each moves with it one for one), or training on the host."""
    lo, hi = _SIGNED8
    base = [s - state.lr_shift for _, s, _ in update_shift_bounds(state, 1)]
    first, last = max(0, lo - min(base)), min(62, hi - max(base))
    if first <= last:
        # a resume keeps the state's lr_shift (train-int --resume refuses --lr-shift): a
        # new run from the state's network is what takes another one
        return (f"use lr_shift in {first}..{last} (the state has {state.lr_shift}, which a resume keeps: start a "
                f"new run from its network, ttforge train-int --resume STATE --export A.ttfa, then ttforge "
                f"train-int --from A.ttfa --lr-shift N)")
    return (f"no lr_shift in 0..62 brings every update in: the state's exponents (in_exp={state.in_exp}) are "
            f"beyond the engine's reach; train it on the host (ttforge train-int)")


def _span(base: int, n, strides) -> tuple[int, int]:
    """The lowest and highest address of ``base + sum_j i_j * strides[j]``, ``i_j < n[j]``."""
    lo = hi = base
    for nj, sj in zip(n, strides):
        lo += min(0, (nj - 1) * sj)
        hi += max(0, (nj - 1) * sj)
    return lo, hi


def read_write_overlap(op: TrainOp) -> str | None:
    """Why ``op`` may read a word of a memory it writes, or None.

    The engine's ACT and GRAD blocks do not order a read and a write of one address in
    the same cycle (``no_rw_check``), so an operation's reads and writes of one memory
    must lie in disjoint regions: a ``CONTRACT``'s U (and mask) words and its outputs, a
    ``LOSS``'s logits (ACT) and gradients (GRAD) are in different memories already.
    """
    if op.OP != Op.CONTRACT:
        return None
    out = _span(op.O_BASE, op.N[:3], op.O_S)
    reads = [("U", op.SRC, _span(op.U_BASE, op.N, op.U_S))]
    if op.MASK:
        reads.append(("M", 0, (op.M_BASE + out[0] - op.O_BASE, op.M_BASE + out[1] - op.O_BASE)))
    for name, mem, (lo, hi) in reads:
        if mem == op.DST and lo <= out[1] and out[0] <= hi:
            return (f"reads {name} words {lo}..{hi} of {('ACT', 'GRAD')[mem]} while writing "
                    f"words {out[0]}..{out[1]} of it (in place)")
    return None


def compile_training(state: TrainState, batch: int, config: TrainEngineConfig) -> TrainProgram:
    """The operation program of one training step of ``state`` on ``batch`` samples."""
    from ttforge.ir.train import bias_limit   # the one definition of the bias clamp

    cfg, tc = config, state.config
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise ConfigError(f"batch={batch!r} must be a positive integer")
    batch = int(batch)
    L_ = cfg.lanes
    slots = batch_slots(batch, L_)
    bw = slots // L_
    reg = _regions(state, bw)
    _check_fits(state, batch, cfg, reg, slots)
    net = export_network(state)
    n = len(state.layers)
    ops: list[TrainOp] = []
    maxacc: dict[int, tuple[str, int, int]] = {}

    def zfill(dst: int, start: int, end: int, label: str) -> None:
        if end > start:
            ops.append(TrainOp(OP=Op.ZFILL, DST=dst, N=(end - start, 1, 1, 1), O_BASE=start, label=label))

    # -- forward --------------------------------------------------------------------
    first = state.layers[0]
    zfill(0, reg.act[0][0] + first.in_features * bw, reg.act[0][0] + first.schedule.shape.in_size * bw,
          "pad the input")
    for i, (L, IL) in enumerate(zip(state.layers, net.layers)):
        shifts = IL.shifts()
        for t, st in enumerate(L.schedule.steps):
            QW = st.Q * bw
            last = t == L.d - 1
            src = reg.act[i][t]
            dst = reg.act[i][t + 1] if not last else reg.act[i + 1][0]
            out_elems = st.A * st.P * st.Q
            kw = {}
            if last and L.bias is not None:
                prev = L.step_exps[-2] if L.d > 1 else state.layer_in_exp(i)
                e_acc = IL.core_exps[st.core] + prev
                bias_shift = _shift8(
                    e_acc - L.bias_exp, f"bias alignment of layer {i}",
                    f"its accumulator exponent {e_acc} - bias_exp {L.bias_exp}",
                    f"layer {i}'s bias_exp must lie in {e_acc - _SIGNED8[1]}..{e_acc - _SIGNED8[0]} (move the bias "
                    f"with it) or train the state on the host (ttforge train-int)", "BIAS_SHIFT")
                kw = dict(BIAS=1, B_BASE=reg.bmem[i], BIAS_SHIFT=bias_shift,
                          BIAS_LIMIT=max(bias_limit(tc, L), 0))
            maxacc[len(ops)] = ("step", i, t)
            ops.append(TrainOp(
                OP=Op.CONTRACT, SRC=0, DST=0, RELU=int(last and L.relu), SAT_BITS=IL.step_out_bits(t),
                SHIFT=int(shifts[t]), N=(st.A, st.P, QW, st.K),
                U_BASE=src, U_S=(st.K * QW, 0, 1, QW),
                V_BASE=reg.cmem[i][st.core], V_S=(0, st.K, 0, 1),
                O_BASE=dst, O_S=(st.P * QW, QW, 1),
                OUT_VALID=(L.out_features if last else out_elems) * bw,
                label=f"forward layer {i} step {t}", **kw))
            if last:
                nxt_in = (state.layers[i + 1].schedule.shape.in_size if i + 1 < n else out_elems)
                zfill(0, dst + out_elems * bw, dst + nxt_in * bw, f"pad the input of layer {i + 1}")
    # -- loss -----------------------------------------------------------------------
    last_layer = state.layers[-1]
    g_cur, g_nxt = reg.grad
    e_z = net.layers[-1].out_exp
    F = tc.table_frac_bits
    loss_shift = _shift8(
        e_z + F, "loss", f"the logit exponent {e_z} + table_frac_bits {F}",
        f"layer {n - 1}'s output exponent (step_exps[{last_layer.d - 1}]) must lie in {_SIGNED8[0] - F}.."
        f"{_SIGNED8[1] - F}: calibrate the state with an in_exp that suits its inputs (in_exp={state.in_exp})")
    ops.append(TrainOp(OP=Op.LOSS, N=(state.n_classes, 1, 1, 1), U_BASE=reg.act[n][0], O_BASE=g_cur,
                       SHIFT=loss_shift, label="loss"))
    zfill(1, g_cur + state.n_classes * bw, g_cur + last_layer.schedule.shape.out_size * bw,
          "pad the logit gradient")
    # -- backward, gradients, updates -----------------------------------------------
    e_g = -tc.prob_bits
    for i in range(n - 1, -1, -1):
        L, IL = state.layers[i], net.layers[i]
        if L.bias is not None:
            s_b = L.bias_exp + state.lr_shift - e_g
            s_b = _shift8(s_b, f"bias update of layer {i}",
                          f"bias_exp {L.bias_exp} + lr_shift {state.lr_shift} - gradient exponent {e_g}",
                          _lr_fix(state))
            ops.append(TrainOp(OP=Op.WGRAD, ONES=1, DST=1, SHIFT=s_b,
                               N=(1, L.out_features, 1, bw), U_BASE=g_cur, U_S=(0, bw, 0, 1),
                               O_BASE=reg.bmem[i], O_S=(0, 1, 0), label=f"bias gradient layer {i}"))
        for t in range(L.d - 1, -1, -1):
            st = L.schedule.steps[t]
            QW = st.Q * bw
            e_x = IL.step_in(t)[1]
            c_base = reg.cmem[i][st.core]
            e_next = None
            if i > 0 or t > 0:
                e_acc = IL.core_exps[st.core] + e_g
                e_next = L.grad_exps[t]
                in_elems = st.A * st.K * st.Q
                kw = {}
                if t == 0:   # the gradient of the previous layer's output: its ReLU mask
                    kw = dict(MASK=1, M_BASE=reg.act[i][0])
                maxacc[len(ops)] = ("grad", i, t)
                s_g = _shift8(
                    e_next - e_acc, f"input gradient of layer {i} step {t}",
                    f"grad_exps[{t}] {e_next} - its accumulator exponent {e_acc}",
                    f"layer {i}'s grad_exps[{t}] must lie in {e_acc + _SIGNED8[0]}..{e_acc + _SIGNED8[1]}: "
                    f"calibrate the state again (calibration fits it to a batch's gradients)")
                ops.append(TrainOp(
                    OP=Op.CONTRACT, SRC=1, DST=1, SAT_BITS=tc.grad_bits, SHIFT=s_g,
                    N=(st.A, st.K, QW, st.P), U_BASE=g_cur, U_S=(st.P * QW, 0, 1, QW),
                    V_BASE=c_base, V_S=(0, 1, 0, st.K), O_BASE=g_nxt, O_S=(st.K * QW, QW, 1),
                    OUT_VALID=in_elems * bw, label=f"input gradient layer {i} step {t}", **kw))
                if t == 0:
                    prev_out = state.layers[i - 1].schedule.shape.out_size
                    zfill(1, g_nxt + in_elems * bw, g_nxt + prev_out * bw,
                          f"pad the output gradient of layer {i - 1}")
            s_w = L.master_exps[st.core] + state.lr_shift - (e_g + e_x)
            s_w = _shift8(s_w, f"update of layer {i} core {st.core}",
                          f"master_exps[{st.core}] {L.master_exps[st.core]} + lr_shift {state.lr_shift} - "
                          f"(gradient exponent {e_g} + input exponent {e_x})", _lr_fix(state))
            ops.append(TrainOp(
                OP=Op.WGRAD, DST=0, SHIFT=s_w,
                N=(st.P, st.K, st.A, QW), U_BASE=g_cur, U_S=(QW, 0, st.P * QW, 1),
                V_BASE=reg.act[i][t], V_S=(0, QW, st.K * QW, 1), O_BASE=c_base, O_S=(st.K, 1, 0),
                label=f"core gradient layer {i} core {st.core}"))
            if e_next is not None:
                g_cur, g_nxt = g_nxt, g_cur
                e_g = e_next
    ops[-1] = replace(ops[-1], LAST=1)
    if len(ops) > cfg.desc_depth:
        raise ConfigError(f"the training program has {len(ops)} operations but the engine holds "
                          f"desc_depth={cfg.desc_depth}; generate it with a larger desc_depth")
    for op in ops:
        encode_op(op)   # every field in range, or one line naming it
        clash = read_write_overlap(op)
        if clash:       # the engine's memories rely on it (no_rw_check): a compiler bug
            raise ConfigError(f"operation {op.label!r}: {clash}")
    cm = np.zeros(reg.cmem_size, dtype=np.int64)
    bm = np.zeros(reg.bmem_size, dtype=np.int64)
    for i, L in enumerate(state.layers):
        for k in range(L.d):
            pk, _ = _core_pk(state, i, k)
            cm[reg.cmem[i][k]:reg.cmem[i][k] + pk.size] = pk.reshape(-1)
        if L.bias is not None:
            bm[reg.bmem[i]:reg.bmem[i] + L.out_features] = L.bias
    glob = dict(BATCH=batch, BW_LOG=bw.bit_length() - 1, IN_COUNT=first.in_features,
                IN_BASE=reg.act[0][0], STOCH=int(tc.rounding == "stochastic"), RNG=int(state.rng))
    return TrainProgram(cfg, batch, slots, tuple(ops), reg, cm, bm, glob, maxacc)


def next_exponents(state: TrainState, program: TrainProgram, maxacc: Sequence[int]) -> TrainState:
    """The state's exponents after a step, from the engine's ``MAXACC`` per operation
    (delayed max scaling: ``e_acc + max(0, bitlen(M) - (b - 1))``); nothing else changes."""
    net = export_network(state)
    layers = list(state.layers)
    steps = [list(L.step_exps) for L in layers]
    grads = [list(L.grad_exps) for L in layers]
    tc = state.config
    e_g = {}
    n = len(layers)
    # the gradient exponent arriving at each step (as the step used it)
    for i in range(n - 1, -1, -1):
        g = -tc.prob_bits if i == n - 1 else layers[i + 1].grad_exps[0]
        for t in range(layers[i].d - 1, -1, -1):
            e_g[(i, t)] = g
            g = layers[i].grad_exps[t]
    for j, (kind, i, t) in program.maxacc_ops.items():
        M = int(maxacc[j])
        IL = net.layers[i]
        if kind == "step":
            e_acc, bits = IL.acc_exp(t), IL.step_out_bits(t)
            steps[i][t] = e_acc + max(0, M.bit_length() - (bits - 1))
        else:
            e_acc = IL.core_exps[layers[i].schedule.steps[t].core] + e_g[(i, t)]
            grads[i][t] = e_acc + max(0, M.bit_length() - (tc.grad_bits - 1))
    layers = [replace(L, step_exps=tuple(s), grad_exps=tuple(g)) for L, s, g in zip(layers, steps, grads)]
    return replace(state, layers=tuple(layers))


def state_from_memories(state: TrainState, program: TrainProgram, cmem: np.ndarray, bmem: np.ndarray,
                        rng: int, steps: int = 1) -> TrainState:
    """``state`` with the masters and biases read back from CMEM/BMEM images (the layout of
    ``program``), the generator state ``rng`` and ``steps`` more steps counted."""
    reg = program.regions
    layers = []
    mlo, mhi = int_range(state.config.master_bits, narrow=True)
    for i, L in enumerate(state.layers):
        masters = list(L.masters)
        for k in range(L.d):
            t = next(t for t, st in enumerate(L.schedule.steps) if st.core == k)
            st = L.schedule.steps[t]
            flat = np.asarray(cmem[reg.cmem[i][k]:reg.cmem[i][k] + st.P * st.K], dtype=np.int64)
            if flat.size and (flat.min() < mlo or flat.max() > mhi):
                raise ShapeError(f"layer {i} core {k} read back leaves the master range")
            tshape = tuple(L.masters[k].shape[a] for a in st.core_axes)
            masters[k] = np.ascontiguousarray(flat.reshape(tshape).transpose(np.argsort(st.core_axes)))
        bias = L.bias
        if L.bias is not None:
            bias = np.asarray(bmem[reg.bmem[i]:reg.bmem[i] + L.out_features], dtype=np.int64).copy()
        layers.append(replace(L, masters=tuple(masters), bias=bias))
    words = state.n_stored() * steps if state.config.rounding == "stochastic" else 0
    return replace(state, layers=tuple(layers), rng=int(rng), words=state.words + words,
                   step=state.step + steps)


def fit_engine(state: TrainState, batch: int, lanes: int = 4, acc_bits: int = 48) -> TrainEngineConfig:
    """The smallest engine (depths rounded up to powers of two) that trains ``state`` on
    batches of ``batch`` samples with ``lanes`` lanes, with the state's widths."""
    def pow2(v: int) -> int:
        return 1 << max(0, int(v) - 1).bit_length()

    if isinstance(lanes, bool) or not isinstance(lanes, (int, np.integer)) or not 1 <= lanes <= 64 \
            or lanes & (lanes - 1):
        raise ConfigError(f"lanes={lanes!r} must be a power of two in 1..64")
    slots = batch_slots(batch, lanes)
    # the largest depths, only to lay the program out (no engine holds them all)
    probe = TrainEngineConfig(lanes=lanes, train=state.config, acc_bits=acc_bits, act_depth=1 << 20,
                              grad_depth=1 << 20, core_depth=1 << 20, bias_depth=1 << 16, desc_depth=4096,
                              max_batch=slots, max_classes=max(2, pow2(state.n_classes)))
    prog = compile_training(state, batch, probe)
    r = prog.regions
    cfg = TrainEngineConfig(lanes=lanes, train=state.config, acc_bits=acc_bits, act_depth=pow2(r.act_words),
                            grad_depth=pow2(r.grad_words), core_depth=pow2(max(r.cmem_size, 1)),
                            bias_depth=pow2(max(r.bmem_size, 1)), desc_depth=pow2(len(prog.ops)),
                            max_batch=slots, max_classes=probe.max_classes)
    try:   # refused here, before any work, not at the generator after it
        cfg.check_memory_bits()
    except ConfigError as e:
        what = getattr(e, "memory_excess", None)
        if what is None:
            raise
        # the depths are what the program occupies: only a smaller batch or network needs less
        raise ConfigError(f"the training engine for this state at batch {batch} needs {what}; use a "
                          f"smaller batch or train a smaller network (narrower layers, lower "
                          f"ranks)") from None
    return cfg


def _engine_for(state: TrainState, batch: int, lanes: int) -> tuple:
    """``(config, None)`` of the engine :func:`engine_memory` states for ``batch``, or
    ``(None, why)`` where no engine trains that batch (the refusal ``ttforge build --train``
    or :func:`fit_engine` makes, one clause)."""
    from ttforge.ir.train import check_batch

    if not 1 <= batch <= MAX_ENGINE_BATCH:
        return None, f"batch {batch:,} is above the {MAX_ENGINE_BATCH:,} samples a training engine holds"
    try:
        check_batch(state, batch)   # build --train checks it before fit_engine
        return fit_engine(state, batch, lanes), None
    except ConfigError as e:
        return None, str(e)


def engine_memory(state: TrainState, batch: int, lanes: int, device: str | None, misfit) -> dict:
    """The memory of the training engine ``ttforge generate --train`` and ``ttforge build
    --train`` make for ``state`` at ``batch`` with ``lanes`` lanes (:func:`fit_engine`:
    the batch rounded up to its slots, every depth to a power of two), against the block
    RAM of ``device`` (a key of :data:`ttforge.hw.config.BRAM_BITS`; None: no device, and
    nothing said of one).

    This is what a board must hold, not the bit-packed count of what the step's data take
    (:func:`ttforge.ir.train_memory.training_memory`).

    Parameters
    ----------
    misfit
        ``misfit(config, device)``: why the engine ``config`` cannot fit ``device``, or None
        -- :func:`ttforge.firmware.build.memory_misfit`, the check ``ttforge build`` makes
        (passed in by the caller: hw does not import firmware).

    Returns
    -------
    dict
        ``batch``, ``lanes``, ``device``, ``device_bits``; ``slots``, ``parts`` (bits of
        each memory, :meth:`TrainEngineConfig.memory_parts`), ``bits`` and ``bytes``
        (their sum; bytes rounded up) and ``misfit`` (None: it fits) -- or, where no
        engine trains ``batch``, ``why`` in their place; and ``max_batch``, the largest
        batch in 1..:data:`MAX_ENGINE_BATCH` whose engine fits ``device`` (0: none).
        Without a device: no ``device_bits``, ``misfit`` or ``max_batch``.
    """
    def fits(b: int) -> bool:
        cfg, _ = _engine_for(state, b, lanes)
        return cfg is not None and misfit(cfg, device) is None

    from ttforge.hw.config import BRAM_BITS

    out = {"batch": int(batch), "lanes": int(lanes), "device": device}
    cfg, why = _engine_for(state, batch, lanes)
    if cfg is None:
        out["why"] = why
    else:
        parts = cfg.memory_parts()
        bits = sum(parts.values())
        out.update(slots=cfg.max_batch, parts=parts, bits=bits, bytes=-(-bits // 8))
    if device is None:
        return out
    out["device_bits"] = BRAM_BITS[device]
    if cfg is not None:
        out["misfit"] = misfit(cfg, device)
    # an engine's memories never shrink as the batch grows (more slots, deeper ACT and
    # GRAD): the batches that fit are 1..max_batch, found by bisection
    lo, hi = 0, MAX_ENGINE_BATCH
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    out["max_batch"] = lo
    return out
