"""A second, independently written integer executor.

It never uses the steps' (A, K, Q, P) views: it keeps each sample's intermediate as a
tensor with one axis per layout label and contracts with the 4-way core by labelled
einsum, then requantizes with Python integers (Fractions-free floor division).
"""

import string

import numpy as np


def _half_up(v: int, s: int) -> int:
    if s <= 0:
        return v * (1 << -s)
    return (2 * v + (1 << s)) // (2 << s)  # floor(v / 2^s + 1/2) in exact integers


def _sat(v: int, bits: int) -> int:
    return max(-(1 << (bits - 1)), min((1 << (bits - 1)) - 1, v))


def reference_execute(net, x):
    out = []
    for row in np.asarray(x, dtype=object):
        v = [int(t) for t in row]
        for layer in net.layers:
            v = _layer(layer, v)
        out.append(v)
    return np.array(out, dtype=np.int64)


def _layer(layer, v):
    shape = layer.schedule.shape
    sizes = {f"n{k}": n for k, n in enumerate(shape.in_modes)}
    sizes.update({f"m{k}": m for k, m in enumerate(shape.out_modes)})
    sizes.update({f"r{k}": shape.ranks[k] for k in range(1, shape.d)})
    v = v + [0] * (shape.in_size - len(v))
    x = np.array(v, dtype=object).reshape([sizes[a] for a in layer.schedule.steps[0].in_layout])
    last = len(layer.schedule.steps) - 1
    for t, step in enumerate(layer.schedule.steps):
        k = step.core
        core_labels = [f"r{k}", f"m{k}", f"n{k}", f"r{k + 1}"]
        letters = {lab: string.ascii_letters[i] for i, lab in enumerate(sorted(set(step.in_layout) | set(core_labels) | set(step.out_layout)))}
        core = layer.cores[k].astype(object)
        # boundary bonds (size 1) are not in any layout: drop them from the core
        keep = [i for i, lab in enumerate(core_labels) if lab in step.in_layout or lab in step.out_layout]
        core = core.reshape([core.shape[i] for i in keep])
        spec = ("".join(letters[a] for a in step.in_layout) + ","
                + "".join(letters[core_labels[i]] for i in keep) + "->"
                + "".join(letters[a] for a in step.out_layout))
        acc = np.einsum(spec, x, core)
        flat = [int(a) for a in acc.reshape(-1)]
        if t == last and layer.bias is not None:
            flat = [a + (int(layer.bias[i]) if i < layer.out_features else 0) for i, a in enumerate(flat)]
        s = layer.step_exps[t] - layer.acc_exp(t)
        bits = layer.step_out_bits(t)
        flat = [_sat(_half_up(a, s), bits) for a in flat]
        x = np.array(flat, dtype=object).reshape(acc.shape)
    v = [int(a) for a in x.reshape(-1)][: layer.out_features]
    return [max(a, 0) for a in v] if layer.relu else v
