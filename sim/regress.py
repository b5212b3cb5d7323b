"""Random regression of the accelerator against the golden executor: :func:`regress`
runs many seeds, in this process or as Dask tasks (a local cluster of ``jobs`` workers or
the user's cluster, :mod:`ttforge.sim.cluster`), and writes JUnit XML and ``summary.json``
as the cases finish.

The parts, one job each:

* :mod:`ttforge.sim.cases` — seed ``s`` determines one case (:func:`~ttforge.sim.cases.make_case`):
  a random integer network, a config that runs it, inputs and stream pauses;
* :mod:`ttforge.sim.check` — :func:`~ttforge.sim.check.run_case` simulates one case and
  requires every output and counter to equal the executor and the cycle model, and
  :func:`~ttforge.sim.check.locate_divergence` finds the first step that differs;
* :mod:`ttforge.sim.reproducer` — the directory a failing case leaves
  (:func:`~ttforge.sim.reproducer.write_reproducer`) and its rerun
  (:func:`~ttforge.sim.reproducer.replay`, ``ttforge regress --replay DIR``);
* :mod:`ttforge.sim.report` — :class:`~ttforge.sim.report.RegressReport`, JUnit XML and
  the summary table;
* :mod:`ttforge.sim.cluster` — where the cases run when the run is parallel;
* :mod:`ttforge.sim.cli` — the ``ttforge regress`` command.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from ttforge.atomic import WORK_MARKER, atomic_dir, atomic_write_text, reclaim_work_dir
from ttforge.errors import ClusterError, MachineFailure, SchedulerLost, SimulatorMissing, TTForgeError, show_path
from ttforge.limits import MAX_JOBS
from ttforge.sim.cases import make_case
from ttforge.sim.check import CaseResult, _simulator_problem, run_case, stop_on_machine_failure
from ttforge.sim.report import RegressReport, junit_xml

__all__ = ["regress", "case_task"]

#: seconds between two rewrites of junit.xml and summary.json while a run goes on
FLUSH_SECONDS = 2.0


def _error_row(seed: int, sim: str, vectors: int, reason: str) -> CaseResult:
    return CaseResult(seed=seed, sim=sim, shape="?", lanes=0, stream_elems=0, steps=0,
                      vectors=vectors, gaps=0, backpressure=0, result="ERROR", reason=reason)


def _worker(args) -> CaseResult:
    seed, vectors, sim, fault, build_root, out_dir, config_dict = args
    from ttforge.hw.config import AccelConfig

    cfg = AccelConfig.from_dict(config_dict) if config_dict else None
    try:
        case = make_case(seed, vectors, config=cfg)
    except Exception as e:  # noqa: BLE001
        stop_on_machine_failure(e, f"seed {seed} on {sim}")   # out of memory drawing it: no verdict
        return _error_row(seed, sim, vectors, f"{type(e).__name__}: {e}")
    return run_case(case, sim, fault=fault, build_root=build_root, out_dir=out_dir)


def case_task(args) -> tuple[CaseResult, bytes | None, str]:
    """One case as a Dask task, on any worker: ``(result, reproducer, worker)``.

    ``args`` are :func:`regress`'s ``(seed, vectors, sim, fault, build_root, out_dir,
    config_dict)`` (``out_dir``: the client's, or ``None`` when it keeps no reproducer). The worker's file system need not be the client's: a reproducer is
    written to a temporary directory of the worker and comes back as the bytes of a tar
    archive, which the client unpacks into the output directory. ``build_root`` is a
    path on the worker (``None``: the worker's default cache)."""
    from ttforge.sim.cluster import one_at_a_time, where

    from ttforge.sim.runner import named_job_dir

    with one_at_a_time():
        # named with the worker's process id: a worker killed mid-case (a run stopped
        # with SIGTERM) leaves it to the next ttforge run, which removes it
        tmp = named_job_dir("ttforge-case-")
        try:
            # a reproducer only when the client keeps one (args[5]: its output directory or None)
            res = _worker((*args[:5], str(tmp) if args[5] is not None else None, *args[6:]))
            blob = None
            if res.reproducer:
                buf = io.BytesIO()
                with tarfile.open(fileobj=buf, mode="w:gz") as tar:
                    tar.add(res.reproducer, arcname=".")
                blob = buf.getvalue()
            return res, blob, where()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _unpack_reproducer(blob: bytes, out: Path, res: CaseResult) -> None:
    """The reproducer of a case that ran elsewhere, into ``out`` (whole or not at all);
    its ``case.json``'s replay command names no path (``--replay .``), so it holds here as
    it did on the worker."""
    final = out / Path(res.reproducer).name
    with atomic_dir(final) as d:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(d, filter="data")
            else:  # pragma: no cover - Python < 3.10.12 / 3.11.4
                tar.extractall(d)
    res.reproducer = str(final)


class _Collector:
    """The results as they arrive: handed to ``progress``, kept, and written to
    ``junit.xml`` and ``summary.json`` every :data:`FLUSH_SECONDS` and at the end."""

    def __init__(self, seeds: Sequence[int], sim: str, fault, out: Path | None,
                 progress: Callable[[CaseResult], None] | None, cluster: dict | None) -> None:
        self.seeds, self.sim, self.fault, self.out = list(seeds), sim, fault, out
        self.progress, self.cluster = progress, cluster
        self.results: list[CaseResult] = []
        self.t0 = time.perf_counter()
        self.flushed = time.monotonic()
        # a claimed --out (ttforge regress) stays claimed: removed during the run, it was
        # made again by the writes below without its claim, and refused for good
        self.claimed = out is not None and (out / WORK_MARKER).is_file()

    def stopped(self, failure: MachineFailure) -> MachineFailure:
        """``failure`` (a case's machine failure) as the line that ends the run: what
        finished is written first (that case and those not reached listed as not run,
        none counted as failed), if it can be."""
        try:
            rep = self.report()
        except (OSError, TTForgeError):
            # the disk that failed the case may take no summary either: the case's line
            # is what to say (junit.xml and summary.json are whole or the last flush's)
            rep = None
        kept = (f"; the {len(rep.results)} case(s) that finished are in {show_path(self.out / 'summary.json')}"
                if rep is not None and self.out is not None and rep.results else "")
        return MachineFailure(f"{failure}; the regression stopped there, a failure of the machine, not of the "
                              f"RTL{kept}", report=rep)

    def add(self, res: CaseResult) -> None:
        self.results.append(res)
        if self.progress:
            self.progress(res)
        if self.out is not None and time.monotonic() - self.flushed >= FLUSH_SECONDS:
            self.report(partial=True)

    def report(self, *, partial: bool = False) -> RegressReport:
        done = {r.seed for r in self.results}
        rep = RegressReport(sim=self.sim, results=sorted(self.results, key=lambda r: r.seed),
                            seconds=time.perf_counter() - self.t0, fault=self.fault,
                            not_run=[s for s in self.seeds if s not in done], cluster=self.cluster)
        if self.out is not None:
            atomic_write_text(self.out / "junit.xml", junit_xml(rep))
            atomic_write_text(self.out / "summary.json",
                              json.dumps(rep.to_dict(), indent=1, default=str))
            if self.claimed:
                reclaim_work_dir(self.out, _own_entry)
            self.flushed = time.monotonic()
        return rep


def _own_entry(name: str) -> bool:
    """Whether ``name`` in ``--out`` is one regress writes (its report or a reproducer)."""
    return name in ("junit.xml", "summary.json") or name.startswith("repro-")


def regress(seeds: Sequence[int], sim: str, *, jobs: int | None = None, vectors: int = 16,
            out_dir: str | os.PathLike | None = None, fault: str | None = None,
            build_root: str | os.PathLike | None = None, config=None,
            progress: Callable[[CaseResult], None] | None = None,
            cluster: str | None = None) -> RegressReport:
    """Run the cases of ``seeds`` on ``sim``; write ``junit.xml`` and ``summary.json`` into
    ``out_dir`` (when given) as they finish, and the reproducers of failing cases.

    Parameters
    ----------
    seeds : sequence of int
    sim : {"icarus", "verilator", "verilator-native"}
    jobs : int, optional
        Without ``cluster``: 1 (the default) runs the cases one after the other in this
        process; more runs them on a local Dask cluster of that many worker processes.
        With ``cluster="local"``: the local cluster's size (default: the cores).
    cluster : str, optional
        ``"local"``, a scheduler address (``tcp://host:port``) or a scheduler file: one
        Dask task per case (:mod:`ttforge.sim.cluster`). The verdicts are those of a run
        in this process: a case depends on its seed only.
    progress : callable, optional
        Called with each :class:`~ttforge.sim.check.CaseResult` as it arrives.

    Raises
    ------
    SimulatorMissing
        ``sim`` cannot run here (exit 3).
    SchedulerLost
        The cluster's scheduler went away; what had finished is in ``out_dir`` (marked
        incomplete, the other seeds listed as not run) and in the exception's ``report``.
    ClusterError
        The cluster could not be started or reached, or lost every worker (exit 3).
    MachineFailure
        The machine failed under a case, here or on a worker (a full disk, an I/O error, a
        limit reached, memory exhausted): no verdict, the run stops; what finished is in
        ``out_dir`` and the exception's ``report`` (that case listed as not run).
    """
    missing = _simulator_problem(sim)
    if missing:
        raise SimulatorMissing(missing)   # the machine's, not the input's: exit 3
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in seeds]
    cfg = None if config is None else config.to_dict()
    broot = None if build_root is None else str(build_root)
    tasks = [(s, int(vectors), sim, fault, broot, None if out is None else str(out), cfg) for s in seeds]
    if cluster is None and (jobs is None or int(jobs) <= 1):
        col = _Collector(seeds, sim, fault, out, progress, None)
        for t in tasks:
            try:
                res = _worker(t)
            except MachineFailure as e:
                raise col.stopped(e) from e.__cause__
            col.add(res)
        return col.report()

    from ttforge.sim.cluster import ClusterSpec, connect, run_tasks

    if cluster is None or cluster == "local":
        # a local cluster sized to the machine unless --jobs says; never more workers than cases
        n = int(jobs) if jobs is not None else (os.cpu_count() or 1)
        spec = ClusterSpec.parse(None, max(1, min(n, len(tasks), MAX_JOBS)))
    else:
        spec = ClusterSpec.parse(cluster)
    where: dict[int, str] = {}
    col = _Collector(seeds, sim, fault, out, progress, {"where": spec.describe(), "workers": None,
                                                        "ran_on": where})

    def done(i: int, outcome: Any) -> None:
        seed = seeds[i]
        if isinstance(outcome, BaseException):   # the task itself failed (KilledWorker, ...)
            try:
                # a worker's full disk or memory is the machine's, as in this process
                stop_on_machine_failure(outcome, f"seed {seed} on {sim}")
            except MachineFailure as e:
                raise col.stopped(e) from None
            res = _error_row(seed, sim, int(vectors), f"{type(outcome).__name__}: {outcome}")
        else:
            res, blob, where[seed] = outcome
            if blob is not None and out is not None:
                _unpack_reproducer(blob, out, res)
        col.add(res)

    try:
        with connect(spec) as client:
            col.cluster["workers"] = len(client.nthreads())
            run_tasks(client, case_task, tasks, done,
                      label=f"regress-{sim}", worker_timeout=spec.worker_timeout)
    except SchedulerLost as e:
        rep = col.report()
        where_out = f"; the {len(rep.results)} finished are in {out}" if out is not None else ""
        raise SchedulerLost(f"--cluster {spec.describe()}: the scheduler went away after "
                            f"{len(rep.results)} of {len(seeds)} cases{where_out}", done=e.done,
                            report=rep) from None
    except (ClusterError, KeyboardInterrupt):
        if col.results:
            col.report()   # what finished is kept (summary.json lists the rest as not run)
        raise
    return col.report()
