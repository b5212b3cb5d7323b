"""The cocotb regression run of the mutation check, in one process (a child process of
tests/sim/test_mutation.py runs :func:`_regress_in_process`, so that a fault that hangs
the testbench can be killed)."""

from __future__ import annotations

import numpy as np

from tests.support.engine import KILL_SEED, config_for, random_inputs, random_net
from ttforge.hw.program import compile_program
from ttforge.ir.executor import execute

N_VEC = 4

_CASE: dict = {}


def _case():
    if not _CASE:
        net = random_net(KILL_SEED)
        cfg = config_for(net, 4, stream_elems=2)
        X = random_inputs(net, N_VEC, KILL_SEED)
        _CASE.update(net=net, cfg=cfg, prog=compile_program(net, cfg), X=X,
                     golden=execute(net, X))
    return _CASE


def _regress_in_process(sim: str, fault: str | None, workdir: str, seed: int = 1) -> dict:
    """One cocotb regression run (in this process); the verdict as a dict."""
    from ttforge.sim.runner import build, run_inference

    c = _case()
    b = build(c["cfg"], sim, fault=fault)
    try:
        r = run_inference(b, c["prog"], c["X"], seed=seed, gaps=0.3, backpressure=0.3,
                          expected=c["golden"], workdir=workdir)
    except Exception as e:               # the testbench itself gave up
        return {"passed": False, "why": f"{type(e).__name__}: {e}"}
    why = []
    if r.timeout:
        why.append("timeout")
    if r.load_errors:
        why.append(f"{r.load_errors} load errors")
    if r.outputs.shape != c["golden"].shape:
        why.append(f"outputs {r.outputs.shape} != {c['golden'].shape}")
    elif not np.array_equal(r.outputs, c["golden"]):
        why.append(f"{int((r.outputs != c['golden']).sum())} elements differ")
    if not r.job.passed:
        why.append("scoreboard failed")
    return {"passed": not why, "why": "; ".join(why) or "exact"}
