"""Driving the engine (``TTEngine``) in Amaranth's simulator: its random networks and
inputs, a config for a network, the load-port and stream drivers, a whole simulation
with random gaps and back-pressure (:func:`simulate`), and the networks the RTL tests
share (:func:`coverage_net`, the fault-killing seed)."""

from __future__ import annotations

import random

import numpy as np
from amaranth.sim import Simulator

from ttforge.hw.config import AccelConfig
from ttforge.hw.engine import TTEngine
from ttforge.hw.program import compile_program
from ttforge.ir.executor import IntNetwork
from ttforge.ir.random import engine_network, random_layer
from ttforge.ir.random import random_inputs as _random_inputs

COUNTERS = ("cycles", "busy_lane_cycles", "in_stall", "out_stall", "sat_events", "vectors")

#: the quick-kill network: random_net(18) at L = 4, 3 vectors (80 MACs per vector; its
#: steps round 5 ties and saturate 6 results upwards over these vectors)
KILL_SEED, KILL_LANES, KILL_VECTORS = 18, 4, 3


# (the generators' one home is ttforge.ir.random; these keep the draws of the seeds below)
def _layer(rng, in_modes, out_modes, ranks, order, *, jitter=True, **kw):
    return random_layer(rng, in_modes, out_modes, ranks, order,
                        jitter=(-1, 0, 0, 1) if jitter else None, bias_bits=11, acc_bits=44, **kw)


random_net = engine_network


def random_inputs(net, n, seed):
    return _random_inputs(net, n, np.random.default_rng(seed + 1000))


def macs_per_vector(net):
    return sum(st.A * st.K * st.Q * st.P for layer in net.layers for st in layer.schedule.steps)


class Run:
    """Outputs (per vector), counters and status at the end of a simulation."""

    def __init__(self):
        self.outputs: list[list[int]] = []
        self.lasts: list[list[int]] = []
        self.counters: dict[str, int] = {}
        self.status: dict[str, int] = {}
        self.log: list = []
        self.done_pulses = 0


async def load_program(ctx, dut, prog, *, descriptors=None, cmem=None, bmem=None, globals_=None,
                       parts=("dmem", "cmem", "bmem", "globals")):
    """Write a program through the load ports (one element or word per cycle)."""
    images = {
        "dmem": (dut.load.dmem.addr, dut.load.dmem.data, dut.load.dmem.we,
                 [w for d in (descriptors or prog.descriptors) for w in d]),
        "cmem": (dut.load.cmem.addr, dut.load.cmem.data, dut.load.cmem.we,
                 prog.cmem.tolist() if cmem is None else cmem),
        "bmem": (dut.load.bmem.addr, dut.load.bmem.data, dut.load.bmem.we,
                 prog.bmem.tolist() if bmem is None else bmem),
    }
    for part in ("dmem", "cmem", "bmem"):
        if part not in parts:
            continue
        addr, data, we, values = images[part]
        for i, v in enumerate(values):
            ctx.set(addr, i)
            ctx.set(data, int(v))
            ctx.set(we, 1)
            await ctx.tick()
        ctx.set(we, 0)
    if "globals" in parts:
        g = dict(prog.globals)
        g.update(globals_ or {})
        ctx.set(dut.program.in_count, g["IN_COUNT"])
        ctx.set(dut.program.in_pad, g["IN_PAD"])
        ctx.set(dut.program.out_count, g["OUT_COUNT"])
        ctx.set(dut.program.out_buf, g["OUT_BUF"])
        await ctx.tick()  # the engine registers its checks of the program registers


async def send_vector(ctx, dut, values, rng, gap, lasts=None):
    n = len(values)
    valid, data, last, ready = dut.inp.valid, dut.inp.payload.data, dut.inp.payload.last, dut.inp.ready
    for i, v in enumerate(values):
        if gap and rng.random() < gap:
            ctx.set(valid, 0)
            await ctx.tick()
            while rng.random() < gap:
                await ctx.tick()
        ctx.set(valid, 1)
        ctx.set(data, int(v))
        ctx.set(last, (i == n - 1) if lasts is None else lasts[i])
        while True:
            _, _, took = await ctx.tick().sample(ready)
            if took:
                break
    ctx.set(valid, 0)


async def wait_idle(ctx, dut, limit=200_000):
    for _ in range(limit):
        if not ctx.get(dut.status.busy):
            return
        await ctx.tick()
    raise AssertionError("engine stayed busy")


async def pulse(ctx, sig):
    ctx.set(sig, 1)
    await ctx.tick()
    ctx.set(sig, 0)


def simulate(cfg, script, *, expect_vectors, seed=0, gap=0.0, stall=0.0, max_cycles=400_000,
             fault=None):
    """Run ``script(ctx, dut, rng)`` (the producer) against a consumer that takes
    ``expect_vectors`` output vectors with random ready; returns a :class:`Run`."""
    if cfg.engines > 1:
        from ttforge.hw.engine.array import EngineArray
        dut = EngineArray(cfg, fault=fault)
    else:
        dut = TTEngine(cfg, fault=fault) if fault else TTEngine(cfg)
    run = Run()
    rng = random.Random(seed)
    finished = {"producer": False}

    async def producer(ctx):
        await script(ctx, dut, rng)
        finished["producer"] = True

    async def consumer(ctx):
        crng = random.Random(seed + 7)
        cur, curl = [], []
        cycles = 0
        sigs = (dut.out.valid, dut.out.payload.data, dut.out.payload.last, dut.status.done_pulse)
        ready = None
        while len(run.outputs) < expect_vectors or not finished["producer"]:
            r = not (stall and crng.random() < stall)
            if r != ready:
                ctx.set(dut.out.ready, r)
                ready = r
            _, _, valid, data, last, done = await ctx.tick().sample(*sigs)
            run.done_pulses += done
            cycles += 1
            assert cycles < max_cycles, f"timeout: {len(run.outputs)} of {expect_vectors} vectors"
            if r and valid:
                cur.append(data)
                curl.append(last)
                if last:
                    run.outputs.append(cur)
                    run.lasts.append(curl)
                    cur, curl = [], []
        ctx.set(dut.out.ready, 1)
        for _ in range(4):
            run.done_pulses += ctx.get(dut.status.done_pulse)
            await ctx.tick()
        assert not cur, "a partial output vector"
        for n in COUNTERS:
            run.counters[n] = ctx.get(getattr(dut.counters, n))
        for n in ("busy", "error", "error_code", "error_step"):
            run.status[n] = ctx.get(getattr(dut.status, n))

    run_testbenches(dut, producer, consumer)
    return run


def run_testbenches(dut, *benches) -> None:
    """Simulate ``dut`` on a 100 MHz clock with the async testbenches ``benches``."""
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for bench in benches:
        sim.add_testbench(bench)
    sim.run()


def stream_script(prog, X, *, gap=0.0, pause=0, **load_kw):
    async def script(ctx, dut, rng):
        await load_program(ctx, dut, prog, **load_kw)
        ctx.set(dut.control.enable, 1)
        for x in X:
            await send_vector(ctx, dut, x, rng, gap)
            for _ in range(pause):
                await ctx.tick()
    return script


def config_for(net, lanes, **over):
    base = AccelConfig.for_network(net, lanes=lanes)
    fields = base.to_dict()
    fields.pop("axil_addr_bits", None)
    fields.update(over)
    return AccelConfig(**fields)




def coverage_net():
    """Steps covering mode 0 with a bias word, mode 1 OUT_WORD, mode 1 element outputs
    with contiguous biases (Q = 1) and with strided biases (Q = 3) and a partial last
    lane block, at L = 4."""
    rng = np.random.default_rng(11)
    # l0 order (1, 0): core 1 (A=3, K=4, Q=1, P=8: OUT_WORD), core 0 (K=6, Q=4, P=3: mode 0)
    l0 = _layer(rng, [3, 4], [3, 4], [2], (1, 0), w_bits=6, in_bits=8, in_exp=-3,
                inter_bits=16, out_bits=8, bias=True, relu=True, in_features=12, out_features=11)
    # l1 dense 11 -> 6: mode 1, Q = 1, P = 6 (last block 2 lanes)
    l1 = _layer(rng, [11], [6], [], (0,), w_bits=8, in_bits=8, in_exp=l0.out_exp,
                inter_bits=16, out_bits=8, bias=True, relu=False, in_features=11, out_features=6)
    # l2 order (1, 0): last step core 0 with Q = 3, P = 6: strided biases, 4 + 2 lanes
    l2 = _layer(rng, [2, 3], [6, 3], [2], (1, 0), w_bits=5, in_bits=8, in_exp=l1.out_exp,
                inter_bits=16, out_bits=8, bias=True, relu=False, in_features=6, out_features=17)
    net = IntNetwork((l0, l1, l2))
    cfg = config_for(net, 4)
    prog = compile_program(net, cfg)
    return net, cfg, prog
