"""A consumer's inbox is bounded: the schema's relay prunes rows older than the inbox retention
(``HIS_INBOX_RETENTION_DAYS``, longer than any stream keeps an event), and keeps the rest. A dead
letter whose event is older than the inboxes remember is not replayed unless forced: its consumer
could have applied it once already and forgotten.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError
from pydantic import ValidationError

from his.kernel import dlq
from his.kernel.config import STREAM_MAX_AGE_DAYS, Settings
from his.kernel.db import Database
from his.kernel.events import Envelope
from his.kernel.outbox import OutboxRelay
from his.kernel.streams import DAY, REPLAY_STREAM, dlq_subject, replay_subject
from tests.conftest import NatsServer
from tests.support.events import ThingHappened
from tests.support.waiting import wait_for

RETENTION = timedelta(days=60)


async def test_the_relay_prunes_inbox_rows_past_their_retention_and_keeps_the_rest(
    db: Database, js: JetStreamContext
) -> None:
    ages = {"gone": [61, 90, 400], "kept": [59, 1, 0]}  # days
    rows = {kind: [(uuid.uuid4(), d) for d in days] for kind, days in ages.items()}
    for consumer in ("tst_a", "tst_b"):
        await db.pool.executemany(
            "INSERT INTO inbox (consumer, event_id, received_at) VALUES ($1, $2, now() - make_interval(days => $3))",
            [(consumer, eid, d) for pairs in rows.values() for eid, d in pairs],
        )
    relay = OutboxRelay(
        db.dsn, js, schema=db.schema, signal=db.signal, poll_seconds=0.2, inbox_retention_seconds=RETENTION.days * DAY
    )
    task = asyncio.create_task(relay.run())
    try:

        async def pruned() -> bool:
            return int(await db.pool.fetchval("SELECT count(*) FROM inbox")) == 6

        await wait_for(pruned, timeout=15, what="the old inbox rows pruned")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    left = {(r["consumer"], r["event_id"]) for r in await db.pool.fetch("SELECT consumer, event_id FROM inbox")}
    assert left == {(c, eid) for c in ("tst_a", "tst_b") for eid, _ in rows["kept"]}


def test_an_inbox_that_forgets_before_the_streams_do_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HIS_INBOX_RETENTION_DAYS", raising=False)
    assert Settings(_env_file=None).inbox_retention_days == 60
    for days in (str(STREAM_MAX_AGE_DAYS), "7"):
        monkeypatch.setenv("HIS_INBOX_RETENTION_DAYS", days)
        with pytest.raises(ValidationError, match="inbox_retention_days"):
            Settings(_env_file=None)


async def dead_letter(js: JetStreamContext, *, born: datetime | None, target: str = "tst_old") -> int:
    """A dead letter as the mover stores it, of an event that happened at ``born``."""
    env = Envelope.wrap(ThingHappened(thing_id=uuid.uuid4(), seq=1), aggregate_id=uuid.uuid4())
    data = env.to_json() if born is None else replace(env, time=born).to_json()
    if born is None:
        data = data.replace(b'"time":', b'"when":')
    headers = {dlq.H + "Consumer": target, dlq.H + "Target": target, dlq.H + "Kind": "max_deliveries"}
    ack = await js.publish(dlq_subject(target), data, headers=headers)
    return int(ack.seq)


async def replays_of(js: JetStreamContext, target: str) -> int:
    try:
        msg = await js.get_last_msg(REPLAY_STREAM, replay_subject(target))
    except NotFoundError:
        return 0
    return int(msg.seq or 0)


async def test_a_dead_letter_older_than_the_inbox_remembers_is_replayed_only_when_forced(
    js: JetStreamContext,
) -> None:
    now = datetime.now(UTC)
    fresh = await dead_letter(js, born=now - timedelta(days=10), target="tst_fresh")
    old = await dead_letter(js, born=now - timedelta(days=59, hours=12), target="tst_old")
    timeless = await dead_letter(js, born=None, target="tst_timeless")

    replayed = await dlq.replay(js, fresh, remembered=RETENTION)
    assert replayed is not None and replayed.target == "tst_fresh"
    assert await replays_of(js, "tst_fresh")

    for entry, target in ((old, "tst_old"), (timeless, "tst_timeless")):
        with pytest.raises(dlq.ForgottenError, match="--force"):
            await dlq.replay(js, entry, remembered=RETENTION)
        assert await dlq.get_dead_letter(js, entry) is not None, "a refused dead letter stays in the DLQ"
        assert not await replays_of(js, target)
        forced = await dlq.replay(js, entry, remembered=None)
        assert forced is not None and forced.target == target
        assert await replays_of(js, target)
        assert await dlq.get_dead_letter(js, entry) is None


async def test_his_dlq_replay_refuses_an_old_dead_letter_and_replays_it_with_force(
    js: JetStreamContext, nats_server: NatsServer, tmp_path: Path
) -> None:
    """The operator's command: a refusal says why and exits 1, leaving the entry; --force replays it."""
    old = await dead_letter(js, born=datetime.now(UTC) - timedelta(days=90), target="tst_cli_old")
    env = dict(os.environ, HIS_NATS_URL=nats_server.url, HIS_DATA_DIR=str(tmp_path / "his-data"))
    his = str(Path(sys.executable).parent / "his")

    def replay(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [his, "dlq", "replay", *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    refused = await asyncio.to_thread(replay, str(old))
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "refused" in refused.stdout and "--force" in refused.stdout
    assert await dlq.get_dead_letter(js, old) is not None
    forced = await asyncio.to_thread(replay, "--force", str(old))
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert "replayed to tst_cli_old" in forced.stdout
    assert await replays_of(js, "tst_cli_old")
