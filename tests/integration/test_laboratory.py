"""The laboratory on the real database and NATS: the seeded catalogue, results flagged and
priced that reach the patient's chart exactly once even when the event is delivered twice, an
abnormal or critical result alerting the ordering doctor (and nobody else) once, concurrent steps
on one order serialised by its row lock, and the patient directory learnt from events.

Who may do what, the state machine and bad input are the use cases' unit tests
(``tests/unit/test_laboratory_use_cases.py``, over the in-memory ports whose contract with this
database is ``test_laboratory_contract.py``).

The patient directory is the package's in-memory fake here; its gRPC adapter runs under `his up`.
The chart (patients) and the alerts (notifications) are those services' real consumers and routes.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, cast

import aiohttp
import asyncpg
import httpx
import pytest
from nats.aio.client import Client as NATS

from his.clients.laboratory import RESULTS_PATH, HttpLaboratory
from his.clients.patients import CareBasis, FakePatients, PatientRef
from his.events.laboratory import (
    OLDER_RESULTED,
    LabOrderResulted,
    LabOrderResultedV1,
    LabOrderResultedV2,
    ResultItem,
    opening,
)
from his.kernel import migrations, streams
from his.kernel.consumer import ConsumerLoop, Subscription
from his.kernel.db import Database
from his.kernel.events import Envelope
from his.kernel.outbox import OutboxRelay
from his.laboratory.app import http as lab_http
from his.notifications import handlers as notifications_handlers
from his.notifications.app import http as notifications_http
from his.patients import handlers as patients_handlers
from his.patients.app import http as patients_http
from his.patients.domain import NewPatient, Sex
from his.patients.store import PatientsStore
from tests.support.api import bearer, serve
from tests.support.sealing import SEAL
from tests.support.waiting import wait_for

RESULTED = "his.laboratory.order.resulted.v3"


class AsgiLaboratory(HttpLaboratory):
    """Patients' client of laboratory's results, its HTTP answered by the routes in this process
    (mutual TLS and the listener's list of callers are `his up`'s, ``tests/e2e``); ``down``
    makes laboratory unreachable, as a stopped process is."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        super().__init__("http://laboratory", None)
        self.client, self.down, self.asked = client, False, 0
        #: Set while a question waits for ``held`` (when given) to be set: laboratory answering slowly.
        self.asking, self.held = asyncio.Event(), cast("asyncio.Event | None", None)

    async def _get(self, order_id: uuid.UUID) -> tuple[int, bytes]:
        self.asked += 1
        if self.held is not None:
            self.asking.set()
            await self.held.wait()
        if self.down:
            raise aiohttp.ClientConnectionError("connection refused")
        r = await self.client.get(RESULTS_PATH, params={"order_id": str(order_id)})
        return r.status_code, r.content


@dataclass
class Lab:
    client: httpx.AsyncClient
    db: Database
    chart: Database
    alerts: Database
    patients: FakePatients
    doctor: uuid.UUID
    #: Patients' client of laboratory's results.
    results: AsgiLaboratory

    def as_doctor(self) -> dict[str, str]:
        return bearer(self.doctor, "DOCTOR")

    async def patient(self, account: uuid.UUID | None = None) -> uuid.UUID:
        """A patient registered in patients (the chart) and known to the lab's fake directory, in
        the care of the lab's doctor (who may order for them)."""
        async with PatientsStore(self.chart).uow() as unit:
            added = await patients_handlers.register(
                unit, NewPatient("Deniz", "Lab", date(1980, 3, 4), Sex.FEMALE, user_id=account)
            )
        pid = added.id
        self.patients.patients[pid] = PatientRef(pid, account)
        self.patients.care[(pid, self.doctor)] = CareBasis(in_care=True, emergency=False)
        return pid

    async def order(self, patient: uuid.UUID, *tests: str, priority: str = "routine") -> str:
        body = {"patient_id": str(patient), "tests": list(tests), "priority": priority}
        r = await self.client.post("/lab/orders", json=body, headers=self.as_doctor())
        assert r.status_code == 201, r.text
        assert r.json()["status"] == "placed"
        return str(r.json()["id"])

    async def step(self, order: str, action: str, role: str = "LAB_TECH") -> httpx.Response:
        who = self.as_doctor() if role == "DOCTOR" else bearer(uuid.uuid4(), role)
        return await self.client.post(f"/lab/orders/{order}/{action}", headers=who)

    async def result(self, order: str, *results: dict[str, Any]) -> httpx.Response:
        return await self.client.post(
            f"/lab/orders/{order}/results", json={"results": list(results)}, headers=bearer(uuid.uuid4(), "LAB_TECH")
        )

    async def in_state(self, state: str, patient: uuid.UUID) -> str:
        oid = await self.order(patient, "K")
        path = {
            "placed": [],
            "collected": ["collect"],
            "in_progress": ["collect", "start"],
            "resulted": ["collect", "start"],
            "cancelled": ["cancel"],
        }[state]
        for action in path:
            assert (await self.step(oid, action)).status_code == 200
        if state == "resulted":
            assert (await self.result(oid, {"code": "K", "value": "4.2"})).status_code == 200
        return oid


async def _database(admin_dsn: str, service: str, truncate: str) -> Database:
    dsn = await migrations.provision(admin_dsn, service, f"pw-{service}-lab-test")
    await migrations.upgrade(admin_dsn, service)
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"TRUNCATE {truncate}")
    finally:
        await conn.close()
    db = Database(dsn, schema=service, max_size=8)
    await db.open()
    return db


@pytest.fixture
async def lab(admin_dsn: str) -> AsyncIterator[Lab]:
    db = await _database(
        admin_dsn,
        "laboratory",
        "laboratory.lab_result, laboratory.lab_order_test, laboratory.lab_order, laboratory.known_patient, "
        "laboratory.outbox, laboratory.inbox",
    )
    chart = await _database(admin_dsn, "patients", "patients.lab_result, patients.inbox")
    alerts = await _database(admin_dsn, "notifications", "notifications.alert, notifications.inbox")
    patients = FakePatients()
    routers = (
        lab_http(db, patients, SEAL),
        patients_http(chart),
        notifications_http(alerts),
    )
    async with serve(*routers, base_url="http://laboratory") as client:
        yield Lab(client, db, chart, alerts, patients, uuid.uuid4(), AsgiLaboratory(client))
    for d in (db, chart, alerts):
        await d.close()


async def test_the_catalogue_lists_tests_with_prices(lab: Lab) -> None:
    assert (await lab.client.get("/lab/catalog")).status_code == 401
    r = await lab.client.get("/lab/catalog", headers=bearer(uuid.uuid4(), "PATIENT"))
    assert r.status_code == 200
    items = {t["code"]: t for t in r.json()["items"]}
    assert {"HGB", "GLU", "HBA1C", "CREA", "K", "NA", "CRP", "TSH", "ALT", "TROPI", "INR", "UA"} <= set(items)
    assert items["K"] == {
        "code": "K",
        "label": "Potassium",
        "specimen": "serum",
        "unit": "mmol/L",
        "reference_low": "3.5",
        "reference_high": "5.1",
        "critical_low": "2.5",
        "critical_high": "6.5",
        "price": "65.00",
        "currency": "TRY",
    }
    assert all(t["currency"] == "TRY" and Decimal(t["price"]) > 0 for t in items.values())


async def _run(db: Database, nc: NATS, *subs: tuple[Database, Subscription]) -> tuple[list[Any], list[ConsumerLoop]]:
    js = nc.jetstream(timeout=5.0)
    await streams.declare(js, ["laboratory"])
    relay = OutboxRelay(db.dsn, js, schema="laboratory", signal=db.signal, poll_seconds=0.2)
    consumers = [ConsumerLoop(d, nc, js, s) for d, s in subs]
    tasks = [asyncio.create_task(relay.run()), *(asyncio.create_task(c.run()) for c in consumers)]
    return tasks, consumers


def chart_subscription(lab: Lab) -> Subscription:
    """Patients' consumer of results as its app declares it, asking this laboratory, and quick to
    deliver again."""
    return Subscription.prepared(
        "patients_lab_order_resulted",
        LabOrderResulted,
        patients_handlers.released_by(lab.results),
        patients_handlers.on_lab_order_resulted,
        older=OLDER_RESULTED,
        backoff=(0.2,),
        max_deliver=50,
    )


async def test_a_result_is_flagged_priced_charted_once_and_alerts_only_the_ordering_doctor(lab: Lab, nc: NATS) -> None:
    chart_sub = chart_subscription(lab)
    on_alert = opening(SEAL, notifications_handlers.on_lab_order_resulted)
    alert_sub = Subscription.of("notifications_lab_order_resulted", LabOrderResulted, on_alert, older=OLDER_RESULTED)
    tasks, (chart_consumer, alert_consumer) = await _run(lab.db, nc, (lab.chart, chart_sub), (lab.alerts, alert_sub))
    try:
        account = uuid.uuid4()
        patient = await lab.patient(account)
        oid = await lab.order(patient, "K", "GLU", "UA", priority="stat")
        nurse = uuid.uuid4()
        lab.patients.care[(patient, nurse)] = CareBasis(in_care=True, emergency=False)
        collected = await lab.client.post(f"/lab/orders/{oid}/collect", headers=bearer(nurse, "NURSE"))
        assert collected.json()["status"] == "collected"
        assert (await lab.step(oid, "start")).json()["status"] == "in_progress"
        done = await lab.result(
            oid,
            {"code": "UA", "value": "negative", "flag": "N"},
            {"code": "K", "value": "6.9", "unit": "mmol/L"},
            {"code": "GLU", "value": "85", "flag": "N"},
        )
        assert done.status_code == 200, done.text
        assert done.json()["status"] == "resulted"
        assert [(x["code"], x["value"], x["flag"]) for x in done.json()["results"]] == [
            ("K", "6.9", "HH"),
            ("GLU", "85", "N"),
            ("UA", "negative", "N"),
        ]

        # The event: ids in clear; flags, the catalogue's prices as charges, abnormal and critical
        # sealed; no value and no personal data.
        payload = await lab.db.pool.fetchval("SELECT payload FROM outbox WHERE subject = $1", RESULTED)
        env = Envelope.from_json(bytes(payload))
        data = json.loads(bytes(payload))["data"]  # the event as it travels
        assert data == env.data
        assert data["order_id"] == oid and data["patient_id"] == str(patient)
        assert data["ordered_by"] == str(lab.doctor) and data["priority"] == "stat"
        assert set(data) == {"order_id", "patient_id", "ordered_by", "priority", "resulted_at", "sealed"}
        assert not any(f'"{x}"'.encode() in bytes(payload) for x in ("K", "GLU", "UA", "HH", "N"))  # sealed
        assert b"6.9" not in bytes(payload) and b"negative" not in bytes(payload)  # the values stay in laboratory
        travelled = env.model()
        assert isinstance(travelled, LabOrderResulted)
        data = travelled.opened(SEAL).model_dump(mode="json")  # as billing, inventory, notifications open it
        flags = [{"code": "K", "flag": "HH"}, {"code": "GLU", "flag": "N"}, {"code": "UA", "flag": "N"}]
        assert data["results"] == flags
        assert [(c["code"], Decimal(c["amount"]), c["currency"]) for c in data["charges"]] == [
            ("K", Decimal("65.00"), "TRY"),
            ("GLU", Decimal("60.00"), "TRY"),
            ("UA", Decimal("80.00"), "TRY"),
        ]
        assert data["abnormal"] is True and data["critical"] is True
        assert b"Deniz" not in bytes(payload)

        async def charted() -> bool:
            count = await lab.chart.pool.fetchval("SELECT count(*) FROM lab_result WHERE order_id = $1", uuid.UUID(oid))
            return bool(count == 3)

        await wait_for(charted, what="the results in the chart")

        async def alerted() -> bool:
            return int(await lab.alerts.pool.fetchval("SELECT count(*) FROM alert WHERE kind = 'lab_result'")) == 1

        await wait_for(alerted, what="the doctor's alert")

        # The same event delivered again (a second stream message, as after a lost ack): the
        # inboxes acknowledge it without applying it a second time.
        js = nc.jetstream(timeout=5.0)
        await js.publish(RESULTED, bytes(payload))

        async def redelivered() -> bool:
            return chart_consumer.stats.duplicates >= 1 and alert_consumer.stats.duplicates >= 1

        await wait_for(redelivered, what="the redelivery to reach both consumers")
        assert chart_consumer.stats.applied == 1 and alert_consumer.stats.applied == 1
        assert await lab.chart.pool.fetchval("SELECT count(*) FROM lab_result") == 3
        assert await lab.alerts.pool.fetchval("SELECT count(*) FROM alert") == 1

        # Should the results come again under another event id, the chart keeps one row per test.
        again = Envelope.wrap(env.model(), aggregate_id=oid)
        resulted = again.model()
        assert isinstance(resulted, LabOrderResulted)
        given = await patients_handlers.released_by(lab.results)(again, resulted)
        async with lab.chart.uow() as uow:
            await patients_handlers.on_lab_order_resulted(uow, again, resulted, given)
        async with lab.alerts.uow() as uow:
            await on_alert(uow, again, resulted)
        assert await lab.chart.pool.fetchval("SELECT count(*) FROM lab_result") == 3
        assert await lab.alerts.pool.fetchval("SELECT count(*) FROM alert") == 1

        # The chart, read by the patient.
        chart = await lab.client.get(f"/patients/{patient}/lab-results", headers=bearer(account, "PATIENT"))
        assert chart.status_code == 200, chart.text
        (entry,) = chart.json()["items"]
        assert entry["order_id"] == oid and entry["priority"] == "stat"
        assert [
            (x["code"], x["value"], x["unit"], x["reference_low"], x["reference_high"], x["flag"])
            for x in entry["results"]
        ] == [
            ("K", "6.9", "mmol/L", "3.5", "5.1", "HH"),
            ("GLU", "85", "mg/dL", "70", "99", "N"),
            ("UA", "negative", None, None, None, "N"),
        ]

        # The alert: for the ordering doctor only, with ids, codes and flags.
        mine = (await lab.client.get("/notifications/alerts", headers=lab.as_doctor())).json()["items"]
        assert [(a["kind"], a["patient_id"]) for a in mine] == [("lab_result", str(patient))]
        assert mine[0]["detail"] | {"resulted_at": None} == {
            "order_id": oid,
            "priority": "stat",
            "critical": True,
            "abnormal": True,
            "flagged": [{"code": "K", "flag": "HH"}],
            "resulted_at": None,
        }
        other = await lab.client.get("/notifications/alerts", headers=bearer(uuid.uuid4(), "DOCTOR"))
        assert other.status_code == 200 and other.json()["items"] == []
        admin = await lab.client.get("/notifications/alerts", headers=bearer(uuid.uuid4(), "ADMIN"))
        assert all(a["kind"] != "lab_result" for a in admin.json()["items"])
        assert (await lab.client.get("/notifications/alerts", headers=bearer(account, "PATIENT"))).status_code == 403

        # A normal result is charted and alerts nobody.
        normal = await lab.in_state("resulted", patient)

        async def charted_too() -> bool:
            return bool(
                await lab.chart.pool.fetchval("SELECT count(*) FROM lab_result WHERE order_id = $1", uuid.UUID(normal))
            )

        await wait_for(charted_too, what="the normal result in the chart")
        await wait_for(lambda: _applied(alert_consumer, 2), what="the alert consumer to see the normal result")
        assert await lab.alerts.pool.fetchval("SELECT count(*) FROM alert") == 1
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _applied(consumer: ConsumerLoop, n: int) -> bool:
    return consumer.stats.applied >= n


async def _charted(lab: Lab, oid: str) -> list[tuple[str, str]]:
    rows = await lab.chart.pool.fetch(
        "SELECT code, value FROM lab_result WHERE order_id = $1 ORDER BY position", uuid.UUID(oid)
    )
    return [(r["code"], r["value"]) for r in rows]


async def test_laboratory_is_asked_before_the_charts_transaction_opens(lab: Lab, nc: NATS) -> None:
    """No transaction waits on the network: while laboratory is slow to answer, the chart's
    consumer holds nothing in its database (no inbox row claimed, no lock), and once it answers
    the result is charted."""
    lab.results.held = asyncio.Event()
    tasks, _ = await _run(lab.db, nc, (lab.chart, chart_subscription(lab)))
    try:
        patient = await lab.patient()
        oid = await lab.in_state("in_progress", patient)
        assert (await lab.result(oid, {"code": "K", "value": "4.2"})).status_code == 200
        await asyncio.wait_for(lab.results.asking.wait(), timeout=20)
        await asyncio.sleep(0.2)  # were a transaction open for the question, it would be by now
        locked = await lab.chart.pool.fetchval(
            """SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
               WHERE c.relnamespace = 'patients'::regnamespace AND c.relname IN ('inbox', 'lab_result')
                 AND l.pid <> pg_backend_pid()"""
        )
        in_transaction = await lab.chart.pool.fetchval(
            """SELECT count(*) FROM pg_stat_activity
               WHERE datname = current_database() AND state LIKE 'idle in transaction%'"""
        )
        assert (locked, in_transaction) == (0, 0)
        lab.results.held.set()

        async def charted() -> bool:
            return await _charted(lab, oid) == [("K", "4.2")]

        await wait_for(charted, what="the result charted once laboratory answers")
    finally:
        lab.results.held.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_while_laboratory_is_down_the_result_comes_back_until_it_is_charted_once(lab: Lab, nc: NATS) -> None:
    """The values are asked of laboratory when the event is applied: an outage is a failure the
    consumer retries (never a dead letter at once, never an empty chart), and the result is
    charted once, with laboratory's values, when laboratory answers again."""
    lab.results.down = True
    tasks, (consumer,) = await _run(lab.db, nc, (lab.chart, chart_subscription(lab)))
    try:
        patient = await lab.patient()
        oid = await lab.in_state("in_progress", patient)
        assert (await lab.result(oid, {"code": "K", "value": "5.813"})).status_code == 200

        async def retried() -> bool:
            return consumer.stats.failed >= 2

        await wait_for(retried, what="the event delivered again while laboratory is down")
        assert consumer.stats.terminated == 0 and await _charted(lab, oid) == []
        lab.results.down = False

        async def charted() -> bool:
            return await _charted(lab, oid) == [("K", "5.813")]

        await wait_for(charted, what="the result charted once laboratory answers")
        assert consumer.stats.applied == 1
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_an_event_of_the_old_version_left_in_the_stream_is_charted_with_laboratorys_values(
    lab: Lab, nc: NATS
) -> None:
    """A v1 event published before the upgrade (values inside) and a v2 one (codes and flags in
    clear) are still read, as v3: the chart takes laboratory's values, not the ones that
    travelled."""
    tasks, (consumer,) = await _run(lab.db, nc, (lab.chart, chart_subscription(lab)))
    try:
        patient = await lab.patient()
        oid = await lab.in_state("resulted", patient)  # K 4.2 in laboratory
        await wait_for(lambda: _applied(consumer, 1), what="the v3 event applied")
        await lab.chart.pool.execute("DELETE FROM lab_result WHERE order_id = $1", uuid.UUID(oid))  # as if never
        old = LabOrderResultedV1(
            order_id=uuid.UUID(oid),
            patient_id=patient,
            ordered_by=lab.doctor,
            priority="routine",
            resulted_at=datetime.now(UTC),
            results=[ResultItem(code="K", value="9.99", flag="HH")],
            charges=[],
            abnormal=True,
            critical=True,
        )
        js = nc.jetstream(timeout=5.0)
        await js.publish(LabOrderResultedV1.type, Envelope.wrap(old, aggregate_id=oid).to_json())

        await wait_for(lambda: _applied(consumer, 2), what="the v1 event applied")
        assert await _charted(lab, oid) == [("K", "4.2")]
        await lab.chart.pool.execute("DELETE FROM lab_result WHERE order_id = $1", uuid.UUID(oid))
        v2 = LabOrderResultedV2(**old.upcast().opened(SEAL).model_dump())
        await js.publish(LabOrderResultedV2.type, Envelope.wrap(v2, aggregate_id=oid).to_json())
        await wait_for(lambda: _applied(consumer, 3), what="the v2 event applied")
        assert await _charted(lab, oid) == [("K", "4.2")]
        assert consumer.stats.terminated == 0
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_the_chart_shows_lab_results_to_the_patient_and_clinicians_in_care_only(lab: Lab) -> None:
    """The patients service's view of lab results (its own route, over its own copy): the
    patient and clinicians in their care; other staff are refused, another's record is not found."""
    me, stranger = uuid.uuid4(), uuid.uuid4()
    mine, theirs = await lab.patient(me), await lab.patient(stranger)
    as_me = bearer(me, "PATIENT")
    assert (await lab.client.get(f"/patients/{mine}/lab-results", headers=as_me)).json() == {"items": []}
    outside = await lab.client.get(f"/patients/{mine}/lab-results", headers=lab.as_doctor())
    assert outside.status_code == 403 and "emergency_access" in outside.json()
    for role in ("RECEPTIONIST", "BILLING", "LAB_TECH", "ADMIN"):
        refused = await lab.client.get(f"/patients/{mine}/lab-results", headers=bearer(uuid.uuid4(), role))
        assert refused.status_code == 403
    assert (await lab.client.get(f"/patients/{theirs}/lab-results", headers=as_me)).status_code == 404
    assert (await lab.client.get(f"/patients/{uuid.uuid4()}/lab-results", headers=as_me)).status_code == 404


async def test_concurrent_steps_on_one_order_are_serialised(lab: Lab) -> None:
    patient = await lab.patient()
    oid = await lab.in_state("in_progress", patient)
    body = {"code": "K", "value": "4.4"}
    outcomes = await asyncio.gather(*(lab.result(oid, body) for _ in range(5)), lab.step(oid, "cancel"))
    codes = sorted(r.status_code for r in outcomes)
    assert codes == [200] + [409] * 5, codes
    final = (await lab.client.get(f"/lab/orders/{oid}", headers=lab.as_doctor())).json()["status"]
    assert final in ("resulted", "cancelled")
    resulted = await lab.db.pool.fetchval("SELECT count(*) FROM outbox WHERE subject = $1", RESULTED)
    assert resulted == (1 if final == "resulted" else 0)
    assert await lab.db.pool.fetchval("SELECT count(*) FROM lab_result") == resulted


async def test_a_patient_known_from_the_registration_event_reads_their_orders(lab: Lab) -> None:
    from his.clients import replica
    from his.events.patients import PatientRegistered

    account, pid = uuid.uuid4(), uuid.uuid4()
    ev = PatientRegistered(patient_id=pid, account_id=account)
    async with lab.db.uow() as uow:
        await replica.on_patient_registered(uow, Envelope.wrap(ev, aggregate_id=pid), ev)
    # The doctor orders in the patient's care (asked of the directory, which knows of no account);
    # then the directory is down: the event is enough for the patient to own their order.
    lab.patients.patients[pid] = PatientRef(pid, None)
    lab.patients.care[(pid, lab.doctor)] = CareBasis(in_care=True, emergency=False)
    oid = await lab.order(pid, "TSH")
    lab.patients.down = True
    mine = await lab.client.get(f"/lab/orders/{oid}", headers=bearer(account, "PATIENT"))
    assert mine.status_code == 200 and mine.json()["tests"] == ["TSH"]
    assert (await lab.client.get(f"/lab/orders/{oid}", headers=bearer(uuid.uuid4(), "PATIENT"))).status_code == 404
