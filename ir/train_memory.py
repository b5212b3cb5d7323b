"""On-chip memory of the integer training step, itemized, against FP32 dense training with Adam.

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

__all__ = ["training_memory", "fp32_dense_adam_bytes", "ECP5_85F_BRAM_BYTES", "STATE_ITEMS"]


def _b(elements: int, bits: int) -> int:
    return -(-int(elements) * int(bits) // 8)


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
    """Itemized on-chip bytes of one integer training step with ``batch`` samples and
    ``lanes`` MAC lanes (see the module docstring), with the FP32 dense + Adam baseline of
    the same layer sizes and batch: ``ratio`` of the totals; ``state_ratio`` of what does
    not grow with the batch (FP32 weights, gradients and Adam moments against the master
    integers, biases, lane accumulators, table, RNG and exponents); the bytes per sample
    of the batch-dependent buffers; whether it fits the ECP5-85F's block RAM and the
    largest batch that would."""
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
            "per_sample_bytes": per_sample, "fits_ecp5_85f": items["total"] <= ECP5_85F_BRAM_BYTES,
            "ecp5_85f_max_batch": max(0, (ECP5_85F_BRAM_BYTES - items["total"] + batch * per_sample) // per_sample),
            "accumulator_bits": acc_bits}


#: Block RAM of the ECP5-85F: 208 EBR blocks of 18 Kbit.
ECP5_85F_BRAM_BYTES = 208 * 18 * 1024 // 8
#: Items that do not grow with the batch: the training *state* (weights, optimizer, RNG).
STATE_ITEMS = ("master_weights", "biases", "lane_accumulators", "exp2_table", "rng_and_exponents")
