"""The one bounded wait of the tests: poll a condition until a deadline.

A test never sleeps to synchronise: it waits for the condition it needs,
with a timeout that names what did not happen.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float, what: str, period: float = 0.01) -> T:
    """Poll ``predicate`` until it returns a true value, and return that value;
    raise ``TimeoutError`` naming ``what`` after ``timeout`` seconds.

    ``period`` is the pause between polls, a poll rate: the predicate alone
    decides.  ``period=0`` polls without sleeping, yielding the CPU between
    polls, for a wait on another process's store to shared memory where a
    sleep would add its own latency to what the test measures."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        if period > 0:
            time.sleep(period)
        else:
            os.sched_yield()  # let a process sharing this core run
