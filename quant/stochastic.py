"""Stochastic rounding and low-precision training with integer weights.

Two parts, both normative in ``docs/arithmetic.md`` ("Stochastic rounding"):

* :class:`Xorshift32`, the random-bit generator (Marsaglia's xorshift32, shifts
  13/17/5 on 32-bit unsigned words), vectorized in numpy and bit-exact to the scalar
  definition, and :func:`stochastic_rshift`, the stochastic right shift
  ``(v + (word & (2^s - 1))) >> s`` that consumes one word per element in row-major
  order.
* :func:`train_low_precision`, a trainer whose weights *are* integers. Every TT core
  (and dense weight) of the network is stored as one integer tensor ``w`` at a fixed
  exponent ``e`` — the very integers the hardware runs, no float master copy — and every
  bias as an integer at its accumulator exponent. Each SGD step computes the gradient
  ``g`` in float with PyTorch through the fake-quant network of :mod:`.qat` (whose
  forward, with the parameters set to ``w * 2^e``, is exactly the integer network), turns
  the update into an integer with ``s`` fractional bits below the weight's LSB,
  ``v = sat(round_half_up(lr * g / 2^(e - s)))``, and applies
  ``w <- sat(w - round_s(v))`` where ``round_s`` is either the stochastic shift (driven by
  the generator) or the round-to-nearest shift :func:`~.arith.rshift_round`. This is
  fixed-point SGD with stochastic rounding (Gupta et al., "Deep learning with limited
  numerical precision", ICML 2015), applied to TT cores at 8, 4 or 2 bits as in
  on-device low-precision TT training (arXiv:2104.03420). With round-to-nearest any
  update smaller than half an LSB (``|v| < 2^(s-1)``) is lost; stochastic rounding keeps
  it in expectation (``E[round_s(v)] = v / 2^s``).

Everything after ``v`` is integer arithmetic and reproducible bit for bit from the seed;
``v`` itself comes from PyTorch's float gradient, which is deterministic on one machine
and software stack (single thread, deterministic algorithms), not across BLAS builds.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import numpy as np
import torch
from torch import nn

from ttforge.errors import ConfigError, DataError
from ttforge.model.data import Dataset, load_dataset
from ttforge.model.network import ModelConfig
from ttforge.model.seeding import autograd_on, deterministic, seeded_generator, seeded_model
from ttforge.ir.arith import BIT_RANGES, MAX_ACC_BITS, int_range, quantize, quantize_wide, rshift_round
from ttforge.ir.executor import IntNetwork
from ttforge.ir.rng import (UpdateStats, Xorshift32, derive_sr_seed, integer_update,
                            stochastic_rshift, xorshift32_step)
from ttforge.quant.qat import (
    LayerQuant,
    QuantConfig,
    QuantLinear,
    QuantNetwork,
    _choose_exp,
    _tt_view,
    calibrate,
    check_calibration,
    compile_network,
    quantize_model,
)

__all__ = [
    "Xorshift32",
    "xorshift32_step",
    "stochastic_rshift",
    "integer_update",
    "UpdateStats",
    "LowPrecisionConfig",
    "MasterTensor",
    "LowPrecisionResult",
    "train_low_precision",
    "derive_sr_seed",
]

from ttforge.ir.rng import Rounding  # noqa: E402


# ---------------------------------------------------------------------------------------
# the trainer
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LowPrecisionConfig:
    """Settings of :func:`train_low_precision`; validated on construction.

    Attributes
    ----------
    w_bits : int
        Width of the TT cores and dense weights the network runs (2..8, narrow range).
    master_extra_bits : int
        0 (default): the stored integer *is* the ``w_bits`` weight. ``x > 0``: the stored
        integer has ``w_bits + x`` bits at exponent ``e - x`` and the network runs
        ``sat(rshift_round(w, x))`` (a wider integer master; with enough bits even
        round-to-nearest updates stop stalling).
    act_bits, inter_bits, acc_bits : int
        Activations (and input), intermediates between steps, accumulators.
    rounding : {"stochastic", "nearest"}
        How the integer update loses its ``frac_bits`` fractional bits.
    lr : float
        SGD learning rate at the first step (plain SGD: no momentum, no weight decay).
    lr_schedule : {"cosine", "constant"}
        ``cosine``: step ``t`` of ``T`` uses ``lr * (1 + cos(pi * t / T)) / 2``.
    epochs, batch_size : int
        Passes over the training split and samples per step.
    frac_bits : int
        ``s``: fractional bits of the update below the weight LSB (1..32).
    update_bits : int
        Width of the integer update ``v`` (saturated; 8..48).
    headroom_bits : int
        The core exponent is the one calibrated on the initial weights plus this (room to
        grow; the core exponents stay fixed during training).
    calibration : {"max", "mse"}
        Exponent choice for the initial cores and for activations / intermediates.
    calib_samples : int
        Training samples on which the activation exponents are (re)calibrated after
        every epoch.
    seed : int
        Initial weights, calibration samples and the shuffling.
    sr_seed : int or None
        xorshift32 seed (1..2^32-1); ``None``: :func:`derive_sr_seed` of ``seed``.
    threads : int
        PyTorch threads (1 keeps runs reproducible).
    """

    w_bits: int = 8
    master_extra_bits: int = 0
    act_bits: int = 8
    inter_bits: int = 16
    acc_bits: int = 32
    rounding: Rounding = "stochastic"
    lr: float = 0.2
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    epochs: int = 20
    batch_size: int = 32
    frac_bits: int = 16
    update_bits: int = 32
    headroom_bits: int = 1
    calibration: Literal["max", "mse"] = "mse"
    calib_samples: int = 512
    seed: int = 0
    sr_seed: int | None = None
    threads: int = 1

    def __post_init__(self) -> None:
        for name, lo, hi in (*((n, *r) for n, r in BIT_RANGES.items()), ("master_extra_bits", 0, 16),
                             ("epochs", 0, 10**6), ("batch_size", 1, 10**9), ("frac_bits", 1, 32),
                             ("update_bits", 8, MAX_ACC_BITS), ("headroom_bits", 0, 8),
                             ("calib_samples", 1, 10**9), ("seed", 0, 2**63 - 1), ("threads", 1, 1024)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ConfigError(f"{name}={v!r} must be an integer in {lo}..{hi}")
        if self.rounding not in ("stochastic", "nearest"):
            raise ConfigError(f"rounding={self.rounding!r} must be 'stochastic' or 'nearest'")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ConfigError(f"lr_schedule={self.lr_schedule!r} must be 'cosine' or 'constant'")
        check_calibration(self.calibration)     # QuantConfig's and calibrate()'s rule
        lr = self.lr
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (math.isfinite(lr) and lr > 0):
            raise ConfigError(f"lr={lr!r} must be a positive number (e.g. 0.05)")
        if self.sr_seed is not None:
            Xorshift32(self.sr_seed)  # validates

    @property
    def layer_quant(self) -> LayerQuant:
        return LayerQuant(self.w_bits, self.act_bits, self.inter_bits, self.acc_bits)

    def resolved_sr_seed(self) -> int:
        return self.sr_seed if self.sr_seed is not None else derive_sr_seed(self.seed)


@dataclass
class MasterTensor:
    """One integer tensor the trainer updates: ``param == values * 2^exp`` at all times."""

    name: str
    values: np.ndarray
    exp: int
    lo: int
    hi: int
    param: nn.Parameter = field(repr=False)

    def write(self) -> None:
        with torch.no_grad():
            self.param.copy_(torch.from_numpy(np.ldexp(self.values.astype(np.float64), self.exp)))


@dataclass
class LowPrecisionResult:
    """What :func:`train_low_precision` returns."""

    qnet: QuantNetwork
    inet: IntNetwork
    masters: list[MasterTensor]
    history: list[dict[str, Any]]
    report: dict[str, Any]

    def integer_weights(self) -> dict[str, np.ndarray]:
        """Copies of every stored integer tensor, by name (``layer{i}.core{k}``, ``layer{i}.bias``)."""
        return {m.name: m.values.copy() for m in self.masters}


def _bias_exp(ql: QuantLinear) -> int:
    """Exponent of the layer's bias: the accumulator exponent of its last step."""
    _, schedule, _, _ = _tt_view(ql.layer)
    last = schedule.steps[-1]
    prev = int(ql.step_exps[-2]) if len(schedule.steps) > 1 else int(ql.in_exp)
    return int(ql.core_exps[last.core]) + prev


def _bias_limit(ql: QuantLinear) -> int:
    """Largest |bias| the accumulator-width check of the last step admits."""
    _, schedule, _, _ = _tt_view(ql.layer)
    q = ql.q
    step = schedule.steps[-1]
    x_bits = q.act_bits if len(schedule.steps) == 1 else q.inter_bits
    bound = step.K * ((1 << (q.w_bits - 1)) - 1) * (1 << (x_bits - 1))
    return (1 << (q.acc_bits - 1)) - 1 - bound


class _Trainer:
    def __init__(self, qnet: QuantNetwork, cfg: LowPrecisionConfig) -> None:
        self.qnet = qnet
        self.cfg = cfg
        self.masters: list[MasterTensor] = []
        self.bias_masters: dict[int, MasterTensor] = {}

    # -- setup -----------------------------------------------------------------------
    def init_masters(self) -> None:
        cfg, x = self.cfg, self.cfg.master_extra_bits
        for i, ql in enumerate(self.qnet.qlayers):
            cores, _, _, _ = _tt_view(ql.layer)
            params = list(ql.layer.cores) if hasattr(ql.layer, "cores") else [ql.layer.weight]
            for k, g in enumerate(cores):
                ql.core_exps[k] += cfg.headroom_bits
                e = int(ql.core_exps[k]) - x
                lo, hi = int_range(cfg.w_bits + x, narrow=True)
                vals = quantize(g.detach().double().numpy(), cfg.w_bits + x, e, narrow=True)
                vals = vals.reshape(tuple(params[k].shape))
                m = MasterTensor(f"layer{i}.core{k}", vals, e, lo, hi, params[k])
                m.write()
                self.masters.append(m)
            if ql.layer.bias is not None:
                e = _bias_exp(ql)
                lim = _bias_limit(ql)
                if lim < 0:
                    raise ConfigError(f"layer {i}: acc_bits={cfg.acc_bits} leaves no room for a bias")
                vals = np.clip(quantize_wide(ql.layer.bias.detach().double().numpy(), cfg.acc_bits, e), -lim, lim)
                m = MasterTensor(f"layer{i}.bias", vals, e, -lim, lim, ql.layer.bias)
                m.write()
                self.masters.append(m)
                self.bias_masters[i] = m

    def sync_bias(self, i: int) -> None:
        """Requantize layer ``i``'s bias after its accumulator exponent changed:
        ``sat(rshift_round(b, e_new - e_old))`` (a left shift when finer)."""
        m = self.bias_masters.get(i)
        if m is None:
            return
        e = _bias_exp(self.qnet.qlayers[i])
        if e != m.exp:
            m.values = np.clip(rshift_round(m.values, e - m.exp), m.lo, m.hi)
            m.exp = e
            m.write()

    @torch.no_grad()
    def recalibrate(self, x_cal: torch.Tensor) -> None:
        """Re-choose every step exponent on ``x_cal`` in schedule order, keeping the input
        and core exponents (the stored integers live there); biases follow by a shift."""
        method = self.cfg.calibration
        self.qnet.eval()
        x = x_cal
        for i, ql in enumerate(self.qnet.qlayers):
            if i:
                ql.in_exp.fill_(int(self.qnet.qlayers[i - 1].step_exps[-1]))
            _, schedule, _, out_f = _tt_view(ql.layer)
            n = len(schedule.steps)
            for t in range(n):
                if t == n - 1:
                    self.sync_bias(i)
                ql.trace = []
                try:
                    ql(x)
                    acc = ql.trace[t][1]
                finally:
                    ql.trace = None
                v = acc[:, :out_f] if t == n - 1 else acc
                ql.step_exps[t] = _choose_exp(v, ql.step_out_bits(t, n), False, method)
            x = ql(x)

    # -- one step --------------------------------------------------------------------
    def update(self, lr: float, gen: Xorshift32 | None) -> UpdateStats:
        cfg = self.cfg
        total = UpdateStats()
        for m in self.masters:  # draw order: layers, cores 0..d-1, then the bias
            g = m.param.grad
            grad = np.zeros(m.values.shape) if g is None else g.detach().double().numpy()
            m.values, st = integer_update(m.values, lr * grad, m.exp, m.lo, m.hi, cfg.frac_bits,
                                          cfg.update_bits, cfg.rounding, gen)
            m.write()
            total.add(st)
        return total

    def check_compiled(self, inet: IntNetwork) -> None:
        """The compiled integer network runs exactly the stored integers."""
        x = self.cfg.master_extra_bits
        lo, hi = int_range(self.cfg.w_bits, narrow=True)
        cores = [c for layer in inet.layers for c in layer.cores]
        stored = [m for m in self.masters if ".core" in m.name]
        for m, c in zip(stored, cores):
            want = np.clip(rshift_round(m.values, x), lo, hi).reshape(c.shape)
            if not np.array_equal(want, c):
                raise AssertionError(f"{m.name}: compiled core differs from the stored integers")
        for i, m in self.bias_masters.items():
            if not np.array_equal(inet.layers[i].bias, m.values):
                raise AssertionError(f"{m.name}: compiled bias differs from the stored integers")


def _resolve_model(model: ModelConfig | nn.Module, ds: Dataset, seed: int) -> nn.Module:
    if isinstance(model, ModelConfig):
        cfg = model.with_features(ds.n_features, ds.n_classes)
        # a generator of its own: fork_rng around torch.manual_seed reseeded the global
        # one, and another thread's draws meanwhile changed the integers
        return seeded_model(cfg, seed)[0]
    if isinstance(model, nn.Module):
        return copy.deepcopy(model)
    raise ConfigError(f"model must be a ModelConfig or an nn.Sequential, got {type(model).__name__}")


@autograd_on()
def train_low_precision(
    model: ModelConfig | nn.Module,
    data: Dataset | str,
    config: LowPrecisionConfig = LowPrecisionConfig(),
    log: Callable[[str], None] | None = None,
) -> LowPrecisionResult:
    """Train a TT network whose weights are integers, with integer SGD updates.

    Procedure (every step of it deterministic from ``config.seed``):

    1. Build the float network (``ModelConfig``: initialised as after
       ``torch.manual_seed(seed)``, from a generator of its own: torch's global one is
       neither drawn from nor reseeded; an ``nn.Module`` is copied), wrap it in the fake-quant
       network (:func:`~.qat.quantize_model`) and calibrate every exponent on
       ``calib_samples`` training samples (:func:`~.qat.calibrate`).
    2. Add ``headroom_bits`` to every core exponent and quantize the initial cores to
       integers there (FLOOR_PLUS_HALF, narrow range; ``w_bits + master_extra_bits`` wide) and each
       bias to the accumulator exponent of its layer's last step. These integers are the
       weights from now on; the float parameters are overwritten with ``w * 2^e``, exactly
       (cores in float32: at most 24-bit integers; biases in float64).
    3. Re-calibrate the step exponents for the integer weights (core and input exponents
       stay fixed; a bias whose accumulator exponent changes is shifted with FLOOR_PLUS_HALF).
    4. Each epoch, in the shuffled order of ``(seed, 1, epoch)``: forward in training mode
       (fake-quant, straight-through gradients), cross-entropy, backward, then for every
       stored tensor in the order layer 0 core 0, core 1, ..., bias, layer 1, ...:
       :func:`integer_update` with ``lr_t * grad`` (``lr_t`` from ``lr_schedule``).
       One xorshift32 generator, seeded once with ``sr_seed``, serves the whole run: per
       step, one word per element of every tensor in that order, row-major, whether or
       not its update is zero.
    5. After each epoch, re-calibrate the step exponents (3.) and evaluate: the compiled
       :class:`~.executor.IntNetwork` must run exactly the stored integers and equal the
       eval-mode fake-quant network on every test sample (``np.array_equal``, else
       :class:`~.ptq.NotBitExactError`); its accuracy is recorded.
    """
    from ttforge.quant.ptq import check_accumulators, evaluate_quantized

    if not isinstance(config, LowPrecisionConfig):
        raise ConfigError("config must be a LowPrecisionConfig")
    ds = load_dataset(data) if isinstance(data, str) else data
    if not isinstance(ds, Dataset):
        raise DataError(f"data must be a Dataset or a data spec string, got {type(data).__name__}")
    cfg = config
    say = log or (lambda s: None)
    t0 = time.perf_counter()
    with deterministic(cfg.threads):
        float_model = _resolve_model(model, ds, cfg.seed).float()
        for m in float_model.modules():  # biases can be up to acc_bits wide: keep them exact
            if isinstance(getattr(m, "bias", None), nn.Parameter):
                m.bias = nn.Parameter(m.bias.detach().double())
        qcfg = QuantConfig(cfg.layer_quant, {}, cfg.calibration)
        check_accumulators(float_model, qcfg)
        qnet = quantize_model(float_model, qcfg)
        idx = torch.randperm(ds.x_train.shape[0], generator=seeded_generator(cfg.seed, 0))[:cfg.calib_samples]
        x_cal = ds.x_train[idx].double()
        calibrate(qnet, x_cal, cfg.calibration)
        tr = _Trainer(qnet, cfg)
        tr.init_masters()
        tr.recalibrate(x_cal)
        for p in qnet.parameters():
            p.requires_grad_(True)

        def evaluate() -> dict[str, Any]:
            inet = compile_network(qnet)
            tr.check_compiled(inet)
            return evaluate_quantized(qnet, inet, ds.x_test, ds.y_test) | {"inet": inet}

        ev = evaluate()
        history: list[dict[str, Any]] = [{"epoch": 0, "test_acc": ev["int_acc"], "train_loss": None}]
        say(f"epoch 0  test {100 * ev['int_acc']:.2f}%")
        gen = Xorshift32(cfg.resolved_sr_seed()) if cfg.rounding == "stochastic" else None
        n = ds.x_train.shape[0]
        steps = math.ceil(n / cfg.batch_size)
        x_train = ds.x_train
        total = cfg.epochs * steps

        def lr_at(t: int) -> float:
            if cfg.lr_schedule == "constant":
                return float(cfg.lr)
            return float(cfg.lr) * 0.5 * (1.0 + math.cos(math.pi * t / total))
        for epoch in range(1, cfg.epochs + 1):
            qnet.train()
            perm = torch.randperm(n, generator=seeded_generator(cfg.seed, 1, epoch))
            loss_sum = 0.0
            stats = UpdateStats()
            for s in range(steps):
                b = perm[s * cfg.batch_size:(s + 1) * cfg.batch_size]
                for p in qnet.parameters():
                    p.grad = None
                loss = nn.functional.cross_entropy(qnet(x_train[b]), ds.y_train[b])
                loss.backward()
                stats.add(tr.update(lr_at((epoch - 1) * steps + s), gen))
                loss_sum += float(loss.detach())
            tr.recalibrate(x_cal)
            ev = evaluate()
            row = {"epoch": epoch, "train_loss": loss_sum / steps, "test_acc": ev["int_acc"],
                   **stats.to_dict()}
            history.append(row)
            say(f"epoch {epoch}/{cfg.epochs}  loss {row['train_loss']:.4f}  test {100 * ev['int_acc']:.2f}%  "
                f"changed {100 * row['applied_fraction']:.2f}%  <1/2 LSB {100 * row['sub_half_fraction']:.1f}%")
    qnet.eval()
    report = {
        "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
        "sr_seed": cfg.resolved_sr_seed() if cfg.rounding == "stochastic" else None,
        "words_drawn": gen.drawn if gen is not None else 0,
        "final_test_acc": history[-1]["test_acc"],
        "bit_exact": True,
        "n_test": int(ds.x_test.shape[0]),
        "data": ds.name,
        "seconds": time.perf_counter() - t0,
    }
    return LowPrecisionResult(qnet, ev["inet"], tr.masters, history, report)
