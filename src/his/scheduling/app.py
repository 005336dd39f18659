"""Composition root of the scheduling service."""

from his.kernel.service import ServiceDefinition


def build() -> ServiceDefinition:
    return ServiceDefinition(name="scheduling", description="Slots, appointments, waitlist.")
