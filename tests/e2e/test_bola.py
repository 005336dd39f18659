"""The access matrix under a real `his up`: every route that reaches a patient × every role × every
relationship to the patient, each cell answering exactly what the service's access policy decides.

Callers: one user of each staff role, a DOCTOR and a NURSE each with no relationship, a care
relationship and an emergency grant, and a patient on their own record and on another's. Each
acts on the patient of its relationship (its care patient, its grant patient, its own record;
everyone else on a patient no one here is related to). For every route the expected answer is
computed from the service's ``policy`` module (whose table is ``tests/unit/test_access_policies.py``):
the route's success status when the policy allows, else its 403 or 404, as problem+json holding
nothing of the patient. Routes that change something act on an object made fresh for each cell,
so an allowed call succeeds and a refused one proves it was refused before the object's state
was looked at. The route list comes from the gateway's own OpenAPI document: an operation that
reaches a patient (an id in its path or query, or ``patient_id`` in its body) and is missing
here fails the test. Identity headers a client makes up change nothing. The payment provider's
routes are the exception the gateway declares (``public``): a signature or an unguessable
reference admits a caller there, not a token, and they are checked on that instead. Redeeming a
portal invitation names no patient (its code does): only a patient's own account may.

Routes with an id that is not a patient's (practitioners' profiles, shifts and leave; wards and
beds) are checked the older way, in pairs: each member reaches its own object, never the other's.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

import httpx
import pytest

from his.access import NONE, Decision, Refusal, Relationship
from his.admissions import policy as admissions
from his.audit import policy as audit
from his.billing import policy as billing
from his.gateway.routing import ROUTES
from his.inventory import policy as inventory
from his.laboratory import policy as laboratory
from his.notifications import policy as notifications
from his.patients import policy as patients
from his.scheduling import policy as scheduling
from his.scheduling.domain import Action
from tests.e2e.harness import Hospital, assign, create_user, invite, link_by_invitation, own_account, register_patient
from tests.support.waiting import wait_until

HTTP_METHODS = ("get", "post", "put", "patch", "delete")
REASON = "Suspected sepsis, patient confused and cannot give consent or history"
#: Where the routes of the pair matrix live: ids there are not a patient's.
NOT_A_PATIENTS = ("/api/practitioners/", "/api/wards", "/api/beds")
#: Where ids are accounts', which only administrators (and, for an account's audit trail,
#: auditors) reach, any account alike: their routes × roles are in tests/e2e/test_role_matrix.py
#: and tests/unit/test_identity_accounts.py (every other role 403 on each).
ACCOUNTS = ("/api/admin/users/", "/api/audit/accounts/")
#: The attending doctor's calendar: three whole days this far ahead, one booking per 20 minutes.
CALENDAR_DAY = 50
SLOT = timedelta(minutes=20)


def _day(days: int) -> datetime:
    return (datetime.now(UTC) + timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0)


# --- who calls, on whom ------------------------------------------------------------------------


@dataclass(frozen=True)
class Subject:
    label: str
    roles: frozenset[str]
    #: The caller's relationship to the patient it acts on: self, none, care or grant.
    kind: str
    user_id: str
    auth: dict[str, str]

    @property
    def relationship(self) -> Relationship:
        return {
            "self": Relationship(owner=True),
            "care": Relationship(in_care=True),
            "grant": Relationship(emergency=True),
        }.get(self.kind, NONE)

    @property
    def role(self) -> str:
        return "+".join(sorted(self.roles))


@dataclass(frozen=True)
class Target:
    """One patient, and the objects of theirs the reads look at."""

    patient: dict[str, Any]
    appointment: str = ""
    admission: str = ""
    lab_order: str = ""
    invoice: str = ""
    claim: str = ""

    @property
    def id(self) -> str:
        return str(self.patient["id"])

    def secrets(self) -> list[str]:
        """What of this patient must never reach someone refused."""
        p = self.patient
        return [
            str(p["family_name"]),
            str(p["given_name"]),
            str(p["mrn"]),
            str(p["email"]),
            str(p["phone"]),
            str(p["coverage"]["member_id"]),
        ]


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    params: dict[str, str] | None = None
    json: dict[str, Any] | None = None
    headers: dict[str, str] | None = None


@dataclass
class World:
    http: httpx.Client
    admin: dict[str, str]
    subjects: list[Subject]
    targets: dict[str, Target]
    #: The attending doctor (in every target's care, books and orders for them) and their profile.
    attending: dict[str, str]
    practitioner: str
    #: A nurse no caller is: the clinician that care-team routes add and end.
    spare: str
    tech: dict[str, str]
    clerk: dict[str, str]
    ward: str
    item: str
    slots: Iterator[datetime] = field(default_factory=lambda: iter(()))
    #: The pair matrix's members and objects.
    pairs: dict[str, tuple[Member, Member]] = field(default_factory=dict)
    pair_targets: tuple[PairTarget, PairTarget] | None = None

    def send(self, call: Call, auth: dict[str, str]) -> httpx.Response:
        return self.http.request(
            call.method, call.path, params=call.params, json=call.json, headers=(call.headers or {}) | auth
        )

    def ok(
        self, method: str, path: str, auth: dict[str, str], body: Any = None, status: int = 200, **kw: Any
    ) -> dict[str, Any]:
        r = self.http.request(method, path, json=body, headers=auth, **kw)
        assert r.status_code == status, (method, path, r.status_code, r.text)
        return dict(r.json()) if r.content else {}

    def slot(self) -> dict[str, str]:
        start = next(self.slots)
        return {"start": start.isoformat(), "end": (start + SLOT).isoformat()}

    # Fresh objects, one per cell of a route that changes something.

    def booked(self, t: Target, *, checked_in: bool = False) -> dict[str, str]:
        body = {"patient_id": t.id, "practitioner_id": self.practitioner, "service": "consultation", **self.slot()}
        aid = str(self.ok("POST", "/api/appointments", self.admin, body, status=201)["id"])
        if checked_in:
            self.ok("POST", f"/api/appointments/{aid}/check-in", self.admin)
        return {"appointment": aid}

    def waiting(self, t: Target, service: str = "checkup") -> dict[str, str]:
        """A waitlist entry; a check-up (30 minutes) is never offered the 20 minutes a cancelled
        consultation frees, so it stays waiting."""
        body = {"patient_id": t.id, "practitioner_id": self.practitioner, "service": service}
        return {"entry": str(self.ok("POST", "/api/waitlist", self.admin, body, status=201)["id"])}

    def withdraw_follow_ups(self, t: Target, o: dict[str, str]) -> None:
        for entry in self.ok("GET", "/api/waitlist", self.admin, params={"patient_id": t.id})["items"]:
            if entry["service"] == "follow_up" and entry["status"] in ("waiting", "offered"):
                self.withdraw(t, {"entry": entry["id"]})

    def withdraw(self, t: Target, o: dict[str, str]) -> None:
        r = self.http.post(f"/api/waitlist/{o['entry']}/withdraw", headers=self.admin)
        assert r.status_code in (200, 409), r.text

    def admitted(self, t: Target) -> dict[str, str]:
        body = {"patient_id": t.id, "practitioner_id": self.practitioner, "ward_id": self.ward}
        return {"admission": str(self.ok("POST", "/api/admissions", self.admin, body, status=201)["id"])}

    def discharge(self, t: Target, o: dict[str, str]) -> None:
        admission = o.get("admission") or self.active_admission(t)
        if admission:
            r = self.http.post(f"/api/admissions/{admission}/discharge", headers=self.admin)
            assert r.status_code in (200, 409), r.text

    def active_admission(self, t: Target) -> str:
        r = self.ok("GET", "/api/admissions", self.admin, params={"patient_id": t.id, "active": "true"})
        return str(r["items"][0]["id"]) if r["items"] else ""

    def ordered(self, t: Target, *steps: str) -> dict[str, str]:
        body = {"patient_id": t.id, "tests": ["UA"], "priority": "routine"}
        oid = str(self.ok("POST", "/api/lab/orders", self.attending, body, status=201)["id"])
        for step in steps:
            self.ok("POST", f"/api/lab/orders/{oid}/{step}", self.tech)
        return {"order": oid}

    def granted(self, t: Target) -> dict[str, str]:
        """An emergency grant of the attending doctor to the patient, for a review to decide on."""
        body = {"reason": _reason(t)}
        granted = self.ok("POST", f"/api/patients/{t.id}/emergency-access", self.attending, body, 201)
        return {"grant": str(granted["grant_id"])}

    def on_team(self, t: Target) -> dict[str, str]:
        body = {"user_id": self.spare}
        return {"relationship": str(self.ok("POST", f"/api/patients/{t.id}/care-team", self.admin, body, 201)["id"])}

    def off_team(self, t: Target, o: dict[str, str]) -> None:
        r = self.http.delete(f"/api/patients/{t.id}/care-team/{o['relationship']}", headers=self.admin)
        assert r.status_code in (204, 404), r.text

    def off_team_again(self, t: Target, o: dict[str, str]) -> None:
        """The spare nurse added by the call itself (if it was allowed) leaves the team again."""
        team = self.ok("GET", f"/api/patients/{t.id}/care-team", self.admin)["items"]
        for m in team:
            if m["user_id"] == self.spare and m["source"] == "assignment":
                self.off_team(t, {"relationship": m["id"]})


Objects = dict[str, str]
Build = Callable[[World, Subject, Target, Objects], Call]
Decide = Callable[[frozenset[str], Relationship], Decision]


@dataclass(frozen=True)
class Entry:
    """One route (one action of an ``{action}`` route) and how to call it."""

    method: str
    path: str
    decide: Decide
    build: Build
    #: The route's answer when the policy allows.
    ok: int = 200
    action: str | None = None
    fresh: Callable[[World, Target], Objects] | None = None
    cleanup: Callable[[World, Target, Objects], None] | None = None
    #: Why ``ok`` is not a success, when it is not.
    why: str = ""
    #: Which way of calling the route, when it has more than one (``GET /api/patients``: a search, or by id).
    variant: str = ""

    @property
    def name(self) -> str:
        return (
            f"{self.method} {self.path}"
            + (f" {self.action}" if self.action else "")
            + (f" ({self.variant})" if self.variant else "")
        )


def _p(op: patients.Operation) -> Decide:
    return lambda roles, rel: patients.decide(op, roles, rel)


def _s(op: scheduling.Operation) -> Decide:
    return lambda roles, rel: scheduling.decide(op, roles, rel)


def _a(op: admissions.Operation) -> Decide:
    return lambda roles, rel: admissions.decide(op, roles, rel)


def _l(op: laboratory.Operation) -> Decide:
    return lambda roles, rel: laboratory.decide(op, roles, rel)  # the orders are the attending doctor's


def _b(op: billing.Operation) -> Decide:
    return lambda roles, rel: billing.decide(op, roles, rel)


def _get(path: str, **params: str) -> Build:
    """A GET of ``path`` (formatted with the target ``t`` and the fresh objects ``o``)."""
    return lambda w, s, t, o: Call("GET", path.format(t=t, o=o), {k: v.format(t=t) for k, v in params.items()})


def _post(path: str, body: Callable[[World, Subject, Target, Objects], dict[str, Any]] | None = None) -> Build:
    return lambda w, s, t, o: Call("POST", path.format(t=t, o=o), json=body(w, s, t, o) if body else None)


def _reason(t: Target) -> str:
    """A reason for emergency access to this patient: the same words for another patient within a
    day are refused (ADR 0030), so each patient's names its patient."""
    return f"{REASON}, seen as {t.patient['family_name']}"


def _key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


def _money(w: World, s: Subject, t: Target, o: Objects) -> dict[str, Any]:
    return {"amount": "1.00", "currency": "TRY", "method": "card"}


#: Claims move submit → accept; ADMIN acts first, BILLING second (the order of ``SUBJECTS``).
CLAIM_STEP = {"ADMIN": "submit", "BILLING": "accept"}

#: The purpose of reading the staff directory: any signed-in caller may (``GET /api/staff``).
STAFF_DIRECTORY = "staff_directory"

# fmt: off
MATRIX: list[Entry] = [
    # patients
    Entry("GET", "/api/patients", lambda roles, rel: patients.decide(patients.Operation.SEARCH, roles, rel),
          lambda w, s, t, o: Call("GET", "/api/patients", {"q": str(t.patient["mrn"])})),
    Entry("GET", "/api/patients", lambda roles, rel: patients.decide(patients.Operation.SEARCH, roles, rel),
          lambda w, s, t, o: Call("GET", "/api/patients", {"id": t.id}), variant="by id"),
    Entry("GET", "/api/patients/{id}", _p(patients.Operation.READ), _get("/api/patients/{t.id}")),
    Entry("PATCH", "/api/patients/{id}",
          lambda roles, rel: patients.changing(patients.decide(patients.Operation.UPDATE, roles, rel), roles,
                                               {"email"}),
          lambda w, s, t, o: Call("PATCH", f"/api/patients/{t.id}", json={"email": t.patient["email"]})),
    Entry("GET", "/api/patients/{id}/care-team", _p(patients.Operation.READ), _get("/api/patients/{t.id}/care-team")),
    Entry("POST", "/api/patients/{id}/care-team", _p(patients.Operation.MANAGE_CARE_TEAM),
          _post("/api/patients/{t.id}/care-team", lambda w, s, t, o: {"user_id": w.spare}), ok=201,
          cleanup=World.off_team_again),
    Entry("DELETE", "/api/patients/{id}/care-team/{relationship_id}", _p(patients.Operation.MANAGE_CARE_TEAM),
          lambda w, s, t, o: Call("DELETE", f"/api/patients/{t.id}/care-team/{o['relationship']}"), ok=204,
          fresh=World.on_team, cleanup=World.off_team),
    Entry("POST", "/api/patients/{id}/emergency-access", _p(patients.Operation.BREAK_GLASS),
          _post("/api/patients/{t.id}/emergency-access", lambda w, s, t, o: {"reason": _reason(t)}), ok=201),
    Entry("POST", "/api/patients/emergency-access/{grant_id}/review", _p(patients.Operation.REVIEW_GRANTS),
          _post("/api/patients/emergency-access/{o[grant]}/review", lambda w, s, t, o: {"decision": "reviewed"}),
          fresh=World.granted),
    Entry("POST", "/api/patients/{id}/invitations", _p(patients.Operation.INVITE),
          _post("/api/patients/{t.id}/invitations", lambda w, s, t, o: {}), ok=201),
    Entry("GET", "/api/patients/emergency-access", _p(patients.Operation.OVERSEE_GRANTS),
          _get("/api/patients/emergency-access", patient_id="{t.id}")),
    Entry("GET", "/api/patients/{id}/records", _p(patients.Operation.READ_CLINICAL),
          _get("/api/patients/{t.id}/records")),
    Entry("POST", "/api/patients/{id}/records", _p(patients.Operation.WRITE_CLINICAL),
          _post("/api/patients/{t.id}/records", lambda w, s, t, o: {"kind": "note", "text": "Seen; stable."}),
          ok=201),
    Entry("GET", "/api/patients/{id}/lab-results", _p(patients.Operation.READ_CLINICAL),
          _get("/api/patients/{t.id}/lab-results")),
    # scheduling
    Entry("POST", "/api/appointments", _s(scheduling.Operation.BOOK),
          _post("/api/appointments", lambda w, s, t, o: {"patient_id": t.id, "practitioner_id": w.practitioner,
                                                        "service": "consultation", **w.slot()}), ok=201),
    Entry("GET", "/api/appointments", _s(scheduling.Operation.READ), _get("/api/appointments", patient_id="{t.id}")),
    Entry("GET", "/api/appointments/{id}", _s(scheduling.Operation.READ), _get("/api/appointments/{t.appointment}")),
    Entry("POST", "/api/appointments/{id}/reschedule", _s(scheduling.Operation.RESCHEDULE),
          _post("/api/appointments/{o[appointment]}/reschedule", lambda w, s, t, o: w.slot()), fresh=World.booked),
    *(Entry("POST", "/api/appointments/{id}/{action}", _s(scheduling.OF_ACTION[Action(action)]),
            _post(f"/api/appointments/{{o[appointment]}}/{action}"), action=action,
            fresh=(lambda w, t: w.booked(t, checked_in=True)) if action == "complete" else World.booked)
      for action in ("check-in", "complete", "cancel", "no-show")),
    Entry("POST", "/api/waitlist", _s(scheduling.Operation.WAITLIST),
          _post("/api/waitlist", lambda w, s, t, o: {"patient_id": t.id, "practitioner_id": w.practitioner,
                                                    "service": "follow_up"}), ok=201,
          cleanup=World.withdraw_follow_ups),
    Entry("GET", "/api/waitlist", _s(scheduling.Operation.WAITLIST), _get("/api/waitlist", patient_id="{t.id}")),
    Entry("POST", "/api/waitlist/{id}/withdraw", _s(scheduling.Operation.WAITLIST),
          _post("/api/waitlist/{o[entry]}/withdraw"), fresh=World.waiting, cleanup=World.withdraw),
    Entry("POST", "/api/waitlist/{id}/accept", _s(scheduling.Operation.WAITLIST),
          _post("/api/waitlist/{o[entry]}/accept"), ok=409, fresh=World.waiting, cleanup=World.withdraw,
          why="no slot was offered to the entry, so a caller the policy allows gets 409 (after the access check); "
              "accepting an offer is tests/e2e/test_outpatient.py"),
    # admissions
    Entry("POST", "/api/admissions", _a(admissions.Operation.ADMIT),
          _post("/api/admissions", lambda w, s, t, o: {"patient_id": t.id, "practitioner_id": w.practitioner,
                                                      "ward_id": w.ward}), ok=201, cleanup=World.discharge),
    Entry("GET", "/api/admissions", _a(admissions.Operation.READ), _get("/api/admissions", patient_id="{t.id}")),
    Entry("GET", "/api/admissions/{id}", _a(admissions.Operation.READ), _get("/api/admissions/{t.admission}")),
    Entry("GET", "/api/admissions/{id}/charges", _a(admissions.Operation.READ_CHARGES),
          _get("/api/admissions/{t.admission}/charges")),
    Entry("POST", "/api/admissions/{id}/transfer", _a(admissions.Operation.TRANSFER),
          _post("/api/admissions/{o[admission]}/transfer", lambda w, s, t, o: {"ward_id": w.ward}),
          fresh=World.admitted, cleanup=World.discharge),
    Entry("POST", "/api/admissions/{id}/discharge", _a(admissions.Operation.DISCHARGE),
          _post("/api/admissions/{o[admission]}/discharge"), fresh=World.admitted, cleanup=World.discharge),
    # laboratory
    Entry("POST", "/api/lab/orders", _l(laboratory.Operation.PLACE),
          _post("/api/lab/orders", lambda w, s, t, o: {"patient_id": t.id, "tests": ["UA"], "priority": "routine"}),
          ok=201),
    Entry("GET", "/api/lab/orders", _l(laboratory.Operation.READ), _get("/api/lab/orders", patient_id="{t.id}")),
    Entry("GET", "/api/lab/orders/{id}", _l(laboratory.Operation.READ), _get("/api/lab/orders/{t.lab_order}")),
    Entry("POST", "/api/lab/orders/{id}/results", _l(laboratory.Operation.RESULT),
          _post("/api/lab/orders/{o[order]}/results",
                lambda w, s, t, o: {"results": [{"code": "UA", "value": "negative", "flag": "N"}]}),
          fresh=lambda w, t: w.ordered(t, "collect", "start")),
    Entry("POST", "/api/lab/orders/{id}/{action}", _l(laboratory.Operation.COLLECT),
          _post("/api/lab/orders/{o[order]}/collect"), action="collect", fresh=lambda w, t: w.ordered(t)),
    Entry("POST", "/api/lab/orders/{id}/{action}", _l(laboratory.Operation.START),
          _post("/api/lab/orders/{o[order]}/start"), action="start", fresh=lambda w, t: w.ordered(t, "collect")),
    Entry("POST", "/api/lab/orders/{id}/{action}", _l(laboratory.Operation.CANCEL),
          _post("/api/lab/orders/{o[order]}/cancel"), action="cancel", fresh=lambda w, t: w.ordered(t)),
    # inventory
    Entry("POST", "/api/inventory/consumptions",
          lambda roles, rel: inventory.decide(inventory.Operation.CONSUME_FOR_PATIENT, roles, rel),
          _post("/api/inventory/consumptions", lambda w, s, t, o: {
              "item_code": w.item, "location": "WARD-GEN", "quantity": "1", "reason": "patient", "patient_id": t.id}),
          ok=201),
    # billing
    Entry("GET", "/api/charges", _b(billing.Operation.ACCOUNTS), _get("/api/charges", patient_id="{t.id}")),
    Entry("GET", "/api/invoices", _b(billing.Operation.READ_INVOICES), _get("/api/invoices", patient_id="{t.id}")),
    Entry("GET", "/api/invoices/{id}", _b(billing.Operation.READ_INVOICES), _get("/api/invoices/{t.invoice}")),
    Entry("GET", "/api/invoices/{id}/payments", _b(billing.Operation.READ_INVOICES),
          _get("/api/invoices/{t.invoice}/payments")),
    Entry("POST", "/api/invoices/{id}/payments", _b(billing.Operation.PAY),
          lambda w, s, t, o: Call("POST", f"/api/invoices/{t.invoice}/payments", json=_money(w, s, t, o),
                                  headers=_key()), ok=201),
    Entry("POST", "/api/invoices/{id}/online-payments", _b(billing.Operation.PAY_ONLINE),
          lambda w, s, t, o: Call("POST", f"/api/invoices/{t.invoice}/online-payments",
                                  json={"amount": "1.00", "currency": "TRY"}, headers=_key()), ok=201),
    Entry("GET", "/api/invoices/{id}/online-payments", _b(billing.Operation.READ_INVOICES),
          _get("/api/invoices/{t.invoice}/online-payments")),
    Entry("POST", "/api/invoices/{id}/refunds", _b(billing.Operation.REFUND),
          lambda w, s, t, o: Call("POST", f"/api/invoices/{t.invoice}/refunds", json=_money(w, s, t, o),
                                  headers=_key()), ok=201),
    Entry("GET", "/api/claims/{id}", _b(billing.Operation.ACCOUNTS), _get("/api/claims/{t.claim}")),
    Entry("POST", "/api/claims/{id}/{action}", _b(billing.Operation.ACCOUNTS),
          lambda w, s, t, o: Call("POST", f"/api/claims/{t.claim}/{CLAIM_STEP.get(s.role, 'submit')}"),
          action="submit|accept",
          why="one rule for every step of a claim: ADMIN submits the claim, then BILLING accepts it"),
    # notifications and audit
    Entry("GET", "/api/notifications",
          lambda roles, rel: notifications.decide(notifications.Operation.READ_HISTORY, roles, rel),
          _get("/api/notifications", patient_id="{t.id}")),
    Entry("GET", "/api/notifications/preferences",
          lambda roles, rel: notifications.decide(notifications.Operation.PREFERENCES, roles, rel),
          _get("/api/notifications/preferences", patient_id="{t.id}")),
    Entry("PUT", "/api/notifications/preferences",
          lambda roles, rel: notifications.decide(notifications.Operation.PREFERENCES, roles, rel),
          lambda w, s, t, o: Call("PUT", "/api/notifications/preferences", {"patient_id": t.id},
                                  {"email": True, "sms": False, "opted_out": False})),
    Entry("GET", "/api/audit", lambda roles, rel: audit.decide(audit.Operation.READ_TRAIL, roles, rel),
          _get("/api/audit", patient_id="{t.id}")),
    # identity: the staff directory names staff (ids of accounts, not patients) to every signed-in caller
    Entry("GET", "/api/staff", lambda roles, rel: Decision(STAFF_DIRECTORY),
          lambda w, s, t, o: Call("GET", "/api/staff", {"id": w.spare})),
]
# fmt: on

#: Routes whose every action is listed (their actions follow different rules).
EVERY_ACTION = ("/api/appointments/{id}/{action}", "/api/lab/orders/{id}/{action}")
#: The patient a break-the-glass call of a clinician without a relationship is made on: a grant
#: would relate the clinician to the patient others call on for the rest of the run.
GLASS_ROUTE = "POST /api/patients/{id}/emergency-access"


def target_of(world: World, entry: Entry, s: Subject) -> Target:
    if entry.name == GLASS_ROUTE and s.kind == "none" and s.roles & {"DOCTOR", "NURSE"}:
        return world.targets["glass"]
    return world.targets[s.kind]


# --- the world ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(shared_hospital: Hospital) -> Iterator[World]:
    h = shared_hospital
    admin = h.login()
    with httpx.Client(base_url=h.gateway, timeout=15) as http:
        yield build_world(h, http, admin)


def build_world(h: Hospital, http: httpx.Client, admin: dict[str, str]) -> World:
    tag, number = uuid.uuid4().hex[:6], uuid.uuid4().int % 1000
    # A user of each staff role (the administrator who started the hospital is the ADMIN); then the
    # attending doctor and the spare nurse. Each costs two password hashes: as few as will do.
    roles = ("ADMIN", "RECEPTIONIST", "LAB_TECH", "BILLING", "AUDITOR", "DOCTOR", "NURSE")
    with ThreadPoolExecutor(2) as pool:
        users = list(pool.map(lambda r: create_user(h, admin, r, f"matrix{tag}"), (*roles[1:], "DOCTOR", "NURSE")))
    staff = [("", admin), *users[:6]]
    (attending_id, attending), (spare, _) = users[6], users[7]
    email, password = f"matrix-{tag}@example.org", "a patient's own passphrase"
    patient_user = own_account(h, email, password, "Mira Matrix")
    patient_auth = h.login(email, password)

    def patient(kind: str, n: int, **extra: Any) -> Target:
        record = register_patient(
            h,
            admin,
            f"Matrix{kind.title()}-{tag}",
            given_name=f"Given{kind}{tag}",
            phone=f"+90 555 {number:03d} 10{n}",
            coverage={"payer": "SGK", "member_id": f"SG{tag}{n}"},
            **extra,
        )
        return Target(record)

    targets = {
        "self": patient("self", 0),
        "none": patient("none", 1),
        "care": patient("care", 2),
        "grant": patient("grant", 3),
        "glass": patient("glass", 4),
    }
    # The patient's own account reaches their record as a portal user's does: by an invitation.
    link_by_invitation(h, admin, targets["self"].id, str(targets["self"].patient["email"]), patient_auth)
    subjects = [
        Subject(role, frozenset({role}), "none", uid, auth) for role, (uid, auth) in zip(roles[:7], staff, strict=True)
    ]
    doctor, nurse = subjects[5], subjects[6]
    subjects[5:] = [
        *(replace(doctor, label=f"DOCTOR {k}", kind=k) for k in ("none", "care", "grant")),
        *(replace(nurse, label=f"NURSE {k}", kind=k) for k in ("none", "care", "grant")),
        Subject("the patient", frozenset({"PATIENT"}), "self", patient_user, patient_auth),
        Subject("another patient", frozenset({"PATIENT"}), "none", patient_user, patient_auth),
    ]
    assert len(subjects) == 13  # 5 staff roles; DOCTOR and NURSE × none, care, grant; a patient × self, other
    for clinician in (doctor.user_id, nurse.user_id):
        assign(h, admin, targets["care"].id, clinician)
    spare_on_glass = assign(h, admin, targets["glass"].id, spare)  # patients knows the spare nurse now
    r = http.delete(f"/api/patients/{targets['glass'].id}/care-team/{spare_on_glass}", headers=admin)
    assert r.status_code == 204, r.text
    for kind in ("self", "none", "care", "grant"):
        assign(h, admin, targets[kind].id, attending_id)

    w = World(http, admin, subjects, targets, attending, "", spare, staff[2][1], staff[3][1], "", "")
    profile = {"full_name": "Dr. Matrix", "specialty": "internal_medicine", "user_id": attending_id}
    w.practitioner = str(w.ok("POST", "/api/practitioners", admin, profile, status=201)["id"])
    first = _day(CALENDAR_DAY)
    for d in range(3):
        w.ok(
            "POST",
            f"/api/practitioners/{w.practitioner}/shifts",
            admin,
            {"start": (first + timedelta(days=d)).isoformat(), "end": (first + timedelta(days=d + 1)).isoformat()},
            status=201,
        )
    w.slots = (first + n * SLOT for n in itertools.count())
    w.ward = str(
        w.ok(
            "POST",
            "/api/wards",
            admin,
            {"name": f"Matrix ward {tag}", "type": "general", "daily_rate": "1000.00", "currency": "TRY", "beds": 120},
            status=201,
        )["id"]
    )
    w.item = f"MX-{tag.upper()}"
    w.ok(
        "POST",
        "/api/inventory/items",
        admin,
        {"code": w.item, "description": "Matrix swab", "unit": "piece", "chargeable": False},
        status=201,
    )
    receipt = {"item_code": w.item, "location": "WARD-GEN", "lot": "M1", "quantity": "1000", "expires_on": "2099-01-31"}
    w.ok("POST", "/api/inventory/receipts", admin, receipt, status=201)
    for kind in ("self", "none", "care", "grant"):
        w.targets[kind] = stay(w, w.targets[kind])
    for kind in ("self", "none", "care", "grant"):
        w.targets[kind] = billed(w, w.targets[kind])
    # Notifications and audit learn who owns which patient from events: wait until they have.
    own = {"patient_id": w.targets["self"].id}
    for path in ("/api/notifications", "/api/audit"):

        def knows(p: str = path) -> bool:
            return http.get(p, params=own, headers=patient_auth).status_code == 200

        wait_until(knows, what=f"{path} to know the patient's own record")
    pair_world(w, attending_id)
    return w


def stay(w: World, t: Target) -> Target:
    """The patient's appointment and waitlist entry with the attending doctor, a stay on the ward
    (admitted, a lab order resulted during it, discharged, so its invoice follows)."""
    appointment = w.booked(t)["appointment"]
    w.waiting(t, "procedure")  # 45 minutes: never offered a freed consultation's time either
    admission = w.admitted(t)["admission"]
    order = w.ordered(t, "collect", "start")["order"]
    w.ok(
        "POST",
        f"/api/lab/orders/{order}/results",
        w.tech,
        {"results": [{"code": "UA", "value": "negative", "flag": "N"}]},
    )
    w.ok("POST", f"/api/admissions/{admission}/discharge", w.admin)
    return replace(t, appointment=appointment, admission=admission, lab_order=order)


def billed(w: World, t: Target) -> Target:
    """The stay's invoice and claim, once billing has issued them; the clerk takes 10.00 on it
    (so a refund has something to refund)."""
    found: dict[str, Any] = {}

    def issued() -> bool:
        items = w.ok("GET", "/api/invoices", w.admin, params={"patient_id": t.id})["items"]
        done = [i for i in items if i["kind"] == "admission" and i["status"] not in ("draft", "void")]
        found.update(done[0] if done else {})
        return bool(done)

    wait_until(issued, what="the stay's invoice")
    claims = w.ok("GET", "/api/claims", w.admin, params={"payer": "SGK", "limit": 200})["items"]
    claim = next(c["id"] for c in claims if c["invoice_id"] == found["id"])
    w.ok(
        "POST",
        f"/api/invoices/{found['id']}/payments",
        w.clerk | _key(),
        {"amount": "10.00", "currency": "TRY", "method": "cash"},
        status=201,
    )
    return replace(t, invoice=str(found["id"]), claim=str(claim))


# --- the matrix --------------------------------------------------------------------------------


def expected(entry: Entry, s: Subject) -> tuple[int, Decision]:
    decision = entry.decide(s.roles, s.relationship)
    return (entry.ok if decision.allowed else decision.status), decision


def run_cell(w: World, entry: Entry, s: Subject) -> str | None:
    """Call the route as ``s`` on its patient; None if the answer is the policy's, else what is wrong."""
    t = target_of(w, entry, s)
    objects = entry.fresh(w, t) if entry.fresh else {}
    try:
        if s.kind == "grant":  # grants last seconds in the shared hospital: one fresh for each call
            w.ok("POST", f"/api/patients/{t.id}/emergency-access", s.auth, {"reason": _reason(t)}, status=201)
        call = entry.build(w, s, t, objects)
        answer = w.send(call, s.auth)
        status, decision = expected(entry, s)
        if answer.status_code != status:
            return f"{s.label}: expected {status}, got {answer.status_code} {answer.text[:200]}"
        if decision.allowed:
            return None
        if answer.headers["content-type"] != "application/problem+json":
            return f"{s.label}: a refusal that is not problem+json"
        leaked = [x for x in t.secrets() if x in answer.text]
        if leaked:
            return f"{s.label}: the refusal holds {leaked}"
        offered = "emergency_access" in answer.json()
        if offered != (decision.refusal is Refusal.CARE_REQUIRED):
            return f"{s.label}: emergency access {'offered' if offered else 'not offered'}: {answer.text[:200]}"
        if s.label in ("another patient", "DOCTOR none"):  # made-up identity headers change nothing
            spoofed = w.send(call, spoofed_headers(s.auth, str(uuid.uuid4())))
            if (spoofed.status_code, spoofed.json().get("detail")) != (answer.status_code, answer.json().get("detail")):
                return f"{s.label}: spoofed headers changed the answer to {spoofed.status_code}"
        return None
    finally:
        if entry.cleanup:
            entry.cleanup(w, t, objects)


@pytest.mark.parametrize("entry", MATRIX, ids=[e.name for e in MATRIX])
def test_every_route_answers_every_caller_as_the_policy_decides(world: World, entry: Entry) -> None:
    wrong = [problem for s in world.subjects if (problem := run_cell(world, entry, s))]
    assert not wrong, f"{entry.name}:\n" + "\n".join(wrong)


#: Routes the gateway answers without a user's token (``public`` in ``his.gateway.routing``)
#: that the search finds, and why: what admits a caller there is not a token, so the matrix's
#: token checks do not apply (``test_public_routes_admit_on_their_own_check_not_a_token`` checks theirs).
PUBLIC: dict[tuple[str, str], str] = {
    (
        "POST",
        "/api/payments/webhooks/{provider}",
    ): "the payment provider's confirmation: its signature over the body (Payment-Signature, the provider's "
    "shared secret) admits it, never a user's token; forged, altered and replayed ones are refused "
    "(tests/integration/test_online_payments.py, tests/e2e/test_payments.py)",
    (
        "GET",
        "/api/test-payment-provider/checkout/{ref}",
    ): "the TEST provider's checkout, standing for a provider's own site: the session's unguessable reference "
    "admits the payer, who signs in to the provider, not to the hospital",
    (
        "POST",
        "/api/test-payment-provider/checkout/{ref}",
    ): "the TEST provider's checkout, standing for a provider's own site: the session's unguessable reference "
    "admits the payer, who signs in to the provider, not to the hospital",
}


def public_routes() -> set[tuple[str, str]]:
    return {(r.method, r.path) for r in ROUTES if r.public}


def test_every_route_that_reaches_a_patient_is_in_the_matrix(shared_hospital: Hospital) -> None:
    document = httpx.get(f"{shared_hospital.gateway}/openapi.json", timeout=10).json()
    found = patient_bearing_operations(document)
    assert ("GET", "/api/patients/{id}") in found and ("POST", "/api/lab/orders") in found  # the search works
    public = found & public_routes()
    assert public == set(PUBLIC), (
        f"public routes without their reason: {sorted(public - set(PUBLIC))}; "
        f"reasons for routes that are not public: {sorted(set(PUBLIC) - public)}"
    )
    found -= public
    listed = {(e.method, e.path) for e in MATRIX}
    assert not sorted(found - listed), f"routes reaching a patient without a matrix entry: {sorted(found - listed)}"
    assert not sorted(listed - found), f"matrix entries for routes the API no longer has: {sorted(listed - found)}"
    for path in EVERY_ACTION:
        actions = next(p["schema"] for p in document["paths"][path]["post"]["parameters"] if p["name"] == "action")
        enum = set(resolve(document, actions)["enum"])
        assert enum == {e.action for e in MATRIX if e.path == path}, f"{path}: every action has its row"
    for entry in MATRIX:
        assert 200 <= entry.ok < 300 or entry.why, f"{entry.name}: an answer that is not a success needs its reason"


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        schema = document["components"]["schemas"][name]
    if "allOf" in schema and len(schema["allOf"]) == 1:
        return resolve(document, schema["allOf"][0])
    return schema


def patient_bearing_operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    """Operations with an id in the path or query, or ``patient_id`` in the body, outside the
    places whose ids are not a patient's; and the patient search."""
    found = {("GET", "/api/patients")}
    for path, item in document["paths"].items():
        if path.startswith((*NOT_A_PATIENTS, *ACCOUNTS)):
            continue
        for method, op in item.items():
            if method not in HTTP_METHODS:
                continue
            params = [*item.get("parameters", []), *op.get("parameters", [])]
            by_id = any(
                p["in"] == "path" or (p["in"] == "query" and (p["name"] == "id" or p["name"].endswith("_id")))
                for p in params
            )
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            in_body = body is not None and "patient_id" in resolve(document, body).get("properties", {})
            if by_id or in_body:
                found.add((method.upper(), path))
    return found


def spoofed_headers(auth: dict[str, str], pretend: str) -> dict[str, str]:
    """Headers a client might hope the system trusts for identity; none may change an answer."""
    return auth | {
        "x-user-id": pretend,
        "x-user": pretend,
        "x-subject": pretend,
        "x-principal": pretend,
        "x-forwarded-user": pretend,
        "x-forwarded-email": pretend,
        "x-auth-request-user": pretend,
        "x-auth-request-email": pretend,
        "x-remote-user": pretend,
        "remote-user": pretend,
        "x-his-user": pretend,
        "x-patient-id": pretend,
        "x-roles": "ADMIN",
        "x-role": "ADMIN",
        "x-his-roles": "ADMIN,AUDITOR",
        "x-his-client-ip": "10.0.0.1",
        "x-forwarded-for": "10.0.0.1",
        "x-real-ip": "10.0.0.1",
        "forwarded": "for=10.0.0.1;by=gateway",
    }


def test_identity_headers_without_a_token_get_nothing(world: World) -> None:
    s = next(x for x in world.subjects if x.label == "another patient")
    t = world.targets["self"]
    objects = {
        "appointment": t.appointment,
        "entry": str(uuid.uuid4()),
        "admission": t.admission,
        "order": t.lab_order,
        "relationship": str(uuid.uuid4()),
        "grant": str(uuid.uuid4()),
    }
    for entry in MATRIX:
        call = replace(entry.build(world, s, t, objects), headers=None)
        answer = world.send(call, spoofed_headers({}, s.user_id))
        assert answer.status_code == 401, (entry.name, answer.text)
        assert not [x for x in t.secrets() if x in answer.text], entry.name


def test_public_routes_admit_on_their_own_check_not_a_token(world: World) -> None:
    """The payment provider's routes: a session's reference opens its checkout to anyone who has
    it (and shows nothing of the patient), a made-up one nothing; a confirmation without the
    provider's signature is refused, whoever's token comes with it."""
    t = world.targets["self"]
    patient = next(s for s in world.subjects if s.label == "the patient")
    r = world.http.post(
        f"/api/invoices/{t.invoice}/online-payments",
        json={"amount": "1.00", "currency": "TRY"},
        headers=patient.auth | _key(),
    )
    assert r.status_code == 201, r.text
    checkout = str(r.json()["checkout_url"])
    assert checkout.startswith("/api/test-payment-provider/checkout/cs_test_"), checkout
    made_up = f"/api/test-payment-provider/checkout/cs_test_{uuid.uuid4().hex}"
    card = {"card_number": "4242424242424242", "expiry": "12/99", "cvc": "123"}
    callers = {
        "no token": {},
        "the patient": patient.auth,
        "ADMIN": world.admin,
        "spoofed": spoofed_headers({}, patient.user_id),
    }
    for who, auth in callers.items():
        session = world.http.get(checkout, headers=auth)
        assert session.status_code == 200, (who, session.text)
        assert not [x for x in t.secrets() if x in session.text], (who, session.text)
        for method, body in (("GET", None), ("POST", card)):
            unknown = world.http.request(method, made_up, json=body, headers=auth)
            assert unknown.status_code == 404, (who, method, unknown.text)
            assert unknown.headers["content-type"] == "application/problem+json"
        unsigned = world.http.post("/api/payments/webhooks/test", json={"id": "evt_x"}, headers=auth)
        assert unsigned.status_code == 401, (who, unsigned.text)
        forged = world.http.post(
            "/api/payments/webhooks/test",
            json={"id": "evt_x"},
            headers=auth | {"Payment-Signature": f"t={int(time.time())},v1={'0' * 64}"},
        )
        assert forged.status_code == 401, (who, forged.text)


def test_only_a_patients_own_account_redeems_an_invitation(world: World, shared_hospital: Hospital) -> None:
    """Redeeming names no patient (the code does): every staff role is refused with 403 even with a
    valid code, which stays redeemable; an account linked to a record already gets 409; the
    patient's own account links the record the code was issued for, once."""
    h, tag = shared_hospital, uuid.uuid4().hex[:6]
    record = register_patient(h, world.admin, f"Redeem-{tag}", given_name=f"Given{tag}")
    email, password = f"redeem-{tag}@example.org", "another patient's passphrase"
    own_account(h, email, password, "Rana Redeem")
    account = h.login(email, password)
    receptionist = next(s for s in world.subjects if s.label == "RECEPTIONIST")
    _, code = invite(h, receptionist.auth, record["id"], str(record["email"]))
    staff = [s for s in world.subjects if s.kind == "none" and "PATIENT" not in s.roles]
    assert {s.role for s in staff} == {"ADMIN", "RECEPTIONIST", "LAB_TECH", "BILLING", "AUDITOR", "DOCTOR", "NURSE"}
    for s in staff:
        refused = world.http.post("/api/patients/invitations/redeem", json={"code": code}, headers=s.auth)
        assert refused.status_code == 403, (s.label, refused.text)
        assert refused.headers["content-type"] == "application/problem+json"
    assert world.http.post("/api/patients/invitations/redeem", json={"code": code}).status_code == 401
    patient = next(s for s in world.subjects if s.label == "the patient")
    linked = world.http.post("/api/patients/invitations/redeem", json={"code": code}, headers=patient.auth)
    assert linked.status_code == 409, linked.text  # their account has its record already
    mine = world.http.post("/api/patients/invitations/redeem", json={"code": code}, headers=account)
    assert mine.status_code == 200 and mine.json()["id"] == record["id"], mine.text
    again = world.http.post("/api/patients/invitations/redeem", json={"code": code}, headers=account)
    assert again.status_code == 409, again.text


def test_a_child_id_is_only_found_under_its_own_parent(world: World) -> None:
    """Even for an administrator, a relationship id under another patient's path is not found."""
    care, none = world.targets["care"], world.targets["none"]
    team = world.ok("GET", f"/api/patients/{care.id}/care-team", world.admin)["items"]
    relationship = next(m["id"] for m in team if m["source"] == "assignment")
    r = world.http.delete(f"/api/patients/{none.id}/care-team/{relationship}", headers=world.admin)
    assert r.status_code == 404
    after = world.ok("GET", f"/api/patients/{care.id}/care-team", world.admin)["items"]
    assert relationship in {m["id"] for m in after}


# --- the pair matrix: ids that are not a patient's --------------------------------------------


class Expect(Enum):
    #: Each member reaches their own object, never the other's.
    OWN = "own"
    #: Neither member reaches either object (a route for other roles).
    NEITHER = "neither"
    #: The role reaches every object by design, so both succeed on both.
    ROLE = "role"


@dataclass(frozen=True)
class Member:
    user_id: str
    auth: dict[str, str]


@dataclass(frozen=True)
class PairTarget:
    """One doctor's practitioner profile and leave request; a ward and one of its beds."""

    practitioner_id: str
    leave_id: str
    ward_id: str
    bed_id: str


@dataclass(frozen=True)
class PairEntry:
    build: Callable[[PairTarget], Call]
    patients: Expect
    clinicians: Expect
    billing: Expect

    def expect(self, pair: str) -> Expect:
        return {"patients": self.patients, "clinicians": self.clinicians, "billing": self.billing}[pair]


#: The day the pair world's clinics run (days ahead), and the day each shift call adds.
CLINIC_DAY = 20
SHIFT_DAY = 21


def _at(days: int, hour: float) -> str:
    return (_day(days) + timedelta(hours=hour)).isoformat()


def _span(days: int, hour: float, minutes: int) -> dict[str, str]:
    return {"start": _at(days, hour), "end": _at(days, hour + minutes / 60)}


# fmt: off
PAIRS: dict[tuple[str, str], PairEntry] = {
    ("GET", "/api/practitioners/{id}"): PairEntry(
        lambda t: Call("GET", f"/api/practitioners/{t.practitioner_id}"),
        patients=Expect.ROLE, clinicians=Expect.ROLE, billing=Expect.ROLE,
    ),
    ("POST", "/api/practitioners/{id}/shifts"): PairEntry(
        lambda t: Call("POST", f"/api/practitioners/{t.practitioner_id}/shifts", json=_span(SHIFT_DAY, 8, 480)),
        patients=Expect.NEITHER, clinicians=Expect.OWN, billing=Expect.NEITHER,
    ),
    ("GET", "/api/practitioners/{id}/shifts"): PairEntry(
        lambda t: Call("GET", f"/api/practitioners/{t.practitioner_id}/shifts",
                       params={"from": _at(CLINIC_DAY, 0), "to": _at(CLINIC_DAY, 24)}),
        patients=Expect.NEITHER, clinicians=Expect.ROLE, billing=Expect.ROLE,
    ),
    ("POST", "/api/practitioners/{id}/leave-requests"): PairEntry(
        lambda t: Call("POST", f"/api/practitioners/{t.practitioner_id}/leave-requests",
                       json=_span(CLINIC_DAY + 30, 0, 24 * 60)),
        patients=Expect.NEITHER, clinicians=Expect.OWN, billing=Expect.NEITHER,
    ),
    ("GET", "/api/practitioners/{id}/leave-requests"): PairEntry(
        lambda t: Call("GET", f"/api/practitioners/{t.practitioner_id}/leave-requests"),
        patients=Expect.NEITHER, clinicians=Expect.OWN, billing=Expect.NEITHER,
    ),
    ("POST", "/api/practitioners/{id}/leave-requests/{leave_id}/{action}"): PairEntry(
        lambda t: Call("POST", f"/api/practitioners/{t.practitioner_id}/leave-requests/{t.leave_id}/cancel"),
        patients=Expect.NEITHER, clinicians=Expect.OWN, billing=Expect.NEITHER,
    ),
    ("GET", "/api/practitioners/{id}/availability"): PairEntry(
        lambda t: Call("GET", f"/api/practitioners/{t.practitioner_id}/availability",
                       params={"from": _at(CLINIC_DAY, 0), "to": _at(CLINIC_DAY, 24)}),
        patients=Expect.NEITHER, clinicians=Expect.ROLE, billing=Expect.ROLE,
    ),
    ("GET", "/api/practitioners/{id}/slots"): PairEntry(
        lambda t: Call("GET", f"/api/practitioners/{t.practitioner_id}/slots",
                       params={"date": _at(CLINIC_DAY, 0)[:10]}),
        patients=Expect.ROLE, clinicians=Expect.ROLE, billing=Expect.ROLE,
    ),
    ("GET", "/api/wards/{id}"): PairEntry(
        lambda t: Call("GET", f"/api/wards/{t.ward_id}"),
        patients=Expect.NEITHER, clinicians=Expect.ROLE, billing=Expect.ROLE,
    ),
    # A correction (ADMIN's): the rate it was made with, so a wrong answer would change nothing.
    ("PATCH", "/api/wards/{id}"): PairEntry(
        lambda t: Call("PATCH", f"/api/wards/{t.ward_id}", json={"daily_rate": "1000.00"}),
        patients=Expect.NEITHER, clinicians=Expect.NEITHER, billing=Expect.NEITHER,
    ),
    ("GET", "/api/beds"): PairEntry(
        lambda t: Call("GET", "/api/beds", params={"ward_id": t.ward_id}),
        patients=Expect.NEITHER, clinicians=Expect.ROLE, billing=Expect.ROLE,
    ),
    ("POST", "/api/beds/{id}/{action}"): PairEntry(
        lambda t: Call("POST", f"/api/beds/{t.bed_id}/close"),
        patients=Expect.NEITHER, clinicians=Expect.NEITHER, billing=Expect.NEITHER,
    ),
}
# fmt: on


def pair_world(w: World, attending_id: str) -> None:
    """The pair matrix's members and their objects: two doctors (the matrix's and the attending
    one) with a practitioner profile, a clinic day and a leave request each; a ward and a bed.
    Patients and billing clerks fare alike on every one of these routes (by role), so one of each
    stands for both members of their pair."""
    doctor = next(s for s in w.subjects if s.label == "DOCTOR none")
    patient = next(s for s in w.subjects if s.label == "the patient")
    clerk = next(s for s in w.subjects if s.label == "BILLING")
    beds = w.ok("GET", "/api/beds", w.admin, params={"ward_id": w.ward})["items"]
    free = [b["id"] for b in beds if b["state"] == "available"]
    targets, members = [], [Member(doctor.user_id, doctor.auth), Member(attending_id, w.attending)]
    for n, member in enumerate(members):
        pid = w.practitioner
        if n == 0:
            profile = {"full_name": "Dr. Pair", "specialty": "cardiology", "user_id": member.user_id}
            pid = str(w.ok("POST", "/api/practitioners", w.admin, profile, status=201)["id"])
        w.ok("POST", f"/api/practitioners/{pid}/shifts", member.auth, _span(CLINIC_DAY, 8, 480), status=201)
        leave = w.ok(
            "POST",
            f"/api/practitioners/{pid}/leave-requests",
            member.auth,
            _span(CLINIC_DAY + 40, 0, 24 * 60),
            status=201,
        )["id"]
        targets.append(PairTarget(pid, str(leave), w.ward, free[-1 - n]))
    w.pairs = {
        "patients": (Member(patient.user_id, patient.auth),) * 2,
        "clinicians": (members[0], members[1]),
        "billing": (Member(clerk.user_id, clerk.auth),) * 2,
    }
    w.pair_targets = (targets[0], targets[1])


def test_every_id_that_is_not_a_patients_is_in_the_pair_matrix(shared_hospital: Hospital) -> None:
    document = httpx.get(f"{shared_hospital.gateway}/openapi.json", timeout=10).json()
    found = set()
    for path, item in document["paths"].items():
        for method, op in item.items():
            params = [*item.get("parameters", []), *op.get("parameters", [])] if method in HTTP_METHODS else []
            if path.startswith(NOT_A_PATIENTS) and any(
                p["in"] == "path" or (p["in"] == "query" and p["name"].endswith("_id")) for p in params
            ):
                found.add((method.upper(), path))
    assert found == set(PAIRS), (sorted(found - set(PAIRS)), sorted(set(PAIRS) - found))


@pytest.mark.parametrize("pair", ["patients", "clinicians", "billing"])
@pytest.mark.parametrize("operation", list(PAIRS), ids=" ".join)
def test_no_one_reaches_the_other_ones_object(world: World, operation: tuple[str, str], pair: str) -> None:
    entry, expect = PAIRS[operation], PAIRS[operation].expect(pair)
    members, targets = world.pairs[pair], world.pair_targets
    assert targets is not None
    for me, other in ((0, 1), (1, 0)):
        member = members[me]
        own = world.send(entry.build(targets[me]), member.auth)
        if expect in (Expect.OWN, Expect.ROLE):
            assert 200 <= own.status_code < 300, (operation, pair, me, own.text)
        else:
            assert own.status_code in (403, 404), (operation, pair, me, own.text)
        foreign = world.send(entry.build(targets[other]), member.auth)
        if expect is Expect.ROLE:
            assert 200 <= foreign.status_code < 300, (operation, pair, me, foreign.text)
            continue
        assert foreign.status_code in (403, 404), (operation, pair, me, foreign.text)
        assert foreign.headers["content-type"] == "application/problem+json"
        spoofed = world.send(entry.build(targets[other]), spoofed_headers(member.auth, members[other].user_id))
        same = (spoofed.status_code, spoofed.json().get("detail")) == (
            foreign.status_code,
            foreign.json().get("detail"),
        )
        assert same, (operation, pair, me, spoofed.text)
