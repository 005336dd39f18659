"""Who may do what with the practitioner directory, shifts and leave: pure, no IO.

The directory (profiles, specialties) is open to any signed-in user. ADMIN registers
practitioners. Shifts are given by ADMIN or the practitioner themself and seen by staff and the
practitioner; leave is requested and seen by the practitioner or ADMIN, decided by ADMIN, and
cancelled by either; availability is for staff, who book against it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from his.access import Role

STAFF = frozenset({Role.ADMIN, Role.RECEPTIONIST, Role.DOCTOR, Role.NURSE, Role.LAB_TECH, Role.BILLING})


class Operation(StrEnum):
    REGISTER = "register"
    ADD_SHIFT = "add_shift"
    READ_SHIFTS = "read_shifts"
    REQUEST_LEAVE = "request_leave"
    READ_LEAVE = "read_leave"
    DECIDE_LEAVE = "decide_leave"
    CANCEL_LEAVE = "cancel_leave"
    READ_AVAILABILITY = "read_availability"


@dataclass(frozen=True)
class Rule:
    #: Roles that may, on any practitioner.
    by_role: frozenset[str]
    #: Whether the practitioner themself may.
    themself: bool
    #: What a refused caller is told (``{action}``: the step they tried).
    refusal: str


RULES: dict[Operation, Rule] = {
    Operation.REGISTER: Rule(frozenset({Role.ADMIN}), False, "not allowed for your role"),
    Operation.ADD_SHIFT: Rule(frozenset({Role.ADMIN}), True, "only ADMIN or the practitioner may add shifts"),
    Operation.READ_SHIFTS: Rule(STAFF, True, "shifts are visible to staff only"),
    Operation.REQUEST_LEAVE: Rule(frozenset({Role.ADMIN}), True, "only the practitioner or ADMIN may request leave"),
    Operation.READ_LEAVE: Rule(
        frozenset({Role.ADMIN}), True, "leave requests are visible to the practitioner and ADMIN only"
    ),
    Operation.DECIDE_LEAVE: Rule(frozenset({Role.ADMIN}), False, "not allowed to {action} this leave request"),
    Operation.CANCEL_LEAVE: Rule(frozenset({Role.ADMIN}), True, "not allowed to {action} this leave request"),
    Operation.READ_AVAILABILITY: Rule(STAFF, False, "not allowed for your role"),
}


def may(op: Operation, roles: Iterable[str], *, themself: bool = False) -> bool:
    """Whether a caller with ``roles`` may perform ``op`` (``themself``: on their own profile)."""
    rule = RULES[op]
    return bool(rule.by_role & frozenset(roles)) or (rule.themself and themself)
