"""Half-open time intervals ``[start, end)`` and their arithmetic. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, order=True)
class Interval:
    start: datetime
    end: datetime

    def overlaps(self, other: Interval) -> bool:
        return self.start < other.end and other.start < self.end

    def within(self, other: Interval) -> bool:
        return other.start <= self.start and self.end <= other.end


def subtract(base: list[Interval], removed: list[Interval]) -> list[Interval]:
    """``base`` minus every interval of ``removed``; both may be unsorted and overlapping."""
    out: list[Interval] = []
    cuts = sorted(removed)
    for piece in sorted(base):
        start = piece.start
        for cut in cuts:
            if cut.end <= start or cut.start >= piece.end:
                continue
            if cut.start > start:
                out.append(Interval(start, cut.start))
            start = max(start, cut.end)
            if start >= piece.end:
                break
        if start < piece.end:
            out.append(Interval(start, piece.end))
    return out
