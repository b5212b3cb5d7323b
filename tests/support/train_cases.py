"""Training states the tests share: a run whose delayed scaling moves a layer's output
exponent by +17 in one step (``jumping_run``), which every implementation of the step
(golden, fast, C, the board's host) must refuse rather than return."""

from __future__ import annotations

import numpy as np

from ttforge.ir.random import train_layer_shapes
from ttforge.ir.train import TrainConfig, calibrate_state, init_state

WIDE = dict(w_bits=8, master_bits=24, act_bits=16, inter_bits=24, acc_bits=48, grad_bits=24, prob_bits=24,
            table_bits=24, table_frac_bits=10, bias_bits=32, bias_frac_bits=16, rounding="nearest")

#: The step of :func:`jumping_run` (counted from 1) that moves layer 0's output exponent
#: by +17, leaving layer 1's first shift at -17 while acc_bits 48 allows -15..62.
JUMPING_STEP = 3


def jumping_run(lr_shift=0, **kw):
    """3 layers 5 -> 6 -> 6 -> 5 (2 cores, rank 3), batch 1, inputs all -2^15: the
    calibrated state and 8 batches; step :data:`JUMPING_STEP` jumps."""
    rng = np.random.default_rng(1645)
    cfg = TrainConfig(**{**WIDE, **kw})
    state = init_state(train_layer_shapes(rng, 3, 2, 3, 5, 6, 5), cfg, seed=1645, lr_shift=lr_shift)
    batches = []
    for _ in range(8):
        batches.append((np.full((1, 5), -(1 << (cfg.act_bits - 1)), dtype=np.int64), rng.integers(0, 5, size=1)))
    return calibrate_state(state, *batches[0], fast=False), batches


def digits_train_state():
    """The network ``ttforge train-int`` trains on digits by default (64-64-10, TT rank 4,
    the default widths), untrained: its memories depend on its shapes and widths only. Its
    bit-packed count at batch 216 sits just under the ECP5-85F's block RAM, while the
    engine ttforge builds for that batch does not fit."""
    import argparse

    from ttforge.ir.train_loop import tt_layers

    cfg = TrainConfig()
    a = argparse.Namespace(hidden=64, cores=3, ranks=4, in_modes=None, out_modes=None, seed=0)
    return init_state(tt_layers(a, 64, 10, True), cfg, seed=0, lr_shift=7, in_exp=-(cfg.act_bits - 1))
