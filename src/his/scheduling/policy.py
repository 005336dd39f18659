"""Who may do what with a patient's appointments and waitlist entries: pure, no IO.

Every route of scheduling decides through ``decide`` (the shared rule of ``his.access``): the
patient books, reads, moves and cancels their own; reception and ADMIN act for every patient;
a clinician (DOCTOR, NURSE) reads a patient's appointments, checks in (NURSE) and completes them
only within a care relationship or under an emergency grant (an appointment gives its
practitioner care).

A practitioner's day list (every patient's appointments with them on one day) is staff work:
reception and ADMIN read it by role; a clinician reads in it the appointments of the patients in
their care or under an emergency grant, each decided as ``READ`` is (the practitioner's own
patients are in their care through the appointments); a patient never reads it, not even for a
day that holds their own appointment (they list their own by patient).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from his.access import CLINICIANS, Decision, Relationship, Role, Rule, unknown
from his.access import decide as _decide
from his.scheduling.domain import Action

BOOKERS = frozenset({Role.RECEPTIONIST, Role.ADMIN})


class Operation(StrEnum):
    BOOK = "book"
    READ = "read"
    RESCHEDULE = "reschedule"
    CANCEL = "cancel"
    CHECK_IN = "check_in"
    COMPLETE = "complete"
    NO_SHOW = "no_show"
    #: Join, read, accept an offer, withdraw.
    WAITLIST = "waitlist"
    #: Read a practitioner's appointments on one day, each patient's decided on its own.
    DAY_LIST = "day_list"


RULES: dict[Operation, Rule] = {
    Operation.BOOK: Rule.of(by_role=BOOKERS, owner=True),
    Operation.READ: Rule.of(by_role=BOOKERS, with_care=(Role.DOCTOR, Role.NURSE), owner=True),
    Operation.RESCHEDULE: Rule.of(by_role=BOOKERS, owner=True),
    Operation.CANCEL: Rule.of(by_role=BOOKERS, owner=True),
    Operation.CHECK_IN: Rule.of(by_role=BOOKERS, with_care=(Role.NURSE,)),
    Operation.COMPLETE: Rule.of(by_role=(Role.ADMIN,), with_care=(Role.DOCTOR, Role.NURSE)),
    Operation.NO_SHOW: Rule.of(by_role=BOOKERS),
    Operation.WAITLIST: Rule.of(by_role=BOOKERS, owner=True),
    Operation.DAY_LIST: Rule.of(by_role=BOOKERS, with_care=CLINICIANS),
}

#: The operation of each step of an appointment.
OF_ACTION: dict[Action, Operation] = {
    Action.CANCEL: Operation.CANCEL,
    Action.CHECK_IN: Operation.CHECK_IN,
    Action.COMPLETE: Operation.COMPLETE,
    Action.NO_SHOW: Operation.NO_SHOW,
}


def decide(op: Operation, roles: Iterable[str], rel: Relationship) -> Decision:
    """Whether a caller may perform ``op`` on one patient's appointments, and on what basis."""
    return _decide(RULES[op], roles, rel)


def not_found(op: Operation, roles: Iterable[str]) -> Decision:
    """The answer for an id that does not exist (403 to roles that never may)."""
    return unknown(RULES[op], roles)
