"""The report: self-contained HTML with every section, and a real rendering in headless
Chromium (skipped only when Chromium is absent and CI is unset)."""

from __future__ import annotations

import base64
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = "/usr/bin/chromium"
WIDTH, HEIGHT = 1280, 2400


def test_report_is_self_contained_and_complete(default_build):
    page = (default_build / "report.html").read_text()
    # no external asset: every src is inline data, no stylesheet or script links
    srcs = re.findall(r"""src=['"]([^'"]+)""", page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<link" not in page and "<script" not in page and "http://" not in page and "https://" not in page
    for s in srcs:  # each embedded plot is a real PNG
        assert base64.b64decode(s.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(srcs) == 4  # training curve, ranks, memory, stage times
    for section in ("Accuracy at each stage", "TT ranks", "Network memory (TT, bytes) vs dense INT8",
                    "Accelerator memories (bytes)",
                    "Cycles per inference and MAC-lane utilization", "Resources and Fmax",
                    "Verification", "Stages"):
        assert section in page
    assert "bit-exact: 16/16 test vectors" in page
    assert "not built" in page  # --short: no bitstream
    md = (default_build / "report.md").read_text()
    assert "## Accuracy at each stage" in md
    for link in re.findall(r"\]\((report/[^)]+\.png)\)", md):
        assert (default_build / link).is_file()


def _chromium_or_skip() -> str:
    if Path(CHROMIUM).is_file():
        return CHROMIUM
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing under CI; install it (apt-get install chromium)")
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium); CI runs this test")


def _screenshot(page: Path, tmp_path: Path) -> np.ndarray:
    from PIL import Image

    browser = _chromium_or_skip()
    png = tmp_path / "shot.png"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={WIDTH},{HEIGHT}",
           f"--screenshot={png}", page.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert png.is_file(), f"chromium wrote no screenshot (exit {proc.returncode}): {proc.stderr[-500:]}"
    return np.asarray(Image.open(png).convert("RGB"))


def test_report_renders_in_headless_chromium(default_build, tmp_path):
    img = _screenshot(default_build / "report.html", tmp_path)
    assert img.shape == (HEIGHT, WIDTH, 3)
    colours = np.unique(img.reshape(-1, 3), axis=0)
    non_white = np.mean(np.any(img < 245, axis=2))
    assert len(colours) > 200, f"only {len(colours)} colours: not a rendering of the report"
    assert non_white > 0.05, f"{non_white:.1%} non-white pixels"
    # the plots were decoded and drawn: matplotlib's default blue and orange lines appear
    blue = np.all(np.abs(img.astype(int) - (31, 119, 180)) < 12, axis=2).sum()
    assert blue > 200


def test_blank_page_fails_the_rendering_checks(tmp_path):
    """The sibling that must fail: an empty page does not pass as a rendering."""
    page = tmp_path / "blank.html"
    page.write_text("<!DOCTYPE html><html><body></body></html>")
    img = _screenshot(page, tmp_path)
    assert len(np.unique(img.reshape(-1, 3), axis=0)) <= 200 or np.mean(np.any(img < 245, axis=2)) <= 0.05


def test_one_epoch_cut_by_truncation_plots_without_a_warning(tmp_path):
    """One epoch, ranks truncated after it: the "ranks truncated" label lay 2 points above
    the accuracy axis' bottom, far above its flat range, and matplotlib warned "Tight
    layout not applied" on stderr; the curves were lines of no length."""
    import json
    import warnings

    from ttforge.flow.report import _plots

    (tmp_path / "train").mkdir()
    h = {"epoch": 1, "phase": "train", "train_loss": 1.24, "test_loss": 1.28, "train_acc": 0.782,
         "test_acc": 0.778}
    (tmp_path / "train" / "metrics.json").write_text(json.dumps({"history": [h]}))
    trunc = {"layers": {"1": {"before": [1, 8, 1], "after": [1, 8, 1]}}}
    records = {"train": {"summary": {"ranks": {"1": [1, 8, 1]}, "truncation": trunc}, "seconds": 1.0}}
    out = tmp_path / "out"
    out.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        made = _plots(tmp_path, records, out)
    assert {"training.png", "ranks.png", "stages.png"} <= set(made)


@pytest.mark.parametrize("name", ["report.html", "report.md", "training.png"])
def test_a_full_disk_under_the_report_names_the_file(tmp_path, monkeypatch, name):
    """``Path.write_text``/``write_bytes`` on a full disk fail at the close with no file
    name: ``flow`` said only "No space left on device", no file, disk or stage (review V7)."""
    import errno
    import json

    from ttforge.flow import default_config
    from ttforge.flow.report import write_report

    (tmp_path / "train").mkdir()
    h = {"epoch": 1, "phase": "train", "train_loss": 1.2, "test_loss": 1.3, "train_acc": 0.7, "test_acc": 0.7}
    (tmp_path / "train" / "metrics.json").write_text(json.dumps({"history": [h]}))
    records = {"train": {"summary": {"ranks": {"1": [1, 8, 1]}}, "seconds": 1.0}}
    out = tmp_path / "out"
    out.mkdir()
    real_text, real_bytes = Path.write_text, Path.write_bytes

    def full(real):
        def write(self, *args, **kwargs):
            if self.name == name:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(self, *args, **kwargs)
        return write

    from ttforge.flow import report

    # the page's text is another test's business: these records make only the plots
    for page in ("_sections", "_verdict", "_html", "_md"):
        monkeypatch.setattr(report, page, lambda *a, **k: "")
    monkeypatch.setattr(Path, "write_text", full(real_text))
    monkeypatch.setattr(Path, "write_bytes", full(real_bytes))
    with pytest.raises(OSError) as e:
        write_report(default_config(), tmp_path, records, out)
    assert e.value.filename == str(out / name)


def test_the_plots_leave_the_hosts_pyplot_alone(tmp_path):
    """The report's figures (and the sweep's Pareto plot) called matplotlib.use("Agg"):
    a notebook calling run_flow had its inline backend switched for good."""
    import json

    import matplotlib
    import matplotlib.pyplot as plt

    from ttforge.flow.report import _plots
    from ttforge.flow.sweep import _plot

    (tmp_path / "train").mkdir()
    h = {"epoch": 1, "phase": "train", "train_loss": 1.2, "test_loss": 1.3, "train_acc": 0.7, "test_acc": 0.7}
    (tmp_path / "train" / "metrics.json").write_text(json.dumps({"history": [h]}))
    records = {"train": {"summary": {"ranks": {"1": [1, 8, 1]}}, "seconds": 1.0}}
    row = {"board": "icebreaker", "status": "ok", "cycles": 10, "on_chip_bytes": 100, "int_acc": 0.9,
           "params": {"ranks": 2}}
    (tmp_path / "out").mkdir()
    before = matplotlib.get_backend()
    plt.switch_backend("svg")
    try:
        fig = plt.figure()
        assert {"training.png", "ranks.png", "stages.png"} <= set(_plots(tmp_path, records, tmp_path / "out"))
        assert _plot([row], "t")[:4] == b"\x89PNG"
        assert matplotlib.get_backend() == "svg" and plt.get_fignums() == [fig.number]
    finally:
        plt.close("all")
        plt.switch_backend(before)



@pytest.mark.parametrize("bit_exact", [True, False])
def test_equal_to_the_stage_before_is_said_only_of_the_integer_executor(default_build, bit_exact):
    """``bit_exact`` (integer executor == fake-quant) was printed on the fake-quant row
    too, whose stage before is the float model (another accuracy): "yes" there was false."""
    from ttforge.flow import default_config
    from ttforge.flow.report import _sections
    from ttforge.flow.stages import STAGES, read_record

    records = {s: read_record(default_build / s) for s in STAGES if (default_build / s).is_dir()}
    records["quantize"]["summary"]["bit_exact"] = bit_exact
    title, header, rows, _ = _sections(default_config(), records, {}, True)[0]
    assert title == "Accuracy at each stage" and header[-1] == "equal to the stage before"
    by_stage = {r[0].split(" (")[0]: r[-1] for r in rows}
    assert by_stage["float"] == by_stage["fake-quant"] == "-"
    assert by_stage["integer golden executor"] == ("yes" if bit_exact else "NO")


def test_memory_figures_say_what_they_are(default_build):
    """The IR's count (docs/artifact.md "On-chip bytes": bias at acc_bits, one peak
    intermediate) was titled "bytes on chip" as the design's memory; the accelerator the
    build generates holds biases at bias_bits, two buffers and descriptors (1,224 B
    against 1,940 B for the default). Each figure is now named for what it is and the
    accelerator's memories are the compile stage's config, recomputed here."""
    import json

    from ttforge.hw.config import AccelConfig

    md = (default_build / "report.md").read_text()
    assert "on chip" not in md.replace("On-chip bytes", "")
    q = json.loads((default_build / "quantize" / "stage.json").read_text())
    assert "TT network" in q["figure"] and "on chip" not in q["figure"]
    parts = AccelConfig.load(default_build / "compile" / "config.json").memory_parts()
    table = md[md.index("## Accelerator memories (bytes)"):]
    table = table[:table.index("\n\n", table.index("|"))]
    got = {r.split("|")[1].strip(): r.split("|")[-2].strip() for r in table.splitlines()[4:]}
    assert got == {**{k: f"{-(-v // 8):,}" for k, v in parts.items()}, "total": f"{-(-sum(parts.values()) // 8):,}"}
    tt = q["summary"]["on_chip"]["on_chip_bytes"]
    assert f"{tt:,}" in md[md.index("## Network memory (TT, bytes) vs dense INT8"):]
    assert sum(parts.values()) // 8 != tt   # two different figures, both shown
    comp = json.loads((default_build / "compile" / "stage.json").read_text())["figure"]
    assert comp.endswith(f"{-(-sum(parts.values()) // 8):,} B of memories")


_REPORT_PLOTS_FIRST = """
import sys
from pathlib import Path
from ttforge.flow.report import _plots
_plots(Path(sys.argv[1]), {}, Path(sys.argv[1]))
print("matplotlib.figure" in sys.modules)
"""


def test_the_report_s_plots_print_nothing_under_a_home_that_cannot_be_written(tmp_path):
    """``flow`` with its train stage skipped imports matplotlib first in the report: a
    read-only ``$HOME`` printed matplotlib's two lines about its config directory there
    (``figure_class`` drops them, as for ``train``)."""
    from tests.support.home import run_with_unwritable_home

    p = run_with_unwritable_home(_REPORT_PLOTS_FIRST, str(tmp_path))
    assert p.returncode == 0 and p.stderr == "", p.stderr
    assert p.stdout == "True\n"   # the figures' module was imported, here first


def test_device_training_memory_states_the_count_and_the_engine_it_built():
    """The device-train table had one "total (integer training on chip)": the bit-packed
    count, which a user sized the board by. It now states the count, labelled, and the
    memories of the engine the stage builds (fit_engine's, checked by build's
    memory_misfit for the flow's board), each ratio in words ("x more" below 1)."""
    from ttforge.firmware.board import board
    from ttforge.firmware.build import memory_misfit, memory_parts
    from ttforge.flow.report import _device_train_memory
    from ttforge.flow.stages import device_train_memory
    from ttforge.hw.trainer.program import fit_engine

    from tests.support.train_cases import digits_train_state

    st, ulx3s = digits_train_state(), board("ulx3s")
    m = device_train_memory(st, 216, 16, ulx3s)
    cfg = fit_engine(st, 216, 16)
    bits = sum(memory_parts(cfg).values())
    assert m["engine"]["bits"] == bits and m["engine"]["misfit"] == memory_misfit(cfg, ulx3s.device) is not None
    _, head, rows, note = _device_train_memory("On-device training", m)
    got = dict(rows)
    assert got["total the step needs, counted bit-packed"] == f"{m['total']:,}"
    assert got["total of the training engine's memories (16 lanes, 256 slots)"] == f"{-(-bits // 8):,}"
    assert m["ratio"] < 1 and f"counted bit-packed: {1 / m['ratio']:.1f}x more memory" in note
    assert "does not fit the ECP5-85F" in note and "x less" not in note
    assert not any("on chip" in r[0] for r in rows)
    # no board in the flow: the engine's figure, and nothing said of a fit
    m = device_train_memory(st, 8, 4, None)
    assert m["engine"]["bits"] == sum(memory_parts(fit_engine(st, 8, 4)).values())
    assert " fit" not in _device_train_memory("On-device training", m)[3]
