"""``ttforge generate``: the files, their agreement with the library, atomicity, errors."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from ttforge.cli import main
from ttforge.hw.config import AccelConfig
from ttforge.hw.program import compile_program, load_image, load_image_from_bytes
from ttforge.hw.regmap import RegisterMap
from ttforge.ir.artifact import save_artifact

from tests.support.nets import example_network

FILES = {"config.json", "regmap.json", "ttforge_regs.h", "regmap.md", "load_image.json",
         "load_image.bin", "estimate.json", "generate.json"}


@pytest.fixture
def artifact(tmp_path):
    p = tmp_path / "example.ttfa"
    save_artifact(example_network(), p)
    return p


def _one_line_error(capsys, pattern):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ttforge generate: error: "), err
    assert pattern in err, err
    return err


def test_generate_writes_everything_consistently(artifact, tmp_path, capsys):
    out = tmp_path / "gen"
    assert main(["generate", str(artifact), "--lanes", "2", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "0: 5->4" in printed and "1: 4->3" in printed and "TT/dense" in printed
    names = {p.name for p in out.iterdir()}
    assert names == FILES | {"ttforge_accel.v", "ttforge_accel.vlt"}
    net = example_network()
    cfg = AccelConfig.load(out / "config.json")
    assert cfg == AccelConfig.for_network(net, lanes=2)
    rm = RegisterMap(cfg)
    assert (out / "regmap.json").read_text() == rm.to_json()
    assert (out / "ttforge_regs.h").read_text() == rm.to_c_header()
    writes = load_image(compile_program(net, cfg), rm)
    assert [tuple(w) for w in json.loads((out / "load_image.json").read_text())["writes"]] == writes
    assert load_image_from_bytes((out / "load_image.bin").read_bytes()) == writes
    est = json.loads((out / "estimate.json").read_text())
    assert [x["layer"] for x in est["layers"]] == [0, 1] and est["lanes"] == 2
    man = json.loads((out / "generate.json").read_text())
    for name, digest in man["files"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    assert man["artifact"]["sha256"] == hashlib.sha256(artifact.read_bytes()).hexdigest()
    v = (out / "ttforge_accel.v").read_text()
    assert "module ttforge_accel" in v and "s_axil_awaddr" in v and "m_axis_tlast" in v
    # regenerating replaces the previous output, atomically, leaving no temporaries
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text("lanes = 4\ncore_depth = 64\nbias_depth = 8\nbuf_depth = 16\ndesc_depth = 4\n"
                        "act_bits = 8\ncore_bits = 4\ninter_bits = 8\nacc_bits = 16\nbias_bits = 16\n")
    assert main(["generate", str(artifact), "--config", str(cfg_file), "--no-verilog", "-o", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == FILES
    assert AccelConfig.load(out / "config.json").core_depth == 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml", "example.ttfa", "gen"]


def test_json_output(artifact, tmp_path, capsys):
    assert main(["generate", str(artifact), "--no-verilog", "--json", "-o", str(tmp_path / "g")]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["lanes"] == 4 and d["cycles"] > d["macs"] / 4


def test_a_config_that_does_not_fit_is_named(artifact, tmp_path, capsys):
    cfg_file = tmp_path / "small.json"
    cfg_file.write_text(json.dumps({"lanes": 4, "core_depth": 8, "core_bits": 4}))
    out = tmp_path / "g"
    assert main(["generate", str(artifact), "--config", str(cfg_file), "-o", str(out)]) == 2
    err = _one_line_error(capsys, "does not fit: core_depth=8 but")
    assert "raise core_depth to" in err
    assert not out.exists()


def test_a_config_no_board_holds_is_refused_before_any_work(artifact, tmp_path, capsys):
    """buf_depth 2**20 (the depths allow 2**24) ran out of time at 120 s and 4.3 GB."""
    cfg_file = tmp_path / "big.json"
    cfg_file.write_text(json.dumps({"lanes": 4, "buf_depth": 1 << 20}))
    out = tmp_path / "g"
    assert main(["generate", str(artifact), "--config", str(cfg_file), "-o", str(out)]) == 2
    err = _one_line_error(capsys, "buf_depth=1048576: the memories need 33,628,160 bits")
    assert "use buf_depth <= 237,312" in err
    assert not out.exists()


@pytest.mark.parametrize("args, pattern", [
    (["--lanes", "3"], "lanes=3 must be a power of two"),
    (["--stream-elems", "3"], "stream_elems=3"),
])
def test_bad_options_are_one_line(artifact, tmp_path, capsys, args, pattern):
    assert main(["generate", str(artifact), *args, "--no-verilog", "-o", str(tmp_path / "g")]) == 2
    _one_line_error(capsys, pattern)
    assert not (tmp_path / "g").exists()


def test_bad_artifact_and_foreign_directory(artifact, tmp_path, capsys):
    bad = tmp_path / "bad.ttfa"
    bad.write_bytes(b"not a zip")
    assert main(["generate", str(bad), "-o", str(tmp_path / "g")]) == 2
    _one_line_error(capsys, "is not a ttforge artifact")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert main(["generate", str(artifact), "--no-verilog", "-o", str(foreign)]) == 2
    _one_line_error(capsys, "is not empty and not a ttforge generate output")
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


def test_a_failure_leaves_the_previous_output(artifact, tmp_path, monkeypatch, capsys):
    out = tmp_path / "g"
    assert main(["generate", str(artifact), "--no-verilog", "-o", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    import ttforge.hw.program as program

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(program, "load_image_to_bytes", boom)
    # an OSError nobody expected is one line and exit 3 (the machine's problem, not the input's)
    assert main(["generate", str(artifact), "--no-verilog", "--lanes", "8", "-o", str(out)]) == 3
    _one_line_error(capsys, "disk full")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["example.ttfa", "g"]
    # and the same failure while writing the files
    monkeypatch.undo()
    import os as _os
    real = _os.fsync
    calls = {"n": 0}

    def flaky(fd):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("I/O error")
        return real(fd)

    monkeypatch.setattr("ttforge.hw.generate.os.fsync", flaky)
    # an I/O error is the machine's (exit 3), not the output path's
    assert main(["generate", str(artifact), "--no-verilog", "--lanes", "8", "-o", str(out)]) == 3
    _one_line_error(capsys, "I/O error (a problem of the machine")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["example.ttfa", "g"]
    np.testing.assert_equal(len(before), len(FILES))


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


@pytest.mark.parametrize("raw, shown, exact", [
    (b"a\xff\n.ttfa", "a\\xff\n.ttfa", "61ff0a2e7474666"),   # not UTF-8: shown, and its bytes
    ("é.ttfa".encode(), "é.ttfa", None),                      # UTF-8: as it is
])
def test_the_artifact_name_in_generate_json_is_text_a_strict_parser_reads(tmp_path, raw, shown, exact):
    """A non-UTF-8 name was written as the lone surrogate "\\udcff", which strict JSON
    parsers (serde, Go) refuse or mangle."""
    import os

    art = tmp_path / os.fsdecode(raw)
    save_artifact(example_network(), art)
    out = tmp_path / "g"
    assert main(["generate", str(art), "--no-verilog", "-o", str(out)]) == 0
    man = json.loads((out / "generate.json").read_text(encoding="utf-8"))
    for s in _strings(man):
        s.encode("utf-8")                      # no lone surrogate anywhere
    assert man["artifact"]["file"] == shown
    if exact is None:
        assert "file_bytes" not in man["artifact"]
    else:
        assert bytes.fromhex(man["artifact"]["file_bytes"]) == raw and man["artifact"]["file_bytes"].startswith(exact)


@pytest.mark.skipif(__import__("shutil").which("iverilog") is None, reason="needs iverilog")
def test_two_differently_configured_cores_share_one_design_by_name(artifact, tmp_path, capsys):
    """Every ``generate`` emitted module ``ttforge_accel`` and the CLI had no name option:
    two cores of different configurations in one design were a redefinition in every
    tool. ``--name`` names the module, its files and their waivers; the manifest records
    it; the default is unchanged."""
    import subprocess

    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["generate", str(artifact), "--lanes", "2", "-o", str(a)]) == 0
    assert main(["generate", str(artifact), "--lanes", "4", "--name", "core_b", "-o", str(b)]) == 0
    capsys.readouterr()
    assert {p.name for p in b.iterdir()} == FILES | {"core_b.v", "core_b.vlt"}
    assert json.loads((b / "generate.json").read_text())["module"] == "core_b"
    assert json.loads((a / "generate.json").read_text())["module"] == "ttforge_accel"
    vb = (b / "core_b.v").read_text()
    assert "module core_b(" in vb.replace(" (", "(") and "module ttforge_accel" not in vb
    assert '/core_b.v"' in (b / "core_b.vlt").read_text()    # waivers scoped to its file
    top = tmp_path / "soc.v"
    top.write_text("module soc; endmodule\n")

    def elaborates(*files):
        return subprocess.run(["iverilog", "-g2005", "-o", str(tmp_path / "soc.vvp"), *map(str, files)],
                              capture_output=True, text=True)

    assert elaborates(a / "ttforge_accel.v", b / "core_b.v", top).returncode == 0
    b2 = tmp_path / "b2"
    assert main(["generate", str(artifact), "--lanes", "4", "-o", str(b2)]) == 0
    clash = elaborates(a / "ttforge_accel.v", b2 / "ttforge_accel.v", top)
    assert clash.returncode != 0     # the reason for the option


def test_throughput_mode_estimate_is_the_latency_and_the_cycles_per_vector(artifact, tmp_path, capsys):
    """With ``throughput = 1`` generate printed ``ProgramCycles.total`` as the cycles (and
    the utilization from it): neither what the RTL takes for a vector on an idle engine
    (``throughput_latency``: the copy of the staged input comes first) nor per vector
    back to back (``vector_cycles``); tests/hw/test_throughput.py checks both against the
    RTL. The table, --json and estimate.json now give both, the utilization from the
    cycles per vector."""
    from dataclasses import replace

    from ttforge.hw.cycles import program_cycles

    net = example_network()
    for throughput in (1, 0):
        cfg = replace(AccelConfig.for_network(net, lanes=4), throughput=throughput)
        cfg_file = tmp_path / f"tp{throughput}.json"
        cfg_file.write_text(cfg.to_json())
        prog = compile_program(net, cfg)
        pc = program_cycles(prog.descriptors, cfg, prog.globals)
        latency, per_vector = ((pc.throughput_latency, pc.vector_cycles) if throughput
                               else (pc.total, pc.total))
        out = tmp_path / f"g{throughput}"
        assert main(["generate", str(artifact), "--config", str(cfg_file), "--no-verilog", "--json",
                     "-o", str(out)]) == 0
        printed = json.loads(capsys.readouterr().out)
        for d in (printed, json.loads((out / "estimate.json").read_text())):
            assert (d["cycles"], d["vector_cycles"], d["throughput"]) == (latency, per_vector, throughput)
            assert d["busy_lane_cycles"] == pc.busy_lane_cycles
            assert d["utilization"] == pc.busy_lane_cycles / (4 * per_vector)
        if throughput:
            assert latency != pc.total and per_vector != pc.total
            assert main(["generate", str(artifact), "--config", str(cfg_file), "--no-verilog",
                         "-o", str(out)]) == 0
            table = capsys.readouterr().out
            assert f"a vector takes {latency:,} cycles on an idle engine" in table
            assert f"and {per_vector:,} each back to back" in table
            row = next(ln for ln in table.splitlines() if "per vector, back to back" in ln)
            assert f" {per_vector:,} " in row and f"{pc.busy_lane_cycles / (4 * per_vector):.1%}" in row
