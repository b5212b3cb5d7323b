"""One bit flipped in a request's type byte, on the simulated board (the board top's RTL in
Icarus, through the UART): every request of every command with each of its type's 8 bits
flipped (the rest of the frame, its CRC included, as sent) is refused as a type no
command has (``BAD_CMD``), and no register and no memory changes: the registers read
the same, and the model computes the golden outputs without a new load.

In protocol version 2 a WRITE32 (0x01) with bit 1 flipped was a WRITE_BURST (0x03),
which acts as its bytes arrive: IN_COUNT went from 0xb to 0x80ad0000 (the data's high
half and the CRC bytes) before the CRC refused the frame."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest

from ttforge.firmware import protocol as P
from ttforge.ir.executor import execute
from ttforge.sim.cases import make_case

pytestmark = pytest.mark.skipif(shutil.which("iverilog") is None, reason="needs Icarus Verilog")


def _answer(dev, frame: bytes, timeout: float = 30.0) -> list:
    """Send ``frame`` as it is; the frames the board sends until its first answer."""
    parser, got = P.Parser(), []
    dev.t.write(frame)
    deadline = time.monotonic() + timeout
    while not any(isinstance(i, (P.Response, P.Refused)) for i in got) and time.monotonic() < deadline:
        got += parser.feed(dev.t.read(0.5))
    return got


def test_no_single_flip_of_a_request_type_changes_the_device():
    from ttforge.firmware.simulate import simulated_device

    case = make_case(3, 2)
    golden = execute(case.net, case.inputs)
    with simulated_device(case.config, timeout=60.0) as dev:
        dev.load(case.net)
        in_count = dev._reg("IN_COUNT")
        regs = [r.addr for r in dev._regs.registers if r.access in ("RW", "W1C")]
        before = dev.read32_many(regs)
        eb = dev.info["elem_bytes"]
        requests = {P.Cmd.WRITE32: P.write32(in_count, 0x1234), P.Cmd.READ32: P.read32(in_count),
                    P.Cmd.WRITE_BURST: P.write_burst(in_count, [0x1234, 0x5678]),
                    P.Cmd.STREAM_IN: P.stream_in([1, -2, 3], eb), P.Cmd.PING: P.ping()}
        answers = {}
        for cmd, frame in requests.items():
            for bit in range(8):
                bad = bytearray(frame)
                bad[1] ^= 1 << bit
                assert bad[1] not in (P.END, P.ESC)
                answers[cmd.name, bit] = _answer(dev, bytes(bad))
        dev.resync()
        after = dev.read32_many(regs)
        changed = {hex(a): (hex(b), hex(c)) for a, b, c in zip(regs, before, after) if b != c}
        assert changed == {}
        refused = {k: v for k, v in answers.items()
                   if [type(i) for i in v] == [P.Refused] and v[0].status == P.Status.BAD_CMD}
        assert sorted(set(answers) - set(refused)) == [], {k: answers[k] for k in set(answers) - set(refused)}
        assert np.array_equal(dev.infer(case.inputs), golden)       # no memory changed either
