"""The divergence finder: float -> fake-quant -> integer executor, step by step.

:func:`find_divergence` runs one input batch through three stages of the same network
and compares consecutive stages after the input quantization and after every
contraction step of every layer (the schedule's order):

1. **float**: the float layers inside the :class:`~ttforge.quant.qat.QuantNetwork`,
   in float64, following the same contraction schedule, with nothing quantized;
2. **fake-quant**: the :class:`~ttforge.quant.qat.QuantNetwork` in eval mode (its
   per-step values recorded through :attr:`QuantLinear.trace`);
3. **integer**: :func:`~ttforge.ir.executor.execute_traced` on the
   :class:`~ttforge.ir.executor.IntNetwork` (e.g. a loaded artifact).

*float vs fake-quant* differ by design (that is the quantization error): for every
step the report gives the largest absolute error, in real units and in output LSBs
(``2^step_exp``), and the first element (in sample-major, then element order) whose
error exceeds ``tolerance_lsb`` LSBs. This comparison is informational.

*fake-quant vs integer* must be exact: the layer formats (widths, exponents, schedule)
must be the same, and at every step the accumulator (before requantization, bias
included on the last step) and the requantized output must be equal integers. The
first difference is reported as layer, step, what (``format``, ``input``, ``acc``,
``out``), sample, element index within the sample's padded intermediate, expected
(fake-quant) and got (integer). ``ttforge diverge`` exits 1 when there is one.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ttforge.errors import ConfigError, ShapeError
from ttforge.model.layers import TTLinear
from ttforge.model.tt import check_finite_layers
from ttforge.ir.arith import BIT_RANGES, quantize as quantize_real
from ttforge.ir.diverge import DivergenceReport, Mismatch, StepError, first_diff
from ttforge.ir.executor import IntLayer, IntNetwork, execute_traced
from ttforge.limits import check_chunk_values, chunk_rows
from ttforge.quant.qat import LayerQuant, QuantConfig, QuantNetwork, _tt_view, quantize_model

__all__ = ["StepError", "Mismatch", "DivergenceReport", "find_divergence", "quant_network_for",
           "float_model_of", "values_per_sample", "check_sample_values", "WORKING_COPIES"]


# ---------------------------------------------------------------------------------------
# the three stages, a layer at a time
# ---------------------------------------------------------------------------------------
def _float_step(step, x: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """``step.apply(x, C)`` in float64, each sample's sums in an order that does not depend
    on the batch: a BLAS product rounds a row differently with the batch's size (its
    tiling), and the samples run in chunks whose report must be the whole batch's.
    ``np.einsum`` without ``optimize`` sums each element alone, in index order."""
    b = x.shape[0]
    xv = x.numpy().reshape(b, step.A, step.K, step.Q)
    y = np.einsum("pk,bakq->bapq", C.numpy(), xv, optimize=False)
    return torch.from_numpy(np.ascontiguousarray(y).reshape(b, -1))


class _FloatLayer:
    """The float stage of one layer (float64, nothing quantized, the same contraction
    schedule), advanced a step at a time as the fake-quant stage reaches that step."""

    def __init__(self, ql, x: torch.Tensor) -> None:
        self.cores, self.schedule, _, self.out_f = _tt_view(ql.layer)
        self.bias = ql.layer.bias
        self.relu = ql.relu
        pad = self.schedule.shape.in_size - x.shape[1]
        self.x = nn.functional.pad(x, (0, pad)) if pad else x

    def step(self, t: int) -> np.ndarray:
        """The padded pre-ReLU output of step ``t`` (steps come in order)."""
        step = self.schedule.steps[t]
        C = self.cores[step.core].detach().double().permute(*step.core_axes).reshape(step.P, step.K)
        x = _float_step(step, self.x, C)
        if t == len(self.schedule.steps) - 1 and self.bias is not None:
            x = x.clone()
            x[:, :self.out_f] += self.bias.detach().double()
        self.x = x
        return x.numpy()

    def output(self) -> torch.Tensor:
        """The layer's output, the next layer's float input."""
        x = self.x[:, :self.out_f]
        return torch.relu(x) if self.relu else x


def _int_layer(inet: IntNetwork, li: int, x: np.ndarray) -> tuple[np.ndarray, list]:
    """Layer ``li`` of the integer executor on its integer input ``x``: its output and
    its steps' :class:`~ttforge.ir.executor.StepTrace` (numbered as layer ``li``)."""
    y, traces = execute_traced(IntNetwork((inet.layers[li],)), x)
    return y, [dataclasses.replace(t, layer=li) for t in traces]


class _StepSink:
    """What :attr:`QuantLinear.trace` appends to: each fake-quant step, compared at once
    with the float and integer stages' same step and then dropped, so a chunk holds one
    layer's integer steps (until compared) and a few intermediates, never every step
    of every layer of three stages (a 12-step layer of 2^24 features took > 9 GB for
    one sample)."""

    def __init__(self, on_step) -> None:
        self.on_step = on_step

    def append(self, item: tuple) -> None:
        self.on_step(*item)


def _to_int(v: np.ndarray, exp: int) -> np.ndarray:
    scaled = np.ldexp(v, -exp)
    ints = np.floor(scaled)
    if not np.array_equal(ints, scaled):  # pragma: no cover - eval mode is exact by construction
        raise AssertionError(f"fake-quant value not a multiple of 2^{exp}")
    return ints.astype(np.int64)


def _format_of(ql, il: IntLayer | None = None) -> dict[str, Any]:
    if il is None:
        cores, schedule, in_f, out_f = _tt_view(ql.layer)
        q = ql.q
        return {"in_features": in_f, "out_features": out_f, "modes": (schedule.shape.out_modes,
                schedule.shape.in_modes), "ranks": schedule.shape.ranks, "schedule order": schedule.order,
                "w_bits": q.w_bits, "in_bits": ql.in_bits, "inter_bits": q.inter_bits,
                "out_bits": q.act_bits, "acc_bits": q.acc_bits, "in_exp": int(ql.in_exp),
                "core_exps": tuple(int(e) for e in ql.core_exps),
                "step_exps": tuple(int(e) for e in ql.step_exps), "relu": bool(ql.relu),
                "bias": ql.layer.bias is not None}
    s = il.schedule
    return {"in_features": il.in_features, "out_features": il.out_features,
            "modes": (s.shape.out_modes, s.shape.in_modes), "ranks": s.shape.ranks, "schedule order": s.order,
            "w_bits": il.w_bits, "in_bits": il.in_bits, "inter_bits": il.inter_bits, "out_bits": il.out_bits,
            "acc_bits": il.acc_bits, "in_exp": il.in_exp, "core_exps": tuple(il.core_exps),
            "step_exps": tuple(il.step_exps), "relu": bool(il.relu), "bias": il.bias is not None}


#: Working values per element of a layer's widest intermediate, besides its integer
#: steps: the three stages' current values, the fake-quant step's temporaries and the
#: comparison's (an integer copy, a difference, a mask). Measured (peak RSS): a 9-step
#: layer of 2^18-element intermediates held 26.5 of them a sample, 18 its integer steps.
WORKING_COPIES = 12


def _layer_values(schedule) -> int:
    steps = [s.out_elements for s in schedule.steps]
    return 2 * sum(steps) + WORKING_COPIES * max(schedule.shape.in_size, *steps)


def _schedules(net) -> list:
    """The contraction schedules of an :class:`IntNetwork`, of a model's linear layers
    (before it is quantized) or a list of them."""
    if isinstance(net, IntNetwork):
        return [layer.schedule for layer in net.layers]
    if isinstance(net, QuantNetwork):
        return [_tt_view(ql.layer)[1] for ql in net.qlayers]
    if isinstance(net, nn.Module):
        mods = net.children() if isinstance(net, nn.Sequential) else [net]
        return [_tt_view(m)[1] for m in mods if isinstance(m, (TTLinear, nn.Linear))]
    return list(net)


def values_per_sample(net: IntNetwork | nn.Module | Sequence) -> int:
    """Values a chunk holds for one sample at once (what a chunk of samples is sized by):
    at its widest layer, that layer's integer accumulators and outputs (kept until the
    fake-quant stage reaches their step) and :data:`WORKING_COPIES` of its widest
    intermediate. ``net``: an :class:`IntNetwork`, a model or their layers' schedules."""
    return max((_layer_values(s) for s in _schedules(net)), default=0)


def check_sample_values(net: IntNetwork | nn.Module | Sequence,
                        fix: str = "compare a network with smaller intermediates") -> int:
    """:func:`values_per_sample`, or one line (:class:`~ttforge.errors.LimitError`) when
    one sample alone is above :data:`~ttforge.limits.MAX_CHUNK_VALUES` (a chunk is at least
    a sample, so no chunking bounds it), naming the widest layer; checked before any stage
    runs."""
    schedules = _schedules(net)
    per_sample = values_per_sample(schedules)
    if schedules:
        li = max(range(len(schedules)), key=lambda i: _layer_values(schedules[i]))
        s = schedules[li]
        widest = max(s.shape.in_size, *(t.out_elements for t in s.steps))
        check_chunk_values(per_sample, f"the divergence search of one sample (layer {li}: {len(s.steps)} "
                                       f"steps, intermediates of up to {widest:,} elements)", fix)
    return per_sample


def find_divergence(qnet: QuantNetwork, inet: IntNetwork, x: torch.Tensor | np.ndarray,
                    tolerance_lsb: float = 1.0, chunk: int | None = None) -> DivergenceReport:
    """Run ``x`` (real inputs, ``(batch, in_features)``) through float, fake-quant and
    integer stages and compare them step by step (see the module docstring).

    The samples run in chunks of ``chunk`` rows (default: as many as
    :func:`~ttforge.limits.chunk_rows` allows at :func:`values_per_sample`, so
    memory is bounded whatever the batch and the number of layers; a network one sample
    of which is above the bound is refused first, :class:`~ttforge.errors.LimitError`);
    the report is the one of the whole batch at once, element for element (which sample
    is first, the counts, the largest errors)."""
    if not isinstance(qnet, QuantNetwork) or not isinstance(inet, IntNetwork):
        raise ConfigError("find_divergence needs a QuantNetwork and an IntNetwork")
    if not torch.is_tensor(x):
        x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ShapeError(f"inputs have shape {tuple(x.shape)}; give a non-empty (batch, features) batch")
    if x.shape[1] != inet.in_features:
        raise ShapeError(f"inputs have {x.shape[1]} features; the network takes {inet.in_features}")
    n = int(x.shape[0])
    n_steps = sum(len(layer.step_exps) for layer in inet.layers)
    report = DivergenceReport(n, n_steps, float(tolerance_lsb))

    # formats first: a different exponent or width makes every later integer meaningless
    if len(qnet.qlayers) != len(inet.layers):
        report.quant_vs_int = Mismatch(0, -1, "format", None, None, len(qnet.qlayers), len(inet.layers),
                                       detail="number of layers")
        return report
    for li, (ql, il) in enumerate(zip(qnet.qlayers, inet.layers)):
        fa, fb = _format_of(ql), _format_of(ql, il)
        for key in fa:
            if fa[key] != fb[key]:
                report.quant_vs_int = Mismatch(li, -1, "format", None, None, fa[key], fb[key], detail=key)
                break
        if report.quant_vs_int:
            break

    # before any stage runs (the fake-quant stage follows qnet's schedules, which differ
    # from inet's when the formats do)
    per_sample = max(check_sample_values(inet), check_sample_values(qnet))
    rows = chunk_rows(per_sample) if chunk is None else int(chunk)
    if rows < 1:
        raise ConfigError(f"chunk={rows} must be at least 1 sample")
    errors: list[StepError] | None = None
    # the integer comparison: the first place (in the unchunked order) with a difference,
    # the chunk offset of its first sample, and its count so far
    best: tuple[int, Mismatch] | None = None
    compare = report.quant_vs_int is None
    for start in range(0, n, rows):
        xc = x[start:start + rows]
        xc = (xc.double() if torch.is_tensor(xc) else torch.from_numpy(np.asarray(xc, dtype=np.float64)))
        part, saturations, found = _compare_chunk(qnet, inet, xc, float(tolerance_lsb), start, n,
                                                  False if not compare else (best[0] if best else None))
        report.n_saturations += saturations
        errors = part if errors is None else [_merge_step_errors(a, b) for a, b in zip(errors, part)]
        if found is not None:
            if best is None or found[0] < best[0]:
                best = found
            else:  # the same place: its first sample came earlier, the count adds up
                best = (best[0], dataclasses.replace(best[1], n_diff=best[1].n_diff + found[1].n_diff))
    report.float_vs_quant = errors or []
    if compare and best is not None:
        report.quant_vs_int = best[1]
    return report


def _compare_chunk(qnet: QuantNetwork, inet: IntNetwork, x: torch.Tensor, tol: float, offset: int,
                   n_total: int, upto: int | None | bool
                   ) -> tuple[list[StepError], int, tuple[int, Mismatch] | None]:
    """One chunk of samples (the first is sample ``offset`` of ``n_total``): its float vs
    fake-quant errors, its saturation events and the first integer difference at or
    before place ``upto`` (places are numbered in the order the comparison goes:
    the input, every step's accumulator then output, the layer output; ``None``: any
    place; ``False``: do not compare) as ``(place, mismatch)`` with chunk-global sample
    numbers and the count of this chunk only.

    The stages run a layer at a time and are compared a step at a time (see
    :class:`_StepSink`)."""
    rows = x.shape[0]
    errors: list[StepError] = []
    saturations = 0
    found: tuple[int, Mismatch] | None = None
    place = 0

    def mismatch(place, layer, step, what, expected, got, detail=""):
        """``(place, Mismatch)`` if ``expected`` and ``got`` differ, else ``None``."""
        d = first_diff(expected, got)
        if d is None:
            return None
        s, e, want, have = d
        per_sample = int(got.size // rows)
        return place, Mismatch(layer, step, what, s + offset, e, want, have,
                               int(np.count_nonzero(expected != got)), per_sample * n_total, detail=detail)

    def comparing() -> bool:
        """Whether the next place is compared: none is past the first difference, nor
        past ``upto`` (a later place cannot be the first of the whole batch)."""
        nonlocal place
        place += 1
        return upto is not False and found is None and (upto is None or place <= upto)

    # float vs fake-quant at the input, then fake-quant vs integer there (place 0)
    ql0 = qnet.qlayers[0]
    e = int(ql0.in_exp)
    layer_in = x.numpy()
    xi = inet.quantize_input(layer_in)
    xq_fake = quantize_real(layer_in, ql0.in_bits, e)
    errors.append(_step_error(0, -1, None, e, layer_in, xq_fake * 2.0**e, tol, offset))
    if upto is not False:
        found = mismatch(0, 0, -1, "input", xq_fake, xi)
    del xq_fake, layer_in

    x_float = x_fake = x
    was = qnet.training
    qnet.eval()
    try:
        for li, (ql, il) in enumerate(zip(qnet.qlayers, inet.layers)):
            xi, traces = _int_layer(inet, li, xi)
            saturations += sum(t.saturations for t in traces)
            by_step = {t.step: i for i, t in enumerate(traces)}
            floats = _FloatLayer(ql, x_float)
            core_of = [s.core for s in floats.schedule.steps]

            def on_step(t, acc, out, li=li, ql=ql, il=il, traces=traces, by_step=by_step, floats=floats,
                        core_of=core_of):
                nonlocal found
                out = out.double().numpy()
                errors.append(_step_error(li, t, core_of[t], int(ql.step_exps[t]), floats.step(t), out, tol,
                                          offset))
                if upto is False:   # the formats differ: only the float vs fake-quant errors
                    return
                i = by_step[t]
                tr, traces[i] = traces[i], None   # dropped once compared
                for what, real, exp, got in (("acc", acc.double().numpy(), il.acc_exp(t), tr.acc),
                                             ("out", out, il.step_exps[t], tr.out)):
                    if comparing():
                        found = mismatch(place, li, t, what, _to_int(real, exp), got, detail=f"core {core_of[t]}")

            ql.trace = _StepSink(on_step)
            try:
                with torch.no_grad():
                    x_fake = ql(x_fake)
            finally:
                ql.trace = None
            x_float = floats.output()
            del floats, traces
    finally:
        qnet.train(was)
    # every step equal but the outputs not: the slicing or the ReLU differs
    if comparing():
        found = mismatch(place, len(inet.layers) - 1, -1, "output",
                         _to_int(x_fake.double().numpy(), inet.layers[-1].out_exp), xi)
    return errors, saturations, found


def _step_error(layer: int, step: int, core: int | None, exp: int, fv: np.ndarray, qv: np.ndarray,
                tol: float, offset: int = 0) -> StepError:
    err = np.abs(fv - qv)
    lsb = 2.0**exp
    over = err > tol * lsb
    first = None
    if over.any():
        # argmax finds the first True; argwhere listed every one (256 MB for 2^24)
        s, e = divmod(int(np.argmax(over.reshape(-1))), over.shape[1])
        first = (s + offset, e, float(fv[s, e]), float(qv[s, e]))
    mx = float(err.max()) if err.size else 0.0
    return StepError(layer, step, core, exp, mx, mx / lsb, int(np.count_nonzero(over)), int(err.size), first)


def _merge_step_errors(a: StepError, b: StepError) -> StepError:
    """The error of two consecutive chunks of samples at one step, as one batch gives it
    (a NaN maximum stays NaN, as ``ndarray.max`` propagates it)."""
    mx = a.max_abs_err if math.isnan(a.max_abs_err) else (
        b.max_abs_err if math.isnan(b.max_abs_err) else max(a.max_abs_err, b.max_abs_err))
    return dataclasses.replace(a, max_abs_err=mx, max_err_lsb=mx / 2.0**a.exp, n_over=a.n_over + b.n_over,
                               n_elements=a.n_elements + b.n_elements,
                               first_over=a.first_over if a.first_over is not None else b.first_over)


# ---------------------------------------------------------------------------------------
# building the fake-quant stage for an artifact
# ---------------------------------------------------------------------------------------
def float_model_of(inet: IntNetwork) -> nn.Sequential:
    """A float network whose weights are the artifact's dequantized integers
    (cores ``* 2^core_exp``, bias ``* 2^acc_exp``), with the artifact's schedules."""
    mods: list[nn.Module] = [nn.Flatten()]
    for il in inet.layers:
        shape = il.schedule.shape
        has_bias = il.bias is not None
        if shape.d == 1 and shape.ranks == (1, 1) and (shape.out_size, shape.in_size) == (il.out_features, il.in_features):
            layer: nn.Module = nn.Linear(il.in_features, il.out_features, bias=has_bias)
            with torch.no_grad():
                layer.weight.copy_(torch.from_numpy(np.ldexp(il.cores[0][0, :, :, 0].astype(np.float64),
                                                             il.core_exps[0])))
        else:
            layer = TTLinear(il.in_features, il.out_features, shape.ranks, in_modes=shape.in_modes,
                             out_modes=shape.out_modes, bias=has_bias, schedule=il.schedule.order)
            with torch.no_grad():
                for k, g in enumerate(il.cores):
                    layer.cores[k].copy_(torch.from_numpy(np.ldexp(g.astype(np.float64), il.core_exps[k])))
        if has_bias:
            last = len(il.step_exps) - 1
            with torch.no_grad():
                layer.bias.copy_(torch.from_numpy(np.ldexp(il.bias.astype(np.float64), il.acc_exp(last))))
        mods.append(layer.double())
        if il.relu:
            mods.append(nn.ReLU())
    return nn.Sequential(*mods).eval()


def quant_network_for(float_model: nn.Module, inet: IntNetwork) -> QuantNetwork:
    """The fake-quant network of a *copy* of ``float_model`` with the widths and exponents
    of ``inet`` (e.g. a loaded artifact): what the model computes under the artifact's
    formats. Shapes must match (else :class:`~ttforge.errors.ShapeError`)."""
    model = copy.deepcopy(float_model).eval()
    linears = [m for m in (model.children() if isinstance(model, nn.Sequential) else [model])
               if isinstance(m, (TTLinear, nn.Linear))]
    if len(linears) != len(inet.layers):
        raise ShapeError(f"the artifact has {len(inet.layers)} layers but the model has {len(linears)} "
                         f"linear layers; give the checkpoint the artifact was compiled from")
    # no artifact is compiled from such weights (quantize refuses them), and a NaN ended
    # the fake-quant stage in an internal AssertionError (exit 70)
    check_finite_layers(enumerate(linears), "give the checkpoint the artifact was compiled from "
                                            "(quantize refuses such weights)")
    layers = {}
    for i, (m, il) in enumerate(zip(linears, inet.layers)):
        _, schedule, in_f, out_f = _tt_view(m)
        if (in_f, out_f) != (il.in_features, il.out_features) or schedule.shape.d != il.schedule.shape.d:
            raise ShapeError(f"layer {i} of the artifact is {il.in_features}->{il.out_features} with "
                             f"{il.schedule.shape.d} cores, the model's is {in_f}->{out_f} with "
                             f"{schedule.shape.d}; give the checkpoint the artifact was compiled from")
        if il.in_bits != il.out_bits:
            raise ShapeError(f"layer {i} of the artifact takes {il.in_bits}-bit inputs but outputs "
                             f"{il.out_bits} bits; the fake-quant network uses one activation width")
        widths = {"w_bits": il.w_bits, "act_bits": il.out_bits, "inter_bits": il.inter_bits, "acc_bits": il.acc_bits}
        for name, v in widths.items():
            lo, hi = BIT_RANGES[name]
            if not lo <= v <= hi:
                # the integer stages take wider formats than the fake-quant model does; the
                # bare LayerQuant line gave neither the layer nor a way on
                raise ConfigError(f"layer {i} of the artifact has {name}={v}; the fake-quant stage models "
                                  f"{lo}..{hi} bits, so it cannot be compared here: check the integer stages "
                                  f"against the RTL instead "
                                  f"(ttforge run --board BOARD --sim --verify ARTIFACT INPUTS)")
        layers[i] = LayerQuant(**widths)
    qnet = quantize_model(model, QuantConfig(layers[0], layers))
    for i, (ql, il) in enumerate(zip(qnet.qlayers, inet.layers)):
        if ql.relu != il.relu:
            raise ShapeError(f"layer {i}: the artifact's relu={il.relu} but the model's is {ql.relu}; "
                             f"give the checkpoint the artifact was compiled from")
        ql.in_exp.fill_(il.in_exp)
        ql.core_exps.copy_(torch.tensor(il.core_exps, dtype=torch.int64))
        ql.step_exps.copy_(torch.tensor(il.step_exps, dtype=torch.int64))
    return qnet
