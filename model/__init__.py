"""Tensor-train layers, decomposition and training in PyTorch (``ttforge.model``).

Shapes and contraction schedules belong to the torch-free contract (:mod:`ttforge.ir`)
and are re-exported here for convenience.

The names below are imported on first use (:func:`ttforge._lazy.lazy_attributes`):
importing the package imports no PyTorch, so the train commands' options
(:mod:`ttforge.model.cli`) are declared, and shown by ``--help``, without it.
"""

from ttforge._lazy import lazy_attributes

# name -> the module that defines it
_EXPORTS = {
    **dict.fromkeys(["TTLinear", "apply_schedule", "default_num_cores"], "ttforge.model.layers"),
    **dict.fromkeys(["ContractionSchedule", "ContractionStep", "ScheduleCost", "schedule_orders", "TTShape",
                     "factorize", "max_ranks", "resolve_ranks"], "ttforge.ir"),
    **dict.fromkeys(["tt_rel_error", "tt_round", "tt_svd", "tt_to_dense"], "ttforge.model.tt"),
    **dict.fromkeys(["RankAdaptivePrior", "tt_balance"], "ttforge.model.rank_adaptive"),
    # datasets, networks, checkpoints and training
    **dict.fromkeys(["load_checkpoint", "save_checkpoint"], "ttforge.model.checkpoint"),
    **dict.fromkeys(["Dataset", "load_dataset", "load_digits_split", "load_mnist_idx", "read_idx"],
                    "ttforge.model.data"),
    **dict.fromkeys(["LayerSpec", "ModelConfig", "build_model", "describe"], "ttforge.model.network"),
    # (the function ``train`` stays in ``ttforge.model.train``: exporting it here would shadow the module)
    **dict.fromkeys(["TrainConfig", "TrainResult", "evaluate", "load_trained"], "ttforge.model.train"),
    "decompose": "ttforge.model.decomposition",
}

__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)
