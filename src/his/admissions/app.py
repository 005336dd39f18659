"""Composition root of the admissions service."""

from his.kernel.service import ServiceDefinition


def build() -> ServiceDefinition:
    return ServiceDefinition(
        name="admissions", description="Wards, rooms, beds, admissions, transfers, nightly bed charges."
    )
