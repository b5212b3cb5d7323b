#!/usr/bin/env python
"""Speed and memory of ttforge's TTLinear vs tensorly-torch's factorized TT layer vs nn.Linear.

Same shapes, same ranks, same weights (our cores are copied into the tensorly-torch
layer and the dense weight is their product, and the outputs are checked to agree
before anything is timed), float32, CPU. Forward is timed under ``torch.no_grad()``;
forward+backward is one autograd forward and ``backward`` of a fixed random output
gradient, input gradient included, parameter gradients reset to ``None`` before each
run (as ``optimizer.zero_grad()`` does). All contenders of a table are measured in the
same process, interleaved (one call of each per repetition, in an order shuffled per
repetition with a fixed seed: a rotating order gave each contender the same predecessor
in every repetition, and the one after ``nn.Linear``'s forward+backward ran 0.3-0.9 ms
slower, measured on two identical ttforge computations), and
medians are compared: wall-clock time (the figure the goals use) and, beside it, the
process CPU time (less sensitive to other processes on a loaded machine at 1 thread).

Contenders: ``ttforge`` is ``TTLinear`` as users get it (``impl="fast"``: contraction
chosen for the float cost of the batch, :mod:`ttforge.model.fast`; a forward without
autograd reuses the merged cores of the previous call while the cores are unchanged, as
inference does); ``ttforge_uncached`` (headline table only) is the same layer with the
cores merged again on every call, what the first call after a weight change costs;
``ttforge_schedule`` is the same layer following the hardware's contraction order
(``impl="schedule"``, what quantization and the accelerator use); tensorly-torch is
measured with ``torch.backends.opt_einsum`` off (what ``pip install tensorly-torch``
gives) and on (when the ``opt_einsum`` package is importable); ``dense`` is
``nn.Linear``.

Conditions: every table is measured at 1 and 2 torch threads, idle and with one core
kept busy by a background process (``--conditions``; "idle" means no load *of ours*:
on a shared machine other jobs may run). A batch sweep (1 .. 4096) checks that there
is no cliff, and the peak memory allocated during forward+backward is measured with
the PyTorch profiler's allocation events.

    python bench/bench_speed.py                          # everything; writes the JSON
    python bench/bench_speed.py --cases a --reps 5 --conditions 1:idle --no-sweep

Writes ``bench/results/speed.json`` (atomically); ``python bench/_docgen.py`` renders
docs/benchmarks.md from it.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ttforge.atomic import atomic_write_text
from ttforge.ir.tt import TTShape
from ttforge.model import fast
from ttforge.model.layers import TTLinear

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared bench helpers
from _env import cpu_model, git, git_dirty, package_version, result_path, utc_now  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JSON = ROOT / "bench" / "results" / "speed.json"


@dataclass(frozen=True)
class Case:
    name: str
    title: str
    in_modes: tuple[int, ...]
    out_modes: tuple[int, ...]
    rank: int

    @property
    def tt_shape(self) -> TTShape:
        """The layer's TT shape (every internal rank ``rank``)."""
        return TTShape(self.out_modes, self.in_modes, (1, *([self.rank] * (len(self.in_modes) - 1)), 1))


def case_names(p: argparse.ArgumentParser, text: str) -> list[str]:
    """``--cases`` of the fast path's own benchmarks: names of :data:`CASES`, else
    ``p.error`` (exit 2)."""
    names = [c for c in text.split(",") if c]
    unknown = [c for c in names if c not in CASES]
    if unknown:
        p.error(f"--cases: unknown case {unknown[0]!r}; choose from {', '.join(CASES)}")
    return names


def timed(fn: Callable[[], object], reps: int, warmup: int = 3) -> list[float]:
    """Seconds of each of ``reps`` calls of ``fn``, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


CASES = {
    "a": Case("a", "MNIST layer of arXiv:2104.03420 (784 -> 512)", (7, 4, 7, 4), (4, 8, 4, 4), 16),
    "b": Case("b", "1024 x 1024", (4, 8, 8, 4), (4, 8, 8, 4), 8),
    "c": Case("c", "4096 x 4096", (8, 8, 8, 8), (8, 8, 8, 8), 16),
    # for the smoke test only
    "tiny": Case("tiny", "tiny smoke-test layer", (2, 3), (3, 2), 2),
}
DEFAULT_CASES = ("a", "b", "c")
SPEEDUP_GOAL = 5.0


# -- the contenders -------------------------------------------------------------------
def _opt_einsum_available() -> bool:
    return bool(torch.backends.opt_einsum.is_available())


class _OptEinsum:
    """Context manager setting ``torch.backends.opt_einsum.enabled``."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __enter__(self):
        self.before = torch.backends.opt_einsum.enabled
        if _opt_einsum_available():
            torch.backends.opt_einsum.enabled = self.enabled

    def __exit__(self, *exc):
        if _opt_einsum_available():
            torch.backends.opt_einsum.enabled = self.before


@dataclass
class Contender:
    key: str
    label: str
    module: nn.Module
    opt_einsum: bool = False  # torch.backends.opt_einsum.enabled while it runs


ALL_KEYS = ("ttforge", "ttforge_uncached", "ttforge_schedule", "tltorch", "tltorch_opt_einsum", "dense")
#: contenders of the headline table only
HEADLINE_ONLY = ("ttforge_uncached", "ttforge_schedule")


class _Uncached(nn.Module):
    """``layer`` with its kept merged matrices (:class:`ttforge.model.fast.MergeCache`)
    dropped before every call: what the first inference call after a change of the
    weights costs (calls under autograd never keep them, so forward+backward is the
    layer's own)."""

    def __init__(self, layer: TTLinear) -> None:
        super().__init__()
        # a copy: emptying the measured layer's own cache would slow its calls too
        self.layer = copy.deepcopy(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cache = self.layer.__dict__.get("_merge_cache")
        if cache is not None:
            cache.clear()
        return self.layer(x)


def build_case(case: Case, seed: int = 0, keys=ALL_KEYS) -> tuple[list[Contender], dict]:
    """The contenders for one case, all computing the same function, and facts about them."""
    import tltorch

    torch.manual_seed(seed)
    n_in, n_out = math.prod(case.in_modes), math.prod(case.out_modes)
    ours = TTLinear(n_in, n_out, ranks=case.rank, in_modes=case.in_modes, out_modes=case.out_modes)
    hw = TTLinear(n_in, n_out, ranks=case.rank, in_modes=case.in_modes, out_modes=case.out_modes,
                  impl="schedule")
    hw.load_state_dict(ours.state_dict())
    theirs = tltorch.FactorizedLinear(
        in_tensorized_features=case.in_modes,
        out_tensorized_features=case.out_modes,
        factorization="blocktt",
        rank=case.rank,
        implementation="factorized",
    )
    their_ranks = [int(r) for r in theirs.weight.rank]
    their_shapes = [tuple(f.shape) for f in theirs.weight.factors]
    if their_ranks != list(ours.ranks) or their_shapes != [tuple(c.shape) for c in ours.cores]:
        raise SystemExit(
            f"case {case.name}: tensorly-torch built ranks {their_ranks} / cores {their_shapes}, "
            f"ttforge ranks {list(ours.ranks)} / cores {[tuple(c.shape) for c in ours.cores]}; "
            f"the comparison would not be like for like"
        )
    with torch.no_grad():  # the same weights everywhere
        for f, c in zip(theirs.weight.factors, ours.cores):
            f.copy_(c)
        theirs.bias.copy_(ours.bias)
        dense = nn.Linear(n_in, n_out)
        dense.weight.copy_(ours.to_dense())
        dense.bias.copy_(ours.bias)

    everything = {
        "ttforge": Contender("ttforge", "ttforge TTLinear (impl='fast', the default)", ours),
        "ttforge_uncached": Contender("ttforge_uncached",
                                      "ttforge TTLinear (impl='fast'), cores merged again every call",
                                      _Uncached(ours)),
        "ttforge_schedule": Contender("ttforge_schedule",
                                      "ttforge TTLinear (impl='schedule', the hardware's order)", hw),
        "tltorch": Contender("tltorch", "tensorly-torch blocktt factorized", theirs, opt_einsum=False),
        "tltorch_opt_einsum": Contender("tltorch_opt_einsum",
                                        "tensorly-torch blocktt factorized + opt_einsum", theirs,
                                        opt_einsum=True),
        "dense": Contender("dense", "nn.Linear", dense),
    }
    if not _opt_einsum_available():
        everything.pop("tltorch_opt_einsum")
    contenders = [everything[k] for k in keys if k in everything]
    their_params = sum(f.numel() for f in theirs.weight.factors)
    facts = {
        "in_features": n_in,
        "out_features": n_out,
        "in_modes": list(case.in_modes),
        "out_modes": list(case.out_modes),
        "rank": case.rank,
        "ranks": {"ttforge": list(ours.ranks), "tltorch": their_ranks},
        "weight_params": {"ttforge": ours.n_params, "tltorch": their_params,
                          "dense": n_in * n_out},
        "ttforge_schedule_order": list(ours.schedule.order),
        "macs_per_sample": {
            "ttforge_schedule": ours.schedule.cost(1).macs,
            "dense": n_in * n_out,
        },
    }
    return contenders, facts


def call_macs(layer: TTLinear, batch: int) -> dict:
    """Multiply-accumulates of one call at ``batch`` (the input's gradient included in
    forward+backward): ttforge's plan (:func:`ttforge.model.fast.plan_macs`: merges,
    products, recomputation) and the dense layer's one product a pass."""
    plan = fast.plan_for(layer.tt_shape, batch, threads=1)
    dense = batch * layer.in_features * layer.out_features
    return {"ttforge": {"fwd": fast.plan_macs(layer.tt_shape, plan, batch),
                        "fwd_bwd": fast.plan_macs(layer.tt_shape, plan, batch, backward=True)},
            "dense": {"fwd": dense, "fwd_bwd": 3 * dense}}


def floor_ratio(timings: dict, macs: dict, reference: str, mode: str) -> float | None:
    """The ratio ``reference`` / ttforge would reach if ttforge's products ran at the
    rate ``nn.Linear`` measured in the same table (its multiply-accumulates over its
    time; large matrix products at the core's speed): what the goal allows on this
    machine with ttforge's work, whatever the overheads."""
    if reference not in timings or "dense" not in timings or mode not in timings["dense"]:
        return None
    rate = macs["dense"][mode] / timings["dense"][mode]["median"]
    return timings[reference][mode]["median"] * rate / macs["ttforge"][mode]


def plan_facts(layer: TTLinear, batch: int) -> dict:
    """What the fast path does for ``batch``: merged groups, order, chunk, MACs."""
    plan = fast.plan_for(layer.tt_shape, batch)
    d = plan.describe()
    d["batch"] = batch
    d["macs_per_sample"] = sum(st.macs for st in plan.schedule.steps)
    d["merged_cores"] = len(plan.groups)
    return d


def _check_same_function(contenders: list[Contender], n_in: int, batch: int) -> dict[str, float]:
    x = torch.randn(batch, n_in)
    with torch.no_grad():
        with _OptEinsum(False):
            ref = contenders[0].module(x)
        diffs = {}
        for c in contenders[1:]:
            with _OptEinsum(c.opt_einsum):
                y = c.module(x)
            diffs[c.key] = float((y - ref).abs().max())
    scale = float(ref.abs().max())
    for key, d in diffs.items():
        if d > 1e-3 * max(scale, 1.0):
            raise SystemExit(f"{key} disagrees with ttforge by {d:.3g} (output scale {scale:.3g}); "
                             f"the layers do not compute the same function")
    return diffs


# -- timing ---------------------------------------------------------------------------
def _forward(c: Contender, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        with _OptEinsum(c.opt_einsum), torch.no_grad():
            c.module(x)
    return run


def _forward_backward(c: Contender, x: torch.Tensor, gy: torch.Tensor) -> Callable[[], None]:
    params = list(c.module.parameters())

    def run() -> None:
        for p in params:
            p.grad = None
        x.grad = None
        with _OptEinsum(c.opt_einsum):
            c.module(x).backward(gy)
    return run


def _stats(samples: list[float]) -> dict:
    s = sorted(samples)
    q = statistics.quantiles(s, n=4) if len(s) > 1 else [s[0]] * 3
    return {"median": statistics.median(s), "p25": q[0], "p75": q[2], "min": s[0], "n": len(s)}


def time_case(contenders: list[Contender], n_in: int, batch: int, reps: int, warmup: int,
              modes=("fwd", "fwd_bwd")) -> tuple[dict, dict]:
    """Medians of interleaved repetitions: (wall-clock ms, process CPU ms) per key and mode."""
    torch.manual_seed(1)
    x = torch.randn(batch, n_in, requires_grad=True)
    gy = None
    runs = []
    for c in contenders:
        if gy is None:
            with torch.no_grad():
                gy = torch.randn_like(c.module(x))
        if "fwd" in modes:
            runs.append((c.key, "fwd", _forward(c, x)))
        if "fwd_bwd" in modes:
            runs.append((c.key, "fwd_bwd", _forward_backward(c, x, gy)))
    wall: dict[tuple[str, str], list[float]] = {(k, m): [] for k, m, _ in runs}
    cpu: dict[tuple[str, str], list[float]] = {(k, m): [] for k, m, _ in runs}
    for rep in range(warmup + reps):
        order = list(runs)
        random.Random(rep).shuffle(order)  # interleaved, no fixed predecessor
        for key, mode, fn in order:
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            dt, dc = (time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3
            if rep >= warmup:
                wall[(key, mode)].append(dt)
                cpu[(key, mode)].append(dc)
    out: dict[str, dict] = {}
    out_cpu: dict[str, dict] = {}
    for (key, mode), s in wall.items():
        out.setdefault(key, {})[mode] = _stats(s)
        out_cpu.setdefault(key, {})[mode] = _stats(cpu[(key, mode)])
    return out, out_cpu


def tuner_summary(threads: int) -> list[dict]:
    """What the fast path's thread tuner (``THREADS = "auto"``) measured and chose for
    each region of products of the table just timed at ``threads`` threads: recent
    wall-clock ms per thread count (the last few), calls, the calls run at each count,
    and the count it would run next."""
    rows = []
    for (key, n), st in list(fast._TUNER.state.items()):
        if n != threads:
            continue
        rows.append({"region": " ".join(str(k) for k in key[1:]), "calls": st["calls"],
                     "chosen": st["best"], "runs": {str(t): c for t, c in st.get("runs", {}).items()},
                     "ms": {str(t): [round(v * 1e3, 3) for v in ts] for t, ts in st["times"].items()}})
    return rows


# -- memory ---------------------------------------------------------------------------
def peak_memory(c: Contender, x: torch.Tensor, gy: torch.Tensor) -> dict:
    """Peak bytes allocated by the CPU allocator during one forward+backward, above what
    existed before it (parameters, input and output gradient), from the profiler's
    allocation events; parameter gradients created by the backward are included."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    run = _forward_backward(c, x, gy)
    run()  # warm
    fast.clear_workspace()  # its work buffers count as allocated by the measured call
    for p in c.module.parameters():
        p.grad = None
    x.grad = None
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    events = []

    def walk(nodes):
        for n in nodes:
            if n.typed[0] == _EventType.Allocation:
                events.append((n.start_time_ns, n.typed[1].alloc_size))
            walk(n.children)

    walk(prof.profiler.kineto_results.experimental_event_tree())
    events.sort()
    cur = peak = 0
    for _, size in events:
        cur += size
        peak = max(peak, cur)
    params = sum(p.numel() * p.element_size() for p in c.module.parameters())
    if c.key == "tltorch_opt_einsum" or c.key == "tltorch":
        params = sum(f.numel() * f.element_size() for f in c.module.weight.factors) + \
            c.module.bias.numel() * c.module.bias.element_size()
    return {"peak_bytes": peak, "param_bytes": params, "param_and_peak_bytes": peak + params}


# -- background load ------------------------------------------------------------------
class BusyCore:
    """A child process spinning on one core while the block runs (``load == "busy"``)."""

    def __init__(self, load: str) -> None:
        self.load = load
        self.proc: subprocess.Popen | None = None

    def __enter__(self):
        if self.load == "busy":
            self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            time.sleep(0.2)
        return self

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- environment ----------------------------------------------------------------------
def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def environment() -> dict:
    return {
        "date_utc": utc_now(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "torch": torch.__version__,
        "ttforge": package_version("ttforge"),
        "tensorly": package_version("tensorly"),
        "tensorly_torch": package_version("tensorly-torch"),
        "opt_einsum": package_version("opt_einsum") if _opt_einsum_available() else None,
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": git_dirty("model", "bench/bench_speed.py"),
    }


def fast_path_environment(script: str) -> dict:
    """:func:`environment` for a benchmark of the fast path alone (``script``, e.g.
    ``bench/bench_products.py``): no tensorly packages, dirty if ``model/`` or the
    script is."""
    env = environment()
    env["git_dirty"] = git_dirty("model", script)
    for k in ("tensorly", "tensorly_torch", "opt_einsum"):
        env.pop(k, None)
    return env


# -- report ---------------------------------------------------------------------------
def _ratio(results: dict, slower: str, faster: str, mode: str) -> float | None:
    if slower not in results or faster not in results or mode not in results[slower]:
        return None
    return results[slower][mode]["median"] / results[faster][mode]["median"]


GOALS = (("tltorch_opt_einsum", 1.5), ("tltorch", SPEEDUP_GOAL))


def summarize(conditions: list[dict], memory: list[dict], macs: dict | None = None) -> dict:
    """Every goal of every table, with ``floor`` (:func:`floor_ratio`) where ``macs``
    (per case, :func:`call_macs`) is given: a goal whose floor is below it cannot be
    met on this machine by running ttforge's products faster, only by less work."""
    goals = []
    for cond in conditions:
        for cr in cond["cases"]:
            t = cr["timings_ms"]
            m = (macs or {}).get(cr["case"])
            for mode in ("fwd", "fwd_bwd"):
                for ref, need in GOALS + ((("dense", 1.0),) if cr["case"] == "c" else ()):
                    r = _ratio(t, ref, "ttforge", mode)
                    if r is None:
                        continue
                    goal = {"condition": cond["name"], "case": cr["case"], "mode": mode,
                            "goal": ("ttforge faster than dense" if ref == "dense" else
                                     f"ttforge >= {need:g}x faster than {ref}"),
                            "ratio": r, "met": r > need if ref == "dense" else r >= need}
                    if m is not None:
                        goal["floor"], goal["need"] = floor_ratio(t, m, ref, mode), need
                    goals.append(goal)
    for m in memory:
        if m["case"] == "c" and "dense" in m["contenders"] and "ttforge" in m["contenders"]:
            ours, dense = m["contenders"]["ttforge"], m["contenders"]["dense"]
            goals.append({"condition": "memory", "case": "c", "mode": f"fwd_bwd batch {m['batch']}",
                          "goal": "ttforge peak forward+backward memory <= dense",
                          "ratio": dense["peak_bytes"] / max(ours["peak_bytes"], 1),
                          "met": ours["peak_bytes"] <= dense["peak_bytes"]})
    return {"goals": goals, "all_met": all(g["met"] for g in goals)}


# -- main -----------------------------------------------------------------------------
def _condition(text: str) -> tuple[int, str]:
    threads, _, load = text.partition(":")
    if not threads.isdigit() or int(threads) < 1 or load not in ("idle", "busy"):
        raise ValueError(text)
    return int(threads), load


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default=",".join(DEFAULT_CASES),
                   help=f"comma-separated cases from {', '.join(CASES)} (default a,b,c)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--reps", type=int, default=7, help="timed repetitions per table (default 7)")
    p.add_argument("--warmup", type=int, default=1, help="untimed repetitions first (default 1)")
    p.add_argument("--conditions", default="1:idle,1:busy,2:idle,2:busy",
                   help="THREADS:idle|busy, comma-separated (default: 1 and 2 threads, idle and "
                        "with one core busy); the first is the headline table")
    p.add_argument("--sweep-cases", default="a,c", help="cases of the batch sweep (default a,c)")
    p.add_argument("--sweep-batches", default="1,4,16,64,256,1024,4096")
    p.add_argument("--sweep-conditions", default="1:idle,2:busy")
    p.add_argument("--sweep-reps", type=int, default=5)
    p.add_argument("--no-sweep", action="store_true", help="skip the batch sweep")
    p.add_argument("--memory-batches", default="256,4096",
                   help="batches of the peak-memory measurement (default 256,4096)")
    p.add_argument("--out", type=result_path, default=DEFAULT_JSON, help="JSON results file")
    args = p.parse_args(argv)
    try:
        args.case_list = [CASES[n.strip()] for n in args.cases.split(",") if n.strip()]
        args.sweep_case_list = [CASES[n.strip()] for n in args.sweep_cases.split(",") if n.strip()]
    except KeyError as e:
        p.error(f"--cases/--sweep-cases: unknown case {e}; choose from {', '.join(CASES)}")
    try:
        args.condition_list = [_condition(c) for c in args.conditions.split(",") if c.strip()]
        args.sweep_condition_list = [_condition(c) for c in args.sweep_conditions.split(",") if c.strip()]
    except ValueError as e:
        p.error(f"--conditions: {e} is not THREADS:idle or THREADS:busy (e.g. 2:busy)")
    try:
        args.sweep_batch_list = _ints(args.sweep_batches)
        args.memory_batch_list = _ints(args.memory_batches)
    except ValueError:
        p.error("--sweep-batches/--memory-batches: comma-separated integers, e.g. 1,16,256")
    if not args.condition_list:
        p.error("--conditions: give at least one, e.g. 1:idle")
    for name in ("batch", "reps", "sweep_reps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    return args


def sweep_warmup(threads: int) -> int:
    """Untimed calls before a sweep point's repetitions: one, and at more than one thread
    also the thread tuner's first trials (each count :data:`ttforge.model.fast._ThreadTuner.TRIES`
    times), which start afresh at every batch bucket: a sweep point's few repetitions
    measure the steady state, not the trials (beside a busy core a trial at two threads
    can take a time slice, 20-40 ms, and a median of three held two of them)."""
    return 1 + (2 * fast._ThreadTuner.TRIES if threads > 1 else 0)


def _cname(threads: int, load: str) -> str:
    return f"{threads} thread{'s' * (threads != 1)}, {'one core busy' if load == 'busy' else 'idle'}"


def main(argv=None) -> dict:
    args = parse_args(argv)
    command = "python bench/bench_speed.py" + (
        "" if argv is None and len(sys.argv) == 1 else " " + " ".join(sys.argv[1:] if argv is None else argv))
    threads_before = torch.get_num_threads()
    load_before = _loadavg()
    env = environment()  # the tree as it was when the measurement started
    built = {}
    for case in {c.name: c for c in args.case_list + args.sweep_case_list}.values():
        contenders, facts = build_case(case)
        facts["max_abs_diff_vs_ttforge"] = _check_same_function(contenders, facts["in_features"],
                                                                min(args.batch, 64))
        facts["ttforge_plan"] = plan_facts(contenders[0].module, args.batch)
        facts["call_macs"] = call_macs(contenders[0].module, args.batch)
        built[case.name] = (contenders, facts)

    conditions = []
    try:
        for threads, load in args.condition_list:
            torch.set_num_threads(threads)
            cond = {"name": _cname(threads, load), "threads": threads, "load": load, "cases": []}
            with BusyCore(load):
                cond["loadavg_before"] = _loadavg()
                for case in args.case_list:
                    contenders, facts = built[case.name]
                    if conditions:  # the hardware order and the uncached merges: headline only
                        contenders = [c for c in contenders if c.key not in HEADLINE_ONLY]
                    fast._TUNER.state.clear()  # every table starts as a program does
                    t0 = time.perf_counter()
                    wall, cpu = time_case(contenders, facts["in_features"], args.batch, args.reps,
                                          args.warmup)
                    cond["cases"].append({"case": case.name, "timings_ms": wall, "cpu_ms": cpu,
                                          "wall_s": round(time.perf_counter() - t0, 1),
                                          "ttforge_threads": tuner_summary(threads)})
                    print(f"[{cond['name']}] case {case.name}: " + ", ".join(
                        f"{k} {v['fwd']['median']:.2f}/{v['fwd_bwd']['median']:.2f} ms"
                        for k, v in wall.items()), flush=True)
            conditions.append(cond)

        sweep = []
        if not args.no_sweep:
            keys = ("ttforge", "tltorch_opt_einsum", "dense")
            for threads, load in args.sweep_condition_list:
                torch.set_num_threads(threads)
                with BusyCore(load):
                    for case in args.sweep_case_list:
                        contenders = [c for c in built[case.name][0] if c.key in keys]
                        n_in = built[case.name][1]["in_features"]
                        for batch in args.sweep_batch_list:
                            reps = args.sweep_reps if batch <= 256 else max(2, args.sweep_reps - 1)
                            wall, cpu = time_case(contenders, n_in, batch, reps, sweep_warmup(threads))
                            sweep.append({"condition": _cname(threads, load), "threads": threads,
                                          "load": load, "case": case.name, "batch": batch,
                                          "reps": reps, "warmup": sweep_warmup(threads),
                                          "timings_ms": wall, "cpu_ms": cpu,
                                          "ttforge_plan": plan_facts(contenders[0].module, batch)})
                            print(f"[sweep {_cname(threads, load)}] case {case.name} batch {batch}: "
                                  + ", ".join(f"{k} {v['fwd']['median']:.2f}/{v['fwd_bwd']['median']:.2f}"
                                              for k, v in wall.items()), flush=True)

        memory = []
        torch.set_num_threads(1)
        for case in args.case_list:
            contenders, facts = built[case.name]
            for batch in args.memory_batch_list:
                if batch != args.batch and case.name != "c":
                    continue  # the large batch only where the goal is
                torch.manual_seed(2)
                x = torch.randn(batch, facts["in_features"], requires_grad=True)
                gy = torch.randn(batch, facts["out_features"])
                row = {"case": case.name, "batch": batch, "contenders": {}}
                for c in contenders:
                    if batch > args.batch and c.key not in ("ttforge", "dense"):
                        continue  # the goal's pair only (the others take minutes or GBs)
                    if c.key == "ttforge_uncached":
                        continue  # forward+backward is ttforge's own
                    with _OptEinsum(c.opt_einsum):
                        row["contenders"][c.key] = peak_memory(c, x, gy)
                memory.append(row)
                print(f"[memory] case {case.name} batch {batch}: " + ", ".join(
                    f"{k} {v['peak_bytes'] / 2**20:.1f} MiB" for k, v in row["contenders"].items()),
                    flush=True)
    finally:
        torch.set_num_threads(threads_before)

    env["date_utc_end"] = utc_now()
    env["loadavg_before"], env["loadavg_after"] = load_before, _loadavg()
    head = conditions[0]
    cases = []
    for cr in head["cases"]:
        contenders, facts = built[cr["case"]]
        cases.append({"case": cr["case"], "title": CASES[cr["case"]].title, "facts": facts,
                      "labels": {c.key: c.label for c in contenders},
                      "timings_ms": cr["timings_ms"], "cpu_ms": cr["cpu_ms"], "wall_s": cr["wall_s"]})
    result = {
        "benchmark": "tt_layer_speed",
        "format_version": 2,
        "command": command,
        "settings": {"batch": args.batch, "reps": args.reps, "warmup": args.warmup,
                     "threads": head["threads"], "load": head["load"],
                     "dtype": "float32", "device": "cpu", "statistic": "median",
                     "timer": "wall clock (time.perf_counter); cpu_ms: time.process_time",
                     "order": "one call of each contender and pass per repetition, shuffled "
                              "(random.Random(repetition))",
                     "forward": "torch.no_grad()",
                     "forward_backward": "autograd forward + backward(fixed grad), input grad "
                                         "included, parameter grads reset to None",
                     "memory": "peak bytes allocated during one forward+backward above the "
                               "state before it (profiler allocation events, 1 thread)"},
        "environment": env,
        "cases": cases,  # the headline condition (the first of --conditions)
        "conditions": conditions,
        "sweep": sweep,
        "memory": memory,
    }
    result["summary"] = summarize(conditions, memory,
                                  {k: f["call_macs"] for k, (_, f) in built.items()})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out} (render the docs with: python bench/_docgen.py)")
    for g in result["summary"]["goals"]:
        floor = f", {g['floor']:.2f}x at nn.Linear's rate" if g.get("floor") is not None else ""
        print(f"  [{g['condition']}] case {g['case']} {g['mode']}: {g['goal']}: "
              f"{'met' if g['met'] else 'NOT met'} ({g['ratio']:.2f}x{floor})")
    return result


if __name__ == "__main__":
    main()
