"""ttforge.sim: cocotb regression of the generated accelerator on Icarus and Verilator.

* :mod:`ttforge.sim.runner` — :func:`build` (the Verilog of ``TTAccel`` compiled for a
  simulator, cached by a hash of the text), :func:`run_inference` (load a program over
  AXI4-Lite, stream vectors with gaps and back-pressure, read the counters) and
  :func:`run_job` (any sequence of testbench operations).
* :mod:`ttforge.sim.tb` — the cocotb testbench (``cocotbext-axi`` bus models); loaded
  by the simulator, not imported here.
* :mod:`ttforge.sim.regress` — random configurations, parallel runs, JUnit XML,
  reproducers and the ``ttforge regress`` command.

See ``docs/verification.md``.
"""

from ttforge.sim.runner import (SIMULATORS, JobResult, SimBuild, SimError, SimResult,
                                SimulatorMissing, available_simulators, build, run_inference,
                                run_job)

__all__ = ["SIMULATORS", "SimBuild", "SimResult", "JobResult", "SimError", "SimulatorMissing",
           "available_simulators", "build", "run_inference", "run_job"]
