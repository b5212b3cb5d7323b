"""The C training driver for bare-metal hosts (``firmware/c/ttforge_train_driver.{h,c}``,
``docs/integration.md``, "Training with the C driver").

The driver is C99 and drives a :class:`~ttforge.hw.trainer.top.TrainAccel` over
AXI4-Lite (written against the generated ``ttforge_train_regs.h``); this module generates
the one config- and network-specific piece a firmware build needs and locates the sources:

* :func:`exponent_tables` — the exponent bookkeeping of the host (delayed max scaling,
  :func:`~ttforge.hw.trainer.program.next_exponents`, and the descriptor fields that
  follow from it, :func:`~ttforge.hw.trainer.program.compile_training`) as tables a C
  program evaluates: every exponent-dependent descriptor field is an affine function of
  the exponent variables (one per ``MAXACC`` operation), and every ``MAXACC`` operation
  ``j`` sets its variable to ``e_acc_j + max(0, bitlen(M_j) - (bits_j - 1))`` with
  ``e_acc_j`` affine in the old variables. The tables are *measured* from
  ``compile_training`` and ``next_exponents`` themselves (one probe per variable), not
  derived a second time;
* :func:`train_program_c` — a training program (descriptors, CMEM/BMEM images, program
  registers, generator state) and its tables as C arrays, with ``#error`` checks that
  ``ttforge_train_regs.h`` was generated for the same engine;
* :func:`export_train_driver` — a directory with the driver sources, the register header
  and, optionally, the program: everything a firmware project copies;
* :func:`build_train_axil` / :func:`link_train_c_driver` — the Verilated ``TrainAccel``
  behind the AXI4-Lite shim of the native harness (``sim/native/axil_shim.h``), for
  testing the driver.

    tables = exponent_tables(state, program)
    Path("ttforge_train_program.c").write_text(train_program_c(state, batch, config))
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np

from ttforge.atomic import atomic_write_text, check_output_dir
from ttforge.errors import ConfigError
from ttforge.firmware.c_driver import C_DIR, _ident
from ttforge.sim.native import NativeBuild

__all__ = ["TRAIN_DRIVER_SOURCES", "TRAIN_SIM_SOURCES", "ExpField", "ExpVar", "ExponentTables",
           "exponent_tables", "train_program_c", "export_train_driver", "train_driver_sources",
           "state_with_exponents", "TrainAxilBuild", "build_train_axil", "link_train_c_driver"]

#: the driver proper (no platform dependency beyond ``ttforge_train_regs.h``)
TRAIN_DRIVER_SOURCES = ("ttforge_train_driver.h", "ttforge_train_driver.c")
#: hooks for the Verilated training top (``sim/native/axil_shim.h``) and the test program
TRAIN_SIM_SOURCES = ("ttforge_train_sim_hooks.h", "ttforge_train_sim_hooks.c", "ttforge_train_sim_test.c")
#: the register header's file name (``TrainRegisterMap.to_c_header``)
TRAIN_REGS_H = "ttforge_train_regs.h"
#: variable kinds in the C tables (``ttftd_var.kind``)
_KINDS = {"step": 0, "grad": 1}
_INT32 = (-(1 << 31), (1 << 31) - 1)


def train_driver_sources(*, sim: bool = False) -> list[Path]:
    """Paths of the training driver sources (with the simulation hooks and test program if
    ``sim``); a missing file (an install without package data) is a one-line error."""
    from ttforge.firmware.c_driver import driver_sources

    # the same check as the inference driver's, on the training file names
    return driver_sources(sim=sim, names=TRAIN_DRIVER_SOURCES + (TRAIN_SIM_SOURCES if sim else ()))


# ---------------------------------------------------------------------------------------
# the exponent tables
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExpVar:
    """Exponent variable ``j``: ``step_exps[layer][step]`` (``kind`` ``"step"``) or
    ``grad_exps[layer][step]`` (``"grad"``), set after every step from ``MAXACC`` of
    operation ``op`` as ``const + sum(coef * var) + max(0, bitlen(M) - (bits - 1))``
    (``terms``: ``(var, coef)`` over the variables before the step); it must stay in
    ``lo..hi`` (the executor's exponent range, for step exponents)."""

    kind: str
    layer: int
    step: int
    op: int
    bits: int
    const: int
    terms: tuple[tuple[int, int], ...]
    lo: int
    hi: int


@dataclass(frozen=True)
class ExpField:
    """A descriptor field that depends on the exponents: ``value = const + sum(coef *
    var)``, stored at bits ``lsb .. lsb + width - 1`` of DMEM word ``word`` (two's
    complement), which must stay in ``lo..hi``; ``base`` is that word with every
    exponent-dependent field of it cleared. ``label`` names it for people."""

    op: int
    name: str
    word: int
    lsb: int
    width: int
    lo: int
    hi: int
    const: int
    terms: tuple[tuple[int, int], ...]
    base: int
    label: str


@dataclass(frozen=True)
class ExponentTables:
    """The host's exponent bookkeeping as data (see the module docstring): ``variables``
    in ``MAXACC`` operation order, their values ``init`` for the program they were
    measured on, and the ``fields`` (sorted by DMEM word)."""

    variables: tuple[ExpVar, ...]
    init: tuple[int, ...]
    fields: tuple[ExpField, ...]

    @staticmethod
    def _affine(const: int, terms, values) -> int:
        return int(const) + sum(c * int(values[v]) for v, c in terms)

    def next_values(self, values: Sequence[int], maxacc: Sequence[int]) -> tuple[int, ...]:
        """The variables after a step whose ``MAXACC`` (per operation) is ``maxacc``."""
        out = []
        for var in self.variables:
            m = int(maxacc[var.op])
            out.append(self._affine(var.const, var.terms, values) + max(0, m.bit_length() - (var.bits - 1)))
        return tuple(out)

    def field_values(self, values: Sequence[int]) -> tuple[int, ...]:
        return tuple(self._affine(f.const, f.terms, values) for f in self.fields)

    def violation(self, values: Sequence[int]) -> str | None:
        """The first variable or field outside its range (what the C driver refuses as
        ``TTFTD_EXP_RANGE``), as text; ``None`` if all fit."""
        for j, (var, v) in enumerate(zip(self.variables, values)):
            if not var.lo <= v <= var.hi:
                return f"{var.kind}_exps[{var.layer}][{var.step}]={v} is outside {var.lo}..{var.hi}"
        for f, v in zip(self.fields, self.field_values(values)):
            if not f.lo <= v <= f.hi:
                return f"{f.label}: {f.name}={v} is outside {f.lo}..{f.hi}"
        return None

    def words(self, words: Sequence[int], values: Sequence[int]) -> list[int]:
        """``words`` (a program's descriptor words) with every exponent-dependent field set
        from ``values``, as the C driver writes them."""
        out = [int(w) for w in words]
        for f in self.fields:
            out[f.word] = f.base
        for f, v in zip(self.fields, self.field_values(values)):
            out[f.word] |= (v & ((1 << f.width) - 1)) << f.lsb
        return out


def _exp_keys(program) -> list[tuple[int, str, int, int]]:
    return [(j, *program.maxacc_ops[j]) for j in sorted(program.maxacc_ops)]


def _get_exp(state, kind: str, i: int, t: int) -> int:
    L = state.layers[i]
    return int((L.step_exps if kind == "step" else L.grad_exps)[t])


def _set_exp(state, kind: str, i: int, t: int, value: int):
    layers = list(state.layers)
    L = layers[i]
    name = "step_exps" if kind == "step" else "grad_exps"
    exps = list(getattr(L, name))
    exps[t] = int(value)
    layers[i] = replace(L, **{name: tuple(exps)})
    return replace(state, layers=tuple(layers))


def _field_layout(op, name: str) -> tuple[int, int, int, int, int]:
    """``(word, lsb, width, lo, hi)`` of field ``name`` of ``op``, measured on
    :func:`~ttforge.hw.trainer.program.encode_op`: the range it accepts and the bits
    that change across it."""
    from ttforge.hw.trainer.program import encode_op

    def ok(v: int) -> bool:
        try:
            encode_op(replace(op, **{name: v}))
            return True
        except ConfigError:
            return False

    cur = int(getattr(op, name))

    def edge(step: int) -> int:   # the last accepted value from cur towards step * infinity
        good, k = cur, 1
        while k < 1 << 48 and ok(cur + step * k):
            good, k = cur + step * k, k * 2
        bad = cur + step * k
        while abs(bad - good) > 1:
            mid = (good + bad) // 2
            good, bad = (mid, bad) if ok(mid) else (good, mid)
        return good

    lo, hi = edge(-1), edge(1)
    a, b = encode_op(replace(op, **{name: lo})), encode_op(replace(op, **{name: hi}))
    diff = [(i, x ^ y) for i, (x, y) in enumerate(zip(a, b)) if x != y]
    if len(diff) != 1:
        raise ConfigError(f"descriptor field {name} spans {len(diff)} words; the C tables need one")
    word, mask = diff[0]
    lsb = (mask & -mask).bit_length() - 1
    width = mask.bit_length() - lsb
    if mask != ((1 << width) - 1) << lsb:
        raise ConfigError(f"descriptor field {name} is not one run of bits (mask 0x{mask:08X})")
    for v in {lo, hi, 0 if lo <= 0 <= hi else lo, cur}:   # the encoding is the C driver's
        w = encode_op(replace(op, **{name: v}))
        if w[word] != (a[word] & ~mask) | ((v & ((1 << width) - 1)) << lsb):
            raise ConfigError(f"descriptor field {name} is not stored as {width}-bit two's complement")
    return word, lsb, width, lo, hi


def exponent_tables(state, program) -> ExponentTables:
    """Measure the exponent bookkeeping of ``program`` (``compile_training(state, batch,
    config)``): for every exponent variable, ``compile_training`` and ``next_exponents``
    of the state with that variable moved by one give its coefficients in every field and
    every update; ``next_exponents`` with ``MAXACC`` of 0 and 2^47 gives the constants and
    the widths. Fields that leave the executor's exact range (``shift_range``, the
    exponent limit ``MAX_EXP``) are bounded as ``compile_training`` bounds them."""
    from ttforge.hw.trainer.program import TRAIN_DESC_WORDS, TrainOp, compile_training, next_exponents
    from ttforge.ir.arith import shift_range
    from ttforge.limits import MAX_EXP

    scalar = tuple(f.name for f in fields(TrainOp) if f.name != "label")
    keys = _exp_keys(program)
    init = tuple(_get_exp(state, k, i, t) for _, k, i, t in keys)
    n_ops = len(program.ops)
    zero, big = [0] * n_ops, [1 << 47] * n_ops

    def targets(st) -> tuple[int, ...]:
        nxt = next_exponents(st, program, zero)
        return tuple(_get_exp(nxt, k, i, t) for _, k, i, t in keys)

    def scalars(prog) -> list[dict]:
        return [{n: getattr(op, n) for n in scalar} for op in prog.ops]

    base_t = targets(state)
    base_f = scalars(program)
    coef_t: list[dict[int, int]] = [{} for _ in keys]
    coef_f: dict[tuple[int, str], dict[int, int]] = {}
    for n, (_, k, i, t) in enumerate(keys):
        for delta in (1, -1):
            probe = _set_exp(state, k, i, t, init[n] + delta)
            try:
                prog = compile_training(probe, program.batch, program.config)
            except ConfigError:
                continue
            break
        else:
            raise ConfigError(f"{k}_exps[{i}][{t}] cannot move by one without leaving a descriptor "
                              "field's range; the exponent tables cannot be measured for this state")
        if (prog.globals != program.globals or not np.array_equal(prog.cmem, program.cmem)
                or not np.array_equal(prog.bmem, program.bmem) or len(prog.ops) != n_ops):
            raise ConfigError("a program's images depend on its exponents; the C tables cannot hold it")
        for m, (a, b) in enumerate(zip(targets(probe), base_t)):
            if a != b:
                coef_t[m][n] = (a - b) // delta
        for j, (new, old) in enumerate(zip(scalars(prog), base_f)):
            for name in scalar:
                if new[name] != old[name]:
                    if isinstance(old[name], tuple):
                        raise ConfigError(f"descriptor field {name} depends on the exponents; the C "
                                          "tables hold scalar fields only")
                    coef_f.setdefault((j, name), {})[n] = (new[name] - old[name]) // delta
    # widths: M = 2^47 adds 48 - (bits - 1) to every target (bits <= 48)
    big_t = next_exponents(state, program, big)
    variables = []
    for n, (j, k, i, t) in enumerate(keys):
        bits = 49 - (_get_exp(big_t, k, i, t) - base_t[n])
        terms = tuple(sorted(coef_t[n].items()))
        const = base_t[n] - sum(c * init[v] for v, c in terms)
        lo, hi = (-MAX_EXP, MAX_EXP) if k == "step" else _INT32
        variables.append(ExpVar(k, i, t, j, bits, const, terms, lo, hi))
    flds = []
    sr_lo, sr_hi = shift_range(state.config.acc_bits)
    for (j, name), co in coef_f.items():
        op = program.ops[j]
        word, lsb, width, lo, hi = _field_layout(op, name)
        if name == "SHIFT" and program.maxacc_ops.get(j, ("",))[0] == "step":
            lo, hi = max(lo, sr_lo), min(hi, sr_hi)   # IntLayer: the forward shift is exact
        terms = tuple(sorted(co.items()))
        const = int(getattr(op, name)) - sum(c * init[v] for v, c in terms)
        flds.append(ExpField(j, name, j * TRAIN_DESC_WORDS + word, lsb, width, lo, hi, const, terms, 0,
                             op.label or f"operation {j}"))
    flds.sort(key=lambda f: (f.word, f.lsb))
    words = list(program.words)
    clear: dict[int, int] = {}
    for f in flds:
        clear[f.word] = clear.get(f.word, 0) | (((1 << f.width) - 1) << f.lsb)
    flds = [replace(f, base=words[f.word] & ~clear[f.word] & 0xFFFFFFFF) for f in flds]
    return ExponentTables(tuple(variables), init, tuple(flds))


def state_with_exponents(state, tables: ExponentTables, values: Sequence[int]):
    """``state`` with the exponent variables set to ``values`` (what the C driver holds)."""
    for var, v in zip(tables.variables, values):
        state = _set_exp(state, var.kind, var.layer, var.step, int(v))
    return state


# ---------------------------------------------------------------------------------------
# the C program
# ---------------------------------------------------------------------------------------
def _c_array(ctype: str, name: str, values: Sequence, per_line: int = 8, fmt=str, static: bool = True) -> list[str]:
    vals = list(values)
    if not vals:   # C99 has no zero-length arrays; the count says 0
        vals, fmt = [0], str
    lines = [f"{'static ' if static else ''}const {ctype} {name}[{len(vals)}] = {{"]
    for k in range(0, len(vals), per_line):
        lines.append("    " + ", ".join(fmt(v) for v in vals[k:k + per_line]) + ",")
    return lines + ["};"]


def _c_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def train_program_c(state, batch: int, config, *, symbol: str = "ttforge_train_program",
                    tables: ExponentTables | None = None) -> str:
    """C source defining ``const ttftd_program <symbol>`` (the training program of
    ``state`` on batches of ``batch`` samples for engine ``config``: descriptors, CMEM and
    BMEM images, program registers, generator state, exponent tables, the mutable
    exponent variables, and ``act_bits`` and the classes the driver checks samples
    against), with ``#error`` checks that ``ttforge_train_regs.h`` was
    generated for ``config``. Deterministic: the same inputs give the same text."""
    from ttforge.hw.trainer.program import TrainEngineConfig, compile_training
    from ttforge.hw.trainer.regmap import TrainRegisterMap

    from ttforge.ir.train import TrainState

    if not isinstance(config, TrainEngineConfig):
        raise ConfigError("train_program_c: config must be a ttforge.hw.trainer.program.TrainEngineConfig")
    if not isinstance(state, TrainState):
        raise ConfigError("train_program_c: state must be a ttforge.ir.train.TrainState (load_state(path))")
    sym = _ident(symbol)
    program = compile_training(state, batch, config)
    tab = tables if tables is not None else exponent_tables(state, program)
    g = program.globals
    words = program.words
    terms: list[tuple[int, int]] = []

    def put(ts) -> tuple[int, int]:
        terms.extend(ts)
        return len(terms) - len(ts), len(ts)

    var_rows, field_rows = [], []
    for v in tab.variables:
        t0, nt = put(v.terms)
        var_rows.append(f"{{{_KINDS[v.kind]}u, {v.layer}u, {v.step}u, {v.op}u, {v.bits}u, {v.lo}, {v.hi}, "
                        f"{v.const}, {t0}u, {nt}u}}")
    for f in tab.fields:
        t0, nt = put(f.terms)
        field_rows.append(f"{{{f.word}u, {f.lsb}u, {f.width}u, {f.lo}, {f.hi}, {f.const}, {t0}u, {nt}u, "
                          f"0x{f.base:08X}u}}")
    cfg = TrainRegisterMap(config).to_dict()["config"]
    lines = [
        "/* ttforge training program (generated by ttforge.firmware.train_c_driver.train_program_c; "
        "do not edit).",
        f" * {len(program.ops)} operations ({len(words)} DMEM words), CMEM {program.cmem.size} elements, "
        f"BMEM {program.bmem.size}, batch {batch},",
        f" * {len(tab.variables)} exponent variables, {len(tab.fields)} exponent-dependent descriptor fields.",
        f" * Load with ttftd_load_program(&dev, &{sym}); train with ttftd_step. */",
        '#include "ttforge_train_driver.h"',
        "",
        "/* the register header must describe the engine this program was compiled for */",
    ]
    for k, v in cfg.items():
        macro = f"TTFORGE_TRAIN_CFG_{k.upper()}"
        lines += [f"#if !defined({macro}) || {macro} != {int(v)}u",
                  f'#error "{TRAIN_REGS_H} is for another training engine ({k} != {int(v)}); '
                  f'regenerate it or the program"', "#endif"]
    lines += ["", f"#define {sym.upper()}_BATCH {batch}u", f"#define {sym.upper()}_IN_COUNT {g['IN_COUNT']}u", ""]
    lines += _c_array("uint32_t", f"{sym}_dmem", words, 6, lambda w: f"0x{int(w):08X}u")
    lines += _c_array("int32_t", f"{sym}_cmem", [int(v) for v in program.cmem], 12)
    lines += _c_array("int32_t", f"{sym}_bmem", [int(v) for v in program.bmem], 8)
    lines += _c_array("ttftd_var", f"{sym}_vars", var_rows, 1) if var_rows else \
        [f"static const ttftd_var {sym}_vars[1] = {{{{0u, 0u, 0u, 0u, 2u, 0, 0, 0, 0u, 0u}}}};"]
    lines += _c_array("ttftd_field", f"{sym}_fields", field_rows, 1) if field_rows else \
        [f"static const ttftd_field {sym}_fields[1] = {{{{0u, 0u, 1u, 0, 0, 0, 0u, 0u, 0u}}}};"]
    lines += _c_array("ttftd_term", f"{sym}_terms", [f"{{{v}u, {c}}}" for v, c in terms], 4) if terms else \
        [f"static const ttftd_term {sym}_terms[1] = {{{{0u, 0}}}};"]
    lines += _c_array("char *const", f"{sym}_labels", [_c_str(f"{f.label}: {f.name}") for f in tab.fields]
                      or ['""'], 1)
    nv = max(1, len(tab.variables))
    lines += [f"static int32_t {sym}_exps[{nv}] = {{{', '.join(map(str, tab.init)) or '0'}}};",
              f"static int32_t {sym}_scratch[{nv}];", "",
              f"extern const ttftd_program {sym};   /* external linkage in C++ too */",
              f"const ttftd_program {sym} = {{",
              f"    {len(program.ops)}u, {batch}u, {g['BW_LOG']}u, {g['IN_COUNT']}u, {g['IN_BASE']}u, "
              f"{g['STOCH']}u, 0x{g['RNG']:08X}u,",
              f"    {sym}_dmem, {len(words)}u, {sym}_cmem, {program.cmem.size}u, {sym}_bmem, {program.bmem.size}u,",
              f"    {len(tab.variables)}u, {sym}_vars, {len(tab.fields)}u, {sym}_fields, {sym}_terms, {sym}_labels,",
              f"    {sym}_exps, {sym}_scratch,",
              # the sample limits ttftd_run_batch checks (BAD_SAMPLE); compile_training has
              # refused classes the act_bits labels cannot carry (check_labels_fit)
              f"    {state.config.act_bits}u, {state.n_classes}u", "};", ""]
    return "\n".join(lines)


def export_train_driver(config, out_dir: str | os.PathLike, state=None, batch: int | None = None, *,
                        sim: bool = False) -> list[Path]:
    """Write ``ttforge_train_regs.h`` for ``config``, the driver sources (and the simulation
    hooks and test program if ``sim``) and, with a ``state`` and ``batch``,
    ``ttforge_train_program.c`` into ``out_dir``; return the paths written (each through a
    temporary name, then renamed)."""
    from ttforge.hw.trainer.regmap import TrainRegisterMap

    if (state is None) != (batch is None):
        raise ConfigError("export_train_driver: give both state and batch (or neither)")
    files: dict[str, str] = {TRAIN_REGS_H: TrainRegisterMap(config).to_c_header()}
    if state is not None:
        files["ttforge_train_program.c"] = train_program_c(state, batch, config)
    out = check_output_dir(out_dir, "out_dir")
    for p in train_driver_sources(sim=sim):
        files[p.name] = p.read_text()
    return [atomic_write_text(out / name, text) for name, text in files.items()]


# ---------------------------------------------------------------------------------------
# the Verilated TrainAccel behind the AXI4-Lite shim (for testing the driver)
# ---------------------------------------------------------------------------------------
#: the harness sources (``sim/native/``): the shim's C ABI and its implementation for the training top
TRAIN_AXIL_SOURCES = ("axil_shim.h", "axil_master.h", "train_axil_sim.cpp", "train_axil_main.cpp")
_TRAIN_AXIL_EXE = "ttf_train_axil"
_TRAIN_AXIL_TOP = "ttforge_train"


class TrainAxilBuild(NativeBuild):
    """A Verilated ``TrainAccel``: ``include/`` holds ``ttforge_train_regs.h`` and the shim
    header, ``obj_dir/`` the model's libraries (link a C driver with
    :func:`link_train_c_driver`), ``exe`` a smoke program (reads ``ID``)."""

    exe_name: ClassVar[str] = _TRAIN_AXIL_EXE


def build_train_axil(config, *, build_root: str | os.PathLike | None = None, fault: str | None = None,
                     timeout: float = 3600) -> TrainAxilBuild:
    """Build (or find in the cache, :func:`ttforge.sim.native.verilate_cached`) the
    Verilated ``TrainAccel(config)`` with the shim of ``sim/native/axil_shim.h``."""
    from ttforge.hw.trainer.regmap import TrainRegisterMap
    from ttforge.hw.trainer.top import verilator_waivers, verilog
    from ttforge.sim.native import (VERILATOR_MAKEFLAGS, NATIVE_DIR, build_key, check_native_tools, default_build_root,
                                   recipe_line, verilate_cached, verilator_args)
    from ttforge.sim.train_native import no_zero_meminit

    cxx = check_native_tools()
    root = Path(build_root) if build_root is not None else default_build_root()
    with no_zero_meminit():     # two-state Verilator: the all-zero initial contents are moot
        text = verilog(config, fault=fault)
    sources = {n: (NATIVE_DIR / n).read_bytes() for n in TRAIN_AXIL_SOURCES}
    header = TrainRegisterMap(config).to_c_header().encode()
    fixed = verilator_args(_TRAIN_AXIL_TOP)
    key = "train-axil-" + build_key(recipe_line("train-axil", 1, fixed, cxx), text.encode(),
                                    verilator_waivers().encode(), header,
                                    *(n.encode() + b"\0" + s for n, s in sorted(sources.items())))
    files = {**{f"include/{n}": s for n, s in sources.items()}, f"include/{TRAIN_REGS_H}": header,
             f"{_TRAIN_AXIL_TOP}.v": text.encode(), f"{_TRAIN_AXIL_TOP}.vlt": verilator_waivers().encode()}

    def args_for(tmp: Path) -> list[str]:
        inc = tmp / "include"
        return [*fixed, "--Mdir", "obj_dir", "-CFLAGS", f"-std=c++17 -I{inc}", "-MAKEFLAGS", VERILATOR_MAKEFLAGS,
                "-o", f"../{_TRAIN_AXIL_EXE}", f"{_TRAIN_AXIL_TOP}.vlt", f"{_TRAIN_AXIL_TOP}.v",
                str(inc / "train_axil_sim.cpp"), str(inc / "train_axil_main.cpp")]

    directory, cached, seconds = verilate_cached(root, key, _TRAIN_AXIL_EXE, files, args_for, cxx=cxx,
                                                 timeout=timeout, what="training AXI4-Lite harness")
    return TrainAxilBuild(config, directory, key, cached=cached, build_seconds=seconds)


def link_train_c_driver(build: TrainAxilBuild, sources: Sequence[str | os.PathLike], output: str | os.PathLike,
                        *, cflags: Sequence[str] = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"),
                        timeout: float = 600) -> Path:
    """Compile C ``sources`` and link them with ``build``'s Verilated training top and shim
    (:func:`ttforge.sim.native.link_c_driver` with this build's libraries)."""
    from ttforge.sim.native import link_c_driver

    return link_c_driver(build, [*sources], output, cflags=(*cflags, f"-I{C_DIR}"), timeout=timeout,
                         libs=("train_axil_sim.o", "verilated.o", "verilated_threads.o",
                               f"V{_TRAIN_AXIL_TOP}__ALL.a"))
