"""JetStream streams of his: one per producing service, plus DLQ, replay and advisories."""

from __future__ import annotations

from collections.abc import Iterable

from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from his.kernel.events import stream_name

DAY = 24 * 3600.0
DLQ_STREAM = "HIS_DLQ"
REPLAY_STREAM = "HIS_REPLAY"
ADVISORY_STREAM = "HIS_ADVISORIES"
MAX_DELIVERIES_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"
TERMINATED_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED"
ERRORS_BUCKET = "his_consumer_errors"


def dlq_subject(durable: str) -> str:
    return f"his.dlq.{durable}"


def replay_subject(durable: str) -> str:
    return f"his.replay.{durable}"


def stream_configs(services: Iterable[str], *, replicas: int = 1) -> list[StreamConfig]:
    def cfg(name: str, subjects: list[str], max_age: float | None, **kw: object) -> StreamConfig:
        return StreamConfig(
            name=name,
            subjects=subjects,
            storage=StorageType.FILE,
            retention=RetentionPolicy.LIMITS,
            discard=DiscardPolicy.OLD,
            max_age=max_age,
            duplicate_window=120.0,
            num_replicas=replicas,
            allow_direct=True,
            **kw,  # type: ignore[arg-type]
        )

    configs = [cfg(stream_name(s), [f"his.{s}.>"], 30 * DAY) for s in services]
    configs += [
        cfg(DLQ_STREAM, ["his.dlq.>"], None),
        cfg(REPLAY_STREAM, ["his.replay.>"], 30 * DAY),
        cfg(ADVISORY_STREAM, [f"{MAX_DELIVERIES_ADVISORY}.>", f"{TERMINATED_ADVISORY}.>"], 30 * DAY),
    ]
    return configs


async def declare(js: JetStreamContext, services: Iterable[str], *, replicas: int = 1) -> None:
    """Create or update every stream (idempotent), and the bucket of consumer errors."""
    for config in stream_configs(services, replicas=replicas):
        try:
            await js.stream_info(config.name or "")
            await js.update_stream(config)
        except NotFoundError:
            await js.add_stream(config)
    try:
        await js.key_value(ERRORS_BUCKET)
    except Exception:  # noqa: BLE001 - nats-py raises BucketNotFoundError or a generic not-found
        await js.create_key_value(bucket=ERRORS_BUCKET, ttl=30 * DAY, storage=StorageType.FILE, replicas=replicas)
