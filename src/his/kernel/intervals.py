"""Half-open time intervals ``[start, end)`` and their arithmetic. Pure.

Aware times are kept in UTC. Python adds and compares two datetimes of the same time zone by
their wall-clock readings: in a zone with daylight-saving time, 01:40 + 20 minutes on the night
the clocks go forward is a 02:00 that does not exist, and the 02:30 before the clocks go back
equals the 02:30 after. In UTC every reading is an instant, so the arithmetic holds on any day.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True, order=True)
class Interval:
    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            moment: datetime = getattr(self, name)
            if moment.tzinfo is not None and moment.tzinfo is not UTC:
                object.__setattr__(self, name, moment.astimezone(UTC))

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
