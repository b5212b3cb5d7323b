#!/usr/bin/env python
"""Epoch time of the accuracy section's TT networks: TTLinear's fast float path against the
hardware's contraction order (what training ran before the fast path), beside the dense MLP.

Every run is ``ttforge.model.train.train`` (what ``ttforge train`` runs) of the fixed-rank
TT network and the dense MLP of ``bench_accuracy.py`` (same data, split, batch 64, Adam,
learning rate, seed 0). The TT network runs twice: as users get it (``TTLinear``'s
default ``impl="fast"``) and with every ``TTLinear`` following the hardware's order
(``impl="schedule"``). An epoch's time is the training loop's own ``time_s``: its
mini-batch steps (forward, backward, Adam) and the evaluation of the training and test
sets. The contenders of a data set run in one process, interleaved (order shuffled per
repetition, fixed seed); the first epoch of a run is reported apart (it plans the
contractions) and the epoch figure is the median of the other epochs of all repetitions.

Beside it, the trained TT layer alone, timed as ``bench_speed.py`` times it but under the
training loop's settings (deterministic algorithms, the run's thread count, so no thread
tuning): forward+backward at the training batch and forward (no autograd) at the
evaluation batch. From those, the
saving an epoch should see if nothing but the TT layer changed (steps x the
forward+backward saving + evaluation batches x the forward saving) is set beside the
saving it measured.

    python bench/bench_epoch.py                          # digits and MNIST, 1 and 2 threads
    python bench/bench_epoch.py --datasets digits --epochs 2 --reps 1 --out /tmp/e.json

Writes ``bench/results/epoch_time.json`` (atomically); ``python bench/_docgen.py`` renders
the table of docs/benchmarks.md's accuracy section from it.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import inspect
import math
import random
import statistics
import sys
import tempfile
from pathlib import Path
from unittest import mock

from torch import nn

import ttforge.model.network as network
from ttforge.model.layers import TTLinear
from ttforge.model.network import ModelConfig
from ttforge.model.seeding import deterministic
from ttforge.model.train import TrainConfig, evaluate, train

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared bench helpers
import bench_accuracy  # noqa: E402
import bench_speed  # noqa: E402
from _docgen import epoch_table  # noqa: E402
from _env import git_dirty, result_path, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "results" / "epoch_time.json"
DATASETS = ("digits", "mnist")
EPOCHS = {"digits": 10, "mnist": 5}
#: contenders: key -> (label, ModelConfig kwargs row of bench_accuracy.VARIANTS, TTLinear impl)
CONTENDERS = {
    "tt": ("TT network, TTLinear impl='fast' (the default)", 1, "fast"),
    "tt_schedule": ("TT network, TTLinear impl='schedule' (the hardware's order)", 1, "schedule"),
    "dense": ("dense MLP", 0, None),
}
EVAL_BATCH = inspect.signature(evaluate).parameters["batch"].default  # the loop's evaluation batch


class _ScheduleTTLinear(TTLinear):
    """A ``TTLinear`` that follows the hardware's order: what ``build_model`` makes while
    :func:`_impl` patches it in."""

    def __init__(self, *args, **kwargs):
        kwargs["impl"] = "schedule"
        super().__init__(*args, **kwargs)


def _impl(impl: str | None):
    """A context in which ``build_model`` makes its TT layers with ``impl``."""
    if impl == "schedule":
        return mock.patch.object(network, "TTLinear", _ScheduleTTLinear)
    return contextlib.nullcontext()


def _model_kwargs(ds: str, key: str) -> dict:
    return dict(bench_accuracy.VARIANTS[ds][CONTENDERS[key][1]][1])


def _train(ds: str, key: str, epochs: int, threads: int, out: Path) -> dict:
    impl = CONTENDERS[key][2]
    cfg = TrainConfig(data=bench_accuracy.DATA[ds], model=ModelConfig(**_model_kwargs(ds, key)),
                      epochs=epochs, lr=bench_accuracy.LR[ds], seed=0, threads=threads)
    with _impl(impl):
        res = train(cfg, out, progress=False)
    impls = {m.impl for m in res.model if isinstance(m, TTLinear)}
    if impls != ({impl} if impl else set()):  # the patch reached the model it timed
        raise RuntimeError(f"{key}: the trained model's TTLinear impls are {sorted(impls)}, not {impl!r}")
    s = res.summary
    return {"layer": next((m for m in res.model if isinstance(m, TTLinear)), None),
            "epoch_s": [h["time_s"] for h in res.history], "test_acc": s["test_acc"],
            "n_train": s["n_train"], "n_test": s["n_test"], "batch": cfg.batch_size,
            "steps_per_epoch": math.ceil(s["n_train"] / cfg.batch_size)}


def time_layer(layer: TTLinear, batch: int, eval_batch: int, reps: int, warmup: int) -> dict:
    """The TT layer (fast and hardware order) and an ``nn.Linear`` of its size: median
    ms of forward+backward at ``batch`` and forward at ``eval_batch``."""
    schedule = copy.deepcopy(layer)
    schedule.impl = "schedule"
    dense = nn.Linear(layer.in_features, layer.out_features)
    contenders = [bench_speed.Contender("tt", "fast", layer),
                  bench_speed.Contender("tt_schedule", "schedule", schedule),
                  bench_speed.Contender("dense", "nn.Linear", dense)]
    fb, _ = bench_speed.time_case(contenders, layer.in_features, batch, reps, warmup, modes=("fwd_bwd",))
    fw, _ = bench_speed.time_case(contenders, layer.in_features, eval_batch, reps, warmup, modes=("fwd",))
    return {k: {"fwd_bwd_ms": fb[k]["fwd_bwd"]["median"], "fwd_ms": fw[k]["fwd"]["median"]}
            for k in fb}


def measure(ds: str, threads: int, epochs: int, reps: int, layer_reps: int, tmp: Path) -> dict:
    """One table row group: every contender's epochs, interleaved, and the layer alone."""
    runs: dict[str, list[dict]] = {k: [] for k in CONTENDERS}
    for rep in range(reps):
        order = list(CONTENDERS)
        random.Random(rep).shuffle(order)
        for key in order:
            runs[key].append(_train(ds, key, epochs, threads, tmp / f"{ds}-{key}-{threads}-{rep}"))
            print(f"{ds:6s} {threads} thread(s) rep {rep}: {key:12s} epochs "
                  + " ".join(f"{t:.3f}" for t in runs[key][-1]["epoch_s"]) + " s",
                  file=sys.stderr, flush=True)
    first = runs["tt"][0]
    tt_layer = first["layer"]  # trained: the weights the epochs ended with
    with deterministic(threads):  # as the training loop runs it (no thread tuning)
        layer = time_layer(tt_layer, first["batch"], EVAL_BATCH, layer_reps, 5)
    contenders = {}
    for key, rs in runs.items():
        later = [t for r in rs for t in r["epoch_s"][1:]] or [r["epoch_s"][0] for r in rs]
        contenders[key] = {
            "label": CONTENDERS[key][0],
            "epoch_s": statistics.median(later),
            "first_epoch_s": statistics.median(r["epoch_s"][0] for r in rs),
            "test_acc": [r["test_acc"] for r in rs],
            "runs": [r["epoch_s"] for r in rs],
        }
    eval_batches = math.ceil(first["n_train"] / EVAL_BATCH) + math.ceil(first["n_test"] / EVAL_BATCH)
    per_epoch = {k: first["steps_per_epoch"] * v["fwd_bwd_ms"] + eval_batches * v["fwd_ms"]
                 for k, v in layer.items()}
    fast, sched = contenders["tt"]["epoch_s"], contenders["tt_schedule"]["epoch_s"]
    return {
        "dataset": ds, "threads": threads, "epochs": epochs, "reps": reps,
        "batch": first["batch"], "steps_per_epoch": first["steps_per_epoch"], "eval_batches": eval_batches,
        "n_train": first["n_train"], "n_test": first["n_test"],
        "tt_layer": {"in_features": tt_layer.in_features, "out_features": tt_layer.out_features,
                     "in_modes": list(tt_layer.in_modes), "out_modes": list(tt_layer.out_modes),
                     "ranks": list(tt_layer.ranks)},
        "contenders": contenders,
        "layer_ms": layer,
        "layer_ms_per_epoch": per_epoch,
        "epoch_speedup": sched / fast,
        "layer_fwd_bwd_speedup": layer["tt_schedule"]["fwd_bwd_ms"] / layer["tt"]["fwd_bwd_ms"],
        "epoch_saving_ms": (sched - fast) * 1e3,
        "layer_saving_ms": per_epoch["tt_schedule"] - per_epoch["tt"],
        "dense_over_tt": contenders["dense"]["epoch_s"] / fast,
    }


def _ints(text: str) -> list[int]:
    try:
        out = [int(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every entry must be >= 1")
    return out


def _datasets(text: str) -> list[str]:
    out = text.split(",")
    bad = [d for d in out if d not in DATASETS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown data set {bad[0]!r}; choose from {', '.join(DATASETS)}")
    return out


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", type=_datasets, default=list(DATASETS), help="digits,mnist")
    p.add_argument("--threads", type=_ints, default=[1, 2], help="torch threads per table (default 1,2)")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"epochs per run (default {EPOCHS['digits']} digits, {EPOCHS['mnist']} MNIST)")
    p.add_argument("--reps", type=int, default=5, help="runs of every contender (default 5)")
    p.add_argument("--layer-reps", type=int, default=51, help="timed calls of the layer alone (default 51)")
    p.add_argument("--out", type=result_path, default=DEFAULT_OUT)
    a = p.parse_args(argv)
    for name in ("epochs", "reps", "layer_reps"):
        v = getattr(a, name)
        if v is not None and v < 1:
            p.error(f"--{name.replace('_', '-')} {v} must be >= 1")
    return a


def main(argv=None) -> dict:
    a = parse_args(argv)
    env = bench_speed.environment()
    env["git_dirty"] = git_dirty("model", "bench/bench_epoch.py", "bench/bench_accuracy.py", "bench/bench_speed.py")
    for k in ("tensorly", "tensorly_torch", "opt_einsum"):
        env.pop(k, None)
    env["loadavg_before"] = bench_speed._loadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for ds in a.datasets:
            for threads in a.threads:
                rows.append(measure(ds, threads, a.epochs or EPOCHS[ds], a.reps, a.layer_reps, Path(tmp)))
    env["loadavg_after"] = bench_speed._loadavg()
    result = {"benchmark": "epoch_time", "format_version": 1,
              "command": "python bench/bench_epoch.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "environment": env, "rows": rows}
    write_result(a.out, result)
    print(epoch_table(result))
    return result


if __name__ == "__main__":
    main()
