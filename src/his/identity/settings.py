"""Settings of the identity service (``HIS_*`` environment variables, or a ``.env`` file)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class IdentitySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HIS_", env_file=".env", extra="ignore")

    #: Self-registrations (``POST /api/auth/register``) allowed from one address, and from all
    #: addresses together, within ``registration_window_seconds``; more are answered 429.
    registrations_per_address: int = Field(default=5, ge=1)
    registrations_overall: int = Field(default=100, ge=1)
    registration_window_seconds: float = Field(default=600.0, gt=0)
