"""Composition root of the audit service."""

from his.kernel.service import ServiceDefinition


def build() -> ServiceDefinition:
    return ServiceDefinition(
        name="audit", description="Append-only, hash-chained log of PHI access and security events."
    )
