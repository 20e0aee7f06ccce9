"""Side-by-side timing shared by the benchmarks: sides run interleaved round by round, ratios taken per round.

Not a benchmark itself: benchmarks/score_speed.py and benchmarks/scale.py import it (a script's own folder is on
sys.path when it runs as ``python benchmarks/NAME.py``).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def interleaved(sides: dict[str, Callable[[], T]], repeats: int,
                done: Callable[[str, int, T], None] | None = None) -> dict[str, list[T]]:
    """Run every side once per round, in the given order, for `repeats` rounds (a, b, a, b, ...), so that load on a
    shared machine falls on every side alike rather than on whichever ran in a busy spell. in: {side: a call
    returning its measurement}, the rounds, and `done(side, round, measurement)` called after each run (printing);
    out: {side: its measurements in round order}. Raises SystemExit for fewer than one round."""
    if repeats < 1:
        raise SystemExit(f"--repeats {repeats}: give 1 or more rounds")
    out: dict[str, list[T]] = {name: [] for name in sides}
    for i in range(repeats):
        for name, run in sides.items():
            out[name].append(run())
            if done is not None:
                done(name, i, out[name][-1])
    return out


def median_ratio(num: list[float], den: list[float]) -> float:
    """The median over the rounds of num[i] / den[i] (paired: both sides of one round ran under the same load)."""
    return statistics.median(a / b for a, b in zip(num, den, strict=True))


def seconds_text(values: list[float]) -> str:
    """Seconds per round, '1.4 / 1.3 / 1.5'."""
    return " / ".join(f"{v:.1f}" for v in values)
