"""Run one case of ``ttforge regress`` and check it (:func:`run_case`).

:func:`run_case` compiles the network for the config, simulates it with cocotb
(:func:`ttforge.sim.runner.run_inference`) or the native harness and requires:

* every output frame ``ceil(OUT_COUNT / E)`` beats with ``tlast`` on the last, no
  frame more than the vectors (the testbench's ``frame_error``; the native harness's
  beat count);
* every output equal to :func:`ttforge.ir.executor.execute` (``np.array_equal``);
* ``VECTORS``, ``BUSY_LANE_CYCLES`` (the MACs) and ``SAT_EVENTS`` equal to the
  executor's counts, and ``CYCLES`` equal to the analytic cycle model
  (:mod:`ttforge.hw.cycles`) plus the ``IN_STALL`` and ``OUT_STALL`` cycles
  (``docs/hardware.md``, "Engine timing": exact).

A failure is located in the RTL by running truncated programs
(:func:`locate_divergence`) and leaves a reproducer (:mod:`ttforge.sim.reproducer`).
"""

from __future__ import annotations

import contextlib
import os
import time
import traceback
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from ttforge.errors import (ConfigError, EnvironmentFailure, MachineFailure, OutputError, OutputFailure,
                            ToolchainMissing)
from ttforge.sim.cases import RegressCase

__all__ = ["NATIVE", "REGRESS_SIMULATORS", "CaseResult", "run_case", "locate_divergence", "describe",
           "stop_on_machine_failure"]


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
    #: an ERROR because the simulator's build failed: the tool's trouble, exit 3 (as flow's)
    build_failed: bool = False

    @property
    def passed(self) -> bool:
        return self.result == "pass"

    @property
    def cycles_per_second(self) -> float:
        return self.sim_cycles / self.sim_seconds if self.sim_seconds else 0.0


def describe(res: CaseResult) -> str:
    """A few lines: the verdict, and the first divergence by output element and step."""
    lines = [f"seed {res.seed} on {res.sim}: {res.result}" + (f": {res.reason}" if res.reason else "")]
    div = res.divergence or {}
    rtl = div.get("rtl")
    if rtl:
        lines.append("first divergence: " + str(rtl.get("detail")))
    return "\n".join(lines)


def _check_counters(c: dict, prog, X, traces) -> list[str]:
    from ttforge.hw.cycles import program_cycles

    B = len(X)
    model = program_cycles(prog.descriptors, prog.config, prog.globals)
    want = {"VECTORS": B, "BUSY_LANE_CYCLES": model.busy_lane_cycles * B,
            "SAT_EVENTS": sum(t.saturations for t in traces),
            "CYCLES": model.total * B + c["IN_STALL"] + c["OUT_STALL"]}
    bad = [f"{k}={c[k]} but the {'cycle model' if k == 'CYCLES' else 'executor'} gives {v}"
           for k, v in want.items() if c[k] != v and (k != "CYCLES" or not prog.config.throughput)]
    if prog.config.throughput:
        # vectors overlap by as much as the stalls let them: CYCLES lies between the
        # compute sides back to back and every vector on its own
        lo = B * (model.throughput_latency - model.input_cycles)
        hi = B * model.throughput_latency + c["IN_STALL"] + c["OUT_STALL"]
        if not lo <= c["CYCLES"] <= hi:
            bad.append(f"CYCLES={c['CYCLES']} but the cycle model gives {lo}..{hi} (throughput mode)")
    return bad


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
    from ttforge.hw.model import check_program_config, check_stream_input, run_program
    from ttforge.hw.program import decode_descriptor, encode_descriptor
    from ttforge.sim.runner import load_writes, run_job, timeout_cycles

    # run_inference's checks: the cuts of a program for another config ran on this RTL,
    # and a float vector was truncated by the int64 cast
    check_program_config(program, sim_build.config, "locate_divergence", "the simulator's config",
                         "sim_build.config")
    cfg = program.config
    x = check_stream_input(program, np.asarray(x).reshape(1, -1)).astype(np.int64)
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
                {"op": "stream", "inputs": "x", "name": f"cut{k}", "out_count": extent,
                 "timeout_cycles": timeout_cycles(cut, 1)}]
    out_max = max(e for _, _, e in cuts)
    # each cut's frame is checked against its own extent (the stream's out_count)
    job = run_job(sim_build, ops, arrays, out_count=out_max, workdir=workdir)
    for (k, st, extent), want in zip(cuts, expected):
        got = job.arrays[f"cut{k}"]
        r = job.op(f"cut{k}")
        if r.get("frame_error"):
            return {"step_index": k, "layer": st.layer, "step": st.step, "element": None,
                    "expected": None, "got": None,
                    "detail": f"the program cut after step {k} sent a malformed output frame: "
                              f"{r['frame_error']['detail']}"}
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


def _first_output_diff(got: np.ndarray, want: np.ndarray) -> dict:
    """The first place where the RTL's outputs ``got`` differ from ``want`` (their shapes
    differ or some element does): ``vector``, ``element``, ``expected``, ``got`` (the last
    three ``None`` for a vector missing or extra, and ``vector`` too for another output
    width) and ``detail``, the sentence a failed case states; ``mismatched``: the
    vectors that differ, missing and extra ones included."""
    if got.ndim != 2 or got.shape[1:] != want.shape[1:]:
        return {"vector": None, "element": None, "expected": None, "got": None, "mismatched": len(want),
                "detail": f"the RTL returned outputs of shape {got.shape}; {want.shape} were due"}
    n = min(len(got), len(want))
    differ = np.any(got[:n] != want[:n], axis=1)
    mismatched = int(np.count_nonzero(differ)) + abs(len(got) - len(want))
    bad = np.flatnonzero(differ)
    if bad.size:
        v = int(bad[0])
        e = int(np.flatnonzero(got[v] != want[v])[0])
        return {"vector": v, "element": e, "expected": int(want[v, e]), "got": int(got[v, e]),
                "mismatched": mismatched,
                "detail": f"first: vector {v}, output element {e}: expected {int(want[v, e])}, got {int(got[v, e])}"}
    # the first n agree: a vector missing (one no output came for) or extra
    what = (f"no output for vector {n} and after" if len(got) < len(want) else
            f"{len(got) - len(want)} output vector(s) more than the {len(want)} sent")
    return {"vector": n if len(got) < len(want) else None, "element": None, "expected": None, "got": None,
            "mismatched": mismatched, "detail": f"the RTL returned {len(got)} of {len(want)} vectors: {what}"}


def _frame_diff(err: dict, bad_frames: int, vectors: int) -> dict:
    """The testbench's first malformed output frame ``err`` (its ``frame_error``) as
    :func:`_first_output_diff` gives a difference: ``vector`` (``None`` for a frame
    past the ``vectors`` sent), ``expected_beats``, ``got_beats``, ``detail``;
    ``mismatched``: the ``bad_frames``, at least 1."""
    v = err.get("vector")
    return {"vector": v if v is not None and v < vectors else None, "element": None, "expected": None,
            "got": None, "expected_beats": err.get("expected_beats"), "got_beats": err.get("got_beats"),
            "mismatched": max(int(bad_frames), 1), "detail": f"output framing: {err['detail']}"}


@contextlib.contextmanager
def _building(res: CaseResult) -> Iterator[None]:
    """Mark ``res`` when the simulator's build fails (it stays an ERROR row and the run
    goes on; ``regress`` then exits 3, as ``flow`` does for the same failure)."""
    try:
        yield
    except EnvironmentFailure:
        res.build_failed = True
        raise


def stop_on_machine_failure(e: BaseException, what: str, *, building: bool = False) -> None:
    """Raise :class:`~ttforge.errors.MachineFailure` when ``e``, which stopped ``what`` (a
    case), is the machine's (:func:`ttforge.boundary.machine_failure`: a full disk, an I/O
    error, a limit reached, memory exhausted, a simulator that failed to run); return for
    anything else, which the caller makes the case's ERROR. A full ``$TMPDIR`` was an
    ERROR row with a reproducer, exit 1: a verdict on the RTL. ``building``: ``e`` is the
    simulator build's own failure, which stays the case's row (marked ``build_failed``,
    exit 3 once every case ran)."""
    from ttforge.boundary import machine_failure

    if isinstance(e, MachineFailure):
        raise e   # said already (a worker's case, on its way back)
    failure = None if building else machine_failure(e)
    if failure is not None:
        raise MachineFailure(f"{what} could not run: {failure}") from e


def run_case(case: RegressCase, sim: str, *, fault: str | None = None,
             build_root: str | os.PathLike | None = None, out_dir: str | os.PathLike | None = None,
             waves_on_failure: bool = True) -> CaseResult:
    """Simulate one case and check it (see the module docstring); on failure, write a
    reproducer under ``out_dir`` (when given)."""
    from ttforge.hw.model import run_program
    from ttforge.hw.program import compile_program
    from ttforge.ir.executor import execute_traced
    from ttforge.sim.reproducer import write_reproducer  # it imports this module
    from ttforge.sim.runner import build, run_inference

    t0 = time.perf_counter()
    prog = compile_program(case.net, case.config)
    res = CaseResult(seed=case.seed, sim=sim, shape=case.shape, lanes=case.config.lanes,
                     stream_elems=case.config.stream_elems, steps=len(prog.steps),
                     vectors=len(case.inputs), gaps=case.gaps, backpressure=case.backpressure,
                     config=case.config.to_dict())
    expected, traces = execute_traced(case.net, case.inputs)
    got = None
    framing = None                       # the testbench's first malformed output frame
    try:
        model_out, _ = run_program(prog, case.config, case.inputs)
        if not np.array_equal(model_out, expected):   # a compiler/model bug, not the RTL
            res.result, res.reason = "FAIL", "hw.model.run_program differs from the executor"
        problems = []
        if sim == NATIVE:
            from ttforge.sim.native import build_native, run_native

            with _building(res):
                nb = build_native(case.config, fault=fault, build_root=build_root)
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
            with _building(res):
                b = build(case.config, sim, fault=fault, build_root=build_root)
            res.build_seconds = b.build_seconds
            r = run_inference(b, prog, case.inputs, seed=case.seed, gaps=case.gaps,
                              backpressure=case.backpressure)
            got, counters = r.outputs, r.counters
            res.cycles, res.sim_cycles = r.cycles, r.sim_cycles
            res.sim_seconds = r.job.sim_wall_s
            if r.frame_error:
                framing = _frame_diff(r.frame_error, r.job.op("outputs").get("bad_frames", 1), len(expected))
            if r.load_errors:
                problems.append(f"{r.load_errors} load-image writes answered with an error")
        if framing is not None or got.shape != expected.shape or not np.array_equal(got, expected):
            # the frames first: outputs cut from malformed frames are no vectors to compare
            first = framing or _first_output_diff(got, expected)
            res.mismatched_vectors = first.pop("mismatched")
            problems.append(f"{res.mismatched_vectors} of {len(expected)} vectors differ; {first['detail']}")
            res.divergence = {"output": first}
            try:
                # the locator drives truncated programs through the cocotb testbench (of
                # one vector: none for another output width, an extra vector or a frame
                # of the wrong length, whose steps compute what they should)
                if first["vector"] is not None and framing is None:
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
    except OutputFailure as e:   # an output the machine could not write: no verdict, exit 3
        stop_on_machine_failure(e, f"seed {case.seed} on {sim}")
        raise
    except (OutputError, ToolchainMissing):
        raise   # the user's or the toolchain's trouble, not the case's: the run stops (exit 2 / 3)
    except Exception as e:  # noqa: BLE001 - reported as an ERROR row, the run goes on
        stop_on_machine_failure(e, f"seed {case.seed} on {sim}", building=res.build_failed)
        res.result, res.reason = "ERROR", f"{type(e).__name__}: {e}"
        res.divergence = {"traceback": traceback.format_exc()}
    res.seconds = time.perf_counter() - t0
    if not res.passed and out_dir is not None:
        res.reproducer = str(write_reproducer(case, sim, res, prog, expected, got, out_dir,
                                              fault=fault, build_root=build_root,
                                              waves=waves_on_failure))
    return res
