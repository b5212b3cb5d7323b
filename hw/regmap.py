"""The AXI4-Lite register map: the single source of every view of it.

:class:`RegisterMap` is built from an :class:`~ttforge.hw.config.AccelConfig` and lists
the 32-bit registers (name, byte address, access, width, reset, bitfields) and the
write windows into the descriptor, core and bias memories. The RTL register file
(``ttforge.hw.axil.RegisterFile``), the load image (``ttforge.hw.program.load_image``),
the host drivers and the documentation all read this object, or one of its emitted
views: :meth:`RegisterMap.to_json`, :meth:`RegisterMap.to_c_header`,
:meth:`RegisterMap.to_markdown`.

The address space is four equal, naturally aligned regions of
``AccelConfig.region_bytes`` bytes: registers, ``DMEM``, ``CMEM``, ``BMEM`` (so the two
top address bits select the region). Every address that is neither a register nor
inside a window is unmapped and answered with ``SLVERR``; so are reads of ``WO``
registers and windows and writes of ``RO`` registers.

This module also owns the descriptor word/bitfield table (:data:`DESCRIPTOR_WORDS`,
:data:`FLAGS_FIELDS`) and the engine error codes (:class:`ErrorCode`), which the C header
exports for drivers.
"""

from __future__ import annotations

import enum
import json
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterator

from ttforge.errors import ConfigError
from ttforge.hw.config import COUNTER_BITS, DESC_WORDS, AccelConfig
from ttforge.ir.arith import ARITHMETIC_SPEC_VERSION

__all__ = [
    "REGMAP_VERSION", "MAGIC", "Access", "Field", "Register", "Window", "RegisterMap",
    "ErrorCode", "DESCRIPTOR_WORDS", "FLAGS_FIELDS", "COUNTERS", "config_identity",
]

#: Version of the register map and engine interface (``VERSION.HW``).
REGMAP_VERSION = 1
#: ``ID`` register value: ASCII "TTFG".
MAGIC = 0x54544647


def config_identity(config: AccelConfig) -> dict[str, int]:
    """The configuration values that identify a build, in a fixed order.

    They are the header's ``TTFORGE_CFG_*`` and the config words of a binary load image
    (``ttforge.hw.program.load_image_to_bytes``), which loaders compare before writing.
    ``requant_units`` is resolved (the units the engine has).
    """
    return {**config.to_dict(), "requant_units": config.requant_count}


class Access(str, enum.Enum):
    """Register access kinds (see ``docs/hardware.md``, "Register map")."""

    RO = "RO"    # read-only; writes answer SLVERR
    RW = "RW"    # read/write; WSTRB byte lanes honoured
    W1C = "W1C"  # sticky bits set by the hardware; writing 1 clears a bit
    WO = "WO"    # write-only command: a one-cycle pulse of the written bits; reads SLVERR

    def __str__(self) -> str:  # pragma: no cover - cosmetic
        return self.value


@dataclass(frozen=True)
class Field:
    """A bitfield of a register: bits ``lsb .. lsb + width - 1``."""

    name: str
    lsb: int
    width: int
    description: str = ""
    #: two's complement (the hardware reads the field as a signed number)
    signed: bool = False
    #: the engine port the field is bound to in the RTL top (``"control.enable"``; see
    #: :class:`ttforge.hw.top.TTAccel`), or ``None``
    bind: str | None = None

    @property
    def mask(self) -> int:
        """The field's mask in the register (already shifted)."""
        return ((1 << self.width) - 1) << self.lsb

    @property
    def shift(self) -> int:
        return self.lsb

    def get(self, word: int) -> int:
        return (word >> self.lsb) & ((1 << self.width) - 1)

    def put(self, value: int) -> int:
        if not 0 <= value < (1 << self.width):
            raise ConfigError(f"field {self.name}={value} does not fit in {self.width} bits")
        return value << self.lsb


@dataclass(frozen=True)
class Register:
    """One 32-bit register.

    Attributes
    ----------
    name : str
        Upper-case name; the RTL port is the lower-case form.
    addr : int
        Byte address (a multiple of 4).
    access : str
        ``"RO"``, ``"RW"``, ``"W1C"`` or ``"WO"``.
    width : int
        Implemented bits ``0 .. width-1`` (the rest read as 0 and ignore writes).
    reset : int
        Value after reset (for a constant ``RO`` register: its value).
    description : str
    fields : tuple of Field
        Bitfields (a register without fields is one number).
    value : int or None
        For a constant ``RO`` register (identification and configuration), the value
        the RTL ties its input to; ``None`` for registers driven by the engine.
    """

    name: str
    addr: int
    access: str
    width: int = 32
    reset: int = 0
    description: str = ""
    fields: tuple[Field, ...] = ()
    value: int | None = None
    #: the engine port the whole register is bound to in the RTL top (a counter pair:
    #: on ``<NAME>_LO``), or ``None`` (constants; registers whose fields are bound)
    bind: str | None = None

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} has no field {name}")

    @property
    def port(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Window:
    """A write-only window: one 32-bit word per element of a memory.

    Element ``i`` is written at byte address ``base + 4*i``; the memory takes the low
    ``data_bits`` bits of the word (``signed``: the driver writes the element
    sign-extended to 32 bits). Reads answer ``SLVERR``; so does a write whose ``WSTRB``
    is not ``0b1111``.
    """

    name: str
    base: int
    depth: int
    data_bits: int
    memory: str
    signed: bool
    description: str = ""
    #: the engine load port the window writes (``"load.cmem"``)
    bind: str | None = None

    @property
    def size_bytes(self) -> int:
        return 4 * self.depth

    def addr(self, index: int) -> int:
        """Byte address of element ``index``."""
        if not 0 <= index < self.depth:
            raise ConfigError(f"{self.name} index {index} is outside 0..{self.depth - 1}")
        return self.base + 4 * index


class ErrorCode(enum.IntEnum):
    """``ERROR_CODE.CODE`` values (``docs/hardware.md``, "Errors")."""

    NONE = 0
    BOUND_ZERO = 1      #: a loop bound N0..N3 is 0 or at least 2**loop_bits
    SAT_BITS = 2        #: SAT_BITS outside 2..inter_bits
    MISALIGNED = 3      #: a word access not at a multiple of L, or a word output with O_LANE != 1
    BUF_RANGE = 4       #: a buffer address at or beyond buf_depth (reads, writes, ZFILL)
    CMEM_RANGE = 5      #: a core address at or beyond core_depth
    BMEM_RANGE = 6      #: a bias address at or beyond bias_depth
    NO_LAST = 7         #: desc_depth steps ran without one having LAST set
    ZFILL_ORDER = 8     #: ZFILL_TO < ZFILL_FROM
    GLOBALS = 9         #: IN_COUNT = 0, IN_COUNT > IN_PAD, IN_PAD > buf_depth, OUT_COUNT = 0 or > buf_depth
    TLAST_EARLY = 10    #: an input vector's tlast came before IN_COUNT elements
    TLAST_LATE = 11     #: the IN_COUNT-th input element came without tlast
    LAST_LANES = 12     #: descriptor LAST_LANES outside 1..L


ERROR_TEXT = {
    ErrorCode.NONE: "no error",
    ErrorCode.BOUND_ZERO: "a descriptor loop bound N0..N3 is 0, or at least 2**loop_bits "
                          "(AccelConfig.loop_bits: the largest memory's address bits + 1)",
    ErrorCode.SAT_BITS: "descriptor SAT_BITS is outside 2..inter_bits",
    ErrorCode.MISALIGNED: "a word access at an element address that is not a multiple of L, "
                          "or a word output (mode 0, OUT_WORD) with O_LANE != 1",
    ErrorCode.BUF_RANGE: "a buffer address (read, write or ZFILL) at or beyond buf_depth",
    ErrorCode.CMEM_RANGE: "a core address at or beyond core_depth",
    ErrorCode.BMEM_RANGE: "a bias address at or beyond bias_depth",
    ErrorCode.NO_LAST: "desc_depth steps ran and none had LAST set",
    ErrorCode.ZFILL_ORDER: "descriptor ZFILL_TO is below ZFILL_FROM",
    ErrorCode.GLOBALS: "IN_COUNT is 0 or above IN_PAD, IN_PAD above buf_depth, or OUT_COUNT is 0 or above buf_depth",
    ErrorCode.TLAST_EARLY: "an input vector's tlast came before IN_COUNT elements",
    ErrorCode.TLAST_LATE: "the IN_COUNT-th input element came without tlast",
    ErrorCode.LAST_LANES: "descriptor LAST_LANES is outside 1..L",
}

#: The descriptor, word by word: ``(index, name, meaning)`` (``docs/hardware.md``).
DESCRIPTOR_WORDS: tuple[tuple[int, str, str], ...] = (
    (0, "FLAGS", "mode, buffer, bias, ReLU, word output, last; SAT_BITS; SHIFT; LAST_LANES"),
    (1, "N0", "loop bound 0 (outermost)"), (2, "N1", "loop bound 1"),
    (3, "N2", "loop bound 2"), (4, "N3", "loop bound 3 (innermost, k)"),
    (5, "X_BASE", "input element address in the source buffer"),
    (6, "X_S0", "input stride, loop 0"), (7, "X_S1", "input stride, loop 1"),
    (8, "X_S2", "input stride, loop 2"), (9, "X_S3", "input stride, loop 3"),
    (10, "C_BASE", "core element address in CMEM"),
    (11, "C_S0", "core stride, loop 0"), (12, "C_S1", "core stride, loop 1"),
    (13, "C_S2", "core stride, loop 2"), (14, "C_S3", "core stride, loop 3"),
    (15, "O_BASE", "output element address in the destination buffer"),
    (16, "O_S0", "output stride, loop 0"), (17, "O_S1", "output stride, loop 1"),
    (18, "O_S2", "output stride, loop 2"),
    (19, "O_LANE", "output address distance between adjacent lanes"),
    (20, "B_BASE", "bias element address in BMEM"),
    (21, "OUT_VALID", "results with relative index >= this are written as 0"),
    (22, "ZFILL_FROM", "first relative index zero-filled after the step"),
    (23, "ZFILL_TO", "one past the last zero-filled relative index"),
)
assert len(DESCRIPTOR_WORDS) == DESC_WORDS

#: Bitfields of descriptor word 0 (``FLAGS``).
FLAGS_FIELDS: tuple[Field, ...] = (
    Field("MODE", 0, 1, "0: lanes over q; 1: lanes over p"),
    Field("SRC", 1, 1, "buffer read (the other one is written)"),
    Field("BIAS", 2, 1, "add BMEM[B_BASE + i] before the shift (a layer's last step)"),
    Field("RELU", 3, 1, "ReLU after saturation"),
    Field("OUT_WORD", 4, 1, "mode 1: results form one aligned word (Q = 1, P mod L = 0)"),
    Field("LAST", 5, 1, "the program's last step"),
    Field("SAT_BITS", 8, 8, "saturation width, 2..inter_bits"),
    Field("SHIFT", 16, 8, "requantization right shift, signed (negative: left shift)",
          signed=True),
    Field("LAST_LANES", 24, 8, "lanes valid in the last p block (mode 1: P - (N2-1)*L; mode 0: L)"),
)

#: The 48-bit performance counters, each read as ``<NAME>_LO`` then ``<NAME>_HI``.
COUNTERS: tuple[tuple[str, str], ...] = (
    ("CYCLES", "clock cycles with STATUS.BUSY set"),
    ("BUSY_LANE_CYCLES", "sum over cycles of the MAC lanes doing a valid multiply-accumulate"),
    ("IN_STALL", "cycles in an input phase with the engine ready and s_axis_tvalid low"),
    ("OUT_STALL", "cycles in an output phase with m_axis_tvalid high and m_axis_tready low"),
    ("SAT_EVENTS", "requantization results changed by saturation (valid lanes, padded outputs included)"),
    ("VECTORS", "inferences completed (the last output element accepted)"),
)

REG_REGION_BYTES = 0x100


def _f(name: str, lsb: int, width: int, description: str = "", bind: str | None = None) -> Field:
    return Field(name, lsb, width, description, bind=bind)


def _pack(fields: tuple[Field, ...], values: dict[str, int]) -> int:
    return sum(f.put(values[f.name]) for f in fields)


class MapLookup:
    """Lookups, address decoding and the JSON view shared by the register maps
    (:class:`RegisterMap`, :class:`ttforge.hw.trainer.regmap.TrainRegisterMap`): a
    ``registers`` and a ``windows`` tuple in address order, and a ``to_dict``."""

    registers: tuple[Register, ...]
    windows: tuple[Window, ...]

    def __getitem__(self, name: str) -> Register:
        for r in self.registers:
            if r.name == name:
                return r
        raise KeyError(f"no register {name!r}")

    def window(self, name: str) -> Window:
        for w in self.windows:
            if w.name == name:
                return w
        raise KeyError(f"no window {name!r}")

    def addr(self, name: str) -> int:
        """Byte address of register ``name``."""
        return self[name].addr

    def __iter__(self) -> Iterator[Register]:
        return iter(self.registers)

    def decode(self, addr: int) -> tuple[str, int] | None:
        """What byte address ``addr`` hits: ``(register name, 0)``, ``(window name, element
        index)``, or ``None`` (unmapped: the slave answers ``SLVERR``)."""
        for r in self.registers:
            if r.addr == addr & ~3:
                return r.name, 0
        for w in self.windows:
            if w.base <= addr < w.base + w.size_bytes:
                return w.name, (addr - w.base) // 4
        return None

    def to_dict(self) -> dict[str, Any]:  # pragma: no cover - every map defines it
        raise NotImplementedError

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"


def register_dicts(registers, signed: bool = False) -> list[dict[str, Any]]:
    """The JSON entries of ``registers`` (with each field's ``signed`` if asked)."""
    def field_dict(f: Field) -> dict[str, Any]:
        d = {"name": f.name, "lsb": f.lsb, "width": f.width, "mask": f.mask}
        if signed:
            d["signed"] = f.signed
        d["description"] = f.description
        return d

    return [{"name": r.name, "addr": r.addr, "access": r.access, "width": r.width,
             "reset": r.reset, "value": r.value, "description": r.description,
             "fields": [field_dict(f) for f in r.fields]} for r in registers]


def window_dicts(windows, access: bool = False) -> list[dict[str, Any]]:
    """The JSON entries of ``windows`` (with each one's ``access`` if asked)."""
    out = []
    for w in windows:
        d = {"name": w.name, "base": w.base, "depth": w.depth, "size_bytes": w.size_bytes,
             "data_bits": w.data_bits, "memory": w.memory, "signed": w.signed}
        if access:
            d["access"] = w.access
        d["description"] = w.description
        out.append(d)
    return out


@dataclass(frozen=True)
class RegisterMap(MapLookup):
    """The register map of one :class:`AccelConfig`.

    Attributes
    ----------
    config : AccelConfig
    registers : tuple of Register
        In address order.
    windows : tuple of Window
        ``DMEM``, ``CMEM``, ``BMEM``, in address order.
    """

    config: AccelConfig
    registers: tuple[Register, ...] = field(init=False)
    windows: tuple[Window, ...] = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.config, AccelConfig):
            raise ConfigError(f"RegisterMap needs an AccelConfig, got {type(self.config).__name__}")
        object.__setattr__(self, "registers", tuple(_registers(self.config)))
        object.__setattr__(self, "windows", tuple(_windows(self.config)))
        _check(self)

    @property
    def addr_bits(self) -> int:
        return int(self.config.axil_addr_bits)  # type: ignore[arg-type]

    @property
    def region_bytes(self) -> int:
        return self.config.region_bytes

    # -- views ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "ttforge-regmap",
            "version": REGMAP_VERSION,
            "arithmetic_version": ARITHMETIC_SPEC_VERSION,
            "data_bits": 32,
            "addr_bits": self.addr_bits,
            "region_bytes": self.region_bytes,
            "config": self.config.to_dict(),
            "registers": register_dicts(self.registers),
            "windows": window_dicts(self.windows),
            "counters": {"bits": COUNTER_BITS, "wrap_bits": self.config.counter_bits,
                         "names": [name for name, _ in COUNTERS],
                         "latch": "reading <NAME>_LO latches <NAME>_HI"},
            "error_codes": [{"code": int(c), "name": c.name, "description": ERROR_TEXT[c]}
                            for c in ErrorCode],
            "descriptor": {
                "words": DESC_WORDS,
                "layout": [{"word": i, "name": n, "description": d} for i, n, d in DESCRIPTOR_WORDS],
                "flags": [{"name": f.name, "lsb": f.lsb, "width": f.width, "mask": f.mask,
                           "description": f.description} for f in FLAGS_FIELDS],
            },
        }

    def to_c_header(self, guard: str = "TTFORGE_REGS_H") -> str:
        """A C99 header: ``#define TTFORGE_<REG>_ADDR``, ``_RESET``, per field ``_SHIFT``
        and ``_MASK``, the windows, the configuration, the error codes and the descriptor
        layout. Compiles with ``-std=c99 -Wall -Wextra -Werror``."""
        c = self.config
        out = [
            "/* ttforge register map (generated by ttforge.hw.regmap; do not edit).",
            f" * Register map version {REGMAP_VERSION}, arithmetic spec version {ARITHMETIC_SPEC_VERSION}.",
            f" * Config: {c.summary()}, stream_elems={c.stream_elems}.",
            " * All registers are 32 bits wide; addresses are byte offsets from the core's base. */",
        ]
        head, out = out, [
            f"#define TTFORGE_MAGIC 0x{MAGIC:08X}u",
            f"#define TTFORGE_REGMAP_VERSION {REGMAP_VERSION}u",
            f"#define TTFORGE_ARITHMETIC_VERSION {ARITHMETIC_SPEC_VERSION}u",
            f"#define TTFORGE_ADDR_BITS {self.addr_bits}u",
            f"#define TTFORGE_REGION_BYTES 0x{self.region_bytes:X}u",
            f"#define TTFORGE_COUNTER_BITS {COUNTER_BITS}u /* register width; the counters wrap at "
            f"2^TTFORGE_CFG_COUNTER_BITS ({self.config.counter_bits}) */",
            "",
            "/* configuration this header was generated for (also readable in CFG_*) */",
        ]
        ident = config_identity(c)
        for k, v in ident.items():
            out.append(f"#define TTFORGE_CFG_{k.upper()} {v}u")
        # what a binary load image must carry to be loaded with this header (ttforge_ttli.h)
        out.append("/* the config words of a load_image.bin for this configuration, in order */")
        out.append(f"#define TTFORGE_IMAGE_CONFIG_WORDS {len(ident)}u")
        out.append("#define TTFORGE_IMAGE_CONFIG {" + ", ".join(f"{v}u" for v in ident.values()) + "}")
        out.append("#define TTFORGE_IMAGE_CONFIG_NAMES {" + ", ".join(f'"{k}"' for k in ident) + "}")
        out.append("")
        out.append("/* registers */")
        out += c_register_defines(self.registers, "TTFORGE_")
        out.append("")
        out.append("/* write windows: element i at BASE + 4*i, one element per 32-bit word */")
        for w in self.windows:
            out.append(f"/* {w.name}: {_c_comment(w.description)} */")
            out.append(f"#define TTFORGE_{w.name}_BASE 0x{w.base:08X}u")
            out.append(f"#define TTFORGE_{w.name}_DEPTH {w.depth}u")
            out.append(f"#define TTFORGE_{w.name}_DATA_BITS {w.data_bits}u")
        out.append("")
        out.append("/* ERROR_CODE.CODE values */")
        for code in ErrorCode:
            out.append(f"#define TTFORGE_ERR_{code.name} {int(code)}u /* {_c_comment(ERROR_TEXT[code])} */")
        out.append("")
        out.append(f"/* step descriptor: {DESC_WORDS} words at DMEM word 24*s + w */")
        out.append(f"#define TTFORGE_DESC_WORDS {DESC_WORDS}u")
        for i, n, _ in DESCRIPTOR_WORDS:
            out.append(f"#define TTFORGE_DESC_{n} {i}u")
        for f in FLAGS_FIELDS:
            out.append(f"#define TTFORGE_DESC_FLAGS_{f.name}_SHIFT {f.lsb}u")
            out.append(f"#define TTFORGE_DESC_FLAGS_{f.name}_MASK 0x{f.mask:08X}u")
        return guarded_c_header(guard, "ttforge_regs.h", head, out)

    def to_markdown(self) -> str:
        """The map as Markdown tables (registers, bitfields, windows, error codes)."""
        c = self.config
        lines = [
            f"Register map version {REGMAP_VERSION} for `{c.summary()}`, "
            f"`stream_elems={c.stream_elems}`: {self.addr_bits}-bit byte addresses, four "
            f"regions of 0x{self.region_bytes:X} bytes. Unlisted addresses answer `SLVERR`.",
            "",
            *markdown_register_tables(self.registers),
        ]
        lines += ["", "Write windows (one element per 32-bit word, write-only):", "",
                  "| base | window | elements | bits used | description |", "|---|---|---|---|---|"]
        for w in self.windows:
            lines.append(f"| `0x{w.base:08X}` | `{w.name}` | {w.depth} | {w.data_bits}"
                         f"{' (signed)' if w.signed else ''} | {_md(w.description)} |")
        lines += ["", "`ERROR_CODE.CODE` values:", "", "| code | name | meaning |", "|---|---|---|"]
        for code in ErrorCode:
            lines.append(f"| {int(code)} | `{code.name}` | {_md(ERROR_TEXT[code])} |")
        return "\n".join(lines) + "\n"


def guarded_c_header(guard: str, file: str, head: list[str], body: list[str]) -> str:
    """A generated C header: ``head`` (the comment), then ``body`` inside the include
    guard ``guard``, with ``<guard>_DIGEST`` (CRC-32 of the body) checked on a second
    inclusion: two headers of one kind are the same file, or the second one is an
    ``#error`` (a plain guard skipped it silently, and firmware meant for a second core
    of another configuration used the first one's addresses and depths)."""
    digest = f"0x{zlib.crc32(chr(10).join(body).encode()):08X}u"
    return "\n".join([
        *head,
        f"#ifdef {guard}",
        f"#if {guard}_DIGEST != {digest}",
        f'#error "{file} of another accelerator configuration is already included '
        f'({guard}_DIGEST differs): its names would stand for the other core; one configuration per '
        f'translation unit"',
        "#endif",
        "#else",
        f"#define {guard}",
        f"#define {guard}_DIGEST {digest}",
        "",
        *body,
        "",
        f"#endif /* {guard} */",
    ]) + "\n"


def c_register_defines(registers, prefix: str) -> list[str]:
    """``#define <prefix><REG>_ADDR``, ``_RESET`` and per field ``_SHIFT``/``_MASK`` of
    ``registers`` (C99), each register under a comment with its access and description."""
    out = []
    for r in registers:
        out.append(f"/* {r.name} ({r.access}): {_c_comment(r.description)} */")
        out.append(f"#define {prefix}{r.name}_ADDR 0x{r.addr:04X}u")
        out.append(f"#define {prefix}{r.name}_RESET 0x{r.reset:08X}u")
        for f in r.fields:
            out.append(f"#define {prefix}{r.name}_{f.name}_SHIFT {f.lsb}u")
            out.append(f"#define {prefix}{r.name}_{f.name}_MASK 0x{f.mask:08X}u")
    return out


def markdown_register_tables(registers) -> list[str]:
    """The register table and the bitfield table of ``registers`` (Markdown lines)."""
    lines = ["| address | register | access | width | reset | description |", "|---|---|---|---|---|---|"]
    for r in registers:
        lines.append(f"| `0x{r.addr:04X}` | `{r.name}` | {r.access} | {r.width} | "
                     f"`0x{r.reset:X}` | {_md(r.description)} |")
    lines += ["", "Bitfields:", "", "| register | field | bits | description |", "|---|---|---|---|"]
    for r in registers:
        for f in r.fields:
            bits = str(f.lsb) if f.width == 1 else f"{f.lsb + f.width - 1}:{f.lsb}"
            lines.append(f"| `{r.name}` | `{f.name}` | {bits} | {_md(f.description)} |")
    return lines


def _c_comment(s: str) -> str:
    return s.replace("*/", "* /")


def _md(s: str) -> str:
    """``s`` as the text of a Markdown table cell: ``|`` escaped everywhere (GFM splits
    cells before code spans), ``*`` outside code spans (``word 2*op ..., word 2*op+1``
    rendered as emphasis, the formula without its asterisks)."""
    parts = s.replace("|", "\\|").split("`")
    return "`".join(p.replace("*", "\\*") if i % 2 == 0 else p for i, p in enumerate(parts))


def _registers(c: AccelConfig) -> list[Register]:
    regs: list[Register] = []

    def const(name: str, addr: int, description: str, fields: tuple[Field, ...] = (),
              value: int = 0) -> None:
        regs.append(Register(name, addr, "RO", 32, value, description, fields, value))

    version_fields = (_f("HW", 0, 16, "register map / engine interface version"),
                      _f("ARITH", 16, 8, "docs/arithmetic.md version"),
                      _f("DESC_WORDS", 24, 8, "words per step descriptor"))
    const("ID", 0x000, "identification: ASCII \"TTFG\"", value=MAGIC)
    const("VERSION", 0x004, "interface versions", version_fields,
          _pack(version_fields, {"HW": REGMAP_VERSION, "ARITH": ARITHMETIC_SPEC_VERSION,
                                 "DESC_WORDS": DESC_WORDS}))
    lane_fields = (_f("LANES", 0, 8, "MAC lanes L"),
                   _f("STREAM_ELEMS", 8, 8, "elements per AXI4-Stream beat"),
                   _f("ENGINES", 16, 8, "engines taking the vectors in turn (0 reads as 1: "
                      "bitstreams before the field)"))
    const("CFG_LANES", 0x008, "lanes, stream packing and engines", lane_fields,
          _pack(lane_fields, {"LANES": c.lanes, "STREAM_ELEMS": c.stream_elems,
                              "ENGINES": c.engines}))
    width_fields = (_f("ACT_BITS", 0, 8, "stream element width"), _f("CORE_BITS", 8, 8, "core element width"),
                    _f("INTER_BITS", 16, 8, "buffer element width"), _f("ACC_BITS", 24, 8, "accumulator width"))
    const("CFG_WIDTHS", 0x00C, "element widths", width_fields,
          _pack(width_fields, {"ACT_BITS": c.act_bits, "CORE_BITS": c.core_bits,
                               "INTER_BITS": c.inter_bits, "ACC_BITS": c.acc_bits}))
    bias_fields = (_f("BIAS_BITS", 0, 8, "bias element width"),)
    const("CFG_BIAS_BITS", 0x010, "bias width", bias_fields, c.bias_bits)
    const("CFG_CORE_DEPTH", 0x014, "CMEM depth, elements", value=c.core_depth)
    const("CFG_BIAS_DEPTH", 0x018, "BMEM depth, elements", value=c.bias_depth)
    const("CFG_BUF_DEPTH", 0x01C, "depth of each ping-pong buffer, elements", value=c.buf_depth)
    const("CFG_DESC_DEPTH", 0x020, "DMEM depth, steps", value=c.desc_depth)

    regs.append(Register("CTRL", 0x040, "RW", 3, 0,
                         "control; clear ENABLE before writing the memories and program registers",
                         (_f("ENABLE", 0, 1, "1: accept input vectors and run inferences",
                             "control.enable"),
                          _f("IRQ_DONE_EN", 1, 1, "raise irq while IRQ_STATUS.DONE is set",
                             "irq_enable.DONE"),
                          _f("IRQ_ERROR_EN", 2, 1, "raise irq while IRQ_STATUS.ERROR is set",
                             "irq_enable.ERROR"))))
    regs.append(Register("CMD", 0x044, "WO", 3, 0,
                         "commands: write 1 to a bit to perform it (reads answer SLVERR)",
                         (_f("SOFT_RESET", 0, 1, "abort the inference in flight (a partial input vector is "
                             "dropped), clear STATUS and ERROR_CODE; memories, registers and counters keep",
                             "control.soft_reset"),
                          _f("CLEAR_ERROR", 1, 1, "clear STATUS.ERROR and ERROR_CODE; the next vector runs",
                             "control.clear_error"),
                          _f("CLEAR_COUNTERS", 2, 1, "zero every performance counter",
                             "control.clear_counters"))))
    regs.append(Register("STATUS", 0x048, "RO", 3, 0, "engine state",
                         (_f("BUSY", 0, 1, "an inference is in flight (first input element accepted "
                             "until the last output element accepted)", "status.busy"),
                          _f("DONE", 1, 1, "the last inference completed; cleared when the next starts",
                             "status.done"),
                          _f("ERROR", 2, 1, "an inference stopped with an error (ERROR_CODE); input "
                             "is refused until CMD.CLEAR_ERROR or CMD.SOFT_RESET", "status.error"))))
    regs.append(Register("ERROR_CODE", 0x04C, "RO", 32, 0, "the first error since it was last cleared",
                         (_f("CODE", 0, 8, "an ErrorCode (0: none)", "status.error_code"),
                          _f("STEP", 16, 16, "the step (descriptor index) that failed",
                             "status.error_step"))))
    regs.append(Register("IRQ_STATUS", 0x050, "W1C", 2, 0,
                         "interrupt causes (sticky; write 1 to clear); irq = |(IRQ_STATUS & CTRL.IRQ_*_EN)",
                         (_f("DONE", 0, 1, "an inference completed", "status.done_pulse"),
                          _f("ERROR", 1, 1, "an inference stopped with an error",
                             "status.error_pulse"))))
    regs.append(Register("IN_COUNT", 0x060, "RW", 32, 0, "elements per input vector (layer 0 in_features)",
                         bind="program.in_count"))
    regs.append(Register("IN_PAD", 0x064, "RW", 32, 0,
                         "the input is zero-padded to this many elements in BUF0",
                         bind="program.in_pad"))
    regs.append(Register("OUT_COUNT", 0x068, "RW", 32, 0, "elements per output vector",
                         bind="program.out_count"))
    regs.append(Register("OUT_BUF", 0x06C, "RW", 1, 0, "buffer holding the final output (at element 0)",
                         (_f("BUF", 0, 1, "0: BUF0, 1: BUF1", "program.out_buf"),)))
    addr = 0x080
    # the registers stay COUNTER_BITS wide; a narrower fabric counter (counter_bits, the
    # iCE40 preset's 24) wraps at 2**counter_bits, which the map says where it is read
    cb = c.counter_bits
    wrap = "" if cb >= COUNTER_BITS else f"; the counter wraps at 2**{cb} (counter_bits)"
    if cb >= COUNTER_BITS:
        high = f"bits {COUNTER_BITS - 1}:32"
    elif cb > 32:
        high = f"bits {cb - 1}:32 (bits {COUNTER_BITS - 1}:{cb} read 0: counter_bits = {cb})"
    else:
        high = f"bits {COUNTER_BITS - 1}:32, which read 0 (counter_bits = {cb})"
    for name, description in COUNTERS:
        regs.append(Register(f"{name}_LO", addr, "RO", 32, 0,
                             f"{description}: bits 31:0 (reading latches {name}_HI){wrap}",
                             bind=f"counters.{name.lower()}"))
        regs.append(Register(f"{name}_HI", addr + 4, "RO", COUNTER_BITS - 32, 0,
                             f"{description}: {high}, as latched by the last {name}_LO read"))
        addr += 8
    return regs


def _windows(c: AccelConfig) -> list[Window]:
    s = c.region_bytes
    return [
        Window("DMEM", 1 * s, c.desc_depth * DESC_WORDS, 32, "DMEM", False,
               "descriptor program: word 24*s + w of step s", "load.dmem"),
        Window("CMEM", 2 * s, c.core_depth, c.core_bits, "CMEM", True,
               "core elements (element address e)", "load.cmem"),
        Window("BMEM", 3 * s, c.bias_depth, c.bias_bits, "BMEM", True,
               "bias elements (element address e)", "load.bmem"),
    ]


def _check(m: RegisterMap) -> None:
    spans = sorted([(r.addr, r.addr + 4, r.name) for r in m.registers]
                   + [(w.base, w.base + w.size_bytes, w.name) for w in m.windows])
    for (a0, a1, n0), (b0, _, n1) in zip(spans, spans[1:]):
        if b0 < a1:  # pragma: no cover - an invariant of the layout above
            raise AssertionError(f"register map: {n0} and {n1} overlap")
    top = spans[-1][1]
    if top > (1 << m.addr_bits) or max(r.addr for r in m.registers) >= REG_REGION_BYTES:
        raise AssertionError("register map exceeds its address space")  # pragma: no cover
    for r in m.registers:
        for f in r.fields:
            assert f.lsb + f.width <= 32 and (f.lsb + f.width <= r.width or r.value is not None)
