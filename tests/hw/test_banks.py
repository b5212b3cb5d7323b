"""RegisteredBanks: a memory split into banks whose read data is registered at each bank,
read two cycles after the address (three with the select registered too); the same words
as one memory."""

from __future__ import annotations

import random

import pytest
from amaranth.sim import Simulator

from ttforge.errors import ConfigError
from ttforge.hw.engine.banks import RegisteredBanks


@pytest.mark.parametrize("select_register,write_register", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("depth,bank_depth", [(13, 4), (16, 4), (8, 8), (5, 512), (1, 4)])
def test_banks_read_what_was_written_two_cycles_later(depth, bank_depth, select_register, write_register):
    dut = RegisteredBanks(8, depth, bank_depth, select_register=select_register,
                          write_register=write_register)
    assert dut.latency == (3 if select_register else 2)
    assert dut.n_banks == -(-depth // dut.bank_depth)
    model = [0] * depth
    rng = random.Random(depth * 31 + bank_depth)
    seen = []

    async def tb(ctx):
        # writes: every word once, in random order, and some beyond the depth (ignored)
        for a in rng.sample(range(depth), depth) + [depth, depth + 1]:
            v = rng.randrange(256)
            if a < (1 << len(dut.write.addr)):
                ctx.set(dut.write.addr, a)
                ctx.set(dut.write.data, v)
                ctx.set(dut.write.en, (1 << len(dut.write.en)) - 1)   # every bit
                await ctx.tick()
                if a < depth:
                    model[a] = v
        ctx.set(dut.write.en, 0)
        if write_register:          # the last write reaches its block RAM a cycle later
            await ctx.tick()
        # reads with the enable toggling: the data two cycles after an enabled address
        want = []
        for t in range(60):
            a = rng.randrange(1 << len(dut.read.addr)) if len(dut.read.addr) else 0
            en = rng.random() < 0.8
            ctx.set(dut.read.addr, a)
            ctx.set(dut.read.en, en)
            if en:
                want.append(model[a] if a < depth else None)   # beyond: no promise
            else:
                want.append(want[-1] if want else None)      # held
            *_, got = await ctx.tick().sample(dut.read.data)
            seen.append(got)
        return want

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    result = {}

    async def run(ctx):
        result["want"] = await tb(ctx)

    sim.add_testbench(run)
    sim.run()
    want = result["want"]
    # seen[t] is the output sampled at the clock edge ending cycle t: the word of the
    # address set in cycle t is there at the edge ending cycle t + latency
    n = dut.latency
    for t in range(len(want) - n):
        if want[t] is not None:
            assert seen[t + n] == want[t], (t, seen[t + n], want[t])
    # the sibling: a cycle earlier is not the word (where the words differ at all)
    if depth > 1:
        assert any(want[t] is not None and seen[t + n - 1] != want[t] for t in range(len(want) - n))


def test_bad_banks_are_refused():
    with pytest.raises(ConfigError, match="bank_depth"):
        RegisteredBanks(8, 16, 3)


@pytest.mark.parametrize("write_register", [False, True])
@pytest.mark.parametrize("poison", [False, True])
def test_a_read_as_the_word_is_written_is_poisoned_in_the_tests(poison, write_register, monkeypatch):
    """POISON_COLLISIONS is live: with it, the read of a word in the cycle its block RAM
    writes it is that word's old value inverted (the engine tests run with it and stay
    exact); without it, the old value (the simulation's, not a promise of the block
    RAM's). ``write_register``: the block RAM writes the word a cycle after the write
    port takes it, so the read a cycle later is the one that meets it, and a read a
    cycle after that gives the new word."""
    import ttforge.hw.engine.banks as banks

    monkeypatch.setattr(banks, "POISON_COLLISIONS", poison)
    dut = RegisteredBanks(8, 8, 4, write_register=write_register)
    got = {}

    async def tb(ctx):
        ctx.set(dut.write.addr, 5)
        ctx.set(dut.write.data, 0x3C)
        ctx.set(dut.write.en, 0xFF)
        await ctx.tick().repeat(2)
        ctx.set(dut.write.data, 0x81)            # written again while read
        if write_register:
            await ctx.tick()
            ctx.set(dut.write.en, 0)
        ctx.set(dut.read.addr, 5)
        ctx.set(dut.read.en, 1)
        await ctx.tick()
        ctx.set(dut.write.en, 0)
        await ctx.tick()
        got["collided"] = ctx.get(dut.read.data)
        await ctx.tick().repeat(2)
        got["after"] = ctx.get(dut.read.data)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    assert got["after"] == 0x81
    assert got["collided"] == (0x3C ^ 0xFF if poison else 0x3C)
