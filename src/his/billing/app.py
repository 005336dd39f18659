"""Composition root of the billing service."""

from his.kernel.service import ServiceDefinition


def build() -> ServiceDefinition:
    return ServiceDefinition(
        name="billing", description="Price list, payer plans, charges, invoices, claims, payments."
    )
