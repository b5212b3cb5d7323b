"""The training top ``ttforge_train`` on Icarus and Verilator (cocotb 2.x, cocotbext-axi):
random small networks trained for several steps by the host driver over AXI4-Lite and
AXI4-Stream; after every step the state read back equals the golden trainer's
(``compare_states(...) is None``) and CMEM, BMEM, MAXACC and the generator equal the
word-level interpreter's (``np.array_equal``), and after the last step so do the used
regions of ACT and GRAD and the labels; the engine's counters over each step equal the
program's MAC-lane cycles, the interpreter's changed updates and the cycle model
(exactly, when the samples never pause). The sibling corrupts one CMEM word over AXI4-Lite
after loading and must be reported. Longer runs are marked ``slow``."""

from __future__ import annotations

import pytest

from tests.support.sims import SIMS, _available
from ttforge.sim.train_runner import build_train, case_config, judge, run_train

#: one engine for the default tests (one build per simulator)
ENGINE = dict(lanes=4, act_depth=256, grad_depth=128, core_depth=256, bias_depth=32, desc_depth=32,
              max_batch=8, max_classes=8)

CASES = {
    "stochastic": dict(seed=0, batch=5, steps=3,
                       net=dict(n_layers=2, d=2, rank=2, n_in=8, hidden=6, n_out=3), engine=ENGINE),
    "nearest-d3": dict(seed=1, batch=3, steps=3,
                       net=dict(n_layers=2, d=3, rank=2, n_in=8, hidden=8, n_out=3, rounding="nearest"),
                       engine=ENGINE),
}

_BUILDS: dict = {}


def _build(sim, case):
    why = _available(sim)
    if why:
        pytest.skip(why)
    cfg = case_config(case)[1]
    key = (sim, tuple(sorted(case["engine"].items())), cfg.train.act_bits)
    if key not in _BUILDS:
        _BUILDS[key] = build_train(cfg, sim)
    return _BUILDS[key]


def _assert_equal(run, gaps):
    assert run.error is None, run.error
    records = judge(run)
    assert len(records) == run.case["steps"]
    for k, r in enumerate(records):
        assert r.pop("golden") is None, f"step {k}"
        got, model = r.pop("cycles")
        # the cycle model is exact; pauses in s_axis_tvalid add cycles, never remove any
        assert got == model if not gaps else got >= model, (k, got, model)
        assert all(r.values()), (k, r)
    return records


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("sim", SIMS)
def test_training_steps_equal_the_golden_trainer(sim, name):
    case = CASES[name]
    b = _build(sim, case)
    gaps = 0.3 if name == "stochastic" else 0.0
    run = run_train(b, case, gaps=gaps, seed=3)
    _assert_equal(run, gaps)
    steps = [c["STEPS"] for c in run.counters]
    assert steps == list(range(1, case["steps"] + 1))
    assert all(c["MAC_CYCLES"] > 0 and c["CYCLES"] > 0 for c in run.counters)


@pytest.mark.parametrize("sim", SIMS)
def test_sibling_a_cmem_word_corrupted_over_axi_is_reported(sim):
    case = dict(CASES["stochastic"], steps=1)
    b = _build(sim, case)
    run = run_train(b, case, corrupt={"window": "CMEM", "index": 2, "xor": 1}, dump_final=False)
    assert run.error is None, run.error
    rec = judge(run)[0]
    mismatch = rec["golden"]
    assert mismatch is not None                       # the golden trainer disagrees ...
    assert not (rec["cmem"] and rec["bmem"] and rec["maxacc"])   # ... and so does the interpreter
    # the report names where (a TrainMismatch, not a bare False)
    assert "step" in str(mismatch) or hasattr(mismatch, "phase")


# ------------------------------------------------------------------------------- slow
SLOW = {
    "lanes2-20steps": dict(seed=4, batch=4, steps=20,
                           net=dict(n_layers=2, d=2, rank=2, n_in=10, hidden=8, n_out=4),
                           engine=dict(ENGINE, lanes=2)),
    "lanes8-3layers": dict(seed=5, batch=8, steps=6,
                           net=dict(n_layers=3, d=2, rank=3, n_in=10, hidden=9, n_out=4, w_bits=3,
                                    master_bits=9),
                           engine=dict(ENGINE, lanes=8, max_batch=8)),
    "lanes4-40steps": dict(seed=6, batch=6, steps=40,
                           net=dict(n_layers=2, d=2, rank=2, n_in=8, hidden=6, n_out=3),
                           engine=ENGINE),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SLOW))
@pytest.mark.parametrize("sim", SIMS)
def test_training_longer_runs(sim, name):
    case = SLOW[name]
    gaps = 0.2 if "lanes2" in name else 0.0
    run = run_train(_build(sim, case), case, gaps=gaps, seed=7)
    _assert_equal(run, gaps)


# ------------------------------------------------------------------------- mutations
def _mutation_case():
    """The case of tests/hw/trainer/test_faults.py (it exercises every training fault):
    seed 4, batch 6, two steps, a TT hidden layer with ReLU and bias, table_frac_bits 4,
    the narrowest acc_bits the spec allows for it."""
    from ttforge.ir.random import train_case
    from ttforge.ir.train import widths

    net = dict(n_layers=2, d=2, rank=3, n_in=16, hidden=16, n_out=4, table_frac_bits=4)
    state, *_ = train_case(4, batch=6, **net)
    acc_bits = max(w["bits"] for w in widths(state, 6))
    return dict(seed=4, batch=6, steps=2, net=net,
                engine=dict(lanes=4, acc_bits=acc_bits, act_depth=512, grad_depth=256, core_depth=512,
                            bias_depth=64, desc_depth=48, max_batch=16, max_classes=8))


def _killed(run) -> list[str]:
    """What differs from the golden trainer or the interpreter (empty: the fault survived)."""
    if run.error is not None:
        return [run.error]
    out = []
    for k, r in enumerate(judge(run)):
        if r.pop("golden") is not None:
            out.append(f"step {k}: golden")
        r.pop("cycles")
        out += [f"step {k}: {n}" for n, ok in r.items() if not ok]
    return out


def _mutation(sim, fault):
    why = _available(sim)
    if why:
        pytest.skip(why)
    case = _mutation_case()
    b = build_train(case_config(case)[1], sim, fault=fault)
    return _killed(run_train(b, case, dump_final=False))


@pytest.mark.parametrize("fault", [None, "wrong_transpose"])
def test_a_training_mutation_is_killed_on_icarus(fault):
    """The fault-free control agrees on this case; the wrong transpose is seen."""
    diff = _mutation("icarus", fault)
    assert (diff == []) if fault is None else diff, diff


@pytest.mark.slow
@pytest.mark.parametrize("fault", [None, "wrong_transpose", "drop_word", "update_sign", "acc_width",
                                   "no_mask", "loss_table", "bias_shift_off"])
@pytest.mark.parametrize("sim", SIMS)
def test_every_training_mutation_is_killed(sim, fault):
    diff = _mutation(sim, fault)
    assert (diff == []) if fault is None else diff, diff
