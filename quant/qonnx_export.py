"""QONNX export of the quantized integer network, bit-exact or refused.

The exported graph computes exactly what :func:`ttforge.quant.execute` computes
(``docs/arithmetic.md``), with the QONNX custom ops of the domain
``qonnx.custom_op.general`` and standard ONNX ops, keeping the TT chain (one
``MatMul`` per core, never a reconstructed dense weight). ``docs/export.md`` is the
user documentation; in short:

* QONNX has no rounding mode for ``floor(v + 1/2)`` (its ``HALF_UP`` rounds ties away
  from zero, ``-2.5 -> -3``, where ttforge gives ``-2``). Every requantization is
  therefore ``Add`` of half an output LSB followed by ``IntQuant`` (or ``Trunc``) with
  ``rounding_mode="FLOOR"``, which is ``floor(v + 1/2)`` exactly.
* QONNX ops compute in float32 (``IntQuant`` is specified on ``tensor(float32)``, and the
  ``qonnx`` executor casts its output to float32), so the graph is float32. Integer
  arithmetic in float32 is exact while every value, every partial sum of a ``MatMul``
  included, is an integer multiple of its scale of magnitude at most ``2^24``. The
  exporter bounds every step's sums over *all* inputs of the declared ranges (with the
  actual core values) and refuses a network that could leave that range, naming the
  layer, the step and the width to lower. It never writes an approximate graph.
* The input is quantized exactly for every float32 value by a two-stage ``FLOOR``
  quantization (``floor(2v)``, then ``floor((n + 1) / 2)``), so the graph takes real
  inputs and equals ``execute(net, net.quantize_input(x))``.

``export_qonnx`` writes the file atomically; ``check_qonnx`` runs it with the ``qonnx``
executor (optional dependency) and compares with the integer executor exactly.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ttforge.errors import ConfigError, show
from ttforge.ir.arith import ARITHMETIC_SPEC_VERSION, int_range
from ttforge.ir.executor import IntLayer, IntNetwork, execute
from ttforge.onnx_graph import DEFAULT_OPSET, MIN_OPSET, OnnxGraph, check_opset, model_proto

__all__ = [
    "QONNX_DOMAIN",
    "DEFAULT_OPSET",
    "MIN_OPSET",
    "MAX_QONNX_BATCH",
    "MAX_QONNX_CHECK",
    "FLOAT32_EXACT",
    "REQUANT_MODES",
    "StepBound",
    "float32_bounds",
    "trunc_in_bits",
    "build_qonnx",
    "export_qonnx",
    "run_qonnx",
    "check_qonnx",
]

#: Domain of the QONNX custom ops.
QONNX_DOMAIN = "qonnx.custom_op.general"
#: Largest integer magnitude (in units of a tensor's scale) float32 holds exactly.
FLOAT32_EXACT = 1 << 24
#: Smallest and largest scale exponent the graph may use: every value is an integer
#: ``|n| <= 2^25`` times ``2^e``, normal (no subnormal, so flush-to-zero cannot bite)
#: and finite in float32.
MIN_EXP, MAX_EXP = -126, 127 - 26
#: How a step's accumulator is requantized: ``IntQuant`` (opset 1 of the QONNX domain)
#: or ``Trunc`` (its version 2, which takes an output scale and saturates).
REQUANT_MODES = ("intquant", "trunc")
QUANT_OPS = ("IntQuant", "Quant")


# ---------------------------------------------------------------------------------------
# float32 exactness
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StepBound:
    """The largest magnitude (in units of the accumulator scale ``2^acc_exp``) that any
    value of one step reaches in the float32 graph, over every input of the declared
    ranges: the ``MatMul`` partial sums, the bias ``Add`` and the half-LSB ``Add``."""

    layer: int
    step: int
    core: int
    acc_exp: int
    bound: int

    @property
    def exact(self) -> bool:
        return self.bound <= FLOAT32_EXACT


def _in_interval(net: IntNetwork, li: int, t: int, bits: int | None = None) -> tuple[int, int]:
    """Integer range of the input of step ``t`` of layer ``li`` (``bits`` overrides its width)."""
    layer = net.layers[li]
    b = layer.step_in(t)[0] if bits is None else bits
    lo, hi = int_range(b)
    if t == 0 and li > 0 and net.layers[li - 1].relu:
        lo = 0  # the previous layer ends in ReLU (padding zeros are inside too)
    return lo, hi


def _step_bound(layer: IntLayer, t: int, lo: int, hi: int) -> int:
    C = layer.core_matrix(t)  # (P, K) int64
    # every partial sum of row p lies in [-neg_p, pos_p] whatever the summation order
    pos = np.maximum(0, np.maximum(C * lo, C * hi)).sum(axis=1)
    neg = np.maximum(0, -np.minimum(C * lo, C * hi)).sum(axis=1)
    bound = int(max(pos.max(initial=0), neg.max(initial=0)))
    step = layer.schedule.steps[t]
    last = t == len(layer.schedule.steps) - 1
    shift = layer.shifts()[t]
    half = 1 << (shift - 1) if shift >= 1 else 0
    if not last:
        return bound + half
    # After the last step, element o of the (A, P, Q) output is row p's sum plus o's bias.
    # |sum + b (+ half)| over the elements of row p is largest at the row's smallest or
    # largest b (|.| is convex), so only those 4 P ends are summed, as Python integers
    # (exact: near 2^63 int64 would wrap), never every output element (2^24 of them
    # took 2.4 GB and 15 s as Python integers).
    if layer.bias is None:
        b_lo = b_hi = np.zeros(step.P, dtype=np.int64)
    else:
        b = np.zeros(step.A * step.P * step.Q, dtype=np.int64)
        b[: layer.out_features] = layer.bias
        b = b.reshape(step.A, step.P, step.Q)
        b_lo, b_hi = b.min(axis=(0, 2)), b.max(axis=(0, 2))
    ends = [s.astype(object) + e.astype(object) for s in (pos, -neg) for e in (b_lo, b_hi)]
    if layer.bias is not None:
        bound = max(bound, max(int(abs(e).max()) for e in ends))
    return max(bound, max(int(abs(e + half).max()) for e in ends))


def float32_bounds(net: IntNetwork) -> list[StepBound]:
    """Per step, the largest integer the float32 graph must hold (see :class:`StepBound`)."""
    out = []
    for li, layer in enumerate(net.layers):
        for t, step in enumerate(layer.schedule.steps):
            lo, hi = _in_interval(net, li, t)
            out.append(StepBound(li, t, step.core, layer.acc_exp(t), _step_bound(layer, t, lo, hi)))
    return out


def trunc_in_bits(acc_bits: int, shift: int) -> int:
    """The input width a step's ``Trunc`` declares: its accumulator plus half an output
    LSB (``2^(shift-1)``, added when ``shift >= 1``).

    ``acc (+ bias)`` fits ``acc_bits`` (:class:`IntLayer` checks ``acc_bits_needed``);
    the half LSB lifts its top to ``2^(acc_bits-1) - 1 + 2^(shift-1)``, which needs
    ``max(acc_bits, shift) + 1`` bits (its bottom stays above ``-2^(acc_bits-1)``).
    """
    return acc_bits if shift < 1 else max(acc_bits, shift) + 1


def _passes(net: IntNetwork, sb: StepBound, bits: int) -> bool:
    lo, hi = _in_interval(net, sb.layer, sb.step, bits)
    return _step_bound(net.layers[sb.layer], sb.step, lo, hi) <= FLOAT32_EXACT


def _suggest_width(net: IntNetwork, group: list[StepBound]) -> int | None:
    """The largest input width below the failing steps' own at which every step of
    ``group`` is exact (``None`` if none is, down to 2 bits).

    ``group`` is every step whose input width one ``ttforge quantize`` flag sets, failing
    or not: the flag sets it in every layer, so the width must fit them all (a step
    exact at its own width is exact at any smaller one).
    """
    failing = [sb for sb in group if not sb.exact]
    top = min(net.layers[sb.layer].step_in(sb.step)[0] for sb in failing) - 1
    return next((b for b in range(top, 1, -1) if all(_passes(net, sb, b) for sb in group)), None)


def _where(steps: list[StepBound]) -> str:
    """``"layer 0 (steps 1, 2), layer 1 (step 0)"``."""
    layers: dict[int, list[int]] = {}
    for sb in sorted(steps, key=lambda b: (b.layer, b.step)):
        layers.setdefault(sb.layer, []).append(sb.step)
    return ", ".join(f"layer {li} (step{'s' if len(ts) > 1 else ''} {', '.join(map(str, ts))})"
                     for li, ts in layers.items())


#: The steps whose input width one flag of ``ttforge quantize`` sets: a layer's first
#: step takes the layer input (the activation width), every later one an intermediate.
_WIDTH_FLAGS = (("in_bits (its input width, act_bits)", "--act-bits", lambda sb: sb.step == 0),
                ("inter_bits", "--inter-bits", lambda sb: sb.step > 0))


def _width_advice(net: IntNetwork, bounds: list[StepBound]) -> str:
    """One fix for every inexact step at once: per flag, the width at which all the
    steps it sets are exact (advice for the first failing step only led a user from one
    failure to the next)."""
    failing = [sb for sb in bounds if not sb.exact]
    single = len(failing) == 1
    widths, flags, stuck = [], [], []
    for field, flag, takes in _WIDTH_FLAGS:
        group = [sb for sb in bounds if takes(sb)]
        fails = [sb for sb in group if not sb.exact]
        if not fails:
            continue
        width = _suggest_width(net, group)
        if width is None:
            stuck += fails
            continue
        widths.append(f"{field} <= {width}" + ("" if single else f" at {_where(fails)}"))
        flags.append(f"{flag} {width}")
    if not widths:
        return (f"quantize layer {failing[0].layer} with fewer w_bits or smaller modes/ranks at this step"
                if single else "quantize with fewer w_bits or smaller modes/ranks at these steps")
    fix = (f"quantize {f'layer {failing[0].layer} ' if single else ''}with {' and '.join(widths)} "
           f"(ttforge quantize {' '.join(flags)}), fewer w_bits, or smaller modes/ranks at "
           f"{'this step' if single else 'these steps'}")
    if stuck:   # no width of their flag is small enough for these
        fix += f"; at {_where(stuck)} only fewer w_bits or smaller modes/ranks will do"
    return fix


def _check_exportable(net: IntNetwork) -> None:
    first = net.layers[0]
    if first.in_bits > 24:
        raise ConfigError(f"layer 0 in_bits={first.in_bits}: the input quantization needs "
                          f"in_bits + 1 <= 25 bits exact in float32; use in_bits <= 24")
    for li, layer in enumerate(net.layers):
        for name in ("inter_bits", "out_bits"):
            if getattr(layer, name) > 25:
                raise ConfigError(f"layer {li} {name}={getattr(layer, name)}: saturation bounds above "
                                  f"2^24 are not exact in a float32 QONNX graph; use {name} <= 25")
        exps = [("in_exp", layer.in_exp - 1)] + [(f"core_exps[{k}]", e) for k, e in enumerate(layer.core_exps)]
        for t in range(len(layer.step_exps)):
            exps += [(f"step_exps[{t}]", layer.step_exps[t] - 1), (f"acc_exp of step {t}", layer.acc_exp(t))]
        for name, e in exps:
            if not MIN_EXP <= e <= MAX_EXP:
                raise ConfigError(
                    f"layer {li} {name} needs the scale 2^{e}, outside the exponents [{MIN_EXP}, {MAX_EXP}] "
                    f"that keep every value a normal float32; rescale the network (exponents near 0)")
    bounds = float32_bounds(net)
    failing = [sb for sb in bounds if not sb.exact]
    if not failing:
        return
    sb, rest = failing[0], failing[1:]
    more = f", and so can {len(rest)} more step{'s' if len(rest) > 1 else ''}: {_where(rest)}" if rest else ""
    raise ConfigError(f"layer {sb.layer} step {sb.step} (core {sb.core}) can reach sums of {sb.bound:,} "
                      f"(> 2^24 = {FLOAT32_EXACT:,}) that a float32 QONNX graph does not hold exactly{more}; "
                      f"{_width_advice(net, bounds)}")


# ---------------------------------------------------------------------------------------
# graph building
# ---------------------------------------------------------------------------------------
class _Graph(OnnxGraph):
    """An :class:`OnnxGraph` of fixed batch whose every node output has a value info, with
    float32 scalar constants shared by value."""

    def __init__(self, batch: int) -> None:
        super().__init__()
        self.batch = batch
        self._scalars: dict[tuple[str, float], str] = {}

    def f32(self, base: str, value: float) -> str:
        """A float32 scalar initializer, shared by value."""
        key = (base, float(value))
        if key not in self._scalars:
            self._scalars[key] = self.const(base, np.asarray(value, dtype=np.float32))
        return self._scalars[key]

    def pow2(self, e: int) -> str:
        return self.f32(f"pow2_{e}".replace("-", "m"), np.ldexp(1.0, e))

    def node(self, op: str, inputs: Sequence[str], base: str, shape: Sequence[int],  # type: ignore[override]
             domain: str = "", **attrs: Any) -> str:
        return super().node(op, inputs, base, domain=domain, shape=shape, **attrs)


class _Builder:
    def __init__(self, g: _Graph, quant_op: str, requant: str) -> None:
        self.g, self.quant_op, self.requant = g, quant_op, requant

    def quant(self, x: str, base: str, shape, exp: int, bits: int, narrow: bool, rounding: str) -> str:
        g = self.g
        return g.node(self.quant_op, [x, g.pow2(exp), g.f32("zero", 0.0), g.f32(f"bits_{bits}", bits)],
                      base, shape, domain=QONNX_DOMAIN, signed=1, narrow=int(narrow),
                      rounding_mode=rounding)

    def quantize_input(self, x: str, n: int, bits: int, exp: int) -> str:
        """``sat_bits(floor(x / 2^exp + 1/2))`` exactly for every float32 ``x``."""
        g = self.g
        shape = [g.batch, n]
        y = self.quant(x, "input_floor2", shape, exp - 1, bits + 1, False, "FLOOR")  # floor(2v) / 2
        y = g.node("Add", [y, g.pow2(exp - 1)], "input_plus_half", shape)
        return self.quant(y, "input_quant", shape, exp, bits, False, "FLOOR")

    def requantize(self, acc: str, base: str, shape, layer: IntLayer, t: int) -> str:
        g = self.g
        shift = layer.shifts()[t]
        out_exp, bits = layer.step_exps[t], layer.step_out_bits(t)
        if shift >= 1:
            acc = g.node("Add", [acc, g.pow2(out_exp - 1)], f"{base}_plus_half", shape)
        if self.requant == "trunc":
            # in_bitwidth is what reaches Trunc, the half LSB included: declaring acc_bits
            # would let a tool that sizes its register from it wrap acc + 2^(shift-1)
            in_bits = trunc_in_bits(layer.acc_bits, shift)
            return g.node("Trunc", [acc, g.pow2(layer.acc_exp(t)), g.f32("zero", 0.0),
                                    g.f32(f"bits_{in_bits}", in_bits), g.pow2(out_exp),
                                    g.f32(f"bits_{bits}", bits)],
                          f"{base}_trunc", shape, domain=QONNX_DOMAIN, signed=1, narrow=0,
                          rounding_mode="FLOOR")
        return self.quant(acc, f"{base}_quant", shape, out_exp, bits, False, "FLOOR")

    def layer(self, x: str, li: int, layer: IntLayer) -> str:
        g, B = self.g, self.g.batch
        shape = layer.schedule.shape
        p = f"l{li}"
        if shape.in_size > layer.in_features:
            x = g.node("Pad", [x, g.ints(f"{p}_pads", [0, 0, 0, shape.in_size - layer.in_features])],
                       f"{p}_pad", [B, shape.in_size], mode="constant")
        last = len(layer.schedule.steps) - 1
        for t, step in enumerate(layer.schedule.steps):
            s = f"{p}_step{t}_core{step.core}"
            C = layer.core_matrix(t).astype(np.float64)
            w = np.ldexp(C if step.Q > 1 else C.T, layer.core_exps[step.core]).astype(np.float32)
            W = self.quant(g.const(f"{s}_weight", w), f"{s}_weight_quant", list(w.shape),
                           layer.core_exps[step.core], layer.w_bits, True, "ROUND")
            if step.Q == 1:
                x = g.node("Reshape", [x, g.ints(f"{s}_shape", [-1, step.K])], f"{s}_reshape",
                           [B * step.A, step.K])
                out_shape = [B * step.A, step.P]
                x = g.node("MatMul", [x, W], f"{s}_matmul", out_shape)
            else:
                x = g.node("Reshape", [x, g.ints(f"{s}_shape", [-1, step.K, step.Q])], f"{s}_reshape",
                           [B * step.A, step.K, step.Q])
                out_shape = [B * step.A, step.P, step.Q]
                x = g.node("MatMul", [W, x], f"{s}_matmul", out_shape)
            if t == last:
                out_shape = [B, shape.out_size]
                x = g.node("Reshape", [x, g.ints(f"{p}_out_shape", [-1, shape.out_size])],
                           f"{p}_out", out_shape)
                if layer.bias is not None:
                    b = np.zeros(shape.out_size, dtype=np.float64)
                    b[: layer.out_features] = layer.bias
                    acc_exp = layer.acc_exp(t)
                    bq = self.quant(g.const(f"{p}_bias", np.ldexp(b, acc_exp).astype(np.float32)),
                                    f"{p}_bias_quant", [shape.out_size], acc_exp, layer.acc_bits, False,
                                    "ROUND")
                    x = g.node("Add", [x, bq], f"{p}_bias_add", out_shape)
            x = self.requantize(x, s, out_shape, layer, t)
        if shape.out_size > layer.out_features:
            x = g.node("Slice", [x, g.ints(f"{p}_starts", [0]), g.ints(f"{p}_ends", [layer.out_features]),
                                 g.ints(f"{p}_axes", [1])], f"{p}_slice", [B, layer.out_features])
        if layer.relu:
            x = g.node("Relu", [x], f"{p}_relu", [B, layer.out_features])
        return x


def _describe(net: IntNetwork) -> list[dict[str, Any]]:
    rows = []
    for layer in net.layers:
        s = layer.schedule
        rows.append({"kind": "tt" if s.shape.d > 1 else "dense", "in_features": layer.in_features,
                     "out_features": layer.out_features, "in_modes": list(s.shape.in_modes),
                     "out_modes": list(s.shape.out_modes), "ranks": list(s.shape.ranks),
                     "order": list(s.order), "w_bits": layer.w_bits, "in_bits": layer.in_bits,
                     "inter_bits": layer.inter_bits, "out_bits": layer.out_bits,
                     "acc_bits": layer.acc_bits, "in_exp": layer.in_exp,
                     "core_exps": list(layer.core_exps), "step_exps": list(layer.step_exps),
                     "shifts": list(layer.shifts()), "relu": layer.relu,
                     "bias": layer.bias is not None})
    return rows


def _as_network(net: IntNetwork | str | os.PathLike) -> IntNetwork:
    if isinstance(net, IntNetwork):
        return net
    if isinstance(net, (str, os.PathLike)):
        from ttforge.ir.artifact import load_artifact

        return load_artifact(net)
    raise ConfigError(f"export_qonnx takes an IntNetwork or the path of a .ttfa artifact, "
                      f"not {type(net).__name__}")


#: Largest fixed batch of a QONNX graph (its check runs whole batches: 20,000,000 took all
#: 24 GB of the machine); the tools that read QONNX graphs take batch 1.
MAX_QONNX_BATCH = 4096
#: Most inputs the qonnx executor checks (about a second per thousand; 100,000 ran minutes).
MAX_QONNX_CHECK = 10_000


def _check_options(batch: Any, requant: Any, quant_op: Any, opset: Any) -> None:
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= MAX_QONNX_BATCH:
        raise ConfigError(f"batch={show(batch)} must be an integer in 1..{MAX_QONNX_BATCH:,} (the graph's "
                          f"fixed batch size)")
    if requant not in REQUANT_MODES:
        raise ConfigError(f"requant={requant!r} is not one of {', '.join(REQUANT_MODES)}")
    if quant_op not in QUANT_OPS:
        raise ConfigError(f"quant_op={quant_op!r} is not one of {', '.join(QUANT_OPS)}")
    check_opset(opset)


def build_qonnx(
    net: IntNetwork | str | os.PathLike,
    *,
    batch: int = 1,
    requant: str = "intquant",
    quant_op: str = "IntQuant",
    opset: int = DEFAULT_OPSET,
):
    """The QONNX :class:`onnx.ModelProto` of an :class:`IntNetwork` (or an artifact path).

    Parameters
    ----------
    batch : int
        Fixed batch size of the graph (QONNX tools want concrete shapes).
    requant : {"intquant", "trunc"}
        Requantize each step's accumulator with ``IntQuant`` or with ``Trunc`` (v2).
    quant_op : {"IntQuant", "Quant"}
        Name of the quantization op (``Quant`` is its older name, for older tools).
    opset : int
        Opset of the standard ONNX domain.

    Raises :class:`~ttforge.errors.ConfigError` (one line) when the network cannot be
    expressed exactly in float32 QONNX arithmetic; see :func:`float32_bounds`.
    """
    import onnx
    from onnx import TensorProto, helper

    _check_options(batch, requant, quant_op, opset)
    net = _as_network(net)
    _check_exportable(net)
    g = _Graph(batch)
    b = _Builder(g, quant_op, requant)
    first, last = net.layers[0], net.layers[-1]
    x = b.quantize_input("input", first.in_features, first.in_bits, first.in_exp)
    for li, layer in enumerate(net.layers):
        x = b.layer(x, li, layer)
    # the graph output gets a fixed name
    g.nodes[-1].output[0] = "output"
    infos = [vi for vi in g.infos if vi.name != x]
    g.nodes[-1].name = "output"
    graph = helper.make_graph(
        g.nodes, "ttforge_qonnx",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, first.in_features])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, last.out_features])],
        initializer=g.inits, value_info=infos,
    )
    qonnx_version = 2 if requant == "trunc" else 1
    opsets = [helper.make_opsetid("", opset), helper.make_opsetid(QONNX_DOMAIN, qonnx_version)]
    io_fmt = {"input": {"features": first.in_features, "bits": first.in_bits, "exp": first.in_exp},
              "output": {"features": last.out_features, "bits": last.out_bits, "exp": last.out_exp}}
    proto = model_proto(graph, opsets, ir_opsets=[helper.make_opsetid("", opset)],
                        doc="ttforge integer TT network in QONNX (bit-exact; docs/export.md)", props={
        "ttforge.arithmetic": json.dumps({"spec": "docs/arithmetic.md", "version": ARITHMETIC_SPEC_VERSION,
                                          "rounding": "floor(v + 1/2) as Add(half LSB) + FLOOR",
                                          "requant": requant}),
        "ttforge.input": json.dumps(io_fmt["input"]),
        "ttforge.output": json.dumps(io_fmt["output"]),
        "ttforge.layers": json.dumps(_describe(net)),
        "ttforge.meta": json.dumps(net.meta, sort_keys=True, default=str),
    })
    onnx.checker.check_model(proto)
    return proto


def export_qonnx(
    net: IntNetwork | str | os.PathLike,
    path: str | os.PathLike,
    **options: Any,
) -> Path:
    """Write the QONNX model of ``net`` (an :class:`IntNetwork` or an artifact path) to
    ``path`` atomically (temporary file + rename); options as :func:`build_qonnx`."""
    from ttforge.atomic import atomic_write_bytes, check_output_file

    path = check_output_file(path, "output", example="model.onnx")
    proto = build_qonnx(net, **options)
    return atomic_write_bytes(path, proto.SerializeToString())


# ---------------------------------------------------------------------------------------
# running with qonnx
# ---------------------------------------------------------------------------------------
def _qonnx():
    try:
        from qonnx.core.modelwrapper import ModelWrapper
        from qonnx.core.onnx_exec import execute_onnx
    except ImportError:
        raise ConfigError("the qonnx package is not installed; pip install qonnx to run QONNX models") from None
    return ModelWrapper, execute_onnx


def _wrapper(model):
    """A qonnx ``ModelWrapper`` of a copy of ``model`` (a ``ModelProto`` or a path)."""
    import onnx

    ModelWrapper, _ = _qonnx()
    proto = onnx.ModelProto()
    if isinstance(model, onnx.ModelProto):
        proto.CopyFrom(model)  # the caller's model is never touched
    else:
        proto = onnx.load(str(model))
    return ModelWrapper(proto)


def _plan(mw) -> tuple[list, dict[str, tuple[int, ...]], set[str]]:
    """Per node of the wrapped graph, the tensors it is the last to read (dropped after
    it); every tensor's shape; the initializers' names."""
    graph = mw.model.graph
    keep = {o.name for o in graph.output}
    inits = {t.name for t in graph.initializer}
    last: dict[str, int] = {}
    for i, node in enumerate(graph.node):
        for name in node.input:
            last[name] = i
    drops: list[list[str]] = [[] for _ in graph.node]
    for name, i in last.items():
        if name and name not in keep and name not in inits:
            drops[i].append(name)
    shapes = {vi.name: tuple(int(d.dim_value) for d in vi.type.tensor_type.shape.dim)
              for vi in (*graph.input, *graph.value_info, *graph.output)}
    return drops, shapes, inits


def _execute(mw, x: np.ndarray) -> np.ndarray:
    """One graph batch through the qonnx executor: what ``execute_onnx`` does (its
    ``execute_node`` on each node in order, quantized tensors sanitized alike), but each
    tensor is dropped after the last node that reads it, where ``execute_onnx`` keeps
    every tensor of the graph to the end (a 12-step layer of 2^24 features held 4.5 GB
    for one input)."""
    from onnx import numpy_helper
    from qonnx.core.onnx_exec import execute_node, get_preferred_qonnx_opset, sanitize_quant_values
    from qonnx.util.basic import get_sanitize_quant_tensors

    graph = mw.model.graph
    drops, shapes, _ = _plan(mw)
    ctx: dict[str, Any] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    ctx["input"], ctx[""] = x, None
    opsets = mw.get_opset_imports()
    sanitize = get_sanitize_quant_tensors() != 0
    for node, dead in zip(graph.node, drops):
        for name in node.output:
            # execute_node compares an ONNX op's result with the context's shape: a
            # broadcast zero of that shape takes no memory
            ctx[name] = np.broadcast_to(np.float32(0), shapes.get(name, ()))
        if sanitize:
            ctx = sanitize_quant_values(mw, node.input, ctx)
        execute_node(node, ctx, graph, opsets.get(node.domain, get_preferred_qonnx_opset()))
        if sanitize:
            ctx = sanitize_quant_values(mw, node.output, ctx)
        for name in dead:
            del ctx[name]
    return ctx["output"]


def _run(mw, x: np.ndarray) -> np.ndarray:
    """``x`` through the wrapped graph in batches of its fixed batch size (the last one
    padded with zeros): float32 outputs."""
    batch = mw.get_tensor_shape("input")[0]
    x = np.asarray(x, dtype=np.float32)
    outs = []
    for i in range(0, len(x), batch):
        chunk = x[i:i + batch]
        n = len(chunk)
        if n < batch:
            chunk = np.concatenate([chunk, np.zeros((batch - n, x.shape[1]), np.float32)])
        outs.append(_execute(mw, chunk)[:n])
    return np.concatenate(outs) if outs else np.zeros((0, mw.get_tensor_shape("output")[1]), np.float32)


def run_qonnx(model, x: np.ndarray) -> np.ndarray:
    """Run a QONNX model (``ModelProto`` or path) with the ``qonnx`` executor on real
    float32 inputs ``(n, features)``, in batches of the graph's batch size; float32 out."""
    return _run(_wrapper(model), x)


def _check_inputs(net: IntNetwork, seed: int):
    """Integer inputs, a row at a time: both range ends and zero, then random values of
    the input range. Each row is drawn alone, so the rows are the same however many
    are taken at once (a chunk of the check)."""
    first = net.layers[0]
    lo, hi = int_range(first.in_bits)
    rng = np.random.default_rng(seed)
    ends = (lo, hi, 0)
    i = 0
    while True:
        row = rng.integers(lo, hi + 1, size=first.in_features, dtype=np.int64)
        if i < len(ends):
            row[:] = ends[i]
        yield row
        i += 1


#: Values the qonnx executor holds per element of the tensors alive at a node, besides
#: them: an ONNX op's result comes out of onnxruntime, ``IntQuant`` computes through
#: temporaries (measured: about 2 at a 10-step layer of 2^20 elements, in all 3.8 of its
#: widest intermediate for one input, where ``execute_onnx`` held 60).
QONNX_WORKING_COPIES = 4
#: Values the integer executor holds per element of a layer's widest intermediate (its
#: input, accumulator, shifted and saturated values, a bias copy).
INT_WORKING_COPIES = 6


def _values_per_sample(mw, net: IntNetwork | None = None) -> int:
    """Values one sample holds at once in the check: the most the graph's tensors alive
    at one node take (each dropped after its last reader, :func:`_execute`) times
    :data:`QONNX_WORKING_COPIES`, plus the integer executor's working values on ``net``
    (counted as if both were held together: an upper bound)."""
    batch = mw.get_tensor_shape("input")[0]
    drops, shapes, _ = _plan(mw)
    size = {name: int(np.prod(shape, dtype=object)) for name, shape in shapes.items()}
    alive = size.get("input", 0)
    peak = alive
    for node, dead in zip(mw.model.graph.node, drops):
        alive += sum(size.get(o, 0) for o in node.output)
        peak = max(peak, alive)
        alive -= sum(size.get(d, 0) for d in dead)
    graph_values = -(-QONNX_WORKING_COPIES * peak // batch)
    return graph_values + (0 if net is None else INT_WORKING_COPIES * _widest(net))


def _widest(net: IntNetwork) -> int:
    """Elements of the widest intermediate of any layer (its padded input included)."""
    return max(max(layer.schedule.shape.in_size, *(s.out_elements for s in layer.schedule.steps))
               for layer in net.layers)


def check_qonnx(net: IntNetwork, model, n: int = 16, seed: int = 0) -> int:
    """Run ``model`` with the ``qonnx`` executor on ``n`` integer inputs (range ends and
    random values) and require its output, divided by ``2^out_exp``, to equal
    :func:`execute` exactly. Returns ``n``; raises ``AssertionError`` naming the first
    differing sample and element otherwise.

    The inputs run in chunks of at most :data:`~ttforge.limits.MAX_CHUNK_VALUES` values
    (:func:`_values_per_sample`; whole graph batches), so memory is bounded whatever ``n``
    and the network; the first difference is the whole run's. A graph whose one batch is
    above the bound is refused before any input runs
    (:class:`~ttforge.errors.LimitError`)."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_QONNX_CHECK:
        raise ConfigError(f"n={show(n)} inputs to check must be in 1..{MAX_QONNX_CHECK:,}")
    from ttforge.limits import check_chunk_values, chunk_rows

    mw = _wrapper(model)
    batch = mw.get_tensor_shape("input")[0]
    per_sample = _values_per_sample(mw, net)
    check_chunk_values(per_sample, f"the qonnx check of {'one input' if batch == 1 else f'a batch of {batch}'} "
                       f"(intermediates of up to {_widest(net):,} elements)",
                       "export without it (--check 0)" + ("" if batch == 1 else " or with a smaller --batch"),
                       multiple=batch)
    rows = chunk_rows(per_sample, multiple=batch)
    inputs = _check_inputs(net, seed)
    for start in range(0, n, rows):
        xi = np.stack([next(inputs) for _ in range(min(rows, n - start))])
        want = execute(net, xi)
        got = _run(mw, np.ldexp(xi.astype(np.float64), net.layers[0].in_exp))
        got_int = np.ldexp(got.astype(np.float64), -net.layers[-1].out_exp)
        if not np.array_equal(got_int, want):
            bad = np.argwhere(got_int != want)[0]
            raise AssertionError(f"QONNX output differs from the integer executor at sample "
                                 f"{start + bad[0]}, element {bad[1]}: expected {want[tuple(bad)]}, "
                                 f"got {got_int[tuple(bad)]}")
    return n
