"""Medical-record entries on the real database: clinicians in the patient's care write and read
them, the patient reads their own, other staff do not; the text is encrypted at rest, bound to
its row, and never in the event."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from his.kernel import migrations
from his.kernel.crypto import FieldCipher
from his.kernel.db import Database
from his.patients.app import http as patients_http
from tests.support.api import bearer, serve
from tests.support.portal import CODES, link_account

TEXT = "Allergic to penicillin: anaphylaxis in 2019; carries an adrenaline pen"


@pytest.fixture
async def api(admin_dsn: str) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    dsn = await migrations.provision(admin_dsn, "patients", "pw-patients-records")
    await migrations.upgrade(admin_dsn, "patients")
    db = Database(dsn, schema="patients", max_size=4)
    await db.open()

    patients = patients_http(db, cipher=FieldCipher([os.urandom(32)]), invitation_codes=CODES)
    async with serve(patients, base_url="http://patients") as client:
        yield client, admin_dsn
    await db.close()


async def test_records_are_for_carers_and_the_patient_and_encrypted_at_rest(
    api: tuple[httpx.AsyncClient, str],
) -> None:
    client, admin_dsn = api
    account, carer, stranger = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    conn = await asyncpg.connect(admin_dsn)
    try:
        for doctor in (carer, stranger):
            await conn.execute("INSERT INTO patients.clinician (user_id, roles) VALUES ($1, '{DOCTOR}')", doctor)
    finally:
        await conn.close()
    clerk = bearer(uuid.uuid4(), "RECEPTIONIST")
    r = await client.post(
        "/patients",
        headers=clerk,
        json={
            "given_name": "Ece",
            "family_name": "Records",
            "birth_date": "1990-05-06",
            "sex": "female",
            "email": "ece@example.org",
        },
    )
    pid = r.json()["id"]
    await link_account(client, pid, account)
    assert (
        await client.post(f"/patients/{pid}/care-team", headers=clerk, json={"user_id": str(carer)})
    ).status_code == 201

    entry = {"kind": "allergy", "code": "Z88.0", "text": TEXT}
    written = await client.post(f"/patients/{pid}/records", headers=bearer(carer, "DOCTOR"), json=entry)
    assert written.status_code == 201, written.text
    # Read back by the carer and by the patient.
    for who in (bearer(carer, "DOCTOR"), bearer(account, "PATIENT")):
        items = (await client.get(f"/patients/{pid}/records", headers=who)).json()["items"]
        assert [(i["kind"], i["code"], i["text"]) for i in items] == [("allergy", "Z88.0", TEXT)]
    # A clinician outside the patient's care is offered emergency access; others are refused.
    outside = await client.get(f"/patients/{pid}/records", headers=bearer(stranger, "DOCTOR"))
    assert outside.status_code == 403 and "emergency_access" in outside.json()
    assert (
        await client.post(f"/patients/{pid}/records", headers=bearer(stranger, "DOCTOR"), json=entry)
    ).status_code == 403
    for role in ("RECEPTIONIST", "BILLING", "ADMIN"):
        refused = await client.get(f"/patients/{pid}/records", headers=bearer(uuid.uuid4(), role))
        assert refused.status_code == 403 and TEXT not in refused.text
    assert (
        await client.post(f"/patients/{pid}/records", headers=bearer(account, "PATIENT"), json=entry)
    ).status_code == 403
    assert (await client.get(f"/patients/{pid}/records", headers=bearer(uuid.uuid4(), "PATIENT"))).status_code == 404
    assert (await client.get(f"/patients/{uuid.uuid4()}/records", headers=bearer(carer, "DOCTOR"))).status_code == 404

    conn = await asyncpg.connect(admin_dsn)
    try:
        stored = await conn.fetchrow(
            "SELECT text_cipher FROM patients.record_entry WHERE patient_id = $1", uuid.UUID(pid)
        )
        assert stored is not None
        assert b"penicillin" not in bytes(stored["text_cipher"])
        event = await conn.fetchval(
            "SELECT payload FROM patients.outbox WHERE subject = 'his.patients.record_entry.added.v1' ORDER BY id DESC"
        )
        assert b"penicillin" not in bytes(event) and b"Z88.0" in bytes(event)
        # A ciphertext moved to another patient's row does not decrypt there: the read refuses.
        other = await client.post(
            "/patients",
            headers=clerk,
            json={"given_name": "Kaan", "family_name": "Other", "birth_date": "1980-01-01", "sex": "male"},
        )
        await client.post(f"/patients/{other.json()['id']}/care-team", headers=clerk, json={"user_id": str(carer)})
        await conn.execute(
            """INSERT INTO patients.record_entry (id, patient_id, kind, text_cipher, author_id, author_roles)
               VALUES ($1, $2, 'note', $3, $4, '{DOCTOR}')""",
            uuid.uuid4(),
            uuid.UUID(other.json()["id"]),
            stored["text_cipher"],
            carer,
        )
    finally:
        await conn.close()
    moved = await client.get(f"/patients/{other.json()['id']}/records", headers=bearer(carer, "DOCTOR"))
    assert moved.status_code == 503 and TEXT not in moved.text


async def test_a_second_staff_role_does_not_lift_a_clinicians_care_requirement(
    api: tuple[httpx.AsyncClient, str],
) -> None:
    """A doctor who also holds a role-based role (reception, lab, billing, admin) reads and writes
    clinical entries only with a care relationship or an emergency grant, like any doctor: the
    other role gives master data, not the chart."""
    client, admin_dsn = api
    carer, dual = uuid.uuid4(), uuid.uuid4()
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute("INSERT INTO patients.clinician (user_id, roles) VALUES ($1, '{DOCTOR}')", carer)
        await conn.execute("INSERT INTO patients.clinician (user_id, roles) VALUES ($1, '{DOCTOR,RECEPTIONIST}')", dual)
    finally:
        await conn.close()
    clerk = bearer(uuid.uuid4(), "RECEPTIONIST")
    r = await client.post(
        "/patients",
        headers=clerk,
        json={"given_name": "Deniz", "family_name": "Dual", "birth_date": "1975-02-03", "sex": "female"},
    )
    pid = r.json()["id"]
    await client.post(f"/patients/{pid}/care-team", headers=clerk, json={"user_id": str(carer)})
    entry = {"kind": "note", "text": TEXT}
    assert (
        await client.post(f"/patients/{pid}/records", headers=bearer(carer, "DOCTOR"), json=entry)
    ).status_code == 201
    for roles in (("DOCTOR", "RECEPTIONIST"), ("NURSE", "ADMIN"), ("DOCTOR", "LAB_TECH"), ("DOCTOR", "BILLING")):
        who = bearer(dual, *roles)
        read = await client.get(f"/patients/{pid}/records", headers=who)
        assert read.status_code == 403 and TEXT not in read.text, (roles, read.status_code)
        wrote = await client.post(f"/patients/{pid}/records", headers=who, json={"kind": "note", "text": "x"})
        assert wrote.status_code == 403, (roles, wrote.status_code)
        assert (await client.get(f"/patients/{pid}", headers=who)).status_code == 200  # master data by role


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "gossip", "text": "x"},
        {"kind": "note", "text": ""},
        {"kind": "note", "text": "x" * 20_001},
        {"kind": "note", "text": "x", "code": "<b>"},
        {"kind": "note", "text": "x", "author_id": str(uuid.uuid4())},
    ],
)
async def test_bad_entries_are_422(api: tuple[httpx.AsyncClient, str], body: dict[str, str]) -> None:
    client, _ = api
    r = await client.post(f"/patients/{uuid.uuid4()}/records", headers=bearer(uuid.uuid4(), "DOCTOR"), json=body)
    assert r.status_code == 422
