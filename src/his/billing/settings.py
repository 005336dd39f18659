"""Settings of the billing service (``HIS_*`` environment variables, or a ``.env`` file)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class BillingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HIS_", env_file=".env", extra="ignore")

    #: The secret the payment provider signs its confirmations with (`his up` generates one under
    #: the data dir's secrets). Unset: no payment provider, and online payments answer 503.
    payment_webhook_secret: str | None = None
    #: Where the embedded TEST payment provider posts its confirmations: billing's public webhook
    #: route, through the gateway (`his up` sets it from the gateway's address).
    payment_webhook_url: str | None = None
