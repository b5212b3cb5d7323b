"""Flow configs: one TOML file that describes a whole ``ttforge flow`` run.

A config is a set of tables, each parsed into a frozen dataclass validated on
construction; every problem is one :class:`~ttforge.errors.ConfigError` line that
names the section and key (``[quant] w_bits = 0 is out of range; give an integer in
2..8``). Unknown sections and keys are refused with the list of valid ones.

``[flow]``
    ``name`` (the build directory is ``build/<name>``; default: the file's stem).
``[train]`` (and ``[train.model]``)
    The fields of :class:`ttforge.model.train.TrainConfig` and
    :class:`ttforge.model.network.ModelConfig`, validated by them. A relative ``data``
    directory is resolved against the config file's directory.
``[quant]``
    Widths, calibration and optional QAT of ``ttforge quantize``.
``[hw]``
    ``lanes`` (MAC lanes; default: the board's, or 4 without a board; with
    ``[train.model] objective = "cycles"`` the TT layers' contraction orders are chosen
    for the fewest cycles on that many lanes), ``stream_elems``
    (elements per AXI4-Stream beat, a power of two; default 1).
``[sim]``
    ``simulator`` (``auto``, ``verilator-native``, ``icarus``, ``verilator``),
    ``vectors`` (test-set samples run through the RTL), ``seed``.
``[device_train]``
    On-device training of the quantized network (off unless ``enabled = true``):
    ``transport`` (``sim``: the simulated board; ``serial`` with ``port``, ``baud``),
    ``epochs``, ``samples``, ``batch``, ``lanes``, ``lr_shift``, ``master_bits``,
    ``rounding``, ``calib_samples``, ``eval_samples``, ``seed``, ``check`` (see
    :class:`DeviceTrainSection`).
``[bitstream]``
    ``board`` (``icebreaker``, ``ulx3s`` or ``none``), ``freq_mhz``, ``seed``.
``[short]``
    What ``--short`` changes: ``epochs``, ``finetune_epochs``, ``qat_epochs``,
    ``calib_samples``, ``vectors``, ``device_samples`` (each a cap; on-device training
    runs one epoch), and the bitstream is not built.

The embedded default (:func:`default_config`) is ``examples/digits-icebreaker.toml``,
packaged as ``ttforge/flow/default.toml`` (a link to that file, so there is one copy).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from ttforge.errors import ConfigError, ShapeError, TTForgeError, show_path
from ttforge.limits import MAX_BATCH, MAX_EPOCHS, MAX_FREQ_MHZ, MAX_RATE, MAX_SEED, MAX_VECTORS
from ttforge.quant.defaults import PTQ_DEFAULTS

__all__ = ["FlowConfig", "FlowSection", "QuantSection", "HwSection", "SimSection",
           "DeviceTrainSection", "BitstreamSection", "ShortSection", "SIMULATORS", "BOARDS", "load_config",
           "default_config", "DEFAULT_CONFIG"]

#: The packaged default (a link to examples/digits-icebreaker.toml in the source tree).
DEFAULT_CONFIG = Path(__file__).resolve().parent / "default.toml"
#: The packaged example configs (a link to examples/ in the source tree), which
#: ``ttforge examples`` writes out: an install has no examples/ of its own.
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
#: Where a message sends the user for a config to start from.
EXAMPLES_HINT = "'ttforge examples' writes the example configs into ./examples/"
#: ``[sim] simulator`` choices; ``auto`` takes the first available of the other three.
SIMULATORS = ("auto", "verilator-native", "icarus", "verilator")
#: ``[bitstream] board`` choices (``none``: no bitstream).
BOARDS = ("icebreaker", "ulx3s", "none")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int(section: str, key: str, v: Any, lo: int, hi: int | None = None) -> None:
    rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
    if not _is_int(v):
        raise ConfigError(f"[{section}] {key} = {v!r} must be an integer ({rng})")
    if v < lo or (hi is not None and v > hi):
        raise ConfigError(f"[{section}] {key} = {v!r} is out of range; give an integer in {rng}"
                          if hi is not None else f"[{section}] {key} = {v!r} must be {rng}")


def _choice(section: str, key: str, v: Any, choices: tuple[str, ...]) -> None:
    if v not in choices:
        raise ConfigError(f"[{section}] {key} = {v!r} is not valid; choose one of {', '.join(choices)}")


@dataclass(frozen=True)
class FlowSection:
    """``[flow]``: ``name`` names the build directory ``build/<name>``."""

    name: str = "flow"

    def __post_init__(self) -> None:
        ok = isinstance(self.name, str) and self.name and all(
            c.isalnum() or c in "-_." for c in self.name) and self.name not in (".", "..")
        if not ok:
            raise ConfigError(f"[flow] name = {self.name!r} must be a non-empty name of letters, "
                              f"digits, '-', '_' or '.' (it names the build directory)")


def _default_section(stem: str) -> FlowSection:
    """``[flow]`` of a config without one: named after its file's ``stem``; a stem that
    is no valid name is refused with the table to add (the error of ``FlowSection``
    quoted a ``[flow] name`` the user never wrote)."""
    try:
        return FlowSection(name=stem)
    except ConfigError:
        fix = "".join(c if c.isalnum() or c in "-_." else "-" for c in stem).strip("-.") or "flow"
        raise ConfigError(f"has no [flow] table, and its file name {stem!r} cannot name the build "
                          f"directory (letters, digits, '-', '_' or '.' only); add a [flow] table "
                          f"with name = {fix!r}, or rename the file") from None


@dataclass(frozen=True)
class QuantSection:
    """``[quant]``: the options of ``ttforge quantize`` (see :mod:`ttforge.quant.ptq`)."""

    # the command's own defaults (quant.defaults, torch-free), stated once
    w_bits: int = PTQ_DEFAULTS["w_bits"]
    act_bits: int = PTQ_DEFAULTS["act_bits"]
    inter_bits: int = PTQ_DEFAULTS["inter_bits"]
    acc_bits: int = PTQ_DEFAULTS["acc_bits"]
    layer_bits: str = PTQ_DEFAULTS["layer_bits"]
    calibration: str = PTQ_DEFAULTS["calibration"]
    calib_samples: int = PTQ_DEFAULTS["calib_samples"]
    qat_epochs: int = 0
    lr: float = 1e-3
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        from ttforge.ir.arith import BIT_RANGES
        from ttforge.quant.ptq import QUANTIZE_INT_RANGES, is_positive_number, parse_layer_bits

        for key, (lo, hi) in BIT_RANGES.items():  # the ranges ttforge quantize enforces
            _int("quant", key, getattr(self, key), lo, hi)
        if not isinstance(self.layer_bits, str):
            raise ConfigError(f"[quant] layer_bits = {self.layer_bits!r} must be a string like '0:4,1:8'")
        try:
            for idx, bits in parse_layer_bits(self.layer_bits).items():
                _int("quant", f"layer_bits (layer {idx})", bits, *BIT_RANGES["w_bits"])
        except ConfigError as e:
            msg = str(e)
            raise ConfigError(msg if msg.startswith("[quant]") else f"[quant] {msg}") from None
        _choice("quant", "calibration", self.calibration, ("max", "mse"))
        for key, (lo, hi) in QUANTIZE_INT_RANGES.items():  # the bounds ttforge quantize enforces
            _int("quant", key, getattr(self, key), lo, hi)
        if not is_positive_number(self.lr):
            raise ConfigError(f"[quant] lr = {self.lr!r} must be a positive number up to {MAX_RATE:g} (e.g. 1e-3)")

    def quant_config(self, n_layers: int):
        """The :class:`~ttforge.quant.qat.QuantConfig` for a network of ``n_layers``."""
        from ttforge.quant.ptq import make_config, parse_layer_bits

        try:
            return make_config(n_layers, self.w_bits, self.act_bits, self.inter_bits, self.acc_bits,
                               parse_layer_bits(self.layer_bits), self.calibration)
        except ConfigError as e:
            raise ConfigError(f"[quant] {e}") from None


@dataclass(frozen=True)
class HwSection:
    """``[hw]``: ``lanes`` (MAC lanes; 0 means the board's default, or 4 without a board)
    and ``stream_elems`` (elements per AXI4-Stream beat of the inference accelerator, a
    power of two; ``tdata`` is ``stream_elems`` bytes wide for 8-bit activations)."""

    lanes: int = 0
    stream_elems: int = 1

    def __post_init__(self) -> None:
        _int("hw", "lanes", self.lanes, 0)
        self.accel_check(8)   # the narrowest elements (one byte): the widest stream_elems

    def accel_check(self, act_bits: int) -> None:
        """Raise the one-line ``[hw]`` error of the accelerator's own checks of ``lanes``
        and ``stream_elems`` (its ``tdata`` width) for ``act_bits``-bit stream elements."""
        from ttforge.hw.config import AccelConfig

        try:
            AccelConfig(lanes=self.lanes or 1, act_bits=act_bits, inter_bits=32, core_depth=64,
                        bias_depth=64, buf_depth=64, stream_elems=self.stream_elems)
        except ConfigError as e:
            fix = (" (0: the board's default)" if str(e).startswith("lanes") else
                   f" for {act_bits}-bit activations ([quant] act_bits)" if act_bits > 8 else "")
            raise ConfigError(f"[hw] {e}{fix}") from None


@dataclass(frozen=True)
class SimSection:
    """``[sim]``: which simulator runs ``vectors`` test-set samples through the RTL."""

    simulator: str = "auto"
    vectors: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        _choice("sim", "simulator", self.simulator, SIMULATORS)
        _int("sim", "vectors", self.vectors, 1, MAX_VECTORS)
        _int("sim", "seed", self.seed, 0, MAX_SEED)


@dataclass(frozen=True)
class BitstreamSection:
    """``[bitstream]``: the board (``none``: no bitstream), its clock and the nextpnr seed."""

    board: str = "icebreaker"
    freq_mhz: float = 0.0
    seed: int = 1

    def __post_init__(self) -> None:
        _choice("bitstream", "board", self.board, BOARDS)
        if isinstance(self.freq_mhz, bool) or not isinstance(self.freq_mhz, (int, float)) \
                or not math.isfinite(self.freq_mhz) or not 0 <= self.freq_mhz <= MAX_FREQ_MHZ:
            raise ConfigError(f"[bitstream] freq_mhz = {self.freq_mhz!r} must be a number of MHz up to "
                              f"{MAX_FREQ_MHZ:g} (0: the board's default clock)")
        from ttforge.hw.synth import MAX_PNR_SEED

        # nextpnr's range: a larger seed was refused by the build stage, after the others ran
        _int("bitstream", "seed", self.seed, 0, MAX_PNR_SEED)
        if self.freq_mhz and self.board != "none":
            from ttforge.firmware.board import board

            try:
                board(self.board).check_clock(self.clk_hz)
            except ConfigError as e:
                raise ConfigError(f"[bitstream] freq_mhz: {e}".replace("--freq ", "")) from None

    @property
    def clk_hz(self) -> int | None:
        return int(round(self.freq_mhz * 1e6)) if self.freq_mhz else None


@dataclass(frozen=True)
class DeviceTrainSection:
    """``[device_train]``: train the quantized network on the board and check it.

    Off unless ``enabled``. The integer training state continues the quantized network
    (``ttforge train-int --from``: its widths, masters ``master_bits`` wide, 0 meaning four
    bits wider than the cores), calibrated on ``calib_samples``; ``epochs`` epochs of
    ``samples`` training samples (0: all) in batches of ``batch`` run on the training
    accelerator (``lanes`` MAC lanes, memories sized to the network) on ``transport``
    ``"sim"`` (the simulated board: the board top in Icarus with its real UART bridge) or
    ``"serial"`` (a board running the training bitstream on ``port`` at ``baud``). With
    ``check`` the golden trainer runs alongside and the first divergent step stops the run.
    """

    enabled: bool = False
    transport: str = "sim"
    port: str = ""
    baud: int = 115200
    epochs: int = 1
    samples: int = 0
    batch: int = 16
    lanes: int = 4
    lr_shift: int = 6
    master_bits: int = 0
    rounding: str = "stochastic"
    calib_samples: int = 256
    eval_samples: int = 0
    seed: int = 0
    check: bool = True

    def __post_init__(self) -> None:
        for key in ("enabled", "check"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"[device_train] {key} = {getattr(self, key)!r} must be true or false")
        _choice("device_train", "transport", self.transport, ("sim", "serial"))
        if not isinstance(self.port, str):
            raise ConfigError(f"[device_train] port = {self.port!r} must be a string like '/dev/ttyUSB0'")
        if self.enabled and self.transport == "serial" and not self.port:
            raise ConfigError("[device_train] transport = 'serial' needs port (e.g. port = '/dev/ttyUSB0')")
        _int("device_train", "baud", self.baud, 300, 12_000_000)
        _int("device_train", "epochs", self.epochs, 1, 1000)
        _int("device_train", "samples", self.samples, 0, 10_000_000)
        _int("device_train", "batch", self.batch, 1, 1024)
        _int("device_train", "lanes", self.lanes, 1, 64)
        if self.lanes & (self.lanes - 1):
            raise ConfigError(f"[device_train] lanes = {self.lanes} must be a power of two (1, 2, 4, ... 64)")
        _int("device_train", "lr_shift", self.lr_shift, 0, 30)
        if self.master_bits:
            _int("device_train", "master_bits", self.master_bits, 2, 24)
        _choice("device_train", "rounding", self.rounding, ("stochastic", "nearest"))
        _int("device_train", "calib_samples", self.calib_samples, 1, 10_000_000)
        _int("device_train", "eval_samples", self.eval_samples, 0, 10_000_000)
        _int("device_train", "seed", self.seed, 0, MAX_SEED)


@dataclass(frozen=True)
class ShortSection:
    """``[short]``: caps applied by ``--short`` (and no bitstream)."""

    epochs: int = 2
    finetune_epochs: int = 1
    qat_epochs: int = 0
    calib_samples: int = 256
    vectors: int = 16
    device_samples: int = 64

    def __post_init__(self) -> None:
        # each within the range of what it caps (a larger cap was refused later under
        # the name of the capped key, which the user never wrote)
        _int("short", "epochs", self.epochs, 1, MAX_EPOCHS)
        _int("short", "device_samples", self.device_samples, 1, 10_000_000)
        for key in ("finetune_epochs", "qat_epochs"):
            _int("short", key, getattr(self, key), 0, MAX_EPOCHS)
        _int("short", "calib_samples", self.calib_samples, 1, MAX_BATCH)
        _int("short", "vectors", self.vectors, 1, MAX_VECTORS)


_SECTIONS: dict[str, type] = {"flow": FlowSection, "quant": QuantSection, "hw": HwSection,
                              "sim": SimSection, "device_train": DeviceTrainSection,
                              "bitstream": BitstreamSection, "short": ShortSection}
_ALL = ("flow", "train", "quant", "hw", "sim", "device_train", "bitstream", "short")


def _section(name: str, cls: type, data: Any):
    if not isinstance(data, Mapping):
        raise ConfigError(f"[{name}] must be a table of keys, not {type(data).__name__}")
    known = [f.name for f in fields(cls)]
    for key in data:
        if key not in known:
            raise ConfigError(f"[{name}] unknown key {key!r}; valid keys: {', '.join(known)}")
    return cls(**dict(data))


def _train(data: Any, base_dir: Path | None, lanes: int = 0):
    from ttforge.model.data import load_digits_split
    from ttforge.model.train import TrainConfig

    if not isinstance(data, Mapping):
        raise ConfigError(f"[train] must be a table of keys, not {type(data).__name__}")
    d = dict(data)
    spec = d.get("data", "digits")
    if isinstance(spec, str) and spec and spec != "digits":
        # relative IDX directories are relative to the config file, not the working directory
        path = spec[4:] if spec.startswith("idx:") else spec
        p = Path(path).expanduser()
        if not p.is_absolute() and base_dir is not None:
            p = base_dir / p
        d["data"] = str(p.resolve())
    model_table = d.get("model")
    if (lanes and isinstance(model_table, Mapping) and model_table.get("objective") == "cycles"
            and "lanes" not in model_table):
        d["model"] = {**model_table, "lanes": lanes}    # [hw] lanes: the orders are chosen for it
    if isinstance(d.get("model"), Mapping):
        from ttforge.model.network import ModelConfig

        try:   # the model table's own errors name [train.model], not [train]
            ModelConfig.from_dict(dict(d["model"]))
        except TTForgeError as e:
            msg = str(e).replace("unknown model config field", "unknown key").replace("known fields", "valid keys")
            raise ConfigError(f"[train.model] {msg.replace('give lanes or', 'set [hw] lanes or')}") from None
    try:
        cfg = TrainConfig.from_dict(d)
    except ShapeError as e:  # sizes given in [train.model] that its modes or ranks do not fit
        raise ConfigError(f"[train.model] {e}") from None
    except TTForgeError as e:
        msg = str(e).replace("unknown config field", "unknown key").replace("known fields", "valid keys")
        raise ConfigError(msg if msg.startswith("[train") else f"[train] {msg}") from None
    model = cfg.model
    try:
        if cfg.data == "digits" and (model.in_features is None or model.out_features is None):
            ds = load_digits_split()
            model = model.with_features(ds.n_features, ds.n_classes)
        if model.in_features is not None and model.out_features is not None:
            model.layer_specs()  # modes that do not factor the sizes, ranks per layer, ...
    except TTForgeError as e:
        raise ConfigError(f"[train.model] {e}") from None
    return cfg


@dataclass(frozen=True)
class FlowConfig:
    """A whole flow: one section dataclass per TOML table (see the module docstring).

    ``source`` is the file it was read from (``None`` when built in code).
    """

    flow: FlowSection = field(default_factory=FlowSection)
    train: Any = None  # TrainConfig (default: TrainConfig())
    quant: QuantSection = field(default_factory=QuantSection)
    hw: HwSection = field(default_factory=HwSection)
    sim: SimSection = field(default_factory=SimSection)
    device_train: DeviceTrainSection = field(default_factory=DeviceTrainSection)
    bitstream: BitstreamSection = field(default_factory=BitstreamSection)
    short: ShortSection = field(default_factory=ShortSection)
    source: Path | None = None

    def __post_init__(self) -> None:
        from ttforge.model.train import TrainConfig

        if self.train is None:
            object.__setattr__(self, "train", TrainConfig())
        for name, cls in (("train", TrainConfig), *_SECTIONS.items()):
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(f"FlowConfig.{name} must be a {cls.__name__}")
        # the stream's tdata is stream_elems elements of the activation width ([quant] act_bits)
        self.hw.accel_check(self.quant.act_bits)
        # with objective 'cycles' the TT layers' orders are chosen for [hw] lanes (a flow
        # that only varies lanes keeps its network: the 'macs' order does not depend on them)
        model = self.train.model
        if model.lanes is not None and self.hw.lanes and model.lanes != self.hw.lanes:
            raise ConfigError(f"[train.model] lanes = {model.lanes} differs from [hw] lanes = {self.hw.lanes}; "
                              f"drop [train.model] lanes (the flow takes it from [hw])")

    @property
    def name(self) -> str:
        return self.flow.name

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | os.PathLike | None = None) -> "FlowConfig":
        """Parse the tables of a flow config (``source``: the file, for relative paths)."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"a flow config is a table of sections, not {type(data).__name__}")
        for key, value in data.items():
            if key not in _ALL:
                kind = "section" if isinstance(value, Mapping) else "top-level key"
                raise ConfigError(f"unknown {kind} {key!r}; valid sections: {', '.join(_ALL)}")
        src = Path(source).resolve() if source is not None else None
        kw: dict[str, Any] = {name: _section(name, c, data[name])
                              for name, c in _SECTIONS.items() if name in data}
        if "flow" not in data and src is not None:
            kw["flow"] = _default_section(src.stem)
        hw = kw.get("hw")
        kw["train"] = _train(data.get("train", {}), src.parent if src else None, hw.lanes if hw else 0)
        return cls(**kw, source=src)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FlowConfig":
        """Read and validate a ``.toml`` flow config."""
        from ttforge.limits import MAX_CONFIG_BYTES, parse_config_text, read_bounded

        p = Path(path).expanduser()
        if not p.exists():
            raise ConfigError(f"flow config {p} does not exist; give a .toml file ({EXAMPLES_HINT})")
        try:   # a regular file of bounded size: a FIFO or /dev/zero is refused, never read
            text = read_bounded(p, "flow config", MAX_CONFIG_BYTES, ConfigError).decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{p}: is not UTF-8 text; give a .toml flow config") from None
        data = parse_config_text(text, True, str(p))
        try:
            return cls.from_dict(data, source=p)
        except ConfigError as e:   # quoted: 'my config.toml: ...' read as two words
            raise ConfigError(f"{show_path(p)}: {e}") from None

    def shortened(self) -> "FlowConfig":
        """The ``--short`` form: epochs, QAT epochs, calibration samples and vectors capped."""
        s = self.short
        tr = replace(self.train, epochs=min(self.train.epochs, s.epochs),
                     finetune_epochs=min(self.train.finetune_epochs, s.finetune_epochs))
        q = replace(self.quant, qat_epochs=min(self.quant.qat_epochs, s.qat_epochs),
                    calib_samples=min(self.quant.calib_samples, s.calib_samples))
        dt = self.device_train
        dt = replace(dt, epochs=1, samples=min(dt.samples or s.device_samples, s.device_samples),
                     eval_samples=min(dt.eval_samples or s.vectors, s.vectors))
        return replace(self, train=tr, quant=q, sim=replace(self.sim, vectors=min(self.sim.vectors, s.vectors)),
                       device_train=dt)

    def section(self, name: str) -> dict[str, Any]:
        """One section as plain data (what a stage's fingerprint records)."""
        obj = getattr(self, name)
        if name == "train":
            return obj.to_dict()
        return dataclasses.asdict(obj)

    def to_dict(self) -> dict[str, Any]:
        return {name: self.section(name) for name in _ALL}


def load_config(path: str | os.PathLike | None = None) -> FlowConfig:
    """A flow config from ``path``, or the embedded default."""
    return default_config() if path is None else FlowConfig.load(path)


def default_config() -> FlowConfig:
    """The embedded default: ``examples/digits-icebreaker.toml`` (packaged copy)."""
    if not DEFAULT_CONFIG.is_file():
        raise ConfigError(f"the embedded default {DEFAULT_CONFIG} is missing; reinstall ttforge")
    return FlowConfig.load(DEFAULT_CONFIG)
