"""The divergence search over integer traces: where two integer stages first differ.

Two integer stages of one network (the golden executor, the engine model, the RTL, a
trainer) produce :class:`~ttforge.ir.executor.StepTrace` lists in the schedule's order;
:func:`compare_traces` names the first layer, step, quantity (accumulator or output),
sample and element that differ. :class:`DivergenceReport` is what ``ttforge diverge``
prints (its float and fake-quant stages live in :mod:`ttforge.quant.diverge`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from ttforge.ir.executor import StepTrace

__all__ = ["StepError", "Mismatch", "DivergenceReport", "first_diff", "compare_traces"]


@dataclass(frozen=True)
class StepError:
    """Float vs fake-quant at one step (``step`` is ``-1`` for the input quantization)."""

    layer: int
    step: int
    core: int | None
    exp: int
    max_abs_err: float
    max_err_lsb: float
    n_over: int
    n_elements: int
    first_over: tuple[int, int, float, float] | None  # (sample, element, float value, quantized value)


@dataclass(frozen=True)
class Mismatch:
    """The first place where two stages differ (by default: fake-quant, then the integer executor)."""

    layer: int
    step: int  # -1: the layer's input / format
    what: str  # "format", "input", "acc", "out" or "output"
    sample: int | None
    element: int | None
    expected: Any  # fake-quant
    got: Any  # integer executor
    n_diff: int = 0
    n_elements: int = 0
    detail: str = ""
    expected_by: str = "fake-quant"  #: the stage ``expected`` comes from
    got_by: str = "integer"  #: the stage ``got`` comes from

    def describe(self) -> str:
        where = f"layer {self.layer}" + (f", step {self.step}" if self.step >= 0 else "")
        if self.what == "format":
            return f"{where}: {self.detail}: expected {self.expected} ({self.expected_by}), got {self.got} ({self.got_by})"
        label = {"input": "quantized input", "acc": "accumulator", "out": "requantized output",
                 "output": "layer output"}[self.what]
        return (f"{where}{' (' + self.detail + ')' if self.detail else ''}, {label}, sample {self.sample}, "
                f"element {self.element}: expected {self.expected} ({self.expected_by}), got {self.got} ({self.got_by}); "
                f"{self.n_diff} of {self.n_elements} elements differ there")


@dataclass
class DivergenceReport:
    """What :func:`find_divergence` found."""

    n_samples: int
    n_steps: int
    tolerance_lsb: float
    float_vs_quant: list[StepError] = field(default_factory=list)
    quant_vs_int: Mismatch | None = None
    n_saturations: int = 0

    @property
    def equal(self) -> bool:
        """Whether the fake-quant and integer stages agree exactly."""
        return self.quant_vs_int is None

    @property
    def first_over_tolerance(self) -> StepError | None:
        return next((s for s in self.float_vs_quant if s.first_over is not None), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_samples": self.n_samples,
            "n_steps": self.n_steps,
            "tolerance_lsb": self.tolerance_lsb,
            "integer_stages_equal": self.equal,
            "float_vs_quant": [asdict(s) for s in self.float_vs_quant],
            "quant_vs_int": None if self.quant_vs_int is None else asdict(self.quant_vs_int),
            "saturations": self.n_saturations,
        }

    def format(self) -> str:
        tol = f"{self.tolerance_lsb:g} LSB"
        lines = [f"float vs fake-quant (quantization error, expected; tolerance {tol} of each step's output, "
                 f"informational):",
                 f"  {'layer':>5} {'step':>4} {'core':>4} {'exp':>4} {'max |err|':>11} {'in LSB':>8} "
                 f"{'over':>11}  first over tolerance (sample, element: float -> quant)"]
        for s in self.float_vs_quant:
            first = "-" if s.first_over is None else (
                f"sample {s.first_over[0]}, element {s.first_over[1]}: {s.first_over[2]:.6g} -> "
                f"{s.first_over[3]:.6g}")
            lines.append(f"  {s.layer:>5} {'in' if s.step < 0 else s.step:>4} "
                         f"{'-' if s.core is None else s.core:>4} {s.exp:>4} {s.max_abs_err:>11.4g} "
                         f"{s.max_err_lsb:>8.2f} {f'{s.n_over}/{s.n_elements}':>11}  {first}")
        f = self.first_over_tolerance
        lines.append("  first step over tolerance: " + (
            "none" if f is None else f"layer {f.layer}, {'input' if f.step < 0 else f'step {f.step}'}"))
        lines.append("fake-quant (eval) vs integer executor (must be exact):")
        if self.quant_vs_int is None:
            lines.append(f"  all {self.n_steps} steps equal (accumulators and outputs, {self.n_samples} "
                         f"samples; {self.n_saturations} saturation events)")
        else:
            lines.append("  FIRST DIVERGENCE: " + self.quant_vs_int.describe())
        return "\n".join(lines)


def first_diff(expected: np.ndarray, got: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(sample, element, expected, got)`` of the first differing element of two
    ``(batch, elements)`` integer arrays in sample-major order, or ``None`` if equal."""
    diff = expected != got
    if not diff.any():
        return None
    # argmax: the first True without listing every one (argwhere of a 2^24-element layer
    # made 256 MB of indices)
    s, e = (int(i) for i in np.unravel_index(int(np.argmax(diff)), diff.shape))
    return s, e, int(expected[s, e]), int(got[s, e])


def compare_traces(expected: Sequence[StepTrace], got: Sequence[StepTrace],
                   expected_by: str = "expected", got_by: str = "got") -> Mismatch | None:
    """The first step (in trace order) whose accumulator or output differs, or ``None``.

    Traces are matched by ``(layer, step)``; a step missing on either side is a
    ``format`` mismatch at that step. Exact integer equality, never a tolerance.
    """
    got_by_step = {(t.layer, t.step): t for t in got}
    if len(got_by_step) != len(expected):
        return Mismatch(0, -1, "format", None, None, len(expected), len(got_by_step),
                        detail="number of steps", expected_by=expected_by, got_by=got_by)
    for e in expected:
        g = got_by_step.get((e.layer, e.step))
        if g is None:
            return Mismatch(e.layer, e.step, "format", None, None, "present", "missing",
                            detail="step", expected_by=expected_by, got_by=got_by)
        for what, a, b in (("acc", e.acc, g.acc), ("out", e.out, g.out)):
            a, b = np.asarray(a), np.asarray(b)
            if a.shape != b.shape:
                return Mismatch(e.layer, e.step, "format", None, None, a.shape, b.shape,
                                detail=f"{what} shape", expected_by=expected_by, got_by=got_by)
            d = first_diff(a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1))
            if d:
                return Mismatch(e.layer, e.step, what, *d, int(np.count_nonzero(a != b)), int(a.size),
                                expected_by=expected_by, got_by=got_by)
    return None
