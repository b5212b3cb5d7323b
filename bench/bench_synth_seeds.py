#!/usr/bin/env python
"""Resources and Fmax of one accelerator config over several nextpnr placement seeds.

    python bench/bench_synth_seeds.py --lanes 16 --seeds 1,2,3 --label after
    PYTHONPATH=/tmp/before_pkg python bench/bench_synth_seeds.py --label before ...

Generates ``ttforge.hw.top.verilog(AccelConfig(lanes=L), platform=ECP5)`` (the ECP5
L = 16 engine of ``docs/hardware.md`` by default, its MACs in ``MULT18X18D`` registers:
``ttforge.hw.ecp5_dsp``) from the ``ttforge`` that Python imports, synthesizes it
once inside the I/O harness of ``ttforge.hw.synth`` (``synth_ecp5``, exactly as
``ttforge report``), then places and routes it with ``nextpnr-ecp5`` once per seed, the
seeds in parallel. Each seed gives what ``ttforge report --lanes L --device ecp5-85f
--seed S`` gives. Writes ``bench/results/synth_seeds.<label>.json`` with every seed's
LUT/FF/DSP/BRAM/Fmax, their min and median, the commit and whether ``hw/`` was dirty.
``--rates`` adds to an existing ``synth_seeds.<label>.json`` what its Fmax (min and
median) gives the MNIST seed network of ``bench_vs_cpu.py``: vectors/s and MAC/s one
vector at a time and in throughput mode (``AccelConfig.throughput``), from the exact
cycle model of the tree that runs it (no synthesis).
``--network mnist-seed`` sizes the config to the MNIST seed network of ``bench_vs_cpu.py``
(``AccelConfig.for_network`` at ``--lanes``: its core, accumulator and bias widths and
depths), the engine that runs it; ``--requant-units`` sets ``AccelConfig.requant_units``
and ``--set FIELD=VALUE`` any other field.
The JSON also records the netlist's logic levels (``ttforge.hw.levels``: how many register
inputs sit behind how many LUT levels, and the deepest paths), which do not depend on the
seed, and nextpnr's placer options (``Device.placer_args``).
``--router router2`` routes with nextpnr's router2 (default: router1, nextpnr's);
``--frontend rtlil`` has Yosys read Amaranth's RTLIL of the engine instead of its Verilog
(the same design; the Verilog frontend's per-lane memory writes and lane selects take
most of an L = 64 synthesis: ``ttforge.hw.synth``).
To measure an older commit, check it out in a worktree and put a directory first on
``PYTHONPATH`` whose ``ttforge`` package maps the worktree's folders (``ttforge/``,
``hw/``, ``ir/`` ...), e.g. with symbolic links.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared bench helpers
from _env import git, git_dirty, result_path, utc_now  # noqa: E402

from ttforge.atomic import atomic_write_text  # noqa: E402
from ttforge.hw.config import AccelConfig  # noqa: E402
from ttforge.hw.target import SynthTarget  # noqa: E402
from ttforge.hw.synth import (DEVICES, FRONTENDS, LUT_MAPPERS, ROUTERS, accel_rtlil, harness_for_ports,  # noqa: E402
                               abc9_crashed, abc9_failed, harness_verilog, next_lut_mapping, nextpnr_args,
                               parse_report, router_args, rtlil_ports, run_synthesis, synth_script)
from ttforge.hw.levels import logic_levels  # noqa: E402
from ttforge.hw.tools import run_tool  # noqa: E402
from ttforge.hw.top import verilog  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIELDS = ("lut", "ff", "dsp", "bram", "lutram")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lanes", type=int, default=16)
    p.add_argument("--requant-units", type=int, default=None,
                   help="AccelConfig.requant_units (default: one per lane)")
    p.add_argument("--network", choices=("default", "mnist-seed"), default="default",
                   help="default: AccelConfig's defaults at --lanes; mnist-seed: the config "
                        "sized to bench_vs_cpu.py's MNIST seed network")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override one AccelConfig field (integer), after --network (repeatable)")
    p.add_argument("--lut-mapper", choices=LUT_MAPPERS, default=LUT_MAPPERS[0],
                   help="Yosys's LUT mapping: abc9 (synth_ecp5's, default) or abc (where abc9 "
                        "crashes: ttforge.hw.synth.ABC9_HINT)")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--floorplan", action="store_true",
                   help="an engine array: place once freely (seed 1, no routing), then anchor each "
                        "engine's block RAMs and multipliers in its own region "
                        "(ttforge.hw.ecp5_floorplan) and place and route every seed on that netlist")
    p.add_argument("--no-fanout-keep", action="store_true",
                   help="leave out the FANOUT_KEEP line (Yosys may merge the register copies; "
                        "what abc9's ABC_OPS_REINTEGRATE assert has needed on some arrays)")
    p.add_argument("--outreg-fold", action="store_true",
                   help="give the block RAMs their output registers (hw/ecp5_bram.py)")
    p.add_argument("--label", required=True)
    p.add_argument("--router", choices=ROUTERS, default=ROUTERS[0],
                   help=f"nextpnr's router (default {ROUTERS[0]})")
    p.add_argument("--frontend", choices=FRONTENDS, default=FRONTENDS[0],
                   help="what Yosys reads: the emitted Verilog (default) or Amaranth's RTLIL "
                        "of the same engine (much faster at L = 64)")
    p.add_argument("--out", type=result_path, default=None,
                   help="the JSON to write (default: bench/results/synth_seeds.<label>.json, which "
                        "the docs' Fmax table and bench_vs_cpu.py read)")
    p.add_argument("--work", default=None, help="work directory (default: a fresh one in /tmp)")
    p.add_argument("--no-route", action="store_true",
                   help="place only: utilisation after packing and nextpnr's post-placement "
                        "Fmax estimate (minutes instead of the hour routing takes on a busy "
                        "2-core machine)")
    p.add_argument("--collect", action="store_true",
                   help="record the seeds' nextpnr runs already in --work (no Yosys, no nextpnr), "
                        "after checking that its core.v is the Verilog this tree generates")
    p.add_argument("--copies", type=int, default=1,
                   help="independent engines in the harness (each on its own shift-register "
                        "stretch): what several engines side by side cost and how fast they route")
    p.add_argument("--rates", action="store_true",
                   help="add vectors/s and MAC/s of the MNIST seed network at the label's Fmax "
                        "to its JSON (the cycle model of this tree; no synthesis)")
    a = p.parse_args(argv)
    if a.copies < 1:
        p.error(f"--copies {a.copies}: give a positive number of engines")
    if a.rates:
        return _rates(Path(a.out) if a.out else ROOT / "bench" / "results" / f"synth_seeds.{a.label}.json")
    seeds = [int(s) for s in a.seeds.split(",")]
    dev = DEVICES["ecp5-85f"]
    import ttforge.hw.top as top_mod
    commit, dirty = git("rev-parse", "HEAD"), git_dirty("hw")
    cfg = AccelConfig(lanes=a.lanes, requant_units=a.requant_units)
    if a.network == "mnist-seed":
        from bench_vs_cpu import network

        cfg = dataclasses.replace(AccelConfig.for_network(network()[0], lanes=a.lanes),
                                  requant_units=a.requant_units)
    for item in a.set:
        field, _, value = item.partition("=")
        try:
            cfg = dataclasses.replace(cfg, **{field: int(value)})
        except (TypeError, ValueError) as e:
            p.error(f"--set {item}: {e}")
    if a.floorplan and cfg.engines < 2:
        p.error(f"--floorplan anchors the engines of an array, and this config has "
                f"{cfg.engines}: add --set engines=N with N >= 2, or leave out --floorplan")
    a.config = cfg.to_dict()
    wd = Path(a.work or f"/tmp/ttforge-synth-seeds-{a.label}")
    wd.mkdir(parents=True, exist_ok=True)
    target = SynthTarget(dev.family)   # the ECP5's MULT18X18D form of MacLanes (hw/ecp5_dsp.py)
    if a.frontend == "rtlil":
        text, core = accel_rtlil(cfg, platform=target), "core.il"
        harness, cost = harness_for_ports(rtlil_ports(text, "ttforge_accel"), "ttforge_accel",
                                          copies=a.copies)
    else:
        text, core = verilog(cfg, platform=target), "core.v"
        harness, cost = harness_verilog(text, "ttforge_accel", copies=a.copies)
    if a.collect:
        # the runs in wd measured this tree's engine only if its core is byte-identical
        if not (wd / core).is_file() or (wd / core).read_text() != text:
            print(f"{wd / core} is not the {a.frontend} of this tree's engine: run without --collect",
                  file=sys.stderr)
            return 1
        return _record(a, seeds, wd, commit, dirty, cost, top_mod, None, collect=True)
    (wd / core).write_text(text)
    (wd / "harness.v").write_text(harness)
    t0 = time.time()
    while True:
        (wd / "synth.ys").write_text(synth_script(dev.key, a.frontend, lut_mapper=a.lut_mapper,
                                                  fanout_keep=not a.no_fanout_keep))
        proc, fold = run_synthesis(wd, dev.key, outreg_fold=a.outreg_fold)
        log = wd / "yosys.log"
        nxt = next_lut_mapping(a.lut_mapper, not a.no_fanout_keep)
        text = log.read_text(errors="replace")
        if nxt is None or not abc9_failed(text):
            break
        # Yosys's abc9 assert or two drivers on a net (a Yosys bug that comes and goes
        # with the netlist): the next mapping, as ttforge build takes it; the JSON
        # records the one that ran
        how = "asserted" if abc9_crashed(text) else "left a net with two drivers"
        print(f"yosys: abc9 {how}; mapping with {nxt[0]}, register copies "
              f"{'kept' if nxt[1] else 'not kept'}", file=sys.stderr)
        a.lut_mapper, a.no_fanout_keep = nxt[0], not nxt[1]
    if proc.returncode != 0:
        print(f"yosys failed (log: {wd / 'yosys.log'})", file=sys.stderr)
        return 1
    synth_s = round(time.time() - t0)
    lv = logic_levels(wd / "netlist.json")
    plan = _floorplan(wd) if a.floorplan else None
    print(f"logic levels (register inputs with 6 / 7 or more): {lv.at_least(6)} / {lv.at_least(7)}; "
          f"deepest {lv.paths[0].levels:.1f}: {lv.paths[0].start} -> {lv.paths[0].end}")
    return _record(a, seeds, wd, commit, dirty, cost, top_mod, synth_s, levels=lv.to_dict(), fold=fold,
                   plan=plan)


def _placement_estimate(run_dir: Path) -> float | None:
    """The Fmax nextpnr logged last in ``run_dir/nextpnr.log`` (after placement only: its
    estimate), or None."""
    found = re.findall(r"Max frequency for clock .*?: ([0-9.]+) MHz",
                       (run_dir / "nextpnr.log").read_text(errors="replace"))
    return float(found[-1]) if found else None


def _floorplan(wd: Path) -> dict:
    """Place ``wd/netlist.json`` once freely (seed 1, no routing) and write
    ``wd/netlist.floorplan.json``: each engine's hard blocks anchored in its region
    (:func:`ttforge.hw.ecp5_floorplan.floorplan_netlist_file`). Returns its report."""
    from ttforge.hw.ecp5_floorplan import floorplan_netlist_file

    fd = wd / "free"
    fd.mkdir(exist_ok=True)
    t = time.time()
    run_tool(DEVICES["ecp5-85f"].nextpnr, nextpnr_args("ecp5-85f", seed=1, netlist="../netlist.json",
                                                       extra=["--no-route", "--write", "placed.json"]),
             cwd=fd, timeout=None)
    rep = dict(floorplan_netlist_file(wd / "netlist.json", fd / "placed.json", wd / "netlist.floorplan.json"))
    rep.update(free_placement_s=round(time.time() - t), free_placement_estimate_mhz=_placement_estimate(fd))
    print(f"floorplan: {rep['cells']} blocks of {rep['engines']} engines anchored", file=sys.stderr)
    return rep


def _record(a, seeds, wd: Path, commit: str, dirty: bool, cost, top_mod, synth_s, collect: bool = False,
            levels: dict | None = None, fold: dict | None = None, plan: dict | None = None) -> int:
    """Place and route each seed (or, with ``collect``, read its finished run) and write
    the JSON."""
    dev = DEVICES["ecp5-85f"]

    def pnr(seed):
        sd = wd / f"seed{seed}"
        sd.mkdir(exist_ok=True)
        t = time.time()
        if not collect:
            netlist = "../netlist.floorplan.json" if a.floorplan else "../netlist.json"
            run_tool(dev.nextpnr, nextpnr_args("ecp5-85f", seed=seed, netlist=netlist,
                                               extra=[*router_args(a.router), *(["--no-route"] if a.no_route else [])]),
                     cwd=sd, timeout=None)
        rep = parse_report(sd / "report.json", "ecp5-85f")
        fmax = rep.fmax_mhz
        if a.no_route:
            fmax = _placement_estimate(sd)
        cp = rep.critical_path if not a.no_route else None
        run = {"seed": seed, "fmax_mhz": fmax, "routed": not a.no_route,
               "pnr_s": None if collect else round(time.time() - t), **{f: rep.used(f) for f in FIELDS},
               "critical_path": cp}
        return run

    with ThreadPoolExecutor(len(seeds)) as ex:
        runs = list(ex.map(pnr, seeds))
    summary = {}
    for f in ("fmax_mhz", *FIELDS):
        vals = [r[f] for r in runs if r[f] is not None]
        if vals:
            summary[f] = {"min": min(vals), "median": statistics.median(vals), "max": max(vals)}
    out = {"label": a.label, "date_utc": utc_now(), "git_commit": commit, "git_dirty": dirty,
           "ttforge_hw": str(Path(top_mod.__file__).parent), "device": "ecp5-85f",
           "lanes": a.lanes, "requant_units": a.requant_units, "network": a.network,
           "copies": a.copies,
           "config": a.config, "lut_mapper": a.lut_mapper, "router": a.router,
           "placer_args": list(dev.placer_args), "frontend": a.frontend,
           "harness": cost, "synth_s": synth_s, "logic_levels": levels, "outreg_fold": fold,
           "fanout_keep": not a.no_fanout_keep, "floorplan": plan,
           "runs": runs,
           "summary": summary, "collected": collect}
    path = Path(a.out) if a.out else ROOT / "bench" / "results" / f"synth_seeds.{a.label}.json"
    atomic_write_text(path, json.dumps(out, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


def _rates(path: Path) -> int:
    """Add ``rates`` to ``path`` (``synth_seeds.<label>.json``): the MNIST seed network's cycles
    per vector (one at a time; throughput mode's steady state) and its vectors/s and
    MAC/s at the recorded Fmax min and median (times ``copies``: independent engines, each
    on its own vector)."""
    from bench_vs_cpu import network

    from ttforge.hw.cycles import program_cycles
    from ttforge.hw.program import compile_program

    out = json.loads(path.read_text())
    net, _ = network(0)
    cfg = AccelConfig.for_network(net, lanes=out["lanes"])
    prog = compile_program(net, cfg)
    pc = program_cycles(prog.descriptors, cfg, prog.globals)
    macs = pc.busy_lane_cycles
    at = {}
    n = out.get("copies", 1)
    for k in ("min", "median"):
        hz = out["summary"]["fmax_mhz"][k] * 1e6
        at[k] = {"fmax_mhz": hz / 1e6,                     # n engines: n vectors at a time
                 "vectors_s": n * hz / pc.total, "macs_s": n * hz / pc.total * macs,
                 "throughput_vectors_s": n * hz / pc.vector_cycles,
                 "throughput_macs_s": n * hz / pc.vector_cycles * macs}
    out["rates"] = {"network": "MNIST seed network (bench_vs_cpu.network(0): 784-512-10)",
                    "lanes": cfg.lanes, "copies": n, "macs_per_vector": macs, "cycles_per_vector": pc.total,
                    "throughput_cycles_per_vector": pc.vector_cycles,
                    "model_commit": git("rev-parse", "HEAD"), "model_dirty": git_dirty("hw"),
                    "note": "the routed engine is throughput=0; throughput mode's rate assumes "
                            "its staging memory leaves Fmax as it is (not routed)",
                    "at": at}
    atomic_write_text(path, json.dumps(out, indent=2) + "\n")
    print(json.dumps(out["rates"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
