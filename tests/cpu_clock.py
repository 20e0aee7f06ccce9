"""CPU seconds of a block of code, for the tests that bound how an input's size drives the work (a regex that
backtracks, a loop that rescans the text): this process's own CPU time (time.process_time), with the garbage
collector paused, so neither other processes' load on a shared machine nor a collection of the suite's heap counts
(wall-clock bounds failed at 1.25 s for a block that takes 0.1 s alone). A blow-up the bound is there for (quadratic
in 20,000 nested roots) still takes minutes of CPU."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class CpuClock:
    """The CPU time a `with cpu_clock() as clock:` block took: clock.seconds (so far, inside the block)."""

    start: float
    end: float | None = None

    @property
    def seconds(self) -> float:
        return (time.process_time() if self.end is None else self.end) - self.start


@contextmanager
def cpu_clock() -> Iterator[CpuClock]:
    """Time the block in this process's CPU seconds, the garbage collector paused meanwhile (as it was after)."""
    was_on = gc.isenabled()
    gc.disable()
    clock = CpuClock(time.process_time())
    try:
        yield clock
    finally:
        clock.end = time.process_time()
        if was_on:
            gc.enable()
