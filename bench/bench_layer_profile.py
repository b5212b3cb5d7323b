"""Where a TT layer's forward+backward goes, against ``nn.Linear``'s: torch.profiler's
self CPU time per operation and input shapes, per call, for both (one thread).

    python bench/bench_layer_profile.py [--case a] [--batch 256] [--calls 20]

Writes ``bench/results/layer_profile.json`` (per contender: the operations by self CPU
time, their shapes and call counts; the git commit of the tree that ran). The
profiler adds its own cost to every operation: the shares, not the totals, are the
result (the timed ratios are ``bench_speed.py``'s).
"""

from __future__ import annotations

import argparse
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
    p.add_argument("--rows", type=int, default=14, help="operations kept per contender")
    p.add_argument("--out", type=result_path, default=str(OUT))
    a = p.parse_args(argv)
    for flag in ("batch", "calls", "rows"):
        if getattr(a, flag) < 1:
            p.error(f"--{flag} must be positive")
    return a


def profile(layer: nn.Module, x: torch.Tensor, calls: int, rows: int) -> dict:
    """The operations of ``calls`` forward+backward calls of ``layer`` by self CPU time
    (microseconds per call), with their input shapes."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    def call():
        layer(x).sum().backward()

    for _ in range(5):   # plans, tuner, work buffers settled
        call()
    with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(calls):
            call()
    ops = sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in ops)
    return {"us_per_call": round(total / calls, 1),
            "ops": [{"name": e.key, "shapes": str(e.input_shapes), "calls": e.count // calls,
                     "us_per_call": round(e.self_cpu_time_total / calls, 1),
                     "share": round(e.self_cpu_time_total / total, 4)} for e in ops[:rows]]}


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
    result = {"benchmark": "layer_profile", "command": "python bench/bench_layer_profile.py "
              + " ".join(argv if argv is not None else sys.argv[1:]),
              "case": a.case, "batch": a.batch, "calls": a.calls, "threads": 1,
              "profiles": {"ttforge": profile(tt, x, a.calls, a.rows), "dense": profile(dense, x, a.calls, a.rows)},
              "environment": bench_speed.fast_path_environment("bench/bench_layer_profile.py")}
    for who, prof in result["profiles"].items():
        print(f"\n{who}: {prof['us_per_call']:.0f} us of self CPU time a call (profiled)")
        print("| operation | shapes | calls | us/call | share |\n|---|---|---|---|---|")
        for op in prof["ops"]:
            print(f"| {op['name']} | {op['shapes']} | {op['calls']} | {op['us_per_call']} | {100 * op['share']:.1f}% |")
    write_result(Path(a.out), result)
    return result


if __name__ == "__main__":
    main()
