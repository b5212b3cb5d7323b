"""The engine's typed interfaces: port groups, the descriptor and flag layouts, the
controller states.

Everything here is derived from one place each: the descriptor word table and the
``FLAGS`` bitfields of :mod:`ttforge.hw.regmap` (:data:`DESCRIPTOR_WORDS`,
:data:`FLAGS_FIELDS`), the counter list (:data:`~ttforge.hw.regmap.COUNTERS`), the
counter width and the descriptor size (:data:`ttforge.hw.config.COUNTER_BITS`,
:data:`ttforge.hw.config.DESC_WORDS`) and the element stream payload
(:func:`ttforge.hw.axis.element_layout`).

Port groups of :class:`~ttforge.hw.engine.TTEngine` (each a :class:`wiring.Signature`
seen from the side that drives it, so the engine holds them as ``In(...)``, except
``status`` and ``counters``, which it drives):

* ``load``: one :func:`MemWriteSignature` per memory (``dmem``, ``cmem``, ``bmem``);
* ``program``: ``in_count``, ``in_pad``, ``out_count``, ``out_buf``;
* ``control``: ``enable`` (level), ``clear_error``, ``clear_counters``, ``soft_reset``
  (one-cycle pulses);
* ``status``: ``busy``, ``done`` (``STATUS.DONE``: set when an inference completes,
  cleared when the next one starts or by a soft reset), ``done_pulse`` and
  ``error_pulse`` (one-cycle events for ``IRQ_STATUS``), ``error``, ``error_code``,
  ``error_step``, and ``in_open`` (the input adapter may take a beat: the engine is
  enabled and not in error, or is discarding the rest of a vector after a stream error);
* ``counters``: one ``COUNTER_BITS``-bit member per entry of :data:`COUNTERS`.
"""

from __future__ import annotations

import functools

from amaranth.hdl import signed, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ttforge.hw.axis import element_layout
from ttforge.hw.config import COUNTER_BITS, DESC_WORDS, AccelConfig
from ttforge.hw.regmap import COUNTERS, DESCRIPTOR_WORDS, FLAGS_FIELDS

__all__ = ["engine_signature", "State", "InputState", "ComputeState", "STEP_BITS", "ERROR_CODE_BITS", "COUNTER_NAMES", "flags_layout",
           "descriptor_layout", "MemWriteSignature", "LoadSignature", "ProgramSignature",
           "ControlSignature", "StatusSignature", "CounterSignature", "BOUND_WORDS"]

#: width of the step index (``ERROR_CODE.STEP``)
STEP_BITS = 16
#: width of ``error_code`` (``ErrorCode`` values)
ERROR_CODE_BITS = 4
#: the counter ports, in register order (lower-case names of :data:`COUNTERS`)
COUNTER_NAMES = tuple(name.lower() for name, _ in COUNTERS)
#: descriptor words that are loop bounds (held as ``bound - 1``)
BOUND_WORDS = tuple(n for _, n, _ in DESCRIPTOR_WORDS if n in ("N0", "N1", "N2", "N3"))


class State(enum.Enum, shape=3):
    """Controller states (``docs/hardware.md``, "Engine timing")."""
    IDLE = 0      #: waiting for the first element of a vector
    INPUT = 1     #: taking the rest of the vector, one element per cycle
    DRAIN = 2     #: discarding the rest of a vector after a stream error
    PAD = 3       #: writing the zero padding up to IN_PAD
    FETCH = 4     #: reading one step's descriptor from DMEM
    RUN = 5       #: the step's loop iterations and the pipeline drain
    ZFILL = 6     #: the step's zero fill
    OUTPUT = 7    #: streaming OUT_COUNT elements from OUT_BUF


class InputState(enum.Enum, shape=3):
    """Throughput mode's input side: a vector into the staging memory.

    The states it shares with :class:`State` keep their meaning and encoding."""
    IDLE = 0      #: waiting for the first element of a vector
    INPUT = 1     #: taking the rest of the vector into the staging memory
    DRAIN = 2     #: discarding the rest of a vector after a stream error
    PAD = 3       #: writing the zero padding up to IN_PAD into the staging memory
    STAGED = 4    #: the vector waits, staged, until the compute side has copied it


class ComputeState(enum.Enum, shape=3):
    """Throughput mode's compute side (the controller's ``state``).

    Encoded as :class:`State` (``COPY`` takes ``INPUT``'s code), so that ``state`` reads
    the same on a debugger whichever mode built the engine."""
    IDLE = 0      #: no vector staged, or waiting for an error to be cleared
    COPY = 1      #: copying the staged vector into BUF0, one word per cycle
    FETCH = 4     #: reading one step's descriptor from DMEM
    RUN = 5       #: the step's loop iterations and the pipeline drain
    ZFILL = 6     #: the step's zero fill
    OUTPUT = 7    #: streaming OUT_COUNT elements from OUT_BUF


def _struct(name: str, fields: dict) -> type:
    """A :class:`data.Struct` subclass with ``fields`` (name -> shape), in order."""
    return type(name, (data.Struct,), {"__annotations__": dict(fields), "__module__": __name__})


def flags_layout() -> type:
    """The ``FLAGS`` word (descriptor word 0) as a :class:`data.Struct`: one member per
    :data:`FLAGS_FIELDS` entry (lower-case name; ``SHIFT`` signed), unused bits as
    ``reserved_<lsb>``; 32 bits."""
    fields, pos = {}, 0
    for f in sorted(FLAGS_FIELDS, key=lambda f: f.lsb):
        if f.lsb > pos:
            fields[f"reserved_{pos}"] = unsigned(f.lsb - pos)
        fields[f.name.lower()] = signed(f.width) if f.signed else unsigned(f.width)
        pos = f.lsb + f.width
    if pos < 32:
        fields[f"reserved_{pos}"] = unsigned(32 - pos)
    return _struct("DescriptorFlags", fields)


#: the ``FLAGS`` word layout
Flags = flags_layout()


@functools.lru_cache(maxsize=None)
def descriptor_layout(addr_width: int, bound_width: int) -> type:
    """One step's descriptor as the engine holds it, a :class:`data.Struct` with one
    member per :data:`DESCRIPTOR_WORDS` entry (lower-case name): ``flags``
    (:data:`Flags`), the loop bounds minus one (``n0`` .. ``n3``, ``bound_width`` bits),
    and every address, stride and count word saturated to ``addr_width + 1`` bits (one
    class per pair of widths)."""
    fields = {}
    for _, name, _ in DESCRIPTOR_WORDS:
        if name == "FLAGS":
            fields["flags"] = Flags
        elif name in BOUND_WORDS:
            fields[name.lower()] = unsigned(bound_width)
        else:
            fields[name.lower()] = unsigned(addr_width + 1)
    return _struct("Descriptor", fields)


def MemWriteSignature(addr_bits: int, data_shape) -> wiring.Signature:
    """One memory's load port: ``addr`` (element index), ``data``, ``we``."""
    return wiring.Signature({"addr": Out(max(1, addr_bits)), "data": Out(data_shape),
                             "we": Out(1)})


def LoadSignature(config: AccelConfig) -> wiring.Signature:
    """The load ports of the three memories (``DMEM`` word index; ``CMEM``/``BMEM``
    element addresses)."""
    c = config
    return wiring.Signature({
        "dmem": Out(MemWriteSignature(ceil_log2(c.desc_depth * DESC_WORDS), 32)),
        "cmem": Out(MemWriteSignature(ceil_log2(c.core_depth), signed(c.core_bits))),
        "bmem": Out(MemWriteSignature(ceil_log2(c.bias_depth), signed(c.bias_bits))),
    })


def ProgramSignature() -> wiring.Signature:
    """The program registers (written while the engine is disabled)."""
    return wiring.Signature({"in_count": Out(32), "in_pad": Out(32), "out_count": Out(32),
                             "out_buf": Out(1)})


def ControlSignature() -> wiring.Signature:
    return wiring.Signature({"enable": Out(1), "clear_error": Out(1),
                             "clear_counters": Out(1), "soft_reset": Out(1)})


def StatusSignature() -> wiring.Signature:
    return wiring.Signature({
        "busy": Out(1), "done": Out(1), "done_pulse": Out(1), "error": Out(1),
        "error_pulse": Out(1), "error_code": Out(ERROR_CODE_BITS),
        "error_step": Out(STEP_BITS), "in_open": Out(1),
    })


def CounterSignature() -> wiring.Signature:
    return wiring.Signature({name: Out(COUNTER_BITS) for name in COUNTER_NAMES})


def engine_signature(config: AccelConfig) -> wiring.Signature:
    """The engine's ports: element streams in and out, and the port groups the top binds
    registers to (load, program, control, status, counters). One definition for the
    engine and any stand-in for it."""
    elem = element_layout(config.act_bits)
    return wiring.Signature({
        "inp": In(stream.Signature(elem)),
        "out": Out(stream.Signature(elem)),
        "load": In(LoadSignature(config)),
        "program": In(ProgramSignature()),
        "control": In(ControlSignature()),
        "status": Out(StatusSignature()),
        "counters": Out(CounterSignature()),
    })
