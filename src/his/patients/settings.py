"""Settings of the patients service (``HIS_*`` environment variables, or a ``.env`` file)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class PatientsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HIS_", env_file=".env", extra="ignore")

    #: How long break-the-glass access lasts (minutes; fractions allowed, at most a day).
    emergency_access_minutes: float = Field(default=60.0, gt=0, le=24 * 60)
    #: More break-the-glass grants than this by one clinician within the window raise an alert
    #: for administrators (the grants stand, marked in the review queue).
    emergency_access_limit: int = Field(default=3, ge=1, le=1000)
    #: The window of that limit (hours; fractions allowed, at most 30 days).
    emergency_access_window_hours: float = Field(default=24.0, gt=0, le=30 * 24)
    #: Key(s) encrypting medical-record text at rest: base64 of 32 bytes, newest first, comma-
    #: separated (older keys still decrypt old entries). `his up` generates one under the data dir.
    records_keys: str | None = None
    #: How long a portal invitation's code can be redeemed (minutes; fractions allowed, at most 30 days).
    invitation_minutes: float = Field(default=3 * 24 * 60, gt=0, le=30 * 24 * 60)
