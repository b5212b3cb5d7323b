"""Where a TT layer's forward+backward goes, against ``nn.Linear``'s: torch.profiler's
self CPU time per operation and input shapes, per call, for both (one thread).

    python bench/bench_layer_profile.py [--case a] [--batch 256] [--calls 20] [--repeats 7]

Writes ``bench/results/layer_profile.json`` (per contender: the operations by self CPU
time, their shapes and call counts; the git commit of the tree that ran). The
profiler adds its own cost to every operation: the shares, not the totals, are the
result (the timed ratios are ``bench_speed.py``'s). Each figure is the median of
``--repeats`` profiles of ``--calls`` calls, the contenders' profiles interleaved, with
its spread (lowest, highest): one profile's figure for an operation can be several
times its usual (a 20-call profile gave a 150 us copy 720 us).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_speed  # noqa: E402
from _env import result_path, write_result  # noqa: E402

from ttforge.model.layers import TTLinear  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "layer_profile.json"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", default="a", choices=sorted(bench_speed.CASES))
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--repeats", type=int, default=7, help="profiles per contender (medians)")
    p.add_argument("--rows", type=int, default=14, help="operations kept per contender")
    p.add_argument("--out", type=result_path, default=str(OUT))
    a = p.parse_args(argv)
    for flag in ("batch", "calls", "rows", "repeats"):
        if getattr(a, flag) < 1:
            p.error(f"--{flag} must be positive")
    return a


def profile(layer: nn.Module, x: torch.Tensor, calls: int) -> dict:
    """Self CPU time (microseconds per call) of each operation, keyed by name and input
    shapes, with its call count per call, over ``calls`` forward+backward calls."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    def call():
        layer(x).sum().backward()

    for _ in range(5):   # plans, tuner, work buffers settled
        call()
    with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(calls):
            call()
    return {(e.key, str(e.input_shapes)): (e.self_cpu_time_total / calls, e.count // calls)
            for e in prof.key_averages(group_by_input_shape=True)}


def summarize(profiles: list[dict], rows: int) -> dict:
    """The median over ``profiles`` (of :func:`profile`) of the total and of each
    operation (absent from a profile: 0 us), the ``rows`` largest, with their spreads."""
    totals = [sum(us for us, _ in p.values()) for p in profiles]
    total = statistics.median(totals)
    ops = []
    for key in set().union(*profiles):
        times = [p.get(key, (0.0, 0))[0] for p in profiles]
        calls = max(p.get(key, (0.0, 0))[1] for p in profiles)
        ops.append({"name": key[0], "shapes": key[1], "calls": calls,
                    "us_per_call": round(statistics.median(times), 1),
                    "us_range": [round(min(times), 1), round(max(times), 1)],
                    "share": round(statistics.median(times) / total, 4)})
    ops.sort(key=lambda o: -o["us_per_call"])
    return {"us_per_call": round(total, 1), "us_range": [round(min(totals), 1), round(max(totals), 1)],
            "ops": ops[:rows]}


def main(argv=None) -> dict:
    a = parse_args(argv)
    torch.set_num_threads(1)
    case = bench_speed.CASES[a.case]
    torch.manual_seed(0)
    n_in, n_out = (int(torch.tensor(m).prod()) for m in (case.in_modes, case.out_modes))
    tt = TTLinear(n_in, n_out, ranks=case.rank, in_modes=case.in_modes, out_modes=case.out_modes)
    dense = nn.Linear(n_in, n_out)
    with torch.no_grad():
        dense.weight.copy_(tt.to_dense())
        dense.bias.copy_(tt.bias)
    x = torch.randn(a.batch, n_in)
    layers = {"ttforge": tt, "dense": dense}
    runs: dict[str, list] = {who: [] for who in layers}
    for _ in range(a.repeats):  # interleaved, so that a slow spell touches both
        for who, layer in layers.items():
            runs[who].append(profile(layer, x, a.calls))
    result = {"benchmark": "layer_profile", "command": "python bench/bench_layer_profile.py "
              + " ".join(argv if argv is not None else sys.argv[1:]),
              "case": a.case, "batch": a.batch, "calls": a.calls, "repeats": a.repeats, "threads": 1,
              "profiles": {who: summarize(r, a.rows) for who, r in runs.items()},
              "environment": bench_speed.fast_path_environment("bench/bench_layer_profile.py")}
    for who, prof in result["profiles"].items():
        lo, hi = prof["us_range"]
        print(f"\n{who}: {prof['us_per_call']:.0f} us of self CPU time a call (profiled; "
              f"median of {a.repeats}, {lo:.0f}-{hi:.0f})")
        print("| operation | shapes | calls | us/call | lowest-highest | share |\n|---|---|---|---|---|---|")
        for op in prof["ops"]:
            lo, hi = op["us_range"]
            print(f"| {op['name']} | {op['shapes']} | {op['calls']} | {op['us_per_call']} | {lo}-{hi} "
                  f"| {100 * op['share']:.1f}% |")
    write_result(Path(a.out), result)
    return result


if __name__ == "__main__":
    main()
