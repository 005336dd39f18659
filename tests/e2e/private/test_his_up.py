"""`his up` as an operator runs it: real processes, real servers, Ctrl-C, restarts; and two
tests of the outpatient flow (test_outpatient.py) that need this hospital rather than the shared
one: messages that wait while patients is stopped (no contact cache here), and the scan of every
event the run published for the personal data sent (on the shared hospital that scan would read
everything the other tests published before it)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from his.infra.nats import free_port
from his.reliability.history import History
from tests.e2e.harness import (
    HIS,
    Hospital,
    create_user,
    his_env,
    link_by_invitation,
    own_account,
    published_events,
    register_patient,
)
from tests.e2e.private import KILL_AFTER_PAYMENT
from tests.e2e.test_outpatient import Desk, mail_to, mailed
from tests.e2e.test_payments import stay_invoice
from tests.support.waiting import alive, wait_until

#: The outpatient patient whose details must travel on no event.
OUTPATIENT_CANARY = {
    "given_name": "Zümrüt",
    "family_name": "Canaryoğlu",
    "email": "zumrut.canary@example.org",
    "phone": "+90 555 987 6543",
}


def test_every_service_is_healthy_in_status(hospital: Hospital) -> None:
    snap = hospital.status()
    assert snap["healthy"] is True, snap
    names = {s["name"] for s in snap["services"]}  # type: ignore[attr-defined]
    assert names >= {
        "identity",
        "patients",
        "practitioners",
        "scheduling",
        "admissions",
        "laboratory",
        "inventory",
        "billing",
        "notifications",
        "audit",
        "gateway",
    }
    assert snap["dlq_depth"] == 0
    with hospital.internal() as client:  # internal listeners want the operator's certificate
        for svc in snap["services"]:  # type: ignore[attr-defined]
            for path in ("/healthz", "/readyz", "/metrics"):
                assert client.get(svc["url"] + path).status_code == 200, (svc["name"], path)


def test_one_openapi_document_covers_the_public_api(hospital: Hospital) -> None:
    from his.gateway.routing import ROUTES

    doc = httpx.get(f"{hospital.gateway}/openapi.json", timeout=10).json()
    for route in ROUTES:
        assert route.method.lower() in doc["paths"][route.path], route
    # The explorer at /docs (Swagger UI on that document) loads its files from the gateway itself.
    page = httpx.get(f"{hospital.gateway}/docs", timeout=10)
    assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert "/docs/assets/swagger-ui-bundle.js" in assets
    for url in assets:
        assert url.startswith("/") and httpx.get(f"{hospital.gateway}{url}", timeout=10).status_code == 200, url


def test_the_api_reference_is_built_from_the_document_the_gateway_serves(hospital: Hospital) -> None:
    """docs/api.md is generated without starting anything (`make api-reference`): from the very
    document a running gateway serves."""
    from his.cli.reference import public_document

    assert httpx.get(f"{hospital.gateway}/openapi.json", timeout=10).json() == public_document()


def test_registered_patient_flows_to_notifications_without_personal_data(hospital: Hospital) -> None:
    body = {
        "given_name": "Zeynep",
        "family_name": "Kaya-Unique",
        "birth_date": "1975-05-17",
        "sex": "female",
        "email": "zeynep.kaya@example.org",
        "phone": "+90 555 123 4567",
    }
    admin = hospital.login()
    r = httpx.post(f"{hospital.gateway}/api/patients", json=body, headers=admin, timeout=10)
    assert r.status_code == 201, r.text
    pid = r.json()["id"]

    def delivered() -> bool:
        r = httpx.get(f"{hospital.gateway}/api/notifications", params={"patient_id": pid}, headers=admin, timeout=5)
        items = r.json()["items"]
        return [i["template"] for i in items] == ["welcome"]

    wait_until(delivered, what="the welcome notification")
    # Every event on the patients stream carries ids only.
    out = published_events(hospital)
    assert pid in out
    for pii in ("Zeynep", "Kaya-Unique", "zeynep.kaya", "555 123", "1975-05-17"):
        assert pii not in out


def test_no_personal_data_in_any_event_published_during_the_run(hospital: Hospital) -> None:
    desk = Desk(hospital)
    doctor = desk.practitioner()
    canary = desk.patient(**OUTPATIENT_CANARY)
    aid = desk.post("/api/appointments", desk.booking(canary, doctor, 11)).json()["id"]
    assert desk.post(f"/api/appointments/{aid}/check-in").status_code == 200
    assert desk.get(f"/api/patients/{canary}").status_code == 200

    def flowed() -> bool:
        return canary in published_events(hospital)

    wait_until(flowed, timeout=30, what="the canary's events on the bus")
    everything = published_events(hospital)
    assert "his.scheduling.appointment.checked_in.v1" in everything
    for value in (*OUTPATIENT_CANARY.values(), "1985-03-04"):
        assert value not in everything, f"{value!r} travelled on the bus"


def test_a_crashed_service_is_restarted(hospital: Hospital) -> None:
    old = int(hospital.state()["services"]["notifications"]["pid"])  # type: ignore[index]
    os.kill(old, signal.SIGKILL)

    def restarted() -> bool:
        new = int(hospital.state()["services"]["notifications"]["pid"])  # type: ignore[index]
        if new == old:
            return False
        try:
            with hospital.internal() as client:
                return client.get(hospital.url("notifications") + "/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(restarted, timeout=60, what="notifications to be restarted")
    assert "notifications exited" in hospital.log.read_text()


def test_with_patients_stopped_messages_wait_and_arrive_after_it_returns(hospital: Hospital) -> None:
    desk = Desk(hospital)
    doctor, address = desk.practitioner(), "pause.check@example.org"
    patient = desk.patient(email=address)
    wait_until(lambda: mailed(hospital, address, "Welcome"), timeout=30, what="the welcome message")
    # Scheduling books for patients it learnt from their registration event, without asking
    # patients: wait until its consumer of that event has caught up (pending and unacked zero).
    wait_until(
        lambda: _caught_up(hospital, "scheduling", "scheduling_patient_registered"),
        timeout=30,
        what="scheduling to learn the patient",
    )
    services = hospital.state()["services"]
    assert isinstance(services, dict)
    pid = int(services["patients"]["pid"])
    os.kill(pid, signal.SIGSTOP)  # patients stops answering (its gRPC calls time out)
    try:
        assert desk.post("/api/appointments", desk.booking(patient, doctor, 14)).status_code == 201

        def waiting() -> bool:
            items = desk.get("/api/notifications", params={"patient_id": patient}).json()["items"]
            booked = [i for i in items if i["template"] == "appointment_booked"]
            return bool(booked and booked[0]["status"] == "queued" and "patients" in str(booked[0]["reason"]))

        wait_until(waiting, timeout=30, what="the confirmation to wait for patients")
        assert not mail_to(hospital, address, "Your appointment")  # nothing sent, nothing guessed
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_until(lambda: mailed(hospital, address, "Your appointment"), timeout=60, what="the confirmation")


def _caught_up(hospital: Hospital, service: str, consumer: str) -> bool:
    """The consumer has nothing pending and nothing unacknowledged (from the service's /metrics)."""
    with hospital.internal() as client:
        text = client.get(f"{hospital.url(service)}/metrics").text
    wanted = {f'his_consumer_pending{{consumer="{consumer}"}}', f'his_consumer_ack_pending{{consumer="{consumer}"}}'}
    values = {
        name: float(value) for name, _, value in (line.rpartition(" ") for line in text.splitlines()) if name in wanted
    }
    return len(values) == 2 and not any(values.values())


def test_a_payment_killed_between_commit_and_answer_is_retried_once_with_its_key(hospital: Hospital) -> None:
    """Billing is SIGKILLed right after a desk payment committed, before its answer left (its
    fault point): the clerk gets a 503, retries with the same Idempotency-Key once `his up` has
    restarted billing, and is answered the original payment; one payment, one event, paid once."""
    h, gw = hospital, hospital.gateway
    admin = h.login()
    _, clerk = create_user(h, admin, "BILLING", "retry")
    patient = register_patient(h, admin, f"Retry{uuid.uuid4().hex[:6]}", coverage={"payer": "SGK", "member_id": "SG-R"})
    invoice = stay_invoice(h, admin, str(patient["id"]))
    inv = f"{gw}/api/invoices/{invoice['id']}"
    pay = {"amount": "80.00", "currency": "TRY", "method": "cash"}
    headers = clerk | {"Idempotency-Key": f"desk-{uuid.uuid4()}"}
    old = int(h.state()["services"]["billing"]["pid"])  # type: ignore[index]
    trigger = h.data.parent / KILL_AFTER_PAYMENT
    trigger.touch()

    first = httpx.post(f"{inv}/payments", headers=headers, json=pay, timeout=20)
    assert first.status_code == 503, first.text  # no answer came: the gateway says billing is unavailable
    history = History()
    history.note(f"first attempt: {first.status_code} {first.json()['detail']}")

    def billing_back() -> bool:
        return int(h.state()["services"]["billing"]["pid"]) != old and _get(f"{inv}/payments", clerk) is not None  # type: ignore[index]

    wait_until(billing_back, timeout=60, what="billing to be restarted")
    before_retry = _get(f"{inv}/payments", clerk)
    assert before_retry is not None
    # The fault landed after the commit: the point fired (its trigger is gone), billing died of
    # SIGKILL, and the payment was in the database before any answer about it was given.
    assert not trigger.exists()
    assert f"billing exited with code {-signal.SIGKILL}" in h.log.read_text()
    assert [(x["amount"], x["kind"]) for x in before_retry["items"]] == [("80.00", "payment")]

    retry = httpx.post(f"{inv}/payments", headers=headers, json=pay, timeout=20)
    assert retry.status_code == 201, retry.text
    paid = retry.json()["id"]
    history.tell(paid)
    rows = [x["id"] for x in (_get(f"{inv}/payments", clerk) or {"items": []})["items"]]
    history.observe("database", rows)
    events: list[str] = []

    def published() -> bool:
        lines = published_events(h).splitlines()
        mine = [x for x in lines if " his.billing.payment.received.v1 " in x and str(invoice["id"]) in x]
        events[:] = [m for x in mine for m in re.findall(r'"payment_id":"([0-9a-f-]+)"', x)]
        return len(events) >= len(rows)

    wait_until(published, timeout=30, every=0.5, what="the payment's event in the stream")
    history.observe("stream", events)
    verdict = history.check()
    print(history.notes, verdict)
    assert verdict.ok, verdict
    assert paid == before_retry["items"][0]["id"], "the retry must answer the payment the first attempt made"
    assert retry.headers.get("idempotent-replayed") == "true"
    got = _get(inv, clerk)
    assert got is not None and (got["paid"], got["outstanding"]) == ("80.00", "120.00")


def _get(url: str, auth: dict[str, str]) -> dict[str, Any] | None:
    """The JSON of a GET, or None while the service behind it is unavailable."""
    try:
        r = httpx.get(url, headers=auth, timeout=10)
    except httpx.HTTPError:
        return None
    if r.status_code == 503:
        return None
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_ctrl_c_stops_everything_and_data_survives_a_restart(hospital: Hospital) -> None:
    r = httpx.post(
        f"{hospital.gateway}/api/patients",
        timeout=10,
        headers=hospital.login(),
        json={"given_name": "Ali", "family_name": "Demir", "birth_date": "1990-01-01", "sex": "male"},
    )
    pid = r.json()["id"]
    pids = hospital.pids()
    assert all(alive(p) for p in pids)
    assert hospital.stop() == 0
    wait_until(lambda: not any(alive(p) for p in pids), timeout=10, what="every process to exit")
    assert not (hospital.data / "run" / "state.json").exists()
    hospital.start()
    got = httpx.get(f"{hospital.gateway}/api/patients/{pid}", headers=hospital.login(), timeout=10)
    assert got.status_code == 200 and got.json()["family_name"] == "Demir"


def test_a_taken_gateway_port_is_one_clear_error(hospital: Hospital, tmp_path: Path) -> None:
    out = subprocess.run(
        [HIS, "up"], env=his_env(tmp_path / "other", hospital.port), capture_output=True, timeout=120, check=False
    )
    text = (out.stdout + out.stderr).decode()
    assert out.returncode == 1
    assert f"gateway port 127.0.0.1:{hospital.port} is already in use" in text
    assert "Traceback" not in text


def test_same_data_dir_twice_is_refused(hospital: Hospital) -> None:
    out = subprocess.run(
        [HIS, "up"], env=his_env(hospital.data, free_port()), capture_output=True, timeout=60, check=False
    )
    text = (out.stdout + out.stderr).decode()
    assert out.returncode == 1 and "already running" in text and "Traceback" not in text


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("HIS_DATABASE_URL", "postgresql://x:y@127.0.0.1:1/his", "cannot reach PostgreSQL at 127.0.0.1"),
        ("HIS_NATS_URL", "nats://127.0.0.1:1", "cannot reach NATS at nats://127.0.0.1:1"),
    ],
)
def test_unreachable_external_server_is_one_clear_error(
    open_tmp: Callable[[str], Path], var: str, value: str, message: str
) -> None:
    out = subprocess.run(
        [HIS, "up"],
        env=his_env(open_tmp("unreachable") / "d", free_port(), **{var: value}),
        capture_output=True,
        timeout=120,
        check=False,
    )
    text = (out.stdout + out.stderr).decode()
    assert out.returncode == 1, text
    assert message in text
    assert "Traceback" not in text


def test_a_patient_sees_only_their_own_record_and_who_saw_it(hospital: Hospital) -> None:
    gw, admin = hospital.gateway, hospital.login()
    accounts = {}
    for who in ("a", "b"):
        address = f"patient-{who}-{time.time_ns()}@example.org"
        own_account(hospital, address, "my own long passphrase", f"Pat {who}")
        r = httpx.post(
            f"{gw}/api/patients",
            headers=admin,
            timeout=10,
            json={
                "given_name": "Pat",
                "family_name": f"Own-{who}",
                "birth_date": "1988-08-08",
                "sex": "other",
                "email": address,
                "confirm_duplicate": True,  # the two look alike on purpose
            },
        )
        assert r.status_code == 201, r.text
        accounts[who] = (address, r.json()["id"])
        # The patient links the record to their own account with the code mailed to them.
        own = hospital.login(address, "my own long passphrase")
        link_by_invitation(hospital, admin, accounts[who][1], address, own)
    a = hospital.login(accounts["a"][0], "my own long passphrase")
    me = httpx.get(f"{gw}/api/patients/me", headers=a, timeout=10)
    assert me.status_code == 200 and me.json()["id"] == accounts["a"][1]
    assert httpx.get(f"{gw}/api/patients/{accounts['a'][1]}", headers=a, timeout=10).status_code == 200
    other = httpx.get(f"{gw}/api/patients/{accounts['b'][1]}", headers=a, timeout=10)
    assert other.status_code == 404 and "Own-b" not in other.text
    assert httpx.get(f"{gw}/api/patients", params={"q": "Own"}, headers=a, timeout=10).status_code == 403
    # Spoofed identity headers change nothing.
    spoofed = dict(a, **{"x-his-client-ip": "10.0.0.1", "x-user-id": accounts["b"][1], "x-roles": "ADMIN"})
    assert httpx.get(f"{gw}/api/patients/{accounts['b'][1]}", headers=spoofed, timeout=10).status_code == 404

    def trail() -> list[dict[str, object]]:
        r = httpx.get(f"{gw}/api/audit", params={"patient_id": accounts["a"][1]}, headers=a, timeout=10)
        if r.status_code == 404:  # audit has not yet learnt of the link (his.patients.invitation.redeemed.v1)
            return []
        assert r.status_code == 200, r.text
        return list(r.json()["items"])

    # The registration by staff and the patient's own reads (reading the trail is recorded too, so
    # a count of entries would be reached by the polling alone).
    wait_until(lambda: {e["action"] for e in trail()} >= {"create", "read"}, what="the audit trail of patient a")
    b = hospital.login(accounts["b"][0], "my own long passphrase")
    stolen = httpx.get(f"{gw}/api/audit", params={"patient_id": accounts["a"][1]}, headers=b, timeout=10)
    assert stolen.status_code == 404
    # Their notifications: their own, yes; someone else's, no.
    mine = {"patient_id": accounts["a"][1]}
    wait_until(
        lambda: httpx.get(f"{gw}/api/notifications", params=mine, headers=a, timeout=10).status_code == 200,
        what="the patient's own notifications",
    )
    theirs = httpx.get(f"{gw}/api/notifications", params={"patient_id": accounts["a"][1]}, headers=b, timeout=10)
    assert theirs.status_code == 404


def test_the_edge_refuses_abuse_with_problem_json_and_never_a_500(hospital: Hospital) -> None:
    gw = hospital.gateway
    huge = httpx.post(
        f"{gw}/api/auth/register",
        content=b"x" * (10 * 1024 * 1024),
        timeout=30,
        headers={"content-type": "application/json"},
    )
    assert huge.status_code == 413 and huge.headers["content-type"] == "application/problem+json"
    deep = "[" * 5000 + "]" * 5000
    r = httpx.post(f"{gw}/api/auth/login", content=deep, headers={"content-type": "application/json"}, timeout=10)
    assert 400 <= r.status_code < 500
    wide = {"email": ["x"] * 100_000, "password": "p"}
    r = httpx.post(f"{gw}/api/auth/login", json=wide, timeout=10)
    assert 400 <= r.status_code < 500
    admin = hospital.login()
    r = httpx.get(f"{gw}/api/patients", params={"q": "Own", "limit": "100000"}, headers=admin, timeout=10)
    assert r.status_code == 422 and r.json()["detail"] == "limit must be a whole number from 1 to 200"


def test_tokens_never_reach_the_logs(hospital: Hospital) -> None:
    token = hospital.login()["authorization"].split()[1]
    httpx.get(
        f"{hospital.gateway}/api/patients/{uuid.uuid4()}", headers={"authorization": f"Bearer {token}x"}, timeout=10
    )
    text = hospital.log.read_text(errors="replace")
    assert token not in text and token[:40] not in text


def test_rate_limits_answer_429_with_retry_after(hospital: Hospital) -> None:
    gw = hospital.gateway
    # One peer, as fast as it can: 32 requests at a time, so that even on a busy machine the burst
    # outruns the bucket's refill (a refused request is cheap: it never reaches identity).
    with httpx.Client(timeout=30, limits=httpx.Limits(max_connections=32)) as client, ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda _: client.get(f"{gw}/api/auth/jwks"), range(600)))
    statuses = {a.status_code for a in answers}
    assert statuses <= {200, 429}, statuses
    limited = [a for a in answers if a.status_code == 429]
    assert limited, "600 requests in a burst were never limited"
    assert int(limited[0].headers["retry-after"]) >= 1
    assert limited[0].headers["content-type"] == "application/problem+json"
    wait_until(lambda: httpx.get(f"{gw}/api/auth/jwks", timeout=10).status_code == 200, what="the bucket to refill")
