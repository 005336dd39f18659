"""The patient portal (PATIENT): link the account to one's record with the invitation's code; my
appointments (book, cancel, wait for a practitioner); my lab results; my invoices, paid online
through the payment provider; how the hospital may reach me; and who saw my record.

Everything is asked of the API as the patient: it decides what is theirs.
"""

from __future__ import annotations

import re
import uuid

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from his.console.appointments import chosen_slot, day_of, free_slots, services, specialties
from his.console.chart import FLAGS
from his.console.front_desk import items, parse_id, practitioner_names, refused, staff_names
from his.console.i18n import N_
from his.console.web import SignedIn, Visit, form_of
from his.kernel.json import JsonObject

router = APIRouter(include_in_schema=False)

#: A test-mode checkout's reference, at the end of the provider's checkout URL.
CHECKOUT_REF = re.compile(r"/checkout/(cs_test_[A-Za-z0-9_-]+)$")
INVOICE_STATES = {
    "draft": N_("Being prepared"),
    "open": N_("To pay"),
    "partially_paid": N_("Partly paid"),
    "paid": N_("Paid"),
    "void": N_("Cancelled"),
}
#: Why a record was opened, as the audit trail names it, in words.
PURPOSES = {
    "own_record": N_("You, in the portal"),
    "care": N_("Your care"),
    "emergency": N_("Emergency access"),
    "registration": N_("Registration at the front desk"),
    "portal_invitation": N_("Invitation to the portal"),
    "billing": N_("Billing"),
    "administration": N_("Administration"),
    "oversight": N_("Oversight"),
    "notifications": N_("A message to you"),
}
#: The hospital's own systems that read a record (a workload, not a person), by service.
SYSTEMS = {
    "notifications": N_("Automatic messages"),
    "billing": N_("Billing system"),
    "scheduling": N_("Appointment system"),
    "laboratory": N_("Laboratory system"),
    "admissions": N_("Ward system"),
}
ACTIONS = {
    "read": N_("read"),
    "search": N_("found in a search"),
    "create": N_("created"),
    "update": N_("changed"),
    "delete": N_("removed"),
}


def patient_only(visit: Visit) -> Response | None:
    if "PATIENT" in visit.roles:
        return None
    return visit.page("problem.html", status=403, message=N_("The portal is for patients."))


async def me(visit: Visit) -> JsonObject | None:
    """The patient's own record, or None while the account is not linked to one."""
    answer = await visit.call("GET", "/api/patients/me")
    return answer.body if answer.ok and isinstance(answer.body, dict) else None


@router.get("/portal", response_class=HTMLResponse)
async def portal(visit: SignedIn, *, booked: bool = False, cancelled: bool = False, linked: bool = False) -> Response:
    """The patient's home: their appointments, lab results and invoices."""
    if (no := patient_only(visit)) is not None:
        return no
    record = await me(visit)
    if record is None:
        return visit.page("portal_link.html", error=None)
    pid = str(record.get("id"))
    return visit.page(
        "portal.html",
        patient=record,
        appointments=items(await visit.call("GET", "/api/appointments", params={"patient_id": pid})),
        results=items(await visit.call("GET", f"/api/patients/{pid}/lab-results", params={"limit": "20"})),
        invoices=items(await visit.call("GET", "/api/invoices", params={"patient_id": pid, "limit": "20"})),
        waiting=items(await visit.call("GET", "/api/waitlist", params={"patient_id": pid})),
        practitioners=await practitioner_names(visit),
        flags=FLAGS,
        invoice_states=INVOICE_STATES,
        booked=booked,
        cancelled=cancelled,
        linked=linked,
    )


@router.post("/portal/link", response_class=HTMLResponse)
async def link(visit: SignedIn) -> Response:
    """Link the account to the record the invitation's code was sent for."""
    if (no := patient_only(visit)) is not None:
        return no
    code = (await form_of(visit.request)).get("code", "").strip().upper()
    if not code:
        return visit.page("portal_link.html", status=422, error=N_("Enter the code from the invitation."))
    answer = await visit.call("POST", "/api/patients/invitations/redeem", body={"code": code})
    if answer.ok:
        return RedirectResponse("/portal?linked=1", status_code=303)
    if answer.status in (404, 409, 422):
        error = N_("This code is not valid: it may have expired or been used. Ask the front desk for a new one.")
        return visit.page("portal_link.html", status=answer.status, error=error)
    return refused(visit, answer)


@router.get("/portal/book", response_class=HTMLResponse)
async def book_page(
    visit: SignedIn,
    *,
    practitioner_id: str = "",
    service: str = "consultation",
    specialty: str = "",
    day: str = "",
    taken: bool = False,
) -> Response:
    """Book for oneself: a practitioner (or the first free one), a service and a day."""
    if (no := patient_only(visit)) is not None:
        return no
    chosen = day_of(day, visit)
    return visit.page(
        "portal_book.html",
        practitioners=list((await practitioner_names(visit)).values()),
        services=await services(visit),
        specialties=await specialties(visit),
        practitioner_id=practitioner_id,
        specialty=specialty,
        service=service,
        day=chosen,
        slots=await free_slots(visit, practitioner_id, service, chosen, specialty=specialty),
        taken=taken,
    )


@router.post("/portal/book", response_class=HTMLResponse)
async def book(visit: SignedIn) -> Response:
    if (no := patient_only(visit)) is not None:
        return no
    record = await me(visit)
    form = await form_of(visit.request)
    slot = chosen_slot(form)
    service = form.get("service", "consultation")
    if record is None or slot is None:
        return visit.page("problem.html", status=422, message=N_("Choose a free time first."))
    practitioner, start, end = slot
    body: JsonObject = {
        "patient_id": str(record.get("id")),
        "practitioner_id": practitioner,
        "start": start,
        "end": end,
        "service": service,
    }
    answer = await visit.call("POST", "/api/appointments", body=body)
    if answer.status == 201:
        return RedirectResponse("/portal?booked=1", status_code=303)
    if answer.status == 409:
        return RedirectResponse(f"/portal/book?service={service}&day={start[:10]}&taken=1", status_code=303)
    return refused(visit, answer)


@router.post("/portal/appointments/{appointment_id}/cancel", response_class=HTMLResponse)
async def cancel(visit: SignedIn, appointment_id: str) -> Response:
    aid = parse_id(appointment_id)
    if (no := patient_only(visit)) is not None or aid is None:
        return no or visit.page("problem.html", status=404, message=N_("There is no such record."))
    answer = await visit.call("POST", f"/api/appointments/{aid}/cancel")
    if answer.ok:
        return RedirectResponse("/portal?cancelled=1", status_code=303)
    if answer.status == 409:
        return visit.page("problem.html", status=409, message=N_("This appointment cannot be cancelled any more."))
    return refused(visit, answer)


@router.post("/portal/waitlist", response_class=HTMLResponse)
async def wait(visit: SignedIn) -> Response:
    """Wait for a practitioner: the first time freed is offered."""
    if (no := patient_only(visit)) is not None:
        return no
    record = await me(visit)
    form = await form_of(visit.request)
    practitioner = form.get("practitioner_id", "")
    if record is None or parse_id(practitioner) is None:
        return visit.page("problem.html", status=422, message=N_("Choose a practitioner to wait for."))
    body: JsonObject = {
        "patient_id": str(record.get("id")),
        "practitioner_id": practitioner,
        "service": form.get("service", "consultation"),
    }
    answer = await visit.call("POST", "/api/waitlist", body=body)
    if answer.status in (201, 409):  # 409: waiting already
        return RedirectResponse("/portal#waiting", status_code=303)
    return refused(visit, answer)


@router.get("/portal/invoices/{invoice_id}", response_class=HTMLResponse)
async def invoice(visit: SignedIn, invoice_id: str, *, paid: bool = False) -> Response:
    """One invoice: its lines, what the insurer pays and what is left to pay, and paying it."""
    iid = parse_id(invoice_id)
    if (no := patient_only(visit)) is not None or iid is None:
        return no or visit.page("problem.html", status=404, message=N_("There is no such record."))
    answer = await visit.call("GET", f"/api/invoices/{iid}")
    if not answer.ok or not isinstance(answer.body, dict):
        return refused(visit, answer)
    return visit.page(
        "portal_invoice.html",
        invoice=answer.body,
        invoice_states=INVOICE_STATES,
        key=str(uuid.uuid4()),  # one payment per form shown: sent twice, it is one payment
        paid=paid,
    )


@router.post("/portal/invoices/{invoice_id}/pay", response_class=HTMLResponse)
async def pay(visit: SignedIn, invoice_id: str) -> Response:
    """Open an online payment of what is left to pay; the provider's checkout follows."""
    iid = parse_id(invoice_id)
    if (no := patient_only(visit)) is not None or iid is None:
        return no or visit.page("problem.html", status=404, message=N_("There is no such record."))
    form = await form_of(visit.request)
    key = form.get("key", "")
    if parse_id(key) is None:
        return visit.page("problem.html", status=422, message=N_("Reload the invoice and pay from there."))
    body: JsonObject = {"amount": form.get("amount", ""), "currency": form.get("currency", "")}
    answer = await visit.call(
        "POST", f"/api/invoices/{iid}/online-payments", body=body, headers={"idempotency-key": key}
    )
    if answer.status in (200, 201) and isinstance(answer.body, dict):
        found = CHECKOUT_REF.search(str(answer.body.get("checkout_url", "")))
        if found:
            return RedirectResponse(f"/portal/checkout/{found[1]}?invoice={iid}", status_code=303)
    if answer.status in (409, 422):
        return visit.page("problem.html", status=answer.status, message=N_("This amount cannot be paid now."))
    return refused(visit, answer)


@router.get("/portal/checkout/{ref}", response_class=HTMLResponse)
async def checkout(visit: SignedIn, ref: str, invoice: str = "") -> Response:
    """The test payment provider's checkout (TEST MODE: test cards only, no money moves)."""
    if (no := patient_only(visit)) is not None or not re.fullmatch(r"cs_test_[A-Za-z0-9_-]+", ref):
        return no or visit.page("problem.html", status=404, message=N_("There is no such record."))
    answer = await visit.call("GET", f"/api/test-payment-provider/checkout/{ref}")
    if not answer.ok or not isinstance(answer.body, dict):
        return refused(visit, answer)
    return visit.page("portal_checkout.html", session=answer.body, ref=ref, invoice=invoice, error=None)


@router.post("/portal/checkout/{ref}", response_class=HTMLResponse)
async def checkout_pay(visit: SignedIn, ref: str) -> Response:
    if (no := patient_only(visit)) is not None or not re.fullmatch(r"cs_test_[A-Za-z0-9_-]+", ref):
        return no or visit.page("problem.html", status=404, message=N_("There is no such record."))
    form = await form_of(visit.request)
    card: JsonObject = {
        "card_number": re.sub(r"\s+", "", form.get("card_number", "")),
        "expiry": form.get("expiry", "").strip(),
        "cvc": form.get("cvc", "").strip(),
    }
    answer = await visit.call("POST", f"/api/test-payment-provider/checkout/{ref}", body=card)
    invoice_id = parse_id(form.get("invoice", ""))
    if answer.ok:
        return RedirectResponse(f"/portal/invoices/{invoice_id}?paid=1" if invoice_id else "/portal", status_code=303)
    session = await visit.call("GET", f"/api/test-payment-provider/checkout/{ref}")
    messages = {
        402: N_("The card was declined. Try another card."),
        409: N_("This payment was made already."),
        422: N_("Check the card number, the expiry date (MM/YY) and the security code."),
    }
    return visit.page(
        "portal_checkout.html",
        status=answer.status if answer.status in messages else 502,
        session=session.body if isinstance(session.body, dict) else {},
        ref=ref,
        invoice=str(invoice_id or ""),
        error=messages.get(answer.status, N_("The payment could not be made right now. Try again shortly.")),
    )


@router.get("/portal/preferences", response_class=HTMLResponse)
async def preferences(visit: SignedIn, *, saved: bool = False) -> Response:
    """How the hospital may reach the patient."""
    if (no := patient_only(visit)) is not None:
        return no
    record = await me(visit)
    if record is None:
        return RedirectResponse("/portal", status_code=303)
    answer = await visit.call("GET", "/api/notifications/preferences", params={"patient_id": str(record.get("id"))})
    if not answer.ok or not isinstance(answer.body, dict):
        return refused(visit, answer)
    return visit.page("portal_preferences.html", choices=answer.body, saved=saved)


@router.post("/portal/preferences", response_class=HTMLResponse)
async def save_preferences(visit: SignedIn) -> Response:
    if (no := patient_only(visit)) is not None:
        return no
    record = await me(visit)
    if record is None:
        return RedirectResponse("/portal", status_code=303)
    form = await form_of(visit.request)
    body: JsonObject = {name: form.get(name) == "yes" for name in ("email", "sms", "opted_out")}
    answer = await visit.call(
        "PUT", "/api/notifications/preferences", params={"patient_id": str(record.get("id"))}, body=body
    )
    if answer.ok:
        return RedirectResponse("/portal/preferences?saved=1", status_code=303)
    return refused(visit, answer)


@router.get("/portal/accesses", response_class=HTMLResponse)
async def accesses(visit: SignedIn, *, mine: bool = False) -> Response:
    """Who saw my record: every recorded access, newest first, with the role and the purpose (the
    patient's own visits only when asked for)."""
    if (no := patient_only(visit)) is not None:
        return no
    record = await me(visit)
    if record is None:
        return RedirectResponse("/portal", status_code=303)
    answer = await visit.call("GET", "/api/audit", params={"patient_id": str(record.get("id")), "limit": "100"})
    if not answer.ok:
        return refused(visit, answer)
    people = await practitioner_names(visit)
    me_user = str(visit.live.session.user_id)
    found = [a for a in items(answer) if mine or a.get("actor_id") != me_user]
    return visit.page(
        "portal_accesses.html",
        accesses=found,
        mine=mine,
        purposes=PURPOSES,
        systems=SYSTEMS,
        # A workload's actor id is its SPIFFE id, not an account: staff_names leaves it out.
        staff=await staff_names(visit, [a.get("actor_id") for a in found if a.get("actor_id") != me_user], people),
        me_user=me_user,
        verbs=ACTIONS,
    )
