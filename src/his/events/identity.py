"""Events published by the identity service."""

from __future__ import annotations

import uuid

from his.kernel.events import Event, event


@event
class UserRegistered(Event):
    """A user account was created (self-registration or by an administrator)."""

    type = "his.identity.user.registered.v1"
    user_id: uuid.UUID
    roles: list[str]
    created_by: uuid.UUID | None = None
