"""Who may read "who saw this record": pure, no IO.

The trail of one patient's record is read by AUDITOR and ADMIN by role, and by the patient
themself (the shared rule of ``his.access``); clinicians and other staff are refused (403), another
patient is told the patient does not exist (404). The trail of an account (the changes made to it)
is read by AUDITOR and ADMIN only: every other caller is refused (403).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from his.access import Decision, Relationship, Role, Rule
from his.access import decide as _decide


class Operation(StrEnum):
    READ_TRAIL = "read_trail"
    READ_ACCOUNT_TRAIL = "read_account_trail"


RULES: dict[Operation, Rule] = {
    Operation.READ_TRAIL: Rule.of(by_role=(Role.AUDITOR, Role.ADMIN), owner=True, purpose="oversight"),
    Operation.READ_ACCOUNT_TRAIL: Rule.of(by_role=(Role.AUDITOR, Role.ADMIN), purpose="oversight"),
}


def decide(op: Operation, roles: Iterable[str], rel: Relationship) -> Decision:
    """Whether a caller may read one patient's (or account's) trail, and on what basis."""
    return _decide(RULES[op], roles, rel)
