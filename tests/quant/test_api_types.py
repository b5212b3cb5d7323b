"""The wrong object where the library takes a network or a tensor is one line naming the
call and what it takes (probe Y: a ``QuantNetwork`` passed to ``execute``,
``compile_program`` or ``AccelConfig.for_network`` and a numpy array passed to a
``QuantNetwork`` failed deep inside with ``AttributeError``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ttforge.errors import ConfigError
from ttforge.hw import AccelConfig, compile_program
from ttforge.model import TTLinear
from ttforge.quant import LayerQuant, QuantConfig, calibrate, compile_network, execute, quantize_model


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    net = nn.Sequential(TTLinear(16, 16, ranks=2, in_modes=[4, 4], out_modes=[4, 4]), nn.ReLU(),
                        nn.Linear(16, 4))
    x = torch.rand(8, 16)
    qnet = calibrate(quantize_model(net, QuantConfig(LayerQuant(w_bits=4))), x).eval()
    return qnet, compile_network(qnet), x


@pytest.mark.parametrize("call, who", [
    (lambda q, i, x: execute(q, i.quantize_input(x.numpy())), "the executor"),
    (lambda q, i, x: compile_program(q, AccelConfig.for_network(i)), "compile_program"),
    (lambda q, i, x: AccelConfig.for_network(q), "AccelConfig.for_network"),
])
def test_a_quant_network_where_the_integer_one_belongs(nets, call, who):
    qnet, inet, x = nets
    with pytest.raises(ConfigError, match=f"^{who} needs an IntNetwork .*got QuantNetwork: compile it first"):
        call(qnet, inet, x)


@pytest.mark.parametrize("call", [lambda q, x: q.forward_int(x), lambda q, x: q(x),
                                  lambda q, x: calibrate(q, x)])
def test_a_numpy_array_where_the_tensor_belongs(nets, call):
    qnet, _, x = nets
    with pytest.raises(ConfigError, match=r"^QuantNetwork takes a torch.Tensor .*got ndarray; convert it"):
        call(qnet, x.numpy())
    assert np.array_equal(qnet.forward_int(x), qnet.forward_int(torch.as_tensor(x.numpy())))


def test_numpy_integers_are_integers_in_every_config():
    """``ir.TrainConfig`` and ``TTLinear`` took ``np.int64``, ``LayerQuant`` and
    ``AccelConfig`` refused it ("must be an integer"); all take it now, stored as ``int``
    (JSON and hashing as for a Python int); a bool is still refused."""
    lq = LayerQuant(w_bits=np.int64(4))
    assert lq == LayerQuant(w_bits=4) and type(lq.w_bits) is int
    cfg = AccelConfig(lanes=np.int32(8), core_depth=np.int64(1024))
    assert cfg == AccelConfig(lanes=8, core_depth=1024) and type(cfg.lanes) is int
    assert AccelConfig.from_dict(__import__("json").loads(cfg.to_json())) == cfg
    for make in (lambda: LayerQuant(w_bits=True), lambda: AccelConfig(lanes=np.bool_(True))):
        with pytest.raises(ConfigError, match="must be an integer"):
            make()


def test_forward_int_leaves_the_training_mode_as_it_found_it(nets):
    """It switched a network in training (QAT) to eval for good; calibrate and
    find_divergence already gave the mode back."""
    qnet, _, x = nets
    qnet.train()
    try:
        first = qnet.forward_int(x)
        assert qnet.training and all(m.training for m in qnet.modules())
        assert np.array_equal(qnet.forward_int(x), first)
    finally:
        qnet.eval()
    qnet.forward_int(x)
    assert not qnet.training


def test_a_quant_config_is_hashable_and_its_own():
    """A frozen QuantConfig raised ``unhashable type: 'dict'`` on ``hash()``, and kept the
    caller's dict: an override added to it afterwards changed the config unchecked."""
    import pickle

    over = {np.int64(1): LayerQuant(w_bits=2)}
    cfg = QuantConfig(LayerQuant(w_bits=4), layers=over)
    over[5] = LayerQuant(w_bits=3)
    assert cfg.layers == {1: LayerQuant(w_bits=2)} and type(next(iter(cfg.layers))) is int
    same = QuantConfig(LayerQuant(w_bits=4), layers={1: LayerQuant(w_bits=2)})
    assert cfg == same and hash(cfg) == hash(same) and len({cfg, same}) == 1
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    assert hash(cfg) != hash(QuantConfig(LayerQuant(w_bits=4)))
