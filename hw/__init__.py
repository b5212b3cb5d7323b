"""The TT-contraction accelerator (``ttforge.hw``).

``docs/hardware.md`` specifies the engine, its descriptor program and its register map.
This package holds the generator parameters (:class:`AccelConfig`), the register map
(:class:`RegisterMap`, emitted as JSON, a C header and Markdown), the compiler from an
integer network to a descriptor program and memory images (:func:`compile_program`,
:func:`load_image`), an element-level model of the engine (:func:`run_program`), the
analytic cycle model (:func:`estimate`), and the Amaranth RTL. Nothing here imports
PyTorch.
"""

from ttforge.hw.config import AccelConfig
from ttforge.hw.cycles import ENGINE_TIMING, EngineTiming, estimate
from ttforge.hw.model import EngineError, run_program, run_program_traced
from ttforge.hw.program import Program, compile_program, load_image
from ttforge.hw.regmap import ErrorCode, RegisterMap
from ttforge.hw.synth import SynthReport, parse_report

__all__ = [
    "AccelConfig", "RegisterMap", "ErrorCode",
    "Program", "compile_program", "load_image",
    "run_program", "run_program_traced", "EngineError",
    "estimate", "EngineTiming", "ENGINE_TIMING",
    "parse_report", "SynthReport",
]
