"""Settings of the notifications service (``HIS_*`` environment variables, or a ``.env`` file)."""

from __future__ import annotations

from pydantic import Field

from his.kernel.mail import MailSettings


class NotificationsSettings(MailSettings):
    """Where e-mail goes (``MailSettings``) and how long contact details are remembered."""

    #: How long a patient's contact details are remembered (seconds).
    contact_cache_seconds: float = Field(default=60.0, ge=0, le=3600)
