"""On-chip memory of an integer network: bit-packed cores, biases, the peak intermediate.

:func:`on_chip_bytes` counts, per sample, what a layer needs on chip against the dense
INT8 weight it replaces; ``ttforge inspect`` prints it and the flow report quotes it.
"""

from __future__ import annotations

from typing import Any

from ttforge.ir.executor import IntLayer, IntNetwork

__all__ = ["on_chip_bytes"]


# ---------------------------------------------------------------------------------------
def _bytes(elements: int, bits: int) -> int:
    return -(-elements * bits // 8)


def _layer_bytes(layer: IntLayer) -> dict[str, Any]:
    core_bytes = [_bytes(g.size, layer.w_bits) for g in layer.cores]
    bias_bytes = _bytes(layer.out_features, layer.acc_bits) if layer.bias is not None else 0
    inter = [_bytes(layer.schedule.shape.in_size, layer.in_bits)]
    inter += [_bytes(s.out_elements, layer.step_out_bits(t)) for t, s in enumerate(layer.schedule.steps)]
    peak = max(inter)
    dense = layer.in_features * layer.out_features
    total = sum(core_bytes) + bias_bytes + peak
    return {
        "params": int(sum(g.size for g in layer.cores) + (layer.out_features if layer.bias is not None else 0)),
        "core_bytes": sum(core_bytes),
        "core_bytes_each": core_bytes,
        "bias_bytes": bias_bytes,
        "intermediate_bytes": inter,
        "peak_intermediate_bytes": peak,
        "on_chip_bytes": total,
        "dense_int8_bytes": dense,
        "ratio": total / dense,
    }


def on_chip_bytes(net: IntNetwork) -> dict[str, Any]:
    """On-chip memory of every layer and of the network, per sample, in bytes.

    Per layer: ``core_bytes`` (each core bit-packed, ``ceil(entries * w_bits / 8)``,
    summed), ``bias_bytes`` (``ceil(out_features * acc_bits / 8)``),
    ``intermediate_bytes`` (the padded input at ``in_bits``, then each step's output at
    its width), ``peak_intermediate_bytes`` (their maximum), ``on_chip_bytes`` (cores +
    bias + peak), ``dense_int8_bytes`` (``in_features * out_features``, the dense INT8
    weight) and ``ratio`` (on-chip / dense). ``total`` sums cores, biases and dense
    weights over the layers and takes the largest peak (one intermediate buffer is
    reused by every layer).
    """
    layers = [_layer_bytes(layer) for layer in net.layers]
    cores = sum(d["core_bytes"] for d in layers)
    bias = sum(d["bias_bytes"] for d in layers)
    peak = max(d["peak_intermediate_bytes"] for d in layers)
    dense = sum(d["dense_int8_bytes"] for d in layers)
    total = {
        "params": sum(d["params"] for d in layers),
        "core_bytes": cores,
        "bias_bytes": bias,
        "peak_intermediate_bytes": peak,
        "on_chip_bytes": cores + bias + peak,
        "dense_int8_bytes": dense,
        "ratio": (cores + bias + peak) / dense,
    }
    return {"layers": layers, "total": total}
