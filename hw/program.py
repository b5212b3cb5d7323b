"""Compile an integer network into the engine's descriptor program and memory images.

``compile_program(net, config)`` follows ``docs/hardware.md`` exactly: one descriptor
per step of every layer's :class:`~ttforge.model.ContractionSchedule`, the mode of each
step (mode 0, lanes over ``q``, iff ``Q mod L = 0``; else mode 1, lanes over ``p``),
its bounds and strides, the core and bias memory layouts, the ping-pong buffer parity,
requantization (``SHIFT``, ``SAT_BITS``, ``RELU``, ``BIAS``), padding (``OUT_VALID``,
``ZFILL``) and the global program registers. :func:`load_image` turns a program into
the ordered AXI4-Lite writes that load it.

The :class:`Program` is plain data: descriptor words, the CMEM and BMEM element images,
the globals and per-step metadata (:class:`StepInfo`). ``ttforge.hw.model.run_program``
executes the descriptor *words* (not the network) and must equal
``ttforge.quant.execute`` exactly.
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ttforge.errors import ConfigError, ShapeError
from ttforge.hw.config import DESC_WORDS, AccelConfig
from ttforge.hw.regmap import DESCRIPTOR_WORDS, FLAGS_FIELDS, RegisterMap, config_identity
from ttforge.ir.executor import require_network

if TYPE_CHECKING:  # pragma: no cover
    from ttforge.ir.executor import IntNetwork

__all__ = [
    "Descriptor", "StepInfo", "Program", "compile_program", "requirements",
    "encode_descriptor", "decode_descriptor", "load_image", "load_image_to_json",
    "load_image_to_bytes", "load_image_from_bytes", "SHIFT_RANGE",
]

#: Values the signed 8-bit ``SHIFT`` field holds.
SHIFT_RANGE = (-128, 127)
_WORD_INDEX = {name: i for i, name, _ in DESCRIPTOR_WORDS}
_FLAG = {f.name: f for f in FLAGS_FIELDS}


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _round_up(a: int, m: int) -> int:
    return _ceil_div(a, m) * m


# ---------------------------------------------------------------------------- descriptor
@dataclass(frozen=True)
class Descriptor:
    """One step descriptor, field by field (``docs/hardware.md``, "Descriptor").

    ``N``, ``X_S``, ``C_S`` have four entries (loops 0..3), ``O_S`` three.
    """

    MODE: int
    SRC: int
    BIAS: int
    RELU: int
    OUT_WORD: int
    LAST: int
    SAT_BITS: int
    SHIFT: int
    LAST_LANES: int
    N: tuple[int, int, int, int]
    X_BASE: int
    X_S: tuple[int, int, int, int]
    C_BASE: int
    C_S: tuple[int, int, int, int]
    O_BASE: int
    O_S: tuple[int, int, int]
    O_LANE: int
    B_BASE: int
    OUT_VALID: int
    ZFILL_FROM: int
    ZFILL_TO: int


def encode_descriptor(d: Descriptor) -> tuple[int, ...]:
    """The 24 unsigned 32-bit words of a descriptor.

    The one check of the signed 8-bit ``SHIFT`` field's range (:func:`compile_program`
    relies on it; the field itself would wrap a shift silently).
    """
    if not SHIFT_RANGE[0] <= d.SHIFT <= SHIFT_RANGE[1]:
        raise ConfigError(f"SHIFT={d.SHIFT} is outside the signed 8-bit field "
                          f"{SHIFT_RANGE[0]}..{SHIFT_RANGE[1]}; recalibrate the step's exponents")
    flags = 0
    for name in ("MODE", "SRC", "BIAS", "RELU", "OUT_WORD", "LAST", "SAT_BITS", "LAST_LANES"):
        flags |= _FLAG[name].put(int(getattr(d, name)))
    flags |= _FLAG["SHIFT"].put(d.SHIFT & 0xFF)
    words = [flags, *d.N, d.X_BASE, *d.X_S, d.C_BASE, *d.C_S, d.O_BASE, *d.O_S, d.O_LANE,
             d.B_BASE, d.OUT_VALID, d.ZFILL_FROM, d.ZFILL_TO]
    assert len(words) == DESC_WORDS
    for (i, name, _), w in zip(DESCRIPTOR_WORDS, words):
        if not 0 <= int(w) < 1 << 32:
            raise ConfigError(f"descriptor word {name}={w} does not fit in 32 unsigned bits")
    return tuple(int(w) for w in words)


def decode_descriptor(words: Sequence[int]) -> Descriptor:
    """Inverse of :func:`encode_descriptor` (any 24 words decode; the engine checks them)."""
    w = [int(v) & 0xFFFFFFFF for v in words]
    if len(w) != DESC_WORDS:
        raise ShapeError(f"a descriptor has {DESC_WORDS} words, got {len(w)}")
    f = w[0]
    shift = _FLAG["SHIFT"].get(f)
    return Descriptor(
        MODE=_FLAG["MODE"].get(f), SRC=_FLAG["SRC"].get(f), BIAS=_FLAG["BIAS"].get(f),
        RELU=_FLAG["RELU"].get(f), OUT_WORD=_FLAG["OUT_WORD"].get(f), LAST=_FLAG["LAST"].get(f),
        SAT_BITS=_FLAG["SAT_BITS"].get(f), SHIFT=shift - 256 if shift >= 128 else shift,
        LAST_LANES=_FLAG["LAST_LANES"].get(f),
        N=tuple(w[1:5]), X_BASE=w[5], X_S=tuple(w[6:10]), C_BASE=w[10], C_S=tuple(w[11:15]),
        O_BASE=w[15], O_S=tuple(w[16:19]), O_LANE=w[19], B_BASE=w[20], OUT_VALID=w[21],
        ZFILL_FROM=w[22], ZFILL_TO=w[23],
    )


# ------------------------------------------------------------------------------ the plan
@dataclass(frozen=True)
class StepInfo:
    """Metadata of one compiled step (global index ``index``; ``step`` within ``layer``).

    Sizes are per sample, in elements: ``in_size = A*K*Q`` read from buffer ``src``,
    ``out_size = A*P*Q`` written to ``1 - src``; ``c_base``/``c_size`` the step's block
    of CMEM; ``b_base`` the layer's bias block in BMEM (``-1`` without bias).
    """

    index: int
    layer: int
    step: int
    core: int
    mode: int
    A: int
    K: int
    Q: int
    P: int
    src: int
    c_base: int
    c_size: int
    b_base: int
    in_size: int
    out_size: int
    out_valid: int
    zfill_from: int
    zfill_to: int
    shift: int
    sat_bits: int
    relu: bool
    bias: bool
    last: bool
    out_word: bool
    last_lanes: int

    @property
    def macs(self) -> int:
        """Useful multiply-accumulates per sample."""
        return self.A * self.K * self.Q * self.P

    @property
    def bounds(self) -> tuple[int, int, int, int]:
        return (self.A, self.P, self.Q, self.K) if self.mode == 0 else (self.A, self.Q, self.P, self.K)


@dataclass(frozen=True)
class _Plan:
    lanes: int
    steps: tuple[StepInfo, ...]
    cmem_size: int
    bmem_size: int
    buf_size: int
    in_count: int
    in_pad: int
    out_count: int
    out_buf: int


def _plan(net: "IntNetwork", lanes: int) -> _Plan:
    L = int(lanes)
    steps: list[StepInfo] = []
    c_off = b_off = 0
    buf = 0
    g = 0
    layers = net.layers
    for li, layer in enumerate(layers):
        sched = layer.schedule
        shifts = layer.shifts()
        nsteps = len(sched.steps)
        b_base = -1
        if layer.bias is not None:
            b_base = _round_up(b_off, L)
            b_off = b_base + layer.out_features
        in_size = sched.shape.in_size
        buf = max(buf, in_size)
        for t, st in enumerate(sched.steps):
            mode = 0 if st.Q % L == 0 else 1
            c_size = st.P * st.K if mode == 0 else _ceil_div(st.P, L) * st.K * L
            c_base = _round_up(c_off, L)
            c_off = c_base + c_size
            last = t == nsteps - 1
            out_size = st.A * st.P * st.Q
            zfill_to = out_size
            if last and li + 1 < len(layers):
                zfill_to = max(out_size, layers[li + 1].schedule.shape.in_size)
            buf = max(buf, st.A * st.K * st.Q, out_size, zfill_to)
            steps.append(StepInfo(
                index=g, layer=li, step=t, core=st.core, mode=mode, A=st.A, K=st.K, Q=st.Q, P=st.P,
                src=g % 2, c_base=c_base, c_size=c_size, b_base=b_base if last else -1,
                in_size=st.A * st.K * st.Q, out_size=out_size,
                out_valid=layer.out_features if last else out_size,
                zfill_from=out_size, zfill_to=zfill_to, shift=int(shifts[t]),
                sat_bits=layer.step_out_bits(t), relu=bool(layer.relu and last),
                bias=bool(last and layer.bias is not None), last=False,
                out_word=bool(mode == 1 and st.Q == 1 and st.P % L == 0),
                last_lanes=L if mode == 0 else st.P - (_ceil_div(st.P, L) - 1) * L,
            ))
            g += 1
    final = steps[-1]
    steps[-1] = StepInfo(**{**final.__dict__, "last": True})
    return _Plan(lanes=L, steps=tuple(steps), cmem_size=c_off, bmem_size=b_off, buf_size=buf,
                 in_count=layers[0].in_features, in_pad=layers[0].schedule.shape.in_size,
                 out_count=layers[-1].out_features, out_buf=g % 2)


def _bits_for(values: np.ndarray) -> int:
    """Smallest signed width (>= 2) holding every value."""
    if values.size == 0:
        return 2
    lo, hi = int(values.min()), int(values.max())
    b = 2
    while not (-(1 << (b - 1)) <= lo and hi <= (1 << (b - 1)) - 1):
        b += 1
    return b


def requirements(net: "IntNetwork", lanes: int) -> dict[str, tuple[int, str]]:
    """What ``net`` needs of an :class:`AccelConfig` with ``lanes`` lanes:
    ``field -> (smallest value, why)``, for every field that carries a requirement."""
    L = int(lanes)
    plan = _plan(net, L)
    layers = net.layers
    first, last = layers[0], layers[-1]
    need: dict[str, tuple[int, str]] = {}

    def at_least(name: str, value: int, why: str) -> None:
        if name not in need or value > need[name][0]:
            need[name] = (int(value), why)

    at_least("act_bits", first.in_bits, f"the network input ({first.in_bits}-bit)")
    at_least("act_bits", last.out_bits, f"the network output ({last.out_bits}-bit)")
    for li, layer in enumerate(layers):
        at_least("core_bits", layer.w_bits, f"layer {li}'s {layer.w_bits}-bit cores")
    at_least("inter_bits", need["act_bits"][0], "the stream elements stored in the buffers")
    for s in plan.steps:
        at_least("inter_bits", s.sat_bits, f"layer {s.layer} step {s.step} ({s.sat_bits}-bit output)")
    for li, layer in enumerate(layers):
        for t, b in enumerate(layer.acc_bits_needed()):
            at_least("acc_bits", b, f"layer {li} step {t} ({b}-bit sums)")
    at_least("bias_bits", 2, "the minimum width")
    for li, layer in enumerate(layers):
        if layer.bias is not None:
            b = _bits_for(np.asarray(layer.bias))
            at_least("bias_bits", b, f"layer {li}'s bias ({b}-bit values)")
    at_least("core_depth", max(L, _round_up(plan.cmem_size, L)),
             f"the cores of {len(plan.steps)} steps ({plan.cmem_size} elements at L={L})")
    at_least("bias_depth", max(L, _round_up(plan.bmem_size, L)),
             f"the biases ({plan.bmem_size} elements at L={L})")
    at_least("buf_depth", max(L, _round_up(plan.buf_size, L)),
             f"the largest intermediate ({plan.buf_size} elements)")
    at_least("desc_depth", len(plan.steps), f"the program ({len(plan.steps)} steps)")
    return need


# ------------------------------------------------------------------------------ program
@dataclass(frozen=True, eq=False)
class Program:
    """A compiled network: what is loaded into one engine.

    Attributes
    ----------
    config : AccelConfig
        The engine it was compiled for (and checked against).
    steps : tuple of StepInfo
        Per-step metadata, in program order.
    descriptors : tuple of tuple of int
        ``DESC_WORDS`` unsigned 32-bit words per step (DMEM words ``24*s .. 24*s+23``).
    cmem, bmem : int64 arrays (read-only)
        Element images of CMEM and BMEM from element address 0 (shorter than the
        memories; the rest is never read).
    in_count, in_pad, out_count, out_buf : int
        The global program registers.
    in_bits, out_bits : int
        Widths of the network input and output elements.
    """

    config: AccelConfig
    steps: tuple[StepInfo, ...]
    descriptors: tuple[tuple[int, ...], ...]
    cmem: np.ndarray
    bmem: np.ndarray
    in_count: int
    in_pad: int
    out_count: int
    out_buf: int
    in_bits: int
    out_bits: int

    @property
    def dmem(self) -> list[int]:
        """The descriptor words, flattened in DMEM order."""
        return [w for d in self.descriptors for w in d]

    @property
    def globals(self) -> dict[str, int]:
        return {"IN_COUNT": self.in_count, "IN_PAD": self.in_pad,
                "OUT_COUNT": self.out_count, "OUT_BUF": self.out_buf}

    def descriptor(self, s: int) -> Descriptor:
        return decode_descriptor(self.descriptors[s])

    def with_words(self, descriptors: Sequence[Sequence[int]] | None = None,
                   cmem: np.ndarray | None = None, bmem: np.ndarray | None = None,
                   **globals_: int) -> "Program":
        """A copy with some memory contents or globals replaced (for fault injection)."""
        d = dict(self.__dict__)
        if descriptors is not None:
            d["descriptors"] = tuple(tuple(int(w) for w in x) for x in descriptors)
        if cmem is not None:
            d["cmem"] = _frozen(cmem)
        if bmem is not None:
            d["bmem"] = _frozen(bmem)
        for k, v in globals_.items():
            key = k.lower()
            if key not in ("in_count", "in_pad", "out_count", "out_buf"):
                raise ConfigError(f"unknown program register {k}")
            d[key] = int(v)
        return Program(**d)

    def summary(self) -> dict[str, Any]:
        return {
            "steps": len(self.steps),
            "cmem_elements": int(self.cmem.size),
            "bmem_elements": int(self.bmem.size),
            "globals": self.globals,
            "modes": [s.mode for s in self.steps],
        }


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.int64, copy=True)
    a.setflags(write=False)
    return a


def _descriptor_for(s: StepInfo, L: int) -> Descriptor:
    A, K, Q, P = s.A, s.K, s.Q, s.P
    if s.mode == 0:
        N = (A, P, Q // L, K)
        X_S, C_S, O_S, O_LANE = (K * Q, 0, L, Q), (0, K, 0, 1), (P * Q, Q, L), 1
    else:
        N = (A, Q, _ceil_div(P, L), K)
        X_S, C_S, O_S, O_LANE = (K * Q, 1, 0, Q), (0, 0, K * L, L), (P * Q, 1, L * Q), Q
    return Descriptor(
        MODE=s.mode, SRC=s.src, BIAS=int(s.bias), RELU=int(s.relu), OUT_WORD=int(s.out_word),
        LAST=int(s.last), SAT_BITS=s.sat_bits, SHIFT=s.shift, LAST_LANES=s.last_lanes,
        N=N, X_BASE=0, X_S=X_S, C_BASE=s.c_base, C_S=C_S, O_BASE=0, O_S=O_S, O_LANE=O_LANE,
        B_BASE=max(s.b_base, 0), OUT_VALID=s.out_valid, ZFILL_FROM=s.zfill_from,
        ZFILL_TO=s.zfill_to,
    )


def compile_program(net: "IntNetwork", config: AccelConfig) -> Program:
    """Compile ``net`` for ``config`` (``docs/hardware.md``).

    Raises
    ------
    ConfigError
        ``does not fit: ...`` (see :meth:`AccelConfig.check`).

    Every step's shift fits the signed 8-bit ``SHIFT`` field: an :class:`IntLayer`
    refuses a shift outside :func:`ttforge.ir.arith.shift_range` (at most -61..62), and
    :func:`encode_descriptor` is the one place that checks the field's range.
    """
    if not isinstance(config, AccelConfig):
        raise ConfigError(f"compile_program needs an AccelConfig, got {type(config).__name__}")
    require_network(net, "compile_program")
    net.check_values()   # the values laid out for the engine below: refused, never wrapped
    config.check(net)
    L = config.lanes
    plan = _plan(net, L)
    cmem = np.zeros(plan.cmem_size, dtype=np.int64)
    bmem = np.zeros(plan.bmem_size, dtype=np.int64)
    for s in plan.steps:
        layer = net.layers[s.layer]
        C = layer.core_matrix(s.step)  # (P, K)
        if s.mode == 0:
            cmem[s.c_base:s.c_base + s.c_size] = C.reshape(-1)
        else:
            nb = _ceil_div(s.P, L)
            blk = np.zeros((nb * L, s.K), dtype=np.int64)
            blk[:s.P] = C
            # element c_base + (pb*K + k)*L + l holds C[pb*L + l, k]
            cmem[s.c_base:s.c_base + s.c_size] = blk.reshape(nb, L, s.K).transpose(0, 2, 1).reshape(-1)
        if s.bias:
            bmem[s.b_base:s.b_base + layer.out_features] = layer.bias
    descs = [_descriptor_for(s, L) for s in plan.steps]
    for s, d in zip(plan.steps, descs):
        # unreachable for a schedule whose loops each stay inside one memory: the
        # engine's counters hold bounds below 2**loop_bits (AccelConfig.loop_bits)
        if max(d.N) >> config.loop_bits:
            raise ConfigError(f"does not fit: step {s.index}'s loop bound {max(d.N)} needs more than "
                              f"loop_bits={config.loop_bits} (the largest memory's address bits + 1); "
                              f"raise core_depth, bias_depth or buf_depth")
    descriptors = tuple(encode_descriptor(d) for d in descs)
    return Program(config=config, steps=plan.steps, descriptors=descriptors, cmem=_frozen(cmem),
                   bmem=_frozen(bmem), in_count=plan.in_count, in_pad=plan.in_pad,
                   out_count=plan.out_count, out_buf=plan.out_buf,
                   in_bits=net.layers[0].in_bits, out_bits=net.layers[-1].out_bits)


# ---------------------------------------------------------------------------- load image
def _u32(v: int) -> int:
    return int(v) & 0xFFFFFFFF


def load_image(program: Program, regmap: RegisterMap | None = None) -> list[tuple[int, int]]:
    """The ordered AXI4-Lite writes ``(byte address, 32-bit data)`` that load ``program``.

    Order: ``CTRL = 0`` (disable), ``CMD.SOFT_RESET | CMD.CLEAR_ERROR`` (a vector still in
    the core is aborted: it would run on memories half rewritten), the DMEM words (step 0
    first), the CMEM elements, the BMEM elements (each sign-extended to 32 bits, element
    address order), ``IN_COUNT``, ``IN_PAD``, ``OUT_COUNT``, ``OUT_BUF``, and
    ``CTRL.ENABLE = 1`` last. Deterministic: the same program gives the same list.
    """
    rm = regmap if regmap is not None else RegisterMap(program.config)
    if rm.config != program.config:
        raise ConfigError("load_image: the register map's config differs from the program's; "
                          "build both from the same AccelConfig")
    cmd = rm["CMD"]
    writes: list[tuple[int, int]] = [(rm.addr("CTRL"), 0),
                                     (rm.addr("CMD"), cmd.field("SOFT_RESET").mask | cmd.field("CLEAR_ERROR").mask)]
    for name, data in (("DMEM", program.dmem), ("CMEM", program.cmem.tolist()),
                       ("BMEM", program.bmem.tolist())):
        w = rm.window(name)
        if len(data) > w.depth:
            raise ConfigError(f"load_image: {len(data)} {name} words exceed the window's {w.depth}; "
                              f"recompile for this config")
        writes.extend((w.base + 4 * i, _u32(v)) for i, v in enumerate(data))
    for name, v in program.globals.items():
        writes.append((rm.addr(name), _u32(v)))
    writes.append((rm.addr("CTRL"), rm["CTRL"].field("ENABLE").mask))
    return writes


LOAD_IMAGE_MAGIC = b"TTLI"
#: version 2 added the config words and the CRC-32 (version 1: magic, version, count, writes)
LOAD_IMAGE_VERSION = 2
#: the JSON form (load_image.json) is unchanged since its version 1
LOAD_IMAGE_JSON_VERSION = 1
_HEAD = 16   # magic, version, count, config words: then the config, the writes, the CRC-32


def load_image_to_json(writes: Sequence[tuple[int, int]], regmap: RegisterMap | None = None) -> str:
    """``{"format": "ttforge-load-image", "version": 1, "count": n, "writes": [[addr, data], ...]}``
    (with ``"addr_bits"`` when a register map is given)."""
    head: dict[str, Any] = {"format": "ttforge-load-image", "version": LOAD_IMAGE_JSON_VERSION,
                            "count": len(writes)}
    if regmap is not None:
        head["addr_bits"] = regmap.addr_bits
    text = json.dumps(head, indent=2)
    assert text.endswith("\n}")
    rows = ",\n    ".join(f"[{int(a)}, {int(v)}]" for a, v in writes)  # one write per line
    return text[:-2] + ',\n  "writes": [' + (f"\n    {rows}\n  " if rows else "") + "]\n}\n"


def load_image_to_bytes(writes: Sequence[tuple[int, int]], config: AccelConfig) -> bytes:
    """Binary form of a load image for ``config`` (``docs/hardware.md``, "Load image").

    ``b"TTLI"``, then little-endian u32: version, write count ``n``, config word count
    ``k``, the ``k`` values of :func:`ttforge.hw.regmap.config_identity`, ``n`` pairs
    ``(address, data)``, and last the CRC-32 (zlib's) of all the bytes before it.
    """
    if not isinstance(config, AccelConfig):
        raise ConfigError(f"load_image_to_bytes needs the AccelConfig the image is for, "
                          f"got {type(config).__name__}")
    ident = list(config_identity(config).values())
    arr = np.asarray(writes, dtype="<u4").reshape(-1, 2) if writes else np.zeros((0, 2), "<u4")
    body = (LOAD_IMAGE_MAGIC + np.array([LOAD_IMAGE_VERSION, len(arr), len(ident), *ident], dtype="<u4").tobytes()
            + arr.tobytes())
    return body + np.array([zlib.crc32(body)], dtype="<u4").tobytes()


def load_image_from_bytes(data: bytes, config: AccelConfig | None = None, *,
                          source: str = "load image") -> list[tuple[int, int]]:
    """The writes of a :func:`load_image_to_bytes` image, checked whole before use.

    Parameters
    ----------
    data : bytes
    config : AccelConfig, optional
        When given, the image must have been made for it.
    source : str
        Names the image in errors (a path).

    Raises
    ------
    ConfigError
        One line: not an image, another version, a wrong length, a checksum that
        differs (a corrupt file), an image for another config (the first field that
        differs), or a write whose address is outside the core's AXI4-Lite window
        (``2**axil_addr_bits`` bytes) or not 4-byte aligned (the first, by index), as
        ``ttfi_check`` refuses them.
    """
    data = bytes(data)
    if data[:4] != LOAD_IMAGE_MAGIC or len(data) < _HEAD + 4:
        raise ConfigError(f"{source}: not a ttforge load image (no TTLI header); give the "
                          f"load_image.bin that ttforge generate writes")
    version, count, k = (int(v) for v in np.frombuffer(data[4:_HEAD], dtype="<u4"))
    if version != LOAD_IMAGE_VERSION:
        raise ConfigError(f"{source}: load image version {version} is not {LOAD_IMAGE_VERSION}; "
                          f"regenerate it with ttforge generate")
    need = _HEAD + 4 * k + 8 * count + 4
    if len(data) != need:
        raise ConfigError(f"{source}: load image has {len(data)} bytes, its header needs {need} "
                          f"({k} config words, {count} writes); the file is truncated or padded, regenerate it")
    stored = int(np.frombuffer(data[-4:], dtype="<u4")[0])
    crc = zlib.crc32(data[:-4])
    if stored != crc:
        raise ConfigError(f"{source}: load image checksum 0x{stored:08X} does not match its contents "
                          f"(0x{crc:08X}); the file is corrupt, regenerate it")
    words = [int(v) for v in np.frombuffer(data[_HEAD:_HEAD + 4 * k], dtype="<u4")]
    if config is not None:
        ident = config_identity(config)
        if k != len(ident):
            raise ConfigError(f"{source}: load image has {k} config words, this config {len(ident)}; "
                              f"regenerate it with this ttforge")
        for (name, want), got in zip(ident.items(), words):
            if got != want:
                raise ConfigError(f"{source}: load image is for {name}={got}, the config has {name}={want}; "
                                  f"regenerate it for this config (ttforge generate --config)")
    arr = np.frombuffer(data[_HEAD + 4 * k:-4], dtype="<u4").reshape(-1, 2)
    # A CRC only proves the bytes are as written: a hand-made image could still address
    # past the core, and a memory-mapped loader writes base + address wherever that is.
    bits = _image_addr_bits(words, config)
    if bits is not None and len(arr):
        bad = np.flatnonzero((arr[:, 0].astype(np.uint64) >> np.uint64(bits)) | (arr[:, 0] & 3))
        if len(bad):
            i, addr = int(bad[0]), int(arr[bad[0], 0])
            why = (f"outside the core's AXI4-Lite window 0x0..0x{(1 << bits) - 1:X} (axil_addr_bits={bits})"
                   if addr >> bits else "not 4-byte aligned")
            raise ConfigError(f"{source}: load image write {i} is to address 0x{addr:08X}, {why}; "
                              f"regenerate it with ttforge generate")
    return [(int(a), int(v)) for a, v in arr]


def _image_addr_bits(words: Sequence[int], config: AccelConfig | None) -> int | None:
    """The AXI4-Lite address width a load image's writes must fit: the config's, else the
    image's own ``axil_addr_bits`` word (None when its words are not this ttforge's)."""
    if config is not None:
        return int(config.axil_addr_bits)  # type: ignore[arg-type]
    names = [f.name for f in dataclasses.fields(AccelConfig)]
    if len(words) != len(names) or "axil_addr_bits" not in names:
        return None
    return min(int(words[names.index("axil_addr_bits")]), 32)
