"""Every public route the patient matrix does not reach × every role, and no token, under a real
`his up`.

``tests/e2e/test_bola.py`` covers every route that reaches a patient (a patient's id in the path,
the query or the body) with each role and each relationship to the patient, and the routes of
objects that are not a patient's (practitioners, wards, beds) in pairs. What is left is decided
by role alone: administration (accounts, the second factor's policy, wards, items, price lists,
the nightly charges), lists that name no patient (claims, stock, alerts), catalogues, and one's
own account. ``TABLE`` declares for each of them the roles it admits, read from the route's code
(``who.has_any(...)``, the service's ``policy`` role sets, ``his.access``), and how to call it:

- without a token, the gateway answers 401 (problem+json) and the service is not asked;
- a role the route does not admit gets 403 problem+json, also with made-up identity headers;
- an admitted role gets the route's own answer (``ok``: its success, or the answer its own check
  gives after the role check, with the reason in ``why``).

A request's body is valid by the route's schema, so that a refused role meets the role check
(FastAPI checks the body first: a 422 answered to a refused role fails the test). Calls that
change something act on objects made for this module (a fresh item, ward, account, price list
far in the future) or write what is there already, so the shared hospital stays as it was.

The routes the gateway serves without a token (``OPEN``: signing in, registering, the keys) admit
everyone: each is called with a harmless body that no limit of the shared hospital counts, and
every caller, with or without a token of any role, gets the same answer, never the gateway's 401.

``test_every_public_route_is_in_a_matrix`` fails when a route of ``his.gateway.routing.ROUTES``
is in none of the matrices.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import httpx
import pytest

from his.access import Role
from his.gateway.routing import ROUTES
from tests.e2e.harness import Hospital, create_user
from tests.e2e.test_bola import MATRIX, PAIRS, PUBLIC, Call, Subject, spoofed_headers

EVERYONE = frozenset(Role)
STAFF = EVERYONE - {Role.PATIENT}
ADMIN = frozenset({Role.ADMIN})
#: Roles in the order the cells are called (each role's user is made once for the module).
ROLES = tuple(Role)
PASSWORD = "long enough staff passphrase"
NEW_PASSWORD = "a changed and long staff passphrase"
#: The gateway's answer to a request without a token.
NO_TOKEN = "bearer token required"
#: The answer to a body that does not fit the route's schema (``his.kernel.problems``).
SCHEMA = "the request does not match the schema"


@dataclass
class Ctx:
    """What the cells act on: one user per role, and objects made for this module."""

    http: httpx.Client
    tag: str
    subjects: dict[Role, Subject]
    #: An account of this module's (no cell's caller) that the account routes act on.
    account: str
    #: An inventory item of this module's that receipts go to.
    item: str
    #: The second factor's policy as the module found it (written back as it is).
    mfa_roles: list[str]
    #: The price list in effect today, as lines a new version may hold.
    price_lines: list[dict[str, str]]
    #: The address and password of a PATIENT account of this module's that signs in on the open routes.
    sign_in: tuple[str, str]

    def unique(self) -> str:
        return f"{self.tag}{uuid.uuid4().hex[:8]}"


Build = Callable[[Ctx], Call]


@dataclass(frozen=True)
class Row:
    """A route that needs a token: the roles it admits, how to call it, what an admitted role gets."""

    method: str
    path: str
    admitted: frozenset[Role]
    build: Build
    ok: int = 200
    #: Why ``ok`` is not a success, when it is not.
    why: str = ""

    @property
    def name(self) -> str:
        return f"{self.method} {self.path}"


@dataclass(frozen=True)
class Open:
    """A route the gateway serves without a token: every caller gets ``status`` (with ``detail``
    in the problem, when given), the route's own answer to the harmless call ``build`` makes."""

    method: str
    path: str
    build: Build
    status: int
    detail: str = ""
    why: str = ""
    #: Its cells one after another: sign-ins to one account at once count as failures until each
    #: succeeds, and a few at once from one address are held back.
    one_at_a_time: bool = False

    @property
    def name(self) -> str:
        return f"{self.method} {self.path}"


def _get(path: str, **params: str) -> Build:
    return lambda c: Call("GET", path.format(c=c), dict(params) or None)


def _post(path: str, body: Callable[[Ctx], dict[str, Any]] | None = None, **params: str) -> Build:
    return lambda c: Call("POST", path.format(c=c), dict(params) or None, body(c) if body else None)


def _new_user(c: Ctx) -> dict[str, Any]:
    email = f"role-matrix-{c.unique()}@hospital.example"
    return {"email": email, "password": PASSWORD, "full_name": "Rana Matrix", "roles": ["RECEPTIONIST"]}


def _ward(c: Ctx) -> dict[str, Any]:
    return {"name": f"Role matrix ward {c.unique()}", "type": "general", "daily_rate": "100.00", "currency": "TRY",
            "beds": 1}  # fmt: skip


def _item(c: Ctx) -> dict[str, Any]:
    return {"code": f"RM-{c.unique().upper()}", "description": "Role matrix gauze", "unit": "piece",
            "chargeable": False}  # fmt: skip


def _receipt(c: Ctx) -> dict[str, Any]:
    return {"item_code": c.item, "location": "WARD-GEN", "lot": f"L{c.unique()}", "quantity": "1",
            "expires_on": "2099-01-31"}  # fmt: skip


def _price_list(c: Ctx) -> dict[str, Any]:
    """Today's lines, in effect from a day centuries ahead (one of its own: no version starts then)."""
    day = date(2300, 1, 1) + timedelta(days=uuid.uuid4().int % 36000)
    return {"effective_from": day.isoformat(), "lines": c.price_lines}


def _patient(c: Ctx) -> dict[str, Any]:
    return {"given_name": "Rol", "family_name": f"Matrix-{c.unique()}", "birth_date": "1970-01-01", "sex": "male",
            "confirm_duplicate": True}  # fmt: skip


def _practitioner(c: Ctx) -> dict[str, Any]:
    return {"full_name": f"Dr. Role Matrix {c.unique()}", "specialty": "cardiology"}


def _password(c: Ctx) -> dict[str, Any]:
    return {"current_password": PASSWORD, "new_password": NEW_PASSWORD}


NIGHT_LONG_AGO = "2000-01-01"  # no admission has a night to charge then

# fmt: off
#: Routes that need a token, in the order they are run. The second factor's confirmation comes
#: before anything that begins an enrolment: with none begun, an admitted caller gets 409.
TABLE: list[Row] = [
    # identity: one's own account (any signed-in user)
    Row("POST", "/api/auth/mfa/totp/verify", EVERYONE, _post("/api/auth/mfa/totp/verify", lambda c: {"code": "123456"}),
        ok=409, why="no enrolment was begun for the account, which the route says after the role check"),
    Row("POST", "/api/auth/mfa/totp", EVERYONE, _post("/api/auth/mfa/totp")),
    Row("POST", "/api/auth/password", EVERYONE, _post("/api/auth/password", _password), ok=204),
    # identity: administration (ADMIN)
    Row("GET", "/api/admin/users", ADMIN, _get("/api/admin/users", q="role-matrix", limit="5")),
    Row("POST", "/api/admin/users", ADMIN, _post("/api/admin/users", _new_user), ok=201),
    Row("GET", "/api/admin/users/{id}", ADMIN, _get("/api/admin/users/{c.account}")),
    Row("PATCH", "/api/admin/users/{id}", ADMIN,
        lambda c: Call("PATCH", f"/api/admin/users/{c.account}", json={"active": True})),
    Row("POST", "/api/admin/users/{id}/unlock", ADMIN, _post("/api/admin/users/{c.account}/unlock")),
    Row("GET", "/api/admin/mfa-policy", ADMIN, _get("/api/admin/mfa-policy")),
    Row("PUT", "/api/admin/mfa-policy", ADMIN,
        lambda c: Call("PUT", "/api/admin/mfa-policy", json={"roles": c.mfa_roles})),
    # audit
    Row("GET", "/api/audit/accounts/{id}", frozenset({Role.AUDITOR, Role.ADMIN}),
        _get("/api/audit/accounts/{c.account}", limit="1")),
    # admissions (his.admissions.policy: STAFF, WARD_ADMINS)
    Row("GET", "/api/wards", STAFF, _get("/api/wards")),
    Row("POST", "/api/wards", ADMIN, _post("/api/wards", _ward), ok=201),
    Row("POST", "/api/admissions/charges/run", ADMIN, _post("/api/admissions/charges/run", date=NIGHT_LONG_AGO)),
    # scheduling and practitioners: catalogues for any signed-in user; profiles made by ADMIN
    Row("GET", "/api/appointments/services", EVERYONE, _get("/api/appointments/services")),
    Row("GET", "/api/appointments/first-available", EVERYONE,
        _get("/api/appointments/first-available", days="1", limit="1")),
    Row("GET", "/api/practitioners", EVERYONE, _get("/api/practitioners", limit="1")),
    Row("GET", "/api/practitioners/specialties", EVERYONE, _get("/api/practitioners/specialties")),
    Row("POST", "/api/practitioners", ADMIN, _post("/api/practitioners", _practitioner), ok=201),
    # billing (his.billing.policy.STAFF: BILLING, ADMIN)
    Row("GET", "/api/claims", frozenset({Role.BILLING, Role.ADMIN}), _get("/api/claims", limit="1")),
    Row("GET", "/api/payers", EVERYONE, _get("/api/payers")),
    Row("GET", "/api/price-list", EVERYONE, _get("/api/price-list")),
    Row("POST", "/api/price-list", ADMIN, _post("/api/price-list", _price_list), ok=201),
    # inventory (his.inventory.policy: STAFF, ITEM_ADMINS, RECEIVERS)
    Row("GET", "/api/inventory/units", STAFF, _get("/api/inventory/units")),
    Row("GET", "/api/inventory/items", STAFF, _get("/api/inventory/items")),
    Row("POST", "/api/inventory/items", ADMIN, _post("/api/inventory/items", _item), ok=201),
    Row("POST", "/api/inventory/receipts", frozenset({Role.ADMIN, Role.NURSE, Role.LAB_TECH}),
        _post("/api/inventory/receipts", _receipt), ok=201),
    Row("GET", "/api/inventory/stock", STAFF, lambda c: Call("GET", "/api/inventory/stock", {"item_code": c.item})),
    Row("GET", "/api/inventory/expiring", STAFF, _get("/api/inventory/expiring", days="1")),
    Row("GET", "/api/inventory/alerts", STAFF, _get("/api/inventory/alerts", limit="1")),
    Row("GET", "/api/inventory/backorders", STAFF, _get("/api/inventory/backorders", limit="1")),
    # laboratory
    Row("GET", "/api/lab/catalog", EVERYONE, _get("/api/lab/catalog")),
    # notifications (his.notifications.handlers.ALERTED)
    Row("GET", "/api/notifications/alerts", frozenset({Role.ADMIN, Role.DOCTOR}),
        _get("/api/notifications/alerts", limit="1")),
    # patients: registering (REGISTRARS), one's own record, redeeming an invitation (PATIENT only)
    Row("POST", "/api/patients", frozenset({Role.RECEPTIONIST, Role.ADMIN}), _post("/api/patients", _patient),
        ok=201),
    Row("GET", "/api/patients/me", EVERYONE, _get("/api/patients/me"), ok=404,
        why="no record is linked to any of the module's accounts: the route's own answer to an admitted caller"),
    Row("POST", "/api/patients/invitations/redeem", frozenset({Role.PATIENT}),
        _post("/api/patients/invitations/redeem", lambda c: {"code": "ZZZZ-ZZZZ-ZZZZ"}), ok=404,
        why="a code no invitation has: unknown, said after the role check (redeeming a real one is "
            "tests/e2e/test_bola.py::test_only_a_patients_own_account_redeems_an_invitation)"),
]

#: Routes the gateway serves without a token, each with a call no limit of the shared hospital
#: counts (a failed sign-in would count against the address; a reset request does, before it
#: checks the address).
OPEN: list[Open] = [
    Open("GET", "/api/auth/jwks", _get("/api/auth/jwks"), 200),
    Open("POST", "/api/auth/login",
         lambda c: Call("POST", "/api/auth/login", json={"email": c.sign_in[0], "password": c.sign_in[1]}), 200,
         why="the module's PATIENT account signs in: a right password is not counted", one_at_a_time=True),
    Open("POST", "/api/auth/login/password",
         lambda c: Call("POST", "/api/auth/login/password", json={
             "email": c.sign_in[0], "current_password": c.sign_in[1], "new_password": c.sign_in[1]}),
         422, "must differ", why="a new password equal to the current one is refused before anything is counted"),
    Open("POST", "/api/auth/login/totp",
         lambda c: Call("POST", "/api/auth/login/totp", json={"email": c.sign_in[0], "password": c.sign_in[1]}),
         200, why="begins an enrolment (never confirmed) for the module's PATIENT account", one_at_a_time=True),
    Open("POST", "/api/auth/logout",
         lambda c: Call("POST", "/api/auth/logout", json={"refresh_token": f"made-up-{c.unique()}"}), 204),
    Open("POST", "/api/auth/refresh",
         lambda c: Call("POST", "/api/auth/refresh", json={"refresh_token": f"made-up-{c.unique()}"}), 401,
         "invalid refresh token", why="a made-up refresh token: the route's own 401, not the gateway's"),
    Open("POST", "/api/auth/register",
         lambda c: Call("POST", "/api/auth/register", json={
             "email": f"role-matrix-{c.unique()}@example.org", "password": "short", "full_name": "Rana Matrix"}),
         422, "password", why="a password the policy refuses: no account is made, no limit counts it"),
    Open("POST", "/api/auth/verify-email",
         lambda c: Call("POST", "/api/auth/verify-email", json={"token": f"made-up-{c.unique()}",
                                                                "password": PASSWORD}),
         400, "not valid", why="a made-up link"),
    Open("POST", "/api/auth/password-reset",
         lambda c: Call("POST", "/api/auth/password-reset", json={"email": "not an address"}), 422,
         "not a valid address",
         why="what is not an address is refused before the address's requests are counted (10 an hour)"),
    Open("POST", "/api/auth/password-reset/confirm",
         lambda c: Call("POST", "/api/auth/password-reset/confirm", json={
             "token": f"made-up-{c.unique()}", "new_password": NEW_PASSWORD}), 400, why="a made-up link"),
]
# fmt: on


# --- completeness: every route is in a matrix (no IO) -------------------------------------------


def covered_elsewhere() -> set[tuple[str, str]]:
    """The routes test_bola.py's matrices and its list of public routes cover."""
    return {(e.method, e.path) for e in MATRIX} | set(PAIRS) | set(PUBLIC)


def test_every_public_route_is_in_a_matrix() -> None:
    routes = {(r.method, r.path) for r in ROUTES}
    here = [(r.method, r.path) for r in TABLE] + [(o.method, o.path) for o in OPEN]
    assert len(here) == len(set(here)), "a route listed twice"
    missing = routes - covered_elsewhere() - set(here)
    assert not missing, f"public routes in no matrix: {sorted(missing)}"
    assert not set(here) - routes, f"rows for routes the gateway no longer has: {sorted(set(here) - routes)}"
    twice = set(here) & covered_elsewhere()
    assert not twice, f"routes in test_bola.py's matrices too: {sorted(twice)}"
    without_token = {(r.method, r.path) for r in ROUTES if r.public} - set(PUBLIC)
    assert without_token == {(o.method, o.path) for o in OPEN}, "OPEN is what the gateway serves without a token"
    for row in TABLE:
        assert 200 <= row.ok < 300 or row.why, f"{row.name}: an answer that is not a success needs its reason"
        assert row.ok not in (401, 403), f"{row.name}: an admitted caller is never refused"


# --- the world -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ctx(shared_hospital: Hospital) -> Iterator[Ctx]:
    h = shared_hospital
    admin = h.login()
    tag = uuid.uuid4().hex[:6]
    with httpx.Client(base_url=h.gateway, timeout=15) as http:
        # A user of each role (create_user gives each the harness's staff password, PASSWORD), and
        # a PATIENT account that no cell acts as: the open routes sign in with it, the account
        # routes act on it.
        with ThreadPoolExecutor(4) as pool:
            made = list(pool.map(lambda r: create_user(h, admin, r, f"rolematrix{tag}"), ROLES))
        subjects = {
            role: Subject(role, frozenset({role}), "none", uid, auth)
            for role, (uid, auth) in zip(ROLES, made, strict=True)
        }
        sign_in = (f"role-matrix-{tag}@example.org", PASSWORD)
        body: dict[str, Any] = {"email": sign_in[0], "password": PASSWORD, "full_name": "Rana", "roles": ["PATIENT"]}
        account = str(ok(http, "POST", "/api/admin/users", admin, body, 201)["user_id"])
        item = f"RM-{tag.upper()}"
        body = {"code": item, "description": "Role matrix swab", "unit": "piece", "chargeable": False}
        ok(http, "POST", "/api/inventory/items", admin, body, 201)
        mfa = ok(http, "GET", "/api/admin/mfa-policy", admin)["roles"]
        prices = ok(http, "GET", "/api/price-list", admin)["lines"]
        try:
            yield Ctx(http, tag, subjects, account, item, mfa, prices, sign_in)
        finally:
            after = ok(http, "GET", "/api/admin/mfa-policy", admin)["roles"]
            if after != mfa:  # a role that should have been refused changed it: put it back
                ok(http, "PUT", "/api/admin/mfa-policy", admin, {"roles": mfa})
            assert after == mfa, f"the second factor's policy was changed to {after}"


def ok(
    http: httpx.Client, method: str, path: str, auth: dict[str, str], body: Any = None, status: int = 200, **kw: Any
) -> dict[str, Any]:
    r = http.request(method, path, json=body, headers=auth, **kw)
    assert r.status_code == status, (method, path, r.status_code, r.text)
    return dict(r.json()) if r.content else {}


# --- the cells -----------------------------------------------------------------------------------


def problem(answer: httpx.Response) -> dict[str, Any]:
    assert answer.headers.get("content-type") == "application/problem+json", answer.text[:200]
    return dict(answer.json())


def token_cell(c: Ctx, row: Row, role: Role | None) -> str | None:
    """Call ``row`` as ``role`` (None: without a token); None if the answer is the table's."""
    call = row.build(c)
    who = "no token" if role is None else role.value
    auth = {} if role is None else c.subjects[role].auth
    answer = c.http.request(call.method, call.path, params=call.params, json=call.json, headers=auth)
    if role is None:
        if answer.status_code != 401 or answer.headers.get("content-type") != "application/problem+json":
            return f"{who}: expected the gateway's 401, got {answer.status_code} {answer.text[:200]}"
        return None if answer.json().get("detail") == NO_TOKEN else f"{who}: {answer.text[:200]}"
    if role in row.admitted:
        if answer.status_code != row.ok:
            return f"{who} (admitted): expected {row.ok}, got {answer.status_code} {answer.text[:200]}"
        return None
    if answer.status_code != 403 or answer.headers.get("content-type") != "application/problem+json":
        return f"{who} (refused): expected 403 problem+json, got {answer.status_code} {answer.text[:200]}"
    pretend = spoofed_headers(auth, c.subjects[Role.ADMIN].user_id)
    spoofed = c.http.request(call.method, call.path, params=call.params, json=call.json, headers=pretend)
    if spoofed.status_code != 403:
        return f"{who} (refused): made-up identity headers changed the answer to {spoofed.status_code}"
    return None


def open_cell(c: Ctx, row: Open, role: Role | None) -> str | None:
    call = row.build(c)
    who = "no token" if role is None else role.value
    auth = {} if role is None else c.subjects[role].auth
    answer = c.http.request(call.method, call.path, params=call.params, json=call.json, headers=auth)
    if answer.status_code != row.status:
        return f"{who}: expected {row.status}, got {answer.status_code} {answer.text[:200]}"
    if answer.status_code >= 400:
        detail = str(problem(answer).get("detail"))
        if detail in (NO_TOKEN, "invalid token", SCHEMA) or row.detail not in detail:
            return f"{who}: not the route's own answer: {answer.text[:200]}"
    return None


CALLERS: tuple[Role | None, ...] = (*ROLES, None)


def test_every_route_answers_every_role_as_declared(ctx: Ctx) -> None:
    """Each route of ``TABLE`` and ``OPEN`` × each role and no token; the cells of one route run
    at once (four at a time), the routes in order."""
    start = time.monotonic()
    wrong: list[str] = []
    cells = 0
    with ThreadPoolExecutor(4) as pool:
        for row in TABLE:
            found = list(pool.map(lambda r, row=row: token_cell(ctx, row, r), CALLERS))
            wrong += [f"{row.name}: {p}" for p in found if p]
            cells += len(found)
        for entry in OPEN:
            if entry.one_at_a_time:
                found = [open_cell(ctx, entry, r) for r in CALLERS]
            else:
                found = list(pool.map(lambda r, entry=entry: open_cell(ctx, entry, r), CALLERS))
            wrong += [f"{entry.name}: {p}" for p in found if p]
            cells += len(found)
    took = time.monotonic() - start
    assert not wrong, f"{len(wrong)} of {cells} cells:\n" + "\n".join(wrong)
    assert cells == (len(TABLE) + len(OPEN)) * len(CALLERS)
    print(f"{cells} cells in {took:.1f} s")
