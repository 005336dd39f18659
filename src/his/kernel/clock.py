"""What time it is, as a port: the system clock, and a fake one that tests set to any moment.

Code that decides something by the date or the time ("is this slot still ahead?", "which night is
charged?", "is this reminder due?") asks a clock it was given, never ``datetime.now`` itself,
and passes the moment to SQL as a parameter rather than using the server's ``now()``: then a
test can run it on any day (a new year's eve, 29 February, a daylight-saving change) and the
database's clock cannot disagree with the service's. A service's clock travels with its
``Database`` (``Database.clock``, ``UnitOfWork.clock``), which every handler is given already.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

#: A clock: returns the current moment as an aware datetime.
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The system clock, in UTC."""
    return datetime.now(UTC)


@dataclass
class FakeClock:
    """A clock that shows ``now`` until it is moved (tests)."""

    now: datetime

    def __post_init__(self) -> None:
        if self.now.tzinfo is None:
            raise ValueError("a clock shows aware datetimes: give the moment a time zone")

    def __call__(self) -> datetime:
        return self.now

    def advance(self, by: timedelta) -> datetime:
        """Move the clock on by ``by`` (elapsed time, whatever the wall clock does meanwhile)."""
        self.now = (self.now.astimezone(UTC) + by).astimezone(self.now.tzinfo)
        return self.now
