"""The flow report: one self-contained HTML page and a Markdown twin.

``report.html`` embeds its plots as base64 PNGs and its style inline (no external
asset, so the file can be mailed or attached to a CI run as it is); ``report.md`` links
the same PNGs, written beside it. Both are built only from the stage records
(``<stage>/stage.json``) and the files the stages wrote, so a report can be rebuilt
from a build directory alone.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from pathlib import Path
from typing import Any

from ttforge.atomic import names_file

__all__ = ["write_report", "PLOTS", "file_text", "json_safe"]

#: The plots of a report (file names in the report stage's directory).
PLOTS = ("training.png", "ranks.png", "memory.png", "stages.png")
_STAGE_ORDER = ("train", "quantize", "compile", "rtl", "sim", "device-train", "bitstream", "report")


def file_text(value: object) -> str:
    """Untrusted text (a path, a config value) for a UTF-8 text file (report, TOML
    comment, CSV): a non-UTF-8 byte of a file name as ``\\xff`` (it ended the flow in
    ``UnicodeEncodeError``), control and invisible format characters escaped as
    :func:`ttforge.errors.shown` escapes them (a right-to-left override made the page
    read backwards; a control character made a TOML comment invalid). Markup is left
    to the format's own escaping (``html.escape``)."""
    from ttforge.errors import bytes_escaped, printable

    text = os.fsdecode(value) if isinstance(value, (bytes, os.PathLike)) else str(value)
    return printable(bytes_escaped(text))


def json_safe(obj: Any) -> Any:
    """``obj`` (plain data) with every string that holds a lone surrogate (a non-UTF-8
    file name's byte) written as :func:`file_text` writes it: JSON's ``"\\udcff"``, which
    json.dumps writes for it, is refused by strict parsers."""
    if isinstance(obj, str):
        from ttforge.errors import bytes_escaped

        return bytes_escaped(obj)
    if isinstance(obj, dict):
        return {json_safe(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _n(v: Any) -> str:
    return "-" if v is None else f"{v:,}" if isinstance(v, int) else f"{v:,.1f}"


def _summary(records: dict[str, dict], name: str) -> dict[str, Any] | None:
    rec = records.get(name)
    return rec.get("summary") if rec else None


# ----------------------------------------------------------------------------- plots
def _plots(root: Path, records: dict[str, dict], out: Path) -> dict[str, Path]:
    # figures of matplotlib's object interface, no pyplot: matplotlib.use("Agg") switched
    # the backend of a notebook calling run_flow (its inline plots stopped showing);
    # imported without its lines about a $HOME it cannot write (a flow whose train
    # stage was skipped imported it here first)
    from ttforge.model.plots import figure_class

    Figure = figure_class()

    made: dict[str, Path] = {}

    def save(fig, name: str) -> None:
        fig.tight_layout()
        buf = io.BytesIO()
        # no timestamps or software tags: the same figures give the same bytes
        fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
        with names_file(out / name):   # a full disk's write names no file
            (out / name).write_bytes(buf.getvalue())
        made[name] = out / name

    tr = _summary(records, "train")
    try:
        history = json.loads((root / "train" / "metrics.json").read_text())["history"]
    except (OSError, ValueError, KeyError):
        history = []
    if history:
        fig = Figure(figsize=(9, 3.2))
        a1, a2 = fig.subplots(1, 2)
        ep = [h["epoch"] for h in history]
        mark = "o" if len(ep) == 1 else None   # one epoch: a point, not a line of no length
        a1.plot(ep, [h["train_loss"] for h in history], label="train", marker=mark)
        a1.plot(ep, [h["test_loss"] for h in history], label="test", marker=mark)
        a1.set_xlabel("epoch"), a1.set_ylabel("cross-entropy"), a1.legend(), a1.set_title("loss")
        a2.plot(ep, [100 * h["train_acc"] for h in history], label="train", marker=mark)
        a2.plot(ep, [100 * h["test_acc"] for h in history], label="test", marker=mark)
        trunc = (tr or {}).get("truncation")
        if trunc:
            cut = max((h["epoch"] for h in history if h.get("phase") == "train"), default=None)
            if cut is not None:
                for a in (a1, a2):
                    a.axvline(cut + 0.5, color="grey", ls="--", lw=1)
                # y in the axes' own units (near its bottom): 2 points above the lower
                # limit lay far above a flat curve (one epoch), and tight_layout gave up
                # left of the line, inside the axes also when the cut ends the history
                a2.text(cut + 0.4, 0.03, "ranks truncated", fontsize=8, color="grey", ha="right",
                        transform=a2.get_xaxis_transform())
        a2.set_xlabel("epoch"), a2.set_ylabel("accuracy (%)"), a2.legend(), a2.set_title("accuracy")
        save(fig, "training.png")
    if tr and tr.get("ranks"):
        trunc = tr.get("truncation") or {}
        layers = list(tr["ranks"])
        fig = Figure(figsize=(9, 3.2))
        ax = fig.subplots()
        x, labels, before, after = 0, [], [], []
        for name in layers:
            aft = tr["ranks"][name]
            bef = (trunc.get("layers") or {}).get(name, {}).get("before", aft)
            for k in range(1, len(aft) - 1):
                labels.append(f"module {name}, bond {k}")
                before.append(bef[k])
                after.append(aft[k])
                x += 1
        idx = list(range(len(labels)))
        if trunc:
            ax.bar([i - 0.2 for i in idx], before, width=0.4, label="before truncation", color="#9ecae1")
            ax.bar([i + 0.2 for i in idx], after, width=0.4, label="after (deployed)", color="#3182bd")
            ax.legend()
        else:
            ax.bar(idx, after, color="#3182bd", label="ranks")
        ax.set_xticks(idx, labels, rotation=0 if len(idx) < 10 else 60, fontsize=8)
        ax.set_ylabel("TT rank"), ax.set_title("TT ranks per layer and bond")
        save(fig, "ranks.png")
    q = _summary(records, "quantize")
    if q:
        rows = q["on_chip_layers"]
        fig = Figure(figsize=(9, 3.2))
        ax = fig.subplots()
        idx = list(range(len(rows)))
        ax.bar([i - 0.2 for i in idx], [r["dense_int8_bytes"] for r in rows], width=0.4,
               label="dense INT8 weights", color="#fdae6b")
        ax.bar([i + 0.2 for i in idx], [r["on_chip_bytes"] for r in rows], width=0.4,
               label=f"TT network ({q['w_bits']}-bit cores + bias + peak intermediate)", color="#e6550d")
        ax.set_yscale("log")
        # bars on a log axis start at its bottom: put it a decade below the smallest so
        # that the shortest bar still shows its size
        smallest = min(min(r["on_chip_bytes"], r["dense_int8_bytes"]) for r in rows)
        ax.set_ylim(bottom=10 ** math.floor(math.log10(max(smallest, 1))) / 10 if smallest >= 10 else 0.5)
        ax.set_xticks(idx, [f"layer {L['index']} ({L['kind']} {L['in_features']}->{L['out_features']})"
                            for L in q["layers"]], fontsize=8)
        ax.set_ylabel("bytes (log)"), ax.legend(fontsize=8)
        ax.set_title("memory per layer: the network's need (docs/artifact.md), not the accelerator's")
        save(fig, "memory.png")
    timed = [(s, records[s]["seconds"]) for s in _STAGE_ORDER if s in records and s != "report"]
    if timed:
        fig = Figure(figsize=(9, 2.8))
        ax = fig.subplots()
        ax.barh([s for s, _ in timed][::-1], [t for _, t in timed][::-1], color="#31a354")
        for i, (s, t) in enumerate(timed[::-1]):
            ax.text(t, i, f" {t:.1f} s", va="center", fontsize=8)
        ax.set_xlabel("seconds (when the stage last ran)"), ax.set_title("time per stage")
        save(fig, "stages.png")
    return made


# ----------------------------------------------------------------------------- tables
def _sections(cfg, records: dict[str, dict], statuses: dict[str, str], short: bool) -> list[tuple[str, list[str], list[list[str]], str]]:
    """``(title, header, rows, note)`` of every table of the report."""
    tr, q, comp, rtl, sim, bit = (_summary(records, s) for s in
                                   ("train", "quantize", "compile", "rtl", "sim", "bitstream"))
    out = []
    # accuracy at each stage
    acc = []
    if tr:
        acc.append(["float (PyTorch, eval)", _pct(tr["test_acc"]), f"{tr['n_test']:,} test samples", "-"])
    if q:
        # bit_exact compares the integer executor with fake-quant, not fake-quant with
        # float (the row said "yes" at 97.50% against the float's 96.94%)
        acc.append([f"fake-quant ({q['w_bits']}-bit {q['method'].upper()})", _pct(q["fake_quant_acc"]),
                    f"{q['n_test']:,} test samples", "-"])
        acc.append(["integer golden executor", _pct(q["int_acc"]), f"{q['n_test']:,} test samples",
                    "yes" if q["bit_exact"] else "NO"])
    if sim:
        acc.append([f"RTL ({sim['simulator']})", _pct(sim["rtl_acc"]),
                    f"first {sim['vectors']:,} test samples (executor on them: {_pct(sim['golden_acc'])})",
                    f"{sim['agree']}/{sim['vectors']} vectors equal"])
    out.append(("Accuracy at each stage", ["stage", "test accuracy", "on", "equal to the stage before"],
                acc or [["-", "not run", "", ""]], ""))
    # ranks
    if tr:
        rows = []
        trunc = tr.get("truncation") or {}
        for name, r in tr["ranks"].items():
            before = (trunc.get("layers") or {}).get(name, {}).get("before")
            rows.append([f"module {name}", ",".join(map(str, r)),
                         ",".join(map(str, before)) if before else "-"])
        note = (f"TT weights: {tr['tt_params']:,} core entries for {tr['tt_dense_params']:,} dense "
                f"weights ({tr['tt_compression']:.1f}x fewer)" if tr.get("tt_compression") else "")
        out.append(("TT ranks", ["TT layer", "ranks (deployed)", "before truncation"], rows, note))
    # memory
    if q:
        rows = []
        for L, m in zip(q["layers"], q["on_chip_layers"]):
            rows.append([f"{L['index']}: {L['kind']} {L['in_features']}->{L['out_features']}",
                         _n(m["core_bytes"]), _n(m["bias_bytes"]), _n(m["peak_intermediate_bytes"]),
                         _n(m["on_chip_bytes"]), _n(m["dense_int8_bytes"]),
                         f"{m['on_chip_bytes'] / m['dense_int8_bytes']:.3f}"])
        t = q["on_chip"]
        rows.append(["network", _n(t["core_bytes"]), _n(t["bias_bytes"]), _n(t["peak_intermediate_bytes"]),
                     _n(t["on_chip_bytes"]), _n(t["dense_int8_bytes"]), f"{t['ratio']:.3f}"])
        # the IR's count (docs/artifact.md "On-chip bytes"), which is not the memory of the
        # accelerator generated (bias at bias_bits, two buffers, descriptors): that
        # one is the next table; this one was titled "bytes on chip" as if it were
        out.append(("Network memory (TT, bytes) vs dense INT8",
                    ["layer", "cores", "bias", "peak intermediate", "TT total", "dense INT8", "ratio"], rows,
                    "the network's need by docs/artifact.md \"On-chip bytes\" (ttforge inspect): bit-packed "
                    "cores + bias at acc_bits + the largest intermediate; the accelerator's own memories "
                    "are the next table"))
    if comp:
        out.append(_accelerator_memory(comp["config"]))
    # cycles and utilization
    if comp:
        rows = [[f"{x['layer']}: {x['in_features']}->{x['out_features']}", _n(x["cycles"]), _n(x["macs"]),
                 _pct(x["utilization"])] for x in comp["layers"]]
        rows.append(["whole inference (with I/O)", _n(comp["cycles"]), _n(comp["macs"]),
                     _pct(comp["utilization"])])
        if sim:
            rows.append([f"measured in simulation ({sim['simulator']}, {sim['vectors']} vectors)",
                         _n(sim["cycles_per_vector"]), "-", _pct(sim["utilization"])])
        c = comp["config"]
        note = (f"accelerator: {c['lanes']} MAC lane(s), {c['core_bits']}-bit cores, {c['act_bits']}-bit "
                f"activations, {c['acc_bits']}-bit accumulators, {c.get('stream_elems', 1)} element(s) per "
                f"AXI4-Stream beat; dense engine with the same lanes: "
                f"{comp['dense_cycles']:,} cycles")
        out.append(("Cycles per inference and MAC-lane utilization",
                    ["layer", "cycles (model)", "MACs", "utilization"], rows, note))
    # resources
    if bit:
        rows = [[k.upper(), f"{v['used']:,}", f"{v['available']:,}", _pct(v["used"] / max(v["available"], 1))]
                for k, v in bit["resources"].items()]
        note = (f"{bit['title']}: Fmax {bit['fmax_mhz']} MHz, board clock {bit['clock_hz'] / 1e6:g} MHz "
                f"(timing met); bitstream {bit['bitstream']['file']}, {bit['bitstream']['bytes']:,} bytes, "
                f"sha256 {bit['bitstream']['sha256'][:16]}...")
        out.append(("Resources and Fmax", ["resource", "used", "available", "share"], rows, note))
    else:
        why = statuses.get("bitstream", "not run")
        out.append(("Resources and Fmax", ["resource", "used", "available", "share"],
                    [["not built", "-", "-", "-"]], f"bitstream {why}"))
    # verification
    if sim:
        first = sim.get("first_mismatch")
        rows = [["simulator", sim["simulator"]], ["vectors", f"{sim['vectors']:,} (test set)"],
                ["exact match", "yes" if sim["exact"] else "NO"],
                ["vectors equal", f"{sim['agree']}/{sim['vectors']}"]]
        if first:
            rows.append(["first mismatch", json.dumps(first)])
        out.append(("Verification (RTL vs integer golden executor, np.array_equal)", ["", ""], rows, ""))
    else:
        out.append(("Verification (RTL vs integer golden executor, np.array_equal)", ["", ""],
                    [["simulation", statuses.get("sim", "not run")]], ""))
    out += _device_train_sections(_summary(records, "device-train"), statuses)
    # stages
    rows = []
    for s in _STAGE_ORDER:
        if s == "report":
            continue
        rec = records.get(s)
        rows.append([s, statuses.get(s, "not run"), f"{rec['seconds']:.1f} s" if rec else "-",
                     rec.get("figure", "") if rec else ""])
    out.append(("Stages", ["stage", "status", "time (last run)", "key figure"], rows,
                "short run (--short): fewer epochs and vectors, no bitstream" if short else ""))
    return out


def _accelerator_memory(config: dict[str, Any]) -> tuple[str, list[str], list[list[str]], str]:
    """The memories of the generated inference accelerator (the compile stage's config,
    :meth:`ttforge.hw.config.AccelConfig.memory_parts`) as a table."""
    from ttforge.hw.config import DESC_WORDS, AccelConfig

    c = AccelConfig.from_dict(config, "compile/config.json")
    shape = {"cores": f"{c.core_depth:,} x {c.core_bits} bits", "biases": f"{c.bias_depth:,} x {c.bias_bits} bits",
             "buffers": f"2 x {c.buf_depth:,} x {c.inter_bits} bits (ping-pong)",
             "descriptors": f"{c.desc_depth:,} x {DESC_WORDS} x 32 bits", "staging": f"{c.buf_depth:,} x {c.act_bits} bits"}
    parts = c.memory_parts()
    rows = [[k, shape.get(k, ""), _n(-(-bits // 8))] for k, bits in parts.items()]
    rows.append(["total", "", _n(-(-sum(parts.values()) // 8))])
    return ("Accelerator memories (bytes)", ["memory", "depth x width", "bytes"], rows,
            "the memories the generated accelerator declares (compile/config.json), sized to the "
            "compiled program or the board; ttforge build checks them against the board's RAM")


def _device_train_memory(title: str, m: dict[str, Any]) -> tuple:
    """The on-device training memory table: the bit-packed count the step needs (how
    arXiv:2104.03420 counts) and the memories of the engine the stage built (what a board
    holds, checked as ``ttforge build`` checks), each against FP32 dense training with Adam."""
    from ttforge.ir.train_memory import engine_text, ratio_words

    rows = [[f"{k.replace('_', ' ')} (bit-packed)", _n(v)] for k, v in m.get("items", {}).items() if k != "total"]
    rows.append(["total the step needs, counted bit-packed", _n(m["total"])])
    eng = m.get("engine")   # absent from a stage recorded before it was stated
    if eng and "why" not in eng:
        rows += [[f"engine {k} ({v:,} bits)", _n(-(-v // 8))] for k, v in eng["parts"].items()]
        rows.append([f"total of the training engine's memories ({eng['lanes']} lanes, {eng['slots']} slots)",
                     _n(eng["bytes"])])
    rows.append(["FP32 dense training with Adam (same layers, batch)", _n(m["fp32_dense_adam"])])
    note = f"counted bit-packed: {ratio_words(m['ratio'])} memory than FP32 dense training with Adam" \
        if m.get("ratio") else ""
    if eng:
        note += f"; {engine_text(eng, m['fp32_dense_adam'])}"
    return (f"{title}: memory (bytes)", ["item", "bytes"], rows, note)


def _device_train_sections(dev: dict[str, Any] | None, statuses: dict[str, str]) -> list:
    """The on-device training tables: per epoch from the device, the equality verdict with
    the state hashes, the memory against FP32 dense training, the speed at the board clock."""
    title = "On-device training"
    if not dev:
        why = statuses.get("device-train", "not run")
        return [(title, ["", ""], [["on-device training", why]], "")]
    where = "simulated board (Icarus, UART bridge)" if dev["transport"] == "sim" else "board (serial)"
    rows = [["start (quantized network)", "-", "-", "-", _pct(dev["start_test_acc"])]]
    rows += [[f"epoch {h['epoch']}", f"{h['steps']:,}",
              "-" if h["loss_bits"] is None else f"{h['loss_bits']:.3f}", _pct(h.get("train_acc")),
              _pct(h["test_acc"])] for h in dev["history"]]
    out = [(f"{title}: loss and accuracy per epoch", ["", "steps", "loss (bits, device)",
                                                      "train acc (device)", "test acc (state read back)"],
            rows, f"{where}; {dev['lanes']} lanes, batch {dev['batch']}; test accuracy on "
                  f"{dev['eval_samples']:,} test samples")]
    eq = dev["equal_to_golden"]
    verdict = "not checked" if eq is None else ("yes" if eq else "NO")
    rows = [["state equal to the golden trainer (byte for byte)", verdict],
            ["state sha256 (device)", dev["state_sha256"]], ["start state sha256", dev["start_sha256"]],
            ["steps / samples", f"{dev['steps']:,} / {dev['samples']:,}"]]
    if dev.get("mismatch"):
        rows.append(["first difference", dev["mismatch"]])
    out.append((f"{title}: verification (golden trainer alongside, every step)", ["", ""], rows, ""))
    out.append(_device_train_memory(title, dev["memory"]))
    meas = dev.get("cycles_per_step_measured")
    mac = dev.get("mac_cycles_per_step_measured")
    rows = [["cycles per step (cycle model: samples there when taken)", _n(dev["cycles_per_step_model"])],
            ["cycles per step (engine counter, with the waits for samples on the link)",
             "-" if meas is None else _n(round(meas))],
            ["MAC-lane cycles per step (program)", _n(dev["mac_cycles_per_step_model"])],
            ["MAC-lane cycles per step (engine counter)", "-" if mac is None else _n(round(mac))],
            [f"samples/s at {dev['clock_hz'] / 1e6:g} MHz", f"{dev['samples_per_s']:,.1f}"],
            ["link bytes per sample", "-" if dev["link_bytes_per_sample"] is None
             else f"{dev['link_bytes_per_sample']:,.1f}"]]
    out.append((f"{title}: speed", ["", ""], rows, ""))
    return out


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1100px;color:#1a1a1a;background:#fff;padding:0 1em}
h1{border-bottom:3px solid #3182bd;padding-bottom:.3em}
h2{margin-top:1.6em;color:#08519c}
table{border-collapse:collapse;margin:.5em 0;font-size:14px}
th,td{border:1px solid #c6dbef;padding:4px 10px;text-align:right}
th{background:#deebf7}td:first-child,th:first-child{text-align:left}
tr:nth-child(even) td{background:#f7fbff}
.ok{color:#006d2c;font-weight:bold}.bad{color:#a50f15;font-weight:bold}
.note{color:#555;font-size:13px}.banner{padding:.7em 1em;border-radius:6px;font-size:18px}
.banner.ok{background:#e5f5e0}.banner.bad{background:#fee0d2}
img{max-width:100%;border:1px solid #ddd;margin:.4em 0}
"""


def _verdict(records: dict[str, dict]) -> tuple[bool | None, str]:
    sim = _summary(records, "sim")
    if not sim:
        return None, "not verified: the simulation did not run"
    if sim["exact"]:
        return True, (f"bit-exact: {sim['vectors']}/{sim['vectors']} test vectors through the RTL "
                      f"({sim['simulator']}) equal the integer golden executor")
    return False, f"MISMATCH: {sim['agree']}/{sim['vectors']} vectors equal on {sim['simulator']}"


def _html(cfg, tables, plots: dict[str, Path], verdict: tuple[bool | None, str]) -> str:
    from ttforge import __version__

    def e(text: object) -> str:
        return html.escape(file_text(text))

    ok, text = verdict
    cls = "ok" if ok else "bad"
    parts = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
             f"<title>ttforge flow: {e(cfg.name)}</title><style>{_CSS}</style></head><body>",
             f"<h1>ttforge flow: {e(cfg.name)}</h1>",
             f"<p class='note'>config: {e(cfg.source if cfg.source else 'built in code')}; "
             f"ttforge {e(__version__)}</p>",
             f"<p class='banner {cls}'>{e(text)}</p>"]
    titles = {"training.png": "Training", "ranks.png": "TT ranks", "memory.png": "Memory",
              "stages.png": "Time per stage"}
    for title, header, rows, note in tables:
        parts.append(f"<h2>{e(title)}</h2><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
        for r in rows:
            cells = []
            for c in r:
                k = " class='ok'" if c in ("yes",) else " class='bad'" if c in ("NO", "failed") else ""
                cells.append(f"<td{k}>{e(c)}</td>")
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</table>")
        if note:
            parts.append(f"<p class='note'>{e(note)}</p>")
    parts.append("<h2>Plots</h2>")
    for name in PLOTS:
        if name in plots:
            data = base64.b64encode(plots[name].read_bytes()).decode()
            parts.append(f"<h3>{titles[name]}</h3><img alt='{titles[name]}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _md(cfg, tables, plots: dict[str, Path], verdict, rel: str) -> str:
    ok, text = verdict
    t = file_text
    source = f"config: {t(cfg.source)}" if cfg.source else "config: built in code"
    lines = [f"# ttforge flow: {t(cfg.name)}", "", source, "", f"**{t(text)}**", ""]
    for title, header, rows, note in tables:
        lines += [f"## {title}", "", "| " + " | ".join(h or " " for h in header) + " |",
                  "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(t(c).replace("|", "\\|") for c in r) + " |" for r in rows]
        if note:
            lines += ["", t(note)]
        lines.append("")
    lines += ["## Plots", ""]
    for name in PLOTS:
        if name in plots:
            lines += [f"![{name[:-4]}]({rel}/{name})", ""]
    return "\n".join(lines)


def write_report(cfg, root: Path, records: dict[str, dict], out: Path, *, short: bool = False,
                 statuses: dict[str, str] | None = None) -> list[str]:
    """Write ``report.html``, ``report.md`` and the plots into ``out`` (the report stage's
    directory; the Markdown links its plots as ``report/<plot>.png``, relative to the
    build directory where it is published). Returns the file names."""
    statuses = statuses or {s: "ran" for s in records}
    plots = _plots(Path(root), records, out)
    tables = _sections(cfg, records, statuses, short)
    verdict = _verdict(records)
    # a full disk's write (its close) names no file: the line named no file, disk or stage
    with names_file(out / "report.html"):
        (out / "report.html").write_text(_html(cfg, tables, plots, verdict), encoding="utf-8")
    with names_file(out / "report.md"):
        (out / "report.md").write_text(_md(cfg, tables, plots, verdict, "report"), encoding="utf-8")
    return ["report.html", "report.md", *plots]
