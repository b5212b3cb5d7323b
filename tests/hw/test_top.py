"""TTAccel top level: port names, reset variants, byte-identical emission, and AXI
traffic through the real register map into a stand-in engine (the engine's own
end-to-end tests run the real datapath)."""

from __future__ import annotations

import pytest
from amaranth.hdl import Signal
from amaranth.sim import Simulator

from ttforge.hw.axil import OKAY, SLVERR
from ttforge.hw.config import AccelConfig
from ttforge.hw.regmap import MAGIC, RegisterMap
from ttforge.hw.synth import verilog_ports
from ttforge.hw.top import TTAccel, verilog
from ttforge.errors import ConfigError

from tests.support.axil import Master
from tests.support.stubs import StubEngine

pytestmark = pytest.mark.filterwarnings("ignore:.*created but never used")

CFG = AccelConfig(lanes=4, act_bits=6, stream_elems=4, core_depth=64, bias_depth=16,
                  buf_depth=64, desc_depth=4)

AXIL = ["awaddr", "awvalid", "awready", "wdata", "wstrb", "wvalid", "wready", "bresp",
        "bvalid", "bready", "araddr", "arvalid", "arready", "rdata", "rresp", "rvalid", "rready"]
AXIS = ["tdata", "tvalid", "tready", "tlast"]


def _emit(cfg=CFG, **kw):
    return verilog(cfg, engine=StubEngine(cfg), **kw)


def test_port_names_and_directions():
    ports = {p.name: p for p in verilog_ports(_emit(), "ttforge_accel")}
    expected = {"clk", "rst", "irq", *(f"s_axil_{n}" for n in AXIL),
                *(f"s_axis_{n}" for n in AXIS), *(f"m_axis_{n}" for n in AXIS)}
    assert set(ports) == expected
    outs = {"s_axil_awready", "s_axil_wready", "s_axil_bresp", "s_axil_bvalid", "s_axil_arready",
            "s_axil_rdata", "s_axil_rresp", "s_axil_rvalid", "s_axis_tready", "m_axis_tdata",
            "m_axis_tvalid", "m_axis_tlast", "irq"}
    assert {n for n, p in ports.items() if p.direction == "output"} == outs
    assert ports["s_axil_awaddr"].width == CFG.axil_addr_bits
    assert ports["s_axil_wdata"].width == 32 and ports["s_axil_wstrb"].width == 4
    assert ports["s_axis_tdata"].width == ports["m_axis_tdata"].width == CFG.tdata_bits == 32


def test_aresetn_variant():
    ports = {p.name for p in verilog_ports(_emit(reset="aresetn"), "ttforge_accel")}
    assert "aresetn" in ports and "clk" in ports and "rst" not in ports
    with pytest.raises(ConfigError, match="reset"):
        _emit(reset="rst_n")


def test_byte_identical():
    a, b = _emit(), _emit()
    assert a == b
    assert "/home" not in a and "/work" not in a and ".py:" not in a   # no source paths
    other = AccelConfig(**{**CFG.to_dict(), "stream_elems": 2})
    assert _emit(other) != a


def test_unbound_engine_input_is_an_error():
    from amaranth.lib import wiring

    class Extra(StubEngine):
        def __init__(self, cfg):
            super().__init__(cfg)
            self.mystery = Signal()

        @property
        def signature(self):
            sig = super().signature
            members = dict(sig.members)
            members["mystery"] = wiring.In(1)
            return wiring.Signature(members)

    with pytest.raises(ConfigError, match="mystery"):
        TTAccel(CFG, engine=Extra(CFG)).elaborate(None)


def _pack(vals, E=4, W=8):
    word = 0
    for j, v in enumerate(vals):
        word |= (v & ((1 << W) - 1)) << (j * W)
    return word


def test_axi_end_to_end_with_stub_engine():
    rm = RegisterMap(CFG)
    dut = TTAccel(CFG, engine=StubEngine(CFG))
    got = []

    async def tb(ctx):
        m = Master(ctx, dut.axil, ready_delay=2)
        assert await m.read(rm.addr("ID")) == (MAGIC, OKAY)
        assert (await m.read(rm.addr("CFG_LANES")))[0] == CFG.lanes | (CFG.stream_elems << 8) | (CFG.engines << 16)
        assert await m.read(rm.addr("CMD")) == (0, SLVERR)            # WO
        assert await m.write(rm.addr("ID"), 1) == SLVERR              # RO
        assert await m.write(0x0F0, 1) == SLVERR                      # unmapped
        assert await m.read(rm.window("CMEM").base) == (0, SLVERR)    # window: write-only
        # the stub adds the last CMEM element written to every element
        assert await m.write(rm.window("CMEM").addr(3), (-2) & 0xFFFFFFFF) == OKAY
        assert await m.write(rm.addr("IN_COUNT"), 6) == OKAY
        assert await m.read(rm.addr("IN_COUNT")) == (6, OKAY)
        # enable + done interrupt
        assert await m.write(rm.addr("CTRL"), 0b011) == OKAY
        # one 6-element vector = 2 beats (the second half full)
        vec = [1, -2, 3, -4, 5, -6]
        for word, last in ((_pack(vec[:4]), 0), (_pack(vec[4:]), 1)):
            ctx.set(dut.s_axis.tdata, word)
            ctx.set(dut.s_axis.tlast, last)
            ctx.set(dut.s_axis.tvalid, 1)
            await ctx.tick().until(dut.s_axis.tready)
        ctx.set(dut.s_axis.tvalid, 0)
        for _ in range(40):
            if ctx.get(dut.irq):
                break
            await ctx.tick()
        assert ctx.get(dut.irq)
        status, _ = await m.read(rm.addr("STATUS"))
        assert status & 0b010                                         # DONE
        assert (await m.read(rm.addr("IRQ_STATUS")))[0] == 0b01
        assert await m.write(rm.addr("IRQ_STATUS"), 0b01) == OKAY     # W1C
        assert (await m.read(rm.addr("IRQ_STATUS")))[0] == 0
        await ctx.tick()
        assert not ctx.get(dut.irq)
        lo, _ = await m.read(rm.addr("VECTORS_LO"))
        hi, _ = await m.read(rm.addr("VECTORS_HI"))
        assert (hi << 32 | lo) == 1
        # an element while disabled -> error, error interrupt, ERROR_CODE; CMD clears it
        assert await m.write(rm.addr("CTRL"), 0b100) == OKAY
        ctx.set(dut.s_axis.tdata, 0); ctx.set(dut.s_axis.tlast, 1); ctx.set(dut.s_axis.tvalid, 1)
        await ctx.tick().until(dut.s_axis.tready)
        ctx.set(dut.s_axis.tvalid, 0)
        await ctx.tick().repeat(3)
        assert ctx.get(dut.irq)
        code, _ = await m.read(rm.addr("ERROR_CODE"))
        assert code == 9 | (3 << 16)
        assert (await m.read(rm.addr("STATUS")))[0] & 0b100
        assert await m.write(rm.addr("CMD"), 0b010) == OKAY           # CLEAR_ERROR
        await ctx.tick()
        assert (await m.read(rm.addr("STATUS")))[0] & 0b100 == 0
        assert (await m.read(rm.addr("ERROR_CODE")))[0] & 0xFF == 0

    async def sink(ctx):
        ctx.set(dut.m_axis.tready, 1)
        while True:
            _, _, valid, data, last = await ctx.tick().sample(
                dut.m_axis.tvalid, dut.m_axis.tdata, dut.m_axis.tlast)
            if valid:
                got.append((data, last))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.add_process(sink)
    sim.run()
    # outputs: element + (-2), sign-extended to 8-bit lanes; partial last beat zero-filled
    exp = [v - 2 for v in [1, -2, 3, -4, 5, -6]]
    assert got == [(_pack(exp[:4]), 0), (_pack(exp[4:]), 1)]


def test_byte_identical_full_accelerator():
    cfg = AccelConfig(lanes=4, core_bits=4, core_depth=256, bias_depth=64, buf_depth=256,
                      desc_depth=8, stream_elems=2)
    a = verilog(cfg)
    assert a == verilog(cfg)
    assert a.count("\nmodule ") == 1 and "module ttforge_accel(" in a   # one flat module
