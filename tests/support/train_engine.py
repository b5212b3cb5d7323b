"""Drive the training engine in the Amaranth simulator: load a program, stream batches,
read the memories back (the host's side of ``docs/hardware.md``, "Training engine")."""

from __future__ import annotations

import numpy as np
from amaranth.sim import Simulator

from ttforge.hw.trainer.engine import HOST_READ_LATENCY, HostSel, TrainEngine
from ttforge.hw.trainer.program import TrainProgram


async def host_write(ctx, dut, sel, addr, value):
    ctx.set(dut.host.sel, sel)
    ctx.set(dut.host.addr, int(addr))
    ctx.set(dut.host.wdata, int(value) & 0xFFFFFFFF)
    ctx.set(dut.host.we, 1)
    await ctx.tick()
    ctx.set(dut.host.we, 0)


async def host_read(ctx, dut, sel, addr, signed_bits=None):
    ctx.set(dut.host.sel, sel)
    ctx.set(dut.host.addr, int(addr))
    ctx.set(dut.host.re, 1)
    await ctx.tick()
    ctx.set(dut.host.re, 0)
    for waited in range(2, 2 * HOST_READ_LATENCY):
        await ctx.tick()
        if ctx.get(dut.host_rvalid):
            break
    else:
        raise AssertionError("host_rvalid never rose")
    # every read, of every memory, is answered exactly HOST_READ_LATENCY cycles after re
    # (the AR gate of the top and the formal bound count on it)
    assert waited == HOST_READ_LATENCY, f"host_rvalid {waited} cycles after re, not {HOST_READ_LATENCY}"
    v = ctx.get(dut.host_rdata)
    if signed_bits:
        v &= (1 << signed_bits) - 1
        if v >> (signed_bits - 1):
            v -= 1 << signed_bits
    return v


async def load_program(ctx, dut, program: TrainProgram, words=None, images=True):
    for i, w in enumerate(program.words if words is None else words):
        await host_write(ctx, dut, HostSel.DMEM, i, w)
    if images:
        for i, v in enumerate(program.cmem):
            await host_write(ctx, dut, HostSel.CMEM, i, v)
        for i, v in enumerate(program.bmem):
            await host_write(ctx, dut, HostSel.BMEM, i, v)
    g = program.globals
    ctx.set(dut.program.batch, g["BATCH"])
    ctx.set(dut.program.bw_log, g["BW_LOG"])
    ctx.set(dut.program.in_count, g["IN_COUNT"])
    ctx.set(dut.program.in_base, g["IN_BASE"])
    ctx.set(dut.program.stoch, g["STOCH"])
    if images:
        ctx.set(dut.program.rng_value, g["RNG"])
        ctx.set(dut.program.rng_load, 1)
        await ctx.tick()
        ctx.set(dut.program.rng_load, 0)


async def run_batch(ctx, dut, x, y, max_cycles=2_000_000, gaps=None):
    """Stream one labelled batch, wait for the step's end; returns the cycles it took
    (from enable to the done pulse) or raises on an error or a timeout. ``gaps``: a
    ``random.Random`` that inserts 0-2 idle cycles (``valid`` low) before an element."""
    ctx.set(dut.control.enable, 1)
    c0 = ctx.get(dut.status.cycles)
    for b in range(x.shape[0]):
        for v in list(x[b]) + [int(y[b])]:
            if gaps is not None:
                ctx.set(dut.inp.valid, 0)
                for _ in range(gaps.choice((0, 0, 1, 2))):
                    await ctx.tick()
            ctx.set(dut.inp.payload, int(v))
            ctx.set(dut.inp.valid, 1)
            while not ctx.get(dut.inp.ready):     # a transfer: valid and ready at a tick
                await ctx.tick()
            await ctx.tick()
    ctx.set(dut.inp.valid, 0)
    ctx.set(dut.control.enable, 0)
    for _ in range(max_cycles):
        if ctx.get(dut.status.done_pulse):
            await ctx.tick()
            return ctx.get(dut.status.cycles) - c0
        if ctx.get(dut.status.error):
            raise RuntimeError(f"engine error {ctx.get(dut.status.error_code)} at op "
                               f"{ctx.get(dut.status.error_op)}")
        await ctx.tick()
    raise TimeoutError("the training step did not finish")


async def read_state(ctx, dut, program: TrainProgram):
    tc = program.config.train
    cm = [await host_read(ctx, dut, HostSel.CMEM, i, tc.master_bits) for i in range(program.cmem.size)]
    bm = [await host_read(ctx, dut, HostSel.BMEM, i, tc.bias_bits) for i in range(program.bmem.size)]
    mx = []
    for j in range(len(program.ops)):
        lo = await host_read(ctx, dut, HostSel.MAXACC, 2 * j)
        hi = await host_read(ctx, dut, HostSel.MAXACC, 2 * j + 1)
        mx.append(lo | hi << 32)
    return (np.array(cm, dtype=np.int64), np.array(bm, dtype=np.int64), np.array(mx, dtype=np.int64),
            int(ctx.get(dut.status.rng)))


def simulate(config, body, vcd=None):
    """Run ``body(ctx, dut)`` (async) against a fresh engine; returns its result."""
    dut = TrainEngine(config)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    out = {}

    async def tb(ctx):
        out["result"] = await body(ctx, dut)

    sim.add_testbench(tb)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    return out["result"]
