"""Valid inputs the bad-input corpus is run against (built once per session)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def valid(tmp_path_factory):
    """Paths of a valid artifact, its inputs and a valid (one-epoch) training checkpoint."""
    from ttforge.cli import main
    from ttforge.ir.artifact import save_artifact
    from ttforge.quant.qat import compile_network

    from tests.support.nets import small_net

    d = tmp_path_factory.mktemp("valid")
    q, x = small_net(inter_bits=12)  # 12: small enough for a float32 QONNX graph
    net = compile_network(q)
    save_artifact(net, d / "small.ttfa")
    np.save(d / "x.npy", net.quantize_input(x.numpy())[:3])
    assert main(["train", "--epochs", "1", "--hidden", "16", "--ranks", "2", "--quiet",
                 "--out", str(d / "run")]) == 0
    return {"artifact": d / "small.ttfa", "inputs": d / "x.npy", "checkpoint": d / "run" / "last.pt",
            "root": d}
