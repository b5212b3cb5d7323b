"""AXI4-Lite slave + register file in Amaranth's simulator.

Every register kind (RW with byte strobes, RO, W1C, WO pulses, LO/HI counters with the
high half latched), write windows, SLVERR for unmapped and forbidden accesses, AW before
W, W before AW and both together, back-pressure on B and R, and no hang.
"""

from __future__ import annotations

import random

import pytest
from amaranth.hdl import Elaboratable, Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from tests.support.axil import ADDR_BITS, REGS, WINS, Master
from ttforge.errors import ConfigError
from ttforge.hw.axil import (OKAY, SLVERR, AXI4LiteSlave, Reg, RegisterFile, Window,
                             normalize_regmap)

class Dut(Elaboratable):
    READ_LATENCY = 0        # every test runs with both (the read_latency fixture)

    def __init__(self, regmap=(REGS, WINS)):
        self.slave = AXI4LiteSlave(ADDR_BITS, read_latency=self.READ_LATENCY)
        self.rf = RegisterFile(regmap, ADDR_BITS, read_latency=self.READ_LATENCY)
        self.ax = self.slave.axil

    def elaborate(self, platform):
        m = Module()
        m.submodules.slave = self.slave
        m.submodules.rf = self.rf
        wiring.connect(m, self.slave.bus, self.rf.bus)
        return m


@pytest.fixture(autouse=True, params=[0, 1], ids=["read-latency-0", "read-latency-1"])
def read_latency(request, monkeypatch):
    monkeypatch.setattr(Dut, "READ_LATENCY", request.param)
    return request.param


def run(tb, dut=None, extra=()):
    """Run testbench ``tb(ctx, dut)``; ``extra`` monitors run beside it (not critical:
    the simulation ends with ``tb``)."""
    dut = dut or Dut()
    sim = Simulator(dut)
    sim.add_clock(1e-6)

    async def main(ctx):
        await tb(ctx, dut)
    sim.add_testbench(main)
    for p in extra:
        async def mon(ctx, p=p):
            await p(ctx, dut)
        sim.add_process(mon)
    sim.run()
    return dut


@pytest.mark.parametrize("order", ["together", "aw_first", "w_first"])
def test_rw_register_and_strobes(order):
    async def tb(ctx, dut):
        m = Master(ctx, dut.ax, ready_delay=3)
        assert await m.read(0x00) == (0x0101, OKAY)        # reset value
        assert ctx.get(dut.rf.ctrl) == 0x0101
        assert await m.write(0x00, 0xBEEF, order=order) == OKAY
        assert ctx.get(dut.rf.ctrl) == 0xBEEF
        assert await m.read(0x00) == (0xBEEF, OKAY)
        # byte strobes: only lane 1 written; bits above the register's width read 0
        assert await m.write(0x00, 0xFFFF_12FF, strb=0b0010, order=order) == OKAY
        assert await m.read(0x00) == (0x12EF, OKAY)
        assert await m.write(0x20, 0xDEADBEEF, order=order) == OKAY
        assert await m.read(0x20) == (0xDEADBEEF, OKAY)
        # address bits [1:0] are ignored
        assert await m.read(0x23) == (0xDEADBEEF, OKAY)
    run(tb)


def test_rw_write_strobe_pulses_once():
    seen = []

    async def tb(ctx, dut):
        m = Master(ctx, dut.ax)
        await m.write(0x20, 5)
        await m.write(0x04, 5)                  # RO: no pulse
        await ctx.tick().repeat(3)

    async def mon(ctx, dut):
        while True:
            _, _, stb = await ctx.tick().sample(dut.rf.scratch_wstb)
            seen.append(stb)
    run(tb, extra=[mon])
    assert sum(seen) == 1


def test_ro_register_and_forbidden_write():
    async def tb(ctx, dut):
        m = Master(ctx, dut.ax)
        ctx.set(dut.rf.status, 0xA5)
        assert await m.read(0x04) == (0xA5, OKAY)
        assert await m.write(0x04, 0x00) == SLVERR      # RO: forbidden, no effect
        assert await m.read(0x04) == (0xA5, OKAY)
    run(tb)


def test_w1c():
    async def tb(ctx, dut):
        m = Master(ctx, dut.ax)
        ctx.set(dut.rf.irq_set, 0b101)
        await ctx.tick()
        ctx.set(dut.rf.irq_set, 0)
        await ctx.tick()
        assert await m.read(0x08) == (0b101, OKAY)
        assert await m.write(0x08, 0b001) == OKAY         # clears bit 0 only
        assert await m.read(0x08) == (0b100, OKAY)
        assert await m.write(0x08, 0b010) == OKAY         # writing 1 to a clear bit: no-op
        assert await m.read(0x08) == (0b100, OKAY)
        assert await m.write(0x08, 0b000) == OKAY         # writing 0: no effect
        assert await m.read(0x08) == (0b100, OKAY)
        # an event in the very cycle of the clear wins (no event is lost)
        ctx.set(dut.rf.irq_set, 0b100)
        assert await m.write(0x08, 0b100) == OKAY
        ctx.set(dut.rf.irq_set, 0)
        await ctx.tick()
        assert (await m.read(0x08))[0] == 0b100
    run(tb)


def test_wo_pulse_and_read_forbidden():
    pulses = []

    async def tb(ctx, dut):
        m = Master(ctx, dut.ax)
        assert await m.write(0x0C, 0x6) == OKAY
        assert await m.read(0x0C) == (0, SLVERR)
        await ctx.tick().repeat(2)

    async def mon(ctx, dut):
        while True:
            _, _, v, stb = await ctx.tick().sample(dut.rf.cmd, dut.rf.cmd_wstb)
            if v or stb:
                pulses.append((v, stb))
    run(tb, extra=[mon])
    assert pulses == [(0x6, 1)]


def test_counter_lo_hi_latching():
    async def tb(ctx, dut):
        m = Master(ctx, dut.ax)
        ctx.set(dut.rf.cycles, 0x1234_FFFF_FFFF)
        lo, r1 = await m.read(0x10)
        ctx.set(dut.rf.cycles, 0x1235_0000_0003)          # the counter moves on
        hi, r2 = await m.read(0x14)
        assert (r1, r2) == (OKAY, OKAY)
        assert (hi << 32) | lo == 0x1234_FFFF_FFFF         # a consistent 48-bit value
        assert await m.write(0x10, 0) == SLVERR
    run(tb)


def test_windows():
    writes = []

    async def tb(ctx, dut):
        m = Master(ctx, dut.ax)
        assert await m.write(0x400 + 4 * 5, 0x1FF) == OKAY
        assert await m.write(0x800 + 4 * 47, 0xCAFEF00D, order="w_first") == OKAY
        assert await m.write(0x400 + 4 * 64, 1) == SLVERR   # one past the window
        assert await m.write(0x800 + 4 * 48, 1) == SLVERR
        assert await m.write(0x400, 1, strb=0b0001) == SLVERR   # partial word
        assert await m.read(0x400) == (0, SLVERR)              # windows are write-only
        await ctx.tick().repeat(2)

    async def mon(ctx, dut):
        rf = dut.rf
        while True:
            _, _, cwe, ca, cd, dwe, da, dd = await ctx.tick().sample(
                rf.cmem_we, rf.cmem_addr, rf.cmem_data, rf.dmem_we, rf.dmem_addr, rf.dmem_data)
            if cwe:
                writes.append(("C", ca, cd))
            if dwe:
                writes.append(("D", da, dd))
    run(tb, extra=[mon])
    assert writes == [("C", 5, 0xFF), ("D", 47, 0xCAFEF00D)]


def test_unmapped_slverr_and_no_hang():
    async def tb(ctx, dut):
        m = Master(ctx, dut.ax)
        for addr in (0x18, 0x1C, 0x24, 0x3FC, 0x500, 0xFFC):
            assert await m.write(addr, 0xFFFFFFFF) == SLVERR, hex(addr)
            assert await m.read(addr) == (0, SLVERR), hex(addr)
        # still fully working afterwards
        assert await m.write(0x20, 7) == OKAY
        assert await m.read(0x20) == (7, OKAY)
    run(tb)


def test_backpressure_and_random_traffic():
    """Random orders, random B/R back-pressure, reads interleaved with writes: the
    responses match a model of the register file, and nothing hangs."""
    rng = random.Random(7)

    async def tb(ctx, dut):
        m = Master(ctx, dut.ax, rng=rng, ready_delay=6)
        model = {0x00: 0x0101, 0x20: 0}
        for _ in range(60):
            addr = rng.choice([0x00, 0x20, 0x18, 0x04])
            if rng.random() < 0.5:
                data = rng.getrandbits(32)
                resp = await m.write(addr, data, order=rng.choice(["together", "aw_first", "w_first"]))
                if addr in model:
                    width = 16 if addr == 0 else 32
                    model[addr] = data & ((1 << width) - 1)
                    assert resp == OKAY
                else:
                    assert resp == SLVERR
            else:
                data, resp = await m.read(addr)
                if addr in model:
                    assert (data, resp) == (model[addr], OKAY)
                elif addr == 0x04:
                    assert resp == OKAY
                else:
                    assert resp == SLVERR
    run(tb)


def test_outstanding_write_while_b_is_stalled():
    """While B waits for bready, the next AW and W are taken into the holding registers
    but the write is not performed (nor answered) until the first B is accepted."""
    async def tb(ctx, dut):
        ax = dut.ax
        ctx.set(ax.awaddr, 0x20); ctx.set(ax.wdata, 1); ctx.set(ax.wstrb, 0xF)
        ctx.set(ax.awvalid, 1); ctx.set(ax.wvalid, 1)
        await ctx.tick()                          # first AW and W taken
        ctx.set(ax.awvalid, 0); ctx.set(ax.wvalid, 0)
        await ctx.tick().until(ax.bvalid)
        assert ctx.get(dut.rf.scratch) == 1
        ctx.set(ax.wdata, 2)                      # second write while B is pending
        ctx.set(ax.awvalid, 1); ctx.set(ax.wvalid, 1)
        await ctx.tick()
        assert not ctx.get(ax.awready) and not ctx.get(ax.wready)   # held, not done
        ctx.set(ax.awvalid, 0); ctx.set(ax.wvalid, 0)
        await ctx.tick().repeat(4)
        assert ctx.get(ax.bvalid) and ctx.get(dut.rf.scratch) == 1
        ctx.set(ax.bready, 1)
        await ctx.tick()                           # first B accepted
        ctx.set(ax.bready, 0)
        await ctx.tick().until(ax.bvalid)          # second B
        assert ctx.get(dut.rf.scratch) == 2
        ctx.set(ax.bready, 1)
        await ctx.tick()
        ctx.set(ax.bready, 0)
        await ctx.tick()
        assert not ctx.get(ax.bvalid)
    run(tb)


def test_regmap_checks():
    with pytest.raises(ConfigError, match="overlap"):
        normalize_regmap(([Reg("A", 0, "RW"), Reg("B", 0, "RO")], []))
    with pytest.raises(ConfigError, match="overlap"):
        normalize_regmap(([Reg("A", 0x10, "RW")], [Window("W", 0x0, 8)]))
    with pytest.raises(ConfigError, match="aligned"):
        normalize_regmap(([Reg("A", 2, "RW")], []))


def test_concurrent_reads_and_writes():
    """Reads and writes in flight at the same time (AXI channels are independent): every
    response comes back, in order per channel, with the right data."""
    rng = random.Random(3)
    dut = Dut()
    reads, writes = [], []

    async def writer(ctx):
        m = Master(ctx, dut.ax, rng=random.Random(1), ready_delay=3)
        for i in range(25):
            addr = rng.choice([0x20, 0x18])
            resp = await m.write(addr, i, order=rng.choice(["together", "aw_first", "w_first"]))
            writes.append((addr, resp))
        assert ctx.get(dut.rf.scratch) == max(i for i, (a, _) in enumerate(writes) if a == 0x20)

    async def reader(ctx):
        m = Master(ctx, dut.ax, rng=random.Random(2), ready_delay=3)
        ctx.set(dut.rf.status, 0x5A)
        for _ in range(25):
            reads.append(await m.read(0x04))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(writer)
    sim.add_testbench(reader)
    sim.run()
    assert reads == [(0x5A, OKAY)] * 25
    assert writes == [(a, OKAY if a == 0x20 else SLVERR) for a, _ in writes]


def test_read_latency_adds_exactly_one_cycle(read_latency):
    """RVALID is seen 2 clock edges after ARVALID with the combinational decoder, 3
    with the registered two-level one; the data are the same."""
    seen = {}

    async def tb(ctx, dut):
        ax = dut.ax
        ctx.set(dut.rf.status, 0x3C)
        ctx.set(ax.araddr, 0x04)
        ctx.set(ax.arvalid, 1)
        ctx.set(ax.rready, 1)
        cycles = 0
        while True:
            await ctx.tick()
            cycles += 1
            if ctx.get(ax.arready) == 0:
                ctx.set(ax.arvalid, 0)
            if ctx.get(ax.rvalid):
                seen["r"] = (cycles, ctx.get(ax.rdata), ctx.get(ax.rresp))
                return
            assert cycles < 10
    run(tb)
    assert seen["r"] == (2 + read_latency, 0x3C, OKAY)


def test_read_latency_is_checked():
    with pytest.raises(ConfigError, match="read_latency must be 0 or 1"):
        AXI4LiteSlave(ADDR_BITS, read_latency=2)
    with pytest.raises(ConfigError, match="read_latency must be 0 or 1"):
        RegisterFile((REGS, WINS), ADDR_BITS, read_latency=-1)
