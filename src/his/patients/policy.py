"""Who may do what with a patient's record in the patients service: pure, no IO.

Every route of the service decides through ``decide`` (the shared rule of ``his.access``): the
patient themself; staff whose work needs every record by role; clinicians (DOCTOR, NURSE) only
within a care relationship or under an emergency grant. Clinical content (medical-record
entries, lab results) is for the patient and the clinicians caring for them, not for staff by
role.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from enum import StrEnum

from his.access import CLINICIANS, Decision, Refusal, Relationship, Role, Rule, unknown
from his.access import decide as _decide

#: Staff whose access to master data follows from their role alone.
ROLE_BASED = frozenset({Role.ADMIN, Role.RECEPTIONIST, Role.LAB_TECH, Role.BILLING})
#: Who registers patients, corrects their master data and manages care teams.
REGISTRARS = frozenset({Role.RECEPTIONIST, Role.ADMIN})
#: What a patient may change on their own record.
SELF_SERVICE_FIELDS = frozenset({"email", "phone"})


class Operation(StrEnum):
    #: Master data (``GET /patients/{id}``) and the care team.
    READ = "read"
    #: Changing master data (``PATCH /patients/{id}``).
    UPDATE = "update"
    #: Medical-record entries and lab results.
    READ_CLINICAL = "read_clinical"
    #: Adding a medical-record entry.
    WRITE_CLINICAL = "write_clinical"
    #: Putting a clinician on the care team, or ending a relationship.
    MANAGE_CARE_TEAM = "manage_care_team"
    #: Requesting emergency access (break-the-glass).
    BREAK_GLASS = "break_glass"
    #: Reading the emergency grants with their reasons (the review queue).
    OVERSEE_GRANTS = "oversee_grants"
    #: Deciding on an emergency grant in the review: reviewed or escalated (ADR 0030).
    REVIEW_GRANTS = "review_grants"
    #: Inviting the patient to link their record to their own account (portal invitation).
    INVITE = "invite"
    #: Finding patients by MRN, name or birth date, or listing them by id (a clinician sees a
    #: lookup of those outside their care: enough to recognise them and ask for emergency access).
    SEARCH = "search"


RULES: dict[Operation, Rule] = {
    Operation.READ: Rule.of(by_role=ROLE_BASED, with_care=CLINICIANS, owner=True),
    Operation.UPDATE: Rule.of(by_role=REGISTRARS, owner=True),
    Operation.READ_CLINICAL: Rule.of(with_care=CLINICIANS, owner=True),
    Operation.WRITE_CLINICAL: Rule.of(with_care=CLINICIANS),
    Operation.MANAGE_CARE_TEAM: Rule.of(by_role=REGISTRARS, purpose="administration"),
    Operation.BREAK_GLASS: Rule.of(by_role=CLINICIANS, purpose="emergency"),
    Operation.OVERSEE_GRANTS: Rule.of(by_role=(Role.ADMIN, Role.AUDITOR), purpose="oversight"),
    Operation.REVIEW_GRANTS: Rule.of(by_role=(Role.ADMIN,), purpose="review"),
    Operation.INVITE: Rule.of(by_role=REGISTRARS, purpose="portal_invitation"),
    Operation.SEARCH: Rule.of(by_role=ROLE_BASED | CLINICIANS),
}


def decide(op: Operation, roles: Iterable[str], rel: Relationship) -> Decision:
    """Whether a caller may perform ``op`` on one patient, and on what basis (for the audit)."""
    return _decide(RULES[op], roles, rel)


def not_found(op: Operation, roles: Iterable[str]) -> Decision:
    """The answer for a patient id that does not exist (403 to roles that never may)."""
    return unknown(RULES[op], roles)


def changing(decision: Decision, roles: Iterable[str], fields: Iterable[str]) -> Decision:
    """Registrars change any field; the patient themself only their e-mail and phone."""
    if decision.allowed and not frozenset(roles) & REGISTRARS and not frozenset(fields) <= SELF_SERVICE_FIELDS:
        return Decision(decision.purpose, Refusal.NOT_THEIRS)
    return decision


def assigning(decision: Decision, actor: uuid.UUID, clinician: uuid.UUID) -> Decision:
    """Putting a clinician on a care team: a registrar may, but never themself. An account that
    is both clinician and registrar would otherwise give itself care, unflagged; it asks another
    registrar, or requests emergency access (flagged, with a reason)."""
    if decision.allowed and actor == clinician:
        return Decision(decision.purpose, Refusal.NOT_THEIRS)
    return decision
