"""Settings of the identity service (``HIS_*`` environment variables, or a ``.env`` file)."""

from __future__ import annotations

from pydantic import Field

from his.kernel.mail import MailSettings


class IdentitySettings(MailSettings):
    """Identity's limits, where its e-mail goes (``MailSettings``: a password reset link) and the
    address its links point at."""

    #: Self-registrations (``POST /api/auth/register``) allowed from one address, and from all
    #: addresses together, within ``registration_window_seconds``; more are answered 429.
    registrations_per_address: int = Field(default=5, ge=1)
    registrations_overall: int = Field(default=100, ge=1)
    registration_window_seconds: float = Field(default=600.0, gt=0)
    #: Where users reach the hospital: the reset links point at its console.
    public_url: str = "http://127.0.0.1:4004"
