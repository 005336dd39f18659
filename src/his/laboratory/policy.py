"""Who may do what with a patient's lab orders and results: pure, no IO.

Every laboratory route decides through ``decide`` (the shared rule of ``his.access``). Lab
orders and their results are clinical data, read as the chart reads them: by the patient, and
by clinicians (DOCTOR, NURSE) within a care relationship or under an emergency grant; the lab's
technicians read every order by role (it is their work). ADMIN, whom the chart refuses clinical
data, reads no orders or results here either, but may cancel an order. A DOCTOR orders for a
patient in their care (or under a grant), and always reads and cancels the orders they placed;
a NURSE collects the specimen of a patient in their care.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from his.access import CARE, CLINICIANS, Basis, Decision, Refusal, Relationship, Role, Rule, unknown
from his.access import decide as _decide
from his.laboratory.domain import Action

TECHNICIANS = frozenset({Role.LAB_TECH})


class Operation(StrEnum):
    PLACE = "place"
    READ = "read"
    COLLECT = "collect"
    START = "start"
    RESULT = "result"
    CANCEL = "cancel"


RULES: dict[Operation, Rule] = {
    Operation.PLACE: Rule.of(with_care=(Role.DOCTOR,)),
    Operation.READ: Rule.of(by_role=TECHNICIANS, with_care=CLINICIANS, owner=True),
    Operation.COLLECT: Rule.of(by_role=TECHNICIANS, with_care=(Role.NURSE,)),
    Operation.START: Rule.of(by_role=TECHNICIANS),
    Operation.RESULT: Rule.of(by_role=TECHNICIANS),
    Operation.CANCEL: Rule.of(by_role=(*TECHNICIANS, Role.ADMIN)),
}

#: The operation of each step of an order.
OF_ACTION: dict[Action, Operation] = {
    Action.COLLECT: Operation.COLLECT,
    Action.START: Operation.START,
    Action.CANCEL: Operation.CANCEL,
}

#: What the doctor who placed an order may always do with it, whatever their care now.
ORDERING_DOCTOR = frozenset({Operation.READ, Operation.CANCEL})


def decide(op: Operation, roles: Iterable[str], rel: Relationship, *, placed_it: bool = False) -> Decision:
    """Whether a caller may perform ``op`` on one patient's lab order, and on what basis.

    ``placed_it``: the caller is the DOCTOR who placed the order in question.
    """
    held = frozenset(roles)
    ordering = Role.DOCTOR in held and op in ORDERING_DOCTOR
    if ordering and placed_it:
        return Decision(CARE, basis=Basis.CARE)
    decision = _decide(RULES[op], held, rel)
    if ordering and decision.refusal is Refusal.ROLE:  # a doctor may, on the orders they placed
        return Decision(decision.purpose, Refusal.NOT_THEIRS)
    return decision


def needs_relationship(op: Operation, roles: Iterable[str], *, placed_it: bool = False) -> bool:
    """Whether the decision depends on the caller's relationship to the patient."""
    held = frozenset(roles)
    if placed_it and Role.DOCTOR in held and op in ORDERING_DOCTOR:
        return False
    return RULES[op].needs_relationship(held)


def may_ever(op: Operation, roles: Iterable[str]) -> bool:
    """Whether these roles may perform ``op`` on some order (else: 403 whatever the id)."""
    held = frozenset(roles)
    return RULES[op].admits(held) or (Role.DOCTOR in held and op in ORDERING_DOCTOR)


def not_found(op: Operation, roles: Iterable[str]) -> Decision:
    """The answer for an id that does not exist (403 to roles that never may)."""
    if may_ever(op, roles):
        return Decision(RULES[op].purpose, Refusal.NOT_FOUND)
    return unknown(RULES[op], roles)


def lists_everything(roles: Iterable[str]) -> bool:
    """Whether the caller lists every patient's orders at once (the lab's technicians); a
    clinician without a patient lists the orders they placed."""
    return bool(frozenset(roles) & TECHNICIANS)
