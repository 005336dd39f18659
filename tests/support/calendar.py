"""Hard dates: the days on which date and time code breaks, for tests that run on a fixed clock.

Each is a day in a hospital time zone that has daylight-saving time (Europe/Berlin), so that the
local day and the UTC day differ by one or two hours and two of the days are 23 and 25 hours
long. A test puts what it tests on the day (``at``) and sets its clock (``his.kernel.clock``)
relative to it; ``pytest.mark.parametrize("hard", HARD_DATES, ids=str)`` runs it on each.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from his.kernel.clock import FakeClock

ZONE = "Europe/Berlin"


@dataclass(frozen=True)
class HardDate:
    name: str
    day: date
    zone: str = ZONE

    def __str__(self) -> str:
        return self.name

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.zone)

    def at(self, hour: int = 0, minute: int = 0, *, days: int = 0, second: int = 0) -> datetime:
        """Wall-clock time ``hour:minute`` on the day (``days`` later or earlier), in the zone,
        as an aware datetime in UTC (the form the services store and compare)."""
        local = datetime.combine(self.day + timedelta(days=days), time(hour, minute, second), tzinfo=self.tz)
        return local.astimezone(UTC)

    def midnight(self, *, days: int = 0) -> datetime:
        """Where the day (``days`` later or earlier) begins, in UTC."""
        return self.at(days=days)

    def clock(self, hour: int = 0, minute: int = 0, *, days: int = 0, second: int = 0) -> FakeClock:
        """A clock standing at ``at(hour, minute, days=days)``."""
        return FakeClock(self.at(hour, minute, days=days, second=second))


HARD_DATES = (
    # The first day of a year: its eve is the last day of the old one, and at local midnight
    # UTC is still in the old year.
    HardDate("new-year", date(2028, 1, 1)),
    # 28 February of a leap year: tomorrow is 29 February, not 1 March.
    HardDate("feb-28-leap", date(2028, 2, 28)),
    # 29 February: a year later it does not exist.
    HardDate("feb-29", date(2028, 2, 29)),
    # Clocks go forward at 02:00 (to 03:00): a 23-hour day.
    HardDate("dst-spring", date(2027, 3, 28)),
    # Clocks go back at 03:00 (to 02:00): a 25-hour day.
    HardDate("dst-autumn", date(2027, 10, 31)),
    # Wednesday 29 September: the longest English weekday and month names, with a two-digit day.
    HardDate("longest-names", date(2027, 9, 29)),
)


def day_length(hard: HardDate) -> timedelta:
    """How long the day is on the clock (23, 24 or 25 hours)."""
    return hard.midnight(days=1) - hard.midnight()
