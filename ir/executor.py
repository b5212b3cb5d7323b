"""The integer golden executor: pure numpy ``int64``, following ``docs/arithmetic.md``.

An :class:`IntNetwork` is a chain of :class:`IntLayer`; each layer holds integer cores,
their exponents, the layer's :class:`~ttforge.model.ContractionSchedule` and the
exponent after every step. A dense layer is the one-core case. This is the content of
the compiled artifact: everything downstream (RTL, board) must equal :func:`execute`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
import numpy as np

from ttforge.errors import ConfigError, ShapeError, show
from ttforge.ir.schedule import ContractionSchedule
from ttforge.ir.arith import (MAX_ACC_BITS, acc_bits_needed, int_range, quantize, rshift_round, saturate, shift_range,
                              value_range)
from ttforge.limits import MAX_EXP

__all__ = ["IntLayer", "IntNetwork", "StepTrace", "execute", "execute_traced", "layer_from_dense", "check_input",
           "require_network",
           "check_input_values", "LAYER_INT_RANGES", "LAYER_ARRAY_RANGES", "EXP_RANGE", "frozen_array"]

#: Every exponent of a layer (``in_exp``, ``core_exps``, ``step_exps``) lies in this range.
EXP_RANGE = (-MAX_EXP, MAX_EXP)
#: ``field: (lo, hi)`` (``hi`` None: unbounded) of a layer's integer fields: what
#: :class:`IntLayer` and the artifact loader (:mod:`.artifact`) both refuse outside it, so
#: a layer that can be built can be saved and loaded.
LAYER_INT_RANGES: dict[str, tuple[int, int | None]] = {
    "w_bits": (2, 8), "in_bits": (2, 32), "inter_bits": (2, 32), "out_bits": (2, 32),
    "acc_bits": (2, MAX_ACC_BITS), "in_features": (1, None), "out_features": (1, None), "in_exp": EXP_RANGE,
}
#: ``array: (width field, narrow)``: every value of a layer's integer arrays lies in
#: ``value_range(layer.<width field>, narrow)`` (cores narrow in ``w_bits``, the bias within
#: the ``acc_bits`` accumulator): what :class:`IntLayer`, the artifact loader and its writer
#: (which refuses to cast a value that left it) all check.
LAYER_ARRAY_RANGES: dict[str, tuple[str, bool]] = {"cores": ("w_bits", True), "bias": ("acc_bits", False)}


def _is_frozen(a: np.ndarray) -> bool:
    """Whether ``a`` is a view of an immutable ``bytes`` object (what :func:`frozen_array`
    makes) through arrays none of which is writeable."""
    b = a
    while isinstance(b, np.ndarray):
        if b.flags.writeable:
            return False
        b = b.base
    return isinstance(b, bytes)


def frozen_array(a: object) -> object:
    """An int64 array as layers and training states hold it: an immutable copy, or ``a``
    itself when it already is one; anything else is returned as is, for the caller's type
    check to name.

    The copy's memory is a ``bytes`` object, so numpy refuses to write into it and also to
    make it writeable again: a layer checked on construction stays as checked (an edit of
    the caller's array, or of the layer's, ran, saved and compiled out-of-range values).
    """
    if not isinstance(a, np.ndarray) or a.dtype != np.int64 or _is_frozen(a):
        return a
    return np.frombuffer(np.ascontiguousarray(a).tobytes(), dtype=np.int64).reshape(a.shape)


def rebuild(obj):
    """``__reduce__`` of a frozen dataclass holding frozen arrays: a copy or a pickle is
    made through the constructor, which checks and freezes again (``copy.deepcopy`` and
    ``pickle`` otherwise restore writeable arrays behind the checks)."""
    return type(obj), tuple(getattr(obj, f.name) for f in fields(obj))


def _is_int(v: object) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


@dataclass(frozen=True, eq=False)
class IntLayer:
    """One TT (or dense, ``d = 1``) layer in integers.

    Attributes
    ----------
    in_features, out_features : int
        Unpadded sizes.
    schedule : ContractionSchedule
        Shapes, ranks and the order of the steps.
    cores : tuple of int64 arrays
        Core ``k`` of shape ``(r[k], m[k], n[k], r[k+1])``, narrow range of ``w_bits``.
    core_exps : tuple of int
        Exponent of each core.
    w_bits, in_bits, inter_bits, out_bits, acc_bits : int
        Widths of cores, the layer input, intermediates, the output and the accumulator.
    in_exp : int
        Exponent of the layer input.
    step_exps : tuple of int
        Exponent after each step; the last is the output exponent.
    bias : int64 array or None
        Bias at the last step's accumulator exponent, length ``out_features``.
    relu : bool
        ReLU after the output requantization.
    """

    in_features: int
    out_features: int
    schedule: ContractionSchedule
    cores: tuple[np.ndarray, ...]
    core_exps: tuple[int, ...]
    w_bits: int
    in_bits: int
    in_exp: int
    inter_bits: int
    out_bits: int
    step_exps: tuple[int, ...]
    acc_bits: int
    bias: np.ndarray | None = None
    relu: bool = False

    def __post_init__(self) -> None:
        self._check_fields()
        # own immutable copies, checked once: see frozen_array
        if isinstance(self.cores, (tuple, list)):
            object.__setattr__(self, "cores", tuple(frozen_array(g) for g in self.cores))
        object.__setattr__(self, "bias", frozen_array(self.bias))
        shape = self.schedule.shape
        if len(self.cores) != shape.d or len(self.core_exps) != shape.d:
            raise ShapeError(f"layer has {len(self.cores)} cores/{len(self.core_exps)} exponents "
                             f"but its schedule has {shape.d} cores")
        for k, (g, s) in enumerate(zip(self.cores, shape.core_shapes)):
            if not isinstance(g, np.ndarray):
                raise ShapeError(f"core {k} is a {type(g).__name__}; integer cores are int64 numpy arrays")
            if tuple(g.shape) != s:
                raise ShapeError(f"core {k} has shape {tuple(g.shape)}, the schedule needs {s}")
            if g.dtype != np.int64:
                raise ShapeError(f"core {k} has dtype {g.dtype}; integer cores are int64")
        self._check_core_values()
        if len(self.step_exps) != shape.d:
            raise ShapeError(f"step_exps has {len(self.step_exps)} entries; the schedule has {shape.d} steps")
        if not shape.in_size >= self.in_features or not shape.out_size >= self.out_features:
            raise ShapeError("in/out features exceed the TT shape")
        if self.bias is not None:
            if not isinstance(self.bias, np.ndarray) or self.bias.dtype != np.int64:
                raise ShapeError(f"bias has dtype {getattr(self.bias, 'dtype', type(self.bias).__name__)}; "
                                 f"an integer bias is an int64 array")
            if tuple(self.bias.shape) != (self.out_features,):
                raise ShapeError(f"bias has shape {tuple(self.bias.shape)}; expected ({self.out_features},)")
        self._check_exact()
        for t, need in enumerate(self.acc_bits_needed()):
            if need > self.acc_bits:
                step = self.schedule.steps[t]
                # past the widest accumulator "raise acc_bits to 49" named a width that is
                # itself refused: then only narrower operands or a shorter sum help
                fix = (f"raise acc_bits to {need} or lower the widths" if need <= MAX_ACC_BITS else
                       f"that is more than the widest accumulator ({MAX_ACC_BITS} bits): lower w_bits "
                       f"({self.w_bits}) or the step's input width ({self.step_in(t)[0]} bits), or shorten "
                       f"its sum of {step.K} products (smaller modes or ranks)")
                raise ConfigError(f"step {t} (core {step.core}) can reach {need}-bit sums but "
                                  f"acc_bits={self.acc_bits}; {fix}")
        self._check_bias_values()

    __reduce__ = rebuild

    def value_range(self, array: str) -> tuple[int, int]:
        """``(lo, hi)`` of every value of ``array`` (``"cores"`` or ``"bias"``;
        :data:`LAYER_ARRAY_RANGES`)."""
        width, narrow = LAYER_ARRAY_RANGES[array]
        return value_range(getattr(self, width), narrow)

    def check_values(self) -> None:
        """The constructor's check of every core and bias value, again: for a writer that
        lays them out in a narrower form (``ttforge.hw.compile_program``), so a value
        that left its range (through a bypass of the frozen arrays) is refused, never wrapped."""
        self._check_core_values()
        self._check_bias_values()

    def _check_core_values(self) -> None:
        lo, hi = self.value_range("cores")
        for k, g in enumerate(self.cores):
            if g.size and (g.min() < lo or g.max() > hi):
                raise ShapeError(f"core {k} has values in [{g.min()}, {g.max()}], outside the "
                                 f"{self.w_bits}-bit range [{lo}, {hi}]")

    def _check_bias_values(self) -> None:
        if self.bias is not None and self.bias.size:   # also what the loader checks
            blo, bhi = self.value_range("bias")
            if self.bias.min() < blo or self.bias.max() > bhi:
                raise ConfigError(f"bias has values in [{self.bias.min()}, {self.bias.max()}], outside the "
                                  f"{self.acc_bits}-bit accumulator range [{blo}, {bhi}]")

    def _check_fields(self) -> None:
        """Integers in :data:`LAYER_INT_RANGES` (exponents in :data:`EXP_RANGE`), ``relu`` a
        bool: exactly what the artifact loader accepts (numpy integers become ``int``)."""
        for name, (lo, hi) in LAYER_INT_RANGES.items():
            v = getattr(self, name)
            if not _is_int(v) or v < lo or (hi is not None and v > hi):
                raise ConfigError(f"{name}={show(v)} must be an integer "
                                  f"{'>= ' + str(lo) if hi is None else f'in {lo}..{hi}'}"
                                  + (" (the widest accumulator computed exactly in int64)" if name == "acc_bits"
                                     else ""))
            object.__setattr__(self, name, int(v))
        for name in ("core_exps", "step_exps"):
            values = getattr(self, name)
            if not isinstance(values, (tuple, list)) or not all(_is_int(e) and EXP_RANGE[0] <= e <= EXP_RANGE[1]
                                                                 for e in values):
                raise ConfigError(f"{name}={show(values)} must be integers in {EXP_RANGE[0]}..{EXP_RANGE[1]}")
            object.__setattr__(self, name, tuple(int(e) for e in values))
        if not isinstance(self.relu, (bool, np.bool_)):
            raise ConfigError(f"relu={show(self.relu)} must be True or False")
        object.__setattr__(self, "relu", bool(self.relu))

    def _check_exact(self) -> None:
        """Every shift within :func:`~ttforge.ir.arith.shift_range`: with ``acc_bits <= 48``
        and exponents within ``+-MAX_EXP`` (:meth:`_check_fields`), the fields for which
        this int64 executor is exact (docs/artifact.md, "What the loader refuses")."""
        lo, hi = shift_range(self.acc_bits)
        for t, s in enumerate(self.shifts()):
            if not lo <= s <= hi:
                raise ConfigError(
                    f"step {t} shifts by {s} ({'left ' + str(-s) if s < 0 else 'right ' + str(s)}); "
                    f"with acc_bits={self.acc_bits} the exact range is {lo}..{hi}; change the exponents")

    # -- derived ---------------------------------------------------------------------
    def step_in(self, t: int) -> tuple[int, int]:
        """``(bits, exp)`` of the input of step ``t``."""
        return (self.in_bits, self.in_exp) if t == 0 else (self.inter_bits, self.step_exps[t - 1])

    def step_out_bits(self, t: int) -> int:
        return self.out_bits if t == len(self.step_exps) - 1 else self.inter_bits

    def acc_exp(self, t: int) -> int:
        return self.core_exps[self.schedule.steps[t].core] + self.step_in(t)[1]

    def shifts(self) -> tuple[int, ...]:
        """Right shift of every step (``step_exp - acc_exp``; negative means left)."""
        return tuple(self.step_exps[t] - self.acc_exp(t) for t in range(len(self.step_exps)))

    def acc_bits_needed(self) -> tuple[int, ...]:
        need = []
        last = len(self.schedule.steps) - 1
        for t, step in enumerate(self.schedule.steps):
            bias_max = int(np.abs(self.bias).max()) if (t == last and self.bias is not None
                                                         and self.bias.size) else 0
            need.append(acc_bits_needed(step.K, self.w_bits, self.step_in(t)[0], bias_max))
        return tuple(need)

    @property
    def out_exp(self) -> int:
        return self.step_exps[-1]

    def core_matrix(self, t: int) -> np.ndarray:
        step = self.schedule.steps[t]
        return self.cores[step.core].transpose(step.core_axes).reshape(step.P, step.K)


@dataclass(frozen=True, eq=False)
class IntNetwork:
    """A chain of integer layers; ``layers[i+1]`` takes ``layers[i]``'s output format."""

    layers: tuple[IntLayer, ...]
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.layers:
            raise ShapeError("an integer network needs at least one layer")
        for i in range(1, len(self.layers)):
            a, b = self.layers[i - 1], self.layers[i]
            if (a.out_features, a.out_bits, a.out_exp) != (b.in_features, b.in_bits, b.in_exp):
                raise ShapeError(
                    f"layer {i - 1} outputs {a.out_features} x ({a.out_bits} bits, exp {a.out_exp}) "
                    f"but layer {i} takes {b.in_features} x ({b.in_bits} bits, exp {b.in_exp})"
                )

    @property
    def in_features(self) -> int:
        return self.layers[0].in_features

    def check_values(self) -> None:
        """:meth:`IntLayer.check_values` of every layer; the error names the layer."""
        for i, layer in enumerate(self.layers):
            try:
                layer.check_values()
            except (ShapeError, ConfigError) as e:
                raise type(e)(f"layer {i}: {e}") from None

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """Real inputs ``(B, in_features)`` to the first layer's integer format."""
        first = self.layers[0]
        return quantize(x, first.in_bits, first.in_exp)


@dataclass(frozen=True)
class StepTrace:
    """What one step produced: the accumulator and the requantized output (per batch)."""

    layer: int
    step: int
    acc: np.ndarray
    out: np.ndarray
    saturations: int


def _run_layer(layer: IntLayer, x: np.ndarray, li: int, traces: list | None) -> np.ndarray:
    pad = layer.schedule.shape.in_size - layer.in_features
    if pad:
        x = np.pad(x, ((0, 0), (0, pad)))
    last = len(layer.schedule.steps) - 1
    for t, (step, shift) in enumerate(zip(layer.schedule.steps, layer.shifts())):
        acc = step.apply(x, layer.core_matrix(t))
        if t == last and layer.bias is not None:
            acc = acc.copy()
            acc[:, : layer.out_features] += layer.bias
        shifted = rshift_round(acc, shift)
        x = saturate(shifted, layer.step_out_bits(t))
        if traces is not None:
            traces.append(StepTrace(li, t, acc, x, int(np.count_nonzero(x != shifted))))
    x = x[:, : layer.out_features]
    if layer.relu:
        x = np.maximum(x, 0)
    return x


def require_network(net, who: str) -> IntNetwork:
    """``net`` if it is an :class:`IntNetwork`, else a one-line ConfigError naming ``who``
    and how to get one (a ``QuantNetwork`` passed where the integer network belongs
    failed deep inside with ``'QuantNetwork' object has no attribute 'layers'``)."""
    if not isinstance(net, IntNetwork):
        hint = (": compile it first (ttforge.quant.compile_network)"
                if type(net).__name__ == "QuantNetwork" else "")
        raise ConfigError(f"{who} needs an IntNetwork (ttforge.quant.compile_network, or "
                          f"ttforge.ir.load_artifact of a .ttfa), got {type(net).__name__}{hint}")
    return net


def check_input(net: IntNetwork, x: np.ndarray) -> np.ndarray:
    """``x`` as the executor takes it: shape (batch, in_features), integers in the input range;
    else a one-line ShapeError naming what is wrong."""
    require_network(net, "the executor")
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != net.in_features:
        raise ShapeError(f"input has shape {x.shape}; the network takes (batch, {net.in_features})")
    if not np.issubdtype(x.dtype, np.integer):
        raise ShapeError(f"input has dtype {x.dtype}; quantize it first (IntNetwork.quantize_input)")
    check_input_values(x, net.layers[0].in_bits)
    return x.astype(np.int64)


def check_input_values(x: np.ndarray, bits: int) -> None:
    """A one-line ShapeError when an integer input ``x`` leaves the network's ``bits``-bit
    input range (the engine model and the simulators refuse the same, with this line)."""
    lo, hi = int_range(bits)
    if x.size and (x.min() < lo or x.max() > hi):
        raise ShapeError(f"input values leave the {bits}-bit range [{lo}, {hi}] (got {int(x.min())}.."
                         f"{int(x.max())}); quantize them first (IntNetwork.quantize_input)")


def execute(net: IntNetwork, x: np.ndarray) -> np.ndarray:
    """Run integer inputs ``(B, in_features)`` through the network; returns int64 outputs."""
    x = check_input(net, x)
    if not len(x):   # an empty batch: an empty result (numpy cannot reshape (0, -1))
        return np.zeros((0, net.layers[-1].out_features), dtype=np.int64)
    for li, layer in enumerate(net.layers):
        x = _run_layer(layer, x, li, None)
    return x


def execute_traced(net: IntNetwork, x: np.ndarray) -> tuple[np.ndarray, list[StepTrace]]:
    """:func:`execute`, also returning every step's accumulator and output."""
    x = check_input(net, x)
    traces: list[StepTrace] = []
    if not len(x):
        return np.zeros((0, net.layers[-1].out_features), dtype=np.int64), traces
    for li, layer in enumerate(net.layers):
        x = _run_layer(layer, x, li, traces)
    return x, traces


def layer_from_dense(weight: np.ndarray, **kwargs) -> IntLayer:
    """An :class:`IntLayer` for a dense integer weight ``(M, N)`` (one core)."""
    from ttforge.ir.tt import TTShape

    M, N = weight.shape
    shape = TTShape((M,), (N,), (1, 1))
    return IntLayer(in_features=N, out_features=M, schedule=ContractionSchedule(shape, (0,)),
                    cores=(np.asarray(weight, dtype=np.int64).reshape(1, M, N, 1),), **kwargs)


