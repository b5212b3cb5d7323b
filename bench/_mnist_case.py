"""The seed's MNIST training case of the training benchmarks (``bench_train_rtl.py``,
``bench_train_link.py``, ``bench_train_board_sim.py``): one construction, so their figures
are of the same network, start and batches.

The network is ``bench_train_int.SETTINGS["mnist"]`` (784-512-10, the 784-512 layer TT
[7,4,7,4] -> [4,8,4,4] rank 16), integer from a random init, calibrated on the first 256
samples of ``epoch_order(seed, 0)``; the inputs quantized to 8 bits.
"""

from __future__ import annotations

__all__ = ["mnist_start", "epoch_batches", "step_cycles"]


def mnist_start(seed: int):
    """``(state, xq, y, xqt, yt)``: the calibrated start state, the quantized training
    inputs and labels, the quantized test inputs and labels."""
    from bench_train_int import SETTINGS, _data, _int_args

    from ttforge.ir.arith import quantize
    from ttforge.ir.train import TrainConfig, calibrate_state, init_state
    from ttforge.ir.train_loop import epoch_order, tt_layers

    _, x, y, xt, yt = _data("mnist")
    cfg = TrainConfig()
    state = init_state(tt_layers(_int_args("mnist", seed), x.shape[1], 10, False), cfg, seed=seed,
                       lr_shift=SETTINGS["mnist"]["lr_shift"], in_exp=-(cfg.act_bits - 1))
    xq, xqt = quantize(x, 8, state.in_exp), quantize(xt, 8, state.in_exp)
    cal = epoch_order(seed, 0, len(y))[:256]
    return calibrate_state(state, xq[cal], y[cal]), xq, y, xqt, yt


def epoch_batches(xq, y, seed: int, epoch: int, batch: int, steps: int | None = None) -> list:
    """The first ``steps`` (default: every whole) batches of ``epoch`` in ``epoch_order``."""
    from ttforge.ir.train_loop import epoch_order

    order = epoch_order(seed, epoch, len(y))
    n = len(y) // batch if steps is None else steps
    return [(xq[order[i * batch:(i + 1) * batch]], y[order[i * batch:(i + 1) * batch]]) for i in range(n)]


def step_cycles(config, program, batch: int, in_features: int) -> tuple[int, int]:
    """``(operations, step)``: the engine's exact cycle model of one step (``op_cycles``),
    without and with the input at one element (and the label) a cycle."""
    from ttforge.hw.trainer.engine import op_cycles

    ops = sum(op_cycles(op, config, program.slots) for op in program.ops)
    return ops, ops + batch * (in_features + 1)
