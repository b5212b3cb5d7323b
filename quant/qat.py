"""Fake-quant TT networks (QAT) that equal the integer executor exactly in eval mode.

:func:`quantize_model` wraps every linear layer of a float ``nn.Sequential`` (``Flatten``
/ ``TTLinear`` / ``Linear`` / ``ReLU``) in a :class:`QuantLinear` that applies
``docs/arithmetic.md`` step by step: quantized input, quantized cores, a requantization
after every contraction step, the bias at the accumulator exponent, ReLU.

In training the arithmetic runs in the parameters' dtype with straight-through
gradients. In eval mode it runs in float64, where every value is an integer times a
power of two small enough to be exact (accumulators are limited to 48 bits), so
``QuantNetwork.eval()(x)`` equals :func:`~ttforge.ir.executor.execute` bit for bit.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, Mapping

import numpy as np
import torch
from torch import nn

from ttforge.errors import ConfigError, show
from ttforge.model import fast
from ttforge.model.layers import TTLinear
from ttforge.ir.schedule import ContractionSchedule
from ttforge.ir.tt import TTShape
from ttforge.ir.arith import (BIT_RANGES, MAX_ACC_BITS, acc_bits_needed, exponent_for_max, quantize,
                              shift_range)
from ttforge.ir.executor import IntLayer, IntNetwork
from ttforge.limits import MAX_EXP

__all__ = [
    "LayerQuant",
    "QuantConfig",
    "QuantLinear",
    "QuantNetwork",
    "COMPILE_OPTIONS",
    "fake_quant",
    "quantize_model",
    "calibrate",
    "CalibrationWarning",
    "compile_network",
]

Calibration = Literal["max", "mse"]


def check_calibration(method, name: str = "calibration") -> None:
    """A one-line :class:`ConfigError` unless ``method`` is ``'max'`` or ``'mse'``."""
    if not (isinstance(method, str) and method in ("max", "mse")):
        raise ConfigError(f"{name}={show(method)} must be 'max' or 'mse'")


#: Inductor options for a quantized network (:meth:`QuantNetwork.compile` passes them;
#: ``torch.compile(qnet, options=dict(COMPILE_OPTIONS))`` does the same). By default
#: inductor inlines every fake quantization (about a dozen operations an element) into
#: each of its consumers, and the consumers of a step's output are the permutation into
#: the next step's layout and the mask its backward keeps: it recomputed the
#: quantization twice per element, gathering the elements one by one through the
#: permutation. Keeping every computation of more than 4 operations as a buffer of its
#: own makes the step's output one contiguous pass and the permutation a copy
#: (``docs/benchmarks.md``, "`torch.compile`": the 784-512-10 network's training step
#: under inductor takes 1.56x / 1.50x eager's time at batch 32 / 256 with the defaults,
#: and is 1.11x / 1.09x faster than eager with these).
COMPILE_OPTIONS: Mapping[str, object] = MappingProxyType({"realize_opcount_threshold": 4})

#: Whether an eager :func:`fake_quant` runs in place (:class:`_FakeQuantSTE`); ``False``
#: runs the plain operations eagerly too, as compiled and captured calls do (the same
#: values and gradients, slower: ``bench/bench_compile.py``'s ``eager-plain`` run).
FAKE_QUANT_IN_PLACE = True


@dataclass(frozen=True)
class LayerQuant:
    """Widths of one layer; validated on construction."""

    w_bits: int = 8
    act_bits: int = 8
    inter_bits: int = 16
    acc_bits: int = 32

    def __post_init__(self) -> None:
        for name, (lo, hi) in BIT_RANGES.items():
            v = getattr(self, name)
            # numpy integers as ir.TrainConfig takes them (np.int64(4) was refused here)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
                raise ConfigError(f"{name}={v!r} must be an integer in {lo}..{hi}")
            object.__setattr__(self, name, int(v))


@dataclass(frozen=True)
class QuantConfig:
    """Quantization of a network: defaults plus per-layer overrides (mixed precision).

    Attributes
    ----------
    default : LayerQuant
        Widths of every layer not overridden.
    layers : mapping of int to LayerQuant
        Overrides by linear-layer index (0 = first linear layer); a key that is no such
        index, or (in :func:`quantize_model`) one of a layer the network lacks, is a
        one-line :class:`ConfigError`.
    calibration : {"max", "mse"}
        Exponent choice: smallest without saturation (the shift adjustment of
        arXiv:2104.03420), or the one minimising the squared error among it and the
        four below it.
    """

    default: LayerQuant = LayerQuant()
    layers: Mapping[int, LayerQuant] = field(default_factory=dict)
    calibration: Calibration = "max"

    def __post_init__(self) -> None:
        check_calibration(self.calibration)
        for k, v in self.layers.items():
            # ('0' or -1 matched no layer and was silently ignored; a float is no index)
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
                raise ConfigError(f"layers key {show(k)} must be a linear-layer index, an integer >= 0 "
                                  f"(0 = the first linear layer)")
            if not isinstance(v, LayerQuant):
                raise ConfigError(f"layers[{k}] must be a LayerQuant")
        # a copy of its own, keys as int: the caller's dict changed later is not this config
        object.__setattr__(self, "layers", {int(k): v for k, v in sorted(self.layers.items())})

    def __hash__(self) -> int:
        # frozen, so hashable like every config (the generated hash failed on the dict)
        return hash((self.default, tuple(self.layers.items()), self.calibration))

    def check_layers(self, n_layers: int) -> None:
        """A one-line :class:`ConfigError` for an override of a layer the network does not
        have (it was silently ignored)."""
        for k in self.layers:
            if not k < n_layers:
                raise ConfigError(f"layers key {k} matches no layer: the network has {n_layers} linear "
                                  f"layers (0..{n_layers - 1})")

    def for_layer(self, i: int) -> LayerQuant:
        return self.layers.get(i, self.default)


def _round_half_up(v: torch.Tensor) -> torch.Tensor:
    """``floor(v + 1/2)`` exactly, as :func:`ttforge.ir.arith.quantize` computes it:
    ``floor(v)``, plus one where the fraction ``v - floor(v)`` is at least 1/2. Adding
    the half first can round up across an integer (``0.49999999999999994 + 0.5`` is 1
    in float64, and a float64 input that close to a half step gave the integer
    executor's neighbour); so can ``floor(v) + 1/2`` once ``v`` is an integer too large
    for the half (float32 from ``2^23``: ``2^23 + 1/2`` is a tie that rounds to ``2^23``,
    and a 32-bit quantization gave ``2^23 + 1``). The fraction is compared exactly at
    any magnitude: rounding it is monotone and 1/2 is representable."""
    r = torch.floor(v)
    return r.add_((v - r) >= 0.5)  # (floor's backward keeps nothing to overwrite)


def _round_ste(v: torch.Tensor) -> torch.Tensor:
    """``floor(v + 1/2)`` (:func:`_round_half_up`) with the straight-through gradient
    (identity), in plain operations: ``v + (floor(v + 1/2) - v)`` with the difference
    detached.

    The value is ``floor(v + 1/2)`` exactly: the difference of a float and the integer
    it rounds to (at most 1/2 apart) is exact, and so is adding it back. Plain
    operations pass every ``torch.func`` transform and forward-mode AD, and
    ``torch.compile`` traces them (a custom autograd node with a ``jvp``, as this was,
    broke its graph at every rounding).
    """
    return v + (_round_half_up(v) - v).detach()


class _FakeQuantSTE(torch.autograd.Function):
    """:func:`fake_quant` under autograd in eager mode: the value computed in place in
    one buffer, and the straight-through gradient as one kept mask (``lo <= round <=
    hi``). The same values and gradients as the plain operations bit for bit (scaling
    by a power of two and back is exact), in fewer passes over the data and
    fewer allocations (the plain operations allocate at every step, and their backward
    adds a clamp's four passes and two products)."""

    @staticmethod
    def forward(ctx, x, unit, bits, narrow):  # type: ignore[override]
        r = _rounded(x, unit)
        lo, hi = _saturation(bits, narrow, r.dtype)
        ctx.save_for_backward((r >= lo).logical_and_(r <= hi))
        return r.clamp_(lo, hi).mul_(unit)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        (inside,) = ctx.saved_tensors
        return g * inside, None, None, None


def _rounded(x: torch.Tensor, unit) -> torch.Tensor:
    """``floor(x / unit + 1/2)`` (:func:`_round_half_up`) in a new tensor.

    A division by ``unit = 2^exp`` rather than a product with ``2^-exp``: at the
    contract's end ``exp = -1024`` (and at the bias's accumulator exponents below it)
    ``2^-exp`` overflows float64 while ``2^exp`` is an exact subnormal, and the quotient
    is the same correctly rounded value wherever both exist."""
    return _round_half_up(torch.div(x, unit))


#: Significand bits (with the implicit one) of the float dtypes fake quantization runs in.
_SIGNIFICAND = {torch.float64: 53, torch.float32: 24, torch.bfloat16: 8, torch.float16: 11}

#: The exponents whose ``2^exp`` is a finite, nonzero float64 (the scale of the values).
FAKE_QUANT_EXPS = (-1074, 1023)


def _saturation(bits: int, narrow: bool, dtype: torch.dtype) -> tuple[float, float]:
    """``(lo, hi)`` of a ``bits``-wide integer as values of ``dtype``: ``hi`` rounded down
    to the largest value of the dtype not above it. ``2^(bits-1) - 1`` needs ``bits - 1``
    significand bits; past the dtype's (float32 from 26 bits) it rounds to the nearest
    value, ``2^(bits-1)`` itself, one past the width (a 32-bit bias in float32 saturated
    to 2^31). The largest value below ``2^(bits-1)`` is ``2^(bits-1) - 2^(bits-1-p)``
    for a ``p``-bit significand; ``-2^(bits-1)`` is exact. Both stop at the dtype's
    largest finite value.

    The range as floats, ``2.0 ** (bits - 1)`` rather than ``1 << (bits - 1)``: where a
    compiled graph takes the width as a symbolic integer (between graph breaks, as in
    calibration), inductor writes the shift in 32-bit arithmetic and 2^31 wraps."""
    p = _SIGNIFICAND.get(dtype, 53)
    hi = 2.0 ** (bits - 1) - (2.0 ** (bits - 1 - p) if bits - 1 > p else 1.0)
    lo = -hi if narrow else -(2.0 ** (bits - 1))
    if dtype in (torch.float16, torch.bfloat16):   # (float16 ends at 65504: from 18 bits on)
        top = torch.finfo(dtype).max
        return max(lo, -top), min(hi, top)
    return lo, hi


def fake_quant(x: torch.Tensor, bits: int, exp: int | torch.Tensor, narrow: bool = False,
               infinities: bool = False) -> torch.Tensor:
    """``sat(floor(x / 2^exp + 1/2)) * 2^exp``; gradient passes inside the range, 0 outside.

    ``exp`` is an integer in :data:`FAKE_QUANT_EXPS` (where ``2^exp`` is a finite nonzero
    float64) or an integer tensor (a module's exponent buffer: compiled graphs then read
    it when they run, rather than recompiling for each value; its value is not checked,
    as that would read it; calibration refuses exponents whose values float64 cannot
    hold). The saturation bounds are values of ``x``'s dtype: in float32 the largest
    32-bit value is 2^31 - 128, the largest float32 not above 2^31 - 1.
    Eagerly it runs in place (:class:`_FakeQuantSTE` under autograd; unless
    :data:`FAKE_QUANT_IN_PLACE` is off); traced, captured
    or under a ``torch.func`` transform or forward-mode AD it is plain operations
    (:func:`_round_ste`), which every one of them supports. The two agree bit for bit
    on every finite value; an infinite one (or one whose ``x / 2^exp`` overflows)
    saturates in place, as in the integer executor, and is NaN in the plain operations
    (``inf - inf`` in the rounding) unless ``infinities`` is set: then ``x / 2^exp`` is
    clamped to ``+-2^bits`` first (the same values and straight-through gradients, as the
    range rounds from within it; a network's input quantization sets it: its values are
    data, which may be infinite, and keep no gradient). A clamp in every rounding made the
    compiled training step slower, once with a kept mask and once without
    (``docs/benchmarks.md``), so the others stay as they are. NaN stays NaN."""
    # any width of the contract: up to the accumulator's (the bias is an acc_bits-wide
    # integer; int_range stops at 32, the widest operand)
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 2 <= bits <= MAX_ACC_BITS:
        raise ConfigError(f"bit width {bits!r} must be an integer in 2..{MAX_ACC_BITS}")
    if isinstance(exp, torch.Tensor):
        if exp.dtype.is_floating_point or exp.dtype.is_complex or exp.dtype == torch.bool:
            raise ConfigError(f"fake_quant: exp is a {exp.dtype} tensor; give an integer tensor "
                              f"(values are x / 2^exp)")
        unit = 2.0 ** exp.to(torch.float64)   # float64 powers of two, exact (as a Python float's)
    else:
        # as ttforge.ir.quantize checks it: a scale 2^1.5 is no power of two
        if isinstance(exp, bool) or not isinstance(exp, (int, np.integer)):
            raise ConfigError(f"fake_quant: exp={show(exp)} must be an integer (values are x / 2^exp)")
        if not FAKE_QUANT_EXPS[0] <= exp <= FAKE_QUANT_EXPS[1]:
            raise ConfigError(f"fake_quant: exp={int(exp)} must be in {FAKE_QUANT_EXPS[0]}.."
                              f"{FAKE_QUANT_EXPS[1]} (2^exp a finite nonzero float64)")
        unit = math.ldexp(1.0, int(exp))
    if torch.compiler.is_compiling() or fast.plain_ops_only() or not FAKE_QUANT_IN_PLACE:
        v = x / unit
        if infinities:   # (powers of two: exact in every dtype; round() stays beyond the range)
            v = torch.clamp(v, -(2.0 ** bits), 2.0 ** bits)
        v = _round_ste(v)
        lo, hi = _saturation(bits, narrow, v.dtype)
        return torch.clamp(v, lo, hi) * unit
    if torch.is_grad_enabled() and x.requires_grad:
        return _FakeQuantSTE.apply(x, unit, bits, narrow)
    with torch.no_grad():
        r = _rounded(x, unit)
        return r.clamp_(*_saturation(bits, narrow, r.dtype)).mul_(unit)


def _tt_view(layer: nn.Module) -> tuple[list[torch.Tensor], ContractionSchedule, int, int]:
    """Cores, schedule and sizes of a TTLinear, or of a Linear as a one-core TT."""
    if isinstance(layer, TTLinear):
        return list(layer.cores), layer.schedule, layer.in_features, layer.out_features
    M, N = layer.weight.shape
    schedule = ContractionSchedule(TTShape((M,), (N,), (1, 1)), (0,))
    return [layer.weight.reshape(1, M, N, 1)], schedule, N, M


class QuantLinear(nn.Module):
    """A TT or dense layer under the integer arithmetic (the float layer is kept inside).

    Exponents live in integer buffers: ``in_exp``, ``core_exps`` (one per core) and
    ``step_exps`` (one per schedule step; the last is the output exponent).
    """

    def __init__(self, layer: nn.Module, q: LayerQuant, relu: bool, first: bool) -> None:
        super().__init__()
        if not isinstance(layer, (TTLinear, nn.Linear)):
            raise ConfigError(f"cannot quantize {type(layer).__name__}; only TTLinear and Linear")
        self.layer = layer
        self.q = q
        self.relu = relu
        self.first = first
        d = len(_tt_view(layer)[0])
        self.register_buffer("in_exp", torch.zeros((), dtype=torch.int64))
        self.register_buffer("core_exps", torch.zeros(d, dtype=torch.int64))
        self.register_buffer("step_exps", torch.zeros(d, dtype=torch.int64))
        #: Set to a list to record ``(step, acc, out)`` of every step in ``forward``: the
        #: value before requantization (bias included on the last step) and after it, both
        #: padded and before ReLU (what :class:`~ttforge.ir.executor.StepTrace` holds,
        #: times ``2^exp``). Used by :mod:`ttforge.quant.diverge`; ``None`` records nothing.
        self.trace: list | None = None
        #: What the last calibration saw only zeros of (``"input"``, ``"step 1"``): their
        #: exponents say nothing of a scale (:func:`calibrate` warns).
        self.zero_calibrated: list[str] = []

    @property
    def in_bits(self) -> int:
        return self.q.act_bits

    def step_out_bits(self, t: int, n_steps: int) -> int:
        return self.q.act_bits if t == n_steps - 1 else self.q.inter_bits

    def forward(self, x: torch.Tensor, calibrate: Calibration | None = None) -> torch.Tensor:
        cores, schedule, in_f, out_f = _tt_view(self.layer)
        dtype = torch.float64 if not self.training or calibrate else cores[0].dtype
        # -1 is ambiguous for a batch of none: torch refused it (a RuntimeError where the
        # float model and the executor return (0, out_features))
        x = x.reshape(x.shape[0], -1 if x.numel() else in_f).to(dtype)
        if calibrate:
            if self.first:
                self.in_exp.fill_(_choose_exp(x, self.in_bits, False, calibrate))
                if x.numel() and not bool(x.abs().max()):
                    self.zero_calibrated.append("input")
            for k, g in enumerate(cores):
                self.core_exps[k] = _choose_exp(g.detach().double(), self.q.w_bits, True, calibrate)
        # the exponents stay tensors (no int(): a compiled graph would break there and
        # recompile per value, see fake_quant)
        if self.first:
            # data may be infinite (or overflow at the scale): saturated, as the executor's
            # input quantizer does, also where the plain operations run (compiled, traced)
            x = fake_quant(x, self.in_bits, self.in_exp, infinities=True)
        pad = schedule.shape.in_size - in_f
        if pad:
            x = nn.functional.pad(x, (0, pad))
        steps = schedule.steps
        for t, step in enumerate(steps):
            g = fake_quant(cores[step.core].to(dtype), self.q.w_bits, self.core_exps[step.core], True)
            x = step.apply(x, g.permute(*step.core_axes).reshape(step.P, step.K))
            bits = self.step_out_bits(t, len(steps))
            if t == len(steps) - 1 and self.layer.bias is not None:
                acc_exp = self.core_exps[step.core] + (self.step_exps[t - 1] if t else self.in_exp)
                b = fake_quant(self.layer.bias.to(dtype), self.q.acc_bits, acc_exp)
                x = torch.cat([x[:, :out_f] + b, x[:, out_f:]], dim=1) if x.shape[1] > out_f else x + b
            if calibrate:
                seen = x.detach()[:, :out_f] if t == len(steps) - 1 else x.detach()
                if seen.numel() and not bool(seen.abs().max()):
                    # an all-zero step (a zero core) says nothing of its scale: 0 (as for
                    # any all-zero values), or the nearest exponent whose shift the
                    # accumulator can make (after inputs of 1e-20, 0 was a right shift of
                    # 73, and compiling failed)
                    acc = int(self.core_exps[step.core]) + int(self.step_exps[t - 1] if t else self.in_exp)
                    lo, hi = shift_range(self.q.acc_bits)
                    self.step_exps[t] = min(max(0, acc + lo, -MAX_EXP), acc + hi, MAX_EXP)
                    self.zero_calibrated.append(f"step {t}")
                else:
                    self.step_exps[t] = _choose_exp(seen, bits, False, calibrate)
            acc = x
            x = fake_quant(x, bits, self.step_exps[t])
            if self.trace is not None:
                self.trace.append((t, acc.detach(), x.detach()))
        x = x[:, :out_f]
        if self.relu:
            x = torch.relu(x)
        return x

    def bias_exp(self) -> int:
        """Exponent of the bias: the last step's accumulator scale (its core's exponent
        plus its input's)."""
        _, schedule, _, _ = _tt_view(self.layer)
        last = schedule.steps[-1]
        return int(self.core_exps[last.core]) + int(self.step_exps[-2] if len(schedule.steps) > 1 else self.in_exp)

    def _bias_max(self) -> tuple[float, int]:
        """The bias's largest magnitude, and it at the accumulator's scale as an integer
        (``0.0, 0`` without a bias)."""
        if self.layer.bias is None or not self.layer.bias.numel():
            return 0.0, 0
        exp = self.bias_exp()
        top = float(self.layer.bias.detach().double().abs().max())
        # |bias| / 2^exp as an integer, exactly enough for a width (ldexp overflows past 2^1024)
        scaled = math.frexp(top)[1] - exp
        return top, int(math.floor(math.ldexp(top, -exp) + 0.5)) if scaled < 1000 else 1 << scaled

    def _acc_need(self, t: int, bias_max: int = 0) -> int:
        """Bits of step ``t``'s accumulator: its sums, and ``bias_max`` (on the last step)."""
        _, schedule, _, _ = _tt_view(self.layer)
        x_bits = self.in_bits if t == 0 else self.q.inter_bits
        return acc_bits_needed(schedule.steps[t].K, self.q.w_bits, x_bits, bias_max)

    def check_bias(self, index: int) -> None:
        """A one-line :class:`ConfigError` when the bias, at the accumulator's scale,
        cannot be held with the last step's sums in ``acc_bits`` (it would saturate):
        the width to give, or, past :data:`MAX_ACC_BITS`, that the bias is too large for
        the weights' scale (a bias of 1 next to weights of 1e-44 needs ~150 bits). The
        integer layer would only say "raise acc_bits to 49", beyond the allowed 48."""
        if self.layer.bias is None or not self.layer.bias.numel():
            return
        _, schedule, _, _ = _tt_view(self.layer)
        exp = self.bias_exp()
        top, bias_max = self._bias_max()
        need = self._acc_need(len(schedule.steps) - 1, bias_max)
        if need <= self.q.acc_bits:
            return
        where = f"layer {index} ({type(self.layer).__name__})"
        if need <= MAX_ACC_BITS:
            raise ConfigError(f"{where}: its bias (up to {top:.3g}) at the accumulator scale 2^{exp} needs a "
                              f"{need}-bit accumulator but acc_bits is {self.q.acc_bits}; raise --acc-bits "
                              f"to {need}")
        # either scale can be the tiny one: calibration samples of 1e-20 said "the bias is
        # too large for the weights" of a sound checkpoint
        last = schedule.steps[-1]
        core_exp = int(self.core_exps[last.core])
        raise ConfigError(f"{where}: its bias (up to {top:.3g}) at the accumulator scale 2^{exp} (its last "
                          f"core's scale 2^{core_exp} times its input's 2^{exp - core_exp}) needs {need} "
                          f"bits, more than the {MAX_ACC_BITS} an accumulator may have: the bias is too "
                          f"large next to those scales; check the calibration data (its scale sets the "
                          f"inputs') and the checkpoint (weights scaled down?), or retrain")

    def check_float64(self, index: int, steps: bool = True) -> None:
        """A one-line :class:`ConfigError` when eval mode cannot compute this layer exactly
        in float64, so that it could not equal the integer executor: a quantized value
        (the width's range times ``2^exp``) or a step's sums beyond float64's largest
        (below ``2^1024``), or a step's products, multiples of ``2^(core exp + input
        exp)``, finer than its smallest subnormal ``2^-1074``. The contract's exponents
        (``+-1024``) reach past both ends: 2-bit weights above ``2^1023`` take the
        exponent 1024, where ``1 * 2^1024`` is infinite; weights near ``2^-1017`` and
        inputs near ``2^-53`` multiply to ``2^-1077``. ``steps=False`` checks the input's and
        the cores' exponents only."""
        _, schedule, _, _ = _tt_view(self.layer)
        where = f"layer {index} ({type(self.layer).__name__})"
        last = len(schedule.steps) - 1
        ranges = [("its input", self.in_bits, False, int(self.in_exp))] if self.first else []
        ranges += [(f"core {k}", self.q.w_bits, True, int(e)) for k, e in enumerate(self.core_exps)]
        for t, step in enumerate(schedule.steps if steps else ()):
            in_exp = int(self.step_exps[t - 1]) if t else int(self.in_exp)
            acc_exp = int(self.core_exps[step.core]) + in_exp
            if acc_exp < FAKE_QUANT_EXPS[0]:
                raise ConfigError(f"{where} step {t}: its products are multiples of 2^{acc_exp} (core {step.core} "
                                  f"at 2^{int(self.core_exps[step.core])} times its input at 2^{in_exp}), finer "
                                  f"than float64's 2^{FAKE_QUANT_EXPS[0]}, so fake quantization cannot equal "
                                  f"the integer executor: the weights and inputs are too small together; "
                                  f"scale the model or the data up")
            need = self._acc_need(t, self._bias_max()[1] if t == last else 0)
            # the sums are below 2^(need-1) (a strict bound, as a narrow range's)
            ranges += [(f"step {t}'s sums", need, True, acc_exp),
                       (f"step {t}'s output", self.step_out_bits(t, last + 1), False, int(self.step_exps[t]))]
        for name, bits, narrow, exp in ranges:
            # |values| up to 2^(bits-1) (narrow: below it) times 2^exp; float64 ends below 2^1024
            if bits - 1 + exp > (1024 if narrow else 1023):
                raise ConfigError(f"{where}: {name} ({bits}-bit at the scale 2^{exp}) reach 2^{bits - 1 + exp}, "
                                  f"past float64's largest value (below 2^1024), so fake quantization cannot "
                                  f"hold them: the weights or inputs are too large; scale the model or the "
                                  f"data down")

    def to_int_layer(self) -> IntLayer:
        """The integer layer this module computes in eval mode."""
        cores, schedule, in_f, out_f = _tt_view(self.layer)
        int_cores = tuple(
            _to_int(g.detach().double(), self.q.w_bits, int(e), True) for g, e in zip(cores, self.core_exps)
        )
        bias = None
        if self.layer.bias is not None:
            bias = _to_int(self.layer.bias.detach().double(), self.q.acc_bits, self.bias_exp(), False)
        return IntLayer(
            in_features=in_f, out_features=out_f, schedule=schedule, cores=int_cores,
            core_exps=tuple(int(e) for e in self.core_exps), w_bits=self.q.w_bits,
            in_bits=self.in_bits, in_exp=int(self.in_exp), inter_bits=self.q.inter_bits,
            out_bits=self.q.act_bits, step_exps=tuple(int(e) for e in self.step_exps),
            acc_bits=self.q.acc_bits, bias=bias, relu=self.relu,
        )


def _to_int(x: torch.Tensor, bits: int, exp: int, narrow: bool) -> np.ndarray:
    # divided by 2^exp: 2^-exp overflows float64 at exp = -1024 (see _rounded)
    return (fake_quant(x, bits, exp, narrow) / math.ldexp(1.0, exp)).numpy().astype(np.int64)


def _choose_exp(v: torch.Tensor, bits: int, narrow: bool, method: Calibration) -> int:
    max_abs = float(v.abs().max()) if v.numel() else 0.0
    e_max = exponent_for_max(max_abs, bits, narrow)
    if method == "max" or max_abs == 0:
        return e_max
    # (never below the contract's -MAX_EXP: an integer layer refuses those)
    errors = [(float((fake_quant(v, bits, e, narrow) - v).square().mean()), -e)
              for e in range(e_max, max(e_max - 5, -MAX_EXP - 1), -1)]
    return -min(errors)[1]


class QuantNetwork(nn.Module):
    """A chain of :class:`QuantLinear`; the input is quantized by the first layer."""

    def __init__(self, layers: list[QuantLinear]) -> None:
        super().__init__()
        self.qlayers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor, calibrate: Calibration | None = None) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            # forward_int, calibrate and the call itself failed on a numpy array with
            # "'numpy.ndarray' object has no attribute 'numel'", deep in the first layer
            raise ConfigError(f"QuantNetwork takes a torch.Tensor (batch, features), got "
                              f"{type(x).__name__}; convert it with torch.as_tensor(x, dtype=torch.float32)")
        for i, layer in enumerate(self.qlayers):
            if not calibrate:
                x = layer(x)
                continue
            if i:
                layer.in_exp.fill_(int(self.qlayers[i - 1].step_exps[-1]))
            try:
                x = layer(x, calibrate)
            except ConfigError:
                # an input or core exponent whose values float64 cannot hold (2-bit weights
                # above 2^1023 at 2^1024) makes its steps NaN, and calibrating them says
                # only that: name the exponent (they are chosen before the steps)
                layer.check_float64(i, steps=False)
                raise
        return x

    def output_exp(self) -> int:
        return int(self.qlayers[-1].step_exps[-1])

    def compile(self, *args, **kwargs) -> None:
        """:meth:`torch.nn.Module.compile` (in place), with :data:`COMPILE_OPTIONS` under
        the inductor backend. Options given here win over them; with ``mode=`` (which
        ``torch.compile`` does not take beside ``options``) none are added."""
        if kwargs.get("backend", "inductor") == "inductor" and kwargs.get("mode") is None:
            kwargs["options"] = {**COMPILE_OPTIONS, **(kwargs.get("options") or {})}
        super().compile(*args, **kwargs)

    def forward_int(self, x: torch.Tensor) -> np.ndarray:
        """Eval-mode output as integers (``output / 2^out_exp``), int64 numpy; a NaN input
        is the executor's one-line :class:`~ttforge.errors.DataError` naming its index, an
        output that is not finite (a NaN weight) a one-line ConfigError. The module's
        training mode is as it was before the call."""
        if isinstance(x, torch.Tensor) and x.is_floating_point() and bool(torch.isnan(x).any()):
            # a NaN passed the fake quantization and its row came out as int64's minimum;
            # the executor's path (IntNetwork.quantize_input) refuses it: its very check
            first = self.qlayers[0]
            quantize(x.detach().cpu().double().numpy(), first.in_bits, int(first.in_exp))
        was = self.training      # given back: calibrate and find_divergence do the same
        try:
            with torch.no_grad():
                y = self.eval()(x).double()
        finally:
            self.train(was)
        _check_finite_output(y)
        return (y / math.ldexp(1.0, self.output_exp())).numpy().astype(np.int64)


def _check_finite_output(y: torch.Tensor) -> None:
    """Refuse an eval output that is not a finite number (a NaN or infinite weight makes
    its rows NaN): cast to int64 it was int64's minimum, with only numpy's warning.

    Raises
    ------
    ConfigError
        Naming the first such output's index and how many there are.
    """
    bad = ~torch.isfinite(y)
    if bool(bad.any()):
        where = tuple(int(i) for i in torch.nonzero(bad)[0])
        raise ConfigError(f"forward_int: the eval output at index {where} is {float(y[where])} "
                          f"({int(bad.sum())} not finite in all); a weight of the model is not a "
                          f"finite number: check the model")


def quantize_model(model: nn.Module, config: QuantConfig = QuantConfig()) -> QuantNetwork:
    """Wrap a float ``nn.Sequential`` of Flatten/TTLinear/Linear/ReLU (shares its parameters)."""
    mods = list(model.children()) if isinstance(model, nn.Sequential) else [model]
    layers: list[QuantLinear] = []
    for m in mods:
        if isinstance(m, nn.Flatten):
            if layers:
                raise ConfigError("nn.Flatten is only supported before the first linear layer")
            continue
        if isinstance(m, nn.ReLU):
            if not layers or layers[-1].relu:
                raise ConfigError("nn.ReLU must follow a linear layer (once)")
            layers[-1].relu = True
            continue
        if not isinstance(m, (TTLinear, nn.Linear)):
            raise ConfigError(f"cannot quantize a {type(m).__name__}; networks are Sequentials of "
                              f"Flatten, TTLinear, Linear and ReLU")
        layers.append(QuantLinear(m, config.for_layer(len(layers)), relu=False, first=not layers))
    if not layers:
        raise ConfigError("the model has no TTLinear or Linear layer to quantize")
    config.check_layers(len(layers))
    for i in range(1, len(layers)):
        if layers[i].in_bits != layers[i - 1].q.act_bits:
            raise ConfigError(f"layer {i} act_bits={layers[i].in_bits} differs from layer {i - 1}'s "
                              f"{layers[i - 1].q.act_bits}; activations between layers share one width")
    return QuantNetwork(layers)


def calibrate(qnet: QuantNetwork, x: torch.Tensor, method: Calibration = "max") -> QuantNetwork:
    """Set every exponent from a calibration batch (post-training quantization) by
    ``method``, ``'max'`` or ``'mse'`` (:class:`QuantConfig`'s ``calibration``; anything
    else is refused); a one-line :class:`ConfigError` if eval mode cannot then compute a
    layer exactly in float64 (:meth:`QuantLinear.check_float64`)."""
    # anything but 'max' chose by MSE, None did not calibrate at all (every exponent 0)
    check_calibration(method, "method")
    if not len(x):   # no exponent can be chosen from no values (it was torch's RuntimeError)
        raise ConfigError("the calibration batch holds no samples; give at least one")
    for layer in qnet.qlayers:
        layer.zero_calibrated = []
    with torch.no_grad():
        qnet(x, calibrate=method)
    for i, layer in enumerate(qnet.qlayers):
        layer.check_float64(i)
    _warn_zero_calibration(qnet)
    return qnet


class CalibrationWarning(UserWarning):
    """Calibration values that say nothing of a scale (all zero): the exponent chosen for
    them is 0, or the nearest the accumulator can shift to (``docs/arithmetic.md``)."""


def _warn_zero_calibration(qnet: QuantNetwork) -> None:
    """One :class:`CalibrationWarning` naming every tensor the calibration saw only zeros
    of (all-zero calibration data gave an input exponent of 0 and a useless artifact,
    silently: 8-bit pixels in [0, 1] quantized to 0 and 1)."""
    zero = [f"layer {i} {name}" for i, layer in enumerate(qnet.qlayers) for name in layer.zero_calibrated]
    if zero:
        warnings.warn(CalibrationWarning(
            f"calibration saw only zeros for {', '.join(zero)}; their exponents say nothing of a scale "
            f"(check the calibration data)"), stacklevel=3)


def compile_network(qnet: QuantNetwork) -> IntNetwork:
    """The :class:`IntNetwork` that ``qnet`` computes in eval mode."""
    for i, layer in enumerate(qnet.qlayers):
        layer.check_bias(i)
        layer.check_float64(i)   # (exponents may have been set by hand since calibration)
    layers = []
    for i, layer in enumerate(qnet.qlayers):
        try:
            layers.append(layer.to_int_layer())
        except ConfigError as e:   # the integer layer's fields ("step 0 shifts by 73"), named
            raise ConfigError(f"layer {i} ({type(layer.layer).__name__}): {e}") from None
    return IntNetwork(tuple(layers))
