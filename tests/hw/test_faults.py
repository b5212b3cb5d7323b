"""Mutation check in Amaranth simulation: every deliberate RTL fault of
``ttforge.hw.faults`` must make the exact end-to-end comparison fail.

A fault is *killed* when the run disagrees with ``ttforge.quant.execute``: an output
element differs, a vector is missing (timeout or error stop), or ``last``/``tlast`` is
not exactly on the final element of each vector. The un-faulted hardware must pass the
same run, so a kill is the fault's doing.

The default run has one quick kill per fault on a small random network chosen so that
every fault is reachable (rounding ties and positive saturation occur; checked in
software below). ``-m slow`` sweeps random networks and lane counts and reports the
kill rate per fault.
"""

from __future__ import annotations

import random
from unittest import mock

import numpy as np
import pytest
from amaranth.sim import Simulator

from ttforge.hw.axil import OKAY
from ttforge.hw.config import AccelConfig
from ttforge.hw.engine import TTEngine
from ttforge.hw.faults import (DATAPATH_FAULTS, ENGINE_FAULTS, FAULT_BLOCKS, FAULTS,
                               PROTOCOL_FAULTS, check_fault)
from ttforge.hw.program import compile_program, load_image
from ttforge.hw.regmap import RegisterMap
from ttforge.hw.top import TTAccel, verilog
from ttforge.ir.arith import rshift_round
from ttforge.ir.executor import execute, execute_traced

from tests.support.axil import Master
from tests.support.axis_drive import send_vectors, unpack_lanes
from tests.support.engine import (KILL_LANES, KILL_SEED, KILL_VECTORS, config_for, load_program, random_inputs,
                                  random_net, send_vector)

REQUIRED = ("requant_lsb", "round_off_by_one", "wrong_stride", "drop_tlast", "sat_bound")


# ------------------------------------------------------------------------ registry
def test_registry_names_and_descriptions():
    for name in REQUIRED + ("axis_unstable", "axil_double_resp"):
        assert name in FAULTS
    for name, desc in FAULTS.items():
        assert desc and "\n" not in desc, name
        assert name in FAULT_BLOCKS
    assert set(DATAPATH_FAULTS) | set(PROTOCOL_FAULTS) == set(FAULTS)
    assert TTEngine.FAULTS == ENGINE_FAULTS


@pytest.mark.filterwarnings("ignore:.*created but never used")
def test_unknown_fault_is_a_value_error_naming_the_known_ones():
    cfg = AccelConfig()
    for make in (lambda: TTEngine(cfg, fault="nope"), lambda: TTAccel(cfg, fault="nope"),
                 lambda: verilog(cfg, fault="nope")):
        with pytest.raises(ValueError, match="known: requant_lsb, round_off_by_one"):
            make()
    # a fault of another block is refused by the engine, naming what it takes
    with pytest.raises(ValueError, match="AXI4LiteSlave, not in TTEngine"):
        TTEngine(cfg, fault="axil_double_resp")
    assert check_fault(None) is None


def _small_cfg():
    return AccelConfig(lanes=2, core_depth=64, bias_depth=16, buf_depth=64, desc_depth=2)


def test_no_fault_is_the_real_hardware_and_every_fault_changes_the_verilog():
    cfg = _small_cfg()
    real = verilog(cfg)
    assert verilog(cfg, fault=None) == real
    for name in FAULTS:
        assert verilog(cfg, fault=name) != real, name


# ------------------------------------------------------------------------ engine runs
class Result:
    def __init__(self):
        self.outputs: list[list[int]] = []
        self.lasts: list[list[int]] = []
        self.pending: list[int] = []      # elements after the last `last`
        self.error = 0
        self.timed_out = False


def run_engine(cfg, prog, X, *, fault=None, seed=0, gap=0.2, stall=0.2, limit=20_000):
    """Stream ``X`` through ``TTEngine(cfg, fault=fault)`` with random input gaps and
    output back-pressure; stops after ``limit`` cycles without all vectors."""
    dut = TTEngine(cfg, fault=fault)
    res = Result()
    state = {"sent": False}

    async def producer(ctx):
        rng = random.Random(seed)
        await load_program(ctx, dut, prog)
        ctx.set(dut.control.enable, 1)
        for x in X:
            await send_vector(ctx, dut, x, rng, gap)
        state["sent"] = True

    async def consumer(ctx):
        crng = random.Random(seed + 7)
        cur, curl = [], []
        for _ in range(limit):
            r = not (stall and crng.random() < stall)
            ctx.set(dut.out.ready, r)
            _, _, valid, data, last, err = await ctx.tick().sample(
                dut.out.valid, dut.out.payload.data, dut.out.payload.last, dut.status.error)
            if err:
                res.error = 1
                break
            if r and valid:
                cur.append(data)
                curl.append(last)
                if last:
                    res.outputs.append(cur)
                    res.lasts.append(curl)
                    cur, curl = [], []
            if len(res.outputs) >= len(X) and state["sent"]:
                break
        else:
            res.timed_out = True
        res.pending = cur

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer, background=True)
    sim.add_testbench(consumer)
    sim.run()
    return res


def exact(res, golden) -> bool:
    """The end-to-end check: every vector, every element, ``last`` only at the end."""
    if res.error or res.timed_out or res.pending or len(res.outputs) != len(golden):
        return False
    if not all(ls == [0] * (len(ls) - 1) + [1] for ls in res.lasts):
        return False
    got = res.outputs
    return all(len(g) == golden.shape[1] for g in got) and np.array_equal(
        np.array(got, dtype=np.int64), golden)


def _half_down(a, s):
    """``rshift_round`` with the rounding constant one lower: ties toward minus infinity."""
    a = np.asarray(a, dtype=np.int64)
    if s <= 0:
        return a << np.int64(-s)
    return (a + np.int64((1 << (s - 1)) - 1)) >> np.int64(s)


def software_twin(net, X, fault, inter_bits):
    """The golden executor with the arithmetic fault applied (``round_off_by_one``,
    ``sat_bound``): where it differs from the golden output the fault is observable on
    these vectors, so the hardware with the fault must be killed."""
    import ttforge.ir.executor as ex

    if fault == "round_off_by_one":
        with mock.patch.object(ex, "rshift_round", _half_down):
            return ex.execute(net, X)
    if fault == "sat_bound":
        top = 1 << (inter_bits - 1)

        def sat(v, bits, narrow=False):
            y = np.clip(v, -(1 << (bits - 1)), 1 << (bits - 1))
            return np.where(y == top, -top, y)       # the buffer element wraps
        with mock.patch.object(ex, "saturate", sat):
            return ex.execute(net, X)
    raise ValueError(fault)


def reachability(net, X, inter_bits):
    """What the faults need, from the golden executor: rounding ties, results saturated
    upwards, steps with K > 1, and whether the software twins of the two arithmetic
    faults change the output."""
    golden, traces = execute_traced(net, X)
    ties = possat = 0
    for t in traces:
        layer = net.layers[t.layer]
        s = layer.shifts()[t.step]
        if s >= 1:
            ties += int(np.count_nonzero((t.acc & ((1 << s) - 1)) == (1 << (s - 1))))
        hi = (1 << (layer.step_out_bits(t.step) - 1)) - 1
        possat += int(np.count_nonzero(rshift_round(t.acc, s) > hi))
    k_gt_1 = sum(st.K > 1 for layer in net.layers for st in layer.schedule.steps)
    observable = {f: not np.array_equal(software_twin(net, X, f, inter_bits), golden)
                  for f in ("round_off_by_one", "sat_bound")}
    return {"ties": ties, "possat": possat, "k_gt_1": k_gt_1, **observable}


def _kill_case():
    net = random_net(KILL_SEED)
    cfg = config_for(net, KILL_LANES)
    prog = compile_program(net, cfg)
    X = random_inputs(net, KILL_VECTORS, KILL_SEED)
    return net, cfg, prog, X


def test_the_kill_network_reaches_every_fault():
    """Its vectors have rounding ties, upward saturation and K > 1 steps, and the
    software twins of round_off_by_one and sat_bound change the output."""
    net, cfg, prog, X = _kill_case()
    r = reachability(net, X, cfg.inter_bits)
    assert r["ties"] > 0 and r["possat"] > 0 and r["k_gt_1"] > 0, r
    assert r["round_off_by_one"] and r["sat_bound"], r


def test_unfaulted_engine_passes_the_kill_run():
    net, cfg, prog, X = _kill_case()
    assert exact(run_engine(cfg, prog, X), execute(net, X))


@pytest.mark.parametrize("fault", ENGINE_FAULTS)
def test_engine_fault_is_killed(fault):
    net, cfg, prog, X = _kill_case()
    res = run_engine(cfg, prog, X, fault=fault)
    assert not exact(res, execute(net, X)), f"fault {fault} survived the exact check"
    if fault in ("round_off_by_one", "sat_bound"):
        # the fault does exactly what it says: the hardware equals its software twin
        assert np.array_equal(np.array(res.outputs, dtype=np.int64),
                              software_twin(net, X, fault, cfg.inter_bits))


# ------------------------------------------------------------------------ top-level runs
def run_top(cfg, writes, X, out_count, *, fault=None, seed=0, stall=0.3, limit=40_000):
    """The whole TTAccel: load image over AXI4-Lite, vectors in through s_axis, outputs
    from m_axis with random tready. Returns a :class:`Result` (elements per vector,
    tlast per beat) and the AXI4-Lite responses of the load."""
    E, W = cfg.stream_elems, (cfg.act_bits + 7) // 8 * 8
    dut = TTAccel(cfg, fault=fault)
    res = Result()
    resp = []
    state = {"sent": False}

    async def tb(ctx):
        m = Master(ctx, dut.axil)
        for addr, data in writes:
            try:
                resp.append(await m.write(addr, data))
            except AssertionError as e:      # the master's own protocol checks
                resp.append(f"AXI4-Lite: {e}")
                state["sent"] = state["hung"] = True
                return
        await send_vectors(ctx, dut.s_axis, X, E, W)
        state["sent"] = True

    async def sink(ctx):
        crng = random.Random(seed + 3)
        cur, curl = [], []
        for _ in range(limit):
            r = not (stall and crng.random() < stall)
            ctx.set(dut.m_axis.tready, r)
            _, _, valid, data, last = await ctx.tick().sample(
                dut.m_axis.tvalid, dut.m_axis.tdata, dut.m_axis.tlast)
            if r and valid:
                cur.extend(unpack_lanes(data, E, W))
                curl.append(last)
                if last:
                    res.outputs.append(cur[:out_count] if len(cur) >= out_count else cur)
                    res.lasts.append(curl)
                    if len(cur) > out_count + E - 1:    # more beats than the vector needs
                        res.pending = cur
                    cur, curl = [], []
            if len(res.outputs) >= len(X) and state["sent"] or state.get("hung"):
                break
        else:
            res.timed_out = True
        if cur:
            res.pending = cur

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb, background=True)
    sim.add_testbench(sink)
    sim.run()
    return res, resp


def _top_case():
    net = random_net(KILL_SEED)
    cfg = config_for(net, 2, stream_elems=2)
    prog = compile_program(net, cfg)
    X = random_inputs(net, 2, KILL_SEED)
    return net, cfg, load_image(prog, RegisterMap(cfg)), X


@pytest.mark.parametrize("fault", [None, "drop_tlast", "axis_unstable", "axil_double_resp",
                                   "skid_drop", "extra_beat"])
def test_top_level_faults_are_killed(fault):
    """Through the AXI top: the un-faulted accelerator is exact; a dropped tlast, an
    unstable m_axis beat, a doubled AXI4-Lite write response, an input beat lost in
    the s_axis skid register and an extra beat after each vector are each caught."""
    net, cfg, writes, X = _top_case()
    golden = execute(net, X)
    res, resp = run_top(cfg, writes, X, golden.shape[1], fault=fault,
                        limit=3_000 if fault == "axil_double_resp" else 40_000)
    ok = exact_top(res, golden, cfg.stream_elems) and resp == [OKAY] * len(writes)
    assert ok == (fault is None), fault


def exact_top(res, golden, E) -> bool:
    if res.timed_out or res.pending or len(res.outputs) != len(golden):
        return False
    nb = -(-golden.shape[1] // E)
    if not all(ls == [0] * (nb - 1) + [1] for ls in res.lasts):
        return False
    return np.array_equal(np.array(res.outputs, dtype=np.int64), golden)


# ------------------------------------------------------------------------ slow sweep
SWEEP = [(lanes, seed) for lanes in (1, 4, 16) for seed in range(12)]


@pytest.mark.slow
def test_mutation_sweep_kill_rate():
    """Every engine fault on random networks at L = 1, 4, 16 (36 runs each): the
    un-faulted engine is exact on all; each fault is killed on every network whose
    vectors make it observable (round_off_by_one, sat_bound: the software twin
    differs from the golden; wrong_stride: a step with K > 1; the others: always).
    Prints the kill rate per fault."""
    kills = {f: 0 for f in ENGINE_FAULTS}
    reach = {f: 0 for f in ENGINE_FAULTS}
    missed = []
    for lanes, seed in SWEEP:
        net = random_net(seed)
        cfg = config_for(net, lanes)
        prog = compile_program(net, cfg)
        X = random_inputs(net, 3, seed)
        golden = execute(net, X)
        assert exact(run_engine(cfg, prog, X, seed=seed), golden), (lanes, seed)
        r = reachability(net, X, cfg.inter_bits)
        observable = {"round_off_by_one": r["round_off_by_one"], "sat_bound": r["sat_bound"],
                      "wrong_stride": r["k_gt_1"] > 0}
        for f in ENGINE_FAULTS:
            killed = not exact(run_engine(cfg, prog, X, fault=f, seed=seed), golden)
            kills[f] += killed
            o = observable.get(f, True)
            reach[f] += o
            if o and not killed:
                missed.append((f, lanes, seed))
    n = len(SWEEP)
    print("\nkill rate per fault over", n, "networks:",
          {f: f"{kills[f]}/{n} (observable on {reach[f]})" for f in ENGINE_FAULTS})
    assert not missed, missed
