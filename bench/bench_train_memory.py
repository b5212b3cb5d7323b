#!/usr/bin/env python
"""What on-chip training memory the seed network needs, and what fits the ECP5-85F.

    python bench/bench_train_memory.py

Two views of the same step (``docs/arithmetic.md``, "Training"), for the seed's MNIST
network (784-512-10, the 784-512 layer TT [7,4,7,4] -> [4,8,4,4]) at ranks 16, 8 and 4,
and for the default digits network of ``ttforge train-int``:

* **the step's own accounting** (``ttforge.ir.train_memory.training_memory``, what
  ``ttforge inspect STATE --batch B`` prints): bit-packed bytes of the state and of the
  batch's buffers against FP32 dense training with Adam at the same batch. ``state_ratio``
  (the batch-independent part) is the *upper bound* of the ratio at any batch: the
  batch's buffers only add to our side. The bench also gives the state ratio for each
  ``master_bits`` (the width of the stored integers), the one width that moves it.
* **the training engine as generated** (``ttforge.hw.trainer``): the smallest engine
  (``fit_engine``: depths rounded up to powers of two) for ``lanes`` L and batch B, its
  memories (``ttforge.firmware.build.memory_parts``) as DP16KD blocks of the ECP5-85F
  (one block shape per memory, as ``bench/bench_train_hw.py`` counts them), and the
  largest batch of each L that fits the 208 blocks. The engine keeps every saved
  activation and gradient of the whole batch (lane l holds sample l), so its memory grows
  with the batch: the rows say how far that goes.

Writes ``bench/results/train_memory.json`` (the commit; the tree must be clean for a
recorded figure). Seconds: no training, no synthesis.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared bench helpers
from _env import git, git_dirty, utc_now  # noqa: E402
from bench_train_hw import ECP5_DP16KD, dp16kd_blocks  # noqa: E402

from ttforge.atomic import atomic_write_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "train_memory.json"
LANES = (1, 2, 4, 8, 16)
BATCHES = (1, 2, 3, 4, 8, 16, 32)
MEASURED = ("ir/train.py", "ir/train_memory.py", "hw/trainer/program.py", "firmware/build.py",
            "bench/bench_train_memory.py", "bench/bench_train_hw.py")


def network(name: str, master_bits: int = 8):
    """``(title, state)`` of a benchmark network with the default ``TrainConfig`` widths
    (``master_bits`` aside)."""
    from ttforge.ir.train import TrainConfig, init_state
    from ttforge.ir.train_loop import tt_layers

    cfg = TrainConfig(master_bits=master_bits)
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
    c, tc = ec, ec.train
    shapes = {"act": (c.lanes * c.act_store_bits, c.act_depth), "grad": (c.lanes * c.grad_store_bits, c.grad_depth),
              "cmem": (tc.master_bits, c.core_depth), "bmem": (tc.bias_bits, c.bias_depth),
              "dmem": (32, c.desc_depth * 32), "labels": (16, c.max_batch), "maxacc": (c.acc_bits, c.desc_depth),
              "exp2": (tc.table_bits + 1, 1 << tc.table_frac_bits)}
    assert set(shapes) == set(memory_parts(ec)), "a memory of the engine is not counted"
    blocks = {k: dp16kd_blocks(w, d) for k, (w, d) in shapes.items()}
    total = sum(blocks.values())
    return {"lanes": lanes, "batch": batch, "dp16kd": blocks, "dp16kd_total": total,
            "fits_ecp5_85f": total <= ECP5_DP16KD,
            "act_words": c.act_depth, "grad_words": c.grad_depth}


def measure(name: str) -> dict:
    from ttforge.ir.train_memory import training_memory

    title, state = network(name)
    golden = []
    for b in BATCHES:
        m = training_memory(state, b)
        golden.append({"batch": b, "bytes": m["items"]["total"], "items": m["items"],
                       "fp32_dense_adam_bytes": m["fp32_dense_adam"]["total"], "ratio": m["ratio"],
                       "fits_ecp5_85f": m["fits_ecp5_85f"]})
    m1 = training_memory(state, 1)
    by_master = []
    for mb in range(state.config.w_bits, 9):
        mm = training_memory(network(name, master_bits=mb)[1], 1)
        by_master.append({"master_bits": mb, "state_bytes": mm["state_bytes"], "state_ratio": mm["state_ratio"]})
    engine, largest = [], {}
    for lanes in LANES:
        best = 0
        for b in BATCHES:
            row = engine_blocks(state, b, lanes)
            engine.append(row)
            if row["fits_ecp5_85f"]:
                best = max(best, b)
        largest[str(lanes)] = best
    return {"network": title, "params": sum(g.size for L in state.layers for g in L.masters),
            "state_bytes": m1["state_bytes"], "fp32_state_bytes": m1["fp32_state_bytes"],
            "state_ratio": m1["state_ratio"], "per_sample_bytes": m1["per_sample_bytes"],
            "golden": golden, "state_ratio_by_master_bits": by_master,
            "engine": engine, "engine_largest_batch_fitting": largest}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=OUT)
    a = p.parse_args(argv)
    out = {"benchmark": "train_memory", "command": "python bench/bench_train_memory.py",
           "ecp5_85f_dp16kd": ECP5_DP16KD,
           "networks": {n: measure(n) for n in ("mnist-r16", "mnist-r8", "mnist-r4", "digits")},
           "env": {"when": utc_now(), "git_commit": git("rev-parse", "HEAD"), "git_dirty": git_dirty(*MEASURED)}}
    atomic_write_text(a.out, json.dumps(out, indent=1) + "\n")
    for n, d in out["networks"].items():
        print(f"{n}: state {d['state_bytes']} B, state ratio {d['state_ratio']:.1f}x (upper bound at any batch), "
              f"per sample {d['per_sample_bytes']} B; largest batch on the 85F by lanes "
              f"{d['engine_largest_batch_fitting']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
