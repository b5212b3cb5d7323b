"""The iCEBreaker's single-port RAM in the memory pre-check and the build's config:
buffers with ``buf_ports=1`` count against the four ``SB_SPRAM256KA`` blocks, the rest
against the EBR; ``ttforge build`` picks single-port buffers only where the block RAM
is too small and they fit the SPRAM."""

from __future__ import annotations

import pytest

from ttforge.firmware.board import board
from ttforge.firmware.build import board_config, memory_misfit, spram_blocks
from ttforge.hw.config import AccelConfig
from ttforge.hw.synth import single_port_script, synth_extras

MNIST_ICE = dict(lanes=1, act_bits=8, core_bits=4, inter_bits=16, acc_bits=26, bias_bits=15,
                 core_depth=21184, bias_depth=524, buf_depth=14336, desc_depth=5,
                 serial_requant=1, counter_bits=24)


@pytest.mark.parametrize("fields,blocks", [
    ({}, 2),                                            # 14336 x 16 bit: one block each
    ({"lanes": 2, "buf_depth": 14336}, 4),               # 32-bit words: two blocks wide
    ({"buf_depth": 16385}, 4),                           # two blocks deep
    ({"inter_bits": 12}, 2),                             # a 12-bit word still takes a block
    ({"lanes": 4, "buf_depth": 14336}, 8),
])
def test_spram_blocks(fields, blocks):
    assert spram_blocks(AccelConfig(**{**MNIST_ICE, **fields})) == blocks


def test_precheck_counts_the_spram():
    one = AccelConfig(**MNIST_ICE, buf_ports=1)
    assert memory_misfit(one, "ice40up5k") is None
    why = memory_misfit(AccelConfig(**{**MNIST_ICE, "lanes": 4, "buf_ports": 1}), "ice40up5k")
    assert why == ("the single-port buffers (2 x 14336 x 16 bit at lanes=4) need 8 "
                   "SB_SPRAM256KA but the iCE40UP5K-SG48 (iCEBreaker) has 4")
    # the ECP5 has no SPRAM: single-port buffers are block RAM like the others
    assert memory_misfit(one, "ecp5-85f") is None
    # above the ECP5's block RAM, within ttforge.hw.config.MAX_MEMORY_BITS (1 << 20 is not)
    big = AccelConfig(**{**MNIST_ICE, "buf_depth": 1 << 17, "buf_ports": 1})
    assert "block RAM" in memory_misfit(big, "ecp5-85f")


def test_precheck_counts_every_engines_memories():
    """Each engine of an array has its own memories: the pre-check counted one engine's,
    so a design that cannot fit reached the toolchain. The count is the ratio of the
    bits: the same config at 1 engine fits, at ``n`` it needs ``n`` times the bits."""
    from ttforge.firmware.build import BRAM_BITS, memory_bits

    one = AccelConfig(**{**MNIST_ICE, "buf_depth": 1 << 15})
    assert memory_misfit(one, "ecp5-85f") is None
    n = BRAM_BITS["ecp5-85f"] // memory_bits(one) + 1   # the fewest engines that cannot fit
    why = memory_misfit(AccelConfig(**{**MNIST_ICE, "buf_depth": 1 << 15, "engines": n}), "ecp5-85f")
    assert why is not None and f"{n} engines x (" in why
    assert f"need {n * memory_bits(one) / 1024:.1f} kbit" in why


def test_build_config_takes_the_spram_only_when_needed(tmp_path):
    from tests.support.nets import example_network
    from ttforge.ir.artifact import save_artifact

    art = tmp_path / "small.ttfa"
    save_artifact(example_network(), art)
    cfg, _ = board_config(board("icebreaker"), art)
    assert cfg.buf_ports == 2                       # fits the EBR: the build is unchanged
    cfg, _ = board_config(board("ulx3s"), art)
    assert cfg.buf_ports == 2


def test_synthesis_script_only_for_single_port_buffers():
    two, one = AccelConfig(**MNIST_ICE), AccelConfig(**MNIST_ICE, buf_ports=1)
    assert single_port_script(two) == [] and synth_extras(two, "ice40up5k") == ([], "")
    script = single_port_script(one)
    assert script[0] == "proc" and "memory_collect @ttforge_spram" in script
    assert "setparam -set INIT 229376'bx @ttforge_spram t:$mem_v2 %i" in script
    assert synth_extras(one, "ice40up5k")[1] == "-spram"
    assert synth_extras(one, "ecp5-85f") == ([], "")


def test_build_config_moves_buffers_that_do_not_fit_the_ebr_to_the_spram(tmp_path, monkeypatch):
    from tests.support.nets import example_network
    from ttforge.ir.artifact import save_artifact

    art = tmp_path / "small.ttfa"
    save_artifact(example_network(), art)
    # the MNIST TT-MLP's config (training it takes minutes): 448 kbit of buffers
    mnist = {k: v for k, v in MNIST_ICE.items() if k not in ("serial_requant", "counter_bits")}
    monkeypatch.setattr(AccelConfig, "for_network",
                        classmethod(lambda cls, net, lanes=4, **kw: cls(**{**mnist, "lanes": lanes})))
    cfg, _ = board_config(board("icebreaker"), art)
    assert cfg == AccelConfig(**MNIST_ICE, buf_ports=1)
    cfg, _ = board_config(board("ulx3s"), art, lanes=1)
    assert cfg.buf_ports == 2                       # 479 kbit of block RAM hold them
    # four lanes need 8 SPRAM blocks: the config stays dual-port and is refused
    cfg, _ = board_config(board("icebreaker"), art, lanes=4)
    assert cfg.buf_ports == 2 and "buf_ports = 1" not in memory_misfit(cfg, "ice40up5k")


@pytest.mark.skipif(__import__("shutil").which("iverilog") is None, reason="needs Icarus Verilog")
def test_simulated_board_with_single_port_buffers_equals_golden(tmp_path):
    """The board top with single-port buffers (the iCEBreaker's SPRAM build), the host
    driver over the simulated UART: outputs equal the golden executor; one flipped
    output bit must not."""
    import numpy as np

    from tests.support.nets import example_network
    from ttforge.firmware.simulate import simulated_device
    from ttforge.ir.executor import execute

    net = example_network()
    cfg = AccelConfig.for_network(net, lanes=1)
    cfg = AccelConfig(**{**cfg.to_dict(), "serial_requant": 1, "counter_bits": 32,
                         "buf_ports": 1})
    x = np.random.default_rng(5).integers(-128, 128, size=(3, net.in_features))
    with simulated_device(cfg, build_dir=tmp_path, timeout=120) as dev:
        dev.load(net)
        got = dev.infer(x)
    golden = execute(net, x)
    assert np.array_equal(got, golden)
    got[0, 0] ^= 1
    assert not np.array_equal(got, golden)


def _packed_lc(config, tmp_path) -> int:
    """Logic cells of the iCEBreaker board top of ``config`` after the board build's own
    synthesis (Amaranth's script: ``synth_ice40 -dsp -spram`` with the single-port
    buffers' commands) and nextpnr's packing (``--pack-only``: the count a place and
    route starts from, about 15 s)."""
    import re
    import subprocess

    from ttforge.firmware.board import DEFAULT_BAUD, BoardTop
    from ttforge.firmware.build import toolchain_env
    from ttforge.errors import ToolchainMissing

    try:
        tools = toolchain_env("ice40")
    except ToolchainMissing as e:
        pytest.skip(str(e))
    b = board("icebreaker")
    after, opts = synth_extras(config, b.device)
    plan = b.platform().build(BoardTop(b.key, config, clk_hz=b.default_hz, baud=DEFAULT_BAUD),
                              name="top", build_dir=str(tmp_path), do_build=False,
                              synth_opts=f"-dsp {opts}", script_after_read="\n".join(after))
    plan.extract(str(tmp_path))
    subprocess.run([tools["YOSYS"], "-q", "-l", "top.rpt", "top.ys"], cwd=tmp_path, check=True,
                   capture_output=True)
    subprocess.run([tools["NEXTPNR_ICE40"], "--up5k", "--package", "sg48", "--json", "top.json",
                    "--pcf", "top.pcf", "--pack-only", "--log", "pack.log"], cwd=tmp_path,
                   check=True, capture_output=True)
    used = re.findall(r"ICESTORM_LC:\s+(\d+)/\s*(\d+)", (tmp_path / "pack.log").read_text())
    assert used and int(used[-1][1]) == 5280
    return int(used[-1][0])


def test_the_mnist_network_fits_the_icebreakers_logic_cells(tmp_path):
    """The iCEBreaker MNIST top (the config ``ttforge build`` picks for the MNIST TT-MLP of
    bench_boards) packs into the UP5K's 5,280 logic cells, with the iCE40 form's counters
    in SB_MAC16 blocks; the same top with its counters in the fabric (48 bits: wider than
    an SB_MAC16 accumulator) does not, so the count can fail. 5,193 at a531c1b, 5,207 at
    4271106: the engine's next growth shows here, not in a 19-minute benchmark."""
    cfg = AccelConfig(**{**MNIST_ICE, "bias_depth": 522}, buf_ports=1, axil_addr_bits=19)
    assert _packed_lc(cfg, tmp_path / "dsp") <= 5280
    fabric = AccelConfig(**{**MNIST_ICE, "bias_depth": 522, "counter_bits": 48}, buf_ports=1,
                         axil_addr_bits=19)
    assert _packed_lc(fabric, tmp_path / "fabric") > 5280
