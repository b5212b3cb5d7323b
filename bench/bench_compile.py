#!/usr/bin/env python
"""``torch.compile`` of a network of TT layers: what compiling costs and what a compiled
call costs, against the same network run eagerly.

The networks: ``tt``, the MNIST-shaped 784-512-10 network of two TT layers (784 x 512
as ``[7, 4, 7, 4] -> [4, 8, 4, 4]`` rank 16, then 512 x 10 rank 4) with a ReLU between;
``qat``, the same network quantized (``quantize_model``, 8-bit, calibrated on random
inputs). A step is forward + ``sum().backward()`` (the quantized network in train
mode), an inference call is a forward under ``torch.no_grad`` (the quantized network in
eval mode). For each network, contender (eager; ``torch.compile`` with the
``aot_eager`` backend, which runs eager kernels; with ``inductor``, the default; and
``inductor-options``, inductor with :data:`ttforge.quant.COMPILE_OPTIONS`, what
``QuantNetwork.compile`` passes; and ``eager-plain``, eager with fake quantization in
the plain operations that compiled calls trace, :data:`ttforge.quant.qat.FAKE_QUANT_IN_PLACE`
off during its calls: against ``eager``, what the in-place fake quantization saves, and
for the float network, which has none, a control of the noise between two identical
eager runs) and batch:

- ``graphs`` / ``breaks``: what ``torch._dynamo.explain`` finds in one call;
- ``first_step_s``: the first step after ``torch._dynamo.reset()`` (tracing and
  compiling included; inductor's on-disk caches off, as on a first run);
- ``new_graphs`` / ``sizes_s``: graphs compiled, and the slowest step, over steps at
  other batch sizes (half the batch plus one, twice, 1, three times, the batch again);
- ``step_ms`` / ``inference_ms``: medians over ``--reps`` repetitions after those, the
  contenders interleaved (order shuffled per repetition, fixed seed);
- ``bit_exact`` (``qat``): whether the inference output equals the eager one and the
  integer executor's (``np.array_equal``).

    python bench/bench_compile.py                     # batches 32 and 256, 1 thread
    python bench/bench_compile.py --batches 32 --reps 5 --out /tmp/c.json

Writes ``bench/results/compile.json`` (atomically).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch._inductor.config
from torch import nn

from ttforge.ir.executor import execute
from ttforge.model.layers import TTLinear
from ttforge.quant import COMPILE_OPTIONS, calibrate, compile_network, qat, quantize_model

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared bench helpers
import bench_speed  # noqa: E402
from _docgen import compile_table  # noqa: E402
from _env import git_dirty, result_path, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "results" / "compile.json"
CONTENDERS = ("eager", "aot_eager", "inductor", "inductor-options", "eager-plain")
NETWORKS = ("tt", "qat")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, nargs="+", default=[32, 256])
    p.add_argument("--reps", type=int, default=51, help="timed repetitions per contender and batch")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    p.add_argument("--networks", nargs="+", choices=NETWORKS, default=list(NETWORKS))
    p.add_argument("--out", type=result_path, default=DEFAULT_OUT)
    a = p.parse_args(argv)
    if min(a.batches) < 1 or a.reps < 1 or a.threads < 1:
        p.error("--batches, --reps and --threads must be at least 1")
    return a


def network(kind: str = "tt") -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(TTLinear(784, 512, 16, in_modes=[7, 4, 7, 4], out_modes=[4, 8, 4, 4]),
                        nn.ReLU(), TTLinear(512, 10, 4))
    if kind == "qat":
        net = quantize_model(net)
        calibrate(net, torch.randn(256, 784))
    return net.train()


class PlainFakeQuant(nn.Module):
    """``net`` run eagerly with :data:`ttforge.quant.qat.FAKE_QUANT_IN_PLACE` off during
    its forward (the backward of the plain operations reads no switch)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qat.FAKE_QUANT_IN_PLACE = False
        try:
            return self.net(x)
        finally:
            qat.FAKE_QUANT_IN_PLACE = True


def _step(module: nn.Module, x: torch.Tensor) -> float:
    t = time.perf_counter()
    module(x).sum().backward()
    return time.perf_counter() - t


def _inference(module: nn.Module, x: torch.Tensor, net: nn.Module) -> float:
    net.eval()  # (the float network has no mode-dependent layer)
    t = time.perf_counter()
    with torch.no_grad():
        module(x)
    elapsed = time.perf_counter() - t
    net.train()
    return elapsed


def _bit_exact(module: nn.Module, net: nn.Module, x: torch.Tensor) -> bool:
    """Whether the quantized network's inference output through ``module`` equals the
    eager one and the integer executor's."""
    net.eval()
    with torch.no_grad():
        y, eager = module(x), net(x)
    net.train()
    inet = compile_network(net)
    golden = execute(inet, inet.quantize_input(x.numpy()))
    as_int = (y.double() * 2.0 ** -net.output_exp()).numpy().astype(np.int64)
    return bool(torch.equal(y, eager) and np.array_equal(as_int, golden))


def _unique_graphs() -> int:
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def prepare(name: str, net: nn.Module, batch: int) -> tuple[nn.Module, dict]:
    """The contender's module, and what compiling it cost (see the module docstring)."""
    if name in ("eager", "eager-plain"):
        module, row = net if name == "eager" else PlainFakeQuant(net), {"graphs": None, "breaks": None}
    else:
        torch._dynamo.reset()
        explained = torch._dynamo.explain(net)(torch.randn(batch, 784))
        torch._dynamo.reset()
        if name == "inductor-options":
            module = torch.compile(net, backend="inductor", options=dict(COMPILE_OPTIONS))
        else:
            module = torch.compile(net, backend=name)
        row = {"graphs": explained.graph_count, "breaks": explained.graph_break_count}
    before = _unique_graphs()
    row["first_step_s"] = _step(module, torch.randn(batch, 784))
    sizes = [batch // 2 + 1, 2 * batch, 1, 3 * batch, batch]
    row["new_graphs"] = _unique_graphs() - before
    mark = _unique_graphs()
    row["sizes"] = sizes
    row["sizes_s"] = max(_step(module, torch.randn(b, 784)) for b in sizes)
    row["new_graphs_at_sizes"] = _unique_graphs() - mark
    _inference(module, torch.randn(batch, 784), net)  # the inference graph (eval mode)
    return module, row


def measure(kind: str, batch: int, contenders, reps: int) -> dict:
    net = network(kind)
    modules, rows = {}, {}
    for name in contenders:
        modules[name], rows[name] = prepare(name, net, batch)
    x = torch.randn(batch, 784)
    times = {name: {"step": [], "inference": []} for name in contenders}
    order = list(contenders)
    rng = random.Random(0)
    for _ in range(reps):
        rng.shuffle(order)
        for name in order:
            net.zero_grad(set_to_none=True)
            times[name]["step"].append(_step(modules[name], x))
            times[name]["inference"].append(_inference(modules[name], x, net))
    for name in contenders:
        rows[name]["step_ms"] = statistics.median(times[name]["step"]) * 1e3
        rows[name]["inference_ms"] = statistics.median(times[name]["inference"]) * 1e3
        rows[name]["bit_exact"] = _bit_exact(modules[name], net, x) if kind == "qat" else None
    return {"network": kind, "batch": batch, "contenders": rows}


def main(argv=None) -> dict:
    a = parse_args(argv)
    torch.set_num_threads(a.threads)
    torch._inductor.config.force_disable_caches = True  # a cold compile, every time
    # compiled in this process: no pool of compile workers left beside the timed calls
    torch._inductor.config.compile_threads = 1
    env = bench_speed.environment()
    env["git_dirty"] = git_dirty("model", "ir", "quant", "bench/bench_compile.py")
    for k in ("tensorly", "tensorly_torch", "opt_einsum"):
        env.pop(k, None)
    env["threads"] = a.threads
    env["loadavg_before"] = bench_speed._loadavg()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = [measure(k, b, a.contenders, a.reps) for k in a.networks for b in a.batches]
    env["loadavg_after"] = bench_speed._loadavg()
    result = {"benchmark": "compile", "format_version": 1,
              "command": "python bench/bench_compile.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "environment": env, "rows": rows,
              "warnings": sorted({str(w.message).splitlines()[0][:200] for w in caught})}
    write_result(a.out, result)
    print(compile_table(result))
    return result


if __name__ == "__main__":
    main()
