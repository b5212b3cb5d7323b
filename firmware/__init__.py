"""ttforge.firmware — the accelerator on boards (``docs/boards.md``).

* :mod:`~ttforge.firmware.uart`: UART and the UART-to-AXI4-Lite/AXI4-Stream bridge (RTL);
* :mod:`~ttforge.firmware.protocol`: the bridge protocol, sans I/O;
* :mod:`~ttforge.firmware.board`: board tops for the ULX3S and the iCEBreaker;
* :mod:`~ttforge.firmware.build`: ``ttforge build`` (bitstreams with the pip toolchain);
* :mod:`~ttforge.firmware.host`: the host driver (``Device``) and its serial transport;
* :mod:`~ttforge.firmware.simulate`: the simulated board as a transport (Icarus + cocotb);
* :mod:`~ttforge.firmware.cli`: ``ttforge build``, ``program`` and ``run``;
* :mod:`~ttforge.firmware.infer_c`, :mod:`~ttforge.firmware.train_c`: the C integer
  executor and training step (``firmware/c/``), equal to the golden ones: the CPU baselines.
"""

__all__: list[str] = []
