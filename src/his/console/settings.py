"""Settings of the console (``HIS_*`` environment variables, or a ``.env`` file)."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, field_validator

from his.kernel.config import ServiceSettings


class ConsoleSettings(ServiceSettings):
    """What the console reads besides a service's own (its listener, ``http_port``, which the
    gateway forwards the browser's pages to; its database, whose ``console`` schema holds the
    sessions): where it calls the API, the address browsers use, and the keys its sessions'
    tokens are encrypted with."""

    #: The gateway's console listener (``HIS_CONSOLE_PORT``), where it calls the public API.
    console_api_url: str = ""
    #: The address browsers open the hospital at: a form whose ``Origin`` is another is refused,
    #: and the session cookie is ``Secure`` when this is https.
    public_url: str = "http://127.0.0.1:4004"
    #: The keys the sessions' tokens are encrypted with (``his.kernel.crypto``), comma-separated,
    #: the current one first. `his up` generates one under the data directory.
    console_keys: str = Field(default="", repr=False)

    @field_validator("public_url")
    @classmethod
    def _origin(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http or https URL, e.g. https://his.example.org")
        return value.rstrip("/")

    def origins(self) -> frozenset[str]:
        """The origins a state-changing request may come from: the public URL's, and the same
        address as ``localhost`` or ``127.0.0.1`` when it is one of them."""
        parts = urlsplit(self.public_url)
        origin = f"{parts.scheme}://{parts.netloc}"
        found = {origin}
        port = f":{parts.port}" if parts.port else ""
        if parts.hostname in ("127.0.0.1", "localhost"):
            found |= {f"{parts.scheme}://127.0.0.1{port}", f"{parts.scheme}://localhost{port}"}
        return frozenset(found)

    @property
    def secure_cookie(self) -> bool:
        return self.public_url.startswith("https://")
