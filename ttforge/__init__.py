"""ttforge: tensor-train networks, bit-exact from PyTorch to small-FPGA hardware."""

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


def __getattr__(name: str):
    # the error classes on first use: importing the package stays instant, so that the
    # console script (ttforge._entry) reports an interrupt during its imports itself
    if name in __all__ and name != "__version__":
        from ttforge import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'ttforge' has no attribute {name!r}")
