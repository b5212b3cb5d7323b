import json
import math

import pytest
import torch

from ttforge.errors import ShapeError
from ttforge.ir.random import random_shapes
from ttforge.ir.schedule import ContractionSchedule, schedule_orders
from ttforge.model.layers import TTLinear
from ttforge.model.tt import TTShape, tt_to_dense

from tests.support.nets import random_cores

SHAPE = TTShape((2, 3, 2, 2), (3, 2, 2, 3), (1, 3, 4, 2, 1))


def run_steps(x, cores, schedule, observe=None):
    """Execute the schedule's plain data literally with einsum (independent of apply_schedule)."""
    B = x.shape[0]
    for step in schedule.steps:
        C = cores[step.core].permute(*step.core_axes).reshape(step.P, step.K)
        x3 = x.reshape(B, step.A, step.K, step.Q)
        x = torch.einsum("pk,bakq->bapq", C, x3)
        if observe is not None:
            observe.append(x.numel())
    return x.reshape(B, -1)


def test_orders_enumerated():
    # d * 2^(d-1) sequences of L/R from each start, minus the impossible ones
    assert len(schedule_orders(1)) == 1
    assert len(schedule_orders(3)) == 4
    assert len(schedule_orders(4)) == 8
    for order in schedule_orders(5):
        assert sorted(order) == list(range(5))


@pytest.mark.parametrize("order", schedule_orders(4))
def test_every_order_computes_the_matrix(order):
    cores = random_cores(SHAPE.out_modes, SHAPE.in_modes, SHAPE.ranks, seed=5)
    sched = ContractionSchedule(SHAPE, order)
    x = torch.randn(5, SHAPE.in_size, dtype=torch.float64)
    y = run_steps(x, cores, sched)
    assert torch.allclose(y, x @ tt_to_dense(cores).T, atol=1e-12, rtol=0)
    assert sched.steps[-1].out_layout == tuple(f"m{k}" for k in range(4))


def test_layouts_chain_and_blocks_are_contiguous():
    sched = ContractionSchedule(SHAPE, (2, 1, 3, 0))
    layout = tuple(f"n{k}" for k in range(4))
    for step in sched.steps:
        assert step.in_layout == layout
        assert step.in_layout[step.start:step.stop] == step.contract
        layout = step.out_layout
        assert step.out_layout == step.in_layout[:step.start] + step.produce + step.in_layout[step.stop:]


def test_cost_matches_executed_sizes():
    sched = ContractionSchedule(SHAPE, (1, 2, 0, 3))
    cores = random_cores(SHAPE.out_modes, SHAPE.in_modes, SHAPE.ranks)
    sizes = []
    x = torch.randn(3, SHAPE.in_size, dtype=torch.float64)
    run_steps(x, cores, sched, observe=sizes)
    cost = sched.cost(batch=3)
    assert list(cost.step_elements) == sizes
    assert cost.peak_elements == max(sizes + [x.numel()])
    # MACs of a step = (elements in) * (produced size) / ... computed independently:
    expected = 0
    elements = SHAPE.in_size
    for step in sched.steps:
        expected += elements * step.P  # each input element meets every produced entry once
        elements = elements // step.K * step.P
    assert cost.macs == 3 * expected


def test_optimal_is_cheapest_of_all():
    mnist = TTShape((4, 8, 4, 4), (7, 4, 7, 4), 16)
    best = ContractionSchedule.optimal(mnist, batch=256)
    costs = [ContractionSchedule(mnist, o).cost(256).macs for o in schedule_orders(4)]
    assert best.cost(256).macs == min(costs)
    assert best.cost(256).macs < max(costs)
    peak = ContractionSchedule.optimal(mnist, objective="peak")
    assert peak.cost().peak_elements == min(
        ContractionSchedule(mnist, o).cost().peak_elements for o in schedule_orders(4))


def test_lanes_break_ties_among_equal_mac_schedules():
    # 1024x1024 rank 8: (0,1,2,3) and (3,2,1,0) need the same MACs and peak; on 16 lanes
    # the first leaves lanes idle in its last two steps (Q = 4 and 1 < 16), the second not
    shape = TTShape((4, 8, 8, 4), (4, 8, 8, 4), 8)
    plain = ContractionSchedule.optimal(shape)
    fast = ContractionSchedule.optimal(shape, lanes=16)
    assert plain.cost().macs == fast.cost().macs
    assert plain.cost().peak_elements == fast.cost().peak_elements
    assert fast.cost(lanes=16).lane_cycles < plain.cost(lanes=16).lane_cycles
    assert fast.cost(lanes=16).lane_cycles == fast.cost().macs // 16   # every lane busy
    for L in (1, 2, 4, 8, 16, 32, 64):
        best = ContractionSchedule.optimal(shape, lanes=L)
        costs = [ContractionSchedule(shape, o).cost(lanes=L) for o in schedule_orders(4)]
        fewest = min(c.macs for c in costs)
        assert best.cost().macs == fewest
        assert best.cost(lanes=L).lane_cycles == min(c.lane_cycles for c in costs if c.macs == fewest)
    # one lane: cycles are MACs, so the lane count changes nothing
    assert ContractionSchedule.optimal(shape, lanes=1) == plain
    assert plain.cost(3, lanes=1).lane_cycles == plain.cost(3).macs
    with pytest.raises(ShapeError, match="lanes"):
        ContractionSchedule.optimal(shape, lanes=0)


def test_lane_cycles_of_one_step():
    # dense 6 x 10 (A = Q = 1, P = 6, K = 10): lanes over p in blocks; whole words only if
    # the lanes divide P; else a block of v lanes written one per cycle takes max(K, v)
    step = ContractionSchedule.optimal(TTShape((6,), (10,), (1, 1))).steps[0]
    assert (step.A, step.K, step.Q, step.P) == (1, 10, 1, 6)
    assert step.lane_cycles(1) == 60
    assert step.lane_cycles(2) == 30            # 3 blocks, whole words
    assert step.lane_cycles(4) == 20            # 2 blocks (4 + 2 lanes) of 10 cycles
    assert step.lane_cycles(16) == 10
    narrow = ContractionSchedule.optimal(TTShape((16,), (2,), (1, 1))).steps[0]  # K = 2
    assert narrow.lane_cycles(8) == 2 * 2      # P = 16 = 2 words of 8: no writer limit
    assert narrow.lane_cycles(32) == 16         # 16 lanes written one per cycle


def test_mnist_layer_cost_figure():
    # the brief's figure: at rank 16 the MNIST layer of arXiv:2104.03420 needs ~4.6x dense MACs
    mnist = TTShape((4, 8, 4, 4), (7, 4, 7, 4), 16)
    ratio = ContractionSchedule.right_to_left(mnist).cost().macs / (784 * 512)
    assert round(ratio, 2) == 4.55


def test_round_trip_through_json():
    sched = ContractionSchedule(SHAPE, (2, 3, 1, 0))
    data = json.loads(json.dumps(sched.to_dict()))
    again = ContractionSchedule.from_dict(data)
    assert again == sched and again.steps == sched.steps


def test_tampered_steps_are_rejected():
    data = ContractionSchedule(SHAPE, (2, 3, 1, 0)).to_dict()
    data["steps"][1]["K"] += 1
    with pytest.raises(ShapeError, match="do not match"):
        ContractionSchedule.from_dict(data)
    del data["order"]
    with pytest.raises(ShapeError, match="'order'"):
        ContractionSchedule.from_dict(data)


@pytest.mark.parametrize("order", [(0, 2, 1, 3), (0, 1, 2), (0, 0, 1, 2), (1, 2, 3, 4)])
def test_bad_orders_rejected(order):
    with pytest.raises(ShapeError):
        ContractionSchedule(SHAPE, order)


def test_single_core():
    shape = TTShape((6,), (5,), (1, 1))
    sched = ContractionSchedule.optimal(shape)
    assert sched.order == (0,) and sched.cost().macs == 30
    assert math.prod(shape.core_shapes[0]) == 30


@pytest.mark.parametrize("lanes", [4, 16, 64])
def test_the_cycles_objective_picks_the_fewest_cycles_on_the_lanes(lanes):
    """objective='cycles' chooses, among every order, one with the fewest cycles on
    ``lanes`` lanes (then MACs, then peak); on some shapes that is not the fewest-MAC
    order, and there it is strictly faster at the price of a few more MACs."""
    differ = 0
    for shape in random_shapes(60):
        costs = {o: ContractionSchedule(shape, o).cost(lanes=lanes) for o in schedule_orders(shape.d)}
        want = min((c.lane_cycles, c.macs, c.peak_elements) for c in costs.values())
        fast = ContractionSchedule.optimal(shape, objective="cycles", lanes=lanes)
        fc = costs[fast.order]
        assert (fc.lane_cycles, fc.macs, fc.peak_elements) == want
        few = ContractionSchedule.optimal(shape, lanes=lanes)
        if few.order != fast.order:
            differ += 1
            assert fc.lane_cycles < costs[few.order].lane_cycles
            assert fc.macs >= costs[few.order].macs
    assert differ >= 2     # the objective matters on these shapes (2-6 of 60 at these lanes)


def test_the_cycles_objective_needs_lanes():
    shape = TTShape((4, 2, 8), (3, 5, 7), 4)
    with pytest.raises(ShapeError, match="objective='cycles' needs lanes"):
        ContractionSchedule.optimal(shape, objective="cycles")
    with pytest.raises(ShapeError, match="objective='fast' must be one of 'macs', 'peak', 'cycles'"):
        ContractionSchedule.optimal(shape, objective="fast")


def test_ttlinear_chooses_its_order_for_the_lanes():
    # 64 x 105, rank 4: on 16 lanes the fewest-MAC order leaves most lanes idle
    shape = TTShape((4, 2, 8), (3, 5, 7), 4)
    few = ContractionSchedule.optimal(shape, lanes=16)
    fast = ContractionSchedule.optimal(shape, objective="cycles", lanes=16)
    assert fast.cost(lanes=16).lane_cycles < few.cost(lanes=16).lane_cycles
    layer = TTLinear(105, 64, ranks=4, in_modes=(3, 5, 7), out_modes=(4, 2, 8), objective="cycles", lanes=16)
    assert layer.schedule.order == fast.order != few.order
    # a truncation re-chooses the order with the same objective and lanes
    cores = [g.detach()[..., :2] if k == 0 else (g.detach()[:2] if k == 1 else g.detach())
             for k, g in enumerate(layer.cores)]
    layer.set_cores(cores)
    assert layer.schedule == ContractionSchedule.optimal(layer.tt_shape, objective="cycles", lanes=16)
    assert TTLinear(105, 64, ranks=4, in_modes=(3, 5, 7), out_modes=(4, 2, 8)).schedule.order == \
        ContractionSchedule.optimal(shape).order
    with pytest.raises(ShapeError, match="needs lanes"):
        TTLinear(105, 64, ranks=4, in_modes=(3, 5, 7), out_modes=(4, 2, 8), objective="cycles")
