"""The contract between software and hardware (``ttforge.ir``); no PyTorch anywhere in it.

Everything that crosses from the model into hardware land is defined here, once:
TT shapes (:class:`TTShape`), contraction schedules and their cost model
(:class:`ContractionSchedule`), the arithmetic of ``docs/arithmetic.md``
(:mod:`.arith`), the integer network and its golden executor (:class:`IntNetwork`,
:func:`execute`, :func:`execute_traced`), the artifact file (:func:`save_artifact`,
:func:`load_artifact`, ``docs/artifact.md``), the on-chip byte accounting
(:func:`on_chip_bytes`), the stochastic-rounding generator (:class:`Xorshift32`,
:func:`stochastic_rshift`) and the divergence search over integer traces
(:func:`compare_traces`), and the all-integer training step with its state file
(:func:`train_step`, :func:`save_state`; ``docs/arithmetic.md``, "Training").
``ttforge.model`` and ``ttforge.quant`` build on it with
PyTorch; ``ttforge.hw``, ``ttforge.sim`` and ``ttforge.firmware`` import only this.
"""

from ttforge.ir.arith import (
    ARITHMETIC_SPEC_VERSION,
    ROUNDING,
    acc_bits_needed,
    exponent_for_max,
    int_range,
    quantize,
    rshift_round,
    saturate,
)
from ttforge.ir.artifact import (
    ARTIFACT_FORMAT_VERSION,
    absolute_data_spec,
    arrays_digest,
    dumps_artifact,
    load_artifact,
    loads_artifact,
    save_artifact,
    source_name,
)
from ttforge.ir.diverge import DivergenceReport, Mismatch, compare_traces, first_diff
from ttforge.ir.executor import (
    IntLayer,
    IntNetwork,
    StepTrace,
    check_input,
    execute,
    execute_traced,
    layer_from_dense,
)
from ttforge.ir.onchip import on_chip_bytes
from ttforge.ir.rng import Xorshift32, derive_sr_seed, integer_update, stochastic_rshift
from ttforge.ir.schedule import ContractionSchedule, ContractionStep, ScheduleCost, schedule_orders
from ttforge.ir.tt import TTShape, factorize, max_ranks, resolve_ranks
from ttforge.ir.train import (TrainConfig, TrainState, calibrate_state, export_network, init_state,
                              state_from_network, train_step, train_step_fast, train_step_traced)
from ttforge.ir.train_state import load_state, save_state

__all__ = [
    "TTShape", "factorize", "max_ranks", "resolve_ranks",
    "ContractionSchedule", "ContractionStep", "ScheduleCost", "schedule_orders",
    "ARITHMETIC_SPEC_VERSION", "ROUNDING", "acc_bits_needed", "exponent_for_max", "int_range",
    "quantize", "rshift_round", "saturate",
    "IntLayer", "IntNetwork", "StepTrace", "check_input", "execute", "execute_traced",
    "layer_from_dense",
    "ARTIFACT_FORMAT_VERSION", "save_artifact", "load_artifact", "dumps_artifact", "loads_artifact",
    "on_chip_bytes", "absolute_data_spec", "arrays_digest", "source_name",
    "Xorshift32", "stochastic_rshift", "derive_sr_seed", "integer_update",
    "DivergenceReport", "Mismatch", "compare_traces", "first_diff",
    "TrainConfig", "TrainState", "init_state", "state_from_network", "calibrate_state", "export_network",
    "train_step", "train_step_fast", "train_step_traced", "save_state", "load_state",
]
