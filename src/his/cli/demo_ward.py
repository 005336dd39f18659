"""The ward day of ``his demo``: wards and beds, admissions, lab work, supplies, transfers,
discharges, housekeeping, and the invoices that follow, split between insurer and patient; the
billing clerk takes payments at the desk, and one patient pays online through the TEST provider.

Everything goes through the gateway, as the ward's staff would. Invoices are made by billing from
the events of the other services, so the demo waits for them to appear (with a deadline).
"""

from __future__ import annotations

import asyncio
import email
import email.message
import email.policy
import random
import re
import secrets
import uuid
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from his.cli.demo import Api, DemoError, Hospital, gather_limited, login, staff_user
from his.cli.wire import (
    CATALOGUE,
    CHECKOUT,
    CREATED,
    DISCHARGED,
    INVOICE,
    INVOICES,
    STOCK_ITEMS,
    Invoice,
    LabResult,
    LabTest,
)

#: (name, type, daily rate in TRY, beds, rooms)
WARDS = (
    ("General Medicine", "general", "2500.00", 16, 8),
    ("Intensive Care", "icu", "9000.00", 4, 4),
    ("Maternity", "maternity", "3200.00", 8, 4),
)
#: Chargeable ward supplies the demo stocks (billing prices them as ``item.<code>``).
SUPPLIES = (
    ("SYRINGE-5ML", "5 ml syringe", "piece"),
    ("IV-SET", "Infusion set", "piece"),
    ("GAUZE", "Sterile gauze 10x10", "pack"),
)
WARD_STORE = "WARD-GEN"
LAB_STORE = "LAB"
#: How long billing may take to issue the invoices of the discharged patients.
INVOICE_WAIT_SECONDS = 30.0
#: The embedded TEST payment provider's card that always succeeds (no money moves).
TEST_CARD = {"card_number": "4242 4242 4242 4242", "expiry": "12/39", "cvc": "123"}
#: How long the care of the admitted patients may take to reach patients (through events).
CARE_WAIT_SECONDS = 30.0


@dataclass
class Ward:
    staff: dict[str, Api]
    #: The staff's user ids, by role.
    staff_ids: dict[str, str]
    wards: list[str] = field(default_factory=list)
    admitted: list[tuple[str, str, str]] = field(default_factory=list)  # (admission, patient, doctor's practitioner)
    discharged: list[str] = field(default_factory=list)  # patient ids
    tally: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class WardInvoice:
    """A discharged patient's invoice, and the plan the demo gave them (``SELF``: none)."""

    invoice: Invoice
    payer_code: str


async def run_ward_day(
    h: Hospital, rng: random.Random, tag: str, bar: Progress, *, admissions: int
) -> list[WardInvoice]:
    """Play a ward day; returns what it did and one invoice per payer plan."""
    staff, ids = {}, {}
    for role, label in (("NURSE", "Ward Nurse"), ("LAB_TECH", "Lab Technician"), ("BILLING", "Billing Clerk")):
        ids[role], staff[role] = await staff_user(h.admin, f"{role.lower()}.{tag}@demo.his.local", label, [role])
    w = Ward(staff, ids)
    await _wards(h, w, bar)
    await _stock(h, w)
    await _admit(h, w, rng, bar, admissions)
    await _care(h, w)
    await _lab_work(h, w, rng, bar)
    await _supplies(w, rng, bar)
    await _transfers(h, w, rng)
    await _discharge(h, w, rng, bar)
    invoices = await _invoices(w, h.payer_of, bar)
    await _payments(w, invoices, rng)
    await _online_payment(h, w, tag)
    h.tally.update(w.tally)
    return invoices


async def _wards(h: Hospital, w: Ward, bar: Progress) -> None:
    task = bar.add_task("wards and beds", total=len(WARDS))
    for name, kind, rate, beds, rooms in WARDS:
        body = {"name": name, "type": kind, "daily_rate": rate, "currency": "TRY", "beds": beds, "rooms": rooms}
        r = await h.admin.call("POST", "/api/wards", json=body)
        w.wards.append(CREATED.validate_json(r.content).id)
        w.tally["beds"] += beds
        bar.advance(task)


async def _stock(h: Hospital, w: Ward) -> None:
    """Supplies on the ward and a delivery of every reagent the laboratory uses."""
    for code, description, unit in SUPPLIES:
        await h.admin.call(
            "POST",
            "/api/inventory/items",
            ok=(201, 409),
            json={
                "code": code,
                "description": description,
                "unit": unit,
                "chargeable": True,
                "thresholds": {WARD_STORE: 20},
            },
        )
        await receive(h.admin, code, WARD_STORE, "200", "2030-12-31")
    r = await h.admin.call("GET", "/api/inventory/items")
    for item in STOCK_ITEMS.validate_json(r.content).items:
        if not item.chargeable:
            await receive(h.admin, item.code, LAB_STORE, "500", "2030-06-30")


async def receive(api: Api, code: str, location: str, quantity: str, expires_on: str) -> None:
    lot = f"L{uuid.uuid4().hex[:6].upper()}"
    body = {"item_code": code, "location": location, "lot": lot, "quantity": quantity, "expires_on": expires_on}
    await api.call("POST", "/api/inventory/receipts", json=body)


async def _admit(h: Hospital, w: Ward, rng: random.Random, bar: Progress, count: int) -> None:
    free = [p for p in h.patients if p not in h.in_clinic]  # tomorrow's clinic patients stay at home today
    chosen = rng.sample(free, min(count, len(free)))
    if count > len(chosen):  # say so, rather than admit fewer than asked in silence
        w.tally["not admitted: the other patients are in the clinics"] = count - len(chosen)
    task = bar.add_task("patients admitted", total=len(chosen))

    async def admit(patient: str) -> None:
        pid, _ = rng.choice(h.doctors)
        ward = rng.choices(w.wards, (6, 1, 2))[0]
        body = {"patient_id": patient, "practitioner_id": pid, "ward_id": ward}
        r = await h.reception.call("POST", "/api/admissions", json=body, ok=(201, 409))
        if r.status_code == 201:
            w.admitted.append((CREATED.validate_json(r.content).id, patient, pid))
            w.tally["admitted"] += 1
        else:
            w.tally["refused: no free bed"] += 1

    await gather_limited(chosen, admit, 4, lambda: bar.advance(task))


async def _care(h: Hospital, w: Ward) -> None:
    """Clinicians act on a patient only in their care: reception puts the ward nurse on each
    admitted patient's care team, and each admitting doctor's care follows from the admission
    (patients learns it from admissions' event). Waits until both hold, with a deadline."""
    nurse, doctor = w.staff_ids["NURSE"], dict(h.doctors)

    async def assigned(item: tuple[str, str, str]) -> bool:  # 422 until patients has learnt the account
        r = await h.reception.call(
            "POST", f"/api/patients/{item[1]}/care-team", json={"user_id": nurse}, ok=(201, 409, 422)
        )
        return r.status_code != 422

    async def in_care(item: tuple[str, str, str]) -> bool:
        r = await doctor[item[2]].call("GET", f"/api/patients/{item[1]}", ok=(200, 403))
        return r.status_code == 200

    loop = asyncio.get_running_loop()
    deadline = loop.time() + CARE_WAIT_SECONDS
    for holds, what in ((assigned, "the ward nurse on the care teams"), (in_care, "the doctors' care")):
        pending = list(w.admitted)
        while pending:
            done = await gather_limited(pending, holds, 4, lambda: None)
            pending = [item for item, ok in zip(pending, done, strict=True) if not ok]
            if pending and loop.time() > deadline:
                raise DemoError(f"{what}: {len(pending)} admitted patients not reached in {CARE_WAIT_SECONDS:g} s")
            if pending:
                await asyncio.sleep(0.2)


def _value(test: LabTest, rng: random.Random) -> str:
    low, high = test.reference_low, test.reference_high
    if low is None or high is None:
        return "negative"
    lo, hi = float(low), float(high)
    span = hi - lo
    value = rng.uniform(lo - span * 0.3, hi + span * 0.3) if rng.random() < 0.25 else rng.uniform(lo, hi)
    return f"{max(value, 0.0):.2f}"


async def _lab_work(h: Hospital, w: Ward, rng: random.Random, bar: Progress) -> None:
    catalogue = list(CATALOGUE.validate_json((await h.reception.call("GET", "/api/lab/catalog")).content).items)
    doctor = dict(h.doctors)
    lab = w.staff["LAB_TECH"]
    task = bar.add_task("lab orders resulted", total=len(w.admitted))

    async def work(item: tuple[str, str, str]) -> None:
        _, patient, pid = item
        tests = rng.sample(catalogue, rng.randint(1, 3))
        body = {
            "patient_id": patient,
            "tests": [t.code for t in tests],
            "priority": rng.choice(["routine", "urgent"]),
        }
        order = CREATED.validate_json((await doctor[pid].call("POST", "/api/lab/orders", json=body)).content).id
        for action in ("collect", "start"):
            await lab.call("POST", f"/api/lab/orders/{order}/{action}")
        results: list[LabResult] = []
        for t in tests:
            value = _value(t, rng)
            result: LabResult = {"code": t.code, "value": value, "unit": t.unit}
            if value == "negative":
                result["flag"] = "N"
            results.append(result)
        await lab.call("POST", f"/api/lab/orders/{order}/results", json={"results": results})
        w.tally["lab tests resulted"] += len(tests)

    await gather_limited(w.admitted, work, 4, lambda: bar.advance(task))


async def _supplies(w: Ward, rng: random.Random, bar: Progress) -> None:
    nurse = w.staff["NURSE"]
    task = bar.add_task("supplies used for patients", total=len(w.admitted))

    async def use(item: tuple[str, str, str]) -> None:
        _, patient, _ = item
        for code, _, _ in rng.sample(SUPPLIES, rng.randint(0, 2)):
            body = {
                "item_code": code,
                "location": WARD_STORE,
                "quantity": str(rng.randint(1, 3)),
                "patient_id": patient,
                "reason": "patient",
            }
            r = await nurse.call("POST", "/api/inventory/consumptions", json=body, ok=(201, 409))
            w.tally["supplies used" if r.status_code == 201 else "supplies refused: out of stock"] += 1

    await gather_limited(w.admitted, use, 4, lambda: bar.advance(task))


async def _transfers(h: Hospital, w: Ward, rng: random.Random) -> None:
    for admission, _, _ in rng.sample(w.admitted, min(3, len(w.admitted))):
        ward = rng.choice(w.wards)
        r = await h.reception.call(
            "POST", f"/api/admissions/{admission}/transfer", json={"ward_id": ward}, ok=(200, 409)
        )
        w.tally["transferred" if r.status_code == 200 else "transfer refused: no free bed"] += 1


async def _discharge(h: Hospital, w: Ward, rng: random.Random, bar: Progress) -> None:
    leaving = [a for a in w.admitted if rng.random() < 0.6]
    doctor = dict(h.doctors)
    nurse = w.staff["NURSE"]
    task = bar.add_task("patients discharged", total=len(leaving))

    async def discharge(item: tuple[str, str, str]) -> None:
        admission, patient, pid = item
        r = await doctor[pid].call("POST", f"/api/admissions/{admission}/discharge")
        w.discharged.append(patient)
        w.tally["discharged"] += 1
        bed = DISCHARGED.validate_json(r.content).bed_id
        if bed is not None:  # housekeeping cleans the bed and gives it back
            await nurse.call("POST", f"/api/beds/{bed}/release")
            w.tally["beds cleaned and released"] += 1

    await gather_limited(leaving, discharge, 4, lambda: bar.advance(task))


async def _invoices(w: Ward, payer_of: dict[str, str], bar: Progress | None) -> list[WardInvoice]:
    """The invoices of the discharged patients' admissions, once billing has issued them."""
    clerk = w.staff["BILLING"]
    task = bar.add_task("invoices issued", total=len(w.discharged)) if bar is not None else None
    found: dict[str, WardInvoice] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + INVOICE_WAIT_SECONDS
    while len(found) < len(w.discharged) and loop.time() < deadline:
        for patient in w.discharged:
            if patient in found:
                continue
            r = await clerk.call("GET", "/api/invoices", params={"patient_id": patient})
            items = INVOICES.validate_json(r.content).items
            issued = [i for i in items if i.kind == "admission" and i.status not in ("draft", "void")]
            if issued:
                found[patient] = WardInvoice(issued[0], payer_of.get(patient, "SELF"))
                if bar is not None and task is not None:
                    bar.advance(task)
        if len(found) < len(w.discharged):
            await asyncio.sleep(0.5)
    if len(found) < len(w.discharged):
        raise DemoError(f"billing issued {len(found)} of {len(w.discharged)} admission invoices in time")
    w.tally["admission invoices issued"] = len(found)
    return list(found.values())


def _issued_share(inv: Invoice) -> str:
    """The patient's share of an issued invoice (only a draft has none)."""
    if inv.patient_share is None:
        raise DemoError(f"invoice {inv.id} is {inv.status} but has no patient share")
    return inv.patient_share


async def _payments(w: Ward, invoices: list[WardInvoice], rng: random.Random) -> None:
    """Half of the patients pay their share at the desk to the billing clerk (cash or card at the
    desk's terminal), some in two instalments."""
    clerk = w.staff["BILLING"]
    for inv in (i.invoice for i in invoices):
        share = Decimal(_issued_share(inv))
        if share <= 0 or rng.random() < 0.5:
            continue
        parts = (
            [share]
            if rng.random() < 0.7
            else [(share / 2).quantize(Decimal("0.01")), share - (share / 2).quantize(Decimal("0.01"))]
        )
        for part in parts:
            body = {"amount": str(part), "currency": inv.currency, "method": rng.choice(["card", "cash"])}
            await clerk.call(
                "POST",
                f"/api/invoices/{inv.id}/payments",
                json=body,
                extra_headers={"Idempotency-Key": str(uuid.uuid4())},
            )
            w.tally["payments taken"] += 1


async def _online_payment(h: Hospital, w: Ward, tag: str) -> None:
    """A patient with an account of their own stays a night and pays their share online, through
    the embedded TEST payment provider with its test card: the provider's confirmation, not the
    patient, marks the invoice paid."""
    if not h.doctors or not w.wards:
        return
    password = secrets.token_urlsafe(18)
    email = f"portal.{tag}@demo.his.local"
    anonymous = h.admin.as_user("")
    await anonymous.call(
        "POST", "/api/auth/register", json={"email": email, "password": password, "full_name": "Portal Patient"}
    )
    # The address is confirmed with the link identity e-mailed to it, before the account signs in.
    token = await _await_mail(h, email, CONFIRM_LINK, "confirm", 30.0)
    if token is None:
        w.tally["not paid online: no confirmation mail in the local maildir"] += 1
        return
    await anonymous.call("POST", "/api/auth/verify-email", json={"token": token, "password": password}, ok=(204,))
    body = {
        "given_name": "Portal",
        "family_name": f"Patient {tag}",
        "birth_date": "1984-04-04",
        "sex": "female",
        "email": email,
        "coverage": {"payer": "SGK", "member_id": f"SG{tag}"},
        "confirm_duplicate": True,
    }
    patient = CREATED.validate_json((await h.reception.call("POST", "/api/patients", json=body)).content).id
    me = await login(anonymous, email, password)
    if not await _link_by_invitation(h, me, patient, email):
        w.tally["not paid online: no invitation mail in the local maildir"] += 1
        return
    pid, _ = h.doctors[0]
    r = await h.reception.call(
        "POST",
        "/api/admissions",
        ok=(201, 409),
        json={"patient_id": patient, "practitioner_id": pid, "ward_id": w.wards[0]},
    )
    if r.status_code == 409:
        w.tally["not paid online: no free bed"] += 1
        return
    await h.reception.call("POST", f"/api/admissions/{CREATED.validate_json(r.content).id}/discharge")
    [billed] = await _invoices(Ward(w.staff, w.staff_ids, discharged=[patient]), {patient: "SGK"}, None)
    invoice = billed.invoice
    amount = {"amount": invoice.patient_share, "currency": invoice.currency}
    r = await me.call(
        "POST",
        f"/api/invoices/{invoice.id}/online-payments",
        json=amount,
        extra_headers={"Idempotency-Key": str(uuid.uuid4())},
    )
    checkout = CHECKOUT.validate_json(r.content).checkout_url
    await anonymous.call("POST", checkout, json=TEST_CARD)  # the provider's page: no token of ours
    paid = await me.call("GET", f"/api/invoices/{invoice.id}")
    if INVOICE.validate_json(paid.content).status != "paid":
        raise DemoError(f"the test provider's confirmation did not mark invoice {invoice.id} paid")
    w.tally["paid online (TEST payment provider)"] += 1


INVITATION_CODE = re.compile(r"\b[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}\b")


#: The token of the confirmation link identity e-mails at self-registration.
CONFIRM_LINK = re.compile(r"/verify-email\?token=([A-Za-z0-9_-]+)")


def _mailed(maildir: Path, address: str, pattern: re.Pattern[str], subject: str) -> str | None:
    """What ``pattern`` finds (its last group) in a message to ``address`` whose subject names
    ``subject``, if one is in the maildir yet."""
    for path in [*maildir.glob("new/*"), *maildir.glob("cur/*")]:
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        if isinstance(msg, email.message.EmailMessage) and msg["To"] == address:
            found = pattern.search(msg.get_content())
            if found and subject in str(msg["Subject"]).lower():
                return found.group(found.lastindex or 0)
    return None


async def _await_mail(h: Hospital, address: str, pattern: re.Pattern[str], subject: str, wait: float) -> str | None:
    """``_mailed``, waited for up to ``wait`` seconds; None without a local maildir."""
    if h.maildir is None or not h.maildir.is_dir():
        return None
    deadline = asyncio.get_running_loop().time() + wait
    while (found := await asyncio.to_thread(_mailed, h.maildir, address, pattern, subject)) is None:
        if asyncio.get_running_loop().time() > deadline:
            return None
        await asyncio.sleep(0.2)
    return found


async def _link_by_invitation(h: Hospital, me: Api, patient: str, address: str, wait: float = 30.0) -> bool:
    """Reception invites the patient to the portal; the patient reads the code in their mail (the
    hospital's local maildir) and redeems it from their own account. False if no mail came."""
    if h.maildir is None or not h.maildir.is_dir():
        return False
    await h.reception.call("POST", f"/api/patients/{patient}/invitations", json={"channel": "email"})
    code = await _await_mail(h, address, INVITATION_CODE, "invitation", wait)
    if code is None:
        return False
    await me.call("POST", "/api/patients/invitations/redeem", json={"code": code})
    return True


def render_invoices(console: Console, invoices: list[WardInvoice]) -> None:
    """One discharged patient's invoice per payer plan: its lines and the split."""
    shown: set[str] = set()
    for billed in invoices:
        inv = billed.invoice
        payer = inv.payer or billed.payer_code
        if payer in shown:
            continue
        shown.add(payer)
        table = Table(title=f"invoice {inv.id[:8]} — plan {payer} — {inv.status}")
        for col in ("line", "qty", "amount", "insurer", "patient"):
            table.add_column(col, justify="left" if col == "line" else "right")
        for line in inv.lines:
            label = line.code + (" (not covered)" if line.excluded else "")
            table.add_row(label, line.quantity, line.total, line.insurer_share, line.patient_share)
        table.add_row(f"total ({inv.currency})", "", inv.total, inv.insurer_share, inv.patient_share, style="bold")
        console.print(table)
