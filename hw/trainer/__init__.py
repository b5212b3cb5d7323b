"""The training engine: the all-integer training step of ``docs/arithmetic.md`` in hardware.

See ``docs/hardware.md`` ("Training engine"). The pieces, from the contract to the pins:

=========================  =============================================================
:mod:`.program`            ``TrainEngineConfig``; ``compile_training`` (a state and a
                           batch size -> the operation program and memory images);
                           ``next_exponents`` (the host's exponent bookkeeping from
                           ``MAXACC``); ``state_from_memories`` (a state read back)
:mod:`.model`              a word-level interpreter of the encoded program
:mod:`.engine`             ``TrainEngine`` (Amaranth) and its exact cycle model ``op_cycles``
:mod:`.loss`, :mod:`.update`  the loss unit; the update unit, xorshift32, bias alignment
:mod:`.top`, :mod:`.regmap`  ``TrainAccel``: the engine behind AXI4-Lite and AXI4-Stream,
                           its register map (JSON, C header, Markdown)
:mod:`.host`               ``TrainHost``: the host side over any AXI4-Lite transport
:mod:`.verilog`            ``generate_train``: Verilog and register files on disk
=========================  =============================================================
"""

from ttforge.hw.trainer.engine import HostSel, TrainEngine, TrainError, op_cycles
from ttforge.hw.trainer.program import (TrainEngineConfig, TrainOp, TrainProgram, compile_training,
                                        next_exponents, state_from_memories)

__all__ = ["TrainEngineConfig", "TrainOp", "TrainProgram", "compile_training", "next_exponents",
           "state_from_memories", "TrainEngine", "TrainError", "HostSel", "op_cycles"]
