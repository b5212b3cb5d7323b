"""Random regression of the accelerator against the golden executor: :func:`regress`
runs many seeds in parallel processes and writes JUnit XML and ``summary.json``.

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
* :mod:`ttforge.sim.cli` — the ``ttforge regress`` command.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
import os
import time
from pathlib import Path
from typing import Sequence

from ttforge.atomic import atomic_write_text
from ttforge.errors import SimulatorMissing
from ttforge.limits import MAX_JOBS
from ttforge.sim.cases import make_case
from ttforge.sim.check import CaseResult, _simulator_problem, run_case
from ttforge.sim.report import RegressReport, junit_xml

__all__ = ["regress"]


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
        raise SimulatorMissing(missing)   # the machine's, not the input's: exit 3
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tasks = [(int(s), int(vectors), sim, fault, None if build_root is None else str(build_root),
              None if out is None else str(out), None if config is None else config.to_dict())
             for s in seeds]
    results: list[CaseResult] = []
    jobs = max(1, min(int(jobs), len(tasks), MAX_JOBS))   # never more workers than cases
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
