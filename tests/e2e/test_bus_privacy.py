"""What the bus carries, keeps and lets read, under `his up`: a diagnosis code and a lab value,
seeded through the API, travel in no event at all (the record entry's event names its kind;
patients asks laboratory for the values), and the chart still shows the value; a result's test
codes and flags travel sealed, so that even the operator, who may read every stream, sees
ciphertext, while the bill, the doctor's alert and the reagents still follow; nothing of them
sits in JetStream's files in clear (the store is encrypted with a key kept in the secrets
directory); and a service reads only the streams it consumes."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from his.kernel import bus
from his.kernel.pki import WorkloadIdentity
from tests.e2e.harness import Hospital, assign, create_user, published_events, register_patient
from tests.support.waiting import wait_for, wait_until


def in_clear(root: Path, needles: list[bytes]) -> dict[str, list[str]]:
    """Which of ``needles`` each file under ``root`` holds, byte for byte."""
    found: dict[str, list[str]] = {}
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits = [n.decode() for n in needles if n in data]
            if hits:
                found[str(path.relative_to(root))] = hits
    return found


def test_no_seeded_diagnosis_code_or_lab_value_travels_and_the_chart_still_shows_the_value(
    shared_hospital: Hospital,
) -> None:
    h, gw = shared_hospital, shared_hospital.gateway
    admin = h.login()
    doctor_id, doctor = create_user(h, admin, "DOCTOR", "at-rest")
    _, tech = create_user(h, admin, "LAB_TECH", "at-rest")
    patient = register_patient(h, admin, "Atrest")
    assign(h, admin, patient["id"], doctor_id)
    # Values nobody else uses: a diagnosis code of this run, a potassium of four decimals.
    code = f"Q{uuid.uuid4().int % 100:02d}.{uuid.uuid4().hex[:6].upper()}"
    value = f"5.{uuid.uuid4().int % 10**6:06d}"
    entry = {"kind": "diagnosis", "code": code, "text": "Seen at rest."}
    r = httpx.post(f"{gw}/api/patients/{patient['id']}/records", json=entry, headers=doctor, timeout=10)
    assert r.status_code == 201, r.text
    entry_id = r.json()["id"]
    order = {"patient_id": patient["id"], "tests": ["K"], "priority": "routine"}
    oid = httpx.post(f"{gw}/api/lab/orders", json=order, headers=doctor, timeout=10).json()["id"]
    for action in ("collect", "start"):
        assert httpx.post(f"{gw}/api/lab/orders/{oid}/{action}", headers=tech, timeout=10).status_code == 200
    results = {"results": [{"code": "K", "value": value}]}
    r = httpx.post(f"{gw}/api/lab/orders/{oid}/results", json=results, headers=tech, timeout=10)
    assert r.status_code == 200, r.text

    # The value reaches the chart (patients asked laboratory for it when the event came)...
    def charted() -> bool:
        chart = httpx.get(f"{gw}/api/patients/{patient['id']}/lab-results", headers=doctor, timeout=10)
        return chart.status_code == 200 and any(
            x["value"] == value for o in chart.json()["items"] if o["order_id"] == oid for x in o["results"]
        )

    wait_until(charted, what="the lab value in the chart")
    # ...and neither it nor the code is in any event of any stream, once both events are there.
    dumps: list[str] = []

    def both_published() -> bool:
        dumps.append(published_events(h))
        return f'"entry_id":"{entry_id}"' in dumps[-1] and f'"order_id":"{oid}"' in dumps[-1]

    wait_until(both_published, what="the record entry's and the results' events published")
    dump = dumps[-1]
    assert "his.patients.record_entry.added.v2" in dump and "his.laboratory.order.resulted.v3" in dump
    assert code not in dump, "the diagnosis code travelled"
    assert value not in dump, "the lab value travelled"
    store = h.data / "nats"
    assert any(store.rglob("*.blk")), "no JetStream message block found: the scan would prove nothing"
    assert in_clear(store, [code.encode(), value.encode()]) == {}
    assert "cipher: chachapoly" in (store / "nats.conf").read_text()


def events_of(dump: str, order_id: str) -> list[dict[str, Any]]:
    """The events (envelopes) in the streams' dump that name this order anywhere."""
    found = []
    for line in dump.splitlines():
        if order_id in line:
            _, _, rest = line.split(" ", 2)
            found.append(json.JSONDecoder().raw_decode(rest)[0])
    return found


async def reagent_rows(admin_dsn: str, order_id: str) -> int:
    """Inventory's consumptions and back-orders for a lab order's reagents, in its own tables."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        found: int = await conn.fetchval(
            """SELECT (SELECT count(*) FROM inventory.consumption WHERE source_id = $1)
                    + (SELECT count(*) FROM inventory.backorder WHERE source_id = $1)""",
            uuid.UUID(order_id),
        )
        return found
    finally:
        await conn.close()


def test_a_results_test_codes_and_flags_travel_sealed_and_are_still_billed_alerted_and_used(
    shared_hospital: Hospital,
) -> None:
    """The results' event of a critical potassium carries its order, patient, doctor, priority
    and time in clear, and the test's code, flag and charge only in its sealed box: no event of
    any stream, read with the operator's identity, holds them in clear. Billing still bills the
    test, notifications still alerts the doctor naming test and flag, inventory still accounts
    for the reagents of the order (in its own tables: no stock event names the order), and nothing
    was dead-lettered."""
    h, gw = shared_hospital, shared_hospital.gateway
    admin = h.login()
    doctor_id, doctor = create_user(h, admin, "DOCTOR", "sealed")
    _, tech = create_user(h, admin, "LAB_TECH", "sealed")
    patient = register_patient(h, admin, "Sealed")
    assign(h, admin, patient["id"], doctor_id)
    order = {"patient_id": patient["id"], "tests": ["K"], "priority": "stat"}
    oid = httpx.post(f"{gw}/api/lab/orders", json=order, headers=doctor, timeout=10).json()["id"]
    for action in ("collect", "start"):
        assert httpx.post(f"{gw}/api/lab/orders/{oid}/{action}", headers=tech, timeout=10).status_code == 200
    r = httpx.post(
        f"{gw}/api/lab/orders/{oid}/results",
        json={"results": [{"code": "K", "value": "7.0"}]},
        headers=tech,
        timeout=10,
    )
    assert r.status_code == 200 and r.json()["results"][0]["flag"] == "HH", r.text

    def billed() -> bool:
        r = httpx.get(f"{gw}/api/invoices", params={"patient_id": str(patient["id"])}, headers=admin, timeout=10)
        return r.status_code == 200 and any(x["code"] == "lab.K" for i in r.json()["items"] for x in i["lines"])

    def alerted() -> list[dict[str, Any]]:
        r = httpx.get(f"{gw}/api/notifications/alerts", headers=doctor, timeout=10)
        return [a["detail"] for a in r.json()["items"] if a["detail"].get("order_id") == oid]

    wait_until(billed, what="the test billed from the sealed charges")
    wait_until(lambda: bool(alerted()), what="the doctor alerted from the sealed flags")
    assert alerted()[0]["flagged"] == [{"code": "K", "flag": "HH"}] and alerted()[0]["critical"] is True

    def reagents_accounted() -> bool:
        return asyncio.run(reagent_rows(str(h.state()["admin_dsn"]), oid)) > 0

    wait_until(reagents_accounted, what="inventory's consumption or back-order of the order's reagents")
    events = events_of(published_events(h), oid)
    # Inventory keeps the order its reagents were used for; no stock event names it on the bus.
    assert not [e for e in events if str(e.get("type")).startswith("his.inventory.stock.")]
    [resulted] = [e for e in events if e.get("type") == "his.laboratory.order.resulted.v3"]
    assert set(resulted["data"]) == {"order_id", "patient_id", "ordered_by", "priority", "resulted_at", "sealed"}
    box = str(resulted["data"]["sealed"])
    assert b"HH" not in base64.urlsafe_b64decode(box + "=" * (-len(box) % 4)), "encoded, not sealed"
    for e in events:  # every event naming the order: none names its test or flag, escaped or not
        text = json.dumps(e.get("data", e)).replace("\\", "")
        assert '"K"' not in text and '"HH"' not in text and "lab.K" not in text, e
    assert h.status()["dlq_depth"] == 0


async def test_a_service_reads_only_the_streams_it_consumes(shared_hospital: Hospital) -> None:
    """Billing consumes patients', admissions', scheduling's, the laboratory's and inventory's
    events, not identity's: it may neither read a message of identity's stream, nor learn of the
    stream, nor create a consumer of its own name on it (which would read every event there)."""
    pki = shared_hospital.data / "pki"
    errors: list[Exception] = []

    async def record(exc: Exception) -> None:
        errors.append(exc)

    billing = await bus.connect(
        str(shared_hospital.state()["nats_url"]),
        name="probe-streams",
        identity=WorkloadIdentity(pki / "billing.crt", pki / "billing.key", pki / "ca.crt"),
        service="billing",
        error_cb=record,
        allow_reconnect=False,
    )
    try:
        js = billing.jetstream(timeout=2)
        assert (await js.consumer_info("HIS_PATIENTS", "billing_patient_registered")).name  # its own: fine
        refused = (
            "$JS.API.STREAM.MSG.GET.HIS_IDENTITY",
            "$JS.API.DIRECT.GET.HIS_IDENTITY",
            "$JS.API.STREAM.INFO.HIS_IDENTITY",
            "$JS.API.CONSUMER.CREATE.HIS_IDENTITY.billing_patient_registered",
            "$JS.API.CONSUMER.DURABLE.CREATE.HIS_IDENTITY.billing_patient_registered",
        )
        for subject in refused:
            await billing.publish(subject, b"{}", reply=f"{bus.inbox_prefix('billing')}.probe")
        await billing.flush(timeout=5)

        async def all_refused() -> bool:
            return len(errors) >= len(refused)

        await wait_for(all_refused, timeout=5, what="a permission violation for each")
        text = " ".join(str(e) for e in errors).lower()  # nats-py lower-cases the server's message
        for subject in refused:
            assert f'publish to "{subject.lower()}"' in text, (subject, text)
    finally:
        await billing.close()
