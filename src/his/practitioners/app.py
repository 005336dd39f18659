"""Composition root of the practitioners service."""

from his.kernel.service import ServiceDefinition


def build() -> ServiceDefinition:
    return ServiceDefinition(name="practitioners", description="Practitioner profiles, shifts, leaves, availability.")
