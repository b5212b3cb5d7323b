"""Quantization and the bit-exact integer model (``ttforge.quant``).

The arithmetic, the integer golden executor, the artifact and the stochastic-rounding
generator belong to the torch-free contract, :mod:`ttforge.ir`, and are re-exported here
for convenience. This package holds what needs PyTorch: :mod:`.qat`, the fake-quant
network that equals the integer executor exactly in eval mode; :mod:`.ptq`, calibration
and the path from a trained float model to the contract; :mod:`.stochastic`,
low-precision training with integer weights; :mod:`.diverge`, the float -> fake-quant ->
integer divergence finder; :mod:`.qonnx_export`.

The names below are imported on first use (:func:`ttforge._lazy.lazy_attributes`):
importing the package imports no PyTorch, so the quantization commands' options
(:mod:`ttforge.quant.cli`) are declared, and shown by ``--help``, without it.
"""

from ttforge._lazy import lazy_attributes

# name -> the module that defines it
_EXPORTS = {
    **dict.fromkeys(["ROUNDING", "acc_bits_needed", "exponent_for_max", "int_range", "quantize", "rshift_round",
                     "saturate", "IntLayer", "IntNetwork", "StepTrace", "execute", "execute_traced",
                     "ARTIFACT_FORMAT_VERSION", "save_artifact", "load_artifact", "on_chip_bytes",
                     "Xorshift32", "stochastic_rshift"], "ttforge.ir"),
    **dict.fromkeys(["COMPILE_OPTIONS", "LayerQuant", "QuantConfig", "QuantLinear", "QuantNetwork", "calibrate",
                     "compile_network", "fake_quant", "quantize_model"], "ttforge.quant.qat"),
    **dict.fromkeys(["quantize_trained", "evaluate_quantized", "NotBitExactError"], "ttforge.quant.ptq"),
    **dict.fromkeys(["find_divergence", "DivergenceReport"], "ttforge.quant.diverge"),
    **dict.fromkeys(["build_qonnx", "export_qonnx", "check_qonnx", "float32_bounds"], "ttforge.quant.qonnx_export"),
    **dict.fromkeys(["LowPrecisionConfig", "LowPrecisionResult", "train_low_precision"],
                    "ttforge.quant.stochastic"),
}

__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)
