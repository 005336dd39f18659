"""The BOLA matrix: every id-bearing operation of the public API, for pairs of users.

Each pair holds one object per member: patients A and B (their own records), doctors 1 and 2
(care relationships with A and with B), billing users 1 and 2. For every operation with an id
in its path or an id query parameter (``patient_id``…), taken from the gateway's own OpenAPI
document, the matrix says how each pair must fare; an operation missing from the matrix fails
the test, so a route added later must be placed in it. Refusals are 403 or 404 problem+json
holding nothing of the other's object, and identity headers a client makes up change nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

import httpx
import pytest

from tests.e2e.harness import Hospital, assign, create_user, link_by_invitation, register_patient
from tests.support.waiting import wait_until

HTTP_METHODS = ("get", "post", "put", "patch", "delete")
REASON = "Suspected sepsis, patient confused and cannot give consent or history"


class Expect(Enum):
    #: Each member reaches their own object, never the other's.
    OWN = "own"
    #: Neither member reaches either object (a route for other roles).
    NEITHER = "neither"
    #: The role reaches every object by design (role-based staff access), so both succeed on both.
    ROLE = "role"
    #: Not an ownership question; the entry says why and which test covers it.
    EXEMPT = "exempt"


@dataclass(frozen=True)
class Member:
    user_id: str
    auth: dict[str, str]


@dataclass(frozen=True)
class Target:
    """One pair member's objects: a patient, the care relationship of that patient's doctor, the
    doctor's practitioner profile and leave request, the patient's appointments with that doctor
    (one to move, one to cancel) and the patient's waitlist entry."""

    patient: dict[str, Any]
    relationship_id: str
    practitioner_id: str = ""
    leave_id: str = ""
    appointments: tuple[str, str] = ("", "")
    waitlist_id: str = ""
    ward_id: str = ""
    bed_id: str = ""
    admission_id: str = ""
    #: The patient's lab orders from that doctor: one resulted, one left placed (to cancel).
    lab_orders: tuple[str, str] = ("", "")
    #: The stay's invoice (SGK: the insurer's share is claimed) and its claim.
    invoice_id: str = ""
    claim_id: str = ""

    def secrets(self) -> list[str]:
        """What of this object must never reach someone refused it."""
        p = self.patient
        return [str(p["family_name"]), str(p["given_name"]), str(p["mrn"]), str(p["email"]), str(p["phone"]),
                str(p["coverage"]["member_id"]), self.relationship_id]  # fmt: skip


@dataclass(frozen=True)
class World:
    gateway: str
    admin: dict[str, str]
    pairs: dict[str, tuple[Member, Member]]
    targets: tuple[Target, Target]


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    params: dict[str, str] | None = None
    json: dict[str, Any] | None = None
    headers: dict[str, str] | None = None


Build = Callable[[Member, Target], Call]


@dataclass(frozen=True)
class Entry:
    build: Build
    patients: Expect
    clinicians: Expect
    billing: Expect
    why: str = ""
    #: Answered without a user token (the payment provider's side): its own check is its signature.
    public: bool = False

    def expect(self, pair: str) -> Expect:
        return {"patients": self.patients, "clinicians": self.clinicians, "billing": self.billing}[pair]


def _pid(t: Target) -> str:
    return str(t.patient["id"])


#: The day the BOLA world's clinics run (days ahead), and the hour each call may move a booking to.
CLINIC_DAY = 20
SHIFT_DAY = 21


def _at(days: int, hour: float) -> str:
    base = (datetime.now(UTC) + timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (base + timedelta(hours=hour)).isoformat()


def _span(days: int, hour: float, minutes: int) -> dict[str, str]:
    return {"start": _at(days, hour), "end": _at(days, hour + minutes / 60)}


# Billing users reach every invoice by role; each pair member's objects are its patient's.
MATRIX: dict[tuple[str, str], Entry] = {
    ("GET", "/api/patients/{id}"): Entry(
        lambda m, t: Call("GET", f"/api/patients/{_pid(t)}"),
        patients=Expect.OWN, clinicians=Expect.OWN, billing=Expect.ROLE,
    ),
    ("PATCH", "/api/patients/{id}"): Entry(
        lambda m, t: Call("PATCH", f"/api/patients/{_pid(t)}", json={"email": t.patient["email"]}),
        patients=Expect.OWN, clinicians=Expect.NEITHER, billing=Expect.NEITHER,
    ),
    ("GET", "/api/patients/{id}/care-team"): Entry(
        lambda m, t: Call("GET", f"/api/patients/{_pid(t)}/care-team"),
        patients=Expect.OWN, clinicians=Expect.OWN, billing=Expect.ROLE,
    ),
    ("POST", "/api/patients/{id}/care-team"): Entry(
        lambda m, t: Call("POST", f"/api/patients/{_pid(t)}/care-team", json={"user_id": m.user_id}),
        patients=Expect.NEITHER, clinicians=Expect.NEITHER, billing=Expect.NEITHER,
    ),
    ("DELETE", "/api/patients/{id}/care-team/{relationship_id}"): Entry(
        lambda m, t: Call("DELETE", f"/api/patients/{_pid(t)}/care-team/{t.relationship_id}"),
        patients=Expect.NEITHER, clinicians=Expect.NEITHER, billing=Expect.NEITHER,
    ),
    ("POST", "/api/patients/{id}/invitations"): Entry(
        lambda m, t: Call("POST", f"/api/patients/{_pid(t)}/invitations", json={}),
        patients=Expect.NEITHER, clinicians=Expect.NEITHER, billing=Expect.NEITHER,
    ),
    ("POST", "/api/patients/{id}/emergency-access"): Entry(
        lambda m, t: Call("POST", f"/api/patients/{_pid(t)}/emergency-access", json={"reason": REASON}),
        patients=Expect.NEITHER, clinicians=Expect.EXEMPT, billing=Expect.NEITHER,
        why="any clinician may break the glass on any patient, with a reason (tests/e2e/test_break_glass.py)",
    ),
    ("GET", "/api/patients/{id}/records"): Entry(
        lambda m, t: Call("GET", f"/api/patients/{_pid(t)}/records"),
        patients=Expect.OWN, clinicians=Expect.OWN, billing=Expect.NEITHER,
    ),
    ("POST", "/api/patients/{id}/records"): Entry(
        lambda m, t: Call("POST", f"/api/patients/{_pid(t)}/records",
                          json={"kind": "note", "text": "Seen in clinic; stable."}),
        patients=Expect.NEITHER, clinicians=Expect.OWN, billing=Expect.NEITHER,
    ),
    ("GET", "/api/patients/emergency-access"): Entry(
        lambda m, t: Call("GET", "/api/patients/emergency-access", params={"patient_id": _pid(t)}),
        patients=Expect.NEITHER, clinicians=Expect.NEITHER, billing=Expect.NEITHER,
    ),
    ("GET", "/api/practitioners/{id}"): Entry(
        lambda m, t: Call("GET", f"/api/practitioners/{t.practitioner_id}"),
        patients=Expect.ROLE, clinicians=Expect.ROLE, billing=Expect.ROLE,
    ),
    ("POST", "/api/practitioners/{id}/shifts"): Entry(
        lambda m, t: Call("POST", f"/api/practitioners/{t.practitioner_id}/shifts", json=_span(SHIFT_DAY, 8, 480)),
        patients=Expect.NEITHER, clinicians=Expect.OWN, billing=Expect.NEITHER,
    ),
    ("GET", "/api/practitioners/{id}/shifts"): Entry(
        lambda m, t: Call("GET", f"/api/practitioners/{t.practitioner_id}/shifts",
                          params={"from": _at(CLINIC_DAY, 0), "to": _at(CLINIC_DAY, 24)}),
        patients=Expect.NEITHER, clinicians=Expect.ROLE, billing=Expect.ROLE,
    ),
    ("POST", "/api/practitioners/{id}/leave-requests"): Entry(
        lambda m, t: Call("POST", f"/api/practitioners/{t.practitioner_id}/leave-requests",
                          json=_span(CLINIC_DAY + 30, 0, 24 * 60)),
        patients=Expect.NEITHER, clinicians=Expect.OWN, billing=Expect.NEITHER,
    ),
    ("GET", "/api/practitioners/{id}/leave-requests"): Entry(
        lambda m, t: Call("GET", f"/api/practitioners/{t.practitioner_id}/leave-requests"),
        patients=Expect.NEITHER, clinicians=Expect.OWN, billing=Expect.NEITHER,
    ),
    ("POST", "/api/practitioners/{id}/leave-requests/{leave_id}/{action}"): Entry(
        lambda m, t: Call("POST", f"/api/practitioners/{t.practitioner_id}/leave-requests/{t.leave_id}/cancel"),
        patients=Expect.NEITHER, clinicians=Expect.OWN, billing=Expect.NEITHER,
    ),
    ("GET", "/api/practitioners/{id}/availability"): Entry(
        lambda m, t: Call("GET", f"/api/practitioners/{t.practitioner_id}/availability",
                          params={"from": _at(CLINIC_DAY, 0), "to": _at(CLINIC_DAY, 24)}),
        patients=Expect.NEITHER, clinicians=Expect.ROLE, billing=Expect.ROLE,
    ),
    ("GET", "/api/practitioners/{id}/slots"): Entry(
        lambda m, t: Call("GET", f"/api/practitioners/{t.practitioner_id}/slots",
                          params={"date": _at(CLINIC_DAY, 0)[:10]}),
        patients=Expect.ROLE, clinicians=Expect.ROLE, billing=Expect.ROLE,
    ),
    ("GET", "/api/appointments"): Entry(
        lambda m, t: Call("GET", "/api/appointments", params={"patient_id": _pid(t)}),
        patients=Expect.OWN, clinicians=Expect.OWN, billing=Expect.NEITHER,
    ),
    ("GET", "/api/appointments/{id}"): Entry(
        lambda m, t: Call("GET", f"/api/appointments/{t.appointments[0]}"),
        patients=Expect.OWN, clinicians=Expect.OWN, billing=Expect.NEITHER,
    ),
    ("POST", "/api/appointments/{id}/reschedule"): Entry(
        lambda m, t: Call("POST", f"/api/appointments/{t.appointments[0]}/reschedule", json=_span(CLINIC_DAY, 12, 20)),
        patients=Expect.OWN, clinicians=Expect.NEITHER, billing=Expect.NEITHER,
    ),
    ("POST", "/api/appointments/{id}/{action}"): Entry(
        lambda m, t: Call("POST", f"/api/appointments/{t.appointments[1]}/cancel"),
        patients=Expect.OWN, clinicians=Expect.NEITHER, billing=Expect.NEITHER,
    ),
    ("GET", "/api/waitlist"): Entry(
        lambda m, t: Call("GET", "/api/waitlist", params={"patient_id": _pid(t)}),
        patients=Expect.OWN, clinicians=Expect.NEITHER, billing=Expect.NEITHER,
    ),
    ("POST", "/api/waitlist/{id}/withdraw"): Entry(
        lambda m, t: Call("POST", f"/api/waitlist/{t.waitlist_id}/withdraw"),
        patients=Expect.OWN, clinicians=Expect.NEITHER, billing=Expect.NEITHER,
    ),
    ("POST", "/api/waitlist/{id}/accept"): Entry(
        lambda m, t: Call("POST", f"/api/waitlist/{t.waitlist_id}/accept"),
        patients=Expect.EXEMPT, clinicians=Expect.NEITHER, billing=Expect.NEITHER,
        why="an entry's owner gets 409 until a slot is offered; the same ownership check is exercised by "
            "/withdraw, and accepting an offer by tests/e2e/test_outpatient.py",
    ),
    ("GET", "/api/notifications/preferences"): Entry(
        lambda m, t: Call("GET", "/api/notifications/preferences", params={"patient_id": _pid(t)}),
        patients=Expect.OWN, clinicians=Expect.NEITHER, billing=Expect.NEITHER,
    ),
    ("PUT", "/api/notifications/preferences"): Entry(
        lambda m, t: Call("PUT", "/api/notifications/preferences", params={"patient_id": _pid(t)},
                          json={"email": True, "sms": False, "opted_out": False}),
        patients=Expect.OWN, clinicians=Expect.NEITHER, billing=Expect.NEITHER,
    ),
    ("GET", "/api/notifications"): Entry(
        lambda m, t: Call("GET", "/api/notifications", params={"patient_id": _pid(t)}),
        patients=Expect.OWN, clinicians=Expect.NEITHER, billing=Expect.NEITHER,
    ),
    ("GET", "/api/audit"): Entry(
        lambda m, t: Call("GET", "/api/audit", params={"patient_id": _pid(t)}),
        patients=Expect.OWN, clinicians=Expect.NEITHER, billing=Expect.NEITHER,
    ),
    # admissions: staff by role, never patients
    ("GET", "/api/wards/{id}"): Entry(
        lambda m, t: Call("GET", f"/api/wards/{t.ward_id}"),
        patients=Expect.NEITHER, clinicians=Expect.ROLE, billing=Expect.ROLE,
    ),
    ("PATCH", "/api/wards/{id}"): Entry(
        lambda m, t: Call("PATCH", f"/api/wards/{t.ward_id}", json={"name": "Renamed"}),
        patients=Expect.NEITHER, clinicians=Expect.NEITHER, billing=Expect.NEITHER,
    ),
    ("GET", "/api/beds"): Entry(
        lambda m, t: Call("GET", "/api/beds", params={"ward_id": t.ward_id}),
        patients=Expect.NEITHER, clinicians=Expect.ROLE, billing=Expect.ROLE,
    ),
    ("POST", "/api/beds/{id}/{action}"): Entry(
        lambda m, t: Call("POST", f"/api/beds/{t.bed_id}/close"),
        patients=Expect.NEITHER, clinicians=Expect.NEITHER, billing=Expect.NEITHER,
    ),
    ("GET", "/api/admissions"): Entry(
        lambda m, t: Call("GET", "/api/admissions", params={"patient_id": _pid(t)}),
        patients=Expect.NEITHER, clinicians=Expect.ROLE, billing=Expect.NEITHER,
    ),
    ("GET", "/api/admissions/{id}"): Entry(
        lambda m, t: Call("GET", f"/api/admissions/{t.admission_id}"),
        patients=Expect.NEITHER, clinicians=Expect.ROLE, billing=Expect.NEITHER,
    ),
    ("GET", "/api/admissions/{id}/charges"): Entry(
        lambda m, t: Call("GET", f"/api/admissions/{t.admission_id}/charges"),
        patients=Expect.NEITHER, clinicians=Expect.ROLE, billing=Expect.ROLE,
    ),
    ("POST", "/api/admissions/{id}/transfer"): Entry(
        lambda m, t: Call("POST", f"/api/admissions/{t.admission_id}/transfer", json={"ward_id": t.ward_id}),
        patients=Expect.NEITHER, clinicians=Expect.EXEMPT, billing=Expect.NEITHER,
        why="ward staff move any admitted patient by role; transfers are covered by "
            "tests/integration/test_admissions.py (the matrix's admissions are already discharged)",
    ),
    ("POST", "/api/admissions/{id}/discharge"): Entry(
        lambda m, t: Call("POST", f"/api/admissions/{t.admission_id}/discharge"),
        patients=Expect.NEITHER, clinicians=Expect.EXEMPT, billing=Expect.NEITHER,
        why="ward staff discharge any admitted patient by role; covered by tests/integration/test_admissions.py "
            "(the matrix's admissions are already discharged, so their invoices exist)",
    ),
    # laboratory: clinicians in the patient's care (as for the chart), a patient their own orders,
    # the ordering doctor cancels
    ("GET", "/api/lab/orders"): Entry(
        lambda m, t: Call("GET", "/api/lab/orders", params={"patient_id": _pid(t)}),
        patients=Expect.OWN, clinicians=Expect.OWN, billing=Expect.NEITHER,
    ),
    ("GET", "/api/lab/orders/{id}"): Entry(
        lambda m, t: Call("GET", f"/api/lab/orders/{t.lab_orders[0]}"),
        patients=Expect.OWN, clinicians=Expect.OWN, billing=Expect.NEITHER,
    ),
    ("POST", "/api/lab/orders/{id}/{action}"): Entry(
        lambda m, t: Call("POST", f"/api/lab/orders/{t.lab_orders[1]}/cancel"),
        patients=Expect.NEITHER, clinicians=Expect.OWN, billing=Expect.NEITHER,
    ),
    ("POST", "/api/lab/orders/{id}/results"): Entry(
        lambda m, t: Call("POST", f"/api/lab/orders/{t.lab_orders[1]}/results",
                          json={"results": [{"code": "UA", "value": "negative", "flag": "N"}]}),
        patients=Expect.NEITHER, clinicians=Expect.NEITHER, billing=Expect.NEITHER,
    ),
    ("GET", "/api/patients/{id}/lab-results"): Entry(
        lambda m, t: Call("GET", f"/api/patients/{_pid(t)}/lab-results"),
        patients=Expect.OWN, clinicians=Expect.OWN, billing=Expect.NEITHER,
    ),
    # billing: a patient their own invoices, BILLING every invoice by role, clinicians none
    ("GET", "/api/invoices"): Entry(
        lambda m, t: Call("GET", "/api/invoices", params={"patient_id": _pid(t)}),
        patients=Expect.OWN, clinicians=Expect.NEITHER, billing=Expect.ROLE,
    ),
    ("GET", "/api/invoices/{id}"): Entry(
        lambda m, t: Call("GET", f"/api/invoices/{t.invoice_id}"),
        patients=Expect.OWN, clinicians=Expect.NEITHER, billing=Expect.ROLE,
    ),
    ("GET", "/api/invoices/{id}/payments"): Entry(
        lambda m, t: Call("GET", f"/api/invoices/{t.invoice_id}/payments"),
        patients=Expect.OWN, clinicians=Expect.NEITHER, billing=Expect.ROLE,
    ),
    # Money taken at a desk is BILLING's to record; a patient pays online, and only the payment
    # provider's confirmation records it.
    ("POST", "/api/invoices/{id}/payments"): Entry(
        lambda m, t: Call("POST", f"/api/invoices/{t.invoice_id}/payments", headers=_fresh_key(),
                          json={"amount": "1.00", "currency": "TRY", "method": "card"}),
        patients=Expect.NEITHER, clinicians=Expect.NEITHER, billing=Expect.ROLE,
    ),
    ("POST", "/api/invoices/{id}/online-payments"): Entry(
        lambda m, t: Call("POST", f"/api/invoices/{t.invoice_id}/online-payments", headers=_fresh_key(),
                          json={"amount": "1.00", "currency": "TRY"}),
        patients=Expect.OWN, clinicians=Expect.NEITHER, billing=Expect.NEITHER,
    ),
    ("GET", "/api/invoices/{id}/online-payments"): Entry(
        lambda m, t: Call("GET", f"/api/invoices/{t.invoice_id}/online-payments"),
        patients=Expect.OWN, clinicians=Expect.NEITHER, billing=Expect.ROLE,
    ),
    ("POST", "/api/payments/webhooks/{provider}"): Entry(
        lambda m, t: Call("POST", "/api/payments/webhooks/test", json={}),
        patients=Expect.EXEMPT, clinicians=Expect.EXEMPT, billing=Expect.EXEMPT, public=True,
        why="the payment provider's webhook names no user's object: its signature admits it; forged and "
            "replayed confirmations are refused (tests/integration/test_online_payments.py, "
            "tests/e2e/test_payments.py)",
    ),
    ("GET", "/api/test-payment-provider/checkout/{ref}"): Entry(
        lambda m, t: Call("GET", "/api/test-payment-provider/checkout/cs_test_none"),
        patients=Expect.EXEMPT, clinicians=Expect.EXEMPT, billing=Expect.EXEMPT, public=True,
        why="the TEST provider's checkout stands for a provider's own site: its unguessable reference admits "
            "the payer (tests/integration/test_online_payments.py)",
    ),
    ("POST", "/api/test-payment-provider/checkout/{ref}"): Entry(
        lambda m, t: Call("POST", "/api/test-payment-provider/checkout/cs_test_none", json={}),
        patients=Expect.EXEMPT, clinicians=Expect.EXEMPT, billing=Expect.EXEMPT, public=True,
        why="the TEST provider's checkout stands for a provider's own site: its unguessable reference admits "
            "the payer (tests/integration/test_online_payments.py)",
    ),
    ("POST", "/api/invoices/{id}/refunds"): Entry(
        lambda m, t: Call("POST", f"/api/invoices/{t.invoice_id}/refunds", headers=_fresh_key(),
                          json={"amount": "1.00", "currency": "TRY", "method": "card"}),
        patients=Expect.NEITHER, clinicians=Expect.NEITHER, billing=Expect.ROLE,
    ),
    ("GET", "/api/charges"): Entry(
        lambda m, t: Call("GET", "/api/charges", params={"patient_id": _pid(t)}),
        patients=Expect.NEITHER, clinicians=Expect.NEITHER, billing=Expect.ROLE,
    ),
    ("GET", "/api/claims/{id}"): Entry(
        lambda m, t: Call("GET", f"/api/claims/{t.claim_id}"),
        patients=Expect.NEITHER, clinicians=Expect.NEITHER, billing=Expect.ROLE,
    ),
    ("POST", "/api/claims/{id}/{action}"): Entry(
        lambda m, t: Call("POST", f"/api/claims/{t.claim_id}/submit"),
        patients=Expect.NEITHER, clinicians=Expect.NEITHER, billing=Expect.EXEMPT,
        why="BILLING moves any claim by role, and a claim is submitted once (a second submit is 409); claim "
            "states are covered by tests/integration/test_billing.py",
    ),
}  # fmt: skip


def _fresh_key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


def spoofed_headers(auth: dict[str, str], pretend: str) -> dict[str, str]:
    """Headers a client might hope the system trusts for identity; none may change an answer."""
    return auth | {
        "x-user-id": pretend, "x-user": pretend, "x-subject": pretend, "x-principal": pretend,
        "x-forwarded-user": pretend, "x-forwarded-email": pretend, "x-auth-request-user": pretend,
        "x-auth-request-email": pretend, "x-remote-user": pretend, "remote-user": pretend, "x-his-user": pretend,
        "x-patient-id": pretend, "x-roles": "ADMIN", "x-role": "ADMIN", "x-his-roles": "ADMIN,AUDITOR",
        "x-his-client-ip": "10.0.0.1", "x-forwarded-for": "10.0.0.1", "x-real-ip": "10.0.0.1",
        "forwarded": "for=10.0.0.1;by=gateway",
    }  # fmt: skip


def id_bearing_operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    """Operations with a path parameter, or a query parameter naming an id."""
    found = set()
    for path, item in document["paths"].items():
        for method, op in item.items():
            if method not in HTTP_METHODS:
                continue
            params = [*item.get("parameters", []), *op.get("parameters", [])]
            if any(p["in"] == "path" or (p["in"] == "query" and (p["name"] == "id" or p["name"].endswith("_id")))
                   for p in params):  # fmt: skip
                found.add((method.upper(), path))
    return found


@pytest.fixture(scope="module")
def world(shared_hospital: Hospital) -> World:
    h, gw = shared_hospital, shared_hospital.gateway
    admin = h.login()
    tag, number = uuid.uuid4().hex[:6], uuid.uuid4().int % 1000
    patients = []
    for n, side in enumerate(("a", "b")):
        email, password = f"bola-{side}-{tag}@example.org", "a patient's own passphrase"
        r = httpx.post(f"{gw}/api/auth/register", timeout=10,
                       json={"email": email, "password": password, "full_name": f"Bola {side}"})  # fmt: skip
        assert r.status_code == 201, r.text
        user_id = str(r.json()["user_id"])
        record = register_patient(h, admin, f"Bola{side.upper()}-{tag}", given_name=f"Given{side}{tag}",
                                  phone=f"+90 555 {number:03d} 00{n}",
                                  coverage={"payer": "SGK", "member_id": f"SG{tag}{n}"})  # fmt: skip
        member = Member(user_id, h.login(email, password))
        link_by_invitation(h, admin, record["id"], str(record["email"]), member.auth)
        patients.append((member, record))
    doctors = [Member(*create_user(h, admin, "DOCTOR", f"bola{n}")) for n in (1, 2)]
    billing = [Member(*create_user(h, admin, "BILLING", f"bola{n}")) for n in (1, 2)]
    targets = tuple(
        Target(record, assign(h, admin, record["id"], doctor.user_id))
        for (_, record), doctor in zip(patients, doctors, strict=True)
    )
    targets = tuple(
        outpatient(h, admin, t, doctor, patient_auth)
        for t, doctor, (patient_auth, _) in zip(targets, doctors, patients, strict=True)
    )
    _, tech = create_user(h, admin, "LAB_TECH", "bola")
    ward = _post(gw, "/api/wards", {"name": f"Bola ward {tag}", "type": "general", "daily_rate": "1000.00",
                                    "currency": "TRY", "beds": 4}, admin)["id"]  # fmt: skip
    targets = tuple(inpatient(h, admin, t, ward, doctor, tech) for t, doctor in zip(targets, doctors, strict=True))
    targets = tuple(billed(h, admin, t, billing[0]) for t in targets)
    # Notifications and audit learn who owns which patient from events: wait until they have.
    for member, record in patients:
        for path in ("/api/notifications", "/api/audit"):

            def knows(p: str = path, m: Member = member, r: dict[str, object] = record) -> bool:
                reply = httpx.get(f"{gw}{p}", params={"patient_id": str(r["id"])}, headers=m.auth, timeout=10)
                return reply.status_code == 200

            wait_until(knows, what=f"{path} to know patient {record['id']}'s owner")
    return World(
        gw,
        admin,
        {"patients": (patients[0][0], patients[1][0]), "clinicians": (doctors[0], doctors[1]),
         "billing": (billing[0], billing[1])},
        (targets[0], targets[1]),
    )  # fmt: skip


def outpatient(h: Hospital, admin: dict[str, str], target: Target, doctor: Member, patient: Member) -> Target:
    """The doctor's practitioner profile, a clinic day and a leave request; the patient's two
    appointments with that doctor and a waitlist entry."""
    gw = h.gateway

    def post(path: str, body: dict[str, Any], auth: dict[str, str]) -> dict[str, Any]:
        r = httpx.post(f"{gw}{path}", json=body, headers=auth, timeout=10)
        assert r.status_code == 201, (path, r.text)
        return dict(r.json())

    pid = post("/api/practitioners", {"full_name": "Dr. Bola", "specialty": "cardiology", "user_id": doctor.user_id},
               admin)["id"]  # fmt: skip
    post(f"/api/practitioners/{pid}/shifts", _span(CLINIC_DAY, 8, 480), doctor.auth)
    leave = post(f"/api/practitioners/{pid}/leave-requests", _span(CLINIC_DAY + 40, 0, 24 * 60), doctor.auth)["id"]
    booked = []
    for hour in (9, 10):
        body = {
            "patient_id": _pid(target),
            "practitioner_id": pid,
            "service": "consultation",
            **_span(CLINIC_DAY, hour, 20),
        }
        booked.append(post("/api/appointments", body, admin)["id"])
    entry = post("/api/waitlist", {"patient_id": _pid(target), "practitioner_id": pid, "service": "consultation"},
                 patient.auth)["id"]  # fmt: skip
    return replace(target, practitioner_id=pid, leave_id=leave, appointments=(booked[0], booked[1]), waitlist_id=entry)


def _post(gw: str, path: str, body: dict[str, Any] | None, auth: dict[str, str], status: int = 201) -> dict[str, Any]:
    r = httpx.post(f"{gw}{path}", json=body, headers=auth, timeout=10)
    assert r.status_code == status, (path, r.text)
    return dict(r.json())


def inpatient(
    h: Hospital, admin: dict[str, str], target: Target, ward: str, doctor: Member, tech: dict[str, str]
) -> Target:
    """The patient's stay on a ward (admitted, then discharged, so its invoice exists) and two lab
    orders from the patient's doctor: one resulted during the stay, one left placed."""
    gw = h.gateway
    stay = _post(gw, "/api/admissions", {"patient_id": _pid(target), "practitioner_id": target.practitioner_id,
                                         "ward_id": ward}, admin)  # fmt: skip
    orders = []
    for _ in range(2):
        orders.append(_post(gw, "/api/lab/orders", {"patient_id": _pid(target), "tests": ["UA"],
                                                    "priority": "routine"}, doctor.auth)["id"])  # fmt: skip
    for action in ("collect", "start"):
        _post(gw, f"/api/lab/orders/{orders[0]}/{action}", None, tech, status=200)
    _post(gw, f"/api/lab/orders/{orders[0]}/results",
          {"results": [{"code": "UA", "value": "negative", "flag": "N"}]}, tech, status=200)  # fmt: skip
    _post(gw, f"/api/admissions/{stay['id']}/discharge", None, admin, status=200)
    return replace(target, ward_id=ward, bed_id=stay["bed_id"], admission_id=stay["id"],
                   lab_orders=(orders[0], orders[1]))  # fmt: skip


def billed(h: Hospital, admin: dict[str, str], target: Target, clerk: Member) -> Target:
    """The stay's invoice and claim, once billing has issued them; the clerk takes 10.00 on it
    (so a refund has something to refund)."""
    gw = h.gateway
    found: dict[str, Any] = {}

    def issued() -> bool:
        r = httpx.get(f"{gw}/api/invoices", params={"patient_id": _pid(target)}, headers=admin, timeout=10)
        assert r.status_code == 200, r.text
        done = [i for i in r.json()["items"] if i["kind"] == "admission" and i["status"] not in ("draft", "void")]
        found.update(done[0] if done else {})
        return bool(done)

    wait_until(issued, what="the stay's invoice")
    r = httpx.get(f"{gw}/api/claims", params={"payer": "SGK", "limit": 200}, headers=admin, timeout=10)
    claim = next(c["id"] for c in r.json()["items"] if c["invoice_id"] == found["id"])
    _post(gw, f"/api/invoices/{found['id']}/payments", {"amount": "10.00", "currency": "TRY", "method": "cash"},
          clerk.auth | _fresh_key())  # fmt: skip
    return replace(target, invoice_id=found["id"], claim_id=claim)


def send(world: World, call: Call, headers: dict[str, str]) -> httpx.Response:
    return httpx.request(call.method, f"{world.gateway}{call.path}", params=call.params, json=call.json,
                         headers=(call.headers or {}) | headers, timeout=10)  # fmt: skip


def test_every_id_bearing_operation_is_in_the_matrix(shared_hospital: Hospital) -> None:
    document = httpx.get(f"{shared_hospital.gateway}/openapi.json", timeout=10).json()
    operations = id_bearing_operations(document)
    assert ("GET", "/api/patients/{id}") in operations  # the enumeration itself works
    missing = sorted(operations - MATRIX.keys())
    assert not missing, f"id-bearing operations without a BOLA matrix entry: {missing}"
    stale = sorted(MATRIX.keys() - operations)
    assert not stale, f"matrix entries for operations the API no longer has: {stale}"
    for key, entry in MATRIX.items():
        exempt = [p for p in ("patients", "clinicians", "billing") if entry.expect(p) is Expect.EXEMPT]
        assert not exempt or entry.why, f"{key}: an exemption needs its reason"


@pytest.mark.parametrize("pair", ["patients", "clinicians", "billing"])
@pytest.mark.parametrize("operation", list(MATRIX), ids=" ".join)
def test_no_one_reaches_the_other_ones_object(world: World, operation: tuple[str, str], pair: str) -> None:
    entry = MATRIX[operation]
    expect = entry.expect(pair)
    if expect is Expect.EXEMPT:
        pytest.skip(entry.why)
    members = world.pairs[pair]
    for me, mine, theirs, other in ((0, 0, 1, 1), (1, 1, 0, 0)):
        member, own, foreign = members[me], world.targets[mine], world.targets[theirs]
        own_answer = send(world, entry.build(member, own), member.auth)
        if expect in (Expect.OWN, Expect.ROLE):
            assert 200 <= own_answer.status_code < 300, (operation, pair, me, own_answer.text)
            if expect is Expect.OWN:
                assert_holds_nothing_of(foreign, own_answer)  # e.g. A's care team does not list B's doctor
        else:
            assert_refused(foreign, own_answer, (operation, pair, me, "own"))
        foreign_call = entry.build(member, foreign)
        answer = send(world, foreign_call, member.auth)
        if expect is Expect.ROLE:
            assert 200 <= answer.status_code < 300, (operation, pair, me, answer.text)
            continue
        assert_refused(foreign, answer, (operation, pair, me, "other's"))
        # Claiming to be the other member, or an administrator, in headers changes nothing.
        spoofed = send(world, foreign_call, spoofed_headers(member.auth, members[other].user_id))
        assert (spoofed.status_code, spoofed.json().get("detail")) == (answer.status_code, answer.json().get("detail"))
        assert_refused(foreign, spoofed, (operation, pair, me, "spoofed"))


def test_identity_headers_without_a_token_get_nothing(world: World) -> None:
    member = world.pairs["patients"][0]
    for operation, entry in MATRIX.items():
        if entry.public:
            continue
        call = entry.build(member, world.targets[1])
        answer = send(world, call, spoofed_headers({}, member.user_id))
        assert answer.status_code == 401, (operation, answer.text)
        assert_holds_nothing_of(world.targets[1], answer)


def test_a_child_id_is_only_found_under_its_own_parent(world: World) -> None:
    """Even for an administrator, a relationship id under another patient's path is not found."""
    a, b = world.targets
    r = httpx.delete(f"{world.gateway}/api/patients/{b.patient['id']}/care-team/{a.relationship_id}",
                     headers=world.admin, timeout=10)  # fmt: skip
    assert r.status_code == 404
    team = httpx.get(f"{world.gateway}/api/patients/{a.patient['id']}/care-team", headers=world.admin, timeout=10)
    assert [m["id"] for m in team.json()["items"] if m["source"] == "assignment"] == [a.relationship_id]


def assert_refused(foreign: Target, answer: httpx.Response, where: object) -> None:
    assert answer.status_code in (403, 404), (where, answer.status_code, answer.text)
    assert answer.headers["content-type"] == "application/problem+json", where
    assert_holds_nothing_of(foreign, answer)


def assert_holds_nothing_of(target: Target, answer: httpx.Response) -> None:
    for secret in target.secrets():
        assert secret not in answer.text, (secret, answer.request.url, answer.text)
