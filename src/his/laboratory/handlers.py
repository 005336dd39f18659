"""Use cases of the laboratory service: one method per command or query, each with its caller.

Each use case decides through ``his.laboratory.policy``, opens its own unit of work, records the
decision in the access log (allowed or denied), and returns the order as the domain's ``Order``.
A refusal is audited before it is raised. The patient look-up (patients over gRPC) happens
before the transaction opens, so no transaction waits on the network. State changes lock the
order's row, so two technicians acting on one order at once are serialised and the second sees
the state the first left.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace

from his.access import CARE, CLINICIANS, NONE, Basis, Decision, Relationship
from his.clients import replica
from his.clients.audited import AccessLog
from his.clients.patients import PatientLookup, PatientRef, refused, relationship_for
from his.events.audit import Action as AuditAction
from his.events.audit import LaboratoryRecordAccessed
from his.events.laboratory import (
    LabCharge,
    LabOrderCancelled,
    LabOrderPlaced,
    LabOrderResulted,
    LabResultContent,
    ResultFlag,
)
from his.kernel.problems import ProblemError
from his.kernel.sealing import Seal
from his.kernel.security import Principal
from his.laboratory import policy
from his.laboratory.domain import (
    Action,
    InvalidOrderError,
    InvalidResultError,
    InvalidTransitionError,
    LabTest,
    Order,
    Priority,
    Status,
    Submitted,
    check_can_result,
    check_order,
    check_results,
    is_abnormal,
    is_critical,
    transition,
)
from his.laboratory.policy import Operation
from his.laboratory.ports import LabUnits, LabWork

RESULTS = "lab_order/result"


@dataclass(frozen=True)
class PlaceOrder:
    patient_id: uuid.UUID
    tests: Sequence[str]
    priority: Priority = Priority.ROUTINE


@dataclass(frozen=True)
class FindOrders:
    patient_id: uuid.UUID | None = None
    status: Status | None = None
    limit: int = 50


class Laboratory:
    """The laboratory's use cases over its database and the patient directory; ``seal`` seals a
    result's content for its consumers (``his.events.laboratory``)."""

    def __init__(self, units: LabUnits, patients: PatientLookup, seal: Seal) -> None:
        self.units, self.patients, self.seal = units, patients, seal
        self.log = AccessLog(units, LaboratoryRecordAccessed, "lab_order")

    async def catalogue(self) -> list[LabTest]:
        """The active tests, by code (not patient data: not audited)."""
        async with self.units.read() as unit:
            return list((await unit.orders.catalogue()).values())

    async def place(self, who: Principal, cmd: PlaceOrder) -> Order:
        """Order tests for a patient (the caller is the ordering doctor); publishes ``LabOrderPlaced``.
        422 for an unknown patient or unknown or repeated test codes."""
        if not policy.may_ever(Operation.PLACE, who.roles):
            decision = policy.decide(Operation.PLACE, who.roles, NONE)
            raise await self.log.refuse(who, cmd.patient_id, decision, "create")
        ref = await self.known(cmd.patient_id)
        if ref is None:
            raise ProblemError(422, "unknown patient_id")
        decision = await self.decide(who, Operation.PLACE, cmd.patient_id, "patient")
        if not decision.allowed:
            raise await self.log.refuse(who, cmd.patient_id, decision, "create")
        try:
            async with self.units.uow() as uow:
                order = await place(uow, ref, cmd.tests, cmd.priority, uuid.UUID(who.subject))
                self.log.record(uow, who, ref.patient_id, "create", decision)
        except InvalidOrderError as exc:
            raise ProblemError(422, str(exc)) from None
        return order

    async def orders(self, who: Principal, query: FindOrders) -> list[Order]:
        """Orders, newest first. A technician lists every order; a clinician one patient's in
        their care, or without a patient the orders they placed; a patient their own."""
        ordered_by: uuid.UUID | None = None
        if query.patient_id is not None:
            decision = await self.decide(who, Operation.READ, query.patient_id, "patient")
            if not decision.allowed:
                raise await self.log.refuse(who, query.patient_id, decision, "read")
        elif policy.lists_everything(who.roles):
            decision = policy.decide(Operation.READ, who.roles, NONE)
        elif who.has_any(*CLINICIANS):
            decision, ordered_by = Decision(CARE, basis=Basis.CARE), uuid.UUID(who.subject)
        else:
            raise ProblemError(403, "not allowed for your role: a patient lists their own orders with patient_id")
        async with self.units.read() as uow:
            found = await uow.orders.find(
                patient_id=query.patient_id, status=query.status, limit=query.limit, ordered_by=ordered_by
            )
            seen = [query.patient_id] if query.patient_id else list(dict.fromkeys(o.patient_id for o in found))
            for pid in seen:
                self.log.record(uow, who, pid, "read", decision)
        return found

    async def order(self, who: Principal, order_id: uuid.UUID) -> Order:
        """One order with its results, to whoever may read it."""
        order, decision = await self.opened(who, order_id, Operation.READ, "read")
        async with self.units.read() as uow:
            [order] = await uow.orders.with_results([order])
            self.log.record(uow, who, order.patient_id, "read", decision)
        return order

    async def released(self, order_id: uuid.UUID) -> Order:
        """A resulted order with its results, for the patients service, which copies them into the
        chart when ``LabOrderResulted`` (ids, codes and flags only) arrives: the values never
        travel on the bus (ADR 0032). No user asks: the listener admits only patients'
        certificate on this route. 404 for an unknown order, 409 for one not resulted."""
        async with self.units.read() as unit:
            order = await unit.orders.get(order_id)
            if order is None:
                raise ProblemError(404, "no such order")
            if order.status is not Status.RESULTED:
                raise ProblemError(409, f"the order is {order.status.value}, not resulted", state=order.status.value)
            [order] = await unit.orders.with_results([order])
        return order

    async def enter_results(self, who: Principal, order_id: uuid.UUID, submitted: Sequence[Submitted]) -> Order:
        """Result an in-progress order; publishes ``LabOrderResulted`` with the tests' prices.
        409 unless the order is in progress, 422 for results that break a rule."""
        _, decision = await self.opened(who, order_id, Operation.RESULT, "create", RESULTS)
        try:
            async with self.units.uow() as uow:
                order, _ = await result(uow, await locked(uow, order_id), submitted, uuid.UUID(who.subject), self.seal)
                self.log.record(uow, who, order.patient_id, "create", decision, resource=RESULTS)
        except InvalidTransitionError as exc:
            raise refused_step(exc) from None
        except InvalidResultError as exc:
            raise ProblemError(422, str(exc)) from None
        return order

    async def act(self, who: Principal, order_id: uuid.UUID, action: Action) -> Order:
        """Collect, start or cancel an order; 409 naming the state when its state does not allow it."""
        _, decision = await self.opened(who, order_id, policy.OF_ACTION[action], "update")
        try:
            async with self.units.uow() as uow:
                order = await act(uow, await locked(uow, order_id), action, uuid.UUID(who.subject))
                self.log.record(uow, who, order.patient_id, "update", decision)
        except InvalidTransitionError as exc:
            raise refused_step(exc) from None
        return order

    async def known(self, patient_id: uuid.UUID) -> PatientRef | None:
        """A patient known from patients' events, else asked of patients (authoritative)."""
        return await replica.known(self.units, self.patients, patient_id)

    async def decide(
        self, who: Principal, op: Operation, patient_id: uuid.UUID, what: str, *, placed_it: bool = False
    ) -> Decision:
        """The policy's decision on ``op`` for the caller and this patient (not yet recorded)."""
        rel: Relationship | None = NONE
        if policy.needs_relationship(op, who.roles, placed_it=placed_it):
            rel = await relationship_for(self.patients, policy.RULES[op], patient_id, who, self.known)
        if rel is None:
            raise refused(policy.not_found(op, who.roles), patient_id, what)
        return policy.decide(op, who.roles, rel, placed_it=placed_it)

    async def opened(
        self, who: Principal, order_id: uuid.UUID, op: Operation, action: AuditAction, resource: str | None = None
    ) -> tuple[Order, Decision]:
        """The order and the policy's decision on ``op``; a refusal is recorded and raised."""
        async with self.units.read() as unit:
            order = await unit.orders.get(order_id)

        async def decide(o: Order) -> Decision:
            return await self.decide(who, op, o.patient_id, "order", placed_it=str(o.ordered_by) == who.subject)

        missing = policy.not_found(op, who.roles)
        return await self.log.admit(who, order, decide, missing=missing, action=action, resource=resource, what="order")


def refused_step(exc: InvalidTransitionError) -> ProblemError:
    return ProblemError(409, str(exc), state=exc.status.value)


async def place(uow: LabWork, ref: PatientRef, tests: Sequence[str], priority: Priority, doctor: uuid.UUID) -> Order:
    """Place an order for a known patient; publishes ``LabOrderPlaced``."""
    codes = check_order(tests, await uow.orders.catalogue())
    await uow.patients.remember(ref.patient_id, ref.account_id)
    order = await uow.orders.add(
        order_id=uuid.uuid4(),
        patient_id=ref.patient_id,
        ordered_by=doctor,
        priority=priority,
        tests=codes,
        at=uow.clock(),
    )
    uow.add(
        LabOrderPlaced(
            order_id=order.id,
            patient_id=order.patient_id,
            ordered_by=doctor,  # not the tests: they stay here (ADR 0032)
            priority=priority.value,
            placed_at=order.placed_at,
        ),
        aggregate_id=order.id,
        aggregate_version=order.version,
    )
    return order


async def locked(uow: LabWork, order_id: uuid.UUID) -> Order:
    order = await uow.orders.get(order_id, lock=True)
    if order is None:  # it existed when the caller's access was decided; orders are never deleted
        raise ProblemError(404, "order not found")
    return order


async def act(uow: LabWork, order: Order, action: Action, actor: uuid.UUID) -> Order:
    """Collect, start or cancel a (locked) order; cancelling publishes ``LabOrderCancelled``."""
    after = transition(order.status, action)
    changed = await uow.orders.set_status(order, after, actor, uow.clock())
    if after is Status.CANCELLED:
        assert changed.cancelled_at is not None
        uow.add(
            LabOrderCancelled(order_id=changed.id, patient_id=changed.patient_id, cancelled_at=changed.cancelled_at),
            aggregate_id=changed.id,
            aggregate_version=changed.version,
        )
    return changed


async def result(
    uow: LabWork, order: Order, submitted: Sequence[Submitted], actor: uuid.UUID, seal: Seal
) -> tuple[Order, LabOrderResulted]:
    """Store the results of a (locked) in-progress order and publish ``LabOrderResulted`` with the
    catalogue prices of its tests as charges, codes, flags and charges sealed (ADR 0032)."""
    check_can_result(order.status)
    catalogue = await uow.orders.catalogue()
    results = check_results(submitted, order.tests, catalogue)
    at = uow.clock()
    await uow.orders.add_results(order.id, results, catalogue, at)
    changed = await uow.orders.set_status(order, Status.RESULTED, actor, at)
    content = LabResultContent(
        results=[ResultFlag(code=r.code, flag=r.flag.value) for r in results],  # never the value (ADR 0032)
        charges=[
            LabCharge(code=r.code, amount=catalogue[r.code].price, currency=catalogue[r.code].currency) for r in results
        ],
        abnormal=is_abnormal(results),
        critical=is_critical(results),
    )
    ev = LabOrderResulted.sealing(
        seal,
        content,
        order_id=changed.id,
        patient_id=changed.patient_id,
        ordered_by=changed.ordered_by,
        priority=changed.priority.value,
        resulted_at=at,
    )
    uow.add(ev, aggregate_id=changed.id, aggregate_version=changed.version)
    return replace(changed, results=tuple(results)), ev
