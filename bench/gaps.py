"""Inter-token gaps of streamed responses: the pure arithmetic behind the interference rows.

A stream's gaps are the times between consecutive token arrivals of one response (the wait for a
response's first token is time to first token, not a gap). A disturbance (a beam search, a long
prompt) runs from when it was sent until it was answered; the gaps "during" it are those that overlap
that window, so a stream frozen for the whole search shows up as one gap as long as the search.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Iterable, Sequence

TARGET = 4.0  # issue 20: the longest gap during a disturbance at most 4x the median gap of streams alone


@dataclass(frozen=True)
class Gap:
    start: float  # seconds (perf_counter) of the token before
    end: float  # and of the token after

    @property
    def seconds(self) -> float:
        return self.end - self.start


def gaps(arrivals: Sequence[float]) -> list[Gap]:
    """One response's gaps, from its tokens' arrival times in order."""
    return [Gap(a, b) for a, b in zip(arrivals, arrivals[1:], strict=False)]


def overlapping(found: Iterable[Gap], start: float, end: float) -> list[Gap]:
    """The gaps that overlap the window [start, end]: a gap that spans the whole window counts too."""
    return [gap for gap in found if gap.end > start and gap.start < end]


def inside(found: Iterable[Gap], start: float, end: float) -> list[Gap]:
    """The gaps wholly inside [start, end]: the streams-alone window, untouched by what follows it."""
    return [gap for gap in found if gap.start >= start and gap.end <= end]


@dataclass(frozen=True)
class Stats:
    count: int
    median_ms: float
    p99_ms: float
    longest_ms: float

    def as_dict(self) -> dict:
        return {"count": self.count, "median_ms": self.median_ms, "p99_ms": self.p99_ms, "longest_ms": self.longest_ms}


def stats(found: Sequence[Gap]) -> Stats:
    """Median, 99th percentile and longest gap, in milliseconds; NaN for no gaps at all."""
    if not found:
        nan = float("nan")
        return Stats(0, nan, nan, nan)
    ms = sorted(gap.seconds * 1000 for gap in found)
    p99 = statistics.quantiles(ms, n=100, method="inclusive")[98] if len(ms) > 1 else ms[0]
    return Stats(len(ms), statistics.median(ms), p99, ms[-1])


def row(before: Sequence[Gap], during: Sequence[Gap], disturbance_s: float) -> dict:
    """One interference row: the streams alone, the streams during the disturbance, and the issue's
    ratio: the longest gap during it over the median gap of the streams alone (target <= 4)."""
    alone, busy = stats(before), stats(during)
    ratio = busy.longest_ms / alone.median_ms if alone.count and busy.count else float("nan")
    return {
        "before": alone.as_dict(),
        "during": busy.as_dict(),
        "disturbance_s": disturbance_s,
        "longest_over_median": ratio,
        "meets_target": bool(ratio <= TARGET),
    }
