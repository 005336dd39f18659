"""Who may do what with stock, and use it for a patient: pure, no IO.

Stock is visible to all staff (every role but PATIENT); ADMIN defines items; ADMIN, nurses and
lab technicians receive stock; clinicians, lab technicians and ADMIN consume it.

Stock used for a patient is billed to them and is part of their record, so the care rule holds:
a clinician (DOCTOR, NURSE) charges stock to a patient only within a care relationship or under
an emergency grant; the lab's technicians and ADMIN by role. Stock used for anything else
(``reason: other``) is a matter of role alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from his.access import CLINICIANS, Decision, Relationship, Role, Rule
from his.access import decide as _decide

BY_ROLE = frozenset({Role.LAB_TECH, Role.ADMIN})
#: Who uses stock at all.
CONSUMERS = BY_ROLE | CLINICIANS
#: Who sees stock, items, expiry, alerts and back-orders: every role but PATIENT.
STAFF = frozenset({Role.ADMIN, Role.RECEPTIONIST, Role.DOCTOR, Role.NURSE, Role.LAB_TECH, Role.BILLING, Role.AUDITOR})
#: Who defines items.
ITEM_ADMINS = frozenset({Role.ADMIN})
#: Who receives stock.
RECEIVERS = frozenset({Role.ADMIN, Role.NURSE, Role.LAB_TECH})


class Operation(StrEnum):
    #: Use stock for a patient (billed to them if the item is chargeable).
    CONSUME_FOR_PATIENT = "consume_for_patient"


RULES: dict[Operation, Rule] = {
    Operation.CONSUME_FOR_PATIENT: Rule.of(by_role=BY_ROLE, with_care=CLINICIANS),
}


def decide(op: Operation, roles: Iterable[str], rel: Relationship) -> Decision:
    """Whether a caller may perform ``op`` for one patient, and on what basis (for the audit)."""
    return _decide(RULES[op], roles, rel)
