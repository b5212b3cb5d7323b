import json
import math

import pytest
import torch

from ttforge.errors import ShapeError
from ttforge.model.schedule import ContractionSchedule, schedule_orders
from ttforge.model.tt import TTShape, tt_to_dense

from .test_tt import random_cores

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
