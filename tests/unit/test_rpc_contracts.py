"""gRPC wiring without servers: every method has an allowlist; a service serves gRPC only over mTLS."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from his.billing.api import grpc as billing_grpc
from his.kernel import rpc
from his.kernel.config import ServiceSettings
from his.kernel.pki import spiffe_id
from his.kernel.service import ServiceDefinition, rpc_identity
from his.patients.api import grpc as patients_grpc
from his.proto.patients.v1 import patients_pb2 as pb
from his.proto.patients.v1 import patients_pb2_grpc as pb_grpc

DIRECTORY = pb.DESCRIPTOR.services_by_name["PatientDirectory"]


def test_patients_allowlist_covers_every_method_and_keeps_contact_details_narrow() -> None:
    (service,) = patients_grpc.services(SimpleNamespace(db=None))  # type: ignore[arg-type]
    allow = service.allowlist()
    assert set(allow) == {f"/his.patients.v1.PatientDirectory/{m.name}" for m in DIRECTORY.methods}
    assert allow["/his.patients.v1.PatientDirectory/GetContactDetails"] == {spiffe_id("notifications")}
    assert spiffe_id("billing") in allow["/his.patients.v1.PatientDirectory/GetPatient"]
    assert spiffe_id("gateway") not in allow["/his.patients.v1.PatientDirectory/GetPatient"]
    assert allow["/his.patients.v1.PatientDirectory/GetCareBasis"] == {
        spiffe_id(s) for s in ("laboratory", "scheduling", "admissions", "inventory")
    }
    # An invitation's code goes only to the service that sends it to the patient.
    assert allow["/his.patients.v1.PatientDirectory/GetInvitation"] == {spiffe_id("notifications")}


def test_billing_terms_are_for_the_services_that_take_a_payer_or_a_price() -> None:
    (service,) = billing_grpc.services(SimpleNamespace(db=None))  # type: ignore[arg-type]
    assert service.allowlist() == {
        "/his.billing.v1.BillingTerms/GetTerms": {spiffe_id("patients"), spiffe_id("admissions")}
    }


def service_allowing(allow: dict[str, list[str]]) -> rpc.RpcService:
    return rpc.RpcService(DIRECTORY, object(), pb_grpc.add_PatientDirectoryServicer_to_server, allow)


def test_a_method_without_an_allowlist_is_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match="no allowlist for \\['GetContactDetails'\\]"):
        service_allowing({"GetPatient": [spiffe_id("billing")], "GetCareBasis": [], "GetInvitation": []}).allowlist()
    with pytest.raises(ValueError, match="not methods: \\['DeletePatient'\\]"):
        service_allowing(
            {"GetPatient": [], "GetContactDetails": [], "GetCareBasis": [], "GetInvitation": [], "DeletePatient": []}
        ).allowlist()
    with pytest.raises(ValueError, match="must be SPIFFE ids"):
        service_allowing(
            {"GetPatient": ["billing"], "GetContactDetails": [], "GetCareBasis": [], "GetInvitation": []}
        ).allowlist()


def settings(grpc_port: int | None = None) -> ServiceSettings:
    return ServiceSettings(_env_file=None, grpc_port=grpc_port)


def test_grpc_is_served_only_with_a_port_and_never_without_tls(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HIS_TLS_CERT", "HIS_TLS_KEY", "HIS_TLS_CA"):
        monkeypatch.delenv(var, raising=False)
    plain = ServiceDefinition(name="practitioners")
    offers = ServiceDefinition(name="patients", grpc_services=patients_grpc.services)
    assert rpc_identity(plain, settings(grpc_port=7001)) is None
    assert rpc_identity(offers, settings()) is None  # no port given: no listener (logged)
    with pytest.raises(SystemExit, match="HIS_TLS_CERT"):
        rpc_identity(offers, settings(grpc_port=7001))
    monkeypatch.setenv("HIS_TLS_CERT", "/pki/patients.crt")
    monkeypatch.setenv("HIS_TLS_KEY", "/pki/patients.key")
    monkeypatch.setenv("HIS_TLS_CA", "/pki/ca.crt")
    identity = rpc_identity(offers, settings(grpc_port=7001))
    assert identity is not None and str(identity.ca) == "/pki/ca.crt"


def test_other_services_are_found_through_their_grpc_target(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIS_PATIENTS_GRPC", "127.0.0.1:7001")
    monkeypatch.delenv("HIS_BILLING_GRPC", raising=False)
    assert settings().grpc_target("patients") == "127.0.0.1:7001"
    with pytest.raises(LookupError, match="HIS_BILLING_GRPC"):
        settings().grpc_target("billing")
