"""How to reach a patient: asked of patients over gRPC, remembered briefly.

Contact details are personal data, so they never travel on the bus and are not stored here:
they are fetched when a message is sent, through a short-lived cache (a minute by default), with
a deadline, retries and a circuit breaker. When patients does not answer, the delivery waits and
is tried again later; an address is never guessed. A portal invitation's code is asked the same
way when its message goes out, and is neither cached nor stored.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Protocol

from his.clients.patients import GrpcPatients
from his.kernel.pki import WorkloadIdentity
from his.notifications.domain import Contact


class ContactDirectory(Protocol):
    async def contact(self, patient_id: uuid.UUID) -> Contact | None:
        """The patient's contact details; None if there is no such patient.
        Raises ``DependencyUnavailableError`` when the directory does not answer."""
        ...

    async def invitation_code(self, invitation_id: uuid.UUID) -> str | None:
        """A portal invitation's code, to send it now; None if it can no longer be redeemed (or
        does not exist). Never cached: the code is secret and one invitation is sent once.
        Raises ``DependencyUnavailableError`` when the directory does not answer."""
        ...


class GrpcContacts:
    """Patients' directory (``his.clients.patients``), with contact details remembered ``ttl``
    seconds (at most ``size`` patients); invitation codes are asked each time."""

    def __init__(self, target: str, identity: WorkloadIdentity, *, ttl: float = 60.0, size: int = 10_000) -> None:
        self.directory = GrpcPatients(target, identity, timeout=2.0)
        self.ttl, self.size = ttl, size
        self._cache: dict[uuid.UUID, tuple[float, Contact | None]] = {}

    async def contact(self, patient_id: uuid.UUID) -> Contact | None:
        now = time.monotonic()
        hit = self._cache.get(patient_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        details = await self.directory.contact(patient_id)
        found = None if details is None else Contact(email=details.email, phone=details.phone, name=details.name)
        if len(self._cache) >= self.size:
            self._cache.clear()
        self._cache[patient_id] = (now + self.ttl, found)
        return found

    async def invitation_code(self, invitation_id: uuid.UUID) -> str | None:
        return await self.directory.invitation_code(invitation_id)


@dataclass
class FakeContacts:
    contacts: dict[uuid.UUID, Contact] = field(default_factory=dict)
    #: Codes of the invitations that can still be redeemed.
    invitations: dict[uuid.UUID, str] = field(default_factory=dict)
    down: bool = False

    def _answer(self) -> None:
        if self.down:
            from his.kernel.resilience import DependencyUnavailableError

            raise DependencyUnavailableError("patients", "told to be down")

    async def contact(self, patient_id: uuid.UUID) -> Contact | None:
        self._answer()
        return self.contacts.get(patient_id)

    async def invitation_code(self, invitation_id: uuid.UUID) -> str | None:
        self._answer()
        return self.invitations.get(invitation_id)
