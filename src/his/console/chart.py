"""A patient's chart: who they are and their appointments for everyone who may open it; for
clinicians also the care team, the record (add an entry), lab orders and results with abnormal
values marked, and ordering a test. A clinician without care meets break-the-glass: the API's
refusal offers emergency access, the console asks for the reason, and a banner says so while
the access lasts.
"""

from __future__ import annotations

from datetime import datetime
from urllib.parse import quote

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from his.console.appointments import CLINIC
from his.console.front_desk import DESK, items, parse_id, practitioner_names, refused, staff_names
from his.console.i18n import N_
from his.console.web import SignedIn, Visit, form_lists, form_of
from his.kernel.json import JsonObject

router = APIRouter(include_in_schema=False)

KINDS = {
    "note": N_("Note"),
    "diagnosis": N_("Diagnosis"),
    "allergy": N_("Allergy"),
    "medication": N_("Medication"),
    "observation": N_("Observation"),
}
PRIORITIES = {"routine": N_("Routine"), "urgent": N_("Urgent"), "stat": N_("Immediately (STAT)")}
FLAGS = {
    "N": N_("Normal"),
    "L": N_("Low"),
    "H": N_("High"),
    "LL": N_("Critically low"),
    "HH": N_("Critically high"),
    "A": N_("Abnormal"),
}
ORDER_STATES = {
    "placed": N_("Ordered"),
    "collected": N_("Sample taken"),
    "in_progress": N_("In the laboratory"),
    "resulted": N_("Resulted"),
    "cancelled": N_("Cancelled"),
}
#: Characters a reason for emergency access needs (the API's own bounds).
REASON = (20, 500)
#: What a refused reason is told, by the rule the API names (its 422's ``rule``).
REASON_RULES = {
    "placeholder": N_("This reason is a placeholder. Say plainly why you need this patient's record now."),
    "repeated_characters": N_("This reason repeats letters. Say plainly why you need the record now."),
    "keyboard_run": N_("This reason holds a run of keys typed in a row. Say plainly why you need the record now."),
    "too_short": N_("This reason is too short. Say in a sentence why you need the record now."),
    "too_few_words": N_("This reason has too few words. Say in a sentence why you need the record now."),
    "reused": N_("You gave these words for another patient today. Say why this patient's record is needed now."),
    "control_characters": N_("This reason holds characters that cannot be kept. Write it again."),
    "too_long": N_("Say why you need the record now, in 20 to 500 characters."),
}


def authors(extra: dict[str, object]) -> list[object]:
    """The staff a clinician's chart names: the care team and the record's authors."""
    team, entries = extra.get("team"), extra.get("entries")
    found: list[object] = [r.get("user_id") for r in team if isinstance(r, dict)] if isinstance(team, list) else []
    if isinstance(entries, list):
        found += [e.get("author_id") for e in entries if isinstance(e, dict)]
    return found


def moment_or_none(text: str) -> datetime | None:
    try:
        found = datetime.fromisoformat(text)
    except ValueError:
        return None
    return found if found.tzinfo is not None else None


def offers_emergency_access(answer_body: object) -> bool:
    return isinstance(answer_body, dict) and isinstance(answer_body.get("emergency_access"), dict)


async def clinical(visit: Visit, pid: str) -> dict[str, object]:
    """What a clinician sees of the chart besides the master data."""
    team: dict[str, JsonObject] = {}  # one line per person, however many relationships (booked, assigned …)
    for r in sorted(
        items(await visit.call("GET", f"/api/patients/{pid}/care-team")), key=lambda r: str(r.get("valid_from"))
    ):
        team.setdefault(str(r.get("user_id")), r)
    me = str(visit.live.session.user_id)
    catalog = items(await visit.call("GET", "/api/lab/catalog"))
    return {
        "team": list(team.values()),
        "in_care": me in team,
        "entries": items(await visit.call("GET", f"/api/patients/{pid}/records", params={"limit": "50"})),
        "results": items(await visit.call("GET", f"/api/patients/{pid}/lab-results", params={"limit": "50"})),
        "orders": items(await visit.call("GET", "/api/lab/orders", params={"patient_id": pid, "limit": "50"})),
        "catalog": catalog,
        "tests": {str(t.get("code")): t for t in catalog},
    }


@router.get("/patients/{patient_id}", response_class=HTMLResponse)
async def chart(
    visit: SignedIn,
    patient_id: str,
    *,
    registered: bool = False,
    saved: bool = False,
    moved: bool = False,
    cancelled: bool = False,
    waiting: bool = False,
    invited: bool = False,
    added: bool = False,
    ordered: bool = False,
    emergency_until: str = "",
) -> Response:
    """A patient's chart as the user's role may see it."""
    pid = parse_id(patient_id)
    if pid is None:
        return visit.page("problem.html", status=404, message=N_("There is no such record."))
    record = await visit.call("GET", f"/api/patients/{pid}")
    if record.status == 403 and offers_emergency_access(record.body):
        return visit.page("break_glass.html", status=403, patient_id=str(pid), reason="", error=None, bounds=REASON)
    if not record.ok or not isinstance(record.body, dict):
        return refused(visit, record)
    until = moment_or_none(emergency_until)  # from the address bar: shown only if it is a moment
    booked = items(await visit.call("GET", "/api/appointments", params={"patient_id": str(pid)}))
    people = await practitioner_names(visit)
    clinician = bool(visit.roles & CLINIC)
    extra = await clinical(visit, str(pid)) if clinician else {}
    return visit.page(
        "patient.html",
        extra,
        patient=record.body,
        appointments=booked,
        practitioners=people,
        staff=await staff_names(visit, authors(extra), people),
        registered=registered,
        saved=saved,
        moved=moved,
        cancelled=cancelled,
        waiting=waiting,
        invited=invited,
        added=added,
        ordered=ordered,
        emergency_until=until,
        desk=bool(visit.roles & DESK),
        clinician=clinician,
        doctor="DOCTOR" in visit.roles,
        kinds=KINDS,
        priorities=PRIORITIES,
        flags=FLAGS,
        order_states=ORDER_STATES,
    )


@router.post("/patients/{patient_id}/emergency-access", response_class=HTMLResponse)
async def break_glass(visit: SignedIn, patient_id: str) -> Response:
    """Ask for emergency access with the clinician's reason; the chart opens with its banner."""
    pid = parse_id(patient_id)
    if pid is None:
        return visit.page("problem.html", status=404, message=N_("There is no such record."))
    reason = (await form_of(visit.request)).get("reason", "").strip()
    low, high = REASON
    if not low <= len(reason) <= high:
        error = N_("Say why you need the record now, in 20 to 500 characters.")
        return visit.page(
            "break_glass.html", status=422, patient_id=str(pid), reason=reason, error=error, bounds=REASON
        )
    answer = await visit.call("POST", f"/api/patients/{pid}/emergency-access", body={"reason": reason})
    if answer.status == 201 and isinstance(answer.body, dict):
        until = quote(str(answer.body.get("expires_at", "")), safe="")
        return RedirectResponse(f"/patients/{pid}?emergency_until={until}", status_code=303)
    if answer.status == 422:
        rule = answer.body.get("rule") if isinstance(answer.body, dict) else None
        error = REASON_RULES.get(
            str(rule), N_("This reason was not accepted. Say plainly why you need the record now.")
        )
        return visit.page(
            "break_glass.html", status=422, patient_id=str(pid), reason=reason, error=error, bounds=REASON
        )
    return refused(visit, answer)


@router.post("/patients/{patient_id}/records", response_class=HTMLResponse)
async def add_entry(visit: SignedIn, patient_id: str) -> Response:
    """Add an entry to the patient's record (a clinician in their care, or under emergency access)."""
    pid = parse_id(patient_id)
    if pid is None:
        return visit.page("problem.html", status=404, message=N_("There is no such record."))
    form = await form_of(visit.request)
    kind, text, code = form.get("kind", ""), form.get("text", "").strip(), form.get("code", "").strip()
    if kind not in KINDS or not text:
        return visit.page("problem.html", status=422, message=N_("Choose the kind of entry and write it."))
    body: JsonObject = {"kind": kind, "text": text, "code": code or None}
    answer = await visit.call("POST", f"/api/patients/{pid}/records", body=body)
    if answer.status == 201:
        return RedirectResponse(f"/patients/{pid}?added=1#record", status_code=303)
    if answer.status == 422:
        return visit.page("problem.html", status=422, message=N_("The entry was not accepted: check its code."))
    return refused(visit, answer)


@router.post("/patients/{patient_id}/lab-orders", response_class=HTMLResponse)
async def order_tests(visit: SignedIn, patient_id: str) -> Response:
    """Order lab tests for the patient (a doctor in their care, or under emergency access)."""
    pid = parse_id(patient_id)
    if pid is None:
        return visit.page("problem.html", status=404, message=N_("There is no such record."))
    fields = await form_lists(visit.request)
    tests = [t for t in fields.get("test", []) if t]
    priority = (fields.get("priority") or ["routine"])[0]
    if not tests or priority not in PRIORITIES:
        return visit.page("problem.html", status=422, message=N_("Choose at least one test."))
    answer = await visit.call(
        "POST", "/api/lab/orders", body={"patient_id": str(pid), "tests": list(tests), "priority": priority}
    )
    if answer.status == 201:
        return RedirectResponse(f"/patients/{pid}?ordered=1#lab", status_code=303)
    if answer.status == 422:
        return visit.page("problem.html", status=422, message=N_("The order was not accepted."))
    return refused(visit, answer)
