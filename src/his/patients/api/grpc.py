"""gRPC API of the patients service: ``his.patients.v1.PatientDirectory`` for authorised services.

The caller is the service whose verified certificate opened the connection; each method admits
only the services listed in ``ALLOW`` (the kernel's interceptor enforces it). Every answer is a
PHI read and leaves an access record in the same transaction, with the calling service as actor
(the use cases of ``his.patients.directory``; this module only translates).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, TypeAlias

import grpc

from his.kernel import rpc
from his.kernel.pki import spiffe_id
from his.kernel.service import ServiceContext
from his.patients import invitations
from his.patients.directory import Directory
from his.patients.domain import InvitationCodes, Refusal
from his.patients.store import PatientsStore
from his.proto.patients.v1 import patients_pb2 as pb
from his.proto.patients.v1 import patients_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    Context: TypeAlias = grpc.aio.ServicerContext[object, object]


def _services(*names: str) -> frozenset[str]:
    return frozenset(spiffe_id(n) for n in names)


#: Who may call what. Contact details only go to the service that sends messages.
ALLOW = {
    "GetPatient": _services("scheduling", "admissions", "laboratory", "inventory", "billing", "notifications"),
    "GetContactDetails": _services("notifications"),
    "GetCareBasis": _services("laboratory", "scheduling", "admissions", "inventory"),
    # An invitation's code goes to the patient only, through the service that sends messages.
    "GetInvitation": _services("notifications"),
}


class PatientDirectory(pb_grpc.PatientDirectoryServicer):
    """Translates the directory's calls to its use cases (``his.patients.directory``)."""

    def __init__(self, directory: Directory) -> None:
        self.directory = directory

    async def GetPatient(self, request: pb.GetPatientRequest, context: Context) -> pb.Patient:
        """One patient's master data. INVALID_ARGUMENT for a malformed id, NOT_FOUND for an unknown one."""
        patient = await self.directory.patient(rpc.caller(), await _parse_id(request.patient_id, context))
        if patient is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "patient not found")
        coverage = patient.coverage
        return pb.Patient(
            id=str(patient.id),
            mrn=patient.mrn,
            given_name=patient.given_name,
            family_name=patient.family_name,
            birth_date=patient.birth_date.isoformat(),
            sex=f"SEX_{patient.sex.value.upper()}",
            user_id=str(patient.user_id) if patient.user_id else None,
            coverage=pb.Coverage(payer=coverage.payer, member_id=coverage.member_id) if coverage else None,
        )

    async def GetContactDetails(self, request: pb.GetContactDetailsRequest, context: Context) -> pb.ContactDetails:
        """How to reach a patient. INVALID_ARGUMENT for a malformed id, NOT_FOUND for an unknown one."""
        contact = await self.directory.contact(rpc.caller(), await _parse_id(request.patient_id, context))
        if contact is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "patient not found")
        # No separate preferred name is recorded yet: patients are addressed by their given name.
        return pb.ContactDetails(
            patient_id=str(contact.id), email=contact.email, phone=contact.phone, preferred_name=contact.given_name
        )

    async def GetCareBasis(self, request: pb.GetCareBasisRequest, context: Context) -> pb.CareBasis:
        """What a user is to a patient now: their own record, in care, under an emergency grant.
        No PHI leaves, so no access record: the caller audits the decision it makes on this basis."""
        patient_id = await _parse_id(request.patient_id, context)
        user_id = await _parse_id(request.user_id, context, "user_id")
        basis = await self.directory.care_basis(patient_id, user_id)
        if basis is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "patient not found")
        return pb.CareBasis(in_care=basis.in_care, emergency=basis.emergency, owner=basis.patient.user_id == user_id)

    async def GetInvitation(self, request: pb.GetInvitationRequest, context: Context) -> pb.Invitation:
        """An invitation's code, to send it: only while it can be redeemed (FAILED_PRECONDITION
        otherwise). The code is derived again from the stored digest's key; it is never stored."""
        invitation_id = await _parse_id(request.invitation_id, context, "invitation_id")
        if not self.directory.sends_invitations:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "invitations are not configured here")
        found = await self.directory.invitation(rpc.caller(), invitation_id)
        if found is Refusal.UNKNOWN:
            await context.abort(grpc.StatusCode.NOT_FOUND, "invitation not found")
        if not isinstance(found, invitations.Message):
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"the invitation cannot be redeemed: {found}")
        return pb.Invitation(
            invitation_id=str(found.invitation_id),
            patient_id=str(found.patient_id),
            channel=found.channel.value,
            code=found.code,
            expires_at=found.expires_at.isoformat(),
        )


async def _parse_id(text: str, context: Context, field: str = "patient_id") -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{field} must be a UUID")


def services(ctx: ServiceContext, codes: InvitationCodes | None = None) -> list[rpc.RpcService]:
    """What the patients process serves over gRPC, and to whom (``codes`` derive invitations' codes)."""
    return [
        rpc.RpcService(
            descriptor=pb.DESCRIPTOR.services_by_name["PatientDirectory"],
            servicer=PatientDirectory(Directory(PatientsStore(ctx.db), codes)),
            register=pb_grpc.add_PatientDirectoryServicer_to_server,
            allow=ALLOW,
        )
    ]
