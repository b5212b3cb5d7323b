"""The outcome of a ``ttforge regress`` run (:class:`RegressReport`), as JUnit XML (:func:`junit_xml`) and the summary
table (:func:`print_table`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from ttforge.sim.check import CaseResult, describe

__all__ = ["RegressReport", "junit_xml", "print_table"]


@dataclass
class RegressReport:
    sim: str
    results: list[CaseResult]
    seconds: float
    fault: str | None = None
    #: seeds that did not run (the run stopped: the cluster's scheduler went away, Ctrl-C)
    not_run: list[int] = field(default_factory=list)
    #: where the cases ran (``ttforge.sim.cluster``): ``{"where": ..., "workers": ...}``
    cluster: dict | None = None

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
                "builds": sum(r.build_seconds > 0 for r in self.results),   # cases that compiled a model
                "complete": not self.not_run, "not_run": list(self.not_run), "cluster": self.cluster,
                "results": [asdict(r) for r in self.results]}


def junit_xml(rep: RegressReport) -> str:
    """The report as JUnit XML (one testcase per seed)."""
    name = f"ttforge.regress.{rep.sim}" + (f".{rep.fault}" if rep.fault else "")
    errors = sum(r.result == "ERROR" for r in rep.results)
    failures = sum(r.result == "FAIL" for r in rep.results)
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f'<testsuites><testsuite name={quoteattr(name)} tests="{len(rep.results) + len(rep.not_run)}" '
             f'failures="{failures}" errors="{errors}" skipped="{len(rep.not_run)}" '
             f'time="{rep.seconds:.3f}">']
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
    for s in rep.not_run:   # a run that stopped early: the cases it did not reach
        lines.append(f'  <testcase classname={quoteattr(name)} name="seed{s}" time="0">'
                     f'<skipped message="not run: the regression stopped before this case"/></testcase>')
    lines.append("</testsuite></testsuites>")
    return "\n".join(lines) + "\n"




def print_table(rep: RegressReport, file=None) -> None:
    """The summary table (seed, shape, lanes, beat packing, throughput mode, shared
    requantization units, vectors, cycles, result, time)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=file) if file is not None else Console()
    if not console.is_terminal:
        console = Console(file=file, width=140)
    title = (f"ttforge regress on {rep.sim}" + (f" with fault {rep.fault}" if rep.fault else "")
             + f": {rep.passed}/{len(rep.results)} passed, {rep.vectors} vectors, "
             f"{rep.seconds:.1f} s, {rep.cycles_per_second:,.0f} simulated cycles/s"
             + (f"; {len(rep.not_run)} not run" if rep.not_run else ""))
    t = Table(title=title, title_justify="left")
    # tp: the engine runs in throughput mode (AccelConfig.throughput); U: its shared
    # requantization units (AccelConfig.requant_units; - for one per lane)
    for col in ("seed", "shape", "L", "E", "tp", "U", "steps", "vectors", "gaps/bp", "cycles", "result",
                "time", "cycles/s"):
        t.add_column(col, justify="left" if col in ("shape", "result") else "right")
    for r in rep.results:
        style = "" if r.passed else "bold red"
        tp = "yes" if (r.config or {}).get("throughput") else "-"
        units = str((r.config or {}).get("requant_units") or "-")
        t.add_row(str(r.seed), r.shape, str(r.lanes), str(r.stream_elems), tp, units, str(r.steps),
                  str(r.vectors), f"{r.gaps:.1f}/{r.backpressure:.1f}", f"{r.cycles:,}",
                  r.result, f"{r.seconds:.1f}s", f"{r.cycles_per_second:,.0f}", style=style)
    console.print(t)
    for r in rep.results:
        if not r.passed:
            console.print(describe(r), markup=False, highlight=False)
            if r.reproducer:
                console.print(f"  reproducer: {r.reproducer}", markup=False, highlight=False)
