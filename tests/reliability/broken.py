"""Deliberately broken variants of the kernel's classes, used only by reliability tests.

Each reliability test runs its scenario once against the kernel and once against one of these,
and asserts that its invariant check notices the breakage. A check that passes against a broken
variant proves nothing. Nothing outside ``tests/reliability`` imports this module.
"""

from __future__ import annotations

from typing import Any

from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext

from his.kernel.consumer import ConsumerLoop
from his.kernel.dlq import DlqMover
from his.kernel.outbox import OutboxRelay

# --- relays -----------------------------------------------------------------------------------


class _NoMsgIdJetStream:
    """A JetStream context that drops ``Nats-Msg-Id`` from every publish."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js

    def __getattr__(self, name: str) -> Any:
        return getattr(self._js, name)

    async def publish_async(self, subject: str, payload: bytes = b"", **kw: Any) -> Any:
        headers = {k: v for k, v in (kw.pop("headers", None) or {}).items() if k != "Nats-Msg-Id"}
        return await self._js.publish_async(subject, payload, headers=headers or None, **kw)


class NoMsgIdRelay(OutboxRelay):
    """BROKEN: publishes without ``Nats-Msg-Id``, so JetStream cannot drop a republished row."""

    def __init__(self, dsn: str, js: JetStreamContext, **kw: Any) -> None:
        super().__init__(dsn, _NoMsgIdJetStream(js), **kw)  # type: ignore[arg-type]


RELAY_VARIANTS: dict[str, type[OutboxRelay]] = {
    "correct": OutboxRelay,
    "no-msg-id": NoMsgIdRelay,
}


# --- consumers --------------------------------------------------------------------------------


class AckBeforeCommitConsumer(ConsumerLoop):
    """BROKEN: acknowledges a batch before the transaction applying it commits.

    Killed between the two, the broker has forgotten the messages and the effects never
    happened: lost.
    """

    async def process(self, msgs: list[Msg]) -> None:
        for m in msgs:
            await m.ack()
        await self.nc.flush()  # the broker has the acks
        await self.between_ack_and_commit(msgs)
        await super().process(msgs)

    async def between_ack_and_commit(self, msgs: list[Msg]) -> None:
        """Fault-injection point of this broken variant."""


class NoInboxConsumer(ConsumerLoop):
    """BROKEN: applies every delivery without consulting the inbox: duplicates apply twice."""

    async def _apply(self, items: list[Any]) -> tuple[list[Msg], list[tuple[Any, Exception]]]:
        acks: list[Msg] = []
        failures: list[tuple[Any, Exception]] = []
        async with self.db.uow() as uow:
            for it in items:
                try:
                    async with uow.savepoint():
                        await self.sub.handler(uow, it.env, it.event)
                    acks.append(it.msg)
                    self.stats.applied += 1
                except Exception as exc:
                    failures.append((it, exc))
        return acks, failures


class SwallowFailuresConsumer(ConsumerLoop):
    """BROKEN: acknowledges a message whose handler failed, so it is neither retried nor
    dead-lettered: lost."""

    async def _retry(self, m: Msg, error: str) -> None:
        self.stats.failed += 1
        await self.acknowledge(m)


# --- DLQ mover --------------------------------------------------------------------------------


class _NewOnlyJetStream:
    """A JetStream context whose consumers start at new messages (``DeliverPolicy.NEW``)."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js

    def __getattr__(self, name: str) -> Any:
        return getattr(self._js, name)

    async def add_consumer(self, stream: str, config: ConsumerConfig, **kw: Any) -> Any:
        config.deliver_policy = DeliverPolicy.NEW
        return await self._js.add_consumer(stream, config, **kw)


class NewOnlyDlqMover(DlqMover):
    """BROKEN: reads only advisories emitted after it started; misses those kept while it was down."""

    def __init__(self, js: JetStreamContext, **kw: Any) -> None:
        super().__init__(_NewOnlyJetStream(js), **kw)  # type: ignore[arg-type]
