"""The ping-pong buffers with one port each (``AccelConfig.buf_ports=1``).

The engine never needs a buffer's read data in a cycle that writes that buffer: while
running it reads the step's source and writes the other buffer (results and the zero
fill); the input and its padding write BUF0 before the first step reads anything; the
output phase reads ``OUT_BUF`` and writes nothing. So one address per buffer is enough:
the writer's in a write cycle, else the reader's, with the read disabled while writing
(its data register holds, as the single-port RAM's ``rdwr no_change`` does; the engine
registers every read word in the next cycle, so it would not need the hold either: yosys'
``SB_SPRAM256KA`` simulation model makes the output undefined after a write). Yosys maps
such a memory to the iCE40UP5K's ``SB_SPRAM256KA`` once its initial contents are
dropped (the engine never reads an element it has not written):
:func:`ttforge.hw.synth.single_port_script`.
"""

from __future__ import annotations

from amaranth.hdl import Mux, Signal

__all__ = ["SINGLE_PORT_ATTR", "connect_single_port"]

#: memory attribute that marks a single-port buffer for the synthesis script
SINGLE_PORT_ATTR = "ttforge_single_port"


def connect_single_port(m, b, rp, wp, *, rd_addr, rd_en, rd_need, wr, wr_addr, wr_data, wr_mask):
    """Drive buffer ``b``'s read port ``rp`` and write port ``wp`` from one address.

    ``wr`` writes the buffer this cycle (lanes ``wr_mask``); ``rd_addr``/``rd_en`` are
    its reader's; ``rd_need`` is high in every cycle whose read data the engine may use
    (a superset). Returns ``clash``: ``wr & rd_need``, a debug signal that the tests
    watch (it must never be high)."""
    addr = Signal.like(wp.addr, name=f"buf{b}_addr")
    clash = Signal(name=f"buf{b}_clash")
    m.d.comb += [
        addr.eq(Mux(wr, wr_addr, rd_addr)),
        rp.addr.eq(addr), wp.addr.eq(addr),
        rp.en.eq(rd_en & ~wr),
        wp.data.eq(wr_data),
        wp.en.eq(Mux(wr, wr_mask, 0)),
        clash.eq(wr & rd_need),
    ]
    return clash
