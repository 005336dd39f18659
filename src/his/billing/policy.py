"""Who may see and move a patient's money: pure, no IO.

Every billing route that reaches a patient decides through ``decide`` (the shared rule of
``his.access``): BILLING and ADMIN by role; the patient themself reads their own invoices and
pays them online (through the payment provider: money a patient says they paid is not money
received); BILLING records payments taken at a desk. Clinicians have no part in billing, in care
or not.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from his.access import Decision, Relationship, Role, Rule, unknown
from his.access import decide as _decide

STAFF = frozenset({Role.BILLING, Role.ADMIN})


class Operation(StrEnum):
    #: A patient's invoices, one invoice, its payments.
    READ_INVOICES = "read_invoices"
    #: Record a payment taken at a desk (cash, card at the desk's terminal, bank transfer).
    PAY = "pay"
    #: Open an online payment of one's own invoice with the payment provider.
    PAY_ONLINE = "pay_online"
    #: Record a refund.
    REFUND = "refund"
    #: A patient's charges, claims and their steps.
    ACCOUNTS = "accounts"


RULES: dict[Operation, Rule] = {
    Operation.READ_INVOICES: Rule.of(by_role=STAFF, owner=True, purpose="billing"),
    Operation.PAY: Rule.of(by_role=(Role.BILLING,), purpose="billing"),
    Operation.PAY_ONLINE: Rule.of(owner=True, purpose="billing"),
    Operation.REFUND: Rule.of(by_role=STAFF, purpose="billing"),
    Operation.ACCOUNTS: Rule.of(by_role=STAFF, purpose="billing"),
}


def decide(op: Operation, roles: Iterable[str], rel: Relationship) -> Decision:
    """Whether a caller may perform ``op`` on one patient's billing, and on what basis."""
    return _decide(RULES[op], roles, rel)


def not_found(op: Operation, roles: Iterable[str]) -> Decision:
    """The answer for an id that does not exist (403 to roles that never may)."""
    return unknown(RULES[op], roles)
