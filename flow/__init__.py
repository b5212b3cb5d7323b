"""``ttforge flow``: from data to a verified bitstream in one command (``ttforge.flow``).

* :mod:`~ttforge.flow.config`: flow configs (TOML) as frozen, validated dataclasses; the
  embedded default (``examples/digits-icebreaker.toml``).
* :mod:`~ttforge.flow.stages`: the stages (train, quantize, compile, rtl, sim,
  bitstream, report), their fingerprints and the skipping of unchanged stages.
* :mod:`~ttforge.flow.report`: the self-contained HTML report and its Markdown twin.
* :mod:`~ttforge.flow.sweep`: ``ttforge sweep``, the flow over a grid of ranks, widths, lanes
  and boards as Dask tasks, with a results table, a Pareto plot and the best config per board.
* :mod:`~ttforge.flow.cli`: the ``ttforge flow`` and ``ttforge sweep`` commands.
"""

from ttforge.flow.config import (BOARDS, DEFAULT_CONFIG, SIMULATORS, FlowConfig, default_config,
                                 load_config)
from ttforge.flow.stages import STAGES, FlowError, FlowResult, StageResult, run_flow

__all__ = ["FlowConfig", "load_config", "default_config", "DEFAULT_CONFIG", "SIMULATORS", "BOARDS",
           "STAGES", "FlowError", "FlowResult", "StageResult", "run_flow"]
