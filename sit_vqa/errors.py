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


class PeerLostError(SitVqaError, RuntimeError):
    """A process of the same distributed run (another node's, or this node's) stopped or stopped answering, so
    this one stopped too; the message names the last intact checkpoint to --resume from."""


class EvaluationError(SitVqaError, ValueError):
    """An evaluation that cannot run, or runs that cannot be compared; the message says what to fix."""


class InputError(SitVqaError, ValueError):
    """An input given at run time that cannot be used: an image, a question, a generation setting (the demo
    reports these per request and keeps serving)."""


def unknown_options_message(unknown: list[str], known: list[str], help_command: str, lists: str = "") -> str:
    """The one-line complaint about command-line options no parser took, with the known ones (field names)
    closest to each, spelt as the user spelt theirs ('--check-image' -> '--check-images'):
    'unknown option --learning_rat (did you mean: --learning_rate?)'; then where to look: `lists`, else
    '<help_command> --help lists them all'."""
    import difflib  # the error path only

    flags = [item for item in unknown if item.startswith("-")] or unknown
    named = []
    for flag in flags:
        typed = flag.split("=")[0].lstrip("-")
        close = difflib.get_close_matches(typed.replace("-", "_"), known, n=3)
        if "-" in typed:
            close = [name.replace("_", "-") for name in close]
        named.append(f"{flag} (did you mean: {', '.join('--' + name for name in close)}?)" if close else flag)
    lists = lists or f"{help_command} --help lists them all"
    return f"unknown option{'s' if len(flags) > 1 else ''} {', '.join(named)}; {lists}"
