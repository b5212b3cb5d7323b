"""The fast float contraction of a TT-matrix layer (training and float inference).

:func:`~ttforge.model.layers.apply_schedule` follows the hardware's contraction order
step by step (one core at a time, the order of the layer's
:class:`~ttforge.ir.schedule.ContractionSchedule`), because the quantized model, the
integer executor and the accelerator must all round at the same places. A float layer
has no such constraint, so :func:`tt_apply` picks the order for the float cost on the
actual batch instead:

1. **Merge**: the cores are cut into contiguous groups, and the cores of a group are
   multiplied together first (a batch-independent cost: for ``(8, 8, 8, 8)`` modes at
   rank 16, merging pairs costs 2 M MACs once and halves the per-sample MACs; with one
   group the dense weight is rebuilt, which wins when the batch is large and the
   weight small).
2. **Apply** the merged cores to the batch with the same step machinery as the
   hardware order (:class:`~ttforge.ir.schedule.ContractionSchedule` on the merged
   shape), the batch as the *outermost* axis: a step whose block ends the layout is
   one matrix product ``(B*A, K) @ C^T``, other steps one batched product over
   ``B*A``; nothing is transposed, not even the input or the output.

No merge forms a tensor larger than :data:`MERGED_VALUES` (the dense weight of a
4096 x 4096 layer), whatever it would save. The partition and the order are chosen by
:func:`plan_for` with a small cost model
(MACs weighted by how well matrix kernels run on such shapes, plus a per-call
overhead), cached per (shape, batch bucket, thread count): batch buckets are powers of two. The
merges of cores into pairs run on one thread, forward and backward (a parallel region
costs more than their arithmetic); a rebuilt dense weight is merged on the threads of
its product (:class:`_TTApplyDense`). The merges are made once per forward and the
backward reuses them.

The backward pass is a custom :class:`torch.autograd.Function`: it keeps the input and
the (small) merged core matrices, not the intermediates, unless they are small; the
intermediates are recomputed chunk by chunk (batch chunks whose largest intermediate
holds at most :data:`BACKWARD_CHUNK_ELEMENTS` values), and each step's gradients are
one matrix product per chunk where the layout allows it, written in the orientation
matrix kernels run fastest. Recomputing costs one product per chunk; keeping the
intermediates instead would cost more here: a 64 MiB buffer takes longer to fault in
(31-39 ms, measured) than the 4096 x 4096 layer's recomputation (19-24 ms). Peak
activation memory is thus bounded by the chunk size, not the batch. On the CPU the
chunk buffers of both passes come from one work block per thread that is kept between
calls (at most :data:`KEEP_BYTES`, :func:`workspace_bytes`), so that no call pays page
faults for them. Under ``create_graph`` the backward is written in differentiable
torch operations, so second derivatives work too. At more than one intra-op thread
the backward without a graph runs as parts of the batch on Python threads of one
intra-op thread each (:data:`SPLIT_BACKWARD`). The backward follows the forward's
plan: a cost that adds the backward's products, the recomputation and the merges'
backward picks the same plan for the benchmark layers at every batch from 1 to 4,096
(docs/benchmarks.md, "TT layer speed"). A one-group plan (the dense weight rebuilt)
is a single autograd node, :class:`_TTApplyDense`, whose backward forms the weight's
gradient and walks the merge tree itself.

Under a ``torch.func`` transform or forward-mode AD (:func:`transformed`), and while
``torch.export`` or ``torch.jit.trace`` records the call (:func:`captured`), the same
merges and products run as plain differentiable operations on the whole batch, which
the transforms and captures can trace (custom nodes, work buffers and in-place writes
they cannot);
so do small batches under autograd (:data:`PLAIN_WHEN_KEPT`) and small layers rebuilt
as one dense weight (:data:`PLAIN_DENSE`), where autograd's own nodes cost less than the
custom backward's Python and buffers, unless the custom nodes would tune their threads
(plain operations cannot leave a second thread that a busy core holds up).

Calls without autograd (inference) keep the merged matrices between calls in the
layer's :class:`MergeCache` and reuse them while the cores are bit for bit unchanged
(compared on every call), so repeated inference pays the merges once.

Under ``torch.compile`` (:func:`compiled`) a call is one opaque operation of the graph,
``ttforge::tt_apply``, and its backward another, which run the code above on the
plan of the batch they get.

The arithmetic is float arithmetic in a different order: results equal the
hardware-order path within float rounding, never bit for bit. Quantization-aware
training and the integer paths use the hardware order (``quant/``), not this.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import json
import math
import threading
import time
from dataclasses import dataclass, replace
from typing import NamedTuple, Sequence

import torch

from ttforge.errors import ConfigError, ShapeError
from ttforge.ir.schedule import ContractionSchedule, ContractionStep, schedule_orders
from ttforge.ir.tt import TTShape

__all__ = ["FastPlan", "plan_for", "plan_macs", "tt_apply", "merge_cores", "MergeCache", "CACHE_MERGED",
           "transformed", "captured", "plain_ops_only", "CAPTURE_BATCH", "autocast_dtype",
           "dtypes_meet", "autocast_cast", "in_autocast_dtype", "check_input", "check_bias", "PLAIN_WHEN_KEPT", "PLAIN_DENSE", "MERGED_VALUES",
           "CHUNK_ELEMENTS",
           "BACKWARD_CHUNK_ELEMENTS", "KEEP_BYTES", "workspace_bytes", "clear_workspace", "compiled",
           "COMPILED_CACHE_BYTES", "COMPILED_KEPT_BYTES"]

#: Largest intermediate (values) of one batch chunk: 2**18 float32 values = 1 MiB, so
#: the running intermediates stay in a core's 2 MiB cache beside the step's input and
#: come from the allocator's heap rather than from fresh, page-faulting mappings
#: (measured: a 67 MB intermediate costs more to fault in than to compute). Half the
#: earlier 2**19 (measured side by side, 1 thread, batch 256, CPU-time medians of 41 /
#: 11 / 9 interleaved: forward of the 1024 x 1024 rank-8 layer 2.54 -> 2.41 ms, at
#: batch 1,024 9.53 -> 9.22, 4096 x 4096 rank 16 32.2 -> 31.4; forward+backward 1-3 %
#: faster; the plans of the benchmark layers keep their merges and orders).
CHUNK_ELEMENTS = 1 << 18

#: The same bound for the backward pass, which holds about three chunk-sized buffers
#: (the recomputed intermediate, its gradient and a product) instead of one; it was
#: half the forward's bound before that was halved too (measured, forward+backward
#: of the 1024 x 1024 rank-8 layer at batch 256, 1 thread: 12.6-12.8 ms with 16- or
#: 32-sample backward chunks, 16.5 ms with 64; the 4096 x 4096 rank-16 layer is within
#: noise from 2 to 8 samples; fewer chunks, less Python per backward).
BACKWARD_CHUNK_ELEMENTS = 1 << 18

#: Intra-op threads of the fast path's products: a number caps them, ``None`` uses
#: ``torch.get_num_threads()``, ``"auto"`` (the default) picks per call between one
#: thread and torch's, whichever ran the same products faster lately (:class:`_ThreadTuner`).
#: Two threads help on an idle machine and hurt on a busy one: each product is a
#: parallel region whose threads must all be scheduled (measured on the 2-core
#: development machine, loaded by other jobs: forward+backward of the 4096 x 4096
#: rank-16 layer 0.72 s on one thread, 1.58 s on two; 784 x 512 rank 16: 0.05 s vs
#: 0.20 s), and which case holds changes while a program runs. Products at one or two
#: threads can differ in the last bits, so under ``"auto"`` nothing is chosen while
#: PyTorch's deterministic algorithms are on (``torch.use_deterministic_algorithms``, as
#: in :func:`ttforge.model.seeding.deterministic`, which training runs in): the products
#: then run on torch's thread count and a seeded run repeats bit for bit at any count.
THREADS: int | None | str = "auto"

#: Intermediates are kept for the backward pass (instead of recomputed) when, over the
#: whole batch, they hold at most this many values or at most as many as the layer's
#: input and output (what a dense layer keeps).
SAVE_ELEMENTS = 1 << 18

#: Under autograd, a plan of more than one group on a small batch runs as plain
#: differentiable operations (:func:`_apply_ops`, autograd's own nodes) rather than
#: through the custom backward, whose Python and work buffers cost more than they save
#: there (see :func:`_plain` for "small"): measured on the AMD EPYC machine,
#: forward+backward at 1 thread, medians of 40-100 interleaved calls, 0.57-0.94x the
#: custom path's time on the three benchmark layers up to the largest such batch, e.g.
#: 326 against 565 us for the 784 x 512 rank-16 layer at batch 1; 0.72-0.94x at 2
#: threads, idle. Not where the custom nodes tune their threads (more than one torch
#: thread under ``THREADS = "auto"``, deterministic algorithms off): there a busy core
#: can hold every plain product up by a time slice (see :func:`tt_apply`), so this
#: applies at one thread, in deterministic runs (training) and off the CPU. Larger
#: batches keep the custom backward: autograd materializes the gradient
#: of a core shared by the samples of a batched product per sample (the 1024 layer at
#: batch 256: 21.5 against 13.0 ms) and would keep the intermediates, which the memory
#: bound forbids.
PLAIN_WHEN_KEPT = True

#: The largest per-sample gradient of shared cores (values, summed over the batched
#: steps) that :data:`PLAIN_WHEN_KEPT` lets autograd materialize: the 784 x 512 rank-8
#: layer (the MNIST network's) at batch 32 holds 229,376 and ran 5 % faster plain, at
#: batch 48 344,064 and 4 % slower (1 thread, medians of 100 alternating calls).
PLAIN_EXPANDED = 1 << 18

#: A one-group plan (the dense weight rebuilt) whose weight holds at most this many values
#: runs under autograd as plain operations too (under :data:`PLAIN_WHEN_KEPT`): there
#: :class:`_TTApplyDense`'s Python costs more than autograd's own nodes. Measured on the
#: AMD EPYC machine, forward+backward, medians of 200 interleaved calls, plain against
#: the custom node: 64 x 64 rank 4 (the digits network's layer) 0.76-0.88x at batches
#: 64-1,024 on 1 thread, 0.72-0.78x on 2, 0.82-0.85x on 2 with a core busy; 128 x 128
#: 0.82-0.96x, 0.74-0.92x, 0.85-0.91x. Above it the gain fades and turns (512 x 512
#: rank 8 1.04-1.07x; a 256 x 512 rank-16 layer at batch 64 beside a busy core 3.2x:
#: plain operations run on torch's threads, untuned). Like :data:`PLAIN_WHEN_KEPT`, only
#: where the custom nodes would not tune their threads.
PLAIN_DENSE = 1 << 14

# cost model, in multiply-accumulate equivalents (roughly calibrated on an AVX-512 core)
_CALL = 60_000  # one torch operation (dispatch, threading, python)
_MATRIX = 300  # one matrix of a batched product
_WRITE = 2  # one value written
_COPY = 4  # one value copied by a broadcast (contiguous) copy
_PERMUTE = 40  # one value copied by a general permutation
_HALF = 12  # a matrix dimension this small runs at half speed


def _eff(*dims: int) -> float:
    f = 1.0
    for n in dims:
        f *= 1.0 + _HALF / n
    return f


@dataclass(frozen=True)
class FastPlan:
    """How :func:`tt_apply` contracts one layer shape for one batch bucket.

    Attributes
    ----------
    groups : tuple of (int, int)
        Core ranges ``[lo, hi)`` merged before the batch is touched.
    schedule : ContractionSchedule
        The order in which the merged cores meet the batch (on the merged shape).
    chunk : int
        Samples per batch chunk (the largest intermediate of a chunk holds at most
        :data:`CHUNK_ELEMENTS` values); ``0`` means the whole batch at once.
    cost : float
        Modelled cost of one forward for the bucket's batch, in MAC equivalents.
    backward_chunk : int or None
        Samples per batch chunk of the backward pass (at most
        :data:`BACKWARD_CHUNK_ELEMENTS` values per intermediate; ``0`` the whole batch);
        ``None``: ``chunk``.
    bucket : int
        The batch bucket the chunks were sized for (``0``: chunks given by hand, kept
        at every thread count; see :func:`_for_threads`).
    threads : int
        The thread count the chunks were sized for.
    """

    groups: tuple[tuple[int, int], ...]
    schedule: ContractionSchedule
    chunk: int
    cost: float
    backward_chunk: int | None = None
    bucket: int = 0
    threads: int = 1

    @property
    def per_sample_intermediate(self) -> int:
        """Values of the largest intermediate (neither input nor output) per sample."""
        return max([s.out_elements for s in self.schedule.steps[:-1]], default=0)

    def describe(self) -> dict:
        return {"groups": [list(g) for g in self.groups],
                "order": list(self.schedule.order),
                "merged_in_modes": list(self.schedule.shape.in_modes),
                "merged_out_modes": list(self.schedule.shape.out_modes),
                "chunk": self.chunk,
                "backward_chunk": self.chunk if self.backward_chunk is None else self.backward_chunk}


def _partitions(d: int):
    """Every cut of ``0..d-1`` into contiguous groups, as tuples of ``(lo, hi)``."""
    for mask in range(1 << (d - 1)):
        cuts = [k + 1 for k in range(d - 1) if mask >> k & 1]
        bounds = [0, *cuts, d]
        yield tuple((bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1))


def _merged_shape(shape: TTShape, groups) -> TTShape:
    out_m = tuple(math.prod(shape.out_modes[lo:hi]) for lo, hi in groups)
    in_m = tuple(math.prod(shape.in_modes[lo:hi]) for lo, hi in groups)
    ranks = tuple(shape.ranks[lo] for lo, _ in groups) + (1,)
    return TTShape(out_m, in_m, ranks)


def _merge_cost(shape: TTShape, lo: int, hi: int,
                macs: bool = False) -> tuple[float, tuple[int, int, int, int]]:
    """Modelled cost of :func:`merge_cores` on cores ``lo..hi-1`` (with ``macs``: its
    multiply-accumulates alone) and the merged shape."""
    r, m, n = shape.ranks, shape.out_modes, shape.in_modes
    if hi - lo == 1:
        return 0, (r[lo], m[lo], n[lo], r[lo + 1])
    half = lo + (hi - lo) // 2
    ca, (r0, ma, na, r1) = _merge_cost(shape, lo, half, macs)
    cb, (_, mb, nb, r2) = _merge_cost(shape, half, hi, macs)
    rows = r0 * ma * na
    if macs:
        return ca + cb + mb * rows * r1 * nb * r2, (r0, ma * mb, na * nb, r2)
    cost = ca + cb + mb * rows * r1 * nb * r2 * _eff(rows, r1, nb * r2) + _MATRIX * mb
    cost += _COPY * (mb * r1 * nb * r2 + 2 * rows * mb * nb * r2) + 3 * _CALL
    return cost, (r0, ma * mb, na * nb, r2)


def plan_macs(shape: TTShape, plan: FastPlan, batch: int, backward: bool = False,
              need_x: bool = True) -> int:
    """Multiply-accumulates of one :func:`tt_apply` call of ``plan`` (made for the layer
    ``shape``) on ``batch`` samples: the merges and the step products of the forward,
    and with ``backward`` those of the backward too (each step's matrix gradient, the
    gradient of its input unless that is ``x`` and ``need_x`` is false, the
    intermediates recomputed unless kept, and two products per merge). Work, not
    time: how fast each product runs is what the plan's cost weighs."""
    merges = sum(_merge_cost(shape, lo, hi, macs=True)[0] for lo, hi in plan.groups)
    steps = [batch * s.A * s.K * s.P * s.Q for s in plan.schedule.steps]
    total = merges + sum(steps)
    if backward:
        total += 2 * merges + 2 * sum(steps) - (0 if need_x else steps[0])
        if len(steps) > 1 and not _keep(plan, batch):
            total += sum(steps[:-1])
    return int(total)


def _matrix_cost(s: ContractionStep, core_shape) -> float:
    """Turning a merged core into the step's ``(P, K)`` matrix: a copy unless a view."""
    moved = [a for a in s.core_axes if core_shape[a] > 1]
    return _CALL + (_PERMUTE * math.prod(core_shape) if moved != sorted(moved) else 0.0)


def _step_cost(s: ContractionStep, rows: int) -> float:
    n = rows * s.A
    if s.Q == 1:
        return n * s.K * s.P * _eff(n, s.K, s.P) + _WRITE * n * s.P + _CALL
    return (n * s.K * s.P * s.Q * _eff(s.K, s.P, s.Q) + _WRITE * n * s.P * s.Q
            + _MATRIX * n + _CALL)


def _chunk(per_sample: int, batch: int, threads: int, budget: int) -> int:
    """Samples per chunk whose largest intermediate (``per_sample`` values a sample)
    fits ``budget`` values scaled for ``threads``; ``0``: the whole batch."""
    # with more threads, fewer and larger chunks: every product is a parallel region
    # whose threads must all be scheduled; 2 * threads times the budget (measured, 2
    # threads, wall-clock medians of 19 interleaved: forward of the 1024 x 1024 rank-8
    # layer at batch 256 1.27 ms at 2**20 values a chunk, 1.53 ms at 2**18, 1.69 ms
    # unchunked (the former 8 * threads); forward+backward of the 4096 x 4096 layer 75
    # ms at 2**20, 82 ms at 2**18 and at 2**22)
    budget *= 1 if threads <= 1 else 2 * threads
    chunk = 0 if per_sample == 0 else max(1, budget // per_sample)
    if chunk >= batch:
        chunk = 0
    if chunk >= 16:
        chunk -= chunk % 16  # whole SIMD widths of rows
    return chunk


def _plan_cost(shape: TTShape, groups, sched: ContractionSchedule, batch: int,
               threads: int = 1) -> tuple[float, int]:
    per_sample = max([s.out_elements for s in sched.steps[:-1]], default=0)
    chunk = _chunk(per_sample, batch, threads, CHUNK_ELEMENTS)
    cost = 0.0
    merged = []
    for lo, hi in groups:
        c, mshape = _merge_cost(shape, lo, hi)
        cost += c
        merged.append(mshape)
    cost += sum(_matrix_cost(s, merged[s.core]) for s in sched.steps)
    rows = chunk or batch
    n_chunks = 1 if not chunk else -(-batch // chunk)
    cost += n_chunks * sum(_step_cost(s, rows) for s in sched.steps)
    # large intermediates that do not fit a chunk budget also pay for page faults
    return cost, chunk


#: The plan search tries every cut of the cores into merged groups up to this many cores
#: (2^6 cuts, 41 ms for 7 cores); beyond, the cuts into at most :data:`SEARCH_GROUPS`
#: groups, whose orders are few: a 12-core layer searched every cut in 16.9 s per batch
#: bucket, its cuts into at most four groups in 0.08 s. Over 240 layers of 5 to 8 cores
#: (modes 2 to 4, ranks 2 to 32, batches 1 to 4,096) the capped search found the full
#: search's plan but for 14 layers at batch 1, whose modelled cost was 0.2-5.6 % higher.
SEARCH_ALL_CORES = 7
SEARCH_GROUPS = 4


#: Values a merged group may hold (``r_lo * prod(m) * prod(n) * r_hi``): the dense
#: weight of a 4096 x 4096 layer, 64 MiB in float32. Plans whose merges would form a
#: larger tensor are not considered, whatever their modelled cost: the rebuilt weight,
#: the merge's work buffer and, under autograd, the weight's gradient and its moved
#: copy each take that much (a 65536 x 65536 layer of ranks 64-256-64, 8 M parameters,
#: would otherwise rebuild its 4.3 G-value weight, 17 GB, from batch 256 on, because
#: at those ranks the dense product is the fewer MACs). A core alone is never merged.
MERGED_VALUES = 1 << 24


def _merged_values(shape: TTShape, lo: int, hi: int) -> int:
    """Values of cores ``lo..hi-1`` merged into one tensor."""
    return (shape.ranks[lo] * math.prod(shape.out_modes[lo:hi]) * math.prod(shape.in_modes[lo:hi])
            * shape.ranks[hi])


def _searched(shape: TTShape, groups) -> bool:
    """Whether the plan search considers the cut ``groups`` (see :data:`SEARCH_ALL_CORES`
    and :data:`MERGED_VALUES`)."""
    if shape.d > SEARCH_ALL_CORES and len(groups) > SEARCH_GROUPS:
        return False
    return all(hi - lo == 1 or _merged_values(shape, lo, hi) <= MERGED_VALUES for lo, hi in groups)


@functools.lru_cache(maxsize=256)
def _plan_cached(shape: TTShape, bucket: int, threads: int = 1) -> FastPlan:
    best = None
    cuts = [g for g in _partitions(shape.d) if _searched(shape, g)]
    if not cuts:  # every cut tried merges too much: the cores one by one, in the two
        # end-to-end orders beyond SEARCH_ALL_CORES (2^(d-1) orders else)
        cuts = [tuple((k, k + 1) for k in range(shape.d))]
    for groups in cuts:
        mshape = _merged_shape(shape, groups)
        orders = (schedule_orders(mshape.d) if mshape.d <= SEARCH_ALL_CORES
                  else [tuple(range(mshape.d - 1, -1, -1)), tuple(range(mshape.d))])
        for order in orders:
            sched = ContractionSchedule.from_order(mshape, order)
            cost, chunk = _plan_cost(shape, groups, sched, bucket, threads)
            if best is None or cost < best.cost:
                best = FastPlan(groups, sched, chunk, cost)
    assert best is not None
    return replace(best, backward_chunk=_chunk(
        best.per_sample_intermediate, bucket, threads, BACKWARD_CHUNK_ELEMENTS),
        bucket=bucket, threads=threads)


@functools.lru_cache(maxsize=256)
def _for_threads(plan: FastPlan, threads: int) -> FastPlan:
    """``plan`` (same merges, same order, so the same step matrices) with the batch
    chunks sized for ``threads`` threads: under ``THREADS = "auto"`` the plan is the
    one-thread plan, and a region the tuner runs on more threads takes their larger
    chunks. A plan whose chunks were given by hand (``bucket == 0``) is kept."""
    if plan.bucket == 0 or threads == plan.threads:
        return plan
    per_sample = plan.per_sample_intermediate
    return replace(plan, chunk=_chunk(per_sample, plan.bucket, threads, CHUNK_ELEMENTS),
                   backward_chunk=_chunk(per_sample, plan.bucket, threads, BACKWARD_CHUNK_ELEMENTS),
                   threads=threads)


#: The batch whose plan a captured graph (:func:`captured`) records when the batch
#: size is symbolic (``torch.export`` with a dynamic batch dimension) or traced
#: (``torch.jit.trace``): the speed table's batch. Any plan gives the same function.
CAPTURE_BATCH = 256


def batch_bucket(batch: int) -> int:
    """The power of two at or above ``batch`` (plans are cached per bucket)."""
    return 1 << max(0, int(batch) - 1).bit_length()


def plan_for(shape: TTShape, batch: int, threads: int | None = None) -> FastPlan:
    """The cheapest plan for ``shape`` and a batch of ``batch`` samples on ``threads``
    threads (default: the products' threads under :data:`THREADS`; under ``"auto"`` the
    one-thread plan, whose merges and order every count runs, a region on more threads
    with their chunks, :func:`_for_threads`), cached per power-of-two bucket of the
    batch; the chunk size is the bucket's. A captured call's batch size that is not
    a number takes :data:`CAPTURE_BATCH`'s plan."""
    if not isinstance(batch, int) and captured():
        batch = CAPTURE_BATCH  # a symbolic or traced size (see captured)
    if threads is None:
        threads = (torch.get_num_threads() if THREADS is None
                   else 1 if THREADS == "auto" else min(THREADS, torch.get_num_threads()))
    return _plan_cached(shape, batch_bucket(batch), max(1, min(int(threads), 64)))


@contextlib.contextmanager
def _limit_threads(limit: int | None):
    """Run the block on at most ``limit`` intra-op threads (``None``: torch's setting)."""
    n = torch.get_num_threads()
    if limit is None or n <= limit:
        yield
        return
    try:
        # set inside the try: a Ctrl-C that arrives during the call is raised as it
        # returns, and before the try it skipped the restore (torch stayed at `limit`
        # threads for the rest of the process)
        torch.set_num_threads(limit)
        yield
    finally:
        torch.set_num_threads(n)


def _serial():
    """One intra-op thread (the merges of small cores and memory-bound sums: a parallel
    region costs more than their arithmetic, above all when a core is busy)."""
    return _limit_threads(1)


class _ThreadTuner:
    """Per region of products (a key), the recent wall times at one thread and at
    torch's thread count ``n``; :meth:`pick` returns the count of the lower median.

    Trials first, in the order ``1, n, n, 1`` (each count :data:`TRIES` times), and the
    lower median (with two times, the faster) decides; after three, when both trials at
    ``n`` took at most ``1 /`` :data:`EARLY` of the one at one thread, ``n`` is chosen
    without the fourth. Afterwards the other count is probed again after :data:`RETRY`
    calls (one thread chosen, or ``n`` against a single one-thread time) or
    :data:`RETRY_MORE` (``n`` chosen), an interval that doubles (up to
    :data:`RETRY_MAX`) while the choice stays and is reset when it changes, so that a
    slow count costs little once known; at once after two calls in a row that took
    more than :data:`SLOWER` times the other count's median (:data:`SLOWER_MORE` at
    ``n``: another process took a core; one such call on a loaded machine is often
    noise, and each probe costs a call at the slower count); and a probe that ran
    faster than the chosen count's median is confirmed by one more call at once, so
    that a count whose first trials were slow switches in two calls when its fresh
    times are better.

    Why two trials of a count that loses, whatever the first showed, and a probe soon
    after one thread won: right after a program (or the benchmark) moves to two
    threads, the first parallel regions can be several times slower than later ones
    (measured on the 2-core machine: 256 x 784 x 512 products 6-8 ms for the first ten
    calls, 0.6 ms afterwards, one thread 1.2 ms). The former rule decided after one
    trial each when one count was twice as slow, and probed first after 16 calls, so
    one such trial kept one thread for a whole 12-call benchmark table. A second trial
    of a count that a busy core makes slow costs one slow call (chunked regions leave
    it after a chunk, :class:`_Run`). The confirmation keeps a single lucky probe (two
    threads beside a busy core) from switching.

    Why ``n`` may win early and is probed against later: nothing makes the one-thread
    count look slower than it is but the first call of a region (it takes that one; a
    probe soon after an early choice retimes it warm), and a core taken from ``n``
    shows as ``n``'s own calls slowing down, which :data:`SLOWER_MORE` catches within
    two calls; every trial or probe of one thread where ``n`` wins costs a call at up
    to half speed (the benchmark's two-thread idle tables, 12 calls of each pass and
    contender: 5 of 24 backward and 6 of 49 forward regions on one thread under the
    former rule, 3 and 3 under this one).
    """

    TRIES = 2
    EARLY = 1.25
    CLEAR = 2.0
    KEEP = 4
    RETRY = 4
    RETRY_MORE = 16
    RETRY_MAX = 256
    SLOWER = 1.5
    SLOWER_MORE = 1.0
    #: Regions remembered (the least recently picked is forgotten first): a key holds
    #: the exact batch size, and a server fed every size from 1 to 10^6 would otherwise
    #: keep a record for each (about 1 KB apiece).
    KEYS = 4096

    def __init__(self) -> None:
        self.state: collections.OrderedDict = collections.OrderedDict()
        self.lock = threading.Lock()

    @staticmethod
    def _median(times: list[float]) -> float:
        return sorted(times)[(len(times) - 1) // 2]

    def _best(self, st: dict) -> int:
        return min(st["times"], key=lambda t: self._median(st["times"][t]))

    def _tried(self, times: dict, n: int) -> bool:
        """The trials are over: both counts tried :data:`TRIES` times, or ``n`` won
        early (see the class)."""
        if all(len(v) >= self.TRIES for v in times.values()):
            return True
        one, more = times[1], times[n]
        return (len(one) == 1 and len(more) >= self.TRIES
                and self.EARLY * max(more[:self.TRIES]) <= one[0])

    def _choose(self, st: dict, best: int) -> None:
        """Make ``best`` the choice: the other count's first probe :data:`RETRY` calls
        on (:data:`RETRY_MORE` where ``n`` wins against two one-thread times), the
        intervals after it from the same, doubling."""
        st["best"] = best
        st["every"] = self.RETRY if best == 1 else self.RETRY_MORE
        first = self.RETRY if best == 1 or len(st["times"][1]) < self.TRIES else self.RETRY_MORE
        st["next"] = st["calls"] + first

    def pick(self, key, n: int) -> int:
        with self.lock:
            st = self.state.setdefault((key, n), {"times": {1: [], n: []}, "calls": 0, "retry": None,
                                                  "every": self.RETRY, "next": None, "best": 1,
                                                  "runs": {1: 0, n: 0}})
            self.state.move_to_end((key, n))
            while len(self.state) > self.KEYS:
                self.state.popitem(last=False)
            st["calls"] += 1
            times = st["times"]
            if st["next"] is None:  # trying: 1, n, n, 1
                return 1 if not times[1] or len(times[n]) >= self.TRIES else n
            if st["retry"] is not None:
                t, st["retry"] = st["retry"], None
                return t
            if st["calls"] >= st["next"]:
                st["next"] = st["calls"] + st["every"]
                st["every"] = min(2 * st["every"], self.RETRY_MAX)
                return n + 1 - st["best"]
            return st["best"]

    def expect(self, key, n: int, t: int) -> float | None:
        """The median time of count ``t`` on ``key`` (``None``: not yet timed)."""
        with self.lock:
            st = self.state.get((key, n))
            times = st["times"][t] if st else None
            return self._median(times) if times else None

    def record(self, key, n: int, t: int, seconds: float) -> None:
        with self.lock:
            st = self.state.get((key, n))
            if st is None:  # forgotten since it was picked (other regions' picks)
                return
            decided = st["next"] is not None
            if decided:
                other = self._median(st["times"][n + 1 - t])
                if t != st["best"]:
                    if seconds < self._median(st["times"][st["best"]]):
                        st["retry"] = t  # a probe that beat the choice: confirm it
                elif seconds > (self.SLOWER if t == 1 else self.SLOWER_MORE) * other:
                    st["slow"] = st.get("slow", 0) + 1
                    if st["slow"] >= 2:
                        st["retry"], st["slow"] = n + 1 - t, 0
                else:
                    st["slow"] = 0
            st["runs"][t] += 1
            times = st["times"][t]
            times.append(seconds)
            del times[:-self.KEEP]
            if decided or self._tried(st["times"], n):
                best = self._best(st)
                if best != st["best"] or not decided:
                    self._choose(st, best)


_TUNER = _ThreadTuner()


def _key(x: torch.Tensor, plan: FastPlan, *what):
    """The :data:`_TUNER` key of a region of products on ``x`` (``None`` off the CPU,
    where torch's intra-op threads do not run them)."""
    return (plan, x.shape[0], x.dtype, *what) if x.device.type == "cpu" else None


class _Run:
    """The thread count of one region of products under way: :meth:`chunk` after each
    batch chunk moves the rest of the region to the other count when this one is
    clearly losing (see :func:`_compute`)."""

    def __init__(self, threads: int = 0, other: int = 0, expect: float | None = None) -> None:
        self.threads, self.other, self.expect = threads, other, expect
        self.t0 = time.perf_counter()
        self.projected: float | None = None

    def plan(self, plan: FastPlan) -> FastPlan:
        """``plan`` with the chunks of the count the tuner picked (:func:`_for_threads`);
        untuned regions keep the plan as given (a seeded run's products stay as they
        were)."""
        return plan if self.threads <= 1 else _for_threads(plan, self.threads)

    def chunk(self, done: int, total: int) -> None:
        """``done`` of ``total`` samples are through (judged from a sixteenth of the
        region on, so that one slow chunk does not decide)."""
        if self.expect is None or self.projected is not None or not total <= 16 * done < 16 * total:
            return
        projected = (time.perf_counter() - self.t0) * total / done
        if projected > _ThreadTuner.CLEAR * self.expect:
            # e.g. two threads with a core taken: a parallel region per product waits
            # for a time slice, and a whole call took 6-11x one thread's (4096 layer,
            # batch 1024); one chunk of it costs little
            self.projected = projected
            torch.set_num_threads(self.other)


#: What :func:`_compute` yields when nothing is tuned.
_UNTUNED = _Run()


def _tunes() -> bool:
    """Whether :func:`_compute` picks the thread count of CPU regions (``THREADS ==
    "auto"``, more than one torch thread, deterministic algorithms off)."""
    return (THREADS == "auto" and torch.get_num_threads() > 1
            and not torch.are_deterministic_algorithms_enabled())


#: :func:`_tunes` as a compiled graph records it: asked while dynamo traces, kept by
#: the graph (dynamo cannot trace ``torch.get_num_threads``).
_tunes_when_traced = torch.compiler.assume_constant_result(_tunes)


@contextlib.contextmanager
def _compute(key=None):
    """The intra-op threads of the products: at most :data:`THREADS`, or under
    ``"auto"`` the count :data:`_TUNER` picks for ``key`` (timed for it); torch's
    count, untimed, while deterministic algorithms are on (results that repeat).

    Yields a :class:`_Run`: a chunked region that reports its chunks to it leaves a
    count projected to take more than :data:`_ThreadTuner.CLEAR` times the other
    count's median after the chunk that shows it (the call is recorded at the
    projected time), so that trying a count that a busy core makes slow costs about
    a chunk, not a call.
    """
    n = torch.get_num_threads()
    if key is None or not _tunes():
        with _limit_threads(None if THREADS == "auto" else THREADS):
            yield _UNTUNED
        return
    t = _TUNER.pick(key, n)
    run = _Run(t, n + 1 - t, _TUNER.expect(key, n, n + 1 - t))
    try:
        torch.set_num_threads(t)   # inside the try, as in _limit_threads
        yield run
    finally:
        torch.set_num_threads(n)
    _TUNER.record(key, n, t, run.projected or time.perf_counter() - run.t0)


# -- execution ------------------------------------------------------------------------
class _Merge2(torch.autograd.Function):
    """``(r0, MA, NA, r1) x (r1, MB, NB, r2) -> (r0, MA*MB, NA*NB, r2)``.

    Forward: one batched product over ``MB`` (``(r0*MA*NA, r1) @ (r1, NB*r2)`` per
    ``mb``) and one copy that moves ``MB`` in front of the contiguous ``NA*NB*r2``
    blocks. Backward: one copy of the gradient into the layout ``(r0*MA*NA,
    MB*NB*r2)`` (a reused work buffer) and one matrix product per core; autograd
    through the forward's operations took several copies and a sum over ``MB``
    (measured, forward+backward of the 784 x 512 layer's merges, 1 thread: 2.8-3.3 ms
    before, 2.0-2.4 ms after).
    """

    @staticmethod
    def forward(ctx, a, b):  # type: ignore[override]
        with _serial():
            return _Merge2._forward(ctx, a, b)

    @staticmethod
    def _forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return _merge2_product(a, b)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        with _serial():
            return _Merge2._backward(ctx, g)

    @staticmethod
    def _backward(ctx, g):
        a, b = ctx.saved_tensors
        return _merge2_grads(a, b, g, *ctx.needs_input_grad[:2])


def _merge2_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The merge ``(r0, MA, NA, r1) x (r1, MB, NB, r2) -> (r0, MA*MB, NA*NB, r2)``, no
    autograd (see :class:`_Merge2`); the result is a fresh tensor."""
    r0, ma, na, r1 = a.shape
    _, mb, nb, r2 = b.shape
    # one product (r0*MA*NA, r1) @ (r1, MB*NB*r2) into a work buffer (a fresh one
    # costs page faults, more than the product for the 784 x 512 layer), then one
    # copy that moves MB in front of NA: measured 0.21 ms against 0.33 ms for a
    # batched product per mb and a copy of whole NA*NB*r2 blocks (784 x 512 layer,
    # the last merge, 1 thread, CPU-time medians of 38 interleaved calls)
    tmp = _buffers(a, [r0 * ma * na * mb * nb * r2])[0].view(r0 * ma * na, mb * nb * r2)
    torch.mm(a.reshape(r0 * ma * na, r1), b.reshape(r1, mb * nb * r2), out=tmp)
    out = a.new_empty(r0, ma * mb, na * nb, r2)
    out.view(r0 * ma, mb, na, nb * r2).copy_(tmp.view(r0 * ma, na, mb, nb * r2).transpose(1, 2))
    return out


def _merge2_grads(a: torch.Tensor, b: torch.Tensor, g: torch.Tensor, need_a: bool = True,
                  need_b: bool = True, work: torch.Tensor | None = None):
    """Gradients of ``a`` and ``b`` (or ``None``) of :func:`_merge2_product` given the
    result's gradient ``g``: one copy of ``g`` into the layout ``(r0*MA*NA, MB*NB*r2)``
    (``work``, ``g.numel()`` values, or the thread's work block; unless autograd
    records: ``create_graph``) and one product each."""
    r0, ma, na, r1 = a.shape
    _, mb, nb, r2 = b.shape
    g = g.reshape(r0, ma, mb, na, nb * r2).transpose(2, 3)
    if _graph_backward(g):  # create_graph or a vmap'd backward: plain operations
        gp = g.reshape(r0 * ma * na, mb * nb * r2)
    else:
        gp = (_buffers(g, [g.numel()])[0] if work is None else work).view(g.shape)
        gp = gp.copy_(g).view(r0 * ma * na, mb * nb * r2)
    ga = gb = None
    if need_a:
        ga = (gp @ b.reshape(r1, mb * nb * r2).t()).view(a.shape)
    if need_b:
        gb = (a.reshape(r0 * ma * na, r1).t() @ gp).view(b.shape)
    return ga, gb


def _merge2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(r0, MA, NA, r1) x (r1, MB, NB, r2) -> (r0, MA*MB, NA*NB, r2)`` (see :class:`_Merge2`)."""
    return _Merge2.apply(a, b)


def _require_cores(cores: Sequence[torch.Tensor], who: str) -> None:
    """A one-line :class:`ShapeError` naming ``who`` when ``cores`` is empty, and
    :func:`require_real` of the cores."""
    if not cores:
        raise ShapeError(f"{who} needs at least one core (got none)")
    require_real(cores[0], f"{who}'s cores")


def require_real(t: torch.Tensor, what: str) -> None:
    """A one-line :class:`ConfigError` when ``t`` is complex: the TT products are real
    (the hand-written backwards do not conjugate, so a complex layer's gradients were
    silently wrong while its forward was right)."""
    if t.is_complex():
        raise ConfigError(f"{what} are {t.dtype}; TT layers are real: use a floating dtype "
                          f"(float32, float64, float16 or bfloat16)")


def merge_cores(cores: Sequence[torch.Tensor]) -> torch.Tensor:
    """Multiply neighbouring cores ``(r, m, n, r')`` into one ``(r0, prod m, prod n, r_end)``
    (halves first, so that the largest product is made once), through autograd."""
    _require_cores(cores, "merge_cores")
    return _merge_tree(cores, _merge_ops if plain_ops_only() else _merge2)[0]


def _merge_tree(cores: Sequence[torch.Tensor], merge=None, lo: int = 0,
                hi: int | None = None):
    """:func:`merge_cores` of ``cores[lo:hi]`` with ``merge`` (default
    :func:`_merge2_product`, no autograd) and the tree of merges it made, for
    :func:`_tree_grads`: a core's index, or ``(left, right, a, b)`` with the two merged
    operands (``None`` for a core)."""
    hi = len(cores) if hi is None else hi
    merge = _merge2_product if merge is None else merge
    if hi - lo == 1:
        return cores[lo], lo
    half = lo + (hi - lo) // 2
    a, left = _merge_tree(cores, merge, lo, half)
    b, right = _merge_tree(cores, merge, half, hi)
    return merge(a, b), (left, right, None if isinstance(left, int) else a,
                         None if isinstance(right, int) else b)


def _tree_grads(cores: Sequence[torch.Tensor], tree, g: torch.Tensor, grads: list,
                work: torch.Tensor | None = None) -> None:
    """Fill ``grads[k]`` with core ``k``'s gradient, given the gradient ``g`` of the
    merge ``tree`` (:func:`_merge_tree`) walked from its root (whose moved gradient
    goes to ``work`` if given, see :func:`_merge2_grads`)."""
    if isinstance(tree, int):
        grads[tree] = g
        return
    left, right, a, b = tree
    a = cores[left] if a is None else a
    b = cores[right] if b is None else b
    ga, gb = _merge2_grads(a, b, g, work=work)
    _tree_grads(cores, left, ga, grads)
    _tree_grads(cores, right, gb, grads)


def _step_matrices(cores: Sequence[torch.Tensor], plan: FastPlan, merge=None,
                   trees: list | None = None) -> list[torch.Tensor]:
    """The ``(P, K)`` matrix of every step of ``plan``, its groups merged with ``merge``
    (default :func:`_merge2`, through autograd); the groups' merge trees (see
    :func:`_merge_tree`) are appended to ``trees`` if given."""
    built = [_merge_tree(cores, merge or _merge2, lo, hi) for lo, hi in plan.groups]
    if trees is not None:
        trees.extend(tree for _, tree in built)
    return [built[s.core][0].permute(*s.core_axes).reshape(s.P, s.K) for s in plan.schedule.steps]


def transformed() -> bool:
    """Whether a ``torch.func`` transform (``vmap``, ``grad``, ``jacrev``, ``jvp``, ...)
    or forward-mode AD (``torch.autograd.forward_ad``) is under way.

    The fast path's custom autograd nodes, work buffers and in-place writes are then
    replaced by plain differentiable operations (:func:`_apply_ops`), which every
    transform supports: the transforms need a ``setup_context``, a vmap rule and a
    forward-mode rule of each custom node, and a vmap'd call cannot write into an
    unbatched buffer.
    """
    return (torch._C._are_functorch_transforms_active()
            or getattr(torch.autograd.forward_ad, "_current_level", -1) >= 0)


def captured() -> bool:
    """Whether the call is being recorded as a graph to run elsewhere:
    ``torch.export`` (and the exporters built on it) or ``torch.jit.trace``.

    The recorded graph must hold plain operations: a custom autograd node does not
    survive either capture (``torch.jit.trace`` fails inside it; ``torch.export``
    finds the work block and the merge cache's tensors as constants, and the in-place
    ``out=`` products refuse tensors that require gradients), and a batch of a
    symbolic size (``torch.export`` with a dynamic batch dimension) cannot pick a
    plan by its size (:data:`CAPTURE_BATCH`).
    """
    return torch.jit.is_tracing() or torch.compiler.is_exporting()


def plain_ops_only() -> bool:
    """Whether the call must be plain differentiable operations on the whole batch:
    a transform (:func:`transformed`) or a capture (:func:`captured`)."""
    return transformed() or captured()


def _graph_backward(g: torch.Tensor) -> bool:
    """Whether a custom node's backward, given the output gradient ``g``, must be plain
    operations, no work buffers or ``out=`` products: ``create_graph`` (autograd records
    the backward), or a vmap over the backward itself (``is_grads_batched=True``,
    ``jacobian(..., vectorize=True)``: ``g`` is a legacy batched tensor, and an ``out=``
    product or a copy into an unbatched buffer has no batching rule, "aten::mm.out"),
    which the forward, run unbatched through the custom nodes, could not see coming."""
    return torch.is_grad_enabled() or transformed() or _legacy_batched(g)


#: ``torch._C._functorch.is_legacy_batchedtensor`` (``None`` in a torch without it).
_IS_LEGACY_BATCHED = getattr(torch._C._functorch, "is_legacy_batchedtensor", None)


def _legacy_batched(g: torch.Tensor) -> bool:
    """Whether ``g`` is a batched tensor of ``torch._vmap_internals`` (the vmap of
    ``torch.autograd.grad(..., is_grads_batched=True)``; not a ``torch.func`` one)."""
    return bool(_IS_LEGACY_BATCHED is not None and _IS_LEGACY_BATCHED(g))


def _merge_ops(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """:func:`_merge2_product` in plain differentiable operations (see :func:`transformed`)."""
    r0, ma, na, r1 = a.shape
    _, mb, nb, r2 = b.shape
    t = a.reshape(r0 * ma * na, r1) @ b.reshape(r1, mb * nb * r2)
    return t.reshape(r0, ma, na, mb, nb * r2).transpose(2, 3).reshape(r0, ma * mb, na * nb, r2)


def _apply_ops(x: torch.Tensor, cores: Sequence[torch.Tensor], plan: FastPlan,
               bias: torch.Tensor | None) -> torch.Tensor:
    """:func:`tt_apply` in plain differentiable operations, the whole batch at once, on
    torch's threads (see :func:`transformed` and :data:`PLAIN_WHEN_KEPT`): the same
    merges, order and products."""
    t, batch = x, x.shape[0]
    for s, C in zip(plan.schedule.steps, _step_matrices(cores, plan, _merge_ops)):
        t = _step(t, C, s, batch)
    y = t.reshape(batch, plan.schedule.shape.out_size)
    return y if bias is None else y + bias


def _step(t: torch.Tensor, C: torch.Tensor, s: ContractionStep, b: int,
          out: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> torch.Tensor:
    """One step on a chunk of ``b`` samples held as ``(b, A, K, Q)`` (batch outermost),
    plus ``bias`` (the layer's; only where the step is one matrix product of whole
    samples: ``A == 1`` and ``Q == 1`` or a single sample)."""
    n = b * s.A
    if s.Q == 1:
        o = out.view(n, s.P) if out is not None else None
        if bias is None:
            return torch.mm(t.reshape(n, s.K), C.t(), out=o)
        return torch.addmm(bias, t.reshape(n, s.K), C.t(), out=o)
    if isinstance(n, int) and n == 1:  # not a traced size (see captured)
        o = out.view(s.P, s.Q) if out is not None else None
        if bias is None:
            return torch.mm(C, t.reshape(s.K, s.Q), out=o)
        return torch.addmm(bias.view(s.P, s.Q), C, t.reshape(s.K, s.Q), out=o)
    assert bias is None, "a batched product over samples leaves the bias to _forward"
    o = out.view(n, s.P, s.Q) if out is not None else None
    return torch.bmm(C.expand(n, s.P, s.K), t.reshape(n, s.K, s.Q), out=o)


def _forward(x: torch.Tensor, mats: Sequence[torch.Tensor], plan: FastPlan,
             keep: bool = False, bias: torch.Tensor | None = None, run: _Run = _UNTUNED,
             own: bool = False):
    """``x (B, N) -> y (B, M)`` plus ``bias`` if given; with ``keep`` also the inputs of
    every step after the first; chunks are reported to ``run``. With ``own`` (an autograd
    Function's or a custom operation's output) ``y`` is never a view."""
    steps = plan.schedule.steps
    batch = x.shape[0]
    out_size = plan.schedule.shape.out_size
    chunk = plan.chunk
    # the last product adds the bias when it is one matrix product of whole samples
    # (addmm, no pass over y); after a batched product over samples (the merged-pair
    # plans) one add over the whole y at the end beats an add per chunk (measured,
    # forward at batch 256, 1 thread, wall-clock medians of 3 x 401 / 3 x 31
    # interleaved: 1024 x 1024 rank-8 layer 3.00-3.05 -> 2.93-2.99 ms, 4096 x 4096
    # 40.6-42.7 -> 40.6-42.1 ms; forward+backward of the 1024 layer 0.2-2 % faster);
    # baddbmm on an expanded bias, which copies it into every sample first, was slower
    # still (2.70 ms against 2.29 for bmm and an add per chunk, CPU-time medians of 29)
    last = steps[-1]
    fused = bias if last.A == 1 and (last.Q == 1 or batch == 1) else None
    if not chunk or chunk >= batch:
        # an autograd Function's output that is a view (the reshape of a last product of
        # another shape) is refused by every in-place op (y.relu_(), a following
        # nn.ReLU(inplace=True)), which nn.Linear's output takes: there the last product
        # is written into y itself (not always: the empty y and out= cost 2-9 % of a
        # batch-1 to 8 call without autograd, review V8)
        y = (torch.empty(batch, out_size, dtype=x.dtype, device=x.device)
             if own and not (last.A == 1 and last.Q == 1) else None)
        t, kept = x, []
        for i, (s, C) in enumerate(zip(steps, mats)):
            if keep and t is not x:
                kept.append(t)
            final = i == len(steps) - 1
            t = _step(t, C, s, batch, out=y if final else None, bias=fused if final else None)
        if y is None:
            # (batch, M) already when the last step is one product of whole samples
            y = t if t.shape == (batch, out_size) else t.reshape(batch, out_size)
    else:
        y, kept = torch.empty(batch, out_size, dtype=x.dtype, device=x.device), []
        bufs = _buffers(x, [chunk * s.out_elements for s in steps[:-1]])
        for lo in range(0, batch, chunk):
            t = x[lo:lo + chunk]
            b = t.shape[0]
            for i, (s, C) in enumerate(zip(steps, mats)):
                last = i == len(steps) - 1
                t = _step(t, C, s, b, out=y[lo:lo + b] if last else bufs[i][:b * s.out_elements],
                          bias=fused if last else None)
            run.chunk(lo + b, batch)
    if bias is not None and fused is None:
        y += bias
    return y, kept


#: Per-thread work blocks of the CPU paths, one per dtype (see :func:`_buffers`).
_WORKSPACE = threading.local()

#: Offsets of work buffers inside a block are multiples of this many values (64 bytes
#: of float32: whole cache lines and SIMD vectors).
_ALIGN = 16

#: Most bytes of work blocks a thread keeps between calls, all dtypes together: a call
#: that needs a larger set gets fresh buffers, and a block that would take the total
#: past this drops the other dtypes' blocks, so a thread never holds more than this
#: after a large call (the chunk budgets keep the usual sets of buffers at a few MiB).
KEEP_BYTES = 1 << 24


def _buffers(like: torch.Tensor, sizes: Sequence[int]) -> list[torch.Tensor]:
    """Work buffers of ``sizes`` values, reused by every chunk of one call and, on the
    CPU, carved out of one block per thread and dtype that is kept across calls.

    A fresh large tensor costs page faults that can exceed the arithmetic: glibc
    returns freed memory to the system, and the next call faults it in again
    (measured, forward+backward of the 1024 x 1024 rank-8 layer at batch 256: 1,250
    to 1,500 page faults and 13.5-16 ms per call with fresh buffers, none and 10-11
    ms once the allocator kept them). The block holds the largest set of buffers one
    call has needed, up to :data:`KEEP_BYTES` for all the thread's blocks together
    (:func:`workspace_bytes`); no result is ever a view of it. Other devices'
    allocators cache blocks themselves, so there the buffers are fresh.
    """
    offsets, total = [], 0
    for n in sizes:
        offsets.append(total)
        total += -(-n // _ALIGN) * _ALIGN
    if like.device.type != "cpu" or total * like.element_size() > KEEP_BYTES:
        return [torch.empty(n, dtype=like.dtype, device=like.device) for n in sizes]
    blocks = _WORKSPACE.__dict__.setdefault("blocks", {})
    block = blocks.get(like.dtype)
    if block is None or block.numel() < total:
        # the cap is the thread's, not a dtype's (float32 and float64 calls kept twice
        # KEEP_BYTES); only a new block pays this sum, the calls that reuse one do not
        if total * like.element_size() + sum(b.numel() * b.element_size() for d, b in blocks.items()
                                             if d != like.dtype) > KEEP_BYTES:
            blocks.clear()
        # never an inference tensor (made under torch.inference_mode), which every later
        # call outside inference mode could not write into
        with torch.inference_mode(False):
            block = blocks[like.dtype] = torch.empty(total, dtype=like.dtype)
    return [block[o:o + n] for o, n in zip(offsets, sizes)]


def workspace_bytes() -> int:
    """Bytes of the work blocks this thread keeps between calls (see :func:`_buffers`;
    the split backward's threads keep theirs, :data:`SPLIT_BACKWARD`)."""
    blocks = getattr(_WORKSPACE, "blocks", {})
    return sum(b.numel() * b.element_size() for b in blocks.values())


def clear_workspace() -> None:
    """Free this thread's work blocks (the next call allocates them again), the threads
    of the split backward with theirs (:data:`SPLIT_BACKWARD`; made again when next
    needed), and the merges and intermediates that compiled calls keep
    (:func:`compiled`; every thread's)."""
    getattr(_WORKSPACE, "blocks", {}).clear()
    _CORE_CACHES.clear()
    _KEPT.clear()
    _SPLIT_POOL.shutdown()


def _backward_chunk(x, gy, mats, steps, need_x, transposed):
    """Gradients of one chunk as differentiable operations, the step inputs recomputed:
    (grad of x or None, [grad of each step matrix]); ``transposed`` is
    :func:`_transposed` of the step matrices."""
    b = x.shape[0]
    ts, t = [x], x
    for s, C in zip(steps[:-1], mats[:-1]):
        t = _step(t, C, s, b)
        ts.append(t)
    g = gy
    gmats = [None] * len(steps)
    for i in range(len(steps) - 1, -1, -1):
        s, C, X = steps[i], mats[i], ts[i]
        n = b * s.A
        if s.Q == 1:
            g2 = g.reshape(n, s.P)
            gmats[i] = g2.t() @ X.reshape(n, s.K)
            if i or need_x:
                g = g2 @ C
        else:
            g3 = g.reshape(n, s.P, s.Q)
            X3 = X.reshape(n, s.K, s.Q)
            if s.P * s.K <= s.Q * (s.K + s.P):
                gmats[i] = torch.bmm(g3, X3.transpose(1, 2)).sum(0)
            else:
                gmats[i] = (g3.transpose(1, 2).reshape(n * s.Q, s.P).t()
                            @ X3.transpose(1, 2).reshape(n * s.Q, s.K))
            if i or need_x:
                g = torch.bmm(transposed[i].expand(n, s.K, s.P), g3)
    return (g.reshape(b, -1) if need_x else None), gmats


def _transposed(mats: Sequence[torch.Tensor], steps: Sequence[ContractionStep],
                need_x: bool) -> list[torch.Tensor | None]:
    """``C^T`` of each step over samples (``Q > 1``) whose input gradient the backward
    takes (``None`` for the others), contiguous: a batched product of an expanded
    transposed view is much slower than of the same matrix copied once (1 thread, the
    4096 x 4096 layer's ``(4, 1024, 64) @ (4, 64, 64)`` per chunk: 563 us against 355,
    medians of 200; the copy of its 65,536 values is one per call)."""
    return [C.t().contiguous() if s.Q > 1 and (i or need_x) else None
            for i, (s, C) in enumerate(zip(steps, mats))]


def _wide(s: ContractionStep) -> bool:
    """Whether step ``s``'s matrix gradient is accumulated transposed, ``(K, P)``.

    For a flat step (``Q == 1``) the product is written with the larger of ``P`` and
    ``K`` as its columns: matrix kernels run a wide output much faster than a tall one
    (measured, 1 thread, AVX-512 MKL: ``(16384 x 64)^T @ (16384 x 1024)`` in 22 ms,
    the same product as a ``(1024, 64)`` output in 37 ms). A step over samples
    (``Q > 1``) takes its per-sample products as ``X_j @ g_j^T`` (the large operand
    untransposed: 2.6 ms vs 3.1 ms on the 1024 x 1024 layer).
    """
    return s.Q > 1 or s.P >= s.K


#: Cost model of a sample-wise step's matrix gradient ``sum_j X_j g_j^T``: batched
#: products into a work buffer and its sum cost about ``_SUM_VALUE`` MACs per value of
#: the buffer; accumulating each sample's product in place (``addmm_``, no buffer)
#: costs ``_LOOP_CALL`` per call. Measured on the two merged-pair layers: the buffer
#: wins for ``256 x 32`` per-sample gradients (2.6 ms vs 3.4 ms) and, since the buffer
#: is a reused work block (:func:`_buffers`), also for ``64 x 1024`` (forward+backward
#: of the 4096 x 4096 layer, 1 thread, CPU-time medians of three interleaved runs on
#: the loaded machine: 140 / 145 / 171 ms with the buffer, 157 / 145 / 176 ms with
#: the loop; with a fresh buffer per call the loop had won, 25 ms vs 30 ms); the loop
#: remains for per-sample gradients above 100,000 values.
_SUM_VALUE = 20
_LOOP_CALL = 2_000_000


def _loops(s: ContractionStep) -> bool:
    """Whether step ``s``'s per-sample gradient products accumulate in place (see
    :data:`_LOOP_CALL`) rather than through a work buffer and a sum."""
    return s.Q > 1 and s.P * s.K * _SUM_VALUE > _LOOP_CALL


def _addmm(acc: torch.Tensor | None, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``acc + a @ b``, in place; the first term (``acc`` is ``None``) is written fresh
    (no zero-filled accumulator to read back)."""
    return torch.mm(a, b) if acc is None else acc.addmm_(a, b)


def _backward_buffered(x, gy, mats, steps, need_x, chunk, kept=None, run: _Run = _UNTUNED,
                       gx: torch.Tensor | None = None):
    """The backward when no graph of it is needed: gradients of ``x`` (or ``None``) and
    of each step matrix, chunk by chunk with work buffers reused across chunks and the
    matrix gradients accumulated in place; the step inputs come from ``kept`` (the
    forward's intermediates over the whole batch) or are recomputed per chunk.

    Each matrix gradient is one product per chunk for a flat step, in the faster
    orientation (:func:`_wide`), and for a step over samples either a batched product
    accumulated per sample slot over the chunks and summed once at the end, or a
    product per sample accumulated in place (:func:`_loops`). The input gradient goes to
    ``gx`` if given (``x``'s shape), else to a new tensor.
    """
    batch = x.shape[0]
    gmats: list[torch.Tensor | None] = [None] * len(steps)
    if need_x and gx is None:
        gx = torch.empty_like(x)
    nf = 0 if kept is not None else len(steps) - 1
    # the gradient of each step's input, two ping-pong buffers
    gsize = max([chunk * s.A * s.K * s.Q for s in steps[1:]], default=0)
    ng = 2 if len(steps) > 1 else 0
    summed = [i for i, s in enumerate(steps) if s.Q > 1 and not _loops(s)]
    work = _buffers(x, [chunk * s.out_elements for s in steps[:nf]] + [gsize] * ng
                    + [chunk * steps[i].A * steps[i].P * steps[i].K for i in summed])
    fwd, gbuf = work[:nf], work[nf:nf + ng]
    sums = dict(zip(summed, work[nf + ng:]))
    transposed = _transposed(mats, steps, need_x)
    for lo in range(0, batch, chunk):
        xc = x[lo:lo + chunk]
        b = xc.shape[0]
        if kept is not None:
            ts = [xc, *(k.view(batch, -1)[lo:lo + b] for k in kept)]
        else:
            ts, t = [xc], xc
            for i, (s, C) in enumerate(zip(steps[:-1], mats[:-1])):
                t = _step(t, C, s, b, out=fwd[i][:b * s.out_elements])
                ts.append(t)
        g = gy[lo:lo + b]
        for i in range(len(steps) - 1, -1, -1):
            s, C, X, gm = steps[i], mats[i], ts[i], gmats[i]
            n = b * s.A
            if i:
                out = gbuf[i % 2][:n * s.K * s.Q]
            elif need_x:
                out = gx[lo:lo + b]
            else:
                out = None
            if s.Q == 1:
                g2, X2 = g.reshape(n, s.P), X.reshape(n, s.K)
                gm = _addmm(gm, X2.t(), g2) if _wide(s) else _addmm(gm, g2.t(), X2)
                if out is not None:
                    g = torch.mm(g2, C, out=out.view(n, s.K))
            else:
                g3, X3 = g.reshape(n, s.P, s.Q), X.reshape(n, s.K, s.Q)
                if _loops(s):
                    # unbind: every sample's view in one call (this loop runs per sample)
                    pairs = zip(X3.unbind(0), g3.transpose(1, 2).unbind(0))
                    if gm is None:
                        gm = torch.mm(*next(pairs))
                    for Xj, gj in pairs:
                        gm.addmm_(Xj, gj)
                else:
                    # each sample slot of the buffer accumulates over the chunks; one
                    # sum over the slots at the end
                    prod = sums[i][:n * s.K * s.P].view(n, s.K, s.P)
                    if lo:
                        prod.baddbmm_(X3, g3.transpose(1, 2))
                    else:
                        torch.bmm(X3, g3.transpose(1, 2), out=prod)
                if out is not None:
                    g = torch.bmm(transposed[i].expand(n, s.K, s.P), g3, out=out.view(n, s.K, s.Q))
            gmats[i] = gm
        run.chunk(lo + b, batch)
    with _serial():  # memory-bound: a parallel region costs more than it saves
        for i, buf in sums.items():
            s = steps[i]
            gmats[i] = buf[:chunk * s.A * s.K * s.P].view(chunk * s.A, s.K, s.P).sum(0)
    return gx, [gm.t() if _wide(s) else gm for s, gm in zip(steps, gmats)]


#: Under more than one intra-op thread, the CPU backward without a graph
#: (:func:`_backward_buffered`) of large batches runs as that many parts of the batch
#: on as many Python threads, each part's products on one thread
#: (:func:`_backward_split`), rather than each product on all threads: the backward's
#: gradient products (a small ``K x P`` output summed over every row of a chunk) and
#: batched products of ``64 x 64`` matrices divide badly between threads. The backward
#: alone, back to back, ran 1.15-1.44x faster split (``bench/bench_backward_threads.py``,
#: ``backward_threads.json``); through the layer, where each backward follows a forward
#: on intra-op threads and each switch wakes the other threads, forward+backward at two
#: threads (each way in processes of its own) gained 3-6 % on the 4096 x 4096
#: rank-16 layer and lost up to 28 % on small parts of the 1024 x 1024 rank-8 one
#: (:data:`SPLIT_MACS`). The forward stays on intra-op
#: threads (its large flat products divide well; split, it ran 1.1x slower).
SPLIT_BACKWARD = True

#: The least work of a part of the split backward, in forward multiply-accumulates of
#: its samples: below it the backward stays on intra-op threads. Through the layer,
#: forward+backward at two threads with each way in processes of its own, the split
#: lost 28 % at 2^24 a part (``backward_threads.json``: 1024 x 1024 rank 8 at batch
#: 64, 4.52 against 3.26 ms), was 11 % faster in that run at 2^26 (batch 256) but 7 %
#: and 18 % slower at 2^26 and 2^27 in others (log only, under the tuner), and from
#: 2^28 won or tied in every run (the 1024 layer at batch 1,024, the 4096 x 4096
#: rank-16 layer at 64 to 1,024: 1.03-1.2x). Below it a part's work is also worth
#: little beside waking a thread (a no-op handed to another thread and back took 50 us
#: here), and intra-op products of small matrices give one thread's bits, which keeps
#: a tuned backward that switches counts reentrant (``torch.autograd.gradcheck``).
SPLIT_MACS = 1 << 28


class _SplitPool:
    """The Python threads of :func:`_backward_split` (``n - 1`` of them; the calling
    thread runs a part too), made on first use, again after a ``fork`` (a child has
    none of its parent's threads: an executor inherited from it would never run its
    work) and for more threads, and shut down by :func:`clear_workspace` (their work
    blocks go with them)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pool = None
        self.key: tuple[int, int] = (0, 0)

    def _executor(self, workers: int):
        """The executor for ``workers`` threads of this process (under :attr:`lock`)."""
        import os
        from concurrent.futures import ThreadPoolExecutor

        if self.pool is None or self.key[0] != os.getpid() or self.key[1] < workers:
            if self.pool is not None and self.key[0] == os.getpid():
                self.pool.shutdown(wait=False)
            self.pool = ThreadPoolExecutor(workers, thread_name_prefix="ttforge-backward")
            self.key = (os.getpid(), workers)
        return self.pool

    def submit(self, workers: int, fn, *args):
        """``fn(*args)`` on one of ``workers`` threads: a future. Under the lock that
        :meth:`shutdown` takes, so that another thread's ``clear_workspace`` cannot shut
        the executor between its choice and the submission."""
        with self.lock:
            return self._executor(workers).submit(fn, *args)

    def shutdown(self) -> None:
        import os

        with self.lock:
            if self.pool is not None and self.key[0] == os.getpid():
                self.pool.shutdown(wait=True)
            self.pool, self.key = None, (0, 0)


_SPLIT_POOL = _SplitPool()


def _splits(x: torch.Tensor, steps: Sequence[ContractionStep], threads: int) -> bool:
    """Whether this backward runs split (:data:`SPLIT_BACKWARD`): a CPU tensor, more
    than one thread, at least :data:`SPLIT_MACS` of work a part, and not under
    deterministic algorithms (whose runs keep the products on torch's threads, see
    :data:`THREADS`)."""
    return (SPLIT_BACKWARD and threads > 1 and x.device.type == "cpu"
            and x.shape[0] // threads * sum(s.macs for s in steps) >= SPLIT_MACS
            and not torch.are_deterministic_algorithms_enabled())


def _part(x, gy, mats, steps, need_x, chunk, kept, gx):
    """One part of :func:`_backward_split`, on a worker thread (grad mode is per thread)."""
    with torch.no_grad():
        return _backward_buffered(x, gy, mats, steps, need_x, chunk, kept, gx=gx)[1]


def _backward_split(x, gy, mats, steps, need_x, chunk, kept, threads: int):
    """:func:`_backward_buffered` as ``threads`` contiguous parts of the batch, each on
    its own Python thread with one intra-op thread and ``chunk``-sample chunks (the
    one-thread plan's), the input gradient written in place and the matrix gradients
    summed in a fixed order (so a call repeats bit for bit)."""
    batch = x.shape[0]
    bounds = [batch * i // threads for i in range(threads + 1)]
    gx = torch.empty_like(x) if need_x else None

    def args(i):
        lo, hi = bounds[i], bounds[i + 1]
        part_kept = None if kept is None else [k.view(batch, -1)[lo:hi] for k in kept]
        return (x[lo:hi], gy[lo:hi], mats, steps, need_x, min(chunk, hi - lo), part_kept,
                None if gx is None else gx[lo:hi])

    with _limit_threads(1):
        futures = [_SPLIT_POOL.submit(threads - 1, _part, *args(i)) for i in range(1, threads)]
        try:
            parts = [_part(*args(0))]
        finally:
            # every part ends before the buffers it writes are handed on, even if this
            # one failed (its error is raised after)
            done = [f.exception() is None and f.result() for f in futures]
        for f in futures:
            if f.exception() is not None:
                raise f.exception()
        parts.extend(done)
        gmats = [functools.reduce(torch.add, gs) for gs in zip(*parts)]  # small sums, still one thread
    return gx, gmats


def _backward_matrices(x, gy, mats, plan: FastPlan, need_x, kept, run: _Run):
    """The backward without a graph of the step matrices ``mats`` inside a region of
    products (:func:`_compute`, yielding ``run``): split over Python threads where
    :func:`_splits` says so (with the one-thread plan's chunks), else
    :func:`_backward_buffered` on the region's threads and chunks."""
    steps, batch, threads = plan.schedule.steps, x.shape[0], torch.get_num_threads()
    if _splits(x, steps, threads):
        chunk = _backward_chunk_size(_for_threads(plan, 1), batch)
        return _backward_split(x, gy, mats, steps, need_x, chunk, kept, threads)
    return _backward_buffered(x, gy, mats, steps, need_x, _backward_chunk_size(run.plan(plan), batch), kept, run)


def _plain(plan: FastPlan, batch: int) -> bool:
    """Whether a call under autograd runs as plain operations (:data:`PLAIN_WHEN_KEPT`):
    one group whose weight holds at most :data:`PLAIN_DENSE` values, or more than one
    group, intermediates the custom path would keep anyway (:func:`_keep`), and
    per-sample gradients of shared cores within :data:`PLAIN_EXPANDED`."""
    if len(plan.groups) == 1:
        shape = plan.schedule.shape
        return shape.in_size * shape.out_size <= PLAIN_DENSE
    expanded = sum(batch * s.A * s.P * s.K for s in plan.schedule.steps if s.Q > 1)
    return _keep(plan, batch) and expanded <= PLAIN_EXPANDED


def _keep(plan: FastPlan, batch: int) -> bool:
    """Whether the forward keeps its intermediates for the backward (no chunking, and
    small: see :data:`SAVE_ELEMENTS`)."""
    shape = plan.schedule.shape
    inter = sum(s.out_elements for s in plan.schedule.steps[:-1]) * batch
    return ((not plan.chunk or plan.chunk >= batch)
            and inter <= max(SAVE_ELEMENTS, batch * (shape.in_size + shape.out_size)))


def _backward_graph(x, gy, mats, steps, need_x, chunk):
    """The backward as differentiable operations (``create_graph``), chunk by chunk,
    recomputing every intermediate (kept ones carry no graph)."""
    gxs, gmats = [], None
    transposed = _transposed(mats, steps, need_x)  # once, not per chunk
    for lo in range(0, x.shape[0], chunk):
        gx, gm = _backward_chunk(x[lo:lo + chunk], gy[lo:lo + chunk], mats, steps, need_x, transposed)
        gxs.append(gx)
        gmats = gm if gmats is None else [a + b for a, b in zip(gmats, gm)]
    gx = (gxs[0] if len(gxs) == 1 else torch.cat(gxs)) if need_x else None
    return gx, gmats


#: Whether :class:`MergeCache` keeps merged step matrices between calls without
#: autograd (inference); ``False`` merges the cores on every call.
CACHE_MERGED = True


#: Integer dtypes of each element size, to compare float values bit for bit.
_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bits(t: torch.Tensor) -> torch.Tensor:
    """``t``'s values as integers of the same width (so that ``-0.0`` and ``0.0``, or
    two NaNs, compare as what they are), a view in ``t``'s shape and strides;
    same-width integers compare about twice as fast as bytes (24 vs 53 us for the
    4096 x 4096 layer's cores), and one view instead of a flattened one saves a third
    of the comparison (784 x 512 layer's four cores: 17.0 -> 11.5 us)."""
    if t.requires_grad:
        t = t.detach()
    width = _BITS.get(t.element_size())
    if width is None or t.dim() == 0:  # complex128, or a scalar: bytes of a flat copy
        return t.contiguous().view(-1).view(torch.uint8)
    return t.view(width)


class _Merged(NamedTuple):
    """What :class:`MergeCache` keeps: the merged matrices and what they were made from."""
    plan: FastPlan
    device: torch.device
    dtype: torch.dtype
    cores: tuple            # copies of the cores
    bits: tuple             # the copies as integers (_bits), made once
    matrices: list          # the plan's step matrices
    trees: list             # the groups' merge trees (_merge_tree), for a backward
    nbytes: int             # bytes held (MergeCache.nbytes)


class MergeCache:
    """One layer's merged step matrices from its last call without autograd, reused
    while the cores are bit for bit the ones they were made from.

    Inference calls the layer again and again with the same weights, and rebuilding
    the merged matrices each time costs as much as a quarter of the call (measured,
    784 x 512 rank 16 at batch 256, 1 thread: 0.6 ms of merges beside a 1.5 ms
    product). The cores are compared with a kept copy of them, byte for byte, on
    every call rather than trusted to a version counter: an in-place change through
    ``.data`` does not move ``Tensor._version``. The copy holds the cores' values (a
    TT layer's few); the matrices at most one plan's (for a single group, the dense
    weight). Calls under autograd never use it (their merges carry the graph).
    Pickling drops the contents.
    """

    def __init__(self) -> None:
        self._entry: _Merged | None = None

    def __getstate__(self) -> dict:
        return {"_entry": None}

    def clear(self) -> None:
        """Forget the kept matrices (the next call merges again)."""
        self._entry = None

    @property
    def nbytes(self) -> int:
        """Bytes held: the core copies and the merged matrices."""
        e = self._entry
        return 0 if e is None else e.nbytes

    def matrices(self, cores: Sequence[torch.Tensor], plan: FastPlan) -> list[torch.Tensor]:
        """The step matrices of ``plan`` for ``cores``, merged now or kept from before."""
        return self.merged(cores, plan)[0]

    def merged(self, cores: Sequence[torch.Tensor], plan: FastPlan) -> tuple[list, list]:
        """:meth:`matrices` and the groups' merge trees they were made with."""
        e = self._entry  # one read: another thread may replace it meanwhile
        c0 = cores[0]
        # plans come from a cache, so identity usually settles the first test; the
        # copies' integer views are made once (a quarter of a batch-1 call went to
        # comparing before, 784 x 512 layer)
        if (e is not None and (e.plan is plan or e.plan == plan) and e.device == c0.device
                and e.dtype == c0.dtype and len(e.cores) == len(cores)
                and all(k.shape == c.shape and torch.equal(kb, _bits(c))
                        for k, kb, c in zip(e.cores, e.bits, cores))):
            return e.matrices, e.trees
        trees: list = []
        with torch.no_grad(), _serial():
            mats = _step_matrices(cores, plan, None, trees)
            kept = tuple(c.detach().clone() for c in cores)
        held = [*kept, *mats, *_tree_tensors(trees)]
        nbytes = sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in held}.values())
        self._entry = _Merged(plan, c0.device, c0.dtype, kept, tuple(map(_bits, kept)), mats, trees, nbytes)
        return mats, trees


def _tree_tensors(trees) -> list[torch.Tensor]:
    """The merged operands a list of merge trees holds (see :func:`_merge_tree`)."""
    out, todo = [], list(trees)
    while todo:
        t = todo.pop()
        if not isinstance(t, int):
            out.extend(m for m in t[2:] if m is not None)
            todo.extend(t[:2])
    return out


def _autocast_eligible(t: torch.Tensor) -> bool:
    """Whether autocast casts ``t``: floating point and not float64 (as for ``nn.Linear``)."""
    return t.is_floating_point() and t.dtype != torch.float64


def autocast_dtype(x: torch.Tensor, cores: Sequence[torch.Tensor],
                   bias: torch.Tensor | None = None) -> torch.dtype | None:
    """The dtype ``torch.autocast`` runs a product in on ``x``'s device when it is on
    there and would cast any of ``x``, ``cores`` and ``bias`` to it; else ``None``.

    The TT contractions then run wholly in that dtype with autocast off inside
    (:func:`autocast_cast`): autocast casts the operands of ``mm``, but not a work buffer
    a product writes into, so left on it would mix dtypes between the passes."""
    kind = x.device.type
    if not cores or not torch.amp.is_autocast_available(kind) or not torch.is_autocast_enabled(kind):
        return None
    low = torch.get_autocast_dtype(kind)
    # any operand, not only the cores: a layer already in autocast's dtype given a
    # float32 x left autocast on, and the work buffers (x's dtype) met bfloat16 products
    for t in (x, bias, *cores):
        if t is not None and t.dtype != low and _autocast_eligible(t):
            return low
    return None


def dtypes_meet(x: torch.Tensor, cores: Sequence[torch.Tensor]) -> bool:
    """Whether ``x`` and ``cores[0]`` are of one dtype once ``torch.autocast`` has cast
    what it casts (:func:`autocast_dtype`), as ``nn.Linear`` needs of its operands."""
    low = autocast_dtype(x, cores)

    def runs_in(t: torch.Tensor) -> torch.dtype:
        return low if low is not None and _autocast_eligible(t) else t.dtype
    return runs_in(x) == runs_in(cores[0])


def autocast_cast(low: torch.dtype, x: torch.Tensor, cores: Sequence[torch.Tensor],
                  bias: torch.Tensor | None = None):
    """``(x, cores, bias)`` cast to ``low`` (differentiably) where autocast would cast them."""
    def cast(t):
        return t.to(low) if t is not None and _autocast_eligible(t) else t
    return cast(x), [cast(c) for c in cores], cast(bias)


def in_autocast_dtype(fn, x: torch.Tensor, cores: Sequence[torch.Tensor], *args,
                      bias: torch.Tensor | None = None, **kwargs):
    """``fn(x, cores, *args, bias=bias, **kwargs)`` with ``x``, ``cores`` and ``bias``
    cast to autocast's dtype and autocast off inside, where ``torch.autocast`` would
    cast them (:func:`autocast_dtype`: the products then run in its dtype, as
    ``nn.Linear``'s do); ``None`` where it would not (``bias`` is passed only if given)."""
    low = autocast_dtype(x, cores, bias)
    if low is None:
        return None
    x, cores, bias = autocast_cast(low, x, cores, bias)
    if bias is not None:
        kwargs["bias"] = bias
    with torch.autocast(x.device.type, enabled=False):
        return fn(x, cores, *args, **kwargs)


def tt_apply(x: torch.Tensor, cores: Sequence[torch.Tensor],
             plan: FastPlan | None = None, bias: torch.Tensor | None = None,
             cache: MergeCache | None = None) -> torch.Tensor:
    """Apply the TT-matrix with ``cores`` to ``x`` of shape ``(B, N)``, plus ``bias`` of
    shape ``(M,)`` if given; returns ``(B, M)``.

    The same function as :func:`~ttforge.model.layers.apply_schedule` (within float
    rounding), computed in the order :func:`plan_for` picks for this batch. Tensors
    stay on ``x``'s device and dtype (under ``torch.autocast``, autocast's:
    :func:`autocast_dtype`). A call without autograd takes the merged
    matrices from ``cache`` when the cores are unchanged (:class:`MergeCache`;
    :data:`CACHE_MERGED`).
    """
    y = in_autocast_dtype(tt_apply, x, cores, plan, bias=bias, cache=cache)
    if y is not None:
        return y
    _require_cores(cores, "tt_apply")
    if compiled():  # one opaque operation in the compiled graph (see compiled)
        # the checks dynamo raises as they are (the operation's fake checks the rest,
        # its errors wrapped in dynamo's); loops, not generators (see ir.tt.prod)
        out_size, in_size = 1, 1
        for c in cores:
            out_size, in_size = (out_size * c.shape[1], in_size * c.shape[2]) if c.dim() == 4 else (0, 0)
        check_input(x, in_size)
        check_bias(bias, out_size)
        # whether the graph has a backward is fixed for it (dynamo guards on grad mode
        # and on requires_grad)
        backward = torch.is_grad_enabled() and (x.requires_grad or any([c.requires_grad for c in cores])
                                                or (bias is not None and bias.requires_grad))
        if PLAIN_WHEN_KEPT and in_size * out_size <= PLAIN_DENSE and not _tunes_when_traced():
            # a small weight (as an eager call's, _plain): plain operations that the
            # compiler sees through cost less than the operation's fixed cost
            # (512 x 10 rank 4, batch 32, 1 thread, forward+backward: 300 us under
            # inductor, 570 us as the operation, 274 us eager)
            return _apply_ops(x, cores, plan if plan is not None else _compiled_plan(_core_shapes(cores)), bias)
        return _tt_apply_op(x, list(cores), bias, "" if plan is None else _plan_spec(plan), backward)
    batch = x.shape[0]
    if plan is None:
        plan = plan_for(TTShape.of_cores(cores), batch)
    if captured():  # before anything that reads the batch size (see captured)
        return _apply_ops(x, cores, plan, bias)
    _check_operands(x, cores, plan, bias)
    out_size = plan.schedule.shape.out_size
    if batch == 0:
        # an empty product that still reaches x and the cores (their gradients are zeros)
        y = x.new_zeros(0, out_size) + 0 * (x.sum() + sum(c.sum() for c in cores))
        return y if bias is None else y + bias
    if transformed():
        return _apply_ops(x, cores, plan, bias)
    x = x.contiguous()
    if torch.is_grad_enabled() and (x.requires_grad or any(c.requires_grad for c in cores)
                                    or (bias is not None and bias.requires_grad)):
        # the merges go through autograd (their backward runs on one thread too): the
        # merged matrices are made once per forward and reused by the backward
        # not where the custom nodes tune their threads: plain operations run on all of
        # torch's threads, and beside busy cores every parallel region waits for a time
        # slice (2 threads, both cores taken by other processes, forward+backward of the
        # 1024 x 1024 rank-8 layer at batch 16: 672 ms plain, 2.0 ms through the tuned
        # custom nodes, nn.Linear 46 ms; the digits layer 124 ms against 1.0 ms)
        if PLAIN_WHEN_KEPT and not (x.device.type == "cpu" and _tunes()) and _plain(plan, batch):
            return _apply_ops(x, cores, plan, bias)
        if len(plan.groups) == 1:
            return _TTApplyDense.apply(x, plan, bias, *cores)
        with _serial():
            mats = _step_matrices(cores, plan)
        return _TTApplyMats.apply(x, plan, bias, *mats)
    if cache is not None and CACHE_MERGED and x.device.type != "meta":  # meta: no values to compare
        mats = cache.matrices(cores, plan)
    else:
        with _serial():
            mats = _step_matrices(cores, plan)
    return _apply_merged(x, mats, plan, bias)[0]


def _apply_merged(x: torch.Tensor, mats: Sequence[torch.Tensor], plan: FastPlan,
                  bias: torch.Tensor | None, keep: bool = False, own: bool = False):
    """``(y, kept)``: ``x`` through the step matrices ``mats`` plus ``bias`` on the
    threads the tuner picks, with ``keep`` also the intermediates (:func:`_forward`;
    keep only if the one-thread plan keeps, its chunks none: then so does every
    count's)."""
    key = _key(x, plan, "forward", keep)
    if THREADS == "auto" and (key is None or not _tunes()):
        # nothing to pick nor limit: the two context managers cost 3 us of a 100 us
        # batch-1 call, more on a cold cache
        return _forward(x, mats, plan, keep=keep, bias=bias, own=own)
    with _compute(key) as run:
        return _forward(x, mats, run.plan(plan), keep=keep, bias=bias, run=run, own=own)


def check_input(x: torch.Tensor, in_size: int) -> None:
    """A one-line :class:`ShapeError` unless ``x`` is ``(batch, in_size)``."""
    if x.dim() != 2 or x.shape[1] != in_size:
        raise ShapeError(f"x has shape {tuple(x.shape)}; these cores take (batch, {in_size})")


def check_bias(bias: torch.Tensor | None, out_size: int) -> None:
    """A one-line :class:`ShapeError` unless ``bias`` is ``None`` or ``(out_size,)``."""
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != out_size):
        raise ShapeError(f"bias has shape {tuple(bias.shape)}; these cores give {out_size} "
                         f"outputs: ({out_size},)")


def _check_operands(x: torch.Tensor, cores: Sequence[torch.Tensor], plan: FastPlan,
                    bias: torch.Tensor | None) -> None:
    """One-line errors for operands that do not fit together (else a reshape deep
    inside fails with sizes the caller never gave). The tests are the cheap ones (a
    batch-1 call is ~80 us); the messages are built only on failure."""
    shape = plan.schedule.shape
    if len(cores) != plan.groups[-1][1]:
        sizes = (math.prod(c.shape[1] for c in cores), math.prod(c.shape[2] for c in cores))
        raise ShapeError(f"the plan is for {plan.groups[-1][1]} cores of a {shape.out_size} x "
                         f"{shape.in_size} weight, the cores make {len(cores)} of {sizes[0]} x "
                         f"{sizes[1]}; make the plan with plan_for(TTShape.of_cores(cores), batch)")
    check_input(x, shape.in_size)
    check_bias(bias, shape.out_size)


def _backward_chunk_size(plan: FastPlan, batch: int) -> int:
    """Samples per chunk of the backward of ``batch`` samples under ``plan``."""
    chunk = plan.chunk if plan.backward_chunk is None else plan.backward_chunk
    return chunk if chunk and chunk < batch else batch


class _TTApplyMats(torch.autograd.Function):
    """``y = x`` through the step matrices ``mats`` (already merged, with their graph)
    plus ``bias``; saves ``x``, ``mats`` and the kept intermediates (:func:`_keep`)."""

    @staticmethod
    def forward(ctx, x, plan, bias, *mats):  # type: ignore[override]
        keep = _keep(plan, x.shape[0])
        y, kept = _apply_merged(x, mats, plan, bias, keep, own=True)
        ctx.plan, ctx.keep, ctx.has_bias = plan, keep, bias is not None
        ctx.save_for_backward(x, *mats, *kept)
        return y

    @staticmethod
    def backward(ctx, gy):  # type: ignore[override]
        plan, saved = ctx.plan, ctx.saved_tensors
        steps = plan.schedule.steps
        x, mats = saved[0], list(saved[1:1 + len(steps)])
        kept = list(saved[1 + len(steps):]) if ctx.keep else None
        batch, need_x, gy = x.shape[0], ctx.needs_input_grad[0], gy.contiguous()
        graph = _graph_backward(gy)
        with _compute(_key(x, plan, "backward", need_x, graph)) as run:
            if graph:
                # create_graph: kept intermediates carry no graph, so all are recomputed
                chunk = _backward_chunk_size(run.plan(plan), batch)
                gx, gmats = _backward_graph(x, gy, mats, steps, need_x, chunk)
            else:
                gx, gmats = _backward_matrices(x, gy, mats, plan, need_x, kept, run)
            gb = gy.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return (gx, None, gb, *gmats)


class _TTApplyDense(torch.autograd.Function):
    """A one-group plan (the dense weight ``W`` rebuilt from the cores) in one autograd
    node: ``y = x W^T + bias`` with the merges made without autograd, and a backward
    that forms ``gW = gy^T x`` and walks the merge tree itself (:func:`_tree_grads`).

    The products are those of :class:`_TTApplyMats` over :class:`_Merge2` nodes; what
    goes is the Python and autograd bookkeeping of five nodes per call (784 x 512
    rank-16 layer, 1 thread, forward+backward, medians of 61-101 interleaved calls:
    7.3-8.3 ms as five nodes, 6.9-7.2 ms as one; batch 64: 4.12 -> 3.40 ms; a tiny
    layer's fixed cost 639 -> 455 us, ``nn.Linear`` 117 us).
    """

    @staticmethod
    def forward(ctx, x, plan, bias, *cores):  # type: ignore[override]
        # the merges run on the region's threads, timed with its products (not on one
        # thread as for the other plans): the last merge's product and copies move the
        # 401,408-value weight of the 784 x 512 layer, and on an idle second core they
        # halve (2 threads, forward+backward, medians of 151 / 101 interleaved: 5.14 /
        # 4.75 ms with serial merges, 4.36 / 4.25 ms; nn.Linear 3.63 / 2.86 ms)
        with _compute(_key(x, plan, "forward", False)) as run:
            w, ctx.tree = _merge_tree(cores)
            w = w.view(plan.schedule.shape.out_size, plan.schedule.shape.in_size)
            y = _forward(x, [w], run.plan(plan), bias=bias, run=run, own=True)[0]
        ctx.plan, ctx.has_bias = plan, bias is not None
        ctx.save_for_backward(x, w, *cores)
        return y

    @staticmethod
    def backward(ctx, gy):  # type: ignore[override]
        x, w, *cores = ctx.saved_tensors
        plan, need_x, gy = ctx.plan, ctx.needs_input_grad[0], gy.contiguous()
        graph = torch.is_grad_enabled()
        if graph:  # create_graph: the merges again, differentiable
            w, tree = _merge_tree(cores, _merge2)
            w = w.view(gy.shape[1], x.shape[1])
        else:
            tree = ctx.tree
        gx, grads = _dense_grads(x, gy, w, cores, tree, need_x, _key(x, plan, "backward", need_x, graph))
        gb = gy.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return (gx, None, gb, *grads)


def _dense_grads(x, gy, w, cores, tree, need_x: bool, key) -> tuple:
    """The gradients of ``x`` (or ``None``) and of each core of ``y = x W^T``, ``W`` the
    dense weight merged from ``cores`` by ``tree`` (:func:`_merge_tree`), on the
    threads :func:`_compute` gives ``key``; differentiable under ``create_graph`` (plain under a vmap'd backward)."""
    graph = _graph_backward(gy)
    # gW and its moved copy in kept work buffers: a fresh gW faults its pages in on
    # every call (784 x 512 layer, 1 thread, medians of 101 interleaved: 6.5 ms
    # per forward+backward with a fresh one, 6.0 ms with the buffer); but a single
    # core is its own weight and gW its gradient, which must not be a view of a
    # buffer that the next call overwrites (autograd keeps it as ``.grad``)
    fresh = graph or isinstance(tree, int)
    gw, work = (None, None) if fresh else _buffers(x, [w.numel(), w.numel()])
    grads = [None] * len(cores)
    with _compute(key):
        gx = gy @ w if need_x else None
        gw = gy.t() @ x if fresh else torch.mm(gy.t(), x, out=gw.view(w.shape))
        _tree_grads(cores, tree, gw.view(1, *gw.shape, 1), grads, work)
    return gx, grads


# -- torch.compile ----------------------------------------------------------------------
def compiled() -> bool:
    """Whether ``torch.compile`` traces the call (and not ``torch.export``, which is
    :func:`captured`, nor a ``torch.func`` transform, :func:`transformed`: those trace
    the plain operations, which the transforms can see through).

    The fast path then enters the compiled graph as one opaque operation,
    ``ttforge::tt_apply``, with a registered backward, ``ttforge::tt_apply_backward``
    (``torch.library.custom_op``): traced through, its custom autograd nodes, work
    buffers and tuned thread counts broke the graph at every TT layer, and its
    per-call Python (merge cache, chunk loops) made dynamo recompile until it hit its
    limit. The operations run the eager fast path with the plan for the batch they
    get, so a compiled graph keeps the custom backward's memory bound and a new batch
    size costs no more than dynamo's own recompile to a dynamic batch. A small weight
    (at most :data:`PLAIN_DENSE` values, where an eager call takes plain operations)
    is recorded as plain operations instead, with :data:`CAPTURE_BATCH`'s plan (decided
    when the graph is traced, by the thread count then: a graph traced on one thread
    keeps plain operations if the count is raised later). A
    ``create_graph`` backward through a compiled graph is not supported (as for any
    compiled graph); the eager path has it.
    """
    return torch.compiler.is_compiling() and not captured() and not transformed()


@torch.compiler.assume_constant_result  # run while dynamo traces, not traced (json)
def _plan_spec(plan: FastPlan) -> str:
    """``plan`` as the string argument of the compiled operations (``""``: the
    default plan of the call's batch, picked when it runs)."""
    return json.dumps([plan.groups, plan.schedule.order, plan.chunk, plan.backward_chunk,
                       plan.bucket, plan.threads, plan.cost])


def _core_shapes(cores: Sequence[torch.Tensor]) -> tuple:
    # a list comprehension, not a generator (see ir.tt.prod)
    return tuple([tuple(c.shape) for c in cores])


@torch.compiler.assume_constant_result  # run while dynamo traces, not traced (caches)
def _compiled_plan(shapes: tuple) -> FastPlan:
    """The plan a compiled graph records for cores of ``shapes`` where it records plain
    operations (that of :data:`CAPTURE_BATCH`, as a capture's)."""
    return plan_for(_shape_of(shapes), CAPTURE_BATCH)


@functools.lru_cache(maxsize=256)
def _spec_plan(shape: TTShape, spec: str) -> FastPlan:
    """The plan of :func:`_plan_spec`'s ``spec`` for ``shape``."""
    groups, order, chunk, backward_chunk, bucket, threads, cost = json.loads(spec)
    groups = tuple(tuple(g) for g in groups)
    sched = ContractionSchedule.from_order(_merged_shape(shape, groups), tuple(order))
    return FastPlan(groups, sched, chunk, cost, backward_chunk, bucket, threads)


@functools.lru_cache(maxsize=256)
def _shape_of(shapes: tuple) -> TTShape:
    """:meth:`TTShape.of_cores` of cores of ``shapes`` (15 us a call, 1 us cached)."""
    return TTShape.of_cores([torch.empty(s, device="meta") for s in shapes])


def _op_plan(x: torch.Tensor, cores: Sequence[torch.Tensor], spec: str) -> FastPlan:
    """The plan a compiled operation runs: ``spec``'s, or the default for its batch."""
    shape = _shape_of(_core_shapes(cores))
    return _spec_plan(shape, spec) if spec else plan_for(shape, x.shape[0])


#: Bytes of forward intermediates the compiled operations hold for their backward
#: (where an eager call keeps them, :func:`_keep`), least recently stored forgotten
#: first: a forward whose backward never runs leaves them.
COMPILED_KEPT_BYTES = 1 << 26


class _KeptIntermediates:
    """The kept intermediates of compiled forward calls, until their backward takes them.

    An operation's outputs must have sizes known while the graph is traced, and which
    intermediates a call keeps depends on the plan of its batch, which may be known
    only when it runs; so they wait here, keyed by the call's operands as the backward
    sees them again (the input's and the cores' storage and version counter, the
    plan). A forward with the same key computed the same intermediates; a backward
    that finds none (forgotten, or taken by an earlier backward of the same key)
    recomputes them, as for a chunked batch.
    """

    def __init__(self) -> None:
        self._kept: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()
        self.nbytes = 0

    @staticmethod
    def key(x: torch.Tensor, cores: Sequence[torch.Tensor], spec: str) -> tuple:
        return (x.data_ptr(), x._version, tuple(x.shape), x.stride(), x.dtype, x.device, spec,
                *[(c.data_ptr(), c._version) for c in cores])

    def put(self, key: tuple, kept: list) -> None:
        nbytes = sum(k.numel() * k.element_size() for k in kept)
        with self._lock:
            self._drop(key)
            if nbytes > COMPILED_KEPT_BYTES:
                return
            self._kept[key] = (kept, nbytes)
            self.nbytes += nbytes
            while self.nbytes > COMPILED_KEPT_BYTES:
                self._drop(next(iter(self._kept)))

    def pop(self, key: tuple) -> list | None:
        with self._lock:
            entry = self._kept.get(key)
            self._drop(key)
        return None if entry is None else entry[0]

    def _drop(self, key: tuple) -> None:
        entry = self._kept.pop(key, None)
        if entry is not None:
            self.nbytes -= entry[1]

    def __len__(self) -> int:
        return len(self._kept)

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()
            self.nbytes = 0


_KEPT = _KeptIntermediates()


#: Bytes the compiled operations keep between calls, over all layers: merged step
#: matrices, their merge trees and the copies of the cores they were made from
#: (:class:`MergeCache`), least recently used forgotten first.
COMPILED_CACHE_BYTES = 1 << 28


class _CoreCaches:
    """The compiled operations' :class:`MergeCache` of each set of cores (their storage
    addresses, shapes, dtype, device) and plan.

    A compiled graph passes no layer object to its operations, only tensors: a
    layer's cores are found by where they are. The address picks an entry; the
    entry's bit-for-bit comparison decides whether it holds (a freed layer's address
    taken by another is merged again). Its uses: the backward reuses the forward's
    merges (the cores do not change between them), and inference calls reuse them
    while the weights stay (as :class:`MergeCache` does for an eager layer).
    """

    def __init__(self) -> None:
        self._caches: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, cores: Sequence[torch.Tensor], plan: FastPlan) -> MergeCache:
        key = (plan.groups, plan.schedule.order,
               *[(c.data_ptr(), tuple(c.shape), c.dtype, c.device) for c in cores])
        with self._lock:
            cache = self._caches.get(key)
            if cache is None:
                cache = self._caches[key] = MergeCache()
            self._caches.move_to_end(key)
        return cache

    def trim(self, limit: int) -> None:
        """Forget the least recently used entries until at most ``limit`` bytes are held."""
        with self._lock:
            held = sum(c.nbytes for c in self._caches.values())
            while held > limit and self._caches:
                held -= self._caches.popitem(last=False)[1].nbytes

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(c.nbytes for c in self._caches.values())

    def clear(self) -> None:
        with self._lock:
            self._caches.clear()


_CORE_CACHES = _CoreCaches()


def _op_merged(cores: Sequence[torch.Tensor], plan: FastPlan) -> tuple[list, list]:
    """The step matrices and merge trees of a compiled operation's cores, kept (or
    not) within :data:`COMPILED_CACHE_BYTES`."""
    if not CACHE_MERGED or cores[0].device.type == "meta":
        trees: list = []
        with torch.no_grad(), _serial():
            return _step_matrices(cores, plan, _merge2_product, trees), trees
    cache = _CORE_CACHES.get(cores, plan)
    held = cache.nbytes
    merged = cache.merged(cores, plan)
    if cache.nbytes != held:  # merged now
        _CORE_CACHES.trim(COMPILED_CACHE_BYTES)
    return merged


@torch.library.custom_op("ttforge::tt_apply", mutates_args=())
def _tt_apply_op(x: torch.Tensor, cores: list[torch.Tensor], bias: torch.Tensor | None,
                 plan: str, backward: bool) -> torch.Tensor:
    """:func:`tt_apply` as one operation of a compiled graph (see :func:`compiled`);
    ``backward``: the graph has a backward, for which the call keeps its intermediates
    where an eager call would (:class:`_KeptIntermediates`)."""
    p = _op_plan(x, cores, plan)
    keep = backward and _keep(p, x.shape[0])
    key = _KeptIntermediates.key(x, cores, plan) if keep else None
    y, kept = _apply_merged(x.contiguous(), _op_merged(cores, p)[0], p, bias, keep, own=True)
    if keep:
        _KEPT.put(key, kept)
    return y


@_tt_apply_op.register_fake
def _tt_apply_fake(x, cores, bias, plan, backward):
    # the operands' checks of an eager call, while the graph is traced
    shape = TTShape.of_cores(cores)
    p = _spec_plan(shape, plan) if plan else plan_for(shape, CAPTURE_BATCH)
    _check_operands(x, cores, p, bias)
    return x.new_empty(x.shape[0], p.schedule.shape.out_size)


@torch.library.custom_op("ttforge::tt_apply_backward", mutates_args=())
def _tt_apply_backward_op(gy: torch.Tensor, x: torch.Tensor, cores: list[torch.Tensor],
                          plan: str, need_x: bool, need_bias: bool) -> list[torch.Tensor]:
    """The gradients ``[x (or empty), bias (or empty), *cores]`` of
    :func:`_tt_apply_op`: the backward of an eager call (a rebuilt weight's
    :func:`_dense_grads`, else the no-graph backward of the step matrices and each
    group's merge tree walked back to its cores) on the forward's merges
    (:func:`_op_merged`) and intermediates (:class:`_KeptIntermediates`)."""
    kept = _KEPT.pop(_KeptIntermediates.key(x, cores, plan))
    batch = x.shape[0]
    if batch == 0:  # no samples: zero gradients
        return [torch.zeros_like(x) if need_x else x.new_empty(0),
                gy.new_zeros(gy.shape[1]) if need_bias else gy.new_empty(0),
                *map(torch.zeros_like, cores)]
    x, gy = x.contiguous(), gy.contiguous()
    p = _op_plan(x, cores, plan)
    steps = p.schedule.steps
    mats, trees = _op_merged(cores, p)  # the forward's, unless forgotten since
    gb = gy.sum(0) if need_bias else gy.new_empty(0)
    if len(p.groups) == 1:
        gx, grads = _dense_grads(x, gy, mats[0], cores, trees[0], need_x,
                                 _key(x, p, "backward", need_x, False))
        return [gx if need_x else x.new_empty(0), gb, *grads]
    with _compute(_key(x, p, "backward", need_x, False)) as run:
        gx, gmats = _backward_matrices(x, gy, mats, p, need_x, kept, run)
    shape = p.schedule.shape  # the merged cores'
    gmerged: list = [None] * len(p.groups)
    for s, g in zip(steps, gmats):  # each step matrix back to its merged core's layout
        dims = (shape.ranks[s.core], shape.out_modes[s.core], shape.in_modes[s.core], shape.ranks[s.core + 1])
        axes = s.core_axes
        g = g.reshape([dims[a] for a in axes]).permute(*sorted(range(4), key=axes.__getitem__))
        gmerged[s.core] = g if gmerged[s.core] is None else gmerged[s.core] + g
    grads: list = [None] * len(cores)
    with torch.no_grad(), _serial():
        for tree, g in zip(trees, gmerged):
            _tree_grads(cores, tree, g, grads)
    return [gx if need_x else x.new_empty(0), gb, *(g.contiguous() for g in grads)]


@_tt_apply_backward_op.register_fake
def _tt_apply_backward_fake(gy, x, cores, plan, need_x, need_bias):
    return [torch.empty_like(x) if need_x else x.new_empty(0),
            gy.new_empty(gy.shape[1]) if need_bias else gy.new_empty(0),
            *(torch.empty_like(c) for c in cores)]


def _tt_apply_setup(ctx, inputs, output) -> None:
    x, cores, bias, plan, _ = inputs
    ctx.save_for_backward(x, *cores)
    ctx.plan, ctx.has_bias = plan, bias is not None


def _tt_apply_grads(ctx, gy):
    x, *cores = ctx.saved_tensors
    need_x, need_bias = ctx.needs_input_grad[0], ctx.has_bias and ctx.needs_input_grad[2]
    gx, gb, *gcores = _tt_apply_backward_op(gy, x, cores, ctx.plan, need_x, need_bias)
    return gx if need_x else None, gcores, gb if need_bias else None, None, None


_tt_apply_op.register_autograd(_tt_apply_grads, setup_context=_tt_apply_setup)
