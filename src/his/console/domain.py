"""The console's sessions, as the browser and the server each hold them, and the API's answers as
its pages read them (pure: no IO).

The browser holds only a cookie: 256 random bits. The server keeps the session under the
cookie's SHA-256 (a copy of the table opens no session), with the caller's access and refresh
tokens encrypted and bound to that row, a CSRF token for its forms, and two clocks: a session
ends 30 minutes after its last request or 12 hours after sign-in, whichever is first.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal

from his.kernel.json import Json, JsonObject, object_of, text

#: A session ends this long after its last request...
IDLE = timedelta(minutes=30)
#: ... or this long after sign-in, whichever comes first.
LIFETIME = timedelta(hours=12)
#: The cookie's name. HttpOnly, SameSite=Strict, Path=/ (and Secure over TLS).
COOKIE = "his_session"


class Locale(StrEnum):
    """The languages of the console."""

    EN = "en"
    TR = "tr"


@dataclass(frozen=True)
class Tokens:
    """What the identity service issued at sign-in (or at the last refresh): never sent to the
    browser."""

    access: str
    refresh: str


@dataclass(frozen=True)
class Session:
    """A signed-in browser, as the server keeps it (``id``: the cookie's digest)."""

    id: bytes
    user_id: uuid.UUID
    roles: tuple[str, ...]
    #: The synchronizer token every form and htmx request of the session carries.
    csrf: str
    locale: Locale
    created_at: datetime
    seen_at: datetime

    def ends_at(self) -> datetime:
        """When the session ends if no request comes before."""
        return min(self.seen_at + IDLE, self.created_at + LIFETIME)

    def live(self, now: datetime) -> bool:
        return now < self.ends_at()

    def accepts(self, csrf: str | None) -> bool:
        """Whether a request's CSRF token is this session's (compared in constant time)."""
        return csrf is not None and hmac.compare_digest(csrf.encode(), self.csrf.encode())


def new_cookie() -> str:
    """A new session cookie's value: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def new_csrf() -> str:
    return secrets.token_urlsafe(32)


def digest(cookie: str) -> bytes:
    """The key the server keeps a session under: the SHA-256 of its cookie."""
    return hashlib.sha256(cookie.encode()).digest()


#: Query parameters of an API call: a mapping, or pairs when a name repeats (``?id=…&id=…``).
Params = Mapping[str, str] | Sequence[tuple[str, str]] | None

Method = Literal["GET", "POST", "PATCH", "PUT", "DELETE"]


@dataclass(frozen=True)
class Answer:
    """What the API answered: its status and its JSON body (None when it had none, or none that
    parsed), with the ``Retry-After`` it named."""

    status: int
    body: Json = None
    retry_after: str | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def problem(self) -> Problem:
        """The problem+json of an error answer, as a form shows it."""
        return Problem.of(self)


@dataclass(frozen=True)
class Problem:
    """An error the API answered: its title and detail, and the fields it names (``errors``:
    ``loc`` and ``msg``), so that a form can show each message beside its field."""

    status: int
    title: str
    detail: str = ""
    fields: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, answer: Answer) -> Problem:
        doc: JsonObject = answer.body if isinstance(answer.body, dict) else {}
        title = doc.get("title")
        detail = doc.get("detail")
        fields: dict[str, str] = {}
        errors = doc.get("errors")
        for error in errors if isinstance(errors, list) else []:
            if not isinstance(error, dict):
                continue
            loc, msg = error.get("loc"), error.get("msg")
            names = [str(p) for p in loc if p != "body"] if isinstance(loc, list) else []
            if names and isinstance(msg, str):
                fields.setdefault(".".join(names), msg)
        return cls(
            answer.status,
            title if isinstance(title, str) else "",
            detail if isinstance(detail, str) else "",
            fields,
        )


def tokens_of(body: Json) -> Tokens:
    """The tokens of a sign-in's or refresh's answer (``ValueError`` if it is not one)."""
    doc = object_of(body)
    return Tokens(access=text(doc["access_token"]), refresh=text(doc["refresh_token"]))


class ApiUnavailableError(Exception):
    """The gateway could not be reached, or did not answer in time."""
