"""Training regressions: random networks, widths, ranks, batches and lanes trained in RTL
for many steps, each compared with the golden trainer bit for bit (``ttforge regress
--train``, ``docs/verification.md``).

A case is a seed. It draws an engine family (lanes and the widths of a ``TrainConfig``,
from :data:`FAMILIES`, so that a few Verilator builds serve every case), then a network
(1-3 layers, 1-3 cores, ranks 1-4, small modes), a batch size (1 .. 2L) and labelled
batches, all from the seed (:func:`train_regress_case`); :data:`EDGE_SHARE` of the seeds
are edge cases instead (:data:`EDGE_FAMILIES`: 32-bit biases, the smallest ``act_bits``
that carries the classes, the largest label, both ends of the feature range). The RTL
(the native harness, :mod:`ttforge.sim.train_native`) and :func:`ttforge.ir.train.train_step` train it for
``steps`` steps; the verdict is ``compare_states`` of the two final states. A failing
case is rerun step by step to name the first step that differs, and the first difference
of that step (layer, core or bias, element).
"""

from __future__ import annotations

import functools
import hashlib
import os
import shlex
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np

from ttforge.hw.trainer.program import TrainEngineConfig, compile_training
from ttforge.ir.random import train_layer_shapes
from ttforge.errors import ConfigError, EnvironmentFailure, MachineFailure, TTForgeError, one_line, show_path
from ttforge.ir.train import (TrainConfig, TrainState, calibrate_state, check_batch, export_network, init_state,
                              label_act_bits, train_step, train_step_fast)
from ttforge.ir.train_diverge import compare_states

__all__ = ["FAMILIES", "EDGE_FAMILIES", "EDGE_SHARE", "TrainCase", "TrainCaseResult", "train_regress_case",
           "run_train_case", "train_regress", "train_case_task", "family_config", "family_widths"]

#: Engine families: (lanes, TrainConfig fields). A case's seed picks one; each is one build.
FAMILIES: tuple[tuple[int, dict], ...] = (
    (4, {}),
    (2, {"w_bits": 2, "master_bits": 6, "rounding": "nearest"}),
    (8, {"w_bits": 3, "master_bits": 9, "act_bits": 6, "grad_bits": 12}),
    (1, {"inter_bits": 12, "grad_bits": 10, "bias_bits": 16}),
    (16, {"w_bits": 4, "master_bits": 10, "prob_bits": 12, "table_bits": 12, "table_frac_bits": 4}),
)


#: Edge families, numbered after :data:`FAMILIES` (5, 6, 7): act_bits 2, 3, 4, the smallest
#: that carry the labels of 2, 3-4, 5-8 classes (a label is a signed act_bits stream
#: element), and 32-bit biases. No family of :data:`FAMILIES` has either, so the draws
#: never met two defects of the native harness: labels it wrapped (b83dd91) and negative
#: 32-bit biases read back unsigned (c150e0d). The other widths are at their smallest (5),
#: their largest the engine's 48-bit accumulators admit (6: grad_bits 12, not 24) or
#: mixed (7).
EDGE_FAMILIES: tuple[tuple[int, dict], ...] = (
    (2, {"act_bits": 2, "bias_bits": 32, "w_bits": 2, "master_bits": 3, "inter_bits": 2, "acc_bits": 8,
         "grad_bits": 2, "prob_bits": 2, "table_bits": 2, "table_frac_bits": 0, "bias_frac_bits": 0,
         "rounding": "nearest"}),
    (4, {"act_bits": 3, "bias_bits": 32, "w_bits": 8, "master_bits": 24, "inter_bits": 24, "acc_bits": 48,
         "grad_bits": 12, "prob_bits": 24, "table_bits": 24, "table_frac_bits": 10, "bias_frac_bits": 16}),
    (8, {"act_bits": 4, "bias_bits": 32, "w_bits": 2, "master_bits": 24, "inter_bits": 8, "grad_bits": 8,
         "prob_bits": 8, "table_bits": 8, "table_frac_bits": 2, "bias_frac_bits": 16}),
)

#: the share of seeds that are edge cases (:func:`_edge_rng`), as the inference
#: regression draws its iCE40 form (``ttforge.sim.cases.ICE40_SHARE``)
EDGE_SHARE = 0.2


def _edge_rng(seed: int, always: bool = False) -> np.random.Generator | None:
    """The generator of seed ``seed``'s edge draws, or ``None`` (an ordinary case) in
    1 - :data:`EDGE_SHARE` of the seeds (none with ``always``). Its own stream, so an
    ordinary seed draws what it drew before edge cases existed (its reproducer replays);
    the salt 16 keeps the seeds that tests and benchmarks name (3, 4, 11, 12, 18, 20, 21,
    23, 28, 29) ordinary."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 16]))
    return rng if rng.random() < EDGE_SHARE or always else None


def family_widths(family: int) -> tuple[int, dict]:
    """``(lanes, TrainConfig fields)`` of family ``family``: :data:`FAMILIES`, then
    :data:`EDGE_FAMILIES`."""
    return (FAMILIES + EDGE_FAMILIES)[family]


def family_config(family: int) -> TrainEngineConfig:
    """The engine of family ``family`` (depths that hold every network a case draws)."""
    lanes, widths = family_widths(family)
    return TrainEngineConfig(lanes=lanes, train=TrainConfig(**widths), act_depth=4096, grad_depth=2048,
                             core_depth=2048, bias_depth=128, desc_depth=64, max_batch=32, max_classes=8)


@dataclass(frozen=True)
class TrainCase:
    seed: int
    family: int
    state: TrainState = field(repr=False)
    batches: tuple = field(repr=False)

    @property
    def batch(self) -> int:
        return len(self.batches[0][1])

    @functools.cached_property
    def digest(self) -> str:
        """A short sha256 of what the case is (its state file's bytes, its batches): a
        reproduce command names it, so that a seed another ttforge draws differently
        (the case generator changed) is refused rather than run as a different case."""
        from ttforge.ir.train_state import dumps_state

        h = hashlib.sha256(dumps_state(self.state))
        for x, y in self.batches:
            h.update(np.ascontiguousarray(x, "<i8").tobytes() + b"\0" + np.ascontiguousarray(y, "<i8").tobytes())
        return h.hexdigest()[:16]

    def describe(self) -> str:
        layers = "-".join(str(L.in_features) for L in self.state.layers) + f"-{self.state.n_classes}"
        cores = ",".join(str(L.d) for L in self.state.layers)
        return f"{layers} cores {cores} batch {self.batch} family {self.family}"


def train_regress_case(seed: int, steps: int, family: int | None = None) -> TrainCase:
    """The network, state and ``steps`` labelled batches of case ``seed`` (deterministic).

    An edge seed (:func:`_edge_rng`; or ``family`` an edge family) keeps the network its
    ordinary draw gives, with the edge family of its classes (:data:`EDGE_FAMILIES`, the
    classes redrawn to fit a ``family`` given; in half of them the most its act_bits
    carries), and draws its batch size and batches from its own stream: features over
    the whole signed act_bits range, the first batch holding both ends and the largest
    label.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 14]))
    fam = int(rng.integers(len(FAMILIES))) if family is None else int(family)
    edge = _edge_rng(seed) if family is None else _edge_rng(seed, True) if fam >= len(FAMILIES) else None
    n_layers = int(rng.integers(1, 4))
    d = int(rng.integers(1, 4))
    rank = int(rng.integers(1, 5))
    n_in = int(rng.integers(4, 25))
    hidden = int(rng.integers(4, 17))
    n_out = int(rng.integers(2, 9))
    if edge is not None:
        if family is None:
            a = label_act_bits(n_out)
            fam = len(FAMILIES) + a - 2
        else:      # the classes this family's act_bits is the smallest for
            a = family_widths(fam)[1]["act_bits"]
            n_out = int(edge.integers(max(2, (1 << (a - 2)) + 1), (1 << (a - 1)) + 1))
        if edge.random() < 0.5:    # so the largest label is the stream's, 2^(a-1) - 1
            n_out = 1 << (a - 1)
    lanes, widths = family_widths(fam)
    cfg = TrainConfig(**widths)
    batch = int(rng.integers(1, 2 * lanes + 1))
    shapes = train_layer_shapes(rng, n_layers, d, rank, n_in, hidden, n_out)
    state = init_state(shapes, cfg, seed=int(seed), lr_shift=int(rng.integers(2, 7)))
    hi = (1 << (cfg.act_bits - 1)) - 1
    if edge is None:
        batches = tuple((rng.integers(0, hi + 1, size=(batch, state.in_features)),
                         rng.integers(0, n_out, size=batch)) for _ in range(steps))
    else:
        batch = int(edge.integers(1, 2 * lanes + 1))
        batches = tuple((edge.integers(-hi - 1, hi + 1, size=(batch, state.in_features)),
                         edge.integers(0, n_out, size=batch)) for _ in range(steps))
        x, y = batches[0]
        lo_at, hi_at = edge.choice(x.size, size=2, replace=False)
        x.flat[lo_at], x.flat[hi_at] = -hi - 1, hi
        y[int(edge.integers(batch))] = n_out - 1
    state = calibrate_state(state, *batches[0], fast=False)
    if edge is not None and cfg.acc_bits > 32 and edge.random() < 0.5:
        state = _bias_far_above(state, edge)
    return TrainCase(int(seed), fam, state, batches)


def _bias_far_above(state: TrainState, edge: np.random.Generator) -> TrainState:
    """The last layer's bias small and 16-32 exponent steps above its accumulator: a left
    alignment beyond ``62 - bitlen(limit)``, which the golden trainer and the engine once
    capped against the spec (a wide accumulator only). The last layer, so no later
    forward shift depends on the output exponent it moves."""
    L = state.layers[-1]
    if L.bias is None:
        return state
    e_acc = export_network(state).layers[-1].acc_exp(L.d - 1)
    L = replace(L, bias=edge.integers(-8, 9, size=L.out_features).astype(np.int64),
                bias_exp=e_acc + int(edge.integers(16, 33)))
    return replace(state, layers=state.layers[:-1] + (L,))


@dataclass
class TrainCaseResult:
    seed: int
    family: int
    describe: str
    steps: int
    passed: bool
    first_step: int | None = None
    difference: str | None = None
    cycles_per_step: int = 0
    seconds: float = 0.0
    error: str | None = None
    #: the harness of the case's family could not be built (the tool's trouble: exit 3)
    build_failed: bool = False
    #: that build's own error, raised as the run's one line (not in ``to_dict``)
    build_error: Exception | None = field(default=None, repr=False, compare=False)
    #: :attr:`TrainCase.digest` ("" when the case was never drawn: a task that failed)
    case: str = ""

    def to_dict(self) -> dict:
        out = dict(self.__dict__)
        del out["build_error"]
        return out


def run_train_case(case: TrainCase, build) -> TrainCaseResult:
    """Train ``case`` in RTL (``build``: a :class:`~ttforge.sim.train_native.NativeTrainBuild`
    of the case's family) and with the golden step; on a mismatch, find the first step."""
    from ttforge.sim.train_native import train_native

    t0 = time.perf_counter()
    res = TrainCaseResult(case.seed, case.family, case.describe(), len(case.batches), False, case=case.digest)
    try:
        compile_training(case.state, case.batch, build.config)   # one line if it cannot fit
        got, records = train_native(build, case.state, case.batches)
        want = _golden_run(case.state, case.batches)
        diff = compare_states(got, want)
        res.cycles_per_step = records[0]["cycles"] if records else 0
        if diff is None:
            res.passed = True
        else:
            res.first_step, res.difference = _first_step(case, build)
    except Exception as e:  # noqa: BLE001 - a case's failure is its verdict, never a crash of the run
        from ttforge.errors import NativeError
        from ttforge.sim.check import stop_on_machine_failure

        # a full disk or memory is no verdict: it ended the run in exit 1 as an error row.
        # The harness's NativeError is the engine's (it stopped with an error, or never
        # finished the step: what a training fault does), the case's own verdict
        if not isinstance(e, NativeError):
            stop_on_machine_failure(e, f"training seed {case.seed}")
        res.error = f"{type(e).__name__}: {e}"[:300]
    res.seconds = time.perf_counter() - t0
    return res


def _golden_run(state: TrainState, batches) -> TrainState:
    """The golden trainer over ``batches``: ``train_step_fast`` (tested equal to
    ``train_step``, ``np.array_equal``) where the batch is within its exact range, else
    ``train_step``."""
    try:
        check_batch(state, len(batches[0][1]), fast=True)
        for x, y in batches:
            state, _ = train_step_fast(state, x, y)
    except ConfigError:
        for x, y in batches:
            state = train_step(state, x, y)
    return state


def _first_step(case: TrainCase, build) -> tuple[int | None, str | None]:
    """Rerun ``case`` one step at a time; the first step whose state differs and how."""
    from ttforge.sim.train_native import train_native

    state = case.state
    for k, (x, y) in enumerate(case.batches):
        got, _ = train_native(build, state, [(x, y)])
        want = train_step(state, x, y)
        diff = compare_states(got, want)
        if diff is not None:
            return k, str(diff)
        state = want
    return None, "the states differ after the whole run but not after any single step"


def train_case_task(args: tuple) -> tuple[TrainCaseResult, str]:
    """One case as a Dask task, on any worker: ``(seed, steps, build_root, fault)`` ->
    ``(result, worker)``. The harness of the case's family is built there once (the build
    cache's lock keeps two tasks of a worker machine from building the same key)."""
    from ttforge.sim.cluster import one_at_a_time, where
    from ttforge.sim.train_native import build_train_native

    seed, steps, build_root, fault = args
    with one_at_a_time():
        case = train_regress_case(seed, steps)
        try:
            build = build_train_native(family_config(case.family), build_root=build_root, fault=fault)
        except EnvironmentFailure as e:
            # the error itself goes back: the run ends in its line, exit 3, as a local run
            # does (as an ERROR row alone it ended in exit 1, a verdict on the hardware)
            return (TrainCaseResult(case.seed, case.family, case.describe(), steps, False,
                                    error=f"{type(e).__name__}: {e}"[:300], build_failed=True,
                                    build_error=e, case=case.digest), where())
        except Exception as e:  # noqa: BLE001 - the case's verdict, as for a local run
            from ttforge.sim.check import stop_on_machine_failure

            stop_on_machine_failure(e, f"training seed {seed}")
            return (TrainCaseResult(case.seed, case.family, case.describe(), steps, False,
                                    error=f"{type(e).__name__}: {e}"[:300], case=case.digest), where())
        return run_train_case(case, build), where()


def train_regress(seeds: Sequence[int], steps: int, *, build_root=None, fault: str | None = None,
                  on_case: Callable[[TrainCaseResult], None] | None = None, jobs: int | None = None,
                  cluster: str | None = None) -> list[TrainCaseResult]:
    """Run cases ``seeds`` for ``steps`` steps each on the native harness (one build per
    family, cached); results in the order of ``seeds``. ``fault``: build the RTL with a
    deliberate fault of :data:`ttforge.hw.faults.TRAIN_FAULTS` (a mutation run: some case
    must fail). ``jobs`` > 1 or ``cluster`` (``"local"`` or a scheduler address/file) runs
    each case as a Dask task, as ``ttforge regress`` does (:mod:`ttforge.sim.cluster`); the
    verdicts are the same, ``on_case`` is called as cases finish."""
    seeds = list(seeds)
    if cluster is None and (jobs is None or int(jobs) <= 1):
        from ttforge.sim.train_native import build_train_native

        builds: dict[int, object] = {}
        out = []
        for seed in seeds:
            case = train_regress_case(seed, steps)
            if case.family not in builds:
                builds[case.family] = build_train_native(family_config(case.family), build_root=build_root,
                                                         fault=fault)
            try:
                res = run_train_case(case, builds[case.family])
            except MachineFailure as e:
                raise _stopped(e, out) from e.__cause__
            out.append(res)
            if on_case is not None:
                on_case(res)
        return out

    from ttforge.sim.cluster import ClusterSpec, SchedulerLost, connect, run_tasks
    from ttforge.sim.regress import MAX_JOBS

    if cluster is None or cluster == "local":
        n = int(jobs) if jobs is not None else (os.cpu_count() or 1)
        spec = ClusterSpec.parse(None, max(1, min(n, len(seeds), MAX_JOBS)))
    else:
        spec = ClusterSpec.parse(cluster)
    broot = None if build_root is None else str(build_root)
    results: dict[int, TrainCaseResult] = {}

    def done(i: int, outcome) -> None:
        seed = seeds[i]
        if isinstance(outcome, BaseException):   # the task itself failed (KilledWorker, ...)
            from ttforge.sim.check import stop_on_machine_failure

            try:
                # a worker's full disk or memory is the machine's, as in this process
                stop_on_machine_failure(outcome, f"training seed {seed}")
            except MachineFailure as e:
                raise _stopped(e, [results[s] for s in seeds if s in results]) from None
            res = TrainCaseResult(seed, -1, "?", steps, False, error=f"{type(outcome).__name__}: {outcome}"[:300])
        else:
            res = outcome[0]
        results[seed] = res
        if on_case is not None:
            on_case(res)

    try:
        with connect(spec) as client:
            run_tasks(client, train_case_task, [(s, int(steps), broot, fault) for s in seeds], done,
                      label="regress-train", worker_timeout=spec.worker_timeout)
    except SchedulerLost as e:
        raise SchedulerLost(f"--cluster {spec.describe()}: the scheduler went away after "
                            f"{len(results)} of {len(seeds)} cases", done=e.done) from None
    return [results[s] for s in seeds if s in results]


def _stopped(failure: MachineFailure, finished: list[TrainCaseResult]) -> MachineFailure:
    """``failure`` (a case's machine failure) as the line that ends the run, with the
    cases that had ``finished`` as its ``report``."""
    return MachineFailure(f"{failure}; the regression stopped there, a failure of the machine, not of the RTL",
                          report=finished)


#: the largest ``--steps`` of ``ttforge regress --train``
MAX_TRAIN_STEPS = 1_000_000


def check_train_args(args) -> None:
    """One-line errors for ``ttforge regress --train`` options that do not apply to it."""
    from ttforge.errors import ConfigError, LimitError

    from ttforge.hw.faults import TRAIN_FAULTS

    if args.fault is not None and args.fault not in TRAIN_FAULTS:
        raise ConfigError(f"--fault {args.fault}: not a training fault; use one of {', '.join(TRAIN_FAULTS)}")
    if args.vectors is not None:   # silently ignored before
        raise ConfigError(f"--vectors {args.vectors}: a --train case trains on batches, it runs no inference "
                          f"vectors; drop --vectors (--steps sets a case's length)")
    for flag, bad in (("--replay", args.replay), ("--config", args.config)):
        if bad:
            raise ConfigError(f"{flag}: not available with --train yet (it runs random training cases "
                              f"on the native harness); drop {flag}")
    if args.sim not in (None, "verilator-native"):
        # the cocotb training testbench has no command of its own: its Python API is what an
        # installed ttforge has (the repository's tests/ that drive it are not installed)
        raise ConfigError(f"--sim {args.sim}: --train runs on verilator-native (the C++ harness) only; "
                          f"drop --sim, or run the cocotb testbench on {args.sim} from Python with "
                          f"ttforge.sim.train_runner (build_train, run_train, judge; docs/hardware.md)")
    if args.steps is None:
        args.steps = 100
    if args.steps < 1:
        raise ConfigError(f"--steps {args.steps}: must be at least 1")
    if args.steps > MAX_TRAIN_STEPS:
        raise LimitError(f"--steps {args.steps}: above ttforge's limit of {MAX_TRAIN_STEPS:,}")
    if args.case is not None and args.seeds not in (None, 1):
        raise ConfigError(f"--case {args.case}: names one case; give --seeds 1 (a reproduce command's)")


def reproduce_command(seed: int, steps: int, fault: str | None, case: str = "") -> str:
    """The command that reruns the training case ``seed`` alone, quoted for a POSIX shell
    (with its ``--fault``: without it a mutation run's failing case passed; with
    ``--case``, the case's digest: another ttforge may draw another case for the seed)."""
    return shlex.join(["ttforge", "regress", "--train", "--seed-start", str(seed), "--seeds", "1",
                       "--steps", str(steps), *(["--fault", fault] if fault else []),
                       *(["--case", case] if case else [])])


def check_case(seed: int, steps: int, digest: str) -> None:
    """One :class:`ConfigError` line unless seed ``seed`` (with ``steps`` steps) draws the
    case of digest ``digest`` here (``--case`` of a reproduce command)."""
    got = train_regress_case(seed, steps).digest
    if got != digest:
        raise ConfigError(f"--case {digest}: seed {seed} with --steps {steps} draws another case in this "
                          f"ttforge ({got}): the case generator changed since the run that printed the "
                          f"command; rerun it with that run's ttforge, or drop --case to run today's case")


def run_train_cli(args) -> int:
    """``ttforge regress --train``: cases ``--seed-start .. + --seeds``, ``--steps`` steps
    each; a summary table, ``summary.json`` in ``--out``; exit 1 if any case failed."""
    import json
    import sys
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from ttforge.atomic import atomic_write_bytes, reclaim_work_dir

    seeds = range(args.seed_start, args.seed_start + args.seeds)
    if args.case is not None:     # before any build: another ttforge's reproduce command
        check_case(args.seed_start, args.steps, args.case)
    done = [0]

    def line(r: TrainCaseResult) -> None:
        done[0] += 1
        verdict = "pass" if r.passed else ("error" if r.error else f"FAIL at step {r.first_step}")
        print(f"[{done[0]}/{len(seeds)}] seed {r.seed}: {verdict} ({r.describe}, {r.seconds:.1f} s)",
              file=sys.stderr, flush=True)

    stopped = None
    try:
        results = train_regress(seeds, args.steps, build_root=args.build_root, fault=args.fault, on_case=line,
                                jobs=args.jobs, cluster=args.cluster)
    except MachineFailure as e:   # what finished is still told, then the line (or a failed check's 1)
        results, stopped = list(e.report or []), e
    table = Table(title=f"training regression: {len(results)} cases x {args.steps} steps (verilator-native)")
    for col in ("seed", "network", "steps", "cycles/step", "seconds", "result"):
        table.add_column(col)
    for r in results:
        verdict = "pass" if r.passed else (r.error or f"step {r.first_step}: {r.difference}")
        table.add_row(str(r.seed), r.describe, str(r.steps), str(r.cycles_per_step), f"{r.seconds:.1f}", verdict)
    Console().print(table)
    failed = [r for r in results if not r.passed]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ran = {r.seed for r in results}
    summary = {"kind": "train", "simulator": "verilator-native", "steps": args.steps, "fault": args.fault,
               "cases": len(results), "failed": len(failed), "results": [r.to_dict() for r in results],
               "reproduce": [reproduce_command(r.seed, args.steps, args.fault, r.case) for r in failed],
               "complete": stopped is None, "not_run": [s for s in seeds if s not in ran]}
    try:
        atomic_write_bytes(out / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
        # --out was claimed before the cases (sim/cli.py); removed during the run, it was
        # made again above without its claim, and every later run refused it
        reclaim_work_dir(out, lambda name: name == "summary.json")
    except (OSError, TTForgeError):
        if stopped is None:
            raise
        raise stopped from None   # the disk that stopped the run takes no summary: its line
    print(f"{len(results) - len(failed)} of {len(results)} passed; wrote {show_path(out / 'summary.json')}")
    for cmd in summary["reproduce"]:
        print(f"reproduce: {cmd}")
    if stopped is not None:
        if any(not r.passed and r.error is None for r in results):
            # a case that failed its check before the machine did: the hardware's verdict first
            print(f"ttforge regress: note: {one_line(stopped)}", file=sys.stderr)
            return 1
        raise stopped
    return train_verdict(results)


def train_verdict(results: Sequence[TrainCaseResult]) -> int:
    """The exit code of a run: 1 when a case failed its check (the hardware's verdict
    first), else the first harness build's own error raised (exit 3: the line a run in
    this process ends with, whose first failed build stops it), else 1 for any other
    error, else 0."""
    if any(not r.passed and r.error is None for r in results):
        return 1
    unbuilt = [r for r in results if r.build_failed]
    if unbuilt:
        raise unbuilt[0].build_error
    return 0 if all(r.passed for r in results) else 1
