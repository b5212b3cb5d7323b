"""An element-level model of the engine that executes the descriptor *words*.

``run_program(program, config, x)`` loads the program's memory images into memories of
the config's depths and widths (values are stored two's complement at the memory's
width, as the hardware stores them; a program compiled for another config is refused,
as are inputs outside the network's input range), streams each input vector into ``BUF0``, then
decodes and executes the descriptors in DMEM one after the other, exactly as
``docs/hardware.md`` describes the engine: lanes, word and element accesses, the two
modes, bias, shift with FLOOR_PLUS_HALF rounding, saturation, ReLU, ``OUT_VALID``, ``ZFILL``,
the ``LAST`` flag and every error check. It does not look at the network the program
came from; the tests require it to equal ``ttforge.quant.execute`` exactly.

Loops are vectorized with numpy over the batch and over all iterations of a step, so
the 784 -> 512 rank-16 MNIST layer runs in well under a second per batch.

Counters: ``BUSY_LANE_CYCLES`` (valid lanes summed over MAC cycles), ``SAT_EVENTS``,
``VECTORS`` and ``MAC_CYCLES`` are exact; ``CYCLES`` comes from the analytic cycle model
(:mod:`ttforge.hw.cycles`) of the same descriptors; the model's streams never stall, so
``IN_STALL`` and ``OUT_STALL`` are 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ttforge.errors import ConfigError, ShapeError
from ttforge.errors import EngineError, AccumulatorOverflow  # noqa: F401 - defined in ttforge.errors
from ttforge.hw.config import DESC_WORDS, AccelConfig
from ttforge.hw.program import Descriptor, Program, decode_descriptor
from ttforge.hw.regmap import ErrorCode, config_identity
from ttforge.ir.arith import rshift_round, saturate
from ttforge.ir.executor import check_input_values

__all__ = ["EngineError", "AccumulatorOverflow", "StepRecord", "run_program",
           "run_program_traced", "requantize", "check_stream_input", "check_program_config",
           "MAX_MODEL_CYCLES"]

#: The model refuses a step with more MAC cycles than this (a malformed descriptor).
MAX_MODEL_CYCLES = 1 << 26


@dataclass(frozen=True)
class StepRecord:
    """What one descriptor wrote: the destination buffer's elements ``0 .. extent-1``
    after the step (``(B, extent)``), and its saturation events."""

    step: int
    dst: int
    out: np.ndarray
    saturations: int


def _wrap(v: np.ndarray, bits: int) -> np.ndarray:
    """Store ``v`` in a ``bits``-wide two's complement memory (keep the low bits, sign-extend)."""
    v = np.asarray(v, dtype=np.int64)
    m = np.int64(1 << bits)
    h = np.int64(1 << (bits - 1))
    return ((v + h) % m) - h


def requantize(acc: np.ndarray, shift: int, sat_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """``sat(rshift_round(acc, shift), sat_bits)`` and the saturation-event mask, exact for
    every ``shift`` of the signed 8-bit field, ``|acc| < 2**48`` and ``sat_bits <= 32``
    (``docs/arithmetic.md``; :func:`ttforge.ir.arith.rshift_round` and ``saturate``
    where int64 holds the intermediate values)."""
    a = np.asarray(acc, dtype=np.int64)
    lo, hi = -(1 << (sat_bits - 1)), (1 << (sat_bits - 1)) - 1
    if shift >= 62:
        # |a| < 2**48 <= 2**(shift-1): floor(a / 2**shift + 1/2) = 0
        y = np.zeros_like(a)
    elif shift >= 0:
        y = rshift_round(a, shift)
    else:
        # a left shift that saturates: clip first so that int64 never overflows; for
        # k >= 1, sat(a << k) == sat(clip(a, -2**(b-1), 2**(b-1)) << min(k, b))
        k = min(-shift, sat_bits)
        c = np.int64(1 << (sat_bits - 1))
        y = np.clip(a, -c, c) << np.int64(k - 1)
        y = np.clip(y, -c, c) << np.int64(1)
    out = saturate(y, sat_bits)
    return out, (y < lo) | (y > hi)


def _max_addr(base: int, bounds, strides) -> int:
    """Largest ``base + sum i_j * s_j`` over the loop (strides are unsigned)."""
    return int(base) + sum((int(n) - 1) * int(s) for n, s in zip(bounds, strides))


def _aligned(base: int, bounds, strides, L: int) -> bool:
    """Every ``base + sum i_j * s_j`` is a multiple of ``L``."""
    return base % L == 0 and all(s % L == 0 for n, s in zip(bounds, strides) if n > 1)


def _grid(bounds, strides, base: int) -> np.ndarray:
    """``base + sum_j i_j * s_j`` over the loop nest, shape ``bounds``."""
    nd = len(bounds)
    out = np.full((1,) * nd, int(base), dtype=np.int64)
    for j, (n, s) in enumerate(zip(bounds, strides)):
        shape = [1] * nd
        shape[j] = int(n)
        out = out + (np.arange(int(n), dtype=np.int64) * np.int64(s)).reshape(shape)
    return out


def _check_globals(program: Program, cfg: AccelConfig) -> None:
    g = program.globals
    bad = []
    if not 1 <= g["IN_COUNT"] <= g["IN_PAD"]:
        bad.append(f"IN_COUNT={g['IN_COUNT']} with IN_PAD={g['IN_PAD']}")
    if g["IN_PAD"] > cfg.buf_depth:
        bad.append(f"IN_PAD={g['IN_PAD']} > buf_depth={cfg.buf_depth}")
    if not 1 <= g["OUT_COUNT"] <= cfg.buf_depth:
        bad.append(f"OUT_COUNT={g['OUT_COUNT']}")
    if bad:
        raise EngineError(ErrorCode.GLOBALS, -1, "; ".join(bad))


def _step(d: Descriptor, s: int, cfg: AccelConfig, bufs: np.ndarray, cmem: np.ndarray,
          bmem: np.ndarray, counters: dict[str, int]) -> tuple[int, int]:
    """Execute descriptor ``d`` (step ``s``) in place; returns (dst, extent written)."""
    L = cfg.lanes
    N = tuple(int(n) for n in d.N)
    if min(N) == 0 or max(N) >> cfg.loop_bits:   # the engine's loop counters
        raise EngineError(ErrorCode.BOUND_ZERO, s, f"N={list(N)}")
    if not 2 <= d.SAT_BITS <= cfg.inter_bits:
        raise EngineError(ErrorCode.SAT_BITS, s, f"SAT_BITS={d.SAT_BITS}, inter_bits={cfg.inter_bits}")
    if not 1 <= d.LAST_LANES <= L:
        raise EngineError(ErrorCode.LAST_LANES, s, f"LAST_LANES={d.LAST_LANES}, L={L}")
    if d.ZFILL_TO < d.ZFILL_FROM:
        raise EngineError(ErrorCode.ZFILL_ORDER, s, f"{d.ZFILL_FROM}..{d.ZFILL_TO}")
    cycles = N[0] * N[1] * N[2] * N[3]
    if cycles > MAX_MODEL_CYCLES:
        raise ConfigError(f"step {s}: {cycles} MAC cycles exceed the model's limit "
                          f"{MAX_MODEL_CYCLES}; the descriptor is malformed")
    mode1 = d.MODE == 1
    word_out = (not mode1) or bool(d.OUT_WORD)
    # -- alignment of word accesses
    if not mode1 and not _aligned(d.X_BASE, N, d.X_S, L):
        raise EngineError(ErrorCode.MISALIGNED, s, "x word")
    if mode1 and not _aligned(d.C_BASE, N, d.C_S, L):
        raise EngineError(ErrorCode.MISALIGNED, s, "core word")
    if word_out and (d.O_LANE != 1 or not _aligned(d.O_BASE, N[:3], d.O_S, L)):
        raise EngineError(ErrorCode.MISALIGNED, s, f"output word (O_LANE={d.O_LANE})")
    # -- ranges (strides are unsigned, so the largest address is at the largest indices)
    x_top = _max_addr(d.X_BASE, N, d.X_S) + (0 if mode1 else L - 1)
    if x_top >= cfg.buf_depth:
        raise EngineError(ErrorCode.BUF_RANGE, s, f"x reads up to {x_top}")
    c_top = _max_addr(d.C_BASE, N, d.C_S) + (L - 1 if mode1 else 0)
    if c_top >= cfg.core_depth:
        raise EngineError(ErrorCode.CMEM_RANGE, s, f"core reads up to {c_top}")
    # lanes valid in each (i0, i1, i2): L, except LAST_LANES at i2 = N2 - 1 in mode 1
    lanes_at = np.full(N[2], L, dtype=np.int64)
    if mode1:
        lanes_at[-1] = d.LAST_LANES
    lane = np.arange(L, dtype=np.int64)
    valid = np.broadcast_to((lane[None, :] < lanes_at[:, None])[None, None], (N[0], N[1], N[2], L))
    O = _grid(N[:3], d.O_S, d.O_BASE)                                  # (N0, N1, N2)
    o_addr = O[..., None] + lane * np.int64(d.O_LANE)
    o_top = int(o_addr[valid].max())
    if o_top >= cfg.buf_depth:
        raise EngineError(ErrorCode.BUF_RANGE, s, f"output writes up to {o_top}")
    if d.O_BASE + d.ZFILL_TO > cfg.buf_depth:
        raise EngineError(ErrorCode.BUF_RANGE, s, f"ZFILL up to {d.O_BASE + d.ZFILL_TO - 1}")
    rel = o_addr - np.int64(d.O_BASE)
    keep = rel < d.OUT_VALID                                           # not padding
    if d.BIAS and np.any(valid & keep):
        b_top = d.B_BASE + int(rel[valid & keep].max())
        if b_top >= cfg.bias_depth:
            raise EngineError(ErrorCode.BMEM_RANGE, s, f"bias reads up to {b_top}")

    # -- the MACs
    src = bufs[d.SRC]                                                  # (B, buf_depth)
    xa = _grid(N, d.X_S, d.X_BASE)
    ca = _grid(N, d.C_S, d.C_BASE)
    if not mode1:   # lanes over q: x is a word, the core element is broadcast
        xg = src[:, xa[..., None] + lane]                              # (B, N0..N3, L)
        acc = np.einsum("bijkml,ijkm->bijkl", xg, cmem[ca])
    else:           # lanes over p: x is broadcast, the core is a word
        cg = cmem[ca[..., None] + lane]                                # (N0..N3, L)
        acc = np.einsum("bijkm,ijkml->bijkl", src[:, xa], cg)
    if d.BIAS:
        bidx = np.where(valid & keep, np.int64(d.B_BASE) + rel, 0)
        acc = acc + np.where(valid & keep, bmem[bidx], 0)[None]
    lim = 1 << (cfg.acc_bits - 1)
    if acc.size and (acc.min() < -lim or acc.max() >= lim):
        raise AccumulatorOverflow(
            f"step {s}: a sum reaches {max(-int(acc.min()), int(acc.max()))}, outside "
            f"acc_bits={cfg.acc_bits}; the hardware would wrap")
    y, sat = requantize(acc, d.SHIFT, d.SAT_BITS)
    if d.RELU:
        y = np.maximum(y, 0)
    y = np.where(keep[None], y, 0)
    counters["SAT_EVENTS"] += int(np.count_nonzero(sat & valid[None]))
    counters["MAC_CYCLES"] += cycles * bufs.shape[1]
    counters["BUSY_LANE_CYCLES"] += int(lanes_at.sum()) * N[0] * N[1] * N[3] * bufs.shape[1]
    # -- writes (valid lanes only), then the zero fill
    dst = 1 - d.SRC
    out = bufs[dst]
    out[:, o_addr[valid]] = _wrap(y[:, valid], cfg.inter_bits)
    if d.ZFILL_TO > d.ZFILL_FROM:
        out[:, d.O_BASE + d.ZFILL_FROM:d.O_BASE + d.ZFILL_TO] = 0
    return dst, max(o_top + 1, d.O_BASE + d.ZFILL_TO)


def check_stream_input(program: Program, x) -> np.ndarray:
    """``x`` as the engine streams it, a ``(batch, in_count)`` integer array in the
    network's input range (the model and the RTL simulations take the same); else a
    one-line :class:`ShapeError`, the executor's for a value out of range."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != program.in_count:
        raise ShapeError(f"input has shape {x.shape}; the program takes (batch, {program.in_count})")
    if not np.issubdtype(x.dtype, np.integer):
        raise ShapeError(f"input has dtype {x.dtype}; the engine takes integers")
    # the network's width, not act_bits: the stream keeps act_bits of a value, so one
    # outside in_bits (but inside act_bits) computed what neither the executor's wrapped
    # nor its saturated input gives
    check_input_values(x, program.in_bits)
    return x


def check_program_config(program: Program, config: AccelConfig, where: str,
                         engine: str = "the config", fix: str = "config") -> None:
    """Refuse ``program`` for an engine of another config than the one it was compiled
    for: one :class:`ConfigError` naming the fields that differ (those of the load
    image's identity, :func:`~ttforge.hw.regmap.config_identity`) and the fix.

    A narrower ``core_bits`` wrapped the cores, other ``lanes`` read another layout: the
    outputs were wrong with nothing raised. ``engine`` names the other config in the
    message, ``fix`` the expression to compile for.
    """
    # the identity, not the dataclass: requant_units=None and =lanes are one engine (the
    # dataclasses differ, and a refusal listed every field with equal values on both sides)
    have, want = config_identity(program.config), config_identity(config)
    diff = [k for k in {**have, **want} if have.get(k) != want.get(k)]
    if not diff:
        return
    raise ConfigError(f"{where}: the program was compiled for "
                      f"{', '.join(f'{k}={have.get(k)}' for k in diff)} but {engine} has "
                      f"{', '.join(f'{k}={want.get(k)}' for k in diff)}; compile it for "
                      f"{engine} (compile_program(net, {fix}))")


def _run(program: Program, config: AccelConfig | None, x, traced: bool):
    cfg = config if config is not None else program.config
    if not isinstance(cfg, AccelConfig):
        raise ConfigError(f"run_program needs an AccelConfig, got {type(cfg).__name__}")
    check_program_config(program, cfg, "run_program")
    x = check_stream_input(program, x)
    dmem_words = program.dmem
    for name, n, depth in (("DMEM", len(dmem_words), cfg.desc_depth * DESC_WORDS),
                           ("CMEM", program.cmem.size, cfg.core_depth),
                           ("BMEM", program.bmem.size, cfg.bias_depth)):
        if n > depth:
            raise ConfigError(f"the program's {name} image ({n} words) exceeds the config's {depth}; "
                              f"compile it for this config")
    # memories after the load image (unwritten words read 0)
    dmem = np.zeros(cfg.desc_depth * DESC_WORDS, dtype=np.int64)
    dmem[:len(dmem_words)] = dmem_words
    cmem = np.zeros(cfg.core_depth, dtype=np.int64)
    cmem[:program.cmem.size] = _wrap(program.cmem, cfg.core_bits)
    bmem = np.zeros(cfg.bias_depth, dtype=np.int64)
    bmem[:program.bmem.size] = _wrap(program.bmem, cfg.bias_bits)
    _check_globals(program, cfg)
    B = x.shape[0]
    bufs = np.zeros((2, B, cfg.buf_depth), dtype=np.int64)
    # the input stream: act_bits per element, stored at inter_bits; then IN_PAD zeros
    bufs[0, :, :program.in_count] = _wrap(x.astype(np.int64), cfg.act_bits)
    counters = {"CYCLES": 0, "BUSY_LANE_CYCLES": 0, "IN_STALL": 0, "OUT_STALL": 0,
                "SAT_EVENTS": 0, "VECTORS": 0, "MAC_CYCLES": 0}
    records: list[StepRecord] = []
    descs: list[Descriptor] = []
    s = 0
    while True:
        if s >= cfg.desc_depth:
            raise EngineError(ErrorCode.NO_LAST, s - 1, f"{cfg.desc_depth} steps without LAST")
        d = decode_descriptor(dmem[DESC_WORDS * s:DESC_WORDS * (s + 1)].tolist())
        sat_before = counters["SAT_EVENTS"]
        dst, extent = _step(d, s, cfg, bufs, cmem, bmem, counters)
        descs.append(d)
        if traced:
            records.append(StepRecord(s, dst, bufs[dst, :, :extent].copy(),
                                      counters["SAT_EVENTS"] - sat_before))
        if d.LAST:
            break
        s += 1
    y = _wrap(bufs[program.out_buf, :, :program.out_count], cfg.act_bits)
    from ttforge.hw.cycles import program_cycles

    counters["VECTORS"] = B
    counters["CYCLES"] = B * program_cycles(descs, cfg, program.globals).total
    return y, counters, records


def run_program(program: Program, config: AccelConfig | None, x: np.ndarray
                ) -> tuple[np.ndarray, dict[str, int]]:
    """Run integer input vectors ``(B, IN_COUNT)`` through the engine model.

    Parameters
    ----------
    program : Program
        From :func:`~ttforge.hw.program.compile_program` (possibly with words altered).
    config : AccelConfig or None
        The engine (memories, widths, lanes): ``program.config``, which ``None`` means;
        another is a one-line :class:`ConfigError` naming the fields that differ.
    x : integer array ``(B, IN_COUNT)``
        In the network's input range (``program.in_bits``), as the executor takes it;
        else a one-line :class:`ShapeError`.

    Returns
    -------
    y : int64 array ``(B, OUT_COUNT)``
    counters : dict
        ``CYCLES``, ``BUSY_LANE_CYCLES``, ``IN_STALL``, ``OUT_STALL``, ``SAT_EVENTS``,
        ``VECTORS`` (the hardware counters over the batch) and ``MAC_CYCLES``.

    Raises
    ------
    ConfigError, ShapeError
        Another config than the program's; inputs the executor refuses.
    EngineError
        Where the hardware would set ``STATUS.ERROR`` (``.code``, ``.step``).
    AccumulatorOverflow
        A sum outside ``acc_bits`` (the hardware would silently wrap).
    """
    y, counters, _ = _run(program, config, x, traced=False)
    return y, counters


def run_program_traced(program: Program, config: AccelConfig | None, x: np.ndarray
                       ) -> tuple[np.ndarray, dict[str, int], list[StepRecord]]:
    """:func:`run_program`, also returning what every step wrote (:class:`StepRecord`)."""
    return _run(program, config, x, traced=True)
