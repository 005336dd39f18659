"""Composition root of the inventory service."""

from his.kernel.service import ServiceDefinition


def build() -> ServiceDefinition:
    return ServiceDefinition(
        name="inventory", description="Items, stock per location and lot, consumption, low-stock alerts."
    )
