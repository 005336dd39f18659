"""Medical-record entries on the real database: the text is encrypted in the table, bound to its
row, and never in the outbox. Who may read and write entries is tested over the in-memory ports
(``tests/unit/test_patients_use_cases.py``)."""

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


async def test_records_are_encrypted_at_rest_and_bound_to_their_row(
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
    read = await client.get(f"/patients/{pid}/records", headers=bearer(carer, "DOCTOR"))
    assert [(i["kind"], i["code"], i["text"]) for i in read.json()["items"]] == [("allergy", "Z88.0", TEXT)]

    conn = await asyncpg.connect(admin_dsn)
    try:
        stored = await conn.fetchrow(
            "SELECT text_cipher FROM patients.record_entry WHERE patient_id = $1", uuid.UUID(pid)
        )
        assert stored is not None
        assert b"penicillin" not in bytes(stored["text_cipher"])
        event = await conn.fetchval(
            "SELECT payload FROM patients.outbox WHERE subject = 'his.patients.record_entry.added.v2' ORDER BY id DESC"
        )
        # The event names the entry's kind: never its text, nor its code (a diagnosis: ADR 0032).
        assert event is not None and b"allergy" in bytes(event)
        assert b"penicillin" not in bytes(event) and b"Z88.0" not in bytes(event)
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
