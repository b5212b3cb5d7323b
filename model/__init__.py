"""Tensor-train math, layers, schedules and training (``ttforge.model``)."""

from ttforge.model.layers import TTLinear, apply_schedule, default_num_cores
from ttforge.model.schedule import (
    ContractionSchedule,
    ContractionStep,
    ScheduleCost,
    schedule_orders,
)
from ttforge.model.tt import (
    TTShape,
    factorize,
    max_ranks,
    resolve_ranks,
    tt_rel_error,
    tt_round,
    tt_svd,
    tt_to_dense,
)

__all__ = [
    "TTLinear",
    "apply_schedule",
    "default_num_cores",
    "ContractionSchedule",
    "ContractionStep",
    "ScheduleCost",
    "schedule_orders",
    "TTShape",
    "factorize",
    "max_ranks",
    "resolve_ranks",
    "tt_rel_error",
    "tt_round",
    "tt_svd",
    "tt_to_dense",
]
