"""Host driver: talk to a board (or its simulation) through the UART bridge.

:class:`Device` runs the protocol of :mod:`ttforge.firmware.protocol` over a transport:

* :class:`SerialTransport` — a real board's USB UART (pyserial);
* :class:`ttforge.firmware.simulate.SimTransport` — the board top's RTL in Icarus
  Verilog, its UART pins driven by cocotb (``cocotbext-uart``).

Every wait is bounded: a device that does not answer raises :class:`DeviceTimeout`
(one line), never hangs. A :class:`Device` serves one call at a time (threads wait for
each other), and takes an output frame as a vector's result only if it came after that
vector was sent (the protocol tags no frame with its vector). The API::

    with Device.open_serial("/dev/ttyUSB0", baud=115200) as dev:
        dev.load("model.ttfa")             # compile for the bitstream's config, write it
        y = dev.infer(x)                   # (N, in_features) integers -> (N, out_features)
        dev.counters(), dev.errors()       # the counters since load (which clears them)
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import stat
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ttforge.errors import ConfigError, ShapeError, TTForgeError, UserError, show_path
from ttforge.limits import MAX_TIMEOUT_S, file_kind
from ttforge.errors import DeviceError, DeviceTimeout  # noqa: F401 - defined in ttforge.errors
from ttforge.firmware import protocol as P
from ttforge.firmware.protocol import AXI_RESP, Cmd, OutputFrame, Response, Status

__all__ = ["Device", "DeviceError", "DeviceTimeout", "Transport", "SerialTransport",
           "COUNTERS", "TTFG_ID", "BURST_WORDS", "READ_WINDOW", "PING_RANGES", "board_describes",
           "check_timeout"]

TTFG_ID = 0x54544647
COUNTERS = ("CYCLES", "BUSY_LANE_CYCLES", "IN_STALL", "OUT_STALL", "SAT_EVENTS", "VECTORS")
#: words per WRITE_BURST frame when loading
BURST_WORDS = 256
#: READ32 requests in flight in :meth:`Device.read32_many` (3 x 10 bytes < the bridge's
#: 32-byte receive FIFO)
READ_WINDOW = 3
#: What a bridge can report in its PING answer (firmware/uart.py ``BridgeCore`` refuses
#: anything else): a value outside was a ZeroDivisionError (elem_bytes=0, exit 70).
PING_RANGES = {"elem_bytes": (1, 4), "stream_elems": (1, 255), "addr_bits": (2, 32)}
#: seconds an output frame nobody asked for is awaited after a call's last vector (a
#: board that sends one twice sends the copy right behind it)
TRAILING_OUTPUT_S = 0.02
#: seconds :meth:`Device.resync` waits for its first marker's answers before it sends a
#: new marker (the bytes of one may be lost to an overrun of the bridge's receive FIFO);
#: each wait is twice the one before, so a link slower than this (a round trip of 0.31 s
#: at 1,200 baud, or at divisor 25 on the simulated training board) still sees its latest
#: marker answered (a fixed wait replaced every marker before its answers came, and no
#: resync, hence no connect, ever ended). Only the latest marker's answers end the
#: resync: this is how soon a lost marker is replaced, never what tells a late answer
#: from a current one.
SYNC_RETRY_S = 0.25


def check_timeout(value, name: str = "timeout") -> float:
    """``value`` as seconds, or a one-line :class:`ConfigError` naming ``name`` (NaN or
    -1 used to be reported as the device's fault: "could not send PING within nan s")."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if not (math.isfinite(v) and 0 < v <= MAX_TIMEOUT_S):
        raise ConfigError(f"{name}={value!r} must be a number of seconds in (0, {MAX_TIMEOUT_S:g}]; "
                          "give e.g. 2")
    return v


@contextlib.contextmanager
def board_describes(name: str, what: str, fix: str):
    """Report a config built from a board's registers that does not validate as the
    board's trouble: a one-line :class:`DeviceError` (exit 3) naming the port ``name``,
    ``what`` the registers should describe and the ``fix``, not the user's ConfigError
    (exit 2, "lanes=0 must be a power of two", naming no board)."""
    try:
        yield
    except (ConfigError, TypeError, ValueError) as e:
        raise DeviceError(f"{name}: the board's CFG registers describe no {what} ({e}); {fix}") from None


def _exclusive(method):
    """Run ``method`` holding the device's lock (one call at a time: two threads used to
    take each other's answers). The outermost call on a device left dirty by an error
    resyncs first, and an error leaving it marks the device dirty: a frame that came
    late for a failed call is never taken as the next call's answer."""
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        with self._lock:
            outer = self._depth == 0
            self._depth += 1
            try:
                if outer and self._dirty and method.__name__ != "resync":
                    self.resync()
                return method(self, *args, **kwargs)
            except UserError:
                raise           # a bad argument, refused before anything was sent
            except BaseException:
                if outer:
                    self._dirty = True
                raise
            finally:
                self._depth -= 1
    return call


class Transport(Protocol):
    name: str
    default_timeout: float

    # all of ``data`` within ``timeout`` s (None: ``default_timeout``), else DeviceTimeout
    def write(self, data: bytes, timeout: float | None = None) -> None: ...

    def read(self, timeout: float) -> bytes: ...      # b"" when nothing came in time

    def close(self) -> None: ...


class SerialTransport:
    """A serial port (pyserial): 8N1 at ``baud``. ``setting`` names where the user gave
    ``port`` (a CLI flag or a config key), so an error names what to fix."""

    def __init__(self, port: str, baud: int = 115200, *, timeout: float = 2.0, setting: str = "--port"):
        try:
            import serial
        except ImportError:
            raise DeviceError("pyserial is not installed; install it with: pip install pyserial "
                              "(or pip install 'ttforge[board]')") from None
        self.name = f"{port} at {baud} baud"
        self.baud = int(baud)
        self.default_timeout = float(timeout)
        try:
            mode = os.stat(port).st_mode
        except (OSError, ValueError):
            mode = None   # missing: an unplugged board (exit 3, below)
        if mode is not None and not stat.S_ISCHR(mode):   # the user's path, not the board's trouble
            kind = file_kind(mode) or "a regular file"
            raise ConfigError(f"{setting} {show_path(port)} is {kind}, not a serial device; give the board's "
                              f"port (e.g. /dev/ttyUSB0)")
        # A character device that is no terminal (/dev/null, /dev/zero) is the user's path
        # too (pyserial's "Inappropriate ioctl" read as the board's trouble, exit 3). It is
        # opened as pyserial opens it and held until pyserial has the port: a real port's
        # lines see one open (no last close in between to drop DTR).
        held = None
        if mode is not None:
            try:
                held = os.open(port, os.O_RDWR | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_NONBLOCK", 0))
            except OSError:
                pass   # permission, a vanished board: pyserial says which (exit 3, below)
        try:
            if held is not None and not os.isatty(held):
                raise ConfigError(f"{setting} {show_path(port)} is not a serial port (a character device "
                                  "that is no terminal); give the board's port (e.g. /dev/ttyUSB0)")
            try:
                self._s = serial.Serial(port, self.baud, timeout=0.05, write_timeout=self.default_timeout)
            except (serial.SerialException, OSError, ValueError) as e:
                msg = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise DeviceError(f"cannot open serial port {port}: {msg}; check {setting} "
                                  "(e.g. /dev/ttyUSB0) and that the board is attached") from None
        finally:
            if held is not None:
                os.close(held)
        self._serial = serial

    def write(self, data: bytes, timeout: float | None = None) -> None:
        limit = self.default_timeout if timeout is None else timeout
        try:
            if limit <= 0:    # pyserial's write_timeout 0 means "do not wait", not "too late"
                raise self._serial.SerialTimeoutException("Write timeout")
            self._s.write_timeout = limit
            # No flush: tcdrain has no timeout (a USB device that stops reading would hold
            # it for good); the answer awaited next comes after the bytes have left anyway,
            # under the same deadline.
            self._s.write(data)
        except self._serial.SerialTimeoutException:
            raise DeviceTimeout(f"{self.name}: writing timed out after {limit:g} s") from None
        except (self._serial.SerialException, OSError) as e:
            raise DeviceError(f"{self.name}: write failed: {e}") from None

    def read(self, timeout: float) -> bytes:
        try:
            self._s.timeout = max(0.0, timeout)
            first = self._s.read(1)
            if not first:
                return b""
            more = self._s.in_waiting
            return first + (self._s.read(more) if more else b"")
        except (self._serial.SerialException, OSError) as e:
            raise DeviceError(f"{self.name}: read failed: {e}") from None

    def close(self) -> None:
        try:
            self._s.close()
        except Exception:   # pragma: no cover - closing a vanished port
            pass


#: Frames the host holds unread: at most a window of answers (:data:`READ_WINDOW`) and a
#: vector's output are outstanding, so more is a device that talks unasked (each one a
#: Python object: a port sending valid frames without end grew the host without bound).
MAX_UNREAD_FRAMES = 1024


class Device:
    """The accelerator behind the UART bridge (any :class:`Transport`)."""

    def __init__(self, transport: Transport, *, timeout: float | None = None):
        self.t = transport
        self.timeout = check_timeout(timeout if timeout is not None else transport.default_timeout)
        self._lock = threading.RLock()
        self._depth = 0          # nested calls of one outer call (resync only at the outermost)
        self._dirty = False      # an error left frames of its own on the line: resync first
        # a vector was sent whose output has not all come: a failed infer leaves an
        # inference that may still send its output (resync waits for the engine)
        self._in_flight = False
        # ... and not all of its STREAM_IN bytes went out: the engine waits for the rest
        # for good (resync resets it at once)
        self._partial = False
        # resync markers sent (their request types are drawn from it: two in a row differ);
        # a random start, so that a Device opened after a killed run's picks other types
        self._sync_count = int.from_bytes(os.urandom(4), "little")
        self._parser = P.Parser()
        self._responses: deque = deque()
        self._outputs: deque = deque()
        #: the last corrupt frames received (a port that babbles sends millions), and their count
        self.bad_frames: deque[P.BadFrame] = deque(maxlen=16)
        self.bad_frame_count = 0
        #: of each of :attr:`bad_frames`, the output frames unread when it came (the good
        #: frames of a vector's output received before a corrupt one in the same read)
        self._bad_outputs: deque[int] = deque(maxlen=16)
        self.info: dict[str, int] | None = None
        self.config = None
        self.program = None
        self.net = None
        #: why what the device's memories hold is unknown (a load that did not complete, a
        #: write that failed), or None: :meth:`infer` refuses until the next :meth:`load`
        self.load_lost: str | None = None
        self._regs = None
        #: the width of the bitstream's performance counters (``AccelConfig.counter_bits``),
        #: which its ``CFG_*`` registers do not hold: set by whoever knows it (``ttforge
        #: run``: the board's config). Below 48, :meth:`counters` adds up the counters'
        #: increments modulo ``2**counter_bits`` after every vector; ``None``: 48 bits.
        self.counter_bits: int | None = None
        # the counters since the last clear (None: not cleared by this driver), and the
        # registers' values at the last reading, for counters that wrap
        self._counts: dict[str, int] | None = None
        self._raw: dict[str, int] | None = None
        #: the longest time, in seconds, from sending a vector to receiving all of its
        #: output since the counters were cleared: the engine was busy with it for less,
        #: so at most this times the clock's frequency cycles
        self.longest_vector_s = 0.0

    # -------------------------------------------------------------- construction
    @classmethod
    def open_serial(cls, port: str, baud: int = 115200, *, timeout: float = 2.0) -> "Device":
        timeout = check_timeout(timeout)
        return cls(SerialTransport(port, baud, timeout=timeout), timeout=timeout)

    def __enter__(self) -> "Device":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.t.close()

    # -------------------------------------------------------------- the link
    def _pump(self, deadline: float) -> bool:
        """Read what arrives before ``deadline``; False if nothing came."""
        data = self.t.read(max(0.0, deadline - time.monotonic()))
        if not data:
            return False
        for item in self._parser.feed(data):
            self._file(item)
        return True

    def _file(self, item) -> None:
        """Queue a parsed frame: an answer (a :class:`Response`, or a refused request type:
        only a resync marker's, which :meth:`_unasked` refuses), an output frame, or a
        corrupt frame (counted)."""
        if len(self._responses) + len(self._outputs) >= MAX_UNREAD_FRAMES:
            raise P.ProtocolError(f"{self.t.name}: the device sent more than {MAX_UNREAD_FRAMES} frames "
                                  "nobody asked for; check that the board runs a ttforge bitstream and "
                                  "that nothing else writes to the port")
        if isinstance(item, (Response, P.Refused)):
            self._responses.append(item)
        elif isinstance(item, OutputFrame):
            self._outputs.append(item)
        else:
            self.bad_frames.append(item)
            self._bad_outputs.append(len(self._outputs))
            self.bad_frame_count += 1

    def _send(self, data: bytes, what: str, timeout: float, deadline: float) -> None:
        """Write ``data`` by ``deadline``: a request's write and its answer share one
        deadline (a write that waited for a peer that does not read used to get the whole
        ``timeout`` on top of the answer's)."""
        try:
            self.t.write(data, timeout=deadline - time.monotonic())
        except DeviceTimeout:
            raise DeviceTimeout(
                f"{self.t.name}: could not send {what} within {timeout:g} s (the device takes no bytes); "
                "check the port, the baud rate, and that the board runs a ttforge bitstream") from None

    def _no_answer(self, what: str, timeout: float, n_bad: int) -> DeviceTimeout:
        """The one line of a device that sent no ``what`` within ``timeout`` (``n_bad``
        corrupt frames received meanwhile)."""
        bad = f" ({n_bad} corrupt frames received)" if n_bad else ""
        return DeviceTimeout(f"{self.t.name}: no {what} within {timeout:g} s{bad}; check the port, the "
                             "baud rate, and that the board runs a ttforge bitstream")

    def _wait(self, queue: deque, what: str, timeout: float | None = None, deadline: float | None = None,
              refuse=None):
        """The next frame of ``queue`` by ``deadline``, else :class:`DeviceTimeout`;
        ``refuse(bad, queued)`` sees each corrupt frame received meanwhile (and may raise),
        with the number of output frames unread when it came."""
        timeout = self.timeout if timeout is None else timeout
        if deadline is None:
            deadline = time.monotonic() + timeout
        seen = self.bad_frame_count
        while not queue:
            if time.monotonic() >= deadline:
                raise self._no_answer(what, timeout, self.bad_frame_count)
            self._pump(deadline)
            if refuse is not None and self.bad_frame_count != seen:
                for bad, queued in self._bad_since(seen):
                    refuse(bad, queued)
                seen = self.bad_frame_count
        return queue.popleft()

    def _bad_since(self, count: int) -> list[tuple[P.BadFrame, int]]:
        """The corrupt frames received since :attr:`bad_frame_count` was ``count`` (the
        last :attr:`bad_frames` keeps, at most), each with the number of output frames
        unread when it came."""
        n = min(self.bad_frame_count - count, len(self.bad_frames))
        pairs = list(zip(self.bad_frames, self._bad_outputs))
        return pairs[len(pairs) - n:] if n > 0 else []

    def _unasked(self, before: str) -> None:
        """Refuse the frames already held that nobody asked for ``before`` this request
        or vector: a board that answers twice (every later answer shifted by one) or
        sends an output unasked (taken as the next vector's result: wrong values, exit 0)."""
        for queue, kind in ((self._responses, "an answer"), (self._outputs, "an output frame")):
            if queue:
                raise P.ProtocolError(
                    f"{self.t.name}: the board sent {kind} nobody asked for ({queue[0].describe()}) "
                    f"before {before}; check that the board runs a ttforge bitstream and that "
                    "nothing else uses the port, then retry")

    @_exclusive
    def request(self, frame: bytes, cmd: Cmd, *, timeout: float | None = None) -> Response:
        """Send one request frame, wait for its response (status checked, AXI resp not);
        both within ``timeout`` (default: the device's)."""
        timeout = self.timeout if timeout is None else check_timeout(timeout)
        self._drain(0)      # an answer already here is not this request's
        if self._responses:
            self._unasked(cmd.name)
        deadline = time.monotonic() + timeout
        self._send(frame, cmd.name, timeout, deadline)
        outputs = len(self._outputs)
        try:
            r = self._wait(self._responses, f"answer to {cmd.name}", timeout, deadline)
        except DeviceTimeout:
            if self._in_flight or len(self._outputs) == outputs:
                raise
            # the bridge answers a request type it does not know t | 0x80: a request
            # whose type was corrupted into 0x20/0x21 is answered as if by an output frame
            raise DeviceTimeout(
                f"{self.t.name}: no answer to {cmd.name} within {timeout:g} s, but an output frame came "
                f"while no vector was in flight ({self._outputs[outputs].describe()}): the request was "
                "corrupted on the link and the board's refusal of it reads as an output frame; check "
                "the cable and that the baud rate is the bitstream's, then rerun") from None
        if isinstance(r, P.Refused):
            raise self._refused(cmd.name, r)
        if r.cmd != cmd:
            raise P.ProtocolError(f"{self.t.name}: expected a {cmd.name} response, got {r.describe()}")
        if r.status != Status.OK:
            raise DeviceError(f"{self.t.name}: {r.describe()}")
        return r

    def _refused(self, what: str, r: P.Refused) -> P.ProtocolError:
        """The line of a request (``what``) the bridge refused as of a type it does not
        know: the host sends none but resync markers, so its type was corrupted on the link."""
        return P.ProtocolError(f"{self.t.name}: {what}: the board refused the request as one of an unknown "
                               f"type ({r.describe()}): it was corrupted on the link; check the cable and "
                               "that the baud rate is the bitstream's, then rerun")

    def _drain(self, seconds: float) -> None:
        """Read what arrives within ``seconds`` (0: what is already there); the clock, not
        a quiet line, ends it (a port that never fell silent held this loop for as long
        as it talked)."""
        deadline = time.monotonic() + seconds
        while self._pump(deadline) and time.monotonic() < deadline:
            pass

    @_exclusive
    def resync(self) -> None:
        """Bring the link back in step after a failed or interrupted call (or what a
        killed run left on the line), by the device's answers, not by a quiet spell.

        Frame delimiters end a request the bridge holds half-received (the host's parser
        drops a frame half-received). Then a marker goes out: two requests of types no
        command has (:data:`~ttforge.firmware.protocol.SYNC_TYPES`, other types each
        time) and a PING. The bridge answers in order on one transmit path, so every
        answer to an earlier request comes before the marker's three, and is dropped
        with them (a call's late answer used to be taken by the next call once 50 ms had
        passed: every later vector shifted by one, exit 0). An inference a failed
        :meth:`infer` left in the engine may still send its output after that:
        :meth:`_settle` waits for the engine. A marker unanswered for
        :data:`SYNC_RETRY_S` (doubled each time) is replaced by a new one; none answered within the device's
        timeout is :class:`DeviceTimeout`, and the device stays to resync."""
        self._parser = P.Parser()       # the rest of a half-received frame starts no frame
        self._responses.clear()
        self._outputs.clear()
        deadline = time.monotonic() + self.timeout
        self._send(bytes([P.END]) * 4, "frame delimiters", self.timeout, deadline)
        self._await_marker(deadline)
        if self._in_flight:
            self._settle()
        self._dirty = False

    def _await_marker(self, deadline: float) -> None:
        """Send resync markers until the latest one's answers come (before ``deadline``);
        drop everything received before them, keep what follows."""
        n = len(P.SYNC_TYPES)
        want: tuple[int, int] = (0, 0)
        last: deque = deque(maxlen=3)       # the last three answers, in order
        resend, wait = 0.0, SYNC_RETRY_S
        seen = self.bad_frame_count
        while True:
            now = time.monotonic()
            if now >= deadline:
                # (the marker ends with a PING: said so, as any call's first PING)
                raise self._no_answer("answer to PING", self.timeout, self.bad_frame_count - seen)
            if now >= resend:
                c, self._sync_count = self._sync_count, self._sync_count + 1
                want = (P.SYNC_TYPES[c % n], P.SYNC_TYPES[c // n % n])
                self._send(b"".join(P.encode_request(t) for t in want) + P.ping(), "a resync marker",
                           self.timeout, deadline)
                resend, wait = now + wait, 2 * wait
            data = self.t.read(max(0.0, min(resend, deadline) - time.monotonic()))
            items = self._parser.feed(data) if data else []
            for k, item in enumerate(items):
                if isinstance(item, P.BadFrame):
                    self._file(item)
                elif not isinstance(item, OutputFrame):
                    last.append(item)
                    if (len(last) == 3 and isinstance(last[0], P.Refused) and last[0].cmd == want[0]
                            and isinstance(last[1], P.Refused) and last[1].cmd == want[1]
                            and isinstance(last[2], Response) and last[2].cmd == Cmd.PING):
                        for later in items[k + 1:]:    # answers to nothing sent yet: refused later
                            self._file(later)
                        return

    def _settle(self) -> None:
        """Wait until the inference a failed call left can send no more output, and drop
        that output. ``STATUS.BUSY`` clears once the engine's last output element is
        taken; the next answer comes after the rest of its frame (a whole request's time
        after it: the elements then left on their way to the bridge are sent first).
        An engine still busy after the device's timeout (a hung engine) is reset
        (``CMD.SOFT_RESET``, which empties its output path), and one given a vector in
        part at once: it waits for the rest for good, and has no output on its way (the
        vector before had all of its output taken)."""
        status = self._reg("STATUS")
        deadline = time.monotonic() + self.timeout
        if self._partial:
            self.write32(self._reg("CMD"), self._cmd("SOFT_RESET"))
            self._partial = False
        while self.read32(status) & 1:
            self._outputs.clear()
            if time.monotonic() >= deadline:
                self.write32(self._reg("CMD"), self._cmd("SOFT_RESET"))
                if self.read32(status) & 1:
                    raise DeviceError(f"{self.t.name}: STATUS still reads busy after CMD.SOFT_RESET; "
                                      "program the board again (or power-cycle it)")
                break
        self.read32(status)
        self._outputs.clear()
        self._in_flight = False

    # -------------------------------------------------------------- registers
    @_exclusive
    def ping(self) -> dict[str, int]:
        """PING the bridge: its protocol version and what it reports of the stream and
        the bus (each in :data:`PING_RANGES`, else a one-line :class:`DeviceError`)."""
        try:
            r = self.request(P.ping(), Cmd.PING)
        except DeviceTimeout:
            # a version-1 bridge answers, but with a CRC-8 the CRC-16 refuses
            if any(b.reason == P.V1_FRAME for b in self.bad_frames):
                raise DeviceError(f"{self.t.name}: bridge protocol version 1 (its frames have a CRC-8), "
                                  f"this driver speaks {P.PROTOCOL_VERSION}; rebuild the bitstream "
                                  "with this ttforge") from None
            raise
        version, eb, se, ab = r.info
        if version != P.PROTOCOL_VERSION:
            raise DeviceError(f"{self.t.name}: bridge protocol version {version}, this driver "
                              f"speaks {P.PROTOCOL_VERSION}; rebuild the bitstream with this ttforge")
        info = {"version": version, "elem_bytes": eb, "stream_elems": se, "addr_bits": ab}
        for k, (lo, hi) in PING_RANGES.items():
            if not lo <= info[k] <= hi:
                raise DeviceError(f"{self.t.name}: the bridge's PING answer reports {k}={info[k]}, "
                                  f"not in {lo}..{hi}; program the board with a ttforge bitstream")
        self.info = info
        return self.info

    def _axi(self, r: Response, what: str) -> Response:
        if r.resp != 0:
            raise DeviceError(f"{self.t.name}: {what} answered {AXI_RESP.get(r.resp, r.resp)}")
        return r

    @_exclusive
    def read32(self, addr: int) -> int:
        return self._axi(self.request(P.read32(addr), Cmd.READ32), f"read of 0x{addr:X}").data

    @contextlib.contextmanager
    def _writing(self, what: str):
        """A write that fails (refused, unanswered, answered by another command's response)
        may still have changed the device: a request corrupted on the link into a
        ``WRITE_BURST`` writes its words as they arrive, before its CRC refuses it. The
        loaded model is then forgotten (:attr:`load_lost`), so that no later :meth:`infer`
        runs on a half-written device. A bad argument, refused before anything was sent,
        changes nothing."""
        try:
            yield
        except UserError:
            raise
        except BaseException:
            self.load_lost = (f"the {what} failed, so what the device's memories and registers hold is "
                              "unknown; load the model again (load(artifact))")
            raise

    @_exclusive
    def write32(self, addr: int, data: int) -> None:
        frame = P.write32(addr, data)
        with self._writing(f"write of 0x{addr:X}"):
            self._axi(self.request(frame, Cmd.WRITE32), f"write of 0x{addr:X}")

    @_exclusive
    def write_burst(self, addr: int, words) -> None:
        words = list(words)
        frame = P.write_burst(addr, words)
        with self._writing(f"burst write at 0x{addr:X}"):
            r = self.request(frame, Cmd.WRITE_BURST)
            if r.count != len(words):
                raise DeviceError(f"{self.t.name}: burst at 0x{addr:X} wrote {r.count} of {len(words)} words")
            self._axi(r, f"burst write at 0x{addr:X}")

    @_exclusive
    def read32_many(self, addrs, *, window: int = READ_WINDOW) -> list[int]:
        """READ32 of each of ``addrs``, with up to ``window`` requests in flight (the
        link's round trip is paid once per ``window`` reads, not per read). The window
        is bounded by the bridge's receive FIFO: ``window`` requests of at most 10 bytes
        each (escapes included) must fit in it while the bridge answers one."""
        addrs = [int(a) for a in addrs]
        self._drain(0)
        if self._responses:
            self._unasked("READ32")
        out: list[int] = []
        sent = 0
        while len(out) < len(addrs):
            deadline = time.monotonic() + self.timeout     # the writes and the next answer
            while sent < len(addrs) and sent - len(out) < window:
                self._send(P.read32(addrs[sent]), "READ32", self.timeout, deadline)
                sent += 1
            r = self._wait(self._responses, "answer to READ32", self.timeout, deadline)
            if isinstance(r, P.Refused):
                self.resync()
                raise self._refused(f"read of 0x{addrs[len(out)]:X}", r)
            if r.cmd != Cmd.READ32 or r.status != Status.OK:
                self.resync()
                raise DeviceError(f"{self.t.name}: read of 0x{addrs[len(out)]:X}: {r.describe()}")
            out.append(self._axi(r, f"read of 0x{addrs[len(out)]:X}").data)
        return out

    @_exclusive
    def stream_in(self, values, *, timeout: float | None = None) -> None:
        """Send ``values`` (integers) as one vector: beats of the bridge's ``m_axis``,
        ``tlast`` on the last. A vector longer than one frame holds goes as several
        STREAM_IN frames (:func:`~ttforge.firmware.protocol.stream_in_frames`); a non-OK
        answer (e.g. ``STALL``) or a short count raises."""
        if self.info is None:
            self.ping()
        values = list(values)
        eb, se = self.info["elem_bytes"], self.info["stream_elems"]
        k = P.stream_piece_elems(eb, se)
        for j, frame in enumerate(P.stream_in_frames(values, eb, se)):
            n = min(k, len(values) - j * k)
            r = self.request(frame, Cmd.STREAM_IN, timeout=timeout)
            if r.count != n:
                where = f" (frame {j + 1}, elements {j * k}..{j * k + n - 1})" if len(values) > k else ""
                raise DeviceError(f"{self.t.name}: STREAM_IN took {r.count} of {n} elements{where}")

    def _reg(self, name: str) -> int:
        if self._regs is None:
            from ttforge.hw.config import AccelConfig
            from ttforge.hw.regmap import RegisterMap
            self._regs = RegisterMap(self.config or AccelConfig())
        return self._regs.addr(name)

    @_exclusive
    def hw_config(self):
        """The :class:`AccelConfig` of the bitstream, read from its ``CFG_*`` registers;
        ``ID``, ``VERSION`` and the PING answer checked against them (one-line
        :class:`DeviceError` naming the port and the register)."""
        from ttforge.hw.config import AccelConfig, stream_lane_bits
        from ttforge.hw.regmap import RegisterMap

        if self.info is None:
            self.ping()
        ident = self.read32(self._reg("ID"))
        if ident != TTFG_ID:
            raise DeviceError(f"{self.t.name}: ID register reads 0x{ident:08X}, not a ttforge "
                              "accelerator (0x54544647)")
        self._check_version()
        lanes_w = self.read32(self._reg("CFG_LANES"))
        widths = self.read32(self._reg("CFG_WIDTHS"))
        with board_describes(self.t.name, "accelerator", "program the board with a ttforge bitstream"):
            cfg = AccelConfig(
                lanes=lanes_w & 0xFF, stream_elems=(lanes_w >> 8) & 0xFF,
                act_bits=widths & 0xFF, core_bits=(widths >> 8) & 0xFF,
                inter_bits=(widths >> 16) & 0xFF, acc_bits=(widths >> 24) & 0xFF,
                bias_bits=self.read32(self._reg("CFG_BIAS_BITS")) & 0xFF,
                core_depth=self.read32(self._reg("CFG_CORE_DEPTH")),
                bias_depth=self.read32(self._reg("CFG_BIAS_DEPTH")),
                buf_depth=self.read32(self._reg("CFG_BUF_DEPTH")),
                desc_depth=self.read32(self._reg("CFG_DESC_DEPTH")),
                engines=max(1, (lanes_w >> 16) & 0xFF),
                axil_addr_bits=self.info["addr_bits"],
            )
        # the bridge's stream must be the accelerator's: elements of another width or
        # count per beat are packed wrongly (or divided by zero)
        for k, want, src in (("stream_elems", cfg.stream_elems, "CFG_LANES.STREAM_ELEMS"),
                             ("elem_bytes", stream_lane_bits(cfg.act_bits) // 8,
                              f"CFG_WIDTHS.ACT_BITS={cfg.act_bits}")):
            if self.info[k] != want:
                raise DeviceError(f"{self.t.name}: the bridge's PING answer reports {k}={self.info[k]}, "
                                  f"but {src} needs {want}; program the board with a ttforge bitstream")
        self.config = cfg
        self._regs = RegisterMap(cfg)
        return cfg

    def _check_version(self) -> None:
        """``VERSION`` (register map, arithmetic spec, descriptor words) must be this
        ttforge's, as the C driver's ``ttfd_identify`` requires: a program compiled here
        for another interface or arithmetic gives wrong results without an error."""
        self._reg("VERSION")
        reg = self._regs["VERSION"]
        got = self.read32(reg.addr)
        if got != reg.value:
            def fields(v):
                return ", ".join(f"{f.name}={(v >> f.lsb) & ((1 << f.width) - 1)}" for f in reg.fields)
            raise DeviceError(f"{self.t.name}: VERSION reads 0x{got:08X} ({fields(got)}), this ttforge "
                              f"expects 0x{reg.value:08X} ({fields(reg.value)}); rebuild the bitstream "
                              "with this ttforge (ttforge build) and program the board")

    # -------------------------------------------------------------- the model
    @_exclusive
    def load(self, artifact) -> Any:
        """Compile ``artifact`` (a path or an ``IntNetwork``) for the device's config and
        write its load image; returns the :class:`~ttforge.hw.program.Program`."""
        from ttforge.hw.program import compile_program, load_image

        if isinstance(artifact, (str, os.PathLike)):
            from ttforge.ir.artifact import load_artifact
            net = load_artifact(Path(artifact))
        else:
            net = artifact
        # what a killed run or a failed call left on the line is dropped (as train-board's
        # connect does), and the PING and registers are read afresh
        self.resync()
        self.info = None
        cfg = self.hw_config()
        # an inference a killed run left in the engine would send its output into this
        # run's first call: waited for (or aborted) and dropped, now that this is known to
        # be an accelerator of this register map
        self._settle()
        bad = cfg.misfits(net)
        if bad:
            raise DeviceError(f"the model does not fit the bitstream on {self.t.name}: "
                              + "; ".join(bad) + " (build a bitstream for this model)")
        program = compile_program(net, cfg)
        writes = load_image(program, self._regs)
        # from the first write on, the model loaded before is gone; this one is there
        # only once every write has been answered OK
        self.net = self.program = None
        self.load_lost = ("the last load did not complete, so what the device's memories hold is "
                          "unknown; load the model again (load(artifact))")
        for addr, words in P.split_bursts(writes, BURST_WORDS):
            self.write_burst(addr, words)
        # the error LED follows irq: enable the error interrupt, clear stale causes
        ctrl = self._regs["CTRL"]
        en = {f.name: f for f in ctrl.fields}
        self.write32(self._reg("IRQ_STATUS"), 0x3)
        # the counters count this model's vectors: a second run on a board still powered
        # printed the sum of both runs
        self.clear_counters()
        self.write32(ctrl.addr, en["ENABLE"].put(1) | en["IRQ_ERROR_EN"].put(1))
        self.net, self.program, self.load_lost = net, program, None
        return program

    def _glob(self, name: str) -> int:
        return int(getattr(self.program, name.lower()))

    @_exclusive
    def infer(self, inputs, *, timeout: float | None = None) -> np.ndarray:
        """Run each row of ``inputs`` (integers, ``(N, in_features)`` or one vector)
        through the device; ``(N, out_features)`` int64."""
        if self.load_lost is not None:
            raise DeviceError(f"{self.t.name}: {self.load_lost}")
        if self.program is None:
            raise DeviceError("no model loaded; call load(artifact) first")
        tmo = self.timeout if timeout is None else check_timeout(timeout)
        try:
            x = np.asarray(inputs)
        except (ValueError, TypeError) as e:   # a ragged list: numpy's own line, as a traceback
            raise ShapeError(f"inputs are not one array of integers ({str(e).splitlines()[0]}); give "
                             "an (N, in_features) array") from None
        one = x.ndim == 1
        if one:
            x = x[None, :]
        n_in, n_out = self._glob("IN_COUNT"), self._glob("OUT_COUNT")
        if x.ndim != 2 or x.shape[1] != n_in:
            raise ShapeError(f"inputs have shape {tuple(np.asarray(inputs).shape)}; the model takes "
                             f"(N, {n_in})")
        if not np.issubdtype(x.dtype, np.integer):
            raise ShapeError(f"inputs must be integers (quantized), got {x.dtype}; quantize them "
                             "with the network's quantize_input")
        # the network's input width, not the engine's act_bits (which may be wider): a
        # value between the two went out, and came back as numbers no golden model has
        a = self.program.in_bits
        lo, hi = -(1 << (a - 1)), (1 << (a - 1)) - 1
        if x.size and (x.min() < lo or x.max() > hi):
            raise ShapeError(f"inputs must be in {lo}..{hi} (the network's {a}-bit input), got "
                             f"{int(x.min())}..{int(x.max())}; quantize them with the network's "
                             f"quantize_input")
        eb, E = self.info["elem_bytes"], self.config.stream_elems
        want = -(-n_out // E) * E
        piece = P.stream_piece_elems(eb, E)
        out = np.zeros((x.shape[0], n_out), dtype=np.int64)
        for i, row in enumerate(x):
            # the protocol tags no frame with its vector: only an output that comes after
            # the vector was sent can be its result; one already here was sent unasked
            self._drain(0)
            self._unasked(f"vector {i} was sent")
            t_sent = time.monotonic()
            # a vector longer than one frame holds goes as several (whole beats each, the
            # last with tlast), and comes back as several output frames
            frames = P.stream_in_frames(row.tolist(), eb, E)
            since = self.bad_frame_count     # the output may come (corrupt) with an answer
            self._in_flight = self._partial = True      # until its output is all here
            for j, req in enumerate(frames):
                n = min(piece, len(row) - j * piece)
                part = f" (frame {j + 1} of {len(frames)})" if len(frames) > 1 else ""
                deadline = time.monotonic() + tmo
                self._send(req, "STREAM_IN", tmo, deadline)
                self._partial = j + 1 < len(frames)      # its last byte written: it all reaches the core
                r = self._wait(self._responses, "answer to STREAM_IN", tmo, deadline)
                if isinstance(r, P.Refused):
                    self._recover()
                    raise self._refused(f"vector {i}{part}: STREAM_IN", r)
                if r.cmd != Cmd.STREAM_IN or r.status != Status.OK:
                    self._recover()
                    raise DeviceError(f"{self.t.name}: vector {i}{part}: {r.describe()}")
                if r.count != n:
                    self._recover()
                    raise DeviceError(f"{self.t.name}: vector {i}{part}: STREAM_IN took {r.count} of {n} "
                                      "elements; check the baud rate and that the board runs a ttforge "
                                      "bitstream")
            asm = P.OutputAssembler(want * eb, eb, E, what=f"{self.t.name}: vector {i}")
            data, checked = None, since
            while data is None:
                data = asm.add(self._wait_output(i, tmo, asm, since, checked))
                checked = self.bad_frame_count      # each corrupt frame is looked at once
            out[i] = P.unpack_elements(data, eb)[:n_out]
            self._in_flight = False
            self.longest_vector_s = max(self.longest_vector_s, time.monotonic() - t_sent)
            if self._wrapping():    # read before they can pass 2**counter_bits again
                self._sample_counters()
        if len(x):
            # a copy of the last output comes right behind it
            self._drain(TRAILING_OUTPUT_S)
            self._unasked(f"the end of the call ({len(x)} vectors sent, each answered)")
        return out[0] if one else out

    def _wait_output(self, i: int, timeout: float, asm: P.OutputAssembler, since: int,
                     checked: int) -> OutputFrame:
        """The next output frame of vector ``i`` (``asm`` holds the frames before it); while
        it does not come, STATUS is polled so that an accelerator error is reported at once
        (not after the timeout). A corrupt frame received since :attr:`bad_frame_count` was
        ``checked`` that can only be this vector's output fails at once; the timeout names
        those received since it was ``since`` (the vector was sent)."""
        deadline = time.monotonic() + timeout
        step = max(0.2, timeout / 20)
        # the contents of this vector's output frames as the bridge splits them: type, a
        # piece of the elements, CRC
        k = P.output_piece_bytes(asm.eb, asm.beat // asm.eb)
        sizes = {min(k, asm.want - o) + 1 + P.CRC_BYTES for o in range(0, asm.want, k)}

        def got(queued: int = 0) -> str:
            # the elements received before the frame waited for (or the corrupt one): those
            # joined and the first ``queued`` output frames not yet joined
            have = len(asm.data) + sum(len(f.data) for f in list(self._outputs)[:queued])
            return f" (after {have // asm.eb} of its {asm.want // asm.eb} elements)" if have else ""

        def refuse(bad: P.BadFrame, queued: int) -> None:
            # Of an output frame's type (the start or a continuation) or of the length of one
            # of this vector's output frames (one damaged byte keeps one of them), it is this
            # vector's output, lost: waiting for it ran into the timeout as "no output".
            n = len(bad.content)
            if bad.content[:1] in (bytes([P.OUTPUT_TYPE]), bytes([P.OUTPUT_CONT])) or n in sizes:
                have = len(asm.data) + sum(len(f.data) for f in list(self._outputs)[:queued])
                due = min(k, max(asm.want - have, 0)) + 1 + P.CRC_BYTES     # the next frame's
                odd = "" if n in sizes or n >= P.MAX_FRAME_BYTES else f", {n} bytes where {due} were due"
                raise P.ProtocolError(
                    f"{self.t.name}: vector {i}: the board's output frame{got(queued)} came corrupt "
                    f"({bad.reason}{odd}); check the cable and that the baud rate is the bitstream's, "
                    "then rerun")

        while True:
            for bad, queued in self._bad_since(checked):    # with the answer, or while STATUS was read
                refuse(bad, queued)
            checked = self.bad_frame_count
            left = deadline - time.monotonic()
            try:
                return self._wait(self._outputs, f"output of vector {i}", max(0.0, min(step, left)),
                                  refuse=refuse)
            except DeviceTimeout:
                if left <= step:
                    n = self.bad_frame_count - since
                    bad = f" ({n} corrupt frames received, the last: {self.bad_frames[-1].reason})" if n else ""
                    raise DeviceTimeout(f"{self.t.name}: no output of vector {i}{got(len(self._outputs))} within "
                                        f"{timeout:g} s and no error reported{bad}") from None
            checked = self.bad_frame_count
            if self._outputs:
                continue
            err = self.errors()
            if err["error"] and not self._outputs:
                self.write32(self._reg("CMD"), self._cmd("CLEAR_ERROR"))
                raise DeviceError(f"{self.t.name}: vector {i}: the accelerator stopped with "
                                  f"{err['code']} at step {err['step']}")

    def _cmd(self, field: str) -> int:
        f = {f.name: f for f in self._regs["CMD"].fields}[field]
        return f.put(1)

    def _recover(self) -> None:
        """After a failed STREAM_IN: drop a partial vector in the core."""
        try:
            self.write32(self._reg("CMD"), self._cmd("SOFT_RESET"))
        except TTForgeError:
            pass
        self._outputs.clear()

    # -------------------------------------------------------------- status
    @_exclusive
    def counters(self) -> dict[str, int]:
        """The six performance counters, ``{"cycles", "busy_lane_cycles", "in_stall",
        "out_stall", "sat_events", "vectors"}``, counted since :meth:`load` (which clears
        them) or :meth:`clear_counters`.

        The registers are 48 bits; a bitstream's counters may be narrower
        (``counter_bits``, 24 on the iCEBreaker: 2**24 cycles are 1.4 s at 12 MHz) and
        wrap. With :attr:`counter_bits` set below 48, :meth:`infer` reads them after
        every vector and this adds up their increments modulo ``2**counter_bits``: exact
        while no counter grows by ``2**counter_bits`` or more within one vector (the cycle
        model and :attr:`longest_vector_s` bound that). Otherwise (or not cleared by this
        driver) they are the registers' values, which wrap at ``2**counter_bits``."""
        if self._wrapping():
            self._sample_counters()
            return {c.lower(): v for c, v in self._counts.items()}
        return {c.lower(): v for c, v in self._read_counters().items()}

    @_exclusive
    def clear_counters(self) -> None:
        """Zero the performance counters (``CMD.CLEAR_COUNTERS``): :meth:`counters`
        counts from here. :meth:`load` clears them."""
        self.write32(self._reg("CMD"), self._cmd("CLEAR_COUNTERS"))
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._raw = dict.fromkeys(COUNTERS, 0)
        self.longest_vector_s = 0.0

    def _wrapping(self) -> bool:
        """Counters narrower than the registers, counted since this driver cleared them."""
        from ttforge.hw.config import COUNTER_BITS

        return self._counts is not None and self.counter_bits is not None and self.counter_bits < COUNTER_BITS

    def _read_counters(self) -> dict[str, int]:
        """The counter registers, each ``LO`` read first (it latches ``HI``); counters of at
        most 32 bits are their ``LO`` alone (``HI`` reads 0)."""
        if self.counter_bits is not None and self.counter_bits <= 32:
            return dict(zip(COUNTERS, self.read32_many([self._reg(f"{c}_LO") for c in COUNTERS])))
        out = {}
        for c in COUNTERS:
            lo = self.read32(self._reg(f"{c}_LO"))
            hi = self.read32(self._reg(f"{c}_HI"))
            out[c] = (hi << 32) | lo
        return out

    def _sample_counters(self) -> None:
        """Add each counter's increment since the last reading, modulo its width."""
        raw = self._read_counters()
        mod = 1 << self.counter_bits
        for c in COUNTERS:
            self._counts[c] += (raw[c] - self._raw[c]) % mod
        self._raw = raw

    @_exclusive
    def errors(self) -> dict[str, Any]:
        """``STATUS`` and ``ERROR_CODE``: busy, done, error, the code's name and step, and
        the corrupt frames the driver has received."""
        from ttforge.hw.regmap import ErrorCode

        st = self.read32(self._reg("STATUS"))
        ec = self.read32(self._reg("ERROR_CODE"))
        code = ec & 0xFF
        try:
            name = ErrorCode(code).name
        except ValueError:
            name = f"code {code}"
        return {"busy": bool(st & 1), "done": bool(st & 2), "error": bool(st & 4),
                "code": name, "step": ec >> 16, "bad_frames": self.bad_frame_count}
