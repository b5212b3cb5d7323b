"""Throughput mode (``AccelConfig.throughput = 1``): the next vector streams into the
staging memory while the current one computes and drains. Bit-exact against the golden
executor with random stream stalls (engine and AXI top), the steady-state cycles per
vector and the first vector's latency exactly as ``ProgramCycles.vector_cycles`` /
``throughput_latency`` say, and a fault that lets the next vector's input overwrite a
staged vector must fail."""

from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

import ttforge.hw.engine as engine_mod
from ttforge.errors import ConfigError
from ttforge.hw.config import AccelConfig
from ttforge.hw.cycles import ENGINE_TIMING, program_cycles
from ttforge.hw.engine import Controller, TTEngine
from ttforge.hw.program import compile_program, load_image
from ttforge.hw.regmap import RegisterMap
from ttforge.hw.top import TTAccel
from ttforge.ir.executor import IntNetwork, execute
from ttforge.ir.random import random_layer

from tests.support.axil import Master
from tests.support.axis_drive import unpack_lanes
from tests.support.engine import (config_for, load_program, macs_per_vector, random_inputs,
                                  random_net, simulate, stream_script)


def wide_net(seed=3):
    """256 inputs, 2 outputs: the input (IN_PAD 256) takes longer than the steps and
    output, so the steady state is set by the input side."""
    rng = np.random.default_rng(seed)
    layer = random_layer(rng, [16, 16], [1, 2], [1], (0, 1), w_bits=4, in_bits=8, in_exp=-3,
                         inter_bits=16, out_bits=8, bias=False, relu=False, bias_bits=11,
                         acc_bits=44)
    return IntNetwork((layer,))


def _net(seed):
    return wide_net() if seed is None else random_net(seed)


def run_back_to_back(cfg, prog, X, *, limit=60_000):
    """Vectors back to back, an element offered every cycle, ``ready`` always high:
    (outputs, cycle of each vector's last output element, CYCLES counter)."""
    dut = TTEngine(cfg)
    outs, ends = [], []
    got = {}

    async def producer(ctx):
        await load_program(ctx, dut, prog)
        ctx.set(dut.control.enable, 1)
        for x in X:
            for i, v in enumerate(x):
                ctx.set(dut.inp.valid, 1)
                ctx.set(dut.inp.payload.data, int(v))
                ctx.set(dut.inp.payload.last, i == len(x) - 1)
                while not (await ctx.tick().sample(dut.inp.ready))[2]:
                    pass
        ctx.set(dut.inp.valid, 0)

    async def consumer(ctx):
        ctx.set(dut.out.ready, 1)
        cur = []
        for cyc in range(limit):
            _, _, v, d, last = await ctx.tick().sample(
                dut.out.valid, dut.out.payload.data, dut.out.payload.last)
            if v:
                cur.append(d)
                if last:
                    outs.append(cur)
                    ends.append(cyc)
                    cur = []
                    if len(outs) == len(X):
                        break
        await ctx.tick().repeat(3)
        got["cycles"] = ctx.get(dut.counters.cycles)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer, background=True)
    sim.add_testbench(consumer)
    sim.run()
    return outs, ends, got["cycles"]


#: (lanes, seed of random_net, or None: wide_net, whose input side is the slower)
CASES = [(1, 5), (2, 13), (4, 9), (16, 15), (4, None), (16, None)]


@pytest.mark.parametrize("lanes,seed,read_registers", [(*c, 0) for c in CASES] + [(4, 9, 1), (4, None, 1)])
def test_steady_state_cycles_equal_the_model(lanes, seed, read_registers):
    net = _net(seed)
    cfg = config_for(net, lanes, throughput=1, read_registers=read_registers)
    prog = compile_program(net, cfg)
    X = random_inputs(net, 4, 7 if seed is None else seed)
    outs, ends, cycles = run_back_to_back(cfg, prog, X)
    assert np.array_equal(np.array(outs), execute(net, X))
    pc = program_cycles(prog.descriptors, cfg, prog.globals, ENGINE_TIMING)
    assert np.diff(ends).tolist() == [pc.vector_cycles] * (len(X) - 1)
    # BUSY never falls between vectors: the first latency, then one period per vector
    assert cycles == pc.throughput_latency + (len(X) - 1) * pc.vector_cycles
    compute = sum(s.total for s in pc.steps) + pc.output_cycles
    assert (pc.input_cycles > compute) == (seed is None)      # both regimes are covered


@pytest.mark.parametrize("lanes,seed", [(1, 21), (4, 15), (4, 37), (16, 4), (4, None)])
def test_bit_exact_with_random_stalls(lanes, seed):
    net = _net(seed)
    cfg = config_for(net, lanes, throughput=1)
    prog = compile_program(net, cfg)
    X = random_inputs(net, 3, 11 if seed is None else seed)
    run = simulate(cfg, stream_script(prog, X, gap=0.3), expect_vectors=len(X), seed=lanes,
                   stall=0.3)
    assert np.array_equal(np.array(run.outputs, dtype=np.int64), execute(net, X))
    assert all(ls == [0] * (len(ls) - 1) + [1] for ls in run.lasts)
    assert run.status["error"] == 0 and run.status["busy"] == 0
    assert run.counters["vectors"] == len(X) == run.done_pulses
    assert run.counters["busy_lane_cycles"] == macs_per_vector(net) * len(X)


def test_stage_overwrite_fault_breaks_equality(monkeypatch):
    """Sibling: an input side that does not wait for the copy lets the next vector
    overwrite the staged one (vectors are lost or mixed): not equal."""
    monkeypatch.setattr(engine_mod, "Controller",
                        lambda g: Controller(g, fault="stage_overwrite"))
    net = random_net(15)
    cfg = config_for(net, 4, throughput=1)
    prog = compile_program(net, cfg)
    X = random_inputs(net, 4, 15)
    outs, _, _ = run_back_to_back(cfg, prog, X, limit=4_000)
    assert len(outs) != len(X) or not np.array_equal(np.array(outs), execute(net, X))


def test_throughput_off_by_default_and_needs_two_buffer_ports():
    assert AccelConfig().throughput == 0
    with pytest.raises(ConfigError, match="throughput=1 needs buf_ports=2"):
        AccelConfig(throughput=1, buf_ports=1)
    with pytest.raises(ConfigError, match="throughput=2 must be in 0..1"):
        AccelConfig(throughput=2)


def test_vector_cycles_by_hand():
    """The model's two regimes: the compute side or the input side sets the period."""
    pc = program_cycles([], AccelConfig(lanes=4), {"IN_COUNT": 10, "IN_PAD": 12, "OUT_COUNT": 5})
    t = ENGINE_TIMING
    out = t.output_latency + 5
    assert pc.stage_cycles == t.stage_turnaround + 3
    assert pc.vector_cycles == pc.stage_cycles + max(12, out)
    assert pc.throughput_latency == 12 + out + pc.stage_cycles


def _sender(ctx, dut, X, E, W, rng, gap, done):
    """``s_axis`` beats with random ``tvalid`` pauses (until ``done["sink"]``)."""
    async def send():
        for vec in X:
            beats = [vec[i:i + E] for i in range(0, len(vec), E)]
            for bi, beat in enumerate(beats):
                while rng.random() < gap:
                    ctx.set(dut.s_axis.tvalid, 0)
                    await ctx.tick()
                word = 0
                for j, v in enumerate(beat):
                    word |= (int(v) & ((1 << W) - 1)) << (j * W)
                ctx.set(dut.s_axis.tdata, word)
                ctx.set(dut.s_axis.tlast, bi == len(beats) - 1)
                ctx.set(dut.s_axis.tvalid, 1)
                while not (await ctx.tick().sample(dut.s_axis.tready))[2]:
                    if done["sink"]:
                        return
        ctx.set(dut.s_axis.tvalid, 0)
    return send()


@pytest.mark.parametrize("throughput,fault", [(1, None), (1, "skid_drop"), (0, None)])
def test_axi_top_with_stalls(throughput, fault):
    """Through TTAccel (AXI4-Lite load, the s_axis skid buffer, m_axis back-pressure), 2
    elements a beat, random pauses on both streams: exact in throughput mode and without
    it; the skid buffer that drops a beat under back-pressure is not."""
    net = random_net(18)
    cfg = config_for(net, 4, stream_elems=2, throughput=throughput)
    prog = compile_program(net, cfg)
    X = random_inputs(net, 4, 18)
    golden = execute(net, X)
    E, W = cfg.stream_elems, (cfg.act_bits + 7) // 8 * 8
    dut = TTAccel(cfg, fault=fault)
    outs = []
    done = {"sink": False}

    async def tb(ctx):
        m = Master(ctx, dut.axil)
        for addr, data in load_image(prog, RegisterMap(cfg)):
            await m.write(addr, data)
        await _sender(ctx, dut, X, E, W, random.Random(1), 0.3, done)

    async def sink(ctx):
        rng = random.Random(2)
        cur = []
        for _ in range(8_000):       # ~3x what the 4 vectors need
            r = rng.random() < 0.7
            ctx.set(dut.m_axis.tready, r)
            _, _, valid, data, last = await ctx.tick().sample(
                dut.m_axis.tvalid, dut.m_axis.tdata, dut.m_axis.tlast)
            if r and valid:
                cur.extend(unpack_lanes(data, E, W))
                if last:
                    outs.append(cur[:golden.shape[1]])
                    cur = []
                    if len(outs) == len(X):
                        break
        done["sink"] = True

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.add_testbench(sink)
    sim.run()
    exact = len(outs) == len(X) and np.array_equal(np.array(outs), golden)
    assert exact == (fault is None)


def test_stream_error_of_the_next_vector_leaves_the_current_one():
    """A vector whose tlast comes early, sent while the previous one computes: the
    previous one still completes exactly, ``TLAST_EARLY`` stands, and after
    ``clear_error`` the next vector runs exactly."""
    from ttforge.hw.engine import ERROR_CODES

    from tests.support.engine import pulse, send_vector

    net = random_net(15)
    cfg = config_for(net, 4, throughput=1)
    prog = compile_program(net, cfg)
    X = random_inputs(net, 2, 15)
    seen = {}

    async def script(ctx, dut, rng):
        await load_program(ctx, dut, prog)
        ctx.set(dut.control.enable, 1)
        await send_vector(ctx, dut, X[0], rng, 0.0)
        await send_vector(ctx, dut, list(X[1][:2]), rng, 0.0, lasts=[0, 1])   # while X[0] runs
        await ctx.tick().repeat(3)
        seen["code"] = ctx.get(dut.status.error_code)
        while ctx.get(dut.status.busy):
            await ctx.tick()
        await pulse(ctx, dut.control.clear_error)
        await send_vector(ctx, dut, X[1], rng, 0.0)

    run = simulate(cfg, script, expect_vectors=2)
    assert seen["code"] == ERROR_CODES["TLAST_EARLY"]
    assert np.array_equal(np.array(run.outputs), execute(net, X))
    assert run.status["error"] == 0
