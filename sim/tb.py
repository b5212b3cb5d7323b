"""The cocotb testbench of ``ttforge_accel``: a small interpreter of a *job*.

This module is loaded by cocotb inside the simulator process (Icarus or Verilator),
never imported by the rest of ttforge. It has one cocotb test, :func:`run_job`, which
reads a job written by :func:`ttforge.sim.runner.run_job` — ``job.json`` (the
operations) and ``data.npz`` (the arrays they name) in the directory given by the
environment variable ``TTFORGE_SIM_JOB`` — and executes the operations in order with
the standard bus models of ``cocotbext-axi``:

* ``AxiLiteMaster`` on ``s_axil_*`` (load images, register reads and writes, with
  their ``BRESP``/``RRESP``),
* ``AxiStreamSource`` on ``s_axis_*`` and ``AxiStreamSink`` on ``m_axis_*``, each with
  a seeded random pause generator (gaps in ``tvalid``, back-pressure on ``tready``).

Operations (``"op"`` key):

``reset``
    Hold ``rst`` high for ``cycles`` (default 2) rising edges.
``load``
    Apply the writes ``data[writes]`` (``(n, 2)`` address, data) in order; records the
    number of non-OKAY responses.
``write`` / ``read``
    One AXI4-Lite access at ``addr``; records ``resp`` (and ``data`` for reads). A
    write of ``nbytes`` < 4 drives only those ``WSTRB`` byte lanes.
``stream``
    Send the vectors ``data[inputs]`` back to back (one frame each, packed as in
    ``docs/hardware.md``), receive as many output frames, and store them (``(n,
    out_count)`` int64) as ``<name>`` in the result arrays. ``gaps``/``backpressure``
    are the pause probabilities; ``timeout_cycles`` bounds the whole stream and
    ``frame_timeout_cycles`` the wait for each output frame; ``out_count`` (default the
    job's) is the elements of each output vector. Every frame is checked: exactly
    ``ceil(out_count / E)`` beats, ``tlast`` on the last, its unused lanes 0 (a frame
    ends at its ``tlast``, so its beat count is where ``tlast`` came). The beats of
    each frame are recorded (``frame_beats``); the first frame that breaks the rule, or
    a frame more than the vectors sent (seen when the next ``stream`` or
    ``reset_during`` starts, or when the job ends), is ``frame_error`` (``vector``,
    ``expected_beats``, ``got_beats``, ``detail``) and fails the job, and the stored
    outputs stop before it (what follows a misplaced ``tlast`` is no vector). If
    ``expected`` names an array, mismatches are counted (the exact comparison is
    repeated on the Python side).
``reset_during``
    Start streaming ``data[inputs]``, wait ``after`` cycles, then reset (``cycles``
    edges) in the middle of the inference; the source and sink drop what is in flight.
``counters``
    Read the six 48-bit performance counters (``LO`` then ``HI``).
``wait_idle``
    Poll ``STATUS`` until ``BUSY`` is 0 (at most ``limit`` polls).
``idle``
    Let ``cycles`` clock cycles pass.

Results go to ``results.json`` (one entry per operation, plus the simulated cycles and
wall-clock time of the whole job) and ``results.npz`` (the received outputs).
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
import warnings
from pathlib import Path

import numpy as np

import cocotb
import cocotb.utils
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, with_timeout

try:  # cocotb 2.x
    from cocotb.triggers import SimTimeoutError
except ImportError:  # pragma: no cover
    from cocotb.result import SimTimeoutError  # type: ignore

from cocotbext.axi import (AxiLiteBus, AxiLiteMaster, AxiStreamBus, AxiStreamFrame,
                           AxiStreamSink, AxiStreamSource)

from ttforge.atomic import atomic_write_text

# cocotbext-axi 0.1.28 still reads cocotb's deprecated Event.data
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"cocotbext\..*")

#: Clock period in ns (the timescale is 1ns/1ps).
PERIOD_NS = 10
COUNTERS = ("CYCLES", "BUSY_LANE_CYCLES", "IN_STALL", "OUT_STALL", "SAT_EVENTS", "VECTORS")


def _pauses(rng: random.Random, p: float):
    """A pause generator: ``True`` (pause this cycle) with probability ``p``."""
    while True:
        yield rng.random() < p



#: cycles one AXI4-Lite access may take before the job fails (the core answers in <= 2)
BUS_TIMEOUT_CYCLES = 10_000


async def _bus(waitable):
    return await with_timeout(waitable, BUS_TIMEOUT_CYCLES * PERIOD_NS, "ns")

class _Bench:
    def __init__(self, dut, job: dict, data: dict[str, np.ndarray]):
        self.dut = dut
        self.job = job
        self.data = data
        self.regs = job["regs"]
        self.E = int(job["stream_elems"])
        self.W = int(job["lane_bits"])
        self.out_count = int(job["out_count"])
        self.rng = random.Random(int(job.get("seed", 0)))
        for name in ("cocotbext.axi", "cocotb.ttforge_accel"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
        self.src = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis"), dut.clk, dut.rst)
        self.sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis"), dut.clk, dut.rst)
        for bm in (self.axil.write_if, self.axil.read_if, self.src, self.sink):
            bm.log.setLevel(logging.WARNING)
        self.arrays: dict[str, np.ndarray] = {}
        #: the result of the last ``stream`` operation (frames after it are charged to it)
        self.last_stream: dict | None = None

    # -- packing ------------------------------------------------------------------------
    def pack(self, vec: np.ndarray) -> bytes:
        """One input vector as the bytes of whole beats (element j in lane j)."""
        W, E = self.W, self.E
        n = len(vec)
        beats = -(-n // E)
        lanes = np.zeros(beats * E, dtype=np.int64)
        lanes[:n] = vec
        mask = (1 << W) - 1
        out = bytearray()
        for v in lanes.tolist():
            out += (int(v) & mask).to_bytes(W // 8, "little")
        return bytes(out)

    def lanes(self, frame) -> list[int]:
        """Every lane of every beat of ``frame``, sign-extended (unused lanes too)."""
        W = self.W
        raw = bytes(frame.tdata)
        step = W // 8
        vals = []
        for i in range(0, len(raw) - step + 1, step):
            v = int.from_bytes(raw[i:i + step], "little")
            vals.append(v - (1 << W) if v >> (W - 1) else v)
        return vals

    def frame_error(self, vector: int, lanes: list[int], out_count: int) -> dict | None:
        """``None`` if the frame ``lanes`` of output vector ``vector`` is what
        ``docs/hardware.md`` promises for ``out_count`` elements: ``ceil(out_count / E)``
        beats, ``tlast`` on the last (the frame ends there), the unused lanes of the
        last beat 0; else the first divergence (``vector``, ``expected_beats``,
        ``got_beats``, ``detail``)."""
        E = self.E
        want = -(-out_count // E)
        beats = len(lanes) // E
        err = {"vector": vector, "expected_beats": want, "got_beats": beats}
        if beats != want:
            return {**err, "detail": f"vector {vector}: expected {want} beat(s) ({out_count} elements, {E} per "
                                     f"beat) with tlast on beat {want}; got tlast on beat {beats} "
                                     f"({len(lanes)} lanes)"}
        pad = [j for j in range(out_count, len(lanes)) if lanes[j]]
        if pad:
            j = pad[0]
            return {**err, "detail": f"vector {vector}: unused lane {j - E * (beats - 1)} of its last beat holds "
                                     f"{lanes[j]}; it must be 0 ({out_count} elements)"}
        return None

    async def stray(self) -> int:
        """Drop the frames the sink holds and count them, and a frame begun without
        its ``tlast`` yet: none is due when this is called, so each came after the
        vectors of the last ``stream``."""
        if self.sink.active:
            # the sink clears `active` at the first edge without a beat after a frame's
            # tlast: until then it cannot tell a frame just ended from one begun
            await ClockCycles(self.dut.clk, 2)
        n = 0
        while not self.sink.empty():
            self.sink.recv_nowait()
            n += 1
        return n + bool(self.sink.active)

    async def note_stray(self) -> int:
        """Charge the frames :meth:`stray` finds to the last ``stream`` operation:
        more output frames than the vectors it sent (its ``frame_error`` unless it has
        one, or timed out, when late frames are to be expected). Returns how many
        there were with no such operation to charge (0 otherwise)."""
        n = await self.stray()
        last = self.last_stream
        if not n or last is None:
            return n
        last["extra_frames"] = last.get("extra_frames", 0) + n
        if not last.get("frame_error") and not last["timeout"]:
            k = last["received"]
            last["frame_error"] = {"vector": k, "expected_beats": None, "got_beats": None,
                                   "detail": f"{n} output frame(s) (or beats without tlast) after the {k} "
                                             f"vectors' frames: more frames than vectors sent"}
        return 0

    # -- AXI4-Lite ----------------------------------------------------------------------
    # (every access is bounded by BUS_TIMEOUT_CYCLES: a slave that never answers, or
    # answers twice and leaves the master waiting, fails the job instead of hanging it)
    async def write(self, addr: int, data: int, nbytes: int = 4) -> int:
        # fewer than 4 bytes: the master drives WSTRB with only those byte lanes
        r = await _bus(self.axil.write(int(addr), int(data & 0xFFFFFFFF).to_bytes(4, "little")[:nbytes]))
        return int(r.resp)

    async def read(self, addr: int) -> tuple[int, int]:
        r = await _bus(self.axil.read(int(addr), 4))
        return int(r.resp), int.from_bytes(bytes(r.data), "little")

    async def load(self, writes: np.ndarray) -> int:
        # issue every write at once: the master keeps them in order and pipelines them
        tasks = [cocotb.start_soon(self.axil.write(int(a), int(d & 0xFFFFFFFF).to_bytes(4, "little")))
                 for a, d in writes.tolist()]
        bad = 0
        for t in tasks:
            bad += int((await _bus(t)).resp) != 0
        return bad

    async def counters(self) -> dict[str, int]:
        out = {}
        for name in COUNTERS:
            _, lo = await self.read(self.regs[f"{name}_LO"])
            _, hi = await self.read(self.regs[f"{name}_HI"])
            out[name] = (hi << 32) | lo
        return out

    async def reset(self, cycles: int = 2) -> None:
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, cycles)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    # -- streams ------------------------------------------------------------------------
    def set_pauses(self, gaps: float, backpressure: float) -> None:
        seed = self.rng.getrandbits(32)
        if gaps:
            self.src.set_pause_generator(_pauses(random.Random(seed), gaps))
        else:
            self.src.clear_pause_generator()
        if backpressure:
            self.sink.set_pause_generator(_pauses(random.Random(seed + 1), backpressure))
        else:
            self.sink.clear_pause_generator()

    async def stream(self, op: dict) -> dict:
        X = self.data[op["inputs"]]
        out_count = int(op.get("out_count", self.out_count))
        early = await self.note_stray()
        self.set_pauses(float(op.get("gaps", 0.0)), float(op.get("backpressure", 0.0)))
        for vec in X:
            self.src.send_nowait(AxiStreamFrame(self.pack(vec)))
        budget_ns = int(op.get("timeout_cycles", 1_000_000)) * PERIOD_NS
        # a hang is seen after one vector's budget, not only after the whole stream's
        frame_ns = int(op.get("frame_timeout_cycles", 0)) * PERIOD_NS or budget_ns
        got: list[list[int]] = []
        timeout = False
        start = cocotb.utils.get_sim_time("ns")
        for _ in range(len(X)):
            left = budget_ns - (cocotb.utils.get_sim_time("ns") - start)
            try:
                frame = await with_timeout(self.sink.recv(), max(min(left, frame_ns), PERIOD_NS), "ns")
            except SimTimeoutError:
                timeout = True
                break
            got.append(self.lanes(frame))
        errors = [e for e in (self.frame_error(i, g, out_count) for i, g in enumerate(got)) if e]
        # the outputs stop before the first malformed frame: after a misplaced tlast the
        # frames are no longer the vectors (a frame cut or padded to out_count passed)
        good = got[:errors[0]["vector"]] if errors else got
        arr = np.array([g[:out_count] for g in good], dtype=np.int64).reshape(len(good), out_count)
        self.arrays[op.get("name", "outputs")] = arr
        if early:   # frames no vector was sent for (none since the job or a reset began)
            errors.insert(0, {"vector": 0, "expected_beats": None, "got_beats": None,
                              "detail": f"{early} output frame(s) (or beats without tlast) before the "
                                        f"first vector was sent"})
        res = {"received": len(got), "timeout": timeout, "frame_beats": [len(g) // self.E for g in got],
               "bad_frames": len(errors), "frame_error": errors[0] if errors else None}
        self.last_stream = res
        if op.get("expected"):
            exp = self.data[op["expected"]]
            n = min(len(exp), len(arr))
            res["mismatched_vectors"] = int(np.sum(np.any(exp[:n] != arr[:n], axis=1))) + (len(exp) - n)
        if timeout:
            # drop what is still queued so that a later operation starts clean
            self.src.clear()
        return res

    async def reset_during(self, op: dict) -> dict:
        X = self.data[op["inputs"]]
        await self.note_stray()
        self.last_stream = None   # what the sink holds after the reset is dropped, not extra
        self.set_pauses(0.0, 0.0)
        for vec in X:
            self.src.send_nowait(AxiStreamFrame(self.pack(vec)))
        await ClockCycles(self.dut.clk, int(op.get("after", 50)))
        _, status = await self.read(self.regs["STATUS"])
        self.src.clear()
        await self.reset(int(op.get("cycles", 2)))
        await ClockCycles(self.dut.clk, 2)
        # frames the sink may have collected before the reset are not outputs
        while not self.sink.empty():
            self.sink.recv_nowait()
        return {"status_before": status}


@cocotb.test()
async def run_job(dut):
    """Execute the job named by ``TTFORGE_SIM_JOB`` (see the module docstring)."""
    wall0 = time.perf_counter()
    jobdir = Path(os.environ["TTFORGE_SIM_JOB"])
    job = json.loads((jobdir / "job.json").read_text())
    with np.load(jobdir / "data.npz") as z:
        data = {k: z[k] for k in z.files}
    Clock(dut.clk, PERIOD_NS, unit="ns").start()
    dut.rst.value = 1
    bench = _Bench(dut, job, data)
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    await RisingEdge(dut.clk)
    t0_ns = cocotb.utils.get_sim_time("ns")
    results = []
    for op in job["ops"]:
        kind = op["op"]
        t_op = time.perf_counter()
        ns_op = cocotb.utils.get_sim_time("ns")
        if kind == "reset":
            await bench.reset(int(op.get("cycles", 2)))
            res = {}
        elif kind == "load":
            res = {"errors": await bench.load(data[op["writes"]])}
        elif kind == "write":
            res = {"resp": await bench.write(op["addr"], op["data"], int(op.get("nbytes", 4)))}
        elif kind == "read":
            resp, value = await bench.read(op["addr"])
            res = {"resp": resp, "data": value}
        elif kind == "stream":
            res = await bench.stream(op)
        elif kind == "reset_during":
            res = await bench.reset_during(op)
        elif kind == "counters":
            res = {"counters": await bench.counters()}
        elif kind == "wait_idle":
            polls = 0
            while True:
                _, st = await bench.read(bench.regs["STATUS"])
                if not st & 1 or polls >= int(op.get("limit", 100_000)):
                    break
                polls += 1
            res = {"status": st, "polls": polls}
        elif kind == "idle":
            await ClockCycles(dut.clk, int(op.get("cycles", 1)))
            res = {}
        else:
            raise ValueError(f"unknown job operation {kind!r}")
        res.update(op=kind, name=op.get("name", ""),
                   sim_cycles=int((cocotb.utils.get_sim_time("ns") - ns_op) // PERIOD_NS),
                   wall_s=time.perf_counter() - t_op)
        results.append(res)
    await bench.note_stray()
    sim_cycles = int((cocotb.utils.get_sim_time("ns") - t0_ns) // PERIOD_NS)
    summary = {"ops": results, "sim_cycles": sim_cycles, "wall_s": time.perf_counter() - wall0}
    np.savez(jobdir / "results.npz", **bench.arrays)
    # results.json tells the runner the job finished: written last and atomically
    atomic_write_text(jobdir / "results.json", json.dumps(summary, indent=1))
    # the cocotb verdict: any expected stream that disagreed fails the test (the caller
    # repeats the exact comparison with np.array_equal), and so does any malformed frame
    bad = [r for r, op in zip(results, job["ops"])
           if op.get("expected") and (r.get("mismatched_vectors") or r.get("timeout"))]
    assert not bad, f"{len(bad)} stream operation(s) disagreed with the expected outputs"
    framing = [r["frame_error"] for r in results if r.get("frame_error")]
    assert not framing, f"an output frame broke the framing: {framing[0]['detail']}"
