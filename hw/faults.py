"""Deliberate RTL faults (mutants) for the tests that must fail.

Every bit-exactness check has a sibling that breaks the hardware on purpose and must
see the check fail (``docs/verification.md``, "Mutation testing"). A fault is named here, once,
with a one-line description and the block that carries it; the generators take it as
``fault=NAME``:

* ``TTEngine(config, fault=...)`` for the faults inside the engine (``ENGINE_FAULTS``;
  the engine hands them on to the blocks it builds: :class:`~ttforge.hw.blocks.AddressGen`,
  :class:`~ttforge.hw.blocks.Requant`);
* ``TTAccel(config, fault=...)`` and ``verilog(config, fault=...)`` for any of them
  (the top hands each to the block that carries it: the engine, the stream adapters,
  the AXI4-Lite slave).

``fault=None`` (the default everywhere) builds the real hardware, byte-identical to a
build without the argument. Generated products never carry a fault.
"""

from __future__ import annotations
from ttforge.errors import ConfigError

__all__ = ["FAULTS", "FAULT_BLOCKS", "ENGINE_FAULTS", "DATAPATH_FAULTS", "PROTOCOL_FAULTS",
           "check_fault"]

#: fault name -> one-line description
FAULTS: dict[str, str] = {
    "requant_lsb": "bit 0 of requantization lane 0's output is flipped on every buffer write",
    "round_off_by_one": "requantization rounding constant is 2^(s-1) - 1 instead of 2^(s-1) "
                        "(ties round toward minus infinity)",
    "wrong_stride": "the address generator's x stride of the innermost (k) loop is one "
                    "element too large",
    "drop_tlast": "the engine never marks the last output element, so m_axis tlast is "
                  "never asserted at the end of an output vector",
    "sat_bound": "the saturation upper bound is 2^(SAT_BITS-1) instead of "
                 "2^(SAT_BITS-1) - 1 (off by one)",
    "axis_unstable": "m_axis tvalid falls after one cycle even when tready is low (the "
                     "beat is dropped)",
    "axil_double_resp": "the AXI4-Lite slave keeps the accepted write request, so every "
                        "write is answered twice (a B response with no request)",
}

#: fault name -> the block that carries it
FAULT_BLOCKS: dict[str, str] = {
    "requant_lsb": "TTEngine",
    "round_off_by_one": "Requant",
    "wrong_stride": "AddressGen",
    "drop_tlast": "TTEngine",
    "sat_bound": "Requant",
    "axis_unstable": "ElementsToAXIS",
    "axil_double_resp": "AXI4LiteSlave",
}

#: faults that ``TTEngine`` takes (in the engine or the blocks it builds)
ENGINE_FAULTS = tuple(n for n, b in FAULT_BLOCKS.items()
                      if b in ("TTEngine", "Requant", "AddressGen"))
#: faults that change what is computed (the exact end-to-end check must fail)
DATAPATH_FAULTS = ("requant_lsb", "round_off_by_one", "wrong_stride", "drop_tlast", "sat_bound")
#: faults of the bus protocols (the formal checks must fail; simulation also sees them)
PROTOCOL_FAULTS = ("axis_unstable", "axil_double_resp")


def check_fault(fault, allowed=None, where: str = "TTAccel"):
    """``fault`` if it is None or a known fault that ``where`` takes (``allowed``: the
    names it takes, default all); else a ``ValueError`` naming the known faults."""
    if fault is None:
        return None
    names = tuple(FAULTS) if allowed is None else tuple(allowed)
    if fault not in FAULTS:
        raise ConfigError(f"fault={fault!r} is not a known fault; known: {', '.join(FAULTS)}")
    if fault not in names:
        raise ConfigError(f"fault={fault!r} is in {FAULT_BLOCKS[fault]}, not in {where}; "
                         f"{where} takes: {', '.join(names)}")
    return fault
