"""The TT-contraction accelerator (``ttforge.hw``).

``docs/hardware.md`` specifies the engine, its descriptor program and its register map.
This package holds the generator parameters (:class:`AccelConfig`), the register map
(:class:`RegisterMap`, emitted as JSON, a C header and Markdown), the compiler from an
integer network to a descriptor program and memory images, an element-level model of the
engine, the analytic cycle model, and the Amaranth RTL. Nothing here imports PyTorch.
"""

from ttforge.hw.config import AccelConfig
from ttforge.hw.regmap import ErrorCode, RegisterMap

__all__ = ["AccelConfig", "RegisterMap", "ErrorCode"]
