"""The contraction order chosen for the lanes (``objective="cycles"``) is what the engine
runs faster: on a layer where it is not the fewest-MAC order, both orders compiled and
simulated equal the golden executor, and the engine's own ``CYCLES`` counter (equal to the
exact cycle model) is lower for the order the cost model picked."""

from __future__ import annotations

import numpy as np

from ttforge.hw.cycles import estimate
from ttforge.hw.program import compile_program
from ttforge.ir.executor import IntNetwork, execute
from ttforge.ir.random import random_layer
from ttforge.ir.schedule import ContractionSchedule
from ttforge.ir.tt import TTShape

from tests.support.engine import config_for, random_inputs, simulate, stream_script

LANES = 16
# 64 x 105, rank 4: the fewest-MAC order leaves most of 16 lanes idle
SHAPE = TTShape((4, 2, 8), (3, 5, 7), 4)


def _network(order) -> IntNetwork:
    rng = np.random.default_rng(5)
    return IntNetwork((random_layer(rng, SHAPE.in_modes, SHAPE.out_modes, SHAPE.ranks, order, w_bits=8,
                                    in_bits=8, in_exp=-7, inter_bits=16, out_bits=8, bias=True,
                                    relu=False, in_features=100, out_features=60, bias_bits=11,
                                    acc_bits=44),))


def _run(order):
    net = _network(order)
    cfg = config_for(net, LANES)
    prog = compile_program(net, cfg)
    X = random_inputs(net, 1, 0)
    run = simulate(cfg, stream_script(prog, X), expect_vectors=1)
    assert run.status["error"] == 0
    got, golden = np.array(run.outputs, dtype=np.int64), execute(net, X)
    assert np.array_equal(got, golden)
    flipped = golden.copy()
    flipped.flat[0] ^= 1                      # the sibling: one bit of the golden output
    assert not np.array_equal(got, flipped)
    assert run.counters["cycles"] == estimate(prog).cycles
    return run.counters["cycles"]


def test_the_order_chosen_for_the_lanes_runs_in_fewer_engine_cycles():
    few = ContractionSchedule.optimal(SHAPE, lanes=LANES)
    fast = ContractionSchedule.optimal(SHAPE, objective="cycles", lanes=LANES)
    assert few.order != fast.order and fast.cost().macs > few.cost().macs
    slow_cycles, fast_cycles = _run(few.order), _run(fast.order)
    assert fast_cycles < slow_cycles
    # the MAC part of the difference is the schedules' lane cycles (the rest is overhead
    # both share up to the number of steps' writes)
    gain = few.cost(lanes=LANES).lane_cycles - fast.cost(lanes=LANES).lane_cycles
    assert slow_cycles - fast_cycles >= gain // 2
