"""The host driver (:class:`~ttforge.firmware.host.Device`) against a board in Python
(:class:`tests.support.fakeboard.FakeBoard`): an output frame is taken as a vector's
result only if it came after that vector was sent; a board of another interface, or
whose bridge or registers describe no accelerator, is the board's one-line error
(exit 3); the API's own arguments are the caller's (exit 2)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from ttforge.errors import ConfigError, DeviceError, DeviceTimeout, ProtocolError, ShapeError
from ttforge.firmware import protocol as P
from ttforge.firmware.host import Device
from ttforge.hw.config import AccelConfig
from ttforge.ir.executor import execute
from ttforge.quant.qat import compile_network

from tests.support.fakeboard import FakeBoard
from tests.support.nets import small_net, wide_int_network


@pytest.fixture(scope="module")
def net_x():
    q, x = small_net()
    net = compile_network(q)
    return net, net.quantize_input(x.numpy())[:4]


@pytest.fixture
def board(net_x):
    net, _ = net_x
    return FakeBoard(net, AccelConfig.for_network(net, lanes=4, stream_elems=2))


def _loaded(board, net, timeout=1.0) -> Device:
    dev = Device(board, timeout=timeout)
    dev.load(net)
    return dev


def test_the_fake_board_gives_the_golden_results(board, net_x):
    net, x = net_x
    assert np.array_equal(_loaded(board, net).infer(x), execute(net, x))


# ------------------------------------------------------------------ D1: whose output is it

def test_an_output_frame_waiting_before_the_first_vector_is_refused(board, net_x):
    """A frame that came unasked (here: right after the load) was taken as vector 0's
    result, and every later vector got the one before's: wrong values, exit 0."""
    net, x = net_x
    dev = _loaded(board, net)
    board.send(board.output_frame([17] * net.in_features))
    with pytest.raises(ProtocolError, match=r"^/dev/fakeUSB0: the board sent an output frame nobody "
                                            r"asked for .* before vector 0 was sent"):
        dev.infer(x)
    assert board.vectors == []


def test_a_frame_a_killed_run_left_on_the_line_is_dropped_by_load(board, net_x):
    """What was on the line when the port was opened is not this run's: load resyncs."""
    net, x = net_x
    board.send(board.output_frame([17] * net.in_features))
    dev = _loaded(board, net)
    assert np.array_equal(dev.infer(x), execute(net, x))


def test_a_duplicated_output_frame_is_the_boards_error(board, net_x):
    """Vector 0's output twice: vector 1 printed vector 0's result, and so on (exit 0)."""
    net, x = net_x
    dev = _loaded(board, net)
    board.extra_output = 1
    with pytest.raises(ProtocolError, match="output frame nobody asked for .* before vector 1 was sent"):
        dev.infer(x)
    assert len(board.vectors) == 1


def test_an_output_frame_after_the_last_vector_is_the_boards_error(board, net_x):
    net, x = net_x
    dev = _loaded(board, net)
    board.extra_output = 1
    with pytest.raises(ProtocolError, match=r"nobody asked for .* before the end of the call \(1 vectors"):
        dev.infer(x[0])


def test_a_device_reused_after_a_timeout_does_not_take_the_late_output(board, net_x):
    """infer(x1) times out; its output comes later; infer(x2) returned x1's result."""
    net, x = net_x
    dev = _loaded(board, net, timeout=0.3)
    board.output_delay = 0.5
    with pytest.raises(DeviceTimeout, match="no output of vector 0 within 0.3 s"):
        dev.infer(x[0])
    board.output_delay = 0.0
    board.read(0.4)         # the line's clock moves on: the late frame is now on the line
    board._pending = [(0.0, board.output_frame(x[0]))]
    assert np.array_equal(dev.infer(x[1]), execute(net, x[1:2])[0])


def test_an_output_later_than_the_resync_used_to_wait_is_not_the_retrys(board, net_x):
    """infer(x0) times out; its output comes 0.4 s later, long after the 50 ms the resync
    drained: infer(x1) returned x0's result, and every later call the one before's
    (exit 0). The resync now waits for the engine by its STATUS."""
    net, x = net_x
    dev = _loaded(board, net, timeout=0.1)
    board.output_delay = 0.4
    with pytest.raises(DeviceTimeout, match="no output of vector 0 within 0.1 s"):
        dev.infer(x[0])
    dev.timeout = 2.0
    for k in (1, 2, 3):
        assert np.array_equal(dev.infer(x[k]), execute(net, x[k:k + 1])[0]), k


def test_an_interrupted_infer_leaves_no_output_to_the_next(board, net_x):
    """Ctrl-C while infer waits for the output: the next call took it."""
    net, x = net_x
    dev = _loaded(board, net)
    board.output_delay = 0.3
    real_read, calls = board.read, []

    def interrupted(timeout):
        calls.append(timeout)
        if len(calls) == 3:             # the STREAM_IN answer is in: waiting for the output
            raise KeyboardInterrupt
        return real_read(timeout)

    board.read = interrupted
    with pytest.raises(KeyboardInterrupt):
        dev.infer(x[0])
    board.read = real_read
    assert np.array_equal(dev.infer(x[1:3]), execute(net, x[1:3]))


def test_a_late_register_answer_is_not_the_next_reads(board, net_x):
    """READ32(ID) timed out; its answer came after the resync's 50 ms: the next
    read32(VERSION) returned the ID (and everything after was shifted by one)."""
    dev = Device(board, timeout=1.0)
    dev.ping()
    board.answer_delay = 0.2
    with pytest.raises(DeviceTimeout, match="no answer to READ32 within 0.05 s"):
        dev.request(P.read32(board.addr("ID")), P.Cmd.READ32, timeout=0.05)
    board.answer_delay = 0.0
    assert dev.read32(board.addr("VERSION")) == board.regs[board.addr("VERSION")]
    assert dev.read32(board.addr("ID")) == 0x54544647


def test_an_engine_that_stays_busy_is_reset_by_the_resync(board, net_x):
    """A vector sent in part (the rest never comes) keeps the engine busy for good: the
    resync waits the device's timeout for it, then resets it (CMD.SOFT_RESET)."""
    net, x = net_x
    dev = _loaded(board, net, timeout=0.2)
    board.output_delay = 3600.0
    with pytest.raises(DeviceTimeout):
        dev.infer(x[0])
    board.output_delay = 0.0
    assert np.array_equal(dev.infer(x[1]), execute(net, x[1:2])[0])
    assert board.regs[board.addr("CMD")] & 1


def test_a_vector_sent_in_part_is_reset_at_once(board, net_x):
    """Ctrl-C while a STREAM_IN frame was being written: the engine holds part of a
    vector and waits for the rest for good; the resync waited the device's whole timeout
    for it (2 s at the CLI's default, 120 s on a simulated board) before the reset."""
    import time

    net, x = net_x
    dev = _loaded(board, net, timeout=5.0)
    real_write = board.write

    def cut(data, timeout=None):
        if data[1:2] == bytes([P.Cmd.STREAM_IN]):
            real_write(data[:len(data) // 2])       # the first half went out
            board._busy_until = float("inf")        # the engine has the first elements
            raise KeyboardInterrupt
        real_write(data, timeout)

    board.write = cut
    with pytest.raises(KeyboardInterrupt):
        dev.infer(x[0])
    board.write = real_write
    t0 = time.monotonic()
    assert np.array_equal(dev.infer(x[1]), execute(net, x[1:2])[0])
    assert time.monotonic() - t0 < 2.0
    assert board.regs[board.addr("CMD")] & 1      # SOFT_RESET


def test_a_lost_resync_marker_is_sent_again(board, net_x):
    """The bytes of a marker lost (an overrun): a new one, of other request types, ends
    the resync; the first one's types are never taken for it."""
    dev = Device(board, timeout=2.0)
    real, dropped = board._handle, []

    def lossy(t, body):
        if t not in set(P.Cmd) and len(dropped) < 2:
            dropped.append(t)
            return
        real(t, body)

    board._handle = lossy
    board.send(b"\x01\x02")         # half a frame, read: the parser's is dropped with the rest
    dev._drain(0)
    assert dev._parser.pending == 2
    dev.resync()
    assert len(dropped) == 2
    assert dev.bad_frame_count == 0    # (not joined to the next frame and counted corrupt)
    assert dev.read32(board.addr("ID")) == 0x54544647


def test_threads_sharing_a_device_each_get_their_own_results(board, net_x):
    """Without a lock, two threads took each other's answers (read failed, or wrong
    values without an error, and the next call's result was wrong too)."""
    net, x = net_x
    dev = _loaded(board, net)
    xs = [np.repeat(x[k:k + 1], 6, axis=0) for k in range(3)]
    got, errors = {}, []
    start = threading.Barrier(3)

    def work(k):
        start.wait()
        try:
            got[k] = dev.infer(xs[k])
        except Exception as e:        # noqa: BLE001 - reported by the assert below
            errors.append(e)

    # the fake board answers in the caller's thread: slow its reads so that the threads
    # interleave their requests when nothing keeps them apart
    real_read = board.read

    def slow_read(timeout):
        threading.Event().wait(0.001)
        return real_read(timeout)

    board.read = slow_read
    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    for k in range(3):
        assert np.array_equal(got[k], execute(net, xs[k])), k
    assert np.array_equal(dev.infer(x), execute(net, x))


def test_an_answer_sent_twice_is_refused_not_shifted(board, net_x):
    """One READ32 answered twice: every later read got the one before's value (and the
    config read back was lanes=71, reported as the user's mistake)."""
    net, _ = net_x
    dev = Device(board, timeout=1.0)
    dev.ping()
    board.send(P.encode_response(P.Response(P.Cmd.READ32, 0, data=0x54544647)))
    with pytest.raises(ProtocolError, match="an answer nobody asked for .*READ32.* before READ32"):
        dev.read32(board.addr("CFG_LANES"))
    assert dev.read32(board.addr("ID")) == 0x54544647     # resynced: clean again


# ------------------------------------------------------------------ D2: VERSION

def test_a_bitstream_of_another_version_is_refused(board, net_x):
    """VERSION = 0x18FF00FF (arithmetic spec 255, interface 255) loaded and ran, exit 0;
    the C driver's ttfd_identify refuses it."""
    net, _ = net_x
    board.set_reg("VERSION", 0x18FF00FF)
    with pytest.raises(DeviceError, match=r"^/dev/fakeUSB0: VERSION reads 0x18FF00FF \(HW=255, ARITH=255, "
                                          r"DESC_WORDS=24\), this ttforge expects 0x.*rebuild the bitstream"):
        Device(board, timeout=1.0).load(net)


# ------------------------------------------------------------------ D3, D4: what the board reports

@pytest.mark.parametrize("field,index,value", [
    ("elem_bytes", 1, 0), ("elem_bytes", 1, 255), ("stream_elems", 2, 0),
    ("addr_bits", 3, 0), ("addr_bits", 3, 40),
])
def test_a_ping_answer_out_of_range_names_the_port_and_field(board, net_x, field, index, value):
    """elem_bytes=0 was a ZeroDivisionError (exit 70); addr_bits 0 or 40 the user's
    error (exit 2, "axil_addr_bits=1 must be in 13..32")."""
    net, x = net_x
    board.ping_info[index] = value
    with pytest.raises(DeviceError, match=rf"^/dev/fakeUSB0: the bridge's PING answer reports "
                                          rf"{field}={value}, not in"):
        _loaded(board, net).infer(x)


@pytest.mark.parametrize("field,index,value,register", [
    ("elem_bytes", 1, 2, "CFG_WIDTHS.ACT_BITS=8"), ("stream_elems", 2, 1, "CFG_LANES.STREAM_ELEMS")])
def test_a_ping_answer_that_disagrees_with_the_registers_is_refused(board, net_x, field, index, value,
                                                                      register):
    net, _ = net_x
    board.ping_info[index] = value
    with pytest.raises(DeviceError, match=rf"reports {field}={value}, but {register} needs"):
        Device(board, timeout=1.0).load(net)


@pytest.mark.parametrize("reg,value", [
    ("CFG_LANES", 0), ("CFG_CORE_DEPTH", 0xFFFFFFFF), ("CFG_WIDTHS", 0), ("CFG_WIDTHS", 0xFFFFFFFF)])
def test_registers_that_describe_no_accelerator_are_the_boards_error(board, net_x, reg, value):
    """They were the user's ConfigError (exit 2) naming no board."""
    net, _ = net_x
    board.set_reg(reg, value)
    with pytest.raises(DeviceError, match=r"^/dev/fakeUSB0: the board's CFG registers describe no "
                                          r"accelerator \(.*\); program the board with a ttforge bitstream"):
        Device(board, timeout=1.0).load(net)


# ------------------------------------------------------------------ M1, M3

def test_a_short_stream_in_count_is_refused(board, net_x):
    """29 of 30 elements with status OK was accepted."""
    net, x = net_x
    dev = _loaded(board, net)
    board.stream_count = net.in_features - 1
    with pytest.raises(DeviceError, match=rf"vector 0: STREAM_IN took {net.in_features - 1} of "
                                          rf"{net.in_features} elements"):
        dev.infer(x)


def test_a_ragged_list_is_a_shape_error(board, net_x):
    net, _ = net_x
    with pytest.raises(ShapeError, match="inputs are not one array of integers"):
        _loaded(board, net).infer([[1, 2], [3]])


@pytest.mark.parametrize("bad", [float("nan"), -1, 0, float("inf"), "two"])
def test_a_bad_timeout_is_the_callers_error(board, net_x, bad):
    """NaN and -1 were the device's fault ("could not send PING within nan s")."""
    net, x = net_x
    with pytest.raises(ConfigError, match=r"^timeout=.* must be a number of seconds"):
        Device(board, timeout=bad)
    with pytest.raises(ConfigError, match=r"^timeout=.* must be a number of seconds"):
        Device.open_serial("/dev/nonexistent", timeout=bad)
    dev = _loaded(board, net)
    with pytest.raises(ConfigError, match=r"^timeout=.* must be a number of seconds"):
        dev.infer(x, timeout=bad)
    assert board.vectors == []


def test_inputs_outside_the_network_width_on_a_wider_engine_are_refused(net_x):
    """An 8-bit network on an engine of 16-bit activations: inputs were checked against
    the engine's width, and a 300 went out to the board (whose answer no golden model
    defines); now the network's input width, before anything is sent."""
    import dataclasses

    net, x = net_x
    board = FakeBoard(net, dataclasses.replace(AccelConfig.for_network(net, lanes=4, stream_elems=2),
                                               act_bits=16))
    dev = _loaded(board, net)
    assert net.layers[0].in_bits == 8
    with pytest.raises(ShapeError, match=r"^inputs must be in -128\.\.127 \(the network's 8-bit input\)"):
        dev.infer(np.full((1, net.in_features), 300))
    assert board.vectors == []
    assert np.array_equal(dev.infer(x), execute(net, x))


# ------------------------------------------------------- vectors longer than one frame

@pytest.fixture(scope="module")
def wide_net():
    """Each vector needs two STREAM_IN frames and comes back in two output frames."""
    return wide_int_network()


@pytest.fixture
def wide(wide_net):
    net, x = wide_net
    board = FakeBoard(net, AccelConfig.for_network(net, lanes=4, stream_elems=2))
    return board, _loaded(board, net), x


def test_a_vector_longer_than_a_frame_goes_in_and_out_in_pieces(wide, wide_net):
    """5,000 8-bit inputs (one frame holds 4,090) and 5,000 outputs (4,092): the host
    splits each vector into STREAM_IN frames of whole beats and joins the output frames."""
    board, dev, x = wide
    assert np.array_equal(dev.infer(x), execute(wide_net[0], x))
    assert board.stream_frames == [4090, 910, 4090, 910]
    assert [len(v) for v in board.vectors] == [5000, 5000]
    dev.stream_in(list(range(-100, 100)) * 25)             # Device.stream_in splits too
    assert board.stream_frames[-2:] == [4090, 910] and board.vectors[-1] == list(range(-100, 100)) * 25


@pytest.mark.parametrize("pieces, msg", [
    (lambda p: p[1:], r"vector 0: a continuation output frame \(908 bytes\) without a start"),
    (lambda p: [p[0], (p[1][0], False)], r"vector 0: a new output vector started after 4092 of 5000 elements"),
    (lambda p: [p[0], (p[1][0] + b"\0\0", True)], r"vector 0: output vector has 5002 elements, expected 5000"),
    (lambda p: [p[0], (p[1][0][:-1], True)], r"vector 0: an output frame of 907 bytes, not whole beats of 2"),
])
def test_output_pieces_that_make_no_vector_are_the_boards_error(wide, pieces, msg):
    board, dev, x = wide
    board.output_pieces = pieces
    with pytest.raises(ProtocolError, match=rf"^/dev/fakeUSB0: {msg}; check that the board runs"):
        dev.infer(x[:1])
    assert ProtocolError.exit_code == 3


def test_a_continuation_after_a_complete_vector_is_refused(wide):
    """A piece more than the vector has is an output nobody asked for (exit 3)."""
    board, dev, x = wide
    board.output_pieces = lambda p: p + [(b"\0\0", True)]
    with pytest.raises(ProtocolError, match=r"output frame nobody asked for \(output frame \(continuation\) "
                                            r"of 2 bytes\) before the end of the call"):
        dev.infer(x[:1])


def test_an_output_vector_cut_short_is_named_at_the_timeout(wide):
    board, dev, x = wide
    board.output_pieces = lambda p: p[:1]
    with pytest.raises(DeviceTimeout, match=r"no output of vector 0 \(after 4092 of its 5000 elements\)"):
        dev.infer(x[:1], timeout=0.5)


def test_a_link_slower_than_the_marker_wait_still_resyncs(board, net_x):
    """A round trip above SYNC_RETRY_S (0.31 s: 1,200 baud, or divisor 25 on the
    simulated training board): every marker was replaced before its answers came, and
    no resync, hence no load or connect, ever ended (DeviceTimeout after the timeout)."""
    import time

    from ttforge.firmware.host import SYNC_RETRY_S

    net, x = net_x
    dev = _loaded(board, net, timeout=5.0)
    board.answer_delay = 1.2 * SYNC_RETRY_S + 0.01
    t0 = time.monotonic()
    dev.resync()
    assert time.monotonic() - t0 < 4 * SYNC_RETRY_S   # the second marker's answers end it
    assert np.array_equal(dev.infer(x[0]), execute(net, x[:1])[0])


def test_a_vector_cut_between_its_frames_is_dropped_by_the_reset():
    """A two-frame vector interrupted before its second frame: the engine holds the first
    frame's elements, CMD.SOFT_RESET drops them (as hw.regmap says), and the next vector
    is computed alone (the stand-in board joined it to them)."""
    net, x = wide_int_network()
    board = FakeBoard(net, AccelConfig.for_network(net, lanes=4, stream_elems=2))
    dev = Device(board, timeout=5.0)
    dev.load(net)
    real_write, frames = board.write, []

    def cut(data, timeout=None):
        if data[1:2] == bytes([P.Cmd.STREAM_IN]):
            frames.append(data)
            if len(frames) == 2:
                raise KeyboardInterrupt         # nothing of the second frame went out
        real_write(data, timeout)

    board.write = cut
    with pytest.raises(KeyboardInterrupt):
        dev.infer(x[0])
    board.write = real_write
    assert np.array_equal(dev.infer(x[1]), execute(net, x[1:2])[0])
