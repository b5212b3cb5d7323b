#!/usr/bin/env python
"""Which training engines fit the ECP5-85F: the seed network at ranks 16, 8 and 4, and digits.

    python bench/bench_train_memory.py

For the seed's MNIST network (784-512-10, the 784-512 layer TT [7,4,7,4] -> [4,8,4,4]) at
ranks 16, 8 and 4 and the default digits network of ``ttforge train-int``, each with the
default ``TrainConfig`` widths and with 4-bit masters, 8-bit intermediates and gradients
(the ``-m4i8g8`` entries, the widths of the 4-bit rows of the step's memory table): the smallest training engine (``fit_engine``: depths
rounded up to powers of two) for ``lanes`` L and batch B, its memories
(``ttforge.firmware.build.memory_parts``) as DP16KD blocks of the ECP5-85F (one block
shape per memory, as ``bench/bench_train_hw.py`` counts them), and the largest batch of
each L that fits the 208 blocks. The engine keeps every saved activation and gradient of
the whole batch (lane l holds sample l), so its memory grows with the batch. The step's
own byte accounting (bit-packed, against FP32 dense training with Adam) is the memory
table of ``bench/bench_train_int.py`` (``ttforge.ir.train_memory``); this is the
generated hardware's.

Writes ``bench/results/train_memory.json`` (the commit; the tree must be clean for a
recorded figure). Seconds: no training, no synthesis.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared bench helpers
from _env import git, git_dirty, result_path, utc_now  # noqa: E402
from bench_train_hw import ECP5_DP16KD, memory_blocks, memory_shapes  # noqa: E402

from ttforge.atomic import atomic_write_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "train_memory.json"
LANES = (1, 2, 4, 8, 16)
BATCHES = (1, 2, 3, 4, 8, 16, 32)
MEASURED = ("ir/train.py", "hw/trainer/program.py", "firmware/build.py",
            "bench/bench_train_memory.py", "bench/bench_train_hw.py")


#: The width sets measured: the default ``TrainConfig`` and 4-bit masters with 8-bit
#: intermediates and gradients (the paper's 4-bit update).
WIDTHS = {"": {}, "-m4i8g8": {"master_bits": 4, "inter_bits": 8, "grad_bits": 8}}


def network(name: str, widths: dict | None = None):
    """``(title, state)`` of a benchmark network with the default ``TrainConfig`` widths
    but for ``widths``."""
    from ttforge.ir.train import TrainConfig, init_state
    from ttforge.ir.train_loop import tt_layers

    cfg = TrainConfig(**(widths or {}))
    if name == "digits":
        a = argparse.Namespace(hidden=64, cores=3, ranks=4, in_modes=None, out_modes=None, seed=0)
        return "digits 64-64-10 (TT rank 4)", init_state(tt_layers(a, 64, 10, True), cfg, seed=0, lr_shift=7,
                                                         in_exp=-(cfg.act_bits - 1))
    rank = int(name.split("-r")[1])
    a = argparse.Namespace(hidden=512, cores=4, ranks=rank, in_modes=(7, 4, 7, 4), out_modes=(4, 8, 4, 4), seed=0)
    return (f"MNIST 784-512-10, TT [7,4,7,4] -> [4,8,4,4] rank {rank}",
            init_state(tt_layers(a, 784, 10, False), cfg, seed=0, lr_shift=8, in_exp=-(cfg.act_bits - 1)))


def engine_blocks(state, batch: int, lanes: int) -> dict:
    """The smallest training engine for ``state`` at ``batch`` and ``lanes``: its memories
    in DP16KD blocks, and whether they fit the ECP5-85F."""
    from ttforge.errors import ConfigError
    from ttforge.firmware.build import memory_parts
    from ttforge.hw.trainer.program import fit_engine

    try:
        ec = fit_engine(state, batch, lanes=lanes)
    except ConfigError as e:      # beyond the largest engine fit_engine probes (2^20 words)
        return {"lanes": lanes, "batch": batch, "dp16kd": None, "dp16kd_total": None,
                "fits_ecp5_85f": False, "why": str(e)}
    shapes = memory_shapes(ec)
    assert {k: d * w for k, (d, w) in shapes.items()} == memory_parts(ec), "a memory of the engine is not counted"
    blocks = {k: memory_blocks(k, w, d, lanes) for k, (d, w) in shapes.items()}
    total = sum(blocks.values())
    return {"lanes": lanes, "batch": batch, "dp16kd": blocks, "dp16kd_total": total,
            "fits_ecp5_85f": total <= ECP5_DP16KD,
            "act_words": ec.act_depth, "grad_words": ec.grad_depth}


def measure(name: str, widths: dict | None = None) -> dict:
    title, state = network(name, widths)
    engine, largest = [], {}
    for lanes in LANES:
        best = 0
        for b in BATCHES:
            row = engine_blocks(state, b, lanes)
            engine.append(row)
            if row["fits_ecp5_85f"]:
                best = max(best, b)
        largest[str(lanes)] = best
    c = state.config
    return {"network": title, "params": sum(g.size for L in state.layers for g in L.masters),
            "master_bits": c.master_bits, "inter_bits": c.inter_bits, "grad_bits": c.grad_bits,
            "engine": engine, "engine_largest_batch_fitting": largest}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=result_path, default=OUT)
    a = p.parse_args(argv)
    out = {"benchmark": "train_memory", "command": "python bench/bench_train_memory.py",
           "ecp5_85f_dp16kd": ECP5_DP16KD,
           "networks": {n + tag: measure(n, w) for tag, w in WIDTHS.items()
                        for n in ("mnist-r16", "mnist-r8", "mnist-r4", "digits")},
           "env": {"when": utc_now(), "git_commit": git("rev-parse", "HEAD"), "git_dirty": git_dirty(*MEASURED)}}
    atomic_write_text(a.out, json.dumps(out, indent=1) + "\n")
    for n, d in out["networks"].items():
        print(f"{n}: the largest batch whose engine fits the ECP5-85F, by lanes: {d['engine_largest_batch_fitting']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
