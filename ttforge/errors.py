"""Errors a user can cause.

Every :class:`TTForgeError` carries one line that names the field at fault and the
fix. The CLI prints it and exits with status 2; anything else is a bug and keeps its
traceback.
"""

__all__ = ["TTForgeError", "ConfigError", "ShapeError", "DataError", "CheckpointError", "ArtifactError", "OutputError"]


class TTForgeError(ValueError):
    """A problem with the user's input, reported as one line."""


class ConfigError(TTForgeError):
    """An invalid configuration value."""


class ShapeError(TTForgeError):
    """Sizes, modes or ranks that do not fit together."""


class DataError(TTForgeError):
    """A data file that cannot be read (wrong magic number, short data, ...)."""


class CheckpointError(TTForgeError):
    """A checkpoint that is corrupt, truncated or of an unknown version."""


class ArtifactError(TTForgeError):
    """A compiled artifact that is corrupt, truncated, inconsistent or of an unknown version."""


class OutputError(ConfigError):
    """An output path that cannot be written (a directory, under a file, no permission)."""
