"""The C driver (``firmware/c/``, ``docs/integration.md``, "The C driver") on the Verilated model: a C99
test program (``ttforge_sim_test.c``) uses the driver through the shim's C ABI
(``sim/native/axil_shim.h``) to identify the core, apply a load image, run vectors one
``ttfd_run`` at a time (or several in flight: ``ttfd_submit``/``ttfd_collect``) and read
the counters; its outputs equal the integer golden executor exactly, its counters the
executor's counts and the cycle model. Siblings that must fail: a flipped core bit, a
stream that never accepts and a too-small poll budget (TIMEOUT, no hang), an unmapped
address (BUS_ERROR), a malformed descriptor (HW_ERROR with its code, then recovery), a register
header of another config (MISMATCH). The driver also compiles for an MMIO-only target.

The model is the shared L = 4 build of ``tests/sim/test_native.py`` (same config, so
the native build cache serves both; ~5 s when cached, 30-60 s to build once).
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from ttforge.errors import ConfigError
from ttforge.firmware.c_driver import driver_sources, export_driver, include_dirs, load_image_c
from ttforge.hw.config import AccelConfig
from ttforge.hw.cycles import program_cycles
from ttforge.hw.program import compile_program, load_image, load_image_to_bytes
from ttforge.hw.regmap import RegisterMap
from ttforge.ir.executor import execute, execute_traced
from ttforge.sim.native import build_native, link_c_driver, read_vectors, write_vectors

from tests.support.engine import random_inputs, random_net
# the networks and the one cached L = 4 build of tests/sim/test_native.py serve both
from tests.support.native import build, nets, qat_net, shared_config  # noqa: F401 (fixtures)

STRICT = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic")
PICKY = ("-Wconversion", "-Wsign-conversion", "-Wshadow", "-Wstrict-prototypes", "-Wmissing-prototypes",
         "-Wcast-qual")



def _link(build, out_dir, extra_sources=(), cflags=()):
    srcs = [p for p in driver_sources(sim=True) if p.suffix == ".c"] + list(extra_sources)
    return link_c_driver(build, srcs, out_dir / "ttforge_sim_test", cflags=(*STRICT, *cflags, *(f"-I{d}" for d in include_dirs())))


@pytest.fixture(scope="session")
def exe(build, tmp_path_factory):
    return _link(build, tmp_path_factory.mktemp("cdrv"))


def run(exe, image, x, tmp_path, *args, timeout=120):
    """Run the test program; returns (report dict, outputs)."""
    img = tmp_path / "image.bin"
    if isinstance(image, (bytes, bytearray)):
        img.write_bytes(bytes(image))
        image_arg = str(img)
    else:
        image_arg = image  # "-": the compiled-in image
    write_vectors(tmp_path / "in.bin", np.asarray(x))
    proc = subprocess.run([str(exe), image_arg, str(tmp_path / "in.bin"), str(tmp_path / "out.bin"),
                           *map(str, args)], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    rep = {}
    for line in proc.stdout.splitlines():
        k, v = line.split()
        rep[k] = v if not v.lstrip("-").isdigit() else int(v)
    return rep, read_vectors(tmp_path / "out.bin")


def _image(build, net):
    return load_image(compile_program(net, build.config), RegisterMap(build.config))


def _macs(net) -> int:
    return sum(st.A * st.K * st.Q * st.P for layer in net.layers for st in layer.schedule.steps)


@pytest.mark.parametrize("name,args", [
    ("random15", ()), ("random3", ("--seed", 3, "--gaps", 0.3, "--backpressure", 0.3)),
    ("coverage", ("--seed", 4, "--gaps", 0.2, "--backpressure", 0.4)), ("qat", ()),
    ("random37", ("--batch", 4)), ("coverage", ("--batch", 3, "--seed", 5, "--gaps", 0.3, "--backpressure", 0.3))])
def test_c_driver_equals_executor(build, exe, nets, tmp_path, name, args):
    net = nets[name]
    x = qat_net()[1][:100] if name == "qat" else random_inputs(net, 100, 5)
    golden, traces = execute_traced(net, x)
    rep, y = run(exe, load_image_to_bytes(_image(build, net), build.config), x, tmp_path, *args)
    assert rep["result"] == "OK" and rep["vectors"] == len(x)
    assert y.shape == golden.shape
    assert np.array_equal(y, golden)
    # the counters, read by ttfd_read_counters, equal the executor's counts
    assert rep["counter_vectors"] == len(x)
    assert rep["busy_lane_cycles"] == _macs(net) * len(x)
    assert rep["sat_events"] == sum(t.saturations for t in traces)
    # CYCLES: the cycle model per vector exactly, plus one per stall cycle (docs/hardware.md)
    prog = compile_program(net, build.config)
    model = program_cycles(prog.descriptors, build.config, prog.globals).total
    assert rep["cycles"] == model * len(x) + rep["in_stall"] + rep["out_stall"]
    if "--gaps" not in args:
        assert rep["in_stall"] == 0 and rep["out_stall"] == 0


def test_flipped_golden_bit_disagrees(build, exe, nets, tmp_path):
    net = nets["random37"]
    x = random_inputs(net, 8, 2)
    rep, y = run(exe, load_image_to_bytes(_image(build, net), build.config), x, tmp_path)
    golden = execute(net, x)
    assert np.array_equal(y, golden)
    golden[2, 0] ^= 1
    assert not np.array_equal(y, golden)


def test_flipped_core_bit_disagrees(build, exe, nets, tmp_path):
    net = nets["random15"]
    rm = RegisterMap(build.config)
    writes = _image(build, net)
    cm = rm.window("CMEM")
    i = next(k for k, (a, _) in enumerate(writes) if cm.base <= a < cm.base + cm.size_bytes)
    writes[i] = (writes[i][0], writes[i][1] ^ (1 << (build.config.core_bits - 2)))
    x = random_inputs(net, 24, 7)
    rep, y = run(exe, load_image_to_bytes(writes, build.config), x, tmp_path)
    assert rep["result"] == "OK" and len(y) == 24
    assert not np.array_equal(y, execute(net, x))


def test_generated_c_image(build, nets, tmp_path):
    """load_image_c: the image compiled into the program (ttfd_load of a C array)."""
    net = nets["coverage"]
    prog = compile_program(net, build.config)
    src = tmp_path / "ttforge_image.c"
    src.write_text(load_image_c(prog))
    exe2 = _link(build, tmp_path, [src], ("-DTTFD_BUILTIN_IMAGE",))
    x = random_inputs(net, 16, 9)
    rep, y = run(exe2, "-", x, tmp_path)
    assert rep["result"] == "OK"
    assert np.array_equal(y, execute(net, x))


def test_load_image_c_text(build, nets):
    prog = compile_program(nets["random15"], build.config)
    text = load_image_c(prog, symbol="img")
    assert text == load_image_c(prog, symbol="img")
    n = len(load_image(prog))
    assert f"const uint32_t img_count = {n}u;" in text and text.count("u, 0x") == n
    assert f"#if !defined(TTFORGE_CFG_LANES) || TTFORGE_CFG_LANES != {build.config.lanes}u" in text
    with pytest.raises(ConfigError, match="C identifier"):
        load_image_c(prog, symbol="1bad")
    with pytest.raises(ConfigError, match="Program"):
        load_image_c([(0, 0)])


@pytest.mark.parametrize("args", [("--backpressure", 1.0), ("--disable",), ("--timeout-polls", 1)],
                         ids=["output-never-accepted", "input-never-accepted", "small-timeout"])
def test_run_times_out_without_hanging(build, exe, nets, tmp_path, args):
    net = nets["random15"]
    rep, y = run(exe, load_image_to_bytes(_image(build, net), build.config), random_inputs(net, 3, 1), tmp_path,
                 "--timeout-polls", 200, *args, timeout=60)
    assert rep["result"] == "TIMEOUT" and rep["vectors"] == 0 and len(y) == 0


def test_unmapped_address_is_bus_error(build, exe, nets, tmp_path):
    rm = RegisterMap(build.config)
    hole = next(a for a in range(0, rm.region_bytes, 4) if rm.decode(a) is None)
    net = nets["random15"]
    writes = _image(build, net)
    writes.insert(3, (hole, 1))
    rep, y = run(exe, load_image_to_bytes(writes, build.config), random_inputs(net, 2, 1), tmp_path)
    assert rep["result"] == "BUS_ERROR" and rep["bus_addr"] == hole and len(y) == 0


def test_malformed_descriptor_is_hw_error_then_recovers(build, exe, nets, tmp_path):
    net = nets["random15"]
    rm = RegisterMap(build.config)
    good = _image(build, net)
    dmem = rm.window("DMEM").base
    bad = [(a, 0 if a == dmem + 4 else d) for a, d in good]  # step 0: N0 = 0
    (tmp_path / "good.bin").write_bytes(load_image_to_bytes(good, build.config))
    x = random_inputs(net, 4, 3)
    rep, y = run(exe, load_image_to_bytes(bad, build.config), x, tmp_path, "--recover", tmp_path / "good.bin")
    assert rep["result"] == "HW_ERROR"
    assert (rep["hw_code"], rep["hw_step"]) == (1, 0)  # TTFORGE_ERR_BOUND_ZERO at step 0
    assert rep["recover"] == "OK"  # soft reset, reload: the next inferences run normally
    assert np.array_equal(y, execute(net, x))


def test_header_of_another_config_is_mismatch(build, nets, tmp_path):
    other = AccelConfig(**{**build.config.to_dict(), "inter_bits": build.config.inter_bits + 1})
    inc = tmp_path / "inc"
    inc.mkdir()
    (inc / "ttforge_regs.h").write_text(RegisterMap(other).to_c_header())
    exe2 = _link(build, tmp_path, (), (f"-I{inc}",))  # found before the build's header
    rep, _ = run(exe2, load_image_to_bytes(_image(build, nets["random15"]), build.config),
                 random_inputs(nets["random15"], 1, 0), tmp_path)
    assert rep["result"] == "MISMATCH"
    rm = RegisterMap(build.config)
    assert rep["mismatch_addr"] == rm.addr("CFG_WIDTHS")
    assert rep["mismatch_got"] == rm["CFG_WIDTHS"].reset


MMIO_MAIN = """\
/* an MMIO-only target: the default hooks, stream hooks of a (stub) DMA */
#include "ttforge_driver.h"

static int dma_send(void *ctx, const int32_t *x, uint32_t n) { (void)ctx; (void)x; (void)n; return 0; }
static int dma_poll(void *ctx, int32_t *y, uint32_t max, uint32_t *n) {
    (void)ctx; (void)y; (void)max; *n = 0; return 0;
}
static const ttfd_write image[2] = {{TTFORGE_CTRL_ADDR, 0u}, {TTFORGE_CTRL_ADDR, TTFORGE_CTRL_ENABLE_MASK}};

int main(void) {
    ttfd_dev dev;
    ttfd_hooks hooks;
    ttfd_counters c;
    int32_t x[4] = {0}, y[4];
    ttfd_mmio_hooks(&hooks, (volatile uint32_t *)0x43C00000u);
    hooks.stream_send = dma_send;
    hooks.stream_recv = dma_poll;
    if (ttfd_init(&dev, &hooks) != TTFD_OK) return 1;
    if (ttfd_load(&dev, image, 2u) != TTFD_OK) return 2;
    if (ttfd_run(&dev, x, 4u, y, 4u) != TTFD_OK) return 3;
    return ttfd_read_counters(&dev, &c) == TTFD_OK ? 0 : 4;
}
"""


@pytest.mark.parametrize("cc", ["gcc", "clang"])
def test_mmio_only_build_compiles(build, tmp_path, cc):
    if shutil.which(cc) is None:
        pytest.skip(f"{cc} is not installed")
    export_driver(build.config, tmp_path)  # ttforge_regs.h + driver, no shim headers
    (tmp_path / "main.c").write_text(MMIO_MAIN)
    assert not (tmp_path / "axil_shim.h").exists()
    for src in ("ttforge_driver.c", "main.c"):
        proc = subprocess.run([cc, *STRICT, "-fsyntax-only", f"-I{tmp_path}", str(tmp_path / src)],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
    # and whole objects, freestanding, under the stricter warnings firmware projects use
    proc = subprocess.run([cc, *STRICT, *PICKY, "-O2", "-ffreestanding", "-c", f"-I{tmp_path}",
                           str(tmp_path / "ttforge_driver.c"), "-o", str(tmp_path / "d.o")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_export_driver(build, nets, tmp_path):
    prog = compile_program(nets["random15"], build.config)
    names = sorted(p.name for p in export_driver(build.config, tmp_path, prog, sim=True))
    assert names == sorted(["ttforge_regs.h", "ttforge_driver.h", "ttforge_ttli.h", "ttforge_driver.c",
                            "ttforge_image.c",
                            "ttforge_sim_hooks.h", "ttforge_sim_hooks.c", "ttforge_sim_test.c"])
    assert not list(tmp_path.glob(".*"))             # no temporary left behind
    with pytest.raises(ConfigError, match="another AccelConfig"):
        export_driver(AccelConfig(lanes=8), tmp_path / "x", prog)
    # a path that cannot be a directory: one line, nothing written
    from ttforge.errors import OutputError
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="is a file, not a directory"):
        export_driver(build.config, tmp_path / "f" / "drv")
    with pytest.raises(OutputError, match="is not a directory"):
        export_driver(build.config, tmp_path / "f")
    assert (tmp_path / "f").read_text() == "x"


# ------------------------------------------------------------------------------- slow
@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3))
def test_c_driver_sweep(build, exe, nets, tmp_path, seed):
    for name in ("random15", "random37", "random3", "random8", "coverage"):
        net = nets[name]
        x = random_inputs(net, 200, 100 + seed)
        rep, y = run(exe, load_image_to_bytes(_image(build, net), build.config), x, tmp_path,
                     "--seed", seed, "--gaps", 0.2 * seed, "--backpressure", 0.2 * seed, timeout=600)
        assert rep["result"] == "OK"
        assert np.array_equal(y, execute(net, x))


@pytest.mark.slow
def test_c_driver_sweep_wide_stream(tmp_path):
    """L = 8, 16 elements per beat (128-bit tdata), 12 random networks x 200 vectors: the
    config of tests/sim/test_native.py's slow sweep (the build is shared with it)."""
    seeds = range(40, 52)
    nets = [random_net(s) for s in seeds]
    b = build_native(shared_config(nets, lanes=8, stream_elems=16), jobs=2)
    exe8 = _link(b, tmp_path)
    for s, net in zip(seeds, nets):
        x = random_inputs(net, 200, s)
        rep, y = run(exe8, load_image_to_bytes(_image(b, net), b.config), x, tmp_path,
                     "--seed", s, "--gaps", 0.3, "--backpressure", 0.3, timeout=600)
        assert rep["result"] == "OK"
        assert np.array_equal(y, execute(net, x))
