"""ONNX export of float TT networks, with the TT structure kept.

The graph is written directly with :mod:`onnx.helper` from each ``TTLinear``'s
:class:`~ttforge.ir.schedule.ContractionSchedule` (no ``torch.onnx`` tracing), so
the exported model performs exactly the steps the PyTorch layer performs:

* input ``input``: ``float32 (batch, in_features)`` with a symbolic ``batch``
  dimension (or ``(batch, *input_shape)`` when the network starts with ``Flatten``);
* per ``TTLinear``: ``Pad`` with zeros when the TT input size exceeds
  ``in_features``; per contraction step one ``Reshape`` of the intermediate to
  ``(-1, K)`` (when ``Q == 1``) or ``(-1, K, Q)`` and one ``MatMul`` with the step's
  constant core matrix (``X @ C^T`` with ``C^T`` stored as ``(K, P)``, or the
  broadcast ``C @ X`` with ``C`` stored as ``(P, K)``); a final ``Reshape`` to
  ``(-1, M)``, a ``Slice`` when the TT output size exceeds ``out_features``, and an
  ``Add`` of the bias. One ``MatMul`` per core, never a reconstructed dense matrix;
* ``nn.Linear`` -> ``Gemm`` (``transB=1``); ``nn.ReLU`` -> ``Relu``;
  ``nn.Flatten`` -> ``Flatten(axis=1)``.

Weights are exported as float32 (the network is evaluated in float32 by ONNX
runtimes; a float64 model is cast). The default opset is :data:`DEFAULT_OPSET` (17);
any opset from :data:`MIN_OPSET` (13) to the newest the installed ``onnx`` knows can
be asked for. The opset, the ttforge version and a JSON description of the layers
(modes, ranks, contraction order) are stored in the model's metadata.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ttforge.errors import ConfigError, DataError, ShapeError, show
from ttforge.model.layers import TTLinear
from ttforge.model.tt import check_finite_layers
from ttforge.onnx_graph import DEFAULT_OPSET, MIN_OPSET, OnnxGraph, check_opset, model_proto

__all__ = [
    "DEFAULT_OPSET",
    "MAX_INPUT_AXES",
    "MIN_OPSET",
    "build_onnx",
    "export_onnx",
    "check_onnx", "check_onnx_agrees", "ONNX_RTOL",
]

SUPPORTED = "nn.Flatten, TTLinear, nn.Linear and nn.ReLU"

#: Most axes of one input sample (``input_shape``): onnxruntime and numpy take at most
#: 64 with the batch axis, and no image or sequence needs more than a few.
MAX_INPUT_AXES = 16


def _check_input_shape(shape: Sequence[int], n_in: int, flatten: bool, flag: str | None) -> tuple[int, ...]:
    """``shape`` as a tuple, or a one-line ShapeError naming it as ``flag`` gave it (the
    command line's ``--input-shape 0,64``) or as the argument ``input_shape=[0, 64]``."""
    shape = tuple(shape)
    name = flag or "input_shape"

    def given() -> str:
        if flag is None:
            return f"input_shape={show(list(shape))}"
        return f"{flag} {','.join(str(s) for s in shape)}" if shape else f"{flag} (empty)"

    def flat(n: int) -> str:
        return f"{flag} {n}" if flag else f"input_shape ({n},)"

    if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise ShapeError(f"{given()} must be a non-empty list of positive sizes, e.g. {flat(n_in)}")
    if len(shape) > MAX_INPUT_AXES:
        raise ShapeError(f"{name} has {len(shape)} axes; give at most {MAX_INPUT_AXES} "
                         f"(the batch axis comes on top)")
    if len(shape) > 1 and not flatten:
        raise ShapeError(f"{given()} has {len(shape)} axes but the model does not start with "
                         f"nn.Flatten; give a flat {flat(n_in)}")
    if math.prod(shape) != n_in:
        raise ShapeError(f"{given()} has {math.prod(shape)} values per sample but the first layer "
                         f"takes {n_in} features; give an {name} whose product is {n_in}")
    return shape


def _layers(model: nn.Module) -> list[nn.Module]:
    if not isinstance(model, nn.Sequential):
        raise ConfigError(
            f"export_onnx takes an nn.Sequential of {SUPPORTED}, not {type(model).__name__}; "
            f"wrap the layers in nn.Sequential"
        )
    layers: list[nn.Module] = []
    for m in model:
        layers.extend(_layers(m) if isinstance(m, nn.Sequential) else [m])
    if not layers:
        raise ConfigError("the model is an empty nn.Sequential; there is nothing to export")
    for i, m in enumerate(layers):
        if isinstance(m, nn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                raise ConfigError(
                    f"layer {i} nn.Flatten(start_dim={m.start_dim}, end_dim={m.end_dim}) is not "
                    f"supported; only nn.Flatten() (start_dim=1, end_dim=-1) exports to ONNX"
                )
        elif not isinstance(m, (TTLinear, nn.Linear, nn.ReLU)):
            raise ConfigError(
                f"layer {i} ({type(m).__name__}) cannot be exported to ONNX: supported modules "
                f"are {SUPPORTED}; remove or replace it"
            )
    return layers


def _f32(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(device="cpu", dtype=torch.float32).numpy()


def _tt_layer(g: OnnxGraph, x: str, layer: TTLinear, prefix: str) -> str:
    shape = layer.tt_shape
    pad = shape.in_size - layer.in_features
    if pad:
        x = g.node("Pad", [x, g.ints(f"{prefix}_pads", [0, 0, 0, pad])], f"{prefix}_pad",
                   mode="constant")
    for i, step in enumerate(layer.schedule.steps):
        core = layer.cores[step.core].detach()
        C = core.permute(*step.core_axes).reshape(step.P, step.K)
        s = f"{prefix}_step{i}_core{step.core}"
        if step.Q == 1:
            x = g.node("Reshape", [x, g.ints(f"{s}_shape", [-1, step.K])], f"{s}_reshape")
            x = g.node("MatMul", [x, g.const(f"{s}_CT", _f32(C.T))], f"{s}_matmul")
        else:
            x = g.node("Reshape", [x, g.ints(f"{s}_shape", [-1, step.K, step.Q])], f"{s}_reshape")
            x = g.node("MatMul", [g.const(f"{s}_C", _f32(C)), x], f"{s}_matmul")
    x = g.node("Reshape", [x, g.ints(f"{prefix}_out_shape", [-1, shape.out_size])],
               f"{prefix}_out")
    if shape.out_size != layer.out_features:
        x = g.node("Slice", [x, g.ints(f"{prefix}_starts", [0]),
                             g.ints(f"{prefix}_ends", [layer.out_features]),
                             g.ints(f"{prefix}_axes", [1])], f"{prefix}_slice")
    if layer.bias is not None:
        x = g.node("Add", [x, g.const(f"{prefix}_bias", _f32(layer.bias))], f"{prefix}_bias_add")
    return x


def _describe(layers: list[nn.Module]) -> list[dict[str, Any]]:
    rows = []
    for m in layers:
        if isinstance(m, TTLinear):
            rows.append({"type": "TTLinear", "in_features": m.in_features,
                         "out_features": m.out_features, "in_modes": list(m.in_modes),
                         "out_modes": list(m.out_modes), "ranks": list(m.ranks),
                         "order": list(m.schedule.order), "bias": m.bias is not None})
        elif isinstance(m, nn.Linear):
            rows.append({"type": "Linear", "in_features": m.in_features,
                         "out_features": m.out_features, "bias": m.bias is not None})
        else:
            rows.append({"type": type(m).__name__})
    return rows


def build_onnx(
    model: nn.Sequential,
    opset: int = DEFAULT_OPSET,
    input_shape: Sequence[int] | None = None,
    input_shape_flag: str | None = None,
):
    """The :class:`onnx.ModelProto` of ``model`` (checked with ``onnx.checker``).

    ``input_shape`` is the shape of one sample (without the batch dimension); by default
    ``(in_features,)`` of the first linear layer. ``input_shape_flag`` (``"--input-shape"``)
    is the command-line flag that gave it, named in its errors instead of ``input_shape``.
    """
    import onnx
    from onnx import TensorProto, helper

    opset = check_opset(opset)
    layers = _layers(model)
    linears = [m for m in layers if isinstance(m, (TTLinear, nn.Linear))]
    if not linears:
        raise ConfigError("the model has no TTLinear or nn.Linear layer; export needs at least one")
    # the export would be faithful, and its check against PyTorch meaningless (nan)
    check_finite_layers(enumerate(layers), "export a model whose training did not diverge")
    n_in = linears[0].in_features
    if input_shape is None:
        input_shape = (n_in,)
    input_shape = _check_input_shape(input_shape, n_in, isinstance(layers[0], nn.Flatten), input_shape_flag)

    g = OnnxGraph()
    x = g.name("input")
    features = n_in
    for i, m in enumerate(layers):
        if isinstance(m, (TTLinear, nn.Linear)) and m.in_features != features:
            raise ShapeError(
                f"layer {i} ({type(m).__name__}) takes {m.in_features} features but receives "
                f"{features}; fix the layer sizes of the network"
            )
        prefix = f"l{i}"
        if isinstance(m, nn.Flatten):
            x = g.node("Flatten", [x], f"{prefix}_flatten", axis=1)
        elif isinstance(m, nn.ReLU):
            x = g.node("Relu", [x], f"{prefix}_relu")
        elif isinstance(m, TTLinear):
            x = _tt_layer(g, x, m, f"{prefix}_tt")
            features = m.out_features
        else:  # nn.Linear
            inputs = [x, g.const(f"{prefix}_weight", _f32(m.weight))]
            if m.bias is not None:
                inputs.append(g.const(f"{prefix}_bias", _f32(m.bias)))
            x = g.node("Gemm", inputs, f"{prefix}_gemm", transB=1)
            features = m.out_features
    # the graph output gets a fixed name: rename the last node's output
    last = g.nodes[-1]
    last.output[0] = "output"

    graph = helper.make_graph(
        g.nodes,
        "ttforge",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", *input_shape])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", features])],
        initializer=g.inits,
    )
    proto = model_proto(graph, [helper.make_opsetid("", opset)],
                        doc="ttforge TT network; TT layers as one Reshape + MatMul per core",
                        props={"ttforge.opset": str(opset), "ttforge.layers": json.dumps(_describe(layers))})
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export_onnx(
    model: nn.Sequential,
    path: str | os.PathLike,
    opset: int = DEFAULT_OPSET,
    input_shape: Sequence[int] | None = None,
) -> Path:
    """Write ``model`` (an ``nn.Sequential`` of Flatten / TTLinear / Linear / ReLU) to
    ``path`` as ONNX, atomically (temporary file + rename). Returns the path.

    See the module documentation for the graph; the model itself is not modified.
    """
    from ttforge.atomic import atomic_write_bytes, check_output_file

    path = check_output_file(path, "output", example="model.onnx")
    proto = build_onnx(model, opset=opset, input_shape=input_shape)
    return atomic_write_bytes(path, proto.SerializeToString())


def check_onnx(
    model: nn.Module,
    path: str | os.PathLike | bytes,
    batch: int = 37,
    seed: int = 0,
    input_shape: Sequence[int] | None = None,
) -> float:
    """Run ``path`` (or a serialized model, ``bytes``) with onnxruntime on random inputs;
    the max absolute difference from ``model`` in float32 eval mode, relative to the
    largest output magnitude when that is above 1 (``inf`` when either overflows). Needs
    the ``onnxruntime`` package."""
    import onnxruntime as ort

    sess = ort.InferenceSession(path if isinstance(path, bytes) else str(path),
                                providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = tuple(input_shape) if input_shape is not None else tuple(inp.shape[1:])
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *shape, generator=gen)
    ref_model = model
    if any(p.dtype != torch.float32 for p in model.parameters()):
        import copy

        ref_model = copy.deepcopy(model).float()  # never change the caller's model
    was_training = ref_model.training
    ref_model.eval()
    try:
        with torch.no_grad():
            ref = ref_model(x)
    finally:
        ref_model.train(was_training)
    got = sess.run(None, {inp.name: x.numpy()})[0]
    want = ref.detach().numpy()
    if not got.size:
        return 0.0
    if not (np.isfinite(got).all() and np.isfinite(want).all()):
        return math.inf   # an overflow in one of them (weights near float32's limit)
    return float(np.max(np.abs(got - want)) / max(1.0, float(np.max(np.abs(want)))))


#: How far the exported graph may be from PyTorch, relative to the largest output
#: magnitude (at least 1): float32 sums in another order differ by a few ulps; a wrong
#: graph by far more.
ONNX_RTOL = 1e-4


def check_onnx_agrees(err: float, what: str = "the exported graph") -> None:
    """A one-line :class:`DataError` unless ``err`` (:func:`check_onnx`) is at most
    :data:`ONNX_RTOL`."""
    if not err <= ONNX_RTOL:
        raise DataError(f"{what} differs from PyTorch by {err:.3g} of its output scale (allowed "
                        f"{ONNX_RTOL:g}) on random inputs; the weights overflow float32 or the export is "
                        f"wrong: nothing written")
