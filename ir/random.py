"""Random integer TT networks for regressions and tests (one generator, here).

:func:`random_network` draws the networks of ``ttforge regress`` (a seed's network is
part of its reproducer, so its draws never change): 1-3 layers of 1-3 cores, random
modes, ranks including the odd ranks 3, 5 and 7 that rank-adaptive training leaves,
core widths 2-8 bits, stream widths 4-8 bits, bias and ReLU at random, and step
exponents that keep each intermediate near a quarter of its range (jittered so that
saturation does happen). :func:`engine_network` draws smaller ones of the same kind
for the Amaranth simulation of the engine (fixed widths, lower ranks, at most two layers).

:func:`calibrated_network` draws a different family for the compiler and the engine
model: step shifts calibrated on sample inputs (the largest sum maps to the top of the
output width), accumulators exactly as wide as :func:`~ttforge.ir.arith.acc_bits_needed`
says, 16-bit activations and one-core (dense) layers among the TT ones.
:func:`shifted_network` draws full-range cores and step shifts of both signs (left
shifts, exact, rounding and saturating steps) for the exports' float32 bounds.

:func:`random_shapes` draws TT-matrix shapes alone (no cores) for the schedule's cost
model: 2-4 cores, modes 2-8, one rank of 2, 4, 8 or 16 on every inner bond.

:func:`train_layer_shapes` and :func:`train_case` draw training problems for the integer
trainer and the training engine: a state from :func:`~ttforge.ir.train.init_state`
(random schedule orders), a labelled batch, calibrated exponents.
"""

from __future__ import annotations

import numpy as np

from ttforge.errors import ShapeError
from ttforge.ir.arith import acc_bits_needed, int_range, rshift_round, saturate
from ttforge.ir.executor import IntLayer, IntNetwork, execute
from ttforge.ir.schedule import ContractionSchedule, schedule_orders
from ttforge.ir.tt import TTShape, max_ranks

__all__ = ["MAX_RANK", "random_layer", "random_network", "engine_network", "calibrated_layer",
           "calibrated_network", "shifted_layer", "shifted_network", "random_inputs",
           "train_layer_shapes", "train_case", "random_shapes"]

#: The largest TT rank :func:`random_network` draws by default.
MAX_RANK = 8


def random_layer(rng: np.random.Generator, in_modes, out_modes, ranks, order, *, w_bits, in_bits,
                 in_exp, inter_bits, out_bits, bias, relu, in_features=None, out_features=None,
                 jitter=(-1, 0, 0, 0, 1), bias_bits=10, acc_bits=48) -> IntLayer:
    """One random TT layer: cores of ``w_bits`` bits, step exponents that keep each
    intermediate near a quarter of its range (plus a shift drawn from ``jitter``, so that
    saturation does happen; ``None``: no jitter), a bias of ``bias_bits`` bits when
    ``bias``. ``ranks`` with or without the boundary ranks 1; ``in_features`` and
    ``out_features`` are drawn (after the exponents) when not given."""
    shape = TTShape(tuple(out_modes), tuple(in_modes), tuple(ranks))
    sched = ContractionSchedule(shape, tuple(order))
    hi = (1 << (w_bits - 1)) - 1
    cores = tuple(rng.integers(-hi, hi + 1, size=s).astype(np.int64) for s in shape.core_shapes)
    core_exps = tuple(int(e) for e in rng.integers(-3, 3, size=shape.d))
    # step exponents that keep each intermediate near a quarter of its range (so that the
    # values neither vanish nor all saturate), jittered so saturation does happen
    x_std, w_std = 2.0 ** (in_bits - 2), max(hi, 1) / np.sqrt(3)
    e, step_exps = in_exp, []
    for t, st in enumerate(sched.steps):
        ob = out_bits if t == len(sched.steps) - 1 else inter_bits
        acc_std = np.sqrt(st.K) * w_std * x_std
        target = 2.0 ** (ob - 2)
        s = int(np.round(np.log2(acc_std / target)))
        if jitter is not None:
            s += int(rng.choice(list(jitter)))
        e = core_exps[st.core] + e + s
        step_exps.append(e)
        x_std = target
    n_in, n_out = shape.in_size, shape.out_size
    in_f = in_features or int(rng.integers(max(1, n_in - 2), n_in + 1))
    out_f = out_features or int(rng.integers(max(1, n_out - 2), n_out + 1))
    half = 1 << (bias_bits - 1)
    b = rng.integers(-half, half, size=out_f).astype(np.int64) if bias else None
    return IntLayer(in_features=in_f, out_features=out_f, schedule=sched,
                    cores=cores, core_exps=core_exps, w_bits=w_bits, in_bits=in_bits,
                    in_exp=in_exp, inter_bits=inter_bits, out_bits=out_bits,
                    step_exps=tuple(step_exps), acc_bits=acc_bits, bias=b, relu=relu)


def _draw_modes(rng: np.random.Generator, in_f: int | None, *, top: tuple[int, int],
                at_least: tuple[int, int]) -> tuple[int, list[int], list[int]]:
    """1-3 cores; modes below ``top[0]`` (several cores) or ``top[1]`` (one core), redrawn
    until the input and output sizes reach ``at_least``; the input modes then grown until
    they hold ``in_f`` (the previous layer's outputs)."""
    d = int(rng.integers(1, 4))
    while True:
        t = top[0] if d > 1 else top[1]
        in_modes = [int(rng.integers(1, t)) for _ in range(d)]
        out_modes = [int(rng.integers(1, t)) for _ in range(d)]
        if np.prod(in_modes) >= at_least[0] and np.prod(out_modes) >= at_least[1]:
            break
    if in_f is not None:
        while int(np.prod(in_modes)) < in_f:
            in_modes[int(rng.integers(0, d))] += 1
    return d, in_modes, out_modes


def _draw_order(rng: np.random.Generator, d: int) -> tuple[int, ...]:
    orders = schedule_orders(d)
    return orders[int(rng.integers(0, len(orders)))]


def _rank(rng: np.random.Generator, limit: int, max_rank: int) -> int:
    top = min(limit, max_rank)
    odd = [r for r in (3, 5, 7) if r <= top]
    if odd and rng.random() < 0.5:          # the ranks rank-adaptive training leaves
        return int(rng.choice(odd))
    return int(rng.integers(1, top + 1))


def random_network(rng: np.random.Generator, *, max_layers: int = 3, max_rank: int = MAX_RANK,
                   act_bits: int | None = None, inter_bits: int | None = None) -> IntNetwork:
    """A random :class:`~ttforge.ir.executor.IntNetwork` (see the module docstring).

    With the defaults the draws are those of ``ttforge regress`` (seed ``s`` draws from
    ``np.random.default_rng([s, 0x77F0])``). ``act_bits``/``inter_bits`` fix the widths
    instead of drawing them; ``max_layers`` and ``max_rank`` bound the size."""
    if act_bits is None:
        act_bits = int(rng.choice([4, 6, 8, 8]))
    if inter_bits is None:
        inter_bits = int(rng.choice([b for b in (8, 12, 16) if b >= act_bits]))
    in_exp = int(rng.integers(-4, 0))
    layers, in_f = [], None
    n_layers = int(rng.integers(1, max_layers + 1))
    for li in range(n_layers):
        d, in_modes, out_modes = _draw_modes(rng, in_f, top=(5, 13), at_least=(4, 3))
        lim = max_ranks(out_modes, in_modes)
        ranks = [1] + [_rank(rng, lim[k], max_rank) for k in range(1, d)] + [1]
        order = _draw_order(rng, d)
        n_in, n_out = int(np.prod(in_modes)), int(np.prod(out_modes))
        in_features = in_f if in_f is not None else int(rng.integers(max(1, n_in - 2), n_in + 1))
        out_features = int(rng.integers(max(1, n_out - 2), n_out + 1))
        layer = random_layer(rng, in_modes, out_modes, ranks, order, w_bits=int(rng.integers(2, 9)),
                             in_bits=act_bits, in_exp=in_exp, inter_bits=inter_bits, out_bits=act_bits,
                             bias=bool(rng.integers(0, 2)),
                             relu=li + 1 < n_layers and bool(rng.integers(0, 2)),
                             in_features=in_features, out_features=out_features)
        layers.append(layer)
        in_f, in_exp = layer.out_features, layer.out_exp
    return IntNetwork(tuple(layers))


def engine_network(seed: int, *, max_layers: int = 2, max_mode: int = 4, max_rank: int = 4,
                   act_bits: int = 8, inter_bits: int = 16) -> IntNetwork:
    """A small random network for the Amaranth simulation of the engine (slow per cycle):
    at most ``max_layers`` layers of 1-3 cores, modes up to ``max_mode``, ranks up to
    ``max_rank``, fixed widths, at least 6 inputs and 4 outputs per layer."""
    rng = np.random.default_rng(seed)
    layers = []
    in_f = None
    in_exp = int(rng.integers(-4, 0))
    n_layers = int(rng.integers(1, max_layers + 1))
    for li in range(n_layers):
        # not too trivial: at least 6 inputs and 4 outputs
        d, in_modes, out_modes = _draw_modes(rng, in_f, top=(max_mode + 1, 3 * max_mode), at_least=(6, 4))
        lim = max_ranks(out_modes, in_modes)
        ranks = [int(rng.integers(1, min(lim[k], max_rank) + 1)) for k in range(1, d)]
        order = _draw_order(rng, d)
        layer = random_layer(rng, in_modes, out_modes, ranks, order, w_bits=int(rng.integers(2, 9)),
                             in_bits=act_bits, in_exp=in_exp, inter_bits=inter_bits, out_bits=act_bits,
                             bias=bool(rng.integers(0, 2)),
                             relu=li + 1 < n_layers and bool(rng.integers(0, 2)),
                             in_features=in_f, jitter=(-1, 0, 0, 1), bias_bits=11, acc_bits=44)
        layers.append(layer)
        in_f, in_exp = layer.out_features, layer.out_exp
    return IntNetwork(tuple(layers))


def random_inputs(net: IntNetwork, n: int, rng: np.random.Generator, *, extremes: bool = False) -> np.ndarray:
    """``n`` random input vectors over the whole range of the network's input width; with
    ``extremes`` the first is all lowest and the second all highest values."""
    bits = net.layers[0].in_bits
    x = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), size=(int(n), net.in_features)).astype(np.int64)
    if extremes:
        lo, hi = int_range(bits)
        x[0], x[1] = lo, hi
    return x


# -- calibrated shifts, tight accumulators ---------------------------------------------
def calibrated_layer(rng: np.random.Generator, in_f, out_f, in_modes, out_modes, ranks, order, *,
                     w_bits, in_bits, in_exp, inter_bits, out_bits, bias, relu, x_cal,
                     jitter=(-1, 0, 0, 1)) -> IntLayer:
    """A random TT layer whose step shifts are calibrated on ``x_cal`` (the largest sum
    maps to the top of the output width, then jittered by -1..+1 so that some saturate)
    and whose accumulator is as narrow as :func:`acc_bits_needed` allows."""
    shape = TTShape(tuple(out_modes), tuple(in_modes), tuple(ranks))
    sched = ContractionSchedule(shape, tuple(order))
    hi = (1 << (w_bits - 1)) - 1
    cores = tuple(rng.integers(-hi, hi + 1, size=s).astype(np.int64) for s in shape.core_shapes)
    core_exps = tuple(int(e) for e in rng.integers(-6, 0, size=shape.d))
    b = None
    x = np.pad(x_cal, ((0, 0), (0, shape.in_size - in_f)))
    step_exps, prev = [], in_exp
    for t, st in enumerate(sched.steps):
        C = cores[st.core].transpose(st.core_axes).reshape(st.P, st.K)
        acc = np.matmul(C, x.reshape(-1, st.A, st.K, st.Q)).reshape(x.shape[0], -1)
        last = t == shape.d - 1
        if last and bias:
            mag = max(1, int(np.abs(acc).max()) // 2)
            b = rng.integers(-mag, mag + 1, size=out_f).astype(np.int64)
            acc = acc.copy()
            acc[:, :out_f] += b
        target = out_bits if last else inter_bits
        top = max(1, int(np.abs(acc).max()))
        shift = top.bit_length() - (target - 1) + int(rng.choice(jitter))
        x = saturate(rshift_round(acc, shift), target)
        e = core_exps[st.core] + prev + shift
        step_exps.append(e)
        prev = e
    need = 2
    for t, st in enumerate(sched.steps):
        bm = int(np.abs(b).max()) if (b is not None and t == shape.d - 1 and b.size) else 0
        need = max(need, acc_bits_needed(st.K, w_bits, in_bits if t == 0 else inter_bits, bm))
    return IntLayer(in_features=in_f, out_features=out_f, schedule=sched, cores=cores,
                    core_exps=core_exps, w_bits=w_bits, in_bits=in_bits, in_exp=in_exp,
                    inter_bits=inter_bits, out_bits=out_bits, step_exps=tuple(step_exps),
                    acc_bits=need, bias=b, relu=relu)


def calibrated_network(seed: int, x_cal_rows: int = 64) -> IntNetwork:
    """A random network of :func:`calibrated_layer` s (see the module docstring)."""
    rng = np.random.default_rng(seed)
    act = int(rng.choice([4, 8, 16]))
    inter = max(int(rng.choice([8, 12, 16])), act)
    layers = []
    in_f, in_exp = int(rng.integers(3, 40)), -4
    lo, hi = int_range(act)
    x = rng.integers(lo, hi + 1, size=(x_cal_rows, in_f)).astype(np.int64)
    nlayers = int(rng.integers(1, 4))
    for li in range(nlayers):
        out_f = int(rng.integers(2, 40)) if li < nlayers - 1 else int(rng.integers(1, 12))
        if rng.random() < 0.15:
            d, in_modes, out_modes, ranks, order = 1, [in_f], [out_f], [1, 1], (0,)
        else:
            d = int(rng.integers(2, 5))
            in_modes, out_modes = _factor(rng, in_f, d), _factor(rng, out_f, d)
            lim = max_ranks(out_modes, in_modes)
            ranks = [1] + [int(rng.integers(1, min(lim[k], 6) + 1)) for k in range(1, d)] + [1]
            orders = schedule_orders(d)
            order = orders[int(rng.integers(len(orders)))]
        lay = calibrated_layer(rng, in_f, out_f, in_modes, out_modes, ranks, order,
                               w_bits=int(rng.integers(2, 9)), in_bits=act, in_exp=in_exp,
                               inter_bits=inter, out_bits=act, bias=bool(rng.random() < 0.7),
                               relu=bool(rng.random() < 0.5), x_cal=x)
        layers.append(lay)
        x = execute(IntNetwork((lay,)), x)
        in_f, in_exp = lay.out_features, lay.out_exp
    return IntNetwork(tuple(layers))


def _factor(rng: np.random.Generator, n: int, d: int) -> list[int]:
    """``d`` modes whose product is >= n (padding when it is larger)."""
    modes = [1] * d
    while int(np.prod(modes)) < n:
        modes[int(rng.integers(d))] += 1
    return modes


# -- shifts of both signs, exact accumulators -------------------------------------------
def shifted_layer(rng: np.random.Generator, in_features: int, in_bits: int, in_exp: int, out_bits: int,
                  last: bool) -> IntLayer:
    """A random TT layer with full-range cores, random exponents and step shifts of both
    signs (left shifts, exact, rounding, saturating), accumulators exactly as wide as
    :func:`acc_bits_needed` says; no ReLU on the ``last`` layer."""
    d = int(rng.integers(1, 4))
    in_modes = [int(v) for v in rng.integers(1, 5, size=d)]
    while np.prod(in_modes) < in_features:
        in_modes[int(rng.integers(d))] += 1
    out_modes = [int(v) for v in rng.integers(1, 5, size=d)]
    lim = max_ranks(out_modes, in_modes)
    ranks = [1] + [int(rng.integers(1, min(lim[k], 4) + 1)) for k in range(1, d)] + [1]
    shape = TTShape(tuple(out_modes), tuple(in_modes), tuple(ranks))
    orders = schedule_orders(d)
    schedule = ContractionSchedule(shape, orders[int(rng.integers(len(orders)))])
    out_features = int(rng.integers(max(1, shape.out_size - 2), shape.out_size + 1))
    w_bits = int(rng.integers(2, 9))
    hi_w = (1 << (w_bits - 1)) - 1
    cores = tuple(rng.integers(-hi_w, hi_w + 1, size=s).astype(np.int64) for s in shape.core_shapes)
    core_exps = tuple(int(e) for e in rng.integers(-6, 1, size=d))
    inter_bits = int(rng.choice([4, 6, 8, 10]))
    step_exps, need, prev_exp, prev_bits = [], [], in_exp, in_bits
    bias = None
    if rng.random() < 0.6:
        bias = rng.integers(-(1 << 12), 1 << 12, size=out_features).astype(np.int64)
    for t, step in enumerate(schedule.steps):
        final = t == d - 1
        bmax = int(np.abs(bias).max()) if final and bias is not None else 0
        n = acc_bits_needed(step.K, w_bits, prev_bits, bmax)
        need.append(n)
        bits = out_bits if final else inter_bits
        acc_exp = core_exps[step.core] + prev_exp
        shift = int(rng.integers(-2, max(0, n - bits) + 3))  # left shifts, exact, rounding, saturating
        step_exps.append(acc_exp + shift)
        prev_exp, prev_bits = acc_exp + shift, bits
    return IntLayer(in_features=in_features, out_features=out_features, schedule=schedule, cores=cores,
                    core_exps=core_exps, w_bits=w_bits, in_bits=in_bits, in_exp=in_exp,
                    inter_bits=inter_bits, out_bits=out_bits, step_exps=tuple(step_exps),
                    acc_bits=max(need), bias=bias, relu=bool(rng.random() < 0.5) and not last)


def shifted_network(seed: int) -> IntNetwork:
    """1-3 :func:`shifted_layer` s of 4-12-bit activations (the QONNX export tests: float32
    bounds are reached or refused)."""
    rng = np.random.default_rng(seed)
    n_layers = int(rng.integers(1, 4))
    bits = int(rng.choice([4, 8, 12]))
    features, exp = int(rng.integers(1, 20)), int(rng.integers(-6, 3))
    layers = []
    for li in range(n_layers):
        out_bits = int(rng.choice([4, 8, 12]))
        layer = shifted_layer(rng, features, bits, exp, out_bits, li == n_layers - 1)
        layers.append(layer)
        features, bits, exp = layer.out_features, layer.out_bits, layer.out_exp
    return IntNetwork(tuple(layers), meta={"seed": seed})


# ---------------------------------------------------------------------------------------
# training problems
# ---------------------------------------------------------------------------------------
def train_layer_shapes(rng: np.random.Generator, n_layers: int, d: int, rank: int, n_in: int,
                       hidden: int, n_out: int) -> list[tuple[int, int, ContractionSchedule]]:
    """``(in_features, out_features, schedule)`` per layer: ``n_layers`` layers ``n_in ->
    hidden -> ... -> n_out``; every layer but the last a TT layer of ``d`` cores (modes by
    :func:`~ttforge.ir.tt.factorize`, rank ``rank``, a random schedule order), the last
    (and every layer when ``d = 1``) dense."""
    from ttforge.ir.tt import factorize

    shapes = []
    sizes = [n_in] + [hidden] * (n_layers - 1) + [n_out]
    for i in range(n_layers):
        a, b = sizes[i], sizes[i + 1]
        if i == n_layers - 1 or d == 1:
            sched = ContractionSchedule(TTShape((b,), (a,), (1, 1)), (0,))
        else:
            shape = TTShape(factorize(b, d), factorize(a, d), rank)
            orders = schedule_orders(d)
            sched = ContractionSchedule(shape, orders[int(rng.integers(len(orders)))])
            a = min(a, shape.in_size)
        shapes.append((a, b, sched))
    return shapes


def train_case(seed: int, n_layers: int = 2, d: int = 3, rank: int = 3, n_in: int = 27,
               hidden: int = 20, n_out: int = 5, batch: int = 6, lr_shift: int = 4, **cfg):
    """``(state, x, y, rng)``: a random training state (widths ``cfg`` of
    :class:`~ttforge.ir.train.TrainConfig`), a batch of non-negative inputs and labels,
    and the state calibrated on that batch (golden)."""
    from ttforge.ir.train import TrainConfig, calibrate_state, init_state

    rng = np.random.default_rng(seed)
    config = TrainConfig(**cfg)
    state = init_state(train_layer_shapes(rng, n_layers, d, rank, n_in, hidden, n_out), config,
                       seed=seed, lr_shift=lr_shift)
    hi = (1 << (config.act_bits - 1)) - 1
    x = rng.integers(0, hi + 1, size=(batch, n_in))
    y = rng.integers(0, n_out, size=batch)
    state = calibrate_state(state, x, y, fast=False)
    return state, x, y, rng


def random_shapes(n: int, seed: int = 0) -> list[TTShape]:
    """``n`` random valid TT-matrix shapes: 2-4 cores, output and input modes 2-8, one
    rank of 2, 4, 8 or 16 on every inner bond (a draw above a bond's maximal rank is
    skipped). The schedule benchmark and the schedule tests share it."""
    rng = np.random.default_rng(seed)
    out: list[TTShape] = []
    while len(out) < n:
        d = int(rng.integers(2, 5))
        om = tuple(int(v) for v in rng.integers(2, 9, d))
        im = tuple(int(v) for v in rng.integers(2, 9, d))
        r = int(rng.choice([2, 4, 8, 16]))
        try:
            out.append(TTShape(om, im, (1,) + (r,) * (d - 1) + (1,)))
        except ShapeError:          # a rank above the bond's maximal rank
            continue
    return out
