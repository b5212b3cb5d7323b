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
  the AXI4-Lite slave);
* ``TrainEngine(config, fault=...)`` for the training engine's faults
  (``TRAIN_FAULTS``, ``TRAIN_ENGINE_FAULTS``; the engine hands some on to its
  :class:`~ttforge.hw.trainer.update.UpdateUnit` and
  :class:`~ttforge.hw.trainer.loss.LossUnit`). They are a registry of their own: every
  entry of ``FAULTS`` is built into the inference hardware by its mutation run.

``fault=None`` (the default everywhere) builds the real hardware, byte-identical to a
build without the argument. Generated products never carry a fault.
"""

from __future__ import annotations
from ttforge.errors import ConfigError

__all__ = ["FAULTS", "FAULT_BLOCKS", "ENGINE_FAULTS", "DATAPATH_FAULTS", "PROTOCOL_FAULTS",
           "TRAIN_FAULTS", "TRAIN_FAULT_BLOCKS", "TRAIN_ENGINE_FAULTS", "check_fault"]

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
    "skid_drop": "the s_axis adapter's skid register never fills: a beat taken while the "
                 "element register is busy (engine back-pressure) is lost",
    "extra_beat": "the m_axis adapter sends one all-zero beat more after each output vector "
                  "and sets tlast on it (ceil(n/E) + 1 beats instead of ceil(n/E))",
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
    "skid_drop": "AXISToElements",
    "extra_beat": "ElementsToAXIS",
}

#: faults that ``TTEngine`` takes (in the engine or the blocks it builds)
ENGINE_FAULTS = tuple(n for n, b in FAULT_BLOCKS.items()
                      if b in ("TTEngine", "Requant", "AddressGen"))
#: faults that change what is computed (the exact end-to-end check must fail)
DATAPATH_FAULTS = ("requant_lsb", "round_off_by_one", "wrong_stride", "drop_tlast", "sat_bound",
                   "skid_drop", "extra_beat")
#: faults of the bus protocols (the formal checks must fail; simulation also sees them)
PROTOCOL_FAULTS = ("axis_unstable", "axil_double_resp")

#: the training engine's faults: fault name -> one-line description
TRAIN_FAULTS: dict[str, str] = {
    "wrong_transpose": "an input-gradient CONTRACT reads the core with its two core strides "
                       "swapped (the forward P x K layout instead of the transposed one)",
    "drop_word": "the update skips one xorshift32 draw (the first stochastic element's word "
                 "is used twice)",
    "update_sign": "the update adds the rounded gradient instead of subtracting it",
    "acc_width": "the WGRAD lane sums and adder tree wrap at acc_bits // 2 bits instead of "
                 "acc_bits",
    "no_mask": "the ReLU mask of the input gradient is ignored (kept where the saved "
               "activation is not positive)",
    "loss_table": "bit 0 of the loss unit's exponent table entry 1 is flipped",
    "bias_shift_off": "the bias alignment shifts by BIAS_SHIFT + 1",
}

#: training fault name -> the block that carries it
TRAIN_FAULT_BLOCKS: dict[str, str] = {
    "wrong_transpose": "TrainEngine",
    "drop_word": "UpdateUnit",
    "update_sign": "UpdateUnit",
    "acc_width": "TrainEngine",
    "no_mask": "TrainEngine",
    "loss_table": "LossUnit",
    "bias_shift_off": "TrainEngine",
}

#: faults that ``TrainEngine`` takes (in the engine or the units it builds)
TRAIN_ENGINE_FAULTS = tuple(TRAIN_FAULTS)


def check_fault(fault, allowed=None, where: str = "TTAccel"):
    """``fault`` if it is None or a known fault that ``where`` takes (``allowed``: the
    names it takes, default all of ``FAULTS``); else a ``ValueError`` naming the known
    faults (of ``TRAIN_FAULTS`` when ``where`` takes training faults only)."""
    if fault is None:
        return None
    names = tuple(FAULTS) if allowed is None else tuple(allowed)
    known = TRAIN_FAULTS if names and set(names) <= set(TRAIN_FAULTS) else FAULTS
    if fault not in known:
        raise ConfigError(f"fault={fault!r} is not a known fault; known: {', '.join(known)}")
    if fault not in names:
        blocks = TRAIN_FAULT_BLOCKS if known is TRAIN_FAULTS else FAULT_BLOCKS
        raise ConfigError(f"fault={fault!r} is in {blocks[fault]}, not in {where}; "
                         f"{where} takes: {', '.join(names)}")
    return fault
