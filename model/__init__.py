"""Tensor-train layers, decomposition and training in PyTorch (``ttforge.model``).

Shapes and contraction schedules belong to the torch-free contract (:mod:`ttforge.ir`)
and are re-exported here for convenience.
"""

from ttforge.model.layers import TTLinear, apply_schedule, default_num_cores
from ttforge.model.rank_adaptive import RankAdaptivePrior, tt_balance
from ttforge.ir import (
    ContractionSchedule,
    ContractionStep,
    ScheduleCost,
    TTShape,
    factorize,
    max_ranks,
    resolve_ranks,
    schedule_orders,
)
from ttforge.model.tt import (
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
    "RankAdaptivePrior",
    "tt_balance",
]

# datasets, networks, checkpoints and training
from ttforge.model.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from ttforge.model.data import Dataset, load_dataset, load_digits_split, load_mnist_idx, read_idx  # noqa: E402
from ttforge.model.network import LayerSpec, ModelConfig, build_model, describe  # noqa: E402
# (the function ``train`` stays in ``ttforge.model.train``: exporting it here would shadow the module)
from ttforge.model.decomposition import decompose  # noqa: E402
from ttforge.model.train import TrainConfig, TrainResult, evaluate, load_trained  # noqa: E402

__all__ += [
    "load_checkpoint",
    "save_checkpoint",
    "Dataset",
    "load_dataset",
    "load_digits_split",
    "load_mnist_idx",
    "read_idx",
    "LayerSpec",
    "ModelConfig",
    "build_model",
    "describe",
    "TrainConfig",
    "TrainResult",
    "decompose",
    "evaluate",
    "load_trained",
]
