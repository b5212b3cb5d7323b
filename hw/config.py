"""``AccelConfig``: the generator parameters of the TT-contraction engine.

The fields are those of ``docs/hardware.md`` ("Parameters"), plus the stream packing
(``stream_elems``) and the AXI4-Lite address width (``axil_addr_bits``). A config is
frozen and validated on construction; every problem is one
:class:`~ttforge.errors.ConfigError` line naming the field and the fix.

``AccelConfig.for_network(net, lanes=L)`` is the smallest config that runs a compiled
network, ``config.check(net)`` says whether a network fits (or exactly why not), and
``to_dict``/``from_dict``/``load`` read and write it as JSON or TOML.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from ttforge.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from ttforge.ir.executor import IntNetwork

__all__ = ["AccelConfig", "DESC_WORDS", "COUNTER_BITS", "MIN_COUNTER_BITS", "MAX_LANES", "MAX_DEPTH", "MAX_DESC_DEPTH",
           "MAX_BIAS_BITS", "MAX_MEMORY_BITS", "MAX_MAC_LANES", "MULTIPLIERS", "check_memory_bits", "stream_lane_bits"]

#: 32-bit words per step descriptor (``docs/hardware.md``, "Descriptor").
DESC_WORDS = 24
#: Width of the performance counter registers (``<NAME>_LO``/``<NAME>_HI``); the counters
#: themselves count ``counter_bits`` (MIN_COUNTER_BITS..COUNTER_BITS) of them.
COUNTER_BITS = 48
#: Narrowest performance counters (``counter_bits``): 2**24 cycles is 1.4 s at 12 MHz.
MIN_COUNTER_BITS = 24
MAX_LANES = 64
#: most engines side by side (``AccelConfig.engines``)
MAX_ENGINES = 8
#: Largest memory depth in elements (addresses are held in 32-bit descriptor words;
#: this bound keeps the AXI4-Lite windows inside a 32-bit address space).
MAX_DEPTH = 1 << 24
MAX_DESC_DEPTH = 4096
#: Widest bias: each bias is loaded as one 32-bit AXI4-Lite word (``hw.program.load_image``
#: sign-extends it into BMEM), so a wider one would be cut on its way in.
MAX_BIAS_BITS = 32


#: block RAM bits of each device (ECP5-85F: 208 DP16KD x 18 kbit; iCE40UP5K: 30 EBR x 4 kbit)
BRAM_BITS = {"ecp5-85f": 208 * 18 * 1024, "ice40up5k": 30 * 4096}
#: single-port RAM bits (iCE40UP5K: 4 SB_SPRAM256KA x 256 kbit, 16K x 16 each); they
#: hold the ping-pong buffers of a config with ``buf_ports=1``
#: (see :func:`ttforge.firmware.build.spram_blocks`)
SPRAM_BITS = {"ecp5-85f": 0, "ice40up5k": 4 * 256 * 1024}


#: multipliers of each device (ECP5-85F: 156 MULT18X18D; iCE40UP5K: 8 SB_MAC16)
MULTIPLIERS = {"ecp5-85f": 156, "ice40up5k": 8}

#: Most MAC lanes a config may have, all engines' together (``lanes * engines``): twice
#: the multipliers of the largest supported device (the ECP5-85F's 156), as
#: :data:`MAX_MEMORY_BITS` is twice its RAM. ``lanes=64, engines=8`` (512) took 126 s and
#: 0.94 GB to emit, for a design no board holds.
MAX_MAC_LANES = 2 * max(MULTIPLIERS.values())


def _max_memory_bits() -> int:
    return 2 * max(BRAM_BITS[d] + SPRAM_BITS.get(d, 0) for d in BRAM_BITS)


#: Most bits of memory a config may have, all engines' memories together: twice the RAM
#: of the largest supported device (the ECP5-85F, 3,833,856 bits of block RAM), so every
#: config a board could hold passes with room to spare. The depths alone allow 2**24
#: elements each, which no board holds and whose Verilog takes minutes and gigabytes.
MAX_MEMORY_BITS = _max_memory_bits()
#: Largest AXI4-Stream ``tdata`` width, in bits.
MAX_TDATA_BITS = 1024


def _is_pow2(v: int) -> bool:
    return v >= 1 and (v & (v - 1)) == 0


def _round_up(v: int, m: int) -> int:
    return -(-v // m) * m


def stream_lane_bits(act_bits: int) -> int:
    """Bits of one element lane on the AXI4-Stream buses (``act_bits`` rounded up to bytes)."""
    return (int(act_bits) + 7) // 8 * 8


def check_memory_bits(parts: Mapping[str, int], fields: Mapping[str, tuple[int, str, int, int, str]],
                      copies: int = 1, prefix: str = "", limit: int = MAX_MEMORY_BITS,
                      why: str = "twice the RAM of the largest supported device, the ECP5-85F") -> None:
    """Refuse memories above ``limit`` bits: one :class:`ConfigError` naming the depth
    field that holds the most bits and the largest value of it that fits.

    The one check of every generated engine's memories (:class:`AccelConfig`, the
    training engine's ``TrainEngineConfig``).

    Parameters
    ----------
    parts : mapping
        Bits of each memory of one engine (what its generator instantiates).
    fields : mapping
        Each depth field: ``(value, part, bits, step, unit)``, the memory it sizes, its
        bits per ``unit`` (every memory it sizes together), and the multiple a value
        must be.
    copies : int
        Engines side by side, each with memories of its own.
    prefix : str
        Put before the field's name (``"TrainEngineConfig."``).
    limit, why : int, str
        The limit in bits and what it is (:data:`MAX_MEMORY_BITS` by default).

    Raises
    ------
    ConfigError
        With ``memory_excess`` the clause without the fix (a caller fitting a network
        names another fix: the network's size).
    """
    total = copies * sum(parts.values())
    if total <= limit:
        return
    name = max(fields, key=lambda f: fields[f][0] * fields[f][2])
    value, part, bits, step, unit = fields[name]
    rest = sum(parts.values()) - value * bits
    fit = (limit // copies - rest) // bits // step * step
    shown = " + ".join(f"{k} {v:,}" for k, v in parts.items())
    engines = f", x {copies} engines" if copies > 1 else ""
    fix = f"use {name} <= {fit:,}" if fit >= step else "use smaller depths"
    fix += " or fewer engines" if copies > 1 else ""
    what = (f"{prefix}{name}={value}: the memories need {total:,} bits ({shown}{engines}), "
            f"above ttforge's limit of {limit:,} ({why})")
    err = ConfigError(f"{what}; {fix} ({part}: {bits} bits per {unit})")
    err.memory_excess = what
    raise err


@dataclass(frozen=True)
class AccelConfig:
    """Parameters of one generated engine.

    Attributes
    ----------
    lanes : int
        MAC lanes ``L``; a power of two in 1..64.
    act_bits : int
        Width of stream elements (network input and output), 2..32.
    core_bits : int
        Width of core elements, 2..16 (narrower cores are sign-extended).
    inter_bits : int
        Width of buffer elements, ``act_bits``..32.
    acc_bits : int
        Accumulator width, 2..48.
    bias_bits : int
        Width of bias elements, 2..``acc_bits``.
    core_depth, bias_depth, buf_depth : int
        CMEM, BMEM and each ping-pong buffer, in elements: multiples of ``lanes``,
        at most ``2**24``; all memories together (:meth:`memory_parts`, times
        ``engines``) at most :data:`MAX_MEMORY_BITS` bits.
    desc_depth : int
        Descriptor memory, in steps (1..4096); each step is 24 words of 32 bits.
    stream_elems : int
        Elements per AXI4-Stream beat (a power of two; ``tdata`` is
        ``stream_elems * ceil(act_bits / 8) * 8`` bits, at most 1024).
    serial_requant : int
        0 (the default): ``lanes`` requantization units, word outputs (mode 0,
        ``OUT_WORD``) are requantized and written one word per cycle. 1: a single
        requantization unit; word outputs go through the serial element writer like
        mode-1 element outputs (the same values at the same addresses, one element per
        cycle, with the element-output timing of ``docs/hardware.md``). Saves the area
        of ``lanes - 1`` requantization units (small FPGAs).
    requant_units : int or None
        Requantization units ``U`` shared by the ``lanes`` word outputs: ``None`` (the
        default) resolves to ``lanes`` (one per lane; 1 with ``serial_requant``). A power
        of two in 2..``lanes``: a word result is requantized ``U`` lanes a cycle, in
        ``lanes / U`` cycles from a shadow register while the lanes compute the next
        block (the same values at the same addresses; a block shorter than ``lanes / U``
        cycles waits, ``docs/hardware.md`` "Engine timing"). Saves the area of
        ``lanes - U`` units, about half the logic of a wide engine.
        :attr:`requant_count` is the resolved number.
    counter_bits : int
        Width of the performance counters, 24..48 (default 48). The counter registers
        stay 48 bits (``<NAME>_LO``/``<NAME>_HI``); bits at and above ``counter_bits``
        read 0 and the counters wrap at ``2**counter_bits``. Narrower counters save
        logic cells on small FPGAs (24: 2**24 cycles, 1.4 s at 12 MHz).
    buf_ports : int
        Ports of each ping-pong buffer: 2 (the default) a read port and a write port (a
        simple dual-port memory: block RAM); 1 one port whose address is the writer's in
        a write cycle, else the reader's (a single-port memory, which the iCE40UP5K's
        ``SB_SPRAM256KA`` can hold: ``ttforge.hw.synth.single_port_script``). The
        engine never reads and writes one buffer in the same cycle, so both compute
        the same values in the same cycles.
    throughput : int
        0 (the default): one vector at a time (input, steps, output). 1: throughput mode
        (``docs/hardware.md``, "Throughput mode"): an input staging memory of
        ``buf_depth`` elements takes the next vector from the stream while the current
        one computes and drains, and is copied into BUF0 one word per cycle when the
        vector starts. Costs a memory of ``buf_depth * act_bits`` bits; needs
        ``buf_ports = 2``.
    read_registers : int
        0 (the default) or 1: the operands' reads take a cycle more. A block RAM without
        its output register drives the operand registers straight from its read data
        (the ECP5 DP16KD's clock-to-output is 5.8 ns of a 10 ns cycle), and where the
        memories are spread over the device the routing to the lanes adds the rest.
        With 1, CMEM and the buffers are banks of one block RAM's depth whose read data
        is registered at each bank (:class:`ttforge.hw.engine.banks.RegisteredBanks`).
        With 2, the bank select is registered too (the bank registers then load only
        the select, beside their block RAMs), and so are the banks' writes (address,
        data, decoded enables: only registers drive a block RAM's write pins; the
        engine never reads a word in the cycle after its write, so no cycle is added
        for it). ``read_registers`` cycles more per step
        and per output (``ttforge.hw.cycles``); the values are the same; needs
        ``buf_ports = 2``.
    engines : int
        Engines side by side, 1..8 (default 1): each holds the same network and the
        input vectors take turns (``ttforge.hw.engine.array``: vector ``k`` to engine
        ``k mod engines``, the outputs in the input's order), so the accelerator
        takes ``engines`` vectors at a time behind the same registers and streams.
        Costs ``engines`` times the engine; needs ``throughput = 0``; ``lanes * engines``
        at most :data:`MAX_MAC_LANES`.
    axil_addr_bits : int or None
        AXI4-Lite byte-address width. ``None`` (the default) takes the smallest width
        that holds the register map (``docs/hardware.md``, "Register map"); the
        constructed config always holds the resolved integer.
    """

    lanes: int = 4
    act_bits: int = 8
    core_bits: int = 8
    inter_bits: int = 16
    acc_bits: int = 32
    bias_bits: int = 32
    core_depth: int = 4096
    bias_depth: int = 512
    buf_depth: int = 4096
    desc_depth: int = 32
    stream_elems: int = 1
    serial_requant: int = 0
    requant_units: int | None = None
    counter_bits: int = COUNTER_BITS
    buf_ports: int = 2
    throughput: int = 0
    read_registers: int = 0
    engines: int = 1
    axil_addr_bits: int | None = None

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name in ("axil_addr_bits", "requant_units") and v is None:
                continue
            # numpy integers as ir.TrainConfig takes them, stored as int (JSON, hashing)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise ConfigError(f"{f.name}={v!r} must be an integer")
            object.__setattr__(self, f.name, int(v))
        L = self.lanes
        if not (_is_pow2(L) and L <= MAX_LANES):
            raise ConfigError(f"lanes={L} must be a power of two in 1..{MAX_LANES}")
        self._range("act_bits", 2, 32)
        self._range("core_bits", 2, 16)
        self._range("inter_bits", 2, 32)
        if self.inter_bits < self.act_bits:
            raise ConfigError(f"inter_bits={self.inter_bits} must be >= act_bits={self.act_bits} "
                              f"(the buffers hold the stream elements); raise inter_bits")
        self._range("acc_bits", 2, 48)
        self._range("bias_bits", 2, self.acc_bits, "acc_bits")
        if self.bias_bits > MAX_BIAS_BITS:
            raise ConfigError(f"bias_bits={self.bias_bits} must be in 2..{MAX_BIAS_BITS}: each bias is "
                              f"loaded as one 32-bit AXI4-Lite word; use bias_bits <= {MAX_BIAS_BITS}")
        for name in ("core_depth", "bias_depth", "buf_depth"):
            v = getattr(self, name)
            if not L <= v <= MAX_DEPTH or v % L:
                raise ConfigError(f"{name}={v} must be a multiple of lanes={L} in {L}..{MAX_DEPTH}; "
                                  f"use {min(max(_round_up(max(v, 1), L), L), MAX_DEPTH)}")
        self._range("desc_depth", 1, MAX_DESC_DEPTH)
        self._range("serial_requant", 0, 1)
        self._check_requant_units()
        self._range("counter_bits", MIN_COUNTER_BITS, COUNTER_BITS)
        self._range("buf_ports", 1, 2)
        self._range("throughput", 0, 1)
        self._range("read_registers", 0, 2)
        if self.read_registers and self.buf_ports != 2:
            raise ConfigError(f"read_registers={self.read_registers} needs buf_ports=2 (the "
                              "buffers' banks are simple dual-port block RAMs); use "
                              "read_registers=0")
        self._range("engines", 1, MAX_ENGINES)
        if L * self.engines > MAX_MAC_LANES:
            raise ConfigError(
                f"lanes={L}, engines={self.engines}: {L * self.engines} MAC lanes (lanes x engines), "
                f"above ttforge's limit of {MAX_MAC_LANES} (twice the multipliers of the largest "
                f"supported device, the ECP5-85F); use engines <= {MAX_MAC_LANES // L} at "
                f"lanes={L} or fewer lanes")
        if self.engines > 1 and self.throughput:
            raise ConfigError(f"engines={self.engines} needs throughput=0 (each engine holds one "
                              "vector; the engines are the vectors in flight); use throughput=0")
        if self.throughput and self.buf_ports != 2:
            raise ConfigError("throughput=1 needs buf_ports=2 (the copy into BUF0 is a word "
                              "write beside the buffers' reads); use throughput=0")
        self._check_memory_bits()
        E = self.stream_elems
        if not _is_pow2(E) or E * stream_lane_bits(self.act_bits) > MAX_TDATA_BITS:
            top = MAX_TDATA_BITS // stream_lane_bits(self.act_bits)
            raise ConfigError(f"stream_elems={E} must be a power of two in 1..{top} "
                              f"(tdata is at most {MAX_TDATA_BITS} bits)")
        need = self.required_addr_bits
        if self.axil_addr_bits is None:
            object.__setattr__(self, "axil_addr_bits", need)
        elif not need <= self.axil_addr_bits <= 32:
            raise ConfigError(f"axil_addr_bits={self.axil_addr_bits} must be in {need}..32 "
                              f"(the register map of this config spans 2**{need} bytes)")

    def _check_requant_units(self) -> None:
        L, U = self.lanes, self.requant_units
        if U is None:
            return
        if self.serial_requant:
            if U != 1:
                raise ConfigError(f"requant_units={U} with serial_requant=1 must be 1 (one serial "
                                  f"unit); drop requant_units or set serial_requant=0")
        elif not (_is_pow2(U) and U <= L and (U >= 2 or U == L)):
            raise ConfigError(f"requant_units={U} must be a power of two in {min(2, L)}..lanes={L} "
                              f"(one unit: serial_requant=1)")

    def _check_memory_bits(self) -> None:
        """Refuse memories above :data:`MAX_MEMORY_BITS` (:func:`check_memory_bits`)."""
        # each depth field: its memories' bits per element (per step for desc_depth)
        L = self.lanes
        check_memory_bits(self.memory_parts(), {
            "core_depth": (self.core_depth, "cores", self.core_bits, L, "element"),
            "bias_depth": (self.bias_depth, "biases", self.bias_bits, L, "element"),
            "buf_depth": (self.buf_depth, "buffers", 2 * self.inter_bits + self.act_bits * self.throughput,
                          L, "element"),
            "desc_depth": (self.desc_depth, "descriptors", DESC_WORDS * 32, 1, "step")},
            copies=self.engines)

    def memory_parts(self) -> dict[str, int]:
        """Bits of each memory of one engine.

        Returns
        -------
        dict
            ``cores``, ``biases``, ``buffers`` (the two ping-pong buffers together),
            ``descriptors`` and, in throughput mode, the input ``staging`` memory.
        """
        parts = {"cores": self.core_depth * self.core_bits,
                 "biases": self.bias_depth * self.bias_bits,
                 "buffers": 2 * self.buf_depth * self.inter_bits,
                 "descriptors": self.desc_depth * DESC_WORDS * 32}
        if self.throughput:   # the input staging memory of throughput mode
            parts["staging"] = self.buf_depth * self.act_bits
        return parts

    def _range(self, name: str, lo: int, hi: int, hi_name: str | None = None) -> None:
        v = getattr(self, name)
        if not lo <= v <= hi:
            top = f"{hi_name}={hi}" if hi_name else str(hi)
            raise ConfigError(f"{name}={v} must be in {lo}..{top}")

    # -- derived ------------------------------------------------------------------------
    @property
    def region_bytes(self) -> int:
        """Size of each of the four equal AXI4-Lite regions (registers, DMEM, CMEM, BMEM)."""
        words = max(64, self.desc_depth * DESC_WORDS, self.core_depth, self.bias_depth)
        return 1 << (4 * words - 1).bit_length()

    @property
    def requant_count(self) -> int:
        """Requantization units of the engine: ``requant_units``, else one per lane (one
        with ``serial_requant``)."""
        if self.requant_units is not None:
            return self.requant_units
        return 1 if self.serial_requant else self.lanes

    @property
    def required_addr_bits(self) -> int:
        """Smallest AXI4-Lite address width that holds the register map."""
        return (4 * self.region_bytes - 1).bit_length()

    @property
    def addr_bits(self) -> int:
        """Bits of an element address: the largest memory's, at least ``log2 lanes`` and 1."""
        lg = self.lanes.bit_length() - 1
        return max((max(self.core_depth, self.bias_depth, self.buf_depth) - 1).bit_length(), lg, 1)

    @property
    def loop_bits(self) -> int:
        """Width of the engine's loop counters, ``addr_bits + 1``: a descriptor loop bound
        ``N0..N3`` is at most ``2**loop_bits - 1`` (a larger one stops the engine with
        ``BOUND_ZERO``). Every compiled bound is at most the largest memory depth (one
        loop covers a row, a reduction or a core of a buffer or CMEM), so the compiler
        never meets the limit; a hand-written descriptor can."""
        return self.addr_bits + 1

    @property
    def tdata_bits(self) -> int:
        """Width of ``s_axis_tdata`` / ``m_axis_tdata``."""
        return self.stream_elems * stream_lane_bits(self.act_bits)

    # -- fitting a network --------------------------------------------------------------
    @classmethod
    def for_network(cls, net: "IntNetwork", lanes: int = 4, stream_elems: int = 1,
                    axil_addr_bits: int | None = None) -> "AccelConfig":
        """The smallest config with ``lanes`` MAC lanes that runs ``net``.

        Widths are the largest the network uses (the accumulator: the widest sum any
        step can reach, ``docs/arithmetic.md``); depths are what the compiled program
        occupies, rounded up to a multiple of ``lanes``.
        """
        from ttforge.hw.program import requirements
        from ttforge.ir.executor import require_network

        require_network(net, "AccelConfig.for_network")
        probe = cls(lanes=lanes)  # validates lanes
        needs = requirements(net, probe.lanes)
        bias_bits, why = needs["bias_bits"]
        if bias_bits > MAX_BIAS_BITS:
            raise ConfigError(f"{why} needs bias_bits={bias_bits}, above the {MAX_BIAS_BITS} bits a bias is "
                              f"loaded in (one AXI4-Lite word); quantize with --acc-bits {MAX_BIAS_BITS} or less")
        try:
            return cls(lanes=lanes, stream_elems=stream_elems, axil_addr_bits=axil_addr_bits,
                       **{name: value for name, (value, _) in needs.items()})
        except ConfigError as e:
            what = getattr(e, "memory_excess", None)
            if what is None:
                raise
            # the depths are what the program occupies: only a smaller network needs less
            raise ConfigError(f"the network's program needs {what}; quantize a smaller network "
                              f"(narrower layers, lower ranks)") from None

    @classmethod
    def for_device(cls, device: str, lanes: int = 4, **overrides: Any) -> "AccelConfig":
        """A default config sized for a device's block RAM.

        ``"ice40up5k"``: 8-bit activations and cores, 16-bit intermediates and biases,
        32-bit accumulators, ``core_depth=1024``, ``bias_depth=128``, ``buf_depth=1024``,
        ``desc_depth=16``, one serial requantization unit (``serial_requant=1``) and
        24-bit performance counters (``counter_bits=24``), for the logic cells: at
        ``lanes <= 4`` the memories fit the UP5K's 30
        4-kbit EBRs (the defaults of :class:`AccelConfig` need more block RAM than the
        UP5K has). ``"ecp5-85f"``: the :class:`AccelConfig` defaults. ``overrides``
        replace single fields.
        """
        presets: dict[str, dict[str, int]] = {
            "ice40up5k": dict(act_bits=8, core_bits=8, inter_bits=16, acc_bits=32, bias_bits=16,
                              core_depth=1024, bias_depth=128, buf_depth=1024, desc_depth=16,
                              serial_requant=1, counter_bits=24),
            "ecp5-85f": {},
        }
        key = str(device).lower()
        if key not in presets:
            raise ConfigError(f"device={device!r} has no preset; use one of {', '.join(presets)}")
        return cls(**{**presets[key], "lanes": lanes, **overrides})

    def misfits(self, net: "IntNetwork") -> list[str]:
        """Why ``net`` does not fit, one phrase per field (empty if it fits)."""
        from ttforge.hw.program import requirements

        out = []
        for name, (need, why) in requirements(net, self.lanes).items():
            have = getattr(self, name)
            if have < need:
                out.append(f"{name}={have} but {why} needs {need}; raise {name} to {need}")
        return out

    def check(self, net: "IntNetwork") -> None:
        """Raise :class:`ConfigError` ``does not fit: ...`` unless ``net`` runs on this config."""
        bad = self.misfits(net)
        if bad:
            raise ConfigError("does not fit: " + "; ".join(bad))

    def fits(self, net: "IntNetwork") -> bool:
        return not self.misfits(net)

    # -- serialization -------------------------------------------------------------------
    def to_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "config") -> "AccelConfig":
        if not isinstance(d, Mapping):
            raise ConfigError(f"{source}: must be an object of AccelConfig fields, got {type(d).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        for k in d:
            if k not in known:
                raise ConfigError(f"{source}: unknown field {k!r}; AccelConfig fields are {', '.join(known)}")
        try:
            return cls(**dict(d))
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> "AccelConfig":
        """Read a config from a ``.json`` or ``.toml`` file (TOML: top-level keys or an
        ``[accel]`` table)."""
        from ttforge.limits import MAX_CONFIG_BYTES, parse_config_text, read_bounded

        p = Path(path).expanduser()
        try:   # a regular file of bounded size (a FIFO or /dev/zero is refused, not read)
            text = read_bounded(p, "config", MAX_CONFIG_BYTES, ConfigError).decode("utf-8")
        except ConfigError as e:
            raise ConfigError(f"cannot read {e}; check --config") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"{p}: is not UTF-8 text ({e.reason} at byte {e.start}); save it as "
                              f"UTF-8 JSON or TOML") from None
        toml = p.suffix.lower() == ".toml"
        d = parse_config_text(text, toml, str(p))
        if toml and "accel" in d and isinstance(d["accel"], dict):
            d = d["accel"]
        return cls.from_dict(d, source=str(p))

    def summary(self) -> str:
        return (f"L={self.lanes} act{self.act_bits}/core{self.core_bits}/inter{self.inter_bits}/"
                f"acc{self.acc_bits}/bias{self.bias_bits} cmem={self.core_depth} "
                f"bmem={self.bias_depth} buf=2x{self.buf_depth} desc={self.desc_depth}"
                + (f" requant_units={self.requant_units}" if self.requant_units else "")
                + (f" read_registers={self.read_registers}" if self.read_registers else "")
                + (f" engines={self.engines}" if self.engines > 1 else ""))
