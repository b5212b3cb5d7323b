"""Shared fixtures of the firmware tests."""

import numpy as np
import pytest


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    """A directory with ``small.ttfa`` (the golden small net) and ``x.npy`` (3 inputs)."""
    from ttforge.ir.artifact import save_artifact
    from ttforge.quant.qat import compile_network

    from tests.support.nets import small_net

    q, x = small_net()
    net = compile_network(q)
    d = tmp_path_factory.mktemp("art")
    save_artifact(net, d / "small.ttfa")
    np.save(d / "x.npy", net.quantize_input(x.numpy())[:3])
    return d
