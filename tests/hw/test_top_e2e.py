"""The full TTAccel end to end in Amaranth's simulator: the load image written over
AXI4-Lite, input vectors streamed through s_axis, outputs collected from m_axis and
compared with the integer golden executor exactly (and a sibling with one flipped core
bit in the load image, which must disagree). About 10 s each."""

from __future__ import annotations

import numpy as np
from amaranth.sim import Simulator

from ttforge.hw.axil import OKAY
from ttforge.hw.config import AccelConfig
from ttforge.hw.program import compile_program, load_image
from ttforge.hw.regmap import RegisterMap
from ttforge.hw.top import TTAccel
from ttforge.ir.executor import execute
from ttforge.quant.qat import compile_network

from tests.support.nets import small_net
from tests.support.axil import Master
from tests.support.axis_drive import send_vectors, unpack_lanes

N_VEC = 3


def _net():
    q, x = small_net()
    inet = compile_network(q)
    xi = inet.quantize_input(x.numpy())[:N_VEC]
    return inet, xi


def _run(cfg, writes, xi, out_count):
    E, W, A = cfg.stream_elems, (cfg.act_bits + 7) // 8 * 8, cfg.act_bits
    dut = TTAccel(cfg)
    got: list[list[int]] = [[]]

    async def tb(ctx):
        m = Master(ctx, dut.axil)
        for addr, data in writes:
            assert await m.write(addr, data) == OKAY, hex(addr)
        await send_vectors(ctx, dut.s_axis, xi, E, W)
        for _ in range(200000):
            if len(got) > len(xi):
                break
            await ctx.tick()

    async def sink(ctx):
        ctx.set(dut.m_axis.tready, 1)
        while True:
            _, _, valid, data, last = await ctx.tick().sample(
                dut.m_axis.tvalid, dut.m_axis.tdata, dut.m_axis.tlast)
            if valid:
                room = out_count - len(got[-1])
                got[-1].extend(unpack_lanes(data, E, W)[:max(room, 0)])
                if last:
                    got.append([])

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.add_process(sink)
    sim.run()
    _ = A
    return np.array(got[:-1], dtype=np.int64)


def test_accelerator_matches_golden_exactly():
    inet, xi = _net()
    golden = execute(inet, xi)
    cfg = AccelConfig.for_network(inet, lanes=4, stream_elems=2)
    prog = compile_program(inet, cfg)
    out = _run(cfg, load_image(prog, RegisterMap(cfg)), xi, golden.shape[1])
    assert np.array_equal(out, golden), (out, golden)


def test_flipped_core_bit_in_load_image_disagrees():
    inet, xi = _net()
    golden = execute(inet, xi)
    cfg = AccelConfig.for_network(inet, lanes=4, stream_elems=2)
    rm = RegisterMap(cfg)
    writes = load_image(compile_program(inet, cfg), rm)
    cm = rm.window("CMEM")
    i = next(k for k, (a, _) in enumerate(writes) if cm.base <= a < cm.base + cm.size_bytes)
    a, d = writes[i]
    writes[i] = (a, d ^ (1 << (cfg.core_bits - 2)))
    out = _run(cfg, writes, xi, golden.shape[1])
    assert not np.array_equal(out, golden)
