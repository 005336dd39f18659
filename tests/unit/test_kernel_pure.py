"""Pure kernel helpers: credentials, stream layout, DLQ naming, settings."""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace

import nats.errors
import nats.js.errors

from his.kernel.consumer import ConsumerLoop, Subscription
from his.kernel.db import OutboxSignal
from his.kernel.dlq import base_consumer
from his.kernel.migrations import with_credentials
from his.kernel.outbox import OutboxRelay
from his.kernel.streams import ADVISORY_STREAM, DLQ_STREAM, REPLAY_STREAM, stream_configs


async def _noop(*_: object) -> None:
    return None


def test_runtime_credentials_keep_host_and_socket() -> None:
    admin = "postgresql://postgres:s3cret@/his?host=/tmp/sock&port=5432"
    got = with_credentials(admin, "his_patients", "p@ss/word")
    assert got == "postgresql://his_patients:p%40ss%2Fword@/his?host=/tmp/sock&port=5432"
    assert "s3cret" not in got


def test_one_stream_per_service_plus_dlq_replay_and_advisories() -> None:
    configs = {c.name: c for c in stream_configs(["patients", "billing"])}
    assert set(configs) == {"HIS_PATIENTS", "HIS_BILLING", DLQ_STREAM, REPLAY_STREAM, ADVISORY_STREAM}
    assert configs["HIS_PATIENTS"].subjects == ["his.patients.>"]
    assert all(c.storage is not None and c.storage.value == "file" for c in configs.values())
    assert configs[DLQ_STREAM].max_age is None  # dead letters never expire on their own


def test_subscription_naming_and_backoff() -> None:
    sub = Subscription(
        "notifications_patient_registered", "his.patients.patient.registered.v1", _noop, backoff=(1.0, 5.0)
    )
    assert sub.stream == "HIS_PATIENTS"
    assert sub.replay_name == "notifications_patient_registered_replay"
    assert base_consumer(sub.replay_name) == sub.name
    assert [sub.delay(n) for n in (1, 2, 3, 10)] == [1.0, 5.0, 5.0, 5.0]


# nats-py (through Python 3.11's asyncio.wait_for) can turn a cancellation into a timeout or a
# TooManyStalledMsgsError. These fakes always do, so each test would hang without the fix.


class _SwallowingPullSubscription:
    async def fetch(self, batch: int, timeout: float) -> list[object]:
        try:
            await asyncio.sleep(timeout)
        except asyncio.CancelledError:
            raise nats.errors.TimeoutError from None
        raise nats.errors.TimeoutError


class _SwallowingJetStream:
    async def add_consumer(self, *_: object, **__: object) -> None:
        return None

    async def pull_subscribe_bind(self, *_: object, **__: object) -> _SwallowingPullSubscription:
        return _SwallowingPullSubscription()

    async def consumer_info(self, *_: object, **__: object) -> object:
        return SimpleNamespace(num_ack_pending=0)  # nothing left unacknowledged by an earlier run

    async def publish_async(self, *_: object, **__: object) -> object:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise nats.js.errors.TooManyStalledMsgsError from None
        raise AssertionError("not reached")


async def test_a_consumer_stops_when_cancelled_even_if_the_client_turns_it_into_a_timeout() -> None:
    loop = ConsumerLoop(None, None, _SwallowingJetStream(), Subscription("c", "his.tst.thing.happened.v1", _noop))  # type: ignore[arg-type]
    task = asyncio.create_task(loop.run())
    await asyncio.sleep(0.05)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=3)
    assert task in done and task.cancelled()


async def test_a_relay_stops_when_cancelled_even_if_the_client_turns_it_into_a_publish_error() -> None:
    relay = OutboxRelay("postgresql://unused", _SwallowingJetStream(), schema="s", signal=OutboxSignal("s"))  # type: ignore[arg-type]
    rows = [
        {
            "id": 1,
            "event_id": uuid.uuid4(),
            "subject": "his.tst.thing.happened.v1",
            "payload": b"{}",
            "traceparent": None,
        }
    ]
    task = asyncio.create_task(relay._publish(rows))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=3)
    assert task in done and task.cancelled()
    assert relay.stats.publish_errors == 0
