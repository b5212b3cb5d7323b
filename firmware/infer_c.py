"""The C integer inference executor (``firmware/c/ttforge_infer.c``) driven from Python
through ctypes: tested equal to the golden executor (:func:`ttforge.ir.executor.execute`)
and timed as the CPU baseline the accelerator has to beat.

:class:`CNetwork` arranges an :class:`~ttforge.ir.executor.IntNetwork` once (each step's
``P x K`` core matrix, shift and output width) and runs batches in C.
"""

from __future__ import annotations

import ctypes as C
import os
from pathlib import Path

import numpy as np

from ttforge.errors import ConfigError
from ttforge.firmware.cc import load_c_library
from ttforge.ir.executor import IntNetwork, check_input

__all__ = ["CNetwork", "execute_c", "build_library", "SOURCE"]

SOURCE = Path(__file__).resolve().parent / "c" / "ttforge_infer.c"


class _Step(C.Structure):
    _fields_ = [("A", C.c_int32), ("K", C.c_int32), ("Q", C.c_int32), ("P", C.c_int32), ("shift", C.c_int32),
                ("out_bits", C.c_int32), ("acc32", C.c_int32), ("C", C.POINTER(C.c_int32)),
                ("Ct", C.POINTER(C.c_int32))]


class _Layer(C.Structure):
    _fields_ = [("d", C.c_int32), ("in_features", C.c_int32), ("out_features", C.c_int32),
                ("in_size", C.c_int32), ("relu", C.c_int32), ("steps", C.POINTER(_Step)),
                ("bias", C.POINTER(C.c_int64))]


def build_library(cache: str | os.PathLike | None = None, cc: str | None = None) -> C.CDLL:
    """Compile ``ttforge_infer.c`` with ``-O2`` (once per source version) and load it."""
    so = load_c_library(SOURCE, cache, cc)
    so.ttfi_execute.restype = C.c_int
    so.ttfi_execute.argtypes = [C.c_int32, C.POINTER(_Layer), C.c_int32, C.POINTER(C.c_int64),
                                C.POINTER(C.c_int64)]
    return so


class CNetwork:
    """``net`` arranged for the C executor; ``run(x)`` equals ``execute(net, x)``."""

    def __init__(self, net: IntNetwork, lib: C.CDLL | None = None):
        for i, L in enumerate(net.layers):
            if max(L.in_bits, L.inter_bits, L.out_bits, L.w_bits) > 32:
                raise ConfigError(f"layer {i} has a width above 32 bits; the C executor keeps activations "
                                  f"and cores in 32 bits (use the golden executor)")
        self.net, self.lib = net, lib or build_library()
        self._keep: list = []            # every array ctypes points into lives as long as self
        self._layers = (_Layer * len(net.layers))()
        for i, L in enumerate(net.layers):
            steps = (_Step * len(L.schedule.steps))()
            need = L.acc_bits_needed()   # the widest sum each step can reach (bias included)
            for t, (st, shift) in enumerate(zip(L.schedule.steps, L.shifts())):
                mat = np.ascontiguousarray(L.core_matrix(t), dtype=np.int32)
                mat_t = np.ascontiguousarray(mat.T)
                self._keep += [mat, mat_t]
                steps[t] = _Step(st.A, st.K, st.Q, st.P, int(shift), L.step_out_bits(t), int(need[t] <= 32),
                                 mat.ctypes.data_as(C.POINTER(C.c_int32)), mat_t.ctypes.data_as(C.POINTER(C.c_int32)))
            bias = None if L.bias is None else np.ascontiguousarray(L.bias, dtype=np.int64)
            self._keep += [steps, bias]
            self._layers[i] = _Layer(len(L.schedule.steps), L.in_features, L.out_features,
                                     L.schedule.shape.in_size, int(L.relu), steps,
                                     None if bias is None else bias.ctypes.data_as(C.POINTER(C.c_int64)))

    def run(self, x: np.ndarray) -> np.ndarray:
        """Integer inputs ``(B, in_features)`` (checked as the golden executor checks them)
        to int64 outputs ``(B, out_features)``."""
        x = np.ascontiguousarray(check_input(self.net, x), dtype=np.int64)
        y = np.empty((x.shape[0], self.net.layers[-1].out_features), dtype=np.int64)
        if self.lib.ttfi_execute(len(self.net.layers), self._layers, x.shape[0],
                                 x.ctypes.data_as(C.POINTER(C.c_int64)),
                                 y.ctypes.data_as(C.POINTER(C.c_int64))) != 0:
            raise MemoryError("the C executor could not allocate its buffers")
        return y


def execute_c(net: IntNetwork, x: np.ndarray) -> np.ndarray:
    """:func:`~ttforge.ir.executor.execute` computed by the C executor."""
    return CNetwork(net).run(x)
