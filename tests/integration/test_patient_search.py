"""Finding patients on the real database: accents, case and small typos do not matter (pg_trgm's
ranking); birth date narrows; LIKE's wildcards match only themselves. Duplicates, updates, the
search's validation and registration on a hard date are tested over the in-memory ports
(``tests/unit/test_patients_use_cases.py``). The service's clock stands half an hour after local
midnight of a hard date (``tests.support.calendar``), when the date in UTC is still the day before."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from his.clients.billing import FakeBillingTerms
from his.kernel import migrations
from his.kernel.db import Database
from his.patients.app import http as patients_http
from tests.support.api import Bearer, serve
from tests.support.calendar import HARD_DATES, HardDate
from tests.support.portal import CODES

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


async def test_like_wildcards_in_a_search_match_only_themselves(client: tuple[httpx.AsyncClient, Database]) -> None:
    c, _ = client
    odd = (await register(c, "Eli", "Kaya_Demir", "1961-02-03")).json()
    await register(c, "Eli", "Kayadem", "1962-02-03")
    found = (await c.get("/patients", params={"q": "a_d"}, headers=CLERK)).json()["items"]
    assert [p["id"] for p in found] == [odd["id"]]  # "_" is an underscore: not "any character", not dropped
    nobody = (await c.get("/patients", params={"q": "y%m"}, headers=CLERK)).json()["items"]
    assert nobody == []  # "%" is a percent sign, not "anything"
