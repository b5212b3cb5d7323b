"""Widths and address arithmetic shared by the engine's components."""

from __future__ import annotations

import dataclasses

from amaranth.hdl import Const
from amaranth.utils import ceil_log2

from ttforge.hw.blocks import group_of
from ttforge.hw.config import DESC_WORDS, AccelConfig

__all__ = ["Geometry", "GROUP_LANES"]

#: lanes per fan-out group above 16 lanes (:attr:`Geometry.groups`)
GROUP_LANES = 8


@dataclasses.dataclass(frozen=True)
class Geometry:
    """What every component of one engine needs to know about its configuration.

    ``L`` lanes (``lg = log2 L``); element addresses are ``aw`` bits, held saturating in
    ``awp = aw + 1`` bits (``ttforge.hw.blocks``); loop counters are ``cw =
    AccelConfig.loop_bits = aw + 1`` bits (the fetch refuses a larger bound);
    ``nvw`` bits count valid lanes (0..L); ``eb`` bits hold an in-range buffer element
    address; ``serial``: every result leaves through the serial element writer (one
    requantization unit, ``serial_requant``); ``units`` requantization units, a word
    result drained through them in ``drain`` chunks of ``units`` lanes."""

    config: AccelConfig

    @property
    def L(self) -> int:
        return self.config.lanes

    @property
    def lg(self) -> int:
        return self.L.bit_length() - 1

    @property
    def aw(self) -> int:
        return self.config.addr_bits

    @property
    def awp(self) -> int:
        return self.aw + 1

    @property
    def cw(self) -> int:
        return self.config.loop_bits

    @property
    def nvw(self) -> int:
        return max(1, self.L.bit_length())

    @property
    def eb(self) -> int:
        return max(1, ceil_log2(self.config.buf_depth))

    @property
    def lane_bits(self) -> int:
        """Bits of a lane index (at least 1)."""
        return max(1, self.lg)

    @property
    def groups(self) -> int:
        """Lane groups with their own copy of the per-lane control registers
        (:func:`~ttforge.hw.blocks.fanout_copies`): 1 up to 16 lanes (those designs are
        unchanged), else one per :data:`GROUP_LANES` lanes, so that no control net drives
        more than one group's flip-flops and LUTs (at L = 64 single nets drove 2,048 flip-flops
        and the router could not resolve the congestion)."""
        return 1 if self.L <= 16 else self.L // GROUP_LANES

    def group(self, lane: int) -> int:
        """The fan-out group of ``lane``."""
        return group_of(lane, self.L, self.groups)

    @property
    def rq_groups(self) -> int:
        """Copies of the requantization constants: one per lane group (one with
        ``serial_requant``, which has one unit)."""
        return 1 if self.serial else self.groups

    @property
    def serial(self) -> bool:
        return bool(self.config.serial_requant)

    @property
    def units(self) -> int:
        """Requantization units (``AccelConfig.requant_units``: ``L``, 1 with
        ``serial_requant``, or a power of two in between)."""
        return self.config.requant_count

    @property
    def drain(self) -> int:
        """Cycles (chunks of ``units`` lanes) in which a word result goes through the
        units: 1 with a unit per lane; word outputs only (``serial`` writes elements)."""
        return 1 if self.serial else self.L // self.units

    @property
    def dmem_depth(self) -> int:
        return self.config.desc_depth * DESC_WORDS

    def lane_of(self, addr):
        """The lane of element address ``addr``."""
        return addr[:self.lg] if self.lg else Const(0, 1)

    def misaligned(self, addr):
        """``addr`` is not a multiple of ``L``."""
        return addr[:self.lg].any() if self.lg else Const(0, 1)

    def word_of(self, addr, depth: int):
        """The word (row of ``L`` elements) of ``addr`` in a memory of ``depth`` elements."""
        return addr[self.lg:self.lg + ceil_log2(depth // self.L)]

    def onehot(self, addr):
        """The lane enable of ``addr`` (``L`` bits, one set)."""
        if self.L == 1:
            return Const(1, 1)
        return (Const(1, self.L) << addr[:self.lg])[:self.L]
