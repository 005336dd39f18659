"""Every service's access policy as a table: operation × role × relationship → decision.

Each row is written out by hand from the rules in docs/adr/0021-one-access-rule-403-or-404.md
(not computed from the code it checks). The columns are the callers of ``SUBJECTS``; a cell is

- ``own`` / ``care`` / ``emg`` / ``role``: allowed, audited with purpose own_record, care,
  emergency, or the rule's purpose (by role);
- ``offer``: 403 offering emergency access (a clinician without care);
- ``403``: refused, 403 (by role, or staff refused this patient);
- ``404``: refused as an id that does not exist (a patient, for another patient's object).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from enum import StrEnum

import pytest

from his import access
from his.access import Basis, Decision, Refusal, Relationship, Rule
from his.admissions import policy as admissions
from his.audit import policy as audit
from his.billing import policy as billing
from his.inventory import policy as inventory
from his.laboratory import policy as laboratory
from his.notifications import policy as notifications
from his.patients import policy as patients
from his.scheduling import policy as scheduling

NONE = Relationship()
CARE = Relationship(in_care=True)
GRANT = Relationship(emergency=True)
SELF = Relationship(owner=True)

#: (label, roles, relationship to the patient)
SUBJECTS: list[tuple[str, frozenset[str], Relationship]] = [
    ("ADMIN", frozenset({"ADMIN"}), NONE),
    ("RECEPTIONIST", frozenset({"RECEPTIONIST"}), NONE),
    ("LAB_TECH", frozenset({"LAB_TECH"}), NONE),
    ("BILLING", frozenset({"BILLING"}), NONE),
    ("AUDITOR", frozenset({"AUDITOR"}), NONE),
    ("DOCTOR", frozenset({"DOCTOR"}), NONE),
    ("DOCTOR in care", frozenset({"DOCTOR"}), CARE),
    ("DOCTOR with a grant", frozenset({"DOCTOR"}), GRANT),
    ("NURSE", frozenset({"NURSE"}), NONE),
    ("NURSE in care", frozenset({"NURSE"}), CARE),
    ("NURSE with a grant", frozenset({"NURSE"}), GRANT),
    ("the patient", frozenset({"PATIENT"}), SELF),
    ("another patient", frozenset({"PATIENT"}), NONE),
    ("DOCTOR+RECEPTIONIST", frozenset({"DOCTOR", "RECEPTIONIST"}), NONE),
    ("DOCTOR+RECEPTIONIST in care", frozenset({"DOCTOR", "RECEPTIONIST"}), CARE),
]

# fmt: off
# Columns: ADMIN, RECEPTIONIST, LAB_TECH, BILLING, AUDITOR, DOCTOR (none, in care, with a grant),
# NURSE (none, in care, with a grant), the patient, another patient, DOCTOR+RECEPTIONIST (none, in care).
#         ADMIN RECEP LAB   BILL  AUDIT DOC   D+car D+grt NURSE N+car N+grt self  other D+R   D+R+care
TABLE: list[tuple[StrEnum, str]] = [
    (patients.Operation.READ,
        "role  role  role  role  403   offer care  emg   offer care  emg   own   404   role  care"),
    (patients.Operation.UPDATE,
        "role  role  403   403   403   403   403   403   403   403   403   own   404   role  role"),
    (patients.Operation.READ_CLINICAL,
        "403   403   403   403   403   offer care  emg   offer care  emg   own   404   offer care"),
    (patients.Operation.WRITE_CLINICAL,
        "403   403   403   403   403   offer care  emg   offer care  emg   403   403   offer care"),
    (patients.Operation.MANAGE_CARE_TEAM,
        "role  role  403   403   403   403   403   403   403   403   403   403   403   role  role"),
    (patients.Operation.BREAK_GLASS,
        "403   403   403   403   403   role  role  role  role  role  role  403   403   role  role"),
    (patients.Operation.INVITE,
        "role  role  403   403   403   403   403   403   403   403   403   403   403   role  role"),
    (patients.Operation.SEARCH,
        "role  role  role  role  403   role  role  role  role  role  role  403   403   role  role"),
    (patients.Operation.OVERSEE_GRANTS,
        "role  403   403   403   role  403   403   403   403   403   403   403   403   403   403"),
    (patients.Operation.REVIEW_GRANTS,
        "role  403   403   403   403   403   403   403   403   403   403   403   403   403   403"),
    (scheduling.Operation.BOOK,
        "role  role  403   403   403   403   403   403   403   403   403   own   404   role  role"),
    (scheduling.Operation.READ,
        "role  role  403   403   403   offer care  emg   offer care  emg   own   404   role  care"),
    (scheduling.Operation.RESCHEDULE,
        "role  role  403   403   403   403   403   403   403   403   403   own   404   role  role"),
    (scheduling.Operation.CANCEL,
        "role  role  403   403   403   403   403   403   403   403   403   own   404   role  role"),
    (scheduling.Operation.CHECK_IN,
        "role  role  403   403   403   403   403   403   offer care  emg   403   403   role  role"),
    (scheduling.Operation.COMPLETE,
        "role  403   403   403   403   offer care  emg   offer care  emg   403   403   offer care"),
    (scheduling.Operation.NO_SHOW,
        "role  role  403   403   403   403   403   403   403   403   403   403   403   role  role"),
    (scheduling.Operation.WAITLIST,
        "role  role  403   403   403   403   403   403   403   403   403   own   404   role  role"),
    (scheduling.Operation.DAY_LIST,
        "role  role  403   403   403   offer care  emg   offer care  emg   403   403   role  care"),
    (admissions.Operation.ADMIT,
        "role  role  403   403   403   403   403   403   403   403   403   403   403   role  role"),
    (admissions.Operation.READ,
        "role  role  403   403   403   offer care  emg   offer care  emg   403   403   role  care"),
    (admissions.Operation.READ_CHARGES,
        "role  role  403   role  403   offer care  emg   offer care  emg   403   403   role  care"),
    (admissions.Operation.TRANSFER,
        "role  role  403   403   403   offer care  emg   offer care  emg   403   403   role  care"),
    (admissions.Operation.DISCHARGE,
        "role  role  403   403   403   offer care  emg   offer care  emg   403   403   role  care"),
    (laboratory.Operation.PLACE,
        "403   403   403   403   403   offer care  emg   403   403   403   403   403   offer care"),
    (laboratory.Operation.READ,
        "403   403   role  403   403   offer care  emg   offer care  emg   own   404   offer care"),
    (laboratory.Operation.COLLECT,
        "403   403   role  403   403   403   403   403   offer care  emg   403   403   403   403"),
    (laboratory.Operation.START,
        "403   403   role  403   403   403   403   403   403   403   403   403   403   403   403"),
    (laboratory.Operation.RESULT,
        "403   403   role  403   403   403   403   403   403   403   403   403   403   403   403"),
    (laboratory.Operation.CANCEL,
        "role  403   role  403   403   403   403   403   403   403   403   403   403   403   403"),
    (inventory.Operation.CONSUME_FOR_PATIENT,
        "role  403   role  403   403   offer care  emg   offer care  emg   403   403   offer care"),
    (billing.Operation.READ_INVOICES,
        "role  403   403   role  403   403   403   403   403   403   403   own   404   403   403"),
    (billing.Operation.PAY,
        "403   403   403   role  403   403   403   403   403   403   403   403   403   403   403"),
    (billing.Operation.PAY_ONLINE,
        "403   403   403   403   403   403   403   403   403   403   403   own   404   403   403"),
    (billing.Operation.REFUND,
        "role  403   403   role  403   403   403   403   403   403   403   403   403   403   403"),
    (billing.Operation.ACCOUNTS,
        "role  403   403   role  403   403   403   403   403   403   403   403   403   403   403"),
    (notifications.Operation.READ_HISTORY,
        "role  403   403   403   403   403   403   403   403   403   403   own   404   403   403"),
    (notifications.Operation.PREFERENCES,
        "role  role  403   403   403   403   403   403   403   403   403   own   404   role  role"),
    (audit.Operation.READ_TRAIL,
        "role  403   403   403   role  403   403   403   403   403   403   own   404   403   403"),
    (audit.Operation.READ_ACCOUNT_TRAIL,
        "role  403   403   403   role  403   403   403   403   403   403   403   403   403   403"),
]
# fmt: on

Decide = Callable[[StrEnum, frozenset[str], Relationship], Decision]
POLICIES: dict[type[StrEnum], tuple[dict[object, Rule], Decide]] = {
    patients.Operation: (patients.RULES, patients.decide),  # type: ignore[dict-item]
    scheduling.Operation: (scheduling.RULES, scheduling.decide),  # type: ignore[dict-item]
    admissions.Operation: (admissions.RULES, admissions.decide),  # type: ignore[dict-item]
    laboratory.Operation: (laboratory.RULES, laboratory.decide),  # type: ignore[dict-item]
    inventory.Operation: (inventory.RULES, inventory.decide),  # type: ignore[dict-item]
    billing.Operation: (billing.RULES, billing.decide),  # type: ignore[dict-item]
    notifications.Operation: (notifications.RULES, notifications.decide),  # type: ignore[dict-item]
    audit.Operation: (audit.RULES, audit.decide),  # type: ignore[dict-item]
}


def cell(decision: Decision) -> str:
    """A decision in the table's words."""
    match decision.refusal:
        case None:
            assert decision.basis is not None
            return {Basis.OWNER: "own", Basis.CARE: "care", Basis.EMERGENCY: "emg", Basis.ROLE: "role"}[decision.basis]
        case Refusal.CARE_REQUIRED:
            return "offer"
        case Refusal.NOT_FOUND:
            return "404"
        case Refusal.ROLE | Refusal.NOT_THEIRS:
            return "403"


def test_every_operation_of_every_policy_is_in_the_table() -> None:
    listed = [(type(op), op) for op, _ in TABLE]
    assert len(set(listed)) == len(listed), "an operation has two rows"
    for kind, (rules, _) in POLICIES.items():
        missing = {op for op in kind if (kind, op) not in listed}
        assert not missing, f"operations without a row: {missing}"
        assert set(rules) == set(kind), f"{kind.__module__}: every operation has exactly one rule"


@pytest.mark.parametrize(
    ("op", "row"), TABLE, ids=[f"{type(op).__module__.split('.')[1]}.{op.value}" for op, _ in TABLE]
)
def test_the_policy_decides_as_the_table_says(op: StrEnum, row: str) -> None:
    _, decide = POLICIES[type(op)]
    expected = row.split()
    assert len(expected) == len(SUBJECTS)
    got = [cell(decide(op, roles, rel)) for _, roles, rel in SUBJECTS]
    wrong = [
        f"{label}: expected {e}, got {g}" for (label, _, _), e, g in zip(SUBJECTS, expected, got, strict=True) if e != g
    ]
    assert not wrong, "\n".join(wrong)


def test_by_role_care_is_audited_as_the_rule_says() -> None:
    """Allowed by role, a decision carries the rule's purpose (billing for money, care for
    appointments…); in care, always ``care``; under a grant, ``emergency`` and flagged."""
    assert billing.decide(billing.Operation.READ_INVOICES, {"BILLING"}, NONE).purpose == "billing"
    assert patients.decide(patients.Operation.MANAGE_CARE_TEAM, {"ADMIN"}, NONE).purpose == "administration"
    under_grant = scheduling.decide(scheduling.Operation.READ, {"NURSE"}, GRANT)
    assert under_grant.purpose == "emergency" and under_grant.flagged
    in_care = scheduling.decide(scheduling.Operation.READ, {"NURSE"}, Relationship(in_care=True, emergency=True))
    assert in_care.purpose == "care" and not in_care.flagged  # in care: an ordinary read, not flagged


def test_a_clinician_reaches_clinical_data_on_care_never_through_another_role() -> None:
    """An account that is both DOCTOR and ADMIN reads master data by role, but records only in care."""
    both = frozenset({"DOCTOR", "ADMIN"})
    assert patients.decide(patients.Operation.READ, both, NONE).allowed
    assert patients.decide(patients.Operation.READ_CLINICAL, both, NONE).refusal is Refusal.CARE_REQUIRED
    assert patients.decide(patients.Operation.READ_CLINICAL, both, CARE).purpose == "care"
    assert patients.decide(patients.Operation.READ, frozenset({"DOCTOR"}), SELF).purpose == "own_record"


# --- the 403/404 rule for ids that do not exist ----------------------------------------------


@pytest.mark.parametrize(
    ("rule", "roles", "status"),
    [
        (scheduling.RULES[scheduling.Operation.READ], {"PATIENT"}, 404),  # looks for their own: as any miss
        (scheduling.RULES[scheduling.Operation.READ], {"DOCTOR"}, 404),
        (scheduling.RULES[scheduling.Operation.CHECK_IN], {"PATIENT"}, 403),  # never may: 403 for every id
        (scheduling.RULES[scheduling.Operation.CHECK_IN], {"DOCTOR"}, 403),
        (admissions.RULES[admissions.Operation.DISCHARGE], {"PATIENT"}, 403),
        (admissions.RULES[admissions.Operation.DISCHARGE], {"NURSE"}, 404),
        (billing.RULES[billing.Operation.READ_INVOICES], {"DOCTOR"}, 404),  # might be the patient themself
        (billing.RULES[billing.Operation.REFUND], {"DOCTOR"}, 403),
    ],
)
def test_an_unknown_id_is_404_unless_the_roles_never_may(rule: Rule, roles: set[str], status: int) -> None:
    assert access.unknown(rule, roles).status == status


def test_an_existing_object_answers_as_an_unknown_one_to_whom_may_not_know_it() -> None:
    """For each rule and caller: a patient refused an existing object gets exactly the answer of
    an unknown id; a caller whose roles never may gets 403 for both."""
    for rules, decide in POLICIES.values():
        for op, rule in rules.items():
            for label, roles, rel in SUBJECTS:
                decision = decide(op, roles, rel)  # type: ignore[arg-type]
                if decision.allowed:
                    continue
                missing = access.unknown(rule, roles)
                if "PATIENT" in roles or not rule.admits(roles):
                    assert decision.status == missing.status, (op, label)


def test_laboratory_the_ordering_doctor_reads_and_cancels_their_orders() -> None:
    doctor = frozenset({"DOCTOR"})
    assert laboratory.decide(laboratory.Operation.READ, doctor, NONE, placed_it=True).allowed
    assert laboratory.decide(laboratory.Operation.CANCEL, doctor, NONE, placed_it=True).allowed
    other = laboratory.decide(laboratory.Operation.CANCEL, doctor, CARE)
    assert (other.status, other.refusal) == (403, Refusal.NOT_THEIRS)  # someone else's order
    assert not laboratory.decide(laboratory.Operation.COLLECT, doctor, NONE, placed_it=True).allowed
    assert laboratory.not_found(laboratory.Operation.CANCEL, doctor).status == 404
    assert laboratory.not_found(laboratory.Operation.START, doctor).status == 403
    assert not laboratory.needs_relationship(laboratory.Operation.READ, doctor, placed_it=True)


def test_patients_a_patient_changes_only_their_contact_details() -> None:
    own = patients.decide(patients.Operation.UPDATE, {"PATIENT"}, SELF)
    assert patients.changing(own, {"PATIENT"}, {"email", "phone"}).allowed
    assert patients.changing(own, {"PATIENT"}, {"email", "family_name"}).status == 403
    clerk = patients.decide(patients.Operation.UPDATE, {"RECEPTIONIST"}, NONE)
    assert patients.changing(clerk, {"RECEPTIONIST"}, {"family_name"}).allowed


def test_patients_no_one_puts_themself_on_a_care_team() -> None:
    """A DOCTOR+RECEPTIONIST account may assign other clinicians, never itself."""
    me, colleague = uuid.uuid4(), uuid.uuid4()
    both = frozenset({"DOCTOR", "RECEPTIONIST"})
    may = patients.decide(patients.Operation.MANAGE_CARE_TEAM, both, NONE)
    assert patients.assigning(may, me, colleague).allowed
    assert patients.assigning(may, me, me).status == 403
    refused = patients.decide(patients.Operation.MANAGE_CARE_TEAM, {"DOCTOR"}, NONE)
    assert patients.assigning(refused, me, me) == refused


def test_a_refusal_is_answered_as_the_rule_says() -> None:
    pid = uuid.uuid4()
    offer = access.refusal(Decision("care", Refusal.CARE_REQUIRED), pid, emergency_minutes=60)
    assert offer.status == 403 and offer.members["type"] == access.CARE_REQUIRED_TYPE
    emergency = offer.members["emergency_access"]
    assert isinstance(emergency, Mapping)
    assert emergency["href"] == f"/api/patients/{pid}/emergency-access"
    assert emergency["minutes"] == 60
    assert str(pid) in offer.detail
    hidden = access.refusal(Decision("care", Refusal.NOT_FOUND), pid, what="appointment")
    assert (hidden.status, hidden.detail, hidden.members) == (404, "appointment not found", {})
    assert str(pid) not in hidden.detail
    assert access.refusal(Decision("care", Refusal.ROLE), pid).status == 403
    assert access.refusal(Decision("care", Refusal.NOT_THEIRS), pid).status == 403
