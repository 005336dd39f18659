"""patients' gRPC API on real servers: mutual TLS, per-method allowlists, audit, deadlines, breaker.

The PatientDirectory servicer runs in a real gRPC server with certificates from a local CA, on
the patients schema of the real PostgreSQL (runtime role, real migrations); clients are real
gRPC channels holding other services' certificates.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import asyncpg
import grpc
import orjson
import pytest

from his.access import Relationship
from his.clients.patients import GrpcPatients, PatientRef
from his.events.audit import workload_actor_id
from his.infra.nats import free_port
from his.infra.procs import ManagedProcess
from his.kernel import migrations, rpc
from his.kernel.db import Database
from his.kernel.pki import LocalCA, WorkloadIdentity, spiffe_id
from his.kernel.resilience import (
    BreakerState,
    CircuitBreaker,
    CircuitOpenError,
    DependencyRefusedError,
    DependencyUnavailableError,
    RetryPolicy,
)
from his.notifications.contacts import GrpcContacts
from his.patients import handlers
from his.patients.api import grpc as patients_grpc
from his.patients.domain import CareSource, NewCareRelationship, NewPatient, Sex
from his.patients.store import PatientsStore
from his.proto.patients.v1 import patients_pb2 as pb
from his.proto.patients.v1 import patients_pb2_grpc as pb_grpc
from tests.conftest import NatsServer
from tests.support.waiting import wait_for

GET_CONTACT = "/his.patients.v1.PatientDirectory/GetContactDetails"


@dataclass
class Hospital:
    db: Database
    server: rpc.RpcServer
    target: str
    ca: LocalCA
    patient_id: uuid.UUID
    account: uuid.UUID

    def identity(self, service: str) -> WorkloadIdentity:
        return self.ca.issue(service, spiffe_id(service))

    def client(
        self, service: str, target: str | None = None, **kw: object
    ) -> tuple[rpc.RpcClient, pb_grpc.PatientDirectoryAsyncStub]:
        ch = rpc.channel(target or self.target, self.identity(service), max_reconnect_backoff=0.2)
        return rpc.RpcClient("patients", ch, **kw), pb_grpc.PatientDirectoryStub(ch)  # type: ignore[arg-type]


@pytest.fixture
async def hospital(admin_dsn: str, tmp_path: Path) -> AsyncIterator[Hospital]:
    dsn = await migrations.provision(admin_dsn, "patients", "pw-patients-rpc")
    await migrations.upgrade(admin_dsn, "patients")
    db = Database(dsn, schema="patients", min_size=1, max_size=8)
    await db.open()
    account = uuid.uuid4()
    async with PatientsStore(db).uow() as unit:
        patient = await handlers.register(
            unit,
            NewPatient(
                "Ayşe",
                "Yılmaz",
                date(1980, 5, 17),
                Sex.FEMALE,
                "ayse@example.org",
                "+90 555 123 4567",
                account,
                ("SGK", "12345678901"),
            ),
        )
    ca = LocalCA(tmp_path / "pki").ensure()
    server = rpc.RpcServer(ca.issue("patients", spiffe_id("patients")), patients_grpc.services(SimpleNamespace(db=db)))  # type: ignore[arg-type]
    port = await server.start()
    try:
        yield Hospital(db, server, f"127.0.0.1:{port}", ca, patient.id, account)
    finally:
        await server.stop(0)
        await db.close()


async def access_records(db: Database, patient_id: uuid.UUID) -> list[dict[str, object]]:
    rows = await db.pool.fetch(
        "SELECT payload FROM outbox WHERE subject = 'his.patients.record.accessed.v1' ORDER BY id"
    )
    found = [orjson.loads(r["payload"])["data"] for r in rows]
    return [d for d in found if d["patient_id"] == str(patient_id)]


async def test_notifications_reads_a_patient_and_contact_details_and_each_read_is_audited(hospital: Hospital) -> None:
    client, stub = hospital.client("notifications")
    pid = str(hospital.patient_id)

    patient = await client.call(stub.GetPatient, pb.GetPatientRequest(patient_id=pid), idempotent=True)
    assert (patient.id, patient.given_name, patient.family_name) == (pid, "Ayşe", "Yılmaz")
    assert patient.mrn.startswith("MRN-") and patient.birth_date == "1980-05-17" and patient.sex == pb.SEX_FEMALE
    assert patient.user_id == str(hospital.account)
    assert (patient.coverage.payer, patient.coverage.member_id) == ("SGK", "12345678901")

    contact = await client.call(stub.GetContactDetails, pb.GetContactDetailsRequest(patient_id=pid), idempotent=True)
    assert (contact.patient_id, contact.email, contact.phone) == (pid, "ayse@example.org", "+90 555 123 4567")
    assert contact.preferred_name == "Ayşe"

    records = await access_records(hospital.db, hospital.patient_id)
    assert [(r["resource"], r["action"], r["outcome"]) for r in records] == [
        ("patient", "read", "allowed"),
        ("patient/contact", "read", "allowed"),
    ]
    caller = spiffe_id("notifications")
    assert all(r["actor_id"] == str(workload_actor_id(caller)) and r["actor_roles"] == [caller] for r in records)
    assert all(r["purpose"] == "notifications" for r in records)
    await client.channel.close()


async def test_laboratory_learns_a_users_relationship_and_nothing_else(hospital: Hospital) -> None:
    """``GetCareBasis`` through the adapter laboratory uses: the patient themself, care,
    emergency or none; an unknown patient is an answer (None); callers off the allowlist are
    refused; no PHI, so no access record."""
    carer, glass, stranger = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    now = datetime.now(UTC)
    async with PatientsStore(hospital.db).uow() as unit:
        rel = NewCareRelationship(hospital.patient_id, carer, CareSource.ASSIGNMENT, now - timedelta(minutes=1))
        await unit.care.assign(rel, None, rel.valid_from)
        await unit.grants.add(
            patient_id=hospital.patient_id,
            user_id=glass,
            roles=["DOCTOR"],
            reason="unconscious on arrival, no history available",
            granted_at=now,
            expires_at=now + timedelta(minutes=30),
        )
    before = len(await access_records(hospital.db, hospital.patient_id))
    lab = GrpcPatients(hospital.target, hospital.identity("laboratory"))
    try:
        assert await lab.relationship(hospital.patient_id, carer) == Relationship(in_care=True)
        assert await lab.relationship(hospital.patient_id, glass) == Relationship(emergency=True)
        assert await lab.relationship(hospital.patient_id, stranger) == Relationship()
        assert await lab.relationship(hospital.patient_id, hospital.account) == Relationship(owner=True)
        assert await lab.relationship(uuid.uuid4(), carer) is None
    finally:
        await lab.client.channel.close()
    assert len(await access_records(hospital.db, hospital.patient_id)) == before
    billing = GrpcPatients(hospital.target, hospital.identity("billing"))
    try:
        with pytest.raises(DependencyRefusedError, match="PERMISSION_DENIED"):
            await billing.relationship(hospital.patient_id, carer)
    finally:
        await billing.client.channel.close()


async def test_a_refusal_is_the_same_error_through_every_adapter(hospital: Hospital) -> None:
    """Off a method's allowlist, each adapter of patients' directory raises ``DependencyRefusedError``
    (a 503 to a user; notifications' dispatcher waits and tries again), never the raw gRPC error
    that once crashed notifications or became a 500 in scheduling."""
    pid = hospital.patient_id
    billing = GrpcPatients(hospital.target, hospital.identity("billing"))
    contacts = GrpcContacts(hospital.target, hospital.identity("billing"))
    try:
        assert await billing.find(pid) == PatientRef(pid, hospital.account)  # billing may read master data
        for ask in (billing.contact(pid), billing.invitation_code(uuid.uuid4()), contacts.contact(pid)):
            with pytest.raises(DependencyRefusedError, match="PERMISSION_DENIED"):
                await ask
    finally:
        await billing.client.channel.close()
        await contacts.directory.client.channel.close()
    notifications = GrpcContacts(hospital.target, hospital.identity("notifications"))
    try:
        found = await notifications.contact(pid)
        assert found is not None and (found.email, found.name) == ("ayse@example.org", "Ayşe")
        assert await notifications.contact(uuid.uuid4()) is None
    finally:
        await notifications.directory.client.channel.close()


async def test_optional_fields_are_absent_not_empty(hospital: Hospital) -> None:
    async with PatientsStore(hospital.db).uow() as unit:
        bare = (await handlers.register(unit, NewPatient("Can", "Demir", date(1990, 1, 2), Sex.MALE))).id
    client, stub = hospital.client("notifications")
    patient = await client.call(stub.GetPatient, pb.GetPatientRequest(patient_id=str(bare)), idempotent=True)
    assert not patient.HasField("user_id") and not patient.HasField("coverage")
    contact = await client.call(
        stub.GetContactDetails, pb.GetContactDetailsRequest(patient_id=str(bare)), idempotent=True
    )
    assert not contact.HasField("email") and not contact.HasField("phone")
    await client.channel.close()


async def test_a_caller_not_on_the_allowlist_is_denied_and_nothing_is_read(hospital: Hospital) -> None:
    client, stub = hospital.client("billing")
    pid = str(hospital.patient_id)
    patient = await client.call(stub.GetPatient, pb.GetPatientRequest(patient_id=pid), idempotent=True)
    assert patient.id == pid  # billing may read master data ...
    with pytest.raises(grpc.aio.AioRpcError) as denied:  # ... but not contact details
        await client.call(stub.GetContactDetails, pb.GetContactDetailsRequest(patient_id=pid), idempotent=True)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert spiffe_id("billing") in str(denied.value.details()) and GET_CONTACT in str(denied.value.details())
    assert [r["resource"] for r in await access_records(hospital.db, hospital.patient_id)] == ["patient"]
    assert client.breaker is not None and client.breaker.state is BreakerState.CLOSED  # a refusal is an answer
    await client.channel.close()


async def test_a_method_missing_from_the_allowlist_is_denied_to_everyone(hospital: Hospital) -> None:
    await hospital.server.stop(0)
    hospital.server.allowlist.pop(GET_CONTACT)  # as if someone forgot to list it
    await hospital.server.start()
    client, stub = hospital.client("notifications")
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await stub.GetContactDetails(pb.GetContactDetailsRequest(patient_id=str(hospital.patient_id)), timeout=5)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    await client.channel.close()


async def call_with(hospital: Hospital, creds: grpc.ChannelCredentials) -> grpc.aio.AioRpcError:
    async with grpc.aio.secure_channel(hospital.target, creds) as ch:
        stub = pb_grpc.PatientDirectoryStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.GetPatient(pb.GetPatientRequest(patient_id=str(hospital.patient_id)), timeout=5)
    return refused.value


async def test_a_caller_without_a_client_certificate_is_refused(hospital: Hospital) -> None:
    ca = hospital.ca.ca_cert_path.read_bytes()
    refused = await call_with(hospital, grpc.ssl_channel_credentials(root_certificates=ca))
    assert refused.code() == grpc.StatusCode.UNAVAILABLE  # the TLS handshake fails: no call is made
    assert await access_records(hospital.db, hospital.patient_id) == []


async def test_a_certificate_from_another_ca_is_refused_whatever_it_claims(hospital: Hospital, tmp_path: Path) -> None:
    impostor = LocalCA(tmp_path / "other-ca").ensure().issue("notifications", spiffe_id("notifications"))
    cert, key, _ = impostor.read()
    ca = hospital.ca.ca_cert_path.read_bytes()  # it trusts our server, and presents its foreign certificate
    creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
    refused = await call_with(hospital, creds)
    assert refused.code() == grpc.StatusCode.UNAVAILABLE
    assert await access_records(hospital.db, hospital.patient_id) == []


async def test_unknown_and_malformed_ids_are_answers_not_outages(hospital: Hospital) -> None:
    client, stub = hospital.client("notifications")
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await client.call(stub.GetPatient, pb.GetPatientRequest(patient_id=str(uuid.uuid4())), idempotent=True)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    for bad in ("", "42", "not-a-uuid", "'; DROP TABLE patient; --"):
        with pytest.raises(grpc.aio.AioRpcError) as malformed:
            await client.call(stub.GetContactDetails, pb.GetContactDetailsRequest(patient_id=bad), idempotent=True)
        assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert client.breaker is not None and client.breaker.state is BreakerState.CLOSED
    await client.channel.close()


async def test_a_deadline_bounds_a_call_to_a_stuck_server(hospital: Hospital, admin_dsn: str) -> None:
    client, stub = hospital.client("notifications", timeout=0.3)
    request = pb.GetPatientRequest(patient_id=str(hospital.patient_id))
    await client.call(stub.GetPatient, request, idempotent=True)  # warm: connected
    blocker = await asyncpg.connect(admin_dsn)
    try:
        async with blocker.transaction():
            await blocker.execute("LOCK TABLE patients.patient IN ACCESS EXCLUSIVE MODE")  # reads now hang
            started = time.monotonic()
            with pytest.raises(DependencyUnavailableError) as stuck:
                await client.call(stub.GetPatient, request, idempotent=True)
            elapsed = time.monotonic() - started
    finally:
        await blocker.close()
    assert "DEADLINE_EXCEEDED" in str(stuck.value)
    assert 0.25 <= elapsed < 1.0
    patient = await client.call(stub.GetPatient, request, idempotent=True)  # the lock is gone: answers again
    assert patient.id == str(hospital.patient_id)
    await client.channel.close()


def state_of(breaker: CircuitBreaker) -> BreakerState:
    """The state read through a call: mypy would otherwise keep a narrowed ``breaker.state`` across the
    calls that change it."""
    return breaker.state


async def test_breaker_opens_when_the_server_is_down_fails_fast_and_recovers(hospital: Hospital) -> None:
    breaker = CircuitBreaker("patients", failure_threshold=3, reset_timeout=0.5)
    client, stub = hospital.client("notifications", breaker=breaker, retry=RetryPolicy(2, initial_backoff=0.01))
    request = pb.GetPatientRequest(patient_id=str(hospital.patient_id))
    await client.call(stub.GetPatient, request, idempotent=True)

    await hospital.server.stop(0)
    with pytest.raises(DependencyUnavailableError) as down:
        await client.call(stub.GetPatient, request, idempotent=True)
    assert "UNAVAILABLE" in str(down.value) and not isinstance(down.value, CircuitOpenError)
    while state_of(breaker) is BreakerState.CLOSED:  # each call made two attempts; the third failure opens it
        with pytest.raises(DependencyUnavailableError):
            await client.call(stub.GetPatient, request, idempotent=True)
    assert state_of(breaker) is BreakerState.OPEN

    started = time.monotonic()
    with pytest.raises(CircuitOpenError):
        await client.call(stub.GetPatient, request, idempotent=True)
    assert time.monotonic() - started < 0.05  # failed fast, without trying the network

    await hospital.server.start()  # back, on the same port

    async def answers() -> bool:
        try:
            await client.call(stub.GetPatient, request, idempotent=True)
        except DependencyUnavailableError:
            return False
        return True

    await wait_for(answers, timeout=10, every=0.1, what="the breaker to let a trial call through and close")
    assert state_of(breaker) is BreakerState.CLOSED
    await client.channel.close()


async def test_the_patients_process_serves_grpc_on_its_port_with_its_identity(
    hospital: Hospital, admin_dsn: str, nats_server: NatsServer, tmp_path: Path
) -> None:
    """The real service runner (uvloop, HTTP, relay) with HIS_GRPC_PORT and HIS_TLS_* set."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIS_")}
    env.update(hospital.identity("patients").env())
    env.update(
        HIS_SERVICE="patients",
        HIS_SERVICE_DATABASE_URL=hospital.db.dsn,
        HIS_SERVICE_NATS_URL=nats_server.url,
        HIS_HTTP_PORT=str(free_port()),
        HIS_GRPC_PORT=str(port),
        HIS_IDENTITY_URL="http://127.0.0.1:9",  # tokens are not used here
        HIS_BILLING_GRPC="127.0.0.1:9",  # nor payers (checked with billing only when a coverage is given)
        HIS_DATA_DIR=str(tmp_path / "data"),
    )
    proc = ManagedProcess.spawn("patients", [sys.executable, "-m", "his.patients"], env=env)
    client, stub = hospital.client("notifications", f"127.0.0.1:{port}", timeout=1.0)
    request = pb.GetContactDetailsRequest(patient_id=str(hospital.patient_id))
    try:

        async def answers() -> bool:
            assert proc.poll() is None, f"patients exited: {proc.tail()}"
            try:
                contact = await client.call(stub.GetContactDetails, request, idempotent=True)
            except DependencyUnavailableError:
                return False
            return contact.email == "ayse@example.org"

        await wait_for(answers, timeout=30, what="the patients process to answer over gRPC")
    finally:
        await client.channel.close()
        assert proc.stop() == 0, proc.tail()
