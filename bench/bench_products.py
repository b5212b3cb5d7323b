#!/usr/bin/env python
"""The matrix products of the fast path, each alone: how fast the CPU's BLAS runs them,
against the dense layer's product.

For each case of ``bench_speed.py`` (784 x 512 rank 16, 1024 x 1024 rank 8, 4096 x 4096
rank 16), the plan :func:`ttforge.model.fast.plan_for` picks at ``--batch`` on one
thread, and for each of its steps the products one batch chunk of a forward+backward
runs, in the operand layouts the fast path gives them (``ttforge.model.fast``):

- a step of whole samples (``Q == 1``): ``forward`` ``(n, K) @ (K, P)``, ``input grad``
  ``(n, P) @ (P, K)``, ``matrix grad`` ``(K, n) @ (n, P)`` accumulated;
- a step over samples (``Q > 1``): ``forward`` ``bmm`` of the expanded step matrix,
  ``input grad`` ``bmm`` of the expanded ``C^T`` copied once (what the backward runs)
  and, beside it, ``input grad, transposed view`` (``C.t().expand``, what it ran
  before ``2ebcd5d``), ``matrix grad`` ``baddbmm`` per sample slot;

and ``dense``, ``nn.Linear``'s forward product at the same batch. Each is timed alone
(operands hot in cache; ``--rounds`` rounds, in each every product of the run in an order
shuffled with a fixed seed, ``--reps`` calls a round after a warm-up; the median over
all its calls), as G multiply-accumulates a second and as a fraction of the dense
product's rate of the same case. A layer
whose products run below the dense rate cannot reach its goals' floors
(``bench_speed.py``'s "at nn.Linear's rate") however little else it does.

    python bench/bench_products.py                  # cases a, b, c; batch 256; 1 thread
    python bench/bench_products.py --cases b --rounds 2 --out /tmp/p.json

Writes ``bench/results/products.json`` (atomically).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path
from typing import Callable

import torch

from ttforge.ir.tt import TTShape
from ttforge.model import fast

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared bench helpers
import bench_speed  # noqa: E402
from _env import result_path, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "results" / "products.json"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default="a,b,c", help="comma-separated cases of bench_speed.py")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--reps", type=int, default=40, help="timed calls per product and round")
    p.add_argument("--rounds", type=int, default=10, help="rounds over all products (drift is shared)")
    p.add_argument("--out", type=result_path, default=DEFAULT_OUT)
    a = p.parse_args(argv)
    a.cases = bench_speed.case_names(p, a.cases)
    if a.batch < 1 or a.reps < 1 or a.rounds < 1:
        p.error("--batch, --reps and --rounds must be at least 1")
    return a


def _products(s, n: int) -> list[tuple[str, int, Callable[[], object]]]:
    """``(name, MACs, call)`` of one chunk of ``n`` rows (``chunk * A``) of step ``s``."""
    g = torch.Generator().manual_seed(0)
    C = torch.randn(s.P, s.K, generator=g)
    macs = n * s.P * s.K * s.Q
    if s.Q == 1:
        x, gy = torch.randn(n, s.K, generator=g), torch.randn(n, s.P, generator=g)
        acc = torch.zeros(s.K, s.P)
        return [("forward", macs, lambda: torch.mm(x, C.t())),
                ("input grad", macs, lambda: torch.mm(gy, C)),
                ("matrix grad", macs, lambda: acc.addmm_(x.t(), gy))]
    x, gy = torch.randn(n, s.K, s.Q, generator=g), torch.randn(n, s.P, s.Q, generator=g)
    ct, acc = C.t().contiguous(), torch.zeros(n, s.K, s.P)
    return [("forward", macs, lambda: torch.bmm(C.expand(n, s.P, s.K), x)),
            ("input grad", macs, lambda: torch.bmm(ct.expand(n, s.K, s.P), gy)),
            ("input grad, transposed view", macs, lambda: torch.bmm(C.t().expand(n, s.K, s.P), gy)),
            ("matrix grad", macs, lambda: acc.baddbmm_(x, gy.transpose(1, 2)))]


def products(name: str, batch: int) -> dict:
    """The case's plan and its products (see the module docstring), not yet timed: each
    row holds its ``call``."""
    shape: TTShape = bench_speed.CASES[name].tt_shape
    plan = fast.plan_for(shape, batch, threads=1)
    chunk = plan.chunk or batch
    m, k = shape.out_size, shape.in_size
    x, w = torch.randn(batch, k), torch.randn(m, k)
    rows = [{"step": None, "product": "dense", "shape": [batch, k, m], "macs": batch * m * k,
             "call": lambda: torch.mm(x, w.t())}]
    for i, s in enumerate(plan.schedule.steps):
        n = chunk * s.A
        rows += [{"step": i, "product": label, "shape": [n, s.P, s.K, s.Q], "macs": macs, "call": fn}
                 for label, macs, fn in _products(s, n)]
    return {"case": name, "batch": batch, "plan": plan.describe(), "chunk": chunk, "rows": rows}


def measure(cases: list[dict], reps: int, rounds: int) -> None:
    """Time every row of ``cases`` in place (``gmacs``, ``of_dense``; ``call`` dropped)."""
    rows = [r for c in cases for r in c["rows"]]
    times: dict[int, list[float]] = {id(r): [] for r in rows}
    order, rng = list(rows), random.Random(0)
    for _ in range(rounds):
        rng.shuffle(order)
        for r in order:
            times[id(r)] += bench_speed.timed(r["call"], reps)
    for c in cases:
        for r in c["rows"]:
            r["gmacs"] = r["macs"] / statistics.median(times[id(r)]) / 1e9
            del r["call"]
        dense = c["rows"][0]["gmacs"]
        for r in c["rows"]:
            r["of_dense"] = r["gmacs"] / dense


def table(result: dict) -> str:
    lines = ["| case | step | product | n, P, K, Q | G MAC/s | of dense |", "|---|---|---|---|---|---|"]
    for c in result["cases"]:
        for r in c["rows"]:
            step = "-" if r["step"] is None else r["step"]
            lines.append(f"| {c['case']} | {step} | {r['product']} | {', '.join(map(str, r['shape']))} | "
                         f"{r['gmacs']:.1f} | {r['of_dense']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    a = parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        env = bench_speed.fast_path_environment("bench/bench_products.py")
        env["threads"] = 1
        cases = [products(c, a.batch) for c in a.cases]
        measure(cases, a.reps, a.rounds)
    finally:
        torch.set_num_threads(threads)
    result = {"benchmark": "products", "format_version": 1,
              "command": "python bench/bench_products.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "environment": env, "settings": {"batch": a.batch, "reps": a.reps, "rounds": a.rounds,
                           "statistic": "median of all calls"},
              "cases": cases}
    write_result(a.out, result)
    print(table(result))
    return result


if __name__ == "__main__":
    main()
