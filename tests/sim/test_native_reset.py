"""The native harnesses count no handshake during reset and drive every input from the start.

Finding (probe X): ``sim/native/ttf_sim.h`` (``Sim::tick()``) sampled the ``m_axis``
handshake while ``rst`` was high, so a core whose ``TVALID`` held its power-up value 1
until the first edge under reset (silicon without flip-flop initial values) gave a
phantom output beat and every output vector shifted ("1 output vectors had a wrong number
of beats"). The emitted core now holds its outputs LOW in reset (``tests/hw/
test_top_reset.py``); the harness must not count such a beat from any core: here it runs
a wrapper of the real core whose ``TVALID``/``TLAST`` are high throughout reset.
``sim/native/train_main.cpp`` left the training engine's inputs undriven before its first
``eval`` (random under ``+verilator+rand+reset+2``: a hang, the generator loaded with 0).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from ttforge.hw.program import compile_program
from ttforge.ir.executor import execute
from ttforge.sim.cases import make_case

#: a wrapper of ``ttforge_accel`` whose TVALID and TLAST are 1 while ``rst`` is (what a
#: core without reset gating shows before its first edge under reset, TVALID powered up 1)
_WRAPPER = """
module ttforge_accel({ports});
{decls}
  wire core_tvalid, core_tlast;
  ttforge_accel_core core({conns});
  assign m_axis_tvalid = core_tvalid | rst;
  assign m_axis_tlast = core_tlast | rst;
endmodule
"""


def _valid_in_reset(verilog: str) -> str:
    """``verilog`` (module ``ttforge_accel``) renamed ``ttforge_accel_core``, behind a wrapper
    ``ttforge_accel`` with the same ports whose ``m_axis_tvalid``/``tlast`` are high in reset."""
    header, body = verilog.split("module ttforge_accel(", 1)[1].split(");", 1)
    names = [n.strip() for n in header.split(",")]
    decls = {n: d for d, n in re.findall(r"^\s*((?:input|output)\s+(?:\[\d+:0\]\s+)?(\w+))\s*;", body, re.M)}
    conns = [f".{n}(core_tvalid)" if n == "m_axis_tvalid" else f".{n}(core_tlast)"
             if n == "m_axis_tlast" else f".{n}({n})" for n in names]
    wrapper = _WRAPPER.format(ports=", ".join(names), decls="\n".join(f"  {decls[n]};" for n in names),
                              conns=", ".join(conns))
    return verilog.replace("module ttforge_accel(", "module ttforge_accel_core(", 1) + wrapper


@pytest.fixture(scope="module")
def tools():
    from ttforge.sim.native import check_native_tools

    try:
        check_native_tools()
    except Exception as e:      # noqa: BLE001 - any missing piece of the toolchain
        pytest.skip(f"no native toolchain: {e}")


@pytest.mark.parametrize("fault", [None, "requant_lsb"])
def test_a_tvalid_high_in_reset_gives_no_beat(tools, monkeypatch, tmp_path, fault):
    """Outputs ``np.array_equal`` to the golden (they were shifted by the phantom beats);
    sibling: the same harness on an RTL whose requantizer flips one bit differs."""
    import ttforge.sim.runner as runner
    from ttforge.sim.native import build_native, run_native

    case = make_case(1, vectors=3)
    emit = runner.emit_verilog
    monkeypatch.setattr(runner, "emit_verilog",
                        lambda cfg, fault=None, cache_root=None: _valid_in_reset(emit(cfg, fault)))
    build = build_native(case.config, fault=fault, build_root=tmp_path / "native", jobs=2)
    golden = execute(case.net, case.inputs)
    r = run_native(build, compile_program(case.net, case.config), case.inputs, check=False)
    assert r.report["ok"], r.report.get("problem")
    assert r.outputs.shape == golden.shape
    assert np.array_equal(r.outputs, golden) == (fault is None)


@pytest.mark.filterwarnings("ignore::amaranth.hdl._ir.UnusedElaboratable")   # only its ports are read
def test_train_harness_drives_every_engine_input_before_its_first_eval():
    """Every input port of the flat training engine is set in ``idle_inputs()``, which
    runs before the first ``tick()`` (a new port of the engine must be added there)."""
    from amaranth.lib import wiring

    from ttforge.hw.trainer.program import TrainEngineConfig
    from ttforge.sim.train_native import NATIVE_DIR, TrainEngineFlat

    src = (NATIVE_DIR / "train_main.cpp").read_text()
    assert "static void idle_inputs()" in src, "train_main.cpp drives no input before its first eval"
    main = src.split("int main(", 1)[1]
    assert main.index("idle_inputs();") < main.index("tick();")
    idle = src.split("static void idle_inputs()", 1)[1].split("\n}", 1)[0]
    driven = set(re.findall(r"top->(\w+) = 0;", idle))
    flat = TrainEngineFlat(TrainEngineConfig())
    inputs = {".".join(map(str, p)) for p, m, _ in flat.signature.flatten(flat) if m.flow == wiring.In}
    del flat
    __import__("gc").collect()      # its engine's UnusedElaboratable warning, here and filtered
    assert inputs and inputs <= driven, sorted(inputs - driven)
