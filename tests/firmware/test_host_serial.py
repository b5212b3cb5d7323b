"""The serial transport on a real pty (``os.openpty``: the stand-in for a board's port):
what is no serial port is the user's one-line error (exit 2), and a peer that floods
the port and reads nothing cannot hold a request past its timeout."""

from __future__ import annotations

import contextlib
import os
import random
import select
import signal
import threading
import time

import pytest

from ttforge.cli import main
from ttforge.errors import ConfigError, DeviceTimeout

pytest.importorskip("serial")

from ttforge.firmware.host import Device, SerialTransport  # noqa: E402

#: what a request may take past its timeout (measured: 0.01 to 0.1 s; a loaded CI box)
MARGIN = 1.0


@pytest.fixture(autouse=True)
def _fails_instead_of_hanging():
    """Each test fails after 30 s (a regression here loops for good; pytest-timeout is
    not a dependency)."""
    def expire(*_):
        raise TimeoutError("the test ran for 30 s: a wait is unbounded")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, 30)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("dev", ["/dev/null", "/dev/zero"])
def test_a_character_device_that_is_no_terminal_is_the_users_mistake(dev):
    """It was exit 3 (pyserial's "Inappropriate ioctl for device", the board's trouble)."""
    if not os.path.exists(dev):
        pytest.skip(f"no {dev}")
    with pytest.raises(ConfigError, match=f"--port {dev} is not a serial port .*give the board's port"):
        SerialTransport(dev)
    with pytest.raises(ConfigError, match=r"^\[device_train\] port /dev/\w+ is not a serial port"):
        SerialTransport(dev, setting="[device_train] port")


def test_every_command_with_a_port_refuses_dev_null(artifact, capsys):
    """``run`` (Device.open_serial) and ``train-board`` / the flow (open_train_device)."""
    from ttforge.firmware.train_board import open_train_device

    assert main(["run", "--board", "ulx3s", "--port", "/dev/null", str(artifact / "small.ttfa"),
                 str(artifact / "x.npy")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--port /dev/null is not a serial port" in err, err
    assert "e.g. /dev/ttyUSB0" in err
    with pytest.raises(ConfigError, match=r"^\[device_train\] port /dev/null is not a serial port"):
        open_train_device(None, port="/dev/null", port_setting="[device_train] port")


def test_a_pty_is_still_a_serial_port():
    master, slave = os.openpty()
    try:
        t = SerialTransport(os.ttyname(slave), timeout=1.0)
        try:
            t.write(b"\xc0ab\xc0")
            assert os.read(master, 16) == b"\xc0ab\xc0"
            os.write(master, b"xy")
            assert t.read(1.0) == b"xy"
        finally:
            t.close()
    finally:
        os.close(master)
        os.close(slave)


# ------------------------------------------------------------------ a flooding peer

def _junk() -> bytes:
    """Frames of garbage (types below 0x80: never an answer nor an output, each a bad frame)."""
    rng = random.Random(0)
    return b"".join(bytes([0xC0] + [rng.randrange(0x80) for _ in range(rng.randrange(1, 40))])
                    for _ in range(200))


@contextlib.contextmanager
def _flooding_peer(master: int, *, reads_after: float | None = None):
    """The pty's other end: it writes garbage as fast as the port takes it and reads
    nothing (from ``reads_after`` s on, it reads and drops what it is sent)."""
    junk, stop, t0 = _junk(), threading.Event(), time.monotonic()
    os.set_blocking(master, False)

    def run():
        while not stop.is_set():
            reading = reads_after is not None and time.monotonic() - t0 >= reads_after
            r, w, _ = select.select([master] if reading else [], [master], [], 0.02)
            with contextlib.suppress(BlockingIOError):
                if r:
                    os.read(master, 1 << 16)
                if w:
                    os.write(master, junk)

    th = threading.Thread(target=run, daemon=True)
    th.start()
    try:
        yield
    finally:
        stop.set()
        th.join(5)


@contextlib.contextmanager
def _pty():
    master, slave = os.openpty()
    try:
        yield master, os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)


def _fill(port: str) -> None:
    """Write to ``port`` until the line holds no more (nobody reads the other end)."""
    fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        # until it stays full for 0.3 s (the kernel moves the bytes on in steps: one
        # refusal is not yet a full line)
        while select.select([], [fd], [], 0.3)[1]:
            with contextlib.suppress(BlockingIOError):
                os.write(fd, b"\x00" * 4096)
    finally:
        os.close(fd)


class _Talker:
    """A transport whose device has bytes for every read, without end."""
    name, default_timeout = "talker", 1.0

    def write(self, data: bytes, timeout: float | None = None) -> None:
        pass

    def read(self, timeout: float) -> bytes:
        return b"\x00" * 64 + b"\xc0"

    def close(self) -> None:
        pass


def test_resync_ends_on_a_port_that_never_falls_silent():
    """It read until the line was quiet: for as long as the device talked (for good).
    A resync ends when its marker is answered: here never, so at the timeout."""
    dev = Device(_Talker())
    t0 = time.monotonic()
    with pytest.raises(DeviceTimeout, match=r"^talker: no answer to PING within 1 s \(\d+ corrupt"):
        dev.resync()
    assert time.monotonic() - t0 < 1.0 + MARGIN
    assert dev.bad_frame_count > 0


def test_a_flood_cannot_hold_the_training_board_past_its_timeout():
    """train-board and the flow (resync, then PING) on a port flooded with garbage whose
    peer reads nothing: one timeout, 1 s (the resync before PING read on while bytes kept
    coming: up to 12 s past it)."""
    from ttforge.firmware.train_board import open_train_device
    from ttforge.ir.train import TrainConfig

    with _pty() as (master, port):
        t = SerialTransport(port, timeout=1.0)     # raw mode before the flood: nothing echoed
        t.close()
        with _flooding_peer(master):
            t0 = time.monotonic()
            with pytest.raises(DeviceTimeout, match="no answer to PING within 1 s .*corrupt frames"):
                open_train_device(None, port=port, timeout=1.0, train=TrainConfig())
            assert time.monotonic() - t0 < 1.0 + MARGIN


def test_a_flood_cannot_hold_run_past_its_timeout(artifact, capsys):
    with _pty() as (master, port):
        SerialTransport(port).close()
        with _flooding_peer(master):
            t0 = time.monotonic()
            assert main(["run", "--board", "ulx3s", "--port", port, "--timeout", "1",
                         str(artifact / "small.ttfa"), str(artifact / "x.npy")]) == 3
            took = time.monotonic() - t0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no answer to PING within 1 s" in err, err
    assert took < 1.0 + MARGIN


def test_a_request_writes_and_waits_within_one_timeout():
    """A peer that takes our bytes only late (the port's buffer is full until then) and
    never answers: the write and the wait for the answer share the request's 2 s (they
    each had their own: 1.6 + 2 s)."""
    with _pty() as (master, port):
        t = SerialTransport(port, timeout=2.0)
        with Device(t) as dev:
            _fill(port)
            with _flooding_peer(master, reads_after=1.6):
                t0 = time.monotonic()
                with pytest.raises(DeviceTimeout, match="no answer to PING within 2 s"):
                    dev.ping()
                assert time.monotonic() - t0 < 2.0 + 0.8


def test_a_peer_that_reads_nothing_is_one_timeout():
    with _pty() as (master, port):
        t = SerialTransport(port, timeout=1.0)
        with Device(t) as dev:
            _fill(port)
            with _flooding_peer(master):
                t0 = time.monotonic()
                with pytest.raises(DeviceTimeout, match="could not send PING within 1 s"):
                    dev.ping()
                assert time.monotonic() - t0 < 1.0 + MARGIN
