"""Composition root of the laboratory service."""

from his.kernel.service import ServiceDefinition


def build() -> ServiceDefinition:
    return ServiceDefinition(name="laboratory", description="Test catalogue, lab orders, specimens, results.")
