"""The counters ``ttforge run`` prints and :meth:`Device.counters` gives are the run's:
``load`` clears them (a second run on a board still powered printed the sum of both), and
counters narrower than their 48-bit registers (``counter_bits``, 24 on the iCEBreaker:
1.4 s at 12 MHz) are added up modulo their width after every vector; a figure that may
still have wrapped is printed modulo ``2^counter_bits`` and says so."""

from __future__ import annotations

import re
import shutil
from dataclasses import replace

import numpy as np
import pytest

from ttforge.cli import main
from ttforge.firmware.host import COUNTERS, Device
from ttforge.firmware.protocol import Cmd
from ttforge.hw.config import AccelConfig
from ttforge.hw.cycles import program_cycles
from ttforge.hw.program import compile_program
from ttforge.ir.random import random_inputs

from tests.support.fakeboard import FakeBoard
from tests.support.nets import example_network


class CountingBoard(FakeBoard):
    """:class:`FakeBoard` with performance counters of ``config.counter_bits`` bits: each
    vector adds ``per_vector`` (``{NAME: increment}``); ``CMD.CLEAR_COUNTERS`` zeroes
    them; the ``LO``/``HI`` registers hold them modulo ``2**counter_bits``."""

    def __init__(self, net, config, per_vector: dict[str, int], start: int = 0):
        super().__init__(net, config)
        self.per_vector = per_vector
        self.counts = dict.fromkeys(COUNTERS, start)     # an earlier run's
        self._show()

    def _show(self) -> None:
        mod = 1 << self.config.counter_bits
        for c, v in self.counts.items():
            self.set_reg(f"{c}_LO", v % mod)
            self.set_reg(f"{c}_HI", (v % mod) >> 32)

    def _handle(self, t: int, body: bytes) -> None:
        n = len(self.vectors)
        if t == Cmd.WRITE32 and int.from_bytes(body[:4], "little") == self.addr("CMD") and body[4] & 4:
            self.counts = dict.fromkeys(COUNTERS, 0)
        super()._handle(t, body)
        if len(self.vectors) > n:       # a vector's last element came: it ran
            for c, inc in self.per_vector.items():
                self.counts[c] += inc
        self._show()


@pytest.fixture
def board():
    net = example_network()
    cfg = replace(AccelConfig.for_network(net, lanes=4), counter_bits=24)
    # 10^7 cycles a vector: three pass 2^24
    per = {"CYCLES": 10_000_000, "BUSY_LANE_CYCLES": 9_000_000, "IN_STALL": 7, "VECTORS": 1}
    return net, cfg, per


def test_load_clears_the_counters_and_narrow_ones_add_up_per_vector(board):
    """Two sessions on one board (two ``ttforge run`` calls): each one's counters are its
    own (they were the sum of both), and 24-bit counters past 2^24 over the run are exact
    (they wrapped: 30,000,000 read 13,222,784)."""
    net, cfg, per = board
    x = random_inputs(net, 3, np.random.default_rng(0))
    fake = CountingBoard(net, cfg, per, start=5_000_000)
    for _ in range(2):
        dev = Device(fake)
        dev.counter_bits = cfg.counter_bits
        dev.load(net)
        dev.infer(x)
        c = dev.counters()
        assert c == {"cycles": 30_000_000, "busy_lane_cycles": 27_000_000, "in_stall": 21,
                     "out_stall": 0, "sat_events": 0, "vectors": 3}
    # the width unknown (a library user who does not set it): the registers, since load
    dev = Device(fake)
    dev.load(net)
    dev.infer(x[:1])
    assert dev.counters()["cycles"] == 10_000_000
    dev.clear_counters()
    assert dev.counters()["cycles"] == 0 and fake.counts["CYCLES"] == 0


def _counter_line(out: str) -> str:
    return next(ln for ln in out.splitlines() if re.match(r"# \d+ vectors on the ", ln))


def test_run_says_which_figures_are_modulo_the_counter_width(board, tmp_path, capsys, monkeypatch):
    """``ttforge run`` prints exact figures as they are, and a figure that may have
    wrapped within one vector (beyond what reading after every vector catches) modulo
    2^counter_bits, saying why: by the cycle model (a vector of 71 M cycles at one
    lane), or by a real board's clock (a vector that kept the host waiting 1.5 s at
    12 MHz)."""
    import ttforge.firmware.host as fh
    from ttforge.firmware.cli import run_counters_text
    from ttforge.ir.artifact import save_artifact
    from ttforge.ir.executor import IntNetwork
    from ttforge.ir.random import random_layer

    net, cfg, per = board
    art = tmp_path / "n.ttfa"
    save_artifact(net, art)
    np.save(tmp_path / "x.npy", random_inputs(net, 3, np.random.default_rng(0)))
    fake = CountingBoard(net, cfg, per)
    monkeypatch.setattr(fh.Device, "open_serial", lambda *a, **k: Device(fake))
    cfg_file = tmp_path / "c.json"
    cfg_file.write_text(cfg.to_json())
    assert main(["run", "--board", "icebreaker", "--port", "/dev/fake", "--config", str(cfg_file),
                 str(art), str(tmp_path / "x.npy")]) == 0
    assert _counter_line(capsys.readouterr().out) == (
        "# 3 vectors on the icebreaker on /dev/fake; 30000000 cycles, 27000000 busy lane-cycles")

    prog = compile_program(net, cfg)
    c = {"cycles": 30_000_000, "busy_lane_cycles": 27_000_000}
    assert run_counters_text(c, prog, cfg, (1.5, 12_000_000)) == (
        f"{30_000_000 % 2**24} cycles (modulo 2^24: a vector kept the host waiting 1.50 s, up to "
        "18,000,000 cycles at 12 MHz, more than the 24-bit counters hold), 27000000 busy lane-cycles")
    assert run_counters_text(c, prog, replace(cfg, counter_bits=48), (1.5, 12_000_000)) == (
        "30000000 cycles, 27000000 busy lane-cycles")

    big = IntNetwork((random_layer(np.random.default_rng(0), [16] * 3, [16] * 3, [1, 32, 32, 1], (0, 1, 2),
                                   w_bits=4, in_bits=8, in_exp=-3, inter_bits=16, out_bits=8, bias=False,
                                   relu=False, acc_bits=44),))
    bcfg = replace(AccelConfig.for_network(big, lanes=1), counter_bits=24)
    bprog = compile_program(big, bcfg)
    m = program_cycles(bprog.descriptors, bcfg, bprog.globals)
    assert m.total >= 2**24 and m.busy_lane_cycles >= 2**24
    c = {"cycles": 2 * m.total + 5, "busy_lane_cycles": 2 * m.busy_lane_cycles}
    assert run_counters_text(c, bprog, bcfg) == (
        f"{c['cycles'] % 2**24} cycles (modulo 2^24: a vector takes {m.total:,} cycles by the cycle model, "
        f"more than the 24-bit counters hold), {c['busy_lane_cycles'] % 2**24} busy lane-cycles (modulo "
        f"2^24: a vector takes {m.busy_lane_cycles:,} by the cycle model, more than the 24-bit counters hold)")


@pytest.mark.skipif(shutil.which("iverilog") is None, reason="needs Icarus Verilog")
def test_a_second_run_on_the_simulated_board_prints_its_own_counters(artifact, tmp_path, capsys, monkeypatch):
    """The probe's case on the board-top RTL: two ``ttforge run`` calls on one simulated
    iCEBreaker (its 24-bit counters; one board for both, as a board stays powered between
    two runs). The second printed twice its busy lane-cycles (VECTORS=6 for 3 vectors);
    each now prints its own, the cycle model's exactly, and the identity CYCLES =
    vectors x the model's cycles + IN_STALL + OUT_STALL holds for it."""
    import ttforge.firmware.simulate as fs
    from ttforge.firmware.board import board as board_of
    from ttforge.firmware.build import board_config
    from ttforge.ir.artifact import load_artifact

    art, x = artifact / "small.ttfa", artifact / "x.npy"
    net = load_artifact(art)
    n = len(np.load(x))
    cfg, _ = board_config(board_of("icebreaker"), art)
    assert cfg.counter_bits == 24
    dev = fs.simulated_device(cfg, build_dir=tmp_path / "sim", timeout=300)
    close, dev.close = dev.close, lambda: None      # one board for both runs
    monkeypatch.setattr(fs, "simulated_device", lambda *a, **k: dev)
    try:
        prog = compile_program(net, cfg)
        m = program_cycles(prog.descriptors, cfg, prog.globals)
        for _ in range(2):
            assert main(["run", "--board", "icebreaker", "--sim", str(art), str(x)]) == 0
            line = _counter_line(capsys.readouterr().out)
            cycles, busy = (int(v) for v in re.fullmatch(
                r"# \d+ vectors on the simulated board; (\d+) cycles, (\d+) busy lane-cycles", line).groups())
            c = dev.counters()
            assert (busy, c["busy_lane_cycles"], c["vectors"]) == (n * m.busy_lane_cycles,) * 2 + (n,)
            assert cycles == c["cycles"] == n * m.total + c["in_stall"] + c["out_stall"]
    finally:
        close()
