"""W3C trace context carried through HTTP requests, outbox rows and message headers."""

from __future__ import annotations

import contextvars
import re
import secrets

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("his_traceparent", default=None)


def new_traceparent(trace_id: str | None = None) -> str:
    """A fresh span id, in the given trace (or a new one)."""
    return f"00-{trace_id or secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def parse(value: str | None) -> str | None:
    """The trace id of a valid ``traceparent`` value, else None."""
    if not value:
        return None
    m = _TRACEPARENT.match(value.strip())
    if m is None or m.group(1) == "0" * 32:
        return None
    return m.group(1)


def current() -> str | None:
    return _current.get()


def continue_from(parent: str | None) -> contextvars.Token[str | None]:
    """Enter a child span of ``parent`` (or a new trace when it is missing or invalid)."""
    return _current.set(new_traceparent(parse(parent)))


def reset(token: contextvars.Token[str | None]) -> None:
    _current.reset(token)


def for_outgoing() -> str:
    """The traceparent to attach to an outgoing event or call: a child of the current span."""
    return new_traceparent(parse(_current.get()))
