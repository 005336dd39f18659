"""Composition root of the laboratory service."""

from __future__ import annotations

from typing import TYPE_CHECKING

from his.kernel.service import ServiceContext, ServiceDefinition
from his.kernel.web import Routes

if TYPE_CHECKING:
    from his.clients.patients import PatientLookup
    from his.kernel.db import Database
    from his.kernel.sealing import Seal
    from his.laboratory.ports import LabUnits


def http(db: Database, patients: PatientLookup, seal: Seal) -> Routes:
    """The laboratory's routes and their use cases, over a database and a patient directory
    (the gRPC adapter here, the in-memory fake in tests), sealing results' content with ``seal``."""
    from his.laboratory.store import LabStore

    return http_over(LabStore(db), patients, seal)


def http_over(units: LabUnits, patients: PatientLookup, seal: Seal) -> Routes:
    """The same routes over any units of work: the database's, or the in-memory ones of
    ``his.testing.laboratory`` in unit tests."""
    from his.laboratory.api.http import router
    from his.laboratory.handlers import Laboratory

    return Routes(router, provides=[Laboratory(units, patients, seal)])


def routes(ctx: ServiceContext) -> Routes:
    from his.clients.patients import GrpcPatients
    from his.events.laboratory import lab_seal

    seal = lab_seal()
    identity = ctx.settings.workload()
    if identity is None:
        raise SystemExit("laboratory needs a workload identity (HIS_TLS_*) to reach patients")
    return http(ctx.db, GrpcPatients(ctx.settings.grpc_target("patients"), identity), seal)


def build() -> ServiceDefinition:
    import his.events  # noqa: F401 - registers the event models
    from his.clients import replica
    from his.clients.laboratory import RESULTS_PATH
    from his.events.audit import batch_accesses
    from his.events.laboratory import lab_seal
    from his.kernel.callers import Callers
    from his.kernel.pki import spiffe_id

    return ServiceDefinition(
        name="laboratory",
        requires=lambda: lab_seal().require("laboratory"),  # results' content is sealed (ADR 0032)
        # Patients asks for a resulted order's values, which the bus does not carry (ADR 0032).
        callers=Callers.of(paths={RESULTS_PATH: [spiffe_id("patients")]}),
        combine_reads=batch_accesses,
        subscriptions=(
            *replica.subscriptions("laboratory"),  # the patient directory's replica (his.clients.replica)
        ),
        routes=routes,
        description="Test catalogue with prices, lab orders and their results.",
    )
