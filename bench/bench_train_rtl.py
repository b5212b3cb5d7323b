"""The seed's MNIST network trained in RTL: one epoch on the native Verilator harness of the
training engine, equal to the golden trainer, then evaluated.

    python bench/bench_train_rtl.py [--epochs 1] [--lanes 16] [--batch 32] [--seed 0]

The network and the host side are those of ``bench/bench_train_int.py`` ("mnist": 784-512-10,
the 784-512 layer TT [7,4,7,4] -> [4,8,4,4] rank 16, 4-bit forward cores, integer from a
random init, calibrated on 256 samples, 8,000 training images in the order of
``epoch_order``). The same batches go to the RTL (``ttforge.sim.train_native``) and to
``train_step_fast`` (tested equal to the golden step); the two final states must be
byte-identical (their ``.ttts`` sha256 are recorded), and the RTL state's accuracy on the
2,000 test images is reported beside the integer-training figure of ``train_int.json``.
Writes ``bench/results/train_rtl.json`` (the git commit; the tree must be clean).

With ``--checkpoint-dir DIR`` the RTL runs in chunks of ``--chunk`` steps; after each chunk the
state read back from the RTL is compared with the golden trainer's at the same step (a
divergence stops the run there, naming the step) and saved as ``DIR/rtl-STEP.ttts``, with the
cycles so far in ``DIR/progress.json``. A later run with the same arguments resumes from the
last checkpoint: the next chunk starts from the state the RTL produced, so the final state is
still the RTL's own after the whole epoch.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import cpu_model, git, git_dirty, result_path, utc_now  # noqa: E402
from ttforge.atomic import atomic_write_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "train_rtl.json"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lanes", type=int, default=16)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=0, help="stop after this many steps (0: whole epochs)")
    ap.add_argument("--out", type=result_path, default=str(OUT))
    ap.add_argument("--checkpoint-dir", default=None, help="run in chunks, checkpointing the RTL state here")
    ap.add_argument("--chunk", type=int, default=25, help="steps per chunk with --checkpoint-dir")
    a = ap.parse_args(argv)

    from _mnist_case import mnist_start, step_cycles

    from ttforge.hw.trainer.program import TrainEngineConfig, compile_training
    from ttforge.ir.train import predict, train_step_fast
    from ttforge.ir.train_loop import epoch_order
    from ttforge.ir.train_state import dumps_state
    from ttforge.sim.train_native import build_train_native, train_native

    state, xq, y, xqt, yt = mnist_start(a.seed)
    cfg = state.config
    start = state

    def pow2(v):
        return 1 << max(0, int(v) - 1).bit_length()

    probe = TrainEngineConfig(lanes=a.lanes, train=cfg, act_depth=1 << 20, grad_depth=1 << 20,
                              core_depth=1 << 20, bias_depth=1 << 12, desc_depth=64, max_batch=pow2(max(a.batch, a.lanes)),
                              max_classes=16)
    prog = compile_training(state, a.batch, probe)
    r = prog.regions
    ecfg = TrainEngineConfig(lanes=a.lanes, train=cfg, act_depth=pow2(r.act_words), grad_depth=pow2(r.grad_words),
                             core_depth=pow2(r.cmem_size), bias_depth=pow2(r.bmem_size), desc_depth=pow2(len(prog.ops)),
                             max_batch=probe.max_batch, max_classes=16)
    t0 = time.perf_counter()
    build = build_train_native(ecfg)
    build_s = time.perf_counter() - t0
    print(f"harness built in {build_s:.0f} s (cached: {build.cached})", file=sys.stderr, flush=True)

    n = len(y)
    steps = math.ceil(n / a.batch)
    batches = []
    for epoch in range(1, a.epochs + 1):
        order = epoch_order(a.seed, epoch, n)
        batches += [(xq[order[i * a.batch:(i + 1) * a.batch]], y[order[i * a.batch:(i + 1) * a.batch]])
                    for i in range(steps)]
    batches = [b for b in batches if len(b[1]) == a.batch]   # the engine's program has one batch size
    if a.steps:
        batches = batches[:a.steps]
    t0 = time.perf_counter()
    last = [t0]

    def progress(k, st):
        if k % 10 == 0 or k == len(batches):
            now = time.perf_counter()
            print(f"RTL step {k}/{len(batches)} ({(now - last[0]) / 10:.2f} s/step)", file=sys.stderr, flush=True)
            last[0] = now

    t0 = time.perf_counter()
    gold_at = [start]
    for xb, yb in batches:
        gold_at.append(train_step_fast(gold_at[-1], xb, yb)[0])
    gold = gold_at[-1]
    gold_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    if a.checkpoint_dir is None:
        rtl, records = train_native(build, state, batches, on_step=progress)
        cycles = [rec["cycles"] for rec in records]
        rtl_s = time.perf_counter() - t0
    else:
        rtl, cycles, rtl_s = _chunked(a, build, state, batches, gold_at, progress)
        if rtl is None:
            return 1
    rtl_bytes, gold_bytes = dumps_state(rtl.replace(meta=gold.meta)), dumps_state(gold)
    equal = rtl_bytes == gold_bytes
    acc = float(np.mean(predict(rtl, xqt) == yt))
    model_cycles = step_cycles(ecfg, prog, a.batch, xq.shape[1])[1]
    ref = None
    ref_path = ROOT / "bench" / "results" / f"train_int.mnist-int-seeds-{a.seed}.json"
    if ref_path.is_file():
        hist = json.loads(ref_path.read_text())["runs"][0]["history"]
        ref = hist[a.epochs - 1]["test_acc"] if len(hist) >= a.epochs and not a.steps else None
    out = {
        "benchmark": "train_rtl", "command": "python bench/bench_train_rtl.py " + " ".join(argv or sys.argv[1:]),
        "network": "mnist 784-512-10, TT [7,4,7,4]->[4,8,4,4] rank 16", "epochs": a.epochs, "seed": a.seed,
        "lanes": a.lanes, "batch": a.batch, "steps": len(batches), "engine": {
            k: getattr(ecfg, k) for k in ("act_depth", "grad_depth", "core_depth", "bias_depth", "desc_depth",
                                          "max_batch", "acc_bits")},
        "state_equal_to_golden": equal,
        "state_sha256": {"rtl": hashlib.sha256(rtl_bytes).hexdigest(), "golden": hashlib.sha256(gold_bytes).hexdigest()},
        "test_acc": acc, "integer_training_test_acc_same_epochs": ref,
        "cycles_per_step": {"min": min(cycles), "max": max(cycles), "cycle_model": model_cycles},
        "cycles_per_sample": model_cycles / a.batch,
        "samples_per_s_at_50MHz": 50e6 * a.batch / model_cycles,
        "harness": {"build_seconds": round(build_s, 1), "cached": build.cached, "rtl_seconds": round(rtl_s, 1),
                    "checkpointed_chunks": a.chunk if a.checkpoint_dir else None,
                    "sim_cycles_per_second": sum(cycles) / rtl_s, "golden_fast_seconds": round(gold_s, 1)},
        "env": {"when": utc_now(), "cpu": cpu_model(), "git": {"commit": git("rev-parse", "HEAD"),
                                                               "dirty": git_dirty("hw", "sim", "ir", "bench")}},
    }
    atomic_write_text(Path(a.out), json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out[k] for k in ("state_equal_to_golden", "test_acc", "integer_training_test_acc_same_epochs",
                                          "cycles_per_sample", "samples_per_s_at_50MHz")}), flush=True)
    return 0 if equal else 1


def _chunked(a, build, state, batches, gold_at, progress):
    """The RTL run in checkpointed chunks (see the module docstring); ``(state, cycles, seconds)``
    or ``(None, ...)`` at the first chunk whose state differs from the golden trainer's."""
    from ttforge.ir.train_state import dumps_state, load_state, save_state
    from ttforge.sim.train_native import train_native

    ck = Path(a.checkpoint_dir)
    ck.mkdir(parents=True, exist_ok=True)
    key = {"seed": a.seed, "lanes": a.lanes, "batch": a.batch, "epochs": a.epochs, "steps": len(batches),
           "commit": git("rev-parse", "HEAD")}
    prog_file = ck / "progress.json"
    done, cycles, seconds = 0, [], 0.0
    if prog_file.is_file():
        p = json.loads(prog_file.read_text())
        if p["key"] != key:
            print(f"{ck}: checkpoints of another run ({p['key']}); use another --checkpoint-dir", file=sys.stderr)
            return None, [], 0.0
        done, cycles, seconds = p["done"], p["cycles"], p["seconds"]
        state = load_state(ck / f"rtl-{done}.ttts")
        print(f"resuming at step {done}/{len(batches)}", file=sys.stderr, flush=True)
    while done < len(batches):
        t0 = time.perf_counter()
        part = batches[done:done + a.chunk]
        state, records = train_native(build, state, part,
                                      on_step=lambda k, st, base=done: progress(base + k, st))
        seconds += time.perf_counter() - t0
        done += len(part)
        cycles += [rec["cycles"] for rec in records]
        if dumps_state(state.replace(meta=gold_at[done].meta)) != dumps_state(gold_at[done]):
            print(f"step {done}: the RTL state differs from the golden trainer's", file=sys.stderr)
            return None, cycles, seconds
        save_state(state, ck / f"rtl-{done}.ttts")
        atomic_write_text(prog_file, json.dumps({"key": key, "done": done, "cycles": cycles,
                                                 "seconds": seconds}) + "\n")
        print(f"checkpoint {done}/{len(batches)}: equal to golden ({seconds:.0f} s RTL so far)",
              file=sys.stderr, flush=True)
    return state, cycles, seconds


if __name__ == "__main__":
    raise SystemExit(main())
