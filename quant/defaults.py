"""The defaults of the PTQ options, with no PyTorch import: :mod:`ttforge.quant.cli`
declares ``quantize``'s and ``diverge``'s options from them (their ``--help`` lists them
without torch), and :func:`~ttforge.quant.ptq.make_config` and
:func:`~ttforge.quant.ptq.quantize_trained` take them as their defaults (one statement: a
literal in the command line once drifted from the functions)."""

from __future__ import annotations

from typing import Any

__all__ = ["PTQ_DEFAULTS"]

#: PTQ option -> its default (``layer_bits``: the command line's text, "" = none).
PTQ_DEFAULTS: dict[str, Any] = {
    "w_bits": 8,
    "act_bits": 8,
    "inter_bits": 16,
    "acc_bits": 32,
    "calibration": "mse",
    "layer_bits": "",
    "calib_samples": 1024,
    "seed": 0,
}
