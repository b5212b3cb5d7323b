"""Building ONNX graphs, shared by the float export (:mod:`ttforge.model.onnx_export`) and
the QONNX export (:mod:`ttforge.quant.qonnx_export`): the opset range, a graph under
construction with unique names (:class:`OnnxGraph`) and the finished model with ttforge's
producer and metadata (:func:`model_proto`). Needs the ``onnx`` package, imported only
when a graph is built."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ttforge import __version__
from ttforge.errors import ConfigError

__all__ = ["DEFAULT_OPSET", "MIN_OPSET", "check_opset", "OnnxGraph", "model_proto"]

#: The opset of the standard ONNX domain written by default, and the oldest accepted
#: (from 13 on, Pad/Slice/Reshape take their parameters as inputs and Gemm's C is optional).
DEFAULT_OPSET = 17
MIN_OPSET = 13


def check_opset(opset: Any) -> int:
    """``opset`` if it is an integer from :data:`MIN_OPSET` to the newest the installed
    ``onnx`` knows; otherwise a :class:`ConfigError` naming the range."""
    import onnx

    top = int(onnx.defs.onnx_opset_version())
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= top:
        raise ConfigError(f"opset={opset!r} is not supported; use an opset from {MIN_OPSET} to {top} "
                          f"(default {DEFAULT_OPSET})")
    return opset


class OnnxGraph:
    """Collects nodes, initializers and (optionally) value infos with unique names."""

    def __init__(self) -> None:
        self.nodes: list = []
        self.inits: list = []
        self.infos: list = []
        self._names: set[str] = set()

    def name(self, base: str) -> str:
        name, k = base, 1
        while name in self._names:
            name, k = f"{base}_{k}", k + 1
        self._names.add(name)
        return name

    def const(self, base: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self.name(base)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def ints(self, base: str, values: Sequence[int]) -> str:
        return self.const(base, np.asarray(list(values), dtype=np.int64))

    def node(self, op: str, inputs: Sequence[str], base: str, *, domain: str | None = None,
             shape: Sequence[int] | None = None, **attrs: Any) -> str:
        """Add ``op`` with one output named after ``base``; with ``shape``, also a float
        value info of that shape for the output."""
        from onnx import TensorProto, helper

        out = self.name(base)
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=out, domain=domain, **attrs))
        if shape is not None:
            self.infos.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, list(shape)))
        return out


def model_proto(graph, opsets: Sequence, *, doc: str, props: Mapping[str, str],
                ir_opsets: Sequence | None = None):
    """The :class:`onnx.ModelProto` of ``graph``: producer ``ttforge`` and its version, the
    lowest IR version for ``ir_opsets`` (default ``opsets``), and the metadata ``props``
    after ``ttforge.version``."""
    from onnx import helper

    proto = helper.make_model(graph, opset_imports=list(opsets), producer_name="ttforge",
                              producer_version=__version__, doc_string=doc)
    proto.ir_version = helper.find_min_ir_version_for(list(ir_opsets if ir_opsets is not None else opsets))
    helper.set_model_props(proto, {"ttforge.version": __version__, **props})
    return proto
