"""The all-integer training step (``docs/arithmetic.md``, "Training"): numpy ``int64``, no float.

One mini-batch step of a chain of TT (and dense, one-core) layers, made only of integer
operations: the forward pass of the inference executor (:func:`~.executor.execute_traced`
on the network the state exports, so a trained state *is* a compiled network), the loss
gradient of a base-2 softmax cross-entropy through a 2^F-entry exponent table and one
integer reciprocal per sample, the backward pass through the same contraction steps in
reverse order (input gradient through the transposed core, core gradient from the step's
saved input and its output gradient), and the SGD update of every master integer by a
stochastic shift from the xorshift32 stream of the state, tensor by tensor as soon as its
gradient exists (no gradient buffer).

:func:`train_step` is the golden step (every contraction a labelled ``np.einsum`` on
``int64``); :func:`train_step_fast` computes the contractions in float64 BLAS, exact
because every partial sum is an integer below ``2^53`` (:meth:`TrainConfig.widths`
derives the bound and the step refuses a batch that could exceed it), and is tested equal
to the golden step with ``np.array_equal``. :func:`train_step_traced` also returns every
intermediate of every phase (forward, loss, backward, gradient, update).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Sequence

import numpy as np

from ttforge.errors import ConfigError, ShapeError, show
from ttforge.ir.arith import BIT_RANGES, int_range, rshift_round, shift_range, value_range
from ttforge.ir.executor import EXP_RANGE, IntLayer, IntNetwork, execute_traced, frozen_array, rebuild
from ttforge.ir.rng import Xorshift32
from ttforge.ir.schedule import ContractionSchedule
from ttforge.ir.tt import TTShape
from ttforge.limits import MAX_STEP_VALUES, chunk_rows

__all__ = [
    "TrainConfig", "TrainLayer", "TrainState", "TraceRecord", "TrainTrace", "StepStats",
    "exp2_table", "softmax_grad", "init_state", "state_from_network", "calibrate_state",
    "export_network", "train_step", "train_step_fast", "train_step_traced", "check_batch",
    "update_shift_bounds", "check_lr", "truncate_ranks", "PHASES", "TRAIN_SPEC_VERSION", "MAX_FAST_BITS",
    "train_step_stats", "widths", "loss_bits", "predict", "STATE_ARRAY_RANGES", "check_counters",
    "check_step_memory", "sample_values", "engine_labels_problem", "label_act_bits", "check_next_state",
    # the step's arithmetic, shared by the engine's interpreter and the C step's tests
    "shift_sat", "align_bias", "round_update", "forward_core", "bias_limit", "checked_samples",
]

#: Version of the "Training" part of docs/arithmetic.md that this module implements.
TRAIN_SPEC_VERSION = 1
#: Phases of one step, in order (the divergence search names them).
PHASES = ("forward", "loss", "backward", "gradient", "update")
#: Largest accumulator width (sign included) whose every partial sum float64 holds exactly.
MAX_FAST_BITS = 54
#: Largest accumulator width the int64 golden step admits.
MAX_GOLDEN_BITS = 63
_SHIFT_CAP = 40  # a left shift by more than this saturates any non-zero update (master <= 24 bits)


# ---------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainConfig:
    """Widths and rules of the integer step; validated on construction.

    Attributes
    ----------
    w_bits : int
        Width of the cores the forward pass runs (narrow range, 2..8).
    master_bits : int
        Width of the stored (master) integers (``w_bits .. 24``); the forward core is
        ``sat_w(rshift_round(master, master_bits - w_bits))``.
    act_bits, inter_bits, acc_bits : int
        Layer inputs/outputs (the logits too), intermediates between steps, forward
        accumulators (as in inference).
    grad_bits : int
        Width of every backward gradient between steps and layers (full range).
    prob_bits : int
        ``G``: probabilities of the softmax in units of ``2^-G``; the logit gradient
        ``p - onehot`` has ``G + 2`` bits.
    table_bits, table_frac_bits : int
        ``P`` and ``F`` of the exponent table ``T[j] = round(2^(P - j/2^F))``, ``2^F`` entries.
    bias_bits, bias_frac_bits : int
        Width of a stored bias (narrow range) and how many bits finer than the last step's
        accumulator (at calibration) its exponent is.
    rounding : {"stochastic", "nearest"}
        How an update loses its fractional bits (stochastic: one xorshift32 word per
        stored element per step; nearest: FLOOR_PLUS_HALF, no words).
    """

    w_bits: int = 4
    master_bits: int = 8
    act_bits: int = 8
    inter_bits: int = 16
    acc_bits: int = 32
    grad_bits: int = 16
    prob_bits: int = 15
    table_bits: int = 15
    table_frac_bits: int = 6
    bias_bits: int = 24
    bias_frac_bits: int = 8
    rounding: Literal["stochastic", "nearest"] = "stochastic"

    def __post_init__(self) -> None:
        for name, lo, hi in (("w_bits", 2, 8), ("master_bits", 2, 24), ("act_bits", 2, 16),
                             ("inter_bits", 2, 24), ("acc_bits", 8, 48), ("grad_bits", 2, 24),
                             ("prob_bits", 2, 24), ("table_bits", 2, 24), ("table_frac_bits", 0, 10),
                             ("bias_bits", 2, 32), ("bias_frac_bits", 0, 16)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
                raise ConfigError(f"{name}={v!r} must be an integer in {lo}..{hi}")
            object.__setattr__(self, name, int(v))
        if self.master_bits < self.w_bits:
            raise ConfigError(f"master_bits={self.master_bits} must be >= w_bits={self.w_bits} "
                              f"(the forward core is the top w_bits of the master)")
        if self.rounding not in ("stochastic", "nearest"):
            raise ConfigError(f"rounding={self.rounding!r} must be 'stochastic' or 'nearest'")

    @property
    def extra_bits(self) -> int:
        return self.master_bits - self.w_bits

    @property
    def logit_grad_bits(self) -> int:
        return self.prob_bits + 2

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown training config field(s) {sorted(unknown)}")
        return cls(**d)


# ---------------------------------------------------------------------------------------
# state
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class TrainLayer:
    """One layer of the training state.

    ``masters[k]``: core ``k`` as stored, shape ``(r, m, n, r')``, narrow ``master_bits``
    at exponent ``master_exps[k]`` (fixed for the run). ``bias``: narrow ``bias_bits`` at
    ``bias_exp``. ``step_exps[t]``: exponent of the output of forward step ``t`` (the last
    is the layer's output exponent). ``grad_exps[t]``: exponent of the gradient of the
    *input* of step ``t`` (``t = 0``: of the layer input; unused for the first layer).
    """

    in_features: int
    out_features: int
    schedule: ContractionSchedule
    relu: bool
    masters: tuple[np.ndarray, ...]
    master_exps: tuple[int, ...]
    bias: np.ndarray | None
    bias_exp: int
    step_exps: tuple[int, ...]
    grad_exps: tuple[int, ...]

    def __post_init__(self) -> None:
        # own immutable copies (see frozen_array): the state's check (check_state) holds for
        # as long as the arrays live, and an edit never reaches train_step or save_state
        if isinstance(self.masters, (tuple, list)):
            object.__setattr__(self, "masters", tuple(frozen_array(g) for g in self.masters))
        object.__setattr__(self, "bias", frozen_array(self.bias))

    __reduce__ = rebuild

    @property
    def d(self) -> int:
        return self.schedule.shape.d


@dataclass(frozen=True, eq=False)
class TrainState:
    """Everything one training step reads and writes (see docs/arithmetic.md, "Training").

    ``in_exp``: exponent of the network input (fixed). ``lr_shift``: ``lambda``, the
    learning rate is ``2^-lambda`` per summed mini-batch gradient. ``rng``: the xorshift32
    state (the last word drawn, or the seed). ``words``: words drawn so far. ``step``:
    steps taken. ``epoch``: a host counter (the CLI's), carried along.
    """

    config: TrainConfig
    layers: tuple[TrainLayer, ...]
    in_exp: int
    lr_shift: int
    rng: int
    words: int = 0
    step: int = 0
    epoch: int = 0
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_state(self)

    @property
    def in_features(self) -> int:
        return self.layers[0].in_features

    @property
    def n_classes(self) -> int:
        return self.layers[-1].out_features

    def layer_in_exp(self, i: int) -> int:
        return self.in_exp if i == 0 else self.layers[i - 1].step_exps[-1]

    def n_stored(self) -> int:
        """Stored integers (one xorshift32 word each per stochastic step)."""
        return sum(sum(g.size for g in L.masters) + (0 if L.bias is None else L.bias.size)
                   for L in self.layers)

    def replace(self, **kw: Any) -> "TrainState":
        return replace(self, **kw)


def check_state(s: TrainState) -> None:
    """One-line :class:`ShapeError` / :class:`ConfigError` if the state is inconsistent."""
    cfg = s.config
    if not isinstance(cfg, TrainConfig):
        raise ConfigError("state.config must be a TrainConfig")
    if not s.layers:
        raise ShapeError("a training state needs at least one layer")
    (mw, mn), (bw, bn) = STATE_ARRAY_RANGES["masters"], STATE_ARRAY_RANGES["bias"]
    mlo, mhi = value_range(getattr(cfg, mw), mn)
    blo, bhi = value_range(getattr(cfg, bw), bn)
    for i, L in enumerate(s.layers):
        sh = L.schedule.shape
        if len(L.masters) != sh.d or len(L.master_exps) != sh.d:
            raise ShapeError(f"layer {i} has {len(L.masters)} cores but its schedule has {sh.d}")
        for k, (g, want) in enumerate(zip(L.masters, sh.core_shapes)):
            if tuple(g.shape) != want or g.dtype != np.int64:
                raise ShapeError(f"layer {i} core {k} has shape {tuple(g.shape)} ({g.dtype}); the "
                                 f"schedule needs {want} int64")
            if g.size and (g.min() < mlo or g.max() > mhi):
                raise ShapeError(f"layer {i} core {k} leaves the {cfg.master_bits}-bit master range "
                                 f"[{mlo}, {mhi}]")
        if len(L.step_exps) != sh.d or len(L.grad_exps) != sh.d:
            raise ShapeError(f"layer {i}: step_exps/grad_exps need {sh.d} entries (one per step)")
        if not (1 <= L.in_features <= sh.in_size and 1 <= L.out_features <= sh.out_size):
            raise ShapeError(f"layer {i}: {L.in_features}->{L.out_features} does not fit its TT shape "
                             f"{sh.in_size}->{sh.out_size}")
        if L.bias is not None:
            if tuple(L.bias.shape) != (L.out_features,) or L.bias.dtype != np.int64:
                raise ShapeError(f"layer {i} bias has shape {tuple(L.bias.shape)}; expected "
                                 f"({L.out_features},) int64")
            if L.bias.size and (L.bias.min() < blo or L.bias.max() > bhi):
                raise ShapeError(f"layer {i} bias leaves the {cfg.bias_bits}-bit range")
        if i and s.layers[i - 1].out_features != L.in_features:
            raise ShapeError(f"layer {i - 1} outputs {s.layers[i - 1].out_features} features but "
                             f"layer {i} takes {L.in_features}")
    if s.layers[-1].relu:
        raise ShapeError("the last layer feeds the softmax and must not have a ReLU")
    if isinstance(s.rng, bool) or not 1 <= int(s.rng) <= 0xFFFFFFFF:
        raise ConfigError(f"rng state {s.rng!r} must be in 1..2^32-1")
    for name in ("lr_shift", "in_exp", "words", "step", "epoch"):
        v = getattr(s, name)
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ConfigError(f"state.{name}={show(v)} must be an integer")
    if not 0 <= s.lr_shift <= 62:
        raise ConfigError(f"lr_shift={s.lr_shift} must be in 0..62 (learning rate 2^-lr_shift)")
    for name in ("words", "step", "epoch"):
        if not 0 <= getattr(s, name) <= _MAX_COUNTER:
            raise ConfigError(f"state.{name}={show(getattr(s, name))} must be in 0..2^63-1")
    # every exponent within +-MAX_EXP, as in an artifact: each shift the step derives from
    # them is then a few thousand at most, which the step computes exactly (no 1 << 2^63)
    _check_exps("in_exp", (s.in_exp,))
    for i, L in enumerate(s.layers):
        # a forward core's exponent is master_exps[k] + extra_bits, also within the range
        _check_exps(f"layer {i} master_exps", L.master_exps, EXP_RANGE[1] - cfg.extra_bits)
        for name in ("step_exps", "grad_exps"):
            _check_exps(f"layer {i} {name}", getattr(L, name))
        _check_exps(f"layer {i} bias_exp", (L.bias_exp,))


#: ``array: (width field of TrainConfig, narrow)``: every value of a layer's stored arrays
#: lies in ``value_range(config.<width field>, narrow)``, what :func:`check_state` (so the
#: state loader) checks and the state writer stores (refusing, never wrapping, a value outside).
STATE_ARRAY_RANGES: dict[str, tuple[str, bool]] = {"masters": ("master_bits", True), "bias": ("bias_bits", True)}

#: Largest step, epoch or word count of a state (int64, as the engine counts them).
_MAX_COUNTER = (1 << 63) - 1


def _check_exps(name: str, values: Sequence[int], hi: int = EXP_RANGE[1]) -> None:
    lo = EXP_RANGE[0]
    if not all(isinstance(e, (int, np.integer)) and not isinstance(e, (bool, np.bool_)) and lo <= e <= hi
               for e in values):
        one = not name.endswith("exps")
        raise ConfigError(f"{name}={show(values[0] if one else values)} must be "
                          f"{'an integer' if one else 'integers'} in {lo}..{hi} (ttforge's exponent range)")


# ---------------------------------------------------------------------------------------
# derived widths
# ---------------------------------------------------------------------------------------
def _bits_of_bound(bound: int) -> int:
    """Signed width holding every integer of magnitude <= bound."""
    return max(2, int(bound).bit_length() + 1)


def _wmax(bits: int) -> int:
    return (1 << (bits - 1)) - 1


def _amax(bits: int) -> int:
    return 1 << (bits - 1)


def _step_in_bits(cfg: TrainConfig, t: int) -> int:
    return cfg.act_bits if t == 0 else cfg.inter_bits


def _forward_bits(cfg: TrainConfig, L: TrainLayer, _batch: int) -> list[int]:
    return [_bits_of_bound(st.K * _wmax(cfg.w_bits) * _amax(_step_in_bits(cfg, t)))
            for t, st in enumerate(L.schedule.steps)]


def bias_limit(cfg: TrainConfig, L: TrainLayer) -> int:
    """Largest |bias| at the accumulator exponent that the forward accumulator admits."""
    st = L.schedule.steps[-1]
    t = L.d - 1
    return _wmax(cfg.acc_bits) - st.K * _wmax(cfg.w_bits) * _amax(_step_in_bits(cfg, t))


def _grad_in_bits(cfg: TrainConfig, i: int, n_layers: int) -> int:
    """Width of the output gradient arriving at layer ``i``'s last step."""
    return cfg.logit_grad_bits if i == n_layers - 1 else cfg.grad_bits


def widths(state: TrainState, batch: int) -> list[dict[str, Any]]:
    """Every accumulator of a step with ``batch`` samples: ``(phase, layer, step, core,
    reduction length, bound, bits)``. The bound is the largest magnitude the sum of
    absolute products can reach (so every partial sum too)."""
    cfg = state.config
    n = len(state.layers)
    out = []
    for i, L in enumerate(state.layers):
        g_in = _grad_in_bits(cfg, i, n)
        for t, st in enumerate(L.schedule.steps):
            xb = _step_in_bits(cfg, t)
            gb = g_in if t == L.d - 1 else cfg.grad_bits
            red_f = st.K
            fb = red_f * _wmax(cfg.w_bits) * _amax(xb)
            if t == L.d - 1 and L.bias is not None:
                fb += max(bias_limit(cfg, L), 0)
            out.append(dict(phase="forward", layer=i, step=t, core=st.core, reduction=red_f, bound=fb,
                            bits=_bits_of_bound(fb)))
            red_w = batch * st.A * st.Q
            wb = red_w * _amax(gb) * _amax(xb)
            out.append(dict(phase="gradient", layer=i, step=t, core=st.core, reduction=red_w, bound=wb,
                            bits=_bits_of_bound(wb)))
            if i > 0 or t > 0:
                bb = st.P * _wmax(cfg.w_bits) * _amax(gb)
                out.append(dict(phase="backward", layer=i, step=t, core=st.core, reduction=st.P,
                                bound=bb, bits=_bits_of_bound(bb)))
        if L.bias is not None:
            bb = batch * _amax(g_in)
            out.append(dict(phase="gradient", layer=i, step=-1, core=None, reduction=batch, bound=bb,
                            bits=_bits_of_bound(bb)))
    return out


def check_batch(state: TrainState, batch: int, fast: bool = False, name: str = "batch") -> int:
    """The widest accumulator of a ``batch``-sample step; a one-line ConfigError if it
    exceeds ``acc_bits`` (forward), int64 (golden) or 54 bits (fast path, float64-exact).
    ``name``: the setting the line names (``--batch``, ``--calib-samples``)."""
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise ConfigError(f"batch={batch!r} must be a positive integer")
    cfg = state.config
    widest = 0
    for w in widths(state, batch):
        if w["phase"] == "forward" and w["bits"] > cfg.acc_bits:
            raise ConfigError(f"layer {w['layer']} step {w['step']} (core {w['core']}) can reach "
                              f"{w['bits']}-bit forward sums but acc_bits={cfg.acc_bits}; raise acc_bits "
                              f"or lower the widths")
        limit = MAX_FAST_BITS if fast else MAX_GOLDEN_BITS
        if w["bits"] > limit:
            what = "float64-exact fast path" if fast else "int64 golden step"
            raise ConfigError(f"{name}={batch:,}: a step of {batch:,} samples makes the {w['phase']} accumulator "
                              f"of layer {w['layer']} step {w['step']} {w['bits']} bits wide, more than the {what} "
                              f"allows ({limit}); use a smaller {name} or narrower grad_bits/inter_bits")
        widest = max(widest, w["bits"])
    return widest


def sample_values(layers) -> int:
    """Values a forward holds for one sample at once: each layer's padded input and, per
    step, the accumulator (float64 and int64), the shifted and the saturated output (the
    traces keep two of them). ``layers``: anything with a ``schedule``."""
    return sum(layer.schedule.shape.in_size + 4 * sum(s.out_elements for s in layer.schedule.steps)
               for layer in layers)


def label_act_bits(classes: int) -> int:
    """The smallest ``act_bits`` whose signed stream element carries label ``classes - 1``
    (:func:`engine_labels_problem`)."""
    return max(2, (int(classes) - 1).bit_length() + 1)


def engine_labels_problem(state: TrainState) -> str | None:
    """Why the training engine cannot take ``state``'s labels, or ``None``.

    A label travels as one element of the engine's input stream, a signed ``act_bits``
    integer like the features (docs/hardware.md, "Samples"), so labels above
    ``2^(act_bits-1) - 1`` would arrive negative (``BAD_LABEL``) or wrap to another, valid
    label and train on it. The golden trainer has no such limit: ``train-int`` notes it,
    the commands that drive the engine refuse the state
    (:func:`ttforge.hw.trainer.program.check_labels_fit`).
    """
    a, n = state.config.act_bits, state.n_classes
    top = value_range(a)[1]
    if n - 1 <= top:
        return None
    need = label_act_bits(n)
    fix = (f"train the state with act_bits >= {need} (ttforge train-int --act-bits {need})"
           if need <= BIT_RANGES["act_bits"][1] else "use fewer classes")
    return (f"{n} classes need labels up to {n - 1}, which the training engine carries in signed {a}-bit "
            f"stream elements (act_bits={a}, labels up to {top}); {fix}")


def check_step_memory(state: TrainState, batch: int, name: str = "batch") -> None:
    """One line (:class:`ConfigError`) if a step of ``batch`` samples would hold more than
    :data:`~ttforge.limits.MAX_STEP_VALUES` values (its forward's, and as many again for
    the backward's gradients); checked before the step allocates any (a 1 M-parameter
    network with 2^19-element intermediates took GBs a step). ``name``: the setting the
    line names (``--batch``, ``--calib-samples``)."""
    per_sample = 2 * sample_values(state.layers)
    if batch * per_sample > MAX_STEP_VALUES:
        fit = max(1, MAX_STEP_VALUES // per_sample)
        raise ConfigError(f"{name}={batch:,}: a step holds {batch * per_sample:,} values ({per_sample:,} a "
                          f"sample), above ttforge's limit of {MAX_STEP_VALUES:,}; use {name} <= {fit:,} "
                          f"or a network with smaller intermediates")


def check_counters(state: TrainState, steps: int, what: str = "the state", fix: str = "") -> None:
    """One line (:class:`ConfigError`) if ``steps`` more training steps could carry the
    state's step or word counter past ``2^63 - 1`` (int64, as the engine counts them).

    Checked before any work (the step past the limit failed only when it got there). A
    step draws one word per stored element under stochastic rounding (masters and
    biases); a rank truncation only lowers that, so the bound holds for it too.
    ``fix`` ends the line.
    """
    per_step = 0 if state.config.rounding == "nearest" else sum(
        sum(int(m.size) for m in L.masters) + (0 if L.bias is None else int(L.bias.size)) for L in state.layers)
    for name, now, end in (("step", state.step, state.step + steps), ("words", state.words,
                                                                      state.words + steps * per_step)):
        if end > _MAX_COUNTER:
            raise ConfigError(f"{what}: its {name} counter ({now:,}) would pass 2^63-1 in the {steps:,} steps "
                              f"asked{'; ' + fix if fix else ''}")


# ---------------------------------------------------------------------------------------
# the exponent table and the loss gradient
# ---------------------------------------------------------------------------------------
_TABLES: dict[tuple[int, int], np.ndarray] = {}


def exp2_table(P: int, F: int) -> np.ndarray:
    """``T[j] = floor(2^(P - j/2^F) + 1/2)`` for ``j = 0 .. 2^F - 1``, computed exactly
    with integers: ``T[j]`` is the ``t`` with ``(2t-1)^N <= 2^(N(P+1) - j) < (2t+1)^N``,
    ``N = 2^F``."""
    key = (int(P), int(F))
    if key not in _TABLES:
        N = 1 << F
        vals = []
        for j in range(N):
            rhs = 1 << (N * (P + 1) - j)
            t = int(round(2.0 ** (P - j / N)))
            while (2 * t - 1) ** N > rhs:
                t -= 1
            while (2 * t + 1) ** N <= rhs:
                t += 1
            vals.append(t)
        _TABLES[key] = np.array(vals, dtype=np.int64)
    return _TABLES[key]


def softmax_grad(z: np.ndarray, e_z: int, y: np.ndarray, cfg: TrainConfig) -> dict[str, np.ndarray]:
    """The integer base-2 softmax of logits ``z`` (exponent ``e_z``) and ``p - onehot(y)``.

    ``u = max(z) - z``; ``t = u`` moved to ``F`` fractional bits (a left shift or a
    FLOOR_PLUS_HALF right shift), capped at ``(P+1) 2^F``; ``e = T[t mod 2^F] >> (t >> F)``;
    ``S = sum(e)``; ``R = floor(2^(P+G) / S)``; ``p = rshift_round(e * R, P)``;
    ``g = p - 2^G [class == y]`` at exponent ``-G``.
    """
    P, F, G = cfg.table_bits, cfg.table_frac_bits, cfg.prob_bits
    u = z.max(axis=1, keepdims=True) - z
    cap = (P + 1) << F
    sh = e_z + F
    t = rshift_round(u, -sh) if sh < 0 else (u << np.int64(min(sh, cap.bit_length())))
    t = np.minimum(t, np.int64(cap))
    T = exp2_table(P, F)
    e = T[t & np.int64((1 << F) - 1)] >> (t >> np.int64(F))
    S = e.sum(axis=1)
    R = np.int64(1 << (P + G)) // S
    p = rshift_round(e * R[:, None], P)
    g = p.copy()
    g[np.arange(z.shape[0]), y] -= np.int64(1 << G)
    return {"t": t, "e": e, "S": S, "R": R, "p": p, "g": g}


def loss_bits(sm: dict[str, np.ndarray], y: np.ndarray) -> float:
    """Mean cross-entropy in bits, ``log2(S / e_y)`` (a monitor for people; the step never uses it)."""
    ey = np.maximum(sm["e"][np.arange(len(y)), y], 1).astype(np.float64)
    return float(np.mean(np.log2(sm["S"].astype(np.float64)) - np.log2(ey)))


# ---------------------------------------------------------------------------------------
# helpers of the arithmetic
# ---------------------------------------------------------------------------------------
def _fit_exp(acc: np.ndarray, e_acc: int, bits: int) -> int:
    """The delayed-scaling rule: ``e_acc + max(0, bitlen(max|acc|) - (bits - 1))``."""
    m = int(np.abs(acc).max()) if acc.size else 0
    return e_acc + max(0, m.bit_length() - (bits - 1))


def _sat_shl(v: np.ndarray, k: int, lim: int) -> np.ndarray:
    """``clip(v << k, +-lim)`` computed exactly for any ``k >= 0`` (``int64`` never wraps:
    a value whose shift would pass ``lim`` saturates without being shifted)."""
    k = min(int(k), 62)
    big = np.abs(v) > np.int64(lim >> k)
    return np.where(big, np.sign(v) * np.int64(lim), np.asarray(v) << np.int64(k))


def shift_sat(v: np.ndarray, s: int, bits: int, narrow: bool = False) -> tuple[np.ndarray, int]:
    """``sat_bits(rshift_round(v, s))`` (a clamped left shift for ``s < 0``) and the number
    of saturation events."""
    lo, hi = int_range(bits, narrow)
    if s < 0:
        v = _sat_shl(v, min(-s, _SHIFT_CAP), 1 << bits)
    else:
        v = rshift_round(v, s)
    out = np.clip(v, lo, hi)
    return out, int(np.count_nonzero(out != v))


def align_bias(b: np.ndarray, e_b: int, e_acc: int, limit: int) -> np.ndarray:
    """The bias at the accumulator exponent: ``b << (e_b - e_acc)`` or
    ``rshift_round(b, e_acc - e_b)``, clamped to ``+-limit`` (the left shift exactly, for
    any amount: a value that would pass the limit saturates without being shifted)."""
    s = e_acc - e_b
    if s < 0:
        return _sat_shl(b, -s, limit)
    return np.clip(rshift_round(b, s), -limit, limit)


def round_update(v: np.ndarray, s: int, cfg: TrainConfig, gen: Xorshift32 | None,
                  bits: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The update ``d`` (in master LSBs) of an exact gradient sum ``v``: ``v / 2^s`` rounded
    stochastically (one word per element, row-major, drawn whatever ``s``) or to nearest.
    ``s > 32``: ``v >> (s - 32)`` (floor) first; ``s <= 0``: a clamped left shift. Also
    returns the words drawn (empty for nearest). ``bits``: the stored width (default
    ``master_bits``; a bias passes ``bias_bits``)."""
    if cfg.rounding == "stochastic":
        words = gen.draw(v.shape)
    else:
        words = np.zeros(0, dtype=np.uint32)
    if s <= 0:
        lim = 1 << ((cfg.master_bits if bits is None else bits) + 1)
        return _sat_shl(v, min(-s, _SHIFT_CAP), lim), words
    if s > 32:
        v = v >> np.int64(min(s - 32, 63))   # floor; from 63 on every int64 gives 0 or -1
        s = 32
    if cfg.rounding == "stochastic":
        low = (words & np.uint32((1 << s) - 1 if s < 32 else 0xFFFFFFFF)).astype(np.int64)
        return (v + low) >> np.int64(s), words
    return rshift_round(v, s), words


def forward_core(cfg: TrainConfig, master: np.ndarray) -> np.ndarray:
    """The forward core of a master core: ``sat_narrow_w(rshift_round(master, extra_bits))``."""
    q, _ = shift_sat(master, cfg.extra_bits, cfg.w_bits, narrow=True)
    return q


def _core_exp(cfg: TrainConfig, L: TrainLayer, k: int) -> int:
    return L.master_exps[k] + cfg.extra_bits


def forward_shift_problem(state: TrainState) -> tuple[int, int, int] | None:
    """The first ``(layer, step, shift)`` of the forward pass of ``state`` outside
    :func:`~ttforge.ir.arith.shift_range` (which :func:`export_network`, and so the next
    step and ``load_state``, refuse), or ``None``. ``shift = E_t - e_acc,t``."""
    cfg = state.config
    lo, hi = shift_range(cfg.acc_bits)
    for i, L in enumerate(state.layers):
        prev = state.layer_in_exp(i)
        for t, st in enumerate(L.schedule.steps):
            s = L.step_exps[t] - (_core_exp(cfg, L, st.core) + prev)
            if not lo <= s <= hi:
                return i, t, s
            prev = L.step_exps[t]
    return None


def check_next_state(old: TrainState, new: TrainState, update: bool = True) -> None:
    """One line if the step from ``old`` made ``new``, a state no step can run (a forward
    shift outside ``shift_range``): delayed scaling fits a layer's step exponents at its
    input exponent of this step, so a layer output exponent that moves by more than the
    range allows in one step leaves the next layer's first shift out of range. The rule
    itself stays (docs/arithmetic.md); the step refuses instead of returning the state."""
    bad = forward_shift_problem(new)
    if bad is None:
        return
    i, t, s = bad
    cfg = new.config
    lo, hi = shift_range(cfg.acc_bits)
    moved = ""
    if t == 0 and i > 0:
        d = new.layer_in_exp(i) - old.layer_in_exp(i)
        moved = f" (layer {i - 1}'s output exponent moved by {d:+d} in this step)"
    what = (f"training step {old.step + 1} (epoch {old.epoch + 1})" if update
            else "the calibration")
    raise ConfigError(
        f"{what} would leave layer {i} step {t} shifting by {s}{moved}, outside {lo}..{hi} at "
        f"acc_bits={cfg.acc_bits}; the state before it is kept: use a larger lr_shift, a smaller "
        f"acc_bits (its left shifts reach {63 - cfg.acc_bits}) or narrower act_bits/inter_bits")


# ---------------------------------------------------------------------------------------
# export: the network a state runs
# ---------------------------------------------------------------------------------------
def export_network(state: TrainState, meta: dict | None = None) -> IntNetwork:
    """The inference network of a state: cores ``sat_w(rshift_round(master, x))``, the
    current step exponents and the bias moved to the last step's accumulator exponent.
    Its :func:`~.executor.execute` is exactly the forward pass of the next step."""
    cfg = state.config
    layers = []
    for i, L in enumerate(state.layers):
        cores = tuple(forward_core(cfg, g) for g in L.masters)
        core_exps = tuple(_core_exp(cfg, L, k) for k in range(L.d))
        in_exp = state.layer_in_exp(i)
        bias = None
        if L.bias is not None:
            last = L.schedule.steps[-1]
            prev = L.step_exps[-2] if L.d > 1 else in_exp
            e_acc = core_exps[last.core] + prev
            bias = align_bias(L.bias, L.bias_exp, e_acc, max(bias_limit(cfg, L), 0))
        layers.append(IntLayer(
            in_features=L.in_features, out_features=L.out_features, schedule=L.schedule, cores=cores,
            core_exps=core_exps, w_bits=cfg.w_bits, in_bits=cfg.act_bits, in_exp=in_exp,
            inter_bits=cfg.inter_bits, out_bits=cfg.act_bits, step_exps=tuple(L.step_exps),
            acc_bits=cfg.acc_bits, bias=bias, relu=L.relu))
    m = {"trained_by": "ttforge.ir.train", "train_step": int(state.step), **(meta or {})}
    return IntNetwork(tuple(layers), meta=m)


# ---------------------------------------------------------------------------------------
# construction
# ---------------------------------------------------------------------------------------
def _init_seed(seed: int, key: int) -> int:
    word = int(np.random.SeedSequence([int(seed), key]).generate_state(1, dtype=np.uint32)[0])
    return word or 0x9E3779B9


def init_state(
    layer_shapes: Sequence[tuple[int, int, ContractionSchedule]],
    config: TrainConfig = TrainConfig(),
    seed: int = 0,
    lr_shift: int = 8,
    in_exp: int = -7,
    sr_seed: int | None = None,
    bias: bool = True,
) -> TrainState:
    """A state with random integer cores from a seed (no float in the values).

    ``layer_shapes``: ``(in_features, out_features, schedule)`` per layer; hidden layers get
    a ReLU, the last none. Core ``k`` of layer ``i`` is drawn from the xorshift32 stream
    seeded with :func:`_init_seed` ``(seed, 3)``, layer by layer, core by core, row-major:
    ``w = (word mod (2h + 1)) - h`` with ``h = (2^(master_bits-1) - 1) // 2`` (half the
    master range). The master exponent is chosen so that the TT matrix has He-like variance
    ``2 / in_features``: ``e = round(log2(sigma / sqrt(h(h+1)/3)))`` with ``sigma`` the
    per-core standard deviation ``(2 / (N prod(r)))^(1/(2d))``. Biases start at zero.
    Step and gradient exponents are 0 until :func:`calibrate_state` sets them.
    """
    cfg = config
    if sr_seed is None:
        sr_seed = _init_seed(seed, 2)
    gen = Xorshift32(_init_seed(seed, 3))
    h = _wmax(cfg.master_bits) // 2
    if h < 1:
        raise ConfigError(f"master_bits={cfg.master_bits} is too narrow for a random init (use >= 3)")
    layers = []
    n = len(layer_shapes)
    for i, (nin, nout, sched) in enumerate(layer_shapes):
        shape = sched.shape
        sigma = (2.0 / (shape.in_size * math.prod(shape.ranks))) ** (1.0 / (2 * shape.d))
        unit = math.sqrt(h * (h + 1) / 3.0)
        e = int(round(math.log2(sigma / unit)))
        masters = []
        for s in shape.core_shapes:
            w = gen.draw(s).astype(np.int64) % (2 * h + 1) - h
            masters.append(w)
        layers.append(TrainLayer(
            in_features=int(nin), out_features=int(nout), schedule=sched, relu=i < n - 1,
            masters=tuple(masters), master_exps=(e,) * shape.d,
            bias=np.zeros(int(nout), dtype=np.int64) if bias else None, bias_exp=0,
            step_exps=(0,) * shape.d, grad_exps=(0,) * shape.d))
    return TrainState(cfg, tuple(layers), int(in_exp), int(lr_shift), int(sr_seed),
                      meta={"init": "xorshift32", "seed": int(seed)})


def state_from_network(net: IntNetwork, config: TrainConfig | None = None, lr_shift: int = 10,
                       sr_seed: int = 1, meta: dict | None = None) -> TrainState:
    """A state that starts from a compiled network (e.g. a PTQ artifact): each master is the
    core shifted left by ``master_bits - w_bits``, each bias moved ``bias_frac_bits`` finer
    than its accumulator exponent. The network's widths must be uniform and equal to the
    config's (``None``: taken from the network). Gradient exponents still need
    :func:`calibrate_state`."""
    first = net.layers[0]
    if config is None:
        config = TrainConfig(w_bits=first.w_bits, master_bits=min(24, first.w_bits + 4),
                             act_bits=first.in_bits, inter_bits=first.inter_bits,
                             acc_bits=first.acc_bits)
    cfg = config
    for i, L in enumerate(net.layers):
        got = dict(w_bits=L.w_bits, act_bits=L.in_bits, out_bits=L.out_bits, inter_bits=L.inter_bits,
                   acc_bits=L.acc_bits)
        want = dict(w_bits=cfg.w_bits, act_bits=cfg.act_bits, out_bits=cfg.act_bits,
                    inter_bits=cfg.inter_bits, acc_bits=cfg.acc_bits)
        for k in got:
            if got[k] != want[k]:
                raise ShapeError(f"layer {i} of the network has {k}={got[k]} but the training config has "
                                 f"{want[k]}; train with --w-bits/--act-bits/... matching the artifact")
        if L.relu != (i < len(net.layers) - 1):
            raise ShapeError(f"layer {i}: the integer trainer needs ReLU on every hidden layer and none "
                             f"on the last (this network has relu={L.relu})")
    layers = []
    x = cfg.extra_bits
    for i, L in enumerate(net.layers):
        masters = tuple(np.clip(g.astype(np.int64) << np.int64(x), *int_range(cfg.master_bits, True))
                        for g in L.cores)
        bias, e_b = None, 0
        if L.bias is not None:
            e_acc = L.acc_exp(len(L.step_exps) - 1)
            e_b = e_acc - cfg.bias_frac_bits
            bias, _ = shift_sat(L.bias, -cfg.bias_frac_bits, cfg.bias_bits, narrow=True)
        layers.append(TrainLayer(L.in_features, L.out_features, L.schedule, L.relu, masters,
                                 tuple(e - x for e in L.core_exps), bias, e_b, tuple(L.step_exps),
                                 (0,) * L.schedule.shape.d))
    return TrainState(cfg, tuple(layers), first.in_exp, int(lr_shift), int(sr_seed),
                      meta={"init": "network", **(meta or {})})


# ---------------------------------------------------------------------------------------
# the step
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TraceRecord:
    """One intermediate of a step: ``phase`` (one of :data:`PHASES`), ``layer``, ``step``
    (schedule step, ``-1`` for the whole layer or the bias), ``core`` (or None), ``name``,
    ``exp`` (its exponent, or None) and the integer array."""

    phase: str
    layer: int
    step: int
    core: int | None
    name: str
    exp: int | None
    value: np.ndarray


@dataclass
class TrainTrace:
    """Every intermediate of one step, in the order the step computes them."""

    step: int
    records: list[TraceRecord] = field(default_factory=list)

    def add(self, phase: str, layer: int, step: int, core: int | None, name: str, exp: int | None,
            value: np.ndarray) -> None:
        self.records.append(TraceRecord(phase, layer, step, core, name, exp, np.asarray(value).copy()))


@dataclass
class StepStats:
    """Counts of one step: forward/backward saturation events, updates applied, words drawn,
    the loss monitor (bits) and the batch's correct predictions."""

    saturations: int = 0
    grad_saturations: int = 0
    changed: int = 0
    elements: int = 0
    words: int = 0
    loss_bits: float = 0.0
    correct: int = 0


class _Golden:
    """Contractions on int64 with labelled einsum (the definition)."""

    name = "golden"

    @staticmethod
    def forward(net: IntNetwork, x: np.ndarray):
        return execute_traced(net, x)

    @staticmethod
    def input_grad(C: np.ndarray, dout: np.ndarray) -> np.ndarray:  # dout (B, A, P, Q)
        return np.einsum("pk,bapq->bakq", C, dout)

    @staticmethod
    def core_grad(dout: np.ndarray, x: np.ndarray) -> np.ndarray:  # x (B, A, K, Q)
        return np.einsum("bapq,bakq->pk", dout, x)


class _Fast:
    """The same contractions in float64 BLAS, exact: every partial sum is an integer below
    2^53 (:func:`check_batch` with ``fast=True``)."""

    name = "fast"

    @staticmethod
    def forward(net: IntNetwork, x: np.ndarray):
        from ttforge.ir.executor import StepTrace, check_input

        x = check_input(net, x)
        traces = []
        for li, layer in enumerate(net.layers):
            B = x.shape[0]
            pad = layer.schedule.shape.in_size - layer.in_features
            h = np.pad(x, ((0, 0), (0, pad))) if pad else x
            last = len(layer.schedule.steps) - 1
            for t, (st, s) in enumerate(zip(layer.schedule.steps, layer.shifts())):
                C = layer.core_matrix(t).astype(np.float64)
                hf = h.astype(np.float64)
                if st.Q == 1:
                    acc = hf.reshape(B * st.A, st.K) @ C.T
                else:
                    acc = np.matmul(C, hf.reshape(B * st.A, st.K, st.Q))
                acc = acc.reshape(B, -1).astype(np.int64)
                if t == last and layer.bias is not None:
                    acc[:, :layer.out_features] += layer.bias
                shifted = rshift_round(acc, s)
                lo, hi = int_range(layer.step_out_bits(t))
                h = np.clip(shifted, lo, hi)
                traces.append(StepTrace(li, t, acc, h, int(np.count_nonzero(h != shifted))))
            x = h[:, :layer.out_features]
            if layer.relu:
                x = np.maximum(x, 0)
        return x, traces

    @staticmethod
    def input_grad(C: np.ndarray, dout: np.ndarray) -> np.ndarray:
        B, A, P, Q = dout.shape
        if Q == 1:
            r = dout.reshape(B * A, P).astype(np.float64) @ C.astype(np.float64)
            return r.astype(np.int64).reshape(B, A, -1, 1)
        r = np.matmul(C.T.astype(np.float64), dout.reshape(B * A, P, Q).astype(np.float64))
        return r.astype(np.int64).reshape(B, A, -1, Q)

    @staticmethod
    def core_grad(dout: np.ndarray, x: np.ndarray) -> np.ndarray:
        B, A, P, Q = dout.shape
        K = x.shape[2]
        if Q == 1:
            r = dout.reshape(B * A, P).astype(np.float64).T @ x.reshape(B * A, K).astype(np.float64)
        else:
            r = np.tensordot(dout.astype(np.float64), x.astype(np.float64), axes=([0, 1, 3], [0, 1, 3]))
        return r.astype(np.int64)


def checked_samples(state: TrainState, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A step's samples ``x`` (batch, in_features) and labels ``y`` (batch,) checked against
    ``state`` (one-line :class:`ShapeError`), the labels as int64."""
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim != 2 or x.shape[1] != state.in_features:
        raise ShapeError(f"batch x has shape {x.shape}; the network takes (batch, {state.in_features})")
    if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise ShapeError(f"labels have shape {y.shape} ({y.dtype}); give ({x.shape[0]},) integers")
    if y.size and (y.min() < 0 or y.max() >= state.n_classes):
        raise ShapeError(f"labels must be in 0..{state.n_classes - 1}; found {int(y.min())}..{int(y.max())}")
    return x, y.astype(np.int64)


def _step(state: TrainState, x: np.ndarray, y: np.ndarray, impl, trace: TrainTrace | None,
          update: bool = True, fit_now: bool = False) -> tuple[TrainState, StepStats]:
    cfg = state.config
    x, y = checked_samples(state, x, y)
    B = x.shape[0]
    check_batch(state, B, fast=impl is _Fast)
    check_step_memory(state, B)
    stats = StepStats()
    n = len(state.layers)

    # -- forward: the inference executor on the network the state exports --------------
    if fit_now:  # calibration: every step exponent from this batch, in forward order
        state = _calibrate_forward(state, x, impl)
    net = export_network(state)
    logits, steps = impl.forward(net, x)
    step_in: list[list[np.ndarray]] = []  # per layer, per step: its input (B, elements)
    outs: list[np.ndarray] = []
    new_step_exps = []
    j = 0
    h = x.astype(np.int64)
    for i, (L, IL) in enumerate(zip(state.layers, net.layers)):
        pad = L.schedule.shape.in_size - L.in_features
        hp = np.pad(h, ((0, 0), (0, pad))) if pad else h
        ins, exps = [hp], []
        for t in range(L.d):
            tr = steps[j]
            j += 1
            bits = IL.step_out_bits(t)
            exps.append(_fit_exp(tr.acc, IL.acc_exp(t), bits))
            stats.saturations += tr.saturations
            if trace is not None:
                trace.add("forward", i, t, L.schedule.steps[t].core, "acc", IL.acc_exp(t), tr.acc)
                trace.add("forward", i, t, L.schedule.steps[t].core, "out", IL.step_exps[t], tr.out)
            if t < L.d - 1:
                ins.append(tr.out)
        h = tr.out[:, :L.out_features]
        if L.relu:
            h = np.maximum(h, 0)
        if trace is not None:
            trace.add("forward", i, -1, None, "output", IL.out_exp, h)
        outs.append(h)
        step_in.append(ins)
        new_step_exps.append(tuple(exps))

    # -- loss: integer softmax and the logit gradient -----------------------------------
    e_z = net.layers[-1].out_exp
    sm = softmax_grad(logits, e_z, y, cfg)
    stats.loss_bits = loss_bits(sm, y)
    stats.correct = int(np.count_nonzero(np.argmax(logits, axis=1) == y))
    if trace is not None:
        for k in ("t", "e", "S", "R", "p", "g"):
            trace.add("loss", n - 1, -1, None, k, -cfg.prob_bits if k in ("p", "g") else None, sm[k])

    # -- backward, gradient and update, layer by layer from the last --------------------
    gen = Xorshift32(state.rng) if (update and cfg.rounding == "stochastic") else None
    drawn0 = 0
    dout = sm["g"]
    e_g = -cfg.prob_bits
    new_layers = []
    for i in range(n - 1, -1, -1):
        L, IL = state.layers[i], net.layers[i]
        masters = list(L.masters)
        grad_exps = list(L.grad_exps)
        if L.relu:
            dout = np.where(outs[i] > 0, dout, 0)
        B_ = dout.shape[0]
        pad_o = L.schedule.shape.out_size - L.out_features
        g_full = np.pad(dout, ((0, 0), (0, pad_o))) if pad_o else dout
        bias = L.bias
        if L.bias is not None:
            acc_b = dout.sum(axis=0)
            if trace is not None:
                trace.add("gradient", i, -1, None, "bias_acc", e_g, acc_b)
            if update:
                s = L.bias_exp + state.lr_shift - e_g
                d, words = round_update(acc_b, s, cfg, gen, cfg.bias_bits)
                bias = np.clip(L.bias - d, *int_range(cfg.bias_bits, narrow=True))
                stats.changed += int(np.count_nonzero(bias != L.bias))
                stats.elements += bias.size
                if trace is not None:
                    trace.add("update", i, -1, None, "bias", L.bias_exp, bias)
        cur = g_full  # gradient of the output of the current step, (B, elements in out layout)
        for t in range(L.d - 1, -1, -1):
            st = L.schedule.steps[t]
            C = IL.core_matrix(t)
            dout4 = cur.reshape(B_, st.A, st.P, st.Q)
            x4 = step_in[i][t].reshape(B_, st.A, st.K, st.Q)
            e_x = IL.step_in(t)[1]
            accW = impl.core_grad(dout4, x4)
            if trace is not None:
                trace.add("gradient", i, t, st.core, "core_acc", e_g + e_x, accW)
            if i > 0 or t > 0:
                accX = impl.input_grad(C, dout4).reshape(B_, -1)
                e_acc = IL.core_exps[st.core] + e_g
                if fit_now:
                    grad_exps[t] = _fit_exp(accX, e_acc, cfg.grad_bits)
                e_next = grad_exps[t]
                nxt, sat = shift_sat(accX, e_next - e_acc, cfg.grad_bits)
                stats.grad_saturations += sat
                if trace is not None:
                    trace.add("backward", i, t, st.core, "acc", e_acc, accX)
                    trace.add("backward", i, t, st.core, "out", e_next, nxt)
                grad_exps[t] = _fit_exp(accX, e_acc, cfg.grad_bits)  # delayed: the next step's
            else:
                nxt, e_next = None, None
            if update:
                k = st.core
                s = L.master_exps[k] + state.lr_shift - (e_g + e_x)
                d, words = round_update(accW, s, cfg, gen)
                m_pk = masters[k].transpose(st.core_axes).reshape(st.P, st.K)
                new_pk = np.clip(m_pk - d, *int_range(cfg.master_bits, narrow=True))
                stats.changed += int(np.count_nonzero(new_pk != m_pk))
                stats.elements += new_pk.size
                tshape = tuple(masters[k].shape[a] for a in st.core_axes)
                masters[k] = np.ascontiguousarray(
                    new_pk.reshape(tshape).transpose(np.argsort(st.core_axes)))
                if trace is not None:
                    trace.add("update", i, t, k, "master", L.master_exps[k], masters[k])
            cur, e_g = nxt, e_next
        dout = None if cur is None else cur[:, :L.in_features]
        new_layers.append(replace(L, masters=tuple(masters), bias=bias, step_exps=new_step_exps[i],
                                  grad_exps=tuple(grad_exps)))
    new_layers.reverse()
    kw: dict[str, Any] = dict(layers=tuple(new_layers))
    if update:
        drawn = 0 if gen is None else gen.drawn - drawn0
        stats.words = drawn
        kw.update(rng=gen.state if gen is not None else state.rng, words=state.words + drawn,
                  step=state.step + 1)
    new = replace(state, **kw)
    check_next_state(state, new, update)
    return new, stats


def _calibrate_forward(state: TrainState, x: np.ndarray, impl) -> TrainState:
    """Step exponents fitted to this batch, one step at a time in forward order."""
    layers = list(state.layers)
    for i in range(len(layers)):
        L = layers[i]
        exps = list(L.step_exps)
        for t in range(L.d):
            st = replace(state, layers=tuple(layers))
            net = export_network(st)
            _, steps = impl.forward(IntNetwork(net.layers[:i + 1]), x)
            tr = steps[sum(l.d for l in layers[:i]) + t]
            exps[t] = _fit_exp(tr.acc, net.layers[i].acc_exp(t), net.layers[i].step_out_bits(t))
            L = replace(L, step_exps=tuple(exps))
            if L.bias is not None and t == L.d - 1:
                last = L.schedule.steps[-1]
                prev = exps[-2] if L.d > 1 else (state.in_exp if i == 0 else layers[i - 1].step_exps[-1])
                e_acc = L.master_exps[last.core] + state.config.extra_bits + prev
                e_b = e_acc - state.config.bias_frac_bits
                if e_b != L.bias_exp:
                    b, _ = shift_sat(L.bias, e_b - L.bias_exp, state.config.bias_bits, narrow=True)
                    L = replace(L, bias=b, bias_exp=e_b)
            layers[i] = L
    return replace(state, layers=tuple(layers))


def calibrate_state(state: TrainState, x: np.ndarray, y: np.ndarray, fast: bool = True) -> TrainState:
    """Set every exponent from one batch, on the host, before training (no update, no words):
    step exponents one at a time in forward order (a re-fit of the last step moves a bias
    to ``bias_frac_bits`` below its accumulator exponent, FLOOR_PLUS_HALF), then gradient
    exponents from this batch's backward pass. Deterministic integer operations."""
    impl = _Fast if fast else _Golden
    new, _ = _step(state, x, y, impl, None, update=False, fit_now=True)
    return new


def train_step(state: TrainState, x: np.ndarray, y: np.ndarray) -> TrainState:
    """One golden training step on the batch ``x`` (integers, ``(B, in_features)`` in the
    ``act_bits`` range), ``y`` (labels); returns the new state."""
    return _step(state, x, y, _Golden, None)[0]


def train_step_fast(state: TrainState, x: np.ndarray, y: np.ndarray) -> tuple[TrainState, StepStats]:
    """:func:`train_step` with the contractions in float64 BLAS (bit-identical); also the
    step's :class:`StepStats`."""
    return _step(state, x, y, _Fast, None)


def train_step_stats(state: TrainState, x: np.ndarray, y: np.ndarray) -> tuple[TrainState, StepStats]:
    return _step(state, x, y, _Golden, None)


def train_step_traced(state: TrainState, x: np.ndarray, y: np.ndarray, fast: bool = False
                      ) -> tuple[TrainState, TrainTrace]:
    """:func:`train_step`, also returning every intermediate of every phase in order."""
    tr = TrainTrace(state.step)
    new, _ = _step(state, x, y, _Fast if fast else _Golden, tr)
    return new, tr


# ---------------------------------------------------------------------------------------
# checks before training
# ---------------------------------------------------------------------------------------
def update_shift_bounds(state: TrainState, batch: int) -> list[tuple[str, int, int]]:
    """For every stored tensor: ``(name, shift s, largest |gradient sum|)`` at the state's
    current exponents."""
    cfg = state.config
    out = []
    ws = {(w["phase"], w["layer"], w["step"]): w["bound"] for w in widths(state, batch)}
    n = len(state.layers)
    for i, L in enumerate(state.layers):
        e_g = -cfg.prob_bits if i == n - 1 else state.layers[i + 1].grad_exps[0]
        if L.bias is not None:
            out.append((f"layer {i} bias", L.bias_exp + state.lr_shift - e_g, ws[("gradient", i, -1)]))
        for t in range(L.d - 1, -1, -1):
            st = L.schedule.steps[t]
            e_x = state.layer_in_exp(i) if t == 0 else L.step_exps[t - 1]
            out.append((f"layer {i} core {st.core}", L.master_exps[st.core] + state.lr_shift - (e_g + e_x),
                        ws[("gradient", i, t)]))
            e_g = L.grad_exps[t]
    return out


def check_lr(state: TrainState, batch: int) -> None:
    """One-line ConfigError when the learning rate rounds every update of every tensor to
    zero: the largest gradient sum the widths admit, shifted by ``s``, is below one master
    LSB (stochastic: ``bound < 2^(s-32)``, the word's resolution; nearest: ``bound < 2^(s-1)``)."""
    zero = []
    for name, s, bound in update_shift_bounds(state, batch):
        limit = (s - 32) if state.config.rounding == "stochastic" else (s - 1)
        zero.append(limit > 0 and bound < (1 << limit))
    if zero and all(zero):
        raise ConfigError(f"lr_shift={state.lr_shift} rounds every update to zero at these exponents; "
                          f"lower --lr-shift (e.g. to {max(0, state.lr_shift - 16)})")


# ---------------------------------------------------------------------------------------
# rank truncation (host, between epochs)
# ---------------------------------------------------------------------------------------
def truncate_ranks(state: TrainState, layer: int, ranks: Sequence[int]) -> TrainState:
    """Keep, on every internal bond of layer ``layer``, the ``ranks[k-1]`` slices of highest
    score ``sum(master_(k-1)[..., j]^2) * sum(master_k[j, ...]^2)`` (Python integers; ties
    to the lower index; kept slices in their order). Exponents stay; the schedule keeps
    its order with the new ranks. Deterministic and integer-only."""
    L = state.layers[layer]
    shape = L.schedule.shape
    new_ranks = (1, *[int(r) for r in ranks], 1) if len(ranks) == shape.d - 1 else tuple(ranks)
    if len(new_ranks) != shape.d + 1:
        raise ShapeError(f"give {shape.d - 1} internal ranks for layer {layer}")
    masters = [g.copy() for g in L.masters]
    for k in range(1, shape.d):
        r_old, r_new = masters[k].shape[0], new_ranks[k]
        if not 1 <= r_new <= r_old:
            raise ShapeError(f"rank {r_new} of bond {k} must be in 1..{r_old} (truncation only)")
        left = [int(v) for v in (masters[k - 1].astype(object) ** 2).reshape(-1, r_old).sum(axis=0)]
        right = [int(v) for v in (masters[k].astype(object) ** 2).reshape(r_old, -1).sum(axis=1)]
        score = [a * b for a, b in zip(left, right)]
        keep = sorted(sorted(range(r_old), key=lambda j: (-score[j], j))[:r_new])
        masters[k - 1] = np.ascontiguousarray(masters[k - 1][..., keep])
        masters[k] = np.ascontiguousarray(masters[k][keep])
    sched = ContractionSchedule(TTShape(shape.out_modes, shape.in_modes, new_ranks), L.schedule.order)
    layers = list(state.layers)
    layers[layer] = replace(L, schedule=sched, masters=tuple(masters))
    return replace(state, layers=tuple(layers))


def predict(state: TrainState, x: np.ndarray, fast: bool = True, chunk: int = 512) -> np.ndarray:
    """Classes the state's network predicts for integer inputs ``x`` (index of the first
    maximum of the logits), by the fast forward (equal to the executor) or the golden one,
    at most ``chunk`` samples at a time and fewer where their intermediates would exceed
    :data:`~ttforge.limits.MAX_CHUNK_VALUES` (a sample's class does not depend on the chunk;
    512 samples of a layer with 2^19-element intermediates took 7.5 GB)."""
    net = export_network(state)
    impl = _Fast if fast else _Golden
    chunk = max(1, min(int(chunk), chunk_rows(sample_values(net.layers))))
    out = [np.argmax(impl.forward(net, x[i:i + chunk])[0], axis=1) for i in range(0, len(x), chunk)]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)
