"""Networks the tests share: the small quantized PyTorch network (``small_net``), the
worked example of docs/artifact.md (``example_network``, ``EXAMPLE_INPUT``), a hypothesis
strategy of random float networks, random TT cores, a network whose vectors are longer
than one serial frame (``wide_int_network``). (Random *integer* networks come from
:mod:`ttforge.ir.random`.)"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st
from torch import nn

from ttforge.ir.executor import IntLayer, IntNetwork, layer_from_dense
from ttforge.ir.schedule import ContractionSchedule, schedule_orders
from ttforge.ir.tt import TTShape, max_ranks
from ttforge.model.layers import TTLinear
from ttforge.quant.qat import LayerQuant, QuantConfig, calibrate, quantize_model


def small_net(seed=0, ranks=(4, 3), w_bits=8, inter_bits=16, act_bits=8, calibration="max"):
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Flatten(), TTLinear(30, 20, [ranks[0], 2], in_modes=[2, 3, 5], out_modes=[2, 5, 2]),
        nn.ReLU(), TTLinear(20, 12, [ranks[1]], in_modes=[4, 5], out_modes=[3, 4]), nn.ReLU(),
        nn.Linear(12, 5),
    )
    x = torch.rand(64, 30) * 2 - 0.5
    q = quantize_model(net, QuantConfig(LayerQuant(w_bits, act_bits, inter_bits), calibration=calibration))
    calibrate(q, x, calibration)
    return q, x


@st.composite
def random_float_network(draw):
    """A hypothesis strategy: a float network with one TT layer of random modes, ranks and
    order, a ReLU and a dense layer, a QuantConfig, its input width and a seed."""
    d = draw(st.integers(1, 3))
    in_modes = [draw(st.integers(1, 4)) for _ in range(d)]
    out_modes = [draw(st.integers(1, 4)) for _ in range(d)]
    in_f = draw(st.integers(max(1, int(np.prod(in_modes)) - 2), int(np.prod(in_modes))))
    out_f = draw(st.integers(max(1, int(np.prod(out_modes)) - 2), int(np.prod(out_modes))))
    lim = max_ranks(out_modes, in_modes)
    ranks = [draw(st.integers(1, min(lim[k], 5))) for k in range(1, d)]
    order = draw(st.sampled_from(schedule_orders(d)))
    layer = TTLinear(in_f, out_f, ranks, in_modes=in_modes, out_modes=out_modes,
                     bias=draw(st.booleans()), schedule=order)
    hidden_out = draw(st.integers(1, 6))
    net = nn.Sequential(layer, nn.ReLU(), nn.Linear(out_f, hidden_out))
    cfg = QuantConfig(
        LayerQuant(w_bits=draw(st.integers(2, 8)), act_bits=draw(st.sampled_from([8, 16])),
                   inter_bits=draw(st.sampled_from([8, 16]))),
        calibration=draw(st.sampled_from(["max", "mse"])),
    )
    seed = draw(st.integers(0, 10_000))
    return net, cfg, in_f, seed


def example_network() -> IntNetwork:
    """The worked example of docs/artifact.md: a 5 -> 4 TT layer (padded input, bias,
    ReLU, right-to-left order) followed by a dense 4 -> 3 layer."""
    rng = np.random.default_rng(2024)
    shape = TTShape((2, 2), (3, 2), (1, 2, 1))
    cores = tuple(rng.integers(-7, 8, size=s).astype(np.int64) for s in shape.core_shapes)
    tt = IntLayer(in_features=5, out_features=4, schedule=ContractionSchedule(shape, (1, 0)),
                  cores=cores, core_exps=(-3, -2), w_bits=4, in_bits=8, in_exp=-4, inter_bits=8,
                  out_bits=8, step_exps=(-3, -2), acc_bits=16,
                  bias=rng.integers(-300, 300, size=4).astype(np.int64), relu=True)
    dense = layer_from_dense(rng.integers(-7, 8, size=(3, 4)), core_exps=(-3,), w_bits=4, in_bits=8,
                             in_exp=-2, inter_bits=8, out_bits=8, step_exps=(-1,), acc_bits=16)
    return IntNetwork((tt, dense), meta={"source": "docs/artifact.md worked example"})


EXAMPLE_INPUT = np.array([[100, -37, 5, 127, -128], [3, 64, -90, 0, 41]], dtype=np.int64)


def random_cores(out_modes, in_modes, ranks, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    shape = TTShape(tuple(out_modes), tuple(in_modes), ranks)
    return [torch.randn(s, generator=g, dtype=dtype) for s in shape.core_shapes]


def wide_int_network(seed=5):
    """One TT layer of 5,000 inputs and 5,000 outputs at 8 bits and two input vectors:
    each vector needs two STREAM_IN frames and comes back in two output frames."""
    rng = np.random.default_rng(seed)
    shape = TTShape((50, 100), (50, 100), (1, 2, 1))
    cores = tuple(rng.integers(-7, 8, size=s).astype(np.int64) for s in shape.core_shapes)
    tt = IntLayer(in_features=5000, out_features=5000, schedule=ContractionSchedule(shape, (1, 0)),
                  cores=cores, core_exps=(-3, -2), w_bits=4, in_bits=8, in_exp=-4, inter_bits=8,
                  out_bits=8, step_exps=(-3, -2), acc_bits=24)
    return IntNetwork((tt,), meta={}), rng.integers(-128, 128, size=(2, 5000))
