"""``ttforge report``'s command line without the toolchain's minutes: its outputs are
checked before synthesis, and a design too big for the device is the user's (exit 2)."""

from __future__ import annotations

import pytest

from ttforge.cli import main
from ttforge.errors import SynthError
from tests.support.readonly import read_only


@pytest.fixture
def no_toolchain_run(monkeypatch):
    """The tools count as installed; ``report`` (yosys + nextpnr) records its calls."""
    calls = []
    monkeypatch.setattr("ttforge.hw.tools.yowasp_command", lambda name: [name])
    monkeypatch.setattr("ttforge.hw.cli.report", lambda *a, **kw: calls.append((a, kw)) or
                        {"config": {}, "devices": {}})
    return calls


@pytest.mark.parametrize("flag", ["-o", "--json"])
def test_an_output_that_cannot_be_written_is_one_line_before_synthesis(tmp_path, capsys, monkeypatch,
                                                                        no_toolchain_run, flag):
    """report -o PATH on a read-only mount (creating a file there fails with EROFS, which
    root's permissions do not bypass) ran a minute of Yosys and nextpnr, then exit 2."""
    ro = tmp_path / "ro"
    ro.mkdir()
    read_only(monkeypatch, ro)
    assert main(["report", "--device", "ice40up5k", flag, str(ro / "r.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{flag} {ro / 'r.json'} cannot be written" in err, err
    assert no_toolchain_run == []


def test_a_design_that_does_not_fit_is_exit_2_as_in_build(capsys, monkeypatch):
    """nextpnr's "does not fit" is the configuration's (lanes, depths, the device chosen):
    exit 2, as ttforge build and the flow say it (report said it with exit 3); another
    toolchain failure stays exit 3."""
    monkeypatch.setattr("ttforge.hw.tools.yowasp_command", lambda name: [name])
    why = ["the design does not fit iCE40UP5K-SG48: ICESTORM_LC 6000/5280 (113%); use fewer lanes "
           "or smaller widths/depths (log: nextpnr.log)"]

    def report(*a, **kw):
        raise SynthError(why[0])

    monkeypatch.setattr("ttforge.hw.cli.report", report)
    assert main(["report", "--device", "ice40up5k"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"ttforge report: error: {why[0]}"
    why[0] = "nextpnr-ice40 failed: ERROR: something else (log: nextpnr.log)"
    assert main(["report", "--device", "ice40up5k"]) == 3


@pytest.mark.parametrize("seed", ["-1", str(2**31), str(2**63), "99999999999999999999999"])
def test_a_placer_seed_nextpnr_cannot_take_is_one_line_before_synthesis(capsys, no_toolchain_run, seed):
    """report --seed 10^23 ran Yosys, then nextpnr refused it (exit 3, as if the tool had
    failed); -1 and 2^63 ran to the end. nextpnr's --seed is a 32-bit int."""
    assert main(["report", "--device", "ice40up5k", "--seed", seed]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"ttforge report: error: --seed {seed} is out of range; give an integer in "
                   f"0..2147483647 (nextpnr's placer seed is a 32-bit int)"), err
    assert no_toolchain_run == []


@pytest.mark.parametrize("seed", [0, 2**31 - 1])
def test_a_placer_seed_in_range_reaches_nextpnr(no_toolchain_run, seed):
    assert main(["report", "--device", "ice40up5k", "--seed", str(seed)]) == 0
    assert no_toolchain_run[0][1]["seed"] == seed


def test_the_library_refuses_a_placer_seed_before_synthesis(monkeypatch):
    """implement() (report's and bench's) checks the seed before Yosys runs."""
    from ttforge.errors import ConfigError
    from ttforge.hw import synth

    monkeypatch.setattr(synth, "run_tool", lambda *a, **kw: pytest.fail("a tool ran"))
    with pytest.raises(ConfigError, match=r"^seed -1 is out of range"):
        synth.implement("module ttforge_accel; endmodule", "ice40up5k", seed=-1)


def test_the_critical_path_terms_add_up_to_its_delay(capsys, monkeypatch):
    """The critical-path line of the table is a sum that adds up: nextpnr's routed iCE40
    path of the probe's report (1.39 clk-to-q, 10.898 logic, 24.189 routing, 0.824 setup:
    37.301 ns) printed "37.30 ns = 1.39 clk-to-q + 10.90 logic + 24.19 routing", terms
    that add up to 36.48 (the setup was left out). The terms as printed sum to the total
    as printed, also where rounding each apart would not (8.013 = 5.83 + 0.236 + 1.947)."""
    def device(cp):
        return {"resources": {"lc": {"used": 3605, "available": 5280}}, "synth_cells": {},
                "fmax_mhz": 26.81, "target_mhz": 30.0, "critical_path": cp, "harness": None}

    ice = {"delay_ns": 37.301, "clk_to_q_ns": 1.39, "logic_ns": 10.898, "routing_ns": 24.189,
           "setup_ns": 0.824, "logic_levels": 12, "start": {"cell": "a"}, "end": {"cell": "b"}}
    ecp5 = {"delay_ns": 8.013, "clk_to_q_ns": 5.83, "logic_ns": 0.236, "routing_ns": 1.947,
            "setup_ns": 0.0, "logic_levels": 1, "start": {"cell": "c"}, "end": {"cell": "d"}}
    monkeypatch.setattr("ttforge.hw.tools.yowasp_command", lambda name: [name])
    monkeypatch.setattr("ttforge.hw.cli.report", lambda *a, **kw: {
        "config": {}, "devices": {"ice40up5k": device(ice), "ecp5-85f": device(ecp5)}})
    assert main(["report"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("critical path ")]
    assert lines[0] == ("critical path ice40up5k: 37.30 ns = 1.39 clk-to-q + 10.90 logic (12 levels) + "
                        "24.19 routing + 0.82 setup, from a to b")
    for ln, cp in zip(lines, (ice, ecp5)):
        total, terms = ln.split(": ", 1)[1].split(", from")[0].split(" ns = ")
        cents = [round(100 * float(t.split()[0])) for t in terms.split(" + ")]
        assert sum(cents) == round(100 * float(total)) == round(100 * cp["delay_ns"]), ln
        assert [t.split()[1] for t in terms.split(" + ")] == ["clk-to-q", "logic", "routing", "setup"]


@pytest.mark.parametrize("delay", [5.994, 5.7])
def test_terms_above_the_delay_name_no_negative_term(delay):
    """Terms that add up to more than the delay (a rounding of nextpnr's figures) printed
    "+ -0.30 other" (review V7): no term is negative, and they still add up."""
    from ttforge.hw.cli import _path_sum

    line = _path_sum({"delay_ns": delay, "clk_to_q_ns": 1.0, "logic_ns": 2.0, "routing_ns": 3.0,
                      "setup_ns": 0.0, "logic_levels": 3})
    total, terms = line.split(" ns = ")
    cents = [round(100 * float(t.split()[0])) for t in terms.split(" + ")]
    assert "other" not in line and min(cents) >= 0 and sum(cents) == round(100 * delay), line
