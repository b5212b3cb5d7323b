"""Random regression of the accelerator against the golden executor: ``ttforge regress``.

Each *seed* determines one case (:func:`make_case`): a random integer TT network (1-3
layers of 1-3 cores, random modes, ranks including the odd ranks 3, 5 and 7 that
rank-adaptive training leaves, core widths 2-8 bits, stream widths 4-8 bits, bias and
ReLU at random), an :class:`~ttforge.hw.config.AccelConfig` at or above the smallest
that runs it (random lanes and beat packing; depths rounded up to powers of two so that
cases share simulator builds; some widths and depths raised further), random input
vectors and the probabilities of stream gaps and back-pressure.

:func:`run_case` compiles the network for the config, simulates it with cocotb
(:func:`ttforge.sim.runner.run_inference`) and requires:

* every output equal to :func:`ttforge.ir.executor.execute` (``np.array_equal``);
* ``VECTORS``, ``BUSY_LANE_CYCLES`` (the MACs) and ``SAT_EVENTS`` equal to the
  executor's counts, and ``CYCLES`` equal to the analytic cycle model
  (:mod:`ttforge.hw.cycles`) plus the ``IN_STALL`` and ``OUT_STALL`` cycles
  (``docs/hardware.md``, "Engine timing": exact).

A failing case leaves a reproducer directory (:func:`write_reproducer`) with the seed,
the artifact, the config, the inputs, the expected and received outputs, a waveform of
the first failing vector and the first divergence, located in the RTL by running
truncated programs (:func:`locate_divergence`). ``ttforge regress --replay DIR`` reruns
one. :func:`regress` runs many seeds in parallel processes and writes JUnit XML and a
summary (``summary.json`` and a table).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing
import os
import shutil
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from ttforge.atomic import atomic_dir, atomic_write_text, check_output_dir
from ttforge.errors import ConfigError

__all__ = ["RegressCase", "CaseResult", "RegressReport", "random_network", "random_config",
           "make_case", "run_case", "locate_divergence", "write_reproducer", "regress",
           "replay", "regress_cli_spec"]

MAX_RANK = 8


# ----------------------------------------------------------------------------- cases
#: simulators ``ttforge regress`` runs: the cocotb testbench on Icarus or Verilator, or
#: the native Verilator C++ harness (``ttforge.sim.native``) for bulk runs, with the same
#: networks, pauses, output and counter checks
NATIVE = "verilator-native"
REGRESS_SIMULATORS = ("icarus", "verilator", NATIVE)


def _simulator_problem(sim: str) -> str:
    """Why ``sim`` cannot run here ('' when it can), or a bad name."""
    from ttforge.sim.runner import simulator_problem

    if sim not in REGRESS_SIMULATORS:
        raise ConfigError(f"--sim {sim}: use one of {', '.join(REGRESS_SIMULATORS)}")
    return simulator_problem(sim) or ""


def _pow2_at_least(v: int) -> int:
    return 1 << max(0, int(v) - 1).bit_length()


def _layer(rng: np.random.Generator, in_modes, out_modes, ranks, order, *, w_bits, act_bits,
           in_exp, inter_bits, bias, relu, in_features, out_features):
    from ttforge.ir.schedule import ContractionSchedule
    from ttforge.ir.tt import TTShape
    from ttforge.ir.executor import IntLayer

    shape = TTShape(tuple(out_modes), tuple(in_modes), tuple(ranks))
    sched = ContractionSchedule(shape, tuple(order))
    hi = (1 << (w_bits - 1)) - 1
    cores = tuple(rng.integers(-hi, hi + 1, size=s).astype(np.int64) for s in shape.core_shapes)
    core_exps = tuple(int(e) for e in rng.integers(-3, 3, size=shape.d))
    # step exponents that keep each intermediate near a quarter of its range (so that the
    # values neither vanish nor all saturate), jittered so saturation does happen
    x_std, w_std = 2.0 ** (act_bits - 2), max(hi, 1) / np.sqrt(3)
    e, step_exps = in_exp, []
    for t, st in enumerate(sched.steps):
        ob = act_bits if t == len(sched.steps) - 1 else inter_bits
        acc_std = np.sqrt(st.K) * w_std * x_std
        target = 2.0 ** (ob - 2)
        s = int(np.round(np.log2(acc_std / target))) + int(rng.choice([-1, 0, 0, 0, 1]))
        e = core_exps[st.core] + e + s
        step_exps.append(e)
        x_std = target
    b = rng.integers(-(1 << 9), 1 << 9, size=out_features).astype(np.int64) if bias else None
    return IntLayer(in_features=in_features, out_features=out_features, schedule=sched,
                    cores=cores, core_exps=core_exps, w_bits=w_bits, in_bits=act_bits,
                    in_exp=in_exp, inter_bits=inter_bits, out_bits=act_bits,
                    step_exps=tuple(step_exps), acc_bits=48, bias=b, relu=relu)


def _rank(rng: np.random.Generator, limit: int) -> int:
    top = min(limit, MAX_RANK)
    odd = [r for r in (3, 5, 7) if r <= top]
    if odd and rng.random() < 0.5:          # the ranks rank-adaptive training leaves
        return int(rng.choice(odd))
    return int(rng.integers(1, top + 1))


def random_network(rng: np.random.Generator):
    """A random :class:`~ttforge.ir.executor.IntNetwork` (see the module docstring)."""
    from ttforge.ir.schedule import schedule_orders
    from ttforge.ir.tt import max_ranks
    from ttforge.ir.executor import IntNetwork

    act_bits = int(rng.choice([4, 6, 8, 8]))
    inter_bits = int(rng.choice([b for b in (8, 12, 16) if b >= act_bits]))
    in_exp = int(rng.integers(-4, 0))
    layers, in_f = [], None
    n_layers = int(rng.integers(1, 4))
    for li in range(n_layers):
        d = int(rng.integers(1, 4))
        while True:
            top = 5 if d > 1 else 13
            in_modes = [int(rng.integers(1, top)) for _ in range(d)]
            out_modes = [int(rng.integers(1, top)) for _ in range(d)]
            if np.prod(in_modes) >= 4 and np.prod(out_modes) >= 3:
                break
        if in_f is not None:
            while int(np.prod(in_modes)) < in_f:
                in_modes[int(rng.integers(0, d))] += 1
        lim = max_ranks(out_modes, in_modes)
        ranks = [1] + [_rank(rng, lim[k]) for k in range(1, d)] + [1]
        orders = schedule_orders(d)
        order = orders[int(rng.integers(0, len(orders)))]
        n_in, n_out = int(np.prod(in_modes)), int(np.prod(out_modes))
        in_features = in_f if in_f is not None else int(rng.integers(max(1, n_in - 2), n_in + 1))
        out_features = int(rng.integers(max(1, n_out - 2), n_out + 1))
        layer = _layer(rng, in_modes, out_modes, ranks, order, w_bits=int(rng.integers(2, 9)),
                       act_bits=act_bits, in_exp=in_exp, inter_bits=inter_bits,
                       bias=bool(rng.integers(0, 2)),
                       relu=li + 1 < n_layers and bool(rng.integers(0, 2)),
                       in_features=in_features, out_features=out_features)
        layers.append(layer)
        in_f, in_exp = layer.out_features, layer.out_exp
    return IntNetwork(tuple(layers))


def random_config(net, rng: np.random.Generator, lanes: int | None = None,
                  stream_elems: int | None = None):
    """An :class:`AccelConfig` at or above the smallest that runs ``net``.

    One case in seven gets exactly the smallest config (memories filled to the last
    element, where range checks bite). The others get a *pooled* config: widths and
    depths raised to a few standard values (core 8 bits, buffers 16 bits, accumulator 32
    or 48, depths powers of two with a floor), so that different networks share a
    configuration, and hence a simulator build, while the engine runs programs smaller
    than its memories."""
    from ttforge.hw.config import AccelConfig

    L = int(lanes) if lanes is not None else int(rng.choice([1, 2, 4, 4, 8, 16]))
    E = int(stream_elems) if stream_elems is not None else int(rng.choice([1, 1, 2, 4]))
    smallest = AccelConfig.for_network(net, lanes=L, stream_elems=E)
    if rng.random() < 1 / 7:
        return smallest
    need = smallest.to_dict()
    d = dict(need)
    d.pop("axil_addr_bits")
    d["core_depth"] = max(_pow2_at_least(need["core_depth"]), 512)
    d["bias_depth"] = max(_pow2_at_least(need["bias_depth"]), 64)
    d["buf_depth"] = max(_pow2_at_least(need["buf_depth"]), 256)
    d["desc_depth"] = max(_pow2_at_least(need["desc_depth"]), 16)
    d["act_bits"] = need["act_bits"] if rng.random() < 0.3 else max(need["act_bits"], 8)
    d["core_bits"] = max(need["core_bits"], 8)
    d["inter_bits"] = max(need["inter_bits"], d["act_bits"], 16)
    d["acc_bits"] = 32 if need["acc_bits"] <= 32 else 48
    d["bias_bits"] = max(need["bias_bits"], min(32, d["acc_bits"]))
    cfg = AccelConfig(**d)
    cfg.check(net)
    return cfg


@dataclass(frozen=True, eq=False)
class RegressCase:
    """One regression case (everything follows from ``seed``)."""

    seed: int
    net: Any
    config: Any
    inputs: np.ndarray
    gaps: float
    backpressure: float

    @property
    def shape(self) -> str:
        """``in>out`` per layer with its TT ranks, e.g. ``30>20 r3,5 | 20>5``."""
        parts = []
        for layer in self.net.layers:
            r = layer.schedule.shape.ranks[1:-1]
            parts.append(f"{layer.in_features}>{layer.out_features}"
                         + (" r" + ",".join(map(str, r)) if r else "")
                         + f" w{layer.w_bits}")
        return " | ".join(parts)


def make_case(seed: int, vectors: int = 16, *, config=None) -> RegressCase:
    """The case of ``seed``: network, config (or the given one, with networks redrawn
    until one fits it), ``vectors`` random inputs and the stream pause probabilities."""
    rng = np.random.default_rng([int(seed), 0x77F0])
    for _ in range(200):
        net = random_network(rng)
        if config is None:
            cfg = random_config(net, rng)
            break
        if config.fits(net):
            cfg = config
            break
    else:
        raise ConfigError(f"--config: no random network of seed {seed} fits {config.summary()}; "
                          f"raise its depths and widths")
    # the pauses before the inputs: the same seed keeps them with any --vectors
    gaps = float(rng.choice([0.0, 0.1, 0.3]))
    bp = float(rng.choice([0.0, 0.1, 0.3]))
    bits = net.layers[0].in_bits
    X = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), size=(int(vectors), net.in_features))
    return RegressCase(int(seed), net, cfg, X.astype(np.int64), gaps, bp)


# ----------------------------------------------------------------------------- results
@dataclass
class CaseResult:
    """One case's outcome (a row of the summary)."""

    seed: int
    sim: str
    shape: str
    lanes: int
    stream_elems: int
    steps: int
    vectors: int
    gaps: float
    backpressure: float
    result: str = "pass"              # "pass", "FAIL" or "ERROR"
    reason: str = ""
    cycles: int = 0                   # the CYCLES counter over all vectors
    sim_cycles: int = 0               # all simulated cycles (loading included)
    sim_seconds: float = 0.0          # wall time inside the simulator
    seconds: float = 0.0              # wall time of the case (build, compile, run)
    build_seconds: float = 0.0
    mismatched_vectors: int = 0
    divergence: dict | None = None
    reproducer: str | None = None
    config: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.result == "pass"

    @property
    def cycles_per_second(self) -> float:
        return self.sim_cycles / self.sim_seconds if self.sim_seconds else 0.0


def _check_counters(c: dict, prog, X, traces) -> list[str]:
    from ttforge.hw.cycles import program_cycles

    B = len(X)
    model = program_cycles(prog.descriptors, prog.config, prog.globals)
    want = {"VECTORS": B, "BUSY_LANE_CYCLES": model.busy_lane_cycles * B,
            "SAT_EVENTS": sum(t.saturations for t in traces),
            "CYCLES": model.total * B + c["IN_STALL"] + c["OUT_STALL"]}
    return [f"{k}={c[k]} but the {'cycle model' if k == 'CYCLES' else 'executor'} gives {v}"
            for k, v in want.items() if c[k] != v]


def locate_divergence(sim_build, program, x: np.ndarray, *, workdir=None) -> dict:
    """The first step whose RTL result differs from the model, for one input vector.

    The register map has no read-back window for the ping-pong buffers, but the program
    is data: the program cut after step ``k`` (``LAST`` set on step ``k``, ``OUT_BUF``
    its destination buffer, ``OUT_COUNT`` its output extent) streams step ``k``'s
    intermediate out through ``m_axis``. All cuts run in one simulation; the first ``k``
    where the RTL and :func:`ttforge.hw.model.run_program` of the same cut disagree is
    reported with its layer, step, element, expected and got. The stream carries the low
    ``act_bits`` bits of each buffer element, so a difference confined to the upper bits
    of an intermediate shows at the next step that uses it.
    """
    from ttforge.hw.model import run_program
    from ttforge.hw.program import decode_descriptor, encode_descriptor
    from ttforge.sim.runner import load_writes, run_job, timeout_cycles

    cfg = program.config
    x = np.asarray(x, dtype=np.int64).reshape(1, -1)
    ops, arrays, expected = [], {"x": x}, []
    cuts = []
    for k, st in enumerate(program.steps):
        descs = [list(d) for d in program.descriptors[:k + 1]]
        d = decode_descriptor(descs[k])
        descs[k] = list(encode_descriptor(d.__class__(**{**d.__dict__, "LAST": 1})))
        extent = min(max(st.out_size, st.zfill_to), cfg.buf_depth)
        cut = program.with_words(descriptors=descs, out_buf=1 - st.src, out_count=extent)
        want, _ = run_program(cut, cfg, x)
        cuts.append((k, st, extent))
        expected.append(want)
        arrays[f"w{k}"] = load_writes(cut)
        ops += [{"op": "load", "writes": f"w{k}", "name": f"load{k}"},
                {"op": "stream", "inputs": "x", "name": f"cut{k}",
                 "timeout_cycles": timeout_cycles(cut, 1)}]
    out_max = max(e for _, _, e in cuts)
    # run_job takes one out_count; every cut's frame is read up to the longest
    job = run_job(sim_build, ops, arrays, out_count=out_max, workdir=workdir)
    for (k, st, extent), want in zip(cuts, expected):
        got = job.arrays[f"cut{k}"][:, :extent]
        r = job.op(f"cut{k}")
        if r["timeout"] or r["received"] != 1:
            return {"step_index": k, "layer": st.layer, "step": st.step, "element": None,
                    "expected": None, "got": None,
                    "detail": f"the program cut after step {k} produced no output vector"}
        if not np.array_equal(got, want):
            e = int(np.flatnonzero(got[0] != want[0])[0])
            return {"step_index": k, "layer": st.layer, "step": st.step, "element": e,
                    "expected": int(want[0, e]), "got": int(got[0, e]),
                    "n_diff": int(np.count_nonzero(got[0] != want[0])), "n_elements": extent,
                    "detail": (f"layer {st.layer}, step {st.step} (descriptor {k}, mode {st.mode}): "
                               f"element {e} of its output: expected {int(want[0, e])}, "
                               f"got {int(got[0, e])} (low {cfg.act_bits} bits); "
                               f"{int(np.count_nonzero(got[0] != want[0]))} of {extent} differ")}
    return {"step_index": None, "layer": None, "step": None, "element": None, "expected": None,
            "got": None, "detail": "every step's intermediate agrees (the difference is in the "
            "output phase: stream packing or the final read)"}


def _first_output_diff(got: np.ndarray, want: np.ndarray) -> dict | None:
    n = min(len(got), len(want))
    for v in range(len(want)):
        if v >= n:
            return {"vector": v, "element": None, "expected": None, "got": None}
        bad = np.flatnonzero(got[v] != want[v])
        if bad.size:
            e = int(bad[0])
            return {"vector": v, "element": e, "expected": int(want[v, e]), "got": int(got[v, e])}
    return None


def run_case(case: RegressCase, sim: str, *, fault: str | None = None,
             build_root: str | os.PathLike | None = None, out_dir: str | os.PathLike | None = None,
             waves_on_failure: bool = True) -> CaseResult:
    """Simulate one case and check it (see the module docstring); on failure, write a
    reproducer under ``out_dir`` (when given)."""
    from ttforge.hw.model import run_program
    from ttforge.hw.program import compile_program
    from ttforge.ir.executor import execute_traced
    from ttforge.sim.runner import build, run_inference

    t0 = time.perf_counter()
    prog = compile_program(case.net, case.config)
    res = CaseResult(seed=case.seed, sim=sim, shape=case.shape, lanes=case.config.lanes,
                     stream_elems=case.config.stream_elems, steps=len(prog.steps),
                     vectors=len(case.inputs), gaps=case.gaps, backpressure=case.backpressure,
                     config=case.config.to_dict())
    expected, traces = execute_traced(case.net, case.inputs)
    got = None
    try:
        model_out, _ = run_program(prog, case.config, case.inputs)
        if not np.array_equal(model_out, expected):   # a compiler/model bug, not the RTL
            res.result, res.reason = "FAIL", "hw.model.run_program differs from the executor"
        problems = []
        if sim == NATIVE:
            from ttforge.sim.native import build_native, run_native

            nb = build_native(case.config, fault=fault)
            res.build_seconds = nb.build_seconds
            r = run_native(nb, prog, case.inputs, seed=case.seed, gaps=case.gaps,
                           backpressure=case.backpressure, check=False)
            got = r.outputs
            counters = {k.upper(): int(v) for k, v in r.counters.items()}
            res.cycles, res.sim_cycles, res.sim_seconds = r.cycles, r.total_cycles, r.total_seconds
            if not r.report.get("ok", True):
                problems.append(f"the harness reports: {r.report.get('problem') or 'not ok'} "
                                f"(STATUS {r.status:#x}, ERROR_CODE {r.error_code})")
        else:
            b = build(case.config, sim, fault=fault, build_root=build_root)
            res.build_seconds = b.build_seconds
            r = run_inference(b, prog, case.inputs, seed=case.seed, gaps=case.gaps,
                              backpressure=case.backpressure)
            got, counters = r.outputs, r.counters
            res.cycles, res.sim_cycles = r.cycles, r.sim_cycles
            res.sim_seconds = r.job.sim_wall_s
            if r.load_errors:
                problems.append(f"{r.load_errors} load-image writes answered with an error")
        if got.shape != expected.shape or not np.array_equal(got, expected):
            res.mismatched_vectors = int(len(expected) - min(len(got), len(expected))
                                         + np.sum(np.any(got[:len(expected)] != expected[:len(got)], axis=1)))
            first = _first_output_diff(got, expected)
            problems.append(f"{res.mismatched_vectors} of {len(expected)} vectors differ; first: "
                            f"vector {first['vector']}, output element {first['element']}: "
                            f"expected {first['expected']}, got {first['got']}")
            res.divergence = {"output": first}
            try:
                # the locator drives truncated programs through the cocotb testbench
                lb = build(case.config, "verilator", fault=fault, build_root=build_root) \
                    if sim == NATIVE else b
                res.divergence["rtl"] = locate_divergence(lb, prog, case.inputs[first["vector"]])
            except Exception as e:  # noqa: BLE001 - the verdict stands without the location
                res.divergence["rtl"] = {"detail": f"could not locate: {e}"}
        else:
            problems += _check_counters(counters, prog, case.inputs, traces)
        if problems:
            res.result = "FAIL"
            res.reason = "; ".join(([res.reason] if res.reason else []) + problems)
    except Exception as e:  # noqa: BLE001 - reported as an ERROR row, the run goes on
        res.result, res.reason = "ERROR", f"{type(e).__name__}: {e}"
        res.divergence = {"traceback": traceback.format_exc()}
    res.seconds = time.perf_counter() - t0
    if not res.passed and out_dir is not None:
        res.reproducer = str(write_reproducer(case, sim, res, prog, expected, got, out_dir,
                                              fault=fault, build_root=build_root,
                                              waves=waves_on_failure))
    return res


def write_reproducer(case: RegressCase, sim: str, res: CaseResult, prog, expected, got,
                     out_dir, *, fault=None, build_root=None, waves=True) -> Path:
    """``<out_dir>/repro-<sim>-seed<N>/``: ``case.json`` (seed, sim, fault, pauses, the
    verdict and the divergence), ``artifact.ttfa``, ``config.json``, ``load_image.json``,
    ``inputs.npy``, ``expected.npy``, ``got.npy``, ``divergence.txt`` and a waveform of
    the first failing vector (``waves.fst`` or ``dump.vcd``)."""
    final = Path(out_dir) / (f"repro-{sim}-seed{case.seed}" if fault is None
                             else f"repro-{sim}-{fault}-seed{case.seed}")
    with atomic_dir(final) as d:  # a complete reproducer or none (never half of one)
        _fill_reproducer(d, final, case, sim, res, prog, expected, got, fault=fault,
                         build_root=build_root, waves=waves)
    return final


def _fill_reproducer(d: Path, final: Path, case: RegressCase, sim: str, res: CaseResult, prog,
                     expected, got, *, fault, build_root, waves) -> None:
    from ttforge.hw.program import load_image, load_image_to_json
    from ttforge.ir.artifact import save_artifact

    save_artifact(case.net, d / "artifact.ttfa", meta={"regress_seed": case.seed})
    (d / "config.json").write_text(case.config.to_json())
    (d / "load_image.json").write_text(load_image_to_json(load_image(prog)))
    np.save(d / "inputs.npy", case.inputs)
    np.save(d / "expected.npy", expected)
    if got is not None:
        np.save(d / "got.npy", got)
    wave = None
    first = (res.divergence or {}).get("output")
    if waves and first is not None and res.result == "FAIL":
        try:
            from ttforge.sim.runner import build, run_inference

            wb = build(case.config, sim, fault=fault, build_root=build_root, waves=True)
            v = first["vector"]
            r = run_inference(wb, prog, case.inputs[v:v + 1], seed=case.seed, waves=True,
                              workdir=d / "waves_run")
            if r.waves is not None:
                wave = d / r.waves.name
                shutil.move(str(r.waves), wave)
            shutil.rmtree(d / "waves_run", ignore_errors=True)
        except Exception as e:  # noqa: BLE001
            (d / "waves_error.txt").write_text(f"{type(e).__name__}: {e}\n")
    info = {"seed": case.seed, "sim": sim, "fault": fault, "vectors": len(case.inputs),
            "gaps": case.gaps, "backpressure": case.backpressure, "shape": case.shape,
            "result": res.result, "reason": res.reason, "divergence": res.divergence,
            "waves": wave.name if wave else None,
            "replay": f"ttforge regress --replay {final}"}
    (d / "case.json").write_text(json.dumps(info, indent=1, default=str))
    (d / "divergence.txt").write_text(describe(res) + "\n")


def describe(res: CaseResult) -> str:
    """A few lines: the verdict, and the first divergence by output element and step."""
    lines = [f"seed {res.seed} on {res.sim}: {res.result}" + (f": {res.reason}" if res.reason else "")]
    div = res.divergence or {}
    rtl = div.get("rtl")
    if rtl:
        lines.append("first divergence: " + str(rtl.get("detail")))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- runs
@dataclass
class RegressReport:
    sim: str
    results: list[CaseResult]
    seconds: float
    fault: str | None = None

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self.results)

    @property
    def failed(self) -> int:
        return len(self.results) - self.passed

    @property
    def vectors(self) -> int:
        return sum(r.vectors for r in self.results)

    @property
    def cycles_per_second(self) -> float:
        sc = sum(r.sim_cycles for r in self.results)
        ss = sum(r.sim_seconds for r in self.results)
        return sc / ss if ss else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"sim": self.sim, "fault": self.fault, "cases": len(self.results),
                "passed": self.passed, "failed": self.failed, "vectors": self.vectors,
                "seconds": self.seconds,
                "sim_cycles": sum(r.sim_cycles for r in self.results),
                "sim_seconds": sum(r.sim_seconds for r in self.results),
                "cycles_per_second": self.cycles_per_second,
                "results": [asdict(r) for r in self.results]}


def _worker(args) -> CaseResult:
    seed, vectors, sim, fault, build_root, out_dir, config_dict = args
    from ttforge.hw.config import AccelConfig

    cfg = AccelConfig.from_dict(config_dict) if config_dict else None
    try:
        case = make_case(seed, vectors, config=cfg)
    except Exception as e:  # noqa: BLE001
        return CaseResult(seed=seed, sim=sim, shape="?", lanes=0, stream_elems=0, steps=0,
                          vectors=vectors, gaps=0, backpressure=0, result="ERROR",
                          reason=f"{type(e).__name__}: {e}")
    return run_case(case, sim, fault=fault, build_root=build_root, out_dir=out_dir)


def regress(seeds: Sequence[int], sim: str, *, jobs: int = 1, vectors: int = 16,
            out_dir: str | os.PathLike | None = None, fault: str | None = None,
            build_root: str | os.PathLike | None = None, config=None,
            progress=None) -> RegressReport:
    """Run the cases of ``seeds`` on ``sim`` in ``jobs`` processes; write
    ``junit.xml`` and ``summary.json`` into ``out_dir`` (when given)."""
    missing = _simulator_problem(sim)
    if missing:
        raise ConfigError(missing)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tasks = [(int(s), int(vectors), sim, fault, None if build_root is None else str(build_root),
              None if out is None else str(out), None if config is None else config.to_dict())
             for s in seeds]
    results: list[CaseResult] = []
    if jobs <= 1:
        for t in tasks:
            results.append(_worker(t))
            if progress:
                progress(results[-1])
    else:
        # fork: the workers inherit the imports (a spawned worker re-imports for seconds)
        ctx = multiprocessing.get_context("fork")
        with cf.ProcessPoolExecutor(max_workers=int(jobs), mp_context=ctx) as pool:
            futs = [pool.submit(_worker, t) for t in tasks]
            for f in cf.as_completed(futs):
                results.append(f.result())
                if progress:
                    progress(results[-1])
    results.sort(key=lambda r: r.seed)
    rep = RegressReport(sim=sim, results=results, seconds=time.perf_counter() - t0, fault=fault)
    if out is not None:
        atomic_write_text(out / "junit.xml", junit_xml(rep))
        atomic_write_text(out / "summary.json", json.dumps(rep.to_dict(), indent=1, default=str))
    return rep


def junit_xml(rep: RegressReport) -> str:
    """The report as JUnit XML (one testcase per seed)."""
    name = f"ttforge.regress.{rep.sim}" + (f".{rep.fault}" if rep.fault else "")
    errors = sum(r.result == "ERROR" for r in rep.results)
    failures = sum(r.result == "FAIL" for r in rep.results)
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f'<testsuites><testsuite name={quoteattr(name)} tests="{len(rep.results)}" '
             f'failures="{failures}" errors="{errors}" time="{rep.seconds:.3f}">']
    for r in rep.results:
        lines.append(f'  <testcase classname={quoteattr(name)} name="seed{r.seed}" '
                     f'time="{r.seconds:.3f}">')
        lines.append(f'    <properties><property name="shape" value={quoteattr(r.shape)}/>'
                     f'<property name="lanes" value="{r.lanes}"/>'
                     f'<property name="vectors" value="{r.vectors}"/>'
                     f'<property name="cycles" value="{r.cycles}"/></properties>')
        if not r.passed:
            tag = "failure" if r.result == "FAIL" else "error"
            body = describe(r) + (f"\nreproducer: {r.reproducer}" if r.reproducer else "")
            lines.append(f'    <{tag} message={quoteattr(r.reason[:500])}>{escape(body)}</{tag}>')
        lines.append("  </testcase>")
    lines.append("</testsuite></testsuites>")
    return "\n".join(lines) + "\n"


def print_table(rep: RegressReport, file=None) -> None:
    """The summary table (seed, shape, lanes, vectors, cycles, result, time)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=file) if file is not None else Console()
    if not console.is_terminal:
        console = Console(file=file, width=140)
    title = (f"ttforge regress on {rep.sim}" + (f" with fault {rep.fault}" if rep.fault else "")
             + f": {rep.passed}/{len(rep.results)} passed, {rep.vectors} vectors, "
             f"{rep.seconds:.1f} s, {rep.cycles_per_second:,.0f} simulated cycles/s")
    t = Table(title=title, title_justify="left")
    for col in ("seed", "shape", "L", "E", "steps", "vectors", "gaps/bp", "cycles", "result",
                "time", "cycles/s"):
        t.add_column(col, justify="left" if col in ("shape", "result") else "right")
    for r in rep.results:
        style = "" if r.passed else "bold red"
        t.add_row(str(r.seed), r.shape, str(r.lanes), str(r.stream_elems), str(r.steps),
                  str(r.vectors), f"{r.gaps:.1f}/{r.backpressure:.1f}", f"{r.cycles:,}",
                  r.result, f"{r.seconds:.1f}s", f"{r.cycles_per_second:,.0f}", style=style)
    console.print(t)
    for r in rep.results:
        if not r.passed:
            console.print(describe(r), markup=False, highlight=False)
            if r.reproducer:
                console.print(f"  reproducer: {r.reproducer}", markup=False, highlight=False)


# ----------------------------------------------------------------------------- replay
def replay(directory: str | os.PathLike, *, sim: str | None = None,
           build_root: str | os.PathLike | None = None) -> CaseResult:
    """Rerun a reproducer directory (its artifact, config and inputs, on its simulator
    unless ``sim`` is given); the divergence is located again if it still fails."""
    from ttforge.hw.config import AccelConfig
    from ttforge.ir.artifact import load_artifact

    d = Path(directory)
    info_path = d / "case.json"
    if not info_path.is_file():
        raise ConfigError(f"--replay {d}: no case.json there; give a directory written by "
                          f"ttforge regress (repro-<sim>-seed<N>)")
    info = json.loads(info_path.read_text())
    net = load_artifact(d / "artifact.ttfa")
    cfg = AccelConfig.load(d / "config.json")
    X = np.load(d / "inputs.npy")
    case = RegressCase(int(info["seed"]), net, cfg, X, float(info.get("gaps", 0.0)),
                       float(info.get("backpressure", 0.0)))
    return run_case(case, sim or info["sim"], fault=info.get("fault"), build_root=build_root,
                    out_dir=None)


# ----------------------------------------------------------------------------- CLI
def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", type=int, default=8, metavar="N",
                   help="number of random cases (seeds S .. S+N-1; default 8)")
    p.add_argument("--seed-start", type=int, default=0, metavar="S", help="first seed (default 0)")
    p.add_argument("--jobs", type=int, default=1, metavar="J",
                   help="cases simulated in parallel (processes; default 1)")
    p.add_argument("--sim", metavar="SIM",
                   help="simulator: icarus or verilator (the cocotb testbench), or verilator-native "
                        "(the C++ harness, for bulk runs); default icarus; with --replay, the "
                        "reproducer's")
    p.add_argument("--vectors", type=int, default=16, metavar="V",
                   help="input vectors per case (default 16)")
    p.add_argument("--out", metavar="DIR", default="regress-out",
                   help="junit.xml, summary.json and reproducers go here (default regress-out)")
    p.add_argument("--replay", metavar="DIR", help="rerun one reproducer directory")
    p.add_argument("--fault", metavar="NAME", help="build the RTL with a deliberate fault")
    p.add_argument("--config", metavar="FILE",
                   help="run every case on this AccelConfig (JSON/TOML) instead of random ones")
    p.add_argument("--build-root", metavar="DIR",
                   help="simulator build cache (default $TTFORGE_SIM_CACHE or ~/.cache/ttforge/sim)")


def _check_args(args: argparse.Namespace) -> None:
    for flag, v, lo in (("--seeds", args.seeds, 1), ("--jobs", args.jobs, 1),
                        ("--vectors", args.vectors, 1), ("--seed-start", args.seed_start, 0)):
        if v < lo:
            raise ConfigError(f"{flag} {v}: must be at least {lo}")
    if args.sim is not None and args.sim not in REGRESS_SIMULATORS:
        raise ConfigError(f"--sim {args.sim}: use one of {', '.join(REGRESS_SIMULATORS)}")
    if args.fault is not None:
        try:
            from ttforge.hw.faults import FAULTS
        except ImportError:
            FAULTS = None
        if FAULTS is not None and args.fault not in FAULTS:
            raise ConfigError(f"--fault {args.fault}: unknown; use one of {', '.join(FAULTS)}")
    if args.out:
        check_output_dir(args.out, "--out")  # before the simulations, not after
    if args.replay and not (Path(args.replay) / "case.json").is_file():
        raise ConfigError(f"--replay {args.replay}: no case.json there; give a reproducer "
                          f"directory written by ttforge regress")


def _run(args: argparse.Namespace) -> int:
    _check_args(args)
    if args.replay:
        res = replay(args.replay, sim=args.sim, build_root=args.build_root)
        print(describe(res))
        if res.passed:
            print(f"replay of {args.replay}: passes now ({res.vectors} vectors on {res.sim})")
        return 0 if res.passed else 1
    config = None
    if args.config:
        from ttforge.hw.config import AccelConfig

        config = AccelConfig.load(args.config)
    seeds = range(args.seed_start, args.seed_start + args.seeds)
    done = [0]

    def progress(r: CaseResult) -> None:
        done[0] += 1
        print(f"[{done[0]}/{args.seeds}] seed {r.seed}: {r.result} ({r.seconds:.1f} s)",
              file=sys.stderr, flush=True)

    rep = regress(seeds, args.sim or "icarus", jobs=args.jobs, vectors=args.vectors, out_dir=args.out,
                  fault=args.fault, build_root=args.build_root, config=config, progress=progress)
    print_table(rep)
    print(f"wrote {Path(args.out) / 'junit.xml'} and {Path(args.out) / 'summary.json'}")
    return 0 if rep.failed == 0 else 1


def regress_cli_spec():
    return ("Random regression of the generated RTL against the golden executor (cocotb on "
            "Icarus or Verilator, or the native Verilator harness); exit 1 on any failure.", _add_arguments, _run)
