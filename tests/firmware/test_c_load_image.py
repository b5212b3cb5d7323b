"""``ttfd_load_bytes`` checks a binary load image whole before its first write (docs/hardware.md,
"Load image"; docs/integration.md, "The C driver"): on a fake register file that counts
writes, a flipped bit anywhere, a truncated or padded file, an image of another config, a
format version 1 image and a huge write count are each refused as ``BAD_IMAGE`` with zero
writes, and so is a write address outside the core's AXI4-Lite window; the good image
loads write for write. The driver and harness are compiled with
``-std=c99 -pedantic -Werror`` and, where the compiler has them, the address and
undefined-behaviour sanitizers. No Verilator needed.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from ttforge.firmware.c_driver import driver_sources, include_dirs
from ttforge.hw.config import AccelConfig
from ttforge.hw.program import compile_program, load_image, load_image_to_bytes
from ttforge.hw.regmap import RegisterMap

from tests.support.engine import random_net

CC = shutil.which("cc") or shutil.which("gcc")
pytestmark = pytest.mark.skipif(CC is None, reason="needs a C compiler")

HARNESS = r"""
/* a fake register file around the driver: every write counted, none refused */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ttforge_driver.h"
#include "ttforge_ttli.h"

static uint32_t regs[1u << 16];
static long writes;

static int rd(void *c, uint32_t a, uint32_t *d) { (void)c; *d = regs[(a / 4u) & 0xFFFFu]; return 0; }
static int wr(void *c, uint32_t a, uint32_t d) { (void)c; ++writes; regs[(a / 4u) & 0xFFFFu] = d; return 0; }

static uint8_t *slurp(const char *p, size_t *len) {
    FILE *f = fopen(p, "rb");
    uint8_t *b;
    long n;
    if (!f) exit(9);
    fseek(f, 0, SEEK_END); n = ftell(f); fseek(f, 0, SEEK_SET);
    b = malloc((size_t)n + 1u); /* exactly the file: ASan sees a read past its end */
    if (!b || fread(b, 1, (size_t)n, f) != (size_t)n) exit(9);
    fclose(f);
    *len = (size_t)n;
    return b;
}

int main(int argc, char **argv) {
    ttfd_dev dev;
    ttfd_hooks h;
    int i;
    memset(&h, 0, sizeof h);
    h.read32 = rd; h.write32 = wr;
    regs[TTFORGE_ID_ADDR / 4u] = TTFORGE_MAGIC;
    regs[TTFORGE_VERSION_ADDR / 4u] = TTFORGE_VERSION_RESET;
    regs[TTFORGE_CFG_LANES_ADDR / 4u] = TTFORGE_CFG_LANES_RESET;
    regs[TTFORGE_CFG_WIDTHS_ADDR / 4u] = TTFORGE_CFG_WIDTHS_RESET;
    regs[TTFORGE_CFG_BIAS_BITS_ADDR / 4u] = TTFORGE_CFG_BIAS_BITS_RESET;
    regs[TTFORGE_CFG_CORE_DEPTH_ADDR / 4u] = TTFORGE_CFG_CORE_DEPTH_RESET;
    regs[TTFORGE_CFG_BIAS_DEPTH_ADDR / 4u] = TTFORGE_CFG_BIAS_DEPTH_RESET;
    regs[TTFORGE_CFG_BUF_DEPTH_ADDR / 4u] = TTFORGE_CFG_BUF_DEPTH_RESET;
    regs[TTFORGE_CFG_DESC_DEPTH_ADDR / 4u] = TTFORGE_CFG_DESC_DEPTH_RESET;
    if (ttfd_init(&dev, &h) != TTFD_OK) return 8;
    for (i = 1; i < argc; ++i) {
        size_t len;
        uint8_t *img;
        ttfd_result r;
        writes = 0;
        if (argv[i][0] == '@') {
            /* the array form: two good writes around one at the address given */
            ttfd_write arr[3];
            arr[0].addr = TTFORGE_CTRL_ADDR; arr[0].data = 0;
            arr[1].addr = (uint32_t)strtoul(argv[i] + 1, NULL, 0); arr[1].data = 0xDEADBEEFu;
            arr[2].addr = TTFORGE_CTRL_ADDR; arr[2].data = 0;
            r = ttfd_load(&dev, arr, 3);
            printf("%s %ld %u %u %u %u %s\n", ttfd_result_name(r), writes, (unsigned)dev.image_status,
                   (unsigned)dev.image_config_index, (unsigned)dev.image_config_got,
                   (unsigned)dev.image_config_expected, ttfi_status_text((ttfi_status)dev.image_status));
            continue;
        }
        img = slurp(argv[i], &len);
        r = ttfd_load_bytes(&dev, img, len);
        printf("%s %ld %u %u %u %u %s\n", ttfd_result_name(r), writes, (unsigned)dev.image_status,
               (unsigned)dev.image_config_index, (unsigned)dev.image_config_got,
               (unsigned)dev.image_config_expected, ttfi_status_text((ttfi_status)dev.image_status));
        free(img);
    }
    return 0;
}
"""

CONFIG = AccelConfig(lanes=4, core_depth=512, bias_depth=64, buf_depth=256, desc_depth=8)


def _sanitize(cc: str, tmp_path) -> tuple[str, ...]:
    """The sanitizers, when this compiler links them (not every install has libasan)."""
    flags = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all")
    (tmp_path / "t.c").write_text("int main(void) { return 0; }\n")
    r = subprocess.run([cc, *flags, str(tmp_path / "t.c"), "-o", str(tmp_path / "t")],
                       capture_output=True, timeout=120)
    return flags if r.returncode == 0 else ()


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    d = tmp_path_factory.mktemp("ttli")
    (d / "ttforge_regs.h").write_text(RegisterMap(CONFIG).to_c_header())
    (d / "main.c").write_text(HARNESS)
    srcs = [str(p) for p in driver_sources() if p.suffix == ".c"] + [str(d / "main.c")]
    proc = subprocess.run([CC, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-g",
                           *_sanitize(CC, d), f"-I{d}", *(f"-I{i}" for i in include_dirs()), *srcs, "-o", str(d / "h")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return d / "h"


def _run(harness, tmp_path, images: dict[str, bytes | int]) -> dict[str, list[str]]:
    """Load each image (bytes: ``ttfd_load_bytes``; an int: ``ttfd_load`` of a three-write
    array with that address in the middle); one parsed output row per image."""
    paths = []
    for name, data in images.items():
        if isinstance(data, int):
            paths.append(f"@{data:#x}")
            continue
        (tmp_path / f"{name}.bin").write_bytes(data)
        paths.append(str(tmp_path / f"{name}.bin"))
    proc = subprocess.run([str(harness), *paths], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == len(images)
    return {name: line.split(" ", 6) for name, line in zip(images, lines)}


def _flip(data: bytes, byte: int, bit: int = 0) -> bytes:
    b = bytearray(data)
    b[byte] ^= 1 << bit
    return bytes(b)


def test_refused_before_any_write(harness, tmp_path):
    net = random_net(15)
    writes = load_image(compile_program(net, CONFIG), RegisterMap(CONFIG))
    good = load_image_to_bytes(writes, CONFIG)
    other_cfg = AccelConfig(**{**CONFIG.to_dict(), "lanes": 8})
    other = load_image_to_bytes(load_image(compile_program(net, other_cfg), RegisterMap(other_cfg)), other_cfg)
    data_word = len(good) - 4 - 8 * (len(writes) // 2) + 4   # the data of a write mid-image
    v1 = b"TTLI" + np.array([1, len(writes)], "<u4").tobytes() + np.asarray(writes, "<u4").tobytes()
    huge = good[:8] + np.array([0xFFFFFFFF], "<u4").tobytes() + good[12:]
    images = {
        "good": good,
        "data_bit": _flip(good, data_word, 3),     # one weight/descriptor bit
        "addr_bit": _flip(good, data_word - 4, 2),
        "config_bit": _flip(good, 16),             # lanes 4 -> 5 in the header
        "crc_bit": _flip(good, len(good) - 1, 7),
        "truncated": good[:-1],
        "truncated_pair": good[:-12] + good[-4:],
        "padded": good + b"\0\0\0\0",
        "other_config": other,
        "version1": v1,
        "huge_count": huge,
        "empty": b"",
        "magic_only": b"TTLI",
    }
    got = _run(harness, tmp_path, images)
    assert got["good"][:3] == ["OK", str(len(writes)), "0"]
    for name, row in got.items():
        if name != "good":
            assert row[0] == "BAD_IMAGE" and row[1] == "0", (name, row)
    # why, for the ones a user meets
    assert got["other_config"][2] == "5" and got["other_config"][3:6] == ["0", "8", "4"]  # lanes 8 vs 4
    assert got["version1"][2] == "2" and "version" in got["version1"][6]
    assert got["truncated"][2] == "3" and got["data_bit"][2] == "4" and got["empty"][2] == "1"
    assert "corrupt" in got["data_bit"][6]


def test_write_outside_the_window_is_refused_before_any_write(harness, tmp_path):
    """A CRC-valid image with a write past the core's 2^TTFORGE_ADDR_BITS-byte AXI4-Lite
    window (far away, or one past its end) or not word-aligned is BAD_IMAGE
    (TTFI_ADDRESS: the write's index, its address, the window's last byte) with zero
    writes: ttfd_mmio_hooks would have written to base + address anywhere. The window's
    last word loads."""
    writes = load_image(compile_program(random_net(15), CONFIG), RegisterMap(CONFIG))
    top = (1 << RegisterMap(CONFIG).addr_bits) - 1
    images = {name: load_image_to_bytes([*writes[:2], (addr, 0xDEADBEEF), *writes[2:]], CONFIG)
              for name, addr in (("far", 0xFFFFFFF0), ("past_end", top + 1), ("unaligned", 0x102),
                                 ("last_word", top - 3))}
    got = _run(harness, tmp_path, images)
    assert got["last_word"][:3] == ["OK", str(len(writes) + 1), "0"]
    for name, addr in (("far", 0xFFFFFFF0), ("past_end", top + 1), ("unaligned", 0x102)):
        assert got[name][:6] == ["BAD_IMAGE", "0", "6", "2", str(addr), str(top)], (name, got[name])
        assert "outside the core's AXI4-Lite window" in got[name][6]


def test_array_write_outside_the_window_is_refused_before_any_write(harness, tmp_path):
    """``ttfd_load``'s array (``load_image_c``'s output, which a user can edit as well as a
    binary image) is checked as ``ttfd_load_bytes`` checks the bytes: an address past the
    window or unaligned is BAD_IMAGE (TTFI_ADDRESS, the write's index, its address, the
    window's last byte) with zero writes; the window's last word loads all three writes."""
    top = (1 << RegisterMap(CONFIG).addr_bits) - 1
    cases = {"far": 0xFFFFFFF0, "past_end": top + 1, "unaligned": 0x102, "last_word": top - 3}
    got = _run(harness, tmp_path, cases)
    assert got["last_word"][:3] == ["OK", "3", "0"]
    for name in ("far", "past_end", "unaligned"):
        assert got[name][:6] == ["BAD_IMAGE", "0", "6", "1", str(cases[name]), str(top)], (name, got[name])
        assert "outside the core's AXI4-Lite window" in got[name][6]
