"""A wall-clock limit for one bench section or cell (main thread, POSIX): compile and GPU work can run for
minutes past what a device call has left."""

from __future__ import annotations

import signal
import time
from contextlib import contextmanager


@contextmanager
def time_limit(
    seconds: float, error: type[Exception] = TimeoutError, message: str = "", repeat_s: float = 5.0
):
    """Raise `error(message)` in the block once `seconds` have passed, and again every `repeat_s` after: code
    that swallows the first one (inductor's compile workers log it and go on: cache-dit's compile once ran
    minutes past its limit; docs/benchmarks.md) meets the next. 0 or no SIGALRM: no limit.

    Limits nest (one alarm clock per process): inside an enclosing limit that ends sooner this one does
    nothing, and when it ends the enclosing one's clock runs on with the time it had left."""
    if not seconds or not hasattr(signal, "SIGALRM"):
        yield
        return
    outer_left, outer_repeat = signal.getitimer(signal.ITIMER_REAL)
    if outer_left and outer_left <= seconds:
        yield
        return

    def expired(signum, frame):
        raise error(message or f"stopped after {seconds:g} s (time limit)")

    previous = signal.signal(signal.SIGALRM, expired)
    t0 = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, seconds, repeat_s)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer_left:  # at least a moment: 0 would switch the enclosing limit off
            signal.setitimer(
                signal.ITIMER_REAL, max(outer_left - (time.monotonic() - t0), 1e-3), outer_repeat
            )
