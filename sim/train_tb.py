"""The cocotb testbench of the training top ``ttforge_train`` (cocotb 2.x).

Loaded by cocotb inside the simulator (Icarus or Verilator), never imported by the rest
of ttforge. Its one test, :func:`train_job`, reads the job that
:func:`ttforge.sim.train_runner.run_train` wrote (``job.json`` in ``$TTFORGE_TRAIN_JOB``)
and plays the host with the standard bus models of ``cocotbext-axi``: ``AxiLiteMaster`` on
``s_axil_*`` and ``AxiStreamSource`` on ``s_axis_*`` (optionally with seeded gaps in
``tvalid``), under the host driver :class:`ttforge.hw.trainer.host.AsyncTrainHost`:

1. check ``ID``/``VERSION``/``CFG_*``, load the program, CMEM, BMEM and the generator;
2. optionally corrupt one element over AXI4-Lite (``job["corrupt"]``);
3. for each step: ``CMD.START``, stream the batch, poll ``STATUS``, read CMEM, BMEM,
   MAXACC and ``RNG`` back, recompute the exponents and rewrite the changed descriptor
   words (``train_step``);
4. optionally read the used regions of ACT and GRAD and the labels.

What was read goes to ``results.npz`` (``cmem_<k>``, ``bmem_<k>``, ``maxacc_<k>``,
``final_*``) and ``results.json`` (the generator per step, the counters, the simulated
cycles, and the driver's exception if one ended the job). The verdict is computed
outside: :func:`ttforge.sim.train_runner.judge`.
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
from cocotbext.axi import AxiLiteBus, AxiLiteMaster, AxiStreamBus, AxiStreamFrame, AxiStreamSource

from ttforge.atomic import atomic_write_text

warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"cocotbext\..*")

PERIOD_NS = 10
#: cycles one bus operation may take before the job fails (a hang is an error, not a wait)
BUS_TIMEOUT_CYCLES = 200_000


async def _bus(waitable):
    return await with_timeout(waitable, BUS_TIMEOUT_CYCLES * PERIOD_NS, "ns")


def _pauses(rng: random.Random, p: float):
    while True:
        yield rng.random() < p


class _Transport:
    """read32/write32/read_block/write_block/stream over cocotbext-axi."""

    def __init__(self, dut, lane_bits: int, gaps: float, seed: int):
        from ttforge.hw.trainer.host import BusError

        self.BusError = BusError
        for name in ("cocotbext.axi", "cocotb.ttforge_train"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
        self.src = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis"), dut.clk, dut.rst)
        for bm in (self.axil.write_if, self.axil.read_if, self.src):
            bm.log.setLevel(logging.WARNING)
        if gaps:
            self.src.set_pause_generator(_pauses(random.Random(seed), gaps))
        self.W = lane_bits

    async def read_block(self, addr: int, n: int) -> list[int]:
        r = await _bus(self.axil.read(int(addr), 4 * n))   # pipelined word reads
        if int(r.resp):
            raise self.BusError(f"SLVERR reading {n} words at 0x{addr:x}")
        raw = bytes(r.data)
        return [int.from_bytes(raw[4 * i:4 * i + 4], "little") for i in range(n)]

    async def write_block(self, addr: int, values) -> None:
        data = b"".join((int(v) & 0xFFFFFFFF).to_bytes(4, "little") for v in values)
        r = await _bus(self.axil.write(int(addr), data))
        if int(r.resp):
            raise self.BusError(f"SLVERR writing {len(values)} words at 0x{addr:x}")

    async def read32(self, addr: int) -> int:
        return (await self.read_block(addr, 1))[0]

    async def write32(self, addr: int, value: int) -> None:
        await self.write_block(addr, [value])

    async def stream(self, frames) -> None:
        step, mask = self.W // 8, (1 << self.W) - 1
        for f in frames:
            self.src.send_nowait(AxiStreamFrame(b"".join((int(v) & mask).to_bytes(step, "little")
                                                          for v in f)))
        await _bus(self.src.wait())


@cocotb.test()
async def train_job(dut):
    """Execute the training job named by ``TTFORGE_TRAIN_JOB`` (module docstring)."""
    from ttforge.hw.config import stream_lane_bits
    from ttforge.hw.trainer.host import AsyncTrainHost
    from ttforge.hw.trainer.program import compile_training
    from ttforge.sim.train_runner import case_config

    wall0 = time.perf_counter()
    jobdir = Path(os.environ["TTFORGE_TRAIN_JOB"])
    job = json.loads((jobdir / "job.json").read_text())
    state, cfg, batches = case_config(job["case"])
    Clock(dut.clk, PERIOD_NS, unit="ns").start()
    dut.rst.value = 1
    tr = _Transport(dut, stream_lane_bits(cfg.train.act_bits), float(job.get("gaps", 0.0)),
                    int(job.get("seed", 0)))
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    await RisingEdge(dut.clk)
    t0_ns = cocotb.utils.get_sim_time("ns")
    host = AsyncTrainHost(cfg, tr.read32, tr.write32, tr.stream, tr.read_block, tr.write_block)
    arrays: dict[str, np.ndarray] = {}
    summary: dict = {"rng": [], "counters": [], "step_cycles": [], "error": None}
    done = 0
    try:
        await host.check()
        prog = compile_training(state, int(job["case"]["batch"]), cfg)
        await host.load_program(prog)
        bad = job.get("corrupt")
        if bad:
            w, i = bad.get("window", "CMEM"), int(bad["index"])
            old = (await host.read_window(w, i, 1))[0]
            await host.write_window(w, i, [old ^ int(bad.get("xor", 1))])
        st = state
        for x, y in batches:
            ns = cocotb.utils.get_sim_time("ns")
            res = await host.train_step(st, prog, x, y, max_polls=int(job.get("max_polls", 200_000)))
            summary["step_cycles"].append(int((cocotb.utils.get_sim_time("ns") - ns) // PERIOD_NS))
            arrays[f"cmem_{done}"], arrays[f"bmem_{done}"] = res.cmem, res.bmem
            arrays[f"maxacc_{done}"] = res.maxacc
            summary["rng"].append(int(res.rng))
            summary["counters"].append(await host.counters())
            done += 1
            st, prog = res.state, res.program
        if job.get("dump_final"):
            L = cfg.lanes
            arrays["final_act"] = np.array(await host.read_window("ACT", 0, prog.regions.act_words * L),
                                           dtype=np.int64)
            arrays["final_grad"] = np.array(await host.read_window("GRAD", 0, prog.regions.grad_words * L),
                                            dtype=np.int64)
            arrays["final_labels"] = np.array(await host.read_window("LABEL", 0, prog.batch),
                                              dtype=np.int64)
    except Exception as e:      # recorded: the runner and judge report it, with the step
        summary["error"] = f"step {done}: {type(e).__name__}: {e}"
    summary.update(steps_done=done,
                   sim_cycles=int((cocotb.utils.get_sim_time("ns") - t0_ns) // PERIOD_NS),
                   wall_s=time.perf_counter() - wall0)
    np.savez(jobdir / "results.npz", **{k: np.asarray(v, dtype=np.int64) for k, v in arrays.items()})
    atomic_write_text(jobdir / "results.json", json.dumps(summary, indent=1))
