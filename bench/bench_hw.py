#!/usr/bin/env python
"""The accelerator's numbers: MAC-lane utilization measured by the engine's own counters
in Amaranth's simulator, the analytic cycle model against the simulation, TT cycles
against a dense matrix-vector engine with the same lanes, and Fmax/resources from
``ttforge report``.

    python bench/bench_hw.py                  # both benchmark layers at L = 4, 8, 16, 32 (~15 min)
    python bench/bench_hw.py --quick          # a smoke run (a small layer, L = 4; seconds)
    python bench/bench_hw.py --synth          # also place and route (ECP5-85F L=16, iCE40UP5K
                                              #   L=4/2/1; ~15 min, one nextpnr at a time)
    python bench/bench_hw.py --render-only    # rewrite the docs section from the JSON files

The benchmark layers (``LAYERS``): the MNIST layer of arXiv:2104.03420 (TT in modes
[7,4,7,4], out modes [4,8,4,4], rank 16, 4-bit cores) and a 1024x1024 rank-8 layer
(8-bit cores). Each is a quantized network built with ``ttforge.quant`` (random integer
cores in the narrow range, step exponents calibrated on random 8-bit inputs, a bias,
16-bit intermediates, 8-bit input and output), with the schedule the cost model picks
for the lane count (``ContractionSchedule.optimal(shape, lanes=L)``: fewest MACs, then
fewest cycles on ``L`` lanes, then the smallest peak), compiled with
``ttforge.hw.program.compile_program`` for the smallest config
(``AccelConfig.for_network``). One input vector is streamed through ``TTEngine`` in
Amaranth's simulator with streams that never wait (after the program is loaded through
the load ports); the output must equal ``ttforge.quant.execute`` exactly, and the
counters ``CYCLES`` and ``BUSY_LANE_CYCLES`` give the utilization
``BUSY_LANE_CYCLES / (L x CYCLES)`` of that inference (input and output phases
included). The analytic model is ``ttforge.hw.cycles.estimate``; the dense engine is
``ttforge.hw.cycles.dense_cycles`` (``ceil(M/L) * N`` cycles, no overheads at all).

Writes ``bench/results/hw.json`` (``--synth``: ``bench/results/hw_synth.json``, runs
appended) and the "## Accelerator" section of ``docs/benchmarks.md`` (generated tables
above a marker; the text below the marker is kept).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


import numpy as np

from ttforge.hw.config import AccelConfig
from ttforge.hw.cycles import ENGINE_TIMING, dense_cycles, estimate
from ttforge.hw.program import compile_program
from ttforge.atomic import atomic_write_text
from ttforge.ir.schedule import ContractionSchedule
from ttforge.ir.tt import TTShape
from ttforge.ir.arith import acc_bits_needed, int_range, rshift_round, saturate
from ttforge.ir.executor import IntLayer, IntNetwork, execute

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared bench helpers
from _env import git, git_dirty, output_path, package_version, result_path, utc_now  # noqa: E402
from _docsection import update_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JSON = ROOT / "bench" / "results" / "hw.json"
DEFAULT_SYNTH_JSON = ROOT / "bench" / "results" / "hw_synth.json"
DEFAULT_DOC = None  # docs/benchmarks.md is rendered from the JSON: python bench/_docgen.py
DOC_HEADER = "# ttforge benchmarks"
SECTION = "## Accelerator"
GENERATED_END = "<!-- end of the generated accelerator tables; the text below is kept by bench_hw.py -->"
UTIL_GOAL = 0.90
MODEL_GOAL = 0.02
ACT_BITS, INTER_BITS = 8, 16


@dataclass(frozen=True)
class LayerSpec:
    key: str
    title: str
    in_modes: tuple[int, ...]
    out_modes: tuple[int, ...]
    rank: int
    w_bits: int


LAYERS = {
    "mnist": LayerSpec("mnist", "MNIST layer of arXiv:2104.03420, 784 -> 512, rank 16, 4-bit cores",
                       (7, 4, 7, 4), (4, 8, 4, 4), 16, 4),
    "1024": LayerSpec("1024", "1024 x 1024, rank 8, 8-bit cores", (4, 8, 8, 4), (4, 8, 8, 4), 8, 8),
    # for the smoke test only
    "small": LayerSpec("small", "64 x 64, rank 4 (smoke test)", (4, 4, 4), (4, 4, 4), 4, 8),
}
DEFAULT_LAYERS = ("mnist", "1024")
DEFAULT_LANES = (4, 8, 16, 32)
#: (device, lanes) placed and routed by --synth, in this order
SYNTH_TARGETS = (("ecp5-85f", 16), ("ice40up5k", 4), ("ice40up5k", 2), ("ice40up5k", 1))
#: analytic rank sweep of the TT/dense comparison
SWEEP_RANKS = (2, 4, 8, 16, 32)


# ------------------------------------------------------------------------ the networks
def build_network(spec: LayerSpec, lanes: int | None, seed: int = 0, rank: int | None = None,
                  calib_rows: int = 32, objective: str = "macs") -> IntNetwork:
    """One quantized TT layer with random integer cores (see the module docstring); its
    order is ``ContractionSchedule.optimal(shape, objective=objective, lanes=lanes)``."""
    rng = np.random.default_rng(seed)
    shape = TTShape(spec.out_modes, spec.in_modes, rank or spec.rank)
    sched = ContractionSchedule.optimal(shape, objective=objective, lanes=lanes)
    _, hi = int_range(spec.w_bits, narrow=True)
    cores = tuple(rng.integers(-hi, hi + 1, size=s).astype(np.int64) for s in shape.core_shapes)
    core_exps = tuple(-(spec.w_bits - 1) for _ in range(shape.d))
    in_f, out_f = shape.in_size, shape.out_size
    lo, top = int_range(ACT_BITS)
    x = rng.integers(lo, top + 1, size=(calib_rows, in_f)).astype(np.int64)
    in_exp = -(ACT_BITS - 1)
    step_exps, prev, bias = [], in_exp, None
    for t, st in enumerate(sched.steps):
        C = cores[st.core].transpose(st.core_axes).reshape(st.P, st.K)
        acc = np.matmul(C, x.reshape(-1, st.A, st.K, st.Q)).reshape(x.shape[0], -1)
        last = t == shape.d - 1
        if last:
            mag = max(1, int(np.abs(acc).max()) // 4)
            bias = rng.integers(-mag, mag + 1, size=out_f).astype(np.int64)
            acc = acc + bias
        target = ACT_BITS if last else INTER_BITS
        shift = max(1, int(np.abs(acc).max())).bit_length() - (target - 1)
        x = saturate(rshift_round(acc, shift), target)
        prev = core_exps[st.core] + prev + shift
        step_exps.append(prev)
    need = 2
    for t, st in enumerate(sched.steps):
        bm = int(np.abs(bias).max()) if t == shape.d - 1 else 0
        need = max(need, acc_bits_needed(st.K, spec.w_bits, ACT_BITS if t == 0 else INTER_BITS, bm))
    layer = IntLayer(in_features=in_f, out_features=out_f, schedule=sched, cores=cores,
                     core_exps=core_exps, w_bits=spec.w_bits, in_bits=ACT_BITS, in_exp=in_exp,
                     inter_bits=INTER_BITS, out_bits=ACT_BITS, step_exps=tuple(step_exps),
                     acc_bits=need, bias=bias, relu=False)
    return IntNetwork((layer,))


# ------------------------------------------------------------------------ the simulation
def simulate(program, x: np.ndarray) -> dict:
    """Load ``program`` into a ``TTEngine`` through its load ports, stream one vector
    ``x`` with ``tvalid`` and ``tready`` always high, and return the output and the
    counters of that inference."""
    from amaranth.sim import Simulator

    from ttforge.hw.engine import TTEngine

    cfg = program.config
    dut = TTEngine(cfg)
    res: dict = {}

    async def bench(ctx):
        for port, values in ((dut.load.dmem, program.dmem),
                             (dut.load.cmem, program.cmem.tolist()),
                             (dut.load.bmem, program.bmem.tolist())):
            ctx.set(port.we, 1)
            for i, v in enumerate(values):
                ctx.set(port.addr, i)
                ctx.set(port.data, int(v))
                await ctx.tick()
            ctx.set(port.we, 0)
        g = program.globals
        ctx.set(dut.program.in_count, g["IN_COUNT"])
        ctx.set(dut.program.in_pad, g["IN_PAD"])
        ctx.set(dut.program.out_count, g["OUT_COUNT"])
        ctx.set(dut.program.out_buf, g["OUT_BUF"])
        ctx.set(dut.out.ready, 1)
        await ctx.tick()
        ctx.set(dut.control.clear_counters, 1)
        await ctx.tick()
        ctx.set(dut.control.clear_counters, 0)
        ctx.set(dut.control.enable, 1)
        n = len(x)
        for i, v in enumerate(x):
            ctx.set(dut.inp.valid, 1)
            ctx.set(dut.inp.payload.data, int(v))
            ctx.set(dut.inp.payload.last, int(i == n - 1))
            _, _, ready = await ctx.tick().sample(dut.inp.ready)
            assert ready, "the engine refused an input element"
        ctx.set(dut.inp.valid, 0)
        out = []
        sig = (dut.out.valid, dut.out.payload.data, dut.out.payload.last)
        # wait for the first output element without a Python step per cycle
        d, last = await ctx.tick().sample(*sig[1:]).until(dut.out.valid)
        out.append(d)
        while not last:
            _, _, v, d, last = await ctx.tick().sample(*sig)
            if v:
                out.append(d)
            else:
                last = 0
        await ctx.tick().repeat(3)     # the counters are final one cycle after done
        res["output"] = out
        for name in ("cycles", "busy_lane_cycles", "in_stall", "out_stall", "sat_events",
                     "vectors"):
            res[name] = int(ctx.get(getattr(dut.counters, name)))
        for name in ("error", "error_code"):
            res[name] = int(ctx.get(getattr(dut.status, name)))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    t0 = time.perf_counter()
    sim.run()
    res["sim_seconds"] = round(time.perf_counter() - t0, 1)
    return res


def measure(spec: LayerSpec, lanes: int, seed: int = 0, sim: bool = True) -> dict:
    net = build_network(spec, lanes, seed)
    layer = net.layers[0]
    cfg = AccelConfig.for_network(net, lanes=lanes)
    prog = compile_program(net, cfg)
    est = estimate(prog)
    lest = est.layers[0]
    M, N = layer.out_features, layer.in_features
    plain = ContractionSchedule.optimal(layer.schedule.shape)   # without the lanes tie-break
    row = {
        "layer": spec.key, "title": spec.title, "lanes": lanes, "seed": seed,
        "order": list(layer.schedule.order),
        "order_without_lanes": list(plain.order),
        "modes": [s.mode for s in prog.steps],
        "steps": [{"A": s.A, "K": s.K, "Q": s.Q, "P": s.P, "mode": s.mode, "out_word": s.out_word,
                   **{k: getattr(sc, k) for k in ("mac_cycles", "stall_cycles", "drain_cycles",
                                                  "zfill_cycles", "overhead_cycles")}}
                  for s, sc in zip(prog.steps, _step_cycles(prog))],
        "config": cfg.to_dict(),
        "macs": int(lest.macs), "dense_macs": M * N,
        "model": {"cycles": est.cycles, "busy_lane_cycles": est.busy_lane_cycles,
                  "utilization": est.utilization, "mac_cycles": lest.mac_cycles,
                  "stall_cycles": lest.stall_cycles, "input_cycles": est.input_cycles,
                  "output_cycles": est.output_cycles},
        "dense_cycles": dense_cycles(M, N, lanes),
    }
    if plain.order != layer.schedule.order:
        pnet = IntNetwork((IntLayer(**{**{f: getattr(layer, f) for f in layer.__dataclass_fields__},
                                      "schedule": plain, "step_exps": layer.step_exps}),))
        pest = estimate(compile_program(pnet, AccelConfig.for_network(pnet, lanes=lanes)))
        row["model_without_lanes"] = {"cycles": pest.cycles, "utilization": pest.utilization}
    if sim:
        rng = np.random.default_rng(seed + 1)
        lo, hi = int_range(ACT_BITS)
        x = rng.integers(lo, hi + 1, size=(1, N)).astype(np.int64)
        golden = execute(net, x)[0]
        r = simulate(prog, x[0])
        row["sim"] = {
            "cycles": r["cycles"], "busy_lane_cycles": r["busy_lane_cycles"],
            "utilization": r["busy_lane_cycles"] / (lanes * r["cycles"]) if r["cycles"] else 0.0,
            "in_stall": r["in_stall"], "out_stall": r["out_stall"], "sat_events": r["sat_events"],
            "bit_exact": bool(np.array_equal(np.array(r["output"], dtype=np.int64), golden)),
            "error_code": r["error_code"], "seconds": r["sim_seconds"],
        }
        row["model_minus_sim"] = est.cycles - r["cycles"]
        row["model_error"] = (est.cycles - r["cycles"]) / r["cycles"] if r["cycles"] else None
        ref = row["sim"]["cycles"]
    else:
        ref = est.cycles
    row["tt_over_dense"] = ref / row["dense_cycles"]
    return row


def _step_cycles(prog):
    from ttforge.hw.cycles import step_cycles

    return [step_cycles(prog.descriptor(i), prog.config) for i in range(len(prog.steps))]


def rank_sweep(lanes: int = 16) -> list[dict]:
    """Analytic TT/dense cycles over ranks (no simulation)."""
    rows = []
    for key in DEFAULT_LAYERS:
        spec = LAYERS[key]
        for r in SWEEP_RANKS:
            shape = TTShape(spec.out_modes, spec.in_modes, r)
            if r > min(x for x in _max_inner_ranks(shape)):
                continue
            net = build_network(spec, lanes, 0, rank=r, calib_rows=4)
            prog = compile_program(net, AccelConfig.for_network(net, lanes=lanes))
            est = estimate(prog)
            M, N = net.layers[0].out_features, net.layers[0].in_features
            rows.append({"layer": key, "rank": r, "lanes": lanes, "order": list(net.layers[0].schedule.order),
                         "macs": est.macs, "dense_macs": M * N, "cycles": est.cycles,
                         "utilization": est.utilization, "dense_cycles": dense_cycles(M, N, lanes),
                         "tt_over_dense": est.cycles / dense_cycles(M, N, lanes),
                         "weight_params": sum(int(np.prod(s)) for s in shape.core_shapes),
                         "dense_params": M * N})
    return rows


def _max_inner_ranks(shape: TTShape) -> list[int]:
    from ttforge.ir.tt import max_ranks

    return list(max_ranks(shape.out_modes, shape.in_modes))[1:-1]


# ------------------------------------------------------------------------ synthesis
def synth_config(device: str, lanes: int) -> AccelConfig:
    """The config placed and routed: ``AccelConfig(lanes=L)`` on ECP5 (what
    ``ttforge report --lanes L`` builds), ``AccelConfig.for_device("ice40up5k", L)`` on
    the iCE40UP5K (the default depths need more block RAM than it has)."""
    if device.startswith("ice40"):
        return AccelConfig.for_device(device, lanes)
    return AccelConfig(lanes=lanes)


def synth(targets, label: str, seeds=(1,)) -> list[dict]:
    from ttforge.hw.report import report
    from ttforge.hw.synth import SynthError

    runs = []
    for (dev, lanes), seed in ((t, s) for t in targets for s in seeds):
        cfg = synth_config(dev, lanes)
        t0 = time.perf_counter()
        commit, dirty = git("rev-parse", "HEAD"), git_dirty("hw")
        print(f"place and route: {dev} L={lanes} seed {seed} ...", file=sys.stderr, flush=True)
        try:
            rep = report(cfg, [dev], seed=seed)
            result, error = rep["devices"][dev], None
        except SynthError as e:
            result, error = None, str(e)
        runs.append({"label": label, "date_utc": utc_now(), "git_commit": commit, "git_dirty": dirty,
                     "device": dev, "lanes": lanes, "seed": seed, "config": cfg.to_dict(), "result": result,
                     "error": error, "wall_s": round(time.perf_counter() - t0, 1)})
        print(f"  {_synth_line(runs[-1])}", file=sys.stderr, flush=True)
    return runs


def _synth_line(run: dict) -> str:
    r = run["result"]
    if r is None:
        return f"{run['device']} L={run['lanes']}: {run['error']}"
    res = r["resources"]
    lut = res.get("lut") or res.get("lc")
    return (f"{run['device']} L={run['lanes']}: {r['fmax_mhz']} MHz, "
            f"{lut['used']}/{lut['available']} LUT/LC")


# ------------------------------------------------------------------------ rendering
def _pct(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{100 * v:.{digits}f}%"


def _n(v) -> str:
    return f"{v:,}" if isinstance(v, int) else str(v)


def markdown(result: dict, synth_runs: list[dict] | None, command: str) -> str:
    env = result["environment"]
    L = [f"{SECTION}", ""]
    L.append(
        f"The TT-contraction engine (`TTEngine`, the core of `TTAccel`) in Amaranth's simulator "
        f"(Amaranth {env.get('amaranth')}), {env['date_utc'][:10]} (the engine commit of each "
        f"run is in the table). "
        f"One input vector per run, streams that never wait; utilization is the engine's own "
        f"counters, `BUSY_LANE_CYCLES / (L x CYCLES)` over the whole inference (input and output "
        f"streaming, descriptor fetches and pipeline drains included). Every output equals the "
        f"integer golden executor (`np.array_equal`). Engine timing: FETCH {ENGINE_TIMING.fetch}, "
        f"DRAIN_WORD {ENGINE_TIMING.drain_word}, DRAIN_ELEM {ENGINE_TIMING.drain_elem} "
        f"(+ BIAS_SELECT {ENGINE_TIMING.bias_select} with more than one lane), "
        f"OUTPUT_LATENCY {ENGINE_TIMING.output_latency} cycles.")
    L += ["", f"Regenerate (the simulations took "
          f"{sum((r.get('sim') or {}).get('seconds', 0) for r in result['rows']) / 60:.0f} min on the shared "
          f"2-core machine of this run: Amaranth's Python simulator does a few hundred to a few "
          f"thousand engine cycles per second; `--synth` places and routes, 10-60 min per ECP5 run "
          f"depending on the load):", "",
          "```", "pip install -e '.[dev,fpga]'", command, "python bench/bench_hw.py --synth",
          "```", ""]
    L.append("**MAC-lane utilization and the cycle model** (per inference)")
    L.append("")
    L.append("| layer | L | schedule (order; step modes) | MACs | cycles (sim) | busy lane cycles | "
             "utilization (sim) | cycles (model) | model - sim | bit-exact | engine commit | sim s |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in result["rows"]:
        s = r.get("sim") or {}
        L.append(
            f"| {r['layer']} | {r['lanes']} | {tuple(r['order'])}; {''.join(map(str, r['modes']))} | "
            f"{_n(r['macs'])} | {_n(s.get('cycles', '-'))} | {_n(s.get('busy_lane_cycles', '-'))} | "
            f"**{_pct(s.get('utilization'))}** | {_n(r['model']['cycles'])} | "
            f"{r.get('model_minus_sim', '-')} ({_pct(r.get('model_error'), 2)}) | "
            f"{'yes' if s.get('bit_exact') else 'NO'} | "
            f"`{(r.get('git_commit') or '?')[:7]}`{'+' if r.get('git_dirty') else ''} | "
            f"{s.get('seconds', '-')} |")
    L.append("")
    goals = []
    for r in result["rows"]:
        s = r.get("sim") or {}
        if r["lanes"] == 16 and s:
            goals.append(f"- {r['layer']}, L=16: utilization >= 90%: "
                         f"**{'met' if s['utilization'] >= UTIL_GOAL else 'NOT met'}** "
                         f"({_pct(s['utilization'])})")
    errs = [abs(r["model_error"]) for r in result["rows"] if r.get("model_error") is not None]
    if errs:
        goals.append(f"- cycle model within 2% of simulation on every run: "
                     f"**{'met' if max(errs) <= MODEL_GOAL else 'NOT met'}** "
                     f"(largest difference {_pct(max(errs), 3)})")
    L += goals + [""]
    tb = [r for r in result["rows"] if "model_without_lanes" in r]
    if tb:
        L.append("Schedules picked without the lane count (`ContractionSchedule.optimal(shape)`, "
                 "same MACs and peak), for comparison (model):")
        L.append("")
        L.append("| layer | L | order | cycles (model) | utilization (model) |")
        L.append("|---|---|---|---|---|")
        for r in tb:
            w = r["model_without_lanes"]
            L.append(f"| {r['layer']} | {r['lanes']} | {tuple(r['order_without_lanes'])} | "
                     f"{_n(w['cycles'])} | {_pct(w['utilization'])} |")
        L.append("")
    L.append("**TT vs a dense matrix-vector engine with the same L** (dense: `ceil(M/L) * N` "
             "cycles, no overheads; TT: the simulated cycles above)")
    L.append("")
    L.append("| layer | L | TT MACs / dense MACs | TT cycles | dense cycles | TT / dense |")
    L.append("|---|---|---|---|---|---|")
    for r in result["rows"]:
        tt = (r.get("sim") or {}).get("cycles", r["model"]["cycles"])
        L.append(f"| {r['layer']} | {r['lanes']} | {r['macs'] / r['dense_macs']:.2f} | {_n(tt)} | "
                 f"{_n(r['dense_cycles'])} | **{r['tt_over_dense']:.2f}** |")
    L.append("")
    if result.get("rank_sweep"):
        L.append("Over ranks (model, L = 16; weights: TT core elements / dense):")
        L.append("")
        L.append("| layer | rank | order | TT MACs / dense | TT / dense cycles | weights TT / dense |")
        L.append("|---|---|---|---|---|---|")
        for r in result["rank_sweep"]:
            L.append(f"| {r['layer']} | {r['rank']} | {tuple(r['order'])} | "
                     f"{r['macs'] / r['dense_macs']:.2f} | {r['tt_over_dense']:.2f} | "
                     f"{_n(r['weight_params'])} / {_n(r['dense_params'])} |")
        L.append("")
    if synth_runs:
        L.append("**Fmax and resources** (`ttforge report`: yosys + nextpnr from pip, the core in "
                 "its I/O harness; `AccelConfig(lanes=L)` on ECP5, `AccelConfig.for_device("
                 "\"ice40up5k\", L)` on the iCE40 unless the run says otherwise; LUT/LC totals "
                 "include the harness; nextpnr seed 1)")
        L.append("")
        L.append("| run | commit | device | L | LUT (LC) | FF | DSP | BRAM | Fmax MHz | goal | critical path |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for run in synth_runs:
            r = run["result"]
            commit = (run.get("git_commit") or "?")[:7] + ("+" if run.get("git_dirty") else "")
            if r is None:
                L.append(f"| {run['label']} | {commit} | {run['device']} | {run['lanes']} | "
                         f"{run['error'].split(';')[0]} | | | | | | |")
                continue
            res = r["resources"]

            def pct(k):
                x = res.get(k)
                return "-" if not x else f"{_n(x['used'])}/{_n(x['available'])}"
            ff = pct("ff") if "ff" in res else _n(sum(v for k, v in r["synth_cells"].items()
                                                      if k.startswith("SB_DFF")))
            cp = r.get("critical_path") or {}
            path = ""
            if cp:
                path = (f"{cp.get('delay_ns', 0):.2f} ns ({cp.get('logic_levels')} logic levels, "
                        f"{cp.get('routing_ns', 0):.2f} ns routing): "
                        f"`{(cp.get('start') or {}).get('cell')}` -> `{(cp.get('end') or {}).get('cell')}`")
            L.append(f"| {run['label']} | {commit} | {run['device']} | {run['lanes']} | "
                     f"{pct('lut') if 'lut' in res else pct('lc')} | {ff} | {pct('dsp')} | {pct('bram')} | "
                     f"**{r['fmax_mhz']}** | {r['target_mhz']:g} | {path} |")
        L.append("")
    return "\n".join(L)


def update_doc(path: Path, section: str) -> None:
    """Rewrite this script's generated part of ``SECTION`` in ``path``."""
    update_section(path, SECTION, section, GENERATED_END)


# ------------------------------------------------------------------------ main


def environment() -> dict:
    return {"date_utc": utc_now(), "python": platform.python_version(),
            "platform": platform.platform(), "amaranth": package_version("amaranth"),
            "ttforge": package_version("ttforge"), "git_commit": git("rev-parse", "HEAD") or None,
            "git_dirty": git_dirty("hw", "model", "quant",
                                   "bench/bench_hw.py")}


def _progress():
    try:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn)
    except ImportError:  # pragma: no cover
        return None
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), transient=False)


def summary_table(result: dict) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover
        return
    t = Table(title="accelerator: simulation vs model vs dense", title_justify="left")
    for col in ("layer", "L", "order", "cycles sim", "util sim", "cycles model", "model-sim",
                "TT/dense", "bit-exact"):
        t.add_column(col, justify="left" if col in ("layer", "order") else "right")
    for r in result["rows"]:
        s = r.get("sim") or {}
        u = s.get("utilization")
        t.add_row(r["layer"], str(r["lanes"]), str(tuple(r["order"])), _n(s.get("cycles", "-")),
                  "-" if u is None else f"[{'green' if u >= UTIL_GOAL else 'red'}]{100 * u:.1f}%[/]",
                  _n(r["model"]["cycles"]), str(r.get("model_minus_sim", "-")),
                  f"{r['tt_over_dense']:.2f}", "yes" if s.get("bit_exact") else "NO")
    Console(width=120).print(t)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: the small layer at L=4, results in a temporary directory")
    p.add_argument("--layers", nargs="+", choices=sorted(LAYERS), default=None,
                   help=f"layers to measure (default {' '.join(DEFAULT_LAYERS)})")
    p.add_argument("--lanes", nargs="+", type=int, default=None,
                   help=f"lane counts (default {' '.join(map(str, DEFAULT_LANES))})")
    p.add_argument("--no-sim", action="store_true", help="the analytic model only")
    p.add_argument("--merge", action="store_true",
                   help="keep the rows of --out for other (layer, L) pairs")
    p.add_argument("--synth", action="store_true",
                   help=f"also place and route {', '.join(f'{d} L={n}' for d, n in SYNTH_TARGETS)} "
                        f"and append the runs to --synth-out")
    p.add_argument("--synth-only", action="store_true", help="place and route only (no simulation)")
    p.add_argument("--synth-label", default="current", help="label of the --synth runs in the table")
    p.add_argument("--seeds", nargs="+", type=int, default=[1], metavar="N",
                   help="nextpnr placement seeds of each --synth run (Fmax moves by up to 20%% with the seed; "
                        "docs/benchmarks.md quotes min and median), default 1")
    p.add_argument("--targets", nargs="+", default=None, metavar="DEVICE:L",
                   help="place and route these (e.g. ecp5-85f:16 ice40up5k:4) instead of the default list")
    p.add_argument("--out", type=result_path, default=None, help=f"JSON results (default {DEFAULT_JSON.relative_to(ROOT)})")
    p.add_argument("--synth-out", type=result_path, default=DEFAULT_SYNTH_JSON, help="JSON of the synthesis runs")
    p.add_argument("--doc", type=output_path("section.md"), default=DEFAULT_DOC, help="also write the long-form Markdown section into this file "
                   "(docs/benchmarks.md itself is rendered from the JSON by bench/_docgen.py)")
    p.add_argument("--no-doc", action="store_true", help="do not touch the Markdown file")
    p.add_argument("--render-only", action="store_true", help="rewrite the docs section from the JSON files")
    args = p.parse_args(argv)
    if args.lanes and any(L < 1 or L & (L - 1) or L > 64 for L in args.lanes):
        p.error("--lanes: powers of two in 1..64")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.quick:
        tmp = Path(tempfile.mkdtemp(prefix="bench_hw_"))
        args.out = args.out or tmp / "hw.json"
        args.doc = tmp / "benchmarks.md" if args.doc == DEFAULT_DOC else args.doc
        if args.synth_out == DEFAULT_SYNTH_JSON:
            args.synth_out = tmp / "hw_synth.json"
    args.out = args.out or DEFAULT_JSON
    layers = args.layers or (["small"] if args.quick else list(DEFAULT_LAYERS))
    lanes = args.lanes or ([4] if args.quick else list(DEFAULT_LANES))
    command = "python bench/bench_hw.py" + (
        "" if (argv is None and len(sys.argv) == 1) else
        " " + " ".join(a for a in (sys.argv[1:] if argv is None else argv)
                       if a not in ("--synth", "--render-only")))
    synth_runs = json.loads(args.synth_out.read_text())["runs"] if args.synth_out.exists() else []
    if args.render_only:
        result = json.loads(args.out.read_text())
    elif args.synth_only:
        result = json.loads(args.out.read_text()) if args.out.exists() else None
    else:
        t0 = time.perf_counter()
        env = environment()          # the code measured: the commit at the start
        rows = []
        todo = [(k, L) for k in layers for L in lanes]
        prog = _progress()
        if prog is not None:
            prog.start()
            task = prog.add_task("simulating", total=len(todo))
        try:
            for key, L in todo:
                if prog is not None:
                    prog.update(task, description=f"{key} L={L}")
                row = measure(LAYERS[key], L, sim=not args.no_sim)
                row["git_commit"], row["git_dirty"] = env["git_commit"], env["git_dirty"]
                rows.append(row)
                if prog is not None:
                    prog.advance(task)
                    s = row.get("sim")
                    prog.console.print(
                        f"{key} L={L}: order {tuple(row['order'])} "
                        + (f"sim {s['cycles']} cycles, {100 * s['utilization']:.1f}%, model "
                           f"{row['model']['cycles']} ({row['model_minus_sim']:+d}), bit-exact "
                           f"{s['bit_exact']}, {s['seconds']} s" if s else
                           f"model {row['model']['cycles']} cycles, {100 * row['model']['utilization']:.1f}%"),
                        highlight=False)
        finally:
            if prog is not None:
                prog.stop()
        if args.merge and args.out.exists():
            old = json.loads(args.out.read_text())
            done = {(r["layer"], r["lanes"]) for r in rows}
            rows = sorted([r for r in old["rows"] if (r["layer"], r["lanes"]) not in done] + rows,
                          key=lambda r: (list(LAYERS).index(r["layer"]), r["lanes"]))
        result = {"benchmark": "accelerator", "format_version": 1, "command": command,
                  "environment": env, "rows": rows,
                  "rank_sweep": [] if args.quick else rank_sweep(16),
                  "seconds": round(time.perf_counter() - t0, 1)}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
        bad = [r for r in rows if r.get("sim") and not r["sim"]["bit_exact"]]
        if bad:
            print(f"NOT bit-exact: {[(r['layer'], r['lanes']) for r in bad]}", file=sys.stderr)
    if args.synth or args.synth_only:
        targets = SYNTH_TARGETS[:2] if args.quick else SYNTH_TARGETS
        if args.targets:
            targets = [(t.split(":")[0], int(t.split(":")[1])) for t in args.targets]
        new = synth(targets, args.synth_label, args.seeds)
        synth_runs = synth_runs + new
        args.synth_out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.synth_out, json.dumps({"runs": synth_runs}, indent=2) + "\n")
        print(f"wrote {args.synth_out}")
    if result is not None:
        summary_table(result)
        if not args.no_doc:
            update_doc(args.doc, markdown(result, synth_runs, result["command"]))
            args.doc and print(f"updated the '{SECTION}' section of {args.doc}")
        if any(r.get("sim") and not r["sim"]["bit_exact"] for r in result["rows"]):
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
