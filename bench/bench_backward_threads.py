#!/usr/bin/env python
"""The fast path's backward at two threads: split over Python threads against intra-op
threads, and one thread beside them.

For each merged-pair case of ``bench_speed.py`` (1024 x 1024 rank 8, 4096 x 4096 rank
16; a plan of one group, the dense weight rebuilt, has no such backward) and each
``--batches`` size, the step matrices of :func:`ttforge.model.fast.plan_for`'s plan and
the backward without a graph that a training step runs on them, three ways:

- ``one thread``: :func:`ttforge.model.fast._backward_buffered` on one intra-op thread,
  the one-thread plan's chunks;
- ``intra-op``: the same on two intra-op threads, the two-thread plan's chunks (each
  product divided between the threads; the backward before ``ddbf856``);
- ``split``: :func:`ttforge.model.fast._backward_split`, the batch in two halves on two
  Python threads of one intra-op thread each, the one-thread chunks (the backward at
  two threads from ``ddbf856``, :data:`ttforge.model.fast.SPLIT_BACKWARD`).

Each way is checked against the one-thread gradients (float32, relative 1e-4) and timed
in ``--rounds`` rounds, in each the three in an order shuffled with a fixed seed,
``--reps`` calls a round after a warm-up; medians over all calls. These backwards run
back to back, which flatters the split: in a training step each backward follows a
forward on intra-op threads, and each switch between the Python threads and
OpenMP's wakes the other (and one process alternating the ways slowed the intra-op
calls after split ones).

So each point is also timed as a training step does it, ``layer``: forward+backward
of a :class:`~ttforge.model.layers.TTLinear` at two threads (``THREADS = 2``), with
:data:`~ttforge.model.fast.SPLIT_BACKWARD` on and off, each way in processes of its
own (``--rounds`` of each, the order alternating; a process times ``--reps`` calls
after three warm-up ones), the median of the processes' medians. This is the figure
that decides where the split is used (:data:`~ttforge.model.fast.SPLIT_MACS`).

    python bench/bench_backward_threads.py                 # cases b, c; batches 64, 256, 1024
    python bench/bench_backward_threads.py --cases b --batches 256 --out /tmp/b.json

Needs two CPUs. Writes ``bench/results/backward_threads.json`` (atomically).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from ttforge.ir.tt import TTShape
from ttforge.model import fast

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared bench helpers
import bench_speed  # noqa: E402
from _env import result_path, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "results" / "backward_threads.json"
WAYS = ("one thread", "intra-op", "split")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default="b,c", help="comma-separated merged-pair cases of bench_speed.py")
    p.add_argument("--batches", default="64,256,1024", help="comma-separated batch sizes")
    p.add_argument("--reps", type=int, default=5, help="timed calls per way and round")
    p.add_argument("--rounds", type=int, default=5, help="rounds over the three ways (drift is shared)")
    p.add_argument("--out", type=result_path, default=DEFAULT_OUT)
    p.add_argument("--layer-child", help=argparse.SUPPRESS)  # one process of the layer timing
    a = p.parse_args(argv)
    if a.layer_child:
        return a
    a.cases = bench_speed.case_names(p, a.cases)
    try:
        a.batches = [int(b) for b in a.batches.split(",") if b.strip()]
    except ValueError:
        p.error(f"--batches: {a.batches[:80]!r} is not a comma-separated list of integers, e.g. 64,256")
    if not a.batches or any(not 2 <= b <= 4096 for b in a.batches):
        # 4,096 as bench_speed's sweep: the 4096 layer's operands then hold 64 MiB each
        p.error("--batches: each batch must be in 2..4,096 (two halves of at least a sample)")
    if a.reps < 1 or a.rounds < 1:
        p.error("--reps and --rounds must be at least 1")
    if len(os.sched_getaffinity(0)) < 2:
        p.error("needs two CPUs (this process may run on one)")
    return a


def _ways(name: str, batch: int) -> dict:
    """The case's plan at ``batch`` and its three backward calls (``None``: one group)."""
    shape: TTShape = bench_speed.CASES[name].tt_shape
    one = fast.plan_for(shape, batch, threads=1)
    if len(one.groups) == 1:
        return {"case": name, "batch": batch, "plan": one.describe(), "calls": None}
    two = fast._for_threads(one, 2)
    g = torch.Generator().manual_seed(0)
    cores = [torch.randn(r0, m, n, r1, generator=g) / (n * r0) ** 0.5
             for r0, m, n, r1 in zip(shape.ranks, shape.out_modes, shape.in_modes, shape.ranks[1:])]
    with torch.no_grad():
        mats = fast._step_matrices(cores, one)
    x, gy = torch.randn(batch, shape.in_size, generator=g), torch.randn(batch, shape.out_size, generator=g)
    steps = one.schedule.steps
    chunk1, chunk2 = fast._backward_chunk_size(one, batch), fast._backward_chunk_size(two, batch)

    def at(threads, fn):
        def call():
            torch.set_num_threads(threads)
            return fn()
        return call

    calls = {"one thread": at(1, lambda: fast._backward_buffered(x, gy, mats, steps, True, chunk1)),
             "intra-op": at(2, lambda: fast._backward_buffered(x, gy, mats, steps, True, chunk2)),
             "split": at(2, lambda: fast._backward_split(x, gy, mats, steps, True, chunk1, None, 2))}
    return {"case": name, "batch": batch, "plan": one.describe(), "chunks": {"one thread": chunk1,
            "intra-op": chunk2, "split": chunk1}, "calls": calls}


def _same(a, b) -> float:
    """Largest relative difference between two ``(gx, [gmats])`` results."""
    return max(((u - v).abs().max() / v.abs().max()).item() for u, v in zip([a[0], *a[1]], [b[0], *b[1]]))


def measure(points: list[dict], reps: int, rounds: int) -> None:
    """Check and time every point in place (``ms``, ``max_rel_diff``, ratios; ``calls``
    dropped)."""
    rng = random.Random(0)
    for p in points:
        calls = p.pop("calls")
        if calls is None:
            continue
        ref = calls["one thread"]()
        p["max_rel_diff"] = {w: _same(calls[w](), ref) for w in WAYS[1:]}
        if max(p["max_rel_diff"].values()) > 1e-4:
            raise RuntimeError(f"case {p['case']} batch {p['batch']}: the ways disagree ({p['max_rel_diff']})")
        times: dict[str, list[float]] = {w: [] for w in WAYS}
        order = list(WAYS)
        for _ in range(rounds):
            rng.shuffle(order)
            for w in order:  # warm once, after the other ways
                times[w] += bench_speed.timed(calls[w], reps, warmup=1)
        p["ms"] = {w: statistics.median(times[w]) * 1e3 for w in WAYS}
        p["split_vs_intra"] = p["ms"]["intra-op"] / p["ms"]["split"]
        p["split_vs_one"] = p["ms"]["one thread"] / p["ms"]["split"]


def _layer_child(spec: str) -> None:
    """In a process of its own: ``spec`` (JSON: case, batch, split, reps) timed as
    forward+backward through the layer at two threads; prints the call times (JSON)."""
    from ttforge.model.layers import TTLinear

    s = json.loads(spec)
    case = bench_speed.CASES[s["case"]]
    torch.set_num_threads(2)
    # the split wherever it can run (this measures where SPLIT_MACS should put it)
    fast.THREADS, fast.SPLIT_BACKWARD, fast.SPLIT_MACS = 2, bool(s["split"]), 1
    splits = []
    real = fast._backward_split
    fast._backward_split = lambda *args: splits.append(1) or real(*args)
    torch.manual_seed(0)
    layer = TTLinear(case.tt_shape.in_size, case.tt_shape.out_size, ranks=case.rank, in_modes=case.in_modes,
                     out_modes=case.out_modes)
    x = torch.randn(s["batch"], layer.in_features, requires_grad=True)
    gy = torch.randn(s["batch"], layer.out_features)

    def step():
        x.grad = None
        for q in layer.parameters():
            q.grad = None
        layer(x).backward(gy)

    times = bench_speed.timed(step, s["reps"])
    print(json.dumps({"times": times, "split_calls": len(splits)}))


def measure_layer(points: list[dict], reps: int, rounds: int) -> None:
    """Time every point of a merged-pair plan through the layer (``layer_ms``: split and
    intra-op, each way in processes of its own, see the module docstring)."""
    script = str(Path(__file__).resolve())
    for p in points:
        if "ms" not in p:
            continue
        medians: dict[str, list[float]] = {"intra-op": [], "split": []}
        for r in range(rounds):
            for way in (("split", "intra-op") if r % 2 == 0 else ("intra-op", "split")):
                spec = json.dumps({"case": p["case"], "batch": p["batch"], "split": way == "split", "reps": reps})
                out = subprocess.run([sys.executable, script, "--layer-child", spec], capture_output=True,
                                     text=True, check=True, timeout=3600)
                child = json.loads(out.stdout)
                if (child["split_calls"] > 0) != (way == "split"):
                    raise RuntimeError(f"case {p['case']} batch {p['batch']}: the {way} process ran "
                                       f"{child['split_calls']} split backwards")
                medians[way].append(statistics.median(child["times"]))
        p["layer_ms"] = {w: statistics.median(v) * 1e3 for w, v in medians.items()}
        p["layer_process_ms"] = {w: [t * 1e3 for t in v] for w, v in medians.items()}
        p["layer_split_vs_intra"] = p["layer_ms"]["intra-op"] / p["layer_ms"]["split"]


def table(result: dict) -> str:
    lines = ["| case | batch | one thread ms | intra-op ms | split ms | split vs intra-op | split vs one thread "
             "| layer intra-op ms | layer split ms | layer split vs intra-op |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for p in result["points"]:
        if "ms" not in p:
            lines.append(f"| {p['case']} | {p['batch']} | one group: no split backward | | | | | | | |")
            continue
        ms, lm = p["ms"], p["layer_ms"]
        lines.append(f"| {p['case']} | {p['batch']} | {ms['one thread']:.2f} | {ms['intra-op']:.2f} | "
                     f"{ms['split']:.2f} | {p['split_vs_intra']:.2f}x | {p['split_vs_one']:.2f}x | "
                     f"{lm['intra-op']:.2f} | {lm['split']:.2f} | {p['layer_split_vs_intra']:.2f}x |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    a = parse_args(argv)
    if a.layer_child:
        return _layer_child(a.layer_child)
    threads = torch.get_num_threads()
    try:
        env = bench_speed.fast_path_environment("bench/bench_backward_threads.py")
        points = [_ways(c, b) for c in a.cases for b in a.batches]
        measure(points, a.reps, a.rounds)
    finally:
        torch.set_num_threads(threads)
    measure_layer(points, a.reps, a.rounds)
    result = {"benchmark": "backward_threads", "format_version": 2,
              "command": "python bench/bench_backward_threads.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "environment": env, "settings": {"reps": a.reps, "rounds": a.rounds, "threads": 2,
                                               "statistic": "median of all calls",
                                               "layer_statistic": "median of the processes' medians"},
              "points": points}
    write_result(a.out, result)
    print(table(result))
    return result


if __name__ == "__main__":
    main()
