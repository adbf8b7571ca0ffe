"""What the scorers' command lines share: arguments checked before any scoring (`--out`, `--precision`), and
neither a reader that stops early (`... | head`) nor a failed write of `--out` is a crash."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from sit_vqa.errors import SitVqaError

MAX_PRECISION = 15  # a float64 holds about 15 significant decimals


def output_file(value: str) -> str:
    """argparse type of --out: a file to write (refused before scoring when it names a directory)."""
    if not value.strip():
        raise argparse.ArgumentTypeError("is empty; name a file, e.g. --out report.json")
    if Path(value).is_dir():
        raise argparse.ArgumentTypeError(f"{value} is a directory; name a file in it, e.g. --out "
                                         f"{Path(value) / 'report.json'}")
    return value


def precision(value: str) -> int:
    """argparse type of --precision: decimals, 0 to MAX_PRECISION."""
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or not 0 <= number <= MAX_PRECISION:
        raise argparse.ArgumentTypeError(f"must be a whole number of decimals from 0 to {MAX_PRECISION}, got {value}")
    return number


def exit_status(main: Callable[[], int]) -> int:
    """main()'s exit status; 2 and a one-line error when stdout's reader closed the pipe before the end, or
    writing the report failed (a WriteError names the path and the cause)."""
    try:
        status = main()
        sys.stdout.flush()  # the buffered rest is written here, where a closed pipe can still be caught
    except SitVqaError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # Python's docs on SIGPIPE: point stdout at devnull, or the flush at exit fails again with a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print("error: stdout was closed before the report was all written (e.g. by `| head`); --out FILE "
              "writes the whole report", file=sys.stderr)
        return 2
    return status
