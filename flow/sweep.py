"""``ttforge sweep CONFIG``: design-space exploration on the flow and the Dask engine.

A sweep config (TOML) names a base flow config and a grid of values; every point of the
grid is a flow config (validated like any other) run by :func:`ttforge.flow.run_flow` up
to ``until`` (``compile``: train -> quantize -> compile and the cycle estimate; ``sim``:
also the exact RTL check; ``bitstream``: also place and route), one Dask task per point
(:mod:`ttforge.sim.cluster`: in this process, on a local cluster of ``jobs`` workers or on
the user's cluster)::

    [sweep]
    name = "digits-sweep"
    flow = "digits-icebreaker.toml"   # the base flow config (relative to this file); default: the embedded one
    until = "compile"                 # compile, sim or bitstream
    short = true                      # the flow's [short] caps (epochs, QAT, vectors); no bitstream

    [grid]                            # named axes (AXES) or dotted keys of the flow config
    ranks = [2, 4, 8]
    w_bits = [2, 4, 8]
    lanes = [1, 4]
    stream_elems = [1, 2]             # [hw] stream_elems: elements per AXI4-Stream beat
    board = ["icebreaker", "ulx3s"]

Each point runs in ``OUT/points/<key>/`` (``key``: a hash of its values), so a point with
the same values is the same flow build: running the sweep again recomputes nothing that
finished (finished points are taken from ``sweep.json`` when their row was made with the
same ``until``, ``short``, data and ttforge sources, :class:`_Basis`; a point stopped
half-way skips the flow stages it completed). Points that agree on ``[train]`` and ``[quant]`` (and differ
in lanes or board, say) train and quantize once: the first of them runs in a first wave,
the others start from its build (:data:`SHARED_STAGES`) in a second. The results: ``sweep.csv`` and ``sweep.json`` (one row per
point: values, float and integer accuracy, on-chip bytes, cycles per inference, lanes,
stream_elems, utilization, and with ``until = "sim"`` the exact check, with ``bitstream`` the LUTs or
logic cells, block RAMs and Fmax), ``pareto.png`` (integer accuracy against cycles per
inference and on-chip bytes, and LUTs when placed, the Pareto front of each board marked)
and ``best-<board>.toml``: the flow config of the best point of each board (the highest
integer accuracy among the points that fit it; fewer cycles break a tie), ready for
``ttforge flow``.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import itertools
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ttforge.atomic import (atomic_write_bytes, atomic_write_text, check_owned_dir, check_writable,
                            commit_dir, make_output_dir, output_lock, read_marker, staging_dir)
from ttforge.errors import (ConfigError, EnvironmentFailure, FlowError, MachineFailure,
                            OutputError, OutputFailure, TTForgeError, one_line, show)

__all__ = ["AXES", "UNTIL", "MAX_POINTS", "SHARED_STAGES", "SweepConfig", "SweepResult", "load_sweep", "run_sweep",
           "point_task", "pareto_front", "to_toml"]

#: Short names of the axes most sweeps vary, and the flow config keys they set.
AXES = {"ranks": "train.model.ranks", "hidden": "train.model.hidden", "w_bits": "quant.w_bits",
        "act_bits": "quant.act_bits", "lanes": "hw.lanes", "stream_elems": "hw.stream_elems",
        "board": "bitstream.board",
        "epochs": "train.epochs"}
#: How far each point runs (a flow stage).
UNTIL = ("compile", "sim", "bitstream")
#: The most points one sweep may have.
MAX_POINTS = 4096
#: The columns of ``sweep.csv`` after the grid's.
COLUMNS = ("key", "status", "reason", "float_acc", "int_acc", "on_chip_bytes", "cycles", "lanes",
           "stream_elems", "utilization", "exact", "cycles_per_vector", "logic", "logic_kind", "bram",
           "fmax_mhz", "us_at_fmax", "seconds")


@dataclass(frozen=True)
class SweepConfig:
    """A parsed sweep config: ``name``, the base flow config as data (``base``, with the
    file it came from, ``base_source``), the grid (``(key, values)`` pairs, keys dotted
    flow config keys), ``until`` and ``short``."""

    name: str
    base: Mapping[str, Any]
    grid: tuple[tuple[str, tuple[Any, ...]], ...]
    until: str = "compile"
    short: bool = False
    base_source: str | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        if self.until not in UNTIL:
            raise ConfigError(f"[sweep] until = {self.until!r} is not valid; choose one of {', '.join(UNTIL)}")
        if not isinstance(self.short, bool):
            raise ConfigError(f"[sweep] short = {self.short!r} must be true or false")
        if self.short and self.until == "bitstream":   # the flow's --short builds no bitstream
            raise ConfigError("[sweep] short = true builds no bitstream, so until = 'bitstream' would "
                              "place nothing; set short = false (or until = 'sim')")
        if not self.grid:
            raise ConfigError("[grid] is empty; name at least one axis, e.g. ranks = [2, 4, 8]")
        n = math.prod(len(v) for _, v in self.grid)
        if n > MAX_POINTS:
            raise ConfigError(f"[grid] has {n:,} points, above ttforge's limit of {MAX_POINTS:,}; "
                              f"give fewer values")

    @property
    def axes(self) -> list[str]:
        return [k for k, _ in self.grid]

    def points(self) -> list["Point"]:
        """Every point of the grid, in order, each with its flow config validated (one
        :class:`ConfigError` naming the point and the key when a value is refused)."""
        from ttforge.flow.config import FlowConfig

        out = []
        for values in itertools.product(*(v for _, v in self.grid)):
            params = dict(zip(self.axes, values))
            data = json.loads(json.dumps(self.base))
            for key, v in params.items():
                _set(data, key, v)
            key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
            data.setdefault("flow", {})["name"] = f"{self.name}-{key}"
            try:
                FlowConfig.from_dict(data, source=self.base_source)
            except ConfigError as e:
                raise ConfigError(f"[grid] point {_label(params)}: {e}") from None
            out.append(Point(key, params, data))
        return out


@dataclass(frozen=True)
class Point:
    key: str
    params: dict[str, Any]
    flow: dict[str, Any]


@dataclass
class SweepResult:
    """The rows (one per point, grid order), the output directory and the files written."""

    config: SweepConfig
    out_dir: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    reused: int = 0
    seconds: float = 0.0
    best: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the top-level files written (name -> the sha256s ``sweep.json`` recognises)
    files: dict[str, set[str]] = field(default_factory=dict)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] == "failed"]


def _label(params: Mapping[str, Any]) -> str:
    """``ranks=2, port=...``: the point's values as one line of text (control characters
    escaped: it goes into a TOML comment, which they made invalid, and onto the plot)."""
    from ttforge.flow.report import file_text

    return ", ".join(f"{file_text(k.split('.')[-1])}={file_text(v)}" for k, v in params.items())


def _set(data: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    d = data
    for p in parts[:-1]:
        nxt = d.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"[grid] {dotted}: {p} is not a table of the flow config")
        d = nxt
    d[parts[-1]] = value


def _plain(obj: Any) -> Any:
    """The flow config as TOML-able data: ``None`` left out, paths as strings."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def load_sweep(path: str | os.PathLike) -> SweepConfig:
    """Read and validate a sweep config (every problem one :class:`ConfigError` line)."""
    from ttforge.flow.config import EXAMPLES_HINT, FlowConfig, default_config
    from ttforge.limits import MAX_CONFIG_BYTES, parse_config_text, read_bounded

    p = Path(path).expanduser()
    if not p.exists():   # a FIFO or a device is named as such by read_bounded
        raise ConfigError(f"sweep config {p} does not exist; give a .toml file ({EXAMPLES_HINT}; "
                          f"examples/digits-sweep.toml is one)")
    try:
        text = read_bounded(p, "sweep config", MAX_CONFIG_BYTES, ConfigError).decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: is not valid TOML ({e}); fix the syntax") from None
    data = parse_config_text(text, True, str(p))
    for k in data:
        if k not in ("sweep", "grid"):
            raise ConfigError(f"{p}: unknown section {k!r}; a sweep config has [sweep] and [grid]")
    sw = data.get("sweep", {})
    if not isinstance(sw, dict):
        raise ConfigError(f"{p}: [sweep] must be a table")
    for k in sw:
        if k not in ("name", "flow", "until", "short"):
            raise ConfigError(f"{p}: [sweep] {k}: unknown key; valid: name, flow, until, short")
    name = sw.get("name", p.stem)
    if not (isinstance(name, str) and name and all(c.isalnum() or c in "-_." for c in name)
            and name not in (".", "..")):
        raise ConfigError(f"{p}: [sweep] name = {show(name)} must be letters, digits, '-', '_' or '.'")
    if "flow" in sw:
        if not isinstance(sw["flow"], str):
            raise ConfigError(f"{p}: [sweep] flow = {show(sw['flow'])} must be the path of a flow config")
        fp = (p.parent / sw["flow"]).resolve()
        try:
            base_cfg = FlowConfig.load(fp)
        except ConfigError as e:
            raise ConfigError(f"{p}: [sweep] flow: {e}") from None
    else:
        base_cfg = default_config()
    grid_in = data.get("grid", {})
    if not isinstance(grid_in, dict):
        raise ConfigError(f"{p}: [grid] must be a table of axis = [values]")
    base = _plain(base_cfg.to_dict())
    grid = []
    for axis, values in grid_in.items():
        key = AXES.get(axis, axis)
        if "." not in key:
            raise ConfigError(f"{p}: [grid] {axis}: not an axis; use one of {', '.join(AXES)} or a dotted "
                              f"flow config key such as quant.calibration")
        section = key.split(".")[0]
        if section not in base:
            raise ConfigError(f"{p}: [grid] {axis}: {section!r} is not a section of a flow config")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{p}: [grid] {axis} = {show(values)} must be a non-empty list of values")
        if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
            raise ConfigError(f"{p}: [grid] {axis} lists a value twice")
        if key == AXES["hidden"] and any(not isinstance(v, list) for v in values):
            # a point's value is a whole hidden = [...]: hidden = [40, 48] read as widths
            raise ConfigError(f"{p}: [grid] {axis} = {show(values)}: each value is a list of hidden layer "
                              f"widths; write {axis} = [{', '.join(f'[{v}]' for v in values[:3])}]")
        grid.append((key, tuple(values)))
    try:
        cfg = SweepConfig(name=name, base=base, grid=tuple(grid), until=sw.get("until", "compile"),
                          short=sw.get("short", False),
                          base_source=None if base_cfg.source is None else str(base_cfg.source),
                          source=str(p.resolve()))
        cfg.points()   # every point validated before any work
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None
    return cfg


# ----------------------------------------------------------------------------- one point
def _metrics(root: Path, completed: set[str] | frozenset[str]) -> dict[str, Any]:
    """The figures of a point's build ``root`` from the stages this run ``completed``
    (ran or skipped): a stage that failed, or was not reached, can hold an earlier run's
    record (a failed point's row showed the accuracy and cycles of a run before a
    config change)."""
    from ttforge.flow.stages import read_record as read_any

    def read_record(stage_dir: Path):
        return read_any(stage_dir) if stage_dir.name in completed else None

    out: dict[str, Any] = {}
    rec = read_record(root / "quantize")
    if rec:
        s = rec["summary"]
        out.update(float_acc=s["float_acc"], int_acc=s["int_acc"], on_chip_bytes=s["on_chip"]["on_chip_bytes"])
    rec = read_record(root / "compile")
    if rec:
        s = rec["summary"]
        out.update(cycles=s["cycles"], lanes=s["lanes"], utilization=s["utilization"],
                   stream_elems=s.get("stream_elems", 1))
    rec = read_record(root / "sim")
    if rec:
        s = rec["summary"]
        out.update(exact=s["exact"], cycles_per_vector=s["cycles_per_vector"])
    rec = read_record(root / "bitstream")
    if rec:
        res = rec["summary"]["resources"]
        kind = next((k for k in ("lc", "lut", "lut4") if k in res), None)
        bram = next((k for k in ("bram", "ebr", "dp16kd") if k in res), None)
        fmax = rec["summary"]["fmax_mhz"]
        out.update(logic=res[kind]["used"] if kind else None, logic_kind=kind,
                   bram=res[bram]["used"] if bram else None, fmax_mhz=fmax)
        if fmax and out.get("cycles"):   # the latency the placed design reaches: cycles at Fmax
            out["us_at_fmax"] = round(out["cycles"] / fmax, 3)
    return out


#: The flow stages that depend on the [train] and [quant] sections alone: points that agree on
#: those share them (:func:`point_task` copies them from a sibling point's build).
SHARED_STAGES = ("train", "quantize")


def _seed_stages(point_dir: Path, sibling: Path) -> None:
    """Copy the completed ``train`` and ``quantize`` stages of ``sibling`` (a point with the
    same [train] and [quant]) into ``point_dir``, each whole or not at all. The flow then
    skips them: their fingerprints (config sections, upstream digests, ttforge version)
    are this point's too, and their files are checked against the record."""
    import shutil

    from ttforge.flow.stages import RECORD

    for stage in SHARED_STAGES:
        src, dst = sibling / stage, point_dir / stage
        if not (src / RECORD).is_file() or dst.exists():
            continue
        point_dir.mkdir(parents=True, exist_ok=True)
        try:
            tmp = staging_dir(dst)   # named with the process id: a killed copy's goes later
            try:
                shutil.copytree(src, tmp, dirs_exist_ok=True)
                commit_dir(tmp, dst)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        except (OSError, OutputError):
            return   # the stage then simply runs


def _machine_failure(e: BaseException) -> EnvironmentFailure | None:
    """The machine's failure under a point (:func:`ttforge.boundary.machine_failure`: a
    full disk, an I/O error, a limit reached, memory exhausted), or ``None``: a failure of
    the design point, its row. A stage's :class:`~ttforge.errors.FlowError` is judged by
    what the stage raised, and an output the machine could not write is an
    :class:`~ttforge.errors.OutputFailure` (a full disk under a point was a "failed" row,
    as if the design had failed). A tool's own failure (a simulator that stopped, the
    toolchain) stays the point's row: a design can cause it."""
    from ttforge.boundary import machine_failure as of_the_machine

    if isinstance(e, MachineFailure):
        return e
    if isinstance(e, FlowError) and e.__context__ is not None:
        e = e.__context__   # run_flow's "stage NAME failed: ..." of the stage's own error
    if isinstance(e, (OutputFailure, MachineFailure)):   # e.g. a build cache the disk cannot hold
        return e
    return None if isinstance(e, TTForgeError) else of_the_machine(e)


def point_task(args: tuple) -> dict[str, Any]:
    """Run one point (on any worker): ``(point_dir, flow_data, base_source, until, short[,
    sibling_dir])`` -> its row (``status``: ``ok``, ``no fit`` (the model does not fit the
    board) or ``failed``, with ``reason``, and the metrics of :data:`COLUMNS`). With
    ``sibling_dir`` (a finished point with the same [train] and [quant], when this worker
    sees it) the point starts from that point's trained and quantized network."""
    from ttforge.flow.config import FlowConfig
    from ttforge.flow.stages import run_flow
    from ttforge.sim.cluster import one_at_a_time

    point_dir, flow_data, base_source, until, short = args[:5]
    sibling = args[5] if len(args) > 5 else None
    t0 = time.perf_counter()
    row: dict[str, Any] = {"status": "ok", "reason": ""}
    completed: set[str] = set()

    def done(res) -> None:
        # a simulation that ran and found a mismatch is "failed" with this run's record:
        # its verdict is the row's (a rerun, "skipped", gave exact=False, the first none)
        if res.status in ("ran", "skipped") or (res.status == "failed" and res.record is not None):
            completed.add(res.name)

    # the threads of one worker process (`dask worker --nthreads 4`) take turns, as
    # regress's cases do: a flow sets process-wide state (the simulator's environment,
    # torch's thread count), and two points at once gave other accuracies than in-process
    with one_at_a_time():
        try:
            if sibling and Path(sibling).is_dir():
                _seed_stages(Path(point_dir), Path(sibling))
            cfg = FlowConfig.from_dict(flow_data, source=base_source)
            res = run_flow(cfg, point_dir, until=until, short=short, on_done=done)
            if res.verified is False:
                row.update(status="failed", reason="the RTL outputs differ from the golden executor")
        except Exception as e:  # noqa: BLE001 - one point's failure (or bug) is its row, the sweep goes on
            failure = _machine_failure(e)
            if failure is not None:   # no verdict on the point: the sweep stops (run_sweep)
                raise MachineFailure(one_line(str(failure))) from e
            if isinstance(e, TTForgeError):
                text = one_line(str(e))
                row.update(status="no fit" if "does not fit" in text else "failed", reason=text)
            else:
                row.update(status="failed", reason=one_line(f"{type(e).__name__}: {e}"))
    row.update(_metrics(Path(point_dir), completed))
    row["seconds"] = round(time.perf_counter() - t0, 2)
    return row


# ----------------------------------------------------------------------------- results
def pareto_front(rows: Sequence[Mapping[str, Any]], cost: str, gain: str = "int_acc", *,
                 higher: bool = True) -> list[int]:
    """Indices of the rows no other row beats: none with ``cost`` as low and ``gain`` as
    high (as low, with ``higher=False``) and one of them strictly (rows missing either are
    left out)."""
    sign = 1 if higher else -1
    pts = [(i, r[cost], sign * r[gain]) for i, r in enumerate(rows)
           if r.get(cost) is not None and r.get(gain) is not None]
    front = []
    for i, c, g in pts:
        if not any((c2 <= c and g2 >= g) and (c2 < c or g2 > g) for _, c2, g2 in pts):
            front.append(i)
    return sorted(front, key=lambda i: rows[i][cost])


def _best(rows: Sequence[Mapping[str, Any]], until: str) -> dict[str, dict[str, Any]]:
    best: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["status"] != "ok" or r.get("int_acc") is None or (until != "compile" and not r.get("exact")):
            continue
        b = r["board"]
        cur = best.get(b)
        if cur is None or (r["int_acc"], -(r.get("cycles") or 0)) > (cur["int_acc"], -(cur.get("cycles") or 0)):
            best[b] = r
    return best


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"cannot write {v} to TOML")
        return repr(v)
    if isinstance(v, str):
        # a TOML basic string: JSON's escapes are TOML's, but not its surrogate pairs
        # ("\ud83d\ude00" for an emoji) nor a lone surrogate (a non-UTF-8 byte of a path,
        # written \xff as in the other files): either made best-*.toml invalid TOML.
        # Characters as they are then, DEL escaped (TOML refuses it raw, JSON keeps it)
        from ttforge.errors import bytes_escaped

        return json.dumps(bytes_escaped(v), ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise ConfigError(f"cannot write a {type(v).__name__} to TOML")


def to_toml(data: Mapping[str, Any], header: str = "") -> str:
    """Nested tables of scalars and lists as TOML (``None`` values left out); each line
    of ``header`` a comment (its control characters escaped: TOML refuses them there)."""
    from ttforge.flow.report import file_text

    # split at newlines only (splitlines() also splits at \x0b, \x1c or \u2028, which
    # would start a line that is no comment)
    lines = [f"# {file_text(ln)}" for ln in header.split("\n")] if header else []

    def table(prefix: str, d: Mapping[str, Any]) -> None:
        scalars = {k: v for k, v in d.items() if not isinstance(v, Mapping) and v is not None}
        if prefix:
            lines.extend(["", f"[{prefix}]"])
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in scalars.items())
        for k, v in d.items():
            if isinstance(v, Mapping):
                table(f"{prefix}.{k}" if prefix else k, v)

    table("", data)
    return "\n".join(lines).lstrip("\n") + "\n"


def _plot(rows: list[dict[str, Any]], title: str) -> bytes:
    """The Pareto plot of ``rows`` as PNG bytes."""
    from ttforge.model.plots import figure_class

    # no pyplot (matplotlib.use("Agg") switched a notebook's backend), and no lines about
    # a $HOME it cannot write (on a cluster the command imports it here first)
    Figure = figure_class()

    acc = ("int_acc", "integer accuracy (%)", 100, True)
    # (x cost, its label, y gain, its label, scale of y, higher y is better)
    axes_spec = [("cycles", "cycles per inference", *acc),
                 ("on_chip_bytes", "on-chip bytes (weights + buffers)", *acc)]
    if any(r.get("logic") for r in rows):
        axes_spec.append(("logic", "LUTs / logic cells (placed)", *acc))
        # the hardware's own trade-off (points of one network share its accuracy): area
        # against the latency the placed design reaches
        axes_spec.append(("logic", "LUTs / logic cells (placed)", "us_at_fmax",
                          "us per inference at Fmax", 1, False))
        accs = {r.get("int_acc") for r in rows if r["status"] == "ok"}
        if len(accs) == 1:   # one network on different hardware: accuracy plots say nothing
            axes_spec = axes_spec[-1:]
            title += f" (one network: integer accuracy {100 * accs.pop():.1f}% at every point)"
    fig = Figure(figsize=(max(5.2 * len(axes_spec), 8), 4.6))
    axs = fig.subplots(1, len(axes_spec), squeeze=False)
    boards = sorted({r["board"] for r in rows})
    markers = dict(zip(boards, "os^Dv"))
    for ax, (cost, label, gain, ylabel, scale, higher) in zip(axs[0], axes_spec):
        for b in boards:
            mine = [r for r in rows if r["board"] == b and r["status"] == "ok"
                    and r.get(cost) is not None and r.get(gain) is not None]
            if not mine:
                continue
            ax.scatter([r[cost] for r in mine], [scale * r[gain] for r in mine], marker=markers[b],
                       alpha=0.6, label=b)
            front = [mine[i] for i in pareto_front(mine, cost, gain, higher=higher)]
            ax.plot([r[cost] for r in front], [scale * r[gain] for r in front], "-", lw=1.2)
            if len(rows) <= 16:   # few points: name each by its values (the board is the marker)
                for j, r in enumerate(sorted(mine, key=lambda r: r[cost])):   # above, below: apart
                    ax.annotate(_label({k: v for k, v in r["params"].items() if k != "bitstream.board"}),
                                (r[cost], scale * r[gain]), fontsize=7, xytext=(4, 5 if j % 2 else -10),
                                textcoords="offset points", parse_math=False)
        ax.margins(x=0.25)
        xs = [r[cost] for r in rows if r.get(cost)]
        if xs and max(xs) > 10 * min(xs):   # a log axis only where the costs span decades
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def _write(res: SweepResult, *, final: bool) -> None:
    from ttforge.flow.report import json_safe

    cfg, out = res.config, res.out_dir
    rows = [r for r in res.rows if r]

    def record() -> None:
        doc = {"format": "ttforge-sweep", "name": cfg.name, "until": cfg.until, "short": cfg.short,
               "grid": {k: list(v) for k, v in cfg.grid}, "complete": final and len(rows) == len(res.rows),
               "seconds": round(res.seconds, 1), "rows": rows,
               "files": {n: sorted(h) for n, h in sorted(res.files.items())}}
        # a non-UTF-8 byte of a path (a data directory under x\xff/) as text: json.dumps wrote
        # the lone surrogate as "\udcff", which strict parsers refuse
        atomic_write_text(out / "sweep.json", json.dumps(json_safe(doc), indent=1, default=str) + "\n")

    if not final:
        record()
        return
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([k.split(".")[-1] if k not in ("bitstream.board",) else "board" for k in cfg.axes]
               + list(COLUMNS))
    for r in rows:
        w.writerow([json.dumps(r["params"][k]) if isinstance(r["params"][k], list) else r["params"][k]
                    for k in cfg.axes] + ["" if r.get(c) is None else r.get(c) for c in COLUMNS])
    blobs = {"sweep.csv": json_safe(buf.getvalue()).encode(), "pareto.png": _plot(rows, f"ttforge sweep {cfg.name}: {len(rows)} points")}
    for board, r in res.best.items():
        data = json.loads(json.dumps(r["flow"]))
        data["flow"]["name"] = f"{cfg.name}-best-{board}"
        header = (f"The best point of ttforge sweep {cfg.name} for the {board}: {_label(r['params'])}\n"
                  f"integer accuracy {100 * r['int_acc']:.2f}%, {r.get('cycles')} cycles per inference, "
                  f"{r.get('on_chip_bytes')} on-chip bytes"
                  + (" (measured with the flow's [short] caps; this config trains in full)" if cfg.short else "")
                  + f".\nRun it with: ttforge flow best-{board}.toml")
        blobs[f"best-{board}.toml"] = to_toml(data, header).encode()
    new = {n: hashlib.sha256(b).hexdigest() for n, b in blobs.items()}
    # the record first names the old and the new contents, so that an interruption among
    # the writes leaves files the next run recognises; then only the new ones
    res.files = {**res.files, **{n: res.files.get(n, set()) | {h} for n, h in new.items()}}
    record()
    for name, data in blobs.items():
        atomic_write_bytes(out / name, data)
    res.files = {**res.files, **{n: {h} for n, h in new.items()}}
    record()


def _is_own(name: str) -> bool:
    """A top-level name :func:`_write` writes (beside ``sweep.json`` and ``points/``)."""
    return name in ("sweep.csv", "pareto.png") or (name.startswith("best-") and name.endswith(".toml"))


#: The largest ``sweep.json`` read back (its rows hold every point's flow settings).
_RECORD_BYTES = 1 << 28


def _recorded(doc: dict) -> dict[str, set[str]]:
    """The files ``sweep.json`` lists as the sweep's (name -> the sha256s it may hold:
    the old and the new one while the final write runs, so an interruption there is
    still recognised); a ``ValueError`` unless the record is well formed."""
    listed = doc["files"]
    if not (isinstance(listed, dict) and all(_is_own(n) and isinstance(v, list)
                                             and all(isinstance(h, str) for h in v)
                                             for n, v in listed.items())):
        raise ValueError("not a record of files")
    return {n: set(v) for n, v in listed.items()}


def _check_out(out: Path) -> dict[str, set[str]]:
    """A one-line :class:`~ttforge.errors.OutputError` unless ``out`` is empty or an
    earlier run's of a sweep, recognised by content (:func:`ttforge.atomic.check_owned_dir`):
    a ``sweep.json`` of format ``ttforge-sweep``, ``points/`` (flow outputs, which flow
    checks itself) and the files it lists, each with the content it recorded (a user's
    file of one of those names, or one edited since, is never replaced). Returns the
    recorded files (name -> sha256s)."""
    return check_owned_dir(out, "sweep.json", "ttforge-sweep", _recorded, flag="--out",
                           command="ttforge sweep", subdirs=("points",), limit=_RECORD_BYTES)


def _sane(row: Mapping[str, Any]) -> bool:
    """Whether a finished row of ``sweep.json`` has the types the tables and the best
    point's file use (a damaged one is run again: an ``int_acc`` of "abc" stopped the
    final write with an internal error)."""
    for k, v in row.items():
        if k in ("params", "flow", "key", "board", "basis"):
            continue
        if k in ("reason", "logic_kind", "status"):
            ok = v is None or isinstance(v, str)
        elif k == "exact":
            ok = v is None or isinstance(v, bool)
        else:
            ok = v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))
        if not ok:
            return False
    return True


class _Basis:
    """What a point's row depends on besides its flow config: the sweep's ``until`` and
    ``short``, the data's digest (:func:`ttforge.flow.stages._data_digest`, the arrays of
    an IDX directory, by content) and the sources of the packages the flow runs."""

    def __init__(self, cfg: SweepConfig) -> None:
        from ttforge.sources import sources_digest

        self._cfg = cfg
        self._code = sources_digest("model", "ir", "quant", "hw", "sim", "firmware", "flow")
        self._data: dict[str, str] = {}

    def of(self, p: "Point") -> dict[str, Any]:
        from ttforge.flow.config import FlowConfig
        from ttforge.flow.stages import _data_digest

        spec = FlowConfig.from_dict(p.flow, source=self._cfg.base_source).train.data
        if spec not in self._data:
            self._data[spec] = _data_digest(spec)
        return {"until": self._cfg.until, "short": bool(self._cfg.short), "data": self._data[spec],
                "code": self._code}


def _finished(out: Path) -> dict[str, dict[str, Any]]:
    """The rows of an earlier run of this sweep (by point key) that finished."""
    doc = read_marker(out / "sweep.json", _RECORD_BYTES)
    if not isinstance(doc, dict) or doc.get("format") != "ttforge-sweep":
        return {}
    return {r["key"]: r for r in doc.get("rows", []) if isinstance(r, dict) and r.get("key")
            and r.get("status") in ("ok", "no fit")}


def _clean_point(point_dir: Path) -> None:
    """Remove the stage temporaries an ended process left in the point build
    ``point_dir``, under its lock (:func:`ttforge.flow.stages._clean_leftovers`, what the
    point's next flow run does first); a point still being written (its lock held) is
    left to its writer."""
    from ttforge.flow.stages import _clean_leftovers

    with contextlib.suppress(OSError, OutputError):
        with output_lock(point_dir, "--out"):
            _clean_leftovers(point_dir)


def run_sweep(cfg: SweepConfig, out_dir: str | os.PathLike, *, jobs: int | None = None,
              cluster: str | None = None, progress: Callable[[dict[str, Any]], None] | None = None) -> SweepResult:
    """Run every point of ``cfg`` not finished in ``out_dir`` before (one task each; in
    this process when ``jobs`` is 1 and no ``cluster``) and write the results (module
    docstring). Raises :class:`~ttforge.errors.SchedulerLost` / ``ClusterError`` as
    ``ttforge regress`` does; the finished points are in ``sweep.json`` then. One sweep
    at a time into ``out_dir`` (:func:`ttforge.atomic.output_lock`, as ``flow --out``)."""
    p = Path(out_dir).expanduser()
    # the directory is made under the lock, and a run that fails before it wrote anything
    # (a scheduler that cannot be reached, Ctrl-C while the local cluster starts) has the
    # lock take back the directories it made: made before the lock, a second sweep
    # refused by it took the first's new --out away
    with output_lock(p, "--out"):
        out = make_output_dir(p, "--out")
        return _run_sweep(cfg, out, jobs=jobs, cluster=cluster, progress=progress)


def _run_sweep(cfg: SweepConfig, out: Path, *, jobs: int | None, cluster: str | None,
               progress: Callable[[dict[str, Any]], None] | None) -> SweepResult:
    from ttforge.flow.report import json_safe

    files = _check_out(out)
    check_writable(out, "--out", inside=True)   # before any point, not at the results
    points = cfg.points()
    t0 = time.perf_counter()
    done = _finished(out)
    res = SweepResult(cfg, out, rows=[{} for _ in points], files=files)
    todo = []
    basis = _Basis(cfg)
    for i, p in enumerate(points):
        base = {"key": p.key, "params": p.params, "board": p.flow["bitstream"]["board"], "flow": p.flow,
                "basis": basis.of(p)}
        old = done.get(p.key)
        # the record holds the flow as written (json_safe): so is it compared, and with it
        # all else the row's figures depend on (a row of --short figures was reused by the
        # full sweep, one of until "compile" by until "sim" with no simulation run, one of
        # other IDX files under the same names)
        if (old is not None and old.get("flow") == json_safe(p.flow) and old.get("basis") == base["basis"]
                and _sane(old)):
            # the point's own key, values and board, never the record's (a board of
            # "x/../../dir/file" named a best-*.toml outside --out)
            res.rows[i] = {**old, **base}
            res.reused += 1
        else:
            # absolute: a worker's working directory is not the command's (on a cluster the
            # point builds land where the workers see this path; the table needs nothing shared)
            todo.append((i, base, (str((out / "points" / p.key).resolve()), p.flow, cfg.base_source,
                                   cfg.until, cfg.short)))
    last = [time.monotonic()]

    def finish(j: int, outcome: Any) -> None:
        i, base, _ = todo[j]
        row = dict(base)
        failure = _machine_failure(outcome) if isinstance(outcome, BaseException) else None
        if failure is not None:
            # here or on a worker, as regress does: the rows so far are kept (below), this
            # point and those not reached are not rows, and the line says what to do
            raise MachineFailure(f"point {_label(base['params'])} could not run: {failure}; the sweep "
                                 f"stopped there, a failure of the machine, not of the design point; "
                                 f"run it again once that is fixed") from None
        if isinstance(outcome, BaseException):
            row.update(status="failed", reason=one_line(f"{type(outcome).__name__}: {outcome}"))
        elif not isinstance(outcome, dict):
            # a task that came back with no row (a test's stand-in task did, in CI) failed
            # its point; it ended the whole sweep with a TypeError, an internal error
            row.update(status="failed", reason=f"the point's task returned no result "
                                               f"({type(outcome).__name__}); run the sweep again")
        else:
            row.update(outcome)
        res.rows[i] = row
        if progress:
            progress(row)
        if time.monotonic() - last[0] > 2.0:
            res.seconds = time.perf_counter() - t0
            _write(res, final=False)
            last[0] = time.monotonic()

    # points that agree on [train] and [quant] train and quantize once: the first of each
    # such group runs in a first wave, the others start from its build in a second wave
    # (a group whose point finished in an earlier run needs no first wave)
    def share_key(flow: Mapping[str, Any]) -> str:
        return json.dumps([flow.get(k) for k in ("train", "quant")], sort_keys=True, default=str)

    source: dict[str, str] = {}
    for i, p in enumerate(points):
        if res.rows[i]:
            source.setdefault(share_key(p.flow), str((out / "points" / p.key).resolve()))
    waves: list[list[int]] = [[], []]
    for j, (i, _, _) in enumerate(todo):
        k = share_key(points[i].flow)
        if k in source:
            waves[1].append(j)
        else:
            source[k] = todo[j][2][0]
            waves[0].append(j)

    def task_args(j: int) -> tuple:
        i, _, a = todo[j]
        sib = source[share_key(points[i].flow)]
        return a + (sib,) if sib != a[0] else a

    spec = None
    written = False
    try:
        with contextlib.ExitStack() as stack:
            client = None
            if todo and not (cluster is None and (jobs is None or jobs <= 1)):
                from ttforge.sim.cluster import ClusterSpec, connect, run_tasks

                spec = (ClusterSpec.parse(None, min(int(jobs or os.cpu_count() or 1), len(todo)))
                        if cluster in (None, "local") else ClusterSpec.parse(cluster))
                # reached (or started) before anything is written into --out: a scheduler
                # that could not be reached left a new --out holding an empty sweep.json
                client = stack.enter_context(connect(spec))
            # the record before the first point starts: it is what makes --out this sweep's
            # (a sweep killed before its first point ended left points/ only, and every later
            # run refused --out as "not a ttforge sweep output"; now it resumes, and the
            # point skips the flow stages it completed)
            _write(res, final=False)
            written = True
            if client is None:
                for wave in waves:
                    for j in wave:
                        try:
                            outcome = point_task(task_args(j))
                        except MachineFailure as e:
                            outcome = e   # said as a worker's is (finish)
                        finish(j, outcome)
            else:
                for wave in waves:
                    if wave:
                        run_tasks(client, point_task, [task_args(j) for j in wave],
                                  lambda k, outcome, wave=wave: finish(wave[k], outcome),
                                  label=f"sweep-{cfg.name}", worker_timeout=spec.worker_timeout)
    except BaseException as e:
        if spec is not None and spec.is_local:
            # the local cluster is closed and its workers ended: a point they were writing
            # keeps its stage temporaries (a worker is killed before its cleanup runs;
            # Ctrl-C left .report.ttforge-<pid>.*.tmp in points/), removed here as the flow's
            # next run would. A remote cluster's workers may still run their point: theirs
            # stay (the point's next run removes them)
            for i, _, a in todo:
                if not res.rows[i]:
                    _clean_point(Path(a[0]))
        if written:
            res.seconds = time.perf_counter() - t0
            try:
                _write(res, final=False)   # what finished is kept: the next run starts from it
            except (OSError, TTForgeError):
                if not isinstance(e, MachineFailure):
                    raise
                # the disk that failed the point may take no record either: the point's
                # line is what to say (sweep.json stays the last one written)
        raise
    res.seconds = time.perf_counter() - t0
    res.best = _best(res.rows, cfg.until)
    _write(res, final=True)
    return res
