"""Formal checks of the training top ``ttforge_train`` (``ttforge.sim.formal`` with
``target="train"``; SymbiYosys from pip). The real design is *proven* (k-induction,
depth 10) to keep the AXI4-Lite response rules, with the AR gate's window reads
answered within 8 cycles, and the ``s_axis`` / ``TLAST`` rules; the siblings show the
properties fail on tops broken on purpose (text faults of ``TRAIN_TEXT_FAULTS``) and
that the latency bound is tight. About 50 s in the default run (the proof and one
fault); ``-m slow`` adds the cover run, the other faults and the tightness check."""

from __future__ import annotations

import pytest

from ttforge.errors import ConfigError
from ttforge.hw.trainer.top import verilog
from ttforge.sim import formal
from ttforge.sim.formal import (TRAIN_TEXT_FAULTS, FormalToolMissing, check, formal_train_config,
                                instrument, text_fault)


def _run(tmp_path, **kw):
    try:
        return check(target="train", workdir=tmp_path / "formal", **kw)
    except FormalToolMissing as e:       # only a missing tool skips; anything else fails
        pytest.skip(str(e))


def test_instrumented_verilog_is_the_emitted_module_plus_the_property_instances():
    cfg = formal_train_config()
    text = verilog(cfg)
    t = formal.TARGETS["train"]
    inst = instrument(text, addr_bits=t.addr_bits(cfg), tdata_bits=t.tdata_bits(cfg),
                      free_memories=False, target="train", params=t.extra_params(cfg))
    head, rest = inst.split("`ifdef FORMAL\n", 1)
    block, tail = rest.split("`endif\n", 1)
    assert head + tail == text                    # the design itself is untouched
    # two wires (the AXI4-Lite module's window outputs, read by the training module)
    # and the two instances
    assert block.startswith("wire window_read_ok;\nwire window_write_ok;\nttforge_formal_props #(")
    assert block.count(";") == 4 and "ttforge_train_formal_props #(" in block
    assert ".window_read_ok(window_read_ok)" in block and ".REGION_LOG(" in block
    assert ".HAS_M_AXIS(0)" in block and f".R_LATENCY({formal._TRAIN_R_LATENCY})" in block and ".ALLOW_SOFT_RESET(1)" in block
    assert ".m_axis_tvalid(1'b0)" in block        # no m_axis: tied off, its rules not asserted
    for port in ("g_full", "host_rvalid", "t_pos", "s_axis_tlast"):
        assert f".{port}(" in block


def test_a_fault_of_the_other_top_or_a_stale_pattern_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="not a fault of ttforge_train"):
        check(target="train", fault="axil_double_resp", workdir=tmp_path)
    with pytest.raises(ConfigError, match="does not take"):
        check(config=formal_train_config(), target="accel", workdir=tmp_path)
    # every text fault matches the emitted Verilog exactly once, and changes it
    text = verilog(formal_train_config())
    for name in TRAIN_TEXT_FAULTS:
        assert text_fault(text, name) != text
    with pytest.raises(formal.FormalSetupError, match="matched 0 times"):
        text_fault(text.replace("assign t_bad", "assign t_bad_renamed"), "tlast_unchecked")


#: k-induction depth: two more than the read latency bound (a read's whole wait, its
#: request and its answer inside the induction window; one less is UNKNOWN)
PROVE_DEPTH = formal._TRAIN_R_LATENCY + 2


def test_training_top_protocol_properties_are_proven(tmp_path):
    r = _run(tmp_path, mode="prove", depth=PROVE_DEPTH)
    assert r.proven, (str(r), r.summary)
    assert r.failed == () and r.trace is None


def test_ar_gate_overwriting_its_latch_fails_the_proof(tmp_path):
    """Sibling (``ar_gate_overwrite``: the gate takes a new address while it holds one):
    the base case finds a read that is lost, from reset, and names the invariant."""
    r = _run(tmp_path, mode="prove", depth=PROVE_DEPTH, fault="ar_gate_overwrite")
    assert r.status == "FAIL", (str(r), r.summary)
    assert "ar_tracked" in r.failed
    assert r.trace is not None and r.trace.is_file() and r.trace_kind == "basecase"


@pytest.mark.slow
def test_ar_gate_overwrite_breaks_a_protocol_rule(tmp_path):
    """The same fault without the helper invariants: a protocol rule fails (the lost
    read is never answered; with the host port's six-cycle read, BMC meets
    an answer the response counter no longer matches to a request first, at step 10)."""
    r = _run(tmp_path, mode="bmc", depth=12, fault="ar_gate_overwrite", helpers=False)
    assert r.status == "FAIL" and {"r_answered", "r_has_request"} & set(r.failed), str(r)


@pytest.mark.slow
def test_gate_skipping_the_fetch_answers_twice(tmp_path):
    r = _run(tmp_path, mode="bmc", depth=12, fault="gate_skip_wait", helpers=False)
    assert r.status == "FAIL" and "r_has_request" in r.failed, str(r)


@pytest.mark.slow
def test_an_unchecked_tlast_fails_the_stream_rule(tmp_path):
    r = _run(tmp_path, mode="bmc", depth=12, fault="tlast_unchecked", helpers=False)
    assert r.status == "FAIL" and "s_tlast_flagged" in r.failed, str(r)


def test_the_read_latency_bound_follows_the_engine():
    from ttforge.hw.trainer.engine import HOST_READ_LATENCY
    assert formal._TRAIN_R_LATENCY == 1 + 1 + HOST_READ_LATENCY + 1 + 2


@pytest.mark.slow
def test_the_read_latency_bound_is_tight(tmp_path):
    """A window read that meets a window write waits 10 cycles: bound 11 holds (the proof
    above), bound 10 fails from reset."""
    r = _run(tmp_path, mode="bmc", depth=formal._TRAIN_R_LATENCY + 3, r_latency=formal._TRAIN_R_LATENCY - 1)
    assert r.status == "FAIL" and r.failed == ("r_answered",), str(r)


@pytest.mark.slow
def test_the_assumptions_leave_window_accesses_and_stream_errors_reachable(tmp_path):
    """Cover: register and window reads and writes answered OKAY, two writes in flight,
    a sample beat taken, a TLAST error raised (the environment is not vacuous)."""
    r = _run(tmp_path, mode="cover", depth=12)
    assert r.passed, (str(r), r.summary)
    assert set(r.covered) == set(formal.TARGETS["train"].covers)


@pytest.mark.slow
def test_proven_at_the_default_config(tmp_path):
    """The default TrainEngineConfig (4 lanes, 4096-word memories, 64 descriptors)."""
    from ttforge.hw.trainer.program import TrainEngineConfig

    r = _run(tmp_path, config=TrainEngineConfig(), mode="prove", depth=PROVE_DEPTH)
    assert r.proven, (str(r), r.summary)


def test_properties_are_documented():
    src = formal.props_source("train")
    for name in formal.TARGETS["train"].properties:
        assert name in formal.PROPERTIES or name in formal.TRAIN_PROPERTIES, name
        assert f"{name}: assert(" in src, name
    for name in formal.TARGETS["train"].covers:
        assert f"{name}: cover(" in src, name
