"""Composition root of the identity service."""

from his.kernel.service import ServiceDefinition


def build() -> ServiceDefinition:
    return ServiceDefinition(
        name="identity", description="Users, password hashes, roles, refresh tokens, signing keys."
    )
