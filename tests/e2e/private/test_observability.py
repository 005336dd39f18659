"""Traces and logs under a real `his up` exporting spans to a tiny OTLP collector in this test
(tests/support/otlp.py; the private hospital of conftest.py exports to it).

One trace follows a booking from the gateway through scheduling, its gRPC call, the relay's
publish and the notifications consumer. And personal data sent through the flows (names,
e-mails, phone numbers, passwords, bearer tokens) appears in no log: not in the services' log
files under the data directory, not in PostgreSQL's or NATS's, not in `his up`'s own output.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx

from tests.e2e.harness import Hospital, create_user, invite, own_account, register_patient
from tests.support.otlp import CLIENT, CONSUMER, INTERNAL, PRODUCER, SERVER, Collector
from tests.support.waiting import wait_until

CANARY = {
    "given_name": "Kanaryagül",
    "family_name": "Quillsworth-Canary",
    "email": "kanarya.otucu@canary-mail.example",
    "phone": "+90 555 404 7731",
    "password": "canary passphrase tulip 7731",
    "staff_email": "canary.staff.member@canary-mail.example",
    "bogus_token": "canarytokenZX81.eyJzdWIiOiJjYW5hcnkifQ.c2lnbmVkY2FuYXJ5",
}


def _day_at(hours: float) -> datetime:
    base = (datetime.now(UTC) + timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0)
    return base + timedelta(hours=hours)


def _book(gw: str, admin: dict[str, str], patient_id: object, hours: float, **headers: str) -> httpx.Response:
    r = httpx.post(
        f"{gw}/api/practitioners",
        json={"full_name": "Dr. Ece Trace", "specialty": "general_practice"},
        headers=admin,
        timeout=10,
    )
    assert r.status_code == 201, r.text
    doctor = r.json()["id"]
    shift = {"start": _day_at(8).isoformat(), "end": _day_at(16).isoformat()}
    assert httpx.post(f"{gw}/api/practitioners/{doctor}/shifts", json=shift, headers=admin, timeout=10).is_success
    start = _day_at(hours)
    body = {
        "patient_id": patient_id,
        "practitioner_id": doctor,
        "service": "consultation",
        "start": start.isoformat(),
        "end": (start + timedelta(minutes=20)).isoformat(),
    }
    return httpx.post(f"{gw}/api/appointments", json=body, headers=admin | headers, timeout=10)


def test_one_trace_follows_a_booking_from_the_gateway_to_its_notification(
    hospital: Hospital, collector: Collector
) -> None:
    admin = hospital.login()
    patient = register_patient(hospital, admin, "Tracewell")
    trace_id, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    r = _book(hospital.gateway, admin, patient["id"], 9, traceparent=f"00-{trace_id}-{caller_span}-01")
    assert r.status_code == 201, r.text

    def has(service: str, kind: int, name: str = "") -> Callable[[], bool]:
        return lambda: any(
            s.service == service and s.kind == kind and name in s.name for s in collector.trace(trace_id)
        )

    wanted = [
        ("his-gateway", SERVER, "POST /api/appointments"),
        ("his-scheduling", SERVER, "POST /appointments"),
        ("his-scheduling", CLIENT, "/his.practitioners."),
        ("his-practitioners", SERVER, "/his.practitioners."),
        ("his-scheduling", PRODUCER, "appointment.booked"),
        ("his-notifications", CONSUMER, "appointment.booked"),
        ("his-notifications", INTERNAL, "notification deliver"),
    ]
    for service, kind, name in wanted:
        seen = sorted({(s.service, s.kind, s.name) for s in collector.trace(trace_id)})
        wait_until(has(service, kind, name), timeout=30, what=f"a {name} span of {service} in {seen}")
    spans = {s.span_id: s for s in collector.trace(trace_id)}
    gateway = next(s for s in spans.values() if s.service == "his-gateway" and s.kind == SERVER)
    assert gateway.parent_span_id == caller_span
    # Each hop is the child of the one before: follow the consumer's parents back to the caller.
    hop = next(s for s in spans.values() if s.service == "his-notifications" and s.name == "notification deliver")
    chain = []
    while hop.parent_span_id in spans:
        chain.append((hop.service, hop.kind))
        hop = spans[hop.parent_span_id]
    assert hop is gateway, chain
    assert {("his-notifications", CONSUMER), ("his-scheduling", PRODUCER), ("his-scheduling", SERVER)} <= set(chain)


def test_no_personal_data_in_any_log(hospital: Hospital) -> None:
    gw, admin = hospital.gateway, hospital.login()
    c = CANARY
    # A patient signs up and logs in, also once with a wrong password; a bogus token is refused.
    account = {"email": c["email"], "password": c["password"], "full_name": f"{c['given_name']} {c['family_name']}"}
    own_account(hospital, account["email"], account["password"], account["full_name"])
    again = httpx.post(f"{gw}/api/auth/register", json=account, timeout=10)
    assert again.status_code == 201, again.text  # a taken address must not leak into a log either
    wrong = httpx.post(f"{gw}/api/auth/login", json={"email": c["email"], "password": c["password"] + "x"}, timeout=10)
    assert wrong.status_code == 401
    own = hospital.login(c["email"], c["password"])
    bogus = httpx.get(f"{gw}/api/patients/me", headers={"authorization": f"Bearer {c['bogus_token']}"}, timeout=10)
    assert bogus.status_code == 401
    # Staff registers the patient's record, books, orders a lab test.
    patient = register_patient(
        hospital, admin, c["family_name"], given_name=c["given_name"], email=c["email"], phone=c["phone"]
    )
    _, code = invite(hospital, admin, patient["id"], c["email"])  # the code must reach no log either
    linked = httpx.post(f"{gw}/api/patients/invitations/redeem", headers=own, json={"code": code}, timeout=10)
    assert linked.status_code == 200, linked.text
    assert _book(gw, admin, patient["id"], 11).status_code == 201
    doctor_id, doctor = create_user(hospital, admin, "DOCTOR", "canary")
    httpx.post(f"{gw}/api/patients/{patient['id']}/care-team", headers=admin, json={"user_id": doctor_id}, timeout=10)
    order = {"patient_id": patient["id"], "tests": ["K"], "priority": "routine"}
    assert httpx.post(f"{gw}/api/lab/orders", json=order, headers=doctor, timeout=10).status_code in (201, 403)
    staff = httpx.post(
        f"{gw}/api/admin/users",
        headers=admin,
        timeout=10,
        json={"email": c["staff_email"], "password": c["password"], "full_name": c["family_name"], "roles": ["NURSE"]},
    )
    assert staff.status_code == 201, staff.text
    assert httpx.get(f"{gw}/api/patients/me", headers=own, timeout=10).status_code == 200
    # The notifications for it have been handled (their consumers ran and logged, if at all).
    wait_until(lambda: _delivered(hospital, admin, str(patient["id"])), timeout=30, what="the patient's notifications")

    secrets = [
        *c.values(),
        own["authorization"].split()[1],
        admin["authorization"].split()[1],
        code,
        code.replace("-", ""),
    ]
    logs = [*sorted(p for p in hospital.data.rglob("*.log") if p.is_file()), hospital.log]
    assert {p.name for p in logs} >= {"gateway.log", "scheduling.log", "notifications.log", "postgres.log"}
    text = {p: p.read_text(errors="replace") for p in logs}
    lines = text[hospital.data / "logs" / "scheduling.log"].splitlines()  # JSON lines, one object each
    assert lines and all(json.loads(line)["service"] == "scheduling" for line in lines)
    # Also as JSON or Python would escape them (a name with ü written as \\u00fc or \\xc3\\xbc).
    forms = {f for s in secrets for f in (s, json.dumps(s)[1:-1], repr(s.encode())[2:-1])}
    leaks = [(str(p), f) for p, t in text.items() for f in forms if f.lower() in t.lower()]
    assert not leaks, leaks
    for part in (c["email"].split("@")[0], c["phone"].replace(" ", ""), c["phone"][-8:]):
        assert not any(part in t for t in text.values()), part


def _delivered(hospital: Hospital, admin: dict[str, str], patient_id: str) -> bool:
    r = httpx.get(f"{hospital.gateway}/api/notifications", params={"patient_id": patient_id}, headers=admin, timeout=10)
    return r.status_code == 200 and any(i["status"] != "queued" for i in r.json()["items"])


def test_the_console_shows_service_logs_compactly(hospital: Hospital) -> None:
    out = hospital.log.read_text(errors="replace")
    service_lines = [line for line in out.splitlines() if " | " in line and "INFO" in line]
    assert service_lines, out[-2000:]
    assert not any(line.split(" | ", 1)[1].startswith("{") for line in service_lines)
    time.sleep(0)  # nothing to wait for: the file is complete once `his up` said it is up
