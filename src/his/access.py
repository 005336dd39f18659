"""Who may act on a patient's data: the rule every service's access policy is made of.

Pure: no IO. Each service that holds a patient's data has a ``policy`` module: one ``Rule`` per
operation (who may, by role, by care, as the patient themself) and ``decide`` over it. A route
learns the caller's ``Relationship`` to the patient (patients from its own tables, every other
service from patients' ``GetCareBasis`` over gRPC), calls the policy, audits the ``Decision``
(allowed or denied) and answers with its status.

The care rule: a clinician (DOCTOR, NURSE) acts on a patient only within a care relationship or
under an emergency grant (break-the-glass, flagged in the audit log), never by role alone.

403 or 404, decided once for the whole system (docs/adr/0021-one-access-rule-403-or-404.md):

- A caller whose roles never allow the operation gets **403** whatever the id, existing or not:
  the answer tells nothing about the object.
- A caller whose roles allow it for some patients (their own record, those in their care) but
  not for this one gets **404**, exactly as for an id that does not exist, unless they may know
  that the object exists: staff (every role but PATIENT) work with every patient's records and
  get **403** (a clinician's 403 offers emergency access). A patient never learns that another
  patient's object exists.
- An id that does not exist is 404 (403 if the caller's roles never allow the operation).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from his.kernel.json import JsonLike


class Role(StrEnum):
    """The roles a user account holds (identity issues them in the access token). A member
    equals its name as a string, so a token's roles are compared with them as they come."""

    ADMIN = "ADMIN"
    RECEPTIONIST = "RECEPTIONIST"
    DOCTOR = "DOCTOR"
    NURSE = "NURSE"
    LAB_TECH = "LAB_TECH"
    BILLING = "BILLING"
    PATIENT = "PATIENT"
    AUDITOR = "AUDITOR"


#: Every role but PATIENT: people who work with every patient's records, so a refusal may tell
#: them an object exists (403 instead of 404).
STAFF = frozenset(Role) - {Role.PATIENT}
#: Roles that reach a patient only through a care relationship or an emergency grant.
CLINICIANS = frozenset({Role.DOCTOR, Role.NURSE})

#: Audit purposes of the three relationships (a rule names the purpose of access by role).
OWN_RECORD = "own_record"
CARE = "care"
EMERGENCY = "emergency"


@dataclass(frozen=True)
class Relationship:
    """What the caller is to one patient now."""

    #: The patient's own account (the record is linked to the caller).
    owner: bool = False
    #: An active care relationship: assigned, or from an appointment or admission.
    in_care: bool = False
    #: An active emergency grant: access on it is flagged in the audit log.
    emergency: bool = False


NONE = Relationship()


@dataclass(frozen=True)
class Rule:
    """Who may perform one operation on a patient's data."""

    #: Roles that may on every patient.
    by_role: frozenset[str] = frozenset()
    #: Roles that may only within a care relationship or under an emergency grant.
    with_care: frozenset[str] = frozenset()
    #: Whether the patient themself may (the account linked to the record).
    owner: bool = False
    #: The audit purpose of access by role.
    purpose: str = CARE

    @classmethod
    def of(
        cls, *, by_role: Iterable[str] = (), with_care: Iterable[str] = (), owner: bool = False, purpose: str = CARE
    ) -> Rule:
        return cls(frozenset(by_role), frozenset(with_care), owner, purpose)

    def admits(self, roles: Iterable[str]) -> bool:
        """Whether these roles allow the operation on some patient (else: 403 for every id)."""
        held = frozenset(roles)
        return self.owner or bool(held & (self.by_role | self.with_care))

    def needs_relationship(self, roles: Iterable[str]) -> bool:
        """Whether the decision depends on the caller's relationship to the patient, i.e. their
        roles do not settle it alone. A route asks patients only then (caller allowed by role are
        audited with the rule's purpose, even if they also happen to be in care or the patient)."""
        held = frozenset(roles)
        return self.admits(held) and not held & self.by_role


class Refusal(StrEnum):
    #: The caller's roles never allow the operation: 403 whatever the id.
    ROLE = "role"
    #: A clinician without a care relationship or emergency grant: 403 offering emergency access.
    CARE_REQUIRED = "care_relationship_required"
    #: Not theirs, and they may not know it exists: 404, as for an id that does not exist.
    NOT_FOUND = "not_found"
    #: Staff allowed the operation on some objects of the kind, but not on this one (a doctor
    #: cancels only the orders they placed; nobody assigns themself to a care team): 403.
    NOT_THEIRS = "not_theirs"


class Basis(StrEnum):
    """What an allowed decision rests on."""

    OWNER = "owner"
    CARE = "care"
    EMERGENCY = "emergency"
    ROLE = "role"


@dataclass(frozen=True)
class Decision:
    """Allowed (on a basis, with the purpose to audit) or refused (with why)."""

    purpose: str
    refusal: Refusal | None = None
    basis: Basis | None = None

    @property
    def allowed(self) -> bool:
        return self.refusal is None

    @property
    def outcome(self) -> Literal["allowed", "denied"]:
        return "allowed" if self.allowed else "denied"

    @property
    def status(self) -> int:
        """The HTTP status of the answer: 200 (or the route's own success), 403 or 404."""
        if self.refusal is None:
            return 200
        return 404 if self.refusal is Refusal.NOT_FOUND else 403

    @property
    def flagged(self) -> bool:
        """Access under an emergency grant: flagged in the audit log."""
        return self.allowed and self.purpose == EMERGENCY


def decide(rule: Rule, roles: Iterable[str], rel: Relationship = NONE) -> Decision:
    """Whether a caller with ``roles`` and relationship ``rel`` to the patient may, and on what basis.

    The patient themself first; then a clinician's care, then emergency (so that a clinician who
    also holds a role-based role acts on clinical data on such a basis, never through the other
    role); then the role alone. A refusal's status follows the module's 403/404 rule.
    """
    held = frozenset(roles)
    if rule.owner and rel.owner:
        return Decision(OWN_RECORD, basis=Basis.OWNER)
    if held & rule.with_care:
        if rel.in_care:
            return Decision(CARE, basis=Basis.CARE)
        if rel.emergency:
            return Decision(EMERGENCY, basis=Basis.EMERGENCY)
    if held & rule.by_role:
        return Decision(rule.purpose, basis=Basis.ROLE)
    return Decision(rule.purpose, _refusal(rule, held))


def unknown(rule: Rule, roles: Iterable[str]) -> Decision:
    """The answer for an id that does not exist: 404, or 403 to a caller whose roles never allow
    the operation (the same answer they get for one that exists)."""
    held = frozenset(roles)
    return Decision(rule.purpose, Refusal.NOT_FOUND if rule.admits(held) else Refusal.ROLE)


def _refusal(rule: Rule, held: frozenset[str]) -> Refusal:
    if not rule.admits(held):
        return Refusal.ROLE
    if not held & STAFF:
        return Refusal.NOT_FOUND
    if held & rule.with_care:
        return Refusal.CARE_REQUIRED
    return Refusal.ROLE  # staff whose roles do not reach it: only the patient themself could


# --- The answer to a refusal ---------------------------------------------------------------

CARE_REQUIRED_TYPE = "https://his.local/problems/care-relationship-required"
REASON_MIN = 20
REASON_MAX = 500


@dataclass(frozen=True)
class Problem:
    """A refusal as problem+json: status, detail and extra members."""

    status: int
    detail: str
    members: Mapping[str, JsonLike]


def refusal(
    decision: Decision, patient_id: uuid.UUID | None, *, what: str = "patient", emergency_minutes: float | None = None
) -> Problem:
    """The problem a refused caller gets. ``what`` names the object a 404 does not find; the
    patient's id (unknown only for an object that does not exist) goes into an offer of
    emergency access."""
    match decision.refusal:
        case Refusal.NOT_FOUND | None:
            return Problem(404, f"{what} not found", {})
        case Refusal.CARE_REQUIRED if patient_id is not None:
            offer: dict[str, JsonLike] = {
                "href": f"/api/patients/{patient_id}/emergency-access",
                "method": "POST",
                "requires": {"reason": f"why you need access now, {REASON_MIN} to {REASON_MAX} characters"},
                "notice": "emergency access is audited, flagged for review and reported to administrators",
            }
            if emergency_minutes is not None:
                offer["minutes"] = emergency_minutes
            return Problem(
                403,
                "a care relationship with this patient is required; in an emergency, request emergency access"
                f" at /api/patients/{patient_id}/emergency-access",
                {"type": CARE_REQUIRED_TYPE, "emergency_access": offer},
            )
        case Refusal.NOT_THEIRS:
            return Problem(403, f"not allowed on this {what}", {})
        case _:
            return Problem(403, "not allowed for your role", {})
