"""The register map: layout, views (JSON, C header, Markdown), consumption by the RTL register file."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess

import pytest

from ttforge.hw.config import DESC_WORDS, AccelConfig
from ttforge.hw.regmap import (COUNTERS, DESCRIPTOR_WORDS, FLAGS_FIELDS, MAGIC, ErrorCode,
                               RegisterMap)
from ttforge.ir.arith import ARITHMETIC_SPEC_VERSION

CONFIGS = [AccelConfig(), AccelConfig(lanes=16, core_depth=16384, bias_depth=1024, buf_depth=16384,
                                      desc_depth=64, stream_elems=4, axil_addr_bits=24),
           AccelConfig(lanes=1, core_depth=16, bias_depth=1, buf_depth=16, desc_depth=1)]


@pytest.mark.parametrize("config", CONFIGS)
def test_layout_is_aligned_disjoint_and_inside_the_address_space(config):
    m = RegisterMap(config)
    spans = sorted([(r.addr, r.addr + 4) for r in m.registers]
                   + [(w.base, w.base + w.size_bytes) for w in m.windows])
    assert all(a1 <= b0 for (_, a1), (b0, _) in zip(spans, spans[1:]))
    assert all(r.addr % 4 == 0 and r.addr < 0x100 for r in m.registers)
    assert spans[-1][1] <= 1 << m.addr_bits
    s = config.region_bytes
    assert [(w.name, w.base) for w in m.windows] == [("DMEM", s), ("CMEM", 2 * s), ("BMEM", 3 * s)]
    assert m.window("DMEM").depth == config.desc_depth * DESC_WORDS
    assert m.window("CMEM").depth == config.core_depth
    assert m.window("BMEM").depth == config.bias_depth
    assert m.window("CMEM").data_bits == config.core_bits
    assert m.window("BMEM").data_bits == config.bias_bits
    for r in m.registers:
        for f in r.fields:
            assert f.lsb + f.width <= 32
        masks = [f.mask for f in r.fields]
        assert sum(masks) == functools.reduce(int.__or__, masks, 0)  # fields do not overlap


def test_constant_registers_describe_the_config():
    c = CONFIGS[1]
    m = RegisterMap(c)
    assert m["ID"].value == MAGIC == 0x54544647
    v = m["VERSION"]
    assert v.field("ARITH").get(v.value) == ARITHMETIC_SPEC_VERSION
    assert v.field("DESC_WORDS").get(v.value) == 24
    lanes = m["CFG_LANES"]
    assert lanes.field("LANES").get(lanes.value) == 16
    assert lanes.field("STREAM_ELEMS").get(lanes.value) == 4
    w = m["CFG_WIDTHS"]
    assert [w.field(n).get(w.value) for n in ("ACT_BITS", "CORE_BITS", "INTER_BITS", "ACC_BITS")] == \
        [c.act_bits, c.core_bits, c.inter_bits, c.acc_bits]
    assert m["CFG_CORE_DEPTH"].value == 16384 and m["CFG_DESC_DEPTH"].value == 64
    for r in m.registers:
        assert (r.value is not None) == (r.name in ("ID", "VERSION") or r.name.startswith("CFG_"))
        if r.value is not None:
            assert r.access == "RO" and r.reset == r.value


def test_counters_are_lo_hi_pairs():
    m = RegisterMap(AccelConfig())
    for name, _ in COUNTERS:
        lo, hi = m[f"{name}_LO"], m[f"{name}_HI"]
        assert hi.addr == lo.addr + 4 and lo.access == hi.access == "RO"
        assert lo.width == 32 and hi.width == 16


def test_decode():
    m = RegisterMap(AccelConfig())
    assert m.decode(0x40) == ("CTRL", 0)
    assert m.decode(m.window("CMEM").base + 8) == ("CMEM", 2)
    assert m.decode(0x24) is None
    assert m.decode(m.window("DMEM").base + m.window("DMEM").size_bytes) is None


def test_rtl_register_file_consumes_the_map():
    from ttforge.hw.axil import RegisterFile, counter_pairs, normalize_regmap

    c = AccelConfig()
    m = RegisterMap(c)
    regs, wins = normalize_regmap(m)
    assert [r.name for r in regs] == [r.name for r in m.registers]
    assert [(w.name, w.base, w.depth, w.data_bits) for w in wins] == \
        [(w.name, w.base, w.depth, w.data_bits) for w in m.windows]
    assert set(counter_pairs(regs)) == {n for n, _ in COUNTERS}
    rf = RegisterFile(m, m.addr_bits)
    assert hasattr(rf, "ctrl") and hasattr(rf, "cmd_wstb") and hasattr(rf, "cycles")


def test_json_view_is_complete():
    m = RegisterMap(CONFIGS[1])
    d = json.loads(m.to_json())
    assert d["format"] == "ttforge-regmap" and d["addr_bits"] == 24
    assert [r["name"] for r in d["registers"]] == [r.name for r in m.registers]
    ctrl = next(r for r in d["registers"] if r["name"] == "CTRL")
    assert ctrl["access"] == "RW" and [f["name"] for f in ctrl["fields"]] == ["ENABLE", "IRQ_DONE_EN", "IRQ_ERROR_EN"]
    assert [w["name"] for w in d["windows"]] == ["DMEM", "CMEM", "BMEM"]
    assert [e["code"] for e in d["error_codes"]] == [int(c) for c in ErrorCode]
    assert len(d["descriptor"]["layout"]) == 24
    assert AccelConfig.from_dict(d["config"]) == m.config
    assert m.to_json() == RegisterMap(CONFIGS[1]).to_json()  # deterministic


def test_markdown_lists_every_register_and_window():
    m = RegisterMap(AccelConfig())
    md = m.to_markdown()
    for r in m.registers:
        assert f"`{r.name}`" in md
    for w in m.windows:
        assert f"`{w.name}`" in md
    assert "SLVERR" in md


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_c_header_compiles_strictly_and_matches(tmp_path):
    m = RegisterMap(CONFIGS[1])
    (tmp_path / "ttforge_regs.h").write_text(m.to_c_header())
    checks = [f"_Static_assert(TTFORGE_{r.name}_ADDR == {r.addr}u, \"{r.name}\");" for r in m.registers]
    checks += [f"_Static_assert(TTFORGE_{r.name}_{f.name}_MASK == {f.mask}u, \"{f.name}\");"
               for r in m.registers for f in r.fields]
    checks += [f"_Static_assert(TTFORGE_{w.name}_BASE == {w.base}u, \"{w.name}\");" for w in m.windows]
    checks += [f"_Static_assert(TTFORGE_DESC_{n} == {i}u, \"{n}\");" for i, n, _ in DESCRIPTOR_WORDS]
    checks += [f"_Static_assert(TTFORGE_DESC_FLAGS_{f.name}_SHIFT == {f.lsb}u, \"{f.name}\");"
               for f in FLAGS_FIELDS]
    checks += [f"_Static_assert(TTFORGE_ERR_{c.name} == {int(c)}u, \"{c.name}\");" for c in ErrorCode]
    src = ('#include "ttforge_regs.h"\n#include "ttforge_regs.h"\n#include <stdint.h>\n'
           + "\n".join(checks) + "\n"
           "int main(void) {\n"
           "  volatile uint32_t magic = TTFORGE_MAGIC;\n"
           "  uint32_t en = (1u << TTFORGE_CTRL_ENABLE_SHIFT) & TTFORGE_CTRL_ENABLE_MASK;\n"
           "  return (magic == 0x54544647u && en == 1u && TTFORGE_CFG_LANES == 16u) ? 0 : 1;\n}\n")
    (tmp_path / "t.c").write_text(src)
    # _Static_assert is C11; with -std=c99 -pedantic it would warn, so check both ways
    subprocess.run(["gcc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-o",
                    str(tmp_path / "t"), str(tmp_path / "t.c")], check=True, cwd=tmp_path)
    assert subprocess.run([str(tmp_path / "t")]).returncode == 0
    (tmp_path / "u.c").write_text('#include "ttforge_regs.h"\nint main(void) { return TTFORGE_ID_ADDR; }\n')
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-c", "-o",
                    str(tmp_path / "u.o"), str(tmp_path / "u.c")], check=True, cwd=tmp_path)


@pytest.mark.parametrize("units, want", [(None, 16), (4, 4)])
def test_c_header_names_the_requantization_units_the_engine_has(units, want):
    # requant_units unset is one unit per lane: the header says 16, never "None"
    text = RegisterMap(AccelConfig(lanes=16, requant_units=units)).to_c_header()
    assert f"#define TTFORGE_CFG_REQUANT_UNITS {want}u" in text and "None" not in text


def test_the_documented_default_map_is_what_the_code_emits():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "hardware.md").read_text()
    block = doc.split("<!-- regmap:default -->\n", 1)[1].split("<!-- /regmap:default -->", 1)[0]
    assert block.strip() == RegisterMap(AccelConfig()).to_markdown().strip()


def test_markdown_cells_escape_emphasis_outside_code_spans():
    """The training map's MAXACC window reads "word 2*op bits 31:0, word 2*op+1": two
    bare asterisks rendered it as emphasis, the formula without them. Every ``*`` outside
    a code span is escaped; inside one it is literal (an escape would show)."""
    import re

    from ttforge.hw.regmap import _md
    from ttforge.hw.trainer.program import TrainEngineConfig
    from ttforge.hw.trainer.regmap import train_register_map

    assert _md("word 2*op, `IRQ_*` a|b") == "word 2\\*op, `IRQ_*` a\\|b"
    for md in (RegisterMap(AccelConfig()).to_markdown(),
               train_register_map(TrainEngineConfig()).to_markdown()):
        prose = re.sub(r"`[^`]*`", "", md)
        assert "2\\*op+1" in md or "MAXACC" not in md
        assert re.findall(r"(?<!\\)\*", prose) == []


@pytest.mark.parametrize("bits", [24, 40])
def test_every_form_of_the_map_says_where_a_narrow_counter_wraps(bits):
    """With ``counter_bits`` below 48 (the iCE40 preset's 24) the fabric counters wrap at
    ``2**counter_bits`` while the registers stay 48 bits: regmap.json said only
    ``"counters": {"bits": 48}`` and regmap.md documented ``CYCLES_HI`` as bits 47:32,
    so a reader of either could not know."""
    m = RegisterMap(AccelConfig(counter_bits=bits))
    d = json.loads(m.to_json())
    assert d["counters"] == {**d["counters"], "bits": 48, "wrap_bits": bits}
    md = m.to_markdown()
    assert md.count(f"wraps at 2\\*\\*{bits}") == len(d["counters"]["names"])
    assert "bits 47:32, as latched" not in md
    assert f"2^TTFORGE_CFG_COUNTER_BITS ({bits})" in m.to_c_header()
    full = RegisterMap(AccelConfig()).to_markdown()
    assert "wraps" not in full and "bits 47:32, as latched" in full


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
@pytest.mark.parametrize("kind", ["inference", "train"])
def test_a_second_header_of_another_configuration_is_an_error_not_skipped(kind, tmp_path):
    """Firmware for two cores of different configurations included core A's header, then
    core B's: the include guard skipped B's silently and ``TTFORGE_CMEM_BASE`` stood for
    A's 0x2000 where B's said 0x8000, under -Wall -Wextra -pedantic -Werror. Now B's is an
    ``#error``; the same header twice (or two copies of it) still compiles."""
    from ttforge.hw.trainer.program import TrainEngineConfig
    from ttforge.hw.trainer.regmap import train_register_map

    if kind == "inference":
        a, b = (RegisterMap(AccelConfig(core_depth=d)).to_c_header() for d in (1024, 4096))
    else:
        a, b = (train_register_map(TrainEngineConfig(core_depth=d)).to_c_header() for d in (1024, 4096))
    assert a != b
    (tmp_path / "a.h").write_text(a)
    (tmp_path / "a_copy.h").write_text(a)
    (tmp_path / "b.h").write_text(b)

    def compiles(*headers):
        src = tmp_path / "t.c"
        src.write_text("".join(f'#include "{h}"\n' for h in headers) + "int main(void) { return 0; }\n")
        r = subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror", "-c", str(src),
                            "-o", str(tmp_path / "t.o")], capture_output=True, text=True)
        return r.returncode == 0, r.stderr

    assert compiles("a.h", "a_copy.h", "a.h")[0]
    ok, err = compiles("a.h", "b.h")
    assert not ok and "of another accelerator configuration is already included" in err
