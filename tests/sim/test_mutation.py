"""Mutation check of the cocotb regression: each deliberate RTL fault of
``ttforge.hw.faults`` is compiled into the Verilog, run through the same cocotb
testbench as the real design (``ttforge.sim.runner``: AXI4-Lite load, AXI4-Stream
vectors with random gaps and back-pressure), and the exact comparison with
``ttforge.quant.execute`` must FAIL, while the un-faulted design passes the same run.

*Killed* means any of: an output vector missing (timeout; an engine error stops the
vector), an output element different, a load write not answered ``OKAY``, or the
testbench's own scoreboard failing. The network is the quick-kill net of
``tests/hw/test_faults.py`` (its vectors contain rounding ties and positive
saturation, so every datapath fault is reachable).

Default run: the un-faulted design and one fault (``round_off_by_one``, the subtlest:
it changes only exact ties) on Icarus (~40 s). ``-m slow``: the same on Verilator, and
every fault on both simulators with the kill rate printed (a hang counts as a kill
after ``WALL_S``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from ttforge.hw.faults import FAULTS

from tests.support.mutation import _case
from tests.support.sims import _available

#: wall-clock limit of one regression run (an un-faulted Icarus run takes ~10 s)
WALL_S = 180.0


def run_regression(sim: str, fault: str | None, *, seed: int = 1, wall_s: float = WALL_S):
    """The cocotb regression of the quick-kill net on ``sim`` with ``fault`` compiled in.
    The build happens here; the run in a child process (a fault can hang the
    testbench's bus master, which has no timeout of its own: after ``wall_s`` seconds
    the child's process group is killed and the run counts as failed). Returns
    ``(passed, why)``."""
    from ttforge.sim.runner import build

    reason = _available(sim)
    if reason:
        pytest.skip(reason)
    build(_case()["cfg"], sim, fault=fault)      # compile here (cached on disk), not timed
    root = Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory(prefix="ttforge-mutation-") as wd:
        code = ("import json, sys; from tests.support.mutation import _regress_in_process; "
                f"print('RESULT ' + json.dumps(_regress_in_process({sim!r}, {fault!r}, {wd!r}, {seed})))")
        p = subprocess.Popen([sys.executable, "-c", code], cwd=root, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            out, _ = p.communicate(timeout=wall_s)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
            return False, f"hang: no verdict within {wall_s:.0f} s"
    line = next((ln for ln in out.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise AssertionError(f"the regression run crashed:\n{out[-3000:]}")
    res = json.loads(line[len("RESULT "):])
    return res["passed"], res["why"]


# Verilator builds take 1-2 minutes each (cached on disk afterwards): slow
VERILATOR = pytest.param("verilator", marks=pytest.mark.slow)


@pytest.mark.parametrize("sim", ["icarus", VERILATOR])
def test_unfaulted_design_passes_the_mutation_run(sim):
    passed, why = run_regression(sim, None)
    assert passed, why


@pytest.mark.parametrize("sim,fault", [("icarus", "round_off_by_one"),
                                       pytest.param("verilator", "sat_bound",
                                                    marks=pytest.mark.slow)])
def test_fault_is_killed(sim, fault):
    passed, why = run_regression(sim, fault)
    assert not passed, f"fault {fault} survived the {sim} regression"


@pytest.mark.slow
@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_every_fault_is_killed(sim):
    """Kill rate 100%: every fault of the registry fails the regression."""
    results = {f: run_regression(sim, f) for f in FAULTS}
    killed = [f for f, (passed, _) in results.items() if not passed]
    print(f"\n{sim}: killed {len(killed)}/{len(FAULTS)}:",
          {f: why for f, (_, why) in results.items()})
    assert killed == list(FAULTS), results
