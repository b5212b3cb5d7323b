"""``RegisteredBanks``: a memory whose reads are registered at each block RAM.

A memory deeper than one block RAM is several block RAMs deep, and the select among them
(by the address's high bits) lies between the block RAMs' outputs and any register after
the memory: a register placed after it sits as far from the block RAMs as the next
stage's register did (``docs/benchmarks.md``, the four MNIST-sized engines with
``read_registers``: ``cmem`` DOB -> the register, 3 logic levels, 5.7 ns of routing after
the DP16KD's 5.8 ns clock-to-output). Here the memory is split into banks of one block
RAM's depth, each bank's read data is registered by itself (nothing but the register
after the block RAM, so the placer puts it beside it), and the bank is selected a cycle
later, from registers.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.memory import Memory, ReadPort, WritePort
from amaranth.lib.wiring import Out
from amaranth.utils import ceil_log2

from ttforge.errors import ConfigError
from ttforge.hw.blocks import decode_onehot, onehot_select, read_port, write_port

__all__ = ["RegisteredBanks", "BANK_DEPTH", "POISON_COLLISIONS"]

#: Tests only: a read of a word in the cycle it is written gives the word inverted, so a
#: bit-exact run proves that no read whose word is used meets a write of it. The banks
#: are marked ``no_rw_check`` (such a read is undefined in synthesis, hw/synth.NO_RW_CHECK:
#: no bypass after the block RAM, and what lets the ECP5 block RAM hold the bank register
#: when that option is on), and this makes "undefined" seen.
POISON_COLLISIONS = False

#: words per bank: an ECP5 DP16KD's depth at its widest (512 x 36 bits); a wider word is
#: several of them side by side, each bank one block RAM deep
BANK_DEPTH = 512


class RegisteredBanks(wiring.Component):
    """``depth`` words of ``shape`` in banks of ``bank_depth`` words.

    ``read`` (a :class:`ReadPort` signature): the word at ``addr`` arrives on ``data``
    **two** cycles after the address (one more than a synchronous memory: the bank's
    registered read data, then the select), **three** with ``select_register`` (the
    select registered too: the bank registers' only loads are the select's LUTs, so
    nothing pulls them away from their block RAMs); ``en`` low holds the bank's read, as
    a memory port does. ``write`` (a :class:`WritePort` signature with ``granularity``, 1
    by default; ``None``: one enable for the word, which a block RAM holds at its full
    width, where per-bit enables split it into 1-bit-wide blocks): the bank of
    ``addr``'s high bits takes the write. A write at or beyond ``depth`` is
    dropped, as a memory of that depth drops it; a read there gives an unspecified word
    (its user checks the range, as the engine's ``CMEM_RANGE`` does), and so does a read
    of a word in the cycle it is written (the banks are ``no_rw_check``: the engine never
    uses such a read, :data:`POISON_COLLISIONS`).

    ``write_register``: the write (address, data and each bank's enables, decoded) is
    registered once before the block RAMs, so that nothing but a register drives their
    write pins (the bank decode, the range check and whatever chooses the write leave the
    block RAM's setup path; on the ECP5 the write enables are the DP16KD's byte enables on
    its address pins). The word is written a cycle later: a read one cycle after the
    write, which used to see the new word, now meets the write, and is undefined (and
    poisoned in the tests) like any other.
    """

    def __init__(self, shape, depth: int, bank_depth: int | None = None, *,
                 select_register: bool = False, granularity: int | None = 1,
                 write_register: bool = False):
        bank_depth = BANK_DEPTH if bank_depth is None else int(bank_depth)
        if depth < 1 or bank_depth < 1 or bank_depth & (bank_depth - 1):
            raise ConfigError(f"RegisteredBanks: depth={depth} must be >= 1 and bank_depth="
                              f"{bank_depth} a power of two")
        self.shape, self.depth = shape, int(depth)
        self.granularity = granularity
        self.select_register = bool(select_register)
        self.write_register = bool(write_register)
        #: cycles from the address to its word on ``read.data``
        self.latency = 3 if self.select_register else 2
        self.bank_depth = min(bank_depth, 1 << ceil_log2(self.depth))
        self.n_banks = -(-self.depth // self.bank_depth)
        aw = ceil_log2(self.depth)
        super().__init__({
            "read": Out(ReadPort.Signature(addr_width=aw, shape=shape)),
            "write": Out(WritePort.Signature(addr_width=aw, shape=shape, granularity=granularity)),
        })

    def elaborate(self, platform):
        m = Module()
        lb = ceil_log2(self.bank_depth)
        nb, rd, wr = self.n_banks, self.read, self.write
        hi_r, hi_w = rd.addr[lb:], wr.addr[lb:]
        # The block RAMs read in every cycle, and `en` (a cycle later) is the bank registers'
        # load enable: the same words as a memory port that holds its read while `en` is
        # low (q(t + 2) = en(t) ? mem[addr(t)] : q(t + 1) either way), but each bank
        # register is then a plain register of its block RAM's output with its own
        # enable, which an ECP5 DP16KD can hold itself (REGMODE OUTREG,
        # hw/ecp5_bram.fold_output_registers, an option: 0.96 ns from its clock, not 5.83)
        en_d = Signal(name="bank_en_d")
        m.d.sync += en_d.eq(rd.en)
        # the write as the block RAMs see it (write_register: a cycle late)
        if self.write_register:
            w_addr = Signal.like(wr.addr, name="bank_w_addr")
            w_data = Signal(self.shape, name="bank_w_data", reset_less=True)
            w_any = Signal(name="bank_w_any")
            m.d.sync += [w_addr.eq(wr.addr), w_data.eq(wr.data), w_any.eq(wr.en.any())]
        else:
            w_addr, w_data, w_any = wr.addr, wr.data, wr.en.any()
        poison = Signal(name="bank_poison")     # (tests: POISON_COLLISIONS)
        if POISON_COLLISIONS:
            m.d.sync += poison.eq(rd.en & w_any & (rd.addr == w_addr))
        qs = []
        for b in range(nb):
            depth = min(self.bank_depth, self.depth - b * self.bank_depth)
            # no_rw_check: a read of the word being written is undefined (its users never
            # make one whose word they use: POISON_COLLISIONS checks it in the tests)
            mem = Memory(shape=self.shape, depth=depth, init=[], attrs={"no_rw_check": 1})
            m.submodules[f"bank{b}"] = mem
            wp, rp = write_port(mem, "wp", granularity=self.granularity), read_port(mem, "rp")
            # this bank's writes; one beyond the depth is dropped (as a memory of that
            # depth drops it: a bank shorter than the others would wrap it onto a word)
            en = wr.en
            if len(hi_w):
                en = en & (hi_w == b).replicate(len(wp.en))
            if depth < (1 << lb):
                en = en & (wr.addr[:lb] < depth).replicate(len(wp.en))
            if self.write_register:
                en_q = Signal(len(wp.en), name=f"bank{b}_we")
                m.d.sync += en_q.eq(en)
                en = en_q
            m.d.comb += [wp.addr.eq(w_addr[:lb]), wp.data.eq(w_data), wp.en.eq(en),
                         rp.addr.eq(rd.addr[:lb]), rp.en.eq(1)]
            q = Signal(self.shape, name=f"bank{b}_q", reset_less=True)
            with m.If(en_d):
                m.d.sync += q.eq(rp.data)      # the block RAM's output, registered by itself
                if POISON_COLLISIONS:
                    with m.If(poison):
                        m.d.sync += q.eq(~Value.cast(rp.data))
            qs.append(q)
        word = Signal(self.shape, name="bank_word")
        if nb == 1 and not len(hi_r):
            m.d.comb += word.eq(qs[0])
        else:
            # the bank of the address, registered as the read is issued and again beside
            # the banks' data (a one-hot select: an AND-OR of registers); none beyond the
            # depth
            sel1, sel2 = Signal(nb, name="bank_sel1"), Signal(nb, name="bank_sel2")
            with m.If(rd.en):
                m.d.sync += sel1.eq(decode_onehot(hi_r, nb))
            m.d.sync += sel2.eq(sel1)
            m.d.comb += word.eq(onehot_select(qs, sel2))
        if self.select_register:
            word_q = Signal(self.shape, name="bank_word_q", reset_less=True)
            m.d.sync += word_q.eq(word)
            word = word_q
        m.d.comb += rd.data.eq(word)
        return m
