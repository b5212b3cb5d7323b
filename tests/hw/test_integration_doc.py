"""docs/integration.md cannot rot: its port table, the LiteX ``Instance`` and the Vivado
interface names are checked against the Verilog that ``ttforge generate`` emits."""

from __future__ import annotations

import re

import pytest

from ttforge.hw.config import AccelConfig
from ttforge.hw.synth import verilog_ports
from ttforge.hw.top import TOP_NAME, verilog

from tests.support.markdown import DOCS, code_blocks
from tests.support.stubs import StubEngine

pytestmark = pytest.mark.filterwarnings("ignore:.*created but never used")

GUIDE = DOCS / "integration.md"
# small, and unlike the defaults in every width the table names (11 address bits,
# 32-bit tdata from four 6-bit elements in 8-bit lanes)
CFG = AccelConfig(lanes=2, act_bits=6, stream_elems=4, core_depth=64, bias_depth=16,
                  buf_depth=64, desc_depth=4)
_ROW = re.compile(r"^\| `(\w+)` \| (in|out) \| `?(\w+)`? \|", re.M)


def port_table(text: str) -> dict[str, tuple[str, str]]:
    """name -> (direction, width) of the rows of the guide's "Ports" table."""
    section = text.split("\n## Ports\n", 1)[1].split("\n## ", 1)[0]
    return {name: (d, w) for name, d, w in _ROW.findall(section)}


def _width(cell: str, cfg: AccelConfig) -> int:
    return int(cell) if cell.isdigit() else int(getattr(cfg, cell))


@pytest.fixture(scope="module")
def ports():
    return {p.name: p for p in verilog_ports(verilog(CFG), TOP_NAME)}


def test_port_table_equals_the_emitted_top(ports):
    table = port_table(GUIDE.read_text(encoding="utf-8"))
    assert set(table) == set(ports), (
        f"docs/integration.md Ports table: missing {sorted(set(ports) - set(table))}, "
        f"not in the Verilog {sorted(set(table) - set(ports))}")
    for name, (direction, width) in table.items():
        assert {"in": "input", "out": "output"}[direction] == ports[name].direction, name
        assert _width(width, CFG) == ports[name].width, name


def test_the_table_check_can_fail(ports):
    text = GUIDE.read_text(encoding="utf-8")
    table = port_table(text)
    assert len(table) == len(ports) == 28
    broken = port_table(text.replace("| `s_axil_wstrb` | in | 4 |", "| `s_axil_wstrobe` | in | 4 |"))
    assert set(broken) != set(ports)
    assert _width("tdata_bits", CFG) == 32 and _width("axil_addr_bits", CFG) == 11


def test_aresetn_variant_renames_only_the_reset():
    table = set(port_table(GUIDE.read_text(encoding="utf-8")))
    got = {p.name for p in verilog_ports(verilog(CFG, engine=StubEngine(CFG), reset="aresetn"), TOP_NAME)}
    assert got == (table - {"rst"}) | {"aresetn"}


def _litex_blocks() -> list[str]:
    return [b for b in code_blocks(GUIDE, "python") if "litex" in b]


def test_litex_instance_ports_equal_the_emitted_top(ports):
    module = next(b for b in _litex_blocks() if "Instance(" in b)
    conns = dict((n, d) for d, n in re.findall(r"\b([io])_(\w+)=", module))
    assert set(conns) == set(ports), sorted(set(conns) ^ set(ports))
    for name, d in conns.items():
        assert {"i": "input", "o": "output"}[d] == ports[name].direction, name


def test_vivado_interface_names_are_port_prefixes(ports):
    tcl = "\n".join(code_blocks(GUIDE, "tcl"))
    busifs = set(re.findall(r"-busif (\w+)", tcl)) | set(re.findall(r"tt/(\w+)\]", tcl))
    assert busifs >= {"s_axil", "s_axis", "m_axis", "irq"}
    for b in busifs:
        assert any(p == b or p.startswith(b + "_") for p in ports), b
    for clock_or_reset in re.findall(r"-(?:clock|reset) (\w+)", tcl):
        assert clock_or_reset in set(ports) | {"aresetn"}, clock_or_reset


def test_litex_snippet_elaborates(tmp_path, ports):
    """Optional: the LiteX recipe builds a SoC whose Verilog lints with the core."""
    pytest.importorskip("litex", reason="LiteX is not installed (pip install litex migen)")
    from litex.build.generic_platform import GenericPlatform, Pins
    from litex.build.io import CRG
    from litex.soc.integration.soc_core import SoCMini

    from ttforge.hw.tools import run_verilator

    rtl = tmp_path / "rtl"
    rtl.mkdir()
    cfg = AccelConfig(**{**CFG.to_dict(), "act_bits": 8})   # 4 x 8 bits: one 32-bit bus word a beat
    (rtl / "ttforge_accel.v").write_text(verilog(cfg))
    (rtl / "config.json").write_text(cfg.to_json())
    ns: dict = {}
    for block in _litex_blocks():
        exec(compile(block, "docs/integration.md[litex]", "exec"), ns)
    platform = GenericPlatform("sim", [("sys_clk", 0, Pins(1)), ("sys_rst", 0, Pins(1))])
    soc = SoCMini(platform, clk_freq=int(50e6))
    soc.crg = CRG(platform.request("sys_clk"), platform.request("sys_rst"))
    soc.add_ram("sram", 0x1000_0000, 0x1000)
    accel = ns["add_ttforge"](soc, rtl)
    ns["add_ttforge_dma"](soc, accel)
    soc.finalize()
    top = tmp_path / "soc_top.v"
    top.write_text(platform.get_verilog(soc, name="soc_top").main_source)
    r = run_verilator(["--lint-only", "-Wall", "-Wno-fatal", "--top-module", "soc_top",
                       str(top), str(rtl / "ttforge_accel.v")])
    assert r.returncode == 0, r.stderr[-2000:]
    # the core's own lint is tests/hw/test_lint_synth.py (with its waivers, which switch
    # width rules off globally); here: how the SoC connects to it
    at_instance = [line for line in r.stderr.splitlines()
                   if re.match(r"%(Warning|Error)-\w+: ", line) and re.search(r"\b[Pp]in\b|port connection", line)]
    assert not at_instance, "\n".join(at_instance)
