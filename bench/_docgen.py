"""Render the figures of docs/benchmarks.md and of the README's headline table from
``bench/results/*.json``, so that no figure is typed by hand.

    python bench/_docgen.py            # rewrite the generated blocks of both files
    python bench/_docgen.py --check    # exit 1 and name the stale blocks (tests/test_benchmarks_doc.py)

A generated block sits between ``<!-- generated: NAME -->`` and ``<!-- end generated: NAME -->``;
the text around it is written by hand. Every table names the commit its JSON recorded and
says when that tree was dirty (uncommitted changes) or recorded no commit at all.
Only the standard library: rendering needs no PyTorch and no simulator.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "benchmarks.md"
README = ROOT / "README.md"

_BLOCK = re.compile(r"(<!-- generated: ([\w-]+) -->\n)(.*?)(<!-- end generated: \2 -->)", re.S)


# -- reading the results ----------------------------------------------------------------------
def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def provenance(d: dict) -> tuple[str | None, bool | None]:
    """(commit, dirty) a result JSON recorded, wherever its bench put them."""
    for env in (d.get("environment"), (d.get("runs") or [{}])[-1].get("environment") if isinstance(
            d.get("runs"), list) and d["runs"] and isinstance(d["runs"][-1], dict) else None, d.get("git"), d):
        if isinstance(env, dict):
            commit = env.get("git_commit") or env.get("commit")
            if commit:
                return commit, env.get("git_dirty", env.get("dirty"))
    return None, None


def source(name: str, commit: str | None = None, dirty: bool | None = None) -> str:
    """``bench/results/NAME.json`` with its commit, marked when the tree was not clean."""
    if commit is None:
        commit, dirty = provenance(load(name) or {})
    where = f"`{name}.json`"
    if not commit:
        return f"{where}, no commit recorded (**re-measure**)"
    return f"{where} at `{commit[:7]}`" + (" (dirty tree: **re-measure**)" if dirty else "")


def merged_source(name: str) -> str:
    """:func:`source` of a results file whose rows a later run replaced (``--merge``: a
    row's own ``run``), with those rows' commits: "... (iCEBreaker rows at `abc1234`)"."""
    d = load(name) or {}
    later: dict[str, list[str]] = {}
    for r in d.get("rows", []):
        env = (r.get("run") or {}).get("environment") or {}
        if env.get("git_commit"):
            mark = " (dirty tree: **re-measure**)" if env.get("git_dirty") else ""
            later.setdefault(f"`{env['git_commit'][:7]}`{mark}", []).append(
                f"{r.get('model', '?')} on the {r.get('board', '?')}")
    extra = "; ".join(f"{', '.join(rows)} at {c}" for c, rows in later.items())
    return source(name) + (f" ({extra})" if extra else "")


def pct(x: float, nd: int = 2) -> str:
    return f"{100 * x:.{nd}f}%"


def _num(x: float, nd: int = 0) -> str:
    return f"{x:,.{nd}f}"


def table(head: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


# -- the figures ------------------------------------------------------------------------------
def _acc_rows(d: dict) -> dict:
    dense = {r["dataset"]: r["mean_test_acc"] for r in d["rows"] if r["tt_params"] is None}
    out = {}
    for r in d["rows"]:
        key = (r["dataset"], "dense" if r["tt_params"] is None else
               "ra" if r.get("truncation") else "tt")
        out[key] = dict(r, delta_pp=100 * (r["mean_test_acc"] - dense.get(r["dataset"], r["mean_test_acc"])))
    return out


def _quant_rows(d: dict) -> dict:
    return {(r["dataset"], r["config"]): r for r in d["rows"] if "qat_acc" in r}


def _fmax_runs(d: dict, device: str, lanes: int) -> list[dict]:
    return [r for r in d["runs"] if r["device"] == device and r["lanes"] == lanes
            and (r.get("result") or {}).get("fmax_mhz")]


def _fmax_groups(d: dict, device: str, lanes: int) -> list[tuple[str, str, bool, list[float], list]]:
    """(label, commit, dirty, [Fmax per seed], [seeds]) per (label, commit), in file order."""
    groups: dict[tuple, list] = {}
    for r in _fmax_runs(d, device, lanes):
        seed = r.get("seed", (r.get("result") or {}).get("seed", 1))
        groups.setdefault((r["label"], r["git_commit"], bool(r.get("git_dirty"))), []).append(
            (seed, r["result"]["fmax_mhz"]))
    return [(lab, c, dirty, [f for _, f in v], [s for s, _ in v]) for (lab, c, dirty), v in groups.items()]


def _synth_seeds() -> list[tuple[str, dict]]:
    """(label, JSON) of every ``bench/results/synth_seeds.<label>.json``, 'before' first, then
    by date (the latest last: the headline's figure)."""
    out = [(p.name.split(".")[1], json.loads(p.read_text())) for p in sorted(RESULTS.glob("synth_seeds.*.json"))]
    return sorted(out, key=lambda x: (x[0] != "before", x[1].get("date_utc", "")))


def _lanes_copies(d: dict) -> str:
    """The lanes of a ``synth_seeds`` record, and its engines when there are several
    (harness copies, or ``AccelConfig.engines``) and its operand register stage."""
    n = d.get("copies", 1)
    cfg = d.get("config") if isinstance(d.get("config"), dict) else {}
    e, rr = cfg.get("engines", 1), cfg.get("read_registers", 0)
    return (str(d.get("lanes", 16)) + (f" (x{n} engines, harness)" if n > 1 else "")
            + (f" (x{e} engines)" if e > 1 else "") + (f", read_registers = {rr}" if rr else "")
            + (", floorplanned" if d.get("floorplan") else ""))


def block_fmax_seeds() -> str:
    seeds = _synth_seeds()
    if not seeds:
        return ("**Placeholder**: no `synth_seeds.*.json` yet. The ECP5 L = 16 engine before and after "
                "the engine became components, over seeds 1, 2, 3: `python bench/bench_synth_seeds.py "
                "--lanes 16 --seeds 1,2,3 --label after` (and `--label before` on the older tree).")
    rows = []
    for label, d in seeds:
        sm = d["summary"]
        rows.append([label, f"`{(d.get('git_commit') or '')[:7]}`" + (" (dirty)" if d.get("git_dirty") else ""),
                     d.get("device", "ecp5-85f"), _lanes_copies(d), ", ".join(str(r["seed"]) for r in d["runs"]),
                     f"{sm['lut']['median']:,}", f"{sm['ff']['median']:,}", sm["dsp"]["median"], sm["bram"]["median"],
                     f"{sm['fmax_mhz']['min']:.1f} / {sm['fmax_mhz']['median']:.1f} / {sm['fmax_mhz']['max']:.1f}",
                     "yes" if all(r.get("routed", True) for r in d["runs"]) else "**no** (placement estimate)"])
    paths = []
    for label, d in seeds:
        for r in d["runs"]:
            cp = r.get("critical_path") or {}
            if cp.get("delay_ns"):
                cell = (lambda e: (e or {}).get("cell", "?").split("_TRELLIS")[0].split("_LUT4")[0])
                paths.append([label, r["seed"], f"{r['fmax_mhz']:.2f}", f"{cp['delay_ns']:.2f}",
                              f"{cp['routing_ns']:.2f} ({cp['routing_ns'] / cp['delay_ns']:.0%})",
                              cp.get("logic_levels", ""), f"`{cell(cp.get('start'))}` -> `{cell(cp.get('end'))}`"])
    out = table(["run", "commit", "device", "L", "nextpnr seeds", "LUT", "FF", "DSP", "BRAM",
                 "Fmax MHz min / median / max", "routed"], rows)
    if paths:
        out += "\n\nThe routed critical paths:\n\n" + table(
            ["run", "seed", "Fmax MHz", "path ns", "of which routing ns", "logic levels", "from -> to"], paths)
    return out + "\n\nFrom `synth_seeds.<run>.json` (`bench/bench_synth_seeds.py`)."


def _fmax_text(fs: list[float]) -> str:
    if len(fs) == 1:
        return f"{fs[0]:.1f} MHz (1 seed, an older engine: **to re-measure over seeds 1-3**)"
    return f"{min(fs):.1f} / {statistics.median(fs):.1f} MHz (min / median of {len(fs)} seeds)"


def headline() -> list[tuple[str, str, str, str, str]]:
    """(what, figure, goal, source, command) of every headline figure."""
    rows = []
    acc = load("accuracy")
    if acc:
        a = _acc_rows(acc)
        rows.append((
            "TT-layer compression at ≤ 1 pp from dense (test accuracy, mean of 3 seeds)",
            f"MNIST 784x512: {a['mnist', 'tt']['tt_compression']:.1f}x at rank 8 "
            f"({a['mnist', 'tt']['delta_pp']:+.2f} pp), {a['mnist', 'ra']['tt_compression']:,.0f}x rank-adaptive "
            f"({a['mnist', 'ra']['delta_pp']:+.2f} pp); digits: {a['digits', 'ra']['tt_compression']:.1f}x "
            f"rank-adaptive ({pct(a['digits', 'ra']['mean_test_acc'])}, {a['digits', 'ra']['delta_pp']:+.2f} pp)",
            "≤ 1 pp at ≥ 10x", source("accuracy"), "`python bench/bench_accuracy.py`"))
    ep = load("epoch_time")
    if ep:
        one = [r for r in ep["rows"] if r["dataset"] == "mnist" and r["threads"] == 1]
        if one:
            r, c = one[0], one[0]["contenders"]
            rows.append((
                "training epoch, MNIST-10k TT network (8,000 samples, batch 64, 1 thread): the fast path "
                "against the hardware's order",
                f"{1e3 * c['tt']['epoch_s']:,.0f} ms against {1e3 * c['tt_schedule']['epoch_s']:,.0f} ms "
                f"(**{r['epoch_speedup']:.2f}x**; the TT layer alone {r['layer_fwd_bwd_speedup']:.2f}x); "
                f"dense MLP {1e3 * c['dense']['epoch_s']:,.0f} ms", "", source("epoch_time"),
                "`python bench/bench_epoch.py`"))
    q = load("quant")
    if q:
        qr = _quant_rows(q)

        def per(ds):
            f = qr[ds, "8-bit cores, 8-bit classifier"]["float_acc"]["mean"]
            return " / ".join([f"{100 * f:.2f}"] + [f"{100 * qr[ds, f'{b}-bit cores, {b}-bit classifier']['qat_acc']['mean']:.2f}"
                                                    for b in (8, 4, 2)]) + " %"
        rows.append(("accuracy per precision, integer executor (float TT / 8 / 4 / 2-bit cores, QAT)",
                     f"MNIST-10k {per('mnist')}; digits {per('digits')}", "8-bit ≤ 0.5 pp, 4-bit ≤ 1.5 pp",
                     source("quant"), "`python bench/bench_quant.py`"))
        m4 = qr["mnist", "4-bit cores, 4-bit classifier"]["on_chip_tt_layer"]
        rows.append(("on-chip memory, MNIST TT layer at 4-bit cores",
                     f"{m4['on_chip_bytes'] / 1000:.1f} KB, {m4['ratio']:.3f} of its "
                     f"{m4['dense_int8_bytes'] / 1000:.0f} KB dense INT8 weight", "",
                     source("quant"), "`python bench/bench_quant.py`"))
    hw = load("hw")
    if hw:
        u = {(r["layer"], r["lanes"]): r for r in hw["rows"]}
        worst = max(abs(r["model_error"]) for r in hw["rows"])
        rows.append(("MAC-lane utilization, L = 16 (the engine's counters, simulated)",
                     f"MNIST layer rank 16: {pct(u['mnist', 16]['sim']['utilization'], 1)}; 1024x1024 rank 8: "
                     f"{pct(u['1024', 16]['sim']['utilization'], 1)}; cycle model "
                     + ("exact" if worst == 0 else f"within {pct(worst, 3)}"),
                     "≥ 90%, model within 2%", source("hw"), "`python bench/bench_hw.py`"))
    synth, boards = load("hw_synth"), load("boards")
    seeds = _synth_seeds()
    # the headline: the latest routed L = 16 run of the default engine (placement-only runs,
    # other lane counts, shared requantization units and network-sized configs are rows of
    # the table below, not the figure of the goal)
    after = next((d for lab, d in reversed(seeds) if lab != "before" and d.get("lanes", 16) == 16
                  and not d.get("requant_units") and d.get("network", "default") == "default"
                  and d.get("copies", 1) == 1
                  and all(r.get("routed", True) for r in d["runs"])), None)
    if after:
        fs = [r["fmax_mhz"] for r in after["runs"]]
        routed = all(r.get("routed", True) for r in after["runs"])
        rows.append(("Fmax, ECP5-85F engine L = 16 (the core in its I/O harness)",
                     f"{min(fs):.1f} / {statistics.median(fs):.1f} MHz (min / median of seeds "
                     f"{', '.join(str(r['seed']) for r in after['runs'])}"
                     + ("" if routed else ", nextpnr's placement estimate: not routed") +
                     "); the placement seed alone moves it by up to 20%", "100 MHz",
                     source(f"synth_seeds.{after['label']}", after.get("git_commit"), after.get("git_dirty")),
                     f"`python bench/bench_synth_seeds.py --lanes 16 --seeds 1,2,3 --label {after['label']}`"))
    elif synth:
        g = _fmax_groups(synth, "ecp5-85f", 16)
        g = [x for x in g if len(x[3]) >= 3] or g   # the latest run over >= 3 seeds, else the latest
        if g:
            lab, c, dirty, fs, _ = g[-1]
            rows.append(("Fmax, ECP5-85F engine L = 16 (the core in its I/O harness)",
                         f"{_fmax_text(fs)}; the placement seed alone moves it by up to 20%",
                         "100 MHz", source("hw_synth", c, dirty),
                         "`python bench/bench_hw.py --synth-only --targets ecp5-85f:16 --seeds 1 2 3`"))
    if synth:
        # the iCE40UP5K L = 4 engine: the latest labelled run over >= 3 seeds
        g = [x for x in _fmax_groups(synth, "ice40up5k", 4) if len(x[3]) >= 3]
        if g:
            lab, c, dirty, fs, _ = g[-1]
            rows.append(("Fmax, iCE40UP5K engine L = 4 (the core in its I/O harness)",
                         f"{_fmax_text(fs)}", "30 MHz", source("hw_synth", c, dirty),
                         f"`python bench/bench_hw.py --synth-only --targets ice40up5k:4 --seeds 1 2 3 "
                         f"--synth-label {lab}`"))
    if boards:
        b = {(r["model"], r["board"]): r for r in boards["rows"]}

        def fm(k):
            r = b.get(k)
            return f"{r['build']['fmax_mhz']:.1f} MHz" if r and (r.get("build") or {}).get("ok") else "does not fit"
        rows.append(("Fmax, board tops (accelerator + UART bridge, nextpnr seed 1)",
                     f"ULX3S, L = 4: digits {fm(('digits', 'ulx3s'))}, MNIST {fm(('mnist', 'ulx3s'))}; "
                     f"iCEBreaker, L = 1: digits {fm(('digits', 'icebreaker'))}, MNIST {fm(('mnist', 'icebreaker'))}",
                     "board clock (50 / 12 MHz)", merged_source("boards"), "`python bench/bench_boards.py`"))
    vc = load("vs_cpu")
    if vc:
        # the engine row fastest at its routed Fmax; its fastest PLL step reached
        routed = [e for e in vc["engine"] if e.get("at_fmax")]
        if routed:
            e = max(routed, key=lambda e: e["at_fmax"]["vs_golden"])
            f, r = e["at_fmax"], e["routed"]
            steps = [a for a in e["at"] if a["reached"]]
            what = (f"{e['engines']} engines x L = {e['lanes']}" if e.get("engines", 1) > 1
                    else f"{e['copies']} engines x L = {e['lanes']} (harness)" if e.get("copies", 1) > 1
                    else f"L = {e['lanes']}") + (", floorplanned" if r.get("floorplan") else "")
            fig = (f"{what}: {f['vs_golden']:.2f}x the golden executor, {f['vs_c']:.2f}x the C executor at "
                   f"{f['mhz']:.1f} MHz (its lowest routed seed, `{r['label']}`)")
            if steps:
                st = steps[-1]
                fig += (f"; at the {st['mhz']:g} MHz PLL step below it {st['vs_golden']:.2f}x / {st['vs_c']:.2f}x, "
                        f"{st['vectors_per_s']:,.0f} vectors/s")
            src = source("vs_cpu")
            if e.get("at_board"):
                bd, ab = e["board"], e["at_board"]
                fig += (f"; **the board top** (`ttforge build`, timing met at {ab['mhz']:g} MHz on seed"
                        f"{'s' if len(bd['met_seeds']) > 1 else ''} {', '.join(map(str, bd['met_seeds']))}) "
                        f"**{ab['vs_golden']:.2f}x** / {ab['vs_c']:.2f}x, {ab['vectors_per_s']:,.0f} vectors/s")
                src += "; " + source(f"board_build.{bd['label']}", bd["commit"], bd["dirty"])
            rows.append(("MNIST seed network on the ULX3S's ECP5-85F against one CPU core (the accelerator in its I/O harness"
                         + (" and the board top's bitstream" if e.get("at_board") else "")
                         + "; vectors/s, CPU measured in the same run)",
                         fig, "3x the golden executor, > 1x the C executor", src,
                         f"`{vc.get('command', 'python bench/bench_vs_cpu.py')}`"))
    fl = load("flow")
    if fl:
        m = fl["measurement"]
        rows.append(("`ttforge flow` on the default (digits, 4-bit, iCEBreaker)",
                     f"{m['cold']['wall_s']:.1f} s cold ({m['cold']['stages']['bitstream']['seconds']:.0f} s of it "
                     f"the bitstream), {m['again']['wall_s']:.1f} s when nothing changed", "",
                     source("flow"), "`python bench/bench_flow.py`"))
    reg = load("regress")
    if reg:
        clean = [r for r in reg["runs"] if r["fault"] is None]
        if clean:
            c, dirty = _regress_commit(clean)
            rows.append(("bit-exact vectors (random configurations, every output `np.array_equal`)",
                         "; ".join(f"{r['vectors'] if r['passed'] == r['cases'] else 0:,} / {r['vectors']:,} on "
                                   f"{SIM_NAMES.get(r['sim'], r['sim'])} ({r['passed']}/{r['cases']} cases)"
                                   for r in clean), "100%", source("regress", c, dirty),
                         "`python bench/bench_regress.py`"))
        faulted = [r for r in reg["runs"] if r["fault"] is not None]
        if faulted:
            c, dirty = _regress_commit(faulted)
            sims = sorted({r["sim"] for r in faulted})
            rows.append(("mutation kill rate (deliberate RTL faults, `ttforge regress --fault`)",
                         "; ".join(f"{sum(r['passed'] == 0 for r in faulted if r['sim'] == sim)}/"
                                   f"{sum(r['sim'] == sim for r in faulted)} on {SIM_NAMES.get(sim, sim)}"
                                   for sim in sims), "every fault", source("regress", c, dirty),
                         "`python bench/bench_regress.py --faults all`"))
    cli = load("cli_import")
    if cli:
        a, bf = cli["after"]["--version"], cli["before"]["--version"]
        rows.append(("`ttforge --version` start-up (median of 5)",
                     f"{a['median_s']:.2f} s, {a['modules']} modules (was {bf['median_s']:.1f} s, {bf['modules']:,} "
                     f"modules with torch at `{cli['before_commit'][:7]}`)", "",
                     source("cli_import", cli.get("after_commit") or cli.get("commit"), False),
                     "`python bench/bench_cli_import.py`"))
    return rows


SIM_NAMES = {"icarus": "cocotb + Icarus", "verilator": "cocotb + Verilator",
             "verilator-native": "the native Verilator harness"}


def _regress_commit(runs: list[dict]) -> tuple[str | None, bool | None]:
    """The commit of a group of runs (None when they disagree: then the source says re-measure)."""
    commits = {(r["environment"]["git_commit"], bool(r["environment"]["git_dirty"])) for r in runs}
    return next(iter(commits)) if len(commits) == 1 else (None, None)


README_ANCHORS = {
    "TT-layer compression": "accuracy", "training epoch": "epoch-time", "accuracy per precision": "quantized-accuracy",
    "on-chip memory": "quantized-accuracy", "MAC-lane": "accelerator", "Fmax, ECP5": "fmax-and-area", "Fmax, iCE40": "fmax-and-area",
    "Fmax, board": "boards", "`ttforge flow`": "flow", "`ttforge --version`": "cli-start-up",
    "bit-exact vectors": "regressions-and-mutation", "mutation kill rate": "regressions-and-mutation",
    "MNIST seed network on the ULX3S": "against-the-cpu-it-replaces",
}


def _anchor(what: str) -> str:
    return next(a for k, a in README_ANCHORS.items() if what.startswith(k))


def block_readme() -> str:
    return table(["what", "figure"], [[f"[{w}](docs/benchmarks.md#{_anchor(w)})", f] for w, f, *_ in headline()])


def block_summary() -> str:
    return table(["what", "figure", "goal", "from", "command"],
                 [[f"[{w}](#{_anchor(w)})", f, g or "—", s, c] for w, f, g, s, c in headline()])


def block_accuracy() -> str:
    d = load("accuracy")
    rows = []
    for (ds, kind), r in _acc_rows(d).items():
        per_seed = ", ".join(f"{100 * x['test_acc']:.2f}" for x in r["runs"])
        ranks = "—"
        if kind == "ra":
            ranks = " / ".join(",".join(map(str, next(iter(x["truncation"]["layers"].values()))["after"][1:-1]))
                               for x in r["runs"])
        elif kind == "tt":
            ranks = ",".join(map(str, next(iter(r["runs"][0]["ranks"].values()))[1:-1]))
        rows.append([ds, r["variant"], f"{pct(r['mean_test_acc'])} ± {100 * r['std_test_acc']:.2f}", per_seed,
                     "—" if kind == "dense" else f"{r['delta_pp']:+.2f}",
                     f"{r['tt_compression']:,.1f}x" if r["tt_compression"] else "—", ranks])
    return table(["data", "model", "test accuracy, mean ± sd", "per seed", "Δ vs dense (pp)",
                  "TT-layer compression", "TT ranks (RA: after truncation, per seed)"], rows) + \
        f"\n\nFrom {source('accuracy')}."


def epoch_table(d: dict) -> str:
    """The epoch-time table of ``bench_epoch.py``'s result ``d``: the TT network with the
    fast path and in the hardware's order, the dense MLP, and the TT layer alone."""
    rows = []
    for r in d["rows"]:
        c = r["contenders"]
        acc = " / ".join(", ".join(f"{100 * a:.2f}" for a in sorted(set(c[k]["test_acc"])))
                         for k in ("tt", "tt_schedule"))
        rows.append([r["dataset"], r["threads"],
                     *(f"{1e3 * c[k]['epoch_s']:,.0f} ms" for k in ("tt", "tt_schedule", "dense")),
                     f"**{r['epoch_speedup']:.2f}x**", f"{r['layer_fwd_bwd_speedup']:.2f}x",
                     f"{r['epoch_saving_ms']:,.0f} / {r['layer_saving_ms']:,.0f} ms",
                     f"{acc} ({r['epochs']} epochs)"])
    return table(["data", "threads", "epoch, TT network (fast path)", "epoch, TT network (hardware order)",
                  "epoch, dense MLP", "epoch speed-up", "TT layer's forward+backward speed-up (batch 64)",
                  "epoch saving: measured / the layer's", "test accuracy, fast / hardware order"], rows)


def block_epoch_time() -> str:
    d = load("epoch_time")
    return epoch_table(d) + f"\n\nFrom {source('epoch_time')}."


def _compile_run(name: str) -> str:
    if name == "eager":
        return name
    if name == "eager-plain":
        return "eager, plain fake quantization"
    return "`inductor` + `COMPILE_OPTIONS`" if name == "inductor-options" else f"`{name}`"


def compile_table(d: dict) -> str:
    """The table of ``bench_compile.py``'s result ``d``: per batch and run, the graphs
    and breaks, the first step, the graphs compiled at other batch sizes, and the step
    and inference medians."""
    rows = []
    for r in d["rows"]:
        for name, c in r["contenders"].items():
            first, exact = c["first_step_s"], c.get("bit_exact")
            rows.append([r.get("network", "tt"), r["batch"], _compile_run(name),
                         "-" if c["graphs"] is None else f"{c['graphs']} / {c['breaks']}",
                         f"{first:.2f} s" if first < 10 else f"{first:.1f} s", c["new_graphs_at_sizes"],
                         f"{c['step_ms']:.2f} ms", f"{c['inference_ms']:.2f} ms",
                         "-" if exact is None else ("**yes**" if exact else "**NO**")])
    sizes = len(next(iter(d["rows"][0]["contenders"].values()))["sizes"])
    return table(["network", "batch", "run", "graphs / breaks", "first step",
                  f"graphs compiled at {sizes} other batch sizes", "step", "inference",
                  "inference bit-exact (eager, integer executor)"], rows)


def block_compile() -> str:
    return compile_table(load("compile")) + f"\n\nFrom {source('compile')}."


def block_quant() -> str:
    d = load("quant")
    rows = []
    for (ds, cfg), r in _quant_rows(d).items():
        t = r["on_chip_tt_layer"]
        rows.append([ds, cfg, f"{100 * r['float_acc']['mean']:.2f}", f"{100 * r['ptq_mse_acc']['mean']:.2f}",
                     f"{100 * r['qat_acc']['mean']:.2f} ± {100 * r['qat_acc']['std']:.2f}",
                     f"{100 * (r['qat_acc']['mean'] - r['float_acc']['mean']):+.2f}",
                     f"{100 * r['float_ft_acc']['mean']:.2f}",
                     f"{t['on_chip_bytes']:,} / {t['dense_int8_bytes']:,} = {t['ratio']:.3f}"])
    return table(["data", "weights (activations 8-bit)", "float TT", "PTQ (mse)", "QAT", "QAT − float (pp)",
                  "float + same fine-tuning (control)", "TT layer on chip / dense INT8 (bytes)"], rows) + \
        f"\n\nMean over seeds {', '.join(map(str, d['seeds']))}, in %; from {source('quant')}."


def block_stochastic() -> str:
    d = load("stochastic")
    by = {}
    for r in d["rows"]:
        by.setdefault((r["data"], r["w_bits"], r["lr"]), {})[
            r["method"] if not r.get("master_extra_bits") else "wide"] = r
    rows = []
    for (data, w, lr), m in sorted(by.items(), key=lambda kv: (kv[0][0] != "digits", -kv[0][1], kv[0][2])):
        cell = {k: f"{100 * v['mean']:.2f} ± {100 * v['std']:.2f}" for k, v in m.items()}
        gap = (f"{100 * (m['SR']['mean'] - m['RN']['mean']):+.2f}" if "SR" in m and "RN" in m else "—")
        rows.append([data, f"{w}-bit", lr, cell.get("SR", "—"), cell.get("RN", "—"), cell.get("wide", "—"), gap])
    return table(["data", "weights", "lr", "SR", "RN", "RN, 16-bit wider master", "SR − RN (pp)"], rows) + \
        f"\n\nFinal integer-executor test accuracy, mean ± sd over 3 seeds, in %; from {source('stochastic')}."


def _pm(ms) -> str:
    return f"{ms[0]:.2f} ± {ms[1]:.2f}"


def block_train_int() -> str:
    from ttforge.ir.train_memory import ratio_words

    d = load("train_int")
    if d is None:
        return "No `train_int.json` yet: run the commands above (**re-measure**)."
    parts = d.get("parts", {})
    fgt = {(r["data"], r["method"], r.get("master_extra_bits", 0)): r
           for r in d.get("float_gradient_trainer", [])}
    rows = []
    for name in ("digits", "mnist"):
        sm = d["summary"].get(name, {})
        sr = fgt.get((name, "SR", 0))
        by = sm.get("int_by_epochs", {})
        ints = "<br>".join(f"{_pm(v)} ({e} epochs)" for e, v in sorted(by.items(), key=lambda kv: int(kv[0])))
        gaps = "<br>".join(f"{v[0] - sm['float_tt'][0]:+.2f}" for e, v in sorted(by.items(), key=lambda kv: int(kv[0]))
                           ) if "float_tt" in sm else ""
        rows.append([name, _pm(sm["float_tt"]) if "float_tt" in sm else "—",
                     _pm(sm["ptq_4bit"]) if "ptq_4bit" in sm else "—",
                     _pm(sm["ptq_int_ft"]) if "ptq_int_ft" in sm else "—",
                     ints or "—", gaps if (by and "float_tt" in sm) else "—",
                     ("<br>".join(f"{_pm(sm[f'float_gradient_x{x}'])} ({'4' if x == 0 else '8'}-bit stored, "
                                  f"{sm['float_gradient_epochs']} epochs)" for x in (0, 4)
                                  if f"float_gradient_x{x}" in sm)
                      or (f"{100 * sr['mean_final_acc']:.2f} ({sr['epochs']} epochs, `stochastic.json`)" if sr
                          else "—"))])
        for v in sm.get("int_variants", {}).values():  # the same step at other widths / ranks / rates
            rows.append([f"{name}, rank {v['ranks']}, batch {v.get('batch', 32)}, {v['master_bits']}-bit masters, "
                         f"{v['inter_bits']}-bit intermediates, {v['grad_bits']}-bit gradients, "
                         f"lr 2^-{v['lr_shift']}", "—", "—", "—",
                         f"{_pm(v['int_from_random'])} ({v['epochs']} epochs)",
                         f"{v['int_minus_float_pp']:+.2f}" if "int_minus_float_pp" in v else "—", "—"])
    acc = table(["data", "float TT (Adam)", "PTQ, 4-bit cores", "PTQ + integer fine-tuning",
                 "integer step from random init", "integer − float (pp)",
                 "float-gradient trainer, 4-bit cores, SR"], rows)
    commits = sorted({(p["env"]["git"]["commit"] or "")[:7] + (" (dirty)" if p["env"]["git"]["dirty"] else "")
                      for p in parts.values() if "env" in p})
    mem_rows = []
    for r in d["memory"]["rows"]:
        # no "fits the ECP5-85F" here: this is the bit-packed count, not the memories of the
        # engine ttforge builds (bench_train_memory.py's table says which engines fit)
        mem_rows.append([r["ranks"], r["batch"], f"{r['master_bits']}/{r['inter_bits']}/{r['grad_bits']}",
                         f"{r['state_bytes']:,}", f"{r['state_ratio']:.0f}x", f"{r['items']['total']:,}",
                         ratio_words(r["ratio"])])
    mem = table(["rank", "batch", "master/inter/grad bits", "training state (bytes, bit-packed)",
                 "vs FP32 dense weights + gradients + Adam moments", "the step incl. activations (bytes, bit-packed)",
                 "vs FP32 dense + Adam training incl. activations"],
                mem_rows)
    # the seed network (rank 16) item by item, both width sets, batch 1 and 32
    seed = [r for r in d["memory"]["rows"] if r["ranks"] == 16 and r["batch"] in (1, 32)]
    names = {"master_weights": "master cores (the forward cores are their top bits)", "biases": "biases",
             "lane_accumulators": "gradient accumulators of the MAC lanes", "exp2_table": "exponent table",
             "rng_and_exponents": "xorshift32 state, exponents", "saved_activations": "saved activations (batch)",
             "gradient_buffers": "gradient ping-pong buffers (batch)", "logits_one_sample": "logits, one sample"}
    item_rows = [[what] + [f"{r['items'][k]:,}" for r in seed] for k, what in names.items()]
    item_rows.insert(5, ["*training state (the five above)*"] + [f"*{r['state_bytes']:,}*" for r in seed])
    item_rows += [["**total**"] + [f"**{r['items']['total']:,}**" for r in seed]]
    fp = {r["batch"]: r["fp32_dense_adam"] for r in seed}
    fp_names = {"weights": "weights + biases", "gradients": "their gradients", "adam_moments": "Adam's two moments",
                "saved_activations": "saved activations (batch)", "activation_gradients": "activation gradients (batch)"}
    fp_rows = [[what] + [f"{fp[b][k]:,}" for b in sorted(fp)] for k, what in fp_names.items()]
    fp_rows += [["**total**"] + [f"**{fp[b]['total']:,}**" for b in sorted(fp)]]
    items = (table(["integer step, rank 16 (bytes)"] + [f"{r['master_bits']}/{r['inter_bits']}/{r['grad_bits']} bits, "
                                                        f"batch {r['batch']}" for r in seed], item_rows)
             + "\n\n" + table(["FP32 dense 784-512-10, Adam (bytes)"] + [f"batch {b}" for b in sorted(fp)], fp_rows))
    sp = parts.get("speed", {}).get("speed", {})
    sp_rows = [[name, v["batch"]] + [f"{v[k]['samples_per_s']:,.1f}" if k in v else "—"
                                     for k in ("golden", "fast", "c_O2")] for name, v in sp.items()]
    speed = table(["network", "batch", "golden (int64 einsum)", "fast path (float64 BLAS)", "C, -O2"], sp_rows)
    ag = parts.get("agree")
    agree = "" if not ag else (
        f"\n\nAgreement: the golden, fast and C steps, run side by side for {ag['steps']:,} digits steps "
        f"(batch 32, {ag['words']:,} xorshift32 words), compared after every step: "
        + ("identical states after every step." if ag["first_divergence"] is None
           else f"FIRST DIVERGENCE: {ag['first_divergence']}.")
        + f" From `train_int.json` (part at `{(ag['env']['git']['commit'] or '')[:7]}`"
        + (", dirty" if ag["env"]["git"]["dirty"] else "") + ").")
    return (acc + f"\n\nTest accuracy of the integer executor, mean ± sd over seeds 0, 1, 2, in %; from "
            f"`train_int.json` (parts at {', '.join(f'`{c}`' for c in commits) or 'no commit'}). The float-gradient "
            f"trainer (`train_low_precision`: PyTorch gradients, integer weights) ran on the same network where "
            f"the row says so, else its figure is quoted from `stochastic.json`.\n\n" + mem +
            "\n\nMNIST 784-512-10, TT [7,4,7,4] -> [4,8,4,4], 4-bit forward cores, from `train_int.json` "
            "(`ttforge.ir.train_memory`: counted bit-packed, the way arXiv:2104.03420 counts; not the memories of "
            "the engine `ttforge build --train` makes, which rounds the batch and every depth up to powers of two: "
            "which of those fit the ECP5-85F is [below](#which-training-engines-fit-the-ecp5-85f)). The training state is what does not grow with the batch: master cores, "
            "biases, lane accumulators, exponent table, RNG and exponents. Item by item, the seed network "
            "(bit-packed bytes):\n\n" + items + "\n\n" + speed + "\n\nSamples per second of one training step on one "
            "thread, by the process's CPU time (the shared machine was loaded; wall-clock figures are in the "
            "JSON); from `train_int.json`." + agree)


def _speed_load(env: dict) -> str:
    """The machine's 1-minute load average around the speed run, as the JSON recorded it."""
    before, after = env.get("loadavg_before"), env.get("loadavg_after")
    if not before or not after:
        return ""
    return (f" Load average (1 min) {before[0]:.1f} before the run and {after[0]:.1f} after it on "
            f"{env.get('cpus_available', '?')} CPUs: not an idle machine (\"idle\" below means no "
            "load of the benchmark's own).")


def block_speed(result: str = "speed") -> str:
    d = load(result)
    rows = []
    for c in d["cases"]:
        t = c["timings_ms"]
        for mode, name in (("fwd", "forward"), ("fwd_bwd", "forward + backward")):
            me = t["ttforge"][mode]["median"]
            cpu = c.get("cpu_ms")
            rows.append([c["case"], c["title"], name, f"{me:.2f}"] +
                        [f"{t[k][mode]['median'] / me:.2f}x" if k in t else "—"
                         for k in ("ttforge_schedule", "tltorch", "tltorch_opt_einsum", "dense")] +
                        [" / ".join(f"{cpu[k][mode]['median'] / cpu['ttforge'][mode]['median']:.2f}x"
                                    for k in ("tltorch", "tltorch_opt_einsum", "dense")) if cpu else "—"])
    s = d["settings"]
    out = table(["case", "layer", "pass", "ttforge ms", "vs ttforge hardware order", "vs tensorly-torch",
                 "vs tensorly-torch + opt_einsum", "vs nn.Linear",
                 "CPU time: vs tensorly-torch / + opt_einsum / nn.Linear"], rows) + \
        f"\n\nMedian of {s['reps']} interleaved repetitions, batch {s['batch']}, " \
        f"{s.get('threads', 1)} thread{'s' * (s.get('threads', 1) != 1)}" \
        f"{', one core busy' if s.get('load') == 'busy' else ''}; *x* is how many times faster ttforge is " \
        f"(wall clock). From {source(result)}" + (f", {d['environment']['cpu']}" if result != "speed" else "") + \
        "." + _speed_load(d.get("environment") or {})
    if d.get("conditions"):
        crow = []

        def ratios(t, k):
            return " / ".join(f"{t[k][m]['median'] / t['ttforge'][m]['median']:.2f}x"
                              for m in ("fwd", "fwd_bwd")) if k in t else "—"
        for cond in d["conditions"]:
            for c in cond["cases"]:
                t, cpu = c["timings_ms"], c.get("cpu_ms")
                crow.append([cond["name"], c["case"]] + [
                    ratios(t, k) for k in ("tltorch", "tltorch_opt_einsum", "dense")] + [
                    " ; ".join(ratios(cpu, k) for k in ("tltorch", "tltorch_opt_einsum"))
                    if cpu and cond.get("threads") == 1 else "—"])
        out += "\n\n" + table(["condition", "case", "vs tensorly-torch (fwd / fwd+bwd)",
                               "vs tensorly-torch + opt_einsum", "vs nn.Linear",
                               "CPU time, 1 thread: vs tensorly-torch ; + opt_einsum"], crow) + \
            "\n\nThe same ratios at 1 and 2 threads, without and with a child process spinning on one " \
            "core; at one thread also by the process's CPU time (at two threads CPU time adds up both " \
            "threads, so it is left out)."
    if d.get("memory"):
        mrow = [[m["case"], m["batch"]] + [f"{m['contenders'][k]['peak_bytes'] / 2**20:.1f}"
                                           if k in m["contenders"] else "—"
                                           for k in ("ttforge", "ttforge_schedule", "tltorch_opt_einsum", "dense")]
                for m in d["memory"]]
        out += "\n\n" + table(["case", "batch", "ttforge MiB", "hardware order MiB",
                               "tensorly-torch + opt_einsum MiB", "nn.Linear MiB"], mrow) + \
            "\n\nPeak memory allocated during one forward+backward, above the parameters, input and " \
            "output gradient that exist before it (parameter gradients included)."
    if d.get("sweep"):
        out += "\n\n" + speed_sweep(d["sweep"])
    out += "\n\n" + speed_goals(d["summary"]["goals"])
    return out


def speed_sweep(sweep: list[dict]) -> str:
    """The batch sweep as one row per condition, case and pass: per batch, how many times
    faster ttforge is than tensorly-torch + opt_einsum and than nn.Linear (a cliff shows
    as a column where both drop)."""
    batches = sorted({p["batch"] for p in sweep})
    rows, reps = {}, set()
    warm = {p.get("warmup", 1) for p in sweep}
    for p in sweep:
        t = p["timings_ms"]
        reps.add(p["reps"])
        for mode, name in (("fwd", "forward"), ("fwd_bwd", "forward + backward")):
            me = t["ttforge"][mode]["median"]
            cell = " / ".join(f"{t[k][mode]['median'] / me:.2f}x" if k in t else "—"
                              for k in ("tltorch_opt_einsum", "dense"))
            rows.setdefault((p["condition"], p["case"], name), {})[p["batch"]] = cell
    body = [[c, case, name] + [cells.get(b, "—") for b in batches]
            for (c, case, name), cells in rows.items()]
    return table(["condition", "case", "pass"] + [f"batch {b}" for b in batches], body) + \
        "\n\nThe batch sweep: how many times faster ttforge is than tensorly-torch + opt_einsum / " \
        f"than nn.Linear (wall-clock medians of {min(reps)}-{max(reps)} interleaved repetitions a " \
        "point; the thread tuner starts afresh at each point, whose regions it keys by batch; " + (
            f"at two threads {max(warm)} untimed calls come first, one and the tuner's {max(warm) - 1} trials)."
            if warm and max(warm) > 1 else "with a core busy a median of so few can hold a trial of the "
            "other thread count).")


def speed_goals(goals: list[dict]) -> str:
    """The goal count and every missed goal, with its floor where the run recorded one
    (the ratio at nn.Linear's rate with ttforge's multiply-accumulates)."""
    missed = [g for g in goals if not g["met"]]

    def one(g):
        floor = g.get("floor")
        return (f"{g['condition']}, case {g['case']} {g['mode']}, {g['goal']} ({g['ratio']:.2f}x"
                + (f"; {floor:.2f}x at nn.Linear's rate" if floor is not None else "") + ")")

    out = f"Goals: {len(goals) - len(missed)} of {len(goals)} met" + (
        "." if not missed else "; not met: " + "; ".join(one(g) for g in missed) + ".")
    floors = [g for g in missed if g.get("floor") is not None]
    if floors:
        below = [g for g in floors if g["floor"] < g["need"]]
        out += (f" Of the {len(floors)} missed, {len(below)} are below their goal even at nn.Linear's "
                "rate (\"at nn.Linear's rate\": the ratio if ttforge's multiply-accumulates, merges, "
                "products and recomputation as `ttforge.model.fast.plan_macs` counts them, ran as fast "
                "as `nn.Linear`'s product did in the same table); those need less work, not faster "
                "products.")
    return out


def block_accelerator() -> str:
    d = load("hw")
    rows = [[r["layer"], r["lanes"], _num(r["macs"]), _num(r["sim"]["cycles"]), _num(r["model"]["cycles"]),
             pct(r["sim"]["utilization"], 1), "yes" if r["sim"]["bit_exact"] else "**no**",
             f"{r['tt_over_dense']:.2f}", f"`{r['git_commit'][:7]}`" + (" (dirty)" if r.get("git_dirty") else "")]
            for r in d["rows"]]
    return table(["layer", "L", "MACs", "cycles (simulated)", "cycles (model)", "utilization", "bit-exact",
                  "cycles TT / dense engine", "engine commit"], rows) + f"\n\nFrom {source('hw')}."


def block_fmax() -> str:
    d = load("hw_synth")
    rows = []
    for r in d["runs"]:
        res = r.get("result") or {}
        rs = res.get("resources") or {}

        def cell(*keys):
            k = next((k for k in keys if k in rs), None)
            return f"{rs[k]['used']:,}/{rs[k]['available']:,}" if k else ""
        fits = f"{res['fmax_mhz']:.2f}" if res.get("fmax_mhz") else \
            "does not fit" if "fit" in str(r.get("error") or res) else "—"
        rows.append([r["label"], f"`{r['git_commit'][:7]}`" + (" (dirty)" if r.get("git_dirty") else ""),
                     r["device"], r["lanes"], r.get("seed", 1), cell("lut", "lc"), cell("ff"), cell("dsp"),
                     cell("bram"), fits])
    groups = _fmax_groups(d, "ecp5-85f", 16)
    if not groups or len(groups[-1][3]) < 3:   # the headline needs the current engine over >= 3 seeds
        rows.append(["**placeholder**: the current engine (issue 12: engine as components), before/after, "
                     "re-measured over seeds 1, 2, 3", "—", "ecp5-85f", 16, "1, 2, 3", "", "", "", "",
                     "**not yet measured**"])
    return table(["run", "commit", "device", "L", "nextpnr seed", "LUT (LC)", "FF", "DSP", "BRAM", "Fmax MHz"],
                 rows) + "\n\nFrom `hw_synth.json` (yosys + nextpnr from pip, the core in its I/O harness)."


def block_train_hw() -> str:
    d = load("train_hw")
    if not d or "cycles" not in d:
        return "No `train_hw.json` yet: run the commands above (**re-measure**)."
    c = d["cycles"]
    env = c["env"]
    src = lambda e: f"`{(e.get('git_commit') or '')[:7]}`" + (" (dirty tree: **re-measure**)"  # noqa: E731
                                                               if e.get("git_dirty") else "")
    rows = [[r["batch"], r["slots"], _num(r["cycles"]), _num(r["input_cycles"]), _num(r["useful_macs"]),
             pct(r["utilization"], 2), _num(r["cycles_per_sample"]), _num(r["mac_bound_per_sample"]),
             f"{r['ratio_to_bound']:.3f}x"] for r in c["rows"]]
    out = table(["batch", "slots", "cycles / step", "of which input stream", "useful MACs", "utilization",
                 "cycles / sample", "MAC bound / sample", "cycles / bound"], rows)
    out += (f"\n\n{c['network']}, L = {c['lanes']}, {_num(c['macs_per_sample'])} MACs per sample "
            f"(forward {_num(c['forward_macs_per_sample'])}); from the exact cycle model `op_cycles`, "
            f"`train_hw.json` at {src(env)}.")
    e = c["ecp5_85f"]
    mrows = []
    names = {"act": "ACT (activations)", "grad": "GRAD (gradients)", "cmem": "CMEM (masters)",
             "bmem": "BMEM (biases)", "dmem": "DMEM (program)"}
    for key, name in names.items():
        cells = [name, f"{c['rows'][0]['memory'][key]['bits']}"]
        for r in c["rows"]:
            m = r["memory"][key]
            cells += [f"{_num(m['words'])} words, {_num(m['bytes'])} B", _num(m["dp16kd"])]
        mrows.append(cells)
    mrows.append(["**total**", ""] + [x for r in c["rows"] for x in
                                       (f"**{_num(r['memory_bytes'])} B**", f"**{_num(r['memory_dp16kd'])}**")])
    head = ["memory", "bits / word"] + [x for r in c["rows"] for x in (f"batch {r['batch']}", "DP16KD")]
    out += "\n\n" + table(head, mrows) + (
        f"\n\nThe ECP5-85F has {e['dp16kd']} DP16KD blocks ({_num(e['bytes'])} B with parity bits). A "
        f"batch of up to L samples takes as much ACT/GRAD as a batch of L: the batch lives in the lanes.")
    sy = d.get("synth")
    if not sy:
        return out + "\n\nNo synthesis yet (`--part synth`): **not yet measured**."
    dp = sy["depths"]
    cells = sy.get("synth_cells") or {}
    ff = sum(v for k, v in cells.items() if k.startswith("TRELLIS_FF"))
    out += (f"\n\n`TrainEngine`, L = {sy['lanes']}, ACT {_num(dp['act_depth'])} / GRAD {_num(dp['grad_depth'])} "
            f"words, CMEM {_num(dp['core_depth'])} / BMEM {_num(dp['bias_depth'])} elements, {dp['desc_depth']} "
            f"operations, {dp['acc_bits']}-bit accumulators, on the {sy['title']} (`synth_ecp5`, then "
            f"`nextpnr-ecp5`, {sy['target_mhz']:.0f} MHz target, the core in the I/O harness of "
            f"`ttforge.hw.synth`). After synthesis: {_num(cells.get('LUT4', 0))} LUT4, {_num(ff)} FF, "
            f"{cells.get('MULT18X18D', 0)} MULT18X18D, {cells.get('DP16KD', 0)} DP16KD"
            f" (synthesis {sy['synth_s']} s).")
    fold = sy.get("outreg_fold") or {}
    if fold:
        out += (f" Then {fold['flip_flops']} flip-flops became the output registers of {fold['brams']} "
                f"DP16KD (`--outreg-fold`, `hw/ecp5_bram.py`).")
    mem, b16 = sy.get("memories") or {}, next((r for r in c["rows"] if r["batch"] == 16), None)
    if mem and b16 and cells.get("DP16KD"):
        more = min(mem["act"]["dp16kd"], mem["grad"]["dp16kd"])
        out += (f" Doubling ACT or GRAD would take at least {more} more blocks, past "
                f"{e['dp16kd']} with the {cells['DP16KD']} used: these depths are the largest powers of two "
                f"that fit. The MNIST network needs ACT {_num(b16['memory']['act']['words'])} / GRAD "
                f"{_num(b16['memory']['grad']['words'])} words at any batch up to L, so it does not fit the "
                f"85F at L = {sy['lanes']}")
        holds = c.get("synth_engine_holds") or {}
        out += "".join(f"; this engine takes the {k} network up to batch {v}" for k, v in holds.items() if v) + "."
    srows = []
    for r in sy["runs"]:
        if r.get("fmax_mhz") is None:
            pl = (f"{r['placed_fmax_mhz']:.2f}, **placement estimate**; routing " if r.get("placed_fmax_mhz")
                  else "")
            why = r.get("error") or r.get("overflow") or "no Fmax"
            why = "stopped at the time limit" if why.startswith("TimeoutExpired") else why
            srows.append([r["seed"], "", "", "", "", f"{pl}no result ({why}, {r['pnr_s']:,} s)", ""])
            continue
        rs = r["resources"]
        cp = r["critical_path"]
        path = (f"{cp['delay_ns']:.2f} ns: {cp['logic_levels']} logic levels, logic {cp['logic_ns']:.2f} / routing "
                f"{cp['routing_ns']:.2f} ns, `{(cp.get('start') or {}).get('cell')}` -> "
                f"`{(cp.get('end') or {}).get('cell')}`") if cp else ""
        srows.append([r["seed"], *(f"{rs[k]['used']:,}/{rs[k]['available']:,}" if k in rs else ""
                                   for k in ("lut", "ff", "dsp", "bram")),
                      f"{r['fmax_mhz']:.2f} ({r['pnr_s']:,} s)" if r["routed"] else
                      f"{r['fmax_mhz']:.2f}, **placement estimate, not routed** ({r['pnr_s']:,} s)", path])
    out += "\n\n" + table(["nextpnr seed", "LUT", "FF", "DSP", "BRAM", "Fmax MHz (place and route)",
                            "critical path"], srows)
    fm = (sy.get("summary") or {}).get("fmax_mhz")
    out += "\n\n"
    if fm:
        n = len(fm["seeds"])
        out += (f"Fmax over seed{'s' if n > 1 else ''} {', '.join(map(str, fm['seeds']))}: min "
                f"{fm['min']:.2f}, median {fm['median']:.2f} MHz; the 100 MHz goal is "
                f"{'met' if fm['min'] >= 100 else '**not met**'}. ")
    else:
        est = [r["fmax_mhz"] for r in sy["runs"] if r.get("fmax_mhz")]
        out += ("No seed routed: the Fmax is nextpnr's estimate after placement"
                + ("; the 100 MHz goal is **not met**. " if est and max(est) < 100 else ". "))
    pf = (sy.get("summary") or {}).get("placed_fmax_mhz")
    if pf:
        out += (f"Post-placement estimate over seed{'s' if len(pf['seeds']) > 1 else ''} "
                f"{', '.join(map(str, pf['seeds']))}: min {pf['min']:.2f}, median {pf['median']:.2f} MHz"
                + ("; the 100 MHz goal is **not met**. " if not fm and pf["max"] < 100 else ". "))
    out += f"From `train_hw.json` at {src(sy['env'])}."
    steps = d.get("fmax_steps") or []
    if steps:     # the timing work, one nextpnr run a row (bench_train_hw.py --label)
        def cpath(cp):
            return (f"{cp['delay_ns']:.2f} ns, {cp['logic_levels']} levels, `{(cp.get('start') or {}).get('cell')}`"
                    f" -> `{(cp.get('end') or {}).get('cell')}`") if cp else ""
        srows = [[st["label"], st.get("depths", ""), f"`{(st.get('git_commit') or '')[:7]}`"
                  + (" (dirty)" if st.get("git_dirty") else ""), st["seed"],
                  "" if st.get("fmax_mhz") is None else
                  f"{st['fmax_mhz']:.2f}" + ("" if st["routed"] else " (placement estimate)"),
                  _num(st["lut4"]) if st.get("lut4") else "", _num(st["ff"]) if st.get("ff") else "",
                  cpath(st.get("critical_path") or {})] for st in steps]
        out += "\n\nThe timing work, one nextpnr run a row (`fmax_steps`):\n\n" + table(
            ["change", "engine", "commit", "seed", "Fmax MHz", "LUT4 (synthesis)", "FF (synthesis)",
             "critical path"], srows)
    # samples per second at the measured clock against the C integer step on one core
    ti = load("train_int") or {}
    speed = (((ti.get("parts") or {}).get("speed") or {}).get("speed") or {}).get("mnist") or {}
    ests = [r for r in sy["runs"] if r.get("fmax_mhz") or r.get("placed_fmax_mhz")]
    b32 = next((r for r in c["rows"] if r["batch"] == speed.get("batch")), None)
    if speed.get("c_O2") and ests and b32:
        f = min(r.get("fmax_mhz") or r["placed_fmax_mhz"] for r in (fm and done_runs(sy) or ests))
        kind = "routed Fmax" if fm else "post-placement estimate"
        sps = f * 1e6 / b32["cycles_per_sample"]
        cps = speed["c_O2"]["samples_per_s"]
        out += (f"\n\nTraining speed of the MNIST network at batch {b32['batch']}, had it fit: "
                f"{_num(sps, 1)} samples/s at {f:.2f} MHz ({kind}), {_num(100e6 / b32['cycles_per_sample'], 1)} "
                f"at 100 MHz, against {_num(cps, 1)} samples/s of the C integer step (-O2) on one core of this "
                f"machine (`train_int.json`): {sps / cps:.2f}x and {100e6 / b32['cycles_per_sample'] / cps:.2f}x.")
    return out


def done_runs(sy: dict) -> list[dict]:
    return [r for r in sy["runs"] if r.get("routed") and r.get("fmax_mhz")]


def block_boards() -> str:
    d = load("boards")
    rows = []
    for r in d["rows"]:
        b = r.get("build") or {}
        ok = b.get("ok")
        rows.append([r["model"], r["board"], "yes" if ok else "**no**",
                     f"{b['lut']:,}" if ok else "—", b.get("dsp", "—") if ok else "—",
                     b.get("bram", "—") if ok else "—", f"{b['fmax_mhz']:.1f} MHz" if ok else "—",
                     _num(r["cycles"]), f"{r['at_board_clock']['us']:,.1f} us at {r['at_board_clock']['mhz']:.0f} MHz"
                     if ok else "—", f"{r['uart_ms']:.1f} ms"])
    cpu = "; ".join(f"{m['key']}: {m['cpu']['latency_us']:,.0f} us"
                    + (f" (C executor, -O2: {m['cpu']['c_latency_us']:,.0f} us)" if "c_latency_us" in m["cpu"] else "")
                    for m in d["models"] if isinstance(m.get("cpu"), dict) and "latency_us" in m["cpu"])
    return table(["model", "board", "fits", "LUT (LC)", "DSP", "block RAM", "Fmax", "cycles / vector",
                  "latency", "UART per vector (115200 baud)"], rows) + \
        (f"\n\nThe same integer model on one CPU core (numpy), batch 1: {cpu}." if cpu else "") + \
        f"\n\nFrom {merged_source('boards')}."


def _or_dash(v) -> str:
    return "—" if v is None else str(v)


def block_train_boards() -> str:
    d = load("train_boards")
    if not d:
        return "No `bench/results/train_boards.json` yet: run the commands above."
    rows = []
    for part in ("ulx3s", "icebreaker"):
        sec = d.get(part)
        if not sec:
            continue
        b = sec["build"]
        util = b.get("nextpnr_utilisation") or {}
        cells = b.get("synth_cells") or {}
        res = b.get("resources") or {}

        def used(*keys):
            for k in keys:
                if k in res:          # a routed build's resources: {"lut": {"used": ..}, ..}
                    return res[k]["used"] if isinstance(res[k], dict) else res[k]
                if k in util:         # nextpnr's utilisation of a stopped or failed run
                    return util[k][0]
            return None

        if b.get("error"):
            fmax = f"does not fit: {b['error'].split(';')[0]}"
        elif b.get("routed"):
            fmax = f"{b['fmax_mhz']:.1f} MHz (routed{'' if b.get('timing_met') else ', below the board clock'})"
        elif b.get("placed_fmax_estimate_mhz"):
            fmax = f"{b['placed_fmax_estimate_mhz']:.1f} MHz, **placement estimate** (not routed)"
        else:
            fmax = "—"
        logic = used("lut", "TRELLIS_COMB", "ICESTORM_LC")
        rows.append([part, sec.get("network", ""), f"{sec.get('lanes', b.get('lanes', ''))} / {sec.get('batch', b.get('batch', ''))}",
                     f"{(sec.get('clk_hz') or b.get('clock_hz', 0)) / 1e6:g} MHz",
                     _num(cells["LUT4"]) if "LUT4" in cells else "—",
                     _num(logic) if logic is not None else "—",
                     _num(cells["TRELLIS_FF"]) if "TRELLIS_FF" in cells else "—",
                     _or_dash(used("dsp", "MULT18X18D", "ICESTORM_DSP")),
                     _or_dash(used("bram", "DP16KD", "ICESTORM_RAM")),
                     fmax, source("train_boards", sec["env"]["git_commit"], sec["env"]["git_dirty"])])
    return table(["board", "network", "lanes / batch", "clock", "LUT4 (synthesis)", "logic cells (placed)",
                  "FF (synthesis)", "DSP", "block RAM", "Fmax", "from"], rows)


def block_sim() -> str:
    d = load("sim")
    rows = []
    for name, s in d["simulators"].items():
        t, g = s["throughput"], s["regression"]
        rows.append([name, _num(t["stream_cycles_per_s"]), _num(t["process_cycles_per_s"]),
                     f"{g['passed']}/{g['cases']}", _num(g["vectors"]), f"{g['seconds']:.0f} s"])
    return table(["simulator (cocotb)", "stream cycles/s", "cycles/s with start-up", "regression cases",
                  "vectors", "wall"], rows) + f"\n\nFrom {source('sim')} (`{d['command']}`)."


def block_native() -> str:
    d = load("native")
    rows = []
    for r in d["rows"]:
        s = r["simulators"]
        rows.append([r["label"], _num(s["native"]["stream_cycles_per_s"]["median"]),
                     _num(s["cocotb-verilator"]["stream_cycles_per_s"]["median"]),
                     _num(s["cocotb-icarus"]["stream_cycles_per_s"]["median"]),
                     f"{r['speedup_stream']['cocotb-verilator']:.0f}x / {r['speedup_stream']['cocotb-icarus']:,.0f}x"])
    return table(["layer", "native harness", "cocotb + Verilator", "cocotb + Icarus",
                  "native speed-up vs Verilator / Icarus"], rows) + \
        f"\n\nSimulated cycles per second while streaming, median; from {source('native')}."


def block_flow() -> str:
    d = load("flow")
    m = d["measurement"]
    # a stage the config does not run (device-train without [device_train]) has no time
    rows = [[k, f"{v['seconds']:.1f} s ({v['status']})", v.get("figure", ""),
             f"{m['again']['stages'][k]['status']}, {1000 * m['again']['stages'][k]['seconds']:.0f} ms"]
            if v["seconds"] is not None else [k, v["status"], v.get("figure", ""), m["again"]["stages"][k]["status"]]
            for k, v in m["cold"]["stages"].items()]
    rows.append(["**whole command**", f"**{m['cold']['wall_s']:.1f} s**", "", f"**{m['again']['wall_s']:.1f} s**"])
    return table(["stage", "cold run", "key figure", "second run"], rows) + f"\n\nFrom {source('flow')}."


def block_cli() -> str:
    d = load("cli_import")
    rows = [[f"`ttforge {k}`", f"{d['before'][k]['median_s']:.2f} s, {d['before'][k]['modules']:,}",
             f"{v['median_s']:.2f} s, {v['modules']:,}", "no" if not v["torch_imported"] else "yes"]
            for k, v in d["after"].items()]
    return table(["command", f"before (`{d['before_commit'][:7]}`): time, modules",
                  f"after (`{d['after_commit'][:7]}`): time, modules", "torch imported after"], rows) + \
        f"\n\nMedian of 5 runs, each in a fresh interpreter; from {source('cli_import', d['after_commit'], False)}."


def block_regress() -> str:
    d = load("regress")
    if not d:
        return ("No `bench/results/regress.json` yet: the long regressions and kill rates quoted in "
                "[verification.md](verification.md#speed-and-long-runs) were measured from working trees "
                "and are to be re-run with the commands above.")
    rows = [[SIM_NAMES.get(r["sim"], r["sim"]), f"`{r['fault']}`" if r["fault"] else "—",
             f"{r['passed']}/{r['cases']}" + (" (killed)" if r["fault"] and r["passed"] == 0 else ""),
             _num(r["vectors"]), r["distinct_configs"], f"{r['seconds']:,.0f} s",
             f"`{r['environment']['git_commit'][:7]}`" + (" (dirty)" if r["environment"]["git_dirty"] else "")]
            for r in d["runs"]]
    return table(["simulator", "fault", "cases passed", "vectors", "distinct configs", "wall", "commit"], rows) + \
        "\n\nFrom `regress.json`; a faulted run must pass no case."


def block_vs_cpu() -> str:
    d = load("vs_cpu")
    cpu = d["cpu"]
    rows = []
    for r in d["engine"]:
        at = {round(c["mhz"], 3): c for c in r["at"]}
        best = max((c for c in r["at"] if c["reached"]), key=lambda c: c["mhz"], default=None)
        f = r.get("routed")
        lanes = f"{r['lanes']} (U = {r['requant_units']})" if r.get("requant_units") else str(r["lanes"])
        if r.get("copies", 1) > 1:
            lanes += f", {r['copies']} engines side by side (harness; throughput)"
        if r.get("engines", 1) > 1:
            lanes += f", `engines = {r['engines']}` (one top; throughput)"
        if r.get("read_registers"):
            lanes += f", `read_registers = {r['read_registers']}`"
        if f and f.get("floorplan"):
            lanes += ", floorplanned"
        fx = r.get("at_fmax")
        bd, ab = r.get("board"), r.get("at_board")
        rows.append([lanes, _num(r["cycles"]) + (f" ({_num(round(r['vector_cycles']))} with "
                                                  f"{r['in_flight']} in flight)"
                                                  if r.get("in_flight", 1) > 1 else ""),
                     pct(r["utilization"], 1),
                     f"{at[50.0]['latency_us']:,.0f} us ({at[50.0]['vs_golden']:.2f}x / {at[50.0]['vs_c']:.2f}x)",
                     f"{r['mhz_for_goal']:.1f} MHz",
                     (f"{f['fmax_mhz_min']:.1f} MHz (`{f['label']}`, seeds {', '.join(map(str, f['seeds']))}"
                      + (f"; at it {fx['vs_golden']:.2f}x / {fx['vs_c']:.2f}x" if fx else "") + ")"
                      if f else "not routed"),
                     (f"{best['mhz']:g} MHz: {best['latency_us']:,.0f} us, {best['vectors_per_s']:,.0f} vectors/s, "
                      f"**{best['vs_golden']:.2f}x** / {best['vs_c']:.2f}x" if best else "—"),
                     (f"{ab['mhz']:g} MHz (`{bd['label']}`, seeds {', '.join(map(str, bd['met_seeds']))}): "
                      f"**{ab['vs_golden']:.2f}x** / {ab['vs_c']:.2f}x" if ab else "—")])
    return table(["L (shared requantization units U)", "cycles / vector", "utilization", "at 50 MHz (x golden / x C)",
                  f"clock for {d['goal_x']:g}x golden", "routed Fmax (lowest seed)",
                  "fastest PLL clock reached (x golden / x C)",
                  "board top met timing (`ttforge build`; x golden / x C)"], rows) + \
        (f"\n\nOne core of this machine, batch 1, the median of {cpu['repeats']} interleaved repeats "
         f"of {cpu['inner']} vectors: golden executor (numpy) **{cpu['golden_us']:,.0f} us**, "
         f"C executor (-O2) **{cpu['c_us']:,.0f} us** per vector. From {source('vs_cpu')}.")


def block_schedule() -> str:
    d = load("schedule")
    rows = [[s["lanes"], f"{s['differ']} / {s['shapes']}", f"{s['gain_median']:.2f}x", f"{s['gain_p90']:.2f}x",
             f"{s['gain_max']:.2f}x", f"{s['mac_ratio_median']:.3f}x", "yes" if s["never_slower"] else "**no**"]
            for s in d["study"]]
    out = table(["L", "shapes where the orders differ", "fewer cycles there (median)", "p90", "max",
                 "MACs there (median)", "never slower"], rows)
    eng = []
    for e in d["engine"]:
        a, b = e["runs"]
        ok = all(r["equal_golden"] and r["model_exact"] for r in e["runs"])
        eng.append([e["layer"], f"`{a['order']}` {_num(a['macs'])} MACs: {_num(a['cycles'])} ({pct(a['utilization'], 1)})",
                    f"`{b['order']}` {_num(b['macs'])} MACs: {_num(b['cycles'])} ({pct(b['utilization'], 1)})",
                    f"**{e['speedup']:.2f}x**", "yes" if ok else "**no**"])
    lanes = d["engine"][0]["lanes"] if d["engine"] else "-"
    return out + "\n\n" + table(
        ["layer", "fewest MACs: CYCLES (utilization)", "fewest cycles: CYCLES (utilization)",
         "speed-up", "equal to golden, cycle model exact"], eng) + \
        (f"\n\nCYCLES and utilization are the engine's own counters for one vector at L = {lanes} in "
         f"Amaranth's simulator. From {source('schedule')}.")


BLOCKS: dict[str, Callable[[], str]] = {
    "readme": block_readme, "summary": block_summary, "accuracy": block_accuracy,
    "epoch_time": block_epoch_time, "compile": block_compile, "quant": block_quant,
    "stochastic": block_stochastic, "train_int": block_train_int, "speed": block_speed,
    "speed_epyc": lambda: block_speed("speed_epyc"), "accelerator": block_accelerator,
    "fmax": block_fmax, "fmax_seeds": block_fmax_seeds, "train_hw": block_train_hw, "boards": block_boards, "train_boards": block_train_boards, "sim": block_sim, "native": block_native,
    "flow": block_flow, "cli": block_cli, "regress": block_regress, "vs_cpu": block_vs_cpu,
    "schedule": block_schedule,
}


# -- rewriting the files ----------------------------------------------------------------------
def render(text: str) -> str:
    """``text`` with every generated block rendered from the JSON of today."""
    def sub(m: re.Match) -> str:
        if m.group(2) not in BLOCKS:
            raise KeyError(f"unknown generated block {m.group(2)!r}")
        return m.group(1) + BLOCKS[m.group(2)]().rstrip("\n") + "\n" + m.group(4)
    return _BLOCK.sub(sub, text)


def stale(paths=(DOC, README)) -> list[str]:
    """The generated blocks of ``paths`` that differ from what the JSON gives today."""
    out = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        fresh = dict((m.group(2), m.group(3)) for m in _BLOCK.finditer(render(text)))
        name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        out += [f"{name}: block '{m.group(2)}'" for m in _BLOCK.finditer(text)
                if fresh[m.group(2)] != m.group(3)]
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--check" in argv:
        bad = stale()
        for b in bad:
            print(f"stale: {b} (run: python bench/_docgen.py)", file=sys.stderr)
        return 1 if bad else 0
    for path in (DOC, README):
        text = path.read_text(encoding="utf-8")
        new = render(text)
        if new != text:
            from ttforge.atomic import atomic_write_text

            atomic_write_text(path, new)
            print(f"updated {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
