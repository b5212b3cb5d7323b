"""The C implementation of the all-integer training step (``firmware/c/ttforge_train.c``)
driven from Python through ctypes, so it can be tested equal to the golden trainer
(:func:`ttforge.ir.train.train_step`) and timed.

:func:`build_library` compiles the C file with ``cc -O2`` into a cache directory (keyed by
the source's sha256); :func:`train_step_c` runs one step of a :class:`TrainState` in C and
returns the new state.
"""

from __future__ import annotations

import ctypes as C
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from ttforge.firmware.cc import load_c_library
from ttforge.ir.train import TrainState, check_batch, exp2_table, export_network

__all__ = ["build_library", "train_step_c", "SOURCE"]

SOURCE = Path(__file__).resolve().parent / "c" / "ttforge_train.c"


class _Step(C.Structure):
    _fields_ = [("core", C.c_int32), ("A", C.c_int32), ("K", C.c_int32), ("Q", C.c_int32), ("P", C.c_int32),
                ("axes", C.c_int32 * 4)]


class _Layer(C.Structure):
    _fields_ = [("d", C.c_int32), ("in_features", C.c_int32), ("out_features", C.c_int32),
                ("in_size", C.c_int32), ("out_size", C.c_int32), ("relu", C.c_int32), ("has_bias", C.c_int32),
                ("core_shape", C.POINTER(C.c_int32)), ("steps", C.POINTER(_Step)),
                ("masters", C.POINTER(C.POINTER(C.c_int64))), ("master_exps", C.POINTER(C.c_int32)),
                ("bias", C.POINTER(C.c_int64)), ("bias_exp", C.c_int32),
                ("step_exps", C.POINTER(C.c_int32)), ("grad_exps", C.POINTER(C.c_int32))]


class _Train(C.Structure):
    _fields_ = [(n, C.c_int32) for n in ("w_bits", "master_bits", "act_bits", "inter_bits", "acc_bits", "grad_bits",
                                         "prob_bits", "table_bits", "table_frac_bits", "bias_bits", "stochastic",
                                         "in_exp", "lr_shift")] + \
               [("rng", C.c_uint32), ("words", C.c_uint64), ("step", C.c_uint64), ("table", C.POINTER(C.c_int64))]


def build_library(cache: str | os.PathLike | None = None, cc: str | None = None) -> C.CDLL:
    """Compile ``ttforge_train.c`` with ``-O2`` (once per source version) and load it."""
    so = load_c_library(SOURCE, cache, cc)
    so.ttft_step_batch.restype = C.c_int
    so.ttft_step_batch.argtypes = [C.POINTER(_Train), C.c_int32, C.POINTER(_Layer), C.c_int32,
                                   C.POINTER(C.c_int64), C.POINTER(C.c_int64)]
    return so


def _i32(v) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(v, dtype=np.int32))


def _p(a: np.ndarray, t):
    return a.ctypes.data_as(C.POINTER(t))


def train_step_c(state: TrainState, x: np.ndarray, y: np.ndarray, lib: C.CDLL | None = None) -> TrainState:
    """One training step computed by the C implementation; the new state."""
    from ttforge.ir.train import checked_samples, check_next_state

    lib = lib or build_library()
    x, y = checked_samples(state, x, y)
    check_batch(state, x.shape[0], fast=False)
    # the golden step's refusal of a forward shift outside shift_range (the network it
    # exports): past it the C step's left shift would leave int64
    export_network(state)
    cfg = state.config
    keep = []  # everything ctypes points into stays alive until the call returns
    table = np.ascontiguousarray(exp2_table(cfg.table_bits, cfg.table_frac_bits), dtype=np.int64)
    layers_c = (_Layer * len(state.layers))()
    out = []
    for i, L in enumerate(state.layers):
        sh = L.schedule.shape
        shapes = _i32([list(s) for s in sh.core_shapes]).reshape(-1)
        steps = (_Step * L.d)()
        for t, st in enumerate(L.schedule.steps):
            steps[t] = _Step(st.core, st.A, st.K, st.Q, st.P, (C.c_int32 * 4)(*st.core_axes))
        masters = [np.ascontiguousarray(g, dtype=np.int64).copy() for g in L.masters]
        mptrs = (C.POINTER(C.c_int64) * L.d)(*[_p(g, C.c_int64) for g in masters])
        mexps = _i32(L.master_exps)
        bias = None if L.bias is None else np.ascontiguousarray(L.bias, dtype=np.int64).copy()
        sexps, gexps = _i32(L.step_exps).copy(), _i32(L.grad_exps).copy()
        layers_c[i] = _Layer(L.d, L.in_features, L.out_features, sh.in_size, sh.out_size, int(L.relu),
                             int(bias is not None), _p(shapes, C.c_int32), steps, mptrs, _p(mexps, C.c_int32),
                             None if bias is None else _p(bias, C.c_int64), L.bias_exp,
                             _p(sexps, C.c_int32), _p(gexps, C.c_int32))
        keep += [shapes, steps, mptrs, mexps]
        out.append((masters, bias, sexps, gexps))
    tr = _Train(cfg.w_bits, cfg.master_bits, cfg.act_bits, cfg.inter_bits, cfg.acc_bits, cfg.grad_bits,
                cfg.prob_bits, cfg.table_bits, cfg.table_frac_bits, cfg.bias_bits,
                int(cfg.rounding == "stochastic"), state.in_exp, state.lr_shift, state.rng, state.words,
                state.step, _p(table, C.c_int64))
    xc = np.ascontiguousarray(x, dtype=np.int64)
    yc = np.ascontiguousarray(y, dtype=np.int64)
    if lib.ttft_step_batch(C.byref(tr), len(state.layers), layers_c, x.shape[0], _p(xc, C.c_int64),
                           _p(yc, C.c_int64)) != 0:
        raise MemoryError("the C training step could not allocate its buffers")
    new_layers = tuple(replace(L, masters=tuple(m), bias=b, step_exps=tuple(int(v) for v in se),
                               grad_exps=tuple(int(v) for v in ge))
                       for L, (m, b, se, ge) in zip(state.layers, out))
    new = replace(state, layers=new_layers, rng=int(tr.rng), words=int(tr.words), step=int(tr.step))
    check_next_state(state, new)   # as the golden step: never a state no step can run
    return new
