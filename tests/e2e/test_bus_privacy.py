"""What the bus carries, keeps and lets read, under `his up`: a diagnosis code and a lab value,
seeded through the API, travel in no event at all (the record entry's event names its kind, the
results' event each test's code and flag; patients asks laboratory for the values), and the chart
still shows the value; nothing of them sits in JetStream's files in clear (the store is encrypted
with a key kept in the secrets directory); and a service reads only the streams it consumes."""

from __future__ import annotations

import uuid
from pathlib import Path

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
    assert "his.patients.record_entry.added.v2" in dump and "his.laboratory.order.resulted.v2" in dump
    assert code not in dump, "the diagnosis code travelled"
    assert value not in dump, "the lab value travelled"
    store = h.data / "nats"
    assert any(store.rglob("*.blk")), "no JetStream message block found: the scan would prove nothing"
    assert in_clear(store, [code.encode(), value.encode()]) == {}
    assert "cipher: chachapoly" in (store / "nats.conf").read_text()


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
