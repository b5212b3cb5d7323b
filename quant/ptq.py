"""Quantizing a trained float TT network: PTQ, QAT fine-tuning, ``ttforge quantize``.

:func:`quantize_trained` takes a trained float network (a checkpoint of ``ttforge
train``, or any ``nn.Sequential`` that :func:`~ttforge.quant.qat.quantize_model`
accepts) and returns the fake-quant network, the integer network the hardware runs and
a report of test accuracies:

* **PTQ** (post-training quantization): every exponent is calibrated
  (:func:`~ttforge.quant.qat.calibrate`, ``max`` or ``mse``) on ``calib_samples``
  training samples chosen by ``seed``. Nothing else changes.
* **QAT** (``qat_epochs > 0``): the PTQ network is then fine-tuned in training mode
  (fake-quant with straight-through gradients, float32) with Adam on the float
  parameters, the learning rate decaying to zero on a cosine over the fine-tuning.
  At the end of every epoch all exponents are re-calibrated on the same calibration
  samples (``recalibrate=True``, the default: the weights moved, so the exponents that
  fit them may have moved too); with ``recalibrate=False`` the PTQ exponents are kept.
  The network after the last epoch is the result (no selection on the test set).

Every accuracy of a quantized network is measured twice on the test split: from the
eval-mode fake-quant outputs and from :func:`~ttforge.ir.executor.execute` on the
compiled :class:`~ttforge.ir.executor.IntNetwork`; the two output arrays must be
equal (``np.array_equal``), otherwise :class:`NotBitExactError` is raised. The class of
a sample is the index of the first maximum of its integer outputs
(``docs/arithmetic.md``). Runs are deterministic from ``seed`` (single-threaded, fixed
shuffling, PyTorch's deterministic algorithms).

The float network passed in is never modified: QAT fine-tunes a copy.
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from dataclasses import replace
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from ttforge.errors import ConfigError, DataError, show
from ttforge.errors import NotBitExactError  # noqa: F401 - defined in ttforge.errors
from ttforge.limits import MAX_BATCH, MAX_EPOCHS, MAX_RATE, MAX_SEED, MAX_THREADS
from ttforge.model.data import Dataset, data_digest, load_dataset
from ttforge.model.layers import TTLinear
from ttforge.model.train import Trained
from ttforge.model.tt import all_finite, check_finite_layers
from ttforge.model.seeding import autograd_on, deterministic, seeded_generator
from ttforge.ir.arith import BIT_RANGES, MAX_ACC_BITS, acc_bits_needed
from ttforge.ir.executor import IntNetwork, execute
from ttforge.quant.defaults import PTQ_DEFAULTS
from ttforge.quant.qat import (
    LayerQuant,
    QuantConfig,
    QuantNetwork,
    _tt_view,
    calibrate,
    compile_network,
    quantize_model,
)

__all__ = [
    "NotBitExactError",
    "quantize_trained",
    "evaluate_quantized",
    "make_config",
    "calibration_samples",
    "ptq",
    "fine_tune",
    "float_accuracy",
    "parse_layer_bits",
    "check_accumulators",
    "weights_fingerprint",
    "QUANTIZE_INT_RANGES",
    "is_positive_number",
]

#: The integer options of :func:`quantize_trained` that ``ttforge quantize`` and the flow's
#: ``[quant]`` table also take, and the smallest value each may have (the one statement of
#: these bounds; ``lr`` must be :func:`is_positive_number`).
#: The integer options of quantization and their ranges, for quantize_trained, ttforge
#: quantize and the flow's [quant] (one statement; QAT epochs were unbounded: 10^20 ran).
QUANTIZE_INT_RANGES: dict[str, tuple[int, int]] = {"calib_samples": (1, MAX_BATCH), "qat_epochs": (0, MAX_EPOCHS),
                                                   "batch_size": (1, MAX_BATCH), "seed": (0, MAX_SEED)}


def is_positive_number(v: Any) -> bool:
    """A number above 0 and at most :data:`~ttforge.limits.MAX_RATE` (not a bool): what a
    learning rate must be."""
    return (not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
            and 0 < v <= MAX_RATE)


# ---------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------
# the bit widths `ttforge quantize` (and a flow config) accepts, inclusive
_FLAGS = {"w_bits": "--w-bits", "act_bits": "--act-bits", "inter_bits": "--inter-bits", "acc_bits": "--acc-bits"}


def _linear_layers(model: nn.Module) -> list[nn.Module]:
    mods = list(model.children()) if isinstance(model, nn.Sequential) else [model]
    return [m for m in mods if isinstance(m, (TTLinear, nn.Linear))]


def parse_layer_bits(text: str) -> dict[int, int]:
    """``"0:4,1:8"`` -> ``{0: 4, 1: 8}`` (linear-layer index : core/weight bits)."""
    out: dict[int, int] = {}
    if text is None or not str(text).strip():
        return out
    for item in str(text).split(","):
        parts = item.strip().split(":")
        try:
            if len(parts) != 2:
                raise ValueError
            idx, bits = int(parts[0]), int(parts[1])
        except ValueError:
            raise ConfigError(f"--layer-bits {text!r}: {item.strip()!r} is not LAYER:BITS; write e.g. "
                              f"'0:4,1:8' (linear-layer index : core bits)") from None
        if idx in out:
            raise ConfigError(f"--layer-bits {text!r} names layer {idx} twice; give each layer once")
        out[idx] = bits
    return out


def make_config(
    n_layers: int,
    w_bits: int = PTQ_DEFAULTS["w_bits"],
    act_bits: int = PTQ_DEFAULTS["act_bits"],
    inter_bits: int = PTQ_DEFAULTS["inter_bits"],
    acc_bits: int = PTQ_DEFAULTS["acc_bits"],
    layer_bits: Mapping[int, int] | None = None,
    calibration: str = PTQ_DEFAULTS["calibration"],
) -> QuantConfig:
    """A :class:`QuantConfig` for a network of ``n_layers`` linear layers, checked with
    errors that name the command-line flag (``layer_bits`` overrides core bits per layer)."""
    widths = {"w_bits": w_bits, "act_bits": act_bits, "inter_bits": inter_bits, "acc_bits": acc_bits}
    for name, v in widths.items():
        lo, hi = BIT_RANGES[name]
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ConfigError(f"{_FLAGS[name]} {v!r} is out of range; give an integer in {lo}..{hi}")
    if calibration not in ("max", "mse"):
        raise ConfigError(f"--calibration {calibration!r} is unknown; use 'max' or 'mse'")
    default = LayerQuant(**widths)
    layers = {}
    for idx, bits in (layer_bits or {}).items():
        if not 0 <= idx < n_layers:
            raise ConfigError(f"--layer-bits: layer {idx} does not exist; the network has {n_layers} "
                              f"linear layers (0..{n_layers - 1})")
        lo, hi = BIT_RANGES["w_bits"]
        if isinstance(bits, bool) or not isinstance(bits, int) or not lo <= bits <= hi:
            raise ConfigError(f"--layer-bits: layer {idx} bits {bits!r} is out of range; give an integer "
                              f"in {lo}..{hi}")
        layers[idx] = replace(default, w_bits=bits)
    return QuantConfig(default, layers, calibration)  # type: ignore[arg-type]


def check_accumulators(model: nn.Module, config: QuantConfig) -> None:
    """Refuse NaN or infinite weights, then widths whose products could overflow the
    accumulator, before any work (a NaN or infinite bias once read as "raise acc_bits
    to 33").

    The bias of the last step is checked once its scale is known
    (:meth:`~ttforge.quant.qat.QuantLinear.check_bias`).
    """
    check_finite_layers(enumerate(_linear_layers(model)),
                        "quantize a model whose training did not diverge (check the checkpoint)")
    # every step first, then one error naming the widest: --acc-bits is one width for
    # all layers, and advice for the first step that overflows was followed by an error
    # at the next (8-bit inputs, 16-bit intermediates: "raise to 19", then "to 27")
    worst, over = None, 0
    for i, layer in enumerate(_linear_layers(model)):
        q = config.for_layer(i)
        _, schedule, _, _ = _tt_view(layer)
        for t, step in enumerate(schedule.steps):
            x_bits = q.act_bits if t == 0 else q.inter_bits
            need = acc_bits_needed(step.K, q.w_bits, x_bits)
            if need > q.acc_bits:
                over += 1
                if worst is None or need > worst[0]:
                    worst = (need, i, t, step.K, q.w_bits, x_bits, q.acc_bits)
    if worst is not None:
        need, i, t, k, w_bits, x_bits, acc_bits = worst
        fix = (f"raise --acc-bits to {need}" if need <= MAX_ACC_BITS
               else f"lower --w-bits/--act-bits/--inter-bits (at most {MAX_ACC_BITS} bits)")
        more = f" (the widest of {over} steps that overflow it)" if over > 1 else ""
        raise ConfigError(f"layer {i} step {t}: {k} products of {w_bits}-bit cores and {x_bits}-bit "
                          f"inputs need a {need}-bit accumulator but --acc-bits is {acc_bits}{more}; {fix}")


def weights_fingerprint(model: nn.Module) -> str:
    """sha256 over the float parameters (names, shapes, float64 values) of the linear layers."""
    h = hashlib.sha256()
    for i, layer in enumerate(_linear_layers(model)):
        cores, _, _, _ = _tt_view(layer)
        tensors = list(cores) + ([layer.bias] if layer.bias is not None else [])
        for k, t in enumerate(tensors):
            a = np.ascontiguousarray(t.detach().double().cpu().numpy())
            h.update(f"{i}.{k}:{a.shape}".encode())
            h.update(a.tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------
def calibration_samples(ds: Dataset, n: int, seed: int) -> torch.Tensor:
    """The ``n`` training samples (all if fewer) that calibrate the exponents, chosen by ``seed``."""
    idx = torch.randperm(ds.x_train.shape[0], generator=seeded_generator(seed, 0))[:n]
    return ds.x_train[idx]


def ptq(float_model: nn.Module, x_cal: torch.Tensor, config: QuantConfig) -> QuantNetwork:
    """Post-training quantization of a *copy* of ``float_model``: wrap it, calibrate on ``x_cal``."""
    check_accumulators(float_model, config)
    model = copy.deepcopy(float_model).float().eval()
    return calibrate(quantize_model(model, config), x_cal, config.calibration)


@torch.no_grad()
def float_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 2048) -> float:
    was = model.training
    model.eval()
    correct = 0
    for i in range(0, x.shape[0], batch):
        correct += int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
    model.train(was)
    return correct / x.shape[0]


@torch.no_grad()
def evaluate_quantized(qnet: QuantNetwork, inet: IntNetwork, x: torch.Tensor, y: torch.Tensor,
                       batch: int = 2048) -> dict[str, Any]:
    """Accuracy of the eval-mode fake-quant network and of the integer executor on ``(x, y)``.

    Raises :class:`NotBitExactError` unless their integer outputs are equal
    (``np.array_equal``) on every sample.
    """
    was = qnet.training
    qnet.eval()
    fq_parts, int_parts = [], []
    # divided by 2^exp: 2^-exp overflows float64 at exp = -1024
    unit = math.ldexp(1.0, qnet.output_exp())
    for i in range(0, x.shape[0], batch):
        xb = x[i:i + batch]
        fq_parts.append((qnet(xb).double() / unit).numpy())
        int_parts.append(execute(inet, inet.quantize_input(xb.numpy())))
    qnet.train(was)
    fq = np.concatenate(fq_parts)
    got = np.concatenate(int_parts)
    fq_int = fq.astype(np.int64)
    if not (np.array_equal(fq_int, fq) and np.array_equal(fq_int, got)):
        bad = np.argwhere(fq_int != got)
        where = f" first at sample {bad[0][0]}, output {bad[0][1]}" if len(bad) else ""
        raise NotBitExactError(f"fake-quant and integer executor outputs differ{where}; run "
                               f"'ttforge diverge' to find the first differing step")
    labels = y.numpy()
    fq_acc = float(np.mean(np.argmax(fq, axis=1) == labels))
    int_acc = float(np.mean(np.argmax(got, axis=1) == labels))
    return {"fake_quant_acc": fq_acc, "int_acc": int_acc, "bit_exact": True, "n": int(x.shape[0])}


def _layer_rows(qnet: QuantNetwork, inet: IntNetwork) -> list[dict[str, Any]]:
    rows = []
    for i, (ql, il) in enumerate(zip(qnet.qlayers, inet.layers)):
        rows.append({
            "index": i,
            "kind": "tt" if isinstance(ql.layer, TTLinear) else "dense",
            "in_features": il.in_features,
            "out_features": il.out_features,
            "ranks": list(il.schedule.shape.ranks),
            "w_bits": il.w_bits,
            "act_bits": il.out_bits,
            "inter_bits": il.inter_bits,
            "acc_bits": il.acc_bits,
            "in_exp": il.in_exp,
            "core_exps": list(il.core_exps),
            "step_exps": list(il.step_exps),
        })
    return rows


# ---------------------------------------------------------------------------------------
# PTQ and QAT
# ---------------------------------------------------------------------------------------
def _resolve(trained: Any, data: Dataset | str | None) -> tuple[nn.Module, Dataset]:
    model = getattr(trained, "model", trained)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"quantize_trained needs a Trained (load_trained) or an nn.Module, "
                          f"got {type(trained).__name__}")
    if data is None:
        if not isinstance(trained, Trained):
            raise ConfigError("give data= (a Dataset or 'digits' / an IDX directory) for a bare model")
        ds = trained.dataset()   # the run's data, checked against the digest it records
    else:
        ds = load_dataset(data) if isinstance(data, str) else data
    if not isinstance(ds, Dataset):
        raise ConfigError(f"data must be a Dataset or a data spec string, got {type(data).__name__}")
    layers = _linear_layers(model)
    if layers and layers[0].in_features != ds.n_features:
        raise DataError(f"data {ds.name} has {ds.n_features} features but the network takes "
                        f"{layers[0].in_features}; give the data it was trained on (--data)")
    return model, ds


@autograd_on()   # QAT under a host's torch.no_grad() raised "element 0 of tensors does not require grad"
def quantize_trained(
    trained: Any,
    data: Dataset | str | None = None,
    config: QuantConfig = QuantConfig(),
    calib_samples: int = PTQ_DEFAULTS["calib_samples"],
    qat_epochs: int = 0,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = PTQ_DEFAULTS["seed"],
    recalibrate: bool = True,
    threads: int = 1,
    log: Callable[[str], None] | None = None,
) -> tuple[QuantNetwork, IntNetwork, dict[str, Any]]:
    """PTQ (and optionally QAT) of a trained float network; see the module docstring.

    Parameters
    ----------
    trained : Trained or nn.Sequential
        What :func:`~ttforge.model.train.load_trained` returns, or a float network.
    data : Dataset or str, optional
        Defaults to the data of the training run (checked: :meth:`~ttforge.model.train.Trained.dataset`).
    config : QuantConfig
        Widths (per layer overrides = mixed precision) and the calibration method.
    calib_samples : int
        Training samples used to calibrate the exponents (all if fewer).
    qat_epochs, lr, batch_size : int, float, int
        Fine-tuning (0 epochs = PTQ only); Adam with a cosine-decayed learning rate.
    seed : int
        Chooses the calibration samples and the fine-tuning order.
    recalibrate : bool
        Re-calibrate every exponent after each QAT epoch (else keep the PTQ exponents).

    Returns
    -------
    (QuantNetwork, IntNetwork, dict)
        The final network (QAT if ``qat_epochs`` else PTQ), its integer form and the
        report: ``float_acc``, ``ptq`` and ``qat`` (``fake_quant_acc``, ``int_acc``, ...),
        ``layers`` (widths and exponents), ``on_chip`` / ``on_chip_layers`` (bytes, see
        :func:`~ttforge.ir.onchip.on_chip_bytes`) and the settings.
    """
    given = {"calib_samples": calib_samples, "qat_epochs": qat_epochs, "batch_size": batch_size,
             "seed": seed, "threads": threads}
    for name, (lo, hi) in {**QUANTIZE_INT_RANGES, "threads": (1, MAX_THREADS)}.items():
        v = given[name]
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ConfigError(f"{name}={show(v)} must be an integer in {lo}..{hi:,}")
    if not is_positive_number(lr):
        raise ConfigError(f"lr={lr!r} must be a positive number up to {MAX_RATE:g} (e.g. 1e-3)")
    if not isinstance(config, QuantConfig):
        raise ConfigError("config must be a QuantConfig")
    say = log or (lambda s: None)
    float_model, ds = _resolve(trained, data)
    n_layers = len(_linear_layers(float_model))
    for idx in config.layers:
        if not 0 <= idx < n_layers:
            raise ConfigError(f"QuantConfig.layers names layer {idx}; the network has {n_layers} "
                              f"linear layers (0..{n_layers - 1})")
    check_accumulators(float_model, config)
    t0 = time.perf_counter()

    model = copy.deepcopy(float_model).float()
    model.eval()
    qnet = quantize_model(model, config)
    n_train = ds.x_train.shape[0]
    x_cal = calibration_samples(ds, calib_samples, seed)
    report: dict[str, Any] = {
        "data": ds.name,
        # what an artifact records beside its data, so a later command reading that data
        # can tell whether it is still the data the network was calibrated on
        "data_sha256": data_digest(ds),
        "n_train": int(n_train),
        "n_test": int(ds.x_test.shape[0]),
        "calibration": config.calibration,
        "calib_samples": int(x_cal.shape[0]),
        "seed": seed,
        "float_acc": float_accuracy(float_model, ds.x_test, ds.y_test),
        "float_fingerprint": weights_fingerprint(float_model),
    }
    with deterministic(threads):
        calibrate(qnet, x_cal, config.calibration)
        inet = compile_network(qnet)
        report["ptq"] = evaluate_quantized(qnet, inet, ds.x_test, ds.y_test)
        say(f"float {100 * report['float_acc']:.2f}%  PTQ {100 * report['ptq']['int_acc']:.2f}%")
        report["qat"] = None
        if qat_epochs:
            report["qat"] = _qat(qnet, ds, x_cal, config, qat_epochs, lr, batch_size, seed, recalibrate, say)
            inet = compile_network(qnet)
            report["qat"].update(evaluate_quantized(qnet, inet, ds.x_test, ds.y_test))
            say(f"QAT {100 * report['qat']['int_acc']:.2f}%")
    qnet.eval()
    from ttforge.ir.onchip import on_chip_bytes

    report["layers"] = _layer_rows(qnet, inet)
    mem = on_chip_bytes(inet)
    report["on_chip"] = mem["total"]
    report["on_chip_layers"] = mem["layers"]
    report["quant_fingerprint"] = weights_fingerprint(model)
    report["seconds"] = time.perf_counter() - t0
    return qnet, inet, report


def fine_tune(module: nn.Module, ds: Dataset, epochs: int, lr: float = 1e-3, batch_size: int = 64,
              seed: int = 0, after_epoch: Callable[[int], None] | None = None,
              log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Train ``module`` (a QuantNetwork for QAT, or a float network as a control) for
    ``epochs`` on ``ds``'s training split: Adam, the learning rate decaying from ``lr``
    to 0 on a cosine, shuffling from ``(seed, epoch)``. ``after_epoch(epoch)`` runs after
    each epoch (QAT re-calibrates there). Returns the per-epoch mean training loss."""
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    n = ds.x_train.shape[0]
    steps = math.ceil(n / batch_size)
    total = epochs * steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    history = []
    for epoch in range(1, epochs + 1):
        module.train()
        perm = torch.randperm(n, generator=seeded_generator(seed, 1, epoch))
        loss_sum = 0.0
        for s in range(steps):
            idx = perm[s * batch_size:(s + 1) * batch_size]
            loss = nn.functional.cross_entropy(module(ds.x_train[idx]), ds.y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach())
        _check_not_diverged(params, epoch, lr)
        if after_epoch is not None:
            after_epoch(epoch)
        history.append({"epoch": epoch, "train_loss": loss_sum / steps})
        if log:
            log(f"epoch {epoch}/{epochs}  loss {loss_sum / steps:.4f}")
    module.eval()
    return history


def _check_not_diverged(params: list[torch.Tensor], epoch: int, lr: float) -> None:
    """A one-line ConfigError naming the learning rate when an epoch left a weight NaN or
    infinite: the re-calibration after it said only "calibration saw a value that is not
    a finite float64 (nan); check the model and data" (``--lr 1e30`` does it)."""
    if not all_finite(params):
        raise ConfigError(f"QAT diverged in epoch {epoch}: the weights hold NaN or infinite values; "
                          f"lower the learning rate (lr {lr:g}: --lr of ttforge quantize, [quant] lr "
                          f"of a flow config)")


def _qat(qnet: QuantNetwork, ds: Dataset, x_cal: torch.Tensor, config: QuantConfig, epochs: int,
         lr: float, batch_size: int, seed: int, recalibrate: bool, say: Callable[[str], None]) -> dict:
    def after(epoch: int) -> None:
        if recalibrate:
            calibrate(qnet, x_cal, config.calibration)

    history = fine_tune(qnet, ds, epochs, lr, batch_size, seed, after, lambda s: say("QAT " + s))
    return {"epochs": epochs, "lr": lr, "batch_size": batch_size, "recalibrate": recalibrate,
            "history": history}
