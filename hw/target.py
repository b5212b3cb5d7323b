"""What a design is elaborated for: the FPGA family, read by the blocks that have a
family form (``ttforge.hw.ecp5_dsp``: the MAC lanes in ``MULT18X18D``;
``ttforge.hw.ice40_dsp``: the counters in ``SB_MAC16``; the accelerator's AXI4-Lite
reads and the fetch's ZFILL_ORDER check).

Simulation and the generic Verilog elaborate with no platform (``None``); an
amaranth-boards platform, or a :class:`SynthTarget` where there is none
(``verilog(config, platform=ECP5)``), selects a family's form.
"""

from __future__ import annotations

from dataclasses import dataclass

from ttforge.errors import ConfigError

__all__ = ["FAMILIES", "SynthTarget", "ECP5", "ICE40", "target_family"]

#: Families a :class:`SynthTarget` may name (each changes the design).
FAMILIES = ("ecp5", "ice40")


@dataclass(frozen=True)
class SynthTarget:
    """The FPGA family a design is elaborated for, when no amaranth-boards platform is.

    Passed as Amaranth's ``platform`` (``rtlil.convert(..., platform=target)``); blocks
    read it with :func:`target_family`. It has no resources: a block that requests pins
    needs a real platform.

    Parameters
    ----------
    family : {"ecp5", "ice40"}
    """

    family: str

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ConfigError(f"SynthTarget family={self.family!r} is unknown; "
                              f"choose one of {', '.join(FAMILIES)}")


#: Elaborate for the Lattice ECP5 (``MULT18X18D`` with its registers in ``MacLanes``).
ECP5 = SynthTarget("ecp5")

#: Elaborate for the Lattice iCE40 (counters in ``SB_MAC16`` blocks, AXI4-Lite reads in
#: the address cycle).
ICE40 = SynthTarget("ice40")


def target_family(platform) -> str | None:
    """The FPGA family of ``platform`` (a :class:`SynthTarget` or an Amaranth
    ``LatticePlatform`` or ``SiliconBluePlatform``, whose ``family`` is ``"ecp5"``,
    ``"iCE40"`` ...), in lower case; ``None`` for
    ``None`` (simulation, generic Verilog) or a platform without a family."""
    family = getattr(platform, "family", None) if platform is not None else None
    # (lower case: Amaranth's SiliconBlue platforms, the iCEBreaker's, say "iCE40")
    return family.lower() if isinstance(family, str) else None
