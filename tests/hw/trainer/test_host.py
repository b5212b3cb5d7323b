"""The training host driver against a recording bus (no simulator): what it writes where,
that only changed descriptor words are rewritten, that MAXACC halves are joined, that
engine errors and timeouts surface as one exception each, and that the blocking and
the coroutine drivers issue the same accesses."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import numpy as np
import pytest

from ttforge.errors import ConfigError
from ttforge.errors import DeviceError, DeviceTimeout
from ttforge.hw.trainer.host import AsyncTrainHost, TrainHost
from ttforge.hw.trainer.program import TrainEngineConfig, TrainProgram, compile_training
from ttforge.hw.trainer.regmap import train_register_map
from ttforge.ir.random import train_case


def _setup():
    state, x, y, _ = train_case(0, batch=4, n_layers=2, d=2, rank=2, n_in=8, hidden=6, n_out=3)
    cfg = TrainEngineConfig(lanes=4, train=state.config, act_depth=512, grad_depth=256, core_depth=512,
                            bias_depth=64, desc_depth=48, max_batch=16, max_classes=8)
    return state, x, y, cfg, compile_training(state, 4, cfg)


class _Bus:
    """Words by byte address; STATUS answers DONE (or ERROR) after ``polls`` reads."""

    def __init__(self, rm, polls=2, error=None):
        self.rm, self.mem, self.log, self.frames = rm, {}, [], []
        self.polls, self.error, self.left = polls, error, None

    def read32(self, a):
        self.log.append(("r", a))
        if a == self.rm.addr("STATUS"):
            if self.left is None:
                return 0
            self.left -= 1
            if self.left > 0:
                return 1
            return 4 if self.error else 2
        if a == self.rm.addr("ERROR_CODE"):
            return self.error or 0
        return self.mem.get(a, 0)

    def write32(self, a, v):
        self.log.append(("w", a, v))
        self.mem[a] = v
        if a == self.rm.addr("CMD") and v & 1:
            self.left = self.polls

    def stream(self, frames):
        self.frames.append(frames)


def test_load_program_writes_every_part_where_the_map_says():
    state, x, y, cfg, prog = _setup()
    rm = train_register_map(cfg)
    bus = _Bus(rm)
    host = TrainHost(cfg, bus.read32, bus.write32, bus.stream)
    host.load_program(prog)
    dm, cm, bm = rm.window("DMEM"), rm.window("CMEM"), rm.window("BMEM")
    assert [bus.mem[dm.base + 4 * i] for i in range(len(prog.words))] == list(prog.words)
    assert [bus.mem[cm.base + 4 * i] for i in range(prog.cmem.size)] == [int(v) & 0xFFFFFFFF for v in prog.cmem]
    assert [bus.mem[bm.base + 4 * i] for i in range(prog.bmem.size)] == [int(v) & 0xFFFFFFFF for v in prog.bmem]
    for name in ("BATCH", "BW_LOG", "IN_COUNT", "IN_BASE", "STOCH", "RNG"):
        assert bus.mem[rm.addr(name)] == prog.globals[name], name


def test_rewrite_shifts_writes_only_the_changed_words():
    state, x, y, cfg, prog = _setup()
    rm = train_register_map(cfg)
    bus = _Bus(rm)
    host = TrainHost(cfg, bus.read32, bus.write32, bus.stream)
    host.load_program(prog)
    ops = list(prog.ops)
    j = next(i for i, op in enumerate(ops) if op.OP == 0)
    ops[j] = replace(ops[j], SHIFT=ops[j].SHIFT + 1)
    changed = TrainProgram(**{**prog.__dict__, "ops": tuple(ops)})
    bus.log.clear()
    assert host.rewrite_shifts(changed) == 1
    assert bus.log == [("w", rm.window("DMEM").base + 4 * 32 * j, changed.words[32 * j])]
    bus.log.clear()
    assert host.rewrite_shifts(changed) == 0 and bus.log == []


def test_run_batch_streams_samples_then_labels_and_waits_for_done():
    state, x, y, cfg, prog = _setup()
    bus = _Bus(train_register_map(cfg), polls=3)
    host = TrainHost(cfg, bus.read32, bus.write32, bus.stream)
    host.load_program(prog)
    host.run_batch(x, y)
    assert bus.frames == [[[int(v) for v in x[b]] + [int(y[b])] for b in range(len(y))]]
    with pytest.raises(ConfigError, match="the loaded program takes"):
        host.run_batch(x[:2], y[:2])


@pytest.mark.parametrize("what,value,msg", [
    ("label", 200, "a label of the batch is 200, outside the training engine's signed 8-bit stream elements "
                   "(act_bits=8, -128..127)"),
    ("feature", -129, "a feature of the batch is -129, outside the training engine's signed 8-bit stream")])
def test_run_batch_refuses_a_value_its_stream_element_would_wrap(what, value, msg):
    # the stream keeps the low act_bits: label 200 reached the engine as -56, 264 as 8
    state, x, y, cfg, prog = _setup()
    x, y = x.copy(), y.copy()
    if what == "label":
        y[1] = value
    else:
        x[2, 3] = value
    bus = _Bus(train_register_map(cfg))
    host = TrainHost(cfg, bus.read32, bus.write32, bus.stream)
    host.load_program(prog)
    with pytest.raises(ConfigError) as e:
        host.run_batch(x, y)
    assert msg in str(e.value) and "\n" not in str(e.value)
    assert bus.frames == []          # nothing streamed, no step started


def test_engine_error_and_timeout():
    state, x, y, cfg, prog = _setup()
    bus = _Bus(train_register_map(cfg), error=7 | (5 << 16))
    host = TrainHost(cfg, bus.read32, bus.write32, bus.stream)
    with pytest.raises(DeviceError, match=r"error 7 \(BAD_LABEL.*operation 5"):
        host.run_batch(x, y)
    bus = _Bus(train_register_map(cfg), polls=10**9)
    host = TrainHost(cfg, bus.read32, bus.write32, bus.stream)
    with pytest.raises(DeviceTimeout):
        host.run_batch(x, y, max_polls=5)


def test_maxacc_halves_and_signed_windows():
    state, x, y, cfg, prog = _setup()
    rm = train_register_map(cfg)
    bus = _Bus(rm)
    mx, cm = rm.window("MAXACC"), rm.window("CMEM")
    bus.mem[mx.base], bus.mem[mx.base + 4] = 0xFFFFFFFF, 0x3
    bus.mem[cm.base] = 0xFFFFFFFE
    host = TrainHost(cfg, bus.read32, bus.write32, bus.stream)
    assert host.read_maxacc(1).tolist() == [(3 << 32) | 0xFFFFFFFF]
    assert host.read_window("CMEM", 0, 1) == [-2]
    with pytest.raises(ConfigError, match="read-only"):
        host.write_window("ACT", 0, [1])
    with pytest.raises(ConfigError, match="outside the window"):
        host.read_window("LABEL", 0, cfg.max_batch + 1)


def test_blocking_and_coroutine_drivers_issue_the_same_accesses():
    state, x, y, cfg, prog = _setup()
    rm = train_register_map(cfg)
    a, b = _Bus(rm), _Bus(rm)
    TrainHost(cfg, a.read32, a.write32, a.stream).load_program(prog)
    TrainHost(cfg, a.read32, a.write32, a.stream).read_state(prog)

    async def r(addr):
        return b.read32(addr)

    async def w(addr, v):
        b.write32(addr, v)

    async def s(frames):
        b.stream(frames)

    async def main():
        h = AsyncTrainHost(cfg, r, w, s)
        await h.load_program(prog)
        return await h.read_state(prog)

    got = asyncio.run(main())
    assert a.log == b.log
    assert isinstance(got[0], np.ndarray)


def test_a_step_whose_exponents_no_step_can_run_is_refused_as_the_golden_step_refuses():
    """A MAXACC that moves layer 0's output exponent (op 1) far up leaves layer 1's first
    shift outside shift_range: the host's step said compile_training's "step 0 shifts by
    -34 ... change the exponents" (no layer, no fix); it says the golden step's line."""
    from ttforge.ir.train import forward_shift_problem

    state, x, y, cfg, prog = _setup()
    rm = train_register_map(cfg)
    bus = _Bus(rm)
    host = TrainHost(cfg, bus.read32, bus.write32, bus.stream)
    host.load_program(prog)
    assert 1 in prog.maxacc_ops
    mx = rm.window("MAXACC")
    bus.mem[mx.base + 8], bus.mem[mx.base + 12] = 0, 0x7FFF
    with pytest.raises(ConfigError) as e:
        host.train_step(state, prog, x, y, read_back=False)
    msg = str(e.value)
    assert msg.startswith("training step 1 (epoch 1) would leave layer 1 step 0 shifting by -"), msg
    assert "larger lr_shift" in msg and "\n" not in msg
    assert forward_shift_problem(state) is None
