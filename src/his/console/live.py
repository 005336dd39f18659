"""What the console hears of the bus, for the pages that follow it live.

The console subscribes (core NATS, no consumer of its own) to the appointments' events
(``his.kernel.bus.CONSOLE_HEARS``): ids and times, no personal data. Each tells it that one
practitioner's day changed; every browser showing that day list hears "changed" (server-sent
events) and asks for the list again, through the API, with its own user's rights. Nothing of the
event reaches a browser: a page learns only that it should look again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from datetime import date, datetime, tzinfo

from his.kernel.json import Json

log = logging.getLogger("his.console.live")

#: A day list: the practitioner's id and the day, where the hospital is.
Day = tuple[str, date]


def days_of(event: Json, zone: tzinfo) -> set[Day]:
    """The day lists an appointment's event changes: its day, and the day it moved from."""
    if not isinstance(event, dict):
        return set()
    data = event.get("data")
    if not isinstance(data, dict) or not isinstance(practitioner := data.get("practitioner_id"), str):
        return set()
    found: set[Day] = set()
    for name in ("start", "previous_start"):
        value = data.get(name)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                found.add((practitioner, datetime.fromisoformat(value).astimezone(zone).date()))
    return found


class Feed:
    """The browsers listening to day lists, and what tells them."""

    def __init__(self, zone: tzinfo) -> None:
        self.zone = zone
        self._listeners: dict[Day, set[asyncio.Queue[None]]] = defaultdict(set)

    def hear(self, payload: bytes) -> int:
        """An event from the bus: tell the listeners of each day list it changes; how many were told."""
        try:
            event: Json = json.loads(payload)
        except ValueError:
            log.warning("an event on the bus was not JSON; ignored")
            return 0
        return self.changed(days_of(event, self.zone))

    def changed(self, days: Iterable[Day]) -> int:
        told: set[int] = set()
        for day in days:
            for queue in self._listeners.get(day, ()):
                if queue.empty():  # one "changed" waiting is enough, however many events came
                    queue.put_nowait(None)
                told.add(id(queue))
        return len(told)

    @contextlib.asynccontextmanager
    async def listen(self, *days: Day) -> AsyncIterator[asyncio.Queue[None]]:
        """A queue that gets an item whenever one of ``days`` changes, while the block runs."""
        queue: asyncio.Queue[None] = asyncio.Queue(maxsize=1)
        for day in days:
            self._listeners[day].add(queue)
        try:
            yield queue
        finally:
            for day in days:
                self._listeners[day].discard(queue)
                if not self._listeners[day]:
                    del self._listeners[day]

    @property
    def listening(self) -> int:
        """How many listeners there are (one listening to several days counts once)."""
        return len({id(q) for queues in self._listeners.values() for q in queues})
