"""ttforge: tensor-train networks, bit-exact from PyTorch to small-FPGA hardware."""

from ttforge.errors import (
    ArtifactError,
    CheckpointError,
    ConfigError,
    DataError,
    OutputError,
    ShapeError,
    TTForgeError,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "TTForgeError",
    "ConfigError",
    "ShapeError",
    "DataError",
    "CheckpointError",
    "ArtifactError",
    "OutputError",
]
