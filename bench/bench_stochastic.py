"""Low-precision training with integer weights: stochastic rounding vs round-to-nearest.

    python bench/bench_stochastic.py                            # digits, seeds 0 1 2 (~10 min)
    python bench/bench_stochastic.py --datasets mnist --merge   # add MNIST-10k, 4-bit (~6 min)
    python bench/bench_stochastic.py --quick          # smoke run (1 seed, 2 epochs, 4-bit only)
    python bench/bench_stochastic.py --render-only    # table and plot from the JSON

(times on the shared 2-vCPU VM with other jobs running, one thread.)

Every run trains a TT network from its random initialisation with
:func:`ttforge.quant.stochastic.train_low_precision`: the TT cores and the dense
classifier are ``w_bits``-bit integers at fixed exponents (activations 8-bit,
intermediates 16-bit, accumulators 32-bit), updated by plain SGD with a cosine learning
rate, the update carried with 16 fractional bits below the weight LSB and then rounded

* **SR**: stochastically, with the xorshift32 stream of ``docs/arithmetic.md``;
* **RN**: to nearest (FLOOR_PLUS_HALF) — the same integers, the same gradients, no randomness;
* **RN, wide master** (reference): to nearest, but into a stored integer 16 bits wider
  than the weight the network runs (``master_extra_bits=16``), the classic
  high-precision-master remedy, at the cost of 3-9x the weight memory (24/20/18 bits
  stored for 8/4/2-bit weights).

Digits: the 64-64 TT layer (3 cores, rank 4) + dense 64-10 of ``bench_quant.py``,
20 epochs, batch 32, at 8-, 4- and 2-bit weights with lr 0.5, plus an lr sweep
(0.05, 0.2) at 8 and 4 bits for SR and RN: the smaller the step, the larger the share
of updates below half an LSB, which round to nearest drops. MNIST-10k (``--datasets mnist``):
784-512 TT ([7,4,7,4] -> [4,8,4,4], rank 8) + dense 512-10, 4-bit, 3 epochs, batch 64,
lr 0.2, on the fixed 8,000/2,000 split.

Every accuracy is the integer executor's on the whole test split, after every epoch,
and the trainer asserts that the executor equals the eval-mode fake-quant network
(``np.array_equal``) and runs exactly the stored integers.

Writes ``bench/results/stochastic.json`` and ``docs/img/stochastic_digits.png`` and
prints the Markdown of ``docs/benchmarks.md`` ("Low-precision training").
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from ttforge.model.data import load_dataset
from ttforge.model.network import ModelConfig
from ttforge.quant.stochastic import LowPrecisionConfig, train_low_precision

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared bench helpers
from _env import git, git_dirty, output_path, result_path, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "mnist-t10k"
OUT = ROOT / "bench" / "results" / "stochastic.json"
PNG = ROOT / "docs" / "img" / "stochastic_digits.png"

MODELS = {
    "digits": dict(kind="tt", hidden=(64,), n_cores=3, ranks=4),
    "mnist": dict(kind="tt", hidden=(512,), ranks=8, in_modes=((7, 4, 7, 4),), out_modes=((4, 8, 4, 4),)),
}
DATA = {"digits": "digits", "mnist": str(MNIST)}
METHODS = {  # label: (rounding, master_extra_bits)
    "SR": ("stochastic", 0),
    "RN": ("nearest", 0),
    "RN, wide master": ("nearest", 16),
}


def plan(quick: bool, datasets: list[str]) -> list[dict]:
    """Every (data, w_bits, method, lr, epochs, batch) group to run, each over all seeds."""
    groups: list[dict] = []
    if quick:
        return [dict(data="digits", w_bits=4, method=m, lr=0.5, epochs=2, batch=32, sweep=False)
                for m in ("SR", "RN")]
    if "digits" in datasets:
        groups += _digits_groups()
    if "mnist" in datasets:
        for m in METHODS:
            groups.append(dict(data="mnist", w_bits=4, method=m, lr=0.2, epochs=3, batch=64, sweep=False))
    return groups


def _digits_groups() -> list[dict]:
    groups = []
    for bits in (8, 4, 2):
        for m in METHODS:
            groups.append(dict(data="digits", w_bits=bits, method=m, lr=0.5, epochs=20, batch=32, sweep=False))
    for lr in (0.05, 0.2):
        for bits in (8, 4):
            for m in ("SR", "RN"):
                groups.append(dict(data="digits", w_bits=bits, method=m, lr=lr, epochs=20, batch=32, sweep=True))
    return groups




def run(groups: list[dict], seeds: list[int], out: Path, merge: bool = False) -> dict:
    t_all = time.perf_counter()
    datasets = {name: load_dataset(DATA[name]) for name in {g["data"] for g in groups}}
    rows = []
    for g in groups:
        rounding, extra = METHODS[g["method"]]
        runs = []
        for seed in seeds:
            cfg = LowPrecisionConfig(w_bits=g["w_bits"], master_extra_bits=extra, rounding=rounding,
                                     lr=g["lr"], epochs=g["epochs"], batch_size=g["batch"], seed=seed)
            res = train_low_precision(ModelConfig(**MODELS[g["data"]]), datasets[g["data"]], cfg)
            h = res.history
            runs.append({
                "seed": seed,
                "sr_seed": res.report["sr_seed"],
                "final_test_acc": h[-1]["test_acc"],
                "test_acc": [r["test_acc"] for r in h],
                "train_loss": [r["train_loss"] for r in h[1:]],  # this and below: epochs 1..E
                "applied_fraction": [r["applied_fraction"] for r in h[1:]],
                "sub_half_fraction": [r["sub_half_fraction"] for r in h[1:]],
                "saturated_fraction": [r["saturated_fraction"] for r in h[1:]],
                "mean_update_lsb": [r["mean_update_lsb"] for r in h[1:]],
                "words_drawn": res.report["words_drawn"],
                "bit_exact": res.report["bit_exact"],
                "seconds": res.report["seconds"],
            })
            print(f"{g['data']:6s} w{g['w_bits']} {g['method']:16s} lr {g['lr']:<5} seed {seed}: "
                  f"{100 * h[-1]['test_acc']:.2f}%  ({res.report['seconds']:.1f} s)", flush=True)
        finals = [r["final_test_acc"] for r in runs]
        rows.append({**g, "rounding": rounding, "master_extra_bits": extra, "runs": runs,
                     "mean": statistics.mean(finals), "std": statistics.stdev(finals) if len(finals) > 1 else 0.0})
    if merge and out.exists():
        old = json.loads(out.read_text())
        rows = [r for r in old["rows"] if r["data"] not in datasets] + rows
    names = list(dict.fromkeys(r["data"] for r in rows))
    seconds = {name: sum(run["seconds"] for r in rows if r["data"] == name for run in r["runs"]) for name in names}
    commands = {}
    for name in names:
        used = sorted({run["seed"] for r in rows if r["data"] == name for run in r["runs"]})
        commands[name] = ("python bench/bench_stochastic.py" + (" --datasets mnist --merge" if name == "mnist" else "")
                          + (f" --seeds {' '.join(map(str, used))}" if used != [0, 1, 2] else ""))
    result = {
        "benchmark": "stochastic",
        "commands": commands,
        "seeds": sorted({run["seed"] for r in rows for run in r["runs"]}),
        "seconds_by_data": seconds,  # training time summed over the runs
        "settings": {"act_bits": 8, "inter_bits": 16, "acc_bits": 32, "frac_bits": 16, "update_bits": 32,
                     "headroom_bits": 1, "calibration": "mse", "lr_schedule": "cosine", "optimizer": "SGD",
                     "models": {k: MODELS[k] for k in names}},
        "rows": rows,
        "seconds": time.perf_counter() - t_all,  # of this invocation
        "threads": torch.get_num_threads(),
        "git": {"commit": git("rev-parse", "HEAD"),
                "dirty": git_dirty("quant", "model", "bench/bench_stochastic.py")},
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "machine": platform.machine()},
    }
    write_result(out, result, announce=False)
    return result


def _pct(row: dict) -> str:
    return f"{100 * row['mean']:.2f} ± {100 * row['std']:.2f}"


def _mean_epochs(row: dict, key: str) -> list[float]:
    series = [r[key] for r in row["runs"]]
    return [statistics.mean(v[i] for v in series) for i in range(len(series[0]))]


def render(result: dict) -> str:
    rows = result["rows"]
    lines = []
    main = [r for r in rows if not r["sweep"]]
    for data in dict.fromkeys(r["data"] for r in main):
        sub = [r for r in main if r["data"] == data]
        g0 = sub[0]
        lines.append(f"**{data}** (lr {g0['lr']}, {g0['epochs']} epochs, batch {g0['batch']}; final test "
                     f"accuracy of the integer executor, mean ± std over seeds "
                     f"{', '.join(str(run['seed']) for run in g0['runs'])}, in %):")
        lines.append("")
        methods = list(dict.fromkeys(r["method"] for r in sub))
        lines.append("| weights | " + " | ".join(methods) + " | SR − RN (pp) | weights changed per step, "
                     "SR / RN | updates below ½ LSB |")
        lines.append("|---" * (len(methods) + 4) + "|")
        for bits in dict.fromkeys(r["w_bits"] for r in sub):
            by = {r["method"]: r for r in sub if r["w_bits"] == bits}
            cells = [_pct(by[m]) if m in by else "-" for m in methods]
            diff = f"{100 * (by['SR']['mean'] - by['RN']['mean']):+.2f}" if "SR" in by and "RN" in by else "-"
            chg = (f"{100 * statistics.mean(_mean_epochs(by['SR'], 'applied_fraction')):.1f}% / "
                   f"{100 * statistics.mean(_mean_epochs(by['RN'], 'applied_fraction')):.1f}%")
            half = f"{100 * statistics.mean(_mean_epochs(by['RN'], 'sub_half_fraction')):.1f}%"
            lines.append(f"| {bits}-bit | " + " | ".join(cells) + f" | {diff} | {chg} | {half} |")
        lines.append("")
    sweep = [r for r in rows if r["sweep"] or (r["data"] == "digits" and not r["sweep"] and r["method"] in ("SR", "RN")
                                               and r["w_bits"] in (8, 4))]
    if any(r["sweep"] for r in rows):
        lines.append("**digits, learning-rate sweep** (same settings; final accuracy in %, and the share of "
                     "weight updates below half an LSB under RN, which it drops):")
        lines.append("")
        lines.append("| weights | lr | SR | RN | SR − RN (pp) | updates < ½ LSB |")
        lines.append("|---|---|---|---|---|---|")
        for bits in (8, 4):
            for lr in sorted({r["lr"] for r in sweep}):
                by = {r["method"]: r for r in sweep if r["w_bits"] == bits and r["lr"] == lr}
                if "SR" not in by or "RN" not in by:
                    continue
                frac = statistics.mean(_mean_epochs(by["RN"], "sub_half_fraction"))
                lines.append(f"| {bits}-bit | {lr} | {_pct(by['SR'])} | {_pct(by['RN'])} | "
                             f"{100 * (by['SR']['mean'] - by['RN']['mean']):+.2f} | {100 * frac:.1f}% |")
        lines.append("")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    main = [r for r in result["rows"] if r["data"] == "digits" and not r["sweep"]]
    widths = list(dict.fromkeys(r["w_bits"] for r in main))
    sweep = [r for r in result["rows"] if r["data"] == "digits" and r["method"] in ("SR", "RN")
             and r["w_bits"] in (8, 4)]
    has_sweep = any(r["sweep"] for r in result["rows"])
    ncol = len(widths) + has_sweep
    fig, axes = plt.subplots(2, ncol, figsize=(4.2 * ncol, 6.4), squeeze=False)
    colors = {"SR": "tab:blue", "RN": "tab:red", "RN, wide master": "tab:gray"}
    for j, bits in enumerate(widths):
        ax, ax2 = axes[0][j], axes[1][j]
        for r in (r for r in main if r["w_bits"] == bits):
            accs = [run["test_acc"] for run in r["runs"]]
            n = len(accs[0])
            ep = list(range(n))
            mean = [100 * statistics.mean(a[i] for a in accs) for i in ep]
            lo = [100 * min(a[i] for a in accs) for i in ep]
            hi = [100 * max(a[i] for a in accs) for i in ep]
            c = colors.get(r["method"], None)
            ls = "--" if r["method"] == "RN, wide master" else "-"
            ax.plot(ep, mean, ls, color=c, label=r["method"])
            ax.fill_between(ep, lo, hi, color=c, alpha=0.15)
            if r["master_extra_bits"] == 0:  # a wide master's changes are not weight changes
                chg = [100 * v for v in _mean_epochs(r, "applied_fraction")]
                ax2.plot(ep[1:], chg, ls, color=c, label=r["method"])
        ax.set_title(f"digits, {bits}-bit weights (lr {main[0]['lr']})")
        ax.set_ylabel("test accuracy (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax2.set_yscale("log")
        ax2.set_xlabel("epoch")
        ax2.set_ylabel("weights changed per step (%)")
        ax2.grid(alpha=0.3, which="both")
        if j == 0:
            ax.legend(loc="lower right")
    if has_sweep:
        for j, bits in enumerate((8, 4)):
            ax = axes[j][-1]
            for m in ("SR", "RN"):
                pts = sorted((r["lr"], r) for r in sweep if r["w_bits"] == bits and r["method"] == m)
                ax.errorbar([lr for lr, _ in pts], [100 * r["mean"] for _, r in pts],
                            yerr=[100 * r["std"] for _, r in pts], marker="o", color=colors[m], label=m, capsize=3)
            ax.set_xscale("log")
            lrs = sorted({r["lr"] for r in sweep})
            ax.set_xticks(lrs, [str(v) for v in lrs])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ax.set_ylim(0, 100)
            ax.set_title(f"digits, {bits}-bit: final accuracy vs lr")
            ax.set_xlabel("learning rate (cosine from)")
            ax.set_ylabel("test accuracy (%)")
            ax.grid(alpha=0.3, which="both")
            ax.legend(loc="lower right")
    fig.suptitle(f"Integer-weight SGD: stochastic rounding vs round to nearest (mean and range of "
                 f"{len(result['seeds'])} seeds)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: 1 seed, 2 epochs, 4-bit digits")
    p.add_argument("--datasets", nargs="+", default=["digits"], choices=["digits", "mnist"],
                   help="digits (default) and/or mnist (4-bit; needs ../shared/data/mnist-t10k)")
    p.add_argument("--merge", action="store_true", help="keep the rows of other data sets already in --out")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--out", type=result_path, default=None, help=f"JSON to write (default {OUT.relative_to(ROOT)}; "
                   f"--quick: a temporary directory)")
    p.add_argument("--png", type=output_path("plot.png"), default=None, help=f"plot to write (default {PNG.relative_to(ROOT)})")
    p.add_argument("--render-only", action="store_true", help="print the table and redraw the plot from --out")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.quick and not args.render_only:
        tmp = Path(tempfile.mkdtemp(prefix="bench_stochastic_"))
        args.out = args.out or tmp / "stochastic.json"
        args.png = args.png or tmp / "stochastic.png"
    args.out = args.out or OUT
    args.png = args.png or PNG
    if args.render_only:
        result = json.loads(args.out.read_text())
    else:
        seeds = args.seeds[:1] if args.quick else args.seeds
        result = run(plan(args.quick, args.datasets), seeds, args.out, args.merge)
    plot(result, args.png)
    print(render(result))
    print(f"total {result['seconds']:.0f} s; written {args.out} and {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
