"""The serial transport on a real pty (``os.openpty``: the stand-in for a board's port):
what is no serial port is the user's one-line error (exit 2), and a peer that floods
the port and reads nothing cannot hold a request past its timeout."""

from __future__ import annotations

import os

import pytest

from ttforge.cli import main
from ttforge.errors import ConfigError

pytest.importorskip("serial")

from ttforge.firmware.host import SerialTransport  # noqa: E402


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
