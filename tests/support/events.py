"""Event models used only by tests, on their own stream (``HIS_TST``)."""

from __future__ import annotations

import uuid

from his.kernel.events import Event, event

TEST_SERVICE = "tst"


@event
class ThingHappened(Event):
    """A test event: ``seq`` lets a test check ordering and completeness."""

    type = "his.tst.thing.happened.v1"
    thing_id: uuid.UUID
    seq: int
    poison: bool = False
