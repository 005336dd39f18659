"""Events published by the identity service."""

from __future__ import annotations

import uuid
from typing import Literal

from his.kernel.events import Event, event


@event
class UserRegistered(Event):
    """A user account was created (self-registration or by an administrator)."""

    type = "his.identity.user.registered.v1"
    user_id: uuid.UUID
    roles: list[str]
    created_by: uuid.UUID | None = None


@event
class EmailVerified(Event):
    """A self-registered account's address was confirmed (its link opened with its password, or
    a password reset through it): the account may sign in from now on."""

    type = "his.identity.user.email_verified.v1"
    user_id: uuid.UUID
    how: Literal["link", "reset"]


@event
class UserRolesChanged(Event):
    """An administrator changed an account's roles; its sessions were signed out, so tokens
    carrying the old roles stop working within seconds."""

    type = "his.identity.user.roles_changed.v1"
    user_id: uuid.UUID
    roles: list[str]
    changed_by: uuid.UUID


@event
class UserDisabled(Event):
    """An administrator disabled an account (a leaver): it cannot sign in, and its sessions were
    signed out, so its tokens stop working within seconds everywhere."""

    type = "his.identity.user.disabled.v1"
    user_id: uuid.UUID
    changed_by: uuid.UUID


@event
class UserEnabled(Event):
    """An administrator enabled a disabled account again."""

    type = "his.identity.user.enabled.v1"
    user_id: uuid.UUID
    changed_by: uuid.UUID


@event
class UserUnlocked(Event):
    """An administrator cleared the failed sign-ins that held an account's sign-ins back."""

    type = "his.identity.user.unlocked.v1"
    user_id: uuid.UUID
    changed_by: uuid.UUID


@event
class PasswordChangeRequired(Event):
    """An administrator required a new password at the account's next sign-in; its sessions
    were signed out."""

    type = "his.identity.user.password_change_required.v1"
    user_id: uuid.UUID
    changed_by: uuid.UUID


@event
class PasswordChanged(Event):
    """An account's password changed: by its holder (``own``), at a sign-in that required it
    (``sign_in``), or through a reset link (``reset``). Never the password or a link."""

    type = "his.identity.user.password_changed.v1"
    user_id: uuid.UUID
    how: Literal["own", "sign_in", "reset"]


@event
class SecondFactorEnabled(Event):
    """An account confirmed its authenticator: it signs in with a code from now on."""

    type = "his.identity.user.second_factor_enabled.v1"
    user_id: uuid.UUID


@event
class SecondFactorReset(Event):
    """An administrator removed an account's second factor (a lost phone); its sessions were
    signed out and it enrols again."""

    type = "his.identity.user.second_factor_reset.v1"
    user_id: uuid.UUID
    changed_by: uuid.UUID


@event
class SecondFactorPolicyChanged(Event):
    """An administrator set which roles sign in with a second factor."""

    type = "his.identity.second_factor_policy.changed.v1"
    roles: list[str]
    changed_by: uuid.UUID


@event
class PasswordResetRequested(Event):
    """A reset link was sent to an account's address (the link itself never leaves identity but
    by that e-mail)."""

    type = "his.identity.user.password_reset_requested.v1"
    user_id: uuid.UUID
