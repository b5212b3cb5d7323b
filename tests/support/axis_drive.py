"""Shared AXI4-Stream drive for the Amaranth-simulator tests of the AXI top: pack signed
vectors into beats of ``E`` lanes of ``W`` bits, stream them into ``s_axis``, and unpack
the lanes of an ``m_axis`` beat back to signed integers."""

from __future__ import annotations

from typing import Iterable, Sequence


async def send_vectors(ctx, s_axis, vectors: Iterable[Sequence[int]], E: int, W: int) -> None:
    """Stream each vector as ``ceil(len/E)`` beats with ``tlast`` on its last beat, no gaps."""
    for vec in vectors:
        beats = [vec[i:i + E] for i in range(0, len(vec), E)]
        for bi, beat in enumerate(beats):
            word = 0
            for j, v in enumerate(beat):
                word |= (int(v) & ((1 << W) - 1)) << (j * W)
            ctx.set(s_axis.tdata, word)
            ctx.set(s_axis.tlast, bi == len(beats) - 1)
            ctx.set(s_axis.tvalid, 1)
            await ctx.tick().until(s_axis.tready)
        ctx.set(s_axis.tvalid, 0)


def unpack_lanes(data: int, E: int, W: int) -> list[int]:
    """The ``E`` signed ``W``-bit lanes of one beat, lane 0 first."""
    lanes = [(data >> (j * W)) & ((1 << W) - 1) for j in range(E)]
    return [v - (1 << W) if v >> (W - 1) else v for v in lanes]
