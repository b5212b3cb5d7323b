"""The cocotb testbench's output framing (``ttforge.sim.tb``): every output frame is
exactly ``ceil(OUT_COUNT / E)`` beats with ``tlast`` on the last and its unused lanes 0,
and no frame comes beyond the vectors sent; anything else fails the job with a named
first divergence, and ``regress`` (``run_case``) fails the case.

A frame was cut or zero-padded to ``OUT_COUNT`` elements before it was compared: a load
image whose ``OUT_COUNT`` word had one bit flipped (7 -> 15) sent 15-element vectors and
the job passed with outputs equal to the golden. The fault ``extra_beat`` (one zero beat
more per vector, ``tlast`` on it) passed the same way on Icarus and Verilator."""

from __future__ import annotations

import numpy as np
import pytest

from ttforge.cli import main
from ttforge.hw.program import compile_program
from ttforge.ir.executor import execute
from ttforge.sim.cases import make_case
from ttforge.sim.regress import regress

from tests.support.sims import _available

#: seed 4 of ``regress``: 2 elements per beat, 7 outputs (4 beats, the last half used)
SEED = 4


def _need(sim):
    reason = _available(sim)
    if reason:
        pytest.skip(reason)


# ------------------------------------------------------------------------ the frame rule
class _Sink:
    """The two things :meth:`_Bench.stray` asks of ``AxiStreamSink``."""

    def __init__(self, frames: int, active: bool = False):
        self.frames, self.active = frames, active

    def empty(self) -> bool:
        return self.frames == 0

    def recv_nowait(self):
        self.frames -= 1


def _bench(E: int = 2, sink: _Sink | None = None):
    from ttforge.sim.tb import _Bench

    b = _Bench.__new__(_Bench)      # no simulator: the frame rule is plain Python
    b.E, b.W, b.out_count, b.sink, b.last_stream = E, 8, 7, sink, None
    return b


def _run(coro):
    """Drive a coroutine that awaits nothing (no simulator trigger) to its value."""
    with pytest.raises(StopIteration) as done:
        coro.send(None)
    return done.value.value


def test_a_frame_is_ceil_n_over_e_beats_with_its_unused_lanes_zero():
    b = _bench(E=2)
    good = [1, -2, 3, 4, 5, 6, 7, 0]                 # 7 elements in 4 beats, lane 1 unused
    assert b.frame_error(0, good, 7) is None
    longer = b.frame_error(3, good + [0, 0], 7)      # a beat more, tlast on it
    assert longer["vector"] == 3 and longer["expected_beats"] == 4 and longer["got_beats"] == 5
    assert longer["detail"] == ("vector 3: expected 4 beat(s) (7 elements, 2 per beat) with tlast on "
                                "beat 4; got tlast on beat 5 (10 lanes)")
    shorter = b.frame_error(0, good[:6], 7)          # tlast one beat early
    assert (shorter["expected_beats"], shorter["got_beats"]) == (4, 3)
    pad = b.frame_error(1, good[:7] + [9], 7)        # the unused lane carries an element
    assert pad["got_beats"] == 4 and "unused lane 1 of its last beat holds 9" in pad["detail"]


def test_frames_after_the_vectors_are_charged_to_the_stream():
    """Frames the sink holds when none is due are more frames than vectors: the last
    stream's frame_error; before any stream they are returned to the caller."""
    b = _bench(sink=_Sink(2))
    assert _run(b.note_stray()) == 2 and b.sink.empty()
    b.sink = _Sink(1, active=False)
    b.last_stream = {"received": 6, "timeout": False, "frame_error": None}
    assert _run(b.note_stray()) == 0
    err = b.last_stream["frame_error"]
    assert err["vector"] == 6 and "more frames than vectors sent" in err["detail"]
    # the sibling: a stream whose frames all came, with nothing after them, keeps no error
    b.sink, b.last_stream = _Sink(0), {"received": 6, "timeout": False, "frame_error": None}
    assert _run(b.note_stray()) == 0 and b.last_stream["frame_error"] is None


# ------------------------------------------------------------------------ simulations
def test_out_count_flipped_load_image_fails_on_icarus():
    """The probe's image: OUT_COUNT 7 -> 15 by one bit; the RTL sends 15-element
    vectors. The job fails naming vector 0, 7 beats due and 15 got, and no output row
    (cut to 7 elements) is offered as a vector; the real image passes."""
    _need("icarus")
    from ttforge.sim import runner

    c = make_case(3, 6)                          # 1 element per beat, 7 outputs
    prog = compile_program(c.net, c.config)
    golden = execute(c.net, c.inputs)
    w = runner.load_writes(prog).copy()
    i = int(np.flatnonzero(w[:, 0] == runner.register_addresses(c.config)["OUT_COUNT"])[0])
    assert w[i, 1] == 7
    w[i, 1] ^= 1 << 3
    b = runner.build(c.config, "icarus")
    r = runner.run_inference(b, prog, c.inputs, writes=w, expected=golden)
    assert not r.job.passed
    assert r.frame_error["vector"] == 0
    assert (r.frame_error["expected_beats"], r.frame_error["got_beats"]) == (7, 15)
    assert r.job.op("outputs")["frame_beats"] == [15] * 6
    assert r.outputs.shape != golden.shape
    ok = runner.run_inference(b, prog, c.inputs, expected=golden)
    assert ok.job.passed and ok.frame_error is None and np.array_equal(ok.outputs, golden)


@pytest.mark.parametrize("sim", ["icarus", "verilator", "verilator-native"])
def test_extra_beat_fault_fails_the_regression(sim, tmp_path):
    """``regress --fault extra_beat``: each vector one beat longer; the case FAILs on
    every simulator (the testbench's frame check, the native harness's beat count)."""
    _need("icarus" if sim == "icarus" else "verilator")
    rep = regress([SEED], sim, vectors=3, fault="extra_beat", out_dir=tmp_path / "out")
    res = rep.results[0]
    assert rep.failed == 1 and res.result == "FAIL", res.reason
    if sim == "verilator-native":
        assert "output vectors had a wrong number of beats" in res.reason
    else:
        assert ("output framing: vector 0: expected 4 beat(s) (7 elements, 2 per beat) with tlast on beat 4; "
                "got tlast on beat 5") in res.reason
        assert res.divergence["output"]["vector"] == 0
    assert res.reproducer


def test_regress_cli_exits_1_for_the_extra_beat_fault(tmp_path):
    _need("icarus")
    argv = ["regress", "--seed-start", str(SEED), "--seeds", "1", "--vectors", "2", "--sim", "icarus"]
    assert main([*argv, "--fault", "extra_beat", "--out", str(tmp_path / "bad")]) == 1
    assert main([*argv, "--out", str(tmp_path / "ok")]) == 0     # the sibling: the real RTL passes
