"""A 3-node JetStream cluster: a minority partition, then a rolling restart, each under writes.

Every route between two nodes passes through a TCP proxy on 127.0.0.1 that the test can cut
(``tests/reliability/netcut.py``). The kernel's outbox relay publishes to the R3 stream through
the two nodes of the majority while concurrent writers commit events.

1. Partition: one follower is cut off from both other nodes (its routes are closed, not its
   process stopped). The majority keeps acknowledging; the isolated node falls behind. After the
   links heal it catches up.
2. Rolling restart: each node in turn is stopped with SIGTERM, started again on the same store,
   and waited for until it is healthy and current with its streams, while writers commit.

After each, every replica is read from its own node (``/jsz`` for its state, direct gets for its
messages, asked on a connection to that node only) and must be identical, and must hold exactly
the events the relay marked published (``History``: told = outbox rows marked published).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import nats.errors
import pytest
from nats.js.client import JetStreamContext

from his.infra.nats import free_port
from his.infra.nats_cluster import ClusterNode, NatsCluster, monitor
from his.kernel import streams
from his.kernel.db import Database
from his.kernel.json import JsonObject, integer, list_of, object_of
from his.kernel.outbox import OutboxRelay
from his.kernel.service import connect_nats
from his.reliability.history import History
from tests.reliability.harness import STREAM, Ledger, Workload, running, unpublished
from tests.reliability.netcut import Link, Links
from tests.support.events import TEST_SERVICE
from tests.support.waiting import wait_for

PARTITION_BURST = 300


@dataclass(frozen=True)
class Replica:
    """One node's copy of the stream, as that node reports it."""

    node: str
    messages: int
    first_seq: int
    last_seq: int
    digest: str
    msg_ids: tuple[str, ...]

    def summary(self) -> tuple[int, int, int, str]:
        return self.messages, self.first_seq, self.last_seq, self.digest


@pytest.fixture
def partitionable(tmp_path: Path) -> Iterator[tuple[NatsCluster, Links]]:
    cluster = NatsCluster(tmp_path / "cluster", size=3)
    links = Links()
    by_pair: dict[tuple[str, str], Link] = {}
    for a in cluster.nodes:
        for b in cluster.nodes:
            if a is not b:
                by_pair[a.name, b.name] = links.add(f"{a.name}->{b.name}", b.route_port)

    def routes_for(node: ClusterNode) -> list[str]:
        return [
            f"nats-route://127.0.0.1:{by_pair[node.name, peer.name].port}" for peer in cluster.nodes if peer is not node
        ]

    cluster.routes_for = routes_for
    # Peers that learn of a node from another would dial its real route port, around the proxies.
    cluster.route_advertise = f"127.0.0.1:{free_port('127.0.0.1')}"  # nothing listens there
    try:
        cluster.start()
        yield cluster, links
    finally:
        cluster.stop()
        links.close()


def stream_state(node: ClusterNode) -> JsonObject:
    """The node's own view of its replica of the stream (``/jsz``), empty if it has none yet."""
    doc = monitor(node, "/jsz?streams=1&config=1", timeout=2.0)
    for account in list_of(object_of, doc.get("account_details") or []):
        for stream in list_of(object_of, account.get("stream_detail") or []):
            if stream["name"] == STREAM:
                return stream
    return {}


def last_seq(node: ClusterNode) -> int:
    return integer(object_of(stream_state(node).get("state") or {}).get("last_seq", 0))


async def read_replica(node: ClusterNode) -> Replica:
    """The node's replica: its state from ``/jsz`` and its messages by direct get, asked of that
    node alone (a queue group answers from the local member first)."""
    state = object_of(stream_state(node)["state"])
    nc = await nats.connect(node.url, allow_reconnect=False, connect_timeout=2)
    ids: list[str] = []
    digest = hashlib.sha256()
    try:
        seq = integer(state["first_seq"])
        while seq <= integer(state["last_seq"]):
            inbox = nc.new_inbox()
            sub = await nc.subscribe(inbox)
            request = json.dumps({"seq": seq, "batch": 500}).encode()
            await nc.publish(f"$JS.API.DIRECT.GET.{STREAM}", request, reply=inbox)
            got = 0
            while True:
                msg = await sub.next_msg(timeout=5)
                headers = msg.headers or {}
                if headers.get("Status"):
                    break
                got += 1
                seq = int(headers["Nats-Sequence"]) + 1
                ids.append(headers["Nats-Msg-Id"])
                digest.update(f"{headers['Nats-Sequence']}:{headers['Nats-Msg-Id']}\n".encode())
            await sub.unsubscribe()
            assert got, f"{node.name} answered no message from seq {seq}"
    finally:
        await nc.close()
    return Replica(
        node.name,
        integer(state["messages"]),
        integer(state["first_seq"]),
        integer(state["last_seq"]),
        digest.hexdigest(),
        tuple(ids),
    )


async def compare_replicas(cluster: NatsCluster, db: Database, stage: str) -> list[Replica]:
    """Every node's replica identical, and holding exactly the rows the relay marked published."""
    replicas = [await read_replica(n) for n in cluster.nodes]
    history = History()
    for r in await db.pool.fetch("SELECT event_id FROM outbox WHERE published_at IS NOT NULL ORDER BY id"):
        history.tell(str(r["event_id"]))
    for rep in replicas:
        history.observe(f"{stage}:{rep.node}", rep.msg_ids)
    verdict = history.check()
    assert verdict.ok, str(verdict)
    summaries = {rep.node: rep.summary() for rep in replicas}
    assert len(set(summaries.values())) == 1, f"replicas differ after the {stage}: {summaries}"
    assert replicas[0].messages == len(history.told)
    return replicas


async def leader(js: JetStreamContext) -> str:
    info = await js.stream_info(STREAM)
    return str(info.cluster.leader or "") if info.cluster else ""


async def test_minority_partition_then_rolling_restart_keep_replicas_identical(
    partitionable: tuple[NatsCluster, Links], db: Database, rng: random.Random
) -> None:
    cluster, links = partitionable
    admin = await connect_nats(",".join(cluster.urls), "test-admin")
    js = admin.jetstream(timeout=5.0)
    await streams.declare(js, [TEST_SERVICE], replicas=3)
    lead = await leader(js)
    isolated = next(n for n in cluster.nodes if n.name != lead)
    majority = [n for n in cluster.nodes if n is not isolated]
    conn = await connect_nats(",".join(n.url for n in majority), "test-relay")  # the relay talks to the majority
    relay = OutboxRelay(db.dsn, conn.jetstream(timeout=5.0), schema=db.schema, signal=db.signal, poll_seconds=0.2)
    ledger = Ledger()
    notes: list[str] = []
    try:
        async with running(relay.run()):
            # --- 1. a minority partition --------------------------------------------------------
            work = Workload(db, ledger, PARTITION_BURST, writers=4, pace=0.01, seed=rng.randrange(1 << 30))
            async with running(work.run()) as (writers,):
                await wait_for(lambda: _at_least(isolated, 50), timeout=30, what="the isolated node replicating")
                cut = [link for link in links if isolated.name in link.name.split("->")]
                links.cut(cut)
                before_cut = last_seq(isolated)
                await wait_for(lambda: _routes(isolated, 0), timeout=10, what=f"{isolated.name} without routes")
                await writers
                await wait_for(lambda: _drained(db), timeout=30, what="the outbox drained through the majority")
                behind, head = last_seq(isolated), last_seq(majority[0])
            notes.append(
                f"cut {isolated.name} (follower; leader {lead}) off at seq {before_cut}: while cut it stayed at"
                f" {behind}, the majority reached {head}"
                f" ({len(ledger.committed)} committed, {sum(link.refused for link in cut)} route dials refused)"
            )
            assert behind < head, "the isolated node must fall behind while cut off"
            links.heal(cut)
            await wait_for(lambda: _caught_up(cluster), timeout=30, what=f"{isolated.name} caught up after healing")
            first = await compare_replicas(cluster, db, "partition")
            notes.append(
                f"after healing: 3 replicas identical, {first[0].messages} messages, digest {first[0].digest[:12]}"
            )

            # --- 2. a rolling restart ------------------------------------------------------------
            # Writers go on until the last node is back (a count would be reached within the first
            # restart on a fast machine, leaving the others without writes).
            work = Workload(db, ledger, 10**9, writers=4, pace=0.02, seed=rng.randrange(1 << 30))
            leaders, committed_during = [await leader(js)], []
            async with running(work.run()) as (writers,):
                start = len(ledger.committed)
                await wait_for(lambda: _more(ledger, start, 50), timeout=30, what="writes under way")
                for node in cluster.nodes:
                    assert node.proc is not None
                    old_pid, committed_before = node.proc.pid, len(ledger.committed)
                    await asyncio.to_thread(node.proc.stop, timeout=15)  # SIGTERM; writers go on meanwhile
                    assert node.proc.returncode in (0, -signal.SIGTERM), node.proc.tail()
                    cluster.spawn(node)
                    await asyncio.to_thread(cluster.wait_healthy, [node], timeout=60)  # healthz: current
                    await wait_for(lambda: _caught_up(cluster), timeout=30, what=f"{node.name} current")
                    assert node.proc.pid != old_pid
                    leaders.append(await _after_election(js))
                    committed_during.append(len(ledger.committed) - committed_before)
                    notes.append(
                        f"restarted {node.name}: pid {old_pid} -> {node.proc.pid}; leader now {leaders[-1]}"
                        f"; {len(ledger.committed)} committed"
                    )
                work.stop.set()
                await writers
            await wait_for(lambda: _drained(db), timeout=30, what="the outbox drained")
            await wait_for(lambda: _caught_up(cluster), timeout=30, what="every replica current")
            after = await compare_replicas(cluster, db, "rolling restart")
            notes.append(
                f"after the restarts: 3 replicas identical, {after[0].messages} messages; leaders {leaders};"
                f" events committed during each restart {committed_during}"
            )
    finally:
        print("\n".join(notes))
        await conn.close()
        await admin.close()
    assert len(set(leaders)) > 1, "the stream leader moved at least once"
    assert all(n > 0 for n in committed_during), f"events committed during each restart: {committed_during}"
    assert after[0].messages == len(ledger.committed)
    assert {uuid.UUID(i) for i in after[0].msg_ids} == ledger.committed


async def _at_least(node: ClusterNode, n: int) -> bool:
    return last_seq(node) >= n


async def _more(ledger: Ledger, start: int, n: int) -> bool:
    return len(ledger.committed) >= start + n


async def _routes(node: ClusterNode, n: int) -> bool:
    return integer(monitor(node, "/routez", timeout=2.0).get("num_routes", -1)) == n


async def _drained(db: Database) -> bool:
    return await unpublished(db) == 0


async def _caught_up(cluster: NatsCluster) -> bool:
    try:
        return len({last_seq(n) for n in cluster.nodes}) == 1
    except OSError:
        return False


async def _after_election(js: JetStreamContext) -> str:
    """The stream's leader, once the cluster has one again."""
    deadline = time.monotonic() + 30
    while True:
        try:
            name = await leader(js)
            if name:
                return name
        except (nats.errors.Error, TimeoutError):  # the cluster may still be electing
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.2)
