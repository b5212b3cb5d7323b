"""The native Verilator harness of the training engine: long training runs in RTL.

:func:`build_train_native` Verilates the training engine (``ttforge.hw.trainer``, behind a
flat-port wrapper) with ``sim/native/train_main.cpp`` (a line protocol on stdin) and caches
the executable by the hash of everything that went into it. :class:`TrainSession` is the
host: it loads a program, streams labelled batches, reads the memories back and does the
exponent bookkeeping between steps (``docs/hardware.md``, "Training engine").
:func:`train_native` runs a whole sequence of batches and returns the final state, which
must equal the golden trainer's bit for bit.

    build = build_train_native(config)
    state, records = train_native(build, state, batches)
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterable, Sequence

import numpy as np
from amaranth.hdl import Module, Shape
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ttforge.errors import ConfigError, NativeError
from ttforge.hw.trainer.engine import HostSel, TrainEngine, TrainError
from ttforge.hw.trainer.host import check_stream_batch, signed_word
from ttforge.hw.trainer.program import (TrainEngineConfig, TrainProgram, compile_training, next_exponents,
                                        state_from_memories)
from ttforge.ir.train import TrainState, checked_samples, check_next_state
from ttforge.sim.native import VerilatedBuild

__all__ = ["TrainEngineFlat", "train_verilog", "build_train_native", "TrainSession", "train_native",
           "NativeTrainBuild", "no_zero_meminit"]

NATIVE_DIR = Path(__file__).resolve().parent / "native"
SOURCES = ("train_main.cpp",)
EXE_NAME = "ttf_train_native"
TOP = "ttforge_train_engine"
BUILD_RECIPE = 1


class TrainEngineFlat(wiring.Component):
    """:class:`TrainEngine` with one flat port per field (names a C++ harness can use)."""

    def __init__(self, config: TrainEngineConfig, fault: str | None = None):
        self.config = config
        self.fault = fault
        self._eng = TrainEngine(config, **({"fault": fault} if fault else {}))
        e = self._eng
        sig = {"inp_valid": In(1), "inp_ready": Out(1), "inp_payload": In(len(e.inp.payload)),
               "host_rdata": Out(32), "host_rvalid": Out(1)}
        for prefix, port, direction in (("host", e.host, In), ("prog", e.program, In),
                                        ("ctl", e.control, In), ("st", e.status, Out)):
            for f, shape in port.shape().members.items():
                sig[f"{prefix}_{f}"] = direction(Shape.cast(shape).width)
        super().__init__(sig)

    def elaborate(self, platform):
        m = Module()
        e = self._eng
        m.submodules.engine = e
        m.d.comb += [e.inp.valid.eq(self.inp_valid), self.inp_ready.eq(e.inp.ready),
                     e.inp.payload.eq(self.inp_payload), self.host_rdata.eq(e.host_rdata),
                     self.host_rvalid.eq(e.host_rvalid)]
        for f in e.host.shape().members:
            m.d.comb += getattr(e.host, f).eq(getattr(self, f"host_{f}"))
        for f in e.program.shape().members:
            m.d.comb += getattr(e.program, f).eq(getattr(self, f"prog_{f}"))
        for f in e.control.shape().members:
            m.d.comb += getattr(e.control, f).eq(getattr(self, f"ctl_{f}"))
        for f in e.status.shape().members:
            m.d.comb += getattr(self, f"st_{f}").eq(getattr(e.status, f))
        return m


@contextlib.contextmanager
def no_zero_meminit():
    """Amaranth emits every memory's initial contents, one constant bit at a time: for the
    MNIST-sized ACT (2^17 words of 256 bits) that is 33 M bits and an hour of elaboration.
    The training engine never reads a word it has not written (padding is zero-filled by
    the program; padding slots carry a zero gradient), so for the two-state Verilator
    harness the all-zero initialisation is dropped. Other memories are emitted as usual."""
    from amaranth.back import rtlil

    emitter = rtlil.ModuleEmitter
    original = emitter.emit_memory

    def emit_memory(self, cell_idx, cell):
        if any(cell.init):
            original(self, cell_idx, cell)

    emitter.emit_memory = emit_memory
    try:
        yield
    finally:
        emitter.emit_memory = original


def train_verilog(config: TrainEngineConfig, fault: str | None = None) -> str:
    """Verilog of the flat-port training engine, module ``ttforge_train_engine`` (memories without
    the all-zero initial contents: for the two-state native harness only)."""
    from amaranth.back import verilog

    with no_zero_meminit():
        return verilog.convert(TrainEngineFlat(config, fault), name=TOP, emit_src=False)


@dataclass(frozen=True)
class NativeTrainBuild(VerilatedBuild):
    """A built training harness (:class:`ttforge.sim.native.VerilatedBuild`)."""

    exe_name: ClassVar[str] = EXE_NAME


def build_train_native(config: TrainEngineConfig, *, build_root: str | os.PathLike | None = None,
                       fault: str | None = None, timeout: float = 3600) -> NativeTrainBuild:
    """Build (or find in the cache) the harness for ``config``: the cache key is the
    sha256 of the Verilog, the sources, the Verilator version and the recipe; a build
    compiles in a temporary directory renamed into place when complete."""
    from ttforge.sim.native import (build_key, check_native_tools, make_flags, recipe_line, verilate_cached,
                                   verilator_args)
    from ttforge.sim.runner import build_root_dir

    cxx = check_native_tools()
    root = build_root_dir(build_root, native=True)
    verilog = train_verilog(config, fault)
    sources = {n: (NATIVE_DIR / n).read_bytes() for n in SOURCES}
    args_fixed = verilator_args(TOP)
    key = "train-" + build_key(recipe_line("train", BUILD_RECIPE, args_fixed, cxx), verilog.encode(),
                               *(n.encode() + b"\0" + s for n, s in sorted(sources.items())))
    files = {**sources, f"{TOP}.v": verilog.encode()}

    def args_for(tmp: Path) -> list[str]:
        return [*args_fixed, "--Mdir", "obj_dir", "-CFLAGS", "-std=c++17", "-MAKEFLAGS", make_flags(cxx),
                "-o", f"../{EXE_NAME}", f"{TOP}.v", "train_main.cpp"]

    directory, cached, seconds = verilate_cached(root, key, EXE_NAME, files, args_for, cxx=cxx,
                                                 timeout=timeout, what="training harness")
    return NativeTrainBuild(config, directory, key, cached=cached, build_seconds=seconds)


class TrainSession:
    """One harness process: the host side of the training engine."""

    def __init__(self, build: NativeTrainBuild, cycle_limit: int = 4_000_000_000):
        self.build = build
        self.config = build.config
        self.proc = subprocess.Popen([str(build.exe), str(int(cycle_limit))], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1 << 16)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("q\n")
                self.proc.stdin.close()
            except OSError:
                pass
            self.proc.wait(timeout=30)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _send(self, text: str) -> None:
        self.proc.stdin.write(text)

    def _answer(self) -> list[str]:
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise NativeError(f"the training harness exited (code {self.proc.poll()})")
        return line.split()

    def write(self, sel: HostSel, addr: int, values: Iterable[int]) -> None:
        self._send("".join(f"w {int(sel.value)} {addr + i} {int(v)}\n" for i, v in enumerate(values)))

    def read(self, sel: HostSel, addr: int, count: int, bits: int | None = None) -> np.ndarray:
        """``count`` elements from ``addr`` of memory ``sel``: the low ``bits`` of each word
        sign-extended (a 32-bit bias too), or the unsigned 32-bit words (``bits=None``:
        MAXACC's halves)."""
        self._send(f"r {int(sel.value)} {addr} {count}\n")
        ans = self._answer()
        if ans[0] != "v":
            raise NativeError(f"unexpected harness answer {' '.join(ans)[:80]}")
        return np.array([int(v) & 0xFFFFFFFF if bits is None else signed_word(v, bits) for v in ans[1:]],
                        dtype=np.int64)

    def load(self, program: TrainProgram, images: bool = True) -> None:
        self.write(HostSel.DMEM, 0, program.words)
        g = program.globals
        self._send(f"p {g['BATCH']} {g['BW_LOG']} {g['IN_COUNT']} {g['IN_BASE']} {g['STOCH']}\n")
        if images:
            self.write(HostSel.CMEM, 0, program.cmem)
            self.write(HostSel.BMEM, 0, program.bmem)
            self._send(f"g {g['RNG']}\n")

    def step(self, x: np.ndarray, y: np.ndarray) -> int:
        """Stream one labelled batch and run the step; returns its cycles."""
        check_stream_batch(x, y, self.config.train.act_bits)    # the mask below never wraps a value
        mask = (1 << self.config.train.act_bits) - 1
        vals = np.concatenate([x.astype(np.int64) & mask, (y.astype(np.int64) & mask)[:, None]], axis=1)
        self._send(f"b {vals.size} " + " ".join(map(str, vals.reshape(-1).tolist())) + "\n")
        ans = self._answer()
        if ans[0] == "done":
            return int(ans[1])
        if ans[0] == "error":
            raise NativeError(f"the training engine stopped with {TrainError(int(ans[1])).name} at "
                              f"operation {ans[2]}")
        raise NativeError("the training step did not finish within the cycle limit")

    def maxacc(self, n_ops: int) -> np.ndarray:
        w = self.read(HostSel.MAXACC, 0, 2 * n_ops)
        return w[0::2] | (w[1::2] << 32)

    def memories(self, program: TrainProgram) -> tuple[np.ndarray, np.ndarray, int]:
        tc = self.config.train
        cm = self.read(HostSel.CMEM, 0, program.cmem.size, tc.master_bits)
        bm = self.read(HostSel.BMEM, 0, program.bmem.size, tc.bias_bits) if program.bmem.size else \
            np.zeros(0, dtype=np.int64)
        return cm, bm, self.status()["rng"]

    def status(self) -> dict:
        self._send("s\n")
        ans = self._answer()
        keys = ("rng", "steps", "cycles", "mac_cycles", "changed", "sim_cycles")
        return dict(zip(keys, map(int, ans[1:])))


def _check_batch_size(k: int, batch: int, first: int) -> None:
    """One line (:class:`ConfigError`) if batch ``k`` (from 0) has not the first batch's
    ``first`` samples: the engine's BATCH is loaded with the first program, and a batch of
    another size left the harness waiting for samples (or the host for its answer) for good."""
    if batch != first:
        raise ConfigError(f"batch {k} has {batch} samples but batch 0 has {first}; train_native runs every "
                          f"batch at the first one's size (the engine's BATCH is loaded once): give batches "
                          f"of one size, or one train_native call per size")


def train_native(build: NativeTrainBuild, state: TrainState, batches: Iterable[tuple[np.ndarray, np.ndarray]],
                 on_step=None) -> tuple[TrainState, list[dict]]:
    """Train ``state`` on ``batches`` in the RTL (all of one size: a batch of another size
    is one :class:`ConfigError` before any of it is sent, and before the harness starts
    when ``batches`` is a sequence); the host reads MAXACC after every step and rewrites
    the shifts, refusing a step whose exponents no next step can run as the golden step
    does (:func:`ttforge.ir.train.check_next_state`). Returns the state read back at the
    end (masters, biases, generator; exponents and counters kept by the host) and one
    record per step (``cycles``)."""
    if isinstance(batches, Sequence):    # sizes known now: refused before any step runs
        sizes = [len(checked_samples(state, x, y)[1]) for x, y in batches]
        for k, n in enumerate(sizes):
            _check_batch_size(k, n, sizes[0])
    records = []
    program = None
    first = None
    with TrainSession(build) as s:
        for k, (x, y) in enumerate(batches):
            x, y = checked_samples(state, x, y)     # the golden step's shape check: a short row left the harness waiting
            first = len(y) if first is None else first
            _check_batch_size(k, len(y), first)
            if program is None:
                program = compile_training(state, len(y), build.config)
                s.load(program)
            cycles = s.step(x, y)
            mx = s.maxacc(len(program.ops))
            new = next_exponents(state, program, mx)
            new = new.replace(step=new.step + 1, words=new.words + (
                new.n_stored() if new.config.rounding == "stochastic" else 0))
            check_next_state(state, new)   # the golden step's line (layer, step, fix), before the next step
            state = new
            records.append({"cycles": cycles})
            if on_step is not None:
                on_step(len(records), state)
            program = compile_training(state, len(y), build.config)
            s.write(HostSel.DMEM, 0, program.words)        # the new shifts
        if program is None:
            return state, records
        cm, bm, rng = s.memories(program)
    # the host kept the exponents, the step and word counts; the chip the values
    return state_from_memories(state, program, cm, bm, rng, steps=0), records
