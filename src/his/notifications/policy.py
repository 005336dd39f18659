"""Who may see a patient's messages and choose how they are reached: pure, no IO.

Every notifications route that reaches a patient decides through ``decide`` (the shared rule of
``his.access``): the patient themself; ADMIN reads the delivery history; reception and ADMIN set
a patient's preferences. Clinicians have no part in it, in care or not.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from his.access import Decision, Relationship, Role, Rule
from his.access import decide as _decide


class Operation(StrEnum):
    #: A patient's delivery history.
    READ_HISTORY = "read_history"
    #: Read or set how a patient wants to hear from the hospital.
    PREFERENCES = "preferences"


RULES: dict[Operation, Rule] = {
    Operation.READ_HISTORY: Rule.of(by_role=(Role.ADMIN,), owner=True, purpose="administration"),
    Operation.PREFERENCES: Rule.of(by_role=(Role.RECEPTIONIST, Role.ADMIN), owner=True),
}


def decide(op: Operation, roles: Iterable[str], rel: Relationship) -> Decision:
    """Whether a caller may perform ``op`` for one patient, and on what basis (for the audit)."""
    return _decide(RULES[op], roles, rel)
