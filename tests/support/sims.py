"""The simulators of the cocotb tests and whether each can run here."""

from __future__ import annotations

SIMS = ["icarus", "verilator"]


def _available(sim: str) -> str | None:
    """Why ``sim`` cannot run here, or None."""
    from ttforge.sim.runner import available_simulators

    return available_simulators()[sim]


def icarus_lines(tmp_path, files: dict[str, str]) -> list[str]:
    """Write ``files`` (name -> text; ``tb.v`` the top) into ``tmp_path``, compile every
    ``.v`` file with Icarus and run it: the lines it prints (skips without Icarus)."""
    import shutil
    import subprocess

    import pytest

    if shutil.which("iverilog") is None:
        pytest.skip("Icarus Verilog is not installed (apt-get install iverilog)")
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    sources = sorted(n for n in files if n.endswith(".v"))
    subprocess.run(["iverilog", "-g2012", "-o", "sim.vvp", *sources], cwd=tmp_path, check=True,
                   capture_output=True)
    return subprocess.run(["vvp", "-n", "sim.vvp"], cwd=tmp_path, check=True, capture_output=True,
                          text=True).stdout.splitlines()


def family_build(monkeypatch, tmp_path, config, text: str):
    """A ``SimBuild`` in Icarus of ``text``: a family form of ``TTAccel(config)`` with its
    primitives' models appended (one Verilog file: the runner's cache key is a hash of
    the text)."""
    import pytest

    import ttforge.sim.runner as runner

    reason = _available("icarus")
    if reason:
        pytest.skip(reason)
    monkeypatch.setattr(runner, "_emit", lambda cfg, fault, root=None: text)
    return runner.build(config, "icarus", build_root=tmp_path / "build")


def assert_exact_run(build, case) -> None:
    """``case`` = ``(net, cfg, prog, X, golden)`` through ``build`` with random stream pauses
    and back-pressure: outputs ``np.array_equal`` to ``golden``, the counters exactly the
    cycle model's; with the siblings (a flipped golden bit, a model one cycle per vector
    off) that must differ."""
    import numpy as np

    import ttforge.sim.runner as runner
    from ttforge.hw.cycles import program_cycles

    net, cfg, prog, X, golden = case
    r = runner.run_inference(build, prog, X, seed=2, gaps=0.3, backpressure=0.3, expected=golden)
    assert not r.timeout and r.load_errors == 0
    assert np.array_equal(r.outputs, golden)
    assert r.job.passed
    c, B = r.counters, len(X)
    model = program_cycles(prog.descriptors, cfg, prog.globals)
    assert c["VECTORS"] == B and c["BUSY_LANE_CYCLES"] == model.busy_lane_cycles * B
    assert c["IN_STALL"] > 0 and c["OUT_STALL"] > 0
    assert c["CYCLES"] == model.total * B + c["IN_STALL"] + c["OUT_STALL"]
    bad = golden.copy()
    bad.flat[0] ^= 1
    assert not np.array_equal(r.outputs, bad)
    assert c["CYCLES"] != (model.total + 1) * B + c["IN_STALL"] + c["OUT_STALL"]
