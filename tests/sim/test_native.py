"""The native Verilator harness (``ttforge.sim.native``): the generated ``ttforge_accel``
driven from C++ equals the integer golden executor exactly, for random networks and a
quantized PyTorch network, with and without stream gaps and back-pressure; counters
equal the cycle model and the executor's counts; a flipped core bit in the load image
must disagree; a C99 driver links against the model through the C ABI of the shim.

One build (L = 4, 2 elements per beat; ~30-60 s once, then cached by hash in the
default build root, ``$TTFORGE_NATIVE_CACHE`` or ``~/.cache/ttforge/native``) serves
every default test: its config is the field-wise maximum of the networks' smallest
configs, so the same model runs all of them. Other lane counts, more seeds and a deliberate RTL fault
are ``slow``.
"""

from __future__ import annotations

import subprocess
import textwrap

import numpy as np
import pytest

from ttforge.hw.cycles import program_cycles
from ttforge.hw.program import compile_program, load_image, load_image_to_bytes
from ttforge.hw.regmap import RegisterMap
from ttforge.ir.executor import IntNetwork, execute, execute_traced
from ttforge.sim.native import NativeError, build_native, link_c_driver, run_native

from tests.support.engine import random_inputs, random_net
from tests.support.native import build, nets, qat_net, shared_config  # noqa: F401 (fixtures)


def _macs(net: IntNetwork) -> int:
    return sum(st.A * st.K * st.Q * st.P for layer in net.layers for st in layer.schedule.steps)


def _inputs(name, net, n):
    if name == "qat":
        return qat_net()[1][:n]
    return random_inputs(net, n, 7)


def check(build, net, x, *, seed=0, gaps=0.0, backpressure=0.0):
    """Run and compare everything the spec promises exactly."""
    cfg = build.config
    prog = compile_program(net, cfg)
    golden, traces = execute_traced(net, x)
    res = run_native(build, prog, x, seed=seed, gaps=gaps, backpressure=backpressure)
    assert res.outputs.shape == golden.shape
    assert np.array_equal(res.outputs, golden)
    c = res.counters
    n = len(x)
    model = program_cycles(prog.descriptors, cfg, prog.globals)
    assert c["vectors"] == n
    assert c["busy_lane_cycles"] == model.busy_lane_cycles * n == _macs(net) * n
    assert c["sat_events"] == sum(t.saturations for t in traces)
    # the cycle model is exact; every stall cycle adds one (docs/hardware.md, Cycles)
    assert c["cycles"] == model.total * n + c["in_stall"] + c["out_stall"]
    if gaps == 0.0 and backpressure == 0.0:
        assert c["in_stall"] == 0 and c["out_stall"] == 0
        assert c["cycles"] == model.total * n
    assert res.status & 0b100 == 0 and res.error_code == 0
    return res


@pytest.mark.parametrize("name", ["random15", "random37", "random3", "random8", "coverage", "qat"])
def test_native_equals_executor_back_to_back(build, nets, name):
    net = nets[name]
    check(build, net, _inputs(name, net, 40))


# (the build takes 2 elements a beat: while a beat drains, the input adapter's skid
# register already holds the next one, so a gap of one cycle is hidden; gaps of 0.2
# left the coverage network without a single input stall since 4cab273, and 0.3 the
# 12-input random15 since the output adapter holds a vector's last beat at the port
# (6508fc3: the timing of its next vector moved by a cycle))
@pytest.mark.parametrize("name,seed,gaps,bp", [
    ("random15", 1, 0.5, 0.5), ("random37", 2, 0.5, 0.0), ("random3", 3, 0.0, 0.6),
    ("coverage", 4, 0.5, 0.4), ("qat", 5, 0.25, 0.25)])
def test_native_equals_executor_with_gaps_and_backpressure(build, nets, name, seed, gaps, bp):
    net = nets[name]
    res = check(build, net, _inputs(name, net, 30), seed=seed, gaps=gaps, backpressure=bp)
    if gaps:
        assert res.counters["in_stall"] > 0
    if bp:
        assert res.counters["out_stall"] > 0


def test_qat_network_equals_pytorch_integer_forward(build, nets):
    net, xi, q, x = qat_net()
    res = run_native(build, compile_program(net, build.config), xi[:16])
    assert np.array_equal(res.outputs, q.forward_int(x[:16]))


def test_same_seed_same_cycles_other_seed_differs(build, nets):
    net = nets["random15"]
    prog = compile_program(net, build.config)
    x = random_inputs(net, 20, 1)   # enough vectors and gaps that each seed stalls (see above)
    a = run_native(build, prog, x, seed=9, gaps=0.6, backpressure=0.4)
    b = run_native(build, prog, x, seed=9, gaps=0.6, backpressure=0.4)
    c = run_native(build, prog, x, seed=10, gaps=0.6, backpressure=0.4)
    assert a.counters == b.counters and a.cycles == b.cycles
    assert (c.counters["in_stall"], c.counters["out_stall"]) != (a.counters["in_stall"], a.counters["out_stall"])
    assert np.array_equal(a.outputs, c.outputs)


def test_flipped_core_bit_in_load_image_disagrees(build, nets):
    net = nets["random15"]
    cfg = build.config
    rm = RegisterMap(cfg)
    x = random_inputs(net, 40, 7)
    golden = execute(net, x)
    writes = load_image(compile_program(net, cfg), rm)
    ok = run_native(build, load_image_to_bytes(writes, cfg), x)
    assert np.array_equal(ok.outputs, golden)  # the same image unflipped agrees
    cm = rm.window("CMEM")
    i = next(k for k, (a, _) in enumerate(writes) if cm.base <= a < cm.base + cm.size_bytes)
    a, d = writes[i]
    writes[i] = (a, d ^ (1 << (cfg.core_bits - 2)))
    bad = run_native(build, writes, x)
    assert bad.outputs.shape == golden.shape
    assert not np.array_equal(bad.outputs, golden)


def test_flipped_golden_bit_disagrees(build, nets):
    net = nets["random37"]
    x = random_inputs(net, 8, 7)
    res = run_native(build, compile_program(net, build.config), x)
    golden = execute(net, x)
    golden[3, 1] ^= 1
    assert not np.array_equal(res.outputs, golden)


def test_build_is_cached(build, nets):
    again = build_native(build.config, build_root=build.directory.parent)
    assert again.cached and again.directory == build.directory
    assert not list(build.directory.parent.glob(f".{build.key}.*"))  # no temp dirs left


def test_wrong_input_width_is_one_line_error(build, nets):
    from ttforge.errors import ConfigError, ShapeError

    net = nets["random15"]
    prog = compile_program(net, build.config)
    x = np.zeros((2, net.in_features + 1), dtype=np.int64)
    # a Program: the engine model's check; a bare load image: the harness's
    with pytest.raises(ShapeError, match=rf"takes \(batch, {net.in_features}\)"):
        run_native(build, prog, x)
    with pytest.raises(ConfigError, match="IN_COUNT"):
        run_native(build, load_image(prog, RegisterMap(build.config)), x)


def test_inputs_out_of_range_are_one_line_error(build, nets):
    """The engine model's and the executor's line (one check for all of them)."""
    from ttforge.errors import ShapeError
    from ttforge.hw.model import run_program

    net = nets["random15"]
    prog = compile_program(net, build.config)
    x = np.zeros((2, net.in_features), dtype=np.int64)
    x[1, 3] = 1 << (prog.in_bits - 1)
    with pytest.raises(ShapeError) as native:
        run_native(build, prog, x)
    with pytest.raises(ShapeError) as model:
        run_program(prog, None, x)
    assert str(native.value) == str(model.value)
    assert "range" in str(native.value) and "quantize_input" in str(native.value)


def test_a_program_for_another_config_is_refused_naming_the_fields(build, nets):
    import dataclasses

    from ttforge.errors import ConfigError

    net = nets["random15"]
    other = dataclasses.replace(build.config, core_bits=build.config.core_bits + 1)
    prog = compile_program(net, other)
    x = np.zeros((2, net.in_features), dtype=np.int64)
    with pytest.raises(ConfigError, match=rf"^run_native: the program was compiled for core_bits="
                                          rf"{other.core_bits} but the build's config has core_bits="
                                          rf"{build.config.core_bits}; compile it for the build's config "
                                          r"\(compile_program\(net, build.config\)\)$"):
        run_native(build, prog, x)


def test_engine_error_is_reported_not_hung(build, nets):
    """A descriptor with a zero loop bound: the engine stops with BOUND_ZERO, no output
    comes, the run ends with the error code in the message (after its timeout)."""
    from ttforge.hw.program import load_image_to_bytes as to_bytes

    net = nets["random15"]
    cfg = build.config
    rm = RegisterMap(cfg)
    writes = load_image(compile_program(net, cfg), rm)
    dmem = rm.window("DMEM").base
    writes = [(a, 0 if a == dmem + 4 else d) for a, d in writes]  # step 0 N0 = 0
    with pytest.raises(NativeError, match="ERROR_CODE 1 at step 0"):
        run_native(build, to_bytes(writes, cfg), random_inputs(net, 2, 0), timeout_cycles=2000)


C_DRIVER = textwrap.dedent("""\
    /* a C99 driver against the generated register header and the shim's C ABI */
    #include <stdio.h>
    #include "ttforge_regs.h"
    #include "axil_shim.h"

    int main(void) {
        void *sim = ttf_sim_open();
        uint32_t id = 0, lanes = 0, ctrl = 0, junk = 0;
        int bad;
        if (!sim) return 10;
        if (ttf_axil_read32(sim, TTFORGE_ID_ADDR, &id) != TTF_AXIL_OKAY) return 11;
        if (ttf_axil_read32(sim, TTFORGE_CFG_LANES_ADDR, &lanes) != TTF_AXIL_OKAY) return 12;
        if (ttf_axil_write32(sim, TTFORGE_CTRL_ADDR, TTFORGE_CTRL_IRQ_DONE_EN_MASK) != TTF_AXIL_OKAY) return 13;
        if (ttf_axil_read32(sim, TTFORGE_CTRL_ADDR, &ctrl) != TTF_AXIL_OKAY) return 14;
        bad = ttf_axil_read32(sim, TTFORGE_CMD_ADDR, &junk); /* WO: SLVERR */
        printf("%08x %u %x %d %d\\n", (unsigned)id,
               (unsigned)((lanes & TTFORGE_CFG_LANES_LANES_MASK) >> TTFORGE_CFG_LANES_LANES_SHIFT),
               (unsigned)ctrl, bad, ttf_sim_cycles(sim) > 0);
        ttf_sim_close(sim);
        return 0;
    }
    """)


def test_c_driver_links_through_the_shim(build, tmp_path):
    src = tmp_path / "driver.c"
    src.write_text(C_DRIVER)
    exe = link_c_driver(build, [src], tmp_path / "driver")
    out = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["54544647", str(build.config.lanes), "2", "2", "1"]


# ------------------------------------------------------------------------------- slow
@pytest.mark.slow
@pytest.mark.parametrize("lanes,elems", [(1, 1), (8, 16), (16, 8)])
def test_native_sweep_lanes(lanes, elems):
    seeds = range(40, 52)
    nets = [random_net(s) for s in seeds]
    cfg = shared_config(nets, lanes=lanes, stream_elems=elems)
    b = build_native(cfg, jobs=2)
    for s, net in zip(seeds, nets):
        x = random_inputs(net, 200, s)
        check(b, net, x)
        check(b, net, x, seed=s, gaps=0.3, backpressure=0.3)


@pytest.mark.slow
def test_native_many_vectors(build, nets):
    for name in ("random8", "coverage"):
        net = nets[name]
        check(build, net, random_inputs(net, 2000, 11), seed=11, gaps=0.1, backpressure=0.1)


@pytest.mark.slow
def test_rtl_fault_disagrees(build, nets):
    import inspect

    from ttforge.hw import top

    if "fault" not in inspect.signature(top.verilog).parameters:
        pytest.skip("ttforge.hw.top.verilog has no fault= keyword yet")
    fb = build_native(build.config, fault="requant_lsb", jobs=2)
    assert fb.key != build.key
    net = nets["random15"]
    x = random_inputs(net, 20, 7)
    res = run_native(fb, compile_program(net, build.config), x, check=False)
    assert not np.array_equal(res.outputs, execute(net, x))


@pytest.mark.slow
def test_bench_native_smoke(tmp_path):
    import json
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "native.json"
    proc = subprocess.run([sys.executable, str(root / "bench" / "bench_native.py"), "--quick",
                           "--native-only", "--out", str(out)], capture_output=True, text=True,
                          timeout=1800, cwd=root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = json.loads(out.read_text())["rows"][0]
    assert row["simulators"]["native"]["counters"]["cycles"] == row["model_cycles_per_vector"] * row["vectors"]


def test_a_cxx_that_is_not_a_program_is_one_line_not_a_silent_fallback(monkeypatch):
    """``CXX=/nonexistent`` built with c++ anyway (and verilated.mk's own CXX beat the
    environment's, so a CXX that existed never reached make either: ``make_flags``)."""
    from ttforge.errors import ToolchainMissing
    from ttforge.sim.native import _cxx, make_flags

    monkeypatch.setenv("CXX", "/nonexistent/g++")
    with pytest.raises(ToolchainMissing, match=r"\$CXX='/nonexistent/g\+\+' is not a program on PATH"):
        _cxx()
    assert make_flags("ccache g++").endswith("CXX='ccache g++' LINK='ccache g++'")
