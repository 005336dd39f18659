"""What the reliability tests share: the ledger of what a test did, the invariant check, the
writer workload, a consumer that records JetStream's delivery metadata, and child processes.

A test writes events through the real unit of work and notes in a ``Ledger`` which events were
committed and which were rolled back. Its consumer records each applied event in ``effect``
(deliberately without a unique key, so a second application shows). ``check`` compares the two:
nothing lost, nothing unexpected, nothing applied twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import orjson
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy
from nats.js.client import JetStreamContext

from his.infra.procs import ManagedProcess
from his.kernel.consumer import ConsumerLoop, Subscription
from his.kernel.db import Database, UnitOfWork, write_outbox
from his.kernel.events import Envelope, Event, stream_name
from his.reliability.history import History
from tests.support.events import TEST_SERVICE, ThingHappened

REPO = Path(__file__).resolve().parents[2]
STREAM = stream_name(TEST_SERVICE)
EFFECT_DDL = """CREATE TABLE effect (
    event_id uuid NOT NULL,
    thing_id uuid NOT NULL,
    seq int NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
)"""


# --- effects -------------------------------------------------------------------------------


def effect_handler(
    healed: Callable[[], bool] = lambda: True,
) -> Callable[[UnitOfWork, Envelope, Event], Awaitable[None]]:
    """The consumer's effect: one ``effect`` row per applied event. Poison fails until healed."""

    async def handle(uow: UnitOfWork, env: Envelope, ev: Event) -> None:
        assert isinstance(ev, ThingHappened)
        if ev.poison and not healed():
            raise RuntimeError(f"poison pill {ev.seq}: cannot apply it yet")
        await uow.conn.execute(
            "INSERT INTO effect (event_id, thing_id, seq) VALUES ($1, $2, $3)", env.id, ev.thing_id, ev.seq
        )

    return handle


def effect_subscription(name: str, **overrides: Any) -> Subscription:
    """The subscription every reliability consumer uses (in this process or in a child)."""
    settings: dict[str, Any] = {"max_deliver": 5, "backoff": (0.2, 0.5), "ack_wait": 2.0, "batch": 128}
    settings.update(overrides)
    healed = settings.pop("healed", lambda: True)
    return Subscription(name, ThingHappened.type, effect_handler(healed), **settings)


# --- the ledger and the invariant check --------------------------------------------------------


@dataclass
class Ledger:
    """What a test did: events committed, events rolled back, and notes proving its faults."""

    committed: set[uuid.UUID] = field(default_factory=set)
    rolled_back: set[uuid.UUID] = field(default_factory=set)
    commit_order: list[uuid.UUID] = field(default_factory=list)
    write_failures: int = 0
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"[ledger] {text}", flush=True)

    def committed_tx(self, envs: list[Envelope]) -> None:
        self.committed.update(e.id for e in envs)
        self.commit_order.extend(e.id for e in envs)

    def rolled_back_tx(self, envs: list[Envelope]) -> None:
        self.rolled_back.update(e.id for e in envs)


@dataclass
class Verdict:
    """Differences between what was committed and what the consumer applied."""

    lost: set[uuid.UUID]
    unexpected: set[uuid.UUID]
    duplicated: dict[uuid.UUID, int]

    @property
    def ok(self) -> bool:
        return not (self.lost or self.unexpected or self.duplicated)

    def __str__(self) -> str:
        return (
            f"lost={len(self.lost)} unexpected={len(self.unexpected)} applied-twice-or-more={len(self.duplicated)}"
            f" (examples: lost {sorted(map(str, self.lost))[:3]}, unexpected {sorted(map(str, self.unexpected))[:3]},"
            f" duplicated {list(map(str, self.duplicated))[:3]})"
        )


async def applied(db: Database) -> Counter[uuid.UUID]:
    rows = await db.pool.fetch("SELECT event_id, count(*) AS n FROM effect GROUP BY event_id")
    return Counter({r["event_id"]: int(r["n"]) for r in rows})


async def check(db: Database, ledger: Ledger) -> Verdict:
    """The invariant: every committed event applied exactly once, nothing else applied.

    Decided by the shared checker (``his.reliability.history``): committed events are what
    clients were told, rolled-back ones were refused, the ``effect`` rows are the applied stage.
    """
    counts = await applied(db)
    history = History()
    for event_id in ledger.committed:
        history.tell(event_id)
    for event_id in ledger.rolled_back:
        history.refuse(event_id)
    history.observe("applied", counts.elements())
    found = history.check()
    verdict = Verdict(
        lost={cast(uuid.UUID, k) for k in found.lost},
        unexpected={cast(uuid.UUID, k) for k in found.unexpected},
        duplicated={cast(uuid.UUID, k): counts[cast(uuid.UUID, k)] for k in found.duplicated},
    )
    ledger.note(f"check: {len(ledger.committed)} committed, {len(ledger.rolled_back)} rolled back -> {verdict}")
    return verdict


# --- writers ----------------------------------------------------------------------------------


class _RollbackError(Exception):
    """Raised by a writer to roll its transaction back on purpose."""


@dataclass
class Workload:
    """Concurrent writers committing events through the unit of work.

    Some transactions stay open for a while after their outbox rows are inserted (so they
    commit after rows with higher ids) and some roll back. ``pace`` spaces each writer's
    transactions (load shaping, not synchronisation).
    """

    db: Database
    ledger: Ledger
    target: int
    writers: int = 8
    events_per_tx: tuple[int, int] = (1, 4)
    hold_probability: float = 0.0
    hold_seconds: tuple[float, float] = (0.05, 0.3)
    rollback_probability: float = 0.0
    pace: float = 0.0
    seed: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    held: int = 0
    rollbacks: int = 0
    #: Held transactions also wait (up to ``hold_limit`` seconds) until a row with a higher id is
    #: marked published, so that they commit behind it even when the relay lags.
    hold_until_published: bool = False
    hold_limit: float = 2.0
    #: Events of held transactions that committed after a row with a higher outbox id had been
    #: marked published: the rows a relay reading ``WHERE id > last_id`` would skip.
    late: set[uuid.UUID] = field(default_factory=set)

    async def run(self) -> None:
        await asyncio.gather(*(self._writer(i) for i in range(self.writers)))

    async def _writer(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        n = 0
        while len(self.ledger.committed) < self.target and not self.stop.is_set():
            n += 1
            events = rng.randint(*self.events_per_tx)
            hold = rng.uniform(*self.hold_seconds) if rng.random() < self.hold_probability else 0.0
            rollback = rng.random() < self.rollback_probability
            await self.transaction(index * 1_000_000 + n * 10, events, hold=hold, rollback=rollback)
            if self.pace:
                await asyncio.sleep(self.pace)

    async def transaction(self, seq: int, events: int, *, hold: float = 0.0, rollback: bool = False) -> None:
        envs: list[Envelope] = []
        late: set[uuid.UUID] = set()
        try:
            async with self.db.uow() as uow:
                for i in range(events):
                    tid = uuid.uuid4()
                    envs.append(uow.add(ThingHappened(thing_id=tid, seq=seq + i), aggregate_id=tid))
                if hold:
                    # Insert the outbox rows now (taking their ids), then keep the transaction
                    # open: rows with higher ids commit, and get published, before these do.
                    await write_outbox(uow.conn, uow.events)
                    uow.events.clear()  # written: the commit must not write them again
                    self.held += 1
                    await asyncio.sleep(hold)
                    if not rollback and await self._behind_published(uow, envs):
                        late = {e.id for e in envs}
                if rollback:
                    raise _RollbackError
        except _RollbackError:
            self.rollbacks += 1
            self.ledger.rolled_back_tx(envs)
            return
        except Exception:
            self.ledger.write_failures += 1
            self.ledger.rolled_back_tx(envs)
            return
        if hold:
            self.db.signal.committed()  # the unit of work saw no events left to announce
        self.late |= late
        self.ledger.committed_tx(envs)

    async def _behind_published(self, uow: UnitOfWork, envs: list[Envelope]) -> bool:
        """Whether a row with a higher id than these (still uncommitted) rows is already marked
        published: asked just before the commit, so a true answer means they commit after it."""
        deadline = time.monotonic() + (self.hold_limit if self.hold_until_published else 0.0)
        while not await _published_past(uow, envs):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)  # a poll of a condition, with a deadline
        return True


async def _published_past(uow: UnitOfWork, envs: list[Envelope]) -> bool:
    return bool(
        await uow.conn.fetchval(
            "SELECT (SELECT max(id) FROM outbox WHERE published_at IS NOT NULL)"
            " > (SELECT min(id) FROM outbox WHERE event_id = ANY($1::uuid[]))",
            [e.id for e in envs],
        )
    )


async def commit_order_inversions(db: Database, ledger: Ledger) -> int:
    """Events that committed after an event with a higher outbox id had committed."""
    ids: dict[uuid.UUID, int] = {r["event_id"]: r["id"] for r in await db.pool.fetch("SELECT event_id, id FROM outbox")}
    late, highest = 0, 0
    for eid in ledger.commit_order:
        row_id = ids[eid]
        if row_id < highest:
            late += 1
        highest = max(highest, row_id)
    return late


# --- a consumer that records what JetStream told it ---------------------------------------------


@dataclass(frozen=True)
class Delivery:
    step: int
    what: str  # "delivered" | "acked"
    event_id: str
    num_delivered: int
    stream_seq: int


def event_id_of(m: Msg) -> str:
    try:
        return str(orjson.loads(m.data).get("id", ""))
    except (orjson.JSONDecodeError, AttributeError):
        return ""


class Recording(ConsumerLoop):
    """Mixin: notes each delivery and each ack with JetStream's metadata (``num_delivered``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log: list[Delivery] = []

    def _note(self, what: str, m: Msg) -> None:
        md = m.metadata
        seq = md.sequence.stream if md.sequence else 0
        self.log.append(Delivery(len(self.log), what, event_id_of(m), md.num_delivered or 0, seq))

    async def process(self, msgs: list[Msg]) -> None:
        for m in msgs:
            self._note("delivered", m)
        await super().process(msgs)

    async def acknowledge(self, m: Msg) -> None:
        await super().acknowledge(m)
        self._note("acked", m)

    def redelivered(self) -> dict[str, int]:
        """Event id → highest ``num_delivered`` seen, for events delivered more than once."""
        out: dict[str, int] = {}
        for d in self.log:
            if d.what == "delivered" and d.num_delivered > 1:
                out[d.event_id] = max(out.get(d.event_id, 0), d.num_delivered)
        return out


class RecordingConsumer(Recording, ConsumerLoop):
    """The kernel's consumer, recording."""


# --- JetStream and outbox probes --------------------------------------------------------------


async def in_stream(js: JetStreamContext, stream: str = STREAM) -> int:
    return int((await js.stream_info(stream)).state.messages)


async def caught_up(js: JetStreamContext, stream: str, durable: str) -> bool:
    """The durable has been delivered everything in its stream and has nothing unacknowledged."""
    try:
        info: ConsumerInfo = await js.consumer_info(stream, durable)
    except Exception:
        return False
    return info.num_pending == 0 and info.num_ack_pending == 0


async def acked_all(js: JetStreamContext, stream: str, durable: str) -> bool:
    """The durable acknowledged every message its stream holds (its ack floor is the stream's last
    sequence). Unlike ``caught_up`` it cannot pass just after a publish: the server counts a new
    message as pending for its consumers a moment after it acknowledged it to the publisher. Only
    for a durable that reads every subject of its stream."""
    try:
        info = await js.consumer_info(stream, durable)
        last = int((await js.stream_info(stream)).state.last_seq)
    except Exception:
        return False
    return info.num_ack_pending == 0 and int(info.ack_floor.stream_seq or 0) >= last


async def stream_keys(js: JetStreamContext, stream: str = STREAM) -> list[str]:
    """The event id of every message in ``stream``, in stream order (an ephemeral consumer)."""
    last = int((await js.stream_info(stream)).state.last_seq)
    psub = await js.pull_subscribe(
        "",
        stream=stream,
        config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, inactive_threshold=10.0),
    )
    keys: list[str] = []
    try:
        seq = 0
        while seq < last:
            for m in await psub.fetch(1000, timeout=5.0):
                keys.append(event_id_of(m))
                seq = m.metadata.sequence.stream if m.metadata.sequence else seq
    finally:
        await psub.unsubscribe()
    return keys


async def unpublished(db: Database) -> int:
    return int(await db.pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL"))


async def marked(db: Database) -> int:
    return int(await db.pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NOT NULL"))


@contextlib.asynccontextmanager
async def running(*coros: Coroutine[Any, Any, Any]) -> AsyncIterator[list[asyncio.Task[Any]]]:
    """Run coroutines as tasks for the block; cancel them after it."""
    tasks = [asyncio.create_task(c) for c in coros]
    try:
        yield tasks
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# --- child processes --------------------------------------------------------------------------


class Procs:
    """Child processes started by one test; every one still running is stopped at teardown."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.started: list[ManagedProcess] = []

    def spawn(self, name: str, module: str, *args: str) -> ManagedProcess:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        log = self.logdir / f"{name}-{len(self.started)}.log"
        proc = ManagedProcess.spawn(name, [sys.executable, "-m", module, *args], env=env, log_file=log, cwd=REPO)
        self.started.append(proc)
        return proc

    @staticmethod
    def sigkill(proc: ManagedProcess) -> int:
        """SIGKILL one child (by its pid) and reap it; returns its exit status (-9)."""
        proc.signal(signal.SIGKILL)
        proc.popen.wait(10)
        assert proc.returncode is not None
        return proc.returncode

    @staticmethod
    async def exited(proc: ManagedProcess, *, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"{proc.name} (pid {proc.pid}) did not exit: {proc.tail()}")
            await asyncio.sleep(0.02)
        assert proc.returncode is not None
        return proc.returncode

    def stop_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.stop(timeout=5)

    def log_text(self, proc: ManagedProcess) -> str:
        return proc.log_file.read_text(errors="replace") if proc.log_file else ""


class RelayProcess:
    """The outbox relay as a separate OS process (``tests.reliability.procs.relay_proc``)."""

    MODULE = "tests.reliability.procs.relay_proc"

    def __init__(self, procs: Procs, dsn: str, schema: str, nats_url: str, *, variant: str = "correct") -> None:
        self.procs = procs
        self.args = ["--dsn", dsn, "--schema", schema, "--nats", nats_url, "--variant", variant]
        self.proc: ManagedProcess | None = None
        self.incarnations = 0

    def start(self, *extra: str) -> ManagedProcess:
        self.incarnations += 1
        self.proc = self.procs.spawn(f"relay{self.incarnations}", self.MODULE, *self.args, *extra)
        return self.proc

    def sigkill(self) -> int:
        assert self.proc is not None
        return self.procs.sigkill(self.proc)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None
