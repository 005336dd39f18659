"""Versioned integration event models: the one contract shared by producers and consumers.

Importing this package registers every model in ``his.kernel.events.registry``.
"""

from his.events import admissions, audit, billing, identity, inventory, laboratory, patients, practitioners, scheduling

__all__ = [
    "admissions",
    "audit",
    "billing",
    "identity",
    "inventory",
    "laboratory",
    "patients",
    "practitioners",
    "scheduling",
]
