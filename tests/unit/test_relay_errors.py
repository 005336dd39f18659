"""A batch that fails as a whole (a stream electing a new leader) is counted per event, logged once."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import nats.js.errors
import pytest

from his.kernel.db import OutboxSignal
from his.kernel.outbox import OutboxRelay


class _LeaderlessJetStream:
    """Every publish is answered at once with "no responders", as while a stream has no leader."""

    async def publish_async(self, subject: str, payload: bytes = b"", **kw: Any) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.set_exception(nats.js.errors.NoStreamResponseError())
        return fut


async def test_a_failed_batch_counts_every_event_and_logs_one_line(caplog: pytest.LogCaptureFixture) -> None:
    relay = OutboxRelay("postgresql://unused", _LeaderlessJetStream(), schema="s", signal=OutboxSignal("s"))  # type: ignore[arg-type]
    rows = [
        {
            "id": i,
            "event_id": uuid.uuid4(),
            "subject": "his.tst.thing.happened.v1",
            "payload": b"{}",
            "traceparent": None,
        }
        for i in range(200)
    ]
    with caplog.at_level(logging.WARNING, logger="his.outbox"):
        done = await relay._publish(rows)  # type: ignore[arg-type]
    assert done == []
    assert relay.stats.publish_errors == 200
    assert len(caplog.records) == 1
    assert "could not publish 200 of 200 events" in caplog.records[0].getMessage()
    assert "NoStreamResponseError" in relay.stats.last_error
