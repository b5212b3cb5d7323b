"""The simulated boards' cache (``$TMPDIR/ttforge-simboard``) uses an entry only when
its record vouches for it: a Yosys output (``yosys-<key>.v``) with its record
``yosys-<key>.json``, a build directory with its marker ``ttforge_build.json`` (the
sha256 of its Verilog and of what the simulator runs). A damaged entry is made again;
it was read back (a truncated Yosys output: "icarus could not compile the board top")
or run as it was (a truncated ``sim.vvp``: "the simulator did not start") by every later
run, exit 3, and each use refreshed its age so the pruning never took it."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from ttforge.firmware import board

_VERILOG = "module ttforge_board(input clk);\n" + "  // a line of the board\n" * 200 + "endmodule\n"


def _verilog(cache, monkeypatch, calls):
    monkeypatch.setattr(board, "_run_builtin_yosys", lambda script: calls.append(1) or _VERILOG)
    from ttforge.hw.config import AccelConfig

    cfg = AccelConfig(lanes=2, act_bits=8, core_bits=8, inter_bits=16, acc_bits=32, bias_bits=32,
                      core_depth=512, bias_depth=64, buf_depth=256, desc_depth=16, stream_elems=1)
    return board.sim_verilog(cfg, divisor=4, cache_dir=cache)


@pytest.mark.parametrize("damage", ["truncated", "flipped", "no record", "old entry without a record"])
def test_a_damaged_yosys_output_is_made_again(tmp_path, monkeypatch, damage):
    calls = []
    assert _verilog(tmp_path, monkeypatch, calls) == _VERILOG and len(calls) == 1
    (entry,) = tmp_path.glob("yosys-*.v")
    if damage == "truncated":
        entry.write_text(_VERILOG[:100])
        os.utime(entry, (1, 1))   # old: the pruning goes by age, and a use refreshed it
    elif damage == "flipped":
        entry.write_text(_VERILOG.replace("board", "boarc", 1))
    else:
        entry.with_suffix(".json").unlink()
        if damage.startswith("old"):
            entry.write_text(_VERILOG[:100])
    assert _verilog(tmp_path, monkeypatch, calls) == _VERILOG and len(calls) == 2
    assert entry.read_text() == _VERILOG
    assert _verilog(tmp_path, monkeypatch, calls) == _VERILOG and len(calls) == 2   # then cached


def test_a_record_whose_output_was_pruned_goes(tmp_path, monkeypatch):
    """The pruning (``simulate.prune_cache``) knows the outputs, not their records."""
    calls = []
    _verilog(tmp_path, monkeypatch, calls)
    (entry,) = tmp_path.glob("yosys-*.v")
    other = tmp_path / "yosys-0123456789abcdef.json"
    shutil.copy(entry.with_suffix(".json"), other)
    mine = tmp_path / "notes.json"
    mine.write_text("{}")
    entry.unlink()
    _verilog(tmp_path, monkeypatch, calls)
    assert not other.exists() and mine.exists() and entry.with_suffix(".json").is_file()


# ----------------------------------------------------------------------------- build directories
def _build(bd, calls, verilog=_VERILOG):
    def compile_():   # as cocotb's runner: by date
        src, vvp = bd / "ttforge_board.v", bd / "sim.vvp"
        assert src.read_text() == verilog   # the source is in place
        if not vvp.exists() or vvp.stat().st_mtime_ns < src.stat().st_mtime_ns:
            calls.append(1)
            vvp.write_text("#! vvp\n" + "code\n" * 100)

    board.sim_board_build(bd, bd / "ttforge_board.v", verilog, "icarus", compile_)


@pytest.mark.parametrize("damage", ["truncated sim.vvp", "no sim.vvp", "flipped source", "no marker",
                                    "marker of another design"])
def test_a_damaged_board_build_is_built_again(tmp_path, damage):
    bd = tmp_path / "0123456789abcdef"
    bd.mkdir()
    calls = []
    _build(bd, calls)
    _build(bd, calls)
    assert len(calls) == 1   # cached
    (bd / "obj").mkdir()
    (bd / "build.log").write_text("kept")
    if damage == "truncated sim.vvp":
        (bd / "sim.vvp").write_text("#! vvp\n")
    elif damage == "no sim.vvp":
        (bd / "sim.vvp").unlink()
    elif damage == "flipped source":
        (bd / "ttforge_board.v").write_text(_VERILOG.replace("board", "boarc", 1))
    elif damage == "no marker":
        (bd / "ttforge_build.json").unlink()
    else:
        rec = json.loads((bd / "ttforge_build.json").read_text())
        (bd / "ttforge_build.json").write_text(json.dumps({**rec, "verilog_sha256": "0" * 64}))
    _build(bd, calls)
    assert len(calls) == 2
    assert not (bd / "obj").exists() and (bd / "build.log").read_text() == "kept"
    _build(bd, calls)
    assert len(calls) == 2   # then cached


def test_a_failed_board_build_leaves_no_marker(tmp_path):
    bd = tmp_path / "0123456789abcdef"
    bd.mkdir()

    def fails():
        (bd / "sim.vvp").write_text("half")
        raise RuntimeError("iverilog failed")

    with pytest.raises(RuntimeError):
        board.sim_board_build(bd, bd / "ttforge_board.v", _VERILOG, "icarus", fails)
    assert not (bd / "ttforge_build.json").exists()
    calls = []
    _build(bd, calls)
    assert calls == [1]


@pytest.mark.skipif(shutil.which("iverilog") is None, reason="needs Icarus Verilog")
def test_a_truncated_simulator_of_the_board_is_built_again(tmp_path):
    """The probe: ``truncate -s 1000 .../sim.vvp`` and every later ``run --sim`` said
    "the simulator did not start", exit 3 (cocotb's runner rebuilds by mtime only)."""
    from ttforge.firmware.simulate import simulated_device
    from ttforge.hw.config import AccelConfig
    from ttforge.ir.executor import execute
    from ttforge.quant.qat import compile_network

    from tests.support.nets import small_net

    q, x = small_net()
    net = compile_network(q)
    xi = net.quantize_input(x.numpy())[:2]
    cfg = AccelConfig.for_network(net, lanes=4)
    root = tmp_path / "simboard"
    with simulated_device(cfg, build_dir=root, timeout=120):
        pass
    (vvp,) = root.glob("*/sim.vvp")
    vvp.write_bytes(vvp.read_bytes()[:1000])
    for _ in range(2):   # built again, then used as cached
        with simulated_device(cfg, build_dir=root, timeout=120) as dev:
            dev.load(net)
            assert np.array_equal(dev.infer(xi), execute(net, xi))
    assert json.loads((vvp.parent / "ttforge_build.json").read_text())["product"] == "sim.vvp"
