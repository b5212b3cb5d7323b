"""The memory the integer training step needs, counted bit-packed and itemized, against FP32
dense training with Adam.

This is the count of arXiv:2104.03420 (and of the brief's ">= 300x less memory"): the
bits the step's data take, each tensor packed to the bit. It is not the memory of the
engine ``ttforge generate --train`` / ``ttforge build --train`` makes, which rounds the
batch up to its slots and every depth up to a power of two
(:func:`ttforge.hw.trainer.program.engine_memory`): whether a board holds the training is
that figure's to say, and this module says nothing about it.

The step (``docs/arithmetic.md``, "Training") needs on chip: the master integers (the
forward cores are their top bits, derived as they are read: no second copy), the
biases, the inputs of every forward step of every sample of the batch (the backward
pass reads them; the ReLU mask of a hidden layer is the sign of the next layer's saved
input, so it costs nothing), the logits of one sample at a time (the loss is per
sample), two gradient buffers for the widest backward step of the batch (ping-pong),
the gradient accumulators of the MAC lanes (a core gradient element is reduced in one
lane and immediately consumed by the update: no gradient tensor is stored), the exponent
table, the xorshift32 state and the exponents. Everything is bit-packed:
``ceil(elements * bits / 8)`` bytes.
"""

from __future__ import annotations

from typing import Any

from ttforge.ir.train import TrainState, exp2_table, widths

__all__ = ["training_memory", "fp32_dense_adam_bytes", "ratio_words", "engine_text", "STATE_ITEMS"]


def _b(elements: int, bits: int) -> int:
    return -(-int(elements) * int(bits) // 8)


def ratio_words(ratio: float) -> str:
    """``ratio`` (a baseline's bytes over ours) in words: ``"1.4x less"`` at 1.4 and
    ``"1.8x more"`` at 0.55 (its inverse: "0.5x less" meant twice as much), ``"no less"``
    at exactly 1, two decimals where one would read 1.0 ("1.0x less" was said of equal
    bytes)."""
    if ratio == 1:
        return "no less"
    factor, word = (ratio, "less") if ratio > 1 else (1 / ratio, "more")
    return f"{factor:.1f}x {word}" if f"{factor:.1f}" != "1.0" else f"{factor:.2f}x {word}"


def engine_text(engine: dict[str, Any], fp32_bytes: int) -> str:
    """One line on the memory of a training engine, ``engine`` as
    :func:`ttforge.hw.trainer.program.engine_memory` states it: its bytes against FP32 dense
    training with Adam (``fp32_bytes``), whether it fits the device by the bit count
    ``ttforge build --train`` checks, and the largest batch whose engine does (nothing of a
    device where ``engine`` names none)."""
    dev = (engine["device"] or "").upper()
    at = f"at {engine['lanes']} lanes"
    largest = ("" if engine["device"] is None else
               f"; {at}, the largest batch whose engine fits the {dev}: {engine['max_batch']:,}" if engine["max_batch"]
               else f"; {at}, no batch's engine fits the {dev}")
    if "why" in engine:
        return f"no training engine at batch {engine['batch']:,} ({engine['lanes']} lanes): {engine['why']}{largest}"
    fit = ("" if engine["device"] is None else
           f"; fits the {dev}'s {engine['device_bits'] // 8:,} bytes of block RAM by the bit count build --train "
           f"checks (place and route decides the rest)" if engine["misfit"] is None
           else f"; does not fit the {dev} ({engine['misfit']})")
    return (f"the training engine generate --train and build --train make at batch {engine['batch']:,} "
            f"({engine['lanes']} lanes, {engine['slots']:,} slots, depths rounded up to powers of two): "
            f"{engine['bytes']:,} bytes, {ratio_words(fp32_bytes / engine['bytes'])} than FP32 dense training "
            f"with Adam{fit}{largest}")


def fp32_dense_adam_bytes(sizes: list[int], batch: int) -> dict[str, int]:
    """FP32 training of the dense network ``sizes`` (e.g. ``[784, 512, 10]``) with Adam:
    weights + biases, their gradients, Adam's two moments (4 bytes each), the saved
    activations of the batch (input, every hidden output, the logits) and the activation
    gradients of the batch (every layer output)."""
    params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    items = {
        "weights": 4 * params,
        "gradients": 4 * params,
        "adam_moments": 8 * params,
        "saved_activations": 4 * batch * sum(sizes),
        "activation_gradients": 4 * batch * sum(sizes[1:]),
    }
    items["total"] = sum(items.values())
    items["params"] = params
    return items


def training_memory(state: TrainState, batch: int, lanes: int = 16) -> dict[str, Any]:
    """Itemized bit-packed bytes one integer training step with ``batch`` samples and
    ``lanes`` MAC lanes needs (see the module docstring: not the generated engine's), with
    the FP32 dense + Adam baseline of the same layer sizes and batch: ``ratio`` of the
    totals; ``state_ratio`` of what does not grow with the batch (FP32 weights, gradients
    and Adam moments against the master integers, biases, lane accumulators, table, RNG
    and exponents); the bytes per sample of the batch-dependent buffers."""
    cfg = state.config
    master = sum(_b(g.size, cfg.master_bits) for L in state.layers for g in L.masters)
    bias = sum(_b(L.bias.size, cfg.bias_bits) for L in state.layers if L.bias is not None)
    saved = 0
    grad_widest = 0
    for i, L in enumerate(state.layers):
        shape = L.schedule.shape
        saved += _b(shape.in_size, cfg.act_bits)  # the layer input (ReLU mask of layer i-1)
        for t, st in enumerate(L.schedule.steps[:-1]):
            saved += _b(st.out_elements, cfg.inter_bits)
        # gradients between steps: the input and output gradient of every backward step
        sizes = [shape.in_size] + [st.out_elements for st in L.schedule.steps]
        for a, b in zip(sizes[:-1], sizes[1:]):
            grad_widest = max(grad_widest, _b(a, cfg.grad_bits) + _b(b, max(cfg.grad_bits, cfg.logit_grad_bits)))
    acc_bits = max(w["bits"] for w in widths(state, batch))
    table_bits = cfg.table_bits + 1
    items = {
        "master_weights": master,
        "biases": bias,
        "saved_activations": batch * saved,
        "gradient_buffers": batch * grad_widest,
        "logits_one_sample": _b(state.n_classes, cfg.act_bits) + _b(state.n_classes, cfg.logit_grad_bits),
        "lane_accumulators": _b(lanes, acc_bits),
        "exp2_table": _b(exp2_table(cfg.table_bits, cfg.table_frac_bits).size, table_bits),
        "rng_and_exponents": 4 + sum(2 * L.d * 2 + 2 for L in state.layers),
    }
    items["total"] = sum(items.values())
    sizes = [state.in_features] + [L.out_features for L in state.layers]
    base = fp32_dense_adam_bytes(sizes, batch)
    ours_state = sum(items[k] for k in STATE_ITEMS)
    base_state = sum(base[k] for k in ("weights", "gradients", "adam_moments"))
    per_sample = (items["saved_activations"] + items["gradient_buffers"]) // batch
    return {"batch": batch, "lanes": lanes, "items": items, "fp32_dense_adam": base,
            "ratio": base["total"] / items["total"],
            "state_bytes": ours_state, "fp32_state_bytes": base_state, "state_ratio": base_state / ours_state,
            "per_sample_bytes": per_sample, "accumulator_bits": acc_bits}


#: Items that do not grow with the batch: the training *state* (weights, optimizer, RNG).
STATE_ITEMS = ("master_weights", "biases", "lane_accumulators", "exp2_table", "rng_and_exponents")
