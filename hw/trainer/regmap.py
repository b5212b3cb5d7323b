"""The AXI4-Lite register map of the training top (:class:`~ttforge.hw.trainer.top.TrainAccel`).

One source of truth, like the inference map (:mod:`ttforge.hw.regmap`), built from the
same :class:`~ttforge.hw.regmap.Register` / :class:`~ttforge.hw.regmap.Field` types and
emitted as JSON, a C header and Markdown (:meth:`TrainRegisterMap.to_json`,
:meth:`~TrainRegisterMap.to_c_header`, :meth:`~TrainRegisterMap.to_markdown`).

The address space is eight equal, naturally aligned regions of ``region_bytes``
(the smallest power of two, at least 0x100, that holds the largest window): region 0
holds the registers, regions 1..7 the windows onto the engine's memories ``DMEM``,
``CMEM``, ``BMEM``, ``MAXACC``, ``ACT``, ``GRAD``, ``LABEL`` (one element per 32-bit word,
through the engine's ``host`` port). ``DMEM``, ``CMEM`` and ``BMEM`` are read/write, the
others read-only. Windows are reachable only while the engine is idle
(``STATUS.BUSY`` = 0); otherwise an access answers ``SLVERR`` and has no effect. Every
address that is neither a register nor inside a window answers ``SLVERR``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ttforge.errors import ConfigError
from ttforge.hw.regmap import (Field, MapLookup, Register, Window, _c_comment, _md, _pack,
                                c_register_defines, guarded_c_header, markdown_register_tables,
                                register_dicts, window_dicts)
from ttforge.ir.arith import ARITHMETIC_SPEC_VERSION

__all__ = ["TRAIN_REGMAP_VERSION", "TRAIN_MAGIC", "TrainWindow", "TrainRegisterMap",
           "train_register_map", "TRAIN_ERROR_TEXT", "TOP_ERRORS", "TRAIN_COUNTERS", "WINDOW_ORDER",
           "bw_log_bits"]

#: version of the training register map (``VERSION.HW``)
TRAIN_REGMAP_VERSION = 1
#: ``ID`` of the training top: ASCII "TTFT" (the inference top reads "TTFG")
TRAIN_MAGIC = 0x54544654
#: the windows in region order (region ``i + 1``); the names are ``HostSel`` names
WINDOW_ORDER = ("DMEM", "CMEM", "BMEM", "MAXACC", "ACT", "GRAD", "LABEL")

#: ``ERROR_CODE.CODE`` values (the engine's :class:`~ttforge.hw.trainer.engine.TrainError`)
TRAIN_ERROR_TEXT = {
    0: ("NONE", "no error"),
    1: ("BAD_DESC", "a descriptor loop bound is 0, SAT_BITS is outside 2..store width, or LOSS "
                    "classes are outside 1..max_classes"),
    2: ("ACT_RANGE", "an ACT address at or beyond act_depth"),
    3: ("GRAD_RANGE", "a GRAD address at or beyond grad_depth"),
    4: ("CMEM_RANGE", "a CMEM address at or beyond core_depth"),
    5: ("BMEM_RANGE", "a BMEM address at or beyond bias_depth"),
    6: ("DESC_RANGE", "desc_depth operations ran and none had LAST set"),
    7: ("BAD_LABEL", "a label that is no class (at or beyond the number of classes, or negative)"),
    8: ("BAD_PROGRAM", "BATCH outside 1..slots, IN_COUNT 0, or the input beyond act_depth"),
    16: ("TLAST_EARLY", "CTRL.TLAST_CHECK: tlast on a feature beat (before the sample's label); "
                        "ERROR_CODE.OP is the sample of the batch"),
    17: ("TLAST_LATE", "CTRL.TLAST_CHECK: a label without tlast; the rest of the packet is "
                       "discarded up to its tlast; ERROR_CODE.OP is the sample of the batch"),
}

#: the codes the top raises itself (the ``s_axis`` TLAST check), name -> code: above the
#: engine's 4-bit ``TrainError`` (codes 0..15), so they never collide with one it adds
TOP_ERRORS = {"TLAST_EARLY": 16, "TLAST_LATE": 17}

#: the 48-bit counters, each read as ``<NAME>_LO`` then ``<NAME>_HI``
TRAIN_COUNTERS = (
    ("CYCLES", "clock cycles with STATUS.BUSY set (input included)", "status.cycles"),
    ("MAC_CYCLES", "sum over issued iterations of the L lanes (busy MAC-lane cycles)",
     "status.mac_cycles"),
)


def _clog2(n: int) -> int:
    return max(0, int(n) - 1).bit_length()


def bw_log_bits(max_batch: int) -> int:
    """Width of ``BW_LOG`` (as the engine declares ``program.bw_log``)."""
    return max(1, _clog2(_clog2(max_batch) + 1))


@dataclass(frozen=True)
class TrainWindow(Window):
    """A window of the training map: like :class:`ttforge.hw.regmap.Window`, with an
    ``access`` (``"RW"``: read and write; ``"RO"``: writes answer ``SLVERR``) and the
    engine memory it reaches (``memory``, a ``HostSel`` name)."""

    access: str = "RW"


def _f(name, lsb, width, description="", bind=None, signed=False) -> Field:
    return Field(name, lsb, width, description, signed=signed, bind=bind)


@dataclass(frozen=True)
class TrainRegisterMap(MapLookup):
    """The register map of one :class:`~ttforge.hw.trainer.program.TrainEngineConfig`."""

    config: Any
    registers: tuple[Register, ...] = field(init=False)
    windows: tuple[TrainWindow, ...] = field(init=False)
    region_bytes: int = field(init=False)

    def __post_init__(self) -> None:
        from ttforge.hw.trainer.program import TrainEngineConfig

        if not isinstance(self.config, TrainEngineConfig):
            raise ConfigError(f"TrainRegisterMap needs a TrainEngineConfig, got "
                              f"{type(self.config).__name__}")
        sizes = [d * 4 for d in _depths(self.config).values()]
        rb = max(0x100, 1 << _clog2(max(sizes)))
        object.__setattr__(self, "region_bytes", rb)
        object.__setattr__(self, "registers", tuple(_registers(self.config)))
        object.__setattr__(self, "windows", tuple(_windows(self.config, rb)))
        spans = sorted([(r.addr, r.addr + 4, r.name) for r in self.registers]
                       + [(w.base, w.base + w.size_bytes, w.name) for w in self.windows])
        for (a0, a1, n0), (b0, _, n1) in zip(spans, spans[1:]):
            if b0 < a1:  # pragma: no cover - an invariant of the layout
                raise AssertionError(f"training register map: {n0} and {n1} overlap")

    @property
    def addr_bits(self) -> int:
        """AXI4-Lite address width: eight regions."""
        return _clog2(self.region_bytes) + 3

    # -- views ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        from ttforge.hw.trainer.engine import DESC_FIELDS
        from ttforge.hw.trainer.program import OP_FIELDS, TRAIN_DESC_WORDS

        c = self.config
        return {
            "format": "ttforge-train-regmap",
            "version": TRAIN_REGMAP_VERSION,
            "arithmetic_version": ARITHMETIC_SPEC_VERSION,
            "data_bits": 32,
            "addr_bits": self.addr_bits,
            "region_bytes": self.region_bytes,
            "config": _config_dict(c),
            "registers": register_dicts(self.registers, signed=True),
            "windows": window_dicts(self.windows, access=True),
            "counters": {"bits": 48, "names": [n for n, _, _ in TRAIN_COUNTERS],
                         "latch": "reading <NAME>_LO latches <NAME>_HI"},
            "error_codes": [{"code": k, "name": n, "description": d}
                            for k, (n, d) in TRAIN_ERROR_TEXT.items()],
            "descriptor": {
                "words": TRAIN_DESC_WORDS,
                "layout": [{"word": i, "name": n} for i, n in enumerate(DESC_FIELDS)],
                "flags": [{"name": n, "lsb": lsb, "width": w, "signed": s,
                           "mask": ((1 << w) - 1) << lsb} for n, (lsb, w, s) in OP_FIELDS.items()],
                "ops": {"CONTRACT": 0, "WGRAD": 1, "LOSS": 2, "ZFILL": 3},
            },
        }

    def to_c_header(self, guard: str = "TTFORGE_TRAIN_REGS_H") -> str:
        """A C99 header, every name prefixed ``TTFORGE_TRAIN_`` (it can be included next
        to the inference header)."""
        d = self.to_dict()
        P = "TTFORGE_TRAIN_"
        out = [
            "/* ttforge training register map (generated by ttforge.hw.trainer.regmap; do not edit).",
            f" * Register map version {TRAIN_REGMAP_VERSION}, arithmetic spec version "
            f"{ARITHMETIC_SPEC_VERSION}.",
            " * All registers are 32 bits wide; addresses are byte offsets from the core's base. */",
        ]
        head, out = out, [
            f"#define {P}MAGIC 0x{TRAIN_MAGIC:08X}u",
            f"#define {P}REGMAP_VERSION {TRAIN_REGMAP_VERSION}u",
            f"#define {P}ARITHMETIC_VERSION {ARITHMETIC_SPEC_VERSION}u",
            f"#define {P}ADDR_BITS {self.addr_bits}u",
            f"#define {P}REGION_BYTES 0x{self.region_bytes:X}u",
            "",
            "/* configuration this header was generated for (also readable in CFG_*) */",
        ]
        for k, v in d["config"].items():
            if isinstance(v, str):
                continue
            out.append(f"#define {P}CFG_{k.upper()} {int(v)}u")
        out += ["", "/* registers */", *c_register_defines(self.registers, P)]
        out += ["", "/* windows: element i at BASE + 4*i, one element per 32-bit word */"]
        for w in self.windows:
            out.append(f"/* {w.name} ({w.access}): {_c_comment(w.description)} */")
            out.append(f"#define {P}{w.name}_BASE 0x{w.base:08X}u")
            out.append(f"#define {P}{w.name}_DEPTH {w.depth}u")
            out.append(f"#define {P}{w.name}_DATA_BITS {w.data_bits}u")
        out += ["", "/* ERROR_CODE.CODE values */"]
        for e in d["error_codes"]:
            out.append(f"#define {P}ERR_{e['name']} {e['code']}u /* {_c_comment(e['description'])} */")
        desc = d["descriptor"]
        out += ["", f"/* operation descriptor: {desc['words']} words at DMEM word "
                    f"{desc['words']}*op + w */",
                f"#define {P}DESC_WORDS {desc['words']}u"]
        for e in desc["layout"]:
            out.append(f"#define {P}DESC_{e['name']} {e['word']}u")
        for f in desc["flags"]:
            out.append(f"#define {P}DESC_FLAGS_{f['name']}_SHIFT {f['lsb']}u")
            out.append(f"#define {P}DESC_FLAGS_{f['name']}_MASK 0x{f['mask']:08X}u")
        for name, v in desc["ops"].items():
            out.append(f"#define {P}OP_{name} {v}u")
        return guarded_c_header(guard, "ttforge_train_regs.h", head, out)

    def to_markdown(self) -> str:
        """Registers, bitfields, windows and error codes as Markdown tables."""
        c = self.config
        lines = [
            f"Training register map version {TRAIN_REGMAP_VERSION} for L={c.lanes}: "
            f"{self.addr_bits}-bit byte addresses, eight regions of 0x{self.region_bytes:X} "
            "bytes. Unlisted addresses answer `SLVERR`.",
            "",
            *markdown_register_tables(self.registers),
        ]
        lines += ["", "Windows (one element per 32-bit word; only while `STATUS.BUSY` is 0):", "",
                  "| base | window | access | elements | bits | description |",
                  "|---|---|---|---|---|---|"]
        for w in self.windows:
            lines.append(f"| `0x{w.base:08X}` | `{w.name}` | {w.access} | {w.depth} | {w.data_bits}"
                         f"{' (signed)' if w.signed else ''} | {_md(w.description)} |")
        lines += ["", "`ERROR_CODE.CODE` values:", "", "| code | name | meaning |", "|---|---|---|"]
        for k, (n, d) in TRAIN_ERROR_TEXT.items():
            lines.append(f"| {k} | `{n}` | {_md(d)} |")
        return "\n".join(lines) + "\n"


def train_register_map(config) -> TrainRegisterMap:
    """The training register map of ``config`` (a ``TrainEngineConfig``)."""
    return TrainRegisterMap(config)


def _config_dict(c) -> dict[str, Any]:
    out = {k: getattr(c, k) for k in ("lanes", "acc_bits", "act_depth", "grad_depth", "core_depth",
                                      "bias_depth", "desc_depth", "max_batch", "max_classes")}
    tc = c.train
    for k in ("w_bits", "master_bits", "act_bits", "inter_bits", "grad_bits", "prob_bits",
              "table_bits", "table_frac_bits", "bias_bits"):
        out[k] = getattr(tc, k)
    return {k: int(v) for k, v in out.items()}


def _depths(c) -> dict[str, int]:
    from ttforge.hw.trainer.program import TRAIN_DESC_WORDS

    return {"DMEM": c.desc_depth * TRAIN_DESC_WORDS, "CMEM": c.core_depth, "BMEM": c.bias_depth,
            "MAXACC": 2 * c.desc_depth, "ACT": c.act_depth * c.lanes,
            "GRAD": c.grad_depth * c.lanes, "LABEL": c.max_batch}


def _windows(c, rb: int) -> list[TrainWindow]:
    tc = c.train
    dep = _depths(c)
    info = {
        "DMEM": (32, False, "RW", "operation descriptors: word 32*op + w of operation op"),
        "CMEM": (tc.master_bits, True, "RW", "master core elements (the P x K layout of each step); "
                 "read back sign-extended"),
        "BMEM": (tc.bias_bits, True, "RW", "bias elements; read back sign-extended"),
        "MAXACC": (32, False, "RO", "largest |acc| of each CONTRACT of the last step: word 2*op "
                   "bits 31:0, word 2*op+1 the bits above"),
        "ACT": (c.act_store_bits, True, "RO", "activations: element L*word + lane (sample b of a "
                "batch vector in lane b mod L)"),
        "GRAD": (c.grad_store_bits, True, "RO", "gradients: element L*word + lane"),
        "LABEL": (16, False, "RO", "the labels of the last batch, one per batch slot"),
    }
    out = []
    for i, name in enumerate(WINDOW_ORDER):
        bits, sgn, acc, d = info[name]
        out.append(TrainWindow(name, (i + 1) * rb, dep[name], bits, name, sgn, d,
                               f"host.{name.lower()}", access=acc))
    return out


def _registers(c) -> list[Register]:
    from ttforge.hw.trainer.program import TRAIN_DESC_WORDS

    tc = c.train
    regs: list[Register] = []

    def const(name, addr, description, fields=(), value=0):
        regs.append(Register(name, addr, "RO", 32, value, description, tuple(fields), value))

    vf = (_f("HW", 0, 16, "training register map version"),
          _f("ARITH", 16, 8, "docs/arithmetic.md version"),
          _f("DESC_WORDS", 24, 8, "words per operation descriptor"))
    const("ID", 0x000, "identification: ASCII \"TTFT\" (training top)", value=TRAIN_MAGIC)
    const("VERSION", 0x004, "interface versions", vf,
          _pack(vf, {"HW": TRAIN_REGMAP_VERSION, "ARITH": ARITHMETIC_SPEC_VERSION,
                     "DESC_WORDS": TRAIN_DESC_WORDS}))
    lf = (_f("LANES", 0, 8, "MAC lanes L"), _f("ACC_BITS", 8, 8, "accumulator width"),
          _f("TABLE_FRAC_BITS", 16, 8, "exponent table fraction bits F"))
    const("CFG_LANES", 0x008, "lanes and accumulator", lf,
          _pack(lf, {"LANES": c.lanes, "ACC_BITS": c.acc_bits, "TABLE_FRAC_BITS": tc.table_frac_bits}))
    wf = (_f("W_BITS", 0, 8, "forward core width"), _f("MASTER_BITS", 8, 8, "master (CMEM) width"),
          _f("ACT_BITS", 16, 8, "activation / stream element width"),
          _f("BIAS_BITS", 24, 8, "bias (BMEM) width"))
    const("CFG_WIDTHS", 0x00C, "element widths", wf,
          _pack(wf, {"W_BITS": tc.w_bits, "MASTER_BITS": tc.master_bits, "ACT_BITS": tc.act_bits,
                     "BIAS_BITS": tc.bias_bits}))
    wf2 = (_f("INTER_BITS", 0, 8, "intermediate width"), _f("GRAD_BITS", 8, 8, "gradient width"),
           _f("PROB_BITS", 16, 8, "softmax probability bits G"),
           _f("TABLE_BITS", 24, 8, "exponent table bits P"))
    const("CFG_WIDTHS2", 0x010, "more element widths", wf2,
          _pack(wf2, {"INTER_BITS": tc.inter_bits, "GRAD_BITS": tc.grad_bits,
                      "PROB_BITS": tc.prob_bits, "TABLE_BITS": tc.table_bits}))
    for i, (name, v, d) in enumerate((
            ("CFG_ACT_DEPTH", c.act_depth, "ACT depth, words of L elements"),
            ("CFG_GRAD_DEPTH", c.grad_depth, "GRAD depth, words of L elements"),
            ("CFG_CORE_DEPTH", c.core_depth, "CMEM depth, elements"),
            ("CFG_BIAS_DEPTH", c.bias_depth, "BMEM depth, elements"),
            ("CFG_DESC_DEPTH", c.desc_depth, "DMEM depth, operations"),
            ("CFG_MAX_BATCH", c.max_batch, "batch slots the label memory holds"),
            ("CFG_MAX_CLASSES", c.max_classes, "widest softmax"))):
        const(name, 0x014 + 4 * i, d, value=v)

    regs.append(Register("CTRL", 0x040, "RW", 4, 0, "control",
                         (_f("ENABLE", 0, 1, "1: run a step for every batch that arrives (continuous); "
                             "0: run one step per CMD.START", "control.enable"),
                          _f("IRQ_DONE_EN", 1, 1, "raise irq while IRQ_STATUS.DONE is set"),
                          _f("IRQ_ERROR_EN", 2, 1, "raise irq while IRQ_STATUS.ERROR is set"),
                          _f("TLAST_CHECK", 3, 1, "1: each sample is one s_axis packet, tlast on its "
                             "label and nowhere else (else TLAST_EARLY / TLAST_LATE); 0: tlast is "
                             "ignored"))))
    regs.append(Register("CMD", 0x044, "WO", 3, 0,
                         "commands: write 1 to a bit to perform it (reads answer SLVERR)",
                         (_f("START", 0, 1, "take one batch of BATCH samples from s_axis and run one "
                             "training step (clears STATUS.DONE)"),
                          _f("SOFT_RESET", 1, 1, "abort the step in flight, clear STATUS.ERROR and "
                             "ERROR_CODE; memories, registers and counters keep", "control.soft_reset"),
                          _f("CLEAR_ERROR", 2, 1, "clear STATUS.ERROR and ERROR_CODE",
                             "control.clear_error"))))
    regs.append(Register("STATUS", 0x048, "RO", 5, 0, "engine state",
                         (_f("BUSY", 0, 1, "the engine has left idle: it waits for or takes "
                             "samples, or runs the step; the windows and RNG writes answer SLVERR", "status.busy"),
                          _f("DONE", 1, 1, "the last step completed; cleared by CMD.START and when "
                             "the next step starts"),
                          _f("ERROR", 2, 1, "a step stopped with an error (ERROR_CODE); no step runs "
                             "until CMD.CLEAR_ERROR or CMD.SOFT_RESET", "status.error"),
                          _f("ARMED", 3, 1, "CMD.START was given and the step has not started yet"),
                          _f("IN_OPEN", 4, 1, "s_axis takes samples (s_axis_tready)"))))
    regs.append(Register("ERROR_CODE", 0x04C, "RO", 32, 0, "the first error since it was last cleared",
                         (_f("CODE", 0, 8, "an error code (0: none)", "status.error_code"),
                          _f("OP", 16, 16, "the operation (descriptor index) that failed; for "
                             "TLAST_EARLY / TLAST_LATE the sample of the batch",
                             "status.error_op"))))
    regs.append(Register("IRQ_STATUS", 0x050, "W1C", 2, 0,
                         "interrupt causes (sticky; write 1 to clear); irq = |(IRQ_STATUS & CTRL.IRQ_*_EN)",
                         (_f("DONE", 0, 1, "a step completed", "status.done_pulse"),
                          _f("ERROR", 1, 1, "a step stopped with an error"))))
    regs.append(Register("OP", 0x054, "RO", 16, 0, "the operation the engine is at", bind="status.op"))
    regs.append(Register("BATCH", 0x060, "RW", 16, 0, "samples per step (1..slots)", bind="program.batch"))
    regs.append(Register("BW_LOG", 0x064, "RW", bw_log_bits(c.max_batch), 0,
                         "log2 of the words of a batch vector (BW = slots / L)", bind="program.bw_log"))
    regs.append(Register("IN_COUNT", 0x068, "RW", 16, 0, "features per sample (the label follows)",
                         bind="program.in_count"))
    regs.append(Register("IN_BASE", 0x06C, "RW", 32, 0, "ACT word of the input batch vector",
                         bind="program.in_base"))
    regs.append(Register("STOCH", 0x070, "RW", 1, 0, "1: stochastic rounding of the updates; "
                         "0: nearest", bind="program.stoch"))
    regs.append(Register("RNG", 0x074, "RW", 32, 0,
                         "the xorshift32 generator: a read returns its state, a write loads it "
                         "(only while idle, else SLVERR)", bind="status.rng"))
    addr = 0x080
    for name, description, bind in TRAIN_COUNTERS:
        regs.append(Register(f"{name}_LO", addr, "RO", 32, 0,
                             f"{description}: bits 31:0 (reading latches {name}_HI)", bind=bind))
        regs.append(Register(f"{name}_HI", addr + 4, "RO", 16, 0,
                             f"{description}: bits 47:32, as latched by the last {name}_LO read"))
        addr += 8
    regs.append(Register("STEPS", 0x090, "RO", 32, 0, "training steps completed", bind="status.steps"))
    regs.append(Register("CHANGED", 0x094, "RO", 32, 0, "updates that changed a stored value",
                         bind="status.changed"))
    return regs
