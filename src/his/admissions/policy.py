"""Who may do what with a patient's admissions: pure, no IO.

Every admissions route that reaches a patient decides through ``decide`` (the shared rule of
``his.access``): reception and ADMIN admit, read, move and discharge any patient; a clinician
(DOCTOR, NURSE) reads, transfers and discharges only a patient in their care or under an
emergency grant (an admission gives its practitioner care); BILLING reads the bed charges.
Patients do not reach admissions through this API.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from his.access import CLINICIANS, Decision, Relationship, Role, Rule, unknown
from his.access import decide as _decide

ADMITTERS = frozenset({Role.RECEPTIONIST, Role.ADMIN})
#: Who sees wards and beds: every role but PATIENT.
STAFF = frozenset({Role.ADMIN, Role.RECEPTIONIST, Role.DOCTOR, Role.NURSE, Role.LAB_TECH, Role.BILLING, Role.AUDITOR})
#: Who shapes wards and runs the nightly charges.
WARD_ADMINS = frozenset({Role.ADMIN})
#: Who moves beds through cleaning, closure and isolation.
HOUSEKEEPING = frozenset({Role.NURSE, Role.ADMIN})


class Operation(StrEnum):
    ADMIT = "admit"
    READ = "read"
    READ_CHARGES = "read_charges"
    TRANSFER = "transfer"
    DISCHARGE = "discharge"


RULES: dict[Operation, Rule] = {
    Operation.ADMIT: Rule.of(by_role=ADMITTERS),
    Operation.READ: Rule.of(by_role=ADMITTERS, with_care=CLINICIANS),
    Operation.READ_CHARGES: Rule.of(by_role=(*ADMITTERS, Role.BILLING), with_care=CLINICIANS, purpose="billing"),
    Operation.TRANSFER: Rule.of(by_role=ADMITTERS, with_care=CLINICIANS),
    Operation.DISCHARGE: Rule.of(by_role=ADMITTERS, with_care=CLINICIANS),
}


def decide(op: Operation, roles: Iterable[str], rel: Relationship) -> Decision:
    """Whether a caller may perform ``op`` on one patient's admission, and on what basis."""
    return _decide(RULES[op], roles, rel)


def not_found(op: Operation, roles: Iterable[str]) -> Decision:
    """The answer for an id that does not exist (403 to roles that never may)."""
    return unknown(RULES[op], roles)


def lists_everyone(roles: Iterable[str]) -> bool:
    """Whether the caller may list admissions of every patient at once (reception, ADMIN): a
    clinician names the patient, so that each list is decided on their care."""
    return bool(frozenset(roles) & ADMITTERS)
