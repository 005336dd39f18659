"""What the console hears of the bus: an appointment's event tells the day lists it changes (its
day where the hospital is, and the day it moved from), each listener once however many events
come, and nothing else; junk on the bus tells nobody."""

from __future__ import annotations

import asyncio
import json
from datetime import date
from zoneinfo import ZoneInfo

import pytest

from his.console.live import Feed, days_of

ISTANBUL = ZoneInfo("Europe/Istanbul")
DOCTOR = "6d1f3c8e-2f7a-4f1b-9a55-0c2f8e1b7a10"


def event(start: str, **more: str) -> bytes:
    data = {"appointment_id": "a", "patient_id": "p", "practitioner_id": DOCTOR, "start": start, **more}
    return json.dumps({"type": "his.scheduling.appointment.booked.v1", "data": data}).encode()


def test_an_event_changes_the_day_where_the_hospital_is() -> None:
    # 22:30 UTC on new year's eve is already new year's day in Istanbul.
    assert days_of(json.loads(event("2027-12-31T22:30:00+00:00")), ISTANBUL) == {(DOCTOR, date(2028, 1, 1))}
    moved = json.loads(event("2028-01-03T07:00:00+00:00", previous_start="2027-12-31T20:00:00+00:00"))
    assert days_of(moved, ISTANBUL) == {(DOCTOR, date(2028, 1, 3)), (DOCTOR, date(2027, 12, 31))}


@pytest.mark.parametrize("junk", [b"not json", b"[]", b'{"data": {}}', b'{"data": {"practitioner_id": 7}}'])
def test_junk_tells_nobody(junk: bytes) -> None:
    assert Feed(ISTANBUL).hear(junk) == 0


async def test_a_listener_is_told_once_however_many_events_come_and_only_of_its_day() -> None:
    feed = Feed(ISTANBUL)
    async with feed.listen((DOCTOR, date(2028, 1, 1))) as mine, feed.listen((DOCTOR, date(2028, 1, 2))) as other:
        assert feed.listening == 2
        for _ in range(3):
            assert feed.hear(event("2027-12-31T22:30:00+00:00")) == 1
        assert mine.qsize() == 1 and other.empty()
        await asyncio.wait_for(mine.get(), 1)
        assert mine.empty()
    assert feed.listening == 0


async def test_a_clinics_listener_hears_each_of_its_practitioners_days_once() -> None:
    feed = Feed(ISTANBUL)
    other = "0b6a1c1e-6f1e-4f8e-9d55-2b1f0e7c9a11"
    day = date(2028, 1, 1)
    async with feed.listen((DOCTOR, day), (other, day)) as clinic:
        assert feed.listening == 1
        other_event = event("2027-12-31T22:30:00+00:00").replace(DOCTOR.encode(), other.encode())
        assert feed.hear(other_event) == 1 and feed.hear(event("2027-12-31T22:30:00+00:00")) == 1
        assert clinic.qsize() == 1
    assert feed.listening == 0
