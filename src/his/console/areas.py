"""The console's areas and the roles each is for, and the roles' names as people read them."""

from __future__ import annotations

from dataclasses import dataclass

from his.console.i18n import N_


@dataclass(frozen=True)
class Area:
    """A part of the console, the roles it is for, and its name in the menu."""

    path: str
    label: str
    roles: frozenset[str]


EVERYONE = frozenset({"ADMIN", "RECEPTIONIST", "DOCTOR", "NURSE", "LAB_TECH", "BILLING", "PATIENT", "AUDITOR"})

#: The console's areas, in the menu's order.
AREAS = (Area("/", N_("Home"), EVERYONE),)

ROLE_NAMES = {
    "ADMIN": N_("Administrator"),
    "RECEPTIONIST": N_("Receptionist"),
    "DOCTOR": N_("Doctor"),
    "NURSE": N_("Nurse"),
    "LAB_TECH": N_("Laboratory technician"),
    "BILLING": N_("Billing clerk"),
    "PATIENT": N_("Patient"),
    "AUDITOR": N_("Auditor"),
}


def areas_for(roles: frozenset[str]) -> list[Area]:
    """The areas a user with ``roles`` may open, in the menu's order."""
    return [a for a in AREAS if a.roles & roles]
