"""The event registry and envelope: pure rules, no IO."""

from __future__ import annotations

import uuid

import pytest

import his.events
from his.events.patients import PatientRegistered
from his.kernel.events import (
    Envelope,
    Event,
    EventModelError,
    EventRegistry,
    InvalidEnvelopeError,
    catalogue_markdown,
    registry,
)


def test_envelope_round_trips_with_cloudevents_fields() -> None:
    pid = uuid.uuid4()
    env = Envelope.wrap(PatientRegistered(patient_id=pid), aggregate_id=pid, aggregate_version=3)
    back = Envelope.from_json(env.to_json())
    assert back == env
    assert back.source == "his.patients"
    assert back.type == "his.patients.patient.registered.v1"
    assert back.model() == PatientRegistered(patient_id=pid)
    assert back.traceparent.startswith("00-") and len(back.traceparent) == 55


@pytest.mark.parametrize(
    "raw",
    [b"", b"not json", b"[]", b'{"specversion": "0.3"}', b'{"specversion": "1.0", "id": "nope"}'],
)
def test_malformed_envelopes_are_rejected(raw: bytes) -> None:
    with pytest.raises(InvalidEnvelopeError):
        Envelope.from_json(raw)


def test_registry_refuses_fields_that_look_like_personal_data() -> None:
    reg = EventRegistry()

    class Leaky(Event):
        type = "his.patients.patient.leaked.v1"
        patient_id: uuid.UUID
        email: str

    with pytest.raises(EventModelError, match="email"):
        reg.register(Leaky)


# Written out here, not read from the registry's list: a fragment dropped there must fail here.
PERSONAL_FIELDS = [
    "family_name",
    "email",
    "e_mail_address",
    "phone",
    "mobile",
    "home_address",
    "street",
    "postcode",
    "zip_code",
    "national_id",
    "ssn",
    "passport_no",
    "birth_date",
    "dob",
    "note",
    "comment",
    "free_text",
    "password",
    "reset_token",
    "mrn",
    "member_id",
]


@pytest.mark.parametrize("field", PERSONAL_FIELDS)
def test_registry_refuses_every_kind_of_personal_data_field(field: str) -> None:
    model = type(
        "Leaky",
        (Event,),
        {"__annotations__": {"patient_id": uuid.UUID, field: str}, "type": "his.patients.patient.leaked.v1"},
    )
    with pytest.raises(EventModelError, match=field):
        EventRegistry().register(model)


def test_registry_refuses_badly_named_types() -> None:
    class Bad(Event):
        type = "patients.PatientRegistered"

    with pytest.raises(EventModelError):
        EventRegistry().register(Bad)


def test_no_registered_event_carries_personal_data_fields() -> None:
    assert his.events.patients is not None
    assert registry.types, "the registry is empty"
    for type_, cls in registry.types.items():
        EventRegistry().register(cls)  # re-runs every rule of the registry
        assert type_ == cls.type


def test_catalogue_is_generated_and_current(tmp_path: object) -> None:
    from pathlib import Path

    from his.cli.services import consumers_by_event

    text = catalogue_markdown(consumers=consumers_by_event())
    assert "his.patients.patient.registered.v1" in text
    assert "`billing_patient_registered`" in text  # who applies each event
    committed = Path(__file__).parents[2] / "docs" / "events.md"
    assert committed.read_text().strip() == text.strip(), "run `make catalogue` to regenerate docs/events.md"
