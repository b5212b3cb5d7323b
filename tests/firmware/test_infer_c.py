"""The C integer inference executor (firmware/c/ttforge_infer.c, -O2) equals the golden
executor, np.array_equal, over random networks (TT and dense layers, ranks, widths,
biases, ReLU, padding, left and right shifts) and inputs at the range's ends; a flipped
core bit and a wrong rounding constant in C are caught."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from ttforge.errors import ConfigError
from ttforge.ir.arith import int_range
from ttforge.ir.executor import execute, layer_from_dense, IntNetwork
from ttforge.ir.random import random_network

pytestmark = pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")), reason="needs a C compiler")


def _inputs(rng, net, n=6):
    lo, hi = int_range(net.layers[0].in_bits)
    x = rng.integers(lo, hi + 1, size=(n, net.in_features))
    x[0], x[1] = lo, hi          # the range's ends: saturation on the way
    return x


@pytest.mark.parametrize("seed", range(40))
def test_c_executor_equals_golden(seed):
    from ttforge.firmware.infer_c import CNetwork

    rng = np.random.default_rng([seed, 1729])
    net = random_network(rng, max_layers=3, max_rank=6)
    x = _inputs(rng, net)
    want = execute(net, x)
    got = CNetwork(net).run(x)
    assert got.dtype == np.int64 and np.array_equal(got, want)


def _dense_net() -> IntNetwork:
    """One dense layer with shift 0 and wide outputs: every core element reaches the output."""
    w = np.array([[3, -2, 5, 1], [-7, 4, 0, 2], [1, 1, -1, 6]], dtype=np.int64)
    layer = layer_from_dense(w, core_exps=(0,), w_bits=4, in_bits=8, in_exp=0, inter_bits=16, out_bits=16,
                             step_exps=(0,), acc_bits=16)
    return IntNetwork((layer,))


def test_a_flipped_core_bit_in_c_is_caught():
    from ttforge.firmware.infer_c import CNetwork

    net = _dense_net()
    x = np.eye(4, dtype=np.int64) * 100
    cn = CNetwork(net)
    assert np.array_equal(cn.run(x), execute(net, x))
    cn._keep[0][1, 2] ^= 1          # the step's P x K matrix as C reads it, and its transpose
    cn._keep[1][2, 1] ^= 1
    assert not np.array_equal(cn.run(x), execute(net, x))


@pytest.mark.parametrize("shift, want, good, bad", [
    (1, 2, "(a >> 1) + (a & 1)", "(a >> 1)"),                                            # 3 / 2 = 1.5
    (2, 1, "((a >> (s - 1 < 63 ? s - 1 : 63)) + 1) >> 1", "(a >> (s - 1 < 63 ? s - 1 : 63)) >> 1"),  # 3 / 4
])
def test_the_rounding_half_matters(tmp_path, shift, want, good, bad):
    """A C executor whose shift drops the half (ttforge_shift.h, shared with the training
    step) rounds 1.5 or 0.75 down: the equality tests above would catch that mutation."""
    from ttforge.firmware import infer_c
    from ttforge.firmware.cc import load_c_library

    header = (infer_c.SOURCE.parent / "ttforge_shift.h").read_text()
    assert header.count(good) == 1
    (tmp_path / "ttforge_shift.h").write_text(header.replace(good, bad))
    (tmp_path / "ttforge_infer.h").write_text(infer_c.SOURCE.with_suffix(".h").read_text())
    mutant = tmp_path / "ttforge_infer.c"
    mutant.write_text(infer_c.SOURCE.read_text())
    lib = load_c_library(mutant, cache=tmp_path)
    import ctypes as C
    lib.ttfi_execute.restype = C.c_int
    lib.ttfi_execute.argtypes = infer_c.build_library().ttfi_execute.argtypes
    w = np.array([[1, 1]], dtype=np.int64)
    layer = layer_from_dense(w, core_exps=(0,), w_bits=4, in_bits=8, in_exp=0, inter_bits=16, out_bits=8,
                             step_exps=(shift,), acc_bits=16)
    net = IntNetwork((layer,))
    x = np.array([[1, 2]], dtype=np.int64)
    assert execute(net, x)[0, 0] == want and infer_c.CNetwork(net).run(x)[0, 0] == want
    assert infer_c.CNetwork(net, lib=lib).run(x)[0, 0] == want - 1


@pytest.mark.parametrize("acc_bits", [16, 32, 48])
def test_c_executor_at_the_ends_of_shift_range(acc_bits):
    """Every shift an artifact may hold (shift_range: acc_bits - 63 .. 62; the loader and
    IntLayer refuse the rest, so none reaches 64) on the widest sums, bias included: C
    equals the golden executor (no overflow of a left shift, no rounding constant past 2^63)."""
    from ttforge.firmware.infer_c import CNetwork
    from ttforge.ir.arith import shift_range

    lo, hi = shift_range(acc_bits)
    w = np.array([[127, -127], [-127, 127], [127, 127]], dtype=np.int64)
    bmax = (1 << (acc_bits - 1)) - 1 - 2 * 127 * (1 << 7)
    for shift in (lo, lo + 1, -1, 0, 1, 2, acc_bits - 2, acc_bits - 1, hi - 1, hi):
        layer = layer_from_dense(w, core_exps=(0,), w_bits=8, in_bits=8, in_exp=0, inter_bits=16, out_bits=16,
                                 step_exps=(shift,), acc_bits=acc_bits,
                                 bias=np.array([bmax, -bmax, 0], dtype=np.int64))
        net = IntNetwork((layer,))
        x = np.array([[-128, 127], [127, -128], [-128, -128], [1, 0]], dtype=np.int64)
        assert np.array_equal(CNetwork(net).run(x), execute(net, x)), shift


def test_a_compile_error_is_one_line(tmp_path):
    from ttforge.firmware.cc import load_c_library

    src = tmp_path / "broken.c"
    src.write_text("int f( {\n")
    with pytest.raises(ConfigError) as e:
        load_c_library(src, cache=tmp_path)
    assert "compiling broken.c failed" in str(e.value) and len(str(e.value).splitlines()) == 1
    assert not list(tmp_path.glob("*.so")) and not list(tmp_path.glob(".*.tmp"))
