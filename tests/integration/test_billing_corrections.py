"""Billing never invoices what it cannot bill, and bills it once the data is corrected: bed nights
of a ward entered in a currency billing does not invoice in dead-letter (rather than open or
join an invoice in that currency) and, once admissions has corrected the ward, their replay bills
them at the corrected tariff and the admission's invoice is issued.
"""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal

import pytest

from his.billing import handlers
from his.events.admissions import BedChargePosted, PatientAdmitted, PatientDischarged, WardUpdated
from his.kernel.consumer import PermanentError
from his.kernel.events import Envelope
from tests.integration.test_billing import World, at, lab
from tests.integration.test_billing import world as world  # noqa: PLC0414 - the fixture, used by name


async def test_bed_nights_in_an_unknown_currency_wait_for_the_wards_correction(world: World) -> None:
    pid = await world.patient("SGK")
    adm, ward = uuid.uuid4(), uuid.uuid4()
    await world.feed(
        PatientAdmitted(
            admission_id=adm,
            patient_id=pid,
            practitioner_id=uuid.uuid4(),
            ward_id=ward,
            bed_id=uuid.uuid4(),
            admitted_at=at(10, 10),
        ),
        handlers.on_admitted,
    )
    await world.feed(lab(pid, at(11, 9), ("CBC", "250.00")), handlers.on_lab_order_resulted)
    nights = [
        BedChargePosted(
            charge_id=uuid.uuid4(),
            admission_id=adm,
            patient_id=pid,
            ward_id=ward,
            ward_type="general",
            night=date(2026, 3, n),
            amount=Decimal("1500.00"),
            currency="TRL",
        )
        for n in (10, 11)
    ]
    posted = [Envelope.wrap(n, aggregate_id=adm) for n in nights]
    for env, night in zip(posted, nights, strict=True):
        with pytest.raises(PermanentError, match=r"in TRL, which billing does not invoice in \(currencies: TRY\)"):
            async with world.db.uow() as uow:
                await handlers.on_bed_charge_posted(uow, env, night)
    await world.feed(
        PatientDischarged(
            admission_id=adm,
            patient_id=pid,
            ward_id=ward,
            bed_id=uuid.uuid4(),
            admitted_at=at(10, 10),
            discharged_at=at(12, 10),
            nights=2,
        ),
        handlers.on_discharged,
    )
    [draft] = await world.invoices(pid)
    assert (draft["status"], [x["code"] for x in draft["lines"]]) == ("draft", ["lab.CBC"])  # waits for its nights

    # Admissions corrects the ward (its tariff now in TRY); the dead letters are replayed.
    await world.feed(
        WardUpdated(
            ward_id=ward,
            fields=["currency", "daily_rate"],
            ward_type="general",
            daily_rate=Decimal("1600.00"),
            currency="TRY",
        ),
        handlers.on_ward_updated,
    )
    for env, night in zip(posted, nights, strict=True):
        async with world.db.uow() as uow:
            await handlers.on_bed_charge_posted(uow, env, night)
    [inv] = await world.invoices(pid)
    assert (inv["status"], inv["currency"], inv["payer"]) == ("open", "TRY", "SGK")
    assert sorted((x["code"], x["total"]) for x in inv["lines"]) == [
        ("bed.general", "1600.00"),
        ("bed.general", "1600.00"),
        ("lab.CBC", "250.00"),
    ]
    assert (inv["total"], inv["insurer_share"], inv["patient_share"]) == ("3450.00", "2760.00", "690.00")
    before = await world.state()
    for env, night in zip(posted, nights, strict=True):  # replayed once more: nothing changes
        async with world.db.uow() as uow:
            await handlers.on_bed_charge_posted(uow, env, night)
    assert await world.state() == before
