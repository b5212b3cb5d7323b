"""The single-port ping-pong buffers (``AccelConfig.buf_ports=1``): the engine in
Amaranth's simulator computes exactly what the executor computes, in the cycles of the
cycle model, and never needs a buffer's read data in a cycle that writes it."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

import tests.support.engine as support
from ttforge.errors import ConfigError
from ttforge.hw.config import AccelConfig
from ttforge.hw.cycles import program_cycles
from ttforge.hw.engine import TTEngine
from ttforge.hw.engine.buffers import SINGLE_PORT_ATTR
from ttforge.hw.program import compile_program
from ttforge.ir.executor import execute, execute_traced

from tests.support.engine import (config_for, macs_per_vector, random_inputs, random_net,
                                  simulate, stream_script)


@pytest.fixture
def clashes(monkeypatch):
    """Cycles in which a buffer was written while its read data may be used, counted by
    every simulation of the test (the engine's ``debug["buf_clash"]``)."""
    seen = {"cycles": 0, "clashes": 0}

    class Watched(Simulator):
        def __init__(self, dut):
            super().__init__(dut)
            clash = dut.debug["buf_clash"]

            async def watch(ctx):
                async for _, _, c in ctx.tick().sample(clash):
                    seen["cycles"] += 1
                    seen["clashes"] += c != 0

            self.add_process(watch)

    monkeypatch.setattr(support, "Simulator", Watched)
    return seen


@pytest.mark.parametrize("lanes,seed,serial", [(1, 21, 1), (2, 0, 0), (4, 15, 0), (4, 37, 1),
                                               (8, 10, 0), (16, 31, 0)])
def test_single_port_buffers_are_bit_exact_and_never_clash(clashes, lanes, seed, serial):
    net = random_net(seed)
    cfg = config_for(net, lanes, buf_ports=1, serial_requant=serial)
    prog = compile_program(net, cfg)
    X = random_inputs(net, 2, seed)
    golden, traces = execute_traced(net, X)
    run = simulate(cfg, stream_script(prog, X, gap=0.25), expect_vectors=len(X), seed=seed,
                   stall=0.25)
    assert np.array_equal(np.array(run.outputs, dtype=np.int64), golden)
    assert run.status["error"] == 0
    assert run.counters["sat_events"] == sum(t.saturations for t in traces)
    assert run.counters["busy_lane_cycles"] == macs_per_vector(net) * len(X)
    quiet = simulate(cfg, stream_script(prog, X, pause=5), expect_vectors=len(X))
    assert np.array_equal(np.array(quiet.outputs, dtype=np.int64), golden)
    assert quiet.counters["cycles"] == \
        program_cycles(prog.descriptors, cfg, prog.globals).total * len(X)
    assert clashes["cycles"] > 1000 and clashes["clashes"] == 0


def test_single_port_fault_breaks_equality():
    """The sibling that must fail: one result bit flipped on its way into a buffer."""
    net = random_net(37)
    cfg = config_for(net, 4, buf_ports=1)
    prog = compile_program(net, cfg)
    X = random_inputs(net, 2, 2)
    run = simulate(cfg, stream_script(prog, X), expect_vectors=len(X), fault="requant_lsb")
    assert not np.array_equal(np.array(run.outputs), execute(net, X))


def test_buf_ports_is_validated_and_marks_the_memories():
    with pytest.raises(ConfigError, match="buf_ports=3 must be in 1..2"):
        AccelConfig(buf_ports=3)
    cfg = AccelConfig(lanes=2, core_depth=64, bias_depth=16, buf_depth=64, desc_depth=4)
    two = verilog.convert(TTEngine(cfg), name="e")
    one = verilog.convert(TTEngine(AccelConfig(**{**cfg.to_dict(), "buf_ports": 1})), name="e")
    assert SINGLE_PORT_ATTR not in two
    assert one.count(SINGLE_PORT_ATTR) == 2


@pytest.mark.slow
def test_yosys_maps_the_single_port_buffers_to_spram(tmp_path):
    """The synthesis path of ``ttforge report`` (Verilog in): with the script of
    ``single_port_script`` and ``-spram`` the two buffers are SB_SPRAM256KA, even small
    ones that block RAM would hold; without it they are block RAM."""
    import json

    from ttforge.hw.synth import synth_extras
    from ttforge.hw.tools import run_tool
    from ttforge.hw.top import verilog as top_verilog

    cfg = AccelConfig.for_device("ice40up5k", lanes=1, buf_ports=1)
    (tmp_path / "core.v").write_text(top_verilog(cfg))
    cells = {}
    for name, conf in (("one", cfg), ("two", AccelConfig(**{**cfg.to_dict(), "buf_ports": 2}))):
        after, opts = synth_extras(conf, "ice40up5k")
        (tmp_path / f"{name}.ys").write_text("\n".join(
            ["read_verilog -sv core.v", *after,
             f"synth_ice40 -dsp {opts} -top ttforge_accel -run begin:map_ffram",
             f"tee -q -o {name}.json stat -json"]) + "\n")
        proc = run_tool("yosys", ["-q", f"{name}.ys"], cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        cells[name] = json.loads((tmp_path / f"{name}.json").read_text())["design"]["num_cells_by_type"]
    assert cells["one"].get("SB_SPRAM256KA") == 2
    assert "SB_SPRAM256KA" not in cells["two"]
    assert cells["one"]["SB_RAM40_4K"] < cells["two"]["SB_RAM40_4K"]
