"""EngineArray (``AccelConfig.engines > 1``): the vectors take turns over engines holding
one network; the outputs leave in the input's order, bit-exact; a vector that ends in an
error gives up its turn; the counters are the engines' sums."""

from __future__ import annotations

import numpy as np
import pytest

from ttforge.errors import ConfigError
from ttforge.hw.config import AccelConfig
from ttforge.hw.engine import ENGINE_TIMING, ERROR_CODES
from ttforge.hw.program import compile_program
from ttforge.ir.executor import execute, execute_traced

from tests.support.engine import (config_for, load_program, macs_per_vector, pulse, random_inputs,
                                  random_net, run_testbenches, send_vector, simulate,
                                  stream_script)


def _case(lanes, seed, engines, vectors, **over):
    net = random_net(seed)
    cfg = config_for(net, lanes, engines=engines, **over)
    return net, cfg, compile_program(net, cfg), random_inputs(net, vectors, seed)


@pytest.mark.parametrize("lanes,seed,engines", [(1, 21, 2), (4, 37, 3), (16, 31, 2)])
def test_array_bit_exact_in_order_with_gaps_and_backpressure(lanes, seed, engines):
    net, cfg, prog, X = _case(lanes, seed, engines, 2 * engines + 1)
    golden, traces = execute_traced(net, X)
    run = simulate(cfg, stream_script(prog, X, gap=0.2), expect_vectors=len(X), seed=seed,
                   stall=0.2)
    assert np.array_equal(np.array(run.outputs, dtype=np.int64), golden)
    assert all(ls == [0] * (len(ls) - 1) + [1] for ls in run.lasts)
    assert run.status["error"] == 0 and run.status["busy"] == 0
    # the counters: the engines' sums
    assert run.counters["vectors"] == len(X)
    assert run.counters["busy_lane_cycles"] == macs_per_vector(net) * len(X)
    assert run.counters["sat_events"] == sum(t.saturations for t in traces)
    assert run.done_pulses == len(X)
    # every engine-cycle is a model cycle or a stall, also while an idle engine's output
    # waits in its FIFO for the port or for its turn
    from ttforge.hw.cycles import program_cycles
    model = program_cycles(prog.descriptors, cfg, prog.globals, ENGINE_TIMING).total
    c = run.counters
    assert c["cycles"] - c["in_stall"] - c["out_stall"] == model * len(X)


def test_a_fault_in_one_engine_breaks_its_turns_only():
    # the sibling: the last engine flips a requantization bit; its vectors (1, 3, 5 of
    # two engines) differ from the executor's and the others do not
    net, cfg, prog, X = _case(4, 37, 2, 6)
    golden = execute(net, X)
    run = simulate(cfg, stream_script(prog, X), expect_vectors=len(X), fault="requant_lsb")
    got = np.array(run.outputs, dtype=np.int64)
    same = [bool(np.array_equal(got[k], golden[k])) for k in range(len(X))]
    assert same == [True, False] * 3


def _finish_cycles(cfg, prog, X):
    """The cycles at which each vector's last output element is accepted (the stream in
    and out never pauses)."""
    from ttforge.hw.engine.array import EngineArray

    dut = EngineArray(cfg)
    seen = {"loaded": None, "done": []}

    async def producer(ctx):
        await load_program(ctx, dut, prog)
        ctx.set(dut.control.enable, 1)
        seen["loaded"] = True
        for x in X:
            await send_vector(ctx, dut, x, None, 0.0)

    async def consumer(ctx):
        ctx.set(dut.out.ready, 1)
        t = 0
        while len(seen["done"]) < len(X):
            _, _, valid, last = await ctx.tick().sample(dut.out.valid, dut.out.payload.last)
            t += 1
            assert t < 200_000
            if valid and last:
                seen["done"].append(t)

    run_testbenches(dut, producer, consumer)
    return seen["done"]


def test_engines_run_side_by_side_at_the_models_rate():
    """Back-to-back vectors on E engines: in the steady state E vectors leave every
    ``total`` cycles of the single-engine model (``ProgramCycles.array_vector_cycles``
    per vector), and the first E leave one input's time apart."""
    from ttforge.hw.cycles import program_cycles

    E = 3
    net, cfg, prog, X = _case(4, 37, E, 3 * E)
    model = program_cycles(prog.descriptors, cfg, prog.globals, ENGINE_TIMING)
    assert model.engines == E
    done = _finish_cycles(cfg, prog, X)
    period = [done[k + E] - done[k] for k in range(len(X) - E)]
    assert period == [model.total] * len(period)
    assert model.array_vector_cycles == model.total / E
    n_in = prog.globals["IN_COUNT"]
    assert [done[k + 1] - done[k] for k in range(E - 1)] == [n_in] * (E - 1)


def test_a_stream_error_gives_up_its_turn():
    """Vector 1 (engine 1 of 2) ends early (TLAST_EARLY): no output for it, the error is
    engine 1's; after CLEAR_ERROR the next vectors come out in order."""
    net, cfg, prog, X = _case(4, 37, 2, 4)
    golden = execute(net, X)
    seen = {}

    async def script(ctx, dut, rng):
        await load_program(ctx, dut, prog)
        ctx.set(dut.control.enable, 1)
        await send_vector(ctx, dut, X[0], rng, 0.0)
        await send_vector(ctx, dut, list(X[1][:2]), rng, 0.0, lasts=[0, 1])
        await ctx.tick().repeat(3)
        seen["code"] = ctx.get(dut.status.error_code)
        seen["error"] = ctx.get(dut.status.error)
        await pulse(ctx, dut.control.clear_error)
        for x in X[2:]:
            await send_vector(ctx, dut, x, rng, 0.0)

    run = simulate(cfg, script, expect_vectors=3, stall=0.3, seed=4)
    assert seen == {"code": ERROR_CODES["TLAST_EARLY"], "error": 1}
    assert np.array_equal(np.array(run.outputs), golden[[0, 2, 3]])
    assert run.counters["vectors"] == 3


def test_soft_reset_restarts_the_turns():
    net, cfg, prog, X = _case(4, 37, 2, 3)
    golden = execute(net, X)

    async def script(ctx, dut, rng):
        await load_program(ctx, dut, prog)
        ctx.set(dut.control.enable, 1)
        await send_vector(ctx, dut, X[0], rng, 0.0)      # engine 0 starts computing
        await ctx.tick().repeat(20)
        await pulse(ctx, dut.control.soft_reset)        # ... and is aborted
        for x in X[1:]:
            await send_vector(ctx, dut, x, rng, 0.0)

    run = simulate(cfg, script, expect_vectors=2)
    assert np.array_equal(np.array(run.outputs), golden[1:])


@pytest.mark.parametrize("over,field", [({"engines": 0}, "engines"), ({"engines": 9}, "engines"),
                                        ({"engines": 2, "throughput": 1}, "throughput"),
                                        ({"read_registers": 3}, "read_registers"),
                                        ({"read_registers": 1, "buf_ports": 1}, "buf_ports")])
def test_engines_config_is_checked(over, field):
    with pytest.raises(ConfigError, match=field):
        AccelConfig(**over)


def _counter_mismatches(clear_at, engines_summed, monkeypatch, hold=()):
    """Simulate 4 vectors on 3 engines (the output port not ready in the cycles ``hold``);
    on every cycle compare the array's counters with the sum of the first
    ``engines_summed`` engines' counters two cycles before, plus the array's own parts:
    the number of cycles that differ, the cycles compared, the counters seen above 0 and
    the cycles an idle engine's output waited in its FIFO."""
    from ttforge.hw.engine.array import EngineArray
    from ttforge.hw.engine.signatures import COUNTER_NAMES

    net, cfg, prog, X = _case(4, 37, 3, 4)
    made = []
    real = EngineArray._make_engines
    monkeypatch.setattr(EngineArray, "_make_engines", lambda self: made.extend(real(self)) or made)
    dut = EngineArray(cfg)
    cb = cfg.counter_bits
    seen = {"bad": 0, "checked": 0, "moved": set(), "waits": 0}

    async def producer(ctx):
        await load_program(ctx, dut, prog)
        ctx.set(dut.control.enable, 1)
        for x in X:
            await send_vector(ctx, dut, x, None, 0.0)

    async def checker(ctx):
        ctx.set(dut.out.ready, 1)
        history, t, left = [], 0, len(X)
        # the array's own parts, counted as an engine would: VECTORS from the array's
        # done_pulse (the port took a vector's last element), and the cycles an idle
        # engine's output waits in its FIFO (out_wait, already a cycle late) in CYCLES
        # and OUT_STALL; an engine's counter clears two cycles after the port
        waits = vecs = 0
        while left:
            ctx.set(dut.control.clear_counters, int(t == clear_at))
            ctx.set(dut.out.ready, t not in hold)
            got = {n: ctx.get(getattr(dut.counters, n)) for n in COUNTER_NAMES}
            if len(history) >= 2:
                seen["bad"] += got != history[-2]
                seen["checked"] += 1
                seen["moved"] |= {n for n, v in got.items() if v}
            wait = bin(ctx.get(dut.debug["out_wait"])).count("1")
            if clear_at is not None and t == clear_at + 2:   # the engines' clear
                waits, vecs, wait = 0, 0, 0
            waits += wait
            seen["waits"] += wait
            own = {"cycles": waits, "out_stall": waits, "vectors": vecs}
            history.append({n: (sum(ctx.get(getattr(e.counters, n)) for e in made[:engines_summed])
                                * (n != "vectors") + own.get(n, 0)) % (1 << cb)
                            for n in COUNTER_NAMES})
            vecs += ctx.get(dut.status.done_pulse)
            _, _, valid, ready, last = await ctx.tick().sample(dut.out.valid, dut.out.ready,
                                                               dut.out.payload.last)
            left -= bool(valid and ready and last)
            t += 1
            assert t < 100_000

    run_testbenches(dut, producer, checker)
    return seen


@pytest.mark.parametrize("clear_at,hold", [(None, ()), (150, ()), (150, range(100, 900))])
def test_counters_are_the_engines_sums_every_cycle(clear_at, hold, monkeypatch):
    """The array keeps its counters from the engines' increments: on every cycle each
    reads the sum of the engines' counters two cycles before (VECTORS and the outputs'
    waits in the FIFOs the array's own), also across a ``clear_counters`` in the middle
    of a vector and with the output held."""
    seen = _counter_mismatches(clear_at, 3, monkeypatch, hold)
    assert (seen["waits"] > 0) == bool(hold)
    assert seen["bad"] == 0 and seen["checked"] > 500
    assert {"cycles", "busy_lane_cycles", "vectors"} <= seen["moved"]


def test_counter_comparison_sees_a_missing_engine(monkeypatch):
    # the sibling: the same comparison against two of the three engines must differ
    assert _counter_mismatches(150, 2, monkeypatch)["bad"] > 100


def _held_output_run(engines, hold):
    """TTAccel (engine_network(37), lanes=4, stream_elems=2, ``engines``): one vector with
    m_axis_tready low for ``hold`` cycles (:func:`tests.support.held_output.held_output_run`)."""
    from tests.support.held_output import held_output_run

    return held_output_run(engines, 2, hold)


@pytest.mark.parametrize("engines", [2, 1])
def test_array_status_and_counters_wait_for_the_held_output(engines):
    """engines=2, the one vector's output held at m_axis (tready low 2,500 cycles): the
    engine went idle with its output in the FIFO beside it, and STATUS read DONE, VECTORS
    1 and irq rose with no output beat taken, OUT_STALL stayed 0 and CYCLES froze. Now
    the array's BUSY/DONE/VECTORS/irq follow its ports (docs/hardware.md: BUSY until the
    last output element is accepted), the wait counts as CYCLES and OUT_STALL, and
    ``CYCLES - IN_STALL - OUT_STALL`` is the stall-free run's (the cycle model's). One
    engine (the control) does the same."""
    BUSY, DONE = 0b01, 0b10
    free, golden, model, _, free_end = _held_output_run(engines, 0)
    assert np.array_equal(np.array(free)[:, :golden.shape[1]], golden)
    assert free_end["OUT_STALL_LO"] == 0
    assert free_end["CYCLES_LO"] - free_end["IN_STALL_LO"] == model

    got, golden, model, held, end = _held_output_run(engines, 2500)
    assert np.array_equal(np.array(got)[:, :golden.shape[1]], golden)
    waiting = [s for s in held if s["tvalid"]]
    assert len(waiting) > 30                    # the output was offered most of the hold
    assert all(s["STATUS"] & (BUSY | DONE) == BUSY for s in held)
    assert all(s["VECTORS_LO"] == 0 and s["irq"] == 0 for s in held)
    # OUT_STALL grows by a cycle per cycle while the output waits at the port
    stalls = [s["OUT_STALL_LO"] for s in waiting]
    assert stalls[-1] - stalls[0] >= 50 * (len(stalls) - 1) - 5 and stalls[-1] > 1500
    assert end["STATUS"] & (BUSY | DONE) == DONE and end["irq"] == 1 and end["VECTORS_LO"] == 1
    assert end["CYCLES_LO"] - end["IN_STALL_LO"] - end["OUT_STALL_LO"] == model


def test_small_outputs_waiting_for_the_port_or_their_turn_are_counted():
    """A 3-element output fits the FIFO beside its engine: with the port stalling at
    random, idle engines' outputs wait for the port or their turn. Every one of those
    cycles is CYCLES and OUT_STALL, so the identity with the cycle model stays exact."""
    from ttforge.hw.cycles import program_cycles
    from ttforge.ir.random import engine_network
    from ttforge.ir.random import random_inputs as ir_inputs

    net = engine_network(37)
    cfg = config_for(net, 4, engines=2)
    prog = compile_program(net, cfg)
    X = ir_inputs(net, 6, np.random.default_rng(5))
    run = simulate(cfg, stream_script(prog, X), expect_vectors=len(X), seed=3, stall=0.7)
    assert np.array_equal(np.array(run.outputs, dtype=np.int64), execute(net, X))
    model = program_cycles(prog.descriptors, cfg, prog.globals, ENGINE_TIMING).total
    c = run.counters
    assert c["out_stall"] > 0 and c["vectors"] == len(X) and run.done_pulses == len(X)
    assert c["cycles"] - c["in_stall"] - c["out_stall"] == model * len(X)
    assert run.status["busy"] == 0
