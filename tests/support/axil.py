"""A small AXI4-Lite master for Amaranth testbenches (:class:`Master`: bounded waits, no
hang; checks that a response stays stable until it is taken) and the register map of the
register-file tests (:data:`REGS`, :data:`WINS` in a :data:`ADDR_BITS`-bit space)."""

from __future__ import annotations

import random

from ttforge.hw.axil import Reg, Window

ADDR_BITS = 12
REGS = [
    Reg("CTRL", 0x00, "RW", 16, reset=0x0101),
    Reg("STATUS", 0x04, "RO", 8),
    Reg("IRQ", 0x08, "W1C", 3),
    Reg("CMD", 0x0C, "WO", 4),
    Reg("CYCLES_LO", 0x10, "RO"),
    Reg("CYCLES_HI", 0x14, "RO"),
    Reg("SCRATCH", 0x20, "RW"),
]
WINS = [Window("CMEM", 0x400, 64, 8), Window("DMEM", 0x800, 48, 32)]


class Master:
    """A small AXI4-Lite master for tests. Each wait is bounded (no hang)."""

    TIMEOUT = 50

    def __init__(self, ctx, ax, rng=None, ready_delay=0):
        self.ctx, self.ax = ctx, ax
        self.rng = rng or random.Random(0)
        self.ready_delay = ready_delay   # max random cycles before bready/rready

    async def _wait(self, sig):
        for _ in range(self.TIMEOUT):
            if self.ctx.get(sig):
                return
            await self.ctx.tick()
        raise AssertionError(f"hang: {sig} never rose")

    async def _handshake(self, valid, ready):
        """Raise valid, wait for ready at a clock edge, then drop valid."""
        self.ctx.set(valid, 1)
        for _ in range(self.TIMEOUT):
            _, _, r = await self.ctx.tick().sample(ready)
            if r:
                self.ctx.set(valid, 0)
                return
        raise AssertionError(f"hang: {ready} never rose")

    async def _response(self, valid, ready, *payload):
        await self._wait(valid)
        held = tuple(self.ctx.get(p) for p in payload)
        for _ in range(self.rng.randint(0, self.ready_delay)):
            await self.ctx.tick()
            # valid and payload must stay stable while the master is not ready
            assert self.ctx.get(valid)
            assert tuple(self.ctx.get(p) for p in payload) == held
        self.ctx.set(ready, 1)
        await self.ctx.tick()
        self.ctx.set(ready, 0)
        return held

    async def write(self, addr, data, strb=0xF, order="together"):
        ax, ctx = self.ax, self.ctx
        ctx.set(ax.awaddr, addr)
        ctx.set(ax.wdata, data)
        ctx.set(ax.wstrb, strb)
        if order == "aw_first":
            await self._handshake(ax.awvalid, ax.awready)
            await ctx.tick().repeat(3)
            assert not ctx.get(ax.bvalid), "B before W"
            await self._handshake(ax.wvalid, ax.wready)
        elif order == "w_first":
            await self._handshake(ax.wvalid, ax.wready)
            await ctx.tick().repeat(3)
            assert not ctx.get(ax.bvalid), "B before AW"
            await self._handshake(ax.awvalid, ax.awready)
        else:
            ctx.set(ax.awvalid, 1)
            ctx.set(ax.wvalid, 1)
            aw = w = False
            for _ in range(self.TIMEOUT):
                _, _, awr, wr = await ctx.tick().sample(ax.awready, ax.wready)
                aw, w = aw or awr, w or wr
                if awr:
                    ctx.set(ax.awvalid, 0)
                if wr:
                    ctx.set(ax.wvalid, 0)
                if aw and w:
                    break
            assert aw and w, "hang on AW/W"
        (resp,) = await self._response(ax.bvalid, ax.bready, ax.bresp)
        return resp

    async def read(self, addr):
        ax = self.ax
        self.ctx.set(ax.araddr, addr)
        await self._handshake(ax.arvalid, ax.arready)
        data, resp = await self._response(ax.rvalid, ax.rready, ax.rdata, ax.rresp)
        return data, resp
