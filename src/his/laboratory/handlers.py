"""Use cases of the laboratory service: one function per command or consumed event.

The patient look-up (patients over gRPC) happens before the transaction opens, so no
transaction waits on the network. State changes lock the order's row, so two technicians acting
on one order at once are serialised and the second sees the state the first left.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from his.clients import replica
from his.clients.patients import PatientLookup, PatientRef
from his.events.laboratory import LabCharge, LabOrderCancelled, LabOrderPlaced, LabOrderResulted, ResultItem
from his.kernel.db import Database, UnitOfWork
from his.laboratory import store
from his.laboratory.domain import (
    Action,
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


class UnknownError(LookupError):
    """A patient or order that does not exist."""


async def patient(db: Database, lookup: PatientLookup, patient_id: uuid.UUID) -> PatientRef:
    """A patient known from patients' events, else asked of patients (authoritative)."""
    ref = await replica.resolve(db, lookup, patient_id)
    if ref is None:
        raise UnknownError("patient not found")
    return ref


async def place(
    uow: UnitOfWork, ref: PatientRef, tests: Sequence[str], priority: Priority, doctor: uuid.UUID
) -> dict[str, Any]:
    """Place an order for a known patient; publishes ``LabOrderPlaced``."""
    codes = check_order(tests, await store.catalogue(uow.conn))
    await replica.remember(uow.conn, ref.patient_id, ref.account_id)
    oid = uuid.uuid4()
    row = {"id": oid, "patient_id": ref.patient_id, "ordered_by": doctor, "priority": priority.value}
    saved = await store.insert_order(uow.conn, row, codes)
    uow.add(
        LabOrderPlaced(
            order_id=oid,
            patient_id=ref.patient_id,
            ordered_by=doctor,
            tests=codes,
            priority=priority.value,
            placed_at=saved["placed_at"],
        ),
        aggregate_id=oid,
        aggregate_version=saved["version"],
    )
    return saved


async def locked(uow: UnitOfWork, order_id: uuid.UUID) -> dict[str, Any]:
    row = await store.get_order(uow.conn, order_id, lock=True)
    if row is None:
        raise UnknownError("order not found")
    return row


async def act(uow: UnitOfWork, order: dict[str, Any], action: Action, actor: uuid.UUID) -> dict[str, Any]:
    """Collect, start or cancel a (locked) order; cancelling publishes ``LabOrderCancelled``."""
    after = transition(Status(order["status"]), action)
    row = await store.set_status(uow.conn, order["id"], after, actor, uow.clock())
    if after is Status.CANCELLED:
        uow.add(
            LabOrderCancelled(order_id=row["id"], patient_id=row["patient_id"], cancelled_at=row["cancelled_at"]),
            aggregate_id=row["id"],
            aggregate_version=row["version"],
        )
    return row | {"tests": order["tests"]}


async def result(
    uow: UnitOfWork, order: dict[str, Any], submitted: Sequence[Submitted], actor: uuid.UUID
) -> tuple[dict[str, Any], LabOrderResulted]:
    """Store the results of a (locked) in-progress order and publish ``LabOrderResulted`` with the
    catalogue prices of its tests as charges."""
    check_can_result(Status(order["status"]))
    catalogue = await store.catalogue(uow.conn)
    results = check_results(submitted, order["tests"], catalogue)
    at = uow.clock()
    await store.insert_results(uow.conn, order["id"], results, catalogue, at)
    row = await store.set_status(uow.conn, order["id"], Status.RESULTED, actor, at)
    ev = LabOrderResulted(
        order_id=row["id"],
        patient_id=row["patient_id"],
        ordered_by=row["ordered_by"],
        priority=row["priority"],
        resulted_at=at,
        results=[
            ResultItem(
                code=r.code,
                value=r.value,
                unit=r.unit,
                reference_low=r.reference_low,
                reference_high=r.reference_high,
                flag=r.flag.value,
            )
            for r in results
        ],
        charges=[
            LabCharge(code=r.code, amount=catalogue[r.code].price, currency=catalogue[r.code].currency) for r in results
        ],
        abnormal=is_abnormal(results),
        critical=is_critical(results),
    )
    uow.add(ev, aggregate_id=row["id"], aggregate_version=row["version"])
    return row | {"tests": order["tests"]}, ev
