"""Settings of the notifications service (``HIS_*`` environment variables, or a ``.env`` file)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class NotificationsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HIS_", env_file=".env", extra="ignore")

    #: With an SMTP host, e-mail goes there; without one, into the maildir under the data directory.
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = True
    mail_from: str = "his <no-reply@his.local>"
    #: How long a patient's contact details are remembered (seconds).
    contact_cache_seconds: float = Field(default=60.0, ge=0, le=3600)
