"""Shared fixtures of the cocotb tests: the network of tests/quant/test_golden.py
(``small_net``), its golden outputs, and one simulator build per simulator for the
whole session (builds are also cached on disk by a hash of the Verilog, see
``ttforge.sim.runner``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from ttforge.hw.config import AccelConfig
from ttforge.hw.program import Program, compile_program
from ttforge.ir.executor import IntNetwork, execute, execute_traced
from ttforge.quant.qat import compile_network

from tests.support.nets import small_net
from tests.support.sims import SIMS, _available


@dataclass(frozen=True)
class Case:
    net: IntNetwork
    config: AccelConfig
    program: Program
    X: np.ndarray
    golden: np.ndarray
    saturations: int


@pytest.fixture(scope="session")
def case() -> Case:
    q, x = small_net()
    net = compile_network(q)
    X = net.quantize_input(x.numpy())[:24]
    golden, traces = execute_traced(net, X)
    assert np.array_equal(golden, execute(net, X))
    cfg = AccelConfig.for_network(net, lanes=4, stream_elems=2)
    return Case(net, cfg, compile_program(net, cfg), X, golden,
                sum(t.saturations for t in traces))


_BUILDS: dict = {}


@pytest.fixture(scope="session")
def get_build():
    """``get_build(sim, config, fault=None)``: a session-wide cache over ``build``."""
    from ttforge.sim.runner import build

    def get(sim: str, config: AccelConfig, fault: str | None = None):
        reason = _available(sim)
        if reason:
            pytest.skip(reason)
        key = (sim, config, fault)
        if key not in _BUILDS:
            _BUILDS[key] = build(config, sim, fault=fault)
        return _BUILDS[key]

    return get


@pytest.fixture(params=SIMS)
def sim(request) -> str:
    return request.param
