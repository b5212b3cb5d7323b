"""The cases of ``ttforge regress``: seed ``s`` determines one (:func:`make_case`).

A case is a random integer TT network (:func:`ttforge.ir.random.random_network`), an
:class:`~ttforge.hw.config.AccelConfig` at or above the smallest that runs it (random
lanes and beat packing; depths rounded up to powers of two so that cases share simulator
builds; some widths and depths raised further; one in five in throughput mode, one in
five in the iCEBreaker's form: single-port buffers and/or serial requantization), random
input vectors and the probabilities of stream gaps and back-pressure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ttforge.errors import ConfigError
from ttforge.ir.random import random_network

__all__ = ["RegressCase", "random_config", "make_case"]


def _pow2_at_least(v: int) -> int:
    return 1 << max(0, int(v) - 1).bit_length()


def random_config(net, rng: np.random.Generator, lanes: int | None = None,
                  stream_elems: int | None = None):
    """An :class:`AccelConfig` at or above the smallest that runs ``net``.

    One case in seven gets exactly the smallest config (memories filled to the last
    element, where range checks bite). The others get a *pooled* config: widths and
    depths raised to a few standard values (core 8 bits, buffers 16 bits, accumulator 32
    or 48, depths powers of two with a floor), so that different networks share a
    configuration, and hence a simulator build, while the engine runs programs smaller
    than its memories."""
    from ttforge.hw.config import AccelConfig

    L = int(lanes) if lanes is not None else int(rng.choice([1, 2, 4, 4, 8, 16]))
    E = int(stream_elems) if stream_elems is not None else int(rng.choice([1, 1, 2, 4]))
    smallest = AccelConfig.for_network(net, lanes=L, stream_elems=E)
    if rng.random() < 1 / 7:
        return smallest
    need = smallest.to_dict()
    d = dict(need)
    d.pop("axil_addr_bits")
    d["core_depth"] = max(_pow2_at_least(need["core_depth"]), 512)
    d["bias_depth"] = max(_pow2_at_least(need["bias_depth"]), 64)
    d["buf_depth"] = max(_pow2_at_least(need["buf_depth"]), 256)
    d["desc_depth"] = max(_pow2_at_least(need["desc_depth"]), 16)
    d["act_bits"] = need["act_bits"] if rng.random() < 0.3 else max(need["act_bits"], 8)
    d["core_bits"] = max(need["core_bits"], 8)
    d["inter_bits"] = max(need["inter_bits"], d["act_bits"], 16)
    d["acc_bits"] = 32 if need["acc_bits"] <= 32 else 48
    d["bias_bits"] = max(need["bias_bits"], min(32, d["acc_bits"]))
    cfg = AccelConfig(**d)
    cfg.check(net)
    return cfg


@dataclass(frozen=True, eq=False)
class RegressCase:
    """One regression case (everything follows from ``seed``)."""

    seed: int
    net: Any
    config: Any
    inputs: np.ndarray
    gaps: float
    backpressure: float

    @property
    def shape(self) -> str:
        """``in>out`` per layer with its TT ranks, e.g. ``30>20 r3,5 | 20>5``."""
        parts = []
        for layer in self.net.layers:
            r = layer.schedule.shape.ranks[1:-1]
            parts.append(f"{layer.in_features}>{layer.out_features}"
                         + (" r" + ",".join(map(str, r)) if r else "")
                         + f" w{layer.w_bits}")
        return " | ".join(parts)


#: the share of random configs built in throughput mode (``AccelConfig.throughput``)
THROUGHPUT_SHARE = 0.2


def _side_rng(seed: int, salt: int) -> np.random.Generator:
    """A generator of its own for one config option's draw (``salt`` names the option):
    adding a draw leaves every seed's network, config, inputs and pauses as they were."""
    return np.random.default_rng([int(seed), salt])


def _throughput_drawn(seed: int) -> bool:
    """Whether seed ``seed``'s random config is built in throughput mode."""
    return bool(_side_rng(seed, 0x77F1).random() < THROUGHPUT_SHARE)


#: the share of random configs with shared requantization units (``requant_units``)
SHARED_REQUANT_SHARE = 0.25


def _requant_units_drawn(seed: int, lanes: int) -> int | None:
    """Seed ``seed``'s shared requantization units at ``lanes`` lanes (a power of two in
    2..lanes/2), or ``None`` (one per lane)."""
    rng = _side_rng(seed, 0x77F2)
    if lanes < 4 or rng.random() >= SHARED_REQUANT_SHARE:
        return None
    return int(rng.choice([1 << k for k in range(1, lanes.bit_length() - 1)]))


#: the share of random configs with the operand register stage (``read_registers``)
READ_REGISTERS_SHARE = 0.25


def _read_registers_drawn(seed: int) -> int:
    """Seed ``seed``'s ``read_registers``: 0, or 1 or 2 (the bank select registered too)
    in :data:`READ_REGISTERS_SHARE` of the seeds."""
    rng = _side_rng(seed, 0x77F3)
    if rng.random() >= READ_REGISTERS_SHARE:
        return 0
    return 1 + int(rng.random() < 0.5)


#: the share of random configs (one engine's throughput mode aside) built as an engine
#: array (``AccelConfig.engines`` 2 or 3)
ENGINES_SHARE = 0.15


def _engines_drawn(seed: int) -> int:
    """Seed ``seed``'s ``engines``: 1, or 2 or 3 in :data:`ENGINES_SHARE` of the seeds."""
    rng = _side_rng(seed, 0x77F4)
    return int(rng.choice([2, 3])) if rng.random() < ENGINES_SHARE else 1


#: the share of random configs built in the iCEBreaker's form: single-port buffers
#: (``buf_ports=1``) and/or one serial requantization unit (``serial_requant=1``), what
#: :func:`ttforge.firmware.build.board_config` gives the iCE40 (no random case drew
#: either before: the one-lane serial path ran only under ``--config``)
ICE40_SHARE = 0.2


def _ice40_drawn(seed: int) -> dict[str, int]:
    """Seed ``seed``'s iCE40 options: ``{}``, or ``buf_ports=1`` and/or
    ``serial_requant=1`` (at least one) in :data:`ICE40_SHARE` of the seeds."""
    rng = _side_rng(seed, 0x77F5)
    if rng.random() >= ICE40_SHARE:
        return {}
    which = int(rng.integers(1, 4))   # 1: buf_ports, 2: serial_requant, 3: both
    return {**({"buf_ports": 1} if which & 1 else {}), **({"serial_requant": 1} if which & 2 else {})}


def make_case(seed: int, vectors: int = 16, *, config=None) -> RegressCase:
    """The case of ``seed``: network, config (or the given one, with networks redrawn
    until one fits it), ``vectors`` random inputs and the stream pause probabilities."""
    from ttforge.hw.config import AccelConfig

    rng = np.random.default_rng([int(seed), 0x77F0])
    for _ in range(200):
        net = random_network(rng)
        if config is None:
            cfg = random_config(net, rng)
            break
        if config.fits(net):
            cfg = config
            break
    else:
        raise ConfigError(f"--config: no random network of seed {seed} fits {config.summary()}; "
                          f"raise its depths and widths")
    ice40 = _ice40_drawn(seed) if config is None else {}
    if ice40:
        cfg = AccelConfig.from_dict({**cfg.to_dict(), **ice40})
    if config is None and cfg.buf_ports == 2 and _throughput_drawn(seed):
        cfg = AccelConfig.from_dict({**cfg.to_dict(), "throughput": 1})
    units = _requant_units_drawn(seed, cfg.lanes) if config is None and not cfg.serial_requant else None
    if units is not None:
        cfg = AccelConfig.from_dict({**cfg.to_dict(), "requant_units": units})
    rr = _read_registers_drawn(seed) if config is None and cfg.buf_ports == 2 else 0
    if rr:
        cfg = AccelConfig.from_dict({**cfg.to_dict(), "read_registers": rr})
    engines = _engines_drawn(seed) if config is None and not cfg.throughput else 1
    if engines > 1:
        cfg = AccelConfig.from_dict({**cfg.to_dict(), "engines": engines})
    # the pauses before the inputs: the same seed keeps them with any --vectors
    gaps = float(rng.choice([0.0, 0.1, 0.3]))
    bp = float(rng.choice([0.0, 0.1, 0.3]))
    bits = net.layers[0].in_bits
    X = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), size=(int(vectors), net.in_features))
    return RegressCase(int(seed), net, cfg, X.astype(np.int64), gaps, bp)
