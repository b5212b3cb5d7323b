"""Multi-layer perceptrons with TT layers, described by a plain-data :class:`ModelConfig`.

A network is always a plain :class:`torch.nn.Sequential` of ``nn.Flatten``,
:class:`~ttforge.model.layers.TTLinear`, ``nn.Linear`` and ``nn.ReLU`` (the ONNX
exporter and the quantizer rely on exactly that)::

    Flatten, L0, ReLU, L1, ReLU, ..., L_last

where ``L_i`` maps ``in_features -> hidden[0] -> ... -> out_features``. With
``kind="tt"`` every hidden layer is a ``TTLinear`` and the classifier layer is an
``nn.Linear`` unless ``tt_last_layer`` is set; with ``kind="dense"`` all are
``nn.Linear``.

A config can be *resolved* (:meth:`ModelConfig.resolved`): the modes and ranks of
every TT layer are then written out explicitly, so the same network (for instance
one whose ranks were truncated by rank-adaptive training) is rebuilt exactly from a
checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Sequence

from torch import nn

from ttforge.errors import ConfigError, ShapeError
from ttforge.limits import MAX_HIDDEN, MAX_LAYERS, MAX_PARAMETERS, MAX_SEARCH_CORES, check_limit
from ttforge.ir.schedule import OBJECTIVES
from ttforge.model.layers import TTLinear, default_num_cores
from ttforge.model.tt import TTShape, factorize

__all__ = ["ModelConfig", "LayerSpec", "build_model", "describe", "describe_table", "check_known_fields"]


def check_known_fields(cls, data: dict[str, Any], what: str) -> None:
    """A :class:`ConfigError` naming the first key of ``data`` that is not a field of the
    dataclass ``cls`` (and every field there is), e.g. ``unknown config field 'x'``."""
    known = {f.name for f in fields(cls)}
    for key in data:
        if key not in known:
            raise ConfigError(f"unknown {what} field {key!r}; known fields: {', '.join(sorted(known))}")

IntTuple = tuple[int, ...]


@dataclass(frozen=True)
class LayerSpec:
    """One linear layer of the network, fully resolved."""

    kind: str  # "tt" or "dense"
    in_features: int
    out_features: int
    in_modes: IntTuple | None = None
    out_modes: IntTuple | None = None
    ranks: IntTuple | None = None  # all d + 1 bond ranks

    def build(self, bias: bool, objective: str = "macs", lanes: int | None = None) -> nn.Module:
        if self.kind == "dense":
            return nn.Linear(self.in_features, self.out_features, bias=bias)
        return TTLinear(self.in_features, self.out_features, ranks=self.ranks,
                        in_modes=self.in_modes, out_modes=self.out_modes, bias=bias,
                        objective=objective, lanes=lanes)


def _int(name: str, v: Any, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ConfigError(f"{name}={v!r} must be an integer >= {minimum}")
    return v


def _int_tuple(name: str, v: Any, minimum: int = 1) -> IntTuple:
    if isinstance(v, (int, str)) or not isinstance(v, Sequence):
        raise ConfigError(f"{name}={v!r} must be a list of integers")
    return tuple(_int(f"{name}[{i}]", x, minimum) for i, x in enumerate(v))


def _per_layer(name: str, v: Any, n: int) -> tuple | None:
    if v is None:
        return None
    if isinstance(v, (int, str)) or not isinstance(v, Sequence) or len(v) != n:
        raise ConfigError(
            f"{name}={v!r} must give one list per TT layer ({n} TT layer{'s' * (n != 1)})"
        )
    return tuple(_int_tuple(f"{name}[{i}]", x) for i, x in enumerate(v))


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of an MLP with TT layers; validated on construction.

    Parameters
    ----------
    kind : {"tt", "dense"}
        ``"tt"``: hidden layers are ``TTLinear``; ``"dense"``: a plain MLP baseline.
    in_features, out_features : int or None
        Input and output sizes; ``None`` until known from the data (see
        :meth:`with_features`).
    hidden : tuple of int
        Widths of the hidden layers.
    ranks : int or tuple
        An int bounds every bond of every TT layer (clipped to the maximal TT rank);
        a tuple gives one entry per TT layer, each an int bound or the explicit
        internal (``d - 1``) or full (``d + 1``) bond ranks.
    n_cores : int or None
        Cores per TT layer when modes are not given (default: ``default_num_cores``).
    in_modes, out_modes : tuple of tuple of int, optional
        Explicit factorizations, one per TT layer.
    tt_last_layer : bool
        Make the classifier layer a TT layer too.
    bias : bool
        Biases on every layer.
    objective : {"macs", "peak", "cycles"}
        What each TT layer's contraction order minimises first
        (:meth:`~ttforge.ir.schedule.ContractionSchedule.optimal`).
    lanes : int or None
        The MAC lanes of the accelerator the network is meant for: the orders are then
        chosen with their cycles on that many lanes in the cost (needed by ``"cycles"``).
        ``ttforge flow`` takes it from ``[hw] lanes``.
    """

    kind: str = "tt"
    in_features: int | None = None
    hidden: IntTuple = (64,)
    out_features: int | None = None
    ranks: int | tuple = 8
    n_cores: int | None = None
    in_modes: tuple[IntTuple, ...] | None = None
    out_modes: tuple[IntTuple, ...] | None = None
    tt_last_layer: bool = False
    bias: bool = True
    objective: str = "macs"
    lanes: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("tt", "dense"):
            raise ConfigError(f"kind={self.kind!r} must be 'tt' or 'dense'")
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"objective={self.objective!r} must be one of "
                              f"{', '.join(map(repr, OBJECTIVES))}")
        if self.lanes is not None:
            check_limit(_int("lanes", self.lanes), MAX_HIDDEN, "lanes", "give fewer MAC lanes")
        elif self.objective == "cycles":
            raise ConfigError("objective='cycles' needs lanes (the accelerator's MAC lanes); "
                              "give lanes or use objective='macs'")
        for name in ("in_features", "out_features"):
            if getattr(self, name) is not None:
                _int(name, getattr(self, name))
        if isinstance(self.hidden, (list, tuple)):   # before each size is read
            check_limit(len(self.hidden), MAX_LAYERS, "the number of hidden layers", "give fewer hidden sizes")
        object.__setattr__(self, "hidden", _int_tuple("hidden", self.hidden))
        for name in ("in_features", "out_features"):
            if getattr(self, name) is not None:
                check_limit(getattr(self, name), MAX_HIDDEN * 16, name)
        for h in self.hidden:
            check_limit(h, MAX_HIDDEN, "a hidden size", "give smaller hidden sizes")
        if self.n_cores is not None:
            _int("n_cores", self.n_cores)
            check_limit(self.n_cores, MAX_SEARCH_CORES, "n_cores", "use fewer cores per TT layer")
        for name in ("tt_last_layer", "bias"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}={getattr(self, name)!r} must be true or false")
        n_tt = self.n_tt_layers
        if self.kind == "tt" and n_tt == 0:
            raise ConfigError(
                "kind='tt' with no hidden layer and tt_last_layer=false has no TT layer; "
                "give hidden sizes (e.g. hidden=[64]) or set tt_last_layer"
            )
        ranks = self.ranks
        if isinstance(ranks, bool):
            raise ConfigError(f"ranks={ranks!r} must be an integer >= 1 or one entry per TT layer")
        if isinstance(ranks, int):
            _int("ranks", ranks)
        else:
            if isinstance(ranks, str) or not isinstance(ranks, Sequence) or len(ranks) != n_tt:
                raise ConfigError(
                    f"ranks={ranks!r} must be an integer >= 1 or one entry per TT layer "
                    f"({n_tt} TT layer{'s' * (n_tt != 1)})"
                )
            ranks = tuple(
                _int(f"ranks[{i}]", r) if isinstance(r, int) else _int_tuple(f"ranks[{i}]", r)
                for i, r in enumerate(ranks)
            )
            object.__setattr__(self, "ranks", ranks)
        object.__setattr__(self, "in_modes", _per_layer("in_modes", self.in_modes, n_tt))
        object.__setattr__(self, "out_modes", _per_layer("out_modes", self.out_modes, n_tt))
        if self.n_cores is not None:
            for name in ("in_modes", "out_modes"):
                modes = getattr(self, name)
                if modes is not None and any(len(m) != self.n_cores for m in modes):
                    raise ConfigError(
                        f"{name}={[list(m) for m in modes]} disagree with n_cores={self.n_cores}; "
                        f"give modes of length {self.n_cores} or drop n_cores"
                    )
        if self.in_features is not None and self.out_features is not None:
            self.layer_specs()  # validates modes and ranks against the sizes

    # -- structure ---------------------------------------------------------------------
    @property
    def sizes(self) -> IntTuple:
        return (self.in_features, *self.hidden, self.out_features)  # type: ignore[return-value]

    @property
    def n_layers(self) -> int:
        return len(self.hidden) + 1

    def is_tt(self, index: int) -> bool:
        """Whether linear layer ``index`` (0-based) is a TT layer."""
        if self.kind != "tt":
            return False
        return index < len(self.hidden) or self.tt_last_layer

    @property
    def n_tt_layers(self) -> int:
        return sum(self.is_tt(i) for i in range(self.n_layers))

    def layer_specs(self) -> tuple[LayerSpec, ...]:
        """Every linear layer, with the modes and ranks of TT layers resolved."""
        if self.in_features is None or self.out_features is None:
            raise ConfigError(
                "in_features and out_features are not set; call with_features(in, out) "
                "(train sets them from the data)"
            )
        sizes = self.sizes
        specs, t = [], 0
        for i in range(self.n_layers):
            n_in, n_out = sizes[i], sizes[i + 1]
            if not self.is_tt(i):
                specs.append(LayerSpec("dense", n_in, n_out))
                continue
            given = (self.in_modes[t] if self.in_modes else None) or (
                self.out_modes[t] if self.out_modes else None)
            d = len(given) if given else (self.n_cores or default_num_cores(n_in, n_out))
            try:
                in_m = self.in_modes[t] if self.in_modes else factorize(n_in, d)
                out_m = self.out_modes[t] if self.out_modes else factorize(n_out, d)
                if len(in_m) != len(out_m):
                    raise ShapeError(
                        f"in_modes {list(in_m)} and out_modes {list(out_m)} must have the same "
                        f"length (one pair per core)"
                    )
                for name, m, n in (("in_modes", in_m, n_in), ("out_modes", out_m, n_out)):
                    if math.prod(m) < n:
                        raise ShapeError(
                            f"{name} {list(m)} multiply to {math.prod(m)}, fewer than {n} "
                            f"features; choose modes whose product is >= {n}"
                        )
                r = self.ranks if isinstance(self.ranks, int) else self.ranks[t]
                shape = TTShape(out_m, in_m, r)
            except ShapeError as e:
                raise ShapeError(f"TT layer {t} ({n_in} -> {n_out}): {e}") from None
            specs.append(LayerSpec("tt", n_in, n_out, shape.in_modes, shape.out_modes, shape.ranks))
            t += 1
        return tuple(specs)

    # -- derived configs -------------------------------------------------------------
    def with_features(self, in_features: int, out_features: int) -> "ModelConfig":
        """Fill in the sizes from the data; sizes already set must agree."""
        for name, have, want in (("in_features", self.in_features, in_features),
                                 ("out_features", self.out_features, out_features)):
            if have is not None and have != want:
                raise ConfigError(
                    f"model {name}={have} but the data has {want}; set {name} to {want} or "
                    f"leave it out"
                )
        return replace(self, in_features=in_features, out_features=out_features)

    def resolved(self) -> "ModelConfig":
        """The same network with every TT layer's modes and full bond ranks explicit."""
        tt = [s for s in self.layer_specs() if s.kind == "tt"]
        if not tt:
            return self
        return replace(
            self,
            n_cores=None,
            in_modes=tuple(s.in_modes for s in tt),
            out_modes=tuple(s.out_modes for s in tt),
            ranks=tuple(s.ranks for s in tt),
        )

    def with_ranks(self, ranks: Sequence[Sequence[int]]) -> "ModelConfig":
        """A resolved config whose TT layers have the given bond ranks (one tuple each)."""
        base = self.resolved()
        return replace(base, ranks=tuple(tuple(int(x) for x in r) for r in ranks))

    @classmethod
    def of_model(cls, model: nn.Sequential, bias: bool | None = None) -> "ModelConfig":
        """The resolved config of a network built from this module's layer types."""
        linears = [m for m in model if isinstance(m, (nn.Linear, TTLinear))]
        if not linears:
            raise ConfigError("the model has no nn.Linear or TTLinear layer")
        kinds = ["tt" if isinstance(m, TTLinear) else "dense" for m in linears]
        tt_idx = [i for i, k in enumerate(kinds) if k == "tt"]
        n_hidden = len(linears) - 1
        if tt_idx and not (
            (tt_idx == list(range(n_hidden)) and n_hidden) or tt_idx == list(range(n_hidden + 1))
        ):
            raise ConfigError(
                f"layer kinds {kinds}: ModelConfig describes TT hidden layers followed by an "
                f"optional TT classifier; this mix cannot be described"
            )
        tts = [linears[i] for i in tt_idx]
        # one objective, one lane count and one bias flag describe every layer: a model
        # whose layers differ would be rebuilt with other schedules (other integers)
        for field, values in (("objective", [m.objective for m in tts]),
                              ("lanes", [m.lanes for m in tts]),
                              ("bias", [m.bias is not None for m in linears] if bias is None else [])):
            if len(set(values)) > 1:
                raise ConfigError(
                    f"the layers' {field} differ ({values}): ModelConfig has one {field} for "
                    f"every {'linear' if field == 'bias' else 'TT'} layer; build the layers "
                    f"with the same {field}"
                )
        return cls(
            kind="tt" if tts else "dense",
            in_features=linears[0].in_features,
            hidden=tuple(m.out_features for m in linears[:-1]),
            out_features=linears[-1].out_features,
            ranks=tuple(m.ranks for m in tts) if tts else 8,
            in_modes=tuple(m.in_modes for m in tts) if tts else None,
            out_modes=tuple(m.out_modes for m in tts) if tts else None,
            tt_last_layer=bool(tts) and kinds[-1] == "tt",
            bias=(linears[0].bias is not None) if bias is None else bias,
            objective=tts[0].objective if tts else "macs",
            lanes=tts[0].lanes if tts else None,
        )

    # -- plain data ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (tuples become lists)."""

        def plain(v):
            if isinstance(v, (tuple, list)):
                return [plain(x) for x in v]
            return v

        return {k: plain(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"model config must be a table/object of fields, not {data!r}")
        check_known_fields(cls, data, "model config")

        def tup(v):
            if isinstance(v, list):
                return tuple(tup(x) for x in v)
            return v

        return cls(**{k: tup(v) for k, v in data.items()})


def _n_params(spec: LayerSpec, bias: bool) -> int:
    """Parameters ``spec.build`` allocates, counted without allocating them."""
    n = spec.out_features if bias else 0
    if spec.kind == "dense" or spec.in_modes is None or spec.ranks is None:
        return n + spec.in_features * spec.out_features
    return n + sum(spec.ranks[k] * spec.out_modes[k] * spec.in_modes[k] * spec.ranks[k + 1]
                   for k in range(len(spec.in_modes)))


def build_model(cfg: ModelConfig) -> nn.Sequential:
    """``nn.Sequential(Flatten, L0, ReLU, ..., L_last)`` as described by ``cfg``."""
    layers: list[nn.Module] = [nn.Flatten()]
    specs = cfg.layer_specs()
    # bounded before anything is allocated (a checkpoint's config may claim any size)
    check_limit(sum(_n_params(s, cfg.bias) for s in specs), MAX_PARAMETERS, "the model's parameter count",
                "give smaller hidden sizes or ranks")
    for i, spec in enumerate(specs):
        layers.append(spec.build(cfg.bias, cfg.objective, cfg.lanes))
        if i < len(specs) - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def describe(model: nn.Module) -> list[dict[str, Any]]:
    """One row per linear layer: name, type, sizes, modes, ranks, parameter counts.

    ``params`` counts the weight entries actually stored (TT cores for a TT layer)
    plus the bias; ``dense_params`` what an ``nn.Linear`` of the same size holds;
    ``compression`` is dense weight entries over stored weight entries.
    """
    rows = []
    for name, m in model.named_modules():
        if isinstance(m, TTLinear):
            weights = m.n_params
            kind, modes, ranks = "TTLinear", (m.out_modes, m.in_modes), m.ranks
        elif isinstance(m, nn.Linear):
            weights = m.in_features * m.out_features
            kind, modes, ranks = "Linear", None, None
        else:
            continue
        bias = m.out_features if m.bias is not None else 0
        dense_weights = m.in_features * m.out_features
        rows.append({
            "name": name,
            "type": kind,
            "in_features": m.in_features,
            "out_features": m.out_features,
            "out_modes": list(modes[0]) if modes else None,
            "in_modes": list(modes[1]) if modes else None,
            "ranks": list(ranks) if ranks else None,
            "params": weights + bias,
            "dense_params": dense_weights + bias,
            "compression": dense_weights / weights,
        })
    return rows


def describe_table(model: nn.Module, title: str = "model"):
    """A :class:`rich.table.Table` of :func:`describe` with a total row."""
    from rich.table import Table

    rows = describe(model)
    table = Table(title=title)
    for col, just in (("layer", "left"), ("type", "left"), ("shape", "right"),
                      ("modes in -> out", "right"), ("ranks", "right"), ("params", "right"),
                      ("dense params", "right"), ("compression", "right")):
        table.add_column(col, justify=just)
    for r in rows:
        table.add_row(
            r["name"], r["type"], f"{r['in_features']} -> {r['out_features']}",
            ("x".join(map(str, r["in_modes"])) + " -> " + "x".join(map(str, r["out_modes"])))
            if r["in_modes"] else "",
            ",".join(map(str, r["ranks"])) if r["ranks"] else "",
            f"{r['params']:,}", f"{r['dense_params']:,}",
            f"{r['compression']:.1f}x" if r["type"] == "TTLinear" else "",
        )
    total, dense = sum(r["params"] for r in rows), sum(r["dense_params"] for r in rows)
    table.add_row("total", "", "", "", "", f"{total:,}", f"{dense:,}", f"{dense / total:.1f}x",
                  style="bold")
    return table
