"""Finding patients on the real database: accents, case and small typos do not matter; birth
date narrows; a likely duplicate stops a registration until it is confirmed; updates are checked
and announced by field name only. The service's clock stands half an hour after local midnight of
a hard date (``tests.support.calendar``), when the date in UTC is still the day before."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from his.clients.billing import FakeBillingTerms
from his.kernel import migrations
from his.kernel.db import Database
from his.patients.app import http as patients_http
from tests.support.api import Bearer, bearer, serve
from tests.support.calendar import HARD_DATES, HardDate
from tests.support.portal import CODES, link_account

CLERK = Bearer(uuid.uuid4(), "RECEPTIONIST")


@pytest.fixture
def hard() -> HardDate:
    return HARD_DATES[0]


@pytest.fixture
async def client(admin_dsn: str, hard: HardDate) -> AsyncIterator[tuple[httpx.AsyncClient, Database]]:
    dsn = await migrations.provision(admin_dsn, "patients", "pw-patients-search")
    await migrations.upgrade(admin_dsn, "patients")
    conn = await asyncpg.connect(admin_dsn)
    await conn.execute("TRUNCATE patients.patient CASCADE")
    await conn.close()
    db = Database(dsn, schema="patients", max_size=4, clock=hard.clock(0, 30))
    await db.open()

    service = patients_http(
        db,
        invitation_codes=CODES,
        payers=FakeBillingTerms(),
        timezone=hard.zone,
    )
    async with serve(service, base_url="http://patients") as c:
        yield c, db
    await db.close()


async def register(c: httpx.AsyncClient, given: str, family: str, born: str, **extra: Any) -> httpx.Response:
    body = {"given_name": given, "family_name": family, "birth_date": born, "sex": "female", **extra}
    return await c.post("/patients", headers=CLERK, json=body)


async def test_search_tolerates_accents_case_and_typos(client: tuple[httpx.AsyncClient, Database]) -> None:
    c, _ = client
    ayse = (await register(c, "Ayşe", "Yılmaz", "1980-02-03")).json()
    await register(c, "Mehmet", "Öztürk", "1975-06-07")
    await register(c, "Zeynep", "Kaya", "1980-02-03")
    for q in ("yilmaz", "YILMAZ", "Yılmaz", "Yilmas", "ayse yilmaz", "Aise Yilmaz"):
        found = (await c.get("/patients", params={"q": q}, headers=CLERK)).json()["items"]
        assert found and found[0]["id"] == ayse["id"], (q, found)
    assert (await c.get("/patients", params={"q": "ozturk"}, headers=CLERK)).json()["items"][0][
        "family_name"
    ] == "Öztürk"
    by_mrn = (await c.get("/patients", params={"q": ayse["mrn"].lower()}, headers=CLERK)).json()["items"]
    assert [p["id"] for p in by_mrn][:1] == [ayse["id"]]
    born = (await c.get("/patients", params={"birth_date": "1980-02-03"}, headers=CLERK)).json()["items"]
    assert {p["family_name"] for p in born} == {"Yılmaz", "Kaya"}
    both = (await c.get("/patients", params={"q": "kaya", "birth_date": "1980-02-03"}, headers=CLERK)).json()
    assert [p["family_name"] for p in both["items"]] == ["Kaya"]
    assert (await c.get("/patients", params={"q": "100%_\\"}, headers=CLERK)).status_code == 200
    assert (await c.get("/patients", headers=CLERK)).status_code == 422


async def test_a_likely_duplicate_needs_confirmation(client: tuple[httpx.AsyncClient, Database]) -> None:
    c, db = client
    first = (await register(c, "Elif", "Şahin", "1991-09-10", phone="+90 532 111 2233")).json()
    again = await register(c, "Elif", "Sahin", "1991-09-10")
    assert again.status_code == 409 and again.headers["content-type"] == "application/problem+json"
    assert [d["id"] for d in again.json()["possible_duplicates"]] == [first["id"]]
    assert "phone" not in again.json()["possible_duplicates"][0]
    same_phone = await register(c, "Someone", "Else", "2001-01-01", phone="+905321112233")
    assert same_phone.status_code == 409
    confirmed = await register(c, "Elif", "Sahin", "1991-09-10", confirm_duplicate=True)
    assert confirmed.status_code == 201
    assert (await register(c, "Elif", "Doğan", "1991-09-10")).status_code == 201  # a different person
    # Showing the duplicates was an audited read of the patient shown.
    shown = await db.pool.fetchval(
        "SELECT count(*) FROM outbox WHERE subject = 'his.patients.record.accessed.v1' "
        "AND convert_from(payload, 'UTF8') LIKE $1",
        f"%{first['id']}%",
    )
    assert shown >= 3  # created, and shown twice


async def test_updates_are_checked_announced_and_limited_for_patients(
    client: tuple[httpx.AsyncClient, Database],
) -> None:
    c, db = client
    account = uuid.uuid4()
    p = (await register(c, "Can", "Ak", "1970-01-01", email="can@example.org")).json()
    await link_account(c, p["id"], account)
    r = await c.patch(f"/patients/{p['id']}", headers=CLERK, json={"family_name": "Akın", "phone": "+90 555 000 1111"})
    assert r.status_code == 200 and r.json()["family_name"] == "Akın"
    event = await db.pool.fetchval(
        "SELECT convert_from(payload, 'UTF8') FROM outbox "
        "WHERE subject = 'his.patients.patient.updated.v1' ORDER BY id DESC"
    )
    assert '"fields":["family_name","phone"]' in event.replace(" ", "") and "Akın" not in event
    me = bearer(account, "PATIENT")
    assert (await c.patch(f"/patients/{p['id']}", headers=me, json={"email": "can.ak@example.org"})).status_code == 200
    assert (await c.patch(f"/patients/{p['id']}", headers=me, json={"birth_date": "1999-01-01"})).status_code == 403
    assert (await c.patch(f"/patients/{p['id']}", headers=CLERK, json={"birth_date": "2999-01-01"})).status_code == 422
    assert (await c.patch(f"/patients/{p['id']}", headers=CLERK, json={"email": "nope"})).status_code == 422
    assert (await c.patch(f"/patients/{p['id']}", headers=CLERK, json={"mrn": "X"})).status_code == 422
    other = bearer(uuid.uuid4(), "PATIENT")
    assert (await c.patch(f"/patients/{p['id']}", headers=other, json={"email": "x@example.org"})).status_code == 404
    assert (await c.patch(f"/patients/{uuid.uuid4()}", headers=CLERK, json={"phone": "+90 555 1"})).status_code == 404


@pytest.mark.parametrize("q", ["%%", "__", "  ", "%_", "\\\\", "a%", "_ _", "%%%%%%"])
async def test_a_search_without_real_characters_lists_no_one_but_is_a_422(
    client: tuple[httpx.AsyncClient, Database], q: str
) -> None:
    """``q=%%``, ``__`` or blanks listed every patient."""
    c, _ = client
    await register(c, "Nur", "Everyone", "1960-01-01")
    r = await c.get("/patients", params={"q": q}, headers=CLERK)
    assert r.status_code == 422 and "at least 2 letters or digits" in r.text, r.text


async def test_like_wildcards_in_a_search_match_only_themselves(client: tuple[httpx.AsyncClient, Database]) -> None:
    c, _ = client
    odd = (await register(c, "Eli", "Kaya_Demir", "1961-02-03")).json()
    await register(c, "Eli", "Kayadem", "1962-02-03")
    found = (await c.get("/patients", params={"q": "a_d"}, headers=CLERK)).json()["items"]
    assert [p["id"] for p in found] == [odd["id"]]  # "_" is an underscore: not "any character", not dropped
    nobody = (await c.get("/patients", params={"q": "y%m"}, headers=CLERK)).json()["items"]
    assert nobody == []  # "%" is a percent sign, not "anything"


async def test_a_page_of_patients_holds_up_to_the_shared_maximum(client: tuple[httpx.AsyncClient, Database]) -> None:
    """The service's page was at most 50 while the gateway let 200 through: one rule for both."""
    c, _ = client
    await register(c, "Sayfa", "Limit", "1950-05-05")
    assert (await c.get("/patients", params={"q": "limit", "limit": 200}, headers=CLERK)).status_code == 200
    r = await c.get("/patients", params={"q": "limit", "limit": 201}, headers=CLERK)
    assert r.status_code == 422 and "limit must be a whole number from 1 to 200" in r.text, r.text


@pytest.mark.parametrize("hard", HARD_DATES, ids=str)
async def test_a_baby_born_after_local_midnight_is_registered_that_night(
    client: tuple[httpx.AsyncClient, Database], hard: HardDate
) -> None:
    """Born at 00:20 and registered at 00:30, hospital time: the birth date is today there, though
    UTC is still on the day before; its coverage starts today too. Tomorrow is still the future."""
    c, db = client
    r = await register(c, "Bebek", "Yıldız", hard.day.isoformat(), coverage={"payer": "SGK", "member_id": "N-1"})
    assert r.status_code == 201, r.text
    since = await db.pool.fetchval(
        """SELECT convert_from(payload, 'UTF8')::jsonb -> 'data' ->> 'effective_from' FROM outbox
           WHERE subject = 'his.patients.coverage.changed.v1'
             AND convert_from(payload, 'UTF8')::jsonb -> 'data' ->> 'patient_id' = $1""",
        r.json()["id"],
    )
    assert since == hard.day.isoformat()
    r = await register(c, "Bebek", "Ay", (hard.day + timedelta(days=1)).isoformat(), confirm_duplicate=True)
    assert r.status_code == 422 and "future" in r.json()["detail"]
