"""A generic AXI4-Lite slave driven by the register map.

Two components:

* :class:`AXI4LiteSlave` speaks the bus (ARM IHI0022 AXI4-Lite, 32-bit data) and turns
  it into a simple one-cycle register bus: a write strobe with address/data/strobes and
  a read strobe with address, both answered in the same cycle by the decoder (an error
  flag and, for reads, the data), which the slave registers into the ``B`` / ``R``
  response. AW and W are accepted independently (either may come first, or both
  together); each has a one-entry holding register, so ``awready``/``wready``/
  ``arready`` and every ``*valid`` are register outputs that never depend on the
  master's ``*ready``/``*valid`` in the same cycle. A write is performed once both AW
  and W are held and the previous ``B`` response has been taken; a read once AR is
  held and the previous ``R`` response has been taken. Every address is answered, so
  the bus never hangs: ``OKAY`` (0) or ``SLVERR`` (2). Address bits ``[1:0]`` are
  ignored (accesses are to whole 32-bit words); ``AWPROT``/``ARPROT`` are not used and
  not present. With ``read_latency=1`` the decoder answers a read strobe one cycle
  later (the slave holds the address and waits), which lets :class:`RegisterFile` put a
  register in the middle of its read multiplexer.
* :class:`RegisterFile` decodes that register bus from a :class:`RegisterMap` (the
  single source of the map, ``hw/regmap.py``): the register file itself, write-1-to-clear
  bits, read-only inputs, 48-bit counters read as ``<NAME>_LO``/``<NAME>_HI`` with the
  high half latched when the low half is read, and write windows forwarded to memory
  write ports.

:func:`connect_low_in_reset` joins a top's bus ports to the ports of the block that
serves them, every outgoing ``*valid``/``*ready`` held LOW while the domain's reset is
asserted (:func:`low_in_reset`, which the tops, ``hw/top.py`` and ``hw/trainer/top.py``,
also put on ``irq``).

Access rules (anything else is answered with ``SLVERR`` and has no effect):

| access | read | write |
|---|---|---|
| ``RW`` | the register | byte lanes with ``WSTRB`` set are written |
| ``RO`` | the input | ``SLVERR`` |
| ``W1C`` | the sticky bits | each 1 clears its bit (an event in the same cycle wins) |
| ``WO`` | ``SLVERR`` | a one-cycle pulse of the written value |
| window | ``SLVERR`` | one word: ``WSTRB`` must be ``0b1111``, else ``SLVERR`` |
| unmapped | ``SLVERR`` | ``SLVERR`` |
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterable

from amaranth.hdl import Cat, Module, Mux, ResetSignal, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ttforge.errors import ConfigError
from ttforge.hw.blocks import ge_const, lut_compares

__all__ = [
    "OKAY", "SLVERR", "AXI4LiteSignature", "RegBusSignature", "AXI4LiteSlave",
    "Reg", "Window", "normalize_regmap", "RegisterFile", "low_in_reset", "connect_low_in_reset",
]

OKAY = 0b00
SLVERR = 0b10
DATA_BITS = 32


def AXI4LiteSignature(addr_bits: int) -> wiring.Signature:
    """The AXI4-Lite bus as seen from the master (flip it for a slave); 32-bit data.
    Member names are the AXI signal names in lower case (``awaddr`` ... ``rready``)."""
    return wiring.Signature({
        "awaddr": Out(addr_bits), "awvalid": Out(1), "awready": In(1),
        "wdata": Out(DATA_BITS), "wstrb": Out(DATA_BITS // 8), "wvalid": Out(1),
        "wready": In(1),
        "bresp": In(2), "bvalid": In(1), "bready": Out(1),
        "araddr": Out(addr_bits), "arvalid": Out(1), "arready": In(1),
        "rdata": In(DATA_BITS), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
    })


def RegBusSignature(addr_bits: int) -> wiring.Signature:
    """The one-cycle register bus from :class:`AXI4LiteSlave` to a decoder (initiator
    side). ``w_err``/``r_err``/``r_data`` are combinational answers to the strobe in the
    same cycle; the address is a *word* address (byte address >> 2)."""
    return wiring.Signature({
        "w_stb": Out(1), "w_addr": Out(addr_bits - 2), "w_data": Out(DATA_BITS),
        "w_strb": Out(DATA_BITS // 8), "w_err": In(1),
        "r_stb": Out(1), "r_addr": Out(addr_bits - 2), "r_data": In(DATA_BITS),
        "r_err": In(1),
    })


def low_in_reset(value, domain: str = "sync"):
    """``value`` forced to 0 while the reset of ``domain`` is asserted.

    AXI4 (ARM IHI0022, A3.1.2) and AXI4-Stream ask a master to drive every ``*VALID``
    LOW during reset. The registers behind the outputs reset *synchronously*: until the
    first rising edge under reset they hold their power-up value, which is random on
    silicon without flip-flop initial values (an ASIC, Verilator ``--x-initial
    unique``, Verilog without its ``reg x = v;`` initialisers), and a ``TVALID`` of 1
    there is a beat a sink may take. One AND gate at the output, never on a path inside
    the core: outside reset the output is the register, bit for bit.

    Parameters
    ----------
    value : amaranth.hdl.Value
        The output as the core computes it.
    domain : str
        The clock domain whose reset gates it.

    Returns
    -------
    amaranth.hdl.Value
        ``value & ~rst`` (1 bit wide for a 1-bit ``value``).
    """
    return value & ~ResetSignal(domain)


def connect_low_in_reset(m: Module, outer, inner, domain: str = "sync") -> None:
    """Connect a top's port ``outer`` to ``inner``, the same bus on the block that serves it.

    ``outer`` and ``inner`` are interfaces of one signature with the same flows (a top's
    ``In(AXI4LiteSignature)`` and its slave's, a top's ``Out(AXISSignature)`` and its
    packer's). Inputs of the top pass straight in; outputs pass straight out, except
    those named ``*valid`` or ``*ready``, which are LOW while the reset of ``domain`` is
    asserted (:func:`low_in_reset`). Data, ``TLAST`` and responses are not gated: they
    mean nothing without their ``VALID``.
    """
    theirs = {path: value for path, _, value in inner.signature.flatten(inner)}
    for path, member, value in outer.signature.flatten(outer):
        other = theirs[path]
        if member.flow == wiring.In:
            m.d.comb += other.eq(value)
        elif str(path[-1]).endswith(("valid", "ready")):
            m.d.comb += value.eq(low_in_reset(other, domain))
        else:
            m.d.comb += value.eq(other)


class AXI4LiteSlave(wiring.Component):
    """AXI4-Lite slave front end: ``axil`` (the bus) -> ``bus`` (:func:`RegBusSignature`)."""

    def __init__(self, addr_bits: int, *, read_latency: int = 0, fault=None):
        from ttforge.hw.faults import check_fault
        self.fault = check_fault(fault, ("axil_double_resp",), "AXI4LiteSlave")
        if not 3 <= addr_bits <= 32:
            raise ConfigError(f"addr_bits must be 3..32, got {addr_bits}")
        self.read_latency = _check_read_latency(read_latency)
        self.addr_bits = addr_bits
        super().__init__({
            "axil": In(AXI4LiteSignature(addr_bits)),
            "bus": Out(RegBusSignature(addr_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        ax, bus = self.axil, self.bus

        # --- write address / write data: independent one-entry holding registers
        aw_full = Signal()
        aw_addr = Signal(self.addr_bits - 2)
        w_full = Signal()
        w_data = Signal(DATA_BITS)
        w_strb = Signal(DATA_BITS // 8)
        b_valid = Signal()
        b_resp = Signal(2)
        m.d.comb += [
            ax.awready.eq(~aw_full),
            ax.wready.eq(~w_full),
            ax.bvalid.eq(b_valid),
            ax.bresp.eq(b_resp),
        ]
        with m.If(ax.awvalid & ~aw_full):
            m.d.sync += [aw_full.eq(1), aw_addr.eq(ax.awaddr[2:])]
        with m.If(ax.wvalid & ~w_full):
            m.d.sync += [w_full.eq(1), w_data.eq(ax.wdata), w_strb.eq(ax.wstrb)]

        do_write = Signal()
        m.d.comb += [
            do_write.eq(aw_full & w_full & ~b_valid),
            bus.w_stb.eq(do_write),
            bus.w_addr.eq(aw_addr),
            bus.w_data.eq(w_data),
            bus.w_strb.eq(w_strb),
        ]
        with m.If(do_write):
            m.d.sync += [
                aw_full.eq(0), w_full.eq(0),
                b_valid.eq(1), b_resp.eq(Mux(bus.w_err, SLVERR, OKAY)),
            ]
        with m.If(b_valid & ax.bready):
            m.d.sync += b_valid.eq(0)
        if self.fault == "axil_double_resp":
            # test hook: each write is answered twice (the second B has no request)
            again = Signal(name="fault_again")
            with m.If(do_write):
                m.d.sync += again.eq(1)
            with m.If(b_valid & ax.bready & again):
                m.d.sync += [b_valid.eq(1), again.eq(0)]

        # --- read address / read data
        ar_full = Signal()
        ar_addr = Signal(self.addr_bits - 2)
        r_valid = Signal()
        r_data = Signal(DATA_BITS)
        r_resp = Signal(2)
        m.d.comb += [
            ax.arready.eq(~ar_full),
            ax.rvalid.eq(r_valid),
            ax.rdata.eq(r_data),
            ax.rresp.eq(r_resp),
        ]
        with m.If(ax.arvalid & ~ar_full):
            m.d.sync += [ar_full.eq(1), ar_addr.eq(ax.araddr[2:])]
        do_read = Signal()
        r_wait = Signal()       # read_latency 1: the strobe was last cycle, answer now
        m.d.comb += [
            do_read.eq(ar_full & ~r_valid & ~r_wait),
            bus.r_stb.eq(do_read),
            bus.r_addr.eq(ar_addr),     # held (ar_full) until the answer is taken
        ]
        answer = do_read if self.read_latency == 0 else r_wait
        if self.read_latency:
            m.d.sync += r_wait.eq(do_read)
        with m.If(answer):
            m.d.sync += [
                ar_full.eq(0), r_valid.eq(1),
                # an erroring read returns 0 data
                r_data.eq(Mux(bus.r_err, 0, bus.r_data)),
                r_resp.eq(Mux(bus.r_err, SLVERR, OKAY)),
            ]
        with m.If(r_valid & ax.rready):
            m.d.sync += r_valid.eq(0)
        return m


# ----------------------------------------------------------------------------- the map


@dataclasses.dataclass(frozen=True)
class Reg:
    """One 32-bit register as the register file sees it."""
    name: str          # the map's name (upper case); ports use the lower-case form
    addr: int          # byte address
    access: str        # "RW" | "RO" | "W1C" | "WO"
    width: int = DATA_BITS
    reset: int = 0

    @property
    def port(self) -> str:
        return self.name.lower()


@dataclasses.dataclass(frozen=True)
class Window:
    """A write-only window forwarding one 32-bit word per element to a memory."""
    name: str          # e.g. "CMEM"; ports <name>_addr, <name>_data, <name>_we
    base: int          # byte address of element 0
    depth: int         # elements (words of the window)
    data_bits: int = DATA_BITS

    @property
    def port(self) -> str:
        return self.name.lower()


def normalize_regmap(regmap: Any) -> tuple[list[Reg], list[Window]]:
    """The registers and windows of a :class:`ttforge.hw.regmap.RegisterMap`, or of a
    ``(registers, windows)`` pair of :class:`Reg`/:class:`Window` lists (tests), sorted
    by address, checked for overlaps and alignment."""
    from ttforge.hw.regmap import RegisterMap

    if isinstance(regmap, RegisterMap):
        regs = [Reg(r.name, r.addr, r.access, r.width, r.reset) for r in regmap.registers]
        wins = [Window(w.name, w.base, w.depth, w.data_bits) for w in regmap.windows]
    elif isinstance(regmap, tuple) and len(regmap) == 2:
        regs, wins = list(regmap[0]), list(regmap[1])
        bad = [x for x in regs if not isinstance(x, Reg)] + \
              [x for x in wins if not isinstance(x, Window)]
        if bad:
            raise TypeError(f"register map entries must be Reg/Window, got {type(bad[0]).__name__}")
    else:
        raise TypeError("normalize_regmap takes a RegisterMap or a (registers, windows) pair, "
                        f"got {type(regmap).__name__}")
    regs.sort(key=lambda r: r.addr)
    wins.sort(key=lambda w: w.base)
    spans = [(r.addr, r.addr + 4, r.name) for r in regs] + \
            [(w.base, w.base + 4 * w.depth, w.name) for w in wins]
    spans.sort()
    for (a0, a1, n0), (b0, b1, n1) in zip(spans, spans[1:]):
        if b0 < a1:
            raise ConfigError(f"register map: {n0} and {n1} overlap at 0x{b0:x}")
    for r in regs:
        if r.addr % 4:
            raise ConfigError(f"register map: {r.name} at 0x{r.addr:x} is not word aligned")
        if r.access not in ("RW", "RO", "W1C", "WO"):
            raise ConfigError(f"register map: {r.name} has unknown access {r.access!r}")
        if not 1 <= r.width <= DATA_BITS:
            raise ConfigError(f"register map: {r.name} width {r.width} is not 1..32")
    for w in wins:
        if w.base % 4 or w.depth < 1:
            raise ConfigError(f"register map: window {w.name} must be word aligned, depth >= 1")
    return regs, wins


def counter_pairs(regs: Iterable[Reg]) -> dict[str, tuple[Reg, Reg]]:
    """``base -> (LO, HI)`` for every RO pair named ``<base>_LO``/``<base>_HI``."""
    by_name = {r.name: r for r in regs}
    pairs = {}
    for name, r in by_name.items():
        mt = re.fullmatch(r"(.+)_LO", name)
        if mt and r.access == "RO":
            hi = by_name.get(mt.group(1) + "_HI")
            if hi is not None and hi.access == "RO":
                pairs[mt.group(1)] = (r, hi)
    return pairs


class RegisterFile(wiring.Component):
    """Decodes the register bus from :class:`AXI4LiteSlave` for one register map.

    Ports, per register (``<n>`` is the lower-case register name):

    * ``RW``: ``Out(width) <n>`` the register; ``Out(1) <n>_wstb`` pulses on a write;
    * ``RO``: ``In(width) <n>``; a counter pair ``<c>_lo``/``<c>_hi`` has instead one
      ``In(64) <c>`` whose bits ``[63:32]`` are latched when ``<C>_LO`` is read and
      returned by the next read of ``<C>_HI``;
    * ``W1C``: ``In(width) <n>_set`` (events: each 1 sets its sticky bit) and
      ``Out(width) <n>``;
    * ``WO``: ``Out(width) <n>`` (the written value for one cycle, else 0) and
      ``Out(1) <n>_wstb``;

    and per window ``<w>``: ``Out <w>_addr`` (element index), ``Out(data_bits) <w>_data``,
    ``Out(1) <w>_we``.

    ``read_latency`` (0 or 1, the slave's): with 1, reads answer a cycle after the
    strobe from a two-level multiplexer with registers between the levels (groups of
    :data:`READ_GROUP` words), so the held read address fans out to small multiplexers
    only; a read returns the registers as they were in the strobe's cycle.
    """

    def __init__(self, regmap: Any, addr_bits: int, *, read_latency: int = 0):
        self.read_latency = _check_read_latency(read_latency)
        self.regs, self.windows = normalize_regmap(regmap)
        self.addr_bits = addr_bits
        self.pairs = counter_pairs(self.regs)
        paired = {r.name for lo, hi in self.pairs.values() for r in (lo, hi)}
        top = 1 << addr_bits
        for r in self.regs:
            if r.addr >= top:
                raise ConfigError(f"register {r.name} at 0x{r.addr:x} beyond {addr_bits} address bits")
        for w in self.windows:
            if w.base + 4 * w.depth > top:
                raise ConfigError(f"window {w.name} beyond {addr_bits} address bits")
        members: dict[str, Any] = {"bus": In(RegBusSignature(addr_bits))}
        for r in self.regs:
            if r.name in paired:
                continue
            if r.access == "RW":
                members[r.port] = Out(r.width, init=r.reset & ((1 << r.width) - 1))
                members[r.port + "_wstb"] = Out(1)
            elif r.access == "RO":
                members[r.port] = In(r.width)
            elif r.access == "W1C":
                members[r.port] = Out(r.width, init=r.reset & ((1 << r.width) - 1))
                members[r.port + "_set"] = In(r.width)
            elif r.access == "WO":
                members[r.port] = Out(r.width)
                members[r.port + "_wstb"] = Out(1)
        for base in self.pairs:
            members[base.lower()] = In(64)
        for w in self.windows:
            members[w.port + "_addr"] = Out(max(1, (w.depth - 1).bit_length()))
            members[w.port + "_data"] = Out(w.data_bits)
            members[w.port + "_we"] = Out(1)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        paired = {r.name: base for base, (lo, hi) in self.pairs.items() for r in (lo, hi)}
        wmask = Signal(DATA_BITS)
        m.d.comb += wmask.eq(Cat(*[bit.replicate(8) for bit in bus.w_strb]))

        # ---- writes
        w_ok = Signal()
        for r in self.regs:
            word = r.addr >> 2
            if r.name in paired:
                port = None
            else:
                port = getattr(self, r.port)
            hit = Signal(name=f"w_hit_{r.port}")
            m.d.comb += hit.eq(bus.w_stb & (bus.w_addr == word))
            if r.access == "RW":
                with m.If(hit):
                    m.d.comb += w_ok.eq(1)
                    new = (port & ~wmask[:r.width]) | (bus.w_data[:r.width] & wmask[:r.width])
                    m.d.sync += port.eq(new)
                m.d.sync += getattr(self, r.port + "_wstb").eq(hit)
            elif r.access == "W1C":
                clear = Signal(r.width, name=f"clear_{r.port}")
                with m.If(hit):
                    m.d.comb += [w_ok.eq(1), clear.eq(bus.w_data[:r.width] & wmask[:r.width])]
                setb = getattr(self, r.port + "_set")
                m.d.sync += port.eq((port & ~clear) | setb)
            elif r.access == "WO":
                with m.If(hit):
                    m.d.comb += w_ok.eq(1)
                m.d.sync += [
                    port.eq(Mux(hit, bus.w_data[:r.width] & wmask[:r.width], 0)),
                    getattr(self, r.port + "_wstb").eq(hit),
                ]
            # RO: hit without ok -> SLVERR
        for w in self.windows:
            base_word = w.base >> 2
            off = Signal(self.addr_bits - 2, name=f"off_{w.port}")
            m.d.comb += off.eq(bus.w_addr - base_word)
            inside = Signal(name=f"in_{w.port}")
            # (compares with constants: logic, not carry chains, but on the ECP5)
            if lut_compares(platform):
                m.d.comb += inside.eq(ge_const(bus.w_addr, base_word)
                                      & ~ge_const(bus.w_addr, base_word + w.depth))
            else:
                m.d.comb += inside.eq((bus.w_addr >= base_word) & (bus.w_addr < base_word + w.depth))
            hit = Signal(name=f"w_hit_{w.port}")
            full_word = bus.w_strb == 0b1111
            m.d.comb += hit.eq(bus.w_stb & inside & full_word)
            with m.If(hit):
                m.d.comb += w_ok.eq(1)
            addr_port = getattr(self, w.port + "_addr")
            # registered: memory writes leave the register file one cycle after the
            # strobe, which keeps the decode off the memories' timing paths
            m.d.sync += [
                addr_port.eq(off[:len(addr_port)]),
                getattr(self, w.port + "_data").eq(bus.w_data[:w.data_bits]),
                getattr(self, w.port + "_we").eq(hit),
            ]
        m.d.comb += bus.w_err.eq(~w_ok)

        # ---- reads
        # a counter's high half is latched when its low half is read
        shadows = {}
        for base, (lo, hi) in self.pairs.items():
            shadow = Signal(32, name=f"{base.lower()}_hi_latch")
            shadows[base] = shadow
            with m.If(bus.r_stb & (bus.r_addr == (lo.addr >> 2))):
                m.d.sync += shadow.eq(getattr(self, base.lower())[32:])
        readable = {}       # word address -> the value a read returns
        for r in self.regs:
            if r.access == "WO":
                continue          # write-only: SLVERR on read
            if r.name in paired:
                base = paired[r.name]
                lo = r is self.pairs[base][0]
                readable[r.addr >> 2] = getattr(self, base.lower())[:32] if lo else shadows[base]
            else:
                readable[r.addr >> 2] = getattr(self, r.port)
        r_ok = Signal()
        if self.read_latency == 0:
            _read_mux(m, bus.r_addr, readable, bus.r_data, r_ok)
        else:
            # level 1 (registered): within each group of READ_GROUP words, by the low
            # address bits; level 2: the group, by the registered high bits
            k = READ_GROUP.bit_length() - 1
            groups: dict[int, dict[int, Any]] = {}
            for word, value in readable.items():
                groups.setdefault(word >> k, {})[word & (READ_GROUP - 1)] = value
            high = Signal(len(bus.r_addr) - k, name="rd_high")
            m.d.sync += high.eq(bus.r_addr[k:])
            level2 = {}
            for g, members in sorted(groups.items()):
                data_c = Signal(DATA_BITS, name=f"rd_grp{g}_c")
                ok_c = Signal(name=f"rd_grp{g}_ok_c")
                _read_mux(m, bus.r_addr[:k], members, data_c, ok_c)
                data = Signal(DATA_BITS, name=f"rd_grp{g}", reset_less=True)
                ok = Signal(name=f"rd_grp{g}_ok", reset_less=True)
                m.d.sync += [data.eq(data_c), ok.eq(ok_c)]
                level2[g] = (data, ok)
            with m.Switch(high):
                for g, (data, ok) in level2.items():
                    with m.Case(g):
                        m.d.comb += [bus.r_data.eq(data), r_ok.eq(ok)]
        m.d.comb += bus.r_err.eq(~r_ok)
        return m


READ_GROUP = 8
"""Words per first-level read multiplexer of a ``read_latency=1`` :class:`RegisterFile`."""


def _check_read_latency(read_latency: int) -> int:
    if read_latency not in (0, 1):
        raise ConfigError(f"read_latency must be 0 or 1, got {read_latency!r}")
    return read_latency


def _read_mux(m: Module, addr, values: dict[int, Any], data, ok) -> None:
    """``data``/``ok`` (comb) = ``values[addr]``/1, or 0/0 where ``addr`` is no key."""
    with m.Switch(addr):
        for key, value in values.items():
            with m.Case(key):
                m.d.comb += [data.eq(value), ok.eq(1)]
