"""The analytic cycle model of the engine, and a dense matrix-vector engine to compare.

Per step (``docs/hardware.md``): one MAC cycle per loop iteration (``N0*N1*N2*N3``);
word writes (mode 0, or ``OUT_WORD``) never stall with a requantization unit per lane
(with ``U = requant_units`` units a word result drains in ``D = L / U`` cycles, and a
block shorter than ``D`` waits ``D - K``); element writes (mode 1) drain one
valid lane per cycle from a shadow register while the lanes compute the next block, so
block ``b`` followed by a block of ``K = N3`` cycles stalls the lanes
``max(0, v_b - K)`` cycles (``v_b`` its valid lanes; with a single shadow register this
is exact: the drain of block ``b`` starts when block ``b`` moves into the shadow, and
block ``b+1`` is ready ``K`` cycles later); the last block's drain, the pipeline tail
and the zero fill (one element per cycle) follow; every step also pays the descriptor
fetch. Per inference: ``IN_PAD`` cycles to take the input (one element per cycle, then
the zero padding), the steps, the output latency and ``OUT_COUNT`` cycles to stream the
output. In throughput mode (``AccelConfig.throughput``) the next vector's input overlaps
the current vector's steps and output, and each vector first copies its staged input
into BUF0 (``ceil(IN_PAD / L)`` cycles): :attr:`ProgramCycles.vector_cycles`.

Every fixed overhead is a named field of :class:`EngineTiming`; :data:`ENGINE_TIMING`
is the one home of the engine's timing: the RTL (``ttforge.hw.engine``) is built from it
(the output FIFO depth) and follows it, and the RTL's tests compare the model with the
simulated counters.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from ttforge.errors import ConfigError
from ttforge.hw.config import AccelConfig
from ttforge.hw.program import Descriptor, Program, decode_descriptor

__all__ = ["EngineTiming", "ENGINE_TIMING", "StepCycles", "ProgramCycles", "LayerEstimate",
           "Estimate", "step_cycles", "program_cycles", "estimate", "dense_cycles"]


@dataclass(frozen=True)
class EngineTiming:
    """Fixed cycle costs of the engine (all >= 0); :data:`ENGINE_TIMING` holds the
    values the RTL (``ttforge.hw.engine``) is built with and follows, which its tests
    check against the simulated counters.

    Cycles of one inference, from the first input element accepted to the last output
    element accepted, with streams that never stall::

        IN_PAD (IN_COUNT received + the zero padding, one element per cycle)
        + sum over steps of [fetch + N0*N1*N2*N3 + writer stalls
                             + (drain_word | drain_elem + v_last [+ bias_select if L > 1])
                             + (ZFILL_TO - ZFILL_FROM) + (zfill_exit if it zero-fills)]
        + output_latency + OUT_COUNT

    In throughput mode, per vector in the steady state (back-to-back vectors, streams
    that never stall)::

        stage_turnaround + ceil(IN_PAD / L)
        + max(IN_PAD, sum over steps of [...] + output_latency + OUT_COUNT)

    and the first vector's latency is ``IN_PAD + stage_turnaround + ceil(IN_PAD / L)``
    + the steps + the output.

    Attributes
    ----------
    fetch : int
        Per step: reading the 24 descriptor words from DMEM and checking them.
    drain_word : int
        Per step with word outputs (mode 0, ``OUT_WORD``): from the last MAC cycle until
        the next phase (pipeline, requantization, the last word write); a config with
        ``read_registers = r`` takes ``r`` more (its operand register stages).
    drain_elem : int
        The same for element outputs (mode 1), plus one cycle per valid lane of the
        last block (``v_last``), plus ``bias_select`` with more than one lane.
    bias_select : int
        Element outputs with more than one lane: the registered select of the bias
        element's lane before the requantization unit (one lane has nothing to select).
    zfill_exit : int
        Extra cycles of a step that zero-fills, beyond one per element.
    output_latency : int
        From entering the output phase to the first output element.
    fifo_depth : int
        Entries of the output FIFO (the engine issues buffer reads while it has room;
        the RTL is built with this depth).
    stage_turnaround : int
        Throughput mode: from the cycle a vector is staged (or the previous vector's last
        output element is accepted, whichever is later) to its copy's first cycle.
    """

    fetch: int = 26
    drain_word: int = 11
    drain_elem: int = 12
    bias_select: int = 1
    zfill_exit: int = 0
    output_latency: int = 3
    fifo_depth: int = 4
    stage_turnaround: int = 1

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f"EngineTiming.{f.name}={v!r} must be an integer >= 0")

    def replace(self, **kw: int) -> "EngineTiming":
        return dataclasses.replace(self, **kw)

    @classmethod
    def from_mapping(cls, m: Mapping[str, int]) -> "EngineTiming":
        """From a mapping with these names in any case (e.g. the RTL's ``ENGINE_TIMING``
        dict); other keys are ignored."""
        lower = {str(k).lower(): v for k, v in m.items()}
        return cls(**{f.name: int(lower[f.name]) for f in dataclasses.fields(cls) if f.name in lower})


#: The engine's timing: the RTL's own (``ttforge.hw.engine`` imports it).
ENGINE_TIMING = EngineTiming()


@dataclass(frozen=True)
class StepCycles:
    """Cycles of one step, per inference."""

    mac_cycles: int
    busy_lane_cycles: int
    stall_cycles: int
    drain_cycles: int
    zfill_cycles: int
    overhead_cycles: int

    @property
    def total(self) -> int:
        return (self.mac_cycles + self.stall_cycles + self.drain_cycles + self.zfill_cycles
                + self.overhead_cycles)


def step_cycles(d: Descriptor, config: AccelConfig, timing: EngineTiming = ENGINE_TIMING) -> StepCycles:
    """The cycle model of one decoded descriptor."""
    L = config.lanes
    N0, N1, N2, K = (int(n) for n in d.N)
    mode1 = d.MODE == 1
    last_lanes = int(d.LAST_LANES) if mode1 else L
    blocks = N0 * N1 * N2
    mac = blocks * K
    busy = N0 * N1 * K * ((N2 - 1) * L + last_lanes)
    t = timing
    if (mode1 and not d.OUT_WORD) or config.serial_requant:
        # element outputs (with serial_requant every step writes one element per cycle)
        stall_full = max(0, L - K)
        stall_last = max(0, last_lanes - K)
        # every block but the step's last stalls before the next one moves in
        stall = N0 * N1 * ((N2 - 1) * stall_full + stall_last) - stall_last
        drain = (t.drain_elem + (t.bias_select if L > 1 else 0) + last_lanes
                 + config.read_registers)
    else:
        # word outputs: through U = requant_units units in D = L / U cycles from the result
        # register, so a block of K < D cycles waits D - K (D = 1: never)
        D = L // config.requant_count
        stall = (blocks - 1) * max(0, D - K)
        drain = t.drain_word + D - 1 + config.read_registers
    fill = max(0, int(d.ZFILL_TO) - int(d.ZFILL_FROM))
    zfill = fill + (t.zfill_exit if fill else 0)
    return StepCycles(mac, busy, stall, drain, zfill, t.fetch)


@dataclass(frozen=True)
class ProgramCycles:
    """Cycles of one inference."""

    steps: tuple[StepCycles, ...]
    input_cycles: int
    output_cycles: int
    lanes: int
    #: throughput mode: the copy of a staged vector into BUF0 and the turnaround before it
    stage_cycles: int = 0
    #: ``AccelConfig.engines``: engines taking the vectors in turn
    engines: int = 1
    #: elements of one input vector (``IN_COUNT``: the stream takes one a cycle)
    in_count: int = 0
    #: elements of one output vector (``OUT_COUNT``: the stream gives one a cycle)
    out_count: int = 0

    @property
    def total(self) -> int:
        """Cycles of one inference on its own (the latency; without throughput mode)."""
        return self.input_cycles + sum(s.total for s in self.steps) + self.output_cycles

    @property
    def vector_cycles(self) -> int:
        """Throughput mode: cycles per vector in the steady state (the input of the next
        vector overlaps the steps and output of this one)."""
        compute = sum(s.total for s in self.steps) + self.output_cycles
        return self.stage_cycles + max(self.input_cycles, compute)

    @property
    def array_vector_cycles(self) -> float:
        """Engines side by side (``engines``): cycles per vector in the steady state of
        back-to-back vectors. Each engine takes ``total`` cycles a vector and the engines
        take the vectors in turn, so ``engines`` vectors leave every ``total`` cycles,
        unless the streams, one element a cycle and one vector at a time, are slower."""
        return max(self.total / self.engines, self.in_count, self.out_count)

    @property
    def throughput_latency(self) -> int:
        """Throughput mode: cycles of a vector from its first element accepted to its
        last output element accepted, when the engine was idle."""
        return self.total + self.stage_cycles

    @property
    def busy_lane_cycles(self) -> int:
        return sum(s.busy_lane_cycles for s in self.steps)

    @property
    def utilization(self) -> float:
        """Busy MAC-lane cycles over ``L x`` all cycles (what the hardware counters give)."""
        return self.busy_lane_cycles / (self.lanes * self.total) if self.total else 0.0


def program_cycles(descriptors: Iterable[Descriptor | Sequence[int]], config: AccelConfig,
                   globals_: Mapping[str, int], timing: EngineTiming = ENGINE_TIMING) -> ProgramCycles:
    """The cycle model of a descriptor program (decoded descriptors or their words) with
    program registers ``globals_`` (``IN_PAD``, ``OUT_COUNT``)."""
    steps = []
    for d in descriptors:
        if not isinstance(d, Descriptor):
            d = decode_descriptor(d)
        steps.append(step_cycles(d, config, timing))
    t = timing
    in_cycles = max(int(globals_["IN_PAD"]), int(globals_.get("IN_COUNT", 0)))
    return ProgramCycles(
        steps=tuple(steps),
        input_cycles=in_cycles,
        output_cycles=t.output_latency + config.read_registers + int(globals_["OUT_COUNT"]),
        lanes=config.lanes,
        stage_cycles=t.stage_turnaround + -(-in_cycles // config.lanes),
        engines=config.engines,
        in_count=int(globals_.get("IN_COUNT", 0)),
        out_count=int(globals_["OUT_COUNT"]),
    )


def dense_cycles(out_features: int, in_features: int, lanes: int) -> int:
    """Cycles per vector of a dense matrix-vector engine with ``lanes`` MAC lanes (lanes
    over output rows, one input element per cycle): ``ceil(M / L) * N``."""
    return math.ceil(out_features / lanes) * in_features


@dataclass(frozen=True)
class LayerEstimate:
    """Analytic figures of one layer of a compiled program (per inference)."""

    layer: int
    steps: tuple[int, ...]
    modes: tuple[int, ...]
    in_features: int
    out_features: int
    cycles: int
    mac_cycles: int
    macs: int
    busy_lane_cycles: int
    stall_cycles: int
    utilization: float
    core_bits: int
    bias_bits: int
    buffer_bits: int
    dense_cycles: int
    dense_weight_bits: int

    @property
    def memory_bits(self) -> int:
        return self.core_bits + self.bias_bits + self.buffer_bits

    @property
    def dense_ratio(self) -> float:
        """TT cycles over dense-engine cycles (< 1: the TT schedule is faster)."""
        return self.cycles / self.dense_cycles if self.dense_cycles else math.inf

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["steps"], d["modes"] = list(self.steps), list(self.modes)
        d["memory_bits"] = self.memory_bits
        d["dense_ratio"] = self.dense_ratio
        return d


@dataclass(frozen=True)
class Estimate:
    """Analytic estimate of a program: layers plus the input and output phases.

    In throughput mode (``throughput``) a vector first waits ``stage_cycles`` (the
    turnaround and the copy of its staged input into BUF0), and the next vector's input
    overlaps this one's steps and output: :attr:`cycles` is then the latency of a vector
    on an idle engine (``ProgramCycles.throughput_latency``) and :attr:`vector_cycles`
    the cycles per vector back to back (``ProgramCycles.vector_cycles``), from which
    :attr:`utilization` is taken. Without it both are ``ProgramCycles.total``.
    """

    lanes: int
    layers: tuple[LayerEstimate, ...]
    input_cycles: int
    output_cycles: int
    timing: EngineTiming
    #: the cycle model of the program, which owns every cycle figure below
    program_cycles: ProgramCycles
    #: ``AccelConfig.throughput``
    throughput: bool = False
    #: throughput mode: the copy of a staged vector into BUF0 and the turnaround before it
    stage_cycles: int = 0

    @property
    def cycles(self) -> int:
        """Cycles of one vector on an idle engine, from its first input element accepted
        to its last output element accepted (the latency)."""
        pc = self.program_cycles
        return pc.throughput_latency if self.throughput else pc.total

    @property
    def vector_cycles(self) -> int:
        """Cycles per vector of back-to-back vectors: :attr:`cycles`, or in throughput
        mode the steady state, where the input of the next vector overlaps the steps and
        output of this one (what ``CYCLES / VECTORS`` tends to)."""
        return self.program_cycles.vector_cycles if self.throughput else self.cycles

    @property
    def macs(self) -> int:
        return sum(x.macs for x in self.layers)

    @property
    def busy_lane_cycles(self) -> int:
        return sum(x.busy_lane_cycles for x in self.layers)

    @property
    def utilization(self) -> float:
        """Busy MAC-lane cycles over ``L x`` :attr:`vector_cycles` (what the counters give
        over many vectors)."""
        return self.busy_lane_cycles / (self.lanes * self.vector_cycles) if self.vector_cycles else 0.0

    @property
    def dense_cycles(self) -> int:
        return sum(x.dense_cycles for x in self.layers)

    def to_dict(self) -> dict[str, Any]:
        return {
            "lanes": self.lanes,
            "cycles": self.cycles,
            "vector_cycles": self.vector_cycles,
            "throughput": int(self.throughput),
            "stage_cycles": self.stage_cycles,
            "macs": self.macs,
            "busy_lane_cycles": self.busy_lane_cycles,
            "utilization": self.utilization,
            "input_cycles": self.input_cycles,
            "output_cycles": self.output_cycles,
            "dense_cycles": self.dense_cycles,
            "dense_ratio": self.cycles / self.dense_cycles if self.dense_cycles else None,
            "timing": dataclasses.asdict(self.timing),
            "layers": [x.to_dict() for x in self.layers],
        }


def estimate(program: Program, timing: EngineTiming = ENGINE_TIMING) -> Estimate:
    """Per-layer cycles, MACs, utilization and memory bits of a compiled program, with
    the dense matrix-vector engine of the same ``L`` for comparison."""
    cfg = program.config
    pc = program_cycles(program.descriptors, cfg, program.globals, timing)
    layers = []
    nlayers = program.steps[-1].layer + 1
    for li in range(nlayers):
        idx = [s.index for s in program.steps if s.layer == li]
        infos = [program.steps[i] for i in idx]
        sc = [pc.steps[i] for i in idx]
        cycles = sum(c.total for c in sc)
        busy = sum(c.busy_lane_cycles for c in sc)
        first, last = infos[0], infos[-1]
        in_f = program.in_count if li == 0 else None
        out_f = last.out_valid
        if in_f is None:
            prev = [s for s in program.steps if s.layer == li - 1][-1]
            in_f = prev.out_valid
        peak = max([first.in_size] + [max(s.out_size, s.zfill_to) for s in infos])
        layers.append(LayerEstimate(
            layer=li, steps=tuple(idx), modes=tuple(s.mode for s in infos),
            in_features=in_f, out_features=out_f, cycles=cycles,
            mac_cycles=sum(c.mac_cycles for c in sc), macs=sum(s.macs for s in infos),
            busy_lane_cycles=busy, stall_cycles=sum(c.stall_cycles for c in sc),
            utilization=busy / (cfg.lanes * cycles) if cycles else 0.0,
            core_bits=sum(s.c_size for s in infos) * cfg.core_bits,
            bias_bits=(out_f * cfg.bias_bits) if last.bias else 0,
            buffer_bits=2 * peak * cfg.inter_bits,
            dense_cycles=dense_cycles(out_f, in_f, cfg.lanes),
            dense_weight_bits=out_f * in_f * cfg.core_bits,
        ))
    return Estimate(lanes=cfg.lanes, layers=tuple(layers), input_cycles=pc.input_cycles,
                    output_cycles=pc.output_cycles, timing=timing, program_cycles=pc,
                    throughput=bool(cfg.throughput),
                    stage_cycles=pc.stage_cycles if cfg.throughput else 0)
