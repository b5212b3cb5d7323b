"""Helpers of the fast path's tests: every plan of a shape, a small float64 layer, and
the autograd nodes a result was made by."""

import torch

import ttforge.model.fast as fast
from ttforge.ir.schedule import ContractionSchedule, schedule_orders
from ttforge.ir.tt import TTShape
from ttforge.model.layers import TTLinear


def every_plan(shape: TTShape, chunks=(0, 1, 3)):
    """Every merge, order and chunk of ``shape``'s plans."""
    for groups in fast._partitions(shape.d):
        merged = fast._merged_shape(shape, groups)
        for order in schedule_orders(merged.d):
            for chunk in chunks:
                yield fast.FastPlan(groups, ContractionSchedule.from_order(merged, order), chunk, 0.0)


def small_layer(seed=0, **kw):
    """A 30 -> 20 float64 TTLinear of three cores."""
    torch.manual_seed(seed)
    kw = {"ranks": [3, 4], "in_modes": [2, 3, 5], "out_modes": [2, 2, 5], **kw}
    return TTLinear(30, 20, **kw).double()


def node_names(fn, seen=None) -> set[str]:
    """Names of the autograd nodes reachable from ``fn``."""
    seen = set() if seen is None else seen
    if fn is not None and type(fn).__name__ not in seen:
        seen.add(type(fn).__name__)
        for nxt, _ in fn.next_functions:
            node_names(nxt, seen)
    return seen
