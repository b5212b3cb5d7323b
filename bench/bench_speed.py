#!/usr/bin/env python
"""Speed of ttforge's TTLinear vs tensorly-torch's factorized TT layer vs nn.Linear.

Same shapes, same ranks, same weights (our cores are copied into the tensorly-torch
layer and the dense weight is their product, and the three outputs are checked to
agree before anything is timed), batch 256, float32, CPU, a fixed thread count.
Forward is timed under ``torch.no_grad()``; forward+backward is one autograd
forward and ``backward`` of a fixed random output gradient, input gradient
included, parameter gradients reset to ``None`` before each run (as
``optimizer.zero_grad()`` does). All contenders are measured in the same process,
interleaved (one call of each per repetition, the order rotating), and the medians
are compared.

When the ``opt_einsum`` package is importable, ``torch.einsum`` (which tensorly-torch
uses) optimizes its contraction order; tensorly-torch is then measured twice, with
``torch.backends.opt_einsum`` off (what ``pip install tensorly-torch`` gives: it does
not depend on opt_einsum) and on.

Also measured, and reported apart from the goals: a *prototype that is not part of
ttforge* which multiplies neighbouring cores pairwise before contracting (see
``docs/benchmarks.md`` for why).

    python bench/bench_speed.py                    # cases a, b, c; writes the results
    python bench/bench_speed.py --cases a --reps 5 --no-doc

Writes ``bench/results/speed.json`` and the "## TT layer speed" section of
``docs/benchmarks.md`` (both atomically).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ttforge.atomic import atomic_write_text
from ttforge.model.layers import TTLinear, apply_schedule
from ttforge.ir.schedule import ContractionSchedule
from ttforge.ir.tt import TTShape

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared bench helpers
from _env import cpu_model, git, git_dirty, package_version, utc_now  # noqa: E402
from _docsection import update_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JSON = ROOT / "bench" / "results" / "speed.json"
DEFAULT_DOC = None  # docs/benchmarks.md is rendered from the JSON: python bench/_docgen.py
DOC_HEADER = "# ttforge benchmarks"
SECTION = "## TT layer speed"


@dataclass(frozen=True)
class Case:
    name: str
    title: str
    in_modes: tuple[int, ...]
    out_modes: tuple[int, ...]
    rank: int


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
def _merge_pairs(cores):
    """Prototype (not in ttforge): multiply cores (0,1), (2,3), ... into fewer, bigger cores."""
    merged = []
    for k in range(0, len(cores), 2):
        if k + 1 == len(cores):
            merged.append(cores[k])
            continue
        a, b = cores[k], cores[k + 1]
        r0, m0, n0, _ = a.shape
        _, m1, n1, r2 = b.shape
        g = torch.einsum("amnr,rpqs->ampnqs", a, b)
        merged.append(g.reshape(r0, m0 * m1, n0 * n1, r2))
    return merged


class MergedPairsTT(nn.Module):
    """Prototype, not part of ttforge: the same TT weight (it shares ``layer``'s cores),
    contracted by first multiplying neighbouring cores pairwise (batch-independent
    cost) and then applying the fewer, bigger cores with ttforge's own schedule code."""

    def __init__(self, layer: TTLinear) -> None:
        super().__init__()
        self.layer = layer
        shape = TTShape.of_cores(_merge_pairs([c.detach() for c in layer.cores]))
        self.schedule = ContractionSchedule.optimal(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = apply_schedule(x, _merge_pairs(list(self.layer.cores)), self.schedule)
        return y + self.layer.bias


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
    in_goals: bool = True


def build_case(case: Case, seed: int = 0) -> tuple[list[Contender], dict]:
    """The contenders for one case, all computing the same function, and facts about them."""
    import tltorch

    torch.manual_seed(seed)
    n_in, n_out = math.prod(case.in_modes), math.prod(case.out_modes)
    ours = TTLinear(n_in, n_out, ranks=case.rank, in_modes=case.in_modes, out_modes=case.out_modes)
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
    proto = MergedPairsTT(ours)

    contenders = [
        Contender("ttforge", "ttforge TTLinear", ours),
        Contender("tltorch", "tensorly-torch blocktt factorized", theirs, opt_einsum=False),
    ]
    if _opt_einsum_available():
        contenders.append(Contender("tltorch_opt_einsum",
                                    "tensorly-torch blocktt factorized + opt_einsum",
                                    theirs, opt_einsum=True))
    contenders += [
        Contender("dense", "nn.Linear", dense),
        Contender("proto_merged_pairs", "prototype, not in ttforge: cores merged pairwise",
                  proto, in_goals=False),
    ]
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
        "prototype_merged_shape": {
            "in_modes": list(proto.schedule.shape.in_modes),
            "out_modes": list(proto.schedule.shape.out_modes),
            "ranks": list(proto.schedule.shape.ranks),
            "order": list(proto.schedule.order),
        },
        "macs_per_sample": {
            "ttforge": ours.schedule.cost(1).macs,
            "dense": n_in * n_out,
            "prototype_merged_pairs": proto.schedule.cost(1).macs,
        },
    }
    return contenders, facts


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


def time_case(contenders: list[Contender], n_in: int, batch: int, reps: int, warmup: int) -> dict:
    torch.manual_seed(1)
    x = torch.randn(batch, n_in, requires_grad=True)
    gy = None
    runs = []
    for c in contenders:
        if gy is None:
            with torch.no_grad():
                gy = torch.randn_like(c.module(x))
        runs.append((c.key, "fwd", _forward(c, x)))
        runs.append((c.key, "fwd_bwd", _forward_backward(c, x, gy)))
    samples: dict[tuple[str, str], list[float]] = {(k, m): [] for k, m, _ in runs}
    for rep in range(warmup + reps):
        shift = rep % len(runs)
        for key, mode, fn in runs[shift:] + runs[:shift]:  # interleaved, rotating order
            t0 = time.perf_counter()
            fn()
            dt = (time.perf_counter() - t0) * 1e3
            if rep >= warmup:
                samples[(key, mode)].append(dt)
    out: dict[str, dict] = {}
    for (key, mode), s in samples.items():
        out.setdefault(key, {})[mode] = _stats(s)
    return out


# -- environment ----------------------------------------------------------------------


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def environment(threads: int) -> dict:
    return {
        "date_utc": utc_now(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "torch_threads": threads,
        "torch": torch.__version__,
        "ttforge": package_version("ttforge"),
        "tensorly": package_version("tensorly"),
        "tensorly_torch": package_version("tensorly-torch"),
        "opt_einsum": package_version("opt_einsum") if _opt_einsum_available() else None,
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": git_dirty("model", "bench/bench_speed.py"),
    }


# -- report ---------------------------------------------------------------------------
def _ratio(results: dict, slower: str, faster: str, mode: str) -> float | None:
    if slower not in results or faster not in results:
        return None
    return results[slower][mode]["median"] / results[faster][mode]["median"]


def summarize(case_results: list[dict]) -> dict:
    goals = []
    for cr in case_results:
        t = cr["timings_ms"]
        for mode in ("fwd", "fwd_bwd"):
            for ref in ("tltorch", "tltorch_opt_einsum"):
                r = _ratio(t, ref, "ttforge", mode)
                if r is not None:
                    goals.append({"case": cr["case"], "mode": mode,
                                  "goal": f"ttforge >= {SPEEDUP_GOAL:g}x faster than {ref}",
                                  "ratio": r, "met": r >= SPEEDUP_GOAL})
            if cr["case"] == "c":
                r = _ratio(t, "dense", "ttforge", mode)
                goals.append({"case": "c", "mode": mode, "goal": "ttforge faster than dense",
                              "ratio": r, "met": r > 1.0})
    return {"goals": goals, "all_met": all(g["met"] for g in goals)}


def _ms(v: float) -> str:
    return f"{v:.2f}" if v < 100 else f"{v:.0f}"


def markdown(result: dict, command: str) -> str:
    env, cases = result["environment"], result["cases"]
    has_oe = any("tltorch_opt_einsum" in c["timings_ms"] for c in cases)
    lines = [SECTION, ""]
    lines.append(
        f"ttforge `TTLinear` vs tensorly-torch `FactorizedLinear(factorization='blocktt', "
        f"implementation='factorized')` vs `nn.Linear`: same modes, ranks and weights, batch "
        f"{result['settings']['batch']}, float32, CPU ({env['cpu']}, "
        f"{env['torch_threads']} torch thread{'s' * (env['torch_threads'] != 1)}), torch "
        f"{env['torch']}, tensorly-torch {env['tensorly_torch']}, measured "
        f"{env['date_utc'][:10]}. Median of {result['settings']['reps']} interleaved "
        f"repetitions, in milliseconds; *x* columns are how many times faster ttforge is "
        f"(median over median). Forward runs under `torch.no_grad()`; forward+backward "
        f"includes the input gradient."
    )
    lines += ["", "Regenerate (a few minutes; `pip install opt_einsum` as well for the opt_einsum "
              "columns):", "", "```", "pip install -e '.[bench]'", command, "```", ""]
    lines += ["| case | in -> out | modes in / out | ranks | weight params ttforge / tltorch / dense "
              "| MACs per sample: ttforge schedule / dense / prototype |",
              "|---|---|---|---|---|---|"]
    for c in cases:
        f = c["facts"]
        p, mac = f["weight_params"], f["macs_per_sample"]
        lines.append(
            f"| {c['case']} | {f['in_features']} -> {f['out_features']} | "
            f"{'x'.join(map(str, f['in_modes']))} / {'x'.join(map(str, f['out_modes']))} | "
            f"{','.join(map(str, f['ranks']['ttforge']))} (tltorch: "
            f"{','.join(map(str, f['ranks']['tltorch']))}) | "
            f"{p['ttforge']:,} / {p['tltorch']:,} / {p['dense']:,} | "
            f"{mac['ttforge']:,} / {mac['dense']:,} / {mac['prototype_merged_pairs']:,} |"
        )
    for mode, title in (("fwd", "Forward"), ("fwd_bwd", "Forward + backward")):
        head = ["case", "ttforge", "tltorch", "x vs tltorch"]
        if has_oe:
            head += ["tltorch + opt_einsum", "x vs tltorch + opt_einsum"]
        head += ["nn.Linear", "x vs nn.Linear", "prototype merged pairs (not ttforge)"]
        lines += ["", f"**{title}** (ms, median)", "", "| " + " | ".join(head) + " |",
                  "|" + "---|" * len(head)]
        for c in cases:
            t = c["timings_ms"]
            row = [c["case"], _ms(t["ttforge"][mode]["median"]), _ms(t["tltorch"][mode]["median"]),
                   f"{_ratio(t, 'tltorch', 'ttforge', mode):.2f}x"]
            if has_oe:
                row += [_ms(t["tltorch_opt_einsum"][mode]["median"]),
                        f"{_ratio(t, 'tltorch_opt_einsum', 'ttforge', mode):.2f}x"]
            row += [_ms(t["dense"][mode]["median"]), f"{_ratio(t, 'dense', 'ttforge', mode):.2f}x",
                    _ms(t["proto_merged_pairs"][mode]["median"])]
            lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Goals (ttforge TTLinear; the prototype column does not count):", ""]
    for g in result["summary"]["goals"]:
        mode = "forward" if g["mode"] == "fwd" else "forward+backward"
        lines.append(f"- case {g['case']}, {mode}: {g['goal']}: "
                     f"**{'met' if g['met'] else 'NOT met'}** ({g['ratio']:.2f}x)")
    lines.append("")
    return "\n".join(lines)


GENERATED_END = "<!-- end of the generated speed tables; the text below is kept by bench_speed.py -->"


def update_doc(path: Path, section: str) -> None:
    """Rewrite this script's generated part of ``SECTION`` in ``path``."""
    update_section(path, SECTION, section, GENERATED_END)


# -- main -----------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default=",".join(DEFAULT_CASES),
                   help=f"comma-separated cases from {', '.join(CASES)} (default a,b,c)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--reps", type=int, default=30, help="timed repetitions per case (default 30)")
    p.add_argument("--warmup", type=int, default=3, help="untimed repetitions first (default 3)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch.set_num_threads (default 1: on a small, shared machine two "
                        "OpenMP threads mostly wait on each other and the medians become noise)")
    p.add_argument("--out", type=Path, default=DEFAULT_JSON, help="JSON results file")
    p.add_argument("--doc", type=Path, default=DEFAULT_DOC, help="also write the long-form Markdown section into this file "
                   "(docs/benchmarks.md itself is rendered from the JSON by bench/_docgen.py)")
    p.add_argument("--no-doc", action="store_true", help="do not touch the Markdown file")
    p.add_argument("--render-only", action="store_true",
                   help="measure nothing: rewrite the Markdown section from the --out JSON")
    args = p.parse_args(argv)
    names = [c.strip() for c in args.cases.split(",") if c.strip()]
    for n in names:
        if n not in CASES:
            p.error(f"--cases: unknown case {n!r}; choose from {', '.join(CASES)}")
    args.case_list = [CASES[n] for n in names]
    for name in ("batch", "reps", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.render_only:
        result = json.loads(args.out.read_text())
        update_doc(args.doc, markdown(result, result["command"]))
        args.doc and print(f"updated the '{SECTION}' section of {args.doc} from {args.out}")
        return result
    torch.set_num_threads(args.threads)
    command = "python bench/bench_speed.py" + (
        "" if argv is None and len(sys.argv) == 1 else " " + " ".join(sys.argv[1:] if argv is None else argv))
    load_before = _loadavg()
    case_results = []
    for case in args.case_list:
        contenders, facts = build_case(case)
        facts["max_abs_diff_vs_ttforge"] = _check_same_function(contenders, facts["in_features"],
                                                                min(args.batch, 64))
        t0 = time.perf_counter()
        timings = time_case(contenders, facts["in_features"], args.batch, args.reps, args.warmup)
        case_results.append({"case": case.name, "title": case.title, "facts": facts,
                             "labels": {c.key: c.label for c in contenders},
                             "timings_ms": timings,
                             "wall_s": round(time.perf_counter() - t0, 1)})
        t = timings
        print(f"case {case.name}: " + ", ".join(
            f"{k} fwd {v['fwd']['median']:.2f} / fwd+bwd {v['fwd_bwd']['median']:.2f} ms"
            for k, v in t.items()), flush=True)
    env = environment(args.threads)
    env["loadavg_before"], env["loadavg_after"] = load_before, _loadavg()
    result = {
        "benchmark": "tt_layer_speed",
        "format_version": 1,
        "command": command,
        "settings": {"batch": args.batch, "reps": args.reps, "warmup": args.warmup,
                     "dtype": "float32", "device": "cpu", "statistic": "median",
                     "forward": "torch.no_grad()",
                     "forward_backward": "autograd forward + backward(fixed grad), input grad "
                                         "included, parameter grads reset to None"},
        "environment": env,
        "cases": case_results,
    }
    result["summary"] = summarize(case_results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    if not args.no_doc:
        update_doc(args.doc, markdown(result, command))
        args.doc and print(f"updated the '{SECTION}' section of {args.doc}")
    for g in result["summary"]["goals"]:
        print(f"  case {g['case']} {g['mode']}: {g['goal']}: "
              f"{'met' if g['met'] else 'NOT met'} ({g['ratio']:.2f}x)")
    return result


if __name__ == "__main__":
    main()
