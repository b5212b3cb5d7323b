"""Quantization and the bit-exact integer model (``ttforge.quant``).

The arithmetic is specified in ``docs/arithmetic.md``; :mod:`.arith` implements its
primitives, :mod:`.executor` the integer golden executor, :mod:`.qat` the fake-quant
network that equals it exactly in eval mode, :mod:`.stochastic` the stochastic-rounding
generator and low-precision training with integer weights.
"""

from ttforge.quant.arith import (
    ROUNDING,
    acc_bits_needed,
    exponent_for_max,
    int_range,
    quantize,
    rshift_round,
    saturate,
)
from ttforge.quant.artifact import (
    ARTIFACT_FORMAT_VERSION,
    load_artifact,
    on_chip_bytes,
    save_artifact,
)
from ttforge.quant.executor import IntLayer, IntNetwork, StepTrace, execute, execute_traced
from ttforge.quant.qat import (
    LayerQuant,
    QuantConfig,
    QuantLinear,
    QuantNetwork,
    calibrate,
    compile_network,
    fake_quant,
    quantize_model,
)
from ttforge.quant.ptq import NotBitExactError, evaluate_quantized, quantize_trained
from ttforge.quant.diverge import DivergenceReport, find_divergence
from ttforge.quant.stochastic import (
    LowPrecisionConfig,
    LowPrecisionResult,
    Xorshift32,
    stochastic_rshift,
    train_low_precision,
)
from ttforge.quant.qonnx_export import build_qonnx, check_qonnx, export_qonnx, float32_bounds

__all__ = [
    "ROUNDING",
    "acc_bits_needed",
    "exponent_for_max",
    "int_range",
    "quantize",
    "rshift_round",
    "saturate",
    "IntLayer",
    "IntNetwork",
    "StepTrace",
    "execute",
    "execute_traced",
    "LayerQuant",
    "QuantConfig",
    "QuantLinear",
    "QuantNetwork",
    "calibrate",
    "compile_network",
    "fake_quant",
    "quantize_model",
    "ARTIFACT_FORMAT_VERSION",
    "save_artifact",
    "load_artifact",
    "on_chip_bytes",
    "quantize_trained",
    "evaluate_quantized",
    "NotBitExactError",
    "find_divergence",
    "DivergenceReport",
    "build_qonnx",
    "export_qonnx",
    "check_qonnx",
    "float32_bounds",
]
