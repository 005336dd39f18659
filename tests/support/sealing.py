"""A results' event as laboratory publishes it: its content sealed under a key of the tests'."""

from __future__ import annotations

import uuid
from datetime import datetime

from his.events.laboratory import SEAL_SETTING, LabCharge, LabOrderResulted, LabResultContent, ResultFlag
from his.kernel.crypto import new_key_text
from his.kernel.sealing import Seal

#: The key the tests' laboratory seals with and their consumers open with (as
#: ``HIS_LAB_SEAL_KEYS`` gives it to a service built from its settings).
KEY = new_key_text()
SEAL = Seal(SEAL_SETTING, KEY)


def sealed_result(
    *,
    order_id: uuid.UUID,
    patient_id: uuid.UUID,
    ordered_by: uuid.UUID,
    priority: str,
    resulted_at: datetime,
    results: list[ResultFlag],
    charges: list[LabCharge],
    abnormal: bool,
    critical: bool,
    seal: Seal = SEAL,
) -> LabOrderResulted:
    """``his.laboratory.order.resulted.v3`` with this content sealed, as laboratory makes it."""
    content = LabResultContent(results=results, charges=charges, abnormal=abnormal, critical=critical)
    return LabOrderResulted.sealing(
        seal,
        content,
        order_id=order_id,
        patient_id=patient_id,
        ordered_by=ordered_by,
        priority=priority,
        resulted_at=resulted_at,
    )
