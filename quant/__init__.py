"""Quantization and the bit-exact integer model (``ttforge.quant``).

The arithmetic, the integer golden executor, the artifact and the stochastic-rounding
generator belong to the torch-free contract, :mod:`ttforge.ir`, and are re-exported here
for convenience. This package holds what needs PyTorch: :mod:`.qat`, the fake-quant
network that equals the integer executor exactly in eval mode; :mod:`.ptq`, calibration
and the path from a trained float model to the contract; :mod:`.stochastic`,
low-precision training with integer weights; :mod:`.diverge`, the float -> fake-quant ->
integer divergence finder; :mod:`.qonnx_export`.
"""

from ttforge.ir import (
    ROUNDING,
    acc_bits_needed,
    exponent_for_max,
    int_range,
    quantize,
    rshift_round,
    saturate,
)
from ttforge.ir import (
    ARTIFACT_FORMAT_VERSION,
    IntLayer,
    IntNetwork,
    StepTrace,
    Xorshift32,
    execute,
    execute_traced,
    load_artifact,
    on_chip_bytes,
    save_artifact,
    stochastic_rshift,
)
from ttforge.quant.qat import (
    COMPILE_OPTIONS,
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
from ttforge.quant.stochastic import LowPrecisionConfig, LowPrecisionResult, train_low_precision
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
    "COMPILE_OPTIONS",
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
    "Xorshift32",
    "stochastic_rshift",
    "LowPrecisionConfig",
    "LowPrecisionResult",
    "train_low_precision",
]
