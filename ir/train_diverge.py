"""Where two training runs (or two implementations of the step) first differ.

:func:`compare_train_traces` walks two :class:`~ttforge.ir.train.TrainTrace` s of one
step in the order the step computes them and names the first phase (forward / loss /
backward / gradient / update), layer, schedule step, core, quantity and element that
differ; :func:`compare_states` names the first field or stored element that differs
between two states; :func:`replay` runs two implementations step by step over the same
batches and stops at the first divergence, naming the training step too. Exact integer
equality, never a tolerance (:func:`~ttforge.ir.diverge.first_diff` does the search).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np

from ttforge.ir.diverge import first_diff
from ttforge.ir.train import TrainState, TrainTrace, train_step_traced

__all__ = ["TrainMismatch", "compare_train_traces", "compare_states", "replay"]


@dataclass(frozen=True)
class TrainMismatch:
    """The first difference: training ``step``, ``phase``, ``layer``, schedule step
    ``sched_step`` (-1: the layer or its bias), ``core``, quantity ``name``, ``sample``
    (None for tensors without a batch axis), flat ``element`` within the sample, values."""

    step: int | None
    phase: str
    layer: int | None
    sched_step: int | None
    core: int | None
    name: str
    sample: int | None
    element: int | None
    expected: Any
    got: Any
    n_diff: int = 0
    expected_by: str = "expected"
    got_by: str = "got"

    def describe(self) -> str:
        parts = [] if self.step is None else [f"training step {self.step}"]
        parts.append(f"phase {self.phase}")
        if self.layer is not None:
            parts.append(f"layer {self.layer}")
        if self.sched_step is not None and self.sched_step >= 0:
            parts.append(f"schedule step {self.sched_step}")
        if self.core is not None:
            parts.append(f"core {self.core}")
        parts.append(self.name)
        if self.sample is not None:
            parts.append(f"sample {self.sample}")
        if self.element is not None:
            parts.append(f"element {self.element}")
        return (", ".join(parts) + f": expected {self.expected} ({self.expected_by}), got {self.got} "
                f"({self.got_by}); {self.n_diff} elements differ there")


def _diff(a: np.ndarray, b: np.ndarray, batched: bool) -> tuple[int | None, int, Any, Any] | None:
    a, b = np.asarray(a), np.asarray(b)
    if batched and a.ndim >= 1:
        d = first_diff(a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1))
        return d
    d = first_diff(a.reshape(1, -1), b.reshape(1, -1))
    return None if d is None else (None, d[1], d[2], d[3])


_BATCHED = {("forward", "acc"), ("forward", "out"), ("forward", "output"), ("backward", "acc"),
            ("backward", "out"), ("loss", "t"), ("loss", "e"), ("loss", "p"), ("loss", "g"),
            ("loss", "S"), ("loss", "R")}


def compare_train_traces(expected: TrainTrace, got: TrainTrace, expected_by: str = "expected",
                         got_by: str = "got") -> TrainMismatch | None:
    """The first record (in computation order) whose exponent, shape or value differs."""
    for k, (e, g) in enumerate(zip(expected.records, got.records)):
        key = (e.phase, e.layer, e.step, e.core, e.name)
        if key != (g.phase, g.layer, g.step, g.core, g.name):
            return TrainMismatch(expected.step, e.phase, e.layer, e.step, e.core, f"record {k}", None, None,
                                 key, (g.phase, g.layer, g.step, g.core, g.name), 0, expected_by, got_by)
        if e.exp != g.exp:
            return TrainMismatch(expected.step, e.phase, e.layer, e.step, e.core, f"{e.name} exponent",
                                 None, None, e.exp, g.exp, 1, expected_by, got_by)
        if e.value.shape != g.value.shape:
            return TrainMismatch(expected.step, e.phase, e.layer, e.step, e.core, f"{e.name} shape", None,
                                 None, e.value.shape, g.value.shape, 0, expected_by, got_by)
        d = _diff(e.value, g.value, (e.phase, e.name) in _BATCHED)
        if d is not None:
            return TrainMismatch(expected.step, e.phase, e.layer, e.step, e.core, e.name, d[0], d[1], d[2],
                                 d[3], int(np.count_nonzero(e.value != g.value)), expected_by, got_by)
    if len(expected.records) != len(got.records):
        return TrainMismatch(expected.step, "format", None, None, None, "number of records", None, None,
                             len(expected.records), len(got.records), 0, expected_by, got_by)
    return None


def compare_states(a: TrainState, b: TrainState, expected_by: str = "expected",
                   got_by: str = "got") -> TrainMismatch | None:
    """The first differing counter, exponent or stored element of two states (the update
    phase: that is where stored integers are written)."""
    for name in ("step", "words", "rng", "lr_shift", "in_exp"):
        if getattr(a, name) != getattr(b, name):
            return TrainMismatch(a.step, "update", None, None, None, name, None, None, getattr(a, name),
                                 getattr(b, name), 1, expected_by, got_by)
    if a.config != b.config or len(a.layers) != len(b.layers):
        return TrainMismatch(a.step, "format", None, None, None, "config/layers", None, None,
                             a.config.to_dict(), b.config.to_dict(), 0, expected_by, got_by)
    for i, (La, Lb) in enumerate(zip(a.layers, b.layers)):
        for field in ("step_exps", "grad_exps", "master_exps", "bias_exp"):
            if getattr(La, field) != getattr(Lb, field):
                phase = "forward" if field == "step_exps" else "backward" if field == "grad_exps" else "update"
                return TrainMismatch(a.step, phase, i, None, None, field, None, None, getattr(La, field),
                                     getattr(Lb, field), 1, expected_by, got_by)
        for k, (ga, gb) in enumerate(zip(La.masters, Lb.masters)):
            if ga.shape != gb.shape:
                return TrainMismatch(a.step, "format", i, None, k, "master shape", None, None, ga.shape,
                                     gb.shape, 0, expected_by, got_by)
            d = _diff(ga, gb, False)
            if d is not None:
                return TrainMismatch(a.step, "update", i, None, k, "master", None, d[1], d[2], d[3],
                                     int(np.count_nonzero(ga != gb)), expected_by, got_by)
        if (La.bias is None) != (Lb.bias is None):
            return TrainMismatch(a.step, "format", i, None, None, "bias presence", None, None,
                                 La.bias is not None, Lb.bias is not None, 0, expected_by, got_by)
        if La.bias is not None:
            d = _diff(La.bias, Lb.bias, False)
            if d is not None:
                return TrainMismatch(a.step, "update", i, -1, None, "bias", None, d[1], d[2], d[3],
                                     int(np.count_nonzero(La.bias != Lb.bias)), expected_by, got_by)
    return None


Stepper = Callable[[TrainState, np.ndarray, np.ndarray], tuple[TrainState, TrainTrace]]


def replay(state: TrainState, batches: Iterable[tuple[np.ndarray, np.ndarray]],
           expected: Stepper = lambda s, x, y: train_step_traced(s, x, y),
           got: Stepper = lambda s, x, y: train_step_traced(s, x, y, fast=True),
           expected_by: str = "golden", got_by: str = "fast") -> tuple[int, TrainMismatch | None]:
    """Run two steppers from ``state`` over ``batches``; ``(steps run, first mismatch or None)``."""
    a = b = state
    n = 0
    for x, y in batches:
        a, ta = expected(a, x, y)
        b, tb = got(b, x, y)
        m = compare_train_traces(ta, tb, expected_by, got_by) or compare_states(a, b, expected_by, got_by)
        n += 1
        if m is not None:
            return n, m
    return n, None
