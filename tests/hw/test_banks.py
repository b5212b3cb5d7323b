"""RegisteredBanks: a memory split into banks whose read data is registered at each bank,
read two cycles after the address (three with the select registered too); the same words
as one memory."""

from __future__ import annotations

import random

import pytest
from amaranth.sim import Simulator

from ttforge.errors import ConfigError
from ttforge.hw.engine.banks import RegisteredBanks


@pytest.mark.parametrize("select_register", [False, True])
@pytest.mark.parametrize("depth,bank_depth", [(13, 4), (16, 4), (8, 8), (5, 512), (1, 4)])
def test_banks_read_what_was_written_two_cycles_later(depth, bank_depth, select_register):
    dut = RegisteredBanks(8, depth, bank_depth, select_register=select_register)
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
