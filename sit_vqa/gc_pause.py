"""`gc_paused()`: reading VQAv2-sized JSON makes millions of small containers, none in a cycle; each run
of the cyclic garbage collector walks them all (it doubled the annotations read of the joiner and cost
0.3-0.5 s of the 2.5 s the scorer takes on VQAv2 val). Light on imports so the scorer CLI stays fast."""

from __future__ import annotations

import contextlib
import gc


@contextlib.contextmanager
def gc_paused():
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
