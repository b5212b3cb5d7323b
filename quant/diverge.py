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
from typing import Any

import numpy as np
import torch
from torch import nn

from ttforge.errors import ConfigError, ShapeError
from ttforge.model.layers import TTLinear
from ttforge.ir.arith import quantize as quantize_real
from ttforge.ir.diverge import DivergenceReport, Mismatch, StepError, first_diff
from ttforge.ir.executor import IntLayer, IntNetwork, execute_traced
from ttforge.quant.qat import LayerQuant, QuantConfig, QuantNetwork, _tt_view, quantize_model

__all__ = ["StepError", "Mismatch", "DivergenceReport", "find_divergence", "quant_network_for",
           "float_model_of"]


# ---------------------------------------------------------------------------------------
# the three stages
# ---------------------------------------------------------------------------------------
def _float_steps(qnet: QuantNetwork, x: torch.Tensor) -> list[tuple[np.ndarray, list[np.ndarray]]]:
    """Per layer: (its float input, padded pre-ReLU output of every step), float64, unquantized."""
    out = []
    x = x.reshape(x.shape[0], -1).double()
    for ql in qnet.qlayers:
        cores, schedule, in_f, out_f = _tt_view(ql.layer)
        layer_in = x.numpy().copy()
        pad = schedule.shape.in_size - in_f
        if pad:
            x = nn.functional.pad(x, (0, pad))
        steps = []
        for t, step in enumerate(schedule.steps):
            C = cores[step.core].detach().double().permute(*step.core_axes).reshape(step.P, step.K)
            x = step.apply(x, C)
            if t == len(schedule.steps) - 1 and ql.layer.bias is not None:
                x = x.clone()
                x[:, :out_f] += ql.layer.bias.detach().double()
            steps.append(x.numpy().copy())
        x = x[:, :out_f]
        if ql.relu:
            x = torch.relu(x)
        out.append((layer_in, steps))
    return out


def _fake_quant_steps(qnet: QuantNetwork, x: torch.Tensor) -> tuple[np.ndarray, list[list[tuple]]]:
    """Eval-mode output and, per layer, ``(step, acc, out)`` real values (float64 numpy)."""
    was = qnet.training
    qnet.eval()
    try:
        for ql in qnet.qlayers:
            ql.trace = []
        with torch.no_grad():
            y = qnet(x).double().numpy()
        traces = [[(t, a.double().numpy(), o.double().numpy()) for t, a, o in ql.trace] for ql in qnet.qlayers]
    finally:
        for ql in qnet.qlayers:
            ql.trace = None
        qnet.train(was)
    return y, traces


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


def find_divergence(qnet: QuantNetwork, inet: IntNetwork, x: torch.Tensor | np.ndarray,
                    tolerance_lsb: float = 1.0) -> DivergenceReport:
    """Run ``x`` (real inputs, ``(batch, in_features)``) through float, fake-quant and
    integer stages and compare them step by step (see the module docstring)."""
    if not isinstance(qnet, QuantNetwork) or not isinstance(inet, IntNetwork):
        raise ConfigError("find_divergence needs a QuantNetwork and an IntNetwork")
    x = torch.as_tensor(np.asarray(x, dtype=np.float64) if not torch.is_tensor(x) else x)
    if x.dim() != 2 or x.shape[0] == 0:
        raise ShapeError(f"inputs have shape {tuple(x.shape)}; give a non-empty (batch, features) batch")
    if x.shape[1] != inet.in_features:
        raise ShapeError(f"inputs have {x.shape[1]} features; the network takes {inet.in_features}")
    n_steps = sum(len(layer.step_exps) for layer in inet.layers)
    report = DivergenceReport(int(x.shape[0]), n_steps, float(tolerance_lsb))

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

    floats = _float_steps(qnet, x)
    y_fq, fq = _fake_quant_steps(qnet, x)
    xi = inet.quantize_input(x.double().numpy())
    y_int, traces = execute_traced(inet, xi)
    report.n_saturations = sum(t.saturations for t in traces)
    by_step = {(t.layer, t.step): t for t in traces}

    # float vs fake-quant
    tol = float(tolerance_lsb)
    for li, ql in enumerate(qnet.qlayers):
        layer_in, fsteps = floats[li]
        cores, schedule, _, _ = _tt_view(ql.layer)
        if li == 0:
            e = int(ql.in_exp)
            xq = quantize_real(layer_in, ql.in_bits, e) * 2.0**e
            report.float_vs_quant.append(_step_error(li, -1, None, e, layer_in, xq, tol))
        for (t, _, out), fv in zip(fq[li], fsteps):
            e = int(ql.step_exps[t])
            report.float_vs_quant.append(_step_error(li, t, schedule.steps[t].core, e, fv, out, tol))
    if report.quant_vs_int is not None:
        return report

    # fake-quant vs integer, exact
    xq_fake = quantize_real(x.double().numpy(), qnet.qlayers[0].in_bits, int(qnet.qlayers[0].in_exp))
    d = first_diff(xq_fake, xi)
    if d:
        report.quant_vs_int = Mismatch(0, -1, "input", *d, int(np.count_nonzero(xq_fake != xi)), xi.size)
        return report
    for li, (ql, il) in enumerate(zip(qnet.qlayers, inet.layers)):
        for t, acc, out in fq[li]:
            tr = by_step[(li, t)]
            core = il.schedule.steps[t].core
            for what, real, exp, got in (("acc", acc, il.acc_exp(t), tr.acc), ("out", out, il.step_exps[t], tr.out)):
                expected = _to_int(real, exp)
                d = first_diff(expected, got)
                if d:
                    report.quant_vs_int = Mismatch(li, t, what, *d, int(np.count_nonzero(expected != got)),
                                                   int(got.size), detail=f"core {core}")
                    return report
    expected = _to_int(y_fq, inet.layers[-1].out_exp)
    d = first_diff(expected, y_int)
    if d:  # every step equal but the outputs not: the slicing or the ReLU differs
        report.quant_vs_int = Mismatch(len(inet.layers) - 1, -1, "output", *d,
                                       int(np.count_nonzero(expected != y_int)), int(y_int.size))
    return report


def _step_error(layer: int, step: int, core: int | None, exp: int, fv: np.ndarray, qv: np.ndarray,
                tol: float) -> StepError:
    err = np.abs(fv - qv)
    lsb = 2.0**exp
    over = err > tol * lsb
    first = None
    if over.any():
        s, e = (int(i) for i in np.argwhere(over)[0])
        first = (s, e, float(fv[s, e]), float(qv[s, e]))
    mx = float(err.max()) if err.size else 0.0
    return StepError(layer, step, core, exp, mx, mx / lsb, int(np.count_nonzero(over)), int(err.size), first)


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
        layers[i] = LayerQuant(il.w_bits, il.out_bits, il.inter_bits, il.acc_bits)
    qnet = quantize_model(model, QuantConfig(layers[0], layers))
    for i, (ql, il) in enumerate(zip(qnet.qlayers, inet.layers)):
        if ql.relu != il.relu:
            raise ShapeError(f"layer {i}: the artifact's relu={il.relu} but the model's is {ql.relu}; "
                             f"give the checkpoint the artifact was compiled from")
        ql.in_exp.fill_(il.in_exp)
        ql.core_exps.copy_(torch.tensor(il.core_exps, dtype=torch.int64))
        ql.step_exps.copy_(torch.tensor(il.step_exps, dtype=torch.int64))
    return qnet
