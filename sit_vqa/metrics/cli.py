"""What the scorers' command lines share: a reader that stops early (`... | head`) is not a crash."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable


def exit_status(main: Callable[[], int]) -> int:
    """main()'s exit status; 2 and a one-line error when stdout's reader closed the pipe before the end."""
    try:
        status = main()
        sys.stdout.flush()  # the buffered rest is written here, where a closed pipe can still be caught
    except BrokenPipeError:
        # Python's docs on SIGPIPE: point stdout at devnull, or the flush at exit fails again with a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print("error: stdout was closed before the report was all written (e.g. by `| head`); --out FILE "
              "writes the whole report", file=sys.stderr)
        return 2
    return status
