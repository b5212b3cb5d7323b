"""The training driver over the bridge protocol, without a simulator: the light step reads
only the exponent-setting MAXACC words (never CMEM, BMEM or RNG); the exponents depend on
MAXACC and the exponents alone, never on the weights; over the link model the driver's
exponents follow the golden trainer step by step (and a flipped MAXACC bit must not);
the link model's byte count is the protocol encoders' (its equality with the bytes on the
simulated board's wire is tests/firmware/test_train_board.py's); 2,000,000 baud is an
exact divisor of the ULX3S's 50 MHz."""

from __future__ import annotations

import numpy as np
import pytest

from ttforge.firmware.train_host import (LinkModel, TrainDevice, _exponents_only, logits_from_trace,
                                         maxacc_from_trace)
from ttforge.hw.trainer.host import TrainHost
from ttforge.hw.trainer.program import compile_training, fit_engine, next_exponents
from ttforge.hw.trainer.regmap import train_register_map
from ttforge.ir.random import train_case
from ttforge.ir.train import train_step_traced
from ttforge.ir.train_diverge import compare_states

BATCH = 4


def _case(steps=3):
    state, x, y, rng = train_case(1, batch=BATCH, n_layers=2, d=2, rank=2, n_in=8, hidden=6, n_out=3)
    batches = [(rng.integers(0, 128, size=(BATCH, 8)), rng.integers(0, 3, size=BATCH)) for _ in range(steps)]
    return state, batches, fit_engine(state, BATCH, lanes=4)


def test_the_light_step_reads_maxacc_of_the_exponent_ops_only():
    state, batches, cfg = _case(1)
    x, y = batches[0]
    prog = compile_training(state, BATCH, cfg)
    rm = train_register_map(cfg)
    reads = []

    def read32(a):          # a bus that has finished every step (STATUS: DONE)
        reads.append(a)
        return 2 if a == rm.addr("STATUS") else 0

    host = TrainHost(cfg, read32, lambda a, v: None, lambda frames: None)
    host.load_program(prog)
    reads.clear()
    r = host.train_step(state, prog, x, y, read_back=False)
    reads = set(reads)
    mx = rm.window("MAXACC")
    want = {mx.base + 4 * (2 * j + h) for j in prog.maxacc_ops for h in (0, 1)}
    assert {a for a in reads if mx.base <= a < mx.base + 4 * mx.depth} == want
    for name in ("CMEM", "BMEM", "ACT", "GRAD"):
        w = rm.window(name)
        assert not any(w.base <= a < w.base + 4 * w.depth for a in reads), name
    assert rm.addr("RNG") not in reads
    assert r.cmem is None and r.rng is None and set(r.maxacc) == set(prog.maxacc_ops)
    assert r.state.step == state.step + 1 and r.state.words == state.words + state.n_stored()


def test_the_exponents_do_not_depend_on_the_weights():
    state, batches, cfg = _case(1)
    x, y = batches[0]
    prog = compile_training(state, BATCH, cfg)
    new, trace = train_step_traced(state, x, y)
    mx = maxacc_from_trace(prog, trace)
    zero = state.replace(layers=tuple(L.__class__(**{**L.__dict__, "masters": tuple(np.zeros_like(g) for g in L.masters)})
                                      for L in state.layers))
    a, b = next_exponents(state, prog, mx), next_exponents(zero, prog, mx)
    assert [(L.step_exps, L.grad_exps) for L in a.layers] == [(L.step_exps, L.grad_exps) for L in b.layers]
    assert [(L.step_exps, L.grad_exps) for L in a.layers] == [(L.step_exps, L.grad_exps) for L in new.layers]
    # and the next program's descriptors (the shifts) are the same from stale weights
    assert compile_training(a, BATCH, cfg).words == compile_training(new, BATCH, cfg).words


def _drive(state, batches, cfg, corrupt=None):
    """The driver over the link model fed by the golden trace; ``(device, host state, golden)``."""
    model = LinkModel(cfg)
    dev = TrainDevice(model, cfg, timeout=1.0)
    dev.connect()
    dev.load(state, BATCH)
    cur = gold = state
    for k, (x, y) in enumerate(batches):
        gold_next, trace = train_step_traced(gold, x, y)
        mx = maxacc_from_trace(dev.program, trace)
        if corrupt == k:
            j = min(mx)
            mx[j] ^= 1 << 40        # one bit, above every accumulator here: the exponent moves
        model.set_step(dev.program, mx, logits_from_trace(trace))
        r = dev.step(cur, x, y, logits=True)
        assert np.array_equal(r.logits, logits_from_trace(trace))
        cur, gold = r.state, gold_next
        yield dev, cur, gold


def test_over_the_link_model_the_exponents_follow_the_golden_trainer():
    state, batches, cfg = _case()
    for dev, cur, gold in _drive(state, batches, cfg):
        assert compare_states(gold, _exponents_only(gold, cur)) is None
        assert dev.program.words == compile_training(gold, BATCH, cfg).words


def test_a_flipped_maxacc_bit_is_a_named_exponent_difference():
    state, batches, cfg = _case()
    found = [compare_states(gold, _exponents_only(gold, cur)) for _, cur, gold in _drive(state, batches, cfg, 1)]
    assert found[0] is None and found[1] is not None
    assert found[1].step == 2 and found[1].name in ("step_exps", "grad_exps")


def test_link_model_bytes_are_the_encoders_bytes():
    from ttforge.firmware import protocol as P

    state, batches, cfg = _case(1)
    model = LinkModel(cfg)
    dev = TrainDevice(model, cfg, timeout=1.0)
    dev.connect()
    a = dev.link.tx
    dev.host.write_reg("CMD", 1)
    assert dev.link.tx - a == len(P.write32(dev.host.regmap.addr("CMD"), 1))
    a, b = dev.link.tx, dev.link.rx
    dev.host.read_window("MAXACC", 0, 5)
    mx = dev.host.regmap.window("MAXACC").base
    assert dev.link.tx - a == sum(len(P.read32(mx + 4 * i)) for i in range(5))
    assert dev.link.rx - b == 5 * len(P.encode_response(P.Response(P.Cmd.READ32, 0, data=0)))


def test_two_megabaud_is_an_exact_divisor_of_the_ulx3s_clock():
    from ttforge.firmware.board import BOARDS, uart_divisor

    assert uart_divisor(BOARDS["ulx3s"].default_hz, 2_000_000) == 25
    assert 50_000_000 / 25 == 2_000_000


def test_the_training_board_top_prepares_for_the_ulx3s():
    pytest.importorskip("amaranth_boards")
    from ttforge.firmware.board import BOARDS
    from ttforge.firmware.train_board import TrainBoardTop

    state, _, cfg = _case(1)
    BOARDS["ulx3s"].platform().prepare(TrainBoardTop("ulx3s", cfg, baud=2_000_000))


def test_the_engine_is_read_from_the_board_and_a_network_too_big_for_it_is_one_line():
    from dataclasses import replace

    from ttforge.errors import ConfigError, DeviceError
    from ttforge.firmware.train_host import engine_from_board

    state, _, cfg = _case(1)
    assert engine_from_board(LinkModel(cfg), state.config) == cfg
    small = replace(cfg, core_depth=cfg.core_depth // 2)
    dev = TrainDevice(LinkModel(small), engine_from_board(LinkModel(small), state.config), timeout=1.0)
    dev.connect()
    before = dev.link.tx
    with pytest.raises(ConfigError, match=r"needs core_depth >= \d+ \(the engine has"):
        dev.load(state, BATCH)
    assert dev.link.tx == before            # nothing written
    wrong = LinkModel(cfg)
    wrong.mem[wrong.regmap.addr("ID")] ^= 1  # sibling: not a training top
    with pytest.raises(DeviceError, match="not a ttforge training top"):
        engine_from_board(wrong, state.config)


def test_the_training_host_streams_a_chunk_longer_than_a_frame():
    """train-board streams samples in chunks of up to STREAM_CHUNK (4,096) elements: a
    chunk of more than 4,090 1-byte elements (455 samples of 9) was refused by the
    STREAM_IN encoder (ConfigError); it goes as two frames, `more` on the first."""
    from ttforge.firmware import protocol as P
    from ttforge.firmware.train_host import STREAM_CHUNK

    _, _, cfg = _case(1)
    model = LinkModel(cfg)
    sent = []
    write = model.write
    model.write = lambda data, timeout=None: (sent.append(data), write(data, timeout))
    dev = TrainDevice(model, cfg, timeout=1.0)
    dev.connect()
    sent.clear()
    dev._stream([[i % 100] * 9 for i in range(500)])
    ns = [int.from_bytes(P.SlipDecoder().feed(f)[0][0][1:3], "little") for f in sent]
    assert STREAM_CHUNK == 4096 and ns == [4090 | P.STREAM_MORE, 5, 405]


def test_a_late_answer_of_a_failed_read_is_not_the_training_drivers_next():
    """The training driver's calls go through the same Device: a STATUS poll that timed
    out, its answer late (past the 50 ms the resync drained), gave the next read its
    value (here ID read as STATUS's)."""
    import time

    from ttforge.errors import DeviceTimeout

    state, batches, cfg = _case(1)
    model = LinkModel(cfg)
    late: list[tuple[float, bytes]] = []

    class Slow:                   # the bridge answers in order: a late answer holds back the rest
        name, default_timeout = "slow link", 1.0
        delay = 0.0

        def write(self, data, timeout=None):
            model.write(data)
            out = model.read(0)
            if out:
                when = max([time.monotonic() + self.delay] + [w for w, _ in late])
                late.append((when, out))

        def read(self, timeout):
            end = time.monotonic() + timeout
            while True:
                now = time.monotonic()
                ready = [d for w, d in late if w <= now]
                if ready:
                    late[:] = [(w, d) for w, d in late if w > now]
                    return b"".join(ready)
                if now >= end:
                    return b""
                time.sleep(0.002)

        def close(self):
            pass

    link = Slow()
    dev = TrainDevice(link, cfg, timeout=0.05)
    dev.connect()
    link.delay = 0.2
    with pytest.raises(DeviceTimeout):
        dev._read32(dev._status)
    link.delay = 0.0
    dev.dev.timeout = 1.0
    assert dev._read32(dev.host.regmap.addr("ID")) == dev.host.regmap["ID"].value


def test_a_step_that_did_not_complete_leaves_the_device_to_be_loaded_again():
    """A Ctrl-C while a batch streamed left the engine with part of a step (or all of it,
    the host's exponents left behind): the next step and read_state went on from a state
    neither the host nor the golden trainer had. They are refused until a load."""
    from ttforge.errors import DeviceError

    state, batches, cfg = _case(2)
    model = LinkModel(cfg)
    dev = TrainDevice(model, cfg, timeout=1.0)
    dev.connect()
    dev.load(state, BATCH)
    from ttforge.firmware import protocol as P

    (x, y), (x2, y2) = batches
    real_write = model.write

    def interrupted(data, timeout=None):
        if data[1:2] == bytes([P.Cmd.STREAM_IN]):
            raise KeyboardInterrupt             # Ctrl-C as the batch streams
        real_write(data, timeout)

    model.write = interrupted
    with pytest.raises(KeyboardInterrupt):
        dev.step(state, x, y)
    model.write = real_write
    for call in (lambda: dev.step(state, x2, y2), lambda: dev.read_state(state)):
        with pytest.raises(DeviceError, match="did not complete .* load a state again"):
            call()
    dev.load(state, BATCH)          # known again: steps run as usual
    gold_next, trace = train_step_traced(state, x, y)
    model.set_step(dev.program, maxacc_from_trace(dev.program, trace), logits_from_trace(trace))
    r = dev.step(state, x, y, logits=True)
    assert np.array_equal(r.logits, logits_from_trace(trace))
    assert compare_states(gold_next, _exponents_only(gold_next, r.state)) is None
