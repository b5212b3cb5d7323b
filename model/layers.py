"""PyTorch tensor-train layers."""

from __future__ import annotations

import math
import numbers
from typing import Sequence

import torch
from torch import nn

from ttforge.errors import ConfigError, ShapeError, show
from ttforge.ir.schedule import ContractionSchedule, Objective
from ttforge.ir.tt import integers
from ttforge.model.fast import (MergeCache, captured, check_input, compiled, dtypes_meet, in_autocast_dtype,
                                plan_for, plain_ops_only, require_real, tt_apply)
from ttforge.model.tt import TTShape, factorize, tt_rel_error, tt_svd, tt_to_dense

__all__ = ["TTLinear", "default_num_cores", "apply_schedule", "tt_apply", "IMPLS"]

#: How :meth:`TTLinear.forward` contracts: ``"fast"`` picks the float-cheapest order for
#: the batch (:mod:`ttforge.model.fast`); ``"schedule"`` follows the layer's
#: :class:`ContractionSchedule` step by step, the order the quantized model, the integer
#: executor and the hardware use (:func:`apply_schedule`).
IMPLS = ("fast", "schedule")


def default_num_cores(in_features: int, out_features: int) -> int:
    """Cores used when no modes are given: modes of about 4 to 8 on the larger side."""
    n = max(in_features, out_features)
    return max(2, min(6, round(math.log(n) / math.log(6))))


def _modes(name: str, features: int, modes: Sequence[int] | None, d: int) -> tuple[int, ...]:
    if modes is None:
        return factorize(features, d)
    modes = integers(name, modes)
    if any(m < 1 for m in modes):
        raise ShapeError(f"{name}={list(modes)}: every mode must be >= 1")
    if math.prod(modes) < features:
        raise ShapeError(
            f"{name}={list(modes)} multiply to {math.prod(modes)}, fewer than "
            f"{features} features; choose modes whose product is >= {features}"
        )
    return modes


# Largest intermediate (elements) one batch chunk may produce in apply_schedule: 2**20
# float32 values = 4 MiB, so the running intermediates stay cache-resident and come
# from the allocator's heap instead of fresh, page-faulting mmap'd blocks.
_CHUNK_ELEMENTS = 1 << 20


class _TransposeCopy(torch.autograd.Function):
    """``t.t().contiguous()`` whose gradient is made contiguous the same way.

    A plain ``.T.contiguous()`` hands a transposed (non-contiguous) gradient back to
    the last matrix product, which drives ``torch.bmm`` onto a slow per-matrix path.
    """

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return t.t().contiguous()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return _TransposeCopy.apply(grad)


def apply_schedule(
    x: torch.Tensor, cores: Sequence[torch.Tensor], schedule: ContractionSchedule
) -> torch.Tensor:
    """Apply a TT-matrix to ``x`` of shape ``(B, N)`` following ``schedule``; returns ``(B, M)``.

    Each step multiplies the intermediate, viewed per sample as ``(A, K, Q)``, by the
    step's ``(P, K)`` core matrix ``C`` (``out[a, p, q] = sum_k C[p, k] x[a, k, q]``);
    the steps, their order and their reshapes are exactly the schedule's.

    Memory layout (a speed choice, invisible to callers): the intermediate is held
    with the batch as its innermost axis, ``(A, K, Q * B)``, so a step is one matrix
    product ``C @ X`` when ``A == 1`` and otherwise one batched product over ``A``
    with ``C`` shared (stride 0); nothing is transposed between steps, only the input
    and the output once. Large batches are processed in chunks (of a multiple of 16
    samples where possible) whose intermediates hold at most ``2**20`` elements.
    """
    if not isinstance(schedule, ContractionSchedule):
        raise ShapeError(f"schedule must be a ContractionSchedule (ContractionSchedule.from_order"
                         f"(shape, order) makes one), not {type(schedule).__name__}")
    shape = schedule.shape
    if not captured():  # (a traced size is a tensor: comparing it would warn)
        if (len(cores) != shape.d
                or any(tuple(c.shape) != s for c, s in zip(cores, shape.core_shapes))):
            raise ShapeError(f"the cores have shapes {[tuple(c.shape) for c in cores]}; the "
                             f"schedule is for {list(shape.core_shapes)}")
        check_input(x, shape.in_size)
    y = in_autocast_dtype(apply_schedule, x, cores, schedule)
    if y is not None:
        return y
    batch = x.shape[0]
    steps = schedule.steps
    mats = [cores[s.core].permute(*s.core_axes).reshape(s.P, s.K) for s in steps]
    per_sample = max([schedule.shape.in_size] + [s.out_elements for s in steps])
    chunk = max(1, _CHUNK_ELEMENTS // per_sample)
    # a captured graph (ttforge.model.fast.captured) runs the whole batch as one chunk
    # and never tests its size, which may be symbolic
    whole = captured()
    if not whole and 16 <= chunk < batch:
        chunk -= chunk % 16  # whole SIMD widths of columns for the matrix kernels
    # torch.func transforms, forward-mode AD and graph captures need plain operations
    # (see ttforge.model.fast.plain_ops_only)
    transpose = (lambda t: t.t().contiguous()) if plain_ops_only() else _TransposeCopy.apply
    starts = [0] if whole or batch <= chunk else range(0, batch, chunk)
    outs = []
    for lo in starts:
        xc = x if len(starts) == 1 else x[lo : lo + chunk]
        b = xc.shape[0]
        t = transpose(xc)  # (N, b): batch innermost
        for step, C in zip(steps, mats):
            cols = step.Q * b
            if step.A == 1:
                t = C @ t.reshape(step.K, cols)
            elif not whole and cols == 1:
                t = t.reshape(step.A, step.K) @ C.T
            else:
                t = torch.bmm(C.expand(step.A, step.P, step.K), t.reshape(step.A, step.K, cols))
        outs.append(transpose(t.reshape(schedule.shape.out_size, b)))
    return outs[0] if len(outs) == 1 else torch.cat(outs)


class TTLinear(nn.Module):
    """A linear layer whose weight is a TT-matrix.

    Parameters
    ----------
    in_features, out_features : int
        Sizes as in :class:`torch.nn.Linear`. Sizes that factor badly are zero-padded
        to ``prod(in_modes)`` / ``prod(out_modes)`` (see :func:`factorize`).
    ranks : int or sequence of int
        An int is an upper bound applied to every bond (clipped to the maximal rank);
        a sequence gives the ``d - 1`` internal ranks exactly.
    in_modes, out_modes : sequence of int, optional
        Factorizations; by default chosen by :func:`factorize` with
        :func:`default_num_cores` cores.
    bias : bool
        Add a learnable bias.
    schedule : ContractionSchedule or sequence of int, optional
        Contraction order; by default the cheapest by :meth:`ContractionSchedule.optimal`.
    objective : {"macs", "peak", "cycles"}
        What the default schedule minimises first (:meth:`ContractionSchedule.optimal`);
        ``"cycles"`` needs ``lanes``.
    lanes : int, optional
        The MAC lanes of the accelerator the layer is meant for: the default schedule
        is then chosen with its cycles on that many lanes in the cost (first with
        ``objective="cycles"``, among equal MACs otherwise).
    impl : {"fast", "schedule"}
        How the float forward contracts (see :data:`IMPLS`). ``"fast"`` (the default)
        chooses the order for the float cost on each batch size and recomputes
        intermediates in the backward pass; ``"schedule"`` follows ``schedule``, the
        hardware's order. Both compute the same function within float rounding; the
        quantization path (``ttforge.quant``) always uses the schedule. Under autograd
        ``"schedule"`` keeps every step's intermediate for the backward (its chunks bound
        only the forward's working set): on the 4096 x 4096 rank-16 layer at batch 256,
        208 MiB against the fast path's 13.5 MiB and ``nn.Linear``'s 72 MiB
        (docs/benchmarks.md); train with ``"fast"``.
    device, dtype : optional
        Where the cores and the bias are made and their dtype, as for
        :class:`torch.nn.Linear` (``device="meta"`` builds the layer without memory;
        ``to_empty`` and :meth:`reset_parameters` then materialise it). Real floating
        dtypes only: a complex dtype is a :class:`~ttforge.errors.ConfigError`.

    Notes
    -----
    Under :class:`torch.autocast` the products run in autocast's dtype (cores, input and
    bias cast to it, differentiably) and the output has it, as for ``nn.Linear``. The
    output is a tensor of its own, which in-place operations may change under autograd
    (``nn.ReLU(inplace=True)`` after the layer).

    A NaN input gives NaN outputs where ``nn.Linear`` gives them; an infinite one can
    give NaN where ``nn.Linear`` gives an infinity: a later step of the contraction sums
    the ``+inf`` and ``-inf`` of partial products that the dense product never forms.

    Cores are initialised i.i.d. normal with the standard deviation that gives every
    entry of the full weight the variance ``1 / in_features`` (as LeCun/Kaiming-fan-in
    initialisation would), whatever the ranks and modes.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        ranks: int | Sequence[int],
        in_modes: Sequence[int] | None = None,
        out_modes: Sequence[int] | None = None,
        bias: bool = True,
        schedule: ContractionSchedule | Sequence[int] | None = None,
        objective: Objective = "macs",
        impl: str = "fast",
        lanes: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if impl not in IMPLS:
            raise ConfigError(f"impl={impl!r} must be one of {', '.join(map(repr, IMPLS))}")
        self.impl = impl
        sizes = []
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            # integral numbers, as nn.Linear and the modes take (numpy's too); never a bool,
            # which is an int to isinstance (True passed here and failed in factorize)
            if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 1:
                raise ShapeError(f"{name}={show(v)} must be a positive integer")
            sizes.append(int(v))
        self.in_features, self.out_features = in_features, out_features = sizes
        if in_modes is not None and out_modes is not None and len(in_modes) != len(out_modes):
            raise ShapeError(
                f"in_modes {list(in_modes)} and out_modes {list(out_modes)} must have the same "
                f"length (one pair per core)"
            )
        given = in_modes if in_modes is not None else out_modes
        d = len(given) if given is not None else default_num_cores(in_features, out_features)
        in_m = _modes("in_modes", in_features, in_modes, d)
        out_m = _modes("out_modes", out_features, out_modes, d)
        self.tt_shape = TTShape(out_m, in_m, ranks)  # type: ignore[arg-type]
        self.objective = objective
        self.lanes = lanes
        if dtype is not None and torch.empty(0, dtype=dtype).is_complex():
            raise ConfigError(f"dtype={dtype}: TT layers are real; use a floating dtype "
                              f"(float32, float64, float16 or bfloat16)")
        made = {"device": device, "dtype": dtype}
        self.cores = nn.ParameterList(
            nn.Parameter(torch.empty(s, **made)) for s in self.tt_shape.core_shapes
        )
        self.bias = nn.Parameter(torch.empty(out_features, **made)) if bias else None
        self._set_schedule(schedule)
        self.reset_parameters()

    # -- structure -------------------------------------------------------------------
    def _set_schedule(self, schedule: ContractionSchedule | Sequence[int] | None) -> None:
        if schedule is None:
            schedule = ContractionSchedule.optimal(self.tt_shape, objective=self.objective,
                                                   lanes=self.lanes)
        elif not isinstance(schedule, ContractionSchedule):
            schedule = ContractionSchedule.from_order(self.tt_shape, schedule)
        elif schedule.shape != self.tt_shape:
            raise ShapeError(
                f"schedule is for {schedule.shape}, but the layer has {self.tt_shape}"
            )
        self.schedule = schedule

    @property
    def ranks(self) -> tuple[int, ...]:
        return self.tt_shape.ranks

    @property
    def in_modes(self) -> tuple[int, ...]:
        return self.tt_shape.in_modes

    @property
    def out_modes(self) -> tuple[int, ...]:
        return self.tt_shape.out_modes

    def set_cores(self, cores: Sequence[torch.Tensor], schedule=None) -> None:
        """Replace the cores (their ranks may differ) and re-derive the schedule."""
        shape = TTShape.of_cores(cores)
        if shape.out_modes != self.out_modes or shape.in_modes != self.in_modes:
            raise ShapeError(
                f"new cores have modes {shape.out_modes} x {shape.in_modes}; the layer has "
                f"{self.out_modes} x {self.in_modes}"
            )
        ref = self.cores[0]
        self.tt_shape = shape
        self.cores = nn.ParameterList(
            nn.Parameter(g.detach().to(dtype=ref.dtype, device=ref.device).clone()) for g in cores
        )
        self._set_schedule(schedule)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Initialise the cores and the bias (see the class's notes), drawing from
        ``generator`` (``None``: torch's global generator)."""
        d = self.tt_shape.d
        internal = math.prod(self.tt_shape.ranks[1:-1])
        target_var = 1.0 / self.in_features
        std = (target_var / internal) ** (1.0 / (2 * d))
        for g in self.cores:
            nn.init.normal_(g, 0.0, std, generator=generator)
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_features)
            nn.init.uniform_(self.bias, -bound, bound, generator=generator)

    # -- math ------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # under torch.jit.trace sizes are tensors (the test would warn that it is not
        # recorded); the traced reshape below still refuses another feature count
        if x.dim() == 0:
            raise ShapeError(f"input is a scalar (0-d); this TTLinear takes (..., {self.in_features})")
        if not torch.jit.is_tracing() and x.shape[-1] != self.in_features:
            raise ShapeError(
                f"input has {x.shape[-1]} features; this TTLinear takes {self.in_features}"
            )
        cores, bias = self._core_list(), self.bias
        require_real(cores[0], "this TTLinear's cores")   # layer.to(torch.complex64), say
        if x.device != cores[0].device:
            # torch multiplies a CPU tensor by a meta one without a word (the hardware
            # order then returned NaNs on the CPU); nn.Linear refuses, so does this
            raise ConfigError(f"input is on {x.device}, this TTLinear on {cores[0].device}; "
                              f"move one to the other (x.to({str(cores[0].device)!r}) or layer.to(...))")
        if x.dtype != cores[0].dtype and not dtypes_meet(x, cores):
            # torch's own error did not say which operand (hardware order: 'expected
            # scalar type Double but found Float'); a RuntimeError still, as nn.Linear's
            want = cores[0].dtype
            other = f" or layer.to({x.dtype})" if x.is_floating_point() else ""
            raise RuntimeError(f"input has dtype {x.dtype}, this TTLinear {want}; convert one to "
                               f"the other (x.to({want}){other})")
        lead = x.shape[:-1]
        x = x.reshape(-1, self.in_features)
        pad = self.tt_shape.in_size - self.in_features
        if pad:
            x = nn.functional.pad(x, (0, pad))
        # the bias cast too, so that the padded paths add it in autocast's dtype
        y = in_autocast_dtype(self._contract, x, cores, bias=bias)
        if y is None:
            y = self._contract(x, cores, bias)
        return y.reshape(*lead, self.out_features)

    def _contract(self, x: torch.Tensor, cores: list[torch.Tensor], bias: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, in_size) -> (B, out_features)`` with these cores and bias (the layer's, or
        their autocast copies)."""
        unpadded = self.tt_shape.out_size == self.out_features
        fast = getattr(self, "impl", "fast") == "fast"
        if fast:
            cache = self.__dict__.get("_merge_cache")  # made lazily: older pickles lack it
            if cache is None:
                cache = self.__dict__["_merge_cache"] = MergeCache()
        if fast:
            # a compiled call picks its plan when it runs (ttforge.model.fast.compiled)
            plan = None if compiled() else plan_for(self.tt_shape, x.shape[0])
        if fast and unpadded:
            return tt_apply(x, cores, plan, bias=bias, cache=cache)
        if fast:
            y = tt_apply(x, cores, plan, cache=cache)
        else:
            y = apply_schedule(x, cores, self.schedule)
        if not unpadded:
            y = y[:, : self.out_features]
        if bias is not None:
            y = y + bias
        return y

    def _core_list(self) -> list[torch.Tensor]:
        """The cores in order: the list's registered parameters by index (iterating a
        ``ParameterList`` costs 6 us of a 145 us batch-1 call), or its items when
        something else stands in for them (``torch.nn.utils.parametrize`` moves a
        parametrized core out of ``_parameters``, ``prune`` to ``NAME_orig``). Never by
        the dict's order: removing a parametrization or pruning puts a core back at its
        end (the cores were then contracted out of order). The list's pre-forward hooks
        (``prune`` recomputes a pruned core in one) run first, as if it were called."""
        cores = self.cores
        for hook in cores._forward_pre_hooks.values():
            hook(cores, ())
        params = cores._parameters
        n = len(cores)
        if len(params) == n:
            try:
                return [params[str(i)] for i in range(n)]
            except KeyError:
                pass
        return list(cores)

    def to_dense(self) -> torch.Tensor:
        """The full ``(out_features, in_features)`` weight (padding removed)."""
        return tt_to_dense(list(self.cores))[: self.out_features, : self.in_features]

    @property
    def n_params(self) -> int:
        """Core entries (bias excluded)."""
        return self.tt_shape.n_params

    @property
    def compression(self) -> float:
        """Dense weight entries over TT core entries."""
        return self.in_features * self.out_features / self.n_params

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        max_rank: int | None = None,
        rel_error: float | None = None,
        in_modes: Sequence[int] | None = None,
        out_modes: Sequence[int] | None = None,
    ) -> "TTLinear":
        """Decompose a trained :class:`torch.nn.Linear` with TT-SVD.

        With ``rel_error`` alone the TT weight is within ``rel_error`` of the dense one
        (relative Frobenius norm; TT-SVD runs in float64, so the cores' rounding to the
        Linear's dtype comes on top); ``max_rank`` caps every bond. The layer has the
        Linear's dtype and device; the error of the cores it holds is stored as
        ``layer.decomposition_error``.
        """
        weight = getattr(linear, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
            raise ConfigError(f"from_linear takes an nn.Linear (a 2-D weight), not "
                              f"{type(linear).__name__}")
        out_f, in_f = weight.shape
        # the Linear's dtype, as .to() would (a float64 Linear became float32 cores)
        layer = cls(in_f, out_f, ranks=1, in_modes=in_modes, out_modes=out_modes,
                    bias=linear.bias is not None, dtype=weight.dtype)
        W = torch.zeros(layer.tt_shape.out_size, layer.tt_shape.in_size, dtype=torch.float64)
        W[:out_f, :in_f] = weight.detach().double()
        cores = tt_svd(W, layer.out_modes, layer.in_modes, max_rank=max_rank, rel_error=rel_error)
        layer.set_cores(cores)
        # the error of what is stored (the float64 SVD's own hid float32 rounding: 2e-15
        # reported, 5e-8 held)
        layer.decomposition_error = tt_rel_error(list(layer.cores), W)
        if linear.bias is not None:
            with torch.no_grad():
                layer.bias.copy_(linear.bias)
        return layer.to(linear.weight.device)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"in_modes={list(self.in_modes)}, out_modes={list(self.out_modes)}, "
            f"ranks={list(self.ranks)}, order={list(self.schedule.order)}, "
            f"bias={self.bias is not None}, impl={getattr(self, 'impl', 'fast')!r}"
        )
