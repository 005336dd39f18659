"""Appointments at the desk and in the clinic: find a free slot (of one practitioner, or the first
across practitioners), book it and print its slip; a practitioner's day list with check-in,
no-show and cancel.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date
from urllib.parse import quote

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from his.console.domain import Answer
from his.console.front_desk import DESK, items, parse_id, practitioner_names, refused
from his.console.i18n import N_
from his.console.web import SignedIn, Visit, form_of, safe_next
from his.kernel.json import JsonObject

router = APIRouter(include_in_schema=False)

CLINIC = frozenset({"DOCTOR", "NURSE"})
#: What may be done to an appointment from the console, and who may (the API decides in the end).
ACTIONS = {
    "check-in": frozenset({"RECEPTIONIST", "ADMIN", "NURSE"}),
    "no-show": frozenset({"RECEPTIONIST", "ADMIN"}),
    "cancel": frozenset({"RECEPTIONIST", "ADMIN"}),
    "complete": frozenset({"ADMIN", "DOCTOR", "NURSE"}),
}
#: Patients asked of the API in one call (its limit).
BATCH = 200


def today(visit: Visit) -> date:
    """Today where the hospital is."""
    zone = visit.shared.book.clock().astimezone(visit.shared.zone)
    return zone.date()


def day_of(text: str, visit: Visit) -> date:
    try:
        return date.fromisoformat(text) if text else today(visit)
    except ValueError:
        return today(visit)


async def patient_names(visit: Visit, ids: list[str]) -> dict[str, JsonObject]:
    """The patients behind ``ids``, by id, asked of the API in batches (each read is audited
    there); a patient the user may not see is left out."""
    unique = list(dict.fromkeys(ids))
    batches = [unique[start : start + BATCH] for start in range(0, len(unique), BATCH)]
    answers = await asyncio.gather(
        *(visit.call("GET", "/api/patients", params=[("id", i) for i in b] + [("limit", str(BATCH))]) for b in batches)
    )
    return {str(p.get("id")): p for answer in answers for p in items(answer)}


async def services(visit: Visit) -> list[JsonObject]:
    return items(await visit.call("GET", "/api/appointments/services"))


@router.get("/appointments/new", response_class=HTMLResponse)
async def new_appointment(
    visit: SignedIn,
    *,
    patient_id: str = "",
    practitioner_id: str = "",
    service: str = "consultation",
    specialty: str = "",
    day: str = "",
    taken: bool = False,
) -> Response:
    """Book for a patient: choose a practitioner (or the first free one, of a specialty or any), a
    service and a day; the free slots follow (htmx swaps them in as the choices change)."""
    if not visit.roles & DESK:
        return visit.page("problem.html", status=403, message=N_("You may not see or do this."))
    pid = parse_id(patient_id)
    if pid is None:
        return visit.page("problem.html", status=404, message=N_("Choose the patient first, from the front desk."))
    record = await visit.call("GET", f"/api/patients/{pid}")
    if not record.ok or not isinstance(record.body, dict):
        return refused(visit, record)
    chosen = day_of(day, visit)
    slots = await free_slots(visit, practitioner_id, service, chosen, specialty=specialty)
    return visit.page(
        "appointment_new.html",
        patient=record.body,
        practitioners=list((await practitioner_names(visit)).values()),
        services=await services(visit),
        specialties=await specialties(visit),
        practitioner_id=practitioner_id,
        specialty=specialty,
        service=service,
        day=chosen,
        slots=slots,
        taken=taken,
    )


def chosen_slot(form: dict[str, str]) -> tuple[str, str, str] | None:
    """The practitioner, start and end of the free time a form chose (``slot``: the three joined
    by ``|``, as ``appointment_slots.html`` writes them), or None when none was chosen."""
    practitioner, _, times = form.get("slot", "").partition("|")
    start, _, end = times.partition("|")
    if parse_id(practitioner) is None or not start or not end:
        return None
    return practitioner, start, end


async def specialties(visit: Visit) -> list[JsonObject]:
    return items(await visit.call("GET", "/api/practitioners/specialties"))


async def free_slots(
    visit: Visit, practitioner_id: str, service: str, day: date, *, specialty: str = ""
) -> list[JsonObject]:
    """Free slots from ``day``: of one practitioner on that day, or the first ones across
    practitioners (of ``specialty``, when given) from that day on."""
    if practitioner_id:
        if parse_id(practitioner_id) is None:
            return []
        answer = await visit.call(
            "GET", f"/api/practitioners/{practitioner_id}/slots", params={"date": day.isoformat(), "service": service}
        )
        return [{**s, "practitioner_id": practitioner_id} for s in items(answer)]
    params = {"service": service, "from": day.isoformat(), "limit": "12"}
    if specialty:
        params["specialty"] = specialty
    return items(await visit.call("GET", "/api/appointments/first-available", params=params))


@router.get("/appointments/slots", response_class=HTMLResponse)
async def slots(
    visit: SignedIn, *, practitioner_id: str = "", service: str = "consultation", specialty: str = "", day: str = ""
) -> Response:
    """The free slots alone, for htmx to swap in."""
    chosen = day_of(day, visit)
    found = await free_slots(visit, practitioner_id, service, chosen, specialty=specialty)
    return visit.page("appointment_slots.html", slots=found, day=chosen)


@router.post("/appointments", response_class=HTMLResponse)
async def book(visit: SignedIn) -> Response:
    """Book the chosen slot; a slot taken meanwhile sends the receptionist back to choose again."""
    form = await form_of(visit.request)
    pid, slot = form.get("patient_id", ""), chosen_slot(form)
    if parse_id(pid) is None or slot is None:
        return visit.page("problem.html", status=422, message=N_("Choose a free time first."))
    practitioner, start, end = slot
    service = form.get("service", "consultation")
    body: JsonObject = {
        "patient_id": pid,
        "practitioner_id": practitioner,
        "start": start,
        "end": end,
        "service": service,
    }
    answer = await visit.call("POST", "/api/appointments", body=body)
    if answer.status == 201 and isinstance(answer.body, dict):
        return RedirectResponse(f"/appointments/{answer.body.get('id')}/slip?booked=1", status_code=303)
    if answer.status == 409:
        back = f"/appointments/new?patient_id={pid}&service={service}&day={start[:10]}&taken=1"
        return RedirectResponse(back, status_code=303)
    return refused(visit, answer)


@router.get("/appointments/{appointment_id}/slip", response_class=HTMLResponse)
async def slip(visit: SignedIn, appointment_id: str, booked: bool = False) -> Response:
    """The appointment slip, to print for the patient."""
    aid = parse_id(appointment_id)
    if aid is None:
        return visit.page("problem.html", status=404, message=N_("There is no such record."))
    answer = await visit.call("GET", f"/api/appointments/{aid}")
    if not answer.ok or not isinstance(answer.body, dict):
        return refused(visit, answer)
    appointment = answer.body
    record = await visit.call("GET", f"/api/patients/{appointment.get('patient_id')}")
    person = await visit.call("GET", f"/api/practitioners/{appointment.get('practitioner_id')}")
    return visit.page(
        "appointment_slip.html",
        appointment=appointment,
        patient=record.body if isinstance(record.body, dict) else {},
        practitioner=person.body if isinstance(person.body, dict) else {},
        booked=booked,
    )


async def day_view(
    visit: Visit, practitioner_id: str, chosen: date, specialty: str = "", *, whole_page: bool = True
) -> dict[str, object] | Response:
    """What a day list shows: the appointments on ``chosen`` of one practitioner, or of a clinic
    (every practitioner of ``specialty``), their patients by name, and what the user may do to
    each (or the page that says why not). The calls that do not depend on each other are made
    at once; the list of clinics only for the whole page (not for its rows alone)."""
    clinics = asyncio.create_task(specialties(visit)) if whole_page else None
    try:
        return await day_of_list(visit, practitioner_id, chosen, specialty, clinics)
    finally:
        if clinics is not None and not clinics.done():
            clinics.cancel()


async def day_of_list(
    visit: Visit,
    practitioner_id: str,
    chosen: date,
    specialty: str,
    clinics: asyncio.Task[list[JsonObject]] | None,
) -> dict[str, object] | Response:

    async def day(practitioner: str) -> Answer:
        params = {"practitioner_id": practitioner, "date": chosen.isoformat(), "limit": "200"}
        return await visit.call("GET", "/api/appointments", params=params)

    async def nothing() -> None:
        return None

    async def clinic() -> Answer:
        params = {"specialty": specialty, "date": chosen.isoformat(), "limit": "200"}
        return await visit.call("GET", "/api/appointments", params=params)

    answer: Answer | None
    if parse_id(practitioner_id) is not None:  # the directory and the day at once
        specialty = ""
        people, answer = await asyncio.gather(practitioner_names(visit), day(practitioner_id))
    elif specialty:
        people, answer = await asyncio.gather(practitioner_names(visit), clinic())
    elif visit.roles & CLINIC:  # a clinician's own day: their profile as last found, checked below
        me, profiles = str(visit.live.session.user_id), visit.shared.profiles
        guess = profiles.get(me)
        people, answer = await asyncio.gather(practitioner_names(visit), day(guess) if guess else nothing())
        mine = [p for p in people.values() if p.get("user_id") == me]
        practitioner_id = str(mine[0].get("id")) if mine else ""
        if practitioner_id != guess:  # first seen, or the profile changed: ask for the right day
            profiles[me] = practitioner_id
            answer = await day(practitioner_id) if mine else None
    else:
        people, answer = await practitioner_names(visit), None
    booked: list[JsonObject] = []
    patients: dict[str, JsonObject] = {}
    if answer is not None:
        if not answer.ok:
            return refused(visit, answer)
        booked = items(answer)
        patients = await patient_names(visit, [str(a.get("patient_id")) for a in booked])
    which = f"specialty={quote(specialty)}" if specialty else f"practitioner_id={practitioner_id}"
    return {
        "practitioners": sorted(people.values(), key=lambda p: str(p.get("full_name"))),
        "people": people,
        "specialties": await clinics if clinics is not None else [],
        "practitioner_id": practitioner_id,
        "specialty": specialty,
        "day": chosen,
        "appointments": booked,
        "patients": patients,
        "actions": [a for a, roles in ACTIONS.items() if roles & visit.roles],
        "which": which,
        "here": f"/day-list?{which}&day={chosen.isoformat()}",
    }


def may_see_day_lists(visit: Visit) -> Response | None:
    if visit.roles & (DESK | CLINIC):
        return None
    return visit.page("problem.html", status=403, message=N_("You may not see or do this."))


@router.get("/day-list", response_class=HTMLResponse)
async def day_list(visit: SignedIn, practitioner_id: str = "", specialty: str = "", day: str = "") -> Response:
    """A practitioner's (or a clinic's) appointments on a day, in order, with who is coming and
    what to do next; it follows the day live (``/day-list/events``)."""
    if (no := may_see_day_lists(visit)) is not None:
        return no
    view = await day_view(visit, practitioner_id, day_of(day, visit), specialty)
    return view if isinstance(view, Response) else visit.page("day_list.html", view)


@router.get("/day-list/rows", response_class=HTMLResponse)
async def day_list_rows(visit: SignedIn, practitioner_id: str = "", specialty: str = "", day: str = "") -> Response:
    """The day list's table alone, for htmx to swap in when the day changed."""
    if (no := may_see_day_lists(visit)) is not None:
        return no
    view = await day_view(visit, practitioner_id, day_of(day, visit), specialty, whole_page=False)
    return view if isinstance(view, Response) else visit.page("day_list_rows.html", view)


#: Seconds between the comments that keep a quiet event stream (and the proxies on its way) open.
HEARTBEAT = 15.0


@router.get("/day-list/events")
async def day_list_events(visit: SignedIn, practitioner_id: str = "", specialty: str = "", day: str = "") -> Response:
    """Server-sent events: "changed" whenever the day list's appointments change (booked, moved,
    cancelled, checked in …); a clinic's, whenever one of its practitioners' does. The stream
    carries no data: the page asks for the list again. It ends when the session does; the
    browser reconnects by itself, and is then asked to sign in."""
    feed = visit.shared.feed
    if (no := may_see_day_lists(visit)) is not None or feed is None:
        return no or Response(status_code=204)  # 204: the browser stops reconnecting
    chosen = day_of(day, visit)
    if parse_id(practitioner_id) is not None:
        keys = [(practitioner_id, chosen)]
    else:
        people = await practitioner_names(visit)
        keys = [(pid, chosen) for pid, p in people.items() if specialty and p.get("specialty") == specialty]
    if not keys:
        return Response(status_code=204)
    ends = visit.live.session.ends_at()

    async def stream() -> AsyncIterator[bytes]:
        yield b"retry: 5000\n\n"
        async with feed.listen(*keys) as changes:
            while (left := (ends - visit.shared.book.clock()).total_seconds()) > 0:
                try:
                    await asyncio.wait_for(changes.get(), min(HEARTBEAT, left))
                    yield b"event: changed\ndata: {}\n\n"
                except TimeoutError:
                    yield b": still here\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"x-accel-buffering": "no"})


@router.get("/appointments/{appointment_id}/move", response_class=HTMLResponse)
async def move_page(visit: SignedIn, appointment_id: str, day: str = "", taken: bool = False) -> Response:
    """Move a booked appointment: the same practitioner's free times on another day."""
    aid = parse_id(appointment_id)
    if not visit.roles & DESK or aid is None:
        return visit.page("problem.html", status=403 if aid else 404, message=N_("You may not see or do this."))
    answer = await visit.call("GET", f"/api/appointments/{aid}")
    if not answer.ok or not isinstance(answer.body, dict):
        return refused(visit, answer)
    appointment = answer.body
    chosen = day_of(day or str(appointment.get("start", ""))[:10], visit)
    practitioner = str(appointment.get("practitioner_id"))
    service = str(appointment.get("service", "consultation"))
    return visit.page(
        "appointment_move.html",
        appointment=appointment,
        practitioner=(await practitioner_names(visit)).get(practitioner, {}),
        day=chosen,
        slots=await free_slots(visit, practitioner, service, chosen),
        taken=taken,
    )


@router.post("/appointments/{appointment_id}/move", response_class=HTMLResponse)
async def move(visit: SignedIn, appointment_id: str) -> Response:
    aid = parse_id(appointment_id)
    if aid is None:
        return visit.page("problem.html", status=404, message=N_("There is no such record."))
    form = await form_of(visit.request)
    slot = chosen_slot(form)
    if slot is None:
        return visit.page("problem.html", status=422, message=N_("Choose a free time first."))
    _, start, end = slot
    answer = await visit.call("POST", f"/api/appointments/{aid}/reschedule", body={"start": start, "end": end})
    if answer.ok and isinstance(answer.body, dict):
        return RedirectResponse(f"/patients/{answer.body.get('patient_id')}?moved=1", status_code=303)
    if answer.status == 409:
        return RedirectResponse(f"/appointments/{aid}/move?day={start[:10]}&taken=1", status_code=303)
    return refused(visit, answer)


@router.post("/waitlist", response_class=HTMLResponse)
async def wait(visit: SignedIn) -> Response:
    """Put the patient on a practitioner's waiting list: the first time freed is offered to them."""
    form = await form_of(visit.request)
    pid, practitioner = form.get("patient_id", ""), form.get("practitioner_id", "")
    if parse_id(pid) is None or parse_id(practitioner) is None:
        return visit.page("problem.html", status=422, message=N_("Choose a practitioner to wait for."))
    body: JsonObject = {
        "patient_id": pid,
        "practitioner_id": practitioner,
        "service": form.get("service", "consultation"),
    }
    answer = await visit.call("POST", "/api/waitlist", body=body)
    if answer.status in (201, 409):  # 409: waiting already
        return RedirectResponse(f"/patients/{pid}?waiting=1", status_code=303)
    return refused(visit, answer)


# Last: its {action} would otherwise take the paths above (…/move).
@router.post("/appointments/{appointment_id}/{action}", response_class=HTMLResponse)
async def step(visit: SignedIn, appointment_id: str, action: str) -> Response:
    """Check in, mark a no-show, cancel or complete; back to the page it was done from."""
    aid = parse_id(appointment_id)
    if aid is None or action not in ACTIONS:
        return visit.page("problem.html", status=404, message=N_("There is no such record."))
    form = await form_of(visit.request)
    answer = await visit.call("POST", f"/api/appointments/{aid}/{action}")
    if answer.status == 409:
        message = N_("This cannot be done to the appointment as it is now. Reload the page to see it.")
        return visit.page("problem.html", status=409, message=message)
    if not answer.ok:
        return refused(visit, answer)
    return RedirectResponse(safe_next(form.get("next")), status_code=303)
