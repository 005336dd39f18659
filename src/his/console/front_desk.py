"""The front desk (RECEPTIONIST, ADMIN): find a patient as you type, register one (warned of
likely duplicates), see their record and appointments, invite them to the portal, book a slot
and print its slip, and move, cancel or check in an appointment.

Every page asks the public API with the user's token: what a receptionist may see and do is the
API's decision, and its refusals are shown as they come.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from datetime import date

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from his.console.areas import SEX_NAMES
from his.console.domain import Answer
from his.console.i18n import N_
from his.console.web import SignedIn, Visit, form_of
from his.kernel.json import JsonObject

router = APIRouter(include_in_schema=False)

DESK = frozenset({"RECEPTIONIST", "ADMIN"})
SEXES = tuple(SEX_NAMES.items())
#: How a receptionist may type a birth date: 1980-05-01, or 01.05.1980 (Turkish), or 01/05/1980.
DATE_TYPED = (re.compile(r"^(\d{4})-(\d{2})-(\d{2})$"), re.compile(r"^(\d{1,2})[./](\d{1,2})[./](\d{4})$"))


def items(answer: Answer) -> list[JsonObject]:
    """The ``items`` of a list the API answered (none for an error)."""
    body = answer.body
    found = body.get("items") if isinstance(body, dict) else None
    return [i for i in found if isinstance(i, dict)] if isinstance(found, list) else []


def typed_date(text: str) -> date | None:
    """A date as a person types it at the desk, or None."""
    text = text.strip()
    iso, dotted = DATE_TYPED
    try:
        if m := iso.match(text):
            return date(int(m[1]), int(m[2]), int(m[3]))
        if m := dotted.match(text):
            return date(int(m[3]), int(m[2]), int(m[1]))
    except ValueError:
        return None
    return None


def refused(visit: Visit, answer: Answer) -> HTMLResponse:
    """A page that says why the API refused (403, 404) or could not answer."""
    messages = {
        403: N_("You may not see or do this."),
        404: N_("There is no such record."),
    }
    message = messages.get(answer.status, N_("The request could not be answered."))
    return visit.page("problem.html", status=answer.status if answer.status >= 400 else 502, message=message)


def desk_only(visit: Visit) -> HTMLResponse | None:
    if visit.roles & DESK:
        return None
    return visit.page("problem.html", status=403, message=N_("You may not see or do this."))


async def search(visit: Visit, q: str) -> tuple[list[JsonObject], bool]:
    """Patients matching what was typed (a name, an MRN or a birth date), and whether it was asked."""
    q = q.strip()
    if len(q) < 2:
        return [], False
    born = typed_date(q)
    params = {"birth_date": born.isoformat()} if born else {"q": q}
    params["limit"] = "20"
    return items(await visit.call("GET", "/api/patients", params=params)), True


@router.get("/front-desk", response_class=HTMLResponse)
async def front_desk(visit: SignedIn, q: str = "") -> Response:
    """Find a patient: results as the receptionist types (htmx), or on submit without scripts."""
    if (no := desk_only(visit)) is not None:
        return no
    found, asked = await search(visit, q)
    return visit.page("front_desk.html", q=q, patients=found, asked=asked)


@router.get("/front-desk/results", response_class=HTMLResponse)
async def results(visit: SignedIn, q: str = "") -> Response:
    """The search results alone, for htmx to swap in while the receptionist types."""
    if (no := desk_only(visit)) is not None:
        return no
    found, asked = await search(visit, q)
    return visit.page("patient_results.html", q=q, patients=found, asked=asked)


async def payers(visit: Visit) -> list[JsonObject]:
    return items(await visit.call("GET", "/api/payers"))


def registration(form: dict[str, str]) -> tuple[JsonObject, dict[str, str]]:
    """The API's request from the registration form, and the fields the form itself finds wrong."""
    errors: dict[str, str] = {}
    if not form.get("given_name", "").strip():
        errors["given_name"] = N_("Enter the patient's given name.")
    if not form.get("family_name", "").strip():
        errors["family_name"] = N_("Enter the patient's family name.")
    born = typed_date(form.get("birth_date", ""))
    if born is None:
        errors["birth_date"] = N_("Enter a date such as 1980-05-01.")
    if form.get("sex") not in {code for code, _ in SEXES}:
        errors["sex"] = N_("Choose the patient's sex.")
    body: JsonObject = {
        "given_name": form.get("given_name", "").strip(),
        "family_name": form.get("family_name", "").strip(),
        "birth_date": born.isoformat() if born else "",
        "sex": form.get("sex", ""),
        "email": form.get("email", "").strip() or None,
        "phone": form.get("phone", "").strip() or None,
    }
    payer, member = form.get("payer", "").strip(), form.get("member_id", "").strip()
    if payer:
        if not member:
            errors["member_id"] = N_("Enter the member number the payer gave.")
        body["coverage"] = {"payer": payer, "member_id": member}
    if form.get("confirm_duplicate") == "yes":
        body["confirm_duplicate"] = True
    return body, errors


@router.get("/patients/new", response_class=HTMLResponse)
async def new_patient(visit: SignedIn) -> Response:
    if (no := desk_only(visit)) is not None:
        return no
    return visit.page("patient_new.html", form={}, errors={}, payers=await payers(visit), sexes=SEXES, duplicates=[])


@router.post("/patients/new", response_class=HTMLResponse)
async def register(visit: SignedIn) -> Response:
    """Register the patient; the API's likely duplicates are shown, to open one or register anyway."""
    if (no := desk_only(visit)) is not None:
        return no
    form = await form_of(visit.request)
    body, errors = registration(form)

    async def again(status: int, duplicates: list[JsonObject], problem: str | None = None) -> HTMLResponse:
        return visit.page(
            "patient_new.html",
            status=status,
            form=form,
            errors=errors,
            payers=await payers(visit),
            sexes=SEXES,
            duplicates=duplicates,
            problem=problem,
        )

    if errors:
        return await again(422, [])
    answer = await visit.call("POST", "/api/patients", body=body)
    if answer.status == 201 and isinstance(answer.body, dict):
        return RedirectResponse(f"/patients/{answer.body.get('id')}?registered=1", status_code=303)
    if answer.status == 409 and isinstance(answer.body, dict):
        found = answer.body.get("possible_duplicates")
        return await again(409, [d for d in found if isinstance(d, dict)] if isinstance(found, list) else [])
    if answer.status == 422:
        problem = answer.problem()
        errors.update(problem.fields)
        return await again(422, [], None if problem.fields else problem.detail)
    return refused(visit, answer)


def parse_id(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


@router.post("/patients/{patient_id}/invitation", response_class=HTMLResponse)
async def invite(visit: SignedIn, patient_id: str) -> Response:
    """Send the patient a one-time code to link their record to their own account."""
    pid = parse_id(patient_id)
    if pid is None:
        return visit.page("problem.html", status=404, message=N_("There is no such record."))
    form = await form_of(visit.request)
    channel = "sms" if form.get("channel") == "sms" else "email"
    answer = await visit.call("POST", f"/api/patients/{pid}/invitations", body={"channel": channel})
    if answer.status == 201:
        return RedirectResponse(f"/patients/{pid}?invited=1", status_code=303)
    if answer.status in (409, 422):
        message = N_("The invitation could not be sent: the patient has no address for it, or is linked already.")
        return visit.page("problem.html", status=answer.status, message=message)
    return refused(visit, answer)


async def practitioner_names(visit: Visit) -> dict[str, JsonObject]:
    """The practitioner directory by id (names and specialties, for lists that hold ids)."""
    return {str(p.get("id")): p for p in items(await visit.call("GET", "/api/practitioners", params={"limit": "200"}))}


async def staff_names(visit: Visit, ids: Iterable[object], people: dict[str, JsonObject]) -> dict[str, JsonObject]:
    """Staff by account id, named: those with a practitioner profile from ``people`` (the
    directory), the others asked of the staff directory (``GET /api/staff``) in one call per 200."""
    named = {str(p.get("user_id")): p for p in people.values() if p.get("user_id")}
    wanted = [i for i in dict.fromkeys(str(i) for i in ids if i) if i not in named and parse_id(i) is not None]
    for start in range(0, len(wanted), 200):
        batch = wanted[start : start + 200]
        answer = await visit.call("GET", "/api/staff", params=[("id", i) for i in batch])
        named |= {str(s.get("id")): s for s in items(answer)}
    return named


@router.get("/patients/{patient_id}/edit", response_class=HTMLResponse)
async def edit_patient(visit: SignedIn, patient_id: str) -> Response:
    """The registration form, filled in with the patient's details, to correct them."""
    pid = parse_id(patient_id)
    if (no := desk_only(visit)) is not None or pid is None:
        return no or visit.page("problem.html", status=404, message=N_("There is no such record."))
    record = await visit.call("GET", f"/api/patients/{pid}")
    if not record.ok or not isinstance(record.body, dict):
        return refused(visit, record)
    body = record.body
    cover = body.get("coverage") if isinstance(body.get("coverage"), dict) else {}
    form = {k: str(body.get(k) or "") for k in ("given_name", "family_name", "birth_date", "sex", "email", "phone")}
    if isinstance(cover, dict):
        form |= {"payer": str(cover.get("payer") or ""), "member_id": str(cover.get("member_id") or "")}
    return visit.page(
        "patient_new.html", form=form, errors={}, payers=await payers(visit), sexes=SEXES, duplicates=[], editing=pid
    )


@router.post("/patients/{patient_id}/edit", response_class=HTMLResponse)
async def save_patient(visit: SignedIn, patient_id: str) -> Response:
    """Send what changed; the API answers each field it refuses, shown beside it."""
    pid = parse_id(patient_id)
    if (no := desk_only(visit)) is not None or pid is None:
        return no or visit.page("problem.html", status=404, message=N_("There is no such record."))
    form = await form_of(visit.request)
    body, errors = registration(form)
    body.pop("confirm_duplicate", None)
    changes: JsonObject = {k: v for k, v in body.items() if v not in (None, "")}

    async def again(status: int, problem: str | None = None) -> HTMLResponse:
        return visit.page(
            "patient_new.html",
            status=status,
            form=form,
            errors=errors,
            payers=await payers(visit),
            sexes=SEXES,
            duplicates=[],
            editing=pid,
            problem=problem,
        )

    if errors:
        return await again(422)
    answer = await visit.call("PATCH", f"/api/patients/{pid}", body=changes)
    if answer.ok:
        return RedirectResponse(f"/patients/{pid}?saved=1", status_code=303)
    if answer.status == 422:
        problem = answer.problem()
        errors.update(problem.fields)
        return await again(422, None if problem.fields else problem.detail)
    return refused(visit, answer)
