"""One vector held at ``m_axis`` of a whole TTAccel in Amaranth's simulator, with the
registers the host reads sampled while it waits (STATUS, VECTORS, OUT_STALL, irq):
``tests/hw/test_top_output_wait.py`` (the output adapter) and
``tests/hw/test_engine_array.py`` (the engine array) check the same definitions."""

from __future__ import annotations

import numpy as np
from amaranth.sim import Simulator

from ttforge.hw.axil import OKAY
from ttforge.hw.config import AccelConfig
from ttforge.hw.cycles import program_cycles
from ttforge.hw.engine import ENGINE_TIMING
from ttforge.hw.program import compile_program, load_image
from ttforge.hw.regmap import RegisterMap
from ttforge.hw.top import TTAccel
from ttforge.ir.executor import execute
from ttforge.ir.random import engine_network, random_inputs

from tests.support.axil import Master
from tests.support.axis_drive import send_vectors, unpack_lanes

__all__ = ["held_output_run"]


def held_output_run(engines, stream_elems, hold):
    """One vector of engine_network(37) (3 outputs) with m_axis_tready low for ``hold``
    cycles from its start, then high. The outputs, the golden ones, the model's cycles,
    the samples taken while held (STATUS, VECTORS, OUT_STALL, irq, tvalid), the end's."""
    net = engine_network(37)
    cfg = AccelConfig(**{**AccelConfig.for_network(net, lanes=4,
                                                   stream_elems=stream_elems).to_dict(),
                         "engines": engines})
    prog = compile_program(net, cfg)
    X = random_inputs(net, 1, np.random.default_rng(2))
    rm = RegisterMap(cfg)
    dut = TTAccel(cfg)
    got, cur, held, end = [], [], [], {}
    t = {"now": 0, "release": None}

    async def control(ctx):
        m = Master(ctx, dut.axil)
        for addr, data in load_image(prog, rm):
            assert await m.write(addr, data) == OKAY
        ctrl = rm["CTRL"]
        assert await m.write(rm.addr("CTRL"), ctrl.field("ENABLE").mask
                             | ctrl.field("IRQ_DONE_EN").mask) == OKAY
        assert await m.write(rm.addr("CMD"), rm["CMD"].field("CLEAR_COUNTERS").mask) == OKAY
        t["release"] = t["now"] + hold
        await send_vectors(ctx, dut.s_axis, X, cfg.stream_elems, 8)
        while t["now"] < t["release"] - 60:
            await ctx.tick().repeat(50)
            sample = {"tvalid": ctx.get(dut.m_axis.tvalid), "irq": ctx.get(dut.irq)}
            for reg in ("STATUS", "VECTORS_LO", "OUT_STALL_LO"):
                sample[reg] = (await m.read(rm.addr(reg)))[0]
            held.append(sample)
        while not got:
            await ctx.tick()
        await ctx.tick().repeat(10)
        end["STATUS"] = (await m.read(rm.addr("STATUS")))[0]
        end["irq"] = ctx.get(dut.irq)
        for reg in ("CYCLES_LO", "IN_STALL_LO", "OUT_STALL_LO", "VECTORS_LO"):
            end[reg] = (await m.read(rm.addr(reg)))[0]

    async def sink(ctx):
        while True:
            ready = t["release"] is not None and t["now"] >= t["release"]
            ctx.set(dut.m_axis.tready, ready)
            _, _, valid, data, last = await ctx.tick().sample(
                dut.m_axis.tvalid, dut.m_axis.tdata, dut.m_axis.tlast)
            t["now"] += 1
            if valid and ready:
                cur.extend(unpack_lanes(data, cfg.stream_elems, 8))
                if last:
                    got.append(list(cur))
                    cur.clear()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(control)
    sim.add_process(sink)
    sim.run()
    golden = execute(net, X)
    model = program_cycles(prog.descriptors, cfg, prog.globals, ENGINE_TIMING).total
    return np.array(got)[:, :golden.shape[1]], golden, model, held, end
