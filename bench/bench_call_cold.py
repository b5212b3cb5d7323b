#!/usr/bin/env python
"""What a TTLinear call costs around its products, warm and cold.

In ``bench_speed.py`` every contender's call follows other contenders' calls, whose
products sweep megabytes through the caches; in a network, a layer follows other
layers. The Python of a call (checks, plan lookup, merge-cache comparison, thread
tuning, chunk loop) then runs on cold caches, and costs several times what a tight loop
shows. This bench times, per case of ``bench_speed.py`` and batch, under
``torch.no_grad()``:

- ``layer``: ``TTLinear`` called as users call it (the merge cache warm: same cores);
- ``forward``: :func:`ttforge.model.fast._forward` alone on the merged matrices (the
  products, the chunk loop and the bias add: what any call must run);
- ``merge cache``: the cache's comparison of the cores alone (``MergeCache.matrices``);
- ``nothing``: an empty call in the same ``no_grad`` block (the timing's own floor);
- ``dense``: ``nn.Linear`` of the same size;

each ``warm`` (the same call just before) and ``cold`` (a ``--flush-mb`` MiB product just
before, as another layer would run). ``layer - forward`` is the call's overhead.
Products and their order are the same in both ways; the medians of ``--reps`` rounds,
each round every row once in a shuffled order.

    python bench/bench_call_cold.py                       # cases a, b; batches 1, 256
    python bench/bench_call_cold.py --cases b --batches 256 --threads 2 --reps 50

Writes ``bench/results/call_cold.json`` (atomically).
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ttforge.model import fast
from ttforge.model.layers import TTLinear

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared bench helpers
import bench_speed  # noqa: E402
from _env import result_path, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "results" / "call_cold.json"
ROWS = ("layer", "forward", "merge cache", "nothing", "dense")


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default="a,b", help="comma-separated cases of bench_speed.py")
    p.add_argument("--batches", type=_ints, default=[1, 256], help="comma-separated batch sizes")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--reps", type=int, default=200, help="rounds (each row once a round, both ways)")
    p.add_argument("--flush-mb", type=float, default=12.0,
                   help="MiB of operands the product run before a cold call sweeps")
    p.add_argument("--out", type=result_path, default=DEFAULT_OUT)
    a = p.parse_args(argv)
    a.cases = bench_speed.case_names(p, a.cases)
    if a.reps < 1 or a.threads < 1 or a.flush_mb <= 0 or not a.batches or min(a.batches) < 1:
        p.error("--reps, --threads, --flush-mb and every batch must be positive")
    return a


def _flush(mb: float) -> Callable[[], object]:
    """A product whose operands and result hold about ``mb`` MiB (float32)."""
    n = max(16, int((mb * (1 << 20) / 4 / 7) ** 0.5))  # A (2n x n), B (n x n), C (2n x n)
    a, b = torch.randn(2 * n, n), torch.randn(n, n)
    return lambda: torch.mm(a, b)


def rows(case: str, batch: int) -> dict[str, Callable[[], object]]:
    """The calls of one case and batch (see the module docstring)."""
    c = bench_speed.CASES[case]
    torch.manual_seed(0)
    n_in, n_out = math.prod(c.in_modes), math.prod(c.out_modes)
    # built here, not by bench_speed.build_case, which needs tensorly-torch
    layer = TTLinear(n_in, n_out, ranks=c.rank, in_modes=c.in_modes, out_modes=c.out_modes)
    dense = nn.Linear(n_in, n_out)
    x = torch.randn(batch, n_in)
    cores = layer._core_list()
    plan = fast.plan_for(layer.tt_shape, batch)
    cache = fast.MergeCache()
    with torch.no_grad():
        mats = fast._step_matrices(cores, plan)
        cache.matrices(cores, plan)
        layer(x)
    bias = layer.bias.detach()

    def no_grad(fn):
        def call():
            with torch.no_grad():
                fn()
        return call

    return {"layer": no_grad(lambda: layer(x)),
            "forward": no_grad(lambda: fast._forward(x, mats, plan, bias=bias)),
            "merge cache": no_grad(lambda: cache.matrices(cores, plan)),
            "nothing": no_grad(lambda: None),
            "dense": no_grad(lambda: dense(x))}


def measure(calls: dict, reps: int, flush: Callable[[], object]) -> dict:
    """Median microseconds of every call, warm and cold."""
    keys = [(k, way) for k in calls for way in ("warm", "cold")]
    times: dict = {k: [] for k in keys}
    rng = random.Random(0)
    for _ in range(reps):
        rng.shuffle(keys)
        for name, way in keys:
            fn = calls[name]
            flush() if way == "cold" else fn()
            t = time.perf_counter()
            fn()
            times[(name, way)].append(time.perf_counter() - t)
    return {name: {way: statistics.median(times[(name, way)]) * 1e6 for way in ("warm", "cold")}
            for name in calls}


def table(result: dict) -> str:
    lines = ["| case | batch | way | layer | forward | overhead | merge cache | nothing | nn.Linear |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        us = r["us"]
        for way in ("warm", "cold"):
            lines.append(f"| {r['case']} | {r['batch']} | {way} | {us['layer'][way]:.0f} | "
                         f"{us['forward'][way]:.0f} | {us['layer'][way] - us['forward'][way]:.0f} | "
                         f"{us['merge cache'][way]:.0f} | {us['nothing'][way]:.0f} | {us['dense'][way]:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    a = parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(a.threads)
    try:
        env = bench_speed.fast_path_environment("bench/bench_call_cold.py")
        env["threads"] = a.threads
        flush = _flush(a.flush_mb)
        runs = [{"case": c, "batch": b, "us": measure(rows(c, b), a.reps, flush)}
                for c in a.cases for b in a.batches]
    finally:
        torch.set_num_threads(threads)
    result = {"benchmark": "call_cold", "format_version": 1,
              "command": "python bench/bench_call_cold.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "environment": env,
              "settings": {"reps": a.reps, "flush_mb": a.flush_mb, "threads": a.threads,
                           "statistic": "median of the rounds, microseconds", "rows": list(ROWS)},
              "runs": runs}
    write_result(a.out, result)
    print(table(result))
    return result


if __name__ == "__main__":
    main()
