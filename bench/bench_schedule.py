#!/usr/bin/env python
"""Contraction orders chosen with the MAC lanes in the cost: how often it matters, how much
it saves, and the engine's own counters on the layers where it does.

    python bench/bench_schedule.py              # 400 random shapes per lane count + 4 simulated layers (~2 min)
    python bench/bench_schedule.py --quick      # 40 shapes, the smallest layer where they differ (seconds)

1. *The study.* ``--shapes`` random TT-matrix shapes (2-4 cores, modes 2..8, one rank of
   2/4/8/16 on every bond, a fixed seed); for each lane count ``L`` the order
   :meth:`~ttforge.ir.schedule.ContractionSchedule.optimal` picks with ``objective="macs"``
   (fewest MACs; lanes only break ties) against ``objective="cycles"`` (fewest cycles on
   ``L`` lanes, :meth:`~ttforge.ir.schedule.ContractionStep.lane_cycles`): the fraction of
   shapes where the two differ, and there the cycles saved and the MACs added.
2. *The engine.* For the layers of ``LAYERS`` (the two benchmark layers of ``bench_hw.py``
   and the shapes of the study that gain the most at ``L``), both orders are quantized
   into a network (``bench_hw.build_network``), compiled, and run for one vector through
   ``TTEngine`` in Amaranth's simulator: the output must equal the golden executor
   (``np.array_equal``) and the counter ``CYCLES`` the exact cycle model; the ratio of
   the two orders' ``CYCLES`` is what a user of the hardware gets.

Writes ``bench/results/schedule.json``; ``python bench/_docgen.py`` renders its block of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from ttforge.atomic import atomic_write_text
from ttforge.hw.config import AccelConfig
from ttforge.hw.cycles import estimate
from ttforge.hw.program import compile_program
from ttforge.ir.executor import execute
from ttforge.ir.random import random_shapes
from ttforge.ir.schedule import ContractionSchedule, schedule_orders
from ttforge.ir.tt import TTShape

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared bench helpers
from _env import cpu_model, git, git_dirty, result_path, utc_now  # noqa: E402
from bench_hw import LAYERS as HW_LAYERS, LayerSpec, build_network, simulate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JSON = ROOT / "bench" / "results" / "schedule.json"
STUDY_LANES = (4, 16, 64)
SIM_LANES = 16


def compare(shape: TTShape, lanes: int) -> dict:
    """The ``macs`` and ``cycles`` orders of ``shape`` on ``lanes`` lanes and their costs."""
    by_macs = ContractionSchedule.optimal(shape, lanes=lanes)
    by_cycles = ContractionSchedule.optimal(shape, objective="cycles", lanes=lanes)
    a, b = by_macs.cost(lanes=lanes), by_cycles.cost(lanes=lanes)
    return {"out_modes": list(shape.out_modes), "in_modes": list(shape.in_modes), "ranks": list(shape.ranks),
            "order_macs": list(by_macs.order), "order_cycles": list(by_cycles.order),
            "macs": [a.macs, b.macs], "lane_cycles": [a.lane_cycles, b.lane_cycles],
            "gain": a.lane_cycles / b.lane_cycles, "mac_ratio": b.macs / a.macs,
            "orders": len(schedule_orders(shape.d))}


def study(shapes: list[TTShape], lanes: int) -> dict:
    rows = [compare(s, lanes) for s in shapes]
    differ = [r for r in rows if r["order_macs"] != r["order_cycles"]]
    gains = [r["gain"] for r in differ]
    return {"lanes": lanes, "shapes": len(rows), "differ": len(differ),
            "gain_median": statistics.median(gains) if gains else 1.0,
            "gain_p90": float(np.quantile(gains, 0.9)) if gains else 1.0,
            "gain_max": max(gains, default=1.0),
            "mac_ratio_median": statistics.median(r["mac_ratio"] for r in differ) if differ else 1.0,
            "never_slower": all(r["lane_cycles"][1] <= r["lane_cycles"][0] for r in rows),
            "top": sorted(differ, key=lambda r: -r["gain"])[:3],
            "smallest": min(differ, key=lambda r: r["macs"][0], default=None)}


def run_engine(spec: LayerSpec, lanes: int, objective: str, seed: int = 0) -> dict:
    """One vector of ``spec`` with the ``objective`` order through ``TTEngine``."""
    net = build_network(spec, lanes, seed, objective=objective)
    prog = compile_program(net, AccelConfig.for_network(net, lanes=lanes))
    x = np.random.default_rng(seed + 1).integers(-128, 128, size=net.layers[0].in_features)
    golden = execute(net, x[None, :])[0]
    res = simulate(prog, x)
    est = estimate(prog)
    return {"objective": objective, "order": list(net.layers[0].schedule.order),
            "macs": int(est.layers[0].macs), "cycles": res["cycles"], "model_cycles": est.cycles,
            "busy_lane_cycles": res["busy_lane_cycles"],
            "utilization": res["busy_lane_cycles"] / (lanes * res["cycles"]),
            "equal_golden": bool(np.array_equal(np.asarray(res["output"]), golden)) and res["error"] == 0,
            "model_exact": res["cycles"] == est.cycles, "sim_seconds": res["sim_seconds"]}


def engine_layers(top: list[dict], n: int) -> list[LayerSpec]:
    """The two benchmark layers and the ``n`` study shapes that gain the most."""
    specs = [HW_LAYERS["mnist"], HW_LAYERS["1024"]]
    for r in top[:n]:
        title = (f"{np.prod(r['out_modes'])} x {np.prod(r['in_modes'])} TT {r['in_modes']} -> "
                 f"{r['out_modes']}, rank {r['ranks'][1]}, 8-bit cores")
        specs.append(LayerSpec(f"study{len(specs) - 1}", title, tuple(r["in_modes"]), tuple(r["out_modes"]),
                               r["ranks"][1], 8))
    return specs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", type=int, default=400, help="random shapes per lane count (default 400)")
    p.add_argument("--engine-layers", type=int, default=2,
                   help="study shapes simulated besides the two benchmark layers (default 2)")
    p.add_argument("--quick", action="store_true",
                   help="40 shapes; simulate only the smallest layer where the orders differ")
    p.add_argument("--out", type=result_path, default=DEFAULT_JSON)
    a = p.parse_args(argv)
    if not 1 <= a.shapes <= 100_000 or not 0 <= a.engine_layers <= 10:
        p.error("--shapes must be in 1..100000 and --engine-layers in 0..10")
    t0 = time.perf_counter()
    shapes = random_shapes(40 if a.quick else a.shapes)
    studies = [study(shapes, L) for L in STUDY_LANES]
    for s in studies:
        print(f"L={s['lanes']:>2}: the orders differ for {s['differ']}/{s['shapes']} shapes; there "
              f"{s['gain_median']:.2f}x fewer cycles (median; p90 {s['gain_p90']:.2f}x, max {s['gain_max']:.2f}x) "
              f"for {s['mac_ratio_median']:.3f}x the MACs")
    at = next(s for s in studies if s["lanes"] == SIM_LANES)
    if a.quick:     # the cheapest layer where the orders differ, in seconds
        specs = engine_layers([at["smallest"]] if at["smallest"] else [], 1)[2:]
    else:
        specs = engine_layers(at["top"], a.engine_layers)
    engine = []
    for spec in specs:
        pair = [run_engine(spec, SIM_LANES, obj) for obj in ("macs", "cycles")]
        engine.append({"layer": spec.title, "lanes": SIM_LANES, "runs": pair,
                       "speedup": pair[0]["cycles"] / pair[1]["cycles"]})
        print(f"{spec.title}: CYCLES {pair[0]['cycles']:,} ({pair[0]['order']}) -> {pair[1]['cycles']:,} "
              f"({pair[1]['order']}), {engine[-1]['speedup']:.2f}x; equal to the golden executor: "
              f"{all(r['equal_golden'] for r in pair)}, cycle model exact: {all(r['model_exact'] for r in pair)}")
    out = {"benchmark": "schedule", "command": "python bench/bench_schedule.py " + " ".join(argv or sys.argv[1:]),
           "environment": {"date_utc": utc_now(), "git_commit": git("rev-parse", "HEAD"),
                           "git_dirty": git_dirty(), "cpu": cpu_model(), "cpus_available": os.cpu_count()},
           "study": studies, "engine": engine, "seconds": round(time.perf_counter() - t0, 1)}
    atomic_write_text(a.out, json.dumps(out, indent=2) + "\n")
    print(f"wrote {a.out}")
    ok = all(r["equal_golden"] and r["model_exact"] for e in engine for r in e["runs"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
