"""A host driver for the training top (:class:`~ttforge.hw.trainer.top.TrainAccel`) over
AXI4-Lite, independent of any simulator or board.

The driver is given the bus as callables (the *transport*):

``read32(addr) -> int``
    one AXI4-Lite read of the 32-bit word at byte address ``addr``;
``write32(addr, value)``
    one AXI4-Lite write;
``stream(frames)``
    send the samples on ``s_axis``: ``frames`` is a list of samples, each a list of
    ``IN_COUNT + 1`` integers (the features, then the label); one element per beat, the
    element in the low ``act_bits`` of ``tdata`` (two's complement), ``tlast`` on each
    sample's last beat;
``read_block(addr, n) -> list`` / ``write_block(addr, values)`` (optional)
    ``n`` consecutive words (a transport that can pipeline accesses is much faster;
    by default they are single accesses).

A transport raises on a non-``OKAY`` response (:data:`BusError`, which is
:class:`ttforge.errors.DeviceError`).
:class:`TrainHost` takes plain functions (a board's serial bridge); :class:`AsyncTrainHost`
takes coroutine functions (a cocotb testbench) and its methods are coroutines. Both run
the same code: every operation is written once as a generator of bus requests.

The protocol (``docs/hardware.md``, "Training engine: registers and host protocol"):
:meth:`~TrainHost.load_program` writes the descriptors, the memory images, the program
registers and the generator; :meth:`~TrainHost.run_batch` gives ``CMD.START``, streams
the batch and polls ``STATUS`` until ``DONE`` or ``ERROR``; :meth:`~TrainHost.read_state`
reads CMEM, BMEM, MAXACC and ``RNG``; :meth:`~TrainHost.train_step` does all of a step as
the host must: run the batch, read the state back, recompute the exponents from MAXACC
(:func:`~ttforge.hw.trainer.program.next_exponents`), recompile and rewrite only the
descriptor words that changed (the shifts).

Over a slow link (a board's UART) a step need not read the state back:
``train_step(..., read_back=False)`` reads only the ``MAXACC`` words of the operations that
set an exponent (the exponents depend on MAXACC and the exponents alone, never on the
weights); the masters, biases and generator stay on the device until
:meth:`~TrainHost.read_state` at a checkpoint. ``logits=True`` also reads the batch's
logits from ``ACT`` (:meth:`~TrainHost.read_logits`), from which the host computes the
step's loss as the device computed it.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Generator, Sequence

import numpy as np

from ttforge.errors import ConfigError, DeviceError, DeviceTimeout
from ttforge.ir.arith import value_range
from ttforge.hw.trainer.regmap import (TRAIN_ERROR_TEXT, TRAIN_MAGIC, TRAIN_REGMAP_VERSION,
                                       TrainRegisterMap)

__all__ = ["BusError", "engine_error", "StepResult", "TrainHost", "AsyncTrainHost",
           "DEFAULT_MAX_POLLS"]

DEFAULT_MAX_POLLS = 1_000_000
_STATUS_DONE, _STATUS_ERROR = 1 << 1, 1 << 2
_CMD_START, _CMD_SOFT_RESET, _CMD_CLEAR_ERROR = 1, 2, 4


#: what a transport raises on a non-``OKAY`` response (the device answered with an error)
BusError = DeviceError


def engine_error(code: int, op: int) -> DeviceError:
    """The :class:`~ttforge.errors.DeviceError` :meth:`TrainHost.run_batch` raises when the
    engine stops a step: one line naming the code, its meaning and the operation; the
    instance carries ``code``, ``name`` and ``op``."""
    name, text = TRAIN_ERROR_TEXT.get(int(code), (f"CODE_{code}", "unknown error code"))
    e = DeviceError(f"training engine error {int(code)} ({name}: {text}) at operation {int(op)}")
    e.code, e.name, e.op = int(code), name, int(op)
    return e


@dataclass(frozen=True)
class StepResult:
    """What :meth:`TrainHost.train_step` returns: the state after the step (exponents
    recomputed), the program of the next step (already written to DMEM), and the raw
    memories read back (``cmem``, ``bmem``, ``maxacc``, ``rng``). A light step
    (``read_back=False``) reads no memory: ``cmem``, ``bmem`` and ``rng`` are ``None``,
    ``maxacc`` maps each exponent-setting operation to its value, and the state's masters,
    biases and ``rng`` are those it had (the device holds the new ones). ``logits``: the
    batch's ``(B, classes)`` logits when asked for; ``rewritten``: descriptor words written."""

    state: Any
    program: Any
    cmem: np.ndarray | None
    bmem: np.ndarray | None
    maxacc: Any
    rng: int | None
    logits: np.ndarray | None = None
    rewritten: int = 0


def signed_word(v: int, bits: int = 32) -> int:
    """The low ``bits`` of ``v`` read as two's complement (a 32-bit bus word, or an
    element of a narrower memory): the one sign extension of every host of the engine."""
    v = int(v) & ((1 << bits) - 1)
    return v - (1 << bits) if v >> (bits - 1) else v


def check_stream_batch(x: np.ndarray, y: np.ndarray, act_bits: int) -> None:
    """One line (:class:`ConfigError`) if a feature or a label of a batch leaves the
    signed ``act_bits`` stream element it travels in: the stream keeps only the low
    ``act_bits`` of each, so such a value would reach the engine as another (a label
    beyond ``2^(act_bits-1) - 1`` as a negative or a wrong label), never refused there."""
    lo, hi = value_range(act_bits)
    for name, v in (("feature", np.asarray(x)), ("label", np.asarray(y))):
        if v.size and (int(v.min()) < lo or int(v.max()) > hi):
            bad = int(v.min()) if int(v.min()) < lo else int(v.max())
            raise ConfigError(f"a {name} of the batch is {bad}, outside the training engine's signed {act_bits}-bit "
                              f"stream elements (act_bits={act_bits}, {lo}..{hi}); "
                              + ("quantize the features to act_bits" if name == "feature" else
                                 "labels are class indices, 0 up to the state's classes - 1"))


Gen = Generator[tuple, Any, Any]


class _Ops:
    """Every driver operation as a generator of bus requests."""

    def __init__(self, config):
        self.config = config
        self.regmap = TrainRegisterMap(config)
        self._words: list[int] | None = None      # the descriptor words in DMEM
        self._globals: dict | None = None

    # -- primitives --------------------------------------------------------------------
    def _a(self, name: str) -> int:
        return self.regmap.addr(name)

    def _win(self, name: str):
        return self.regmap.window(name)

    def read_window(self, name: str, start: int, n: int) -> Gen:
        """``n`` elements of window ``name`` from element ``start`` (signed windows
        sign-extended, the others as unsigned 32-bit words)."""
        w = self._win(name)
        if n < 0 or start < 0 or start + n > w.depth:
            raise ConfigError(f"{name}[{start}:{start + n}] is outside the window's {w.depth} elements")
        if n == 0:
            return []
        words = yield ("read_block", w.base + 4 * start, n)
        return [signed_word(v) if w.signed else int(v) & 0xFFFFFFFF for v in words]

    def write_window(self, name: str, start: int, values: Sequence[int]) -> Gen:
        w = self._win(name)
        if w.access != "RW":
            raise ConfigError(f"window {name} is read-only")
        vals = [int(v) & 0xFFFFFFFF for v in values]
        if start < 0 or start + len(vals) > w.depth:
            raise ConfigError(f"{name}[{start}:{start + len(vals)}] is outside the window's "
                              f"{w.depth} elements")
        if vals:
            yield ("write_block", w.base + 4 * start, vals)

    def read_reg(self, name: str) -> Gen:
        return (yield ("read", self._a(name)))

    def write_reg(self, name: str, value: int) -> Gen:
        yield ("write", self._a(name), int(value) & 0xFFFFFFFF)

    # -- identification ----------------------------------------------------------------
    def check(self) -> Gen:
        """Read ``ID``, ``VERSION`` and every ``CFG_*`` register; raise ``ConfigError``
        naming the first that differs from the driver's configuration."""
        ident = yield from self.read_reg("ID")
        if ident != TRAIN_MAGIC:
            raise ConfigError(f"ID reads 0x{ident:08X}, not a ttforge training top (0x{TRAIN_MAGIC:08X})")
        for r in self.regmap.registers:
            if r.name == "ID" or r.value is None:
                continue
            got = yield from self.read_reg(r.name)
            if got != r.value:
                hint = (f"interface version {got & 0xFFFF}, the driver's {TRAIN_REGMAP_VERSION}"
                        if r.name == "VERSION" else "the core was generated with another config")
                raise ConfigError(f"{r.name} reads 0x{got:08X}, expected 0x{r.value:08X} ({hint})")
        return True

    # -- program and state ----------------------------------------------------------------
    def load_program(self, program, images: bool = True) -> Gen:
        """Write the descriptors, the program registers and (``images``) CMEM, BMEM and
        the generator state of ``program``."""
        self._check_program(program)
        words = list(program.words)
        yield from self.write_window("DMEM", 0, words)
        self._words = words
        yield from self._write_globals(program.globals)
        if images:
            yield from self.load_state(program)

    def load_state(self, program, cmem=None, bmem=None, rng=None) -> Gen:
        """Write a training state: CMEM and BMEM images (default: ``program``'s) and
        ``RNG``."""
        cm = program.cmem if cmem is None else cmem
        bm = program.bmem if bmem is None else bmem
        yield from self.write_window("CMEM", 0, [int(v) for v in cm])
        yield from self.write_window("BMEM", 0, [int(v) for v in bm])
        yield from self.write_reg("RNG", program.globals["RNG"] if rng is None else rng)

    def rewrite_shifts(self, program) -> Gen:
        """Bring DMEM and the program registers to ``program`` writing only the words that
        differ from what this driver loaded (after a step: the shift fields). Returns the
        number of descriptor words written."""
        self._check_program(program)
        words = list(program.words)
        if self._words is None or len(self._words) != len(words):
            yield from self.write_window("DMEM", 0, words)
            n = len(words)
        else:
            n = 0
            for i, (old, new) in enumerate(zip(self._words, words)):
                if old != new:
                    yield from self.write_window("DMEM", i, [new])
                    n += 1
        self._words = words
        glob = {k: v for k, v in program.globals.items() if k != "RNG"}
        if glob != self._globals:
            yield from self._write_globals(program.globals)
        return n

    def _write_globals(self, g: dict) -> Gen:
        for name in ("BATCH", "BW_LOG", "IN_COUNT", "IN_BASE", "STOCH"):
            yield from self.write_reg(name, g[name])
        self._globals = {k: v for k, v in g.items() if k != "RNG"}

    def _check_program(self, program) -> None:
        if program.config != self.config:
            raise ConfigError("the program was compiled for another TrainEngineConfig than the "
                              "driver's; compile it with compile_training(state, batch, driver.config)")

    def read_maxacc(self, n_ops: int) -> Gen:
        """MAXACC of operations ``0 .. n_ops-1`` (int64)."""
        raw = yield from self.read_window("MAXACC", 0, 2 * n_ops)
        return np.array([raw[2 * j] | raw[2 * j + 1] << 32 for j in range(n_ops)], dtype=np.int64)

    def read_maxacc_used(self, program) -> Gen:
        """``{op: MAXACC}`` of the operations whose MAXACC sets an exponent
        (``program.maxacc_ops``), read in runs of consecutive operations."""
        idx = sorted(program.maxacc_ops)
        out: dict[int, int] = {}
        k = 0
        while k < len(idx):
            e = k
            while e + 1 < len(idx) and idx[e + 1] == idx[e] + 1:
                e += 1
            raw = yield from self.read_window("MAXACC", 2 * idx[k], 2 * (e - k + 1))
            for n, j in enumerate(idx[k:e + 1]):
                out[j] = raw[2 * n] | raw[2 * n + 1] << 32
            k = e + 1
        return out

    def read_logits(self, program) -> Gen:
        """The logits of the last step's batch, ``(batch, classes)`` int64, from ``ACT``
        (class ``f`` of sample ``b`` is element ``L * base + f * slots + b``)."""
        from ttforge.hw.trainer.program import Op

        classes = next(op.N[0] for op in program.ops if op.OP == Op.LOSS)
        base = program.regions.act[-1][0] * self.config.lanes
        rows = []
        for f in range(classes):
            rows.append((yield from self.read_window("ACT", base + f * program.slots, program.batch)))
        return np.array(rows, dtype=np.int64).T.copy()

    def read_state(self, program) -> Gen:
        """``(cmem, bmem, maxacc, rng)`` as the engine holds them after a step (the
        regions ``program`` uses)."""
        cm = yield from self.read_window("CMEM", 0, int(program.cmem.size))
        bm = yield from self.read_window("BMEM", 0, int(program.bmem.size))
        mx = yield from self.read_maxacc(len(program.ops))
        rng = yield from self.read_reg("RNG")
        return (np.array(cm, dtype=np.int64), np.array(bm, dtype=np.int64), mx, int(rng))

    # -- running -----------------------------------------------------------------------
    def status(self) -> Gen:
        return (yield from self.read_reg("STATUS"))

    def error(self) -> Gen:
        """``(code, op)`` of ``ERROR_CODE``."""
        v = yield from self.read_reg("ERROR_CODE")
        return v & 0xFF, v >> 16

    def clear_error(self) -> Gen:
        yield from self.write_reg("CMD", _CMD_CLEAR_ERROR)

    def soft_reset(self) -> Gen:
        yield from self.write_reg("CMD", _CMD_SOFT_RESET)

    def counters(self) -> Gen:
        """``CYCLES``, ``MAC_CYCLES`` (48 bits, LO then HI), ``STEPS``, ``CHANGED``."""
        out = {}
        for name in ("CYCLES", "MAC_CYCLES"):
            lo = yield from self.read_reg(f"{name}_LO")
            hi = yield from self.read_reg(f"{name}_HI")
            out[name] = lo | hi << 32
        for name in ("STEPS", "CHANGED"):
            out[name] = yield from self.read_reg(name)
        return out

    def run_batch(self, x, y, max_polls: int = DEFAULT_MAX_POLLS) -> Gen:
        """Start one step (``CMD.START``), stream the batch (``x``: ``(B, IN_COUNT)``,
        ``y``: ``B`` labels) and poll until it is done; raise :func:`engine_error`'s
        ``DeviceError`` if the engine reports an error, ``DeviceTimeout`` after
        ``max_polls`` polls."""
        X = np.asarray(x)
        Y = np.asarray(y).reshape(-1)
        if X.ndim != 2 or X.shape[0] != Y.shape[0]:
            raise ConfigError(f"a batch is x of shape (B, IN_COUNT) and B labels; got {X.shape} and {Y.shape}")
        if self._globals is not None and (X.shape[0] != self._globals["BATCH"]
                                          or X.shape[1] != self._globals["IN_COUNT"]):
            raise ConfigError(f"a batch of shape {X.shape}; the loaded program takes "
                              f"({self._globals['BATCH']}, {self._globals['IN_COUNT']})")
        check_stream_batch(X, Y, self.config.train.act_bits)
        yield from self.write_reg("CMD", _CMD_START)
        frames = [[int(v) for v in X[b]] + [int(Y[b])] for b in range(X.shape[0])]
        yield ("stream", frames)
        for _ in range(max_polls):
            s = yield from self.status()
            if s & _STATUS_ERROR:
                code, op = yield from self.error()
                raise engine_error(code, op)
            if s & _STATUS_DONE:
                return s
        raise DeviceTimeout(f"the training step did not finish within {max_polls} STATUS polls")

    def train_step(self, state, program, x, y, max_polls: int = DEFAULT_MAX_POLLS,
                   read_back: bool = True, logits: bool = False) -> Gen:
        """One training step of ``state`` (whose program is loaded) on ``(x, y)``;
        returns a :class:`StepResult` (the next program is already in DMEM).
        ``read_back=False``: the light step (only MAXACC crosses the bus; see the module
        docstring); ``logits``: also read the batch's logits."""
        from ttforge.hw.trainer.program import (compile_training, next_exponents,
                                                state_from_memories)
        from ttforge.ir.train import check_next_state

        yield from self.run_batch(x, y, max_polls)
        lg = (yield from self.read_logits(program)) if logits else None
        if read_back:
            cm, bm, mx, rng = yield from self.read_state(program)
            cur = state_from_memories(state, program, cm, bm, rng)
        else:
            cm = bm = rng = None
            mx = yield from self.read_maxacc_used(program)
            # the counters advance as state_from_memories advances them; the values stay
            # on the device
            words = state.n_stored() if state.config.rounding == "stochastic" else 0
            cur = state.replace(step=state.step + 1, words=state.words + words)
        new = next_exponents(cur, program, mx)
        # the golden step's refusal, naming the layer and the fix, before compile_training's
        # bare "step t shifts by s" (the device has run the step: the caller reloads)
        check_next_state(state, new)
        nxt = compile_training(new, program.batch, self.config)
        n = yield from self.rewrite_shifts(nxt)
        return StepResult(new, nxt, cm, bm, mx, rng, lg, n)


_PUBLIC = ("read_window", "write_window", "read_reg", "write_reg", "check", "load_program",
           "load_state", "rewrite_shifts", "read_maxacc", "read_maxacc_used", "read_logits",
           "read_state", "status", "error", "clear_error", "soft_reset", "counters", "run_batch",
           "train_step")


class _Base:
    def __init__(self, config, read32: Callable, write32: Callable, stream: Callable,
                 read_block: Callable | None = None, write_block: Callable | None = None):
        self._ops = _Ops(config)
        self.config = config
        self.regmap = self._ops.regmap
        self._read32, self._write32, self._stream = read32, write32, stream
        self._read_block, self._write_block = read_block, write_block


class TrainHost(_Base):
    """The driver over plain (blocking) transport functions; see the module docstring."""

    def _drive(self, gen: Gen):
        try:
            req = next(gen)
            while True:
                req = gen.send(self._do(req))
        except StopIteration as stop:
            return stop.value

    def _do(self, req):
        kind, *args = req
        if kind == "read":
            return int(self._read32(*args))
        if kind == "write":
            return self._write32(*args)
        if kind == "stream":
            return self._stream(*args)
        if kind == "read_block":
            addr, n = args
            if self._read_block is not None:
                return [int(v) for v in self._read_block(addr, n)]
            return [int(self._read32(addr + 4 * i)) for i in range(n)]
        if kind == "write_block":
            addr, vals = args
            if self._write_block is not None:
                return self._write_block(addr, vals)
            for i, v in enumerate(vals):
                self._write32(addr + 4 * i, v)
            return None
        raise AssertionError(kind)  # pragma: no cover


class AsyncTrainHost(_Base):
    """The driver over coroutine transport functions (its methods are coroutines)."""

    async def _drive(self, gen: Gen):
        try:
            req = next(gen)
            while True:
                req = gen.send(await self._do(req))
        except StopIteration as stop:
            return stop.value

    async def _do(self, req):
        kind, *args = req
        if kind == "read":
            return int(await self._read32(*args))
        if kind == "write":
            return await self._write32(*args)
        if kind == "stream":
            return await self._stream(*args)
        if kind == "read_block":
            addr, n = args
            if self._read_block is not None:
                return [int(v) for v in await self._read_block(addr, n)]
            return [int(await self._read32(addr + 4 * i)) for i in range(n)]
        if kind == "write_block":
            addr, vals = args
            if self._write_block is not None:
                return await self._write_block(addr, vals)
            for i, v in enumerate(vals):
                await self._write32(addr + 4 * i, v)
            return None
        raise AssertionError(kind)  # pragma: no cover


def _wrap(name: str):
    op = getattr(_Ops, name)

    @functools.wraps(op)
    def sync(self, *a, **k):
        return self._drive(getattr(self._ops, name)(*a, **k))

    @functools.wraps(op)
    async def asyn(self, *a, **k):
        return await self._drive(getattr(self._ops, name)(*a, **k))

    return sync, asyn


for _name in _PUBLIC:
    _s, _as = _wrap(_name)
    setattr(TrainHost, _name, _s)
    setattr(AsyncTrainHost, _name, _as)
del _name, _s, _as

assert all(inspect.isgeneratorfunction(getattr(_Ops, n)) for n in _PUBLIC)
