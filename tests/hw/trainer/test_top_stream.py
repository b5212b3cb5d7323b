"""``TrainAccel``'s stream and error edges in the Amaranth simulator (issue 14: "reset,
back-pressure and bad-descriptor behaviour as for inference: the engine never hangs and
reports an error code"), driven over AXI4-Lite and AXI4-Stream like
``tests/hw/trainer/test_top.py``:

* the ``TLAST`` check (``CTRL.TLAST_CHECK``): a stream with ``tlast`` on every label
  trains exactly; ``tlast`` early / missing stops the step with ``TLAST_EARLY`` /
  ``TLAST_LATE`` naming the sample, discards the rest of a late packet, and the next
  batch trains exactly; without the check ``tlast`` is ignored;
* errors the other tests do not reach: an address beyond ``ACT`` / ``CMEM`` in a
  descriptor, ``BAD_PROGRAM``; each reported with its operation, and the engine runs the
  good program afterwards;
* a soft reset in the middle of a batch and in the middle of the computation, and a
  stream that stops mid-sample for a long time and resumes (the step is exact and
  ``CYCLES`` grows by exactly the pause).

Every "trains exactly" is ``compare_states(...) is None`` against the golden trainer,
with a sibling: the same comparison of a state with one bit flipped must fail.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from ttforge.errors import DeviceError
from ttforge.hw.trainer.engine import op_cycles
from ttforge.hw.trainer.host import AsyncTrainHost
from ttforge.hw.trainer.program import compile_training, encode_op
from ttforge.hw.trainer.regmap import TOP_ERRORS, train_register_map
from ttforge.ir.random import train_case
from ttforge.ir.train import train_step
from ttforge.ir.train_diverge import compare_states
from tests.support.train_top import simulate_top as _simulate
from tests.support.train_top import top_config as _config

CTRL_TLAST_CHECK = 1 << 3
STATUS_BUSY, STATUS_ERROR, STATUS_IN_OPEN = 1, 1 << 2, 1 << 4


def _case(seed=0, batch=3):
    return train_case(seed, batch=batch, n_layers=2, d=2, rank=2, n_in=8, hidden=6, n_out=3)


class _Stream:
    """An AXI4-Stream source whose ``tlast`` and pauses a test chooses: ``tlast(b, i, n)``
    for element ``i`` of the ``n`` elements of sample ``b``; ``extra``: beats appended to
    a sample (with ``tlast`` on the last of them); ``pause``: ``(b, i, cycles)``, idle
    cycles before that element."""

    def __init__(self, bus, tlast=None, extra=None, pause=None):
        self.bus = bus
        self.tlast = tlast or (lambda b, i, n: i == n - 1)
        self.extra = extra or {}
        self.pause = pause
        self.beats = 0          # beats handshaken

    async def __call__(self, frames):
        ctx, s = self.bus.ctx, self.bus.dut.s_axis
        for b, frame in enumerate(frames):
            beats = [(v, self.tlast(b, i, len(frame))) for i, v in enumerate(frame)]
            more = self.extra.get(b, [])
            beats += [(v, j == len(more) - 1) for j, v in enumerate(more)]
            for i, (v, last) in enumerate(beats):
                if self.pause is not None and self.pause[:2] == (b, i):
                    ctx.set(s.tvalid, 0)
                    for _ in range(self.pause[2]):
                        await ctx.tick()
                ctx.set(s.tdata, int(v) & 0xFF)
                ctx.set(s.tlast, int(last))
                ctx.set(s.tvalid, 1)
                for _ in range(1_000):           # a bounded wait: the top must not hang
                    if ctx.get(s.tready):
                        break
                    await ctx.tick()
                else:
                    ctx.set(s.tvalid, 0)
                    return                       # refused: the caller looks at STATUS
                await ctx.tick()
                self.beats += 1
        ctx.set(s.tvalid, 0)


def _run(cfg, body):
    """``body(ctx, bus, dut)`` in ``test_top``'s simulation (each test builds its host
    with its own stream source)."""
    return _simulate(cfg, lambda ctx, bus, host: body(ctx, bus, bus.dut))


def _host(cfg, bus, stream):
    return AsyncTrainHost(cfg, bus.read32, bus.write32, stream)


def _exact(got, golden):
    """``compare_states(got, golden)`` and its sibling: the same comparison after one bit
    of one stored core element of ``got`` is flipped (it must report a difference)."""
    diff = compare_states(got, golden)
    cores = [np.array(c, copy=True) for c in got.layers[0].masters]
    cores[0].reshape(-1)[0] ^= 1
    bad = got.replace(layers=(replace(got.layers[0], masters=tuple(cores)), *got.layers[1:]))
    return diff, compare_states(bad, golden)


def _assert_exact(pair):
    diff, sibling = pair
    assert diff is None, diff
    assert sibling is not None


# --------------------------------------------------------------------------- TLAST


@pytest.mark.slow      # the recovery of the next test runs the same stream, with the check on
def test_tlast_on_every_label_trains_exactly_with_the_check_on():
    state, x, y, _ = _case()
    cfg = _config(state, lanes=2)

    async def body(ctx, bus, dut):
        host = _host(cfg, bus, _Stream(bus))
        prog = compile_training(state, 3, cfg)
        await host.load_program(prog)
        await host.write_reg("CTRL", CTRL_TLAST_CHECK)
        res = await host.train_step(state, prog, x, y)
        return _exact(res.state, train_step(state, x, y)), await host.read_reg("ERROR_CODE")

    pair, code = _run(cfg, body)
    _assert_exact(pair)
    assert code == 0


@pytest.mark.parametrize("kind", ["early", "late"])
def test_a_tlast_error_stops_the_step_names_the_sample_and_the_next_batch_trains(kind):
    """Sample 1 breaks the rule: ``tlast`` on its feature 2 (early), or no ``tlast`` on
    its label and three more beats before one (late: those are discarded). The step
    stops with the code and the sample; after ``CMD.CLEAR_ERROR`` the host streams the
    batch again (the check still on) and the step is exact."""
    state, x, y, _ = _case(2)
    cfg = _config(state, lanes=2)
    n = x.shape[1] + 1
    if kind == "early":
        tlast = (lambda b, i, n_: i == 2 if b == 1 else i == n_ - 1)
        extra = {}
    else:
        tlast = (lambda b, i, n_: False if b == 1 else i == n_ - 1)
        extra = {1: [5, 6, 7]}
    code = TOP_ERRORS["TLAST_EARLY" if kind == "early" else "TLAST_LATE"]

    async def body(ctx, bus, dut):
        bad = _Stream(bus, tlast=tlast, extra=extra)
        host = _host(cfg, bus, bad)
        prog = compile_training(state, 3, cfg)
        await host.load_program(prog)
        await host.write_reg("CTRL", CTRL_TLAST_CHECK | 0b100)     # and the error interrupt
        out = {}
        with pytest.raises(DeviceError) as e:
            await host.run_batch(x, y)
        out["err"] = (e.value.code, e.value.name, e.value.op)
        out["beats"] = bad.beats
        st = await host.status()
        out["status"] = st
        out["irq"] = ctx.get(dut.irq)
        out["steps"] = await host.read_reg("STEPS")
        # while the error stands nothing starts (CMD.START is refused as armed-then-cleared)
        await host.write_reg("CMD", 1)
        for _ in range(20):
            await ctx.tick()
        out["still"] = (await host.status()) & (STATUS_BUSY | STATUS_ERROR | STATUS_IN_OPEN)
        await host.clear_error()
        bad.tlast, bad.extra = _Stream(bus).tlast, {}        # a well-formed stream again
        res = await host.train_step(state, prog, x, y)
        out["exact"] = _exact(res.state, train_step(state, x, y))
        return out

    out = _run(cfg, body)
    assert out["err"] == (code, "TLAST_EARLY" if kind == "early" else "TLAST_LATE", 1), out["err"]
    # every beat up to the faulty one was taken; a late packet's rest was taken and dropped
    assert out["beats"] == (n + 3 if kind == "early" else 2 * n + 3), out["beats"]
    assert out["status"] & STATUS_ERROR and not out["status"] & STATUS_BUSY
    assert not out["status"] & STATUS_IN_OPEN
    assert out["irq"] == 1 and out["steps"] == 0
    assert out["still"] == STATUS_ERROR
    _assert_exact(out["exact"])


@pytest.mark.slow
def test_without_the_check_tlast_is_ignored():
    state, x, y, _ = _case(3)
    cfg = _config(state, lanes=2)

    async def body(ctx, bus, dut):
        # tlast on every beat, then on none
        stream = _Stream(bus, tlast=lambda b, i, n: True)
        host = _host(cfg, bus, stream)
        prog = compile_training(state, 3, cfg)
        await host.load_program(prog)
        r1 = await host.train_step(state, prog, x, y)
        stream.tlast = lambda b, i, n: False
        s1 = r1.state
        r2 = await host.train_step(s1, r1.program, x, y)
        return (_exact(r1.state, train_step(state, x, y)), _exact(r2.state, train_step(s1, x, y)),
                await host.read_reg("ERROR_CODE"))

    e1, e2, code = _run(cfg, body)
    _assert_exact(e1)
    _assert_exact(e2)
    assert code == 0


# --------------------------------------------------------------------------- errors


def _corrupt(prog, what):
    ops = list(prog.ops)
    i = next(k for k, op in enumerate(ops) if op.OP == 0)      # the first CONTRACT
    if what == "act_range":
        ops[i] = replace(ops[i], O_BASE=prog.regions.act_words + 10_000)
    elif what == "cmem_range":
        ops[i] = replace(ops[i], V_BASE=10_000)
    elif what == "sat_bits":
        ops[i] = replace(ops[i], SAT_BITS=1)
    return i, [w for op in ops for w in encode_op(op)]


@pytest.mark.parametrize("what,name", [
    ("act_range", "ACT_RANGE"), ("batch0", "BAD_PROGRAM"),
    pytest.param("cmem_range", "CMEM_RANGE", marks=pytest.mark.slow),
    pytest.param("sat_bits", "BAD_DESC", marks=pytest.mark.slow)])
def test_a_bad_descriptor_or_program_is_reported_and_the_engine_recovers(what, name):
    state, x, y, _ = _case(4)
    cfg = _config(state, lanes=2)
    rm = train_register_map(cfg)

    async def body(ctx, bus, dut):
        host = _host(cfg, bus, _Stream(bus))
        prog = compile_training(state, 3, cfg)
        await host.load_program(prog)
        op = 0
        if what == "batch0":
            await host.write_reg("BATCH", 0)
        else:
            op, words = _corrupt(prog, what)
            await host.write_window("DMEM", 0, words)
        with pytest.raises(DeviceError) as e:
            await host.run_batch(x, y)
        got = (e.value.name, e.value.op)
        # the engine is idle: the windows answer again, with the error standing
        idle = (await host.status()) & (STATUS_BUSY | STATUS_ERROR)
        readable = (await bus._read(rm.window("CMEM").base))[1]
        await host.clear_error()
        await host.load_program(prog)
        res = await host.train_step(state, prog, x, y)
        return got, op, idle, readable, _exact(res.state, train_step(state, x, y))

    got, op, idle, readable, pair = _run(cfg, body)
    assert got == (name, op)
    assert idle == STATUS_ERROR and readable == 0
    _assert_exact(pair)


# --------------------------------------------------------------------------- reset, pauses


@pytest.mark.parametrize("when", ["mid_step", pytest.param("mid_batch", marks=pytest.mark.slow)])
def test_a_soft_reset_aborts_the_step_and_the_next_one_is_exact(when):
    """``mid_batch``: after 1.5 samples the host stops streaming and soft-resets (the
    engine leaves the input, ``tready`` drops); ``mid_step``: the whole batch is in and
    the engine computes. Either way: idle at once, no error, no step counted, and the
    step run afterwards (the images reloaded: an aborted step may have updated some) is
    exact."""
    state, x, y, _ = _case(5)
    cfg = _config(state, lanes=2)
    n = x.shape[1] + 1

    async def body(ctx, bus, dut):
        host = _host(cfg, bus, _Stream(bus))
        prog = compile_training(state, 3, cfg)
        await host.load_program(prog)
        await host.write_reg("CMD", 1)                   # START
        frames = [[int(v) for v in x[b]] + [int(y[b])] for b in range(3)]
        if when == "mid_batch":
            await _Stream(bus)([frames[0], frames[1][:n // 2]])
        else:
            await _Stream(bus)(frames)
            for _ in range(30):
                await ctx.tick()
        before = await host.status()
        await host.soft_reset()
        after = await host.status()
        steps = await host.read_reg("STEPS")
        tready = ctx.get(dut.s_axis.tready)
        await host.load_program(prog)
        res = await host.train_step(state, prog, x, y)
        return before, after, steps, tready, _exact(res.state, train_step(state, x, y))

    before, after, steps, tready, pair = _run(cfg, body)
    assert before & STATUS_BUSY
    assert after & (STATUS_BUSY | STATUS_ERROR | STATUS_IN_OPEN) == 0 and tready == 0
    assert steps == 0
    _assert_exact(pair)


def test_a_stream_that_stops_mid_sample_resumes_and_the_pause_is_counted_exactly():
    state, x, y, _ = _case(6)
    cfg = _config(state, lanes=2)
    pause = 400

    async def body(ctx, bus, dut):
        out = {}
        for p in (0, pause):
            host = _host(cfg, bus, _Stream(bus, pause=(1, 3, p)))
            prog = compile_training(state, 3, cfg)
            await host.load_program(prog)
            c0 = (await host.counters())["CYCLES"]
            res = await host.train_step(state, prog, x, y)
            out[p] = ((await host.counters())["CYCLES"] - c0, _exact(res.state, train_step(state, x, y)))
        out["model"] = sum(op_cycles(op, cfg, prog.slots) for op in prog.ops) + x.shape[0] * (x.shape[1] + 1)
        return out

    out = _run(cfg, body)
    _assert_exact(out[0][1])
    _assert_exact(out[pause][1])
    # the host's own bus traffic (CMD.START before the first beat) adds the same cycles
    # to both runs: the pause adds exactly its length
    assert out[pause][0] - out[0][0] == pause
    assert out[0][0] >= out["model"]
