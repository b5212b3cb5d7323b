"""The training board top: :class:`~ttforge.hw.trainer.top.TrainAccel` + the UART bridge +
LEDs, for simulation and for the ULX3S / iCEBreaker (``docs/boards.md``, "Training on the
board").

It is the inference board top (:mod:`ttforge.firmware.board`) with the training top as its
accelerator: :class:`~ttforge.firmware.board.BoardCore` sizes the bridge from the
accelerator's ports (:func:`~ttforge.firmware.board.bridge_params`: the training top takes
one element of ``act_bits`` rounded up to bytes per beat, its register map's address
width), so the bridge's PING tells the host exactly that. The training top has no output
stream: the host reads everything back over AXI4-Lite.

* :func:`train_accel` is the accelerator factory the board top takes;
* :func:`train_sim_verilog` is the board top for simulation (``clk``, ``rst``, the pins);
* :class:`TrainBoardTop` is the board top on an amaranth-boards platform;
* :func:`simulated_train_device` opens a :class:`~ttforge.firmware.train_host.TrainDevice`
  on the simulated board (Icarus, over its UART pins).
"""

from __future__ import annotations

from typing import Callable

from ttforge.errors import ConfigError
from ttforge.firmware.board import DEFAULT_BAUD, SIM_TOP, BoardTop, sim_verilog

__all__ = ["train_accel", "train_sim_verilog", "TrainBoardTop", "simulated_train_device", "open_train_device"]


def _check_config(config) -> None:
    from ttforge.hw.trainer.program import TrainEngineConfig

    if not isinstance(config, TrainEngineConfig):
        raise ConfigError(f"the training board needs a TrainEngineConfig, got {type(config).__name__}")


def train_accel(fault: str | None = None) -> Callable:
    """``config -> TrainAccel(config)`` (``fault``: a deliberately broken engine, for
    mutation runs only)."""
    from ttforge.hw.trainer.top import TrainAccel

    def make(config):
        return TrainAccel(config, fault=fault)
    return make


def train_sim_verilog(config, *, divisor: int, clk_hz: int = 100_000_000, name: str = SIM_TOP,
                      fault: str | None = None) -> str:
    """Verilog of the training board top for simulation (ports as
    :func:`ttforge.firmware.board.sim_verilog`)."""
    _check_config(config)
    return sim_verilog(config, divisor=divisor, clk_hz=clk_hz, name=name, accel=train_accel(fault))


class TrainBoardTop(BoardTop):
    """The training board top on a board's platform (elaborate with that platform)."""

    def __init__(self, board_key: str, config, *, clk_hz: int | None = None, baud: int = DEFAULT_BAUD):
        _check_config(config)
        super().__init__(board_key, config, clk_hz=clk_hz, baud=baud, accel=train_accel())


def simulated_train_device(config, *, timeout: float = 120.0, fault: str | None = None, **kwargs):
    """A :class:`~ttforge.firmware.train_host.TrainDevice` on the simulated training board
    (:class:`~ttforge.firmware.simulate.SimTransport`: Icarus, cocotb, the real bridge RTL).
    ``kwargs`` go to the transport (``divisor``, ``build_dir``, ...). Close it, or use
    ``with``."""
    from ttforge.firmware.simulate import SimTransport
    from ttforge.firmware.train_host import TrainDevice

    _check_config(config)
    t = SimTransport(config, timeout=timeout, accel=train_accel(fault), **kwargs)
    try:
        return TrainDevice(t, config, timeout=timeout)
    except BaseException:
        t.close()
        raise


def open_train_device(config, *, sim: bool = False, port: str | None = None, baud: int = DEFAULT_BAUD,
                      timeout: float | None = None, train=None, port_setting: str = "--port", **sim_kwargs):
    """The :class:`~ttforge.firmware.train_host.TrainDevice` a run trains on: the simulated
    board (``sim``; ``timeout`` default 120 s) or the board on serial ``port`` at ``baud``
    (default 2 s). Same driver either way; only the transport differs. On a board,
    ``config=None`` reads the engine from its ``CFG_*`` registers
    (:func:`~ttforge.firmware.train_host.engine_from_board`, with ``train``: the state's
    :class:`~ttforge.ir.train.TrainConfig`). ``port_setting`` is where the user gave the
    port (the CLI's ``--port``, the flow's ``[device_train] port``): errors name it."""
    if sim:
        return simulated_train_device(config, timeout=timeout or 120.0, **sim_kwargs)
    if not port:
        raise ConfigError(f"give {port_setting} (the board's serial port, e.g. /dev/ttyUSB0) or the simulated board")
    from ttforge.firmware.host import SerialTransport
    from ttforge.firmware.train_host import TrainDevice, engine_from_board

    t = SerialTransport(port, baud, timeout=timeout or 2.0, setting=port_setting)
    try:
        if config is None:
            config = engine_from_board(t, train, timeout=timeout or 2.0)
        _check_config(config)
        return TrainDevice(t, config, timeout=timeout or 2.0)
    except BaseException:
        t.close()
        raise
