"""The native Verilator harness builds the tests share: the networks (``nets``) and one
build that runs them all (``build``, session fixtures), and the config that fits several
networks (:func:`shared_config`)."""

from __future__ import annotations

import pytest

from tests.support.engine import coverage_net, random_net
from tests.support.nets import small_net
from ttforge.hw.config import AccelConfig
from ttforge.sim.native import build_native


def shared_config(nets, lanes, stream_elems=1) -> AccelConfig:
    """The smallest config that runs every one of ``nets`` (field-wise maximum)."""
    dicts = [AccelConfig.for_network(n, lanes=lanes, stream_elems=stream_elems).to_dict() for n in nets]
    fields = {k: max((d[k] for d in dicts if d[k] is not None), default=None) for k in dicts[0]}
    fields.pop("axil_addr_bits", None)
    cfg = AccelConfig(**fields)
    for n in nets:
        cfg.check(n)
    return cfg


def qat_net():
    from ttforge.quant.qat import compile_network

    q, x = small_net(seed=3, ranks=(3, 2), w_bits=6, inter_bits=16, act_bits=8)
    net = compile_network(q)
    return net, net.quantize_input(x.numpy()), q, x


#: random networks (tests.support.engine.random_net seeds) for the shared L = 4 build
SEEDS = (15, 37, 3, 8)


@pytest.fixture(scope="session")
def nets():
    out = {f"random{s}": random_net(s) for s in SEEDS}
    out["coverage"] = coverage_net()[0]
    out["qat"] = qat_net()[0]
    return out


@pytest.fixture(scope="session")
def build(nets):
    # the default cache ($TTFORGE_NATIVE_CACHE or ~/.cache/ttforge/native): built once
    cfg = shared_config(list(nets.values()), lanes=4, stream_elems=2)
    return build_native(cfg, jobs=2)
