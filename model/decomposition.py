"""``decompose``: the dense layers of a trained checkpoint turned into TT layers by TT-SVD."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

from torch import nn

from ttforge.atomic import check_output_file
from ttforge.errors import ConfigError, DataError, ShapeError
from ttforge.model.checkpoint import save_checkpoint
from ttforge.ir.artifact import source_name
from ttforge.model.layers import TTLinear
from ttforge.model.network import ModelConfig
from ttforge.model.progress import _n_params
from ttforge.model.train import _check_rebuild, evaluate, load_trained
from ttforge.model.train_config import _KIND, _is_int, _is_num
from ttforge.model.tt import check_finite_layers

__all__ = ["decompose"]


def decompose(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    rel_error: float | None = None,
    max_rank: int | None = None,
    skip_last: bool = False,
    data: str | None = None,
) -> dict[str, Any]:
    """Turn every ``nn.Linear`` of a trained checkpoint into a ``TTLinear`` by TT-SVD.

    Give exactly one of ``rel_error`` (each layer's TT weight is within that relative
    Frobenius error of the dense one, guaranteed) and ``max_rank`` (every bond capped;
    the error is whatever results, and reported). ``skip_last`` keeps the classifier
    dense. Test accuracy is measured before and after on the checkpoint's data (or
    ``data``). Writes a checkpoint at ``out`` loadable by :func:`load_trained`; returns
    the per-layer report.
    """
    if (rel_error is None) == (max_rank is None):
        raise ConfigError("give exactly one of --rel-error and --max-rank")
    if rel_error is not None and not (_is_num(rel_error) and 0 < rel_error < 1):
        raise ConfigError(f"--rel-error={rel_error!r} must be between 0 and 1 (e.g. 0.1)")
    if max_rank is not None and not (_is_int(max_rank) and max_rank >= 1):
        raise ConfigError(f"--max-rank={max_rank!r} must be an integer >= 1")
    out = check_output_file(out, "-o", example="tt.pt")
    src = load_trained(checkpoint)
    cfg, model = src.config, src.model
    ds = src.dataset(data)   # the checkpoint's data is checked against the digest it records
    if ds.n_features != src.model_config.in_features:
        raise DataError(f"data {ds.name} has {ds.n_features} features but the checkpoint's model takes "
                        f"{src.model_config.in_features}; give the data it was trained on (--data)")
    _, acc_before = evaluate(model, ds.x_test, ds.y_test)
    linear_idx = [i for i, m in enumerate(model) if isinstance(m, nn.Linear)]
    last = max(i for i, m in enumerate(model) if isinstance(m, (nn.Linear, TTLinear)))
    if skip_last:
        linear_idx = [i for i in linear_idx if i != last]
    if not linear_idx:
        raise ConfigError(f"{checkpoint} has no nn.Linear layer to decompose"
                          + (" (besides the last, kept by --skip-last)" if skip_last else ""))
    # the layers kept as they are (those decomposed get TT-SVD's own message): a NaN passed
    # through into a checkpoint every other command refuses
    check_finite_layers(((i, m) for i, m in enumerate(model) if i not in linear_idx),
                        "decompose a checkpoint whose training did not diverge")
    new = nn.Sequential(*list(model))
    layers = []
    for i in linear_idx:
        lin = model[i]
        try:
            tt = TTLinear.from_linear(lin, max_rank=max_rank, rel_error=rel_error)
        except DataError as e:  # name the layer: the checkpoint holds several
            raise DataError(f"{checkpoint}: layer {i} (nn.Linear {lin.in_features} -> "
                            f"{lin.out_features}): {e}") from None
        err = float(tt.decomposition_error)
        if rel_error is not None and err > rel_error:  # tt_svd guarantees this; never pass it on
            raise ShapeError(f"layer {i}: TT-SVD reached relative error {err:.3g} > --rel-error {rel_error} "
                             f"(float rounding); give a --rel-error of at least {10 * err:.1g}")
        new[i] = tt
        layers.append({
            "name": str(i),
            "in_features": lin.in_features,
            "out_features": lin.out_features,
            "in_modes": list(tt.in_modes),
            "out_modes": list(tt.out_modes),
            "ranks": list(tt.ranks),
            "rel_error": err,
            "dense_params": lin.in_features * lin.out_features,
            "tt_params": tt.n_params,
            "compression": tt.compression,
        })
    new.eval()
    new_cfg = ModelConfig.of_model(new, bias=src.model_config.bias)
    _check_rebuild(new, new_cfg)
    _, acc_after = evaluate(new, ds.x_test, ds.y_test)
    report = {
        "source": str(checkpoint),
        "rel_error": rel_error,
        "max_rank": max_rank,
        "layers": layers,
        "test_acc_before": acc_before,
        "test_acc_after": acc_after,
        "params_before": _n_params(model),
        "params_after": _n_params(new),
    }
    new_cfg_train = replace(cfg, model=replace(new_cfg, in_features=None, out_features=None),
                            rank_adaptive=False, finetune_epochs=0)
    payload = {
        "kind": _KIND,
        "config": new_cfg_train.to_dict(),
        "model_config": new_cfg.to_dict(),
        "state_dict": new.state_dict(),
        "optimizer": None,
        "epoch": src.payload.get("epoch", 0),
        "history": src.payload.get("history", []),
        "truncation": None,
        "prior": None,
        # the name of the source, not the path as typed (the report, printed, keeps that):
        # the same checkpoint decomposed alike gives the same bytes
        "decomposition": {**report, "source": source_name(checkpoint)},
        "data": src.payload.get("data"),   # the config's data and its digest: checked as the source's
    }
    save_checkpoint(out, payload)
    return report
