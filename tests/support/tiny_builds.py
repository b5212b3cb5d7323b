"""Small builds the simulation tests share: a Verilog module that Verilator builds in
seconds (the native harness's build path without the accelerator) and a small
accelerator config."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ttforge.hw.config import AccelConfig

#: a small engine whose Verilog emits and builds quickly
SMALL = AccelConfig(lanes=2, act_bits=8, core_bits=8, inter_bits=16, acc_bits=32, bias_bits=32,
                    core_depth=512, bias_depth=64, buf_depth=256, desc_depth=16, stream_elems=1)

TINY_V = b"module tiny(input clk, output reg [3:0] n); always @(posedge clk) n <= n + 4'd1; endmodule\n"
TINY_H = b"#define TINY_STEPS 6\n"
TINY_MAIN = b"""#include "Vtiny.h"
#include "tiny.h"
#include <cstdio>
int main() {
    Vtiny t;
    t.n = 0;
    for (int i = 0; i < 2 * TINY_STEPS; i++) { t.clk = i & 1; t.eval(); }
    std::printf("n=%d\\n", (int)t.n);
    return 0;
}
"""


def need_native():
    from ttforge.hw.tools import ToolchainMissing
    from ttforge.sim.native import check_native_tools

    try:
        return check_native_tools()
    except ToolchainMissing as e:
        pytest.skip(str(e))


def build_tiny(root: Path, main: bytes = TINY_MAIN):
    """What build_native does, for a module that builds in seconds: sources under
    ``include/``, handed to Verilator (and so to make) as absolute paths."""
    from ttforge.sim.native import make_flags, verilate_cached, verilator_args

    cxx = need_native()
    files = {"tiny.v": TINY_V, "include/tiny.h": TINY_H, "include/main.cpp": main}

    def args_for(tmp: Path) -> list[str]:
        return [*verilator_args("tiny"), "--Mdir", "obj_dir", "-CFLAGS", f"-std=c++17 -I{tmp / 'include'}",
                "-MAKEFLAGS", make_flags(cxx), "-o", "../tiny", "tiny.v", str(tmp / "include" / "main.cpp")]

    key = "tiny-" + hashlib.sha256(main).hexdigest()[:12]
    return verilate_cached(root, key, "tiny", files, args_for, cxx=cxx, timeout=600, what="tiny harness")
