"""Use cases of the patient directory that other services ask over gRPC (``api/grpc.py``).

The caller is a service (its SPIFFE id, verified by mutual TLS), not a person. Every answer that
carries personal data is recorded as a read by that service, in the unit of work that read it;
a care basis carries none (the asking service records the decision it makes on it).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from his.events.audit import PatientsRecordAccessed, record_workload_access
from his.kernel.pki import service_of
from his.kernel.ports import Work
from his.patients import invitations
from his.patients.domain import ContactDetails, InvitationCodes, Patient, Refusal
from his.patients.ports import PatientsUnits


@dataclass(frozen=True)
class CareBasis:
    """What a user is to a patient now."""

    patient: Patient
    in_care: bool
    emergency: bool


class Directory:
    """The patient directory's reads for other services, over the patients' units of work."""

    def __init__(self, units: PatientsUnits, codes: InvitationCodes | None = None) -> None:
        self.units, self.codes = units, codes

    async def patient(self, caller: str, patient_id: uuid.UUID) -> Patient | None:
        """One patient's master data (None: no such patient), recorded as read by ``caller``."""
        async with self.units.uow() as uow:
            patient = await uow.patients.get(patient_id)
            if patient is not None:
                _record(uow, caller, patient_id, "patient")
        return patient

    async def contact(self, caller: str, patient_id: uuid.UUID) -> ContactDetails | None:
        """How to reach a patient (None: no such patient), recorded as read by ``caller``."""
        async with self.units.uow() as uow:
            contact = await uow.patients.contact(patient_id)
            if contact is not None:
                _record(uow, caller, patient_id, "patient/contact")
        return contact

    async def care_basis(self, patient_id: uuid.UUID, user_id: uuid.UUID) -> CareBasis | None:
        """What ``user_id`` is to the patient now (None: no such patient). Not recorded: no
        personal data leaves."""
        async with self.units.read() as unit:
            patient = await unit.patients.get(patient_id)
            if patient is None:
                return None
            in_care, emergency = await unit.care.basis(patient_id, user_id, unit.clock())
        return CareBasis(patient, in_care, emergency)

    @property
    def sends_invitations(self) -> bool:
        return self.codes is not None

    async def invitation(self, caller: str, invitation_id: uuid.UUID) -> invitations.Message | Refusal:
        """An invitation's code, to send it, while it can be redeemed (else why not), recorded as
        read by ``caller``. Only where invitations are configured (``sends_invitations``)."""
        if self.codes is None:
            raise RuntimeError("invitations are not configured here")
        async with self.units.uow() as uow:
            found = await invitations.message(uow.invitations, invitation_id, self.codes, uow.clock())
            if isinstance(found, invitations.Message):
                _record(uow, caller, found.patient_id, "patient/invitation")
        return found


def _record(uow: Work, caller: str, patient_id: uuid.UUID, resource: str) -> None:
    record_workload_access(
        uow,
        PatientsRecordAccessed,
        caller,
        patient_id=patient_id,
        action="read",
        resource=resource,
        # The calling service stands for the purpose: billing reads for billing, and so on.
        purpose=service_of(caller) or "workload",
    )
