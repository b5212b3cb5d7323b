"""Contraction schedules of a TT-matrix layer and their cost model.

A schedule is the order in which the cores meet the input vector. The set of cores
already applied is always a contiguous interval ``[a, b]``; each step extends it by one
core on the left or the right (the first step may start anywhere). With that rule the
intermediate tensor of one sample always has the layout

    n0 .. n{a-1}, r{a}, m{a} .. m{b}, r{b+1}, n{b+1} .. n{d-1}

(``r{k}`` is the bond between cores ``k-1`` and ``k``; the boundary bonds ``r0`` and
``r{d}`` have size 1 and are left out). Every step therefore contracts a *contiguous*
block of axes and writes the produced axes in its place: viewing the intermediate as
``(A, K, Q)`` (axes before the block, the block, axes after it) a step computes

    out[a, p, q] = sum_k C[p, k] * x[a, k, q]          (C is the core as a P x K matrix)

for every sample. No data is ever transposed, and after the last step the layout is
``m0 .. m{d-1}``: the output, in order. The same plain-data steps drive the PyTorch
layer, the integer executor and the hardware's address generators.
"""

from __future__ import annotations

import itertools
import math
import operator
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

from ttforge.errors import LimitError, ShapeError, show
from ttforge.limits import MAX_SEARCH_CORES
from ttforge.ir.tt import TTShape

__all__ = ["ContractionStep", "ContractionSchedule", "ScheduleCost", "schedule_orders", "check_search_cores", "OBJECTIVES"]

Objective = Literal["macs", "peak", "cycles"]
#: the objectives :meth:`ContractionSchedule.optimal` knows
OBJECTIVES = ("macs", "peak", "cycles")


@dataclass(frozen=True)
class ContractionStep:
    """One step: apply ``core`` to the intermediate, per sample.

    Attributes
    ----------
    core : int
        Index of the core applied.
    side : {"first", "left", "right"}
        Where the core joins the interval of applied cores.
    in_layout, out_layout : tuple of str
        Axis labels of the intermediate (one sample) before and after the step.
    start, stop : int
        The contracted block is ``in_layout[start:stop]``.
    contract, produce : tuple of str
        Labels contracted (in layout order) and produced (written in their place).
    A, K, Q, P : int
        Sizes of the axes before the block, of the block, after the block, and of
        the produced block.
    core_axes : tuple of int
        Permutation of the core's axes ``(r, m, n, r')`` that puts the produced axes
        first and the contracted ones last; reshaped to ``(P, K)`` it is the matrix
        ``C`` of this step. Boundary bonds of size 1 sit where they fall.
    """

    core: int
    side: str
    in_layout: tuple[str, ...]
    out_layout: tuple[str, ...]
    start: int
    stop: int
    contract: tuple[str, ...]
    produce: tuple[str, ...]
    A: int
    K: int
    Q: int
    P: int
    core_axes: tuple[int, int, int, int]

    @property
    def macs(self) -> int:
        """Multiply-accumulates per sample."""
        return self.A * self.K * self.Q * self.P

    @property
    def out_elements(self) -> int:
        """Elements of the intermediate after the step, per sample."""
        return self.A * self.P * self.Q

    def apply(self, x, C):
        """The step on a batch: ``x`` of shape ``(batch, A*K*Q)``, viewed per sample as
        ``(A, K, Q)``, times the step's ``(P, K)`` core matrix ``C``:
        ``out[b, a, p, q] = sum_k C[p, k] x[b, a, k, q]``, returned as ``(batch, A*P*Q)``.
        One matrix product (``Q == 1``) or one batched product; numpy arrays or torch
        tensors alike (the integer executor and the PyTorch models compute it the same way).

        The batch stays an axis of its own (never merged with ``A``): under
        ``torch.compile`` with a dynamic batch, inductor indexes a view that merges the
        symbolic batch with static sizes through a modulo by the batch's extent, one
        integer division an element in every permutation that follows (a compiled QAT
        training step, ``docs/benchmarks.md``, "`torch.compile`"; numpy's integer
        products take the same time either way)."""
        batch = x.shape[0]
        if self.Q == 1:
            y = x.reshape(batch, self.A, self.K) @ C.T
        else:
            y = C @ x.reshape(batch, self.A, self.K, self.Q)
        return y.reshape(batch, self.out_elements)   # not -1: ambiguous for a batch of none

    def lane_cycles(self, lanes: int) -> int:
        """MAC cycles per sample on a row of ``lanes`` MAC lanes, mapped as the
        accelerator maps a step (``docs/hardware.md``, "What one step computes").

        Lanes over ``q`` when ``lanes`` divides ``Q``: ``A*P*(Q/lanes)*K`` cycles, every
        lane busy. Otherwise lanes over ``p``: ``A*Q*ceil(P/lanes)`` blocks of ``K``
        cycles, the last block of each ``(a, q)`` with ``P mod lanes`` lanes (if not 0);
        unless the results form whole words (``Q = 1`` and ``lanes`` divides ``P``) they
        are written one lane per cycle while the next block runs, so a block of ``v``
        valid lanes takes ``max(K, v)`` cycles.
        """
        L = int(lanes)
        if L < 1:
            raise ShapeError(f"lanes={lanes} must be >= 1")
        A, K, Q, P = self.A, self.K, self.Q, self.P
        if Q % L == 0:
            return A * P * (Q // L) * K
        nb = -(-P // L)
        last = P - (nb - 1) * L
        if Q == 1 and P % L == 0:
            return A * nb * K
        return A * Q * ((nb - 1) * max(K, L) + max(K, last))

    def to_dict(self) -> dict[str, Any]:
        return {
            "core": self.core,
            "side": self.side,
            "in_layout": list(self.in_layout),
            "out_layout": list(self.out_layout),
            "start": self.start,
            "stop": self.stop,
            "contract": list(self.contract),
            "produce": list(self.produce),
            "A": self.A,
            "K": self.K,
            "Q": self.Q,
            "P": self.P,
            "core_axes": list(self.core_axes),
        }


@dataclass(frozen=True)
class ScheduleCost:
    """Cost of a schedule for a batch."""

    macs: int
    peak_elements: int
    step_macs: tuple[int, ...]
    step_elements: tuple[int, ...]
    #: MAC cycles on ``lanes`` MAC lanes (:meth:`ContractionStep.lane_cycles`), when
    #: the cost was computed for a lane count; else ``None``.
    lane_cycles: int | None = None
    lanes: int | None = None


def _sizes(shape: TTShape) -> dict[str, int]:
    sizes = {}
    for k in range(shape.d):
        sizes[f"n{k}"] = shape.in_modes[k]
        sizes[f"m{k}"] = shape.out_modes[k]
    for k in range(1, shape.d):
        sizes[f"r{k}"] = shape.ranks[k]
    return sizes


def _build_steps(shape: TTShape, order: tuple[int, ...]) -> tuple[ContractionStep, ...]:
    d = shape.d
    sizes = _sizes(shape)
    layout = [f"n{k}" for k in range(d)]
    lo = hi = None
    steps = []
    for core in order:
        if lo is None:
            side = "first"
            lo = hi = core
        elif core == lo - 1:
            side, lo = "left", core
        elif core == hi + 1:
            side, hi = "right", core
        else:
            raise ShapeError(
                f"schedule order {list(order)}: core {core} does not extend the applied "
                f"interval [{lo}, {hi}]; each step must apply a neighbouring core"
            )
        # the core's own axes, in storage order (r, m, n, r'); boundary bonds are absent
        # from the layout, which is harmless because their size is 1.
        left_bond = f"r{core}" if core > 0 else None
        right_bond = f"r{core + 1}" if core < d - 1 else None
        contract_set = {f"n{core}"}
        if side in ("left",) and right_bond:
            contract_set.add(right_bond)
        if side in ("right",) and left_bond:
            contract_set.add(left_bond)
        idx = sorted(layout.index(a) for a in contract_set)
        start, stop = idx[0], idx[-1] + 1
        if stop - start != len(idx):
            raise AssertionError("contracted axes are not contiguous")  # invariant of the layout
        contract = tuple(layout[start:stop])
        produce = []
        if side in ("first", "left") and left_bond:
            produce.append(left_bond)
        produce.append(f"m{core}")
        if side in ("first", "right") and right_bond:
            produce.append(right_bond)
        produce = tuple(produce)
        # core axes: 0=r(left bond) 1=m 2=n 3=r'(right bond)
        axis_of = {f"m{core}": 1, f"n{core}": 2}
        if left_bond:
            axis_of[left_bond] = 0
        if right_bond:
            axis_of[right_bond] = 3
        used = [axis_of[a] for a in produce] + [axis_of[a] for a in contract]
        unused = [a for a in range(4) if a not in used]  # size-1 boundary bonds
        # put the size-1 axes first; they do not change the (P, K) reshape
        core_axes = tuple(unused + used)
        A = math.prod(sizes[a] for a in layout[:start])
        Q = math.prod(sizes[a] for a in layout[stop:])
        K = math.prod(sizes[a] for a in contract)
        P = math.prod(sizes[a] for a in produce)
        new_layout = layout[:start] + list(produce) + layout[stop:]
        steps.append(
            ContractionStep(
                core=core,
                side=side,
                in_layout=tuple(layout),
                out_layout=tuple(new_layout),
                start=start,
                stop=stop,
                contract=contract,
                produce=produce,
                A=A,
                K=K,
                Q=Q,
                P=P,
                core_axes=core_axes,  # type: ignore[arg-type]
            )
        )
        layout = new_layout
    return tuple(steps)


def check_search_cores(d: int) -> int:
    """``d`` if the orders of ``d`` cores may be searched (an integer in
    ``1..MAX_SEARCH_CORES``), else a one-line :class:`LimitError` / :class:`ShapeError`."""
    try:
        ok = not isinstance(d, bool) and operator.index(d) >= 1   # int or numpy integer
    except TypeError:
        ok = False
    if not ok:
        raise ShapeError(f"a TT layer has d={show(d)} cores; give an integer >= 1")
    d = operator.index(d)
    if d > MAX_SEARCH_CORES:   # d * 2^(d-1) orders: bounded in time, with a clear message
        count = f"{d * 2 ** (d - 1):,}" if d <= 64 else f"{d:,} * 2^{d - 1:,}"   # 2^(10^9) takes seconds
        raise LimitError(f"a TT layer of {d:,} cores has {count} "
                         f"contraction orders to search; ttforge searches at most "
                         f"{MAX_SEARCH_CORES} cores (use at most {MAX_SEARCH_CORES} cores, or "
                         f"give the order)")
    return int(d)


def schedule_orders(d: int) -> list[tuple[int, ...]]:
    """Every order that grows a contiguous interval of ``d`` cores (``d * 2^(d-1)`` at most;
    ``d`` at most ``MAX_SEARCH_CORES``, :func:`check_search_cores`)."""
    d = check_search_cores(d)
    orders = set()
    for first in range(d):
        for sides in itertools.product("LR", repeat=d - 1):
            lo = hi = first
            order = [first]
            ok = True
            for s in sides:
                if s == "L":
                    if lo == 0:
                        ok = False
                        break
                    lo -= 1
                    order.append(lo)
                else:
                    if hi == d - 1:
                        ok = False
                        break
                    hi += 1
                    order.append(hi)
            if ok:
                orders.add(tuple(order))
    return sorted(orders)


@dataclass(frozen=True)
class ContractionSchedule:
    """The order of contraction of one TT-matrix layer, as plain data.

    Construct with :meth:`from_order`, :meth:`optimal` or :meth:`from_dict`; ``steps``
    are derived from the shape and the order and validated.
    """

    shape: TTShape
    order: tuple[int, ...]
    steps: tuple[ContractionStep, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:  # integers only: int() would take "3" and truncate 1.7
            order = tuple(operator.index(c) for c in self.order)
        except TypeError:
            raise ShapeError(f"schedule order {show(self.order)} must be a sequence of core "
                             f"indices 0..{self.shape.d - 1}") from None
        object.__setattr__(self, "order", order)
        if sorted(order) != list(range(self.shape.d)):
            raise ShapeError(
                f"schedule order {list(order)} must list every core 0..{self.shape.d - 1} once"
            )
        object.__setattr__(self, "steps", _build_steps(self.shape, order))

    @classmethod
    def from_order(cls, shape: TTShape, order: Sequence[int]) -> "ContractionSchedule":
        return cls(shape, tuple(order))

    @classmethod
    def right_to_left(cls, shape: TTShape) -> "ContractionSchedule":
        """The textbook order: last core first."""
        return cls(shape, tuple(range(shape.d - 1, -1, -1)))

    @classmethod
    def optimal(
        cls, shape: TTShape, batch: int = 1, objective: Objective = "macs",
        lanes: int | None = None,
    ) -> "ContractionSchedule":
        """The cheapest schedule for ``objective``.

        ``"macs"``: fewest MACs, then (with ``lanes``) fewest cycles on that many lanes,
        then smallest peak. ``"peak"``: smallest peak, then MACs, then cycles.
        ``"cycles"`` (needs ``lanes``, the MAC lanes of the accelerator that will run
        it): fewest cycles on those lanes (:meth:`ContractionStep.lane_cycles`, what the
        engine's cycle model counts), then MACs, then peak. A schedule with a few more
        MACs can keep every lane busy where the fewest-MAC one leaves lanes idle.

        Every step's cost is linear in the batch, so the choice does not depend on it;
        ``batch`` only scales the reported costs. Ties left after every criterion go to
        the first order of :func:`schedule_orders`.
        """
        if objective not in OBJECTIVES:
            raise ShapeError(f"objective={objective!r} must be one of {', '.join(map(repr, OBJECTIVES))}")
        if objective == "cycles" and lanes is None:
            raise ShapeError("objective='cycles' needs lanes=<the accelerator's MAC lanes>; "
                             "give lanes or use objective='macs'")
        check_search_cores(shape.d)
        if lanes is not None and (isinstance(lanes, bool) or int(lanes) != lanes or lanes < 1):
            raise ShapeError(f"lanes={lanes!r} must be an integer >= 1 (or None)")
        best, best_key = None, None
        for order in schedule_orders(shape.d):
            sched = cls(shape, order)
            c = sched.cost(batch, lanes=lanes)
            lc = c.lane_cycles if lanes is not None else 0
            key = {"macs": (c.macs, lc, c.peak_elements),
                   "peak": (c.peak_elements, c.macs, lc),
                   "cycles": (lc, c.macs, c.peak_elements)}[objective]
            if best_key is None or key < best_key:
                best, best_key = sched, key
        assert best is not None
        return best

    def cost(self, batch: int = 1, lanes: int | None = None) -> ScheduleCost:
        """MACs and peak intermediate elements (the input counts as an intermediate);
        with ``lanes``, also the MAC cycles on that many lanes."""
        step_macs = tuple(batch * s.macs for s in self.steps)
        step_elements = tuple(batch * s.out_elements for s in self.steps)
        peak = max((batch * self.shape.in_size,) + step_elements)
        lc = None
        if lanes is not None:
            lc = sum(batch * s.lane_cycles(lanes) for s in self.steps)
        return ScheduleCost(sum(step_macs), peak, step_macs, step_elements, lc,
                            None if lanes is None else int(lanes))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description; ``steps`` are included for readers, checked on load."""
        return {
            "out_modes": list(self.shape.out_modes),
            "in_modes": list(self.shape.in_modes),
            "ranks": list(self.shape.ranks),
            "order": list(self.order),
            "steps": [s.to_dict() for s in self.steps],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ContractionSchedule":
        try:
            shape = TTShape(tuple(data["out_modes"]), tuple(data["in_modes"]), tuple(data["ranks"]))
            sched = cls(shape, tuple(data["order"]))
        except KeyError as e:
            raise ShapeError(f"schedule is missing the field {e.args[0]!r}") from None
        if "steps" in data and [s.to_dict() for s in sched.steps] != list(data["steps"]):
            raise ShapeError(
                "schedule 'steps' do not match its order and shape; regenerate the schedule"
            )
        return sched
