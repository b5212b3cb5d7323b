"""The C training driver (``firmware/c/ttforge_train_driver.{h,c}``, ``docs/integration.md``,
"Training with the C driver").

Pure Python: the exponent tables of :mod:`ttforge.firmware.train_c_driver`, measured once
from the first state, reproduce ``compile_training(next_exponents(...))`` word for word
and every exponent over 50+ steps of random networks (MAXACC from the word-level
interpreter, the exponents also equal to the golden trainer's), and refuse exactly the
exponents ``compile_training`` refuses. Siblings: a table constant off by one, a MAXACC
bit flipped.

On the Verilated ``TrainAccel`` (AXI4-Lite + AXI4-Stream through the native shim): a C99
test program trains N steps with the driver and the state read back (CMEM, BMEM, RNG,
the driver's exponents) equals the golden trainer's byte for byte (the state file).
Siblings that must fail: the generated C table corrupted by one, one MAXACC bit flipped
on the bus. Errors: a label or feature the stream element or the classes do not allow
(BAD_SAMPLE before the engine starts; the limits themselves train equal to golden), a
label past a table claiming more classes (HW_ERROR BAD_LABEL), an exponent leaving its range
(EXP_RANGE, nothing written), a step that never finishes (TIMEOUT), a register header of
another engine (MISMATCH). The first build of the model takes ~1 min, then it is cached.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

from ttforge.errors import ConfigError, OutputError
from ttforge.firmware.train_c_driver import (build_train_axil, exponent_tables, export_train_driver,
                                             link_train_c_driver, state_with_exponents, train_driver_sources,
                                             train_program_c)
from ttforge.hw.trainer import model as interp
from ttforge.hw.tools import ToolchainMissing
from ttforge.hw.trainer.engine import op_cycles
from ttforge.hw.trainer.program import (Op, TrainEngineConfig, compile_training, fit_engine, next_exponents,
                                        state_from_memories)
from ttforge.hw.trainer.regmap import TRAIN_ERROR_TEXT, TrainRegisterMap
from ttforge.ir.random import train_case
from ttforge.ir.train import train_step, train_step_stats
from ttforge.ir.train_state import dumps_state
from ttforge.sim.native import write_vectors

STRICT = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic")
PICKY = ("-Wconversion", "-Wsign-conversion", "-Wshadow", "-Wstrict-prototypes", "-Wmissing-prototypes",
         "-Wcast-qual")
BATCH = 4


def _case(seed=0, steps=12):
    state, x, y, rng = train_case(seed, batch=BATCH, n_layers=2, d=2, rank=2, n_in=8, hidden=6, n_out=3)
    hi = (1 << (state.config.act_bits - 1)) - 1
    batches = [(x, y)] + [(rng.integers(0, hi + 1, size=(BATCH, state.in_features)),
                           rng.integers(0, state.n_classes, size=BATCH)) for _ in range(steps - 1)]
    return state, batches


def _golden(state, batches):
    for x, y in batches:
        state = train_step(state, x, y)
    return state


def _maxacc(program, x, y) -> np.ndarray:
    """MAXACC of every operation of one step, from the word-level interpreter."""
    mem = interp.load_program(program)
    interp.load_batch(mem, x, y)
    interp.run_step(mem, program)
    return mem.maxacc


# ------------------------------------------------------------------ the tables (pure Python)
def _regress_cases():
    from ttforge.sim.train_regress import family_config, train_regress_case

    for seed in (3, 11, 20, 28, 4):     # families 3, 1, 2, 0, 4 (every width set and lane count)
        case = train_regress_case(seed, 52)
        yield case.state, list(case.batches), family_config(case.family)


def _walk(state, batches, config, tables):
    """Apply the tables step by step next to compile_training(next_exponents(...));
    returns the first (step, what) that differs, or None."""
    prog0 = compile_training(state, len(batches[0][1]), config)
    values = tables.init
    for k, (x, y) in enumerate(batches):
        prog = compile_training(state, len(y), config)
        mx = _maxacc(prog, x, y)
        nxt = next_exponents(state, prog, mx)
        values = tables.next_values(values, mx)
        assert tables.violation(values) is None
        if [_exp(nxt, v) for v in tables.variables] != list(values):
            return k, "exponents"
        want = compile_training(nxt, len(y), config).words
        if tables.words(prog0.words, values) != list(want):
            return k, "words"
        state = train_step(state, x, y)
        # the golden trainer's delayed scaling is the same rule
        assert [L.step_exps for L in state.layers] == [L.step_exps for L in nxt.layers]
        assert [L.grad_exps for L in state.layers] == [L.grad_exps for L in nxt.layers]
    return None


def test_tables_reproduce_compile_training_over_many_steps():
    n = 0
    for state, batches, config in _regress_cases():
        prog = compile_training(state, len(batches[0][1]), config)
        tables = exponent_tables(state, prog)
        assert tables.fields and tables.variables
        assert _walk(state, batches, config, tables) is None
        n += len(batches)
    assert n >= 250


def test_sibling_a_table_constant_off_by_one_is_caught():
    from dataclasses import replace

    state, batches, config = next(_regress_cases())
    tables = exponent_tables(state, compile_training(state, len(batches[0][1]), config))
    f = tables.fields[len(tables.fields) // 2]
    bad = replace(tables, fields=tuple(replace(g, const=g.const + 1) if g is f else g for g in tables.fields))
    assert _walk(state, batches[:3], config, bad) == (0, "words")
    v = tables.variables[-1]
    bad = replace(tables, variables=tuple(replace(u, const=u.const + 1) if u is v else u
                                          for u in tables.variables))
    assert _walk(state, batches[:3], config, bad) is not None


def test_sibling_a_flipped_maxacc_bit_changes_the_exponents():
    state, batches, config = next(_regress_cases())
    prog = compile_training(state, len(batches[0][1]), config)
    tables = exponent_tables(state, prog)
    j = tables.variables[0].op
    mx = _maxacc(prog, *batches[0])
    flipped = mx.copy()
    flipped[j] ^= 1 << 30
    assert tables.next_values(tables.init, flipped) != tables.next_values(tables.init, mx)


def test_range_checks_are_those_of_compile_training():
    """Random exponents, many near or past a field's edge: the tables refuse a set of
    exponents exactly when compile_training refuses the state."""
    state, _ = _case()
    config = fit_engine(state, BATCH)
    prog = compile_training(state, BATCH, config)
    tables = exponent_tables(state, prog)
    rng = np.random.default_rng(5)
    seen = {True: 0, False: 0}
    for scale in (4, 40, 150, 400, 1500):
        for _ in range(40):
            values = [v + int(rng.integers(-scale, scale + 1)) for v in tables.init]
            try:
                # a state whose exponents leave +-MAX_EXP is refused as it is made (check_state)
                st = state_with_exponents(state, tables, values)
                words = compile_training(st, BATCH, config).words
                ok = True
            except (ConfigError, OverflowError):
                # OverflowError: export_network's bias alignment by a shift >= 64 (ir/train.py)
                # fails before encode_op would name the BIAS_SHIFT field; refused either way
                ok = False
            assert (tables.violation(values) is None) == ok, (values, tables.violation(values))
            if ok:
                assert tables.words(prog.words, values) == list(words)
            seen[ok] += 1
    assert seen[True] > 20 and seen[False] > 20


def test_program_c_text_is_deterministic_and_checks_the_header():
    state, _ = _case()
    config = fit_engine(state, BATCH)
    text = train_program_c(state, BATCH, config, symbol="prog")
    assert text == train_program_c(state, BATCH, config, symbol="prog")
    assert f"#if !defined(TTFORGE_TRAIN_CFG_LANES) || TTFORGE_TRAIN_CFG_LANES != {config.lanes}u" in text
    assert "const ttftd_program prog = {" in text
    with pytest.raises(ConfigError, match="C identifier"):
        train_program_c(state, BATCH, config, symbol="1bad")
    with pytest.raises(ConfigError, match="TrainEngineConfig"):
        train_program_c(state, BATCH, object())
    with pytest.raises(ConfigError, match="TrainState"):
        train_program_c(object(), BATCH, config)


def test_export_train_driver(tmp_path):
    state, _ = _case()
    config = fit_engine(state, BATCH)
    names = sorted(p.name for p in export_train_driver(config, tmp_path, state, BATCH, sim=True))
    assert names == sorted(["ttforge_train_regs.h", "ttforge_train_program.c", "ttforge_train_driver.h",
                            "ttforge_train_driver.c", "ttforge_train_sim_hooks.h", "ttforge_train_sim_hooks.c",
                            "ttforge_train_sim_test.c"])
    assert not list(tmp_path.glob(".*"))
    with pytest.raises(ConfigError, match="both state and batch"):
        export_train_driver(config, tmp_path / "x", state)
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="is not a directory"):
        export_train_driver(config, tmp_path / "f", state, BATCH)
    assert (tmp_path / "f").read_text() == "x"


MMIO_MAIN = """\
#include "ttforge_train_driver.h"
extern const ttftd_program ttforge_train_program;
static int dma_send(void *ctx, const int32_t *x, uint32_t n) { (void)ctx; (void)x; (void)n; return 0; }
int main(void) {
    static int32_t samples[4 * 16];
    ttftd_dev dev;
    ttftd_hooks hooks;
    ttftd_counters c;
    ttftd_mmio_hooks(&hooks, (volatile uint32_t *)0x43C00000u);
    hooks.stream_send = dma_send;
    if (ttftd_init(&dev, &hooks) != TTFTD_OK) return 1;
    if (ttftd_load_program(&dev, &ttforge_train_program) != TTFTD_OK) return 2;
    if (ttftd_step(&dev, samples, 4u) != TTFTD_OK) return 3;
    return ttftd_read_counters(&dev, &c) == TTFTD_OK ? 0 : 4;
}
"""


@pytest.mark.parametrize("cc", ["gcc", "clang"])
def test_mmio_only_build_compiles(tmp_path, cc):
    if shutil.which(cc) is None:
        pytest.skip(f"{cc} is not installed")
    state, _ = _case()
    export_train_driver(fit_engine(state, BATCH), tmp_path, state, BATCH)
    (tmp_path / "main.c").write_text(MMIO_MAIN)
    for src in ("ttforge_train_driver.c", "ttforge_train_program.c", "main.c"):
        proc = subprocess.run([cc, *STRICT, *PICKY, "-O2", "-ffreestanding", "-c", f"-I{tmp_path}",
                               str(tmp_path / src), "-o", str(tmp_path / (src + ".o"))],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
    # and as C++ (the header's extern "C", the program's extern definition)
    for src in ("ttforge_train_driver.c", "ttforge_train_program.c", "main.c"):
        proc = subprocess.run(["g++", "-Wall", "-Wextra", "-Werror", "-fsyntax-only", "-x", "c++", f"-I{tmp_path}",
                               str(tmp_path / src)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr


#: The fake bus's register reads: a core that identifies as the header says, never DONE
#: (put into the C programs below in place of ``{fake_core_reads}``).
FAKE_CORE_READS = """\
    switch (a) { /* a core that identifies as the header says, never DONE */
    case TTFORGE_TRAIN_ID_ADDR: *d = TTFORGE_TRAIN_MAGIC; break;
    case TTFORGE_TRAIN_VERSION_ADDR: *d = TTFORGE_TRAIN_VERSION_RESET; break;
    case TTFORGE_TRAIN_CFG_LANES_ADDR: *d = TTFORGE_TRAIN_CFG_LANES_RESET; break;
    case TTFORGE_TRAIN_CFG_WIDTHS_ADDR: *d = TTFORGE_TRAIN_CFG_WIDTHS_RESET; break;
    case TTFORGE_TRAIN_CFG_WIDTHS2_ADDR: *d = TTFORGE_TRAIN_CFG_WIDTHS2_RESET; break;
    case TTFORGE_TRAIN_CFG_ACT_DEPTH_ADDR: *d = TTFORGE_TRAIN_CFG_ACT_DEPTH_RESET; break;
    case TTFORGE_TRAIN_CFG_GRAD_DEPTH_ADDR: *d = TTFORGE_TRAIN_CFG_GRAD_DEPTH_RESET; break;
    case TTFORGE_TRAIN_CFG_CORE_DEPTH_ADDR: *d = TTFORGE_TRAIN_CFG_CORE_DEPTH_RESET; break;
    case TTFORGE_TRAIN_CFG_BIAS_DEPTH_ADDR: *d = TTFORGE_TRAIN_CFG_BIAS_DEPTH_RESET; break;
    case TTFORGE_TRAIN_CFG_DESC_DEPTH_ADDR: *d = TTFORGE_TRAIN_CFG_DESC_DEPTH_RESET; break;
    case TTFORGE_TRAIN_CFG_MAX_BATCH_ADDR: *d = TTFORGE_TRAIN_CFG_MAX_BATCH_RESET; break;
    case TTFORGE_TRAIN_CFG_MAX_CLASSES_ADDR: *d = TTFORGE_TRAIN_CFG_MAX_CLASSES_RESET; break;
    default: *d = 0;
    }
"""


FAKE_BUS_MAIN = """\
/* the driver's argument and bus error paths against a fake bus (no simulator) */
#include <stdio.h>
#include "ttforge_train_driver.h"
extern const ttftd_program ttforge_train_program;

static int fail_write_at = -1, fail_read_code = 0;
static uint32_t fail_addr = 0xFFFFFFFFu;

static int rd(void *ctx, uint32_t a, uint32_t *d) {
    (void)ctx;
    if (a == fail_addr) return fail_read_code;
{fake_core_reads}    return 0;
}
static int wr(void *ctx, uint32_t a, uint32_t d) {
    (void)ctx; (void)d;
    return (fail_write_at >= 0 && a == (uint32_t)fail_write_at) ? 2 : 0;
}
static int send(void *ctx, const int32_t *e, uint32_t n) { (void)ctx; (void)e; (void)n; return 0; }
static int send_fails(void *ctx, const int32_t *e, uint32_t n) { (void)ctx; (void)e; (void)n; return 1; }

int main(void) {
    static int32_t samples[4096];
    const ttftd_program *p = &ttforge_train_program;
    ttftd_dev dev;
    ttftd_hooks h = {0, rd, wr, 0, 0};
    uint64_t m;
    int r;
    printf("init %s\\n", ttftd_result_name(ttftd_init(&dev, &h)));
    printf("no_program %s\\n", ttftd_result_name(ttftd_step(&dev, samples, p->batch)));
    printf("null_program %s\\n", ttftd_result_name(ttftd_load_program(&dev, 0)));
    printf("load %s\\n", ttftd_result_name(ttftd_load_program(&dev, p)));
    printf("no_stream %s\\n", ttftd_result_name(ttftd_run_batch(&dev, samples, p->batch)));
    dev.hooks.stream_send = send_fails;
    printf("stream_error %s\\n", ttftd_result_name(ttftd_run_batch(&dev, samples, p->batch)));
    dev.hooks.stream_send = send;
    printf("wrong_batch %s\\n", ttftd_result_name(ttftd_run_batch(&dev, samples, p->batch + 1u)));
    printf("null_samples %s\\n", ttftd_result_name(ttftd_run_batch(&dev, 0, p->batch)));
    dev.timeout_polls = 5;
    printf("never_done %s\\n", ttftd_result_name(ttftd_run_batch(&dev, samples, p->batch)));
    printf("maxacc_beyond %s\\n", ttftd_result_name(ttftd_read_maxacc(&dev, TTFORGE_TRAIN_MAXACC_DEPTH, &m)));
    printf("state_beyond %s\\n", ttftd_result_name(ttftd_read_state(&dev, samples, TTFORGE_TRAIN_CMEM_DEPTH + 1u,
                                                                     0, 0, 0)));
    fail_write_at = (int)TTFORGE_TRAIN_CMEM_BASE;
    r = ttftd_load_program(&dev, p);
    printf("bus_error %s %u\\n", ttftd_result_name((ttftd_result)r), (unsigned)dev.bus_addr);
    fail_write_at = -1;
    fail_addr = TTFORGE_TRAIN_STATUS_ADDR;
    fail_read_code = -1;
    r = ttftd_run_batch(&dev, samples, p->batch);
    printf("bus_timeout %s %u\\n", ttftd_result_name((ttftd_result)r), (unsigned)dev.bus_addr);
    fail_addr = TTFORGE_TRAIN_CFG_MAX_CLASSES_ADDR;
    fail_read_code = 2;
    printf("identify_slverr %s\\n", ttftd_result_name(ttftd_identify(&dev)));
    for (r = 0; r <= 10; ++r) printf("name_%d %s\\n", r, ttftd_result_name((ttftd_result)r));
    return 0;
}
"""


def test_error_paths_against_a_fake_bus(tmp_path):
    """Every result code the driver gives without a simulator: arguments, a missing or
    failing stream hook, a step that never finishes, SLVERR and a bus timeout (with the
    address), out-of-range reads; never a hang."""
    state, _ = _case()
    config = fit_engine(state, BATCH)
    export_train_driver(config, tmp_path, state, BATCH)
    (tmp_path / "main.c").write_text(FAKE_BUS_MAIN.replace("{fake_core_reads}", FAKE_CORE_READS))
    exe = tmp_path / "fake"
    proc = subprocess.run(["cc", *STRICT, f"-I{tmp_path}", *(str(tmp_path / f) for f in (
        "ttforge_train_driver.c", "ttforge_train_program.c", "main.c")), "-o", str(exe)],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60).stdout
    rep = {k: v for k, *v in (line.split() for line in out.splitlines())}
    rm = TrainRegisterMap(config)
    assert rep["no_program"] == ["BAD_ARG"] and rep["init"] == ["OK"] and rep["null_program"] == ["BAD_ARG"]
    assert rep["load"] == ["OK"] and rep["no_stream"] == ["NO_STREAM"] and rep["stream_error"] == ["STREAM_ERROR"]
    assert rep["wrong_batch"] == rep["null_samples"] == ["BAD_ARG"] and rep["never_done"] == ["TIMEOUT"]
    assert rep["maxacc_beyond"] == rep["state_beyond"] == ["BAD_ARG"]
    assert rep["bus_error"] == ["BUS_ERROR", str(rm.window("CMEM").base)]
    assert rep["bus_timeout"] == ["TIMEOUT", str(rm.addr("STATUS"))]
    assert rep["identify_slverr"] == ["BUS_ERROR"]
    assert [rep[f"name_{k}"][0] for k in range(11)] == [
        "OK", "TIMEOUT", "BUS_ERROR", "HW_ERROR", "MISMATCH", "BAD_ARG", "NO_STREAM", "STREAM_ERROR",
        "EXP_RANGE", "BAD_SAMPLE", "?"]


SAMPLE_MAIN = """\
/* ttftd_run_batch's sample check against a recording fake bus: argv SAMPLE ELEMENT VALUE
 * sets one element of a batch whose features all sit at an end of the act_bits range and
 * whose labels are 0 and classes - 1 (SAMPLE -1: none) */
#include <stdio.h>
#include <stdlib.h>
#include "ttforge_train_driver.h"
extern const ttftd_program ttforge_train_program;

static unsigned writes, starts, sends;

static int rd(void *ctx, uint32_t a, uint32_t *d) {
    (void)ctx;
{fake_core_reads}    return 0;
}
static int wr(void *ctx, uint32_t a, uint32_t d) {
    (void)ctx;
    ++writes;
    if (a == TTFORGE_TRAIN_CMD_ADDR && (d & TTFORGE_TRAIN_CMD_START_MASK)) ++starts;
    return 0;
}
static int send(void *ctx, const int32_t *e, uint32_t n) { (void)ctx; (void)e; (void)n; ++sends; return 0; }

int main(int argc, char **argv) {
    static int32_t samples[4096];
    const ttftd_program *p = &ttforge_train_program;
    ttftd_program before;
    ttftd_dev dev;
    ttftd_hooks h = {0, rd, wr, send, 0};
    const long hi = (1L << (p->act_bits - 1u)) - 1L, lo = -hi - 1L;
    uint32_t b, e, n = p->in_count + 1u;
    ttftd_result r;
    if (argc != 4) return 2;
    if (ttftd_init(&dev, &h) != TTFTD_OK || ttftd_load_program(&dev, p) != TTFTD_OK) return 3;
    for (b = 0; b < p->batch; ++b)
        for (e = 0; e < n; ++e)
            samples[b * n + e] = (int32_t)(e < p->in_count ? ((b + e) % 2u ? hi : lo)
                                                            : (b % 2u ? (long)p->classes - 1L : 0L));
    if (atol(argv[1]) >= 0) samples[(size_t)atol(argv[1]) * n + (size_t)atol(argv[2])] = (int32_t)atol(argv[3]);
    dev.timeout_polls = 3;
    writes = starts = sends = 0;
    r = ttftd_run_batch(&dev, samples, p->batch);
    printf("result %s\\nwrites %u\\nstarts %u\\nsends %u\\n", ttftd_result_name(r), writes, starts, sends);
    printf("sample %u %u %ld %ld %ld\\n", (unsigned)dev.sample_index, (unsigned)dev.sample_elem,
           (long)dev.sample_value, (long)dev.sample_lo, (long)dev.sample_hi);
    printf("limits %u %u\\n", (unsigned)p->act_bits, (unsigned)p->classes);
    before = *p; /* a table generated before it carried the limits: both 0 */
    before.act_bits = 0;
    before.classes = 0;
    writes = 0;
    printf("old_table %s %u\\n", ttftd_result_name(ttftd_load_program(&dev, &before)), writes);
    return 0;
}
"""


@pytest.fixture(scope="module")
def sample_exe(tmp_path_factory):
    state, _ = _case()
    d = tmp_path_factory.mktemp("train_cdrv_samples")
    export_train_driver(fit_engine(state, BATCH), d, state, BATCH)
    (d / "main.c").write_text(SAMPLE_MAIN.replace("{fake_core_reads}", FAKE_CORE_READS))
    proc = subprocess.run(["cc", *STRICT, f"-I{d}", *(str(d / f) for f in (
        "ttforge_train_driver.c", "ttforge_train_program.c", "main.c")), "-o", str(d / "samples")],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return state, d / "samples"


def _bad_cases(state):
    """(id, sample, element, value, lo, hi): a value one past what the stream element or
    the classes allow, for the C driver to refuse before the engine starts."""
    a, n, c = state.config.act_bits, state.in_features, state.n_classes
    hi = (1 << (a - 1)) - 1
    return [("label-2^(act_bits-1)", 2, n, hi + 1, 0, c - 1),    # the stream would carry it as -2^(a-1)
            ("label-classes", 1, n, c, 0, c - 1),                 # in the element, but no class
            ("label-negative", 3, n, -1, 0, c - 1),
            ("feature-above", 3, n - 1, hi + 1, -hi - 1, hi),     # would train as -2^(a-1)
            ("feature-below", 0, 0, -hi - 2, -hi - 1, hi)]        # would train as 2^(a-1) - 1


@pytest.mark.parametrize("k", range(5))
def test_bad_sample_is_refused_before_start_and_stream(sample_exe, k):
    """A label or feature the stream element or the classes do not allow is BAD_SAMPLE
    with its sample, element, value and range, before any bus write: no CMD.START,
    nothing streamed (the old driver started and streamed the low act_bits)."""
    state, exe = sample_exe
    _, b, e, v, lo, hi = _bad_cases(state)[k]
    rep = {k: w for k, *w in (line.split() for line in subprocess.run(
        [str(exe), str(b), str(e), str(v)], capture_output=True, text=True, timeout=60, check=True).stdout.splitlines())}
    assert rep["result"] == ["BAD_SAMPLE"]
    assert rep["writes"] == rep["starts"] == rep["sends"] == ["0"]
    assert rep["sample"] == [str(b), str(e), str(v), str(lo), str(hi)]


def test_samples_at_the_limits_start_and_stream(sample_exe):
    """The sibling: features at both ends of the act_bits range, labels 0 and classes - 1
    pass the check (START written, every sample streamed; the fake core never finishes)."""
    state, exe = sample_exe
    rep = {k: w for k, *w in (line.split() for line in subprocess.run(
        [str(exe), "-1", "0", "0"], capture_output=True, text=True, timeout=60, check=True).stdout.splitlines())}
    assert rep["result"] == ["TIMEOUT"] and rep["starts"] == ["1"] and rep["sends"] == [str(BATCH)]
    assert rep["limits"] == [str(state.config.act_bits), str(state.n_classes)]
    # a program table without the limits (generated before them: both 0) is refused, nothing written
    assert rep["old_table"] == ["BAD_ARG", "0"]


EXPS_MAIN = """\
/* ttftd_load_program with given exponents, and ttftd_update_exponents failing part-way
 * through its descriptor rewrites, against a fake core that keeps DMEM and serves MAXACC.
 *   load V0 V1 ...:   prog->exps = V, load; prints the result, the writes, range_*, DMEM
 *   fail retry|run:   load, update with every MAXACC 2^20 whose 2nd DMEM write answers
 *                     SLVERR, then update again with MAXACC 0 (retry) or run a batch (run);
 *                     prints the results, the exponents and DMEM (at START for run) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ttforge_train_driver.h"
extern const ttftd_program ttforge_train_program;

static uint64_t maxacc[TTFORGE_TRAIN_MAXACC_DEPTH];
static uint32_t dmem[TTFORGE_TRAIN_DMEM_DEPTH], at_start[TTFORGE_TRAIN_DMEM_DEPTH];
static unsigned writes, dmem_writes;
static int fail_at = -1;

static int rd(void *ctx, uint32_t a, uint32_t *d) {
    (void)ctx;
    if (a >= TTFORGE_TRAIN_MAXACC_BASE && a < TTFORGE_TRAIN_MAXACC_BASE + 4u * TTFORGE_TRAIN_MAXACC_DEPTH) {
        uint32_t w = (a - TTFORGE_TRAIN_MAXACC_BASE) / 4u;
        *d = (uint32_t)(maxacc[w / 2u] >> (32u * (w % 2u)));
        return 0;
    }
    if (a == TTFORGE_TRAIN_STATUS_ADDR) { *d = TTFORGE_TRAIN_STATUS_DONE_MASK; return 0; }
{fake_core_reads}    return 0;
}
static int wr(void *ctx, uint32_t a, uint32_t d) {
    (void)ctx;
    ++writes;
    if (a >= TTFORGE_TRAIN_DMEM_BASE && a < TTFORGE_TRAIN_DMEM_BASE + 4u * TTFORGE_TRAIN_DMEM_DEPTH) {
        if ((int)dmem_writes++ == fail_at) return 2;
        dmem[(a - TTFORGE_TRAIN_DMEM_BASE) / 4u] = d;
    }
    if (a == TTFORGE_TRAIN_CMD_ADDR && (d & TTFORGE_TRAIN_CMD_START_MASK)) memcpy(at_start, dmem, sizeof dmem);
    return 0;
}
static int send(void *ctx, const int32_t *e, uint32_t n) { (void)ctx; (void)e; (void)n; return 0; }

static void show(const char *what, const ttftd_program *p, const uint32_t *words) {
    uint32_t i;
    printf("%s", what);
    for (i = 0; i < p->dmem_words; ++i) printf(" %lu", (unsigned long)words[i]);
    printf("\\nexps");
    for (i = 0; i < p->n_vars; ++i) printf(" %ld", (long)p->exps[i]);
    printf("\\n");
}

int main(int argc, char **argv) {
    static int32_t samples[4096];
    const ttftd_program *p = &ttforge_train_program;
    ttftd_dev dev;
    ttftd_hooks h = {0, rd, wr, send, 0};
    ttftd_result r;
    uint32_t j;
    if (argc < 2 || ttftd_init(&dev, &h) != TTFTD_OK) return 2;
    if (!strcmp(argv[1], "load")) {
        if ((uint32_t)argc != 2u + p->n_vars) return 2;
        for (j = 0; j < p->n_vars; ++j) p->exps[j] = (int32_t)atol(argv[2 + j]);
        writes = 0;
        r = ttftd_load_program(&dev, p);
        printf("result %s\\nwrites %u\\nrange %ld %lld\\n", ttftd_result_name(r), writes, (long)dev.range_var,
               (long long)dev.range_value);
        show("dmem", p, dmem);
        return 0;
    }
    if (argc != 3 || ttftd_load_program(&dev, p) != TTFTD_OK) return 3;
    for (j = 0; j < TTFORGE_TRAIN_MAXACC_DEPTH; ++j) maxacc[j] = (uint64_t)1 << 20;
    dmem_writes = 0;
    fail_at = 1;
    r = ttftd_update_exponents(&dev);
    printf("first %s\\n", ttftd_result_name(r));
    fail_at = -1;
    if (!strcmp(argv[2], "retry")) {
        for (j = 0; j < TTFORGE_TRAIN_MAXACC_DEPTH; ++j) maxacc[j] = 0;
        r = ttftd_update_exponents(&dev);
        printf("second %s\\n", ttftd_result_name(r));
        show("dmem", p, dmem);
    } else {
        r = ttftd_run_batch(&dev, samples, p->batch);
        printf("second %s\\n", ttftd_result_name(r));
        show("dmem", p, at_start);
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def exps_exe(tmp_path_factory):
    state, _ = _case()
    config = fit_engine(state, BATCH)
    d = tmp_path_factory.mktemp("train_cdrv_exps")
    export_train_driver(config, d, state, BATCH)
    (d / "main.c").write_text(EXPS_MAIN.replace("{fake_core_reads}", FAKE_CORE_READS))
    proc = subprocess.run(["cc", *STRICT, f"-I{d}", *(str(d / f) for f in (
        "ttforge_train_driver.c", "ttforge_train_program.c", "main.c")), "-o", str(d / "exps")],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    prog = compile_training(state, BATCH, config)
    return exponent_tables(state, prog), list(prog.words), d / "exps"


def _run_exps(exe, *args) -> dict[str, list[str]]:
    out = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=60, check=True).stdout
    return {k: v for k, *v in (line.split() for line in out.splitlines())}


def _load_cases(tables):
    """Exponent sets around every variable's and field's limits: each variable moved by a
    few steps and by 256 (which an 8-bit field would wrap back to its own value)."""
    init = list(tables.init)
    for j, v in enumerate(tables.variables):
        for value in (v.lo - 1, v.lo, v.hi, v.hi + 1, init[j] + 256, init[j] - 256, init[j] + 40, init[j] - 40):
            yield [*init[:j], value, *init[j + 1:]]


def test_load_program_refuses_the_exponents_compile_training_refuses(exps_exe):
    """ttftd_load_program with prog->exps (as a resumed checkpoint sets them) is EXP_RANGE
    with nothing written exactly when the Python tables (so compile_training) refuse them;
    accepted ones load the words compile_training gives. The old driver wrote each field
    masked to its width: exps[0] + 256 loaded the DMEM of exps[0]."""
    tables, words, exe = exps_exe
    refused = 0
    for values in _load_cases(tables):
        rep = _run_exps(exe, "load", *values)
        if tables.violation(values) is None:
            assert rep["result"] == ["OK"], values
            assert [int(w) for w in rep["dmem"]] == tables.words(words, values), values
        else:
            refused += 1
            assert rep["result"] == ["EXP_RANGE"] and rep["writes"] == ["0"], (values, rep)
    assert refused > len(tables.variables)


@pytest.mark.parametrize("then", ["retry", "run"])
def test_update_failing_part_way_is_repaired(exps_exe, then):
    """A SLVERR on the second descriptor rewrite of an update leaves the DMEM half
    rewritten and the exponents the old: updating again rewrites every exponent-dependent
    word (the old driver compared against the old exponents' words and left the first one
    stale for good), and a batch run instead first restores them from the old exponents."""
    tables, words, exe = exps_exe
    rep = _run_exps(exe, "fail", then)
    assert rep["first"] == ["BUS_ERROR"] and rep["second"] == ["OK"]
    values = [int(v) for v in rep["exps"]]
    if then == "run":
        assert values == list(tables.init)
    else:
        assert values != list(tables.init)
    assert [int(w) for w in rep["dmem"]] == tables.words(words, values)


# ------------------------------------------------------------------ on the Verilated TrainAccel
@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    state, batches = _case()
    config = fit_engine(state, BATCH)
    try:
        build = build_train_axil(config)
    except ToolchainMissing as e:      # a machine without the toolchain skips, with the reason
        pytest.skip(str(e))
    d = tmp_path_factory.mktemp("train_cdrv")
    return state, batches, config, build, d


def _link(build, d, text, name="exe", cflags=()):
    src = d / f"{name}_program.c"
    src.write_text(text)
    srcs = [p for p in train_driver_sources(sim=True) if p.suffix == ".c"] + [src]
    return link_train_c_driver(build, srcs, d / name, cflags=(*STRICT, *cflags))


def _exe(setup, name="exe", program_text=None, cflags=()):
    state, _, config, build, d = setup
    text = program_text if program_text is not None else train_program_c(state, BATCH, config)
    return _link(build, d, text, name, cflags)


@pytest.fixture(scope="module")
def exe(setup):
    return _exe(setup)


def run(exe, batches, tmp_path, *args):
    rows = np.concatenate([np.concatenate([x, np.asarray(y)[:, None]], axis=1) for x, y in batches])
    write_vectors(tmp_path / "samples.bin", rows)
    proc = subprocess.run([str(exe), str(tmp_path / "samples.bin"), *map(str, args)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rep = {}
    for line in proc.stdout.splitlines():
        k, *v = line.split()
        rep[k] = " ".join(v) if k in ("range_label", "bad_sample") else v[0] if len(v) == 1 and k not in ("cmem", "bmem", "exps") \
            else v
    return rep


def _state_of(setup, rep, steps, batch=BATCH):
    state, config = setup[0], setup[2]
    prog = compile_training(state, batch, config)
    tables = exponent_tables(state, prog)
    got = state_from_memories(state, prog, np.array(rep["cmem"], dtype=np.int64),
                              np.array(rep["bmem"], dtype=np.int64), int(rep["rng"]), steps=steps)
    return state_with_exponents(got, tables, [int(v) for v in rep["exps"]])


@pytest.mark.parametrize("args", [(), ("--seed", 3, "--gaps", 0.4), ("--reload-at", 4)],
                         ids=["plain", "stream-gaps", "checkpoint-resume"])
def test_c_driver_trains_equal_to_golden(setup, exe, tmp_path, args):
    state, batches = setup[0], setup[1]
    rep = run(exe, batches, tmp_path, *args)
    assert rep["result"] == "OK" and int(rep["steps"]) == len(batches)
    got = _state_of(setup, rep, len(batches))
    want = _golden(state, batches)
    assert dumps_state(got) == dumps_state(want)          # byte for byte, the state file
    # STEPS counts since the last reset (the resume resets the core after step 4)
    assert int(rep["hw_steps"]) == len(batches) - (5 if "--reload-at" in args else 0)
    assert int(rep["rewritten"]) > 0                       # the exponents did move
    if not args:
        # the engine's counters: MAC-lane cycles and changed updates exactly as the program
        # and the golden step say; CYCLES the cycle model exactly (op_cycles + one cycle per
        # sample element: the shim offers every beat as soon as the engine takes it)
        config = setup[2]
        prog = compile_training(state, BATCH, config)
        macs = sum(int(np.prod(op.N)) for op in prog.ops if op.OP in (Op.CONTRACT, Op.WGRAD))
        assert int(rep["mac_cycles"]) == len(batches) * macs * config.lanes
        s, changed = state, 0
        for x, y in batches:
            s, stats = train_step_stats(s, x, y)
            changed += stats.changed
        assert int(rep["changed"]) == changed
        model = sum(op_cycles(op, config, prog.slots) for op in prog.ops) + BATCH * (state.in_features + 1)
        assert int(rep["cycles"]) == len(batches) * model
    # the control of the siblings below: the golden state itself, one word off, differs
    bad = want.layers[0].masters[0].copy()
    bad.flat[0] ^= 1
    assert not np.array_equal(bad, got.layers[0].masters[0])


def test_sibling_corrupted_c_table_fails(setup, tmp_path):
    state, batches, config, _, _ = setup
    text = train_program_c(state, BATCH, config)
    # the constant of the third exponent-dependent field, off by one
    rows = [m for m in re.finditer(r"\{(\d+)u, (\d+)u, (\d+)u, (-?\d+), (-?\d+), (-?\d+), ", text)]
    m = rows[2]
    bad = text[:m.start(6)] + str(int(m.group(6)) + 1) + text[m.end(6):]
    assert bad != text
    rep = run(_exe(setup, "bad_table", bad), batches, tmp_path)
    want = _golden(state, batches)
    assert rep["result"] != "OK" or dumps_state(_state_of(setup, rep, len(batches))) != dumps_state(want)


def test_sibling_flipped_maxacc_bit_fails(setup, exe, tmp_path):
    state, batches, config, _, _ = setup
    prog = compile_training(state, BATCH, config)
    tables = exponent_tables(state, prog)
    addr = TrainRegisterMap(config).window("MAXACC").base + 8 * tables.variables[0].op
    rep = run(exe, batches, tmp_path, "--flip", 2, addr, 31)       # bitlen(M) becomes 32
    want = _golden(state, batches)
    assert rep["result"] != "OK" or dumps_state(_state_of(setup, rep, len(batches))) != dumps_state(want)


def test_exponent_out_of_range_is_an_error_and_nothing_is_written(setup, exe, tmp_path):
    state, batches, config, _, _ = setup
    tables = exponent_tables(state, compile_training(state, BATCH, config))
    one = _golden(state, batches[:1])
    prog1 = compile_training(one, BATCH, config)
    mx = _maxacc(prog1, *batches[1])
    exps1 = [_exp(one, v) for v in tables.variables]

    def flipped(j):
        m = mx.copy()
        m[tables.variables[j].op] ^= 1 << 47
        return m

    # a variable whose MAXACC with bit 47 set pushes a field out of its range
    j = next(j for j in range(len(tables.variables))
             if tables.violation(tables.next_values(exps1, flipped(j))) is not None)
    with pytest.raises((ConfigError, OverflowError)):   # compile_training refuses it too
        compile_training(next_exponents(one, prog1, flipped(j)), BATCH, config)
    addr = TrainRegisterMap(config).window("MAXACC").base + 8 * tables.variables[j].op + 4
    rep = run(exe, batches, tmp_path, "--flip", 1, addr, 15)     # MAXACC bit 47 in step 1
    assert rep["result"] == "EXP_RANGE" and rep["steps"] == "1"
    # the first variable or field out of range, as the tables name it
    why = tables.violation(tables.next_values(exps1, flipped(j)))
    if int(rep["range_var"]) < 0:
        f = tables.fields[-1 - int(rep["range_var"])]
        assert rep["range_label"] == f"{f.label}: {f.name}" and why.startswith(f"{f.label}: {f.name}={rep['range_value']} ")
    else:
        v = tables.variables[int(rep["range_var"])]
        assert why.startswith(f"{v.kind}_exps[{v.layer}][{v.step}]={rep['range_value']} ")
    # nothing committed: the driver's exponents are those after step 0
    assert [int(v) for v in rep["exps"]] == exps1


def _exp(state, var):
    L = state.layers[var.layer]
    return (L.step_exps if var.kind == "step" else L.grad_exps)[var.step]


def test_bad_label_past_the_driver_is_hw_error_with_its_name(setup, tmp_path):
    """The engine's own check behind the driver's: a program table claiming one class more
    than the network has (the engine's CFG_MAX_CLASSES allows it) lets label n_classes
    through, and the engine stops with BAD_LABEL."""
    state, batches, config, _, _ = setup
    assert config.max_classes > state.n_classes
    text = train_program_c(state, BATCH, config)
    tail = f"    {state.config.act_bits}u, {state.n_classes}u\n}};"
    assert text.count(tail) == 1
    text = text.replace(tail, f"    {state.config.act_bits}u, {state.n_classes + 1}u\n}};")
    x, y = batches[1]
    y = np.array(y)
    y[2] = state.n_classes
    rep = run(_exe(setup, "more_classes", text), [batches[0], (x, y)], tmp_path)
    assert rep["result"] == "HW_ERROR" and rep["hw_name"] == "BAD_LABEL" and rep["steps"] == "1"
    assert int(rep["hw_code"]) == next(k for k, (n, _) in TRAIN_ERROR_TEXT.items() if n == "BAD_LABEL")


def _limit_batches(state, batches):
    """``batches`` with features at both ends of the signed act_bits range (samples 0 and
    1 entirely, the others one element in two) and labels 0 and classes - 1."""
    hi = (1 << (state.config.act_bits - 1)) - 1
    out = []
    for k, (x, y) in enumerate(batches):
        x, y = np.array(x), np.array(y)
        x[0], x[1] = -hi - 1, hi
        x[2:, k % 2::2] = np.where(np.arange(x.shape[1])[k % 2::2] % 4 < 2, -hi - 1, hi)
        y[0], y[1] = 0, state.n_classes - 1
        out.append((x, y))
    return out


def test_samples_at_the_limits_train_equal_to_golden(setup, exe, tmp_path):
    state, batches = setup[0], setup[1]
    lim = _limit_batches(state, batches[:6])
    rep = run(exe, lim, tmp_path)
    assert rep["result"] == "OK" and int(rep["steps"]) == len(lim)
    assert dumps_state(_state_of(setup, rep, len(lim))) == dumps_state(_golden(state, lim))


@pytest.mark.parametrize("k", range(5), ids=["label-2^(act_bits-1)", "label-classes", "label-negative",
                                              "feature-above", "feature-below"])
def test_bad_sample_on_the_engine_is_refused_and_the_state_kept(setup, exe, tmp_path, k):
    """Three steps at the limits, then a batch with one element one past them: BAD_SAMPLE in
    one line (sample, element, value, range), the engine never started on it (STEPS 3) and
    the state read back is the golden trainer's after the three steps, byte for byte."""
    state, batches = setup[0], setup[1]
    lim = _limit_batches(state, batches[:4])
    _, b, e, v, lo, hi = _bad_cases(state)[k]
    x, y = np.array(lim[3][0]), np.array(lim[3][1])
    if e == state.in_features:
        y[b] = v
    else:
        x[b, e] = v
    rep = run(exe, lim[:3] + [(x, y)], tmp_path)
    assert rep["result"] == "BAD_SAMPLE" and rep["steps"] == "3" and rep["hw_steps"] == "3"
    what = "a feature, signed act_bits" if e < state.in_features else "the label, a class"
    assert rep["bad_sample"] == f"sample {b} of step 3, element {e} ({what}): {v} is outside {lo}..{hi}"
    assert dumps_state(_state_of(setup, rep, 3)) == dumps_state(_golden(state, lim[:3]))


def test_error_names_are_the_register_maps(exe):
    proc = subprocess.run([str(exe), "--names"], capture_output=True, text=True, timeout=60)
    names = dict(line.split() for line in proc.stdout.splitlines())
    for code, (name, _) in TRAIN_ERROR_TEXT.items():
        assert names[f"hw_name_{code}"] == name
    assert all(names[f"hw_name_{k}"] == "?" for k in range(32) if k not in TRAIN_ERROR_TEXT)


def test_step_that_never_finishes_times_out(setup, exe, tmp_path):
    rep = run(exe, setup[1][:2], tmp_path, "--timeout-polls", 1)
    assert rep["result"] == "TIMEOUT" and rep["steps"] == "0"


def test_header_of_another_engine_is_mismatch(setup, tmp_path):
    state, batches, config, _, _ = setup
    other = TrainEngineConfig(**{**{k: getattr(config, k) for k in config.__dataclass_fields__},
                                 "max_classes": config.max_classes * 2})
    inc = tmp_path / "inc"
    inc.mkdir()
    (inc / "ttforge_train_regs.h").write_text(TrainRegisterMap(other).to_c_header())
    text = train_program_c(state, BATCH, other)
    rep = run(_exe(setup, "other", text, (f"-I{inc}",)), batches[:1], tmp_path)
    assert rep["result"] == "MISMATCH"
    assert int(rep["mismatch_addr"]) == TrainRegisterMap(config).addr("CFG_MAX_CLASSES")


@pytest.mark.slow
@pytest.mark.parametrize("seed", [12, 20, 4])   # nearest rounding L=2; L=8 6-bit; L=16
def test_c_driver_random_networks_50_steps(seed, tmp_path):
    """Random networks of ``ttforge regress --train`` (their widths and lanes; an engine
    fitted to each, one build each, ~1 min), 50 steps through the C driver."""
    from ttforge.sim.train_regress import FAMILIES, train_regress_case

    case = train_regress_case(seed, 50)
    config = fit_engine(case.state, case.batch, lanes=FAMILIES[case.family][0])
    build = build_train_axil(config)
    exe = _link(build, tmp_path, train_program_c(case.state, case.batch, config))
    rep = run(exe, case.batches, tmp_path, "--gaps", 0.2, "--seed", seed)
    assert rep["result"] == "OK" and int(rep["steps"]) == 50
    got = _state_of((case.state, None, config), rep, 50, case.batch)
    assert dumps_state(got) == dumps_state(_golden(case.state, case.batches))
