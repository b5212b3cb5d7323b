"""ttforge.sim: cocotb regression of the generated accelerator on Icarus and Verilator.

* :mod:`ttforge.sim.runner` — :func:`build` (the Verilog of ``TTAccel`` compiled for a
  simulator, cached by a hash of the text), :func:`run_inference` (load a program over
  AXI4-Lite, stream vectors with gaps and back-pressure, read the counters) and
  :func:`run_job` (any sequence of testbench operations).
* :mod:`ttforge.sim.tb` — the cocotb testbench (``cocotbext-axi`` bus models); loaded
  by the simulator, not imported here.
* :mod:`ttforge.sim.regress` — :func:`regress`, many random cases, in this process or as Dask tasks; its parts:
  :mod:`~ttforge.sim.cases` (seed -> case), :mod:`~ttforge.sim.check` (run and check one),
  :mod:`~ttforge.sim.reproducer`, :mod:`~ttforge.sim.report` (JUnit XML, table) and
  :mod:`~ttforge.sim.cli` (``ttforge regress``).
* :mod:`ttforge.sim.cluster` — where a parallel run's tasks go: a local Dask cluster or the
  user's (``ttforge regress --jobs/--cluster``, ``ttforge sweep``); imported only then.
* :mod:`ttforge.sim.native` — a native Verilator C++ harness for bulk runs (and the C ABI
  a bare-metal driver links against): :func:`build_native`, :func:`run_native`.
* :mod:`ttforge.sim.formal` — SymbiYosys checks of the AXI4-Stream and AXI4-Lite rules:
  :func:`formal_check`.

See ``docs/verification.md``.
"""

from ttforge.sim.runner import (SIMULATORS, JobResult, SimBuild, SimError, SimResult,
                                SimulatorMissing, available_simulators, build, run_inference,
                                run_job, simulator_problem)
from ttforge.sim.native import (NativeBuild, NativeError, NativeResult, build_native, check_native_tools,
                                link_c_driver, run_native)
from ttforge.sim.formal import FormalResult, FormalToolMissing
from ttforge.sim.formal import check as formal_check

__all__ = ["SIMULATORS", "SimBuild", "SimResult", "JobResult", "SimError", "SimulatorMissing",
           "available_simulators", "simulator_problem", "build", "run_inference", "run_job",
           "NativeBuild", "NativeResult", "NativeError", "build_native", "check_native_tools", "run_native",
           "link_c_driver",
           "FormalResult", "FormalToolMissing", "formal_check"]
