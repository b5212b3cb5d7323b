"""Quantized accuracy of TT networks: float vs 8/4/2-bit cores, PTQ and QAT, mean of 3 seeds.

    python bench/bench_quant.py               # digits and MNIST-10k, seeds 0 1 2 (~10 min, 1 thread)
    python bench/bench_quant.py --quick       # a smoke run (digits, 1 seed, short training)

For every data set and seed: train the float TT network with ``ttforge.model.train``
(digits: 64-64 TT with 3 cores, rank 4, + dense 64-10, 40 epochs; MNIST-10k: 784-512 TT
([7,4,7,4] -> [4,8,4,4], rank 8) + dense 512-10, 20 epochs, the 8,000/2,000 split), then
for each width configuration quantize it with :func:`ttforge.quant.ptq.quantize_trained`:
PTQ with ``max`` and with ``mse`` calibration (1,024 training samples), and QAT (from the
``mse`` PTQ network, Adam 1e-3 with cosine decay, exponents re-calibrated after every
epoch). Every quantized accuracy is the integer executor's, and equal to the eval-mode
fake-quant network's (``np.array_equal`` of the outputs, asserted on every test sample).

As a control for the extra training QAT gets, the float network is also fine-tuned
with the very same schedule (``float + FT``).

Writes ``bench/results/quant.json`` and prints the Markdown table of
``docs/benchmarks.md`` ("Quantized accuracy").
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from ttforge.model.data import load_dataset
from ttforge.model.network import ModelConfig
from ttforge.model.train import TrainConfig, load_trained, train
from ttforge.quant.ptq import float_accuracy, fine_tune, make_config, quantize_trained

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared bench helpers
from _env import git, git_dirty, result_path, utc_now, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "mnist-t10k"

MODELS = {
    "digits": dict(kind="tt", hidden=(64,), n_cores=3, ranks=4),
    "mnist": dict(kind="tt", hidden=(512,), ranks=8, in_modes=((7, 4, 7, 4),), out_modes=((4, 8, 4, 4),)),
}
DATA = {"digits": "digits", "mnist": str(MNIST)}
TRAIN_EPOCHS = {"digits": 40, "mnist": 20}
QAT_EPOCHS = {"digits": 5, "mnist": 3}
LR = 1e-3
CALIB_SAMPLES = 1024
# (label, w_bits of every layer, overrides {layer: w_bits}); activations 8, intermediates 16
CONFIGS = [
    ("8-bit cores, 8-bit classifier", 8, {}),
    ("4-bit cores, 4-bit classifier", 4, {}),
    ("2-bit cores, 2-bit classifier", 2, {}),
    ("2-bit cores, 8-bit classifier (mixed)", 2, {1: 8}),
]
ACT_BITS, INTER_BITS = 8, 16


def run(datasets: list[str], seeds: list[int], train_epochs: dict, qat_epochs: dict, out: Path) -> dict:
    t_all = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for ds_name in datasets:
            ds = load_dataset(DATA[ds_name])
            per_cfg: dict[str, list[dict]] = {label: [] for label, _, _ in CONFIGS}
            floats = []
            for seed in seeds:
                t0 = time.perf_counter()
                cfg = TrainConfig(data=DATA[ds_name], model=ModelConfig(**MODELS[ds_name]),
                                  epochs=train_epochs[ds_name], seed=seed)
                run_dir = Path(tmp) / f"{ds_name}-{seed}"
                train(cfg, run_dir, progress=False)
                trained = load_trained(run_dir)
                float_acc = float_accuracy(trained.model, ds.x_test, ds.y_test)
                control = copy.deepcopy(trained.model)
                torch.set_num_threads(1)
                fine_tune(control, ds, qat_epochs[ds_name], LR, seed=seed)
                ft_acc = float_accuracy(control, ds.x_test, ds.y_test)
                floats.append({"seed": seed, "float_acc": float_acc, "float_ft_acc": ft_acc,
                               "train_seconds": time.perf_counter() - t0})
                print(f"{ds_name} seed {seed}: float {100 * float_acc:.2f}%  float+FT {100 * ft_acc:.2f}%",
                      file=sys.stderr, flush=True)
                for label, w_bits, layers in CONFIGS:
                    t1 = time.perf_counter()
                    kw = dict(w_bits=w_bits, act_bits=ACT_BITS, inter_bits=INTER_BITS, layer_bits=layers)
                    _, _, r_max = quantize_trained(trained, ds, make_config(2, calibration="max", **kw),
                                                   calib_samples=CALIB_SAMPLES, seed=seed)
                    _, _, r = quantize_trained(trained, ds, make_config(2, calibration="mse", **kw),
                                               calib_samples=CALIB_SAMPLES, qat_epochs=qat_epochs[ds_name],
                                               lr=LR, seed=seed)
                    assert r["ptq"]["bit_exact"] and r["qat"]["bit_exact"] and r_max["ptq"]["bit_exact"]
                    per_cfg[label].append({
                        "seed": seed,
                        "ptq_max_acc": r_max["ptq"]["int_acc"],
                        "ptq_mse_acc": r["ptq"]["int_acc"],
                        "qat_acc": r["qat"]["int_acc"],
                        "bit_exact": True,
                        "layers": [{k: L[k] for k in ("index", "kind", "w_bits", "act_bits", "inter_bits",
                                                      "acc_bits", "core_exps", "step_exps")}
                                   for L in r["layers"]],
                        "on_chip": r["on_chip"],
                        "on_chip_tt_layer": {k: v for k, v in r["on_chip_layers"][0].items()
                                             if k != "intermediate_bytes"},
                        "seconds": time.perf_counter() - t1,
                    })
                    print(f"  {label:40s} PTQ max {100 * r_max['ptq']['int_acc']:.2f}%  PTQ mse "
                          f"{100 * r['ptq']['int_acc']:.2f}%  QAT {100 * r['qat']['int_acc']:.2f}%",
                          file=sys.stderr, flush=True)
            float_mean = statistics.mean(f["float_acc"] for f in floats)
            ft_mean = statistics.mean(f["float_ft_acc"] for f in floats)
            for label, w_bits, layers in CONFIGS:
                runs = per_cfg[label]

                def stat(key):
                    v = [x[key] for x in runs]
                    return {"mean": statistics.mean(v), "std": statistics.pstdev(v)}

                on_chip = runs[0]["on_chip"]  # depends on the architecture and widths only
                on_chip_tt = runs[0]["on_chip_tt_layer"]
                rows.append({
                    "dataset": ds_name,
                    "config": label,
                    "w_bits": w_bits,
                    "layer_bits": {str(k): v for k, v in layers.items()},
                    "act_bits": ACT_BITS,
                    "inter_bits": INTER_BITS,
                    "float_acc": {"mean": float_mean, "std": statistics.pstdev(f["float_acc"] for f in floats)},
                    "float_ft_acc": {"mean": ft_mean, "std": statistics.pstdev(f["float_ft_acc"] for f in floats)},
                    "ptq_max_acc": stat("ptq_max_acc"),
                    "ptq_mse_acc": stat("ptq_mse_acc"),
                    "qat_acc": stat("qat_acc"),
                    "on_chip": on_chip,
                    "on_chip_tt_layer": on_chip_tt,
                    "runs": runs,
                })
            rows.append({"dataset": ds_name, "config": "float", "floats": floats})
    result = {
        "benchmark": "quant",
        "command": "python bench/bench_quant.py",
        "seeds": seeds,
        "settings": {"train_epochs": train_epochs, "qat_epochs": qat_epochs, "qat_lr": LR,
                     "qat_schedule": "Adam, cosine decay to 0, exponents re-calibrated after every epoch",
                     "calib_samples": CALIB_SAMPLES, "act_bits": ACT_BITS, "inter_bits": INTER_BITS,
                     "acc_bits": 32, "models": {k: {kk: list(vv) if isinstance(vv, tuple) else vv
                                                    for kk, vv in v.items()} for k, v in MODELS.items()}},
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "machine": platform.machine(), "date_utc": utc_now(),
                        "git_commit": git("rev-parse", "HEAD"),
                        "git_dirty": git_dirty("ir", "model", "quant", "bench/bench_quant.py")},
        "seconds": time.perf_counter() - t_all,
        "rows": rows,
        "goals": goals(rows),
    }
    write_result(out, result, announce=False)
    return result


def goals(rows: list[dict]) -> list[dict]:
    """8-bit within 0.5 pp of the float TT network; 4-bit cores within 1.5 pp (by PTQ and by QAT)."""
    out = []
    for r in rows:
        if r["config"] == "float" or r["w_bits"] not in (8, 4):
            continue
        limit = 0.5 if r["w_bits"] == 8 else 1.5
        for method, key, ref in (("PTQ (mse) vs float TT", "ptq_mse_acc", "float_acc"),
                                 ("QAT vs float TT", "qat_acc", "float_acc"),
                                 ("QAT vs float + FT (control, stricter)", "qat_acc", "float_ft_acc")):
            drop = 100 * (r[ref]["mean"] - r[key]["mean"])
            out.append({"dataset": r["dataset"], "config": r["config"], "method": method,
                        "drop_pp": drop, "limit_pp": limit, "met": drop <= limit})
    return out


def markdown(result: dict) -> str:
    pct = lambda d: f"{100 * d['mean']:.2f} ± {100 * d['std']:.2f}"  # noqa: E731
    lines = [
        "| data | weights (activations 8-bit, intermediates 16-bit) | float TT | float + FT (control) "
        "| PTQ max | PTQ mse | QAT | QAT − float (pp) | QAT − float + FT (pp) "
        "| on-chip bytes, network (vs dense INT8) | TT layer alone (vs dense INT8) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        if r["config"] == "float":
            continue
        m, t = r["on_chip"], r["on_chip_tt_layer"]
        lines.append(
            f"| {r['dataset']} | {r['config']} | {pct(r['float_acc'])} | {pct(r['float_ft_acc'])} | "
            f"{pct(r['ptq_max_acc'])} | {pct(r['ptq_mse_acc'])} | {pct(r['qat_acc'])} | "
            f"{100 * (r['qat_acc']['mean'] - r['float_acc']['mean']):+.2f} | "
            f"{100 * (r['qat_acc']['mean'] - r['float_ft_acc']['mean']):+.2f} | {m['on_chip_bytes']:,} / "
            f"{m['dense_int8_bytes']:,} = {m['ratio']:.3f} | {t['on_chip_bytes']:,} / "
            f"{t['dense_int8_bytes']:,} = {t['ratio']:.3f} |"
        )
    lines.append("")
    lines.append("Goals (mean over seeds, drop = reference − quantized, in pp; negative = better than the reference):")
    lines.append("")
    for g in result["goals"]:
        lines.append(f"- {g['dataset']}, {g['config']}, {g['method']}: drop {g['drop_pp']:+.2f} pp "
                     f"(limit {g['limit_pp']}) — {'met' if g['met'] else 'NOT met'}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="digits, 1 seed, 3 training epochs, 1 QAT epoch")
    p.add_argument("--datasets", nargs="+", default=["digits", "mnist"], choices=sorted(MODELS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--out", type=result_path, default=ROOT / "bench" / "results" / "quant.json")
    args = p.parse_args(argv)
    if args.quick:
        result = run(["digits"], [0], {"digits": 3}, {"digits": 1}, args.out)
    else:
        result = run(args.datasets, args.seeds, TRAIN_EPOCHS, QAT_EPOCHS, args.out)
    print(markdown(result))
    print(f"\n({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
