"""The training top (:class:`~ttforge.hw.trainer.top.TrainAccel`) in the Amaranth simulator:
a small engine for test networks, a bus-functional AXI4-Lite master and AXI4-Stream source,
and a runner that hands a test body the bus and the asynchronous host driver."""

from __future__ import annotations

from amaranth.sim import Simulator

from ttforge.hw.trainer.host import AsyncTrainHost, BusError
from ttforge.hw.trainer.program import TrainEngineConfig
from ttforge.hw.trainer.top import TrainAccel

__all__ = ["top_config", "Master", "simulate_top"]


def top_config(state, lanes=4):
    return TrainEngineConfig(lanes=lanes, train=state.config, act_depth=512, grad_depth=256,
                             core_depth=512, bias_depth=64, desc_depth=48, max_batch=16, max_classes=8)


class Master:
    """A bus-functional AXI4-Lite master and AXI4-Stream source for the Amaranth simulator."""

    def __init__(self, ctx, dut):
        self.ctx, self.dut = ctx, dut

    async def _write(self, addr, value, strb=0xF):
        ctx, ax = self.ctx, self.dut.axil
        ctx.set(ax.awaddr, addr)
        ctx.set(ax.awvalid, 1)
        ctx.set(ax.wdata, int(value) & 0xFFFFFFFF)
        ctx.set(ax.wstrb, strb)
        ctx.set(ax.wvalid, 1)
        ctx.set(ax.bready, 1)
        aw = w = False
        while not (aw and w):
            a_now, w_now = ctx.get(ax.awready), ctx.get(ax.wready)
            await ctx.tick()
            if a_now and not aw:
                aw = True
                ctx.set(ax.awvalid, 0)
            if w_now and not w:
                w = True
                ctx.set(ax.wvalid, 0)
        while not ctx.get(ax.bvalid):
            await ctx.tick()
        resp = ctx.get(ax.bresp)
        await ctx.tick()
        ctx.set(ax.bready, 0)
        return resp

    async def _read(self, addr):
        ctx, ax = self.ctx, self.dut.axil
        ctx.set(ax.araddr, addr)
        ctx.set(ax.arvalid, 1)
        ctx.set(ax.rready, 1)
        while not ctx.get(ax.arready):
            await ctx.tick()
        await ctx.tick()
        ctx.set(ax.arvalid, 0)
        while not ctx.get(ax.rvalid):
            await ctx.tick()
        data, resp = ctx.get(ax.rdata), ctx.get(ax.rresp)
        await ctx.tick()
        ctx.set(ax.rready, 0)
        return data, resp

    async def write32(self, addr, value):
        if await self._write(addr, value):
            raise BusError(f"SLVERR writing 0x{addr:x}")

    async def read32(self, addr):
        data, resp = await self._read(addr)
        if resp:
            raise BusError(f"SLVERR reading 0x{addr:x}")
        return data

    async def stream(self, frames):
        ctx, s = self.ctx, self.dut.s_axis
        for frame in frames:
            for i, v in enumerate(frame):
                ctx.set(s.tdata, int(v) & 0xFF)
                ctx.set(s.tlast, int(i == len(frame) - 1))
                ctx.set(s.tvalid, 1)
                while not ctx.get(s.tready):
                    await ctx.tick()
                await ctx.tick()
        ctx.set(s.tvalid, 0)


def simulate_top(cfg, body):
    dut = TrainAccel(cfg)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    out = {}

    async def tb(ctx):
        bus = Master(ctx, dut)
        host = AsyncTrainHost(cfg, bus.read32, bus.write32, bus.stream)
        out["r"] = await body(ctx, bus, host)

    sim.add_testbench(tb)
    sim.run()
    return out["r"]
