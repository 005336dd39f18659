"""An administrator's work on accounts, through identity's routes over the in-memory ports: the
list and its search, roles changed, a leaver disabled and enabled again, a new password required
at the next sign-in, an account unlocked; the last administrator kept; sessions that end with the
rights they carried; a session's absolute lifetime.

The service, its fake clock on the hard dates and its helpers are those of
``test_identity_use_cases`` (``Idp``)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from his.access import Role
from his.events.identity import (
    PasswordChanged,
    PasswordChangeRequired,
    UserDisabled,
    UserEnabled,
    UserRolesChanged,
    UserUnlocked,
)
from his.gateway.routing import Match, resolve
from his.identity.domain import SESSION_MAX_AGE, User, leaves_no_admin
from tests.unit.test_identity_use_cases import NEW_PASSWORD, PASSWORD, WRONG, Idp, email, idp, make

__all__ = ["idp", "make"]  # the fixtures, shared with test_identity_use_cases


async def admin_of(idp: Idp) -> tuple[uuid.UUID, dict[str, str]]:
    address = email()
    admin_id = await idp.identity.register(email=address, password=PASSWORD, full_name="Ad Min", roles=[Role.ADMIN])
    return admin_id, await idp.as_holder((await idp.tokens(address))["access_token"])


async def staff(idp: Idp, name: str, *roles: Role) -> tuple[uuid.UUID, str]:
    address = email()
    return await idp.identity.register(email=address, password=PASSWORD, full_name=name, roles=list(roles)), address


async def patch(idp: Idp, who: dict[str, str], user_id: uuid.UUID, **change: Any) -> Any:
    return await idp.client.patch(f"/admin/users/{user_id}", json=change, headers=who)


@pytest.mark.parametrize(
    ("path", "method", "public"),
    [
        ("/api/admin/users", "GET", "/admin/users"),
        ("/api/admin/users/{id}", "GET", "/admin/users/{user_id}"),
        ("/api/admin/users/{id}", "PATCH", "/admin/users/{user_id}"),
        ("/api/admin/users/{id}/unlock", "POST", "/admin/users/{user_id}/unlock"),
        ("/api/auth/login/password", "POST", "/auth/login/password"),
    ],
)
def test_the_gateway_routes_account_work_to_identity(path: str, method: str, public: str) -> None:
    match = resolve(method, path.replace("{id}", str(uuid.uuid4())))
    assert isinstance(match, Match) and match.route.service == "identity"
    assert match.route.upstream_template == public


async def test_an_administrator_lists_and_searches_accounts_without_their_hashes(idp: Idp) -> None:
    _, admin = await admin_of(idp)
    nurse_id, _ = await staff(idp, "Ayşe Yılmaz", Role.NURSE)
    await staff(idp, "Mehmet Öz", Role.DOCTOR)
    r = await idp.client.get("/admin/users", params={"q": "  yılmaz "}, headers=admin)
    assert r.status_code == 200, r.text
    (item,) = r.json()["items"]
    assert item["id"] == str(nurse_id) and item["roles"] == ["NURSE"]
    assert item["active"] and not item["locked"] and not item["mfa"] and not item["password_change_required"]
    assert "password_hash" not in item and "argon2" not in str(item)
    every = (await idp.client.get("/admin/users", params={"limit": 2}, headers=admin)).json()["items"]
    assert [i["full_name"] for i in every] == ["Ad Min", "Ayşe Yılmaz"]  # by name, at most the limit
    by_address = await idp.client.get("/admin/users", params={"q": "100%_"}, headers=admin)
    assert by_address.json()["items"] == []  # LIKE's wildcards are plain characters
    nurse = await idp.as_holder((await idp.tokens(idp.fake.state.users[nurse_id].email))["access_token"])
    assert (await idp.client.get("/admin/users", headers=nurse)).status_code == 403
    assert (await idp.client.get("/admin/users")).status_code == 401
    assert (await idp.client.get("/admin/users", params={"limit": 201}, headers=admin)).status_code == 422
    one = await idp.client.get(f"/admin/users/{nurse_id}", headers=admin)
    assert one.status_code == 200 and one.json() == item
    assert (await idp.client.get(f"/admin/users/{uuid.uuid4()}", headers=admin)).status_code == 404
    assert (await idp.client.get(f"/admin/users/{nurse_id}", headers=nurse)).status_code == 403


async def test_a_leaver_is_disabled_signed_out_and_enabled_again(idp: Idp) -> None:
    admin_id, admin = await admin_of(idp)
    nurse_id, address = await staff(idp, "Leaving Nurse", Role.NURSE)
    tokens = await idp.tokens(address)
    sid = (await idp.claims(tokens["access_token"]))["sid"]
    r = await patch(idp, admin, nurse_id, active=False)
    assert r.status_code == 200 and r.json()["active"] is False
    assert sid in await idp.revoked()  # every verifier refuses its access tokens from now on
    assert (await idp.refresh(tokens["refresh_token"])).status_code == 401
    assert (await idp.login(address)).status_code == 401  # as a wrong password: nothing told
    staff_ids = (await idp.client.get("/staff", params={"id": str(nurse_id)}, headers=admin)).json()["items"]
    assert staff_ids == []  # the directory names no disabled account
    assert (await patch(idp, admin, nurse_id, active=True)).json()["active"] is True
    assert (await idp.login(address)).status_code == 200
    assert idp.fake.events(UserDisabled) == [UserDisabled(user_id=nurse_id, changed_by=admin_id)]
    assert idp.fake.events(UserEnabled) == [UserEnabled(user_id=nurse_id, changed_by=admin_id)]


async def test_changed_roles_end_the_sessions_that_carried_the_old_ones(idp: Idp) -> None:
    admin_id, admin = await admin_of(idp)
    user_id, address = await staff(idp, "Dr Move", Role.DOCTOR)
    sid = (await idp.claims((await idp.tokens(address))["access_token"]))["sid"]
    r = await patch(idp, admin, user_id, roles=["NURSE", "DOCTOR", "NURSE"])
    assert r.status_code == 200 and r.json()["roles"] == ["DOCTOR", "NURSE"]
    assert sid in await idp.revoked()
    assert (await idp.claims((await idp.tokens(address))["access_token"]))["roles"] == ["DOCTOR", "NURSE"]
    assert idp.fake.events(UserRolesChanged) == [
        UserRolesChanged(user_id=user_id, roles=["DOCTOR", "NURSE"], changed_by=admin_id)
    ]
    same = await patch(idp, admin, user_id, roles=["NURSE", "DOCTOR"])  # no change: nobody signed out
    assert same.status_code == 200 and len(idp.fake.events(UserRolesChanged)) == 1
    assert (await patch(idp, admin, user_id, roles=[])).status_code == 422
    assert (await patch(idp, admin, user_id, roles=["SURGEON"])).status_code == 422
    assert (await patch(idp, admin, user_id, id=str(uuid.uuid4()))).status_code == 422  # nothing else is settable
    assert (await patch(idp, admin, uuid.uuid4(), active=False)).status_code == 404


async def test_the_hospital_keeps_an_active_administrator(idp: Idp) -> None:
    admin_id, admin = await admin_of(idp)
    refused = await patch(idp, admin, admin_id, active=False)
    assert refused.status_code == 409 and "administrator" in refused.json()["detail"]
    assert (await patch(idp, admin, admin_id, roles=["DOCTOR"])).status_code == 409
    second_id, _ = await staff(idp, "Second Admin", Role.ADMIN, Role.AUDITOR)
    assert (await patch(idp, admin, second_id, roles=["AUDITOR"])).status_code == 200
    assert (await patch(idp, admin, admin_id, active=False)).status_code == 409  # still the only one
    assert (await patch(idp, admin, second_id, roles=["ADMIN"])).status_code == 200
    assert (await patch(idp, admin, admin_id, active=False)).status_code == 200


@pytest.mark.parametrize(
    ("admin", "disabled", "roles", "active", "others", "leaves"),
    [
        (True, False, ["DOCTOR"], None, 0, True),
        (True, False, None, False, 0, True),
        (True, False, ["DOCTOR"], None, 1, False),
        (True, False, ["ADMIN", "DOCTOR"], None, 0, False),
        (True, True, None, True, 0, False),  # enabling a disabled administrator adds one
        (False, False, ["ADMIN"], None, 0, False),
        (True, True, None, False, 0, False),  # a disabled administrator was not counted
    ],
)
def test_which_changes_leave_no_administrator(
    admin: bool, disabled: bool, roles: list[str] | None, active: bool | None, others: int, leaves: bool
) -> None:
    from datetime import UTC, datetime

    user = User(
        id=uuid.uuid4(),
        email="a@b.org",
        email_key="a@b.org",
        full_name="A",
        password_hash="x",
        roles=("ADMIN",) if admin else ("NURSE",),
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        disabled_at=datetime(2026, 2, 1, tzinfo=UTC) if disabled else None,
    )
    assert leaves_no_admin(user, roles=roles, active=active, other_admins=others) is leaves


async def test_a_required_password_change_is_made_at_the_next_sign_in(idp: Idp) -> None:
    admin_id, admin = await admin_of(idp)
    user_id, address = await staff(idp, "Lab Tech", Role.LAB_TECH)
    tokens = await idp.tokens(address)
    r = await patch(idp, admin, user_id, password_change_required=True)
    assert r.status_code == 200 and r.json()["password_change_required"] is True
    assert (await idp.refresh(tokens["refresh_token"])).status_code == 401
    told = await idp.login(address)
    assert told.status_code == 403 and told.json()["code"] == "password_change_required"
    assert (await idp.login(address, WRONG)).status_code == 401  # a wrong password learns nothing more
    body = {"email": address, "current_password": PASSWORD, "new_password": PASSWORD}
    assert (await idp.client.post("/auth/login/password", json=body)).status_code == 422
    weak = await idp.client.post("/auth/login/password", json=body | {"new_password": "lab tech lab tech"})
    assert weak.status_code == 422  # the name, checked once the password was right
    wrong = await idp.client.post("/auth/login/password", json=body | {"current_password": WRONG})
    assert wrong.status_code == 401
    changed = await idp.client.post(
        "/auth/login/password", json=body | {"new_password": NEW_PASSWORD}, headers={"x-his-client-ip": "192.0.2.1"}
    )
    assert changed.status_code == 200 and changed.json()["access_token"]
    assert (await idp.login(address, NEW_PASSWORD)).status_code == 200
    assert (await idp.login(address)).status_code == 401
    assert idp.fake.events(PasswordChangeRequired) == [PasswordChangeRequired(user_id=user_id, changed_by=admin_id)]
    assert idp.fake.events(PasswordChanged) == [PasswordChanged(user_id=user_id, how="sign_in")]
    assert not idp.fake.state.users[user_id].password_change_required


async def test_an_administrator_unlocks_an_account_held_back_by_failures(idp: Idp) -> None:
    admin_id, admin = await admin_of(idp)
    user_id, address = await staff(idp, "Often Wrong", Role.BILLING)
    for at in ("192.0.2.7", "192.0.2.8", "192.0.2.9"):
        assert (await idp.login(address, WRONG, at=at)).status_code == 401
    assert (await idp.login(address)).status_code == 429  # the account's ceiling (3 here)
    listed = (await idp.client.get("/admin/users", params={"q": address}, headers=admin)).json()["items"]
    assert listed[0]["locked"] is True
    r = await idp.client.post(f"/admin/users/{user_id}/unlock", headers=admin)
    assert r.status_code == 200 and r.json()["locked"] is False
    assert (await idp.login(address)).status_code == 200
    assert idp.fake.events(UserUnlocked) == [UserUnlocked(user_id=user_id, changed_by=admin_id)]
    assert (await idp.client.post(f"/admin/users/{uuid.uuid4()}/unlock", headers=admin)).status_code == 404


async def test_a_session_ends_thirty_days_after_its_sign_in_however_often_refreshed(idp: Idp) -> None:
    address = await idp.signed_up()
    tokens = await idp.tokens(address)
    for _ in range(3):  # each refresh well inside the sliding fourteen days
        idp.clock.advance(SESSION_MAX_AGE / 3 - timedelta(seconds=1))
        r = await idp.refresh(tokens["refresh_token"])
        assert r.status_code == 200, r.text
        tokens = r.json()
    idp.clock.advance(timedelta(seconds=3))
    assert (await idp.refresh(tokens["refresh_token"])).status_code == 401


ADMIN_ROUTES: list[tuple[str, str, dict[str, object] | None]] = [
    ("GET", "/admin/users", None),
    ("PATCH", "/admin/users/{id}", {"active": True}),
    ("POST", "/admin/users/{id}/unlock", None),
    ("GET", "/admin/mfa-policy", None),
    ("PUT", "/admin/mfa-policy", {"roles": []}),
    ("POST", "/admin/users", {"email": "x@example.org", "password": PASSWORD, "full_name": "X", "roles": ["NURSE"]}),
]


async def test_only_an_administrator_reaches_the_account_routes(idp: Idp) -> None:
    """The routes × roles matrix of the administrators' routes: every other role is refused 403
    on each, and nothing changes; a caller without a token is refused 401."""
    target, address = await staff(idp, "Some One", Role.NURSE)
    callers = {role: await staff(idp, f"Not Admin {role}", role) for role in Role if role is not Role.ADMIN}
    before = dict(idp.fake.state.users)
    for role, (_, caller) in callers.items():
        who = await idp.as_holder((await idp.tokens(caller))["access_token"])
        for method, path, body in ADMIN_ROUTES:
            url = path.replace("{id}", str(target))
            r = await idp.client.request(method, url, json=body, headers=who)
            assert r.status_code == 403, (role, method, path, r.text)
    for method, path, body in ADMIN_ROUTES:
        assert (await idp.client.request(method, path.replace("{id}", str(target)), json=body)).status_code == 401
    assert idp.fake.state.users == before and (await idp.login(address)).status_code == 200
