"""JetStream streams of his: one per producing service, plus DLQ, replay and advisories."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

import nats.errors
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.client import JetStreamContext
from nats.js.errors import APIError, NotFoundError, ServiceUnavailableError

from his.kernel.config import STREAM_MAX_AGE_DAYS
from his.kernel.events import stream_name

log = logging.getLogger(__name__)

DAY = 24 * 3600.0
FIRST_PAUSE = 0.5  # seconds before the second try; doubled up to 5 s
STREAM_NAME_IN_USE = 10058  # created meanwhile, by an earlier try that timed out or by another process
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

    max_age = STREAM_MAX_AGE_DAYS * DAY
    configs = [cfg(stream_name(s), [f"his.{s}.>"], max_age) for s in services]
    configs += [
        cfg(DLQ_STREAM, ["his.dlq.>"], None),
        cfg(REPLAY_STREAM, ["his.replay.>"], max_age),
        cfg(ADVISORY_STREAM, [f"{MAX_DELIVERIES_ADVISORY}.>", f"{TERMINATED_ADVISORY}.>"], 30 * DAY),
    ]
    return configs


async def declare(js: JetStreamContext, services: Iterable[str], *, replicas: int = 1, patience: float = 60.0) -> None:
    """Create or update every stream (idempotent), and the bucket of consumer errors.

    A JetStream cluster that is still forming, or electing a stream's leader, answers late or
    with 503; each step is tried again until ``patience`` seconds have passed. A create that timed
    out may have happened all the same, so the next try looks the stream up first.
    """
    deadline = time.monotonic() + patience
    for config in stream_configs(services, replicas=replicas):
        await _patiently(functools.partial(_put_stream, js, config), f"stream {config.name}", deadline)
    await _patiently(functools.partial(_put_bucket, js, replicas), f"bucket {ERRORS_BUCKET}", deadline)


async def _put_stream(js: JetStreamContext, config: StreamConfig) -> None:
    try:
        await js.stream_info(config.name or "")
    except NotFoundError:
        await js.add_stream(config)
    else:
        await js.update_stream(config)


async def _put_bucket(js: JetStreamContext, replicas: int) -> None:
    try:
        await js.key_value(ERRORS_BUCKET)
    except Exception:  # noqa: BLE001 - nats-py raises BucketNotFoundError or a generic not-found
        await js.create_key_value(bucket=ERRORS_BUCKET, ttl=30 * DAY, storage=StorageType.FILE, replicas=replicas)


def _transient(exc: Exception) -> bool:
    if isinstance(exc, nats.errors.TimeoutError | ServiceUnavailableError):
        return True
    return isinstance(exc, APIError) and exc.err_code == STREAM_NAME_IN_USE


async def _patiently(step: Callable[[], Awaitable[None]], what: str, deadline: float) -> None:
    pause = FIRST_PAUSE
    while True:
        try:
            await step()
            return
        except Exception as exc:
            if not _transient(exc) or time.monotonic() + pause > deadline:
                raise
            log.warning("declaring %s: JetStream did not answer (%r); trying again in %.1fs", what, exc, pause)
        await asyncio.sleep(pause)
        pause = min(pause * 2, 5.0)
