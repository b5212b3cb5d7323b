"""The all-integer training step (docs/arithmetic.md, "Training"): accuracy, memory, speed.

    python bench/bench_train_int.py --part digits        # digits: integer from random init, float TT, PTQ + integer FT
    python bench/bench_train_int.py --part mnist-int     # MNIST 784-512-10, TT rank 16, integer from random init
    python bench/bench_train_int.py --part mnist-float   # MNIST float TT + PTQ 4-bit + integer fine-tuning
    python bench/bench_train_int.py --part mnist-fgt     # the float-gradient trainer on the same network
    python bench/bench_train_int.py --part speed         # samples/s of the golden, fast and C (-O2) steps, one thread
    python bench/bench_train_int.py --part agree         # 1,000 digits steps: golden = fast = C after every step
    python bench/bench_train_int.py --part mnist-int --seeds 1   # one seed at a time (run in parallel)
    python bench/bench_train_int.py --part mnist-int --master-bits 4 --inter-bits 8 --grad-bits 8
                                                         # 4-bit masters (the paper's 4-bit update)
    python bench/bench_train_int.py --part mnist-int --ranks 8 --lr-shift 7   # another rank / learning rate
    python bench/bench_train_int.py --part mnist-int --ranks 8 --batch 4      # a batch the ECP5-85F engine fits
    python bench/bench_train_int.py --combine            # parts -> bench/results/train_int.json (+ memory)

Every part runs with one BLAS thread (set before numpy loads) and writes
``bench/results/train_int.<part>.json``; ``--combine`` merges them with the memory table
into ``bench/results/train_int.json``. The network of arXiv:2104.03420: 784-512-10, the
784-512 layer a TT layer [7,4,7,4] -> [4,8,4,4], rank <= 16, 4-bit cores in the forward
pass (8-bit masters), 8-bit activations, 16-bit intermediates and gradients; digits: a
64-64 TT layer (3 cores, rank 4) + dense 64-10. "int" rows are trained entirely by
``ttforge.ir.train`` (the fast path, bit-identical to the golden step) from the xorshift32
random init; "float" rows by ``ttforge.model.train`` (Adam, the project's defaults);
"PTQ" is ``quantize_trained`` at 4-bit cores (mse); "PTQ + int FT" continues from that
artifact with the integer step. Accuracies are the integer executor's on the test split
(MNIST: the last 2,000 of the 10,000-image file), mean and std over the seeds.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import cpu_model, git, git_dirty, package_version, utc_now  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "mnist-t10k"
RESULTS = ROOT / "bench" / "results"
OUT = RESULTS / "train_int.json"
SEEDS = (0, 1, 2)

SETTINGS = {
    "digits": dict(data="digits", hidden=64, cores=3, ranks=4, in_modes=None, out_modes=None,
                   epochs=30, batch=32, lr_shift=7, lr_decay_at=(15, 25), float_epochs=40,
                   ft_epochs=5, ft_lr_shift=9),
    "mnist": dict(data=str(MNIST), hidden=512, cores=4, ranks=16, in_modes=(7, 4, 7, 4), out_modes=(4, 8, 4, 4),
                  epochs=3, batch=32, lr_shift=8, lr_decay_at=(2,), float_epochs=20, ft_epochs=1,
                  ft_lr_shift=10),
}


def _env() -> dict:
    return {"when": utc_now(), "cpu": cpu_model(), "threads": 1, "numpy": np.__version__,
            "torch": package_version("torch"),
            "git": {"commit": git("rev-parse", "HEAD"),
                    # the files this measurement runs; other agents' edits elsewhere in ir/ are named apart
                    "dirty": git_dirty(*MINE),
                    "other_ir_files_dirty": git_dirty("ir", "ttforge")}}


MINE = ("ir/train.py", "ir/train_state.py", "ir/train_loop.py", "ir/cli.py", "ir/train_memory.py", "ir/train_diverge.py",
        "model/train_int.py", "firmware/train_c.py", "firmware/c/ttforge_train.c",
        "bench/bench_train_int.py")


def _data(name: str):
    from ttforge.model.data import load_dataset

    ds = load_dataset(SETTINGS[name]["data"])
    f = lambda t: t.numpy()  # noqa: E731
    return ds, f(ds.x_train).astype(np.float64), f(ds.y_train), f(ds.x_test).astype(np.float64), f(ds.y_test)


def _int_args(name: str, seed: int, ranks: int | None = None):
    s = SETTINGS[name]
    return argparse.Namespace(hidden=s["hidden"], cores=s["cores"], ranks=ranks or s["ranks"], in_modes=s["in_modes"],
                              out_modes=s["out_modes"], seed=seed)


#: Part-name tags of the settings a run may override (e.g. mnist-int-r8-b4).
TAGS = {"ranks": "r", "lr_shift": "lr", "batch": "b"}


def _variant(cfg) -> str:
    """The part-name suffix of a non-default integer config ("" for the default)."""
    d = type(cfg)()
    if (cfg.master_bits, cfg.inter_bits, cfg.grad_bits) == (d.master_bits, d.inter_bits, d.grad_bits):
        return ""
    return f"-m{cfg.master_bits}i{cfg.inter_bits}g{cfg.grad_bits}"


def run_int(name: str, seeds=SEEDS, epochs: int | None = None, widths: dict | None = None,
            ranks: int | None = None, lr_shift: int | None = None, batch: int | None = None) -> dict:
    from ttforge.ir.arith import quantize
    from ttforge.ir.train import TrainConfig, calibrate_state, init_state, predict
    from ttforge.ir.train_loop import epoch_order, run_training, tt_layers as _model

    env = _env()  # the tree the run starts from
    over = {k: v for k, v in (("ranks", ranks), ("lr_shift", lr_shift), ("batch", batch))
            if v is not None and v != SETTINGS[name][k]}
    s = {**SETTINGS[name], **over}
    epochs = epochs or s["epochs"]
    # a longer run halves the learning rate at the same fractions of the run
    decay = tuple(sorted({max(1, round(e * epochs / s["epochs"])) for e in s["lr_decay_at"]}))
    ds, x, y, xt, yt = _data(name)
    runs = []
    for seed in seeds:
        t0 = time.perf_counter()
        cfg = TrainConfig(**(widths or {}))
        state = init_state(_model(_int_args(name, seed, s["ranks"]), x.shape[1], 10, name == "digits"), cfg,
                           seed=seed, lr_shift=s["lr_shift"], in_exp=-(cfg.act_bits - 1))
        xq, xqt = quantize(x, 8, state.in_exp), quantize(xt, 8, state.in_exp)
        cal = epoch_order(seed, 0, len(y))[:256]
        state = calibrate_state(state, xq[cal], y[cal])
        acc0 = float(np.mean(predict(state, xqt) == yt))
        state, hist = run_training(state, xq, y, xqt, yt, epochs, s["batch"], seed, decay,
                                   on_epoch=lambda st, r: print(f"{name} int seed {seed} epoch {r['epoch']}: "
                                                                f"test {100 * r['test_acc']:.2f}% "
                                                                f"({r['seconds']:.0f} s)", file=sys.stderr,
                                                                flush=True))
        from ttforge.ir.train_state import dumps_state
        import hashlib

        runs.append({"seed": seed, "initial_test_acc": acc0, "final_test_acc": hist[-1]["test_acc"],
                     "history": hist, "steps": state.step, "words": state.words,
                     "state_sha256": hashlib.sha256(dumps_state(state)).hexdigest(),
                     "seconds": time.perf_counter() - t0})
    cfg = TrainConfig(**(widths or {}))
    variant = _variant(cfg) + "".join(f"-{TAGS[k]}{v}" for k, v in over.items())
    part = f"{name}-int" + ("" if epochs == SETTINGS[name]["epochs"] else f"-e{epochs}") + variant
    return {"part": part, "data": name, "settings": {**s, "epochs": epochs, "lr_decay_at": decay},
            "config": cfg.to_dict(), "variant": variant,
            "runs": runs, "env": env}


def run_float(name: str, seeds=SEEDS) -> dict:
    """Float TT (Adam), then PTQ at 4-bit cores, then integer fine-tuning from that artifact."""
    import torch

    from ttforge.ir.arith import quantize
    from ttforge.ir.train import TrainConfig, calibrate_state, predict, state_from_network
    from ttforge.ir.train_loop import epoch_order, run_training
    from ttforge.model.network import ModelConfig
    from ttforge.model.train import TrainConfig as FloatConfig, load_trained, train
    from ttforge.quant.ptq import float_accuracy, make_config, quantize_trained

    torch.set_num_threads(1)
    env = _env()
    s = SETTINGS[name]
    ds, x, y, xt, yt = _data(name)
    mcfg = dict(kind="tt", hidden=(s["hidden"],), ranks=s["ranks"])
    if s["in_modes"]:
        mcfg.update(in_modes=[list(s["in_modes"])], out_modes=[list(s["out_modes"])])
    else:
        mcfg.update(n_cores=s["cores"])
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            t0 = time.perf_counter()
            run_dir = Path(tmp) / f"{name}-{seed}"
            train(FloatConfig(data=s["data"], model=ModelConfig(**mcfg), epochs=s["float_epochs"], seed=seed),
                  run_dir, progress=False)
            trained = load_trained(run_dir)
            float_acc = float_accuracy(trained.model, ds.x_test, ds.y_test)
            t_float = time.perf_counter() - t0
            _, inet, r = quantize_trained(trained, ds, make_config(2, w_bits=4, act_bits=8, inter_bits=16),
                                          calib_samples=1024, seed=seed)
            ptq_acc = r["ptq"]["int_acc"]
            cfg = TrainConfig(w_bits=4, master_bits=8, act_bits=8, inter_bits=16, acc_bits=32)
            state = state_from_network(inet, cfg, lr_shift=s["ft_lr_shift"],
                                       sr_seed=int(np.random.SeedSequence([seed, 2]).generate_state(1)[0]) or 1)
            xq, xqt = quantize(x, 8, state.in_exp), quantize(xt, 8, state.in_exp)
            acc_start = float(np.mean(predict(state, xqt) == yt))
            cal = epoch_order(seed, 0, len(y))[:256]
            state = calibrate_state(state, xq[cal], y[cal])
            state, hist = run_training(state, xq, y, xqt, yt, s["ft_epochs"], s["batch"], seed)
            runs.append({"seed": seed, "float_acc": float_acc, "float_seconds": t_float, "ptq_acc": ptq_acc,
                         "ptq_state_acc": acc_start, "ft_acc": hist[-1]["test_acc"], "ft_history": hist})
            print(f"{name} seed {seed}: float {100 * float_acc:.2f}% PTQ {100 * ptq_acc:.2f}% "
                  f"(state {100 * acc_start:.2f}%) int FT {100 * hist[-1]['test_acc']:.2f}%", file=sys.stderr,
                  flush=True)
    return {"part": f"{name}-float", "data": name, "settings": s, "float_model": mcfg, "runs": runs, "env": env}


def run_fgt(seeds=SEEDS, epochs: int = 3) -> dict:
    """The float-gradient trainer (``quant.stochastic.train_low_precision``: PyTorch
    gradients, integer weights, SR updates) on the same MNIST network (rank 16), with the
    settings of ``bench_stochastic.py`` for MNIST (lr 0.2 cosine, batch 64), 4-bit weights
    stored as such (x = 0) and with an 8-bit master (x = 4, as the integer step here)."""
    import torch

    from ttforge.model.network import ModelConfig
    from ttforge.quant.stochastic import LowPrecisionConfig, train_low_precision

    torch.set_num_threads(1)
    env = _env()
    s = SETTINGS["mnist"]
    from ttforge.model.data import load_dataset

    ds = load_dataset(s["data"])
    model = ModelConfig(kind="tt", hidden=(s["hidden"],), ranks=s["ranks"], in_modes=[list(s["in_modes"])],
                        out_modes=[list(s["out_modes"])])
    runs = []
    for extra in (0, 4):
        for seed in seeds:
            t0 = time.perf_counter()
            cfg = LowPrecisionConfig(w_bits=4, master_extra_bits=extra, rounding="stochastic", lr=0.2,
                                     epochs=epochs, batch_size=64, seed=seed)
            res = train_low_precision(model, ds, cfg)
            runs.append({"seed": seed, "master_extra_bits": extra, "final_test_acc": res.history[-1]["test_acc"],
                         "test_acc": [r["test_acc"] for r in res.history], "seconds": time.perf_counter() - t0})
            print(f"mnist float-gradient x={extra} seed {seed}: {100 * runs[-1]['final_test_acc']:.2f}%",
                  file=sys.stderr, flush=True)
    return {"part": "mnist-fgt", "epochs": epochs, "runs": runs, "env": env}


def run_speed(steps_fast: int = 20, steps_golden: int = 3) -> dict:
    from ttforge.ir.arith import quantize
    from ttforge.ir.train import TrainConfig, calibrate_state, init_state, train_step, train_step_fast
    from ttforge.ir.train_loop import tt_layers as _model

    out = {}
    env = _env()
    for name in ("mnist", "digits"):
        s = SETTINGS[name]
        _, x, y, _, _ = _data(name)
        state = init_state(_model(_int_args(name, 0), x.shape[1], 10, name == "digits"), TrainConfig(), seed=0,
                           lr_shift=s["lr_shift"])
        xq = quantize(x, 8, state.in_exp)
        B = s["batch"]
        state = calibrate_state(state, xq[:256], y[:256])
        row = {"batch": B}
        from ttforge.firmware.train_c import build_library, train_step_c

        lib = build_library()
        for label, fn, n in (("fast", lambda st, a, b: train_step_fast(st, a, b)[0], steps_fast),
                             ("golden", train_step, steps_golden),
                             ("c_O2", lambda st, a, b: train_step_c(st, a, b, lib), steps_golden)):
            st = state
            fn(st, xq[:B], y[:B])  # warm-up
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(n):
                st = fn(st, xq[i * B:(i + 1) * B], y[i * B:(i + 1) * B])
            sec, cpu = time.perf_counter() - t0, time.process_time() - c0
            # one thread: the process's CPU time is the time on one core, whatever else runs
            row[label] = {"steps": n, "seconds": sec, "cpu_seconds": cpu, "samples_per_s": n * B / cpu,
                          "samples_per_s_wall": n * B / sec}
            print(f"{name} {label}: {n * B / sec:.1f} samples/s", file=sys.stderr, flush=True)
        out[name] = row
    return {"part": "speed", "speed": out, "env": env}


def run_agree(steps: int = 1000) -> dict:
    """Golden, fast and C steps side by side over ``steps`` digits steps (batch 32, epoch
    orders of seed 0): every state compared after every step (np.array_equal via
    compare_states); the first divergence, if any, is named."""
    from ttforge.firmware.train_c import build_library, train_step_c
    from ttforge.ir.arith import quantize
    from ttforge.ir.train import TrainConfig, calibrate_state, init_state, train_step, train_step_fast
    from ttforge.ir.train_loop import epoch_order, tt_layers as _model
    from ttforge.ir.train_diverge import compare_states

    env = _env()
    s = SETTINGS["digits"]
    _, x, y, _, _ = _data("digits")
    state = init_state(_model(_int_args("digits", 0), x.shape[1], 10, True), TrainConfig(), seed=0,
                       lr_shift=s["lr_shift"])
    xq = quantize(x, 8, state.in_exp)
    state = calibrate_state(state, xq[:256], y[:256])
    lib = build_library()
    g = f = c = state
    B, n, done, first = s["batch"], len(y), 0, None
    t0 = time.perf_counter()
    epoch = 0
    while done < steps and first is None:
        epoch += 1
        order = epoch_order(0, epoch, n)
        for j in range(0, n, B):
            idx = order[j:j + B]
            g = train_step(g, xq[idx], y[idx])
            f = train_step_fast(f, xq[idx], y[idx])[0]
            c = train_step_c(c, xq[idx], y[idx], lib)
            done += 1
            for other, by in ((f, "fast"), (c, "C")):
                m = compare_states(g, other, "golden", by)
                if m is not None:
                    first = m.describe()
                    break
            if done >= steps or first:
                break
    from ttforge.ir.train_state import dumps_state
    import hashlib

    return {"part": "agree", "steps": done, "epochs": epoch, "first_divergence": first,
            "words": g.words, "state_sha256": hashlib.sha256(dumps_state(g)).hexdigest(),
            "seconds": time.perf_counter() - t0, "env": env}


def memory() -> dict:
    from ttforge.ir.train import TrainConfig, init_state
    from ttforge.ir.train_loop import tt_layers as _model
    from ttforge.ir.train_memory import training_memory

    rows = []
    for ranks in (16, 8, 4):
        for batch in (32, 4, 1):  # 4: the batch the ECP5-85F engine trains rank 8 at
            for cfg in (TrainConfig(), TrainConfig(master_bits=4, inter_bits=8, grad_bits=8)):
                a = _int_args("mnist", 0)
                a.ranks = ranks
                st = init_state(_model(a, 784, 10, False), cfg)
                m = training_memory(st, batch)
                rows.append({"ranks": ranks, "batch": batch, "master_bits": cfg.master_bits,
                             "inter_bits": cfg.inter_bits, "grad_bits": cfg.grad_bits, **m})
    return {"rows": rows}


def _ms(vals) -> tuple[float, float]:
    vals = [100 * v for v in vals]
    return statistics.mean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def combine() -> dict:
    parts = {}
    for p in sorted(RESULTS.glob("train_int.*.json")):  # a part run seed by seed: its runs concatenated
        d = json.loads(p.read_text())
        if d["part"] in parts and "runs" in d:
            parts[d["part"]]["runs"] = sorted(parts[d["part"]]["runs"] + d["runs"], key=lambda r: r["seed"])
            parts[d["part"]].setdefault("envs", [parts[d["part"]]["env"]]).append(d["env"])
        else:
            parts[d["part"]] = d
    result = {"benchmark": "train_int", "commands": {
        k: f"python bench/bench_train_int.py --part {k}" for k in ("digits", "mnist-int", "mnist-float", "mnist-fgt",
                                                                  "speed", "agree")},
        "parts": parts, "memory": memory()}
    summary = {}
    for name in ("digits", "mnist"):
        f = parts.get(f"{name}-float")
        ints = sorted((p for k, p in parts.items() if k.startswith(f"{name}-int") and not p.get("variant")),
                      key=lambda p: p["settings"]["epochs"])
        # keyed by the part's own suffix: the same widths at other epochs are another entry
        variants = {k[len(f"{name}-int-"):]: p for k, p in parts.items()
                    if k.startswith(f"{name}-int") and p.get("variant")}
        i = ints[-1] if ints else None  # the longest run is the headline
        row = {}
        if i:
            row["int_from_random"] = _ms([r["final_test_acc"] for r in i["runs"]])
            row["int_epochs"] = i["settings"]["epochs"]
            row["int_by_epochs"] = {str(p["settings"]["epochs"]): _ms([r["final_test_acc"] for r in p["runs"]])
                                    for p in ints}
        if f:
            row["float_tt"] = _ms([r["float_acc"] for r in f["runs"]])
            row["ptq_4bit"] = _ms([r["ptq_acc"] for r in f["runs"]])
            row["ptq_int_ft"] = _ms([r["ft_acc"] for r in f["runs"]])
        if i and f:
            row["int_minus_float_pp"] = row["int_from_random"][0] - row["float_tt"][0]
        for key, v in variants.items():  # other widths of the same step, e.g. 4-bit masters
            c = v["config"]
            vr = {"master_bits": c["master_bits"], "inter_bits": c["inter_bits"], "grad_bits": c["grad_bits"],
                  "ranks": v["settings"]["ranks"], "lr_shift": v["settings"]["lr_shift"],
                  "batch": v["settings"]["batch"],
                  "epochs": v["settings"]["epochs"], "seeds": [r["seed"] for r in v["runs"]],
                  "int_from_random": _ms([r["final_test_acc"] for r in v["runs"]])}
            if f:
                vr["int_minus_float_pp"] = vr["int_from_random"][0] - row["float_tt"][0]
            row.setdefault("int_variants", {})[key] = vr
        g = parts.get(f"{name}-fgt")
        if g:
            for x in (0, 4):
                rs = [r["final_test_acc"] for r in g["runs"] if r["master_extra_bits"] == x]
                if rs:
                    row[f"float_gradient_x{x}"] = _ms(rs)
            row["float_gradient_epochs"] = g["epochs"]
        summary[name] = row
    result["summary"] = summary
    try:
        st = json.loads((RESULTS / "stochastic.json").read_text())
        result["float_gradient_trainer"] = [
            {k: r[k] for k in ("data", "w_bits", "method", "lr", "epochs", "batch", "master_extra_bits")}
            | {"mean_final_acc": statistics.mean(x["final_test_acc"] for x in r["runs"])}
            for r in st["rows"] if r["w_bits"] == 4 and not r.get("sweep")]
        result["float_gradient_trainer_settings"] = st.get("settings", {})
    except (OSError, ValueError, KeyError):
        pass
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=["digits", "mnist-int", "mnist-float", "mnist-fgt", "speed", "agree"])
    p.add_argument("--combine", action="store_true")
    p.add_argument("--epochs", type=int, default=None, help="override the integer epochs (mnist-int)")
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    for w in ("master", "inter", "grad"):  # widths of the integer step (digits, mnist-int); default: TrainConfig's
        p.add_argument(f"--{w}-bits", type=int, default=None, help=f"TrainConfig.{w}_bits of the integer runs")
    p.add_argument("--ranks", type=int, default=None, help="TT rank of the integer runs (default: the setting's)")
    p.add_argument("--lr-shift", type=int, default=None, help="learning rate 2^-N of the integer runs")
    p.add_argument("--batch", type=int, default=None, help="mini-batch of the integer runs (e.g. one that fits "
                   "the ECP5-85F engine)")
    a = p.parse_args(argv)
    from ttforge.atomic import atomic_write_text

    widths = {f"{w}_bits": getattr(a, f"{w}_bits") for w in ("master", "inter", "grad")
              if getattr(a, f"{w}_bits") is not None}
    other = {"ranks": a.ranks, "lr_shift": a.lr_shift, "batch": a.batch}
    if (widths or any(v is not None for v in other.values())) and a.part not in ("digits", "mnist-int"):
        p.error("--master-bits/--inter-bits/--grad-bits/--ranks/--lr-shift/--batch apply to --part digits or "
                "mnist-int")
    if a.part:
        if a.part == "digits":
            res = run_int("digits", a.seeds, a.epochs, widths, **other)
            if not res["variant"]:  # the float reference does not depend on the integer widths
                res["part"] = "digits-int"
                fl = run_float("digits", a.seeds)
                atomic_write_text(RESULTS / "train_int.digits-float.json", json.dumps(fl, indent=1) + "\n")
        elif a.part == "mnist-int":
            res = run_int("mnist", a.seeds, a.epochs, widths, **other)
        elif a.part == "mnist-float":
            res = run_float("mnist", a.seeds)
        elif a.part == "agree":
            res = run_agree()
        elif a.part == "mnist-fgt":
            res = run_fgt(a.seeds)
        else:
            res = run_speed()
        tag = "" if list(a.seeds) == list(SEEDS) or a.part in ("speed", "agree") else \
            "-seeds-" + "-".join(map(str, a.seeds))
        atomic_write_text(RESULTS / f"train_int.{res['part']}{tag}.json", json.dumps(res, indent=1) + "\n")
        res = None
    if a.combine:
        res = combine()
        atomic_write_text(OUT, json.dumps(res, indent=1) + "\n")
        print(json.dumps(res["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
