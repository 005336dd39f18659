"""The staff, patients and practitioners the stateful tests of the clinical lifecycles act with,
set up once in the shared hospital, and one HTTP client that refuses every 5xx."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from hypothesis import HealthCheck, Phase, settings

from tests.e2e.harness import Hospital, assign, create_user, register_patient
from tests.support.waiting import wait_until

#: Small enough for CI, random on every run; a failure prints the blob that replays it. No
#: shrinking: against live services it can take minutes; the failing sequence is printed as found.
SETTINGS = settings(
    phases=[Phase.generate],
    max_examples=6,
    stateful_step_count=12,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)


class Api:
    """One keep-alive client for the gateway: every answer is checked to be no 5xx."""

    def __init__(self, gateway: str) -> None:
        self.http = httpx.Client(base_url=gateway, timeout=30)

    def call(self, method: str, path: str, who: dict[str, str], body: Any = None, **kw: Any) -> httpx.Response:
        r = self.http.request(method, path, json=body, headers=who, **kw)
        assert r.status_code < 500, f"{method} {path} answered {r.status_code}: {r.text[:500]}"
        return r

    def ok(self, method: str, path: str, who: dict[str, str], body: Any = None, status: int = 200, **kw: Any) -> Any:
        r = self.call(method, path, who, body, **kw)
        assert r.status_code == status, (method, path, r.status_code, r.text[:500])
        return r.json()


@dataclass
class Clinic:
    """Staff of every role the lifecycles need, and patients kept apart per lifecycle (so that
    one machine's leftovers never change what another expects)."""

    api: Api
    admin: dict[str, str]
    reception: dict[str, str]
    doctor: dict[str, str]
    tech: dict[str, str]
    clerk: dict[str, str]
    #: The doctor's practitioner record (admissions name it as the admitting practitioner).
    practitioner: str
    #: Patients booked by the appointment machine.
    outpatients: list[str]
    #: Patients admitted by the admission machine.
    inpatients: list[str]
    #: Patients in the doctor's care (lab orders and their invoices).
    in_care: list[str]
    _days: itertools.count[int] = field(default_factory=lambda: itertools.count(3))

    def next_day(self) -> datetime:
        """Midnight (UTC, the hospital's zone) of a day no earlier run of a machine used."""
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return today + timedelta(days=next(self._days))

    def new_practitioner(self, start: datetime, end: datetime) -> str:
        body = {"full_name": "Dr. Stateful", "specialty": "general_practice"}
        pid = str(self.api.ok("POST", "/api/practitioners", self.admin, body, status=201)["id"])
        self.api.ok(
            "POST",
            f"/api/practitioners/{pid}/shifts",
            self.admin,
            {"start": start.isoformat(), "end": end.isoformat()},
            status=201,
        )
        return pid

    def new_ward(self, beds: int) -> str:
        body = {
            "name": f"Stateful {uuid.uuid4().hex[:8]}",
            "type": "general",
            "daily_rate": "1000.00",
            "currency": "TRY",
            "beds": beds,
        }
        return str(self.api.ok("POST", "/api/wards", self.admin, body, status=201)["id"])


def open_clinic(h: Hospital) -> Clinic:
    admin = h.login()
    reception = create_user(h, admin, "RECEPTIONIST", "stateful")[1]
    doctor_id, doctor = create_user(h, admin, "DOCTOR", "stateful")
    tech = create_user(h, admin, "LAB_TECH", "stateful")[1]
    clerk = create_user(h, admin, "BILLING", "stateful")[1]
    api = Api(h.gateway)
    practitioner = api.ok(
        "POST",
        "/api/practitioners",
        admin,
        {"full_name": "Dr. Lifecycle", "specialty": "internal_medicine", "user_id": doctor_id},
        status=201,
    )["id"]

    def patients(n: int, tag: str) -> list[str]:
        return [str(register_patient(h, admin, f"{tag}{uuid.uuid4().hex[:8]}")["id"]) for _ in range(n)]

    in_care = patients(2, "Labcare")
    for p in in_care:
        assign(h, admin, p, doctor_id)

    def ordering(p: str) -> bool:  # the care relationship reaches the laboratory from patients' events
        return api.call("GET", "/api/lab/orders", doctor, params={"patient_id": p}).status_code == 200

    for p in in_care:
        wait_until(lambda p=p: ordering(p), what="the doctor's care to reach the laboratory")  # type: ignore[misc]
    return Clinic(
        api,
        admin,
        reception,
        doctor,
        tech,
        clerk,
        str(practitioner),
        outpatients=patients(3, "Outpatient"),
        inpatients=patients(3, "Inpatient"),
        in_care=in_care,
    )
