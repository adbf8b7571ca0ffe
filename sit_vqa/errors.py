"""The error types for problems a user can fix. Every command line prints their message and exits 2.

Every error raised for bad input names the file (or config key), the record and the fix, so a command
line can print the message instead of a traceback.
"""

from __future__ import annotations


class SitVqaError(Exception):
    """Base of the errors a user can act on; the message is the whole story."""


class DataError(SitVqaError, ValueError):
    """An input file (or directory) is missing, malformed or inconsistent with another input."""


class ConfigError(SitVqaError, ValueError):
    """A configuration value is invalid."""


class ModelLoadError(SitVqaError, RuntimeError):
    """A model or processor could not be loaded; the message says how to point at a local copy."""


class CheckpointError(SitVqaError, ValueError):
    """A checkpoint directory or trainable-weights file is incomplete, unreadable or does not fit the model."""


class WriteError(SitVqaError, OSError):
    """An output could not be written (no space left, read-only, no permission); nothing partial is left."""


class EvaluationError(SitVqaError, ValueError):
    """An evaluation that cannot run, or runs that cannot be compared; the message says what to fix."""


class InputError(SitVqaError, ValueError):
    """An input given at run time that cannot be used: an image, a question, a generation setting (the demo
    reports these per request and keeps serving)."""
