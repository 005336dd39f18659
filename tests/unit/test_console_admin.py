"""Administration in the console, over the in-memory API: the accounts' list and search, one
account's page and each change an administrator makes there (the API's refusal of the last
administrator shown), making an account (its errors beside its fields), and the roles that need
a second factor. Nobody but an administrator opens these pages."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from his.console.domain import Answer
from his.kernel.json import Json, JsonObject
from his.testing.console import Call, problem
from tests.support.console import SAME_ORIGIN, USER, Desk, console_desk

NURSE_ID = "7d6f2b7e-1c3a-4f0e-9a51-2f1f6f3c1a01"


def account(**changed: Json) -> JsonObject:
    base: JsonObject = {
        "id": NURSE_ID,
        "email": "ayse.yilmaz@hospital.example",
        "full_name": "Ayşe Yılmaz",
        "roles": ["NURSE"],
        "active": True,
        "locked": True,
        "mfa": True,
        "password_change_required": False,
        "created_at": "2026-01-05T09:00:00+00:00",
    }
    return base | changed


@pytest.fixture
async def admin() -> AsyncIterator[Desk]:
    async with console_desk() as desk:
        await desk.sign_in(["ADMIN"])
        yield desk


async def form(desk: Desk, path: str, data: dict[str, str | list[str]]) -> httpx.Response:
    return await desk.client.post(path, data={**data, "csrf": await desk.csrf()}, headers=SAME_ORIGIN)


async def test_only_an_administrator_opens_administration() -> None:
    async with console_desk() as desk:
        await desk.sign_in(["NURSE"])
        for path in ("/admin/users", f"/admin/users/{NURSE_ID}", "/admin/users/new", "/admin/second-factor"):
            r = await desk.client.get(path)
            assert r.status_code == 403, path
        r = await desk.client.post(
            f"/admin/users/{NURSE_ID}/active", data={"active": "false", "csrf": await desk.csrf()}, headers=SAME_ORIGIN
        )
        assert r.status_code == 403 and not [c for c in desk.api.calls if c.path.startswith("/api/admin")]
        home = await desk.client.get("/")
        assert 'href="/admin"' not in home.text


async def test_the_accounts_are_listed_and_searched(admin: Desk) -> None:
    admin.api.answer("GET", "/api/admin/users", Answer(200, {"items": [account()]}))
    r = await admin.client.get("/admin/users", params={"q": " yılmaz "})
    assert r.status_code == 200 and "Ayşe Yılmaz" in r.text and f'href="/admin/users/{NURSE_ID}"' in r.text
    assert "Locked" in r.text and "Nurse" in r.text
    assert admin.api.calls[-1].params == {"q": "yılmaz", "limit": "200"}
    assert 'href="/admin"' in (await admin.client.get("/")).text


async def test_each_change_to_an_account_is_asked_of_the_api_and_said_when_done(admin: Desk) -> None:
    path = f"/api/admin/users/{NURSE_ID}"
    admin.api.answer("GET", path, Answer(200, account()))
    page = await admin.client.get(f"/admin/users/{NURSE_ID}")
    assert page.status_code == 200 and "Ayşe Yılmaz" in page.text and "Unlock" in page.text
    admin.api.answer("PATCH", path, Answer(200, account()))
    admin.api.answer("POST", f"{path}/unlock", Answer(200, account(locked=False)))
    changes: list[tuple[str, dict[str, str | list[str]], str, str, JsonObject | None]] = [
        ("roles", {"roles": ["NURSE", "LAB_TECH", "NOT_A_ROLE"]}, "PATCH", path, {"roles": ["NURSE", "LAB_TECH"]}),
        ("active", {"active": "false"}, "PATCH", path, {"active": False}),
        ("active", {"active": "true"}, "PATCH", path, {"active": True}),
        ("unlock", {}, "POST", f"{path}/unlock", None),
        ("password", {}, "PATCH", path, {"password_change_required": True}),
        ("second-factor", {}, "PATCH", path, {"mfa": False}),
    ]
    for action, data, method, api_path, body in changes:
        r = await form(admin, f"/admin/users/{NURSE_ID}/{action}", data)
        assert r.status_code == 303, (action, r.text)
        call = admin.api.calls[-1]
        assert (call.method, call.path, call.body) == (method, api_path, body), action
    shown = await admin.client.get(r.headers["location"])
    assert "The second factor was removed." in shown.text


async def test_the_last_administrator_is_kept_and_the_page_says_why(admin: Desk) -> None:
    path = f"/api/admin/users/{USER}"
    admin.api.answer("GET", path, Answer(200, account(id=str(USER), roles=["ADMIN"], full_name="Ad Min")))
    own = await admin.client.get(f"/admin/users/{USER}")
    assert "This is your own account." in own.text
    admin.api.answer("PATCH", path, problem(409, "the hospital would have no active administrator"))
    r = await form(admin, f"/admin/users/{USER}/roles", {"roles": ["NURSE"]})
    assert r.status_code == 409 and "must keep an active administrator" in r.text


async def test_an_account_is_made_with_its_roles_and_a_first_password_to_change(admin: Desk) -> None:
    page = await admin.client.get("/admin/users/new")
    assert page.status_code == 200 and 'name="roles"' in page.text
    r = await form(admin, "/admin/users/new", {"full_name": " ", "email": "", "password": ""})
    assert r.status_code == 422
    for field in ("full_name", "email", "password", "roles"):
        assert f'id="{field}-error"' in r.text, field
    assert not [c for c in admin.api.calls if c.path == "/api/admin/users"]
    made = str(uuid.uuid4())
    admin.api.answer("POST", "/api/admin/users", Answer(201, {"user_id": made}))
    admin.api.answer("PATCH", f"/api/admin/users/{made}", Answer(200, account(id=made)))
    data: dict[str, str | list[str]] = {
        "full_name": "Mehmet Öz",
        "email": "mehmet.oz@hospital.example",
        "password": "violet harbour under the lantern",
        "roles": ["DOCTOR"],
        "change_required": "on",
    }
    r = await form(admin, "/admin/users/new", data)
    assert r.status_code == 303 and r.headers["location"] == f"/admin/users/{made}?done=created"
    create, required = admin.api.calls[-2:]
    assert create.body == {
        "email": "mehmet.oz@hospital.example",
        "password": "violet harbour under the lantern",
        "full_name": "Mehmet Öz",
        "roles": ["DOCTOR"],
    }
    assert (required.method, required.body) == ("PATCH", {"password_change_required": True})
    admin.api.answer("POST", "/api/admin/users", problem(409, "an account with this e-mail address exists"))
    taken = await form(admin, "/admin/users/new", data)
    assert taken.status_code == 409 and "An account has this address already." in taken.text
    assert "violet harbour" not in taken.text  # a password is never written back


async def test_the_roles_that_need_a_second_factor(admin: Desk) -> None:
    admin.api.answer("GET", "/api/admin/mfa-policy", Answer(200, {"roles": ["ADMIN"]}))
    page = await admin.client.get("/admin/second-factor")
    assert page.status_code == 200 and 'value="ADMIN" checked' in page.text and 'value="NURSE" checked' not in page.text
    admin.api.answer("PUT", "/api/admin/mfa-policy", Answer(200, {"roles": ["ADMIN", "DOCTOR"]}))
    r = await form(admin, "/admin/second-factor", {"roles": ["ADMIN", "DOCTOR"]})
    assert r.status_code == 303
    assert admin.api.calls[-1] == Call(
        "PUT", "/api/admin/mfa-policy", "203.0.113.7", admin.api.calls[-1].token, {"roles": ["ADMIN", "DOCTOR"]}, None
    )


GRANT_ID = "5b0e3c7a-2f1d-4b8e-9c3a-6d7e8f9a0b1c"
DOCTOR_ID = "0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f"


def grant(**changed: Json) -> JsonObject:
    base: JsonObject = {
        "grant_id": GRANT_ID,
        "patient_id": "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
        "mrn": "MRN-000042",
        "user_id": DOCTOR_ID,
        "roles": ["DOCTOR"],
        "reason": "Brought in unconscious; medication history needed now.",
        "granted_at": "2026-01-01T01:00:00+00:00",
        "expires_at": "2026-01-01T01:30:00+00:00",
        "active": False,
        "lasted_minutes": 30.0,
        "reads": [{"resource": "patient", "action": "read", "at": "2026-01-01T01:01:00+00:00"}],
        "audit_trail": "/api/audit?patient_id=1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
        "over_limit": True,
        "review_state": "pending",
        "reviewed_by": None,
        "reviewed_at": None,
        "review_note": None,
    }
    return base | changed


async def test_the_emergency_access_queue_is_reviewed_by_an_administrator(admin: Desk) -> None:
    admin.api.answer("GET", "/api/patients/emergency-access", Answer(200, {"items": [grant()]}))
    admin.api.answer(
        "GET",
        "/api/staff",
        Answer(200, {"items": [{"id": DOCTOR_ID, "full_name": "Deniz Hekim", "roles": ["DOCTOR"]}]}),
    )
    page = await admin.client.get("/admin/emergency-access")
    assert page.status_code == 200
    for shown in ("Deniz Hekim", "MRN-000042", "medication history needed now", "Over the clinician", "Escalate"):
        assert shown in page.text, shown
    asked = [c for c in admin.api.calls if c.path == "/api/patients/emergency-access"][-1]
    assert asked.params == {"state": "pending", "limit": "200"}

    url = f"/admin/emergency-access/{GRANT_ID}/review"
    silent = await form(admin, url, {"decision": "escalated", "note": " "})
    assert silent.status_code == 422 and "Say in the note why" in silent.text
    api_review = f"/api/patients/emergency-access/{GRANT_ID}/review"
    admin.api.answer("POST", api_review, Answer(200, grant(review_state="escalated")))
    r = await form(admin, url, {"decision": "escalated", "note": "Not on the rota that night", "state": "pending"})
    assert r.status_code == 303 and r.headers["location"] == "/admin/emergency-access?state=pending&done=escalated"
    assert admin.api.calls[-1].body == {"decision": "escalated", "note": "Not on the rota that night"}
    admin.api.answer("POST", api_review, problem(403, "nobody reviews their own emergency access"))
    own = await form(admin, url, {"decision": "reviewed"})
    assert own.status_code == 403 and "Nobody reviews their own" in own.text


async def test_an_auditor_reads_the_queue_and_reviews_nothing() -> None:
    async with console_desk() as desk:
        await desk.sign_in(["AUDITOR"])
        desk.api.answer("GET", "/api/patients/emergency-access", Answer(200, {"items": [grant()]}))
        page = await desk.client.get("/admin/emergency-access")
        assert page.status_code == 200 and "MRN-000042" in page.text
        assert f'action="/admin/emergency-access/{GRANT_ID}/review"' not in page.text  # no review form
        assert 'href="/admin/emergency-access"' in (await desk.client.get("/")).text
        assert (await desk.client.get("/admin/users")).status_code == 403
        r = await form(desk, f"/admin/emergency-access/{GRANT_ID}/review", {"decision": "reviewed"})
        assert r.status_code == 403
        assert not [c for c in desk.api.calls if c.path.endswith("/review")]


WARD_ID = "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b"


def ward(**changed: Json) -> JsonObject:
    base: JsonObject = {
        "id": WARD_ID,
        "name": "Cardiology 3",
        "type": "general",
        "daily_rate": "1500.00",
        "currency": "TRY",
        "beds": {"total": 6, "available": 4, "occupied": 1, "cleaning": 1, "closed": 0, "isolation": 0},
        "created_at": "2026-01-01T00:00:00+00:00",
        "updated_at": None,
        "rooms": ["R1", "R2"],
    }
    return base | changed


async def test_the_wards_are_listed_made_and_corrected(admin: Desk) -> None:
    admin.api.answer("GET", "/api/wards", Answer(200, {"items": [ward()]}))
    page = await admin.client.get("/admin/wards")
    assert page.status_code == 200 and "Cardiology 3" in page.text and f'href="/admin/wards/{WARD_ID}"' in page.text

    missing = await form(admin, "/admin/wards/new", {"name": "", "type": "", "daily_rate": "", "beds": "0"})
    assert missing.status_code == 422
    for field in ("name", "type", "daily_rate", "beds"):
        assert f'id="{field}-error"' in missing.text, field
    assert not [c for c in admin.api.calls if c.path == "/api/wards" and c.method == "POST"]

    admin.api.answer("POST", "/api/wards", problem(422, "currency must be one of TRY, EUR"))
    data: dict[str, str | list[str]] = {
        "name": " Cardiology  3 ",
        "type": "General",
        "daily_rate": "1500,00",
        "currency": "usd",
        "beds": "6",
    }
    refused = await form(admin, "/admin/wards/new", data | {"rooms": "2"})
    assert refused.status_code == 422 and 'id="currency-error"' in refused.text and "TRY, EUR" in refused.text
    assert admin.api.calls[-1].body == {
        "name": "Cardiology 3",
        "type": "general",
        "daily_rate": "1500.00",
        "currency": "USD",
        "beds": 6,
        "rooms": 2,
    }
    admin.api.answer("POST", "/api/wards", Answer(201, {"id": WARD_ID}))
    made = await form(admin, "/admin/wards/new", data | {"currency": "TRY", "rooms": ""})
    assert made.status_code == 303 and made.headers["location"] == f"/admin/wards/{WARD_ID}?done=created"
    assert "rooms" not in (admin.api.calls[-1].body or {})  # one room unless told

    admin.api.answer("GET", f"/api/wards/{WARD_ID}", Answer(200, ward()))
    shown = await admin.client.get(made.headers["location"])
    assert "The ward was made" in shown.text and "R1, R2" in shown.text
    admin.api.answer("PATCH", f"/api/wards/{WARD_ID}", Answer(200, ward(daily_rate="1750.00")))
    corrected = await form(admin, f"/admin/wards/{WARD_ID}", {"name": "Cardiology 3", "daily_rate": "1750"})
    assert corrected.status_code == 303 and corrected.headers["location"] == f"/admin/wards/{WARD_ID}?done=corrected"
    assert admin.api.calls[-1].body == {"name": "Cardiology 3", "daily_rate": "1750"}
