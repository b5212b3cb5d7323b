"""``TrainAccel`` in the Amaranth simulator, driven over AXI4-Lite and AXI4-Stream by the
host driver (``AsyncTrainHost``) through a small bus-functional master: after a step the
state read back through the windows equals the golden trainer's (``compare_states``)
and the memories equal the interpreter's (``np.array_equal``); the register map's views;
the access rules of the windows (SLVERR while busy, read-only windows); a sibling that
corrupts one CMEM word over AXI and must be seen."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ttforge.errors import DeviceError
from ttforge.hw.trainer.model import load_batch as model_load_batch
from ttforge.hw.trainer.model import load_program as model_load_program
from ttforge.hw.trainer.model import run_step as model_run_step
from ttforge.hw.trainer.program import TrainEngineConfig, compile_training
from ttforge.hw.trainer.regmap import TRAIN_MAGIC, train_register_map
from ttforge.hw.trainer.top import TrainAccel
from ttforge.ir.random import train_case
from ttforge.ir.train import train_step
from ttforge.ir.train_diverge import compare_states
from tests.support.train_top import simulate_top as _simulate
from tests.support.train_top import top_config as _config


def _batches(rng, state, n, batch):
    hi = (1 << (state.config.act_bits - 1)) - 1
    return [(rng.integers(0, hi + 1, size=(batch, state.in_features)),
             rng.integers(0, state.n_classes, size=batch)) for _ in range(n)]


def test_two_steps_over_axi_equal_the_golden_trainer_and_the_interpreter():
    state, x, y, rng = train_case(0, batch=5, n_layers=2, d=2, rank=2, n_in=8, hidden=6, n_out=3)
    cfg = _config(state)
    batches = [(x, y)] + _batches(rng, state, 1, 5)

    async def body(ctx, bus, host):
        await host.check()
        prog = compile_training(state, 5, cfg)
        await host.load_program(prog)
        mem = model_load_program(prog)
        st, records = state, []
        for bx, by in batches:
            res = await host.train_step(st, prog, bx, by)
            model_load_batch(mem, bx, by)
            model_run_step(mem, prog)
            golden = train_step(st, bx, by)
            records.append(dict(
                golden=compare_states(res.state, golden),
                cmem=np.array_equal(res.cmem, mem.cmem[:res.cmem.size]),
                bmem=np.array_equal(res.bmem, mem.bmem[:res.bmem.size]),
                maxacc=np.array_equal(res.maxacc, mem.maxacc[:res.maxacc.size]),
                rng=res.rng == mem.rng))
            # the activations and labels are readable too, and equal the interpreter's
            act = await host.read_window("ACT", 0, prog.regions.act_words * cfg.lanes)
            records[-1]["act"] = np.array_equal(np.array(act), mem.act[:prog.regions.act_words].reshape(-1))
            lab = await host.read_window("LABEL", 0, len(by))
            records[-1]["label"] = lab == [int(v) for v in by]
            # and so are the gradients and the descriptors (every word the host can read;
            # the host has rewritten the exponents for the next step: res.program)
            grad = await host.read_window("GRAD", 0, prog.regions.grad_words * cfg.lanes)
            records[-1]["grad"] = np.array_equal(np.array(grad),
                                                 mem.grad[:prog.regions.grad_words].reshape(-1))
            dm = await host.read_window("DMEM", 0, len(res.program.words))
            records[-1]["dmem"] = dm == [w & 0xFFFFFFFF for w in res.program.words]
            st, prog = res.state, res.program
        counters = await host.counters()
        return records, counters

    records, counters = _simulate(cfg, body)
    for r in records:
        assert r.pop("golden") is None
        assert all(r.values()), r
    assert counters["STEPS"] == 2 and counters["MAC_CYCLES"] > 0


def test_sibling_a_cmem_word_corrupted_over_axi_is_reported():
    state, x, y, _ = train_case(0, batch=4, n_layers=2, d=2, rank=2, n_in=8, hidden=6, n_out=3)
    cfg = _config(state)

    async def body(ctx, bus, host):
        prog = compile_training(state, 4, cfg)
        await host.load_program(prog)
        cm = await host.read_window("CMEM", 0, 4)
        assert cm == [int(v) for v in prog.cmem[:4]]            # the window reads back
        await host.write_window("CMEM", 2, [int(prog.cmem[2]) ^ 1])
        res = await host.train_step(state, prog, x, y)
        return compare_states(res.state, train_step(state, x, y))

    diff = _simulate(cfg, body)
    assert diff is not None


def test_rng_writes_honour_the_byte_strobes():
    """``RNG`` is RW, and RW registers honour WSTRB (docs/hardware.md): a write loads the
    strobed bytes and keeps the others; no strobe changes nothing. It was a write-only
    pulse of the strobed bytes: ``0x000000DD`` after a one-byte write, and a write with
    no strobe loaded 0, xorshift32's stuck state."""
    state, *_ = train_case(1, batch=4, n_layers=2, d=2, rank=2, n_in=8, hidden=6, n_out=3)
    cfg = _config(state)
    rng = train_register_map(cfg).addr("RNG")

    async def body(ctx, bus, host):
        seen = []
        await host.write_reg("RNG", 0x11223344)
        for value, strb in ((0xAABBCCDD, 0b0001), (0xAABBCCDD, 0b0110), (0x55667788, 0b1000),
                            (0x99999999, 0b0000), (0x0BADF00D, 0b1111)):
            seen.append((await bus._write(rng, value, strb), await host.read_reg("RNG")))
        return seen

    assert _simulate(cfg, body) == [(0, 0x112233DD), (0, 0x11BBCCDD), (0, 0x55BBCCDD),
                                    (0, 0x55BBCCDD), (0, 0x0BADF00D)]


def test_access_rules_and_errors():
    state, x, y, _ = train_case(1, batch=4, n_layers=2, d=2, rank=2, n_in=8, hidden=6, n_out=3)
    cfg = _config(state)
    rm = train_register_map(cfg)

    async def body(ctx, bus, host):
        def dut_irq():
            return bus.dut.irq

        out = {}
        out["id"] = await bus.read32(rm.addr("ID"))
        out["ro_window_write"] = await bus._write(rm.window("MAXACC").base, 1)
        out["unmapped"] = (await bus._read(rm.window("LABEL").base + 4 * cfg.max_batch))[1]
        await host.write_reg("CTRL", 0b110)             # both interrupts enabled, no ENABLE
        await host.write_reg("RNG", 0x1234567)
        out["rng"] = await host.read_reg("RNG")
        prog = compile_training(state, 4, cfg)
        await host.load_program(prog)
        # busy (waiting for samples): windows and RNG answer SLVERR
        await host.write_reg("CMD", 1)
        out["busy_read"] = (await bus._read(rm.window("CMEM").base))[1]
        out["busy_write"] = await bus._write(rm.window("CMEM").base, 5)
        out["busy_rng"] = await bus._write(rm.addr("RNG"), 5)
        # and so do the program registers the step reads (BATCH 4 -> 3 took effect mid-step)
        out["busy_prog"] = [await bus._write(rm.addr(n), 3) for n in ("BATCH", "BW_LOG", "IN_COUNT",
                                                                      "IN_BASE", "STOCH")]
        out["batch"] = await host.read_reg("BATCH")
        await host.soft_reset()
        out["after_reset"] = await host.status()
        out["cmem0"] = (await host.read_window("CMEM", 0, 1))[0]
        # a bad label: the engine's error code comes back through the driver
        yb = y.copy()
        yb[1] = state.n_classes
        try:
            await host.run_batch(x, yb)
            out["err"] = None
        except DeviceError as e:
            out["err"] = (e.name, str(e))
        out["irq_error"] = (ctx.get(dut_irq()), await host.read_reg("IRQ_STATUS"))
        await host.write_reg("IRQ_STATUS", 0b10)        # write 1 to clear
        await host.clear_error()
        out["irq_cleared"] = (ctx.get(dut_irq()), await host.read_reg("IRQ_STATUS"))
        await host.load_program(prog)
        res = await host.train_step(state, prog, x, y)
        out["recovered"] = compare_states(res.state, train_step(state, x, y))
        out["irq_done"] = (ctx.get(dut_irq()), await host.read_reg("IRQ_STATUS"))
        return out

    out = _simulate(cfg, body)
    assert out["id"] == TRAIN_MAGIC
    assert out["ro_window_write"] == 2 and out["unmapped"] == 2
    assert out["rng"] == 0x1234567
    assert out["busy_read"] == 2 and out["busy_write"] == 2 and out["busy_rng"] == 2
    assert out["busy_prog"] == [2] * 5 and out["batch"] == 4
    assert out["after_reset"] & 1 == 0
    assert out["cmem0"] == int(compile_training(state, 4, cfg).cmem[0])   # the busy write was refused
    assert out["err"] is not None and out["err"][0] == "BAD_LABEL", out["err"]
    assert out["recovered"] is None
    assert out["irq_error"] == (1, 0b10) and out["irq_cleared"] == (0, 0) and out["irq_done"] == (1, 0b01)


def test_register_map_views():
    state, *_ = train_case(0, batch=4, n_layers=2, d=2, rank=2, n_in=8, hidden=6, n_out=3)
    rm = train_register_map(_config(state))
    d = json.loads(rm.to_json())
    assert d["format"] == "ttforge-train-regmap"
    names = [r["name"] for r in d["registers"]]
    for n in ("CTRL", "CMD", "STATUS", "ERROR_CODE", "BATCH", "BW_LOG", "IN_COUNT", "IN_BASE", "STOCH",
              "RNG", "CYCLES_LO", "MAC_CYCLES_LO", "STEPS", "CHANGED"):
        assert n in names
    assert [w["name"] for w in d["windows"]] == ["DMEM", "CMEM", "BMEM", "MAXACC", "ACT", "GRAD", "LABEL"]
    h = rm.to_c_header()
    assert "#define TTFORGE_TRAIN_RNG_ADDR 0x0074u" in h
    md = rm.to_markdown()
    assert "| `0x0074` | `RNG` |" in md
    assert rm.decode(rm.window("ACT").base + 8) == ("ACT", 2)
    assert rm.decode(rm.window("LABEL").base + 4 * rm.window("LABEL").depth) is None


def test_driver_refuses_a_program_for_another_config():
    from ttforge.errors import ConfigError
    from ttforge.hw.trainer.host import TrainHost

    state, *_ = train_case(0, batch=4, n_layers=2, d=2, rank=2, n_in=8, hidden=6, n_out=3)
    host = TrainHost(_config(state), lambda a: 0, lambda a, v: None, lambda f: None)
    prog = compile_training(state, 4, _config(state, lanes=2))
    with pytest.raises(ConfigError, match="another TrainEngineConfig"):
        host.load_program(prog)
    with pytest.raises(ConfigError, match="not a ttforge training top"):
        host.check()


def test_error_codes_are_the_engines_and_the_tops():
    from ttforge.hw.trainer.engine import TrainError
    from ttforge.hw.trainer.regmap import TOP_ERRORS, TRAIN_ERROR_TEXT

    engine = {int(e.value): e.name for e in TrainError}
    top = {v: k for k, v in TOP_ERRORS.items()}
    assert {k: n for k, (n, _) in TRAIN_ERROR_TEXT.items()} == {**engine, **top}
    # the top's codes lie above every code the engine's 4-bit enum can hold
    assert min(top) >= 1 << TrainError.as_shape().width



def test_generate_train_writes_the_views_and_never_replaces_a_foreign_directory(tmp_path):
    from ttforge.errors import OutputError
    from ttforge.hw.trainer.verilog import TRAIN_MARKER, generate_train

    state, *_ = train_case(0, batch=4, n_layers=2, d=2, rank=2, n_in=8, hidden=6, n_out=3)
    cfg = _config(state)
    out = tmp_path / "gen"
    m = generate_train(cfg, out, verilog=False)
    names = {p.name for p in out.iterdir()}
    assert names == set(m["files"]) | {TRAIN_MARKER}
    assert json.loads((out / "train_regmap.json").read_text()) == train_register_map(cfg).to_dict()
    generate_train(cfg, out, verilog=False)             # its own output: replaced
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(OutputError):
        generate_train(cfg, foreign, verilog=False)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_verilog_ports_and_lint():
    import shutil

    from ttforge.hw.emit import lint_verilog
    from ttforge.hw.trainer.top import verilator_waivers, verilog

    state, *_ = train_case(0, batch=4, n_layers=2, d=2, rank=2, n_in=8, hidden=6, n_out=3)
    cfg = TrainEngineConfig(lanes=2, train=state.config, act_depth=64, grad_depth=64, core_depth=64,
                            bias_depth=16, desc_depth=16, max_batch=4, max_classes=4)
    v = verilog(cfg, reset="aresetn")
    assert "module ttforge_train(" in v
    for port in ("input aresetn;", "output s_axil_arready;", "input [7:0] s_axis_tdata;",
                 "output s_axis_tready;", "output irq;"):
        assert port in v, port
    try:
        from ttforge.hw.tools import verilator_root
        verilator_root()
    except Exception as e:      # noqa: BLE001 - any missing piece of the toolchain
        pytest.skip(f"no Verilator: {e}")
    if shutil.which("make") is None:
        pytest.skip("no make")
    rc, warnings = lint_verilog(v, "ttforge_train", verilator_waivers())
    # -Wall with the waivers (each with its reason) reports nothing, engine included
    assert rc == 0 and not warnings, warnings[:5]
    # sibling: without the training waiver the engine's partly read bits are reported
    from ttforge.hw.emit import VERILATOR_WAIVERS
    rc, warnings = lint_verilog(v, "ttforge_train", VERILATOR_WAIVERS)
    assert rc != 0 and any("Bits of signal are not used: 'core.engine." in w for w in warnings)


def test_c_header_compiles_next_to_the_inference_header(tmp_path):
    import shutil
    import subprocess

    from ttforge.hw.config import AccelConfig
    from ttforge.hw.regmap import RegisterMap

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    state, *_ = train_case(0, batch=4, n_layers=2, d=2, rank=2, n_in=8, hidden=6, n_out=3)
    (tmp_path / "train.h").write_text(train_register_map(_config(state)).to_c_header())
    (tmp_path / "infer.h").write_text(RegisterMap(AccelConfig()).to_c_header())
    (tmp_path / "main.c").write_text(
        '#include "infer.h"\n#include "train.h"\n'
        "int main(void) { return (int)(TTFORGE_TRAIN_RNG_ADDR - 0x74u + TTFORGE_TRAIN_ERR_NONE); }\n")
    p = subprocess.run([cc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-o", str(tmp_path / "a.out"),
                        str(tmp_path / "main.c")], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert subprocess.run([str(tmp_path / "a.out")]).returncode == 0


@pytest.mark.filterwarnings("ignore::amaranth.hdl._ir.UnusedElaboratable")   # built to be refused
def test_a_fault_must_be_a_training_fault():
    from ttforge.errors import ConfigError

    state, *_ = train_case(0, batch=4, n_layers=2, d=2, rank=2, n_in=8, hidden=6, n_out=3)
    cfg = _config(state)
    with pytest.raises(ConfigError, match="known: wrong_transpose"):
        TrainAccel(cfg, fault="requant_lsb")          # an inference fault
    assert TrainAccel(cfg, fault="no_mask").fault == "no_mask"
    assert TrainAccel(cfg).fault is None
