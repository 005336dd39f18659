"""Integration events: the CloudEvents envelope, versioned models and their registry.

Every event type is a pydantic model registered under its type string
``his.<service>.<aggregate>.<event>.v<N>``, which is also its NATS subject. The registry
refuses field names that would carry personal data: events carry surrogate ids and codes only.
"""

from __future__ import annotations

import inspect
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import ClassVar, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict

from his.kernel import tracing
from his.kernel.json import JsonObject

TYPE_PATTERN = re.compile(r"^his\.([a-z][a-z_]*)\.([a-z][a-z_]*)\.([a-z][a-z_]*)\.v([1-9][0-9]*)$")

#: Field-name fragments that signal personal data; an event model may not use them.
PII_FRAGMENTS = (
    "name",
    "email",
    "e_mail",
    "phone",
    "mobile",
    "address",
    "street",
    "postcode",
    "zip",
    "national",
    "ssn",
    "passport",
    "birth",
    "dob",
    "note",
    "comment",
    "text",
    "password",
    "token",
    "mrn",
    "member_id",
)


#: The field an event leaves null for its producer's commit to fill with the next number of the
#: producer's gap-free sequence (``his.kernel.db``, ADR 0028): access records carry it, so the
#: audit verifier can name a record that was removed on the way.
SEQ_FIELD = "producer_seq"


class EventModelError(TypeError):
    """An event model breaks the rules of the registry."""


class Event(BaseModel):
    """Base of every integration event model. Subclasses set ``type``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    type: ClassVar[str]
    description: ClassVar[str] = ""


class Superseded(Event):
    """An event version that a newer one replaced: no longer published, still readable (its
    events stay in the stream until they age out, and in the dead-letter stream), and upcast to
    the newer version for the consumers, which handle only that one. A changed field means a new
    version; the old model stays registered as a ``Superseded``."""

    def upcast(self) -> Event:
        """This event as the version that replaced it."""
        raise NotImplementedError


E = TypeVar("E", bound=type[Event])


@dataclass
class EventRegistry:
    """All event types of the system, by type string."""

    types: dict[str, type[Event]] = field(default_factory=dict)

    def register(self, cls: E) -> E:
        type_ = getattr(cls, "type", None)
        if not isinstance(type_, str) or not TYPE_PATTERN.match(type_):
            raise EventModelError(f"{cls.__name__}.type must look like his.<service>.<aggregate>.<event>.v<N>")
        if type_ in self.types and self.types[type_] is not cls:
            raise EventModelError(f"event type {type_} registered twice")
        for fname in cls.__pydantic_fields__:
            bad = [frag for frag in PII_FRAGMENTS if frag in fname.lower()]
            if bad:
                raise EventModelError(f"{type_}: field {fname!r} looks like personal data ({bad[0]})")
        self.types[type_] = cls
        return cls

    def model_for(self, type_: str) -> type[Event]:
        try:
            return self.types[type_]
        except KeyError:
            raise UnknownEventTypeError(type_) from None


class UnknownEventTypeError(LookupError):
    """No model is registered for this event type."""


registry = EventRegistry()


def event(cls: E) -> E:
    """Class decorator: register an event model in the global registry."""
    return registry.register(cls)


def service_of(type_: str) -> str:
    m = TYPE_PATTERN.match(type_)
    if m is None:
        raise EventModelError(f"bad event type {type_!r}")
    return m.group(1)


@dataclass(frozen=True)
class Envelope:
    """A CloudEvents 1.0 envelope with the aggregate and trace fields of his."""

    id: uuid.UUID
    type: str
    source: str
    time: datetime
    subject: str
    aggregate_id: str
    aggregate_version: int
    traceparent: str
    data: JsonObject
    #: How many numbers of its producer's sequence the event takes when it is committed (0: none);
    #: its ``data[SEQ_FIELD]``, null until then, is set to the first. Not part of the JSON.
    numbers: int = 0

    @classmethod
    def wrap(
        cls, ev: Event, *, aggregate_id: str | uuid.UUID, aggregate_version: int = 1, traceparent: str | None = None
    ) -> Envelope:
        return cls(
            id=uuid.uuid4(),
            type=ev.type,
            source=f"his.{service_of(ev.type)}",
            time=datetime.now(UTC),
            subject=str(aggregate_id),
            aggregate_id=str(aggregate_id),
            aggregate_version=aggregate_version,
            traceparent=traceparent or tracing.current_traceparent(),
            data=ev.model_dump(mode="json"),
            numbers=1 if SEQ_FIELD in type(ev).model_fields else 0,
        )

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "specversion": "1.0",
                "id": str(self.id),
                "type": self.type,
                "source": self.source,
                "time": self.time.isoformat(),
                "subject": self.subject,
                "datacontenttype": "application/json",
                "traceparent": self.traceparent,
                "aggregate_id": self.aggregate_id,
                "aggregate_version": self.aggregate_version,
                "data": self.data,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes) -> Envelope:
        """Parse an envelope; raises ``InvalidEnvelopeError`` on anything malformed."""
        try:
            doc = orjson.loads(raw)
            if doc.get("specversion") != "1.0":
                raise ValueError("specversion must be 1.0")
            return cls(
                id=uuid.UUID(doc["id"]),
                type=str(doc["type"]),
                source=str(doc["source"]),
                time=datetime.fromisoformat(doc["time"]),
                subject=str(doc.get("subject", "")),
                aggregate_id=str(doc["aggregate_id"]),
                aggregate_version=int(doc["aggregate_version"]),
                traceparent=str(doc.get("traceparent", "")),
                data=dict(doc["data"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidEnvelopeError(f"malformed event envelope: {exc}") from exc

    def model(self, reg: EventRegistry | None = None) -> Event:
        """Validate ``data`` against the registered model of ``type``."""
        return (reg or registry).model_for(self.type).model_validate(self.data)


class InvalidEnvelopeError(ValueError):
    """The message is not a valid his event envelope."""


def catalogue_markdown(reg: EventRegistry | None = None, consumers: Mapping[str, Sequence[str]] | None = None) -> str:
    """The event catalogue, generated from the registry (never written by hand); with
    ``consumers`` (event type → the durable consumers that apply it), who consumes each event."""
    reg = reg or registry
    types = sorted(t for t, cls in reg.types.items() if cls.__module__.startswith("his."))
    out = [
        "# Event catalogue",
        "",
        "Generated by `his events catalogue` from the event registry; do not edit by hand.",
        "",
        "Every event travels as a CloudEvents 1.0 JSON envelope (`id`, `source`, `type`, `time`,",
        "`subject`, `data`) plus `traceparent`, `aggregate_id` and `aggregate_version`. The NATS",
        "subject equals the type. Events carry surrogate ids and codes only, never personal data.",
        "",
    ]
    for type_ in types:
        cls = reg.types[type_]
        out += [
            f"## `{type_}`",
            "",
            cls.description or inspect.cleandoc(cls.__doc__ or ""),
            "",
            f"Stream `{stream_name(service_of(type_))}`, model `{cls.__module__}.{cls.__name__}`.",
            "",
        ]
        if consumers is not None:
            names = sorted(consumers.get(type_, ()))
            out += [("Consumed by " + ", ".join(f"`{n}`" for n in names) + ".") if names else "No consumer yet.", ""]
        out += [
            "| field | type | required |",
            "|---|---|---|",
        ]
        for fname, finfo in cls.model_fields.items():
            ann = _type_label(finfo.annotation)
            out.append(f"| `{fname}` | {ann} | {'yes' if finfo.is_required() else 'no'} |")
        out.append("")
    return "\n".join(out)


def _type_label(annotation: object) -> str:
    label = getattr(annotation, "__name__", None) or str(annotation)
    return re.sub(r"\b[a-z_]+\.", "", label).replace(" | None", " (nullable)").replace(" | ", " or ")


def stream_name(service: str) -> str:
    """One stream per producing service."""
    return f"HIS_{service.upper()}"
