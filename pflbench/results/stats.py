"""Statistics over seeds (scipy.stats): means with 95% t intervals, and paired differences.

A difference between two methods is **resolved** when the 95% interval of its per-seed paired
differences excludes 0 (DESIGN.md, "Definitions"). One seed gives a mean and no interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats

LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """Mean and 95% t interval over ``n`` values (``low``/``high`` are NaN when n < 2)."""

    n: int
    mean: float
    low: float
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    @property
    def resolved(self) -> bool:
        """The interval excludes 0 (never with fewer than two values)."""
        return self.n >= 2 and (self.low > 0 or self.high < 0)


def estimate(values: list[float]) -> Estimate:
    n = len(values)
    if n == 0:
        return Estimate(0, math.nan, math.nan, math.nan)
    mean = sum(values) / n
    if n < 2:
        return Estimate(n, mean, math.nan, math.nan)
    sem = stats.sem(values)
    if sem == 0:  # identical values: the interval is the point
        return Estimate(n, mean, mean, mean)
    low, high = stats.t.interval(LEVEL, n - 1, loc=mean, scale=sem)
    return Estimate(n, mean, float(low), float(high))


@dataclass(frozen=True)
class Paired:
    """Per-seed differences a - b over the seeds both have."""

    seeds: list[int]
    diff: Estimate
    up: int  # seeds where a > b
    down: int  # seeds where a < b


def paired(a: dict[int, float], b: dict[int, float]) -> Paired:
    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds]
    return Paired(seeds, estimate(diffs), sum(d > 0 for d in diffs), sum(d < 0 for d in diffs))


def jain(values: list[float]) -> float | None:
    """Jain's fairness index, (sum x)^2 / (n sum x^2): 1 when every value is equal, 1/n when
    one holds everything (Jain, Chiu and Hawe, DEC-TR-301, 1984). None for none or all zero."""
    square = sum(v * v for v in values)
    return (sum(values) ** 2) / (len(values) * square) if values and square > 0 else None


def participation_fairness(record: dict) -> dict[str, float | None]:
    """From a record's rounds: Jain's index over every client of the rounds each was scheduled
    (``jain_scheduled``) and of its updates that arrived (``jain_delivered``)."""
    n = record["spec"]["clients"]
    scheduled, delivered = [0] * n, [0] * n
    for r in record["rounds"]:
        for c in r["sampled"]:
            scheduled[c] += 1
        for c in r["delivered"]:
            if 0 <= c < n:  # over-the-air aggregation delivers per client too
                delivered[c] += 1
    return {"jain_scheduled": jain(scheduled), "jain_delivered": jain(delivered)}
