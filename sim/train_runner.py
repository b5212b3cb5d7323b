"""Build the training top ``ttforge_train`` for Icarus or Verilator and run training jobs.

:func:`build_train` emits :func:`ttforge.hw.trainer.top.verilog` and compiles it with
``cocotb_tools.runner`` (the recipe of :mod:`ttforge.sim.runner`: the same timescale, the
same Verilator environment and flags), cached under the simulator build root by a hash
of the Verilog, the simulator and the tool version.

:func:`run_train` runs the cocotb testbench :mod:`ttforge.sim.train_tb` on a build: a
*case* (a random network from :func:`ttforge.ir.random.train_case`, the engine
parameters, the number of steps) is written to ``job.json`` in a work directory named by
``TTFORGE_TRAIN_JOB``; inside the simulator the host driver
(:class:`~ttforge.hw.trainer.host.AsyncTrainHost`) loads the program over AXI4-Lite,
streams each batch over AXI4-Stream, reads the state back through the windows and
rewrites the shifts, step after step; what it read comes back in ``results.npz``.

:func:`judge` is the verdict, computed outside the simulator: after every step the state
built from what the RTL returned equals :func:`ttforge.ir.train.train_step`'s
(:func:`~ttforge.ir.train_diverge.compare_states`, which names the first difference) and
CMEM, BMEM, MAXACC and the generator equal the word-level interpreter's
(:mod:`ttforge.hw.trainer.model`), all with ``np.array_equal``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ttforge.atomic import atomic_write_text, cache_lock
from ttforge.errors import ConfigError

__all__ = ["TRAIN_TOP", "TrainSimBuild", "TrainRun", "build_train", "run_train", "make_case",
           "judge", "case_config"]

TRAIN_TOP = "ttforge_train"
_RECIPE = 1
_EMITTED: dict = {}   # bounded: ttforge.sim.runner.keep_text

#: the engine parameters a case may set (the widths come from the case's TrainConfig)
_ENGINE_KEYS = ("lanes", "acc_bits", "act_depth", "grad_depth", "core_depth", "bias_depth",
                "desc_depth", "max_batch", "max_classes")


def case_config(case: dict):
    """``(state, config, batches)`` of a case ``{"seed", "batch", "steps", "net": {...
    train_case keywords}, "engine": {... TrainEngineConfig parameters}}``; the same on
    both sides of the simulator (deterministic)."""
    from ttforge.hw.trainer.program import TrainEngineConfig
    from ttforge.ir.random import train_case

    eng = dict(case.get("engine", {}))
    bad = sorted(set(eng) - set(_ENGINE_KEYS))
    if bad:
        raise ConfigError(f"case engine parameter {bad[0]!r} is not one of {', '.join(_ENGINE_KEYS)}")
    batch, steps = int(case["batch"]), int(case.get("steps", 1))
    state, x, y, rng = train_case(int(case["seed"]), batch=batch, **case.get("net", {}))
    cfg = TrainEngineConfig(train=state.config, **eng)
    hi = (1 << (state.config.act_bits - 1)) - 1
    batches = [(x, y)] + [(rng.integers(0, hi + 1, size=(batch, state.in_features)),
                           rng.integers(0, state.n_classes, size=batch)) for _ in range(steps - 1)]
    return state, cfg, batches


make_case = case_config


def _hw_key(cfg) -> tuple:
    """What of a ``TrainEngineConfig`` the hardware depends on: the engine parameters and
    the widths ``compile_training`` checks (the rounding mode is a program register)."""
    tc = cfg.train
    return (tuple(getattr(cfg, k) for k in _ENGINE_KEYS)
            + tuple(getattr(tc, k) for k in ("w_bits", "master_bits", "act_bits", "inter_bits",
                                             "grad_bits", "prob_bits", "table_bits",
                                             "table_frac_bits", "bias_bits")))


# ----------------------------------------------------------------------------- build
@dataclass(frozen=True)
class TrainSimBuild:
    """A compiled simulation model of ``ttforge_train`` for one config."""

    config: Any
    sim: str
    build_dir: Path
    key: str
    waves: bool = False
    fault: str | None = None
    build_seconds: float = 0.0
    cached: bool = True

    @property
    def verilog_path(self) -> Path:
        return self.build_dir / f"{TRAIN_TOP}.v"


def _emit(config, fault=None) -> str:
    """The training top's Verilog for ``config`` and ``fault``, the few most recently
    used kept in this process (:func:`ttforge.sim.runner.keep_text`)."""
    from ttforge.sim.runner import keep_text, recall_text

    text = recall_text(_EMITTED, (config, fault))
    if text is None:
        from ttforge.hw.trainer.top import verilog

        text = keep_text(_EMITTED, (config, fault), verilog(config, fault=fault))
    return text


def build_train(config, sim: str, *, waves: bool = False, build_root=None,
                fault: str | None = None) -> TrainSimBuild:
    """Compile ``TrainAccel(config)`` for ``sim`` (cached; a file lock serializes
    concurrent builds of one key). ``fault`` builds a deliberately broken engine
    (``hw.faults.TRAIN_FAULTS``; mutation runs). Raises ``SimulatorMissing`` or ``SimError``."""
    from ttforge.sim.runner import (_tool_version, build_intact, build_product, build_root_dir, cocotb_build,
                                    fresh_build_dir, kept_sources, product_record)

    version = _tool_version(sim)
    text = _emit(config, fault)
    h = hashlib.sha256()
    for part in ("train", str(_RECIPE), sim, str(bool(waves)), version, text):
        h.update(part.encode() + b"\0")
    key = h.hexdigest()[:20]
    root = build_root_dir(build_root, make=sim == "verilator")
    bdir = root / f"train-{sim}-{key}"
    marker = bdir / "ttforge_build.json"
    product = build_product(sim, bdir, TRAIN_TOP)
    expect = {"key": key, "verilog_sha256": hashlib.sha256(text.encode()).hexdigest()}
    mk = dict(config=config, sim=sim, build_dir=bdir, key=key, waves=bool(waves), fault=fault)
    files = {f"{TRAIN_TOP}.v": text}
    if sim == "verilator":
        from ttforge.hw.trainer.top import verilator_waivers

        files[f"{TRAIN_TOP}.vlt"] = verilator_waivers()
    # the marker, the simulator it vouches for and the sources kept beside it (as the
    # inference builds': a damaged copy under an intact simulator is a miss, rebuilt)
    sources = kept_sources(bdir, files)
    if build_intact(marker, expect, product, sources):
        return TrainSimBuild(**mk)
    with cache_lock(root / f"train-{sim}-{key}.lock"):
        if build_intact(marker, expect, product, sources):
            return TrainSimBuild(**mk)
        fresh_build_dir(bdir)
        t0 = time.perf_counter()
        cocotb_build(sim, root, bdir, TRAIN_TOP, files, waves=bool(waves))
        secs = time.perf_counter() - t0
        atomic_write_text(marker, json.dumps({"sim": sim, **expect, "tool": version, "build_seconds": secs,
                                              **product_record(product)}, indent=1))
    return TrainSimBuild(**mk, build_seconds=secs, cached=False)


# ----------------------------------------------------------------------------- run
@dataclass(frozen=True)
class TrainRun:
    """What a training job returned: per step the memories read back (``cmem``,
    ``bmem``, ``maxacc`` lists of arrays, ``rng`` ints) and the counters; ``final`` the
    used regions of ACT, GRAD and the labels after the last step (when dumped);
    ``error`` the driver's exception text (``None``: every step finished)."""

    case: dict
    cmem: list = field(default_factory=list)
    bmem: list = field(default_factory=list)
    maxacc: list = field(default_factory=list)
    rng: list = field(default_factory=list)
    counters: list = field(default_factory=list)
    final: dict = field(default_factory=dict)
    error: str | None = None
    sim_cycles: int = 0
    sim_wall_s: float = 0.0
    wall_s: float = 0.0
    workdir: Path | None = None


def run_train(build: TrainSimBuild, case: dict, *, corrupt: dict | None = None, gaps: float = 0.0,
              seed: int = 0, dump_final: bool = True, max_polls: int = 200_000,
              waves: bool = False, workdir=None) -> TrainRun:
    """Run ``case`` (see :func:`case_config`) for ``case["steps"]`` steps on ``build``.

    ``corrupt``: ``{"window": "CMEM", "index": i, "xor": m}`` flips bits of one element
    over AXI4-Lite after the program is loaded (a sibling that must fail). ``gaps``: the
    probability of a pause in ``s_axis_tvalid``.
    """
    from ttforge.atomic import names_file
    from ttforge.sim.runner import job_workdir, run_testbench

    _, cfg, _ = case_config(case)
    if _hw_key(cfg) != _hw_key(build.config):
        raise ConfigError("the case's TrainEngineConfig differs from the build's; build it with "
                          "build_train(case_config(case)[1], sim)")
    keep = workdir is not None
    with job_workdir("ttforge-train-", workdir) as wd:   # removed if interrupted
        for stale in ("results.json", "results.npz"):
            (wd / stale).unlink(missing_ok=True)
        job = {"case": case, "corrupt": corrupt, "gaps": float(gaps), "seed": int(seed),
               "dump_final": bool(dump_final), "max_polls": int(max_polls)}
        with names_file(wd / "job.json"):   # a full disk's write names no file
            (wd / "job.json").write_text(json.dumps(job, indent=1))
        plusargs, test_args = [], []
        if waves:
            if build.sim == "icarus":
                plusargs.append(f"+dumpfile_path={wd / 'waves.fst'}")
            else:
                test_args += ["--trace-flush", "--trace-file", str(wd / "dump.vcd")]
        summary, arrs, wall = run_testbench(build.sim, build.build_dir, "ttforge.sim.train_tb", TRAIN_TOP, wd,
                                            {"TTFORGE_TRAIN_JOB": str(wd)}, waves=waves, plusargs=plusargs,
                                            test_args=test_args, seed=seed, what="training simulation")
        n = int(summary["steps_done"])
        run = TrainRun(case=case,
                       cmem=[arrs[f"cmem_{k}"] for k in range(n)], bmem=[arrs[f"bmem_{k}"] for k in range(n)],
                       maxacc=[arrs[f"maxacc_{k}"] for k in range(n)], rng=list(summary["rng"]),
                       counters=list(summary["counters"]),
                       final={k[len("final_"):]: v for k, v in arrs.items() if k.startswith("final_")},
                       error=summary.get("error"), sim_cycles=int(summary["sim_cycles"]),
                       sim_wall_s=float(summary["wall_s"]), wall_s=wall, workdir=wd if keep else None)
        if not keep:
            shutil.rmtree(wd, ignore_errors=True)
    return run


# ----------------------------------------------------------------------------- verdict
def judge(run: TrainRun) -> list[dict]:
    """One record per step the RTL completed: ``golden`` (``None`` or the first
    :class:`~ttforge.ir.train_diverge.TrainMismatch` against ``train_step``), and
    ``cmem``, ``bmem``, ``maxacc``, ``rng`` (each ``True`` when it equals the
    interpreter's), ``mac_cycles`` and ``changed`` (the engine's counters over the step
    equal the program's MAC-lane cycles and the interpreter's changed updates),
    ``cycles`` (``(CYCLES over the step, the cycle model)``, not a bool);
    the last record also ``act``, ``grad``, ``labels`` when the run dumped them."""
    from ttforge.hw.trainer.engine import op_cycles
    from ttforge.hw.trainer.model import load_batch, load_program, run_step
    from ttforge.hw.trainer.program import Op
    from ttforge.hw.trainer.program import compile_training, next_exponents, state_from_memories
    from ttforge.ir.train import train_step
    from ttforge.ir.train_diverge import compare_states

    state, cfg, batches = case_config(run.case)
    batch = int(run.case["batch"])
    prog = compile_training(state, batch, cfg)
    mem = load_program(prog)
    golden = state
    hw = state
    out = []
    for k in range(len(run.cmem)):
        x, y = batches[k]
        cm, bm, mx, rng = run.cmem[k], run.bmem[k], run.maxacc[k], int(run.rng[k])
        load_batch(mem, x, y)
        stats = run_step(mem, prog)
        rec = {"cmem": bool(np.array_equal(cm, mem.cmem[:cm.size])),
               "bmem": bool(np.array_equal(bm, mem.bmem[:bm.size])),
               "maxacc": bool(np.array_equal(mx, mem.maxacc[:mx.size])),
               "rng": rng == mem.rng}
        if k < len(run.counters):
            # the engine's own counters, per step: MAC-lane cycles and changed updates
            # exactly as the program and the interpreter say; CYCLES and the cycle model
            # (equal when the samples are there as soon as the engine takes them; pauses
            # in tvalid come on top)
            now = run.counters[k]
            before = run.counters[k - 1] if k else {n: 0 for n in now}
            macs = sum(int(np.prod(op.N)) for op in prog.ops if op.OP in (Op.CONTRACT, Op.WGRAD))
            rec["mac_cycles"] = now["MAC_CYCLES"] - before["MAC_CYCLES"] == macs * cfg.lanes
            rec["changed"] = now["CHANGED"] - before["CHANGED"] == stats["changed"]
            model = (sum(op_cycles(op, cfg, prog.slots) for op in prog.ops)
                     + x.shape[0] * (x.shape[1] + 1))
            rec["cycles"] = (now["CYCLES"] - before["CYCLES"], model)
        golden = train_step(golden, x, y)
        try:
            hw = next_exponents(state_from_memories(hw, prog, cm, bm, rng), prog, mx)
            rec["golden"] = compare_states(golden, hw, "golden", "rtl")
        except Exception as e:          # a read-back outside the master range, say
            rec["golden"] = f"{type(e).__name__}: {e}"
        out.append(rec)
        if k + 1 < len(run.cmem) and not isinstance(rec["golden"], str):
            prog = compile_training(hw, batch, cfg)
            words = prog.words
            mem.dmem[:] = 0
            mem.dmem[:len(words)] = words
            mem.regs.update({k2: v for k2, v in prog.globals.items() if k2 != "RNG"})
    if out and run.final:
        reg = prog.regions
        rec = out[-1]
        if "act" in run.final:
            rec["act"] = bool(np.array_equal(run.final["act"], mem.act[:reg.act_words].reshape(-1)))
        if "grad" in run.final:
            rec["grad"] = bool(np.array_equal(run.final["grad"], mem.grad[:reg.grad_words].reshape(-1)))
        if "labels" in run.final:
            rec["labels"] = bool(np.array_equal(run.final["labels"], mem.labels[:batch]))
    return out

