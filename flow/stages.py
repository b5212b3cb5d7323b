"""The stages of ``ttforge flow`` and the machinery that runs or skips them.

Each stage writes into its own directory of the build directory
(``build/<name>/<stage>/``) and ends by writing ``stage.json``: the stage's
*fingerprint* (sha256 of the config sections it reads, the content of the data it reads
but not its path, the digests of the upstream stages' outputs, the ttforge version and
the sources of the packages it runs, :data:`_CODE`; for the hardware stages also the
generator's, :func:`ttforge.sim.runner.generator_fingerprint`), the sha256 of every file it
wrote, its output digest (of those sha256s; train's of what the later stages read of it,
without timings, :func:`_train_digest`), its time and a summary. A stage whose
fingerprint is unchanged and whose files are intact is skipped. A stage runs in a
temporary directory that is renamed into place only when it completes, so a failed or
interrupted stage leaves the previous output (or nothing) behind, never half of one.

The stages only call the library: :func:`ttforge.model.train.train`,
:func:`ttforge.quant.ptq.quantize_trained` and :func:`~ttforge.ir.artifact.save_artifact`,
:func:`ttforge.hw.cycles.estimate`, :func:`ttforge.hw.generate.generate`,
:mod:`ttforge.sim` (native harness or cocotb) and :func:`ttforge.firmware.build.build`.
"""

from __future__ import annotations

import filecmp
import functools
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ttforge import __version__
from ttforge.errors import ConfigError, TTForgeError, UserError, show_path
from ttforge.errors import EXIT_ENVIRONMENT, FlowError
from ttforge.limits import open_regular, read_bounded
from ttforge.atomic import (atomic_dir, atomic_write_bytes, check_output_dir, check_owned_dir,
                            check_writable, clean_stale, discard_dir, make_output_dir, output_lock,
                            sha256_file)

__all__ = ["STAGES", "FlowError", "StageResult", "FlowResult", "run_flow", "fingerprint",
           "RECORD", "read_record"]

#: Stage names, in order.
STAGES = ("train", "quantize", "compile", "rtl", "sim", "device-train", "bitstream", "report")
#: The record every completed stage writes into its directory.
RECORD = "stage.json"
_FORMAT = "ttforge-flow-stage"


@dataclass
class StageResult:
    """What happened to one stage in this run."""

    name: str
    status: str               # "ran", "skipped", "failed", "not run"
    seconds: float = 0.0      # this run's time (checking a skipped stage costs a little too)
    figure: str = ""          # the key figure, one short phrase
    record: dict[str, Any] | None = None
    reason: str = ""          # why "not run" / "failed"


@dataclass
class FlowResult:
    config: Any
    out_dir: Path
    stages: list[StageResult] = field(default_factory=list)
    verified: bool | None = None  # the simulation's exact match (None: not simulated)

    def stage(self, name: str) -> StageResult | None:
        return next((s for s in self.stages if s.name == name), None)

    @property
    def report(self) -> Path:
        return self.out_dir / "report.html"


# ----------------------------------------------------------------------------- records
def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()


#: Keys of a stage's inputs that its record shows but its fingerprint leaves out: where
#: the data is (its content is ``inputs["data"]``), so that a project moved whole (config,
#: data and build) skips what it made; the resolved path had re-run train, quantize and sim.
_SHOWN_ONLY = ("data_path",)


def fingerprint(inputs: dict[str, Any]) -> str:
    """sha256 of a stage's inputs (plain data, but for :data:`_SHOWN_ONLY`) and the
    ttforge version."""
    kept = {k: v for k, v in inputs.items() if k not in _SHOWN_ONLY}
    return hashlib.sha256(_canonical({"ttforge": __version__, **kept})).hexdigest()


def _hash_tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256_file(p)
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != RECORD}


def _own_stage(stage_dir: Path) -> None:
    """An existing stage directory is replaced only if it is a flow stage's, recognised by
    content: its ``stage.json`` lists every other file in it (their content may have
    changed: that is why the stage runs again). A directory of the user's is refused."""
    check_owned_dir(stage_dir, RECORD, _FORMAT, lambda rec: {name: None for name in rec["outputs"]},
                    flag="--out", command="ttforge flow")


#: The largest ``stage.json`` read back (a few kB; the report's holds every stage's summary).
_RECORD_BYTES = 1 << 24
#: The largest stage output hashed to check it (a bitstream, ``model.ttfa``, ``vectors.npz``:
#: megabytes); a larger one is not intact and the stage runs again.
_OUTPUT_BYTES = 1 << 32


def read_record(stage_dir: Path) -> dict[str, Any] | None:
    """The ``stage.json`` of a completed stage, or ``None`` (missing, unreadable, not a
    regular file, or not a stage record)."""
    # open_regular: a FIFO in its place blocked flow for good
    try:
        rec = json.loads(read_bounded(stage_dir / RECORD, "stage record", _RECORD_BYTES, ConfigError))
    except (ConfigError, ValueError, RecursionError):
        return None
    return rec if isinstance(rec, dict) and rec.get("format") == _FORMAT else None


def _output_digest(path: Path) -> str | None:
    """The sha256 of the stage output ``path``, or ``None`` when it is not a regular file
    (a FIFO, a device: opening one blocked flow for good) or cannot be read."""
    try:
        f, _ = open_regular(path, "stage output", _OUTPUT_BYTES, ConfigError)
    except ConfigError:
        return None
    h = hashlib.sha256()
    with f:
        try:
            # chunked by hand: hashlib.file_digest is Python 3.11+
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        except OSError:
            return None
    return h.hexdigest()


def _intact(stage_dir: Path, rec: dict[str, Any]) -> bool:
    """Whether every output ``rec`` lists is in ``stage_dir``, a regular file with the
    sha256 it was written with."""
    outputs = rec.get("outputs")
    if not isinstance(outputs, dict):
        return False
    return all(_output_digest(stage_dir / name) == digest for name, digest in outputs.items())


def _clean_leftovers(root: Path) -> None:
    """Remove what interrupted runs left in ``root``; called under the build's
    :func:`~ttforge.atomic.output_lock`, before ``root`` is judged a flow build or not.

    A stage directory a killed run moved aside comes back and the temporaries of ended
    processes go (:func:`ttforge.atomic.clean_stale`, by the pid in their names). A
    stage's temporary whose pid still looks alive goes too: the lock says no run writes
    into ``root``, so the pid was reused or is one of another PID namespace. Only names
    of ttforge's form are touched (``.<stage>.ttforge-<pid>.<random>.tmp``/``.old``)."""
    if not root.is_dir():
        return
    for name in (*STAGES, *PUBLISHED):
        clean_stale(root, name)
    for p in root.glob(".*"):
        if any(p.name.startswith(f".{s}.ttforge-") for s in STAGES) and p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)


# ----------------------------------------------------------------------------- context
@dataclass
class _Ctx:
    cfg: Any
    root: Path
    short: bool
    say: Callable[[str], None]
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    statuses: dict[str, str] = field(default_factory=dict)
    #: sha256 of each published report copy when the run started (:func:`_check_published`)
    published: dict[str, str | None] = field(default_factory=dict)

    def dir(self, stage: str) -> Path:
        return self.root / stage

    def digest(self, stage: str) -> str | None:
        rec = self.records.get(stage)
        return rec["digest"] if rec else None


# ----------------------------------------------------------------------------- stages
def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _require_data(ctx: _Ctx) -> str:
    """``[train] data`` for a stage that reads it: a missing IDX directory is one line
    naming the key and the config file it is relative to (the loader's line named only
    the resolved path, e.g. a packaged MNIST example's developer-checkout layout)."""
    spec = ctx.cfg.train.data
    if spec != "digits" and not Path(spec).is_dir():
        where = f" of {show_path(ctx.cfg.source)}" if ctx.cfg.source is not None else ""
        raise ConfigError(f"[train] data{where} names {show_path(spec)}, which does not exist: set it to a "
                          f"directory of MNIST IDX files (a relative path is relative to the config "
                          f"file) or to 'digits'")
    return spec


def _stage_train(ctx: _Ctx, out: Path) -> tuple[dict, str]:
    from ttforge.model.train import train

    _require_data(ctx)
    res = train(ctx.cfg.train, out, progress=False)
    s = res.summary
    trunc = s.get("truncation")
    summary = {
        "data": s["data"], "n_train": s["n_train"], "n_test": s["n_test"],
        "epochs": s["epochs"], "test_acc": s["test_acc"], "train_acc": s["train_acc"],
        "ranks": s["ranks"], "params": s["params"], "tt_params": s["tt_params"],
        "tt_dense_params": s["tt_dense_params"], "tt_compression": s["tt_compression"],
        "truncation": None if not trunc else {
            "layers": trunc["layers"], "test_acc_before": trunc["test_acc_before"],
            "test_acc_after": trunc["test_acc_after"]},
        "model_config": res.model_config.to_dict(),
    }
    ranks = "; ".join(f"{k}: {','.join(map(str, v))}" for k, v in s["ranks"].items())
    return summary, f"test acc {_pct(s['test_acc'])}, ranks {ranks or '-'}"


def _stage_quantize(ctx: _Ctx, out: Path) -> tuple[dict, str]:
    from ttforge.model.train import load_trained
    from ttforge.ir.artifact import absolute_data_spec, save_artifact
    from ttforge.quant.cli import calibration_warnings
    from ttforge.quant.ptq import quantize_trained

    q = ctx.cfg.quant
    trained = load_trained(ctx.dir("train"))
    qcfg = q.quant_config(trained.model_config.n_layers)
    # the config's data, not the path the checkpoint recorded: a project moved whole keeps
    # its train stage, whose last.pt names where the data was
    with calibration_warnings("flow"):   # one line each, not Python's two
        _, inet, rep = quantize_trained(trained, _require_data(ctx), qcfg, calib_samples=q.calib_samples,
                                        qat_epochs=q.qat_epochs, lr=q.lr, batch_size=q.batch_size,
                                        seed=q.seed)
    final = rep["qat"] or rep["ptq"]
    # the data as quantize records it (the path, absolute, and its digest; not the data
    # set's name, which diverge would read as a directory relative to where it runs)
    meta = {"source": "flow:" + ctx.cfg.name, "data": absolute_data_spec(_require_data(ctx)),
            "data_sha256": rep["data_sha256"],
            "method": "qat" if rep["qat"] else "ptq", "calibration": q.calibration,
            "qat_epochs": q.qat_epochs, "seed": q.seed, "float_acc": rep["float_acc"],
            "test_acc": final["int_acc"], "weights_fingerprint": rep["quant_fingerprint"]}
    save_artifact(inet, out / "model.ttfa", meta)
    rep = {k: v for k, v in rep.items() if k != "seconds"}  # keep the file reproducible
    (out / "quantize.json").write_text(json.dumps(rep, indent=2, default=str) + "\n")
    summary = {
        "float_acc": rep["float_acc"], "ptq_int_acc": rep["ptq"]["int_acc"],
        "fake_quant_acc": final["fake_quant_acc"], "int_acc": final["int_acc"],
        "bit_exact": final["bit_exact"], "method": meta["method"], "n_test": rep["n_test"],
        "w_bits": q.w_bits, "on_chip": rep["on_chip"],
        "on_chip_layers": [{k: L[k] for k in ("on_chip_bytes", "dense_int8_bytes", "core_bytes",
                                              "bias_bytes", "peak_intermediate_bytes")}
                           for L in rep["on_chip_layers"]],
        "layers": [{k: L[k] for k in ("index", "kind", "in_features", "out_features", "ranks",
                                      "w_bits")} for L in rep["layers"]],
    }
    m = rep["on_chip"]
    # the IR's count (docs/artifact.md "On-chip bytes"), not the accelerator's memories
    # (the compile stage's figure): "B on chip" read as the latter
    return summary, (f"integer acc {_pct(final['int_acc'])} ({q.w_bits}-bit {meta['method'].upper()}), "
                     f"TT network {m['on_chip_bytes']:,} B vs {m['dense_int8_bytes']:,} B dense INT8")


def _board(ctx: _Ctx):
    from ttforge.firmware.board import board

    key = ctx.cfg.bitstream.board
    return None if key == "none" else board(key)


def _stage_compile(ctx: _Ctx, out: Path) -> tuple[dict, str]:
    from ttforge.hw.config import AccelConfig
    from ttforge.hw.cycles import estimate
    from ttforge.hw.program import compile_program
    from ttforge.ir.artifact import load_artifact

    artifact = ctx.dir("quantize") / "model.ttfa"
    lanes, elems = ctx.cfg.hw.lanes or None, ctx.cfg.hw.stream_elems
    b = _board(ctx)
    if b is not None:
        from ttforge.firmware.build import board_config, memory_misfit

        # the board's sizing (default lanes, e.g. one serial requantization unit on the
        # iCEBreaker), so the simulated RTL is the accelerator the bitstream holds; and the
        # block RAM check of ttforge build, here so that --short finds a misfit too
        acfg, net = board_config(b, artifact, lanes=lanes)
        why = memory_misfit(acfg, b.device)
        if why:
            raise ConfigError(f"the model does not fit the {b.key}: {why}; use a smaller model "
                              f"(lower [train.model] ranks or hidden) or another board")
    else:
        net = load_artifact(artifact)
        acfg = AccelConfig.for_network(net, lanes=lanes or 4)
    if elems != acfg.stream_elems:
        # the stream width sizes only the AXI4-Stream ports (and the board's UART bridge,
        # which takes its beat from them), not the memories checked above
        try:
            acfg = replace(acfg, stream_elems=elems)
        except ConfigError as e:   # the network's stream elements are wider than [quant] act_bits
            raise ConfigError(f"[hw] {e} for the network's {acfg.act_bits}-bit stream elements; "
                              f"give a smaller stream_elems") from None
    program = compile_program(net, acfg)
    est = estimate(program)
    (out / "config.json").write_text(acfg.to_json())
    (out / "estimate.json").write_text(json.dumps(est.to_dict(), indent=2) + "\n")
    summary = {"config": acfg.to_dict(), "board": ctx.cfg.bitstream.board, "steps": len(program.steps),
               "cycles": est.cycles, "macs": est.macs, "utilization": est.utilization,
               "dense_cycles": est.dense_cycles, "lanes": acfg.lanes, "stream_elems": acfg.stream_elems,
               "tdata_bits": acfg.tdata_bits,
               "layers": [{"layer": x.layer, "in_features": x.in_features, "out_features": x.out_features,
                           "cycles": x.cycles, "macs": x.macs, "utilization": x.utilization}
                          for x in est.layers]}
    beat = f", {acfg.stream_elems} elements per beat" if acfg.stream_elems > 1 else ""
    memory = -(-sum(acfg.memory_parts().values()) // 8)
    return summary, (f"L={acfg.lanes}{beat}: {est.cycles:,} cycles per inference, "
                     f"utilization {_pct(est.utilization)}, {memory:,} B of memories")


def _stage_rtl(ctx: _Ctx, out: Path) -> tuple[dict, str]:
    from ttforge.hw.generate import generate

    res = generate(ctx.dir("quantize") / "model.ttfa", out,
                   config_file=str(ctx.dir("compile") / "config.json"))
    v = out / "ttforge_accel.v"
    lines = len(v.read_text().splitlines()) if v.is_file() else 0
    summary = {"files": sorted(res["files"]), "verilog_lines": lines,
               "verilog_sha256": res["files"].get("ttforge_accel.v"),
               "load_writes": res["program"]["load_writes"]}
    return summary, f"ttforge_accel.v ({lines:,} lines), {summary['load_writes']:,} load writes"


_SIM_ORDER = ("verilator-native", "icarus", "verilator")


def _check_delivered(sim: str, verilog: Path, program, acfg, delivered: dict[str, Any]) -> None:
    """A one-line :class:`FlowError` (exit 3) unless the Verilog ``sim`` built (``verilog``)
    and the load image of ``program`` are the rtl stage's ``ttforge_accel.v`` and
    ``load_image.bin`` (``delivered``: its record's outputs): the simulation re-emits and
    recompiles them, and its verdict is about the files the flow delivers only if they
    agree (a stale simulator cache or build called an old build's RTL exact)."""
    from ttforge.hw.program import load_image, load_image_to_bytes
    from ttforge.hw.regmap import RegisterMap

    got = _output_digest(verilog)
    if got != delivered.get("ttforge_accel.v"):
        raise FlowError(f"the {sim} simulation was built from {show_path(verilog)}, which is not "
                        f"rtl/ttforge_accel.v (sha256 {str(got)[:12]} vs "
                        f"{str(delivered.get('ttforge_accel.v'))[:12]}): the build's rtl/ or the simulator's "
                        f"cache entry {show_path(verilog.parent)} is stale; run again with --force rtl, "
                        f"and if that does not help remove that entry",
                        exit_code=EXIT_ENVIRONMENT)
    image = load_image_to_bytes(load_image(program, RegisterMap(acfg)), acfg)
    if hashlib.sha256(image).hexdigest() != delivered.get("load_image.bin"):
        raise FlowError("the program the simulation loads is not rtl/load_image.bin; run the rtl "
                        "stage again (--force rtl)", exit_code=EXIT_ENVIRONMENT)


def _simulate(sim: str, acfg, net, X: np.ndarray, seed: int,
              delivered: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """``(outputs, counters)`` of ``X`` through the generated RTL on ``sim``, once the
    simulated Verilog and program are checked to be the rtl stage's (``delivered``);
    the counters hold the testbench's ``frame_error`` (a malformed output frame, or a
    frame more than the vectors: the outputs can still equal the golden)."""
    from ttforge.hw.program import compile_program

    program = compile_program(net, acfg)
    if sim == "verilator-native":
        from ttforge.sim import build_native, run_native

        b = build_native(acfg, jobs=os.cpu_count() or 1)
        _check_delivered(sim, b.directory / "ttforge_accel.v", program, acfg, delivered)
        r = run_native(b, program, X, seed=seed)
        c = r.counters
        return r.outputs, {"cycles": c["cycles"], "busy_lane_cycles": c["busy_lane_cycles"],
                           "vectors": c["vectors"], "build_s": round(b.build_seconds, 2),
                           "cached": b.cached}
    from ttforge.sim import build, run_inference

    b = build(acfg, sim)
    _check_delivered(sim, b.verilog_path, program, acfg, delivered)
    r = run_inference(b, program, X, seed=seed)
    if r.timeout or r.load_errors:
        raise FlowError(exit_code=EXIT_ENVIRONMENT, message=f"the {sim} simulation did not complete (timeout={r.timeout}, "
                        f"load errors={r.load_errors})")
    c = r.counters
    return r.outputs, {"cycles": c["CYCLES"], "busy_lane_cycles": c["BUSY_LANE_CYCLES"],
                       "vectors": c["VECTORS"], "build_s": round(b.build_seconds, 2), "cached": b.cached,
                       "frame_error": r.frame_error}


def _pick_simulator(choice: str) -> str:
    from ttforge.sim.runner import simulator_problem

    if choice != "auto":
        why = simulator_problem(choice)
        if why:
            raise FlowError(f"[sim] simulator = {choice!r} is not available: {why}", exit_code=EXIT_ENVIRONMENT)
        return choice
    reasons = []
    for sim in _SIM_ORDER:
        why = simulator_problem(sim)
        if why is None:
            return sim
        reasons.append(f"{sim}: {why}")
    raise FlowError("no simulator is available (" + "; ".join(reasons) + ")", exit_code=EXIT_ENVIRONMENT)


def _stage_sim(ctx: _Ctx, out: Path) -> tuple[dict, str]:
    from ttforge.hw.config import AccelConfig
    from ttforge.model.data import load_dataset
    from ttforge.ir.artifact import load_artifact
    from ttforge.ir.executor import execute

    s = ctx.cfg.sim
    sim = _pick_simulator(s.simulator)
    acfg = AccelConfig.load(ctx.dir("compile") / "config.json")
    net = load_artifact(ctx.dir("quantize") / "model.ttfa")
    ds = load_dataset(_require_data(ctx))
    n = min(s.vectors, int(ds.x_test.shape[0]))
    X = net.quantize_input(ds.x_test[:n].numpy())
    labels = ds.y_test[:n].numpy()
    expected = execute(net, X)
    ctx.say(f"sim: {n} vectors on {sim}")
    t0 = time.perf_counter()
    got, counters = _simulate(sim, acfg, net, X, s.seed, ctx.records["rtl"]["outputs"])
    wall = time.perf_counter() - t0
    framing = counters.get("frame_error")
    exact = bool(framing is None and got.shape == expected.shape and np.array_equal(got, expected))
    first = None
    if not exact:
        if framing is not None:   # first: the rows after a bad frame are not read
            first = {"vector": framing.get("vector"), "problem": f"output framing: {framing.get('detail')}"}
        elif got.shape != expected.shape:
            first = {"problem": f"{got.shape[0]} of {expected.shape[0]} output vectors received"}
        else:
            v, e = (int(i) for i in np.argwhere(got != expected)[0])
            first = {"vector": v, "element": e, "expected": int(expected[v, e]), "got": int(got[v, e])}
    agree = int(np.sum(np.all(got == expected, axis=1))) if got.shape == expected.shape else 0
    np.savez(out / "vectors.npz", inputs=X, expected=expected, got=got, labels=labels)
    cycles = counters["cycles"]
    per = cycles / n if n else 0
    util = counters["busy_lane_cycles"] / (acfg.lanes * cycles) if cycles else 0.0
    summary = {"simulator": sim, "vectors": n, "exact": exact, "agree": agree, "first_mismatch": first,
               "rtl_acc": float(np.mean(np.argmax(got, axis=1) == labels)) if exact else None,
               "golden_acc": float(np.mean(np.argmax(expected, axis=1) == labels)),
               "cycles": cycles, "cycles_per_vector": per, "utilization": util,
               "sim_wall_s": round(wall, 3), "build_s": counters["build_s"],
               "build_cached": counters["cached"]}
    # sim.json holds what the simulation found, not how long it took (same inputs, same bytes)
    (out / "sim.json").write_text(json.dumps({k: v for k, v in summary.items()
                                              if k not in ("sim_wall_s", "build_s", "build_cached")},
                                             indent=2) + "\n")
    verdict = "exact" if exact else ("MISMATCH: output framing" if framing is not None else "MISMATCH")
    built = "" if counters["cached"] else f" (compiled the simulation model in {counters['build_s']:.0f} s)"
    return summary, f"{sim}: {agree}/{n} vectors equal ({verdict}), {per:,.0f} cycles/vector{built}"


def device_train_memory(state, batch: int, lanes: int, board) -> dict:
    """The device-train stage's memory figures: the bit-packed count the step needs
    (:func:`ttforge.ir.train_memory.training_memory`: ``items``, ``total``,
    ``fp32_dense_adam``, ``ratio``) and, under ``engine``, the memories of the training
    engine the stage builds, checked against ``board``'s RAM by ``ttforge build``'s own
    check (:func:`ttforge.hw.trainer.program.engine_memory`; ``board`` None: no check)."""
    from ttforge.firmware.build import memory_misfit
    from ttforge.hw.trainer.program import engine_memory
    from ttforge.ir.train_memory import training_memory

    mem = training_memory(state, batch, lanes=lanes)
    return {"items": mem["items"], "total": mem["items"]["total"],
            "fp32_dense_adam": mem["fp32_dense_adam"]["total"], "ratio": mem["ratio"],
            "engine": engine_memory(state, batch, lanes, None if board is None else board.device, memory_misfit)}


def _stage_device_train(ctx: _Ctx, out: Path) -> tuple[dict, str]:
    """Train the quantized network on the (simulated) board, epoch by epoch, checked
    against the golden trainer; the state read back, per-epoch loss and accuracy from the
    device, the memory table and the samples/s at the board clock."""
    from ttforge.firmware.train_board import open_train_device
    from ttforge.firmware.train_host import train_on_device
    from ttforge.hw.trainer.engine import op_cycles
    from ttforge.hw.trainer.program import Op, compile_training, fit_engine
    from ttforge.ir.arith import quantize
    from ttforge.ir.artifact import load_artifact
    from ttforge.ir.train import predict
    from ttforge.ir.train_loop import epoch_order, network_train_config, state_from_artifact
    from ttforge.ir.train_state import dumps_state, save_state
    from ttforge.model.train_int import load_numpy

    dt = ctx.cfg.device_train
    net = load_artifact(ctx.dir("quantize") / "model.ttfa")
    _, x, y, xt, yt = load_numpy(_require_data(ctx))
    x, xt = np.asarray(x, dtype=np.float64), np.asarray(xt, dtype=np.float64)
    y, yt = np.asarray(y, dtype=np.int64), np.asarray(yt, dtype=np.int64)
    tcfg = network_train_config(net, master_bits=dt.master_bits or None, rounding=dt.rounding)
    state = state_from_artifact(net, x, y, config=tcfg, seed=dt.seed, lr_shift=dt.lr_shift,
                                calib_samples=dt.calib_samples, meta={"from": "flow:" + ctx.cfg.name},
                                labels=np.concatenate([y, yt]))
    xq = quantize(x, tcfg.act_bits, state.in_exp)
    n_eval = min(dt.eval_samples or len(yt), len(yt))
    xqt, yte = quantize(xt[:n_eval], tcfg.act_bits, state.in_exp), yt[:n_eval]
    ecfg = fit_engine(state, dt.batch, lanes=dt.lanes)
    prog = compile_training(state, dt.batch, ecfg)
    step_cycles = sum(op_cycles(op, ecfg, prog.slots) for op in prog.ops) + dt.batch * (x.shape[1] + 1)
    step_macs = ecfg.lanes * sum(int(np.prod(op.N)) for op in prog.ops if op.OP in (Op.CONTRACT, Op.WGRAD))
    b = _board(ctx)
    clk = ctx.cfg.bitstream.clk_hz or (b.default_hz if b is not None else 50_000_000)
    acc0 = float(np.mean(predict(state, xqt) == yte))
    start_sha = hashlib.sha256(dumps_state(state)).hexdigest()
    history, mismatch, equal = [], None, True
    totals = {"steps": 0, "samples": 0, "seconds": 0.0, "cycles": 0, "mac_cycles": 0, "tx": 0, "rx": 0}
    n = min(dt.samples or len(y), len(y))
    ctx.say(f"device-train: {dt.epochs} epoch(s) of {n // dt.batch} steps on the "
            f"{'simulated board' if dt.transport == 'sim' else dt.port}")
    with open_train_device(ecfg, sim=dt.transport == "sim", port=dt.port or None, baud=dt.baud,
                           port_setting="[device_train] port") as dev:
        for epoch in range(1, dt.epochs + 1):
            order = epoch_order(dt.seed, epoch, len(y))[:n]
            batches = [(xq[order[i:i + dt.batch]], y[order[i:i + dt.batch]])
                       for i in range(0, n - dt.batch + 1, dt.batch)]
            run = train_on_device(dev, state, batches, check=dt.check, loss_every=1)
            state = run.state
            for k in ("steps", "samples", "cycles", "mac_cycles", "tx", "rx"):
                totals[k] += int(getattr(run, k))
            totals["seconds"] += run.seconds
            # (step, loss in bits, correct, batch) of every step, from the device's logits
            losses = [lb for _, lb, _, _ in run.losses if lb is not None]
            seen = [(c, b) for _, _, c, b in run.losses if c is not None]
            history.append({"epoch": epoch, "steps": run.steps, "samples": run.samples,
                            "loss_bits": float(np.mean(losses)) if losses else None,
                            "train_acc": sum(c for c, _ in seen) / sum(b for _, b in seen) if seen else None,
                            "test_acc": float(np.mean(predict(state, xqt) == yte)),
                            "cycles": run.cycles, "seconds": round(run.seconds, 3)})
            ctx.say(f"device-train: epoch {epoch}: loss {history[-1]['loss_bits']}, "
                    f"test acc {_pct(history[-1]['test_acc'])}")
            if dt.check:
                mismatch = run.mismatch
                equal = equal and mismatch is None and dumps_state(run.state) == dumps_state(run.golden)
                if not equal:
                    break
    save_state(state, out / "device.ttts")
    summary = {
        "transport": dt.transport, "lanes": dt.lanes, "batch": dt.batch, "engine": {
            k: getattr(ecfg, k) for k in ("lanes", "act_depth", "grad_depth", "core_depth", "bias_depth",
                                          "desc_depth", "max_batch", "acc_bits")},
        "start_test_acc": acc0, "history": history, "eval_samples": n_eval, **totals,
        "checked": dt.check, "equal_to_golden": equal if dt.check else None,
        "mismatch": None if mismatch is None else str(mismatch),
        "start_sha256": start_sha, "state_sha256": hashlib.sha256(dumps_state(state)).hexdigest(),
        # the engine's own counters: MAC-lane cycles are the program's exactly; CYCLES also
        # counts the cycles the engine waits for samples to arrive over the link
        "cycles_per_step_model": step_cycles,
        "cycles_per_step_measured": totals["cycles"] / totals["steps"] if totals["steps"] else None,
        "mac_cycles_per_step_model": step_macs,
        "mac_cycles_per_step_measured": totals["mac_cycles"] / totals["steps"] if totals["steps"] else None,
        "clock_hz": clk, "samples_per_s": clk * dt.batch / step_cycles,
        "link_bytes_per_sample": (totals["tx"] + totals["rx"]) / totals["samples"] if totals["samples"] else None,
        "memory": device_train_memory(state, dt.batch, dt.lanes, b),
    }
    (out / "device_train.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    verdict = ("equal to the golden trainer" if equal else "DIVERGED from the golden trainer") if dt.check \
        else "not checked"
    last = history[-1] if history else {"test_acc": acc0}
    steps = f"{totals['steps']} step{'s' if totals['steps'] != 1 else ''}"
    return summary, (f"{steps} on the {'simulated board' if dt.transport == 'sim' else 'board'}, "
                     f"test acc {_pct(acc0)} -> {_pct(last['test_acc'])}, {verdict}")


def _stage_bitstream(ctx: _Ctx, out: Path) -> tuple[dict, str]:
    from ttforge.firmware.build import build

    bs = ctx.cfg.bitstream
    man = build(bs.board, out, artifact=ctx.dir("quantize") / "model.ttfa",
                config_file=str(ctx.dir("compile") / "config.json"), clk_hz=bs.clk_hz, seed=bs.seed)
    res = man["resources"]
    summary = {"board": man["board"], "title": man["title"], "device": man["device"],
               "clock_hz": man["clock_hz"], "resources": res, "fmax_mhz": man["fmax_mhz"],
               "bitstream": man["bitstream"], "build_seconds": man["seconds"]}
    # the logic figure of the family: iCE40 logic cells, ECP5 LUTs
    key = next((k for k in ("lc", "lut", "lut4") if k in res), None)
    used = f"{res[key]['used']:,}/{res[key]['available']:,} {key.upper()}, " if key else ""
    return summary, f"{used}Fmax {man['fmax_mhz']} MHz at {man['clock_hz'] / 1e6:g} MHz"


def _stage_report(ctx: _Ctx, out: Path) -> tuple[dict, str]:
    from ttforge.flow.report import write_report

    files = write_report(ctx.cfg, ctx.root, ctx.records, out, short=ctx.short, statuses=ctx.statuses)
    return {"files": files}, "report.html, report.md"


_RUN: dict[str, Callable[[_Ctx, Path], tuple[dict, str]]] = {
    "train": _stage_train, "quantize": _stage_quantize, "compile": _stage_compile,
    "rtl": _stage_rtl, "sim": _stage_sim, "device-train": _stage_device_train,
    "bitstream": _stage_bitstream, "report": _stage_report,
}
#: config sections each stage reads; upstream stages whose outputs it reads
_READS = {"train": ("train",), "quantize": ("quant",), "compile": ("hw",), "rtl": (),
          "sim": ("sim",), "device-train": ("device_train",), "bitstream": ("bitstream",),
          "report": ("flow",)}
_UPSTREAM = {"train": (), "quantize": ("train",), "compile": ("quantize",),
             "rtl": ("quantize", "compile"), "sim": ("quantize", "compile", "rtl"), "device-train": ("quantize",),
             "bitstream": ("quantize", "compile", "rtl", "sim"),
             "report": ("train", "quantize", "compile", "rtl", "sim", "device-train", "bitstream")}


#: The ttforge packages whose code each stage runs (their sources are part of its inputs;
#: so is this module's own text, :func:`_stages_digest`, for every stage).
_CODE = {"train": ("model", "ir"), "quantize": ("quant", "model", "ir"), "compile": ("hw", "ir", "firmware"),
         "rtl": ("hw", "ir"), "sim": ("hw", "ir", "sim"), "device-train": ("hw", "ir", "sim", "firmware"),
         "bitstream": ("hw", "ir", "firmware"),
         # the page's text and its accelerator memory table (AccelConfig.memory_parts): an
         # existing build kept the report of older code (its memory labels among them)
         "report": ("flow", "hw")}


@functools.lru_cache(maxsize=1)
def _stages_digest() -> str:
    """A short sha256 of this module: it calls each stage and computes the figures the
    stage's record keeps (an upgrade that changed only them, e.g. the "B on chip" label,
    left a skipped stage's old figures in the new report). This module alone, not the
    ``flow`` package: an edit of ``sweep.py`` or ``cli.py`` does not re-train."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:20]


def _data_digest(spec: str) -> str:
    """The data a stage reads, by content: the digest a training run records of its data
    (:func:`ttforge.model.data.data_digest` of the loaded arrays), so that replacing the
    files re-runs the stages that read them and a file beside them (a README), or the
    same files compressed, does not. Loaded once while the files stay as they were (the
    four stages that read the data each loaded it, per run)."""
    return _content_digest(spec, _files_state(spec))


def _files_state(spec: str) -> tuple:
    """What the files of ``spec`` look like to ``stat`` (name, size, mtime, inode): a
    change of any re-reads them."""
    root = Path(spec[4:] if spec.startswith("idx:") else spec).expanduser()
    if spec == "digits" or not root.is_dir():
        return ()
    try:
        return tuple((p.name, s.st_size, s.st_mtime_ns, s.st_ino) for p in sorted(root.iterdir())
                     for s in [p.stat()])
    except OSError:
        return (None,)


@functools.lru_cache(maxsize=8)
def _content_digest(spec: str, files_state: tuple) -> str:
    from ttforge.model.data import data_digest, load_dataset

    try:
        return data_digest(load_dataset(spec))
    except UserError:
        return f"unreadable:{spec}"  # the stage that reads it says what is wrong, with the config key


#: Fields of a training run's files that say how long it took, not what it made (each
#: epoch's ``time_s``, the run's ``elapsed_s``).
_TIMING = frozenset({"elapsed_s", "time_s"})


def _timeless(obj: Any) -> Any:
    """``obj`` (a checkpoint payload or ``metrics.json``, nested) as plain data without
    :data:`_TIMING` fields, a tensor as its dtype, shape and the sha256 of its bytes."""
    import torch

    if isinstance(obj, dict):
        return {str(k): _timeless(v) for k, v in obj.items() if k not in _TIMING}
    if isinstance(obj, (list, tuple)):
        return [_timeless(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        return {"dtype": str(t.dtype), "shape": list(obj.shape),
                "sha256": hashlib.sha256(t.view(torch.uint8).numpy().tobytes()).hexdigest()}
    return obj


def _placeless(doc: Any) -> Any:
    """``doc`` with its ``config``'s ``data`` (the resolved data path) left out."""
    if isinstance(doc, dict) and isinstance(doc.get("config"), dict):
        return {**doc, "config": {k: v for k, v in doc["config"].items() if k != "data"}}
    return doc


def _read_metrics(path: Path) -> Any:
    """A training run's ``metrics.json``, parsed."""
    try:
        return json.loads(read_bounded(path, "training metrics", _RECORD_BYTES, ConfigError))
    except ValueError as e:
        raise ConfigError(f"{show_path(path)} is not JSON ({e})") from None


def _train_digest(out: Path, outputs: dict[str, str]) -> str:
    """The digest of a train stage's output ``out`` (its files' sha256s: ``outputs``) that
    the later stages' fingerprints take: what they read of it, the checkpoint (weights,
    configs, the run's state) and ``metrics.json`` (the report's curves), without the time
    it took (:data:`_TIMING`) or where the data was (:func:`_placeless`; its content is in
    their own inputs). The sha256 of the files held both: ``flow --force train`` to
    bit-identical weights, or a retrain of a moved project, redid quantize's PTQ/QAT.
    ``metrics.png`` no stage reads; any other file counts by its sha256.

    Raises
    ------
    CheckpointError, ConfigError
        A checkpoint or metrics file the stage did not write whole.
    """
    from ttforge.model.checkpoint import load_checkpoint
    from ttforge.model.train_config import CHECKPOINT_NAME, METRICS_NAME, PLOT_NAME

    readers = {CHECKPOINT_NAME: load_checkpoint, METRICS_NAME: _read_metrics}
    read = {name: _timeless(_placeless(readers[name](out / name))) if name in readers else sha
            for name, sha in outputs.items() if name != PLOT_NAME}
    return hashlib.sha256(_canonical(read)).hexdigest()


#: How a stage's output digest is made from its directory and its files' sha256s, where it
#: is not the sha256 of those sha256s.
_DIGEST: dict[str, Callable[[Path, dict[str, str]], str]] = {"train": _train_digest}


def _inputs(ctx: _Ctx, name: str, statuses: dict[str, str],
            digest: Callable[[str], str | None] | None = None) -> dict[str, Any]:
    """What stage ``name`` depends on (hashed into its fingerprint); ``digest`` (default
    ``ctx.digest``) gives an upstream stage's output digest."""
    digest = digest or ctx.digest
    d: dict[str, Any] = {"stage": name, "config": {s: ctx.cfg.section(s) for s in _READS[name]}}
    if name == "compile":  # the board sizes the accelerator
        d["config"]["board"] = ctx.cfg.bitstream.board
    if name in ("train", "quantize", "sim", "device-train"):
        # the data they read (quantize calibrates on it, sim takes its test vectors from
        # it) by content; its path is shown only (_SHOWN_ONLY)
        d["data"] = _data_digest(ctx.cfg.train.data)
        d["data_path"] = ctx.cfg.train.data
        if name == "train":
            d["config"]["train"] = {k: v for k, v in d["config"]["train"].items() if k != "data"}
    if name == "device-train":  # the board clock of the samples/s figure
        d["config"]["clock"] = [ctx.cfg.bitstream.board, ctx.cfg.bitstream.freq_mhz]
    if _CODE[name]:
        # the code the stage runs, not only the version (the same across edits): after an
        # edit of the generator a build's stages were skipped (the old load_image.bin
        # kept) and sim called the old build's RTL exact; after one of the training
        # engine or the board top device-train kept its old "equal to the golden trainer"
        from ttforge.sources import sources_digest

        d["code"] = sources_digest(*_CODE[name])
        d["stages"] = _stages_digest()
    if name in ("train", "quantize"):   # their float arithmetic is torch's
        import torch

        d["torch"] = torch.__version__
    if name in ("compile", "rtl", "sim", "device-train", "bitstream"):
        from ttforge.sim import runner   # the generator with the Amaranth and Yosys it runs on

        d["generator"] = runner.generator_fingerprint()
        if name in ("sim", "device-train"):   # a verdict of these simulators' releases
            # the one the stage runs (auto: whichever is installed first, so both); the
            # simulated training board of device-train runs on Icarus
            chosen = ctx.cfg.sim.simulator if name == "sim" else "icarus"
            d["simulators"] = {k: v for k, v in runner.simulator_versions()
                               if chosen == "auto" or chosen.startswith(k)}
    d["upstream"] = {u: digest(u) for u in _UPSTREAM[name]}
    if name == "report":
        # the page names the config file: a run from another path writes it anew (it kept
        # naming the old one)
        d["config"]["source"] = None if ctx.cfg.source is None else os.fsdecode(ctx.cfg.source)
        d["short"] = ctx.short
        d["statuses"] = {k: v for k, v in statuses.items() if k != "report"}
    return d


# ----------------------------------------------------------------------------- runner
def _run_one(ctx: _Ctx, name: str, inputs: dict[str, Any], force: bool) -> StageResult:
    t0 = time.perf_counter()
    fp = fingerprint(inputs)
    final = ctx.dir(name)
    rec = read_record(final)
    if not force and rec is not None and rec.get("fingerprint") == fp and _intact(final, rec):
        ctx.records[name] = rec
        return StageResult(name, "skipped", time.perf_counter() - t0, rec.get("figure", ""), rec)
    ctx.records.pop(name, None)
    # the stage fills a temporary directory that replaces ctx.dir(name) only once it is
    # complete (ttforge.atomic.atomic_dir): a failure leaves the previous output, or none
    with atomic_dir(final, owner=_own_stage) as tmp:
        try:
            summary, figure = _RUN[name](ctx, tmp)
            seconds = time.perf_counter() - t0
            outputs = _hash_tree(tmp)
            digest = (_DIGEST[name](tmp, outputs) if name in _DIGEST
                      else hashlib.sha256(_canonical(outputs)).hexdigest())
        except TTForgeError as e:
            raise FlowError(f"stage {name} failed: {e}", exit_code=e.exit_code) from None
        rec = {"format": _FORMAT, "version": 1, "stage": name, "ttforge": __version__,
               "fingerprint": fp, "inputs": inputs, "outputs": outputs, "digest": digest,
               "seconds": round(seconds, 3), "figure": figure, "summary": summary}
        from ttforge.flow.report import json_safe

        (tmp / RECORD).write_text(json.dumps(json_safe(rec), indent=2, default=str) + "\n")
    ctx.records[name] = rec
    return StageResult(name, "ran", seconds, figure, rec)


def run_flow(cfg, out_dir: str | os.PathLike | None = None, *, until: str | None = None,
             force: set[str] | frozenset[str] = frozenset(), short: bool = False,
             on_stage: Callable[[str, str], None] | None = None,
             on_done: Callable[[StageResult], None] | None = None,
             say: Callable[[str], None] | None = None) -> FlowResult:
    """Run (or skip) every stage of ``cfg`` into ``out_dir`` (default ``build/<name>``).

    Parameters
    ----------
    until : str, optional
        The last stage to run (the report is written in any case, covering what ran).
    force : set of str
        Stages to run even if unchanged (``"all"``: every stage).
    short : bool
        Apply the config's ``[short]`` caps and do not build the bitstream.
    on_stage, on_done : callables, optional
        Called with ``(name, "start")`` before a stage and with its :class:`StageResult` after.

    Raises
    ------
    FlowError
        A stage failed (``"stage NAME failed: cause"``); the stages before it are kept.
    """
    from ttforge.flow.config import FlowConfig

    if not isinstance(cfg, FlowConfig):
        raise ConfigError("run_flow needs a FlowConfig (ttforge.flow.load_config)")
    for s in (until, *force):
        if s is not None and s not in STAGES and s != "all":
            raise ConfigError(f"stage {s!r} is unknown; stages are {', '.join(STAGES)}")
    if until == "all":
        until = None
    if short:
        cfg = cfg.shortened()
    root = check_output_dir(Path(out_dir) if out_dir is not None else Path("build") / cfg.name, "--out")
    # its lock (and a new build) go beside it: a directory that takes no file is one line
    check_writable(root, "--out")
    # one run at a time into a build (as train --out): a second flow started with the
    # first found the first's temporary stage directory and called the build not a flow's
    with output_lock(root, "--out"):
        # a run killed in its first stage left only its temporary: that is no user's file
        # (the rerun refused the build as "not a ttforge flow build")
        _clean_leftovers(root)
        if root.is_dir() and any(root.iterdir()) and not any((root / s / RECORD).is_file() for s in STAGES):
            raise ConfigError(f"--out {root} is not empty and not a ttforge flow build; choose an empty "
                              f"or new directory")
        published = _check_published(root)
        created = not root.exists()
        make_output_dir(root, "--out")
        try:
            # a read-only build directory is one line now, not the first stage's failure
            check_writable(root, "--out", inside=True)
            return _run_stages(cfg, root, until, force, short, on_stage, on_done, say, published)
        except BaseException:
            # a failed first run leaves no empty build directory behind (stages that
            # completed before the failure are kept: the next run skips them)
            if created and root.is_dir() and not any(root.iterdir()):
                root.rmdir()
            raise


def _run_stages(cfg, root: Path, until, force, short, on_stage, on_done, say,
                published: dict[str, str | None] | None = None) -> FlowResult:
    ctx = _Ctx(cfg, root, short, say or (lambda s: None), published=published or {})
    result = FlowResult(cfg, root)
    forced = set(STAGES) if "all" in force else set(force)
    last = STAGES.index(until) if until else len(STAGES) - 1
    statuses = ctx.statuses
    stop = None  # reason the remaining stages do not run
    current: dict[str, str] = {}  # output digests of the stages whose output is current
    for i, name in enumerate(STAGES):
        why = None
        if stop is not None and name != "report":
            why = stop
        elif i > last and name != "report":
            why = f"--until {until}"
        elif name == "device-train" and not cfg.device_train.enabled:
            why = "[device_train] enabled = false"
        elif name == "bitstream" and cfg.bitstream.board == "none":
            why = "no board ([bitstream] board = 'none')"
        elif name == "bitstream" and short:
            why = "--short"
        try:
            if why is not None:
                note = _drop_out_of_date(ctx, name, statuses, current) if name != "report" else None
                if note:
                    why += f" (its {name}/ from an earlier run was {note})"
                res = StageResult(name, "not run", reason=why)
                statuses[name] = f"not run: {why}"
            else:
                if on_stage:
                    on_stage(name, "start")
                res = _run_one(ctx, name, _inputs(ctx, name, statuses), name in forced)
        except TTForgeError as e:
            # any failure, not only a stage's own (FlowError): a stage directory refused
            # as the user's (OutputError from _own_stage, in either branch) left the
            # later stages of an earlier run and its report beside the new outputs
            res = StageResult(name, "failed", reason=str(e))
            kept = _drop_after_failure(ctx, i, statuses, current)
            if kept:
                res.reason += f"; {_kept_note(kept)}"
            result.stages.append(res)
            if on_done:
                on_done(res)
            raise
        if why is None:
            statuses[name] = res.status if res.status != "skipped" else "ran"
            current[name] = ctx.digest(name)
            if name == "sim":
                result.verified = bool(res.record["summary"]["exact"])
                if not result.verified:
                    res.status = "failed" if res.status == "ran" else res.status
                    res.reason = "the RTL outputs differ from the golden executor"
                    stop = "verification failed"
            if name == "device-train" and res.record["summary"]["equal_to_golden"] is False:
                result.verified = False
                res.status = "failed" if res.status == "ran" else res.status
                res.reason = "the device's training state differs from the golden trainer's"
                stop = "verification failed"
        if name == "report" and res.record is not None:
            kept = _publish(root, ctx.published)
            if kept:
                res.figure += f"; {_kept_note(kept)}"
        result.stages.append(res)
        if on_done:
            on_done(res)
    return result


def _out_of_date(ctx: _Ctx, name: str, statuses: dict[str, str], current: dict[str, str]) -> bool:
    """Whether stage ``name`` (not run now) holds a record made from other inputs than
    those of now (``current``: the output digests of the stages that are current). A
    record whose fingerprint is today's is current, whether or not its files were
    changed since (the user's edit is not "other inputs"), and its digest is added to
    ``current``: the later stages were made from what these inputs make, and the stage
    runs again (and they with it, if it comes out different) when a run reaches it."""
    rec = read_record(ctx.dir(name))
    if rec is None:
        return False   # nothing there, or no stage's output (refused as the build is)
    if rec.get("fingerprint") == fingerprint(_inputs(ctx, name, statuses, current.get)):
        current[name] = rec["digest"]
        return False
    return True


def _drop_out_of_date(ctx: _Ctx, name: str, statuses: dict[str, str], current: dict[str, str]) -> str | None:
    """Remove the output of stage ``name``, which this run does not run, when it is
    out of date (:func:`_out_of_date`). Returns what was done, for the stage's reason
    (``None``: nothing, it is current or absent).

    ``flow --until quantize`` after a change left the earlier run's ``rtl/``, ``sim/``
    and ``bitstream/`` on disk beside the new artifact: nothing there said that the
    bitstream was not built from it (the report said "not run"). A stage directory
    that is a symbolic link (to a directory of the user's) is left as it is: removing
    it renamed the link, which the next run deleted.
    """
    if not _out_of_date(ctx, name, statuses, current):
        return None
    return _discard_stage(ctx, name)


def _discard_stage(ctx: _Ctx, name: str) -> str:
    """Remove stage ``name``'s directory, found out of date; what was done, for its reason."""
    final = ctx.dir(name)
    if final.is_symlink():
        return f"out of date but a symbolic link: not removed; remove {name} yourself"
    _own_stage(final)
    discard_dir(final)
    return "out of date: removed"


def _drop_after_failure(ctx: _Ctx, failed: int, statuses: dict[str, str], current: dict[str, str]) -> list[str]:
    """After stage ``STAGES[failed]`` failed: remove every later stage's output that is
    out of date (:func:`_drop_out_of_date`; a stage that does not read the failed one
    stays while current) and, before ``report/``, the published copies of its report,
    which described another run as the current one; a copy changed since the run began
    is the user's and stays. Returns the names of those kept. A cleanup that fails
    leaves the next run to do it; the stage's failure is what is raised."""
    statuses[STAGES[failed]] = "failed"
    kept: list[str] = []
    for name in STAGES[failed + 1:]:
        try:
            if not _out_of_date(ctx, name, statuses, current):
                continue
            if name == "report":
                kept = _unpublish(ctx.root, ctx.published)
            _discard_stage(ctx, name)
        except (TTForgeError, OSError):
            pass
    return kept


#: The report stage's files that a flow copies to the top of its build directory.
PUBLISHED = ("report.html", "report.md")


def _check_published(root: Path) -> dict[str, str | None]:
    """A one-line :class:`ConfigError` when the top of ``root`` holds a file named as a
    published report that is not the report stage's copy (a user's ``report.md``, or
    one edited since): :func:`_publish` would replace it. A file that merely has the
    name proves nothing. Returns the sha256 of each copy (``None``: none there), which
    :func:`_as_seen` checks again right before the copy is replaced or removed."""
    seen: dict[str, str | None] = {}
    for name in PUBLISHED:
        dst, src = root / name, root / "report" / name
        seen[name] = None
        if not os.path.lexists(dst):
            continue
        ours = (dst.is_file() and not dst.is_symlink() and src.is_file() and not src.is_symlink()
                and filecmp.cmp(dst, src, shallow=False))
        if not ours:
            raise ConfigError(f"--out {root} holds {name}, which is not this build's report (report/{name}); "
                              f"move it away or choose another --out")
        seen[name] = _output_digest(dst)
    return seen


def _as_seen(dst: Path, digest: str | None) -> bool:
    """Whether the published copy ``dst`` is still what :func:`_check_published` found
    (``digest``; ``None``: nothing was there). A run takes minutes to hours: a copy the
    user annotated meanwhile was replaced on success and deleted on a failure."""
    if digest is None:
        return not os.path.lexists(dst)
    return dst.is_file() and not dst.is_symlink() and _output_digest(dst) == digest


def _kept_note(kept: list[str]) -> str:
    names = " and ".join(kept)
    return (f"{names} at the top of the build changed during the run: kept as it is "
            f"(this build's report is in report/)")


def _unpublish(root: Path, seen: dict[str, str | None]) -> list[str]:
    """Remove the published copies that are still the report stage's (:func:`_as_seen`);
    returns the names of those kept because they changed during the run."""
    kept = []
    for name in PUBLISHED:
        dst = root / name
        if not os.path.lexists(dst):
            continue
        if _as_seen(dst, seen.get(name)):
            dst.unlink(missing_ok=True)
        else:
            kept.append(name)
    return kept


def _publish(root: Path, seen: dict[str, str | None]) -> list[str]:
    """Copy the report stage's ``report.html`` and ``report.md`` to the build directory
    (atomically, and only when they changed), except a copy that changed during the run
    (``seen``: :func:`_as_seen`). Returns the names of those kept."""
    kept = []
    for name in PUBLISHED:
        data = (root / "report" / name).read_bytes()
        dst = root / name
        if not _as_seen(dst, seen.get(name)):
            kept.append(name)
            continue
        if not dst.is_file() or dst.read_bytes() != data:
            atomic_write_bytes(dst, data)
    return kept
